//! Tasks: enqueue (idempotent per natural key, with its message through the outbox),
//! begin an attempt, finish, log, and the cancellation checks workers poll.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::executions;
use super::model::{stored_words, JobsError, ListPage, NewTask, Task, TaskFilter, TaskStatus};
use crate::kind::{Event, JobRef};
use crate::outbox;

/// A task's log keeps at most this many bytes; older lines go first.
pub const LOG_MAX_BYTES: i32 = 256 * 1024;

pub(crate) struct TaskRow {
    pub id: i64,
    pub execution_id: i64,
    pub kind: String,
    pub natural_key: String,
    pub destination: String,
    pub payload: serde_json::Value,
    pub status: String,
    pub status_message: String,
    pub attempts: i32,
    pub bytes: i64,
    pub worker_id: Option<Uuid>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

impl From<TaskRow> for Task {
    fn from(r: TaskRow) -> Task {
        Task {
            id: r.id,
            execution_id: r.execution_id,
            kind: r.kind,
            natural_key: r.natural_key,
            destination: r.destination,
            payload: r.payload,
            // The table's CHECK constraint admits only the words `parse` knows.
            status: TaskStatus::parse(&r.status).unwrap_or(TaskStatus::Failed),
            status_message: r.status_message,
            attempts: r.attempts,
            bytes: r.bytes,
            worker_id: r.worker_id,
            cancel_requested_at: r.cancel_requested_at,
            created_at: r.created_at,
            started_at: r.started_at,
            updated_at: r.updated_at,
            ended_at: r.ended_at,
        }
    }
}

/// Adds a task of worker kind `kind` to an execution and writes its message to the
/// outbox, on `conn` (a transaction). `None`: a task with this natural key exists
/// already, and no second message is written.
pub async fn enqueue(
    conn: &mut PgConnection,
    execution_id: i64,
    kind: &str,
    new: &NewTask<'_>,
    source: &str,
) -> Result<Option<i64>, JobsError> {
    let id = sqlx::query_scalar!(
        r#"INSERT INTO tasks (execution_id, kind, natural_key, destination, payload)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (execution_id, natural_key) DO NOTHING
           RETURNING id"#,
        execution_id,
        kind,
        new.natural_key,
        new.destination,
        new.payload
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(task_id) = id {
        outbox::emit(
            conn,
            source,
            &Event::JobRequested {
                job: JobRef {
                    execution_id,
                    task_id,
                    kind: kind.to_owned(),
                    destination: new.destination.to_owned(),
                },
            },
        )
        .await?;
    }
    Ok(id)
}

pub async fn get(db: impl PgExecutor<'_>, id: i64) -> Result<Option<Task>, JobsError> {
    let row = sqlx::query_as!(
        TaskRow,
        r#"SELECT id, execution_id, kind, natural_key, destination, payload, status,
                  status_message, attempts, bytes, worker_id, cancel_requested_at,
                  created_at, started_at, updated_at, ended_at
           FROM tasks WHERE id = $1"#,
        id
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(Task::from))
}

/// One page of the tasks of execution `execution_id` that `filter` matches, and how
/// many it matches over all pages. Sort keys: `id`, `start_time`, `end_time`.
pub async fn list(
    conn: &mut PgConnection,
    execution_id: i64,
    filter: &TaskFilter,
    page: ListPage<'_>,
) -> Result<(Vec<Task>, i64), JobsError> {
    let statuses = stored_words(filter.statuses.as_deref(), TaskStatus::as_str);
    let (field, value) = match &filter.payload_field {
        Some((field, value)) => (Some(field.as_str()), Some(value.as_str())),
        None => (None, None),
    };
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM tasks
           WHERE execution_id = $1 AND ($2::text[] IS NULL OR status = ANY($2))
             AND ($3::text IS NULL OR payload->>$3 = $4)"#,
        execution_id,
        statuses.as_deref(),
        field,
        value
    )
    .fetch_one(&mut *conn)
    .await?;
    let rows = sqlx::query_as!(
        TaskRow,
        r#"SELECT id, execution_id, kind, natural_key, destination, payload, status,
                  status_message, attempts, bytes, worker_id, cancel_requested_at,
                  created_at, started_at, updated_at, ended_at
           FROM tasks
           WHERE execution_id = $1 AND ($2::text[] IS NULL OR status = ANY($2))
             AND ($3::text IS NULL OR payload->>$3 = $4)
           ORDER BY
               CASE WHEN $5 = 'start_time' AND NOT $6 THEN started_at END ASC,
               CASE WHEN $5 = 'start_time' AND $6 THEN started_at END DESC,
               CASE WHEN $5 = 'end_time' AND NOT $6 THEN ended_at END ASC,
               CASE WHEN $5 = 'end_time' AND $6 THEN ended_at END DESC,
               CASE WHEN $6 THEN id END DESC,
               id ASC
           LIMIT $7 OFFSET $8"#,
        execution_id,
        statuses.as_deref(),
        field,
        value,
        page.sort_key,
        page.descending,
        page.limit,
        page.offset
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok((rows.into_iter().map(Task::from).collect(), total))
}

/// What a delivery of a task's message should do.
#[derive(Debug)]
pub enum Begin {
    /// Run the handler: the task is `running` and its attempt counted.
    Run(Box<Task>),
    /// Do not run it; ack the message. The task is final (`status`): done by an
    /// earlier delivery, or skipped/cancelled because someone stopped it.
    Done(TaskStatus),
    /// No such task (its execution was deleted): ack and forget the message.
    Missing,
}

/// Starts an attempt of task `id` on worker process `worker_id`.
pub async fn begin(db: &sqlx::PgPool, id: i64, worker_id: Uuid) -> Result<Begin, JobsError> {
    let row = sqlx::query_as!(
        TaskRow,
        r#"UPDATE tasks t
           SET status = 'running', attempts = t.attempts + 1,
               started_at = coalesce(t.started_at, now()), updated_at = now(), worker_id = $2
           FROM executions e
           WHERE t.id = $1 AND e.id = t.execution_id AND t.status IN ('pending', 'running')
             AND t.cancel_requested_at IS NULL AND e.cancel_requested_at IS NULL
           RETURNING t.id, t.execution_id, t.kind, t.natural_key, t.destination, t.payload,
                     t.status, t.status_message, t.attempts, t.bytes, t.worker_id,
                     t.cancel_requested_at, t.created_at, t.started_at, t.updated_at, t.ended_at"#,
        id,
        worker_id
    )
    .fetch_optional(db)
    .await?;
    if let Some(row) = row {
        let task = Task::from(row);
        sqlx::query!(
            r#"UPDATE executions SET status = 'running' WHERE id = $1 AND status = 'pending'"#,
            task.execution_id
        )
        .execute(db)
        .await?;
        return Ok(Begin::Run(Box::new(task)));
    }
    let Some(task) = get(db, id).await? else {
        return Ok(Begin::Missing);
    };
    if task.status.is_final() {
        return Ok(Begin::Done(task.status));
    }
    // Still pending or running, so someone asked to stop it: it ends without running
    // (again). A task that never started is skipped; one that had started is cancelled.
    let status = if task.attempts == 0 {
        TaskStatus::Skipped
    } else {
        TaskStatus::Cancelled
    };
    finish(db, id, status, "stopped before this attempt started", 0).await?;
    Ok(Begin::Done(status))
}

/// Ends the running attempt of task `id` with a final status, adds `bytes`, and
/// settles its execution if this was its last unfinished task.
pub async fn finish(
    db: &sqlx::PgPool,
    id: i64,
    status: TaskStatus,
    message: &str,
    bytes: i64,
) -> Result<(), JobsError> {
    let execution_id = sqlx::query_scalar!(
        r#"UPDATE tasks SET status = $2, status_message = $3, bytes = bytes + $4,
                            ended_at = now(), updated_at = now()
           WHERE id = $1 AND status IN ('pending', 'running')
           RETURNING execution_id"#,
        id,
        status.as_str(),
        message,
        bytes
    )
    .fetch_optional(db)
    .await?;
    if let Some(execution_id) = execution_id {
        executions::settle(db, execution_id).await?;
    }
    Ok(())
}

/// Records a failed attempt that will be retried: the task is pending again with the
/// reason, until its message comes back.
pub async fn retry_later(
    db: impl PgExecutor<'_>,
    id: i64,
    message: &str,
    bytes: i64,
) -> Result<(), JobsError> {
    sqlx::query!(
        r#"UPDATE tasks SET status = 'pending', status_message = $2, bytes = bytes + $3,
                            updated_at = now()
           WHERE id = $1 AND status = 'running'"#,
        id,
        message,
        bytes
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Appends `text` to the task's log, dropping the oldest bytes past the bound.
pub async fn append_log(db: impl PgExecutor<'_>, id: i64, text: &str) -> Result<(), JobsError> {
    sqlx::query!(
        r#"UPDATE tasks SET log = right(log || $2, $3) WHERE id = $1"#,
        id,
        text,
        LOG_MAX_BYTES
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Adds `fields` (a JSON object) to the task's payload, replacing keys it has: what a
/// handler found out while running (counts, the digest it copied) for the API to show.
pub async fn merge_payload(
    db: impl PgExecutor<'_>,
    id: i64,
    fields: &serde_json::Value,
) -> Result<(), JobsError> {
    sqlx::query!(
        r#"UPDATE tasks SET payload = payload || $2, updated_at = now() WHERE id = $1"#,
        id,
        fields
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn log(db: impl PgExecutor<'_>, id: i64) -> Result<Option<String>, JobsError> {
    Ok(
        sqlx::query_scalar!("SELECT log FROM tasks WHERE id = $1", id)
            .fetch_optional(db)
            .await?,
    )
}

/// Asks one task to stop (Harbor's "stop job"). Pending: skipped at once. Running:
/// its worker cancels it. Run in a transaction; publish the control message after
/// commit. Returns the task.
pub async fn request_cancel(
    conn: &mut PgConnection,
    id: i64,
    actor: &str,
    source: &str,
) -> Result<Task, JobsError> {
    let Some(task) = get(&mut *conn, id).await? else {
        return Err(JobsError::NotFound(format!("job {id}")));
    };
    if task.status.is_final() {
        return Err(JobsError::Conflict(format!(
            "job {id} is already {}",
            task.status.as_str()
        )));
    }
    sqlx::query!(
        r#"UPDATE tasks SET cancel_requested_at = coalesce(cancel_requested_at, now()),
                            status = CASE WHEN status = 'pending' THEN 'skipped' ELSE status END,
                            ended_at = CASE WHEN status = 'pending' THEN now() ELSE ended_at END,
                            status_message = CASE WHEN status = 'pending'
                                THEN 'stopped before it started' ELSE status_message END,
                            updated_at = now()
           WHERE id = $1"#,
        id
    )
    .execute(&mut *conn)
    .await?;
    outbox::emit(
        conn,
        source,
        &Event::JobCancelled {
            execution_id: task.execution_id,
            kind: task.kind.clone(),
            task_id: Some(id),
            actor: actor.to_owned(),
        },
    )
    .await?;
    executions::settle(&mut *conn, task.execution_id).await?;
    Ok(task)
}

/// Of the tasks `ids` (running in one worker), those someone asked to stop, directly
/// or through their execution: the workers' fallback for a missed control message.
pub async fn cancel_requested(db: impl PgExecutor<'_>, ids: &[i64]) -> Result<Vec<i64>, JobsError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT t.id FROM tasks t JOIN executions e ON e.id = t.execution_id
           WHERE t.id = ANY($1)
             AND (t.cancel_requested_at IS NOT NULL OR e.cancel_requested_at IS NOT NULL)"#,
        ids
    )
    .fetch_all(db)
    .await?)
}
