//! Harbor's project roles and the registry actions they allow.

use serde::{Deserialize, Serialize};

/// What a registry request does to a repository: the actions of Docker token scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryAction {
    Pull,
    Push,
    Delete,
}

impl RegistryAction {
    pub const ALL: [RegistryAction; 3] = [
        RegistryAction::Pull,
        RegistryAction::Push,
        RegistryAction::Delete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RegistryAction::Pull => "pull",
            RegistryAction::Push => "push",
            RegistryAction::Delete => "delete",
        }
    }

    /// `pull`, `push` or `delete`; other words (`*`, `scanner-pull`, …) are not registry
    /// actions of their own.
    pub fn parse(word: &str) -> Option<RegistryAction> {
        match word {
            "pull" => Some(RegistryAction::Pull),
            "push" => Some(RegistryAction::Push),
            "delete" => Some(RegistryAction::Delete),
            _ => None,
        }
    }
}

/// A member's role in a project, with Harbor's ids (the API speaks them as `role_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProjectRole {
    ProjectAdmin,
    Developer,
    Guest,
    Maintainer,
    LimitedGuest,
}

impl ProjectRole {
    pub fn from_id(id: i64) -> Option<ProjectRole> {
        match id {
            1 => Some(ProjectRole::ProjectAdmin),
            2 => Some(ProjectRole::Developer),
            3 => Some(ProjectRole::Guest),
            4 => Some(ProjectRole::Maintainer),
            5 => Some(ProjectRole::LimitedGuest),
            _ => None,
        }
    }

    pub fn id(self) -> i16 {
        match self {
            ProjectRole::ProjectAdmin => 1,
            ProjectRole::Developer => 2,
            ProjectRole::Guest => 3,
            ProjectRole::Maintainer => 4,
            ProjectRole::LimitedGuest => 5,
        }
    }

    /// Harbor's role names, as `role_name` in member listings.
    pub fn name(self) -> &'static str {
        match self {
            ProjectRole::ProjectAdmin => "projectAdmin",
            ProjectRole::Developer => "developer",
            ProjectRole::Guest => "guest",
            ProjectRole::Maintainer => "maintainer",
            ProjectRole::LimitedGuest => "limitedGuest",
        }
    }

    /// Harbor's RBAC on repositories: guests and limited guests pull, developers also
    /// push, maintainers and project admins also delete.
    pub fn allows(self, action: RegistryAction) -> bool {
        match action {
            RegistryAction::Pull => true,
            RegistryAction::Push => !matches!(self, ProjectRole::Guest | ProjectRole::LimitedGuest),
            RegistryAction::Delete => {
                matches!(self, ProjectRole::ProjectAdmin | ProjectRole::Maintainer)
            }
        }
    }

    /// Project admins manage members, robots and the project's settings.
    pub fn manages_project(self) -> bool {
        self == ProjectRole::ProjectAdmin
    }

    /// Maintainers and admins manage the project's robots and may delete the project's
    /// artifacts through the API; Harbor lets maintainers do both.
    pub fn manages_content(self) -> bool {
        matches!(self, ProjectRole::ProjectAdmin | ProjectRole::Maintainer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_ids_round_trip_and_unknown_ids_are_refused() {
        for id in 1..=5 {
            assert_eq!(i64::from(ProjectRole::from_id(id).unwrap().id()), id);
        }
        assert_eq!(ProjectRole::from_id(0), None);
        assert_eq!(ProjectRole::from_id(6), None);
    }

    #[test]
    fn guests_pull_developers_push_maintainers_delete() {
        use RegistryAction::*;
        let allowed = |role: ProjectRole| -> Vec<RegistryAction> {
            RegistryAction::ALL
                .into_iter()
                .filter(|a| role.allows(*a))
                .collect()
        };
        assert_eq!(allowed(ProjectRole::LimitedGuest), vec![Pull]);
        assert_eq!(allowed(ProjectRole::Guest), vec![Pull]);
        assert_eq!(allowed(ProjectRole::Developer), vec![Pull, Push]);
        assert_eq!(allowed(ProjectRole::Maintainer), vec![Pull, Push, Delete]);
        assert_eq!(allowed(ProjectRole::ProjectAdmin), vec![Pull, Push, Delete]);
    }
}
