//! `/schedules`: Harbor's schedule listing of the job-service dashboard over Berth's
//! cron schedules (`berth_events::schedules`), and whether scheduled work is paused.
//!
//! Berth has no scheduler queue to pause: a schedule that comes due starts a task of
//! its kind, and that task waits while the kind's queue is paused (`PUT
//! /jobservice/queues/{job_type}`). So "paused" here is always a statement about job
//! queues, read from the same `job_queues` rows the workers obey. Everything here is
//! for system administrators only, as the rest of the dashboard is.

use std::collections::BTreeSet;

use axum::extract::{OriginalUri, State};
use axum::response::{IntoResponse, Response};
use berth_events::jobs::queues;
use berth_events::schedules::{self, Schedule};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorsBody};
use super::extract::{ApiPath, ApiQuery, Caller};
use super::harbor_time;
use super::jobservice::{database_kinds, parse_kind, ALL};
use super::json::JsonBody;
use super::pagination::{paged, PageParams};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_schedules))
        .routes(routes!(get_schedule_paused))
}

/// Harbor's `ScheduleTask`, with Berth's `kind`, `enabled`, `next_run_at` and
/// `last_run_at`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleTask {
    pub id: i64,
    /// The worker kind in upper case, as Harbor writes vendor types (`GC`).
    pub vendor_type: String,
    /// What the schedule belongs to (a replication policy id); 0 for none.
    pub vendor_id: i64,
    /// The cron expression as it was given (UTC; 5, 6 or 7 fields, or `@daily`).
    pub cron: String,
    /// When the schedule last changed: created, edited, switched, or fired.
    pub update_time: String,
    /// Berth: the worker kind each firing starts a task of (`echo`, `replicate`, `scan`, `gc`).
    pub kind: String,
    /// Berth: a disabled schedule does not fire.
    pub enabled: bool,
    /// Berth: the next due time.
    pub next_run_at: String,
    /// Berth: the due time it last fired for; absent until it has fired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<String>,
}

impl From<Schedule> for ScheduleTask {
    fn from(s: Schedule) -> ScheduleTask {
        ScheduleTask {
            id: s.id,
            vendor_type: s.kind.to_uppercase(),
            vendor_id: s.vendor_id,
            cron: s.cron,
            update_time: harbor_time(s.updated_at),
            kind: s.kind,
            enabled: s.enabled,
            next_run_at: harbor_time(s.next_run_at),
            last_run_at: s.last_run_at.map(harbor_time),
        }
    }
}

/// Harbor's `SchedulerStatus`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchedulerStatus {
    /// Whether scheduled work of the job type is held: see `GET /schedules/{job_type}/paused`.
    pub paused: bool,
}

/// Every schedule, by id. Harbor takes only `page` and `page_size` here.
#[utoipa::path(
    get,
    path = "/schedules",
    tag = "schedule",
    operation_id = "listSchedules",
    params(PageParams),
    responses(
        (status = 200, description = "One page of schedules", body = [ScheduleTask],
         headers(("X-Total-Count" = i64, description = "Schedules over all pages"),
                 ("Link" = String, description = "prev/next pages"))),
        (status = 401, description = "No credentials", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 422, description = "page or page_size out of range", body = ErrorsBody),
    )
)]
async fn list_schedules(
    State(state): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(paging): ApiQuery<PageParams>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let page = paging.validate()?;
    // One row per policy that has a schedule (replication, scan-all, GC): few enough
    // to page in memory, which keeps the one listing query in `berth_events`.
    let all = schedules::list(&state.db, None).await?;
    let total = i64::try_from(all.len()).unwrap_or(i64::MAX);
    let skip = usize::try_from(page.offset()).unwrap_or(usize::MAX);
    let take = usize::try_from(page.limit()).unwrap_or(usize::MAX);
    let items: Vec<ScheduleTask> = all
        .into_iter()
        .skip(skip)
        .take(take)
        .map(ScheduleTask::from)
        .collect();
    Ok(paged(&uri, page, total, items))
}

/// Whether scheduled work of a job type is held.
///
/// A worker kind (`echo`, `gc`, …): whether its queue is paused, so that the tasks its
/// schedules start wait (the schedules themselves still come due and fire, once each,
/// and their tasks run on resume). 404 for a kind Berth knows nothing of (no queue,
/// schedule, worker, pending task or unfinished execution), which is most often a typo.
///
/// `all` (any case, as in Harbor, which accepts nothing else): whether every kind Berth
/// knows of is paused, which is what `PUT /jobservice/queues/all {"action":"pause"}`
/// achieves and `resume` undoes. It counts the kinds of schedules too, so a schedule
/// whose kind is not paused makes the answer `false`: its runs would start.
///
/// Harbor answers this to any authenticated caller; Berth, like the rest of the
/// dashboard, to system administrators.
#[utoipa::path(
    get,
    path = "/schedules/{job_type}/paused",
    tag = "schedule",
    operation_id = "getSchedulePaused",
    params(("job_type" = String, Path, description = "A worker kind, or `all` for every kind")),
    responses(
        (status = 200, description = "Whether it is paused", body = SchedulerStatus),
        (status = 400, description = "A malformed job type", body = ErrorsBody),
        (status = 401, description = "No credentials", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 404, description = "No such job type", body = ErrorsBody),
    )
)]
async fn get_schedule_paused(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(job_type): ApiPath<String>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let is_all = job_type.eq_ignore_ascii_case(ALL);
    let kind = if is_all {
        None
    } else {
        Some(parse_kind(&job_type)?)
    };
    // PostgreSQL's kinds only: a kind JetStream alone knows (a consumer, and nothing
    // else anywhere) has nothing that could start, so leaving it out changes no answer
    // that matters, and the answer does not depend on NATS.
    let known = database_kinds(&state).await?;
    let paused: BTreeSet<String> = queues::paused_kinds(&state.db).await?.into_iter().collect();
    let answer = match kind {
        // Never vacuous: the manually startable kinds are always known.
        None => known.iter().all(|k| paused.contains(k)),
        Some(kind) if known.contains(kind) => paused.contains(kind),
        Some(kind) => {
            return Err(ApiError::not_found(format!("job type {kind} not found")));
        }
    };
    Ok(JsonBody(SchedulerStatus { paused: answer }).into_response())
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_schedule_reads_as_harbors_schedule_task() {
        let schedule = Schedule {
            id: 7,
            kind: "gc".into(),
            vendor_id: 3,
            cron: "0 3 * * *".into(),
            payload: serde_json::json!({}),
            enabled: true,
            next_run_at: at("2025-01-02T03:00:00Z"),
            last_run_at: None,
            created_at: at("2025-01-01T00:00:00Z"),
            updated_at: at("2025-01-01T10:00:00Z"),
        };
        let body = serde_json::to_value(ScheduleTask::from(schedule)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "id": 7, "vendor_type": "GC", "vendor_id": 3, "cron": "0 3 * * *",
                "update_time": "2025-01-01T10:00:00.000Z", "kind": "gc", "enabled": true,
                "next_run_at": "2025-01-02T03:00:00.000Z",
            })
        );
    }
}
