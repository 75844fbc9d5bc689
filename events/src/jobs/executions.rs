//! Executions: create (idempotent per trigger), read, cancel, retry, and settle (the
//! final status once no task is pending or running).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

use super::model::{
    stored_words, Execution, ExecutionFilter, ExecutionStatus, JobsError, ListPage, NewExecution,
    TaskCounts, Trigger,
};
use crate::kind::{Event, JobRef};
use crate::outbox;

pub(crate) struct ExecutionRow {
    pub id: i64,
    pub kind: String,
    pub vendor_id: i64,
    pub trigger: String,
    pub trigger_key: Option<String>,
    pub status: String,
    pub status_message: String,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub extra_attrs: serde_json::Value,
    pub created_by: String,
    pub start_time: DateTime<Utc>,
    pub end_time: Option<DateTime<Utc>>,
}

impl From<ExecutionRow> for Execution {
    fn from(r: ExecutionRow) -> Execution {
        Execution {
            id: r.id,
            kind: r.kind,
            vendor_id: r.vendor_id,
            // The table's CHECK constraints admit only the words `parse` knows.
            trigger: Trigger::parse(&r.trigger).unwrap_or(Trigger::Manual),
            trigger_key: r.trigger_key,
            status: ExecutionStatus::parse(&r.status).unwrap_or(ExecutionStatus::Failed),
            status_message: r.status_message,
            cancel_requested_at: r.cancel_requested_at,
            extra_attrs: r.extra_attrs,
            created_by: r.created_by,
            start_time: r.start_time,
            end_time: r.end_time,
        }
    }
}

/// Creates an execution; `None` when one with the same kind and trigger key exists
/// (the trigger was delivered before).
pub async fn create(
    conn: &mut PgConnection,
    new: &NewExecution<'_>,
) -> Result<Option<i64>, JobsError> {
    let id = sqlx::query_scalar!(
        r#"INSERT INTO executions (kind, vendor_id, trigger, trigger_key, extra_attrs, created_by)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (kind, trigger_key) DO NOTHING
           RETURNING id"#,
        new.kind,
        new.vendor_id,
        new.trigger.as_str(),
        new.trigger_key,
        new.extra_attrs,
        new.created_by
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(id)
}

pub async fn get(db: impl PgExecutor<'_>, id: i64) -> Result<Option<Execution>, JobsError> {
    let row = sqlx::query_as!(
        ExecutionRow,
        r#"SELECT id, kind, vendor_id, trigger, trigger_key, status, status_message,
                  cancel_requested_at, extra_attrs, created_by, start_time, end_time
           FROM executions WHERE id = $1"#,
        id
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(Execution::from))
}

/// One page of the executions `filter` matches, and how many it matches over all
/// pages. Sort keys: `id`, `start_time`, `end_time`.
pub async fn list(
    conn: &mut PgConnection,
    filter: &ExecutionFilter,
    page: ListPage<'_>,
) -> Result<(Vec<Execution>, i64), JobsError> {
    let statuses = stored_words(filter.statuses.as_deref(), ExecutionStatus::as_str);
    let triggers = stored_words(filter.triggers.as_deref(), Trigger::as_str);
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM executions
           WHERE ($1::text[] IS NULL OR kind = ANY($1))
             AND ($2::text[] IS NULL OR status = ANY($2))
             AND ($3::text[] IS NULL OR trigger = ANY($3))
             AND ($4::bigint IS NULL OR vendor_id = $4)"#,
        filter.kinds.as_deref(),
        statuses.as_deref(),
        triggers.as_deref(),
        filter.vendor_id
    )
    .fetch_one(&mut *conn)
    .await?;
    let rows = sqlx::query_as!(
        ExecutionRow,
        r#"SELECT id, kind, vendor_id, trigger, trigger_key, status, status_message,
                  cancel_requested_at, extra_attrs, created_by, start_time, end_time
           FROM executions
           WHERE ($1::text[] IS NULL OR kind = ANY($1))
             AND ($2::text[] IS NULL OR status = ANY($2))
             AND ($3::text[] IS NULL OR trigger = ANY($3))
             AND ($4::bigint IS NULL OR vendor_id = $4)
           ORDER BY
               CASE WHEN $5 = 'start_time' AND NOT $6 THEN start_time END ASC,
               CASE WHEN $5 = 'start_time' AND $6 THEN start_time END DESC,
               CASE WHEN $5 = 'end_time' AND NOT $6 THEN end_time END ASC,
               CASE WHEN $5 = 'end_time' AND $6 THEN end_time END DESC,
               CASE WHEN $6 THEN id END DESC,
               id ASC
           LIMIT $7 OFFSET $8"#,
        filter.kinds.as_deref(),
        statuses.as_deref(),
        triggers.as_deref(),
        filter.vendor_id,
        page.sort_key,
        page.descending,
        page.limit,
        page.offset
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok((rows.into_iter().map(Execution::from).collect(), total))
}

/// One page of executions, each with its task counts, and the total over all pages:
/// what every execution listing shows.
pub async fn list_with_counts(
    conn: &mut PgConnection,
    filter: &ExecutionFilter,
    page: ListPage<'_>,
) -> Result<(Vec<(Execution, TaskCounts)>, i64), JobsError> {
    let (found, total) = list(&mut *conn, filter, page).await?;
    let ids: Vec<i64> = found.iter().map(|e| e.id).collect();
    let mut counts = counts(&mut *conn, &ids).await?;
    let with_counts = found
        .into_iter()
        .map(|e| {
            let c = counts.remove(&e.id).unwrap_or_default();
            (e, c)
        })
        .collect();
    Ok((with_counts, total))
}

/// Task counts by status for each of `ids`.
pub async fn counts(
    db: impl PgExecutor<'_>,
    ids: &[i64],
) -> Result<HashMap<i64, TaskCounts>, JobsError> {
    let rows = sqlx::query!(
        r#"SELECT execution_id, status, count(*) AS "n!"
           FROM tasks WHERE execution_id = ANY($1)
           GROUP BY execution_id, status"#,
        ids
    )
    .fetch_all(db)
    .await?;
    let mut out: HashMap<i64, TaskCounts> =
        ids.iter().map(|id| (*id, TaskCounts::default())).collect();
    for row in rows {
        let c = out.entry(row.execution_id).or_default();
        c.total += row.n;
        match row.status.as_str() {
            "pending" => c.pending += row.n,
            "running" => c.running += row.n,
            "succeeded" => c.succeeded += row.n,
            "failed" => c.failed += row.n,
            "cancelled" => c.cancelled += row.n,
            _ => c.skipped += row.n,
        }
    }
    Ok(out)
}

/// Gives an execution its final status when none of its tasks is pending or running;
/// call it after every task reaches a final status, outside that task's transaction
/// (the call after the last commit sees every task final). Returns the new status.
pub async fn settle(
    db: impl PgExecutor<'_>,
    id: i64,
) -> Result<Option<ExecutionStatus>, JobsError> {
    let status = sqlx::query_scalar!(
        r#"UPDATE executions e
           SET status = CASE
                   WHEN e.cancel_requested_at IS NOT NULL THEN 'cancelled'
                   WHEN EXISTS (SELECT 1 FROM tasks t WHERE t.execution_id = e.id AND t.status = 'failed') THEN 'failed'
                   WHEN EXISTS (SELECT 1 FROM tasks t WHERE t.execution_id = e.id AND t.status IN ('cancelled', 'skipped')) THEN 'cancelled'
                   ELSE 'succeeded' END,
               end_time = now()
           WHERE e.id = $1 AND e.status IN ('pending', 'running')
             AND NOT EXISTS (SELECT 1 FROM tasks t
                             WHERE t.execution_id = e.id AND t.status IN ('pending', 'running'))
           RETURNING status"#,
        id
    )
    .fetch_optional(db)
    .await?;
    Ok(status.as_deref().and_then(ExecutionStatus::parse))
}

/// Asks an execution to stop: its pending tasks are skipped at once, its running
/// tasks are cancelled by their workers (who hear it on the control subject and, if
/// they miss that, by polling), and a `job.cancelled` event goes to the outbox. Run it
/// in a transaction; publish the control message after commit. Returns the kind.
pub async fn request_cancel(
    conn: &mut PgConnection,
    id: i64,
    actor: &str,
    source: &str,
) -> Result<String, JobsError> {
    let kind = sqlx::query_scalar!(
        r#"UPDATE executions SET cancel_requested_at = coalesce(cancel_requested_at, now())
           WHERE id = $1 AND status IN ('pending', 'running')
           RETURNING kind"#,
        id
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(kind) = kind else {
        return match get(&mut *conn, id).await? {
            None => Err(JobsError::NotFound(format!("execution {id}"))),
            Some(e) => Err(JobsError::Conflict(format!(
                "execution {id} is already {}",
                e.status.as_str()
            ))),
        };
    };
    sqlx::query!(
        r#"UPDATE tasks SET status = 'skipped', status_message = 'execution stopped before the task started',
                            ended_at = now(), updated_at = now()
           WHERE execution_id = $1 AND status = 'pending'"#,
        id
    )
    .execute(&mut *conn)
    .await?;
    outbox::emit(
        conn,
        source,
        &Event::JobCancelled {
            execution_id: id,
            kind: kind.clone(),
            task_id: None,
            actor: actor.to_owned(),
        },
    )
    .await?;
    settle(&mut *conn, id).await?;
    Ok(kind)
}

/// Runs the failed tasks of a finished execution again: they go back to pending with
/// a new message each, and the execution is running again. Run it in a transaction.
/// Returns how many tasks were requeued.
pub async fn retry_failed(
    conn: &mut PgConnection,
    id: i64,
    source: &str,
) -> Result<usize, JobsError> {
    let Some(execution) = get(&mut *conn, id).await? else {
        return Err(JobsError::NotFound(format!("execution {id}")));
    };
    if !execution.status.is_final() {
        return Err(JobsError::Conflict(format!(
            "execution {id} is still {}; retry it once it has finished",
            execution.status.as_str()
        )));
    }
    let tasks = sqlx::query!(
        r#"UPDATE tasks SET status = 'pending', status_message = 'retried', ended_at = NULL,
                            cancel_requested_at = NULL, updated_at = now()
           WHERE execution_id = $1 AND status = 'failed'
           RETURNING id, kind, destination"#,
        id
    )
    .fetch_all(&mut *conn)
    .await?;
    if tasks.is_empty() {
        return Err(JobsError::Conflict(format!(
            "execution {id} has no failed task"
        )));
    }
    sqlx::query!(
        r#"UPDATE executions SET status = 'running', end_time = NULL, cancel_requested_at = NULL
           WHERE id = $1"#,
        id
    )
    .execute(&mut *conn)
    .await?;
    for t in &tasks {
        outbox::emit(
            conn,
            source,
            &Event::JobRequested {
                job: JobRef {
                    execution_id: id,
                    task_id: t.id,
                    kind: t.kind.clone(),
                    destination: t.destination.clone(),
                },
            },
        )
        .await?;
    }
    Ok(tasks.len())
}

/// Unfinished executions of `kind` (for stopping a whole queue).
pub async fn unfinished_of_kind(
    db: impl PgExecutor<'_>,
    kind: &str,
) -> Result<Vec<i64>, JobsError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT id FROM executions WHERE kind = $1 AND status IN ('pending', 'running') ORDER BY id"#,
        kind
    )
    .fetch_all(db)
    .await?)
}
