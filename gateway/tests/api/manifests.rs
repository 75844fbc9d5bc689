//! Manifest push, pull and delete: byte-for-byte storage, the media types Berth accepts,
//! what a push must reference, and how refusals leave nothing behind.

use std::fmt::Display;

use berth_content::{Algorithm, Digest, DigestHasher};
use serde_json::json;

use crate::helpers::{
    assert_manifest_created, assert_oci_error, assert_oci_error_json, empty_index, expect_status,
    image_manifest, put_ok, random_bytes, streamed, TestApp, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST,
    OCI_CONFIG, OCI_EMPTY, OCI_INDEX, OCI_LAYER, OCI_MANIFEST,
};

/// Asserts a 200 `GET` of exactly `bytes` with the given media type and digest, and a
/// `HEAD` with the same headers and no body.
async fn assert_pull(
    app: &TestApp,
    repo: &str,
    reference: impl Display,
    media_type: &str,
    bytes: &[u8],
    digest: &Digest,
) {
    let get = app.get_manifest(repo, &reference).await;
    let head = app.head_manifest(repo, &reference).await;
    for (method, response, body) in [("GET", get, bytes), ("HEAD", head, &[][..])] {
        assert_eq!(response.status(), 200, "{method} {repo}:{reference}");
        let headers = response.headers();
        assert_eq!(headers["content-type"], media_type, "{method}");
        assert_eq!(
            headers["docker-content-digest"],
            digest.to_string().as_str(),
            "{method}"
        );
        assert_eq!(
            headers["content-length"],
            bytes.len().to_string().as_str(),
            "{method}"
        );
        assert_eq!(response.bytes().await.unwrap().as_ref(), body, "{method}");
    }
}

#[tokio::test]
async fn push_then_pull_by_tag_and_digest_returns_the_exact_bytes() {
    let app = TestApp::spawn().await;
    let manifest = image_manifest(&app, "lib/app", &[b"layer one", b"layer two"]).await;
    // Pretty-printed with odd spacing: the registry must not re-serialise.
    let value: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let manifest = format!("{}\n\n", serde_json::to_string_pretty(&value).unwrap()).into_bytes();
    let digest = Digest::sha256_of(&manifest);

    let response = app
        .put_manifest("lib/app", "v1", OCI_MANIFEST, &manifest)
        .await;
    assert!(response.headers().get("oci-subject").is_none());
    assert_manifest_created(response, "lib/app", &digest).await;

    assert_pull(&app, "lib/app", "v1", OCI_MANIFEST, &manifest, &digest).await;
    assert_pull(&app, "lib/app", &digest, OCI_MANIFEST, &manifest, &digest).await;
}

#[tokio::test]
async fn unknown_manifests_are_manifest_unknown() {
    let app = TestApp::spawn().await;
    let (_, digest) = app.push_image("known", "v1", &[b"x"]).await;
    let missing = Digest::sha256_of(b"nothing");
    for (repo, reference) in [
        ("known", "v2".to_owned()),
        ("known", missing.to_string()),
        // An unknown repository answers the same way: one query serves the pull.
        ("unknown", "v1".to_owned()),
        ("unknown", digest.to_string()),
    ] {
        app.assert_no_manifest(repo, &reference).await;
    }
}

#[tokio::test]
async fn docker_schema2_manifest_and_manifest_list() {
    let app = TestApp::spawn().await;
    let config = br#"{"architecture":"arm64","os":"linux"}"#;
    let layer = random_bytes(1000);
    let config_digest = app.push_blob("docker/img", config).await;
    let layer_digest = app.push_blob("docker/img", &layer).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": config.len(), "digest": config_digest},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": layer.len(), "digest": layer_digest}],
    }))
    .unwrap();
    let digest = put_ok(&app, "docker/img", "arm64", DOCKER_MANIFEST, &manifest).await;
    assert_pull(
        &app,
        "docker/img",
        "arm64",
        DOCKER_MANIFEST,
        &manifest,
        &digest,
    )
    .await;

    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": [{
            "mediaType": DOCKER_MANIFEST, "size": manifest.len(), "digest": digest,
            "platform": {"architecture": "arm64", "os": "linux"},
        }],
    }))
    .unwrap();
    let list_digest = put_ok(&app, "docker/img", "latest", DOCKER_MANIFEST_LIST, &list).await;
    assert_pull(
        &app,
        "docker/img",
        "latest",
        DOCKER_MANIFEST_LIST,
        &list,
        &list_digest,
    )
    .await;
}

#[tokio::test]
async fn oci_index_needs_its_children_in_the_repository() {
    let app = TestApp::spawn().await;
    let (amd64, amd64_digest) = app.push_image("multi", "amd64", &[b"amd64"]).await;
    let (arm64, arm64_digest) = app.push_image("multi", "arm64", &[b"arm64"]).await;
    let descriptor = |bytes: &[u8], digest: &Digest, arch: &str| {
        json!({"mediaType": OCI_MANIFEST, "size": bytes.len(), "digest": digest,
               "platform": {"architecture": arch, "os": "linux"}})
    };
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor(&amd64, &amd64_digest, "amd64"), descriptor(&arm64, &arm64_digest, "arm64")],
    }))
    .unwrap();
    let index_digest = put_ok(&app, "multi", "latest", OCI_INDEX, &index).await;
    assert_pull(&app, "multi", "latest", OCI_INDEX, &index, &index_digest).await;

    // The same children in another repository: not there, so the index is refused.
    let response = app.put_manifest("other", "latest", OCI_INDEX, &index).await;
    let message = assert_oci_error(response, 400, "MANIFEST_BLOB_UNKNOWN").await;
    assert!(message.contains(&amd64_digest.to_string()), "{message}");

    // One child present, one missing: the detail names the missing one.
    let missing = Digest::sha256_of(b"never pushed");
    let partial = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor(&amd64, &amd64_digest, "amd64"), descriptor(b"x", &missing, "s390x")],
    }))
    .unwrap();
    let response = app
        .put_manifest("multi", "partial", OCI_INDEX, &partial)
        .await;
    let error = assert_oci_error_json(response, 400, "MANIFEST_BLOB_UNKNOWN").await;
    assert_eq!(error["detail"]["digest"], missing.to_string());
    app.assert_no_manifest("multi", "partial").await;
}

#[tokio::test]
async fn artifact_with_custom_config_media_type_and_artifact_type() {
    let app = TestApp::spawn().await;
    let empty = app.push_blob("art", b"{}").await;
    let payload = app.push_blob("art", b"a thing").await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.thing.v1",
        "config": {"mediaType": OCI_EMPTY, "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.example.thing.layer", "digest": payload, "size": 7}],
        "annotations": {"org.opencontainers.image.title": "thing"},
    }))
    .unwrap();
    let digest = put_ok(&app, "art", "thing", OCI_MANIFEST, &manifest).await;
    assert_pull(&app, "art", "thing", OCI_MANIFEST, &manifest, &digest).await;

    // No artifactType, but a config media type no image uses: also fine.
    let config = app.push_blob("art", b"config of a thing").await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.example.thing", "digest": config, "size": 17},
        "layers": [],
    }))
    .unwrap();
    let digest = put_ok(&app, "art", "config-typed", OCI_MANIFEST, &manifest).await;
    assert_pull(
        &app,
        "art",
        "config-typed",
        OCI_MANIFEST,
        &manifest,
        &digest,
    )
    .await;
}

#[tokio::test]
async fn malformed_and_unsupported_manifests_are_manifest_invalid() {
    let app = TestApp::spawn().await;
    let cases: [(&str, &[u8]); 6] = [
        (OCI_MANIFEST, b"{not json"),
        (OCI_MANIFEST, b""),
        (OCI_MANIFEST, b"[1,2,3]"),
        (
            OCI_MANIFEST,
            br#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}"#,
        ),
        (
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            br#"{"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []}"#,
        ),
        (
            "application/vnd.example.not-a-manifest",
            br#"{"schemaVersion": 2, "mediaType": "application/vnd.example.not-a-manifest"}"#,
        ),
    ];
    for (media_type, body) in cases {
        let response = app.put_manifest("bad", "t", media_type, body).await;
        assert_oci_error(response, 400, "MANIFEST_INVALID").await;
    }
    assert_eq!(app.count_rows("manifests").await, 0);
}

#[tokio::test]
async fn media_type_disagreeing_with_content_type_is_manifest_invalid() {
    let app = TestApp::spawn().await;
    let index = empty_index("mismatch");
    let response = app.put_manifest("mm", "t", OCI_MANIFEST, &index).await;
    let message = assert_oci_error(response, 400, "MANIFEST_INVALID").await;
    assert!(message.contains("Content-Type"), "{message}");
    let response = app
        .put_manifest("mm", "t", DOCKER_MANIFEST_LIST, &index)
        .await;
    assert_oci_error(response, 400, "MANIFEST_INVALID").await;
    assert_eq!(app.count_rows("manifests").await, 0);
}

#[tokio::test]
async fn manifests_over_the_size_limit_are_refused() {
    let app = TestApp::spawn_with(|c| c.limits.manifest_max_bytes = 1024).await;
    let big = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [],
        "annotations": {"padding": "x".repeat(2000)},
    }))
    .unwrap();
    let response = app.put_manifest("big", "t", OCI_INDEX, &big).await;
    let message = assert_oci_error(response, 413, "MANIFEST_INVALID").await;
    assert!(message.contains("1024"), "{message}");

    // Without Content-Length (chunked), the body itself is what is bounded.
    let response = app
        .client
        .put(app.url("/v2/big/manifests/t"))
        .header("Content-Type", OCI_INDEX)
        .body(streamed(&big, 100))
        .send()
        .await
        .unwrap();
    assert_oci_error(response, 413, "MANIFEST_INVALID").await;
    assert_eq!(app.count_rows("manifests").await, 0);

    // Exactly at the limit is fine.
    let mut exact = empty_index("");
    let pad = 1024 - exact.len();
    let value = json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [],
        "annotations": {"test.nonce": "y".repeat(pad)},
    });
    exact = serde_json::to_vec(&value).unwrap();
    assert_eq!(exact.len(), 1024);
    put_ok(&app, "big", "t", OCI_INDEX, &exact).await;
}

#[tokio::test]
async fn a_missing_blob_refuses_the_push_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let config = app.push_blob("partial", b"{}").await;
    let missing = Digest::sha256_of(b"layer never pushed");
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config, "size": 2},
        "layers": [{"mediaType": OCI_LAYER, "digest": missing, "size": 18}],
    }))
    .unwrap();
    let response = app
        .put_manifest("partial", "latest", OCI_MANIFEST, &manifest)
        .await;
    let error = assert_oci_error_json(response, 400, "MANIFEST_BLOB_UNKNOWN").await;
    assert_eq!(error["detail"]["digest"], missing.to_string());

    app.assert_no_manifest("partial", Digest::sha256_of(&manifest))
        .await;
    app.assert_no_manifest("partial", "latest").await;
    assert_eq!(app.count_rows("manifests").await, 0);
    assert_eq!(app.count_rows("tags").await, 0);

    // A blob pushed to another repository does not count either.
    let layer = app.push_blob("elsewhere", b"layer never pushed").await;
    assert_eq!(layer, missing);
    let response = app
        .put_manifest("partial", "latest", OCI_MANIFEST, &manifest)
        .await;
    assert_oci_error(response, 400, "MANIFEST_BLOB_UNKNOWN").await;

    // Once the blob is in the repository, the same manifest goes in.
    app.push_blob("partial", b"layer never pushed").await;
    put_ok(&app, "partial", "latest", OCI_MANIFEST, &manifest).await;
}

#[tokio::test]
async fn push_by_digest_checks_the_digest() {
    let app = TestApp::spawn().await;
    let index = empty_index("by-digest");
    let digest = Digest::sha256_of(&index);
    let wrong = Digest::sha256_of(b"something else");

    let response = app.put_manifest("d", &wrong, OCI_INDEX, &index).await;
    assert_oci_error(response, 400, "DIGEST_INVALID").await;
    assert_eq!(app.count_rows("manifests").await, 0);

    let response = app.put_manifest("d", &digest, OCI_INDEX, &index).await;
    assert_manifest_created(response, "d", &digest).await;
    assert_pull(&app, "d", &digest, OCI_INDEX, &index, &digest).await;
    // Pushed by digest only: no tag was created.
    assert_eq!(app.count_rows("tags").await, 0);

    // sha512: the digest is computed in the algorithm the client named.
    let mut hasher = DigestHasher::new(Algorithm::Sha512);
    hasher.update(&index);
    let sha512 = hasher.finish();
    let response = app.put_manifest("d512", &sha512, OCI_INDEX, &index).await;
    assert_manifest_created(response, "d512", &sha512).await;
    assert_pull(&app, "d512", &sha512, OCI_INDEX, &index, &sha512).await;
}

#[tokio::test]
async fn invalid_references_in_the_path_are_refused() {
    let app = TestApp::spawn().await;
    let index = empty_index("bad-tag");
    let long = "t".repeat(129);
    for reference in ["-leading-dash", ".dot", "a:b", long.as_str(), "sha256:abc"] {
        let response = app.put_manifest("r", reference, OCI_INDEX, &index).await;
        let status = response.status();
        assert_eq!(status, 400, "{reference}");
        let text = response.text().await.unwrap();
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        let code = body["errors"][0]["code"].as_str().unwrap();
        assert!(
            code == "MANIFEST_INVALID" || code == "DIGEST_INVALID",
            "{reference}: {text}"
        );
    }
    assert_eq!(app.count_rows("manifests").await, 0);
}

#[tokio::test]
async fn pushing_the_same_manifest_again_is_idempotent() {
    let app = TestApp::spawn().await;
    let (manifest, digest) = app.push_image("same", "v1", &[b"l"]).await;
    put_ok(&app, "same", "v1", OCI_MANIFEST, &manifest).await;
    put_ok(&app, "same", "v2", OCI_MANIFEST, &manifest).await;
    put_ok(&app, "same", &digest.to_string(), OCI_MANIFEST, &manifest).await;
    assert_eq!(app.count_rows("manifests").await, 1);
    assert_eq!(app.count_rows("tags").await, 2);
    assert_eq!(
        app.count_rows("manifest_blobs").await,
        2,
        "config and one layer, once each"
    );
    assert_pull(&app, "same", "v2", OCI_MANIFEST, &manifest, &digest).await;
}

#[tokio::test]
async fn a_manifest_listing_one_layer_twice_is_accepted() {
    let app = TestApp::spawn().await;
    let (_, _) = app.push_image("dup", "base", &[b"same layer"]).await;
    let manifest = image_manifest(&app, "dup", &[b"same layer", b"same layer"]).await;
    put_ok(&app, "dup", "twice", OCI_MANIFEST, &manifest).await;
}

#[tokio::test]
async fn a_tag_moves_to_the_newest_manifest() {
    let app = TestApp::spawn().await;
    let (first, first_digest) = app.push_image("mv", "latest", &[b"one"]).await;
    let (second, second_digest) = app.push_image("mv", "latest", &[b"two"]).await;
    assert_ne!(first_digest, second_digest);
    assert_pull(&app, "mv", "latest", OCI_MANIFEST, &second, &second_digest).await;
    // The old manifest is still there by digest.
    assert_pull(
        &app,
        "mv",
        &first_digest,
        OCI_MANIFEST,
        &first,
        &first_digest,
    )
    .await;
}

#[tokio::test]
async fn deleting_a_manifest_removes_it_and_its_tags() {
    let app = TestApp::spawn().await;
    let (manifest, digest) = app.push_image("del", "a", &[b"x"]).await;
    put_ok(&app, "del", "b", OCI_MANIFEST, &manifest).await;
    let (_, keep) = app.push_image("del", "keep", &[b"y"]).await;

    let response = app.delete_manifest("del", &digest).await;
    assert_eq!(response.status(), 202);
    for reference in ["a", "b", &digest.to_string()] {
        app.assert_no_manifest("del", reference).await;
    }
    let (body, _) = app.get_page("/v2/del/tags/list").await;
    assert_eq!(body["tags"], json!(["keep"]));
    assert_eq!(app.get_manifest("del", &keep).await.status(), 200);

    let response = app.delete_manifest("del", &digest).await;
    assert_oci_error(response, 404, "MANIFEST_UNKNOWN").await;
    let response = app.delete_manifest("nope", &digest).await;
    assert_oci_error(response, 404, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn deleting_a_tag_keeps_the_manifest() {
    let app = TestApp::spawn().await;
    let (manifest, digest) = app.push_image("untag", "old", &[b"x"]).await;
    put_ok(&app, "untag", "new", OCI_MANIFEST, &manifest).await;

    let response = app.delete_manifest("untag", "old").await;
    assert_eq!(response.status(), 202);
    app.assert_no_manifest("untag", "old").await;
    assert_pull(&app, "untag", &digest, OCI_MANIFEST, &manifest, &digest).await;
    assert_pull(&app, "untag", "new", OCI_MANIFEST, &manifest, &digest).await;

    let response = app.delete_manifest("untag", "old").await;
    assert_oci_error(response, 404, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn a_manifest_an_index_lists_cannot_be_deleted() {
    let app = TestApp::spawn().await;
    let (child, child_digest) = app.push_image("idx", "child", &[b"x"]).await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "size": child.len(), "digest": child_digest}],
    }))
    .unwrap();
    let index_digest = put_ok(&app, "idx", "latest", OCI_INDEX, &index).await;

    let response = app.delete_manifest("idx", &child_digest).await;
    let message = assert_oci_error(response, 409, "DENIED").await;
    assert!(message.contains(&index_digest.to_string()), "{message}");
    assert_eq!(app.get_manifest("idx", &child_digest).await.status(), 200);
    // Its tag can go; the manifest stays.
    assert_eq!(app.delete_manifest("idx", "child").await.status(), 202);

    // Index first, then the child.
    let response = app.delete_manifest("idx", &index_digest).await;
    assert_eq!(response.status(), 202);
    let response = app.delete_manifest("idx", &child_digest).await;
    assert_eq!(response.status(), 202);
    assert_eq!(app.count_rows("manifests").await, 0);
}

#[tokio::test]
async fn deletes_can_be_disabled() {
    let app = TestApp::spawn_with(|c| {
        c.delete.manifests = false;
        c.delete.tags = false;
    })
    .await;
    let index = empty_index("keep me");
    let digest = put_ok(&app, "nodel", "t", OCI_INDEX, &index).await;
    let response = app.delete_manifest("nodel", &digest).await;
    assert_oci_error(response, 405, "UNSUPPORTED").await;
    let response = app.delete_manifest("nodel", "t").await;
    assert_oci_error(response, 405, "UNSUPPORTED").await;
    assert_pull(&app, "nodel", "t", OCI_INDEX, &index, &digest).await;

    // Each switch alone.
    let app = TestApp::spawn_with(|c| c.delete.tags = false).await;
    let digest = put_ok(&app, "nodel", "t", OCI_INDEX, &index).await;
    assert_oci_error(app.delete_manifest("nodel", "t").await, 405, "UNSUPPORTED").await;
    assert_eq!(app.delete_manifest("nodel", &digest).await.status(), 202);
    let app = TestApp::spawn_with(|c| c.delete.manifests = false).await;
    let digest = put_ok(&app, "nodel", "t", OCI_INDEX, &index).await;
    let response = app.delete_manifest("nodel", &digest).await;
    assert_oci_error(response, 405, "UNSUPPORTED").await;
    assert_eq!(app.delete_manifest("nodel", "t").await.status(), 202);
}

#[tokio::test]
async fn concurrent_pushes_to_one_tag_end_consistent() {
    let app = TestApp::spawn().await;
    let manifests: Vec<Vec<u8>> = (0..16)
        .map(|i| empty_index(&format!("racer {i}")))
        .collect();
    let pushes = manifests
        .iter()
        .map(|m| app.put_manifest("race", "latest", OCI_INDEX, m));
    for response in futures::future::join_all(pushes).await {
        expect_status(response, 201, "PUT race:latest").await;
    }

    let response = app.get_manifest("race", "latest").await;
    assert_eq!(response.status(), 200);
    let served_digest = response.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.bytes().await.unwrap();
    let winner = manifests
        .iter()
        .find(|m| Digest::sha256_of(m).to_string() == served_digest)
        .expect("the tag points at one of the pushed manifests");
    assert_eq!(body.as_ref(), winner.as_slice());
    assert_eq!(app.count_rows("manifests").await, 16);
    assert_eq!(app.count_rows("tags").await, 1);
}

#[tokio::test]
async fn concurrent_pushes_of_one_manifest_store_it_once() {
    let app = TestApp::spawn().await;
    let index = empty_index("shared");
    let tags: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    let pushes = tags
        .iter()
        .map(|tag| app.put_manifest("same-race", tag, OCI_INDEX, &index));
    for response in futures::future::join_all(pushes).await {
        expect_status(response, 201, "PUT same-race").await;
    }
    assert_eq!(app.count_rows("manifests").await, 1);
    assert_eq!(app.count_rows("tags").await, 8);
}

#[tokio::test]
async fn an_index_push_racing_the_delete_of_its_child_never_dangles() {
    let app = TestApp::spawn().await;
    for i in 0..10 {
        let child = empty_index(&format!("child {i}"));
        let child_digest = put_ok(&app, "dangle", &format!("c{i}"), OCI_INDEX, &child).await;
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_INDEX, "size": child.len(), "digest": child_digest}],
        }))
        .unwrap();
        let index_tag = format!("i{i}");
        let (put, delete) = tokio::join!(
            app.put_manifest("dangle", &index_tag, OCI_INDEX, &index),
            app.delete_manifest("dangle", &child_digest),
        );
        let (put_status, delete_status) = (put.status().as_u16(), delete.status().as_u16());
        let put_text = put.text().await.unwrap();
        let child_status = app.get_manifest("dangle", &child_digest).await.status();
        let index_status = app.get_manifest("dangle", &index_tag).await.status();
        match (put_status, delete_status) {
            // The index won: the child had to stay.
            (201, 409) => {
                assert_eq!(child_status, 200);
                assert_eq!(index_status, 200);
            }
            // The delete won: the index was refused.
            (400, 202) => {
                assert!(put_text.contains("MANIFEST_BLOB_UNKNOWN"), "{put_text}");
                assert_eq!(child_status, 404);
                assert_eq!(index_status, 404);
            }
            other => panic!("inconsistent outcome {other:?}: {put_text}"),
        }
    }
}
