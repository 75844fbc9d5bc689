//! `/replication/executions`: Harbor's replication executions, tasks and task logs as
//! views of the generic executions (`/executions`) of kind `replicate` whose
//! `vendor_id` is the policy id. Executions of other kinds are 404 here.
//!
//! Harbor's shapes, including the words it uses for backward compatibility
//! (`src/server/v2.0/handler/replication.go`):
//! - execution statuses `InProgress`, `Succeed`, `Failed`, `Stopped`. Berth shows a
//!   pending execution (its planning task not started yet) as `InProgress` too, where
//!   Harbor would show an empty status; `status=InProgress` lists both.
//! - task statuses `Pending`, `InProgress`, `Succeed`, `Failed`, `Stopped`.
//! - triggers `manual`, `scheduled`, `event_based`.
//! - a task's `resource_type`, `src_resource`, `dst_resource` and `operation` come from
//!   its payload's `resource_type`, `source_resource`, `destination_resource` and
//!   `operation` (Harbor's task extra attributes); Berth adds `bytes`, `attempts`,
//!   `status_message` and, when the payload has them, `blobs_skipped`,
//!   `blobs_mounted` and `blobs_uploaded`.
//!
//! Starting an execution writes it and ONE planning task (`natural_key` `plan`,
//! payload `{"policy_id": N, "plan": true}`) in the transaction that reads the policy
//! `FOR SHARE`, so a concurrent delete of the policy cannot interleave; the replicate
//! worker expands the plan into copy tasks. The planning task is listed with the
//! others (operation `plan`): if planning fails, its status and log say why.

use axum::extract::{OriginalUri, State};
use axum::response::{IntoResponse, Response};
use berth_access::audit;
use berth_events::jobs::{
    executions, tasks, Execution, ExecutionFilter, ExecutionStatus, ListPage, NewExecution,
    NewTask, Task, TaskCounts, TaskFilter, TaskStatus, Trigger,
};
use berth_replication::policy::JOB_KIND;
use berth_replication::store;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorsBody};
use super::executions::{log_response, stop_execution};
use super::extract::{ApiPath, ApiQuery, Caller};
use super::json::{self, ApiJson, JsonBody};
use super::pagination::{paged, Page, PageParams};
use super::query::{parse_sort, Query, Sort};
use super::{harbor_time, BASE_PATH};
use crate::events::SOURCE;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_replication_executions, start_replication))
        .routes(routes!(get_replication_execution, stop_replication))
        .routes(routes!(list_replication_tasks))
        .routes(routes!(get_replication_task_log))
}

/// The natural key of an execution's planning task.
pub const PLAN_KEY: &str = "plan";

/// The sort keys of both listings.
const SORT_KEYS: [&str; 3] = ["id", "start_time", "end_time"];

// ---- Shapes -------------------------------------------------------------------------

/// Harbor's `StartReplicationExecution`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = StartReplicationExecution)]
pub struct StartReplicationExecution {
    /// The policy to run.
    pub policy_id: Option<i64>,
}

/// Harbor's `ReplicationExecution`, with Berth's `berth_status` and `cancel_requested`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ReplicationExecution)]
pub struct ReplicationExecutionBody {
    pub id: i64,
    pub policy_id: i64,
    /// `InProgress`, `Succeed`, `Failed` or `Stopped`.
    pub status: String,
    pub status_text: String,
    /// `manual`, `scheduled` or `event_based`.
    pub trigger: String,
    #[schema(format = DateTime)]
    pub start_time: String,
    /// Absent until the execution has finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub end_time: Option<String>,
    /// Tasks, the planning task included.
    pub total: i64,
    pub failed: i64,
    pub succeed: i64,
    /// Pending or running tasks.
    pub in_progress: i64,
    pub stopped: i64,
    /// Berth's word: `pending`, `running`, `succeeded`, `failed`, `cancelled`.
    pub berth_status: String,
    /// Berth: someone asked to stop it (it shows `Stopped` once no task runs).
    pub cancel_requested: bool,
}

fn execution_status_word(status: ExecutionStatus) -> &'static str {
    match status {
        ExecutionStatus::Pending | ExecutionStatus::Running => "InProgress",
        ExecutionStatus::Succeeded => "Succeed",
        ExecutionStatus::Failed => "Failed",
        ExecutionStatus::Cancelled => "Stopped",
    }
}

fn trigger_word(trigger: Trigger) -> &'static str {
    match trigger {
        Trigger::Manual => "manual",
        Trigger::Schedule => "scheduled",
        Trigger::Event => "event_based",
    }
}

fn task_status_word(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Pending => "Pending",
        TaskStatus::Running => "InProgress",
        TaskStatus::Succeeded => "Succeed",
        TaskStatus::Failed => "Failed",
        TaskStatus::Cancelled | TaskStatus::Skipped => "Stopped",
    }
}

impl ReplicationExecutionBody {
    fn new(e: Execution, c: TaskCounts) -> ReplicationExecutionBody {
        ReplicationExecutionBody {
            id: e.id,
            policy_id: e.vendor_id,
            status: execution_status_word(e.status).to_owned(),
            status_text: e.status_message,
            trigger: trigger_word(e.trigger).to_owned(),
            start_time: harbor_time(e.start_time),
            end_time: e.end_time.map(harbor_time),
            total: c.total,
            failed: c.failed,
            succeed: c.succeeded,
            in_progress: c.pending + c.running,
            stopped: c.cancelled + c.skipped,
            berth_status: e.status.as_str().to_owned(),
            cancel_requested: e.cancel_requested_at.is_some(),
        }
    }
}

/// Harbor's `ReplicationTask`, with Berth's progress fields.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ReplicationTask)]
pub struct ReplicationTaskBody {
    pub id: i64,
    pub execution_id: i64,
    /// `Pending`, `InProgress`, `Succeed`, `Failed` or `Stopped`.
    pub status: String,
    /// The task's id: Berth has no job id apart from the task.
    pub job_id: String,
    /// `copy`, `deletion`, or `plan` for the planning task.
    pub operation: String,
    /// `image` or `artifact`; empty for the planning task.
    pub resource_type: String,
    pub src_resource: String,
    pub dst_resource: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub end_time: Option<String>,
    /// Berth: bytes the task moved.
    pub bytes: i64,
    /// Berth: blobs the destination had already.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blobs_skipped: Option<i64>,
    /// Berth: blobs mounted from another repository at the destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blobs_mounted: Option<i64>,
    /// Berth: blobs uploaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blobs_uploaded: Option<i64>,
    /// Berth: attempts that started the handler.
    pub attempts: i32,
    /// Berth: the last error, or why it was stopped.
    pub status_message: String,
    /// Berth: from the first start to the end, once it has ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// Berth's word: `pending`, `running`, `succeeded`, `failed`, `cancelled`, `skipped`.
    pub berth_status: String,
}

impl From<Task> for ReplicationTaskBody {
    fn from(t: Task) -> ReplicationTaskBody {
        let text = |key: &str| {
            t.payload
                .get(key)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let count = |key: &str| t.payload.get(key).and_then(serde_json::Value::as_i64);
        let is_plan = t.natural_key == PLAN_KEY
            || t.payload.get("plan").and_then(serde_json::Value::as_bool) == Some(true);
        let operation = match text("operation") {
            op if op.is_empty() && is_plan => "plan".to_owned(),
            op => op,
        };
        let status = t.status;
        let duration_seconds = match (t.started_at, t.ended_at) {
            (Some(start), Some(end)) => Some((end - start).num_milliseconds() as f64 / 1000.0),
            _ => None,
        };
        ReplicationTaskBody {
            id: t.id,
            execution_id: t.execution_id,
            status: task_status_word(status).to_owned(),
            job_id: t.id.to_string(),
            operation,
            resource_type: text("resource_type"),
            src_resource: text("source_resource"),
            dst_resource: text("destination_resource"),
            start_time: t.started_at.map(harbor_time),
            end_time: t.ended_at.map(harbor_time),
            bytes: t.bytes,
            blobs_skipped: count("blobs_skipped"),
            blobs_mounted: count("blobs_mounted"),
            blobs_uploaded: count("blobs_uploaded"),
            attempts: t.attempts,
            status_message: t.status_message,
            duration_seconds,
            berth_status: status.as_str().to_owned(),
        }
    }
}

/// `GET /replication/executions` parameters: Harbor's, plus `q` (Berth) taking the
/// same three filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExecutionListParams {
    /// Berth: `policy_id=N`, `status=Failed` or `status={InProgress Failed}`,
    /// `trigger=manual`; a key may not also be given as its own parameter.
    pub q: Option<String>,
    /// `id`, `start_time` or `end_time`, `-` for descending; default `-id`.
    pub sort: Option<String>,
    pub page: Option<i64>,
    pub page_size: Option<i64>,
    /// The policy whose executions to list.
    pub policy_id: Option<i64>,
    /// `InProgress`, `Succeed`, `Failed` or `Stopped` (Berth's words work too).
    pub status: Option<String>,
    /// `manual`, `scheduled` or `event_based`.
    pub trigger: Option<String>,
}

/// `GET /replication/executions/{id}/tasks` parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaskListParams {
    /// `id`, `start_time` or `end_time`, `-` for descending; default `id`.
    pub sort: Option<String>,
    pub page: Option<i64>,
    pub page_size: Option<i64>,
    /// `Pending`, `InProgress`, `Succeed`, `Failed` or `Stopped` (Berth's words work too).
    pub status: Option<String>,
    /// `image` or `artifact`.
    pub resource_type: Option<String>,
}

// ---- Filters ------------------------------------------------------------------------

const EXECUTION_STATUS_WORDS: [(&str, &[ExecutionStatus]); 10] = [
    (
        "inprogress",
        &[ExecutionStatus::Pending, ExecutionStatus::Running],
    ),
    ("succeed", &[ExecutionStatus::Succeeded]),
    ("failed", &[ExecutionStatus::Failed]),
    ("stopped", &[ExecutionStatus::Cancelled]),
    ("pending", &[ExecutionStatus::Pending]),
    ("running", &[ExecutionStatus::Running]),
    ("succeeded", &[ExecutionStatus::Succeeded]),
    ("success", &[ExecutionStatus::Succeeded]),
    ("error", &[ExecutionStatus::Failed]),
    ("cancelled", &[ExecutionStatus::Cancelled]),
];

const TASK_STATUS_WORDS: [(&str, &[TaskStatus]); 11] = [
    ("pending", &[TaskStatus::Pending]),
    ("inprogress", &[TaskStatus::Running]),
    ("succeed", &[TaskStatus::Succeeded]),
    ("failed", &[TaskStatus::Failed]),
    ("stopped", &[TaskStatus::Cancelled, TaskStatus::Skipped]),
    ("running", &[TaskStatus::Running]),
    ("succeeded", &[TaskStatus::Succeeded]),
    ("success", &[TaskStatus::Succeeded]),
    ("error", &[TaskStatus::Failed]),
    ("cancelled", &[TaskStatus::Cancelled]),
    ("skipped", &[TaskStatus::Skipped]),
];

/// The statuses the words stand for (case does not matter).
fn statuses_of<S: Copy>(words: &[String], known: &[(&str, &[S])]) -> ApiResult<Vec<S>> {
    let mut statuses = Vec::new();
    for word in words {
        let lower = word.to_ascii_lowercase();
        let Some((_, meaning)) = known.iter().find(|(w, _)| *w == lower) else {
            let names: Vec<&str> = known.iter().map(|(w, _)| *w).collect();
            return Err(ApiError::bad_request(format!(
                "unknown status {word:?}; use one of {}",
                names.join(", ")
            )));
        };
        statuses.extend_from_slice(meaning);
    }
    Ok(statuses)
}

/// Harbor's trigger words, and Berth's.
fn trigger_of(word: &str) -> ApiResult<Trigger> {
    match word.to_ascii_lowercase().as_str() {
        "manual" => Ok(Trigger::Manual),
        "scheduled" | "schedule" => Ok(Trigger::Schedule),
        "event_based" | "event" => Ok(Trigger::Event),
        _ => Err(ApiError::bad_request(format!(
            "unknown trigger {word:?}; use manual, scheduled or event_based"
        ))),
    }
}

/// The words of filter `key`: its own parameter, or its `q` term; not both.
fn words_of(q: &Query, key: &str, param: Option<&str>) -> ApiResult<Option<Vec<String>>> {
    match (q.one_of(key)?, param) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(format!(
            "{key} is given both as a parameter and in q"
        ))),
        (Some(words), None) => Ok(Some(words)),
        (None, Some(word)) => Ok(Some(vec![word.to_owned()])),
        (None, None) => Ok(None),
    }
}

fn execution_filter(params: &ExecutionListParams) -> ApiResult<ExecutionFilter> {
    let q = Query::parse(params.q.as_deref())?;
    q.only(&["policy_id", "status", "trigger"])?;
    let policy_id = match (q.exact("policy_id")?, params.policy_id) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "policy_id is given both as a parameter and in q",
            ))
        }
        (Some(v), None) => Some(
            v.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("policy_id {v:?} is not an integer")))?,
        ),
        (None, id) => id,
    };
    let statuses = words_of(&q, "status", params.status.as_deref())?
        .map(|words| statuses_of(&words, &EXECUTION_STATUS_WORDS))
        .transpose()?;
    let triggers = words_of(&q, "trigger", params.trigger.as_deref())?
        .map(|words| {
            words
                .iter()
                .map(|w| trigger_of(w))
                .collect::<ApiResult<_>>()
        })
        .transpose()?;
    Ok(ExecutionFilter {
        kinds: Some(vec![JOB_KIND.to_owned()]),
        statuses,
        triggers,
        vendor_id: policy_id,
    })
}

fn list_page<'a>(page: Page, sort: Sort<'a>) -> ListPage<'a> {
    ListPage {
        sort_key: sort.key,
        descending: sort.descending,
        limit: page.limit(),
        offset: page.offset(),
    }
}

fn execution_not_found(id: i64) -> ApiError {
    ApiError::not_found(format!("replication execution {id} not found"))
}

/// Replication execution `id`, or 404 (also for an execution of another kind).
async fn replication_execution(conn: &mut PgConnection, id: i64) -> ApiResult<Execution> {
    match executions::get(&mut *conn, id).await? {
        Some(e) if e.kind == JOB_KIND => Ok(e),
        _ => Err(execution_not_found(id)),
    }
}

// ---- Handlers -----------------------------------------------------------------------

/// List replication executions, newest first by default.
#[utoipa::path(
    get,
    path = "/replication/executions",
    tag = "replication",
    operation_id = "listReplicationExecutions",
    params(ExecutionListParams),
    responses(
        (status = 200, description = "One page of executions", body = [ReplicationExecutionBody],
         headers(("X-Total-Count" = i64, description = "Executions over all pages"),
                 ("Link" = String, description = "prev/next pages"))),
        (status = 400, description = "Unknown status or trigger, malformed q or sort", body = ErrorsBody),
        (status = 401, description = "No credentials", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 422, description = "page, page_size or policy_id malformed", body = ErrorsBody),
    )
)]
async fn list_replication_executions(
    State(state): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(params): ApiQuery<ExecutionListParams>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let page = PageParams {
        page: params.page,
        page_size: params.page_size,
    }
    .validate()?;
    let sort = parse_sort(
        params.sort.as_deref(),
        &SORT_KEYS,
        Sort {
            key: "id",
            descending: true,
        },
    )?;
    let filter = execution_filter(&params)?;
    let mut conn = state.db.acquire().await?;
    let (found, total) =
        executions::list_with_counts(&mut conn, &filter, list_page(page, sort)).await?;
    let items: Vec<ReplicationExecutionBody> = found
        .into_iter()
        .map(|(e, c)| ReplicationExecutionBody::new(e, c))
        .collect();
    Ok(paged(&uri, page, total, items))
}

/// Start a replication: an execution of the policy with one planning task, which the
/// replicate worker expands into copy tasks. 412 for a disabled policy, as in Harbor.
#[utoipa::path(
    post,
    path = "/replication/executions",
    tag = "replication",
    operation_id = "startReplication",
    request_body = StartReplicationExecution,
    responses(
        (status = 201, description = "Started",
         headers(("Location" = String, description = "/api/v2.0/replication/executions/{id}"))),
        (status = 400, description = "No policy_id, or a malformed body", body = ErrorsBody),
        (status = 401, description = "No credentials", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 404, description = "No such policy", body = ErrorsBody),
        (status = 412, description = "The policy is disabled", body = ErrorsBody),
    )
)]
async fn start_replication(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(start): ApiJson<StartReplicationExecution>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let Some(policy_id) = start.policy_id else {
        return Err(ApiError::bad_request("policy_id is required"));
    };
    let mut tx = state.db.begin().await?;
    // FOR SHARE: the policy cannot be deleted (nor disabled) until this commits.
    let policy = store::get_for_share(&mut tx, policy_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("replication policy {policy_id} not found")))?;
    if !policy.enabled {
        return Err(ApiError::Precondition(format!(
            "the policy {policy_id} is disabled"
        )));
    }
    let new = NewExecution {
        kind: JOB_KIND,
        vendor_id: policy.id,
        trigger: Trigger::Manual,
        trigger_key: None,
        extra_attrs: serde_json::json!({
            "policy_id": policy.id,
            "operator": caller.principal.name(),
        }),
        created_by: caller.principal.name(),
    };
    // Without a trigger key nothing can conflict, so an id always comes back.
    let id = executions::create(&mut tx, &new)
        .await?
        .ok_or_else(|| ApiError::Internal("a manual replication conflicted".to_owned()))?;
    let plan = NewTask {
        natural_key: PLAN_KEY,
        destination: "default",
        payload: serde_json::json!({"policy_id": policy.id, "plan": true}),
    };
    tasks::enqueue(&mut tx, id, JOB_KIND, &plan, SOURCE).await?;
    let entry = caller.audit("create", "execution", format!("execution/{id}"), None);
    audit::record(&mut tx, &entry).await?;
    tx.commit().await?;
    tracing::info!(
        execution_id = id,
        policy_id = policy.id,
        "replication started by hand"
    );
    Ok(json::created(&format!(
        "{BASE_PATH}/replication/executions/{id}"
    )))
}

/// A replication execution with its task counts.
#[utoipa::path(
    get,
    path = "/replication/executions/{id}",
    tag = "replication",
    operation_id = "getReplicationExecution",
    params(("id" = i64, Path, description = "The execution's id")),
    responses(
        (status = 200, description = "The execution", body = ReplicationExecutionBody),
        (status = 401, description = "No credentials", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 404, description = "No such replication execution", body = ErrorsBody),
    )
)]
async fn get_replication_execution(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let mut conn = state.db.acquire().await?;
    let execution = replication_execution(&mut conn, id).await?;
    let mut counts = executions::counts(&mut *conn, &[id]).await?;
    let body = ReplicationExecutionBody::new(execution, counts.remove(&id).unwrap_or_default());
    Ok(JsonBody(body).into_response())
}

/// Stop a replication execution (any body is ignored, as Harbor does): pending tasks
/// are skipped at once, running ones cancelled by their workers; it shows `Stopped`
/// once none runs. Stopping a finished execution changes nothing and answers 200.
#[utoipa::path(
    put,
    path = "/replication/executions/{id}",
    tag = "replication",
    operation_id = "stopReplication",
    params(("id" = i64, Path, description = "The execution's id")),
    responses(
        (status = 200, description = "Stopping, or already finished"),
        (status = 401, description = "No credentials", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 404, description = "No such replication execution", body = ErrorsBody),
    )
)]
async fn stop_replication(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    {
        // An execution's kind never changes, so this check may precede the stop's
        // own transaction; a deletion in between is a 404 there.
        let mut conn = state.db.acquire().await?;
        replication_execution(&mut conn, id).await?;
    }
    stop_execution(&state, &caller, id).await?;
    Ok(json::ok_empty())
}

/// The tasks of a replication execution, in creation order by default.
#[utoipa::path(
    get,
    path = "/replication/executions/{id}/tasks",
    tag = "replication",
    operation_id = "listReplicationTasks",
    params(("id" = i64, Path, description = "The execution's id"), TaskListParams),
    responses(
        (status = 200, description = "One page of tasks", body = [ReplicationTaskBody],
         headers(("X-Total-Count" = i64, description = "Tasks over all pages"),
                 ("Link" = String, description = "prev/next pages"))),
        (status = 400, description = "Unknown status, malformed sort", body = ErrorsBody),
        (status = 401, description = "No credentials", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 404, description = "No such replication execution", body = ErrorsBody),
        (status = 422, description = "page or page_size out of range", body = ErrorsBody),
    )
)]
async fn list_replication_tasks(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
    OriginalUri(uri): OriginalUri,
    ApiQuery(params): ApiQuery<TaskListParams>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let page = PageParams {
        page: params.page,
        page_size: params.page_size,
    }
    .validate()?;
    let sort = parse_sort(
        params.sort.as_deref(),
        &SORT_KEYS,
        Sort {
            key: "id",
            descending: false,
        },
    )?;
    let statuses = params
        .status
        .as_deref()
        .map(|word| statuses_of(&[word.to_owned()], &TASK_STATUS_WORDS))
        .transpose()?;
    let mut conn = state.db.acquire().await?;
    replication_execution(&mut conn, id).await?;
    let filter = TaskFilter {
        statuses,
        payload_field: params
            .resource_type
            .clone()
            .map(|value| ("resource_type".to_owned(), value)),
    };
    let (rows, total) = tasks::list(&mut conn, id, &filter, list_page(page, sort)).await?;
    let items: Vec<ReplicationTaskBody> = rows.into_iter().map(ReplicationTaskBody::from).collect();
    Ok(paged(&uri, page, total, items))
}

/// A replication task's log (the newest 256 KiB of it), as text.
#[utoipa::path(
    get,
    path = "/replication/executions/{id}/tasks/{task_id}/log",
    tag = "replication",
    operation_id = "getReplicationLog",
    params(
        ("id" = i64, Path, description = "The execution's id"),
        ("task_id" = i64, Path, description = "The task's id"),
    ),
    responses(
        (status = 200, description = "The log", body = String, content_type = "text/plain"),
        (status = 401, description = "No credentials", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 404, description = "No such task in this replication execution", body = ErrorsBody),
    )
)]
async fn get_replication_task_log(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, task_id)): ApiPath<(i64, i64)>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let mut conn = state.db.acquire().await?;
    replication_execution(&mut conn, id).await?;
    let not_found =
        || ApiError::not_found(format!("execution {id} contains no task with ID {task_id}"));
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

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;

    fn row(natural_key: &str, payload: serde_json::Value, status: &str) -> Task {
        Task {
            id: 7,
            execution_id: 3,
            kind: JOB_KIND.to_owned(),
            natural_key: natural_key.to_owned(),
            destination: "4".to_owned(),
            payload,
            status: TaskStatus::parse(status).expect("a task status"),
            status_message: String::new(),
            attempts: 1,
            bytes: 42,
            worker_id: None,
            cancel_requested_at: None,
            created_at: Utc::now(),
            started_at: None,
            updated_at: Utc::now(),
            ended_at: None,
        }
    }

    #[test]
    fn a_copy_task_shows_harbors_fields_from_its_payload() {
        let body = ReplicationTaskBody::from(row(
            "team/app@sha256:ab→hub",
            json!({"resource_type": "image", "source_resource": "team/app:1.0",
                   "destination_resource": "mirror/app:1.0", "operation": "copy",
                   "blobs_skipped": 2, "blobs_uploaded": 1}),
            "running",
        ));
        assert_eq!(body.status, "InProgress");
        assert_eq!(body.operation, "copy");
        assert_eq!(body.resource_type, "image");
        assert_eq!(body.src_resource, "team/app:1.0");
        assert_eq!(body.dst_resource, "mirror/app:1.0");
        assert_eq!(
            (body.blobs_skipped, body.blobs_mounted, body.blobs_uploaded),
            (Some(2), None, Some(1))
        );
        assert_eq!(body.job_id, "7");
    }

    #[test]
    fn the_planning_task_is_a_plan_operation() {
        let body = ReplicationTaskBody::from(row(
            PLAN_KEY,
            json!({"policy_id": 1, "plan": true}),
            "skipped",
        ));
        assert_eq!(body.operation, "plan");
        assert_eq!(body.status, "Stopped");
        assert_eq!(body.berth_status, "skipped");
        assert_eq!(body.resource_type, "");
    }

    #[test]
    fn harbors_status_words_map_back() {
        let words = |w: &str| statuses_of(&[w.to_owned()], &EXECUTION_STATUS_WORDS).unwrap();
        assert_eq!(
            words("InProgress"),
            [ExecutionStatus::Pending, ExecutionStatus::Running]
        );
        assert_eq!(words("Succeed"), [ExecutionStatus::Succeeded]);
        assert_eq!(words("Stopped"), [ExecutionStatus::Cancelled]);
        assert!(statuses_of(&["Done".to_owned()], &EXECUTION_STATUS_WORDS).is_err());
        assert_eq!(trigger_of("event_based").unwrap(), Trigger::Event);
        assert_eq!(trigger_of("scheduled").unwrap(), Trigger::Schedule);
        assert!(trigger_of("cron").is_err());
    }
}
