//! Races that a registry behind many clients sees every day: the same blob pushed by
//! many clients at once (the common base layer of a CI fleet), and many manifests pushed
//! to one tag at once. Every push must succeed, the metadata must hold one blob, and the
//! tag must end on one complete manifest.

use std::collections::BTreeSet;
use std::sync::Arc;

use berth_content::Digest;
use tokio::sync::Barrier;

use crate::helpers::{
    config_blob, manifest_over, put_ok, random_bytes, RegistryClient, TestApp, OCI_MANIFEST,
};

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
        PushKind::PostPut => client.push_post_put(repo, bytes).await,
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
        app.assert_blob(repo, &digest, &blob).await;
    }
    // Storage holds the blob once, with the right content.
    let path = app.blob_file(&digest);
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
        let config = config_blob(&format!("client {i}"));
        let config_digest = client.push_blob(repo, &config).await;
        manifests.push(manifest_over(
            &(config_digest, config.len()),
            &[(layer_digest.clone(), layer.len())],
        ));
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
            put_ok(&client, repo, "latest", OCI_MANIFEST, &manifest).await;
        }));
    }
    for task in tasks {
        task.await.expect("a manifest push failed");
    }

    // The tag points at one of the sixteen, served whole under its own digest.
    let (latest, _, _) = app.pull_manifest(repo, "latest").await;
    assert!(
        digests.contains(&latest),
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
        let (_, _, body) = app.pull_manifest(repo, &digest).await;
        assert!(body == *manifest, "GET {digest}: other bytes");
    }
}
