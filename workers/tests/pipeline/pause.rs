//! Pausing a queue stops its tasks from starting and resuming lets them flow; the
//! job-service dashboard reports the true pending count and the live worker processes.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{check, eventually, Pipeline, WorkerOptions, DEADLINE};

/// The pids `GET /jobservice/pools` lists.
fn pool_pids(pools: &Value) -> BTreeSet<u32> {
    pools
        .as_array()
        .unwrap_or_else(|| panic!("pools is an array: {pools}"))
        .iter()
        .map(|pool| {
            pool["pid"]
                .as_u64()
                .and_then(|pid| u32::try_from(pid).ok())
                .unwrap_or_else(|| panic!("a pool without a pid: {pool}"))
        })
        .collect()
}

#[tokio::test]
async fn a_paused_queue_starts_nothing_until_resumed_and_the_dashboard_tells_the_truth() {
    let mut p = Pipeline::start().await;
    p.start_workers(2, WorkerOptions::default()).await;

    let pids: BTreeSet<u32> = p.live_worker_pids().into_iter().collect();
    assert_eq!(
        pool_pids(&p.api.pools().await),
        pids,
        "both live workers are pools"
    );

    p.api.queue_action("echo", "pause").await;
    assert_eq!(p.api.queue("echo").await["paused"], true);
    // The bound for a pause to reach every worker is a second; give it more.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let execution = p
        .api
        .create_execution("echo", vec![json!({"sleep_ms": 0}); 5])
        .await;
    eventually(
        "the five tasks are pending in the queue",
        DEADLINE,
        || async {
            let queue = p.api.queue("echo").await;
            check(queue["count"] == 5, queue)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for task in p.tasks(execution).await {
        assert_eq!(
            (task.status.as_str(), task.attempts),
            ("pending", 0),
            "nothing starts while the queue is paused: {task:?}"
        );
    }
    let queue = p.api.queue("echo").await;
    assert_eq!(queue["count"], 5, "{queue}");
    assert_eq!(queue["paused"], true, "{queue}");

    p.api.queue_action("echo", "resume").await;
    let tasks = p.wait_tasks_final(execution, DEADLINE).await;
    for task in &tasks {
        assert_eq!(task.status, "succeeded", "{task:?}");
        assert_eq!(task.attempts, 1, "{task:?}");
    }
    let queue = p.api.queue("echo").await;
    assert_eq!(queue["paused"], false, "{queue}");
    assert_eq!(queue["count"], 0, "{queue}");

    // A worker that leaves is no longer listed; the other still is.
    let gone = p.workers[0].pid();
    assert!(
        p.stop_worker(0, Duration::from_secs(30)).await,
        "worker drains and exits on SIGTERM"
    );
    let remaining: BTreeSet<u32> = p.live_worker_pids().into_iter().collect();
    assert!(!remaining.contains(&gone));
    eventually("the stopped worker leaves the pools", DEADLINE, || async {
        let listed = pool_pids(&p.api.pools().await);
        check(listed == remaining, format!("{listed:?}"))
    })
    .await;
}
