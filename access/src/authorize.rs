//! What a principal may do to the repositories of one project.

use std::collections::BTreeSet;

use berth_content::metadata::projects::{self, ProjectRef};
use sqlx::PgConnection;

use crate::members;
use crate::principal::Principal;
use crate::role::{ProjectRole, RegistryAction};

/// The registry actions `principal` holds on `project`, given its membership role
/// there (for users). Public projects let everyone pull.
pub fn registry_actions(
    principal: &Principal,
    project: &ProjectRef,
    role: Option<ProjectRole>,
) -> BTreeSet<RegistryAction> {
    let mut actions = BTreeSet::new();
    if project.public {
        actions.insert(RegistryAction::Pull);
    }
    for action in RegistryAction::ALL {
        let granted = match principal {
            Principal::Anonymous => false,
            Principal::Unrestricted => true,
            Principal::User(user) => user.sysadmin || role.is_some_and(|r| r.allows(action)),
            Principal::Robot(robot) => {
                // A project robot's permissions name its own project; checking the id
                // as well keeps a renamed or recreated project from inheriting it.
                robot.project_id.is_none_or(|id| id == project.id)
                    && robot
                        .permissions
                        .iter()
                        .any(|p| p.allows(&project.name, action))
            }
        };
        if granted {
            actions.insert(action);
        }
    }
    actions
}

/// Looks up `project_name` and the principal's role in it. `None` when the project does
/// not exist.
pub async fn actions_on_project(
    conn: &mut PgConnection,
    principal: &Principal,
    project_name: &str,
) -> Result<Option<(ProjectRef, BTreeSet<RegistryAction>)>, sqlx::Error> {
    let Some(project) = projects::find_by_name(&mut *conn, project_name).await? else {
        return Ok(None);
    };
    let role = match principal {
        Principal::User(user) if !user.sysadmin => {
            members::role_of(&mut *conn, project.id, user.id).await?
        }
        _ => None,
    };
    let actions = registry_actions(principal, &project, role);
    Ok(Some((project, actions)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::{RobotIdentity, UserIdentity};
    use crate::robots::{RobotAccess, RobotPermission};
    use RegistryAction::*;

    fn project(public: bool) -> ProjectRef {
        ProjectRef {
            id: 7,
            name: "team-a".into(),
            public,
        }
    }

    fn user(sysadmin: bool) -> Principal {
        Principal::User(UserIdentity {
            id: 1,
            username: "alice".into(),
            sysadmin,
        })
    }

    #[test]
    fn anonymous_pulls_public_projects_only() {
        let set = |p| registry_actions(&Principal::Anonymous, &project(p), None);
        assert_eq!(set(true), BTreeSet::from([Pull]));
        assert!(set(false).is_empty());
    }

    #[test]
    fn users_get_their_role_and_admins_everything() {
        let none = registry_actions(&user(false), &project(false), None);
        assert!(none.is_empty());
        let guest = registry_actions(&user(false), &project(false), Some(ProjectRole::Guest));
        assert_eq!(guest, BTreeSet::from([Pull]));
        let dev = registry_actions(&user(false), &project(false), Some(ProjectRole::Developer));
        assert_eq!(dev, BTreeSet::from([Pull, Push]));
        let admin = registry_actions(&user(true), &project(false), None);
        assert_eq!(admin, BTreeSet::from([Pull, Push, Delete]));
    }

    #[test]
    fn robots_get_their_permissions_in_their_project_only() {
        let robot = |project_id| {
            Principal::Robot(RobotIdentity {
                id: 3,
                name: "robot$team-a+ci".into(),
                project_id,
                permissions: vec![RobotPermission {
                    kind: "project".into(),
                    namespace: "team-a".into(),
                    access: vec![RobotAccess {
                        resource: "repository".into(),
                        action: "pull".into(),
                        effect: None,
                    }],
                }],
            })
        };
        assert_eq!(
            registry_actions(&robot(Some(7)), &project(false), None),
            BTreeSet::from([Pull])
        );
        assert!(registry_actions(&robot(Some(8)), &project(false), None).is_empty());
    }
}
