//! Stream and consumer provisioning against a real nats-server (2.9 on this machine):
//! idempotent under concurrency, consumers updated in place, counts read back.
//!
//! Each test starts its own nats-server on a free port with a temporary store, so it
//! may create and change streams freely.

mod support;

use std::time::Duration;

use async_nats::jetstream;
use berth_events::config::{ConsumerConfig, StreamsConfig};
use berth_events::streams::{self, ConsumerCounts};
use berth_events::subject;
use berth_events::testing::{free_port, NatsServer};

#[tokio::test]
async fn provisioning_is_idempotent_and_safe_to_race() {
    let nats = NatsServer::start().await;
    let config = StreamsConfig::default();

    // Three processes starting at once.
    let mut joins = Vec::new();
    for _ in 0..3 {
        let js = nats.jetstream().await;
        let config = config.clone();
        joins.push(tokio::spawn(async move {
            streams::provision(&js, &config).await
        }));
    }
    for join in joins {
        join.await.expect("task").expect("concurrent provision");
    }
    let js = nats.jetstream().await;
    streams::provision(&js, &config)
        .await
        .expect("second provision");

    let mut events = js.get_stream(streams::EVENTS_STREAM).await.expect("events");
    let info = events.info().await.expect("info");
    assert_eq!(
        info.config.retention,
        jetstream::stream::RetentionPolicy::Limits
    );
    assert_eq!(info.config.storage, jetstream::stream::StorageType::File);
    assert_eq!(info.config.subjects, vec!["berth.events.>".to_owned()]);
    assert_eq!(
        info.config.max_age,
        Duration::from_secs(config.events_max_age_secs)
    );
    assert_eq!(
        info.config.duplicate_window,
        Duration::from_secs(config.duplicate_window_secs)
    );
    let mut jobs = js.get_stream(streams::JOBS_STREAM).await.expect("jobs");
    let info = jobs.info().await.expect("info");
    assert_eq!(
        info.config.retention,
        jetstream::stream::RetentionPolicy::WorkQueue
    );
    assert_eq!(info.config.subjects, vec!["berth.jobs.>".to_owned()]);
    let mut dead = js
        .get_stream(streams::DEAD_LETTER_STREAM)
        .await
        .expect("dead");
    let info = dead.info().await.expect("info");
    assert_eq!(info.config.subjects, vec!["berth.dead.>".to_owned()]);
    assert_eq!(
        info.config.max_age,
        Duration::from_secs(config.dead_letters_max_age_secs)
    );

    // A changed setting is applied to the existing stream, keeping its messages.
    js.publish(subject::for_job("echo", "default"), "kept".into())
        .await
        .expect("publish")
        .await
        .expect("publish ack");
    let changed = StreamsConfig {
        events_max_age_secs: 3600,
        ..config.clone()
    };
    streams::provision(&js, &changed)
        .await
        .expect("provision with a change");
    let info = events.info().await.expect("info");
    assert_eq!(info.config.max_age, Duration::from_secs(3600));
    let info = jobs.info().await.expect("info");
    assert_eq!(info.state.messages, 1);
}

#[tokio::test]
async fn consumers_are_created_updated_and_counted() {
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    streams::provision(&js, &StreamsConfig::default())
        .await
        .expect("provision");
    let durable = streams::jobs_consumer_name("echo");
    let filter = subject::jobs_of_kind("echo");

    assert_eq!(
        streams::consumer_counts(&js, streams::JOBS_STREAM, &durable)
            .await
            .expect("counts of a missing consumer"),
        None
    );
    assert_eq!(
        streams::consumer_counts(&js, "NO_SUCH_STREAM", &durable)
            .await
            .expect("counts on a missing stream"),
        None
    );

    let config = ConsumerConfig {
        max_ack_pending: 2,
        max_deliver: 4,
        backoff_secs: vec![1, 2, 3],
        ..ConsumerConfig::default()
    };
    let consumer = streams::ensure_consumer(&js, streams::JOBS_STREAM, &durable, &filter, &config)
        .await
        .expect("create consumer");
    let info = consumer.cached_info();
    assert_eq!(info.config.max_ack_pending, 2);
    assert_eq!(info.config.max_deliver, 5, "the runtime's limit plus one");
    assert_eq!(info.config.filter_subject, filter);
    assert_eq!(info.config.backoff.len(), 3);

    for i in 0..3 {
        js.publish(subject::for_job("echo", "default"), format!("{i}").into())
            .await
            .expect("publish")
            .await
            .expect("publish ack");
    }
    // Another kind's task is not this consumer's.
    js.publish(subject::for_job("other", "default"), "x".into())
        .await
        .expect("publish")
        .await
        .expect("publish ack");

    // The same call from a second process, with changed editable settings: updated
    // in place, its position kept.
    let changed = ConsumerConfig {
        max_ack_pending: 7,
        ack_wait_secs: 12,
        max_deliver: 9,
        backoff_secs: Vec::new(),
        ..config.clone()
    };
    let consumer = streams::ensure_consumer(&js, streams::JOBS_STREAM, &durable, &filter, &changed)
        .await
        .expect("update consumer");
    let info = consumer.cached_info();
    assert_eq!(info.config.max_ack_pending, 7);
    assert_eq!(info.config.ack_wait, Duration::from_secs(12));
    assert_eq!(info.config.max_deliver, 10);
    assert!(info.config.backoff.is_empty());
    // And once more unchanged.
    streams::ensure_consumer(&js, streams::JOBS_STREAM, &durable, &filter, &changed)
        .await
        .expect("ensure again");

    assert_eq!(
        streams::consumer_counts(&js, streams::JOBS_STREAM, &durable)
            .await
            .expect("counts"),
        Some(ConsumerCounts {
            pending: 3,
            ack_pending: 0,
            redelivered: 0,
            delivered: 0,
        })
    );

    // Take one and hold it: pending 2, ack pending 1, one delivery.
    use futures::StreamExt;
    let mut batch = consumer
        .batch()
        .max_messages(1)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .expect("batch");
    let message = batch
        .next()
        .await
        .expect("a message")
        .expect("not an error");
    assert_eq!(message.payload.as_ref(), b"0");
    let counts = streams::consumer_counts(&js, streams::JOBS_STREAM, &durable)
        .await
        .expect("counts")
        .expect("exists");
    assert_eq!(
        counts,
        ConsumerCounts {
            pending: 2,
            ack_pending: 1,
            redelivered: 0,
            delivered: 1,
        }
    );
    message.ack().await.expect("ack");
}

#[tokio::test]
async fn connect_returns_at_once_with_nats_down_and_connects_when_it_starts() {
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let client = tokio::time::timeout(
        Duration::from_secs(10),
        berth_events::nats::connect(&url, "berth-test"),
    )
    .await
    .expect("connect does not wait for NATS")
    .expect("connect succeeds without NATS");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_ne!(
        client.connection_state(),
        async_nats::connection::State::Connected
    );

    // Let a few reconnect attempts fail, so the delay has grown to its cap.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _nats = NatsServer::start_on(port).await;
    let up = std::time::Instant::now();
    support::eventually(Duration::from_secs(30), "the client to connect", || {
        let state = client.connection_state();
        async move { (state == async_nats::connection::State::Connected).then_some(()) }
    })
    .await;
    // The reconnect delay is capped at a second; allow a loaded machine plenty more.
    assert!(up.elapsed() < Duration::from_secs(10), "{:?}", up.elapsed());
    let js = jetstream::new(client);
    streams::provision(&js, &StreamsConfig::default())
        .await
        .expect("usable once connected");
}
