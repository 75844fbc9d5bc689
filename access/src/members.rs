//! Project membership: which users hold which role in which project.

use sqlx::PgConnection;

use crate::role::ProjectRole;

/// The role `user_id` holds in `project_id`, if any.
pub async fn role_of(
    conn: &mut PgConnection,
    project_id: i64,
    user_id: i64,
) -> Result<Option<ProjectRole>, sqlx::Error> {
    let role_id = sqlx::query_scalar!(
        "SELECT role_id FROM project_members WHERE project_id = $1 AND user_id = $2",
        project_id,
        user_id
    )
    .fetch_optional(conn)
    .await?;
    Ok(role_id.and_then(|id| ProjectRole::from_id(i64::from(id))))
}

/// A membership as the management API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The membership's id (not the user's).
    pub id: i64,
    pub project_id: i64,
    pub user_id: i64,
    pub username: String,
    pub role_id: i16,
}

impl Member {
    /// The role; `None` only if the database holds an id this build does not know.
    pub fn role(&self) -> Option<ProjectRole> {
        ProjectRole::from_id(i64::from(self.role_id))
    }
}

/// How many members of `project_id` have a username matching `name_like` (an SQL
/// `LIKE` pattern; `None` matches all).
pub async fn count(
    conn: &mut PgConnection,
    project_id: i64,
    name_like: Option<&str>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM project_members m JOIN users u ON u.id = m.user_id
           WHERE m.project_id = $1 AND ($2::text IS NULL OR u.username LIKE $2)"#,
        project_id,
        name_like
    )
    .fetch_one(conn)
    .await
}

/// One page of the members of `project_id`, by username.
pub async fn list(
    conn: &mut PgConnection,
    project_id: i64,
    name_like: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<Vec<Member>, sqlx::Error> {
    sqlx::query_as!(
        Member,
        r#"SELECT m.id, m.project_id, m.user_id, u.username, m.role_id
           FROM project_members m JOIN users u ON u.id = m.user_id
           WHERE m.project_id = $1 AND ($2::text IS NULL OR u.username LIKE $2)
           ORDER BY u.username, m.id
           LIMIT $3 OFFSET $4"#,
        project_id,
        name_like,
        limit,
        offset
    )
    .fetch_all(conn)
    .await
}

/// The membership `member_id` of `project_id`.
pub async fn get(
    conn: &mut PgConnection,
    project_id: i64,
    member_id: i64,
) -> Result<Option<Member>, sqlx::Error> {
    sqlx::query_as!(
        Member,
        r#"SELECT m.id, m.project_id, m.user_id, u.username, m.role_id
           FROM project_members m JOIN users u ON u.id = m.user_id
           WHERE m.project_id = $1 AND m.id = $2"#,
        project_id,
        member_id
    )
    .fetch_optional(conn)
    .await
}

/// Who a new membership is for: a user id or a username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    Id(i64),
    Name(String),
}

/// The id and username of the user `user` names, if it exists.
pub async fn find_user(
    conn: &mut PgConnection,
    user: &UserRef,
) -> Result<Option<(i64, String)>, sqlx::Error> {
    let (id, name) = match user {
        UserRef::Id(id) => (Some(*id), None),
        UserRef::Name(name) => (None, Some(name.as_str())),
    };
    let row = sqlx::query!(
        "SELECT id, username FROM users WHERE id = $1 OR username = $2",
        id,
        name
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.id, r.username)))
}

/// Makes `user_id` a member of `project_id`; returns the membership id. An existing
/// membership fails with the `project_members_project_id_user_id_key` violation.
pub async fn add(
    conn: &mut PgConnection,
    project_id: i64,
    user_id: i64,
    role: ProjectRole,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"INSERT INTO project_members (project_id, user_id, role_id) VALUES ($1, $2, $3)
           RETURNING id"#,
        project_id,
        user_id,
        role.id()
    )
    .fetch_one(conn)
    .await
}

/// Changes a membership's role; returns the member as it is now, `None` if there is no
/// such membership in the project.
pub async fn set_role(
    conn: &mut PgConnection,
    project_id: i64,
    member_id: i64,
    role: ProjectRole,
) -> Result<Option<Member>, sqlx::Error> {
    sqlx::query_as!(
        Member,
        r#"UPDATE project_members m SET role_id = $3, updated_at = now()
           FROM users u
           WHERE m.project_id = $1 AND m.id = $2 AND u.id = m.user_id
           RETURNING m.id, m.project_id, m.user_id, u.username, m.role_id"#,
        project_id,
        member_id,
        role.id()
    )
    .fetch_optional(conn)
    .await
}

/// Ends a membership; returns who it was, `None` if there is no such membership in the
/// project.
pub async fn remove(
    conn: &mut PgConnection,
    project_id: i64,
    member_id: i64,
) -> Result<Option<Member>, sqlx::Error> {
    sqlx::query_as!(
        Member,
        r#"DELETE FROM project_members m USING users u
           WHERE m.project_id = $1 AND m.id = $2 AND u.id = m.user_id
           RETURNING m.id, m.project_id, m.user_id, u.username, m.role_id"#,
        project_id,
        member_id
    )
    .fetch_optional(conn)
    .await
}

/// How many members hold each role, for a project's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoleCounts {
    pub project_admin: i64,
    pub maintainer: i64,
    pub developer: i64,
    pub guest: i64,
    pub limited_guest: i64,
}

pub async fn role_counts(
    conn: &mut PgConnection,
    project_id: i64,
) -> Result<RoleCounts, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT role_id, count(*) AS "count!" FROM project_members
           WHERE project_id = $1 GROUP BY role_id"#,
        project_id
    )
    .fetch_all(conn)
    .await?;
    let mut counts = RoleCounts::default();
    for row in rows {
        let slot = match ProjectRole::from_id(i64::from(row.role_id)) {
            Some(ProjectRole::ProjectAdmin) => &mut counts.project_admin,
            Some(ProjectRole::Maintainer) => &mut counts.maintainer,
            Some(ProjectRole::Developer) => &mut counts.developer,
            Some(ProjectRole::Guest) => &mut counts.guest,
            Some(ProjectRole::LimitedGuest) => &mut counts.limited_guest,
            None => continue,
        };
        *slot = row.count;
    }
    Ok(counts)
}
