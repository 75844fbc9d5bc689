//! Stopping an execution through the API: its running tasks are cancelled, its queued
//! ones skipped without running, and it reaches `Stopped` within seconds, with no
//! database surgery and no queue flushing.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{
    check, eventually, Pipeline, WorkerOptions, DEADLINE, ECHO_CONSUMER, JOBS_STREAM,
};

const BLOCKING: usize = 4;
const QUEUED: usize = 500;

#[tokio::test]
async fn stopping_an_execution_cancels_running_tasks_and_skips_queued_ones() {
    let mut p = Pipeline::start().await;
    // Four in flight at most: the blocking tasks take every slot and the other 500
    // wait in the stream behind them.
    p.start_worker(WorkerOptions {
        concurrency: BLOCKING,
        max_ack_pending: BLOCKING as i64,
        ..WorkerOptions::default()
    })
    .await;
    let mut payloads = vec![json!({"block": true}); BLOCKING];
    payloads.extend(std::iter::repeat_n(json!({"sleep_ms": 0}), QUEUED));
    let execution = p.api.create_execution("echo", payloads).await;

    eventually("the blocking tasks run", DEADLINE, || async {
        let statuses = p.task_statuses(execution).await;
        check(
            statuses.get("running") == Some(&(BLOCKING as i64)),
            format!("{statuses:?}"),
        )
    })
    .await;
    // Everything else is queued: published (the relay has caught up) and not started.
    eventually(
        "the other tasks are queued in the stream",
        DEADLINE,
        || async {
            let info = p.consumer_info(JOBS_STREAM, ECHO_CONSUMER).await?;
            check(
                info.num_pending == QUEUED as u64 && info.num_ack_pending == BLOCKING,
                format!("{info:?}"),
            )
        },
    )
    .await;
    let tasks = p.tasks(execution).await;
    for (i, task) in tasks.iter().enumerate() {
        let (expected, blocks) = if i < BLOCKING {
            ("running", true)
        } else {
            ("pending", false)
        };
        assert_eq!(task.status, expected, "{task:?}");
        assert_eq!(task.payload["block"] == true, blocks, "{task:?}");
    }

    let stop_time = p.db_now().await;
    let asked = Instant::now();
    p.api.stop_execution(execution).await;
    eventually(
        "the execution is Stopped",
        Duration::from_secs(10),
        || async {
            let e = p.api.execution(execution).await;
            check(e["status"] == "Stopped", e)
        },
    )
    .await;
    let took = asked.elapsed();

    let tasks = p.wait_tasks_final(execution, DEADLINE).await;
    for (i, task) in tasks.iter().enumerate() {
        if i < BLOCKING {
            assert_eq!(task.status, "cancelled", "{task:?}");
            assert_eq!(task.attempts, 1, "{task:?}");
            let started = task.started_at.expect("a cancelled task had started");
            assert!(started < stop_time, "{task:?}");
            assert!(task.ended_at.is_some(), "{task:?}");
        } else {
            assert_eq!(task.status, "skipped", "{task:?}");
            // No handler ran after the stop: a skipped task never started an attempt.
            assert_eq!(task.attempts, 0, "{task:?}");
            assert_eq!(task.started_at, None, "{task:?}");
        }
    }
    let execution_json = p.api.execution(execution).await;
    let metrics = &execution_json["metrics"];
    assert_eq!(metrics["task_count"], BLOCKING + QUEUED, "{execution_json}");
    assert_eq!(
        metrics["stopped_task_count"],
        BLOCKING + QUEUED,
        "{execution_json}"
    );
    assert_eq!(metrics["success_task_count"], 0, "{execution_json}");

    // The queued messages drain as skips: nobody flushed the queue.
    eventually("the jobs queue drains", DEADLINE, || async {
        let info = p.consumer_info(JOBS_STREAM, ECHO_CONSUMER).await?;
        check(
            info.num_pending == 0 && info.num_ack_pending == 0,
            format!("{info:?}"),
        )
    })
    .await;
    let tasks = p.tasks(execution).await;
    assert!(
        tasks[BLOCKING..]
            .iter()
            .all(|t| t.attempts == 0 && t.started_at.is_none()),
        "no queued task ran after the stop"
    );
    eprintln!("stop request to Stopped: {took:?}");
}
