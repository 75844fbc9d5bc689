//! Event-based push replication to Debian's docker-registry (htpasswd): images and
//! multi-arch indexes arrive with the source's digests, and a copy moves only the
//! blobs the destination lacks.

use crate::harness::{
    assert_index_at, count, digest_at, docker_client, docker_registry, docker_registry_body,
    push_policy, Stack, TestIndex, DEADLINE,
};
use crate::support::TestImage;

#[tokio::test]
async fn pushed_images_and_indexes_arrive_with_their_digests_and_only_missing_blobs_move() {
    let mut stack = Stack::start().await;
    stack.start_replicator(4).await;
    let dest = docker_registry().await;
    let dest_client = docker_client(&dest.url);
    let registry = stack
        .api
        .create_registry(&docker_registry_body("dest", &dest.url))
        .await;
    let policy = stack
        .api
        .create_policy(&push_policy("to-dest", registry))
        .await;

    // A single-arch image: config and two layers, all uploaded.
    let image = TestImage::random(&[200_000, 3_000]);
    image.push(&stack.source, "proj/app", "v1").await;
    let task = stack.api.wait_copy(policy, "proj/app:v1", DEADLINE).await;
    assert_eq!(task["status"], "Succeed", "{task}");
    assert_eq!(task["dst_resource"], "proj/app:v1", "{task}");
    assert_eq!(
        digest_at(&dest_client, "proj/app", "v1").await.as_deref(),
        Some(image.digest.as_str())
    );
    assert_eq!(
        digest_at(&stack.source, "proj/app", "v1").await.as_deref(),
        Some(image.digest.as_str())
    );
    assert_eq!(count(&task, "blobs_uploaded"), 3, "{task}");
    assert_eq!(count(&task, "blobs_skipped"), 0, "{task}");
    assert!(
        task["bytes"].as_i64().unwrap_or(0) >= 203_000,
        "bytes of a copy of 203 kB of layers: {task}"
    );

    // A multi-arch index: children by digest, then the index under its tag, the same
    // bytes at the destination.
    let index = TestIndex::random();
    index.push(&stack.source, "proj/multi", "v1").await;
    let task = stack.api.wait_copy(policy, "proj/multi:v1", DEADLINE).await;
    assert_eq!(task["status"], "Succeed", "{task}");
    assert_index_at(&dest_client, "proj/multi", "v1", &index).await;
    assert_eq!(
        digest_at(&stack.source, "proj/multi", "v1")
            .await
            .as_deref(),
        digest_at(&dest_client, "proj/multi", "v1").await.as_deref(),
    );

    // The same image again (under another tag, so the push is an event): every blob
    // is at the destination already, none moves.
    image.push(&stack.source, "proj/app", "v1-again").await;
    let task = stack
        .api
        .wait_copy(policy, "proj/app:v1-again", DEADLINE)
        .await;
    assert_eq!(task["status"], "Succeed", "{task}");
    assert_eq!(count(&task, "blobs_uploaded"), 0, "{task}");
    assert_eq!(
        count(&task, "blobs_skipped") + task["blobs_mounted"].as_i64().unwrap_or(0),
        3,
        "{task}"
    );
    assert_eq!(
        digest_at(&dest_client, "proj/app", "v1-again")
            .await
            .as_deref(),
        Some(image.digest.as_str())
    );

    // A new image sharing the config and both layers, plus one new layer: only that
    // layer is uploaded.
    let mut layers = image.layers.clone();
    layers.push(crate::support::random_blob(50_000));
    let next = TestImage::from_parts(image.config.clone(), layers, None);
    next.push(&stack.source, "proj/app", "v2").await;
    let task = stack.api.wait_copy(policy, "proj/app:v2", DEADLINE).await;
    assert_eq!(task["status"], "Succeed", "{task}");
    assert_eq!(count(&task, "blobs_uploaded"), 1, "{task}");
    assert_eq!(
        count(&task, "blobs_skipped") + task["blobs_mounted"].as_i64().unwrap_or(0),
        3,
        "the config and the two shared layers are there already: {task}"
    );
    assert_eq!(
        digest_at(&dest_client, "proj/app", "v2").await.as_deref(),
        Some(next.digest.as_str())
    );

    // The job service shows one `replicate` queue, whatever consumers it has (the
    // planning one and one per endpoint).
    let queues = stack.api.get("/jobservice/queues").await;
    let names: Vec<&str> = queues
        .as_array()
        .expect("a list of queues")
        .iter()
        .filter_map(|q| q["job_type"].as_str())
        .collect();
    assert!(names.contains(&"replicate"), "{queues}");
    assert!(
        !names.iter().any(|n| n.starts_with("replicate-")),
        "{queues}"
    );
}
