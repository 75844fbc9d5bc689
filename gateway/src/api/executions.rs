//! `/executions`: the jobs of every worker kind in Harbor's shapes (`Execution`, `Task`,
//! task logs), a Berth addition of which Harbor's per-kind endpoints (replication
//! executions, GC history, scan-all) are views. List, start (kinds listed in
//! [`MANUAL_KINDS`]), stop, and retry the failed tasks of a finished execution.
//!
//! Everything here is for system administrators, as Harbor's job-service dashboard
//! is. State changes run in one transaction with their outbox events and audit record;
//! the control message that makes workers act within a second is sent after commit,
//! and only as a shortcut: workers also poll PostgreSQL, so a lost message (NATS down)
//! delays a stop by one poll and loses nothing.
//!
//! Statuses are shown in Harbor's words (`Success`, `Error`, `Stopped`) with Berth's
//! own word beside them (`berth_status`); `q=status=` takes either.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use berth_access::audit;
use berth_events::control::{self, Control};
use berth_events::jobs::{
    executions, tasks, Execution, ExecutionFilter, ExecutionStatus, JobsError, ListPage,
    NewExecution, NewTask, Task, TaskCounts, TaskFilter, TaskStatus, Trigger,
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorsBody};
use super::extract::{ApiPath, ApiQuery, Caller};
use super::json::{self, ApiJson, JsonBody};
use super::pagination::{paged, Page};
use super::query::{ListParams, Query, Sort};
use super::{harbor_time, BASE_PATH};
use crate::events::SOURCE;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_executions, start_execution))
        .routes(routes!(get_execution, update_execution))
        .routes(routes!(list_tasks))
        .routes(routes!(get_task_log))
}

/// Worker kinds an administrator may start by hand through `POST /executions`. The
/// others are started by their own triggers (events, schedules, Harbor's per-kind
/// endpoints), which know how to plan their tasks.
pub const MANUAL_KINDS: [&str; 1] = ["echo"];

/// Most tasks one `POST /executions` may create: they are written in one transaction.
pub const MAX_TASKS: usize = 10_000;

/// How long a handler waits for NATS to take a control message before giving up on
/// it (the workers' poll then carries the change).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);

// ---- Shapes -------------------------------------------------------------------------

/// Harbor's `Metrics`: an execution's tasks by status.
#[derive(Debug, Serialize, ToSchema)]
pub struct Metrics {
    pub task_count: i64,
    pub success_task_count: i64,
    pub error_task_count: i64,
    pub pending_task_count: i64,
    pub running_task_count: i64,
    /// Always 0: Berth has no scheduled state for tasks (schedules start executions).
    pub scheduled_task_count: i64,
    /// Cancelled while running, or skipped before they started.
    pub stopped_task_count: i64,
}

impl From<TaskCounts> for Metrics {
    fn from(c: TaskCounts) -> Metrics {
        Metrics {
            task_count: c.total,
            success_task_count: c.succeeded,
            error_task_count: c.failed,
            pending_task_count: c.pending,
            running_task_count: c.running,
            scheduled_task_count: 0,
            stopped_task_count: c.cancelled + c.skipped,
        }
    }
}

/// Harbor's `Execution`, with Berth's `kind`, `berth_status` and `cancel_requested`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Execution)]
pub struct ExecutionBody {
    pub id: i64,
    /// The worker kind in upper case, as Harbor writes vendor types (`ECHO`).
    pub vendor_type: String,
    /// What the execution belongs to (a replication policy id); 0 for none.
    pub vendor_id: i64,
    /// Harbor's word: `Pending`, `Running`, `Success`, `Error`, `Stopped`.
    pub status: String,
    pub status_message: String,
    pub metrics: Metrics,
    /// `MANUAL`, `EVENT` or `SCHEDULE`.
    pub trigger: String,
    #[schema(value_type = Object)]
    pub extra_attrs: serde_json::Value,
    pub start_time: String,
    /// Absent until the execution has finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// Berth: the worker kind (`echo`, `replicate`, `scan`, `gc`).
    pub kind: String,
    /// Berth's word: `pending`, `running`, `succeeded`, `failed`, `cancelled`.
    pub berth_status: String,
    /// Berth: someone asked to stop it (it shows `Stopped` once no task runs).
    pub cancel_requested: bool,
}

impl ExecutionBody {
    fn new(e: Execution, counts: TaskCounts) -> ExecutionBody {
        ExecutionBody {
            id: e.id,
            vendor_type: e.kind.to_uppercase(),
            vendor_id: e.vendor_id,
            status: e.status.harbor().to_owned(),
            status_message: e.status_message,
            metrics: Metrics::from(counts),
            trigger: e.trigger.harbor().to_owned(),
            extra_attrs: e.extra_attrs,
            start_time: harbor_time(e.start_time),
            end_time: e.end_time.map(harbor_time),
            kind: e.kind,
            berth_status: e.status.as_str().to_owned(),
            cancel_requested: e.cancel_requested_at.is_some(),
        }
    }
}

/// Harbor's `Task`, with Berth's `kind` and `berth_status`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Task)]
pub struct TaskBody {
    pub id: i64,
    pub execution_id: i64,
    /// Harbor's word: `Pending`, `Running`, `Success`, `Error`, `Stopped`.
    pub status: String,
    pub status_message: String,
    /// Attempts that started the handler: 2 after a worker died mid-task.
    pub run_count: i32,
    /// `payload` (what the handler was given), `natural_key`, `destination`, `bytes`.
    #[schema(value_type = Object)]
    pub extra_attrs: serde_json::Value,
    pub creation_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    pub update_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// Berth: the worker kind.
    pub kind: String,
    /// Berth's word: `pending`, `running`, `succeeded`, `failed`, `cancelled`, `skipped`.
    pub berth_status: String,
}

impl From<Task> for TaskBody {
    fn from(t: Task) -> TaskBody {
        TaskBody {
            id: t.id,
            execution_id: t.execution_id,
            status: t.status.harbor().to_owned(),
            status_message: t.status_message,
            run_count: t.attempts,
            extra_attrs: serde_json::json!({
                "payload": t.payload,
                "natural_key": t.natural_key,
                "destination": t.destination,
                "bytes": t.bytes,
            }),
            creation_time: harbor_time(t.created_at),
            start_time: t.started_at.map(harbor_time),
            update_time: harbor_time(t.updated_at),
            end_time: t.ended_at.map(harbor_time),
            kind: t.kind,
            berth_status: t.status.as_str().to_owned(),
        }
    }
}

/// A manual start of `kind` with one task per element of `tasks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartExecution {
    /// One of the manually startable kinds (`echo`).
    pub kind: String,
    /// The tasks' payloads, one task each (1 to 10,000); a task's natural key is its
    /// index here.
    #[schema(value_type = Vec<Object>)]
    pub tasks: Vec<serde_json::Value>,
}

/// Harbor's `ActionRequest`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ActionRequest {
    /// `stop`, `retry` (executions), `pause`, `resume` (queues).
    #[serde(default)]
    pub action: Option<String>,
}

// ---- Helpers shared with `jobservice` -----------------------------------------------

impl From<JobsError> for ApiError {
    fn from(e: JobsError) -> ApiError {
        match e {
            JobsError::Database(e) => ApiError::Database(e),
            JobsError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            JobsError::Conflict(message) => ApiError::Conflict(message),
            JobsError::Invalid(message) => ApiError::BadRequest(message),
        }
    }
}

/// The `action` of an `ActionRequest` body, one of `allowed`. An empty body (or one
/// without `action`) means `default`, where there is one: Harbor's `PUT
/// /replication/executions/{id}` stops with no body at all.
pub(crate) fn parse_action(
    body: Result<Bytes, BytesRejection>,
    allowed: &[&'static str],
    default: Option<&'static str>,
) -> ApiResult<&'static str> {
    let body =
        body.map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
    let action = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<ActionRequest>(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
            .action
    };
    let Some(action) = action.or(default.map(str::to_owned)) else {
        return Err(ApiError::bad_request(format!(
            "the body must name an action: {}",
            allowed.join(", ")
        )));
    };
    allowed
        .iter()
        .find(|a| **a == action)
        .copied()
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "unsupported action {action:?}; supported: {}",
                allowed.join(", ")
            ))
        })
}

/// Sends control messages to every worker, after the change they announce committed.
/// Only when NATS is connected, and never for long: until it connects, the client
/// buffers and a flush would wait for the connection.
pub(crate) async fn tell_workers(state: &AppState, messages: &[Control]) {
    if messages.is_empty() {
        return;
    }
    if state.nats.connection_state() != async_nats::connection::State::Connected {
        tracing::info!(
            messages = messages.len(),
            "NATS is not connected: workers will see the change on their next poll"
        );
        return;
    }
    for message in messages {
        if tokio::time::timeout(CONTROL_TIMEOUT, control::publish(&state.nats, message))
            .await
            .is_err()
        {
            tracing::warn!("NATS did not take a control message in time: workers will see the change on their next poll");
            return;
        }
    }
}

/// `text/plain` with a task's log.
pub(crate) fn log_response(log: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        log,
    )
        .into_response()
}

// ---- Listing filters ----------------------------------------------------------------
//
// The queries are `berth_events::jobs::{executions, tasks}::list`; this API only turns
// its `q` (Harbor's words or Berth's) into their filters.

/// The Berth statuses each word of a `status` filter stands for: Berth's own words
/// and Harbor's (case does not matter). `Stopped` covers every way of being stopped.
fn status_filter<S: Copy>(q: &Query, words: &[(&str, &[S])]) -> ApiResult<Option<Vec<S>>> {
    let Some(asked) = q.one_of("status")? else {
        return Ok(None);
    };
    let mut statuses = Vec::new();
    for word in asked {
        let lower = word.to_ascii_lowercase();
        let Some((_, meaning)) = words.iter().find(|(w, _)| *w == lower) else {
            let known: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
            return Err(ApiError::bad_request(format!(
                "unknown status {word:?}; use one of {}",
                known.join(", ")
            )));
        };
        statuses.extend_from_slice(meaning);
    }
    Ok(Some(statuses))
}

const EXECUTION_STATUS_WORDS: [(&str, &[ExecutionStatus]); 8] = [
    ("pending", &[ExecutionStatus::Pending]),
    ("running", &[ExecutionStatus::Running]),
    ("succeeded", &[ExecutionStatus::Succeeded]),
    ("success", &[ExecutionStatus::Succeeded]),
    ("failed", &[ExecutionStatus::Failed]),
    ("error", &[ExecutionStatus::Failed]),
    ("cancelled", &[ExecutionStatus::Cancelled]),
    ("stopped", &[ExecutionStatus::Cancelled]),
];

const TASK_STATUS_WORDS: [(&str, &[TaskStatus]); 10] = [
    ("pending", &[TaskStatus::Pending]),
    ("running", &[TaskStatus::Running]),
    ("succeeded", &[TaskStatus::Succeeded]),
    ("success", &[TaskStatus::Succeeded]),
    ("failed", &[TaskStatus::Failed]),
    ("error", &[TaskStatus::Failed]),
    ("cancelled", &[TaskStatus::Cancelled]),
    ("skipped", &[TaskStatus::Skipped]),
    ("stopped", &[TaskStatus::Cancelled, TaskStatus::Skipped]),
    // Harbor's periodic tasks; Berth has none, so it matches nothing.
    ("scheduled", &[]),
];

/// What `GET /executions` filters on, from its `q`.
fn execution_filter(q: &Query) -> ApiResult<ExecutionFilter> {
    q.only(&["kind", "vendor_type", "status", "trigger", "vendor_id"])?;
    // `vendor_type=ECHO` (Harbor's spelling) and `kind=echo` name the same thing.
    let mut kinds: Option<Vec<String>> = None;
    for key in ["kind", "vendor_type"] {
        if let Some(values) = q.one_of(key)? {
            kinds
                .get_or_insert_with(Vec::new)
                .extend(values.iter().map(|v| v.to_ascii_lowercase()));
        }
    }
    let triggers = match q.one_of("trigger")? {
        None => None,
        Some(words) => Some(
            words
                .iter()
                .map(|w| {
                    Trigger::parse(&w.to_ascii_lowercase()).ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "unknown trigger {w:?}; use MANUAL, EVENT or SCHEDULE"
                        ))
                    })
                })
                .collect::<ApiResult<Vec<_>>>()?,
        ),
    };
    let vendor_id = match q.exact("vendor_id")? {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("vendor_id {v:?} is not an integer")))?,
        ),
    };
    Ok(ExecutionFilter {
        kinds,
        statuses: status_filter(q, &EXECUTION_STATUS_WORDS)?,
        triggers,
        vendor_id,
    })
}

/// The page and order `berth_events::jobs` lists by.
fn list_page<'a>(page: Page, sort: Sort<'a>) -> ListPage<'a> {
    ListPage {
        sort_key: sort.key,
        descending: sort.descending,
        limit: page.limit(),
        offset: page.offset(),
    }
}

fn execution_not_found(id: i64) -> ApiError {
    ApiError::not_found(format!("execution {id} not found"))
}

/// An execution with its task counts, or 404.
async fn execution_body(conn: &mut PgConnection, id: i64) -> ApiResult<ExecutionBody> {
    let execution = executions::get(&mut *conn, id)
        .await?
        .ok_or_else(|| execution_not_found(id))?;
    let mut counts = executions::counts(&mut *conn, &[id]).await?;
    Ok(ExecutionBody::new(
        execution,
        counts.remove(&id).unwrap_or_default(),
    ))
}

// ---- Handlers -----------------------------------------------------------------------

/// The sort keys of both listings (those `berth_events::jobs::ListPage` knows).
const SORT_KEYS: [&str; 3] = ["id", "start_time", "end_time"];

/// Executions of every kind, newest first by default. `q` keys: `kind` (or Harbor's
/// `vendor_type`), `status` (Harbor's or Berth's word), `trigger`, `vendor_id`.
#[utoipa::path(
    get,
    path = "/executions",
    tag = "execution",
    operation_id = "listExecutions",
    params(ListParams),
    responses(
        (status = 200, description = "One page of executions", body = [ExecutionBody],
         headers(("X-Total-Count" = i64, description = "Executions over all pages"),
                 ("Link" = String, description = "prev/next pages"))),
        (status = 400, description = "Malformed q or sort", body = ErrorsBody),
        (status = 401, description = "No credentials", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 422, description = "page or page_size out of range", body = ErrorsBody),
    )
)]
async fn list_executions(
    State(state): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let page = params.page()?;
    let sort = params.sort(
        &SORT_KEYS,
        Sort {
            key: "id",
            descending: true,
        },
    )?;
    let filter = execution_filter(&params.query()?)?;
    let mut conn = state.db.acquire().await?;
    let (found, total) =
        executions::list_with_counts(&mut conn, &filter, list_page(page, sort)).await?;
    let items: Vec<ExecutionBody> = found
        .into_iter()
        .map(|(e, c)| ExecutionBody::new(e, c))
        .collect();
    Ok(paged(&uri, page, total, items))
}

/// Starts an execution of a manually startable kind with one task per payload; its
/// task messages go out through the outbox.
#[utoipa::path(
    post,
    path = "/executions",
    tag = "execution",
    operation_id = "startExecution",
    request_body = StartExecution,
    responses(
        (status = 201, description = "Started",
         headers(("Location" = String, description = "The new execution"))),
        (status = 400, description = "Unknown or not manually startable kind, no tasks, more than 10,000 tasks, or a malformed body", body = ErrorsBody),
        (status = 401, description = "No credentials", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
    )
)]
async fn start_execution(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(start): ApiJson<StartExecution>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    if !MANUAL_KINDS.contains(&start.kind.as_str()) {
        return Err(ApiError::bad_request(format!(
            "kind {:?} cannot be started by hand; manually startable: {}",
            start.kind,
            MANUAL_KINDS.join(", ")
        )));
    }
    if start.tasks.is_empty() || start.tasks.len() > MAX_TASKS {
        return Err(ApiError::bad_request(format!(
            "an execution takes 1 to {MAX_TASKS} tasks (got {})",
            start.tasks.len()
        )));
    }
    let mut tx = state.db.begin().await?;
    let new = NewExecution {
        kind: &start.kind,
        vendor_id: 0,
        trigger: Trigger::Manual,
        trigger_key: None,
        extra_attrs: serde_json::json!({}),
        created_by: caller.principal.name(),
    };
    // Without a trigger key nothing can conflict, so an id always comes back.
    let id = executions::create(&mut tx, &new)
        .await?
        .ok_or_else(|| ApiError::Internal("a manual execution conflicted".to_owned()))?;
    for (index, payload) in start.tasks.into_iter().enumerate() {
        let natural_key = index.to_string();
        let task = NewTask {
            natural_key: &natural_key,
            destination: "default",
            payload,
        };
        tasks::enqueue(&mut tx, id, &start.kind, &task, SOURCE).await?;
    }
    let entry = caller.audit("create", "execution", format!("execution/{id}"), None);
    audit::record(&mut tx, &entry).await?;
    tx.commit().await?;
    tracing::info!(execution_id = id, kind = %start.kind, "execution started by hand");
    Ok(json::created(&format!("{BASE_PATH}/executions/{id}")))
}

/// One execution with its task counts.
#[utoipa::path(
    get,
    path = "/executions/{id}",
    tag = "execution",
    operation_id = "getExecution",
    params(("id" = i64, Path, description = "The execution's id")),
    responses(
        (status = 200, description = "The execution", body = ExecutionBody),
        (status = 401, description = "No credentials", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 404, description = "No such execution", body = ErrorsBody),
    )
)]
async fn get_execution(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let mut conn = state.db.acquire().await?;
    Ok(JsonBody(execution_body(&mut conn, id).await?).into_response())
}

/// Stops an execution (`{"action":"stop"}` or no body, as Harbor's `PUT
/// /replication/executions/{id}`), or runs its failed tasks again (`{"action":"retry"}`).
///
/// Stop: pending tasks are skipped at once, running ones are cancelled by their
/// workers, and the execution shows `Stopped` once none runs. Stopping an execution
/// that has already finished (stopped, succeeded or failed) changes nothing and
/// answers 200, as Harbor does: the caller wanted it not running, and it is not.
///
/// Retry: only once the execution has finished and if it has failed tasks (409
/// otherwise); they become pending again with a new message each.
#[utoipa::path(
    put,
    path = "/executions/{id}",
    tag = "execution",
    operation_id = "updateExecution",
    params(("id" = i64, Path, description = "The execution's id")),
    request_body(content = Option<ActionRequest>, description = "`stop` (the default) or `retry`"),
    responses(
        (status = 200, description = "Stopping (or already finished), or failed tasks requeued"),
        (status = 400, description = "Unknown action or malformed body", body = ErrorsBody),
        (status = 401, description = "No credentials", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 404, description = "No such execution", body = ErrorsBody),
        (status = 409, description = "Retry of an unfinished execution or of one without failed tasks", body = ErrorsBody),
    )
)]
async fn update_execution(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let action = parse_action(body, &["stop", "retry"], Some("stop"))?;
    if action == "retry" {
        let mut tx = state.db.begin().await?;
        let requeued = executions::retry_failed(&mut tx, id, SOURCE).await?;
        let entry = caller.audit("retry", "execution", format!("execution/{id}"), None);
        audit::record(&mut tx, &entry).await?;
        tx.commit().await?;
        tracing::info!(execution_id = id, requeued, "failed tasks requeued");
        return Ok(json::ok_empty());
    }
    stop_execution(&state, &caller, id).await?;
    Ok(json::ok_empty())
}

/// Asks execution `id` to stop, with its audit record, then tells the workers after
/// commit. An execution that has already finished is left as it is (`Ok`: the caller
/// wanted it not running, and it is not); 404 when there is no such execution. Shared
/// with Harbor's per-kind views (`PUT /replication/executions/{id}`).
pub(crate) async fn stop_execution(state: &AppState, caller: &Caller, id: i64) -> ApiResult<()> {
    let mut tx = state.db.begin().await?;
    match executions::request_cancel(&mut tx, id, caller.principal.name(), SOURCE).await {
        Ok(kind) => {
            let entry = caller.audit("stop", "execution", format!("execution/{id}"), None);
            audit::record(&mut tx, &entry).await?;
            tx.commit().await?;
            tracing::info!(execution_id = id, %kind, "execution stop requested");
            tell_workers(
                state,
                &[Control::Cancel {
                    execution_id: id,
                    task_id: None,
                }],
            )
            .await;
        }
        // Already finished: nothing to stop (the transaction wrote nothing).
        Err(JobsError::Conflict(_)) => {}
        Err(JobsError::NotFound(_)) => return Err(execution_not_found(id)),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// The tasks of an execution, in creation order by default. `q` key: `status`.
#[utoipa::path(
    get,
    path = "/executions/{id}/tasks",
    tag = "execution",
    operation_id = "listExecutionTasks",
    params(("id" = i64, Path, description = "The execution's id"), ListParams),
    responses(
        (status = 200, description = "One page of tasks", body = [TaskBody],
         headers(("X-Total-Count" = i64, description = "Tasks over all pages"),
                 ("Link" = String, description = "prev/next pages"))),
        (status = 400, description = "Malformed q or sort", body = ErrorsBody),
        (status = 401, description = "No credentials", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 404, description = "No such execution", body = ErrorsBody),
        (status = 422, description = "page or page_size out of range", body = ErrorsBody),
    )
)]
async fn list_tasks(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
    OriginalUri(uri): OriginalUri,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let page = params.page()?;
    let sort = params.sort(
        &SORT_KEYS,
        Sort {
            key: "id",
            descending: false,
        },
    )?;
    let q = params.query()?;
    q.only(&["status"])?;
    let filter = TaskFilter {
        statuses: status_filter(&q, &TASK_STATUS_WORDS)?,
        payload_field: None,
    };
    let mut conn = state.db.acquire().await?;
    if executions::get(&mut *conn, id).await?.is_none() {
        return Err(execution_not_found(id));
    }
    let (found, total) = tasks::list(&mut conn, id, &filter, list_page(page, sort)).await?;
    let items: Vec<TaskBody> = found.into_iter().map(TaskBody::from).collect();
    Ok(paged(&uri, page, total, items))
}

/// A task's log (the newest 256 KiB of it), as text.
#[utoipa::path(
    get,
    path = "/executions/{id}/tasks/{task_id}/log",
    tag = "execution",
    operation_id = "getExecutionTaskLog",
    params(
        ("id" = i64, Path, description = "The execution's id"),
        ("task_id" = i64, Path, description = "The task's id"),
    ),
    responses(
        (status = 200, description = "The log", body = String, content_type = "text/plain"),
        (status = 401, description = "No credentials", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 404, description = "No such task in this execution", body = ErrorsBody),
    )
)]
async fn get_task_log(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, task_id)): ApiPath<(i64, i64)>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let mut conn = state.db.acquire().await?;
    let not_found = || ApiError::not_found(format!("task {task_id} of execution {id} not found"));
    let task = tasks::get(&mut *conn, task_id)
        .await?
        .ok_or_else(not_found)?;
    if task.execution_id != id {
        return Err(not_found());
    }
    let log = tasks::log(&mut *conn, task_id)
        .await?
        .ok_or_else(not_found)?;
    Ok(log_response(log))
}
