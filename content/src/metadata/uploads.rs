//! Upload sessions: the accepted length of each upload in progress.
//!
//! The bytes live in blob storage; this table says how many of them count. Keeping the
//! accepted length here (and not in a gateway's memory) is what lets an upload continue
//! after a restart or on another replica, and what lets a failed PATCH be forgotten: the
//! length only moves when a chunk was written completely, by a compare-and-set.

use std::time::Duration;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::metadata::repositories::RepositoryId;
use crate::name::RepositoryName;

/// An upload in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadSession {
    pub id: Uuid,
    pub repository_id: RepositoryId,
    /// Bytes accepted so far.
    pub size: i64,
}

pub async fn create(
    conn: &mut PgConnection,
    id: Uuid,
    repository_id: RepositoryId,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO upload_sessions (id, repository_id) VALUES ($1, $2)",
        id,
        repository_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The session `id` if it belongs to `repository`: an upload started in one repository
/// cannot be continued through another's URL.
pub async fn find(
    conn: &mut PgConnection,
    repository: &RepositoryName,
    id: Uuid,
) -> Result<Option<UploadSession>, sqlx::Error> {
    sqlx::query_as!(
        UploadSession,
        r#"SELECT s.id, s.repository_id, s.size FROM upload_sessions s
           JOIN repositories r ON r.id = s.repository_id
           WHERE s.id = $1 AND r.name = $2"#,
        id,
        repository.as_str()
    )
    .fetch_optional(conn)
    .await
}

/// Moves the accepted length from `old` to `new`, only if it is still `old`. `false`
/// means another writer moved it first or the session is gone.
pub async fn advance(
    conn: &mut PgConnection,
    id: Uuid,
    old: i64,
    new: i64,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!(
        r#"UPDATE upload_sessions SET size = $3, updated_at = now()
           WHERE id = $1 AND size = $2"#,
        id,
        old,
        new
    )
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Ends a session. With `size`, only if its accepted length is still that (the
/// completion of an upload must not race a chunk written elsewhere). Returns whether a
/// row was deleted.
pub async fn delete(
    conn: &mut PgConnection,
    id: Uuid,
    size: Option<i64>,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!(
        "DELETE FROM upload_sessions WHERE id = $1 AND ($2::bigint IS NULL OR size = $2)",
        id,
        size
    )
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Deletes up to `limit` sessions not updated for `older_than` and returns their ids, so
/// the caller can remove their data. Rows go first: a session is then never visible
/// without its data, and a crash in between leaves only unreferenced upload files.
pub async fn delete_expired(
    conn: &mut PgConnection,
    older_than: Duration,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"DELETE FROM upload_sessions WHERE id IN (
               SELECT id FROM upload_sessions
               WHERE updated_at < now() - make_interval(secs => $1)
               ORDER BY updated_at
               LIMIT $2
               FOR UPDATE SKIP LOCKED)
           RETURNING id"#,
        older_than.as_secs_f64(),
        limit
    )
    .fetch_all(conn)
    .await
}
