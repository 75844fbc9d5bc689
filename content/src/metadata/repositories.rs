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

/// Returns the repository's id, creating it in its project (the first component of its
/// name) if needed. The project must exist: callers check access to it first, and a
/// missing project surfaces as `RowNotFound`. Safe under concurrent callers,
/// and takes no lock on the repository row, so transactions that go on to insert rows
/// referencing it (manifests, tags, blob links) do not block each other.
///
/// The tempting one-statement upsert (`ON CONFLICT DO UPDATE SET name = EXCLUDED.name
/// RETURNING id`) rewrites a unique column, which PostgreSQL treats as a key update: the
/// row stays locked FOR UPDATE until commit and every other transaction's foreign-key
/// check on it waits. Two concurrent pushes to a new repository then deadlock.
pub async fn find_or_create(
    conn: &mut PgConnection,
    name: &RepositoryName,
) -> Result<RepositoryId, sqlx::Error> {
    if let Some(id) = find(&mut *conn, name).await? {
        return Ok(id);
    }
    // DO NOTHING waits for a concurrent insert of the same name to finish; if that one
    // committed, RETURNING is empty and the next statement (a new snapshot under READ
    // COMMITTED) sees its row.
    let inserted = sqlx::query_scalar!(
        r#"INSERT INTO repositories (name, project_id)
           SELECT $1, p.id FROM projects p WHERE p.name = $2
           ON CONFLICT (name) DO NOTHING
           RETURNING id"#,
        name.as_str(),
        name.project()
    )
    .fetch_optional(&mut *conn)
    .await?;
    match inserted {
        Some(id) => Ok(id),
        None => find(&mut *conn, name)
            .await?
            .ok_or(sqlx::Error::RowNotFound),
    }
}
