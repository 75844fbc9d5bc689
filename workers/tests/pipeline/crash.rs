//! A worker killed with SIGKILL in the middle of a task: JetStream redelivers the task
//! after `ack_wait`, another worker completes it once, and the task row counts two
//! attempts.

use serde_json::json;

use crate::harness::{
    check, eventually, Pipeline, WorkerOptions, DEADLINE, ECHO_CONSUMER, JOBS_STREAM,
};

#[tokio::test]
async fn a_task_of_a_killed_worker_is_redelivered_and_completes_once() {
    let mut p = Pipeline::start().await;
    // The task outlives ack_wait twice over: only heartbeats keep an attempt's message
    // from being redelivered while its worker lives, so a third attempt would show
    // that they failed.
    let options = WorkerOptions {
        ack_wait_secs: 2,
        ..WorkerOptions::default()
    };
    let first = p.start_worker(options.clone()).await;
    let execution = p
        .api
        .create_execution("echo", vec![json!({"sleep_ms": 4000})])
        .await;
    let task_id = p.tasks(execution).await[0].id;

    eventually("the task runs on the first worker", DEADLINE, || async {
        let task = p.task(task_id).await;
        check(
            task.status == "running" && task.attempts == 1,
            format!("{} after {} attempts", task.status, task.attempts),
        )
    })
    .await;
    p.kill_worker(first);

    let second = p.start_worker(options).await;
    let second_pid = i32::try_from(p.workers[second].pid()).unwrap();
    let second_id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM worker_processes WHERE pid = $1")
            .bind(second_pid)
            .fetch_one(&p.db)
            .await
            .expect("the second worker is registered");

    let task = eventually("the task completes", DEADLINE, || async {
        let task = p.task(task_id).await;
        check(
            task.status != "pending" && task.status != "running",
            format!("{} after {} attempts", task.status, task.attempts),
        )?;
        Ok(task)
    })
    .await;
    assert_eq!(task.status, "succeeded", "{task:?}");
    assert_eq!(task.attempts, 2, "{task:?}");
    assert_eq!(
        task.worker_id,
        Some(second_id),
        "the second worker completed it"
    );

    // Completed once: the message is acked and gone, nothing is left to redeliver.
    eventually("the jobs stream is empty", DEADLINE, || async {
        let info = p.consumer_info(JOBS_STREAM, ECHO_CONSUMER).await?;
        check(
            info.num_ack_pending == 0 && info.num_pending == 0,
            format!("{info:?}"),
        )
    })
    .await;
    assert_eq!(p.stream_count(JOBS_STREAM).await, Ok(0));
    let execution = p.api.execution(execution).await;
    assert_eq!(execution["status"], "Success", "{execution}");
    assert_eq!(execution["metrics"]["success_task_count"], 1, "{execution}");
    assert_eq!(execution["metrics"]["task_count"], 1, "{execution}");
    let tasks = p
        .api
        .execution_tasks(execution["id"].as_i64().unwrap())
        .await;
    assert_eq!(tasks[0]["run_count"], 2, "{tasks}");
    assert_eq!(tasks[0]["status"], "Success", "{tasks}");
}
