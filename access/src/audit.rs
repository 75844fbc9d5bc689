//! The audit log: who did what to which resource, when, from where, with what outcome.

use std::net::IpAddr;

use berth_content::metadata::Sort;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{Connection, PgConnection, Postgres};

/// One thing that happened, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// The principal's name (`anonymous`, a username, `robot$…`).
    pub username: String,
    /// `create`, `update`, `delete`, `pull`, `push`, `login_failed`, …
    pub operation: String,
    /// `project`, `repository`, `artifact`, `tag`, `member`, `robot`, `user`, …
    pub resource_type: String,
    /// e.g. `team-a/app:1.0`, `team-a`, `robot$team-a+ci`.
    pub resource: String,
    pub project_id: Option<i64>,
    pub client_addr: String,
    pub success: bool,
}

impl AuditEntry {
    /// A successful `operation` on `resource` by `username`, who called from `client`.
    pub fn new(
        username: &str,
        client: IpAddr,
        operation: &str,
        resource_type: &str,
        resource: impl Into<String>,
        project_id: Option<i64>,
    ) -> AuditEntry {
        AuditEntry {
            username: username.to_owned(),
            operation: operation.to_owned(),
            resource_type: resource_type.to_owned(),
            resource: resource.into(),
            project_id,
            client_addr: client.to_string(),
            success: true,
        }
    }
}

/// Records `entry`; call it inside the transaction of the change it describes, so the
/// record exists exactly when the change committed.
pub async fn record(conn: &mut PgConnection, entry: &AuditEntry) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO audit_logs
               (username, operation, resource_type, resource, project_id, client_addr, outcome)
           VALUES ($1, $2, $3, $4, $5, $6, $7)"#,
        entry.username,
        entry.operation,
        entry.resource_type,
        entry.resource,
        entry.project_id,
        entry.client_addr,
        if entry.success { "success" } else { "failure" }
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Runs `change`, a statement that touches at most one row, and records `entry` with it
/// in one transaction when it touched one; returns whether it did.
pub async fn execute_recorded(
    conn: &mut PgConnection,
    change: Query<'_, Postgres, PgArguments>,
    entry: &AuditEntry,
) -> Result<bool, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let found = change.execute(&mut *tx).await?.rows_affected() == 1;
    if found {
        record(&mut tx, entry).await?;
    }
    tx.commit().await?;
    Ok(found)
}

/// Records many entries in one statement (the batched writer of registry traffic).
/// Entries about artifacts, tags and repositories that come without a project id get
/// the id of the project their resource names, looked up here rather than on the
/// request path.
pub async fn record_many(
    conn: &mut PgConnection,
    entries: &[AuditEntry],
) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&AuditEntry) -> String| entries.iter().map(f).collect::<Vec<_>>();
    let project_ids: Vec<Option<i64>> = entries.iter().map(|e| e.project_id).collect();
    sqlx::query!(
        r#"INSERT INTO audit_logs
               (username, operation, resource_type, resource, project_id, client_addr, outcome)
           SELECT e.username, e.operation, e.resource_type, e.resource,
                  COALESCE(e.project_id, p.id), e.client_addr, e.outcome
           FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[],
                       $6::text[], $7::text[])
                AS e (username, operation, resource_type, resource, project_id, client_addr, outcome)
           LEFT JOIN projects p
                  ON e.project_id IS NULL
                 AND e.resource_type IN ('artifact', 'tag', 'repository')
                 AND p.name = split_part(e.resource, '/', 1)"#,
        &column(|e| e.username.clone()),
        &column(|e| e.operation.clone()),
        &column(|e| e.resource_type.clone()),
        &column(|e| e.resource.clone()),
        &project_ids as &[Option<i64>],
        &column(|e| e.client_addr.clone()),
        &column(|e| if e.success { "success" } else { "failure" }.to_owned()),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes records older than `retention_days`; returns how many went.
pub async fn purge_older_than(
    conn: &mut PgConnection,
    retention_days: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM audit_logs WHERE op_time < now() - make_interval(days => $1::int)",
        retention_days as i32
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// One audit log row, as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub op_time: DateTime<Utc>,
    pub username: String,
    pub operation: String,
    pub resource_type: String,
    pub resource: String,
    pub project_id: Option<i64>,
    pub client_addr: String,
    /// `success` or `failure`.
    pub outcome: String,
}

/// Which records to list. Patterns are SQL `LIKE` patterns with backslash escapes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// `None`: every record. `Some(ids)`: only records about these projects (records
    /// without a project, such as user changes and failed logins, are left out).
    pub project_ids: Option<Vec<i64>>,
    pub username_like: Option<String>,
    /// Any of these operations.
    pub operations: Option<Vec<String>>,
    /// Any of these resource types.
    pub resource_types: Option<Vec<String>>,
    pub resource_like: Option<String>,
    /// Inclusive bounds on `op_time`.
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// One page of records. Sort keys: `id`, `op_time`, `username`, `operation`,
/// `resource_type`, `resource`; ties are broken by id in the same direction.
pub async fn list(
    conn: &mut PgConnection,
    filter: &AuditFilter,
    sort: Sort<'_>,
    limit: i64,
    offset: i64,
) -> Result<Vec<AuditRecord>, sqlx::Error> {
    sqlx::query_as!(
        AuditRecord,
        r#"SELECT id, op_time, username, operation, resource_type, resource, project_id,
                  client_addr, outcome
           FROM audit_logs
           WHERE ($1::bigint[] IS NULL OR project_id = ANY($1))
             AND ($2::text IS NULL OR username LIKE $2)
             AND ($3::text[] IS NULL OR operation = ANY($3))
             AND ($4::text[] IS NULL OR resource_type = ANY($4))
             AND ($5::text IS NULL OR resource LIKE $5)
             AND ($6::timestamptz IS NULL OR op_time >= $6)
             AND ($7::timestamptz IS NULL OR op_time <= $7)
           ORDER BY
               CASE WHEN $8 = 'op_time' AND NOT $9 THEN op_time END ASC,
               CASE WHEN $8 = 'op_time' AND $9 THEN op_time END DESC,
               CASE WHEN $8 = 'username' AND NOT $9 THEN username END ASC,
               CASE WHEN $8 = 'username' AND $9 THEN username END DESC,
               CASE WHEN $8 = 'operation' AND NOT $9 THEN operation END ASC,
               CASE WHEN $8 = 'operation' AND $9 THEN operation END DESC,
               CASE WHEN $8 = 'resource_type' AND NOT $9 THEN resource_type END ASC,
               CASE WHEN $8 = 'resource_type' AND $9 THEN resource_type END DESC,
               CASE WHEN $8 = 'resource' AND NOT $9 THEN resource END ASC,
               CASE WHEN $8 = 'resource' AND $9 THEN resource END DESC,
               CASE WHEN $9 THEN id END DESC,
               id ASC
           LIMIT $10 OFFSET $11"#,
        filter.project_ids.as_deref(),
        filter.username_like,
        filter.operations.as_deref(),
        filter.resource_types.as_deref(),
        filter.resource_like,
        filter.from,
        filter.to,
        sort.key,
        sort.descending,
        limit,
        offset
    )
    .fetch_all(conn)
    .await
}

/// How many records [`list`] would list over all pages.
pub async fn count(conn: &mut PgConnection, filter: &AuditFilter) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!"
           FROM audit_logs
           WHERE ($1::bigint[] IS NULL OR project_id = ANY($1))
             AND ($2::text IS NULL OR username LIKE $2)
             AND ($3::text[] IS NULL OR operation = ANY($3))
             AND ($4::text[] IS NULL OR resource_type = ANY($4))
             AND ($5::text IS NULL OR resource LIKE $5)
             AND ($6::timestamptz IS NULL OR op_time >= $6)
             AND ($7::timestamptz IS NULL OR op_time <= $7)"#,
        filter.project_ids.as_deref(),
        filter.username_like,
        filter.operations.as_deref(),
        filter.resource_types.as_deref(),
        filter.resource_like,
        filter.from,
        filter.to
    )
    .fetch_one(conn)
    .await
}

/// The projects where `user_id` holds a role: what a non-administrator's audit log
/// covers.
pub async fn member_project_ids(
    conn: &mut PgConnection,
    user_id: i64,
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT project_id FROM project_members WHERE user_id = $1 ORDER BY project_id",
        user_id
    )
    .fetch_all(conn)
    .await
}
