//! Which project a management request is about, and what the caller may do there.

use std::collections::BTreeSet;

use axum::http::HeaderMap;
use berth_access::{authorize, members, Principal, ProjectRole, RegistryAction};
use berth_content::metadata::projects::{self, ProjectRef};
use sqlx::PgConnection;

use super::error::{ApiError, ApiResult};
use super::extract::{Caller, ProjectKey};

/// A project and the caller's standing in it.
#[derive(Debug, Clone)]
pub struct ProjectAccess {
    pub project: ProjectRef,
    /// The caller's membership role (users only).
    pub role: Option<ProjectRole>,
    /// What the caller may do to the project's repositories.
    pub actions: BTreeSet<RegistryAction>,
    sysadmin: bool,
}

impl ProjectAccess {
    /// Looks up the project and the caller's rights. A project that does not exist is
    /// `NOT_FOUND` (Harbor answers 403 for names; harborapi's `project_exists` needs
    /// 404). A private project the caller cannot see is `NOT_FOUND` too for
    /// authenticated callers, so its existence is not revealed, and 401 for anonymous
    /// ones, so they know to log in.
    pub async fn resolve(
        conn: &mut PgConnection,
        caller: &Caller,
        key: &ProjectKey,
    ) -> ApiResult<ProjectAccess> {
        let project = match key {
            ProjectKey::Id(id) => projects::find_by_id(&mut *conn, *id).await?,
            ProjectKey::Name(name) => projects::find_by_name(&mut *conn, name).await?,
        };
        let not_found = || ApiError::not_found(format!("project {key} not found"));
        let project = project.ok_or_else(not_found)?;
        let role = match &caller.principal {
            Principal::User(user) => members::role_of(&mut *conn, project.id, user.id).await?,
            _ => None,
        };
        let actions = authorize::registry_actions(&caller.principal, &project, role);
        let access = ProjectAccess {
            sysadmin: caller.principal.is_sysadmin(),
            project,
            role,
            actions,
        };
        if !access.can_read() {
            return Err(if caller.principal.is_authenticated() {
                not_found()
            } else {
                ApiError::Unauthorized("unauthorized".to_owned())
            });
        }
        Ok(access)
    }

    /// [`ProjectAccess::resolve`] for a `{project_name_or_id}` path segment, which
    /// `X-Is-Resource-Name` may declare a name.
    pub async fn resolve_segment(
        conn: &mut PgConnection,
        caller: &Caller,
        segment: &str,
        headers: &HeaderMap,
    ) -> ApiResult<ProjectAccess> {
        Self::resolve(conn, caller, &ProjectKey::from_segment(segment, headers)).await
    }

    /// See the project and pull from it.
    pub fn can_read(&self) -> bool {
        self.actions.contains(&RegistryAction::Pull)
    }

    pub fn can_push(&self) -> bool {
        self.actions.contains(&RegistryAction::Push)
    }

    /// Delete repositories, artifacts and tags.
    pub fn can_delete(&self) -> bool {
        self.actions.contains(&RegistryAction::Delete)
    }

    /// See the project's members, member counts and audit log: its members and system
    /// administrators.
    pub fn can_see_members(&self) -> bool {
        self.sysadmin || self.role.is_some()
    }

    /// Change the project's settings and members, delete the project.
    pub fn can_manage(&self) -> bool {
        self.sysadmin || self.role.is_some_and(ProjectRole::manages_project)
    }

    /// Create and change the project's robot accounts.
    pub fn can_manage_robots(&self) -> bool {
        self.sysadmin || self.role.is_some_and(ProjectRole::manages_content)
    }

    /// 403 unless `allowed`; the caller can already see the project, so it is
    /// authenticated or the project is public.
    pub fn require(&self, caller: &Caller, allowed: bool) -> ApiResult<()> {
        caller.require(allowed)
    }
}
