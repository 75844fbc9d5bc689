//! Transient failures are retried with growing delays until `max_deliver`, then the
//! task fails and its message is dead-lettered; a task that fails a few times and then
//! succeeds ends succeeded.

use chrono::{DateTime, Utc};
use serde_json::json;

use berth_events::{Envelope, Event};

use crate::harness::{Pipeline, TaskRow, WorkerOptions, DEADLINE};

const MAX_DELIVER: i64 = 4;
const RETRY_INITIAL_MS: f64 = 300.0;
const RETRY_MULTIPLIER: f64 = 2.0;
const RETRY_JITTER: f64 = 0.1;

/// When each attempt started, from the task log's `attempt N started` lines.
fn attempt_starts(task: &TaskRow) -> Vec<(i32, DateTime<Utc>)> {
    task.log
        .lines()
        .filter_map(|line| {
            let (stamp, rest) = line.split_once(' ')?;
            let attempt = rest.strip_prefix("attempt ")?;
            let (n, rest) = attempt.split_once(' ')?;
            if !rest.starts_with("started") {
                return None;
            }
            let at = DateTime::parse_from_rfc3339(stamp)
                .ok()?
                .with_timezone(&Utc);
            Some((n.parse().ok()?, at))
        })
        .collect()
}

/// Asserts that the attempts of `task` are numbered 1..=n and each waited at least
/// the smallest jittered delay after the one before (lower bounds only: a loaded
/// machine may always be slower).
fn assert_backoff(task: &TaskRow, attempts: i32) {
    let starts = attempt_starts(task);
    let numbers: Vec<i32> = starts.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        numbers,
        (1..=attempts).collect::<Vec<_>>(),
        "one log line per attempt:\n{}",
        task.log
    );
    for (i, pair) in starts.windows(2).enumerate() {
        let gap = (pair[1].1 - pair[0].1).num_milliseconds() as f64;
        let nominal = RETRY_INITIAL_MS * RETRY_MULTIPLIER.powi(i as i32);
        // Log stamps are truncated to milliseconds: 1 ms of slack for that alone.
        let least = nominal * (1.0 - RETRY_JITTER) - 1.0;
        assert!(
            gap >= least,
            "attempt {} started {gap} ms after attempt {}, sooner than the backoff's {least} ms:\n{}",
            i + 2,
            i + 1,
            task.log
        );
    }
}

#[tokio::test]
async fn transient_failures_back_off_with_growing_delays_until_max_deliver() {
    let mut p = Pipeline::start().await;
    p.start_worker(WorkerOptions {
        max_deliver: MAX_DELIVER,
        retry_initial_ms: RETRY_INITIAL_MS as u64,
        retry_multiplier: RETRY_MULTIPLIER,
        retry_jitter: RETRY_JITTER,
        ..WorkerOptions::default()
    })
    .await;
    let execution = p
        .api
        .create_execution(
            "echo",
            vec![json!({"fail": "transient"}), json!({"fail_times": 2})],
        )
        .await;
    let tasks = p.wait_tasks_final(execution, DEADLINE).await;

    let always = &tasks[0];
    assert_eq!(always.status, "failed", "{always:?}");
    assert_eq!(
        always.attempts, MAX_DELIVER as i32,
        "max_deliver is honoured"
    );
    assert!(!always.status_message.is_empty(), "{always:?}");
    assert_backoff(always, MAX_DELIVER as i32);

    let twice = &tasks[1];
    assert_eq!(twice.status, "succeeded", "{twice:?}");
    assert_eq!(twice.attempts, 3, "succeeds on attempt 3");
    assert_backoff(twice, 3);

    let dead = p.dead_letters().await;
    assert_eq!(dead.len(), 1, "only the task that gave up: {dead:?}");
    assert_eq!(dead[0].deliveries, MAX_DELIVER.to_string(), "{dead:?}");
    assert!(!dead[0].reason.is_empty(), "{dead:?}");
    let envelope = Envelope::parse(&dead[0].payload).expect("the original job message");
    match envelope.event() {
        Ok(Event::JobRequested { job }) => assert_eq!(job.task_id, always.id),
        other => panic!("not the job message: {other:?}"),
    }

    let execution = p.api.execution(execution).await;
    assert_eq!(execution["status"], "Error", "{execution}");
    assert_eq!(execution["metrics"]["error_task_count"], 1, "{execution}");
    assert_eq!(execution["metrics"]["success_task_count"], 1, "{execution}");
}
