//! `/jobservice`: Harbor's job-service dashboard over Berth's pipeline. A queue is a
//! worker kind; its pending count is read from the kind's JetStream consumer, and from
//! PostgreSQL's pending tasks when JetStream cannot be asked (NATS down) or the kind
//! has no consumer yet. A pool is a live worker process (registered and heartbeating
//! in `worker_processes`), its workers are its concurrency slots, and a job is a task.
//!
//! Harbor's `all` stands for every queue (`PUT /queues/all`) and every pool (`GET
//! /pools/all/workers`). Everything here is for system administrators only.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use berth_access::audit;
use berth_events::control::Control;
use berth_events::jobs::{executions, pool, queues, tasks, JobsError};
use berth_events::streams::{self, JOBS_STREAM};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorsBody};
use super::executions::{log_response, parse_action, tell_workers, ActionRequest, MANUAL_KINDS};
use super::extract::{ApiPath, Caller};
use super::harbor_time;
use super::json::{self, JsonBody};
use crate::events::SOURCE;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_job_queues))
        .routes(routes!(action_pending_jobs))
        .routes(routes!(get_worker_pools))
        .routes(routes!(get_workers))
        .routes(routes!(stop_running_job))
        .routes(routes!(action_get_job_log))
}

/// How long the queues listing waits for JetStream before answering from PostgreSQL.
const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// Set on `GET /jobservice/queues` when JetStream could not be asked, so every count
/// is PostgreSQL's.
pub const JETSTREAM_UNREACHABLE_HEADER: &str = "x-berth-jetstream";

/// Harbor's `all`: every queue, every pool, or every job type.
pub(crate) const ALL: &str = "all";

/// Harbor's `JobQueue`, with Berth's `count_source`.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobQueue {
    /// The worker kind (`echo`, `replicate`, `scan`, `gc`).
    pub job_type: String,
    /// Tasks waiting to be delivered to a worker.
    pub count: i64,
    /// Seconds the oldest pending task has waited.
    pub latency: i64,
    /// Workers start no new task of this kind while paused.
    pub paused: bool,
    /// Berth: where `count` comes from: `jetstream` (the kind's consumer) or
    /// `postgresql` (pending tasks; NATS unreachable or no consumer yet).
    pub count_source: String,
}

/// Harbor's `WorkerPool`: one live worker process, with Berth's `kind`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerPool {
    pub pid: i32,
    /// The process's registration id.
    pub worker_pool_id: String,
    pub start_at: String,
    pub heartbeat_at: String,
    /// Tasks it runs at once.
    pub concurrency: i32,
    pub host: String,
    /// Berth: the worker kind it runs.
    pub kind: String,
}

/// Harbor's `Worker`: one concurrency slot of a worker process.
#[derive(Debug, Serialize, ToSchema)]
pub struct Worker {
    /// `<pool id>-<slot>`.
    pub id: String,
    pub pool_id: String,
    /// The worker kind.
    pub job_name: String,
    /// The task running in this slot; empty when idle.
    pub job_id: String,
    /// When the running task started; absent when idle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
    /// The running task's execution (`execution/<id>`); empty when idle.
    pub check_in: String,
    /// The process's last heartbeat.
    pub checkin_at: String,
}

/// A kind named in a path: what a worker kind can be called.
pub(crate) fn parse_kind(kind: &str) -> ApiResult<&str> {
    let valid = !kind.is_empty()
        && kind.len() <= 64
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if valid {
        Ok(kind)
    } else {
        Err(ApiError::bad_request(format!(
            "{kind:?} is not a job type: lower-case letters, digits, '-' and '_', at most 64"
        )))
    }
}

/// A task id named in a path. Harbor's job ids are strings, so anything else is a job
/// that does not exist rather than a malformed request.
fn parse_job_id(job_id: &str) -> ApiResult<i64> {
    job_id
        .parse::<i64>()
        .map_err(|_| ApiError::not_found(format!("job {job_id} not found")))
}

/// The names of the consumers on the jobs stream (each a worker kind's), or why they
/// could not be had.
async fn jobs_consumer_names(js: &async_nats::jetstream::Context) -> Result<Vec<String>, String> {
    use async_nats::jetstream::context::GetStreamErrorKind;
    use async_nats::jetstream::ErrorCode;
    let stream = match js.get_stream(JOBS_STREAM).await {
        Ok(stream) => stream,
        Err(e) => {
            return match e.kind() {
                // Not provisioned yet: no worker ever started.
                GetStreamErrorKind::JetStream(error)
                    if error.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(Vec::new())
                }
                _ => Err(e.to_string()),
            };
        }
    };
    stream
        .consumer_names()
        .try_collect()
        .await
        .map_err(|e| e.to_string())
}

/// Adds the kinds with a consumer on the jobs stream to `kinds` and returns the
/// pending count of each; `None` when JetStream cannot be asked (NATS down, or slow).
async fn jetstream_pending(
    state: &AppState,
    kinds: &mut BTreeSet<String>,
) -> Option<BTreeMap<String, i64>> {
    if state.nats.connection_state() != async_nats::connection::State::Connected {
        tracing::info!("NATS is not connected; counting pending tasks in PostgreSQL");
        return None;
    }
    let ask = async {
        let names = jobs_consumer_names(&state.jetstream).await?;
        // A kind's pending count is the sum over its consumers (`replicate` and one
        // `replicate-<id>` per endpoint).
        let mut pending: BTreeMap<String, i64> = BTreeMap::new();
        for durable in &names {
            let kind = streams::kind_of_jobs_consumer(durable);
            kinds.insert(kind.to_owned());
            let counts = streams::consumer_counts(&state.jetstream, JOBS_STREAM, durable)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(counts) = counts {
                let count = i64::try_from(counts.pending).unwrap_or(i64::MAX);
                let total = pending.entry(kind.to_owned()).or_default();
                *total = total.saturating_add(count);
            }
        }
        Ok::<_, String>(pending)
    };
    match tokio::time::timeout(JETSTREAM_TIMEOUT, ask).await {
        Ok(Ok(pending)) => Some(pending),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "JetStream consumer counts unavailable; counting pending tasks in PostgreSQL");
            None
        }
        Err(_) => {
            tracing::warn!(
                "JetStream did not answer in time; counting pending tasks in PostgreSQL"
            );
            None
        }
    }
}

/// The kinds PostgreSQL knows of: the manually startable kinds, and kinds with a queue
/// row, a schedule, a registered worker process, pending tasks or unfinished
/// executions. It does not depend on NATS.
pub(crate) async fn database_kinds(state: &AppState) -> ApiResult<BTreeSet<String>> {
    let mut kinds: BTreeSet<String> = MANUAL_KINDS.iter().map(|k| (*k).to_owned()).collect();
    kinds.extend(queues::known_kinds(&state.db).await?);
    Ok(kinds)
}

/// Every queue worth showing: [`database_kinds`] and (when NATS answers) the kinds
/// with a consumer on the jobs stream.
async fn known_kinds(state: &AppState) -> ApiResult<BTreeSet<String>> {
    let mut kinds = database_kinds(state).await?;
    if state.nats.connection_state() == async_nats::connection::State::Connected {
        match tokio::time::timeout(JETSTREAM_TIMEOUT, jobs_consumer_names(&state.jetstream)).await {
            Ok(Ok(names)) => kinds.extend(
                names
                    .iter()
                    .map(|n| streams::kind_of_jobs_consumer(n).to_owned()),
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot list the jobs stream's consumers"),
            Err(_) => tracing::warn!("JetStream did not list its consumers in time"),
        }
    }
    Ok(kinds)
}

/// One queue per worker kind, by name.
#[utoipa::path(
    get,
    path = "/jobservice/queues",
    tag = "jobservice",
    operation_id = "listJobQueues",
    responses(
        (status = 200, description = "The queues; `X-Berth-Jetstream: unreachable` when every count is PostgreSQL's",
         body = [JobQueue]),
        (status = 401, description = "No credentials", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
    )
)]
async fn list_job_queues(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let mut kinds = database_kinds(&state).await?;
    let from_jetstream = jetstream_pending(&state, &mut kinds).await;
    let pending: BTreeMap<String, queues::PendingTasks> = queues::pending_tasks(&state.db)
        .await?
        .into_iter()
        .map(|p| (p.kind.clone(), p))
        .collect();
    let paused: BTreeSet<String> = queues::paused_kinds(&state.db).await?.into_iter().collect();
    let now = Utc::now();
    let items: Vec<JobQueue> = kinds
        .into_iter()
        .map(|kind| {
            let waiting = pending.get(&kind);
            let latency = waiting
                .and_then(|p| p.oldest)
                .map(|oldest| (now - oldest).num_seconds().max(0))
                .unwrap_or(0);
            let (count, source) = match from_jetstream.as_ref().and_then(|js| js.get(&kind)) {
                Some(count) => (*count, "jetstream"),
                None => (waiting.map(|p| p.pending).unwrap_or(0), "postgresql"),
            };
            JobQueue {
                paused: paused.contains(&kind),
                job_type: kind,
                count,
                latency,
                count_source: source.to_owned(),
            }
        })
        .collect();
    let mut response = JsonBody(items).into_response();
    if from_jetstream.is_none() {
        response.headers_mut().insert(
            JETSTREAM_UNREACHABLE_HEADER,
            HeaderValue::from_static("unreachable"),
        );
    }
    Ok(response)
}

/// Pauses or resumes starting tasks of a kind (`all`: every queue listed), or stops
/// it: every unfinished execution of the kind is stopped as `PUT /executions/{id}`
/// would. Pausing a kind no worker runs yet is allowed: its workers start paused.
#[utoipa::path(
    put,
    path = "/jobservice/queues/{job_type}",
    tag = "jobservice",
    operation_id = "actionPendingJobs",
    params(("job_type" = String, Path, description = "The worker kind; `all` for every queue")),
    request_body(content = ActionRequest, description = "`stop`, `pause` or `resume`"),
    responses(
        (status = 200, description = "Done"),
        (status = 400, description = "Missing or unknown action, or a malformed job type", body = ErrorsBody),
        (status = 401, description = "No credentials", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
    )
)]
async fn action_pending_jobs(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(job_type): ApiPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    // No default: stopping a whole queue must be asked for by name.
    let action = parse_action(body, &["stop", "pause", "resume"], None)?;
    let kinds: Vec<String> = if job_type == ALL {
        known_kinds(&state).await?.into_iter().collect()
    } else {
        vec![parse_kind(&job_type)?.to_owned()]
    };
    let mut tx = state.db.begin().await?;
    let mut messages = Vec::new();
    for kind in &kinds {
        match action {
            "pause" | "resume" => {
                let paused = action == "pause";
                queues::set_paused(&mut *tx, kind, paused).await?;
                messages.push(Control::Pause {
                    kind: kind.clone(),
                    paused,
                });
            }
            _ => {
                for id in executions::unfinished_of_kind(&mut *tx, kind).await? {
                    match executions::request_cancel(&mut tx, id, caller.principal.name(), SOURCE)
                        .await
                    {
                        Ok(_) => messages.push(Control::Cancel {
                            execution_id: id,
                            task_id: None,
                        }),
                        // Finished since it was listed: nothing to stop.
                        Err(JobsError::Conflict(_) | JobsError::NotFound(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        let entry = caller.audit(action, "job_queue", kind.clone(), None);
        audit::record(&mut tx, &entry).await?;
    }
    tx.commit().await?;
    tracing::info!(action, queues = ?kinds, "job queue action");
    tell_workers(&state, &messages).await;
    Ok(json::ok_empty())
}

/// The live worker processes: those whose heartbeat is younger than three intervals.
async fn live_pools(state: &AppState) -> ApiResult<Vec<pool::WorkerProcess>> {
    let max_age = state.config.pipeline.heartbeat() * 3;
    Ok(pool::live(&state.db, max_age).await?)
}

/// One pool per live worker process.
#[utoipa::path(
    get,
    path = "/jobservice/pools",
    tag = "jobservice",
    operation_id = "getWorkerPools",
    responses(
        (status = 200, description = "The live worker processes", body = [WorkerPool]),
        (status = 401, description = "No credentials", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
    )
)]
async fn get_worker_pools(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let items: Vec<WorkerPool> = live_pools(&state)
        .await?
        .into_iter()
        .map(|p| WorkerPool {
            pid: p.pid,
            worker_pool_id: p.id.to_string(),
            start_at: harbor_time(p.started_at),
            heartbeat_at: harbor_time(p.heartbeat_at),
            concurrency: p.concurrency,
            host: p.host,
            kind: p.kind,
        })
        .collect();
    Ok(JsonBody(items).into_response())
}

/// One running task as a worker process reports it in `in_flight`.
struct InFlight {
    task_id: i64,
    execution_id: Option<i64>,
    started_at: Option<DateTime<Utc>>,
}

/// The entries of `in_flight` that name a task; others are ignored (the column is the
/// runtime's report, not something to fail a listing over).
fn in_flight(value: &serde_json::Value) -> Vec<InFlight> {
    let Some(entries) = value.as_array() else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| {
            Some(InFlight {
                task_id: entry.get("task_id")?.as_i64()?,
                execution_id: entry.get("execution_id").and_then(|v| v.as_i64()),
                started_at: entry
                    .get("started_at")
                    .and_then(|v| v.as_str())
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.with_timezone(&Utc)),
            })
        })
        .collect()
}

/// One worker per concurrency slot of a process; the first slots hold its running
/// tasks.
fn workers_of(process: &pool::WorkerProcess) -> Vec<Worker> {
    let pool_id = process.id.to_string();
    let running = in_flight(&process.in_flight);
    let slots = usize::try_from(process.concurrency)
        .unwrap_or(0)
        .max(running.len());
    (0..slots)
        .map(|slot| {
            let task = running.get(slot);
            Worker {
                id: format!("{pool_id}-{slot}"),
                pool_id: pool_id.clone(),
                job_name: process.kind.clone(),
                job_id: task.map(|t| t.task_id.to_string()).unwrap_or_default(),
                start_at: task.and_then(|t| t.started_at).map(harbor_time),
                check_in: task
                    .and_then(|t| t.execution_id)
                    .map(|id| format!("execution/{id}"))
                    .unwrap_or_default(),
                checkin_at: harbor_time(process.heartbeat_at),
            }
        })
        .collect()
}

/// The workers (concurrency slots) of one live process, or of all (`all`).
#[utoipa::path(
    get,
    path = "/jobservice/pools/{pool_id}/workers",
    tag = "jobservice",
    operation_id = "getWorkers",
    params(("pool_id" = String, Path, description = "A worker pool id; `all` for every pool")),
    responses(
        (status = 200, description = "The workers", body = [Worker]),
        (status = 401, description = "No credentials", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 404, description = "No such live pool", body = ErrorsBody),
    )
)]
async fn get_workers(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(pool_id): ApiPath<String>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let pools = live_pools(&state).await?;
    let chosen: Vec<&pool::WorkerProcess> = if pool_id == ALL {
        pools.iter().collect()
    } else {
        let found: Vec<_> = pools
            .iter()
            .filter(|p| p.id.to_string() == pool_id)
            .collect();
        if found.is_empty() {
            return Err(ApiError::not_found(format!(
                "worker pool {pool_id} not found"
            )));
        }
        found
    };
    let items: Vec<Worker> = chosen.into_iter().flat_map(workers_of).collect();
    Ok(JsonBody(items).into_response())
}

/// Stops one job (task): skipped at once if it has not started, cancelled by its
/// worker if it runs. A job that has already finished is left as it is (200).
#[utoipa::path(
    put,
    path = "/jobservice/jobs/{job_id}",
    tag = "jobservice",
    operation_id = "stopRunningJob",
    params(("job_id" = String, Path, description = "The job (task) id")),
    request_body(content = Option<ActionRequest>, description = "`stop` (the default)"),
    responses(
        (status = 200, description = "Stopping, or already finished"),
        (status = 400, description = "An action other than stop, or a malformed body", body = ErrorsBody),
        (status = 401, description = "No credentials", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 404, description = "No such job", body = ErrorsBody),
    )
)]
async fn stop_running_job(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(job_id): ApiPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    parse_action(body, &["stop"], Some("stop"))?;
    let id = parse_job_id(&job_id)?;
    let mut tx = state.db.begin().await?;
    match tasks::request_cancel(&mut tx, id, caller.principal.name(), SOURCE).await {
        Ok(task) => {
            let entry = caller.audit("stop", "job", format!("job/{id}"), None);
            audit::record(&mut tx, &entry).await?;
            tx.commit().await?;
            tracing::info!(
                task_id = id,
                execution_id = task.execution_id,
                "job stop requested"
            );
            tell_workers(
                &state,
                &[Control::Cancel {
                    execution_id: task.execution_id,
                    task_id: Some(id),
                }],
            )
            .await;
        }
        // Already finished: nothing to stop.
        Err(JobsError::Conflict(_)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(json::ok_empty())
}

/// A job's (task's) log, as text.
#[utoipa::path(
    get,
    path = "/jobservice/jobs/{job_id}/log",
    tag = "jobservice",
    operation_id = "actionGetJobLog",
    params(("job_id" = String, Path, description = "The job (task) id")),
    responses(
        (status = 200, description = "The log", body = String, content_type = "text/plain"),
        (status = 401, description = "No credentials", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 404, description = "No such job", body = ErrorsBody),
    )
)]
async fn action_get_job_log(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(job_id): ApiPath<String>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let id = parse_job_id(&job_id)?;
    let log = tasks::log(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("job {job_id} not found")))?;
    Ok(log_response(log))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_plain_names() {
        assert!(parse_kind("echo").is_ok());
        assert!(parse_kind("scan-all_2").is_ok());
        assert!(parse_kind("").is_err());
        assert!(parse_kind("Echo").is_err());
        assert!(parse_kind("a.b").is_err());
        assert!(parse_kind(&"x".repeat(65)).is_err());
    }

    #[test]
    fn slots_hold_running_tasks_first() {
        let process = pool::WorkerProcess {
            id: uuid::Uuid::nil(),
            kind: "echo".into(),
            host: "h".into(),
            pid: 1,
            concurrency: 3,
            started_at: Utc::now(),
            heartbeat_at: Utc::now(),
            in_flight: serde_json::json!([
                {"task_id": 7, "execution_id": 2, "started_at": "2024-05-01T10:00:00Z"},
                {"bogus": true},
            ]),
        };
        let workers = workers_of(&process);
        assert_eq!(workers.len(), 3);
        assert_eq!(workers[0].job_id, "7");
        assert_eq!(workers[0].check_in, "execution/2");
        assert_eq!(
            workers[0].start_at.as_deref(),
            Some("2024-05-01T10:00:00.000Z")
        );
        assert_eq!(workers[1].job_id, "");
        assert!(workers[1].start_at.is_none());
        assert_eq!(workers[2].id, format!("{}-2", uuid::Uuid::nil()));
    }
}
