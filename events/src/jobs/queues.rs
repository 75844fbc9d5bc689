//! Job queues, one per worker kind: paused or not, and how much waits in PostgreSQL's
//! view (JetStream's own counts come from the consumers, see `streams`).

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::model::JobsError;

/// Pauses (`true`) or resumes a kind's queue. Workers stop starting new tasks of a
/// paused kind; running tasks finish.
pub async fn set_paused(
    db: impl PgExecutor<'_>,
    kind: &str,
    paused: bool,
) -> Result<(), JobsError> {
    sqlx::query!(
        r#"INSERT INTO job_queues (kind, paused) VALUES ($1, $2)
           ON CONFLICT (kind) DO UPDATE SET paused = $2, updated_at = now()"#,
        kind,
        paused
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The kinds whose queue is paused.
pub async fn paused_kinds(db: impl PgExecutor<'_>) -> Result<Vec<String>, JobsError> {
    Ok(
        sqlx::query_scalar!("SELECT kind FROM job_queues WHERE paused ORDER BY kind")
            .fetch_all(db)
            .await?,
    )
}

/// One kind's waiting work as PostgreSQL sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTasks {
    pub kind: String,
    pub pending: i64,
    /// When the oldest pending task was created (Harbor's queue latency is its age).
    pub oldest: Option<DateTime<Utc>>,
}

/// Pending tasks per kind, for every kind that has any.
pub async fn pending_tasks(db: impl PgExecutor<'_>) -> Result<Vec<PendingTasks>, JobsError> {
    let rows = sqlx::query!(
        r#"SELECT kind, count(*) AS "pending!", min(created_at) AS oldest
           FROM tasks WHERE status = 'pending' GROUP BY kind ORDER BY kind"#
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| PendingTasks {
            kind: r.kind,
            pending: r.pending,
            oldest: r.oldest,
        })
        .collect())
}

/// Every worker kind PostgreSQL knows of: kinds with a queue row, a schedule, a
/// registered worker process, pending tasks or unfinished executions.
pub async fn known_kinds(db: impl PgExecutor<'_>) -> Result<Vec<String>, JobsError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT kind AS "kind!" FROM job_queues
           UNION SELECT kind FROM schedules
           UNION SELECT kind FROM worker_processes
           UNION SELECT kind FROM tasks WHERE status = 'pending'
           UNION SELECT kind FROM executions WHERE status IN ('pending', 'running')
           ORDER BY 1"#
    )
    .fetch_all(db)
    .await?)
}
