//! The management API's view of content: repositories with their counts, artifacts
//! (Harbor's word for a manifest in a repository) with their tags and index children,
//! and the deletion of a whole repository.
//!
//! The registry path (`/v2/`) never reads these: they serve listings with filters, sort
//! orders and pages. Sort keys arrive as the API's field names and are matched in SQL
//! (`CASE WHEN $key = …`) so that every query stays a checked one.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

use crate::metadata::manifests::ManifestId;
use crate::metadata::projects::ProjectId;
use crate::metadata::repositories::RepositoryId;
use crate::metadata::Sort;
use crate::name::Reference;

/// A repository as the management API lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct RepositoryRow {
    pub id: RepositoryId,
    pub project_id: ProjectId,
    pub name: String,
    /// Artifacts as Harbor counts them: tagged, or not a child of an index.
    pub artifact_count: i64,
    pub created_at: DateTime<Utc>,
    /// The last push or tag change, or the creation time.
    pub updated_at: DateTime<Utc>,
}

/// Which projects' repositories a caller may list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    /// Every project (system administrators).
    All,
    /// Public projects, the projects where the user `member` holds a role, and
    /// `projects`.
    Limited {
        member: Option<i64>,
        projects: Vec<ProjectId>,
    },
}

impl Visibility {
    /// The SQL parameters: (all, member, projects).
    fn params(&self) -> (bool, Option<i64>, &[ProjectId]) {
        match self {
            Visibility::All => (true, None, &[]),
            Visibility::Limited { member, projects } => (false, *member, projects),
        }
    }
}

/// What to list repositories by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryFilter<'a> {
    pub visibility: Visibility,
    /// Only this project's repositories.
    pub project_id: Option<ProjectId>,
    /// A `LIKE` pattern (backslash escapes) on the full name `project/repo`.
    pub name_like: Option<&'a str>,
}

/// One page of repositories. Sort keys: `id`, `name`, `creation_time`, `update_time`.
pub async fn list_repositories(
    conn: &mut PgConnection,
    filter: &RepositoryFilter<'_>,
    sort: Sort<'_>,
    limit: i64,
    offset: i64,
) -> Result<Vec<RepositoryRow>, sqlx::Error> {
    let (all, member, projects) = filter.visibility.params();
    sqlx::query_as!(
        RepositoryRow,
        r#"SELECT r.id, r.project_id, r.name, r.created_at,
                  s.artifact_count AS "artifact_count!", s.updated_at AS "updated_at!"
           FROM repositories r
           JOIN projects p ON p.id = r.project_id
           CROSS JOIN LATERAL (
               SELECT
                   (SELECT count(*) FROM manifests m
                    WHERE m.repository_id = r.id
                      AND (EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = m.id)
                           OR NOT EXISTS (SELECT 1 FROM manifest_children c
                                          WHERE c.child_id = m.id))) AS artifact_count,
                   GREATEST(r.created_at,
                            (SELECT max(m.created_at) FROM manifests m
                             WHERE m.repository_id = r.id),
                            (SELECT max(t.updated_at) FROM tags t
                             WHERE t.repository_id = r.id)) AS updated_at
           ) s
           WHERE ($1 OR p.public OR r.project_id = ANY($3::bigint[])
                  OR r.project_id IN (SELECT pm.project_id FROM project_members pm
                                      WHERE pm.user_id = $2))
             AND ($4::bigint IS NULL OR r.project_id = $4)
             AND ($5::text IS NULL OR r.name LIKE $5)
           ORDER BY
               CASE WHEN $6 = 'name' AND NOT $7 THEN r.name END ASC,
               CASE WHEN $6 = 'name' AND $7 THEN r.name END DESC,
               CASE WHEN $6 = 'creation_time' AND NOT $7 THEN r.created_at END ASC,
               CASE WHEN $6 = 'creation_time' AND $7 THEN r.created_at END DESC,
               CASE WHEN $6 = 'update_time' AND NOT $7 THEN s.updated_at END ASC,
               CASE WHEN $6 = 'update_time' AND $7 THEN s.updated_at END DESC,
               CASE WHEN $7 THEN r.id END DESC,
               r.id ASC
           LIMIT $8 OFFSET $9"#,
        all,
        member,
        projects,
        filter.project_id,
        filter.name_like,
        sort.key,
        sort.descending,
        limit,
        offset
    )
    .fetch_all(conn)
    .await
}

/// How many repositories [`list_repositories`] would list over all pages.
pub async fn count_repositories(
    conn: &mut PgConnection,
    filter: &RepositoryFilter<'_>,
) -> Result<i64, sqlx::Error> {
    let (all, member, projects) = filter.visibility.params();
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!"
           FROM repositories r
           JOIN projects p ON p.id = r.project_id
           WHERE ($1 OR p.public OR r.project_id = ANY($3::bigint[])
                  OR r.project_id IN (SELECT pm.project_id FROM project_members pm
                                      WHERE pm.user_id = $2))
             AND ($4::bigint IS NULL OR r.project_id = $4)
             AND ($5::text IS NULL OR r.name LIKE $5)"#,
        all,
        member,
        projects,
        filter.project_id,
        filter.name_like
    )
    .fetch_one(conn)
    .await
}

/// A repository by its full name (`project/repo`).
pub async fn find_repository(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Option<RepositoryRow>, sqlx::Error> {
    sqlx::query_as!(
        RepositoryRow,
        r#"SELECT r.id, r.project_id, r.name, r.created_at,
                  (SELECT count(*) FROM manifests m
                   WHERE m.repository_id = r.id
                     AND (EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = m.id)
                          OR NOT EXISTS (SELECT 1 FROM manifest_children c
                                         WHERE c.child_id = m.id))) AS "artifact_count!",
                  GREATEST(r.created_at,
                           (SELECT max(m.created_at) FROM manifests m
                            WHERE m.repository_id = r.id),
                           (SELECT max(t.updated_at) FROM tags t
                            WHERE t.repository_id = r.id)) AS "updated_at!"
           FROM repositories r
           WHERE r.name = $1"#,
        name
    )
    .fetch_optional(conn)
    .await
}

/// Deletes a repository with its manifests, tags, blob links and upload sessions; the
/// blobs themselves stay for garbage collection. Returns the digests of the deleted
/// manifests, or `None` when the repository did not exist. Run it in
/// a transaction.
pub async fn delete_repository(
    conn: &mut PgConnection,
    id: RepositoryId,
) -> Result<Option<Vec<String>>, sqlx::Error> {
    // The row lock makes pushes into the repository (whose foreign-key checks take KEY
    // SHARE on it) wait for us, so no index can gain a child between the two deletes.
    let found = sqlx::query_scalar!("SELECT id FROM repositories WHERE id = $1 FOR UPDATE", id)
        .fetch_optional(&mut *conn)
        .await?;
    if found.is_none() {
        return Ok(None);
    }
    let digests = sqlx::query_scalar!(
        "SELECT digest FROM manifests WHERE repository_id = $1 ORDER BY id",
        id
    )
    .fetch_all(&mut *conn)
    .await?;
    // Index → child links refuse (RESTRICT) the deletion of a child that is still
    // listed; within one repository every link goes, so drop them before the cascade.
    sqlx::query!(
        r#"DELETE FROM manifest_children c USING manifests m
           WHERE c.parent_id = m.id AND m.repository_id = $1"#,
        id
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!("DELETE FROM repositories WHERE id = $1", id)
        .execute(&mut *conn)
        .await?;
    Ok(Some(digests))
}

/// A manifest in a repository, with what the artifact JSON is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactRow {
    pub id: ManifestId,
    pub repository_id: RepositoryId,
    pub digest: String,
    /// The manifest's own media type.
    pub media_type: String,
    /// `artifactType`, or the config media type.
    pub artifact_type: Option<String>,
    pub annotations: Option<Value>,
    /// The manifest's bytes plus the blobs (config and layers) it references.
    pub size: i64,
    /// The manifest bytes, for what the columns do not hold (the config descriptor,
    /// the platforms of an index's children).
    pub content: Vec<u8>,
    pub pushed_at: DateTime<Utc>,
}

/// Harbor's `tags` keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagFilter<'a> {
    /// Harbor's default: tagged artifacts, and untagged ones that no index lists (the
    /// children of an index show through their parent).
    Default,
    /// `tags=*`: tagged artifacts only.
    Tagged,
    /// `tags=nil`: untagged artifacts that no index lists.
    Untagged,
    /// `tags=v` or `tags=~v`: artifacts with a tag matching this `LIKE` pattern.
    Matching(&'a str),
}

impl TagFilter<'_> {
    /// The SQL parameters: (mode, pattern).
    fn params(&self) -> (&'static str, Option<&str>) {
        match self {
            TagFilter::Default => ("default", None),
            TagFilter::Tagged => ("tagged", None),
            TagFilter::Untagged => ("untagged", None),
            TagFilter::Matching(pattern) => ("matching", Some(pattern)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArtifactFilter<'a> {
    pub tags: TagFilter<'a>,
    pub digest: Option<&'a str>,
    /// The manifest's media type or its artifact type.
    pub media_type: Option<&'a str>,
}

/// One page of a repository's artifacts. Sort keys: `id`, `push_time`, `digest`.
pub async fn list_artifacts(
    conn: &mut PgConnection,
    repository_id: RepositoryId,
    filter: &ArtifactFilter<'_>,
    sort: Sort<'_>,
    limit: i64,
    offset: i64,
) -> Result<Vec<ArtifactRow>, sqlx::Error> {
    let (mode, pattern) = filter.tags.params();
    sqlx::query_as!(
        ArtifactRow,
        r#"SELECT m.id, m.repository_id, m.digest, m.media_type, m.artifact_type,
                  m.annotations, m.content, m.created_at AS pushed_at,
                  m.size + COALESCE((SELECT sum(b.size) FROM manifest_blobs mb
                                     JOIN blobs b ON b.digest = mb.blob_digest
                                     WHERE mb.manifest_id = m.id), 0)::bigint AS "size!"
           FROM manifests m
           WHERE m.repository_id = $1
             AND CASE $2
                 WHEN 'tagged' THEN EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = m.id)
                 WHEN 'untagged' THEN
                     NOT EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = m.id)
                     AND NOT EXISTS (SELECT 1 FROM manifest_children c WHERE c.child_id = m.id)
                 WHEN 'matching' THEN EXISTS (SELECT 1 FROM tags t
                                              WHERE t.manifest_id = m.id AND t.name LIKE $3)
                 ELSE EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = m.id)
                      OR NOT EXISTS (SELECT 1 FROM manifest_children c WHERE c.child_id = m.id)
                 END
             AND ($4::text IS NULL OR m.digest = $4)
             AND ($5::text IS NULL OR m.media_type = $5 OR m.artifact_type = $5)
           ORDER BY
               CASE WHEN $6 = 'push_time' AND NOT $7 THEN m.created_at END ASC,
               CASE WHEN $6 = 'push_time' AND $7 THEN m.created_at END DESC,
               CASE WHEN $6 = 'digest' AND NOT $7 THEN m.digest END ASC,
               CASE WHEN $6 = 'digest' AND $7 THEN m.digest END DESC,
               CASE WHEN $7 THEN m.id END DESC,
               m.id ASC
           LIMIT $8 OFFSET $9"#,
        repository_id,
        mode,
        pattern,
        filter.digest,
        filter.media_type,
        sort.key,
        sort.descending,
        limit,
        offset
    )
    .fetch_all(conn)
    .await
}

/// How many artifacts [`list_artifacts`] would list over all pages.
pub async fn count_artifacts(
    conn: &mut PgConnection,
    repository_id: RepositoryId,
    filter: &ArtifactFilter<'_>,
) -> Result<i64, sqlx::Error> {
    let (mode, pattern) = filter.tags.params();
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!"
           FROM manifests m
           WHERE m.repository_id = $1
             AND CASE $2
                 WHEN 'tagged' THEN EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = m.id)
                 WHEN 'untagged' THEN
                     NOT EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = m.id)
                     AND NOT EXISTS (SELECT 1 FROM manifest_children c WHERE c.child_id = m.id)
                 WHEN 'matching' THEN EXISTS (SELECT 1 FROM tags t
                                              WHERE t.manifest_id = m.id AND t.name LIKE $3)
                 ELSE EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = m.id)
                      OR NOT EXISTS (SELECT 1 FROM manifest_children c WHERE c.child_id = m.id)
                 END
             AND ($4::text IS NULL OR m.digest = $4)
             AND ($5::text IS NULL OR m.media_type = $5 OR m.artifact_type = $5)"#,
        repository_id,
        mode,
        pattern,
        filter.digest,
        filter.media_type
    )
    .fetch_one(conn)
    .await
}

/// An artifact by digest or by one of its tags; index children are found too.
pub async fn find_artifact(
    conn: &mut PgConnection,
    repository_id: RepositoryId,
    reference: &Reference,
) -> Result<Option<ArtifactRow>, sqlx::Error> {
    let (digest, tag) = match reference {
        Reference::Digest(digest) => (Some(digest.to_string()), None),
        Reference::Tag(tag) => (None, Some(tag.as_str())),
    };
    sqlx::query_as!(
        ArtifactRow,
        r#"SELECT m.id, m.repository_id, m.digest, m.media_type, m.artifact_type,
                  m.annotations, m.content, m.created_at AS pushed_at,
                  m.size + COALESCE((SELECT sum(b.size) FROM manifest_blobs mb
                                     JOIN blobs b ON b.digest = mb.blob_digest
                                     WHERE mb.manifest_id = m.id), 0)::bigint AS "size!"
           FROM manifests m
           WHERE m.repository_id = $1
             AND (m.digest = $2
                  OR m.id = (SELECT t.manifest_id FROM tags t
                             WHERE t.repository_id = $1 AND t.name = $3))"#,
        repository_id,
        digest,
        tag
    )
    .fetch_optional(conn)
    .await
}

/// A tag as the management API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRow {
    pub id: i64,
    pub repository_id: RepositoryId,
    pub manifest_id: ManifestId,
    pub name: String,
    /// When the tag was last pointed at its manifest.
    pub updated_at: DateTime<Utc>,
}

/// Every tag of the given manifests, newest first: the `tags` of an artifact listing.
pub async fn tags_of(
    conn: &mut PgConnection,
    manifest_ids: &[ManifestId],
) -> Result<Vec<TagRow>, sqlx::Error> {
    sqlx::query_as!(
        TagRow,
        r#"SELECT id, repository_id, manifest_id, name, updated_at FROM tags
           WHERE manifest_id = ANY($1::bigint[])
           ORDER BY updated_at DESC, id DESC"#,
        manifest_ids
    )
    .fetch_all(conn)
    .await
}

/// One page of one manifest's tags, optionally only those whose name matches the
/// `LIKE` pattern. Sort keys: `id`, `name`, `push_time`.
pub async fn list_tags(
    conn: &mut PgConnection,
    manifest_id: ManifestId,
    name_like: Option<&str>,
    sort: Sort<'_>,
    limit: i64,
    offset: i64,
) -> Result<Vec<TagRow>, sqlx::Error> {
    sqlx::query_as!(
        TagRow,
        r#"SELECT id, repository_id, manifest_id, name, updated_at FROM tags
           WHERE manifest_id = $1 AND ($2::text IS NULL OR name LIKE $2)
           ORDER BY
               CASE WHEN $3 = 'name' AND NOT $4 THEN name END ASC,
               CASE WHEN $3 = 'name' AND $4 THEN name END DESC,
               CASE WHEN $3 = 'push_time' AND NOT $4 THEN updated_at END ASC,
               CASE WHEN $3 = 'push_time' AND $4 THEN updated_at END DESC,
               CASE WHEN $4 THEN id END DESC,
               id ASC
           LIMIT $5 OFFSET $6"#,
        manifest_id,
        name_like,
        sort.key,
        sort.descending,
        limit,
        offset
    )
    .fetch_all(conn)
    .await
}

/// How many tags [`list_tags`] would list over all pages.
pub async fn count_tags(
    conn: &mut PgConnection,
    manifest_id: ManifestId,
    name_like: Option<&str>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM tags
           WHERE manifest_id = $1 AND ($2::text IS NULL OR name LIKE $2)"#,
        manifest_id,
        name_like
    )
    .fetch_one(conn)
    .await
}

/// One index → child link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildRow {
    pub parent_id: ManifestId,
    pub child_id: ManifestId,
    pub child_digest: String,
}

/// The children of the given indexes, in digest order.
pub async fn children_of(
    conn: &mut PgConnection,
    parent_ids: &[ManifestId],
) -> Result<Vec<ChildRow>, sqlx::Error> {
    sqlx::query_as!(
        ChildRow,
        r#"SELECT c.parent_id, c.child_id, m.digest AS child_digest
           FROM manifest_children c
           JOIN manifests m ON m.id = c.child_id
           WHERE c.parent_id = ANY($1::bigint[])
           ORDER BY c.parent_id, m.digest"#,
        parent_ids
    )
    .fetch_all(conn)
    .await
}
