//! Every committed push yields exactly one event on the events stream, a refused push
//! none, and a relay that died between publish and delete replays its rows without
//! duplicating a single event (JetStream de-duplicates on `Nats-Msg-Id`).

use std::collections::{BTreeMap, BTreeSet};

use berth_events::{Envelope, Event};

use crate::harness::{
    check, eventually, header, image_config, image_manifest, sha256_digest, Pipeline,
    WorkerOptions, DEADLINE, EVENTS_STREAM, OCI_MANIFEST,
};

/// The pushed artifacts of the events stream, in stream order, as (subject, repository,
/// digest, `Nats-Msg-Id`, envelope id).
async fn pushed_events(p: &Pipeline) -> Vec<(String, String, String, String, uuid::Uuid)> {
    p.stream_messages(EVENTS_STREAM)
        .await
        .into_iter()
        .map(|m| {
            let envelope = Envelope::parse(&m.payload).expect("a CloudEvents envelope");
            let Ok(Event::ArtifactPushed { artifact, tag, .. }) = envelope.event() else {
                panic!("not an artifact.pushed event: {envelope:?}");
            };
            assert_eq!(tag, None, "pushed by digest, so no tag");
            let msg_id = header(&m.headers, "Nats-Msg-Id");
            (
                m.subject.to_string(),
                artifact.repository,
                artifact.digest,
                msg_id,
                envelope.id,
            )
        })
        .collect()
}

/// Executions the echo kind started for events (trigger key = event id).
async fn event_trigger_keys(p: &Pipeline) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT trigger_key FROM executions WHERE kind = 'echo' AND trigger = 'event'
         ORDER BY trigger_key",
    )
    .fetch_all(&p.db)
    .await
    .expect("read executions")
}

#[tokio::test]
async fn every_committed_push_is_one_event_and_a_replayed_outbox_changes_nothing() {
    let mut p = Pipeline::start().await;
    p.start_worker(WorkerOptions::default()).await;

    let mut pushed = Vec::new();
    for (repo, nonce) in [("team/app", "a1"), ("team/web", "w1"), ("team/app", "a2")] {
        pushed.push((repo.to_owned(), p.registry.push_image(repo, nonce).await));
    }

    // Refused inside its transaction: the manifest names a layer never pushed.
    let config = image_config("refused");
    let config_digest = p.registry.push_blob("team/app", &config).await;
    let missing = sha256_digest(b"never pushed");
    let manifest = image_manifest((&config_digest, config.len()), &[(&missing, 12)]);
    let (status, body) = p
        .registry
        .put_manifest(
            "team/app",
            &sha256_digest(&manifest),
            OCI_MANIFEST,
            &manifest,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("MANIFEST_BLOB_UNKNOWN"), "{body}");

    // Nothing else writes to the outbox, so an empty outbox and three events is final.
    eventually(
        "the three pushes reach the events stream",
        DEADLINE,
        || async {
            let outbox = p.outbox_count().await;
            let stream = p.stream_count(EVENTS_STREAM).await?;
            check(
                outbox == 0 && stream == 3,
                format!("outbox {outbox}, stream {stream}"),
            )
        },
    )
    .await;
    let events = pushed_events(&p).await;
    for (subject, repository, _, msg_id, id) in &events {
        assert_eq!(
            subject,
            &format!(
                "berth.events.artifact.pushed.{}",
                repository.replace('/', ".")
            )
        );
        assert_eq!(msg_id, &id.to_string(), "Nats-Msg-Id is the event id");
    }
    // Per repository, in push order (repositories may interleave either way).
    let by_repo = |list: &[(String, String)]| {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (repo, digest) in list {
            map.entry(repo.clone()).or_default().push(digest.clone());
        }
        map
    };
    let streamed: Vec<(String, String)> =
        events.iter().map(|e| (e.1.clone(), e.2.clone())).collect();
    assert_eq!(by_repo(&streamed), by_repo(&pushed));

    // The echo kind reacts to each event once.
    let ids: Vec<String> = {
        let mut ids: Vec<String> = events.iter().map(|e| e.4.to_string()).collect();
        ids.sort();
        ids
    };
    eventually("one echo execution per event", DEADLINE, || async {
        let keys = event_trigger_keys(&p).await;
        check(keys == ids, format!("{keys:?}"))
    })
    .await;

    // The relay dies between publish and delete: workers stopped, three more pushes
    // wait in the outbox, and we publish them as that relay did before dying.
    p.stop_workers().await;
    let mut more = Vec::new();
    for (repo, nonce) in [("team/web", "w2"), ("team/app", "a3"), ("team/web", "w3")] {
        more.push((repo.to_owned(), p.registry.push_image(repo, nonce).await));
    }
    let rows: Vec<(uuid::Uuid, String, Vec<u8>)> =
        sqlx::query_as("SELECT event_id, subject, payload FROM outbox ORDER BY id")
            .fetch_all(&p.db)
            .await
            .expect("read the outbox");
    assert_eq!(rows.len(), 3, "with no relay running, the events wait");
    let js = p.jetstream().await;
    for (event_id, subject, payload) in &rows {
        let publish = async_nats::jetstream::context::Publish::build()
            .message_id(event_id.to_string())
            .payload(payload.clone().into());
        let ack = js
            .send_publish(subject.clone(), publish)
            .await
            .expect("publish")
            .await
            .expect("publish ack");
        assert!(!ack.duplicate, "the first publish of {event_id} is new");
    }
    assert_eq!(p.stream_count(EVENTS_STREAM).await, Ok(6));

    // A new worker's relay publishes the rows again; the server drops the copies, and
    // the relay deletes the rows on the (duplicate) acks.
    p.start_worker(WorkerOptions::default()).await;
    eventually("the relay empties the outbox", DEADLINE, || async {
        let outbox = p.outbox_count().await;
        check(outbox == 0, format!("{outbox} rows left"))
    })
    .await;
    let events = pushed_events(&p).await;
    assert_eq!(events.len(), 6, "each event once: {events:?}");
    let stream_ids: BTreeSet<String> = events.iter().map(|e| e.3.clone()).collect();
    assert_eq!(stream_ids.len(), 6, "no event twice");
    for (event_id, _, _) in &rows {
        assert!(stream_ids.contains(&event_id.to_string()));
    }
    pushed.extend(more);
    let streamed: Vec<(String, String)> =
        events.iter().map(|e| (e.1.clone(), e.2.clone())).collect();
    assert_eq!(by_repo(&streamed), by_repo(&pushed));

    let mut ids: Vec<String> = events.iter().map(|e| e.4.to_string()).collect();
    ids.sort();
    eventually(
        "one echo execution per event, replay included",
        DEADLINE,
        || async {
            let keys = event_trigger_keys(&p).await;
            check(keys == ids, format!("{keys:?}"))
        },
    )
    .await;
}
