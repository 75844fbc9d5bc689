//! Messages the server stops delivering by itself, against a real nats-server and
//! PostgreSQL: a worker that dies on every delivery (here: fetches and never acks)
//! exhausts the server's `max_deliver`; the advisory listener of another process must
//! then dead-letter the message, fail its task and remove it from the jobs stream.

mod support;

use std::time::Duration;

use async_nats::jetstream::{self, stream::RawMessageErrorKind};
use berth_events::config::{ConsumerConfig, PipelineConfig};
use berth_events::jobs::{executions, tasks, ExecutionStatus, TaskStatus};
use berth_events::runtime::{advisory, dead_letter, Runtime};
use berth_events::testing::{NatsServer, TestDatabase};
use berth_events::{streams, subject, ArtifactRef, Envelope, Event};
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use support::{dead_letters, eventually, header, manual_execution, queued_task};

const KIND: &str = "echo";
const WAIT: Duration = Duration::from_secs(60);

/// Waits until someone listens on `subject`: a request finds no responders until the
/// listener subscribed, and times out after (the listener never answers). The payload
/// is not an advisory, so the listener must also survive it.
async fn wait_for_listener(client: &async_nats::Client, subject: &str) {
    eventually(WAIT, &format!("a listener on {subject}"), || async {
        let request = async_nats::Request::new()
            .payload("{not an advisory".into())
            .timeout(Some(Duration::from_millis(300)));
        match client.send_request(subject.to_owned(), request).await {
            Err(e) if e.kind() == async_nats::RequestErrorKind::TimedOut => Some(()),
            _ => None,
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_the_server_gives_up_on_are_dead_lettered_and_their_tasks_failed() {
    let nats = NatsServer::start().await;
    let db = TestDatabase::create().await;
    let client = nats.client().await;
    let js = jetstream::new(client.clone());
    streams::provision(&js, &Default::default())
        .await
        .expect("provision");
    let runtime = Runtime::new(
        client.clone(),
        js.clone(),
        db.pool.clone(),
        PipelineConfig::default(),
        uuid::Uuid::new_v4(),
        "/berth/test",
    );
    let stop = CancellationToken::new();
    let listener = tokio::spawn({
        let runtime = runtime.clone();
        let stop = stop.clone();
        async move { runtime.run_advisories(stop).await }
    });
    let jobs_advisories = advisory::JOBS_SUBJECT.replace('*', KIND);
    let events_advisories = advisory::EVENTS_SUBJECT.replace('*', "probe");
    wait_for_listener(&client, &jobs_advisories).await;
    wait_for_listener(&client, &events_advisories).await;

    // An advisory about a message no longer there changes nothing.
    client
        .publish(
            jobs_advisories.clone(),
            json!({"stream": "BERTH_JOBS", "consumer": KIND, "stream_seq": 999, "deliveries": 2})
                .to_string()
                .into(),
        )
        .await
        .expect("publish");

    // An events-stream message given up by consumer "probe" (advisory written by hand):
    // dead-lettered, but left in the stream for the stream's other consumers.
    let event = Event::ArtifactDeleted {
        artifact: ArtifactRef {
            project: "team".into(),
            repository: "team/app".into(),
            digest: "sha256:abc".into(),
        },
        actor: "a".into(),
    };
    let event_seq = js
        .publish(
            subject::for_event(&event),
            serde_json::to_vec(&Envelope::new(&event, "/t"))
                .expect("json")
                .into(),
        )
        .await
        .expect("publish")
        .await
        .expect("publish ack")
        .sequence;
    client
        .publish(
            events_advisories.clone(),
            json!({
                "type": "io.nats.jetstream.advisory.v1.max_deliver",
                "stream": "BERTH_EVENTS", "consumer": "probe",
                "stream_seq": event_seq, "deliveries": 3
            })
            .to_string()
            .into(),
        )
        .await
        .expect("publish");
    let probe = eventually(WAIT, "the event's dead letter", || async {
        dead_letters(&js)
            .await
            .into_iter()
            .find(|(s, _, _)| s == "berth.dead.probe")
    })
    .await;
    assert_eq!(
        header(&probe.1, dead_letter::HEADER_REASON),
        advisory::reason(3)
    );
    assert_eq!(
        header(&probe.1, dead_letter::HEADER_STREAM_SEQUENCE),
        event_seq.to_string()
    );
    js.get_stream_no_info(streams::EVENTS_STREAM)
        .await
        .expect("events stream")
        .get_raw_message(event_seq)
        .await
        .expect("the event stays in the events stream");

    // A task, and its message on the jobs stream.
    let execution = manual_execution(&db.pool, KIND).await;
    let task_id = queued_task(&db.pool, &js, execution, KIND, "abandoned", json!({})).await;

    // The kind's consumer as the runtime provisions it: runtime limit 1, so the
    // server's own limit is 2 deliveries, each held 1 s.
    let consumer_config = ConsumerConfig {
        ack_wait_secs: 1,
        max_deliver: 1,
        backoff_secs: Vec::new(),
        ..ConsumerConfig::default()
    };
    let consumer = streams::ensure_consumer(
        &js,
        streams::JOBS_STREAM,
        &streams::jobs_consumer_name(KIND),
        &subject::jobs_of_kind(KIND),
        &consumer_config,
    )
    .await
    .expect("consumer");
    assert_eq!(
        streams::consumer_config(KIND, "x", &consumer_config).max_deliver,
        2
    );

    // A worker that starts the task on every delivery and dies before acking: keeps
    // pulling (as its replacements would) and records what it gets.
    let dying_stop = CancellationToken::new();
    let dying = tokio::spawn({
        let stop = dying_stop.clone();
        let pool = db.pool.clone();
        async move {
            let worker = uuid::Uuid::new_v4();
            let mut deliveries = Vec::new();
            while !stop.is_cancelled() {
                let Ok(mut batch) = consumer
                    .batch()
                    .max_messages(1)
                    .expires(Duration::from_secs(1))
                    .messages()
                    .await
                else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                while let Some(Ok(message)) = batch.next().await {
                    let info = message.info().expect("JetStream metadata");
                    deliveries.push((info.stream_sequence, info.delivered));
                    tasks::begin(&pool, task_id, worker).await.expect("begin");
                    // …and dies: no ack, no nak, no heartbeat.
                }
            }
            deliveries
        }
    });

    let task = eventually(WAIT, "the abandoned task to fail", || async {
        let task = tasks::get(&db.pool, task_id)
            .await
            .expect("get task")
            .expect("task exists");
        (task.status == TaskStatus::Failed).then_some(task)
    })
    .await;
    dying_stop.cancel();
    let deliveries = dying.await.expect("no panic");
    assert_eq!(deliveries.len(), 2, "the server's limit: {deliveries:?}");
    let job_seq = deliveries[0].0;
    assert!(deliveries.iter().all(|(seq, _)| *seq == job_seq));
    assert_eq!(deliveries[1].1, 2);

    let reason = advisory::reason(2);
    assert_eq!(task.status_message, reason);
    assert_eq!(task.attempts, 2);
    let log = tasks::log(&db.pool, task_id)
        .await
        .expect("log")
        .expect("row");
    assert!(log.contains(&format!("failed: {reason}")), "{log}");
    let execution = executions::get(&db.pool, execution)
        .await
        .expect("get execution")
        .expect("execution exists");
    assert_eq!(execution.status, ExecutionStatus::Failed);

    let dead = dead_letters(&js).await;
    let (_, headers, payload) = dead
        .iter()
        .find(|(s, _, _)| s == "berth.dead.echo")
        .expect("the task message is dead-lettered");
    assert_eq!(header(headers, dead_letter::HEADER_REASON), reason);
    assert_eq!(header(headers, dead_letter::HEADER_CONSUMER), KIND);
    assert_eq!(
        header(headers, dead_letter::HEADER_SUBJECT),
        "berth.jobs.echo.default"
    );
    assert_eq!(
        header(headers, dead_letter::HEADER_STREAM_SEQUENCE),
        job_seq.to_string()
    );
    assert_eq!(header(headers, dead_letter::HEADER_DELIVERIES), "2");
    let envelope = Envelope::parse(payload).expect("the original envelope");
    assert!(matches!(
        envelope.event(),
        Ok(Event::JobRequested { job }) if job.task_id == task_id
    ));
    assert_eq!(dead.len(), 2, "the probe and the task, nothing else");

    // The work queue no longer holds it.
    let jobs = js
        .get_stream_no_info(streams::JOBS_STREAM)
        .await
        .expect("jobs stream");
    eventually(WAIT, "the message to leave the jobs stream", || async {
        match jobs.get_raw_message(job_seq).await {
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Some(()),
            _ => None,
        }
    })
    .await;
    let stream = js
        .get_stream(streams::JOBS_STREAM)
        .await
        .expect("jobs stream info");
    assert_eq!(stream.cached_info().state.messages, 0);

    eventually(WAIT, "the counter", || async {
        (runtime.stats().abandoned == 2).then_some(())
    })
    .await;
    assert_eq!(runtime.stats().dead_lettered, 0, "the runtime's own count");

    stop.cancel();
    tokio::time::timeout(WAIT, listener)
        .await
        .expect("the listener stops")
        .expect("no panic");
}
