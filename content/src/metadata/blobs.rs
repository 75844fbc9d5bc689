//! Blobs: one row per verified blob, and the links that let a repository serve it.
//!
//! A blob row exists only once its bytes are committed to storage under its digest, so
//! "the row exists" is what "the blob exists" means everywhere. A repository may serve a
//! blob only through a `repository_blobs` link (push, mount); deleting a blob from a
//! repository removes the link and leaves the bytes to garbage collection, because other
//! repositories may link the same digest.

use sqlx::PgConnection;

use crate::digest::Digest;
use crate::metadata::repositories::RepositoryId;
use crate::name::RepositoryName;

/// The size of a blob linked to `repository`, or `None` when the repository does not
/// exist or does not link the blob: both are "blob unknown" to a client.
pub async fn find_linked(
    conn: &mut PgConnection,
    repository: &RepositoryName,
    digest: &Digest,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT b.size FROM repository_blobs rb
           JOIN repositories r ON r.id = rb.repository_id
           JOIN blobs b ON b.digest = rb.blob_digest
           WHERE r.name = $1 AND rb.blob_digest = $2"#,
        repository.as_str(),
        digest.to_string()
    )
    .fetch_optional(conn)
    .await
}

/// Records a verified blob (a no-op when it is already known: same digest, same bytes)
/// and links it to the repository. Run both in the caller's transaction.
pub async fn insert_and_link(
    conn: &mut PgConnection,
    repository_id: RepositoryId,
    digest: &Digest,
    size: i64,
) -> Result<(), sqlx::Error> {
    let digest = digest.to_string();
    sqlx::query!(
        r#"INSERT INTO blobs (digest, size) VALUES ($1, $2)
           ON CONFLICT (digest) DO NOTHING"#,
        digest,
        size
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        r#"INSERT INTO repository_blobs (repository_id, blob_digest) VALUES ($1, $2)
           ON CONFLICT DO NOTHING"#,
        repository_id,
        digest
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Cross-repository mount: links `digest` into `repository_id` when it is linked in
/// `from`, or, with no `from`, when the registry has the blob at all. Returns the blob's
/// size when it was (or already is) linked, `None` when the caller must fall back to a
/// normal upload.
pub async fn mount(
    conn: &mut PgConnection,
    repository_id: RepositoryId,
    digest: &Digest,
    from: Option<&RepositoryName>,
) -> Result<Option<i64>, sqlx::Error> {
    // One statement: the source check and the link see the same snapshot, and the
    // foreign key makes the insert fail rather than link a blob deleted meanwhile.
    sqlx::query_scalar!(
        r#"WITH source AS (
               SELECT b.digest, b.size FROM blobs b
               WHERE b.digest = $2
                 AND ($3::text IS NULL OR EXISTS (
                     SELECT 1 FROM repository_blobs rb
                     JOIN repositories r ON r.id = rb.repository_id
                     WHERE r.name = $3 AND rb.blob_digest = b.digest))
           ), linked AS (
               INSERT INTO repository_blobs (repository_id, blob_digest)
               SELECT $1, digest FROM source
               ON CONFLICT DO NOTHING
           )
           SELECT size AS "size!" FROM source"#,
        repository_id,
        digest.to_string(),
        from.map(RepositoryName::as_str)
    )
    .fetch_optional(conn)
    .await
}

/// Removes a blob's link from a repository. Returns whether there was one.
pub async fn unlink(
    conn: &mut PgConnection,
    repository: &RepositoryName,
    digest: &Digest,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!(
        r#"DELETE FROM repository_blobs rb USING repositories r
           WHERE r.id = rb.repository_id AND r.name = $1 AND rb.blob_digest = $2"#,
        repository.as_str(),
        digest.to_string()
    )
    .execute(conn)
    .await?;
    Ok(result.rows_affected() > 0)
}
