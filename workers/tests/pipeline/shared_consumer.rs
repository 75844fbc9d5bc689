//! Three worker processes share one consumer: `max_ack_pending` is enforced by the
//! server across all of them, so it is a global concurrency cap, while the work still
//! spreads over the processes.

use std::collections::BTreeSet;

use serde_json::json;

use crate::harness::{Pipeline, TaskRow, WorkerOptions, DEADLINE};

const GLOBAL_CAP: usize = 2;
const TASKS: usize = 30;

/// The largest number of tasks whose [started_at, ended_at] intervals overlap. An end
/// and a start at the same instant do not overlap.
fn max_overlap(tasks: &[TaskRow]) -> usize {
    let mut edges = Vec::new();
    for t in tasks {
        let (Some(start), Some(end)) = (t.started_at, t.ended_at) else {
            panic!("a finished task without start or end: {t:?}");
        };
        edges.push((start, 1i32));
        edges.push((end, -1i32));
    }
    // At equal instants ends (-1) sort before starts (+1).
    edges.sort();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, delta) in edges {
        now += delta;
        max = max.max(now);
    }
    max as usize
}

#[tokio::test]
async fn three_workers_never_run_more_than_max_ack_pending_tasks_at_once() {
    let mut p = Pipeline::start().await;
    p.start_workers(
        3,
        WorkerOptions {
            concurrency: 4,
            max_ack_pending: GLOBAL_CAP as i64,
            ..WorkerOptions::default()
        },
    )
    .await;
    let execution = p
        .api
        .create_execution("echo", vec![json!({"sleep_ms": 300}); TASKS])
        .await;
    let tasks = p.wait_tasks_final(execution, DEADLINE).await;
    for t in &tasks {
        assert_eq!(t.status, "succeeded", "{t:?}");
        assert_eq!(t.attempts, 1, "{t:?}");
    }
    let workers: BTreeSet<_> = tasks.iter().filter_map(|t| t.worker_id).collect();
    assert!(
        workers.len() > 1,
        "the tasks spread over the worker processes: all ran on {workers:?}"
    );
    // The runtime records a task's end before it acks, and the server delivers the
    // next message only after an ack: the database's intervals show the server's cap.
    let overlap = max_overlap(&tasks);
    assert!(
        overlap <= GLOBAL_CAP,
        "{overlap} tasks ran at once with max_ack_pending {GLOBAL_CAP}"
    );
    eprintln!(
        "{} tasks over {} workers, at most {overlap} at once",
        tasks.len(),
        workers.len()
    );
}
