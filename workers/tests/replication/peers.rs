//! Other registries on the other side: pull mode from Debian's docker-registry into
//! Berth, and push mode to a second Berth with token auth.

use std::time::Duration;

use serde_json::json;

use crate::harness::{
    assert_index_at, digest_at, docker_client, docker_registry, docker_registry_body, push_policy,
    registry_body, Stack, TestIndex, DEADLINE,
};
use crate::support::gateway::{Gateway, ADMIN, ADMIN_PASSWORD};
use crate::support::{basic, client, random_blob, TestImage};

#[tokio::test]
async fn pull_mode_copies_from_docker_registry_into_berth() {
    let mut stack = Stack::start().await;
    stack.start_replicator(4).await;
    let upstream = docker_registry().await;
    let upstream_client = docker_client(&upstream.url);
    let image = TestImage::random(&[30_000]);
    image.push(&upstream_client, "library/alpine", "3.19").await;
    let index = TestIndex::random();
    index.push(&upstream_client, "library/multi", "1").await;
    let skipped = TestImage::random(&[1_000]);
    skipped.push(&upstream_client, "other/skip", "1").await;

    let registry = stack
        .api
        .create_registry(&docker_registry_body("upstream", &upstream.url))
        .await;
    // Into a project that does not exist yet: the gateway creates projects on push
    // (BERTH_PROJECTS__CREATE_ON_PUSH), and Harbor's pull replication creates them.
    let mut body = push_policy("from-upstream", registry);
    body["src_registry"] = json!({"id": registry});
    body["dest_registry"] = json!({"id": 0});
    body["trigger"] = json!({"type": "manual"});
    body["filters"] = json!([{"type": "name", "value": "library/**"}]);
    body["dest_namespace"] = json!("pulled");
    body["dest_namespace_replace_count"] = json!(1);
    let policy = stack.api.create_policy(&body).await;
    let execution = stack.api.start_replication(policy).await;
    let ended = stack
        .api
        .wait_execution(execution, Duration::from_secs(120))
        .await;
    let tasks = stack.api.tasks(execution).await;
    assert_eq!(ended["status"], "Succeed", "{ended}\n{tasks:?}");
    let mut copied: Vec<&str> = tasks
        .iter()
        .filter(|t| t["operation"] == "copy")
        .map(|t| t["src_resource"].as_str().unwrap_or_default())
        .collect();
    copied.sort();
    assert_eq!(
        copied,
        ["library/alpine:3.19", "library/multi:1"],
        "{tasks:?}"
    );

    let project = stack.api.get("/projects/pulled").await;
    assert_eq!(project["name"], "pulled", "{project}");
    // Read back through Berth's /v2/ as the admin.
    assert_eq!(
        digest_at(&stack.source, "pulled/alpine", "3.19")
            .await
            .as_deref(),
        Some(image.digest.as_str())
    );
    assert_index_at(&stack.source, "pulled/multi", "1", &index).await;
}

#[tokio::test]
async fn push_mode_to_a_berth_peer_with_token_auth() {
    let mut stack = Stack::start().await;
    stack.start_replicator(4).await;
    let peer = Gateway::start(&[]).await;
    let peer_client = client(&peer.url, basic(ADMIN, ADMIN_PASSWORD));
    let mut body = registry_body("peer", &peer.url, ADMIN, ADMIN_PASSWORD);
    body["type"] = json!("harbor");
    let registry = stack.api.create_registry(&body).await;
    let policy = stack
        .api
        .create_policy(&push_policy("to-peer", registry))
        .await;

    let image = TestImage::random(&[100_000, 2_000]);
    image.push(&stack.source, "proj/app", "v1").await;
    let index = TestIndex::random();
    index.push(&stack.source, "proj/multi", "v1").await;
    for src in ["proj/app:v1", "proj/multi:v1"] {
        let task = stack.api.wait_copy(policy, src, DEADLINE).await;
        assert_eq!(task["status"], "Succeed", "{task}");
    }
    assert_eq!(
        digest_at(&peer_client, "proj/app", "v1").await.as_deref(),
        Some(image.digest.as_str())
    );
    assert_index_at(&peer_client, "proj/multi", "v1", &index).await;

    // A signature pushed later, untagged, with the image as its subject: the event of
    // that push copies it too, and the peer's referrers API lists it.
    let signature = TestImage::from_parts(
        random_blob(60),
        vec![random_blob(900)],
        Some((&image.digest, image.manifest.len() as u64)),
    );
    signature
        .push(&stack.source, "proj/app", &signature.digest)
        .await;
    let subject = format!("proj/app@{}", image.digest);
    let task = stack.api.wait_copy(policy, &subject, DEADLINE).await;
    assert_eq!(task["status"], "Succeed", "{task}");
    let copied = peer_client
        .get_manifest("proj/app", &signature.digest)
        .await
        .expect("the signature arrived");
    assert_eq!(copied.bytes, signature.manifest);
    let listed = peer_client
        .referrers("proj/app", &image.digest)
        .await
        .expect("the peer lists referrers");
    assert_eq!(
        listed.iter().map(|d| d.digest.as_str()).collect::<Vec<_>>(),
        [signature.digest.as_str()]
    );
}
