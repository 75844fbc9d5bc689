//! What the integration tests share besides `berth_events::testing` (a nats-server and
//! a database of their own): polling, job state with its messages, and reading the
//! dead letters back.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use async_nats::jetstream;
use berth_events::jobs::{executions, tasks, NewExecution, NewTask, Trigger};
use berth_events::{streams, subject, Envelope, Event, JobRef};
use futures::StreamExt;
use serde_json::json;
use sqlx::PgPool;

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what` after
/// `timeout` (generous: the machine is small and busy).
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A new manual execution of `kind`; returns its id.
pub async fn manual_execution(db: &PgPool, kind: &str) -> i64 {
    let mut conn = db.acquire().await.expect("connection");
    executions::create(
        &mut conn,
        &NewExecution {
            kind,
            vendor_id: 0,
            trigger: Trigger::Manual,
            trigger_key: None,
            extra_attrs: json!({}),
            created_by: "test",
        },
    )
    .await
    .expect("create execution")
    .expect("new execution")
}

/// A task of `execution` with `payload`, and its message published straight to the
/// jobs stream (no relay runs in these tests); returns the task's id.
pub async fn queued_task(
    db: &PgPool,
    js: &jetstream::Context,
    execution: i64,
    kind: &str,
    key: &str,
    payload: serde_json::Value,
) -> i64 {
    let mut tx = db.begin().await.expect("tx");
    let id = tasks::enqueue(
        &mut tx,
        execution,
        kind,
        &NewTask {
            natural_key: key,
            destination: "default",
            payload,
        },
        "/berth/test",
    )
    .await
    .expect("enqueue")
    .expect("new task");
    tx.commit().await.expect("commit");
    let event = Event::JobRequested {
        job: JobRef {
            execution_id: execution,
            task_id: id,
            kind: kind.into(),
            destination: "default".into(),
        },
    };
    let payload = serde_json::to_vec(&Envelope::new(&event, "/t")).expect("json");
    js.publish(subject::for_event(&event), payload.into())
        .await
        .expect("publish")
        .await
        .expect("publish ack");
    id
}

/// The dead letters stored so far: (subject, headers, payload).
pub async fn dead_letters(
    js: &jetstream::Context,
) -> Vec<(String, async_nats::HeaderMap, Vec<u8>)> {
    let stream = js
        .get_stream(streams::DEAD_LETTER_STREAM)
        .await
        .expect("dead letter stream");
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("ephemeral consumer");
    let mut out = Vec::new();
    let mut batch = consumer
        .fetch()
        .max_messages(100)
        .messages()
        .await
        .expect("fetch");
    while let Some(Ok(message)) = batch.next().await {
        out.push((
            message.subject.to_string(),
            message.headers.clone().unwrap_or_default(),
            message.payload.to_vec(),
        ));
    }
    out
}

/// Header `name` of a message ("" when absent).
pub fn header(headers: &async_nats::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}
