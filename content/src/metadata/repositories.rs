//! Repositories: created on first push, looked up by name on every request.

use sqlx::PgConnection;

use crate::name::RepositoryName;

/// A repository's id, the key every other table uses.
pub type RepositoryId = i64;

pub async fn find(
    conn: &mut PgConnection,
    name: &RepositoryName,
) -> Result<Option<RepositoryId>, sqlx::Error> {
    sqlx::query_scalar!("SELECT id FROM repositories WHERE name = $1", name.as_str())
        .fetch_optional(conn)
        .await
}

/// Returns the repository's id, creating it if needed. Safe under concurrent callers.
pub async fn find_or_create(
    conn: &mut PgConnection,
    name: &RepositoryName,
) -> Result<RepositoryId, sqlx::Error> {
    // The no-op update makes RETURNING yield the row when it already exists, so one
    // round trip serves both cases.
    sqlx::query_scalar!(
        r#"INSERT INTO repositories (name) VALUES ($1)
           ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
           RETURNING id"#,
        name.as_str()
    )
    .fetch_one(conn)
    .await
}

/// One page of repository names that hold at least one manifest, in lexical order,
/// after `last` (exclusive).
pub async fn list_with_content(
    conn: &mut PgConnection,
    last: Option<&str>,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT r.name FROM repositories r
           WHERE ($1::text IS NULL OR r.name > $1)
             AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id)
           ORDER BY r.name
           LIMIT $2"#,
        last,
        limit
    )
    .fetch_all(conn)
    .await
}
