//! The consumer runtime in process, against a real nats-server and PostgreSQL: task
//! outcomes and their bookkeeping, retries, dead letters, malformed messages,
//! cancellation (message and poll), pausing, draining, and event consumers.
//!
//! The end-to-end behaviour through the `workers` binary is tested in workers/tests;
//! these tests pin down the runtime itself.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use async_trait::async_trait;
use berth_events::config::{ConsumerConfig, PipelineConfig};
use berth_events::control::{self, Control};
use berth_events::jobs::{queues, tasks, Task, TaskStatus};
use berth_events::runtime::{
    dead_letter, EventContext, EventHandler, Failure, JobHandler, Runtime, TaskContext,
};
use berth_events::testing::{NatsServer, TestDatabase};
use berth_events::{streams, subject, ArtifactRef, Envelope, Event};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use support::{eventually, header};

const KIND: &str = "echo";
const WAIT: Duration = Duration::from_secs(60);

fn pipeline_config() -> PipelineConfig {
    PipelineConfig {
        consumer: ConsumerConfig {
            concurrency: 4,
            ack_wait_secs: 3,
            max_deliver: 3,
            max_ack_pending: 64,
            backoff_secs: Vec::new(),
            retry_initial_ms: 200,
            retry_multiplier: 2.0,
            retry_max_ms: 1_000,
            retry_jitter: 0.1,
        },
        control_poll_ms: 200,
        ..PipelineConfig::default()
    }
}

/// Runs tasks as their payload says; counts how many run at once.
#[derive(Default)]
struct TestJob {
    running: AtomicUsize,
    peak: AtomicUsize,
}

#[async_trait]
impl JobHandler for TestJob {
    async fn run(&self, ctx: &TaskContext) -> Result<(), Failure> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        // Counted down however the handler ends: returned, panicked or dropped.
        let _running = Running(&self.running);
        self.act(ctx).await
    }
}

struct Running<'a>(&'a AtomicUsize);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl TestJob {
    async fn act(&self, ctx: &TaskContext) -> Result<(), Failure> {
        let mode = ctx.task.payload["mode"].as_str().unwrap_or("ok").to_owned();
        match mode.as_str() {
            "ok" => {
                ctx.log("hello from the handler");
                ctx.add_bytes(10);
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(())
            }
            "flaky" => {
                let fail = ctx.task.payload["fail"].as_i64().unwrap_or(0);
                if i64::from(ctx.task.attempts) <= fail {
                    Err(Failure::transient(format!("flake {}", ctx.task.attempts)))
                } else {
                    Ok(())
                }
            }
            "transient" => Err(Failure::transient("still down")),
            "permanent" => Err(Failure::permanent("bad input")),
            "panic" => panic!("boom"),
            // Stops when asked, like a handler that kills its child process.
            "cooperative" => {
                ctx.cancel.cancelled().await;
                Err(Failure::transient("cancelled"))
            }
            // Never looks at the token: the runtime drops it.
            "stubborn" => {
                std::future::pending::<()>().await;
                Ok(())
            }
            other => Err(Failure::permanent(format!("unknown mode {other}"))),
        }
    }
}

/// Succeeds at everything.
struct OkJob;

#[async_trait]
impl JobHandler for OkJob {
    async fn run(&self, _ctx: &TaskContext) -> Result<(), Failure> {
        Ok(())
    }
}

struct Harness {
    nats: NatsServer,
    db: TestDatabase,
    js: jetstream::Context,
    client: async_nats::Client,
    execution: i64,
}

impl Harness {
    async fn start() -> Harness {
        let nats = NatsServer::start().await;
        let db = TestDatabase::create().await;
        let client = nats.client().await;
        let js = jetstream::new(client.clone());
        streams::provision(&js, &Default::default())
            .await
            .expect("provision");
        let execution = support::manual_execution(&db.pool, KIND).await;
        Harness {
            nats,
            db,
            js,
            client,
            execution,
        }
    }

    fn runtime(&self, drain: Duration) -> Runtime {
        Runtime::new(
            self.client.clone(),
            self.js.clone(),
            self.db.pool.clone(),
            pipeline_config(),
            uuid::Uuid::new_v4(),
            "/berth/test",
        )
        .with_drain_timeout(drain)
    }

    /// A task whose payload is `payload`, and its message on the jobs stream.
    async fn task(&self, key: &str, payload: serde_json::Value) -> i64 {
        support::queued_task(&self.db.pool, &self.js, self.execution, KIND, key, payload).await
    }

    async fn publish(&self, subject: &str, payload: Vec<u8>) {
        self.js
            .publish(subject.to_owned(), payload.into())
            .await
            .expect("publish")
            .await
            .expect("publish ack");
    }

    async fn get(&self, id: i64) -> Task {
        tasks::get(&self.db.pool, id)
            .await
            .expect("get task")
            .expect("task exists")
    }

    async fn wait_status(&self, id: i64, status: TaskStatus) -> Task {
        eventually(
            WAIT,
            &format!("task {id} to be {}", status.as_str()),
            || async move {
                let task = self.get(id).await;
                (task.status == status).then_some(task)
            },
        )
        .await
    }

    /// The dead letters stored so far: (subject, headers, payload).
    async fn dead_letters(&self) -> Vec<(String, async_nats::HeaderMap, Vec<u8>)> {
        support::dead_letters(&self.js).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_succeed_retry_fail_and_dead_letter() {
    let h = Harness::start().await;
    let runtime = h.runtime(Duration::from_secs(5));
    let shutdown = CancellationToken::new();
    let handler = Arc::new(TestJob::default());

    let ok = h.task("ok", json!({"mode": "ok"})).await;
    let flaky = h.task("flaky", json!({"mode": "flaky", "fail": 2})).await;
    let transient = h.task("transient", json!({"mode": "transient"})).await;
    let permanent = h.task("permanent", json!({"mode": "permanent"})).await;
    let panics = h.task("panic", json!({"mode": "panic"})).await;
    h.publish("berth.jobs.echo.default", b"{not json".to_vec())
        .await;
    let many: Vec<i64> = {
        let mut ids = Vec::new();
        for i in 0..12 {
            ids.push(h.task(&format!("many-{i}"), json!({"mode": "ok"})).await);
        }
        ids
    };

    let loop_ = tokio::spawn({
        let runtime = runtime.clone();
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        async move { runtime.run_jobs(KIND, handler, shutdown).await }
    });

    let task = h.wait_status(ok, TaskStatus::Succeeded).await;
    assert_eq!(task.attempts, 1);
    assert_eq!(task.bytes, 10);
    let log = tasks::log(&h.db.pool, ok).await.expect("log").expect("row");
    assert!(log.contains("hello from the handler"), "{log}");
    assert!(log.contains("succeeded"), "{log}");

    let task = h.wait_status(flaky, TaskStatus::Succeeded).await;
    assert_eq!(task.attempts, 3, "two transient failures, then success");
    let log = tasks::log(&h.db.pool, flaky)
        .await
        .expect("log")
        .expect("row");
    assert!(
        log.contains("attempt 1 failed: flake 1; retrying in"),
        "{log}"
    );
    // The nak delays are honoured and grow: 200 ms then 400 ms (±10 %). Lower
    // bounds only; a busy machine may add to them.
    let starts: Vec<chrono::DateTime<chrono::Utc>> = log
        .lines()
        .filter(|line| line.contains(" started on worker "))
        .filter_map(|line| line.split(' ').next())
        .filter_map(|stamp| chrono::DateTime::parse_from_rfc3339(stamp).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .collect();
    assert_eq!(starts.len(), 3, "{log}");
    assert!(
        starts[1] - starts[0] >= chrono::Duration::milliseconds(170),
        "{log}"
    );
    assert!(
        starts[2] - starts[1] >= chrono::Duration::milliseconds(350),
        "{log}"
    );

    let task = h.wait_status(transient, TaskStatus::Failed).await;
    assert_eq!(task.attempts, 3, "max_deliver is 3");
    assert!(
        task.status_message
            .contains("gave up after 3 deliveries: still down"),
        "{}",
        task.status_message
    );
    let task = h.wait_status(permanent, TaskStatus::Failed).await;
    assert_eq!(task.attempts, 1, "permanent failures are not retried");
    assert_eq!(task.status_message, "bad input");
    let task = h.wait_status(panics, TaskStatus::Failed).await;
    assert_eq!(task.status_message, "handler panicked: boom");
    for id in &many {
        h.wait_status(*id, TaskStatus::Succeeded).await;
    }
    assert!(
        handler.peak.load(Ordering::SeqCst) <= 4,
        "concurrency 4, peak {}",
        handler.peak.load(Ordering::SeqCst)
    );

    // Every message settled: nothing pending, nothing held.
    eventually(WAIT, "the consumer to settle", || async {
        let counts = streams::consumer_counts(&h.js, streams::JOBS_STREAM, KIND)
            .await
            .expect("counts")
            .expect("consumer exists");
        (counts.pending == 0 && counts.ack_pending == 0).then_some(())
    })
    .await;

    let dead = h.dead_letters().await;
    assert_eq!(dead.len(), 4, "transient, permanent, panic, malformed");
    for (subject, headers, _) in &dead {
        assert_eq!(subject, "berth.dead.echo");
        assert_eq!(header(headers, dead_letter::HEADER_CONSUMER), "echo");
        assert_eq!(
            header(headers, dead_letter::HEADER_SUBJECT),
            "berth.jobs.echo.default"
        );
        assert!(!header(headers, dead_letter::HEADER_STREAM_SEQUENCE).is_empty());
    }
    let reasons: Vec<(String, String)> = dead
        .iter()
        .map(|(_, h, _)| {
            (
                header(h, dead_letter::HEADER_REASON),
                header(h, dead_letter::HEADER_DELIVERIES),
            )
        })
        .collect();
    assert!(
        reasons.contains(&("gave up after 3 deliveries: still down".into(), "3".into())),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("bad input".into(), "1".into())),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("handler panicked: boom".into(), "1".into())),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(r, _)| r.starts_with("not a CloudEvents JSON envelope")),
        "{reasons:?}"
    );
    assert!(dead.iter().any(|(_, _, payload)| payload == b"{not json"));

    let stats = runtime.stats();
    assert_eq!(stats.handled_ok, 14);
    assert_eq!(
        stats.failed_transient, 5,
        "flaky twice, transient three times"
    );
    assert_eq!(stats.failed_permanent, 2);
    assert_eq!(stats.malformed, 1);
    assert_eq!(stats.dead_lettered, 4);

    shutdown.cancel();
    tokio::time::timeout(WAIT, loop_)
        .await
        .expect("the loop stops")
        .expect("no panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_pause_and_drain() {
    let h = Harness::start().await;
    let runtime = h.runtime(Duration::from_millis(500));
    let shutdown = CancellationToken::new();
    let control_stop = CancellationToken::new();
    let handler = Arc::new(TestJob::default());
    let control_loop = tokio::spawn({
        let runtime = runtime.clone();
        let stop = control_stop.clone();
        async move { runtime.run_control(stop).await }
    });
    let loop_ = tokio::spawn({
        let runtime = runtime.clone();
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        async move { runtime.run_jobs(KIND, handler, shutdown).await }
    });

    // Cancel by control message: a cooperative and a stubborn handler both stop.
    let cooperative = h.task("cooperative", json!({"mode": "cooperative"})).await;
    let stubborn = h.task("stubborn", json!({"mode": "stubborn"})).await;
    eventually(WAIT, "both tasks to run", || async {
        (runtime.in_flight().len() == 2).then_some(())
    })
    .await;
    let in_flight = runtime.in_flight();
    assert!(in_flight
        .iter()
        .all(|i| i.execution_id == h.execution && i.kind == KIND));
    control::publish(
        &h.client,
        &Control::Cancel {
            execution_id: h.execution,
            task_id: None,
        },
    )
    .await;
    let task = h.wait_status(cooperative, TaskStatus::Cancelled).await;
    assert_eq!(task.status_message, "stopped by request");
    h.wait_status(stubborn, TaskStatus::Cancelled).await;
    eventually(WAIT, "no task in flight", || async {
        runtime.in_flight().is_empty().then_some(())
    })
    .await;
    assert_eq!(runtime.stats().cancelled, 2);

    // Cancel found by polling (no control message), for one task only.
    let polled = h.task("polled", json!({"mode": "stubborn"})).await;
    eventually(WAIT, "the task to run", || async {
        (runtime.in_flight().len() == 1).then_some(())
    })
    .await;
    let mut tx = h.db.pool.begin().await.expect("tx");
    tasks::request_cancel(&mut tx, polled, "test", "/t")
        .await
        .expect("request cancel");
    tx.commit().await.expect("commit");
    h.wait_status(polled, TaskStatus::Cancelled).await;

    // Pause by control message: a new task is held, not started.
    queues::set_paused(&h.db.pool, KIND, true)
        .await
        .expect("pause");
    control::publish(
        &h.client,
        &Control::Pause {
            kind: KIND.into(),
            paused: true,
        },
    )
    .await;
    eventually(WAIT, "the pause to arrive", || async {
        runtime.is_paused(KIND).then_some(())
    })
    .await;
    let held = h.task("held", json!({"mode": "ok"})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let task = h.get(held).await;
    assert_eq!(task.status, TaskStatus::Pending);
    assert_eq!(task.attempts, 0, "a paused kind starts nothing");
    // Resumed in the database only: the poll notices.
    queues::set_paused(&h.db.pool, KIND, false)
        .await
        .expect("resume");
    let task = h.wait_status(held, TaskStatus::Succeeded).await;
    assert_eq!(task.attempts, 1);
    let counts = streams::consumer_counts(&h.js, streams::JOBS_STREAM, KIND)
        .await
        .expect("counts")
        .expect("consumer");
    assert_eq!(
        counts.redelivered, 0,
        "holding during the pause cost no delivery"
    );

    // Drain: a handler that will not finish is cancelled at the drain deadline and
    // its task released for another worker.
    let interrupted = h.task("interrupted", json!({"mode": "stubborn"})).await;
    eventually(WAIT, "the task to run", || async {
        (runtime.in_flight().len() == 1).then_some(())
    })
    .await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, loop_)
        .await
        .expect("the loop drains")
        .expect("no panic");
    let task = h.get(interrupted).await;
    assert_eq!(task.status, TaskStatus::Pending);
    assert!(
        task.status_message.contains("interrupted"),
        "{}",
        task.status_message
    );
    assert_eq!(runtime.stats().interrupted, 1);

    // Another process picks it up at once (the message was released, not left to time out).
    let other = h.runtime(Duration::from_secs(5));
    let other_shutdown = CancellationToken::new();
    let other_loop = tokio::spawn({
        let other = other.clone();
        let stop = other_shutdown.clone();
        async move { other.run_jobs(KIND, Arc::new(OkJob), stop).await }
    });
    let task = h.wait_status(interrupted, TaskStatus::Succeeded).await;
    assert_eq!(task.attempts, 2);
    other_shutdown.cancel();
    other_loop.await.expect("no panic");
    control_stop.cancel();
    control_loop.await.expect("no panic");
    drop(h.nats);
}

/// Records the events it handles; fails the first delivery of tag deletions.
#[derive(Default)]
struct TestEvents {
    seen: Mutex<Vec<(String, u64)>>,
}

#[async_trait]
impl EventHandler for TestEvents {
    async fn handle(
        &self,
        event: Event,
        envelope: &Envelope,
        ctx: &EventContext,
    ) -> Result<(), Failure> {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push((envelope.type_name.clone(), ctx.delivery));
        }
        match event {
            Event::TagDeleted { .. } if ctx.delivery == 1 => Err(Failure::transient("later")),
            Event::ArtifactDeleted { .. } => Err(Failure::permanent("cannot")),
            _ => Ok(()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_consumers_handle_retry_and_dead_letter() {
    let h = Harness::start().await;
    let runtime = h.runtime(Duration::from_secs(5));
    let shutdown = CancellationToken::new();
    let handler = Arc::new(TestEvents::default());
    let artifact = ArtifactRef {
        project: "team".into(),
        repository: "team/app".into(),
        digest: "sha256:abc".into(),
    };
    let events = [
        Event::ArtifactPushed {
            artifact: artifact.clone(),
            media_type: "m".into(),
            tag: Some("1".into()),
            actor: "a".into(),
        },
        Event::TagDeleted {
            artifact: artifact.clone(),
            tag: "1".into(),
            actor: "a".into(),
        },
        Event::ArtifactDeleted {
            artifact: artifact.clone(),
            actor: "a".into(),
        },
    ];
    for event in &events {
        h.publish(
            &subject::for_event(event),
            serde_json::to_vec(&Envelope::new(event, "/t")).expect("json"),
        )
        .await;
    }
    let mut unknown = serde_json::to_value(Envelope::new(&events[0], "/t")).expect("json");
    unknown["type"] = "io.berth.unknown.v9".into();
    h.publish(
        "berth.events.artifact.pushed.team.app",
        serde_json::to_vec(&unknown).expect("json"),
    )
    .await;

    let loop_ = tokio::spawn({
        let runtime = runtime.clone();
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        async move {
            runtime
                .run_events("h1-test", "berth.events.>", "h1-test", handler, shutdown)
                .await
        }
    });
    eventually(WAIT, "every event settled", || async {
        let counts = streams::consumer_counts(&h.js, streams::EVENTS_STREAM, "h1-test")
            .await
            .expect("counts")?;
        (counts.pending == 0 && counts.ack_pending == 0 && runtime.stats().handled_ok == 2)
            .then_some(())
    })
    .await;
    let seen = handler.seen.lock().expect("lock").clone();
    assert!(
        seen.contains(&(berth_events::kind::TAG_DELETED.into(), 2)),
        "{seen:?}"
    );
    let stats = runtime.stats();
    assert_eq!(stats.handled_ok, 2);
    assert_eq!(stats.failed_transient, 1);
    assert_eq!(stats.failed_permanent, 1);
    assert_eq!(stats.malformed, 1);
    assert_eq!(stats.dead_lettered, 2);
    let dead = h.dead_letters().await;
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().all(|(s, _, _)| s == "berth.dead.h1-test"));
    assert!(dead
        .iter()
        .any(|(_, headers, _)| header(headers, dead_letter::HEADER_REASON) == "cannot"));
    assert!(dead.iter().any(
        |(_, headers, _)| header(headers, dead_letter::HEADER_REASON)
            .starts_with("unknown event type")
    ));

    shutdown.cancel();
    loop_.await.expect("no panic");
}
