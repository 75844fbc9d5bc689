//! Poison never blocks a queue: bad JSON, an envelope of an unknown type and a task
//! whose handler fails permanently each land in the dead-letter stream with their
//! reason, and the messages behind them are handled as usual.

use serde_json::json;

use berth_events::{Envelope, Event};

use crate::harness::{
    check, eventually, DeadLetter, Pipeline, WorkerOptions, DEADLINE, ECHO_CONSUMER,
    ECHO_EVENTS_CONSUMER, EVENTS_STREAM, JOBS_STREAM,
};

/// A CloudEvents envelope, valid in every respect but its type.
fn unknown_type_envelope(id: uuid::Uuid) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "specversion": "1.0",
        "id": id,
        "source": "/berth/tests",
        "type": "io.berth.nothing.happened.v1",
        "time": "2025-01-01T00:00:00Z",
        "subject": "nothing",
        "datacontenttype": "application/json",
        "data": {},
    }))
    .unwrap()
}

/// The task id of a dead letter that carries a job envelope.
fn dead_task_id(dead: &DeadLetter) -> Option<i64> {
    match Envelope::parse(&dead.payload).ok()?.event().ok()? {
        Event::JobRequested { job } => Some(job.task_id),
        _ => None,
    }
}

#[tokio::test]
async fn poison_is_dead_lettered_with_its_reason_and_the_queue_keeps_flowing() {
    let mut p = Pipeline::start().await;
    p.start_worker(WorkerOptions::default()).await;
    let js = p.jetstream().await;

    // Poison first, so the good messages queue behind it.
    let subject = "berth.jobs.echo.default";
    let unknown_id = uuid::Uuid::new_v4();
    for payload in [b"{not json".to_vec(), unknown_type_envelope(unknown_id)] {
        js.publish(subject, payload.into())
            .await
            .expect("publish")
            .await
            .expect("publish ack");
    }
    js.publish(
        "berth.events.artifact.pushed.team.app",
        b"not an event".to_vec().into(),
    )
    .await
    .expect("publish")
    .await
    .expect("publish ack");

    let mut tasks = vec![json!({"fail": "permanent"})];
    tasks.extend((0..5).map(|_| json!({"sleep_ms": 0})));
    let execution = p.api.create_execution("echo", tasks).await;
    // An event behind the poisoned one still starts its execution.
    p.registry.push_index("team/app", "behind the poison").await;

    let tasks = p.wait_tasks_final(execution, DEADLINE).await;
    let permanent = &tasks[0];
    assert_eq!(permanent.status, "failed", "{permanent:?}");
    assert_eq!(permanent.attempts, 1, "a permanent failure is not retried");
    assert!(
        !permanent.status_message.is_empty(),
        "the failed task says why: {permanent:?}"
    );
    for task in &tasks[1..] {
        assert_eq!(task.status, "succeeded", "{task:?}");
        assert_eq!(task.attempts, 1, "{task:?}");
    }
    eventually(
        "the pushed event behind the poison starts its execution",
        DEADLINE,
        || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM executions WHERE kind = 'echo' AND trigger = 'event'",
            )
            .fetch_one(&p.db)
            .await
            .map_err(|e| e.to_string())?;
            check(n == 1, format!("{n} executions"))
        },
    )
    .await;

    let dead = eventually("four dead letters", DEADLINE, || async {
        let dead = p.dead_letters().await;
        check(dead.len() >= 4, format!("{dead:?}"))?;
        Ok(dead)
    })
    .await;
    assert_eq!(dead.len(), 4, "{dead:?}");
    for d in &dead {
        assert!(
            !d.reason.is_empty(),
            "a dead letter without a reason: {d:?}"
        );
    }
    let jobs_dead: Vec<&DeadLetter> = dead
        .iter()
        .filter(|d| d.subject == "berth.dead.echo")
        .collect();
    assert_eq!(jobs_dead.len(), 3, "{dead:?}");
    for d in &jobs_dead {
        assert_eq!(d.original_subject, subject, "{d:?}");
    }
    assert!(
        jobs_dead.iter().any(|d| d.payload == b"{not json"),
        "bad JSON is dead-lettered as it came: {dead:?}"
    );
    assert!(
        jobs_dead
            .iter()
            .any(|d| d.payload == unknown_type_envelope(unknown_id)),
        "the unknown type is dead-lettered as it came: {dead:?}"
    );
    let failed: Vec<&&DeadLetter> = jobs_dead
        .iter()
        .filter(|d| dead_task_id(d) == Some(permanent.id))
        .collect();
    assert_eq!(failed.len(), 1, "the permanent failure, once: {dead:?}");
    assert_eq!(failed[0].deliveries, "1", "{dead:?}");
    // The handler's own words reach both the task and the dead letter.
    assert!(failed[0].reason.contains("permanent"), "{dead:?}");
    assert!(
        permanent.status_message.contains("permanent"),
        "{permanent:?}"
    );

    let events_dead: Vec<&DeadLetter> = dead
        .iter()
        .filter(|d| d.subject == format!("berth.dead.{ECHO_EVENTS_CONSUMER}"))
        .collect();
    assert_eq!(events_dead.len(), 1, "{dead:?}");
    assert_eq!(events_dead[0].payload, b"not an event");
    assert_eq!(
        events_dead[0].original_subject,
        "berth.events.artifact.pushed.team.app"
    );

    // Nothing is stuck: every message was acked or terminated.
    for (stream, consumer) in [
        (JOBS_STREAM, ECHO_CONSUMER),
        (EVENTS_STREAM, ECHO_EVENTS_CONSUMER),
    ] {
        eventually(
            &format!("{consumer} has nothing pending"),
            DEADLINE,
            || async {
                let info = p.consumer_info(stream, consumer).await?;
                check(
                    info.num_ack_pending == 0 && info.num_pending == 0,
                    format!("{info:?}"),
                )
            },
        )
        .await;
    }
}
