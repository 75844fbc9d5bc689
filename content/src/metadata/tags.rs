//! Tags: movable names for manifests within a repository.
//!
//! A tag row points at a manifest row; deleting the manifest deletes its tags (ON DELETE
//! CASCADE), so a tag never dangles.

use sqlx::PgConnection;

use crate::metadata::manifests::ManifestId;
use crate::metadata::repositories::RepositoryId;
use crate::name::{RepositoryName, Tag};

/// Points `tag` at `manifest`, creating or moving it. Returns the digest the tag
/// pointed at before (`None`: the tag is new).
pub async fn set(
    conn: &mut PgConnection,
    repository_id: RepositoryId,
    tag: &Tag,
    manifest: ManifestId,
) -> Result<Option<String>, sqlx::Error> {
    // Concurrent pushes to one tag serialise on the row: each waits for the previous to
    // commit and then overwrites it, so the last to commit wins and none fails. The
    // previous digest is read under the same row lock, so it is the one replaced (two
    // concurrent pushes creating the same new tag both see `None`).
    let previous = sqlx::query_scalar!(
        r#"SELECT m.digest FROM tags t JOIN manifests m ON m.id = t.manifest_id
           WHERE t.repository_id = $1 AND t.name = $2
           FOR UPDATE OF t"#,
        repository_id,
        tag.as_str()
    )
    .fetch_optional(&mut *conn)
    .await?;
    sqlx::query!(
        r#"INSERT INTO tags (repository_id, name, manifest_id) VALUES ($1, $2, $3)
           ON CONFLICT (repository_id, name)
           DO UPDATE SET manifest_id = EXCLUDED.manifest_id, updated_at = now()"#,
        repository_id,
        tag.as_str(),
        manifest
    )
    .execute(conn)
    .await?;
    Ok(previous)
}

/// Deletes a tag, leaving its manifest. Returns the digest it pointed at, or `None`
/// when there was no such tag.
pub async fn delete(
    conn: &mut PgConnection,
    repository: &RepositoryName,
    tag: &Tag,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"DELETE FROM tags t USING repositories r, manifests m
           WHERE t.repository_id = r.id AND r.name = $1 AND t.name = $2
             AND m.id = t.manifest_id
           RETURNING m.digest"#,
        repository.as_str(),
        tag.as_str()
    )
    .fetch_optional(conn)
    .await
}

/// Creates `tag` on `manifest` unless the repository already has a tag of that name
/// (the management API refuses to move a tag; a push may). Returns whether it was
/// created.
pub async fn create(
    conn: &mut PgConnection,
    repository_id: RepositoryId,
    tag: &Tag,
    manifest: ManifestId,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!(
        r#"INSERT INTO tags (repository_id, name, manifest_id) VALUES ($1, $2, $3)
           ON CONFLICT (repository_id, name) DO NOTHING"#,
        repository_id,
        tag.as_str(),
        manifest
    )
    .execute(conn)
    .await?;
    Ok(result.rows_affected() > 0)
}

/// Deletes `tag` only if it points at `manifest`. Returns whether it did.
pub async fn delete_from(
    conn: &mut PgConnection,
    repository_id: RepositoryId,
    tag: &Tag,
    manifest: ManifestId,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!(
        "DELETE FROM tags WHERE repository_id = $1 AND name = $2 AND manifest_id = $3",
        repository_id,
        tag.as_str(),
        manifest
    )
    .execute(conn)
    .await?;
    Ok(result.rows_affected() > 0)
}

/// One page of a repository's tags in lexical (byte) order, after `last` (exclusive).
pub async fn list(
    conn: &mut PgConnection,
    repository_id: RepositoryId,
    last: Option<&str>,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT name FROM tags
           WHERE repository_id = $1 AND ($2::text IS NULL OR name > $2)
           ORDER BY name
           LIMIT $3"#,
        repository_id,
        last,
        limit
    )
    .fetch_all(conn)
    .await
}
