//! NATS down while 200 pushes happen: the registry does not notice, the events wait
//! in the outbox, and when NATS returns every event is delivered, once, in
//! per-repository order.

use std::collections::BTreeMap;

use berth_events::{Envelope, Event};

use crate::harness::{
    check, eventually, Pipeline, WorkerOptions, DEADLINE, ECHO_CONSUMER, ECHO_EVENTS_CONSUMER,
    EVENTS_STREAM, JOBS_STREAM,
};

const REPOSITORIES: [&str; 4] = ["alpha/app", "beta/app", "gamma/app", "delta/app"];
const PUSHES_PER_REPOSITORY: usize = 50;

#[tokio::test]
async fn pushes_succeed_without_nats_and_their_events_flow_once_in_order_when_it_returns() {
    let mut p = Pipeline::start().await;
    // The worker runs through the outage: its relay and consumers must ride it out.
    p.start_worker(WorkerOptions::default()).await;
    p.nats.stop().await;

    // Repositories push in parallel, each one's pushes in sequence: that sequence is
    // the order its events must keep.
    let pushes = REPOSITORIES.iter().map(|repo| {
        let registry = p.registry.clone();
        async move {
            let mut digests = Vec::new();
            for i in 0..PUSHES_PER_REPOSITORY {
                digests.push(registry.push_index(repo, &format!("{repo}-{i}")).await);
            }
            (repo.to_string(), digests)
        }
    });
    let pushed: BTreeMap<String, Vec<String>> = futures::future::join_all(pushes)
        .await
        .into_iter()
        .collect();
    let total = REPOSITORIES.len() * PUSHES_PER_REPOSITORY;
    assert_eq!(
        p.outbox_count().await,
        i64::try_from(total).unwrap(),
        "every push committed its event to the outbox"
    );

    p.nats.restart().await;
    eventually("all events reach the stream", DEADLINE, || async {
        let outbox = p.outbox_count().await;
        let stream = p.stream_count(EVENTS_STREAM).await?;
        check(
            outbox == 0 && stream == total as u64,
            format!("outbox {outbox}, stream {stream}"),
        )
    })
    .await;

    // Every execution's single task ran once and succeeded.
    eventually(
        "one succeeded echo execution per event",
        DEADLINE,
        || async {
            let (executions, succeeded): (i64, i64) = sqlx::query_as(
                "SELECT count(DISTINCT e.id), count(t.id) FILTER (WHERE t.status = 'succeeded')
             FROM executions e LEFT JOIN tasks t ON t.execution_id = e.id
             WHERE e.kind = 'echo' AND e.trigger = 'event'",
            )
            .fetch_one(&p.db)
            .await
            .map_err(|e| e.to_string())?;
            check(
                executions == total as i64 && succeeded == total as i64,
                format!("{executions} executions, {succeeded} tasks succeeded"),
            )
        },
    )
    .await;
    let per_execution: Vec<(i64, i64, i32)> = sqlx::query_as(
        "SELECT e.id, count(t.id), coalesce(max(t.attempts), 0) FROM executions e
         LEFT JOIN tasks t ON t.execution_id = e.id
         WHERE e.kind = 'echo' AND e.trigger = 'event' GROUP BY e.id",
    )
    .fetch_all(&p.db)
    .await
    .unwrap();
    for (execution, tasks, attempts) in per_execution {
        assert_eq!(tasks, 1, "execution {execution} has one task");
        assert_eq!(attempts, 1, "the task of execution {execution} ran once");
    }
    let (distinct_keys,): (i64,) = sqlx::query_as(
        "SELECT count(DISTINCT trigger_key) FROM executions WHERE kind = 'echo' AND trigger = 'event'",
    )
    .fetch_one(&p.db)
    .await
    .unwrap();
    assert_eq!(distinct_keys, total as i64);

    // The handler planned each event exactly once (the distinct trigger keys above)
    // and nothing is left unacked. The consumer delivered at least 200 messages: on a
    // loaded machine a message the server sent to a pull request that had just expired
    // never reaches the worker and comes back after ack_wait with a new consumer
    // sequence number, without a second handling.
    let info = eventually(
        "the events consumer has acked everything",
        DEADLINE,
        || async {
            let info = p.consumer_info(EVENTS_STREAM, ECHO_EVENTS_CONSUMER).await?;
            check(
                info.num_ack_pending == 0 && info.num_pending == 0,
                format!("{info:?}"),
            )?;
            Ok(info)
        },
    )
    .await;
    assert!(info.delivered.consumer_sequence >= total as u64, "{info:?}");
    assert_eq!(info.num_redelivered, 0, "{info:?}");
    let jobs = p.consumer_info(JOBS_STREAM, ECHO_CONSUMER).await.unwrap();
    assert!(jobs.delivered.consumer_sequence >= total as u64, "{jobs:?}");

    // Per repository, the stream holds the events in push order.
    let mut streamed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in p.stream_messages(EVENTS_STREAM).await {
        let envelope = Envelope::parse(&m.payload).expect("a CloudEvents envelope");
        let Ok(Event::ArtifactPushed { artifact, .. }) = envelope.event() else {
            panic!("not an artifact.pushed event: {envelope:?}");
        };
        assert_eq!(
            m.subject.as_str(),
            format!(
                "berth.events.artifact.pushed.{}",
                artifact.repository.replace('/', ".")
            )
        );
        streamed
            .entry(artifact.repository)
            .or_default()
            .push(artifact.digest);
    }
    assert_eq!(streamed, pushed);
}
