//! Races that a registry behind many clients sees every day: the same blob pushed by
//! many clients at once (the common base layer of a CI fleet), and many manifests pushed
//! to one tag at once. Every push must succeed, the metadata must hold one blob, and the
//! tag must end on one complete manifest.

use std::collections::BTreeSet;
use std::sync::Arc;

use berth_content::Digest;
use tokio::sync::Barrier;

use crate::helpers::{random_bytes, RegistryClient, TestApp, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST};

const CLIENTS: usize = 16;

/// One client's way of pushing a blob.
#[derive(Debug, Clone, Copy)]
enum PushKind {
    /// `POST ?digest=` with the body.
    Monolithic,
    /// `POST`, then `PUT ?digest=` with the body.
    PostPut,
    /// `POST`, `PATCH` per chunk, `PUT ?digest=`.
    Chunked,
}

async fn push(client: &RegistryClient, repo: &str, bytes: &[u8], kind: PushKind) -> Digest {
    match kind {
        PushKind::Monolithic => client.push_blob(repo, bytes).await,
        PushKind::Chunked => client.push_chunked(repo, bytes, 700 * 1024).await,
        PushKind::PostPut => {
            let digest = Digest::sha256_of(bytes);
            let location = client.start_upload(repo).await;
            let response = client.complete_upload(&location, &digest, bytes).await;
            let status = response.status();
            let text = response.text().await.unwrap();
            assert_eq!(status, 201, "POST+PUT of {digest}: {text}");
            digest
        }
    }
}

#[tokio::test]
async fn sixteen_clients_pushing_the_same_blob_all_succeed_and_store_it_once() {
    let app = TestApp::spawn().await;
    let blob = Arc::new(random_bytes(3 * 1024 * 1024 + 17));
    let digest = Digest::sha256_of(&blob);
    let repos = ["race/one", "race/two"];
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let client = RegistryClient::new(&app.address);
        let blob = blob.clone();
        let barrier = barrier.clone();
        let kind = [PushKind::Monolithic, PushKind::PostPut, PushKind::Chunked][i % 3];
        let repo = repos[i % 2];
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            push(&client, repo, &blob, kind).await
        }));
    }
    for task in tasks {
        // A failed push panics in its task with the status and body; surface it here.
        assert_eq!(task.await.expect("a push failed"), digest);
    }

    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM blobs WHERE digest = $1")
        .bind(digest.to_string())
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 1, "blobs rows for {digest}");
    let size: i64 = sqlx::query_scalar("SELECT size FROM blobs WHERE digest = $1")
        .bind(digest.to_string())
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(size as usize, blob.len());
    let links: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
         WHERE rb.blob_digest = $1",
    )
    .bind(digest.to_string())
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(links, 2, "one link per repository");

    for repo in repos {
        let response = app
            .client
            .get(app.url(&format!("/v2/{repo}/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = response.bytes().await.unwrap();
        assert!(body[..] == blob[..], "GET {repo} blob: other bytes");
    }
    // Storage holds the blob once, with the right content.
    let path = app
        .data_dir
        .path()
        .join("storage/blobs/sha256")
        .join(&digest.hex()[..2])
        .join(digest.hex());
    let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(stored == blob[..], "the stored file differs");
}

#[tokio::test]
async fn sixteen_manifests_pushed_to_one_tag_at_once_leave_it_on_one_complete_manifest() {
    let app = TestApp::spawn().await;
    let repo = "race/tagged";
    let client = RegistryClient::new(&app.address);
    let layer = random_bytes(64 * 1024);
    let layer_digest = client.push_blob(repo, &layer).await;
    let mut manifests = Vec::new();
    for i in 0..CLIENTS {
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "client": i,
        }))
        .unwrap();
        let config_digest = client.push_blob(repo, &config).await;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
            "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest.to_string(), "size": layer.len()}],
        }))
        .unwrap();
        manifests.push(manifest);
    }
    let digests: BTreeSet<Digest> = manifests.iter().map(|m| Digest::sha256_of(m)).collect();
    assert_eq!(digests.len(), CLIENTS);

    let barrier = Arc::new(Barrier::new(CLIENTS));
    let mut tasks = Vec::new();
    for manifest in manifests.clone() {
        let client = RegistryClient::new(&app.address);
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let response = client
                .put_manifest(repo, "latest", OCI_MANIFEST, &manifest)
                .await;
            let status = response.status();
            let header = response
                .headers()
                .get("docker-content-digest")
                .map(|v| v.to_str().unwrap().to_owned());
            let text = response.text().await.unwrap();
            assert_eq!(status, 201, "PUT latest: {text}");
            assert_eq!(
                header.as_deref(),
                Some(Digest::sha256_of(&manifest).to_string().as_str())
            );
        }));
    }
    for task in tasks {
        task.await.expect("a manifest push failed");
    }

    // The tag points at one of the sixteen, served whole under its own digest.
    let response = app
        .client
        .get(app.url(&format!("/v2/{repo}/manifests/latest")))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let header = Digest::parse(
        response.headers()["docker-content-digest"]
            .to_str()
            .unwrap(),
    )
    .unwrap();
    let body = response.bytes().await.unwrap();
    assert_eq!(
        Digest::sha256_of(&body),
        header,
        "latest: body and digest disagree"
    );
    assert!(
        digests.contains(&header),
        "latest points at no pushed manifest"
    );
    let tag_rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tags t JOIN repositories r ON r.id = t.repository_id \
         WHERE r.name = $1 AND t.name = 'latest'",
    )
    .bind(repo)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(tag_rows, 1);
    let (list, _) = app.get_page(&format!("/v2/{repo}/tags/list")).await;
    assert_eq!(list["tags"], serde_json::json!(["latest"]), "{list}");
    // Every manifest stays pullable by digest, whichever won the tag.
    for (manifest, digest) in manifests
        .iter()
        .zip(manifests.iter().map(|m| Digest::sha256_of(m)))
    {
        let response = app
            .client
            .get(app.url(&format!("/v2/{repo}/manifests/{digest}")))
            .header("Accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {digest}");
        assert!(response.bytes().await.unwrap()[..] == manifest[..]);
    }
}
