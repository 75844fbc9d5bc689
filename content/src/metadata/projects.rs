//! Projects: the first path component of every repository name, and the unit that
//! access rights, and later replication, scanning and proxy-cache policies, hang off.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgConnection;

use crate::metadata::Sort;

pub type ProjectId = i64;

/// What the access check on every registry request needs to know about a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectRef {
    pub id: ProjectId,
    pub name: String,
    /// Anyone, even anonymous, may pull.
    pub public: bool,
}

pub async fn find_by_name(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Option<ProjectRef>, sqlx::Error> {
    sqlx::query_as!(
        ProjectRef,
        "SELECT id, name, public FROM projects WHERE name = $1",
        name
    )
    .fetch_optional(conn)
    .await
}

/// Creates a project owned by `owner_id`, or returns the existing one of that name
/// (concurrent pushes into a new project must not fail each other).
pub async fn find_or_create(
    conn: &mut PgConnection,
    name: &str,
    public: bool,
    owner_id: Option<i64>,
) -> Result<ProjectRef, sqlx::Error> {
    if let Some(project) = find_by_name(&mut *conn, name).await? {
        return Ok(project);
    }
    let inserted = sqlx::query_as!(
        ProjectRef,
        r#"INSERT INTO projects (name, public, owner_id) VALUES ($1, $2, $3)
           ON CONFLICT (name) DO NOTHING
           RETURNING id, name, public"#,
        name,
        public,
        owner_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    match inserted {
        Some(project) => Ok(project),
        None => find_by_name(&mut *conn, name)
            .await?
            .ok_or(sqlx::Error::RowNotFound),
    }
}

pub async fn find_by_id(
    conn: &mut PgConnection,
    id: ProjectId,
) -> Result<Option<ProjectRef>, sqlx::Error> {
    sqlx::query_as!(
        ProjectRef,
        "SELECT id, name, public FROM projects WHERE id = $1",
        id
    )
    .fetch_optional(conn)
    .await
}

/// The longest project name Harbor accepts.
pub const MAX_PROJECT_NAME_LEN: usize = 255;

/// A project name that Harbor would accept and that can start a repository name:
/// `^[a-z0-9]+(?:[._-][a-z0-9]+)*$`, 1 to 255 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProjectName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectNameError {
    #[error("the project name must be 1 to {MAX_PROJECT_NAME_LEN} characters long")]
    Length,
    #[error("project name is not in lower case or contains illegal characters")]
    Characters,
}

impl ProjectName {
    pub fn parse(input: &str) -> Result<ProjectName, ProjectNameError> {
        if input.is_empty() || input.len() > MAX_PROJECT_NAME_LEN {
            return Err(ProjectNameError::Length);
        }
        // Harbor's rule: runs of lower-case alphanumerics joined by single `.`, `_` or
        // `-`. It is stricter than the OCI component grammar (no `__`, no `--`), so
        // every project name is also a valid first component of a repository name.
        let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        let separator = |c: char| matches!(c, '.' | '_' | '-');
        let mut previous_was_separator = true;
        for c in input.chars() {
            if alnum(c) {
                previous_was_separator = false;
            } else if separator(c) && !previous_was_separator {
                previous_was_separator = true;
            } else {
                return Err(ProjectNameError::Characters);
            }
        }
        if previous_was_separator {
            return Err(ProjectNameError::Characters);
        }
        if crate::name::RepositoryName::parse(input).is_err() {
            return Err(ProjectNameError::Characters);
        }
        Ok(ProjectName(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A project as the management API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectDetail {
    pub id: ProjectId,
    pub name: String,
    /// `None` once the owner's account is deleted.
    pub owner_id: Option<i64>,
    pub owner_name: Option<String>,
    pub public: bool,
    /// Harbor's other metadata (`auto_scan`, `severity`, …), string values; `public`
    /// is the column above, never in here.
    pub metadata: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Repositories holding at least one manifest.
    pub repo_count: i64,
    /// The viewing user's membership role id in the project, if any.
    pub viewer_role_id: Option<i16>,
}

/// Which projects a listing may show at all, before any filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    /// System administrators (and robots covering every project).
    All,
    /// Public projects, plus those where `member_user_id` is a member and those named
    /// in `names` (a robot's permissions).
    Limited {
        member_user_id: Option<i64>,
        names: Vec<String>,
    },
}

/// A project listing's filters; `None` filters nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectFilter {
    pub visibility: Visibility,
    /// An SQL `LIKE` pattern (with `\` escapes) the name must match.
    pub name_like: Option<String>,
    pub public: Option<bool>,
    /// The owner's exact username.
    pub owner: Option<String>,
    pub ids: Option<Vec<ProjectId>>,
}

/// Rows of a listing query, before their metadata is decoded.
struct DetailRow {
    id: i64,
    name: String,
    owner_id: Option<i64>,
    owner_name: Option<String>,
    public: bool,
    metadata: Json<BTreeMap<String, String>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    repo_count: i64,
    viewer_role_id: Option<i16>,
}

impl From<DetailRow> for ProjectDetail {
    fn from(row: DetailRow) -> ProjectDetail {
        ProjectDetail {
            id: row.id,
            name: row.name,
            owner_id: row.owner_id,
            owner_name: row.owner_name,
            public: row.public,
            metadata: row.metadata.0,
            created_at: row.created_at,
            updated_at: row.updated_at,
            repo_count: row.repo_count,
            viewer_role_id: row.viewer_role_id,
        }
    }
}

/// The visibility parameters the listing queries take: (all, member user, names).
fn visibility_params(visibility: &Visibility) -> (bool, Option<i64>, Vec<String>) {
    match visibility {
        Visibility::All => (true, None, Vec::new()),
        Visibility::Limited {
            member_user_id,
            names,
        } => (false, *member_user_id, names.clone()),
    }
}

/// How many projects `filter` matches.
pub async fn count(conn: &mut PgConnection, filter: &ProjectFilter) -> Result<i64, sqlx::Error> {
    let (all, member, names) = visibility_params(&filter.visibility);
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM projects p
           LEFT JOIN users o ON o.id = p.owner_id
           WHERE ($1 OR p.public OR p.name = ANY($3::text[])
                  OR EXISTS (SELECT 1 FROM project_members m
                             WHERE m.project_id = p.id AND m.user_id = $2))
             AND ($4::text IS NULL OR p.name LIKE $4)
             AND ($5::bool IS NULL OR p.public = $5)
             AND ($6::text IS NULL OR o.username = $6)
             AND ($7::int8[] IS NULL OR p.id = ANY($7))"#,
        all,
        member,
        &names,
        filter.name_like,
        filter.public,
        filter.owner,
        filter.ids.as_deref(),
    )
    .fetch_one(conn)
    .await
}

/// One page of the projects `filter` matches, with `viewer_user_id`'s role in each.
/// Sort keys: `name`, `creation_time`, `update_time`, `project_id`; ties by id.
pub async fn list(
    conn: &mut PgConnection,
    filter: &ProjectFilter,
    sort: Sort<'_>,
    viewer_user_id: Option<i64>,
    limit: i64,
    offset: i64,
) -> Result<Vec<ProjectDetail>, sqlx::Error> {
    let (all, member, names) = visibility_params(&filter.visibility);
    let rows = sqlx::query_as!(
        DetailRow,
        r#"SELECT p.id, p.name, p.owner_id, o.username AS "owner_name?", p.public,
                  p.metadata AS "metadata: Json<BTreeMap<String, String>>",
                  p.created_at, p.updated_at,
                  (SELECT count(*) FROM repositories r
                   WHERE r.project_id = p.id
                     AND EXISTS (SELECT 1 FROM manifests mf WHERE mf.repository_id = r.id))
                      AS "repo_count!",
                  v.role_id AS "viewer_role_id?"
           FROM projects p
           LEFT JOIN users o ON o.id = p.owner_id
           LEFT JOIN project_members v ON v.project_id = p.id AND v.user_id = $10
           WHERE ($1 OR p.public OR p.name = ANY($3::text[])
                  OR EXISTS (SELECT 1 FROM project_members m
                             WHERE m.project_id = p.id AND m.user_id = $2))
             AND ($4::text IS NULL OR p.name LIKE $4)
             AND ($5::bool IS NULL OR p.public = $5)
             AND ($6::text IS NULL OR o.username = $6)
             AND ($7::int8[] IS NULL OR p.id = ANY($7))
           ORDER BY
             CASE WHEN $11 = 'name' THEN p.name END ASC,
             CASE WHEN $11 = '-name' THEN p.name END DESC,
             CASE WHEN $11 = 'creation_time' THEN p.created_at END ASC,
             CASE WHEN $11 = '-creation_time' THEN p.created_at END DESC,
             CASE WHEN $11 = 'update_time' THEN p.updated_at END ASC,
             CASE WHEN $11 = '-update_time' THEN p.updated_at END DESC,
             CASE WHEN $11 = '-project_id' THEN p.id END DESC,
             p.id ASC
           LIMIT $8 OFFSET $9"#,
        all,
        member,
        &names,
        filter.name_like,
        filter.public,
        filter.owner,
        filter.ids.as_deref(),
        limit,
        offset,
        viewer_user_id,
        sort.signed_key(),
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(ProjectDetail::from).collect())
}

/// One project with `viewer_user_id`'s role in it.
pub async fn get_detail(
    conn: &mut PgConnection,
    id: ProjectId,
    viewer_user_id: Option<i64>,
) -> Result<Option<ProjectDetail>, sqlx::Error> {
    let row = sqlx::query_as!(
        DetailRow,
        r#"SELECT p.id, p.name, p.owner_id, o.username AS "owner_name?", p.public,
                  p.metadata AS "metadata: Json<BTreeMap<String, String>>",
                  p.created_at, p.updated_at,
                  (SELECT count(*) FROM repositories r
                   WHERE r.project_id = p.id
                     AND EXISTS (SELECT 1 FROM manifests mf WHERE mf.repository_id = r.id))
                      AS "repo_count!",
                  v.role_id AS "viewer_role_id?"
           FROM projects p
           LEFT JOIN users o ON o.id = p.owner_id
           LEFT JOIN project_members v ON v.project_id = p.id AND v.user_id = $2
           WHERE p.id = $1"#,
        id,
        viewer_user_id,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(ProjectDetail::from))
}

/// What a new project starts with.
#[derive(Debug, Clone)]
pub struct NewProject {
    pub name: ProjectName,
    pub public: bool,
    pub metadata: BTreeMap<String, String>,
    /// `None`: the lowest-id system administrator owns it (Harbor's rule for projects
    /// created by robots), or nobody if there is none.
    pub owner_id: Option<i64>,
}

/// A created project: its id and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedProject {
    pub id: ProjectId,
    pub owner_id: Option<i64>,
}

/// Inserts a project. A duplicate name fails with the `projects_name_key` violation.
pub async fn create(
    conn: &mut PgConnection,
    project: &NewProject,
) -> Result<CreatedProject, sqlx::Error> {
    sqlx::query_as!(
        CreatedProject,
        r#"INSERT INTO projects (name, public, metadata, owner_id)
           VALUES ($1, $2, $3,
                   COALESCE($4, (SELECT min(id) FROM users WHERE sysadmin)))
           RETURNING id, owner_id"#,
        project.name.as_str(),
        project.public,
        Json(&project.metadata) as _,
        project.owner_id,
    )
    .fetch_one(conn)
    .await
}

/// A project's `public` flag and its other metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectSettings {
    pub public: bool,
    pub metadata: BTreeMap<String, String>,
}

/// Reads a project's settings and locks its row until the transaction ends, so that
/// read-merge-write updates of its metadata do not lose each other's changes.
pub async fn settings_for_update(
    conn: &mut PgConnection,
    id: ProjectId,
) -> Result<Option<ProjectSettings>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT public, metadata AS "metadata: Json<BTreeMap<String, String>>"
           FROM projects WHERE id = $1 FOR UPDATE"#,
        id
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| ProjectSettings {
        public: r.public,
        metadata: r.metadata.0,
    }))
}

/// Replaces a project's `public` flag and other metadata; returns whether it exists.
pub async fn update_settings(
    conn: &mut PgConnection,
    id: ProjectId,
    public: bool,
    metadata: &BTreeMap<String, String>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE projects SET public = $2, metadata = $3, updated_at = now() WHERE id = $1",
        id,
        public,
        Json(metadata) as _,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Why a project cannot be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteBlocker {
    /// Some repository holds a manifest.
    Repositories,
    /// An upload into one of its repositories is in progress: deleting would orphan its
    /// staged bytes.
    Uploads,
}

impl DeleteBlocker {
    /// Harbor's message for the first; ours for the second.
    pub fn message(self) -> &'static str {
        match self {
            DeleteBlocker::Repositories => "the project contains repositories, can not be deleted",
            DeleteBlocker::Uploads => {
                "the project has uploads in progress, can not be deleted until they finish or expire"
            }
        }
    }
}

/// What stops the project from being deleted now, if anything.
pub async fn delete_blocker(
    conn: &mut PgConnection,
    id: ProjectId,
) -> Result<Option<DeleteBlocker>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT
             EXISTS (SELECT 1 FROM repositories r JOIN manifests m ON m.repository_id = r.id
                     WHERE r.project_id = $1) AS "repositories!",
             EXISTS (SELECT 1 FROM repositories r JOIN upload_sessions u ON u.repository_id = r.id
                     WHERE r.project_id = $1) AS "uploads!""#,
        id
    )
    .fetch_one(conn)
    .await?;
    Ok(if row.repositories {
        Some(DeleteBlocker::Repositories)
    } else if row.uploads {
        Some(DeleteBlocker::Uploads)
    } else {
        None
    })
}

/// Deletes a project that has no repository content, with its empty repositories
/// (left by blob pushes that never got a manifest; the blobs stay for GC), members and
/// robots. Run it in a transaction: a repository created concurrently makes the final
/// delete fail with the `repositories_project_id_fkey` violation. Returns the blocker
/// instead when there is one, and `Ok(None)` also when the project was already gone.
pub async fn delete_if_empty(
    conn: &mut PgConnection,
    id: ProjectId,
) -> Result<Option<DeleteBlocker>, sqlx::Error> {
    if let Some(blocker) = delete_blocker(&mut *conn, id).await? {
        return Ok(Some(blocker));
    }
    sqlx::query!("DELETE FROM repositories WHERE project_id = $1", id)
        .execute(&mut *conn)
        .await?;
    sqlx::query!("DELETE FROM projects WHERE id = $1", id)
        .execute(&mut *conn)
        .await?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_follow_harbor() {
        for ok in ["a", "team-a", "a.b_c-d", "123", "x9"] {
            assert_eq!(ProjectName::parse(ok).unwrap().as_str(), ok);
        }
        assert_eq!(ProjectName::parse(""), Err(ProjectNameError::Length));
        assert_eq!(
            ProjectName::parse(&"a".repeat(256)),
            Err(ProjectNameError::Length)
        );
        assert!(ProjectName::parse(&"a".repeat(255)).is_ok());
        for bad in [
            "Team", "a b", "-a", "a-", "a--b", "a__b", "a/b", "a..b", "é", "_",
        ] {
            assert_eq!(
                ProjectName::parse(bad),
                Err(ProjectNameError::Characters),
                "{bad:?}"
            );
        }
    }
}
