//! The copy engine against real registries: Debian's docker-registry (distribution
//! 2.8) with htpasswd auth, as source and destination.

#[path = "../../registry-client/tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_registry_client::{
    sha256_digest, ClientConfig, ClientError, GatePermit, RegistryClient, RequestGate, RequestInfo,
};
use berth_replication::copy::{copy_artifact, CopyError, CopyOptions};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use support::registry::{DockerRegistry, PASSWORD, USERNAME};
use support::{
    basic, client, eventually, random_blob, TestImage, DEADLINE, OCI_INDEX, OCI_MANIFEST,
};

async fn two_registries() -> (
    DockerRegistry,
    RegistryClient,
    DockerRegistry,
    RegistryClient,
) {
    let source = DockerRegistry::start_with_auth().await;
    let dest = DockerRegistry::start_with_auth().await;
    let source_client = client(&source.url, basic(USERNAME, PASSWORD));
    let dest_client = client(&dest.url, basic(USERNAME, PASSWORD));
    (source, source_client, dest, dest_client)
}

/// Two platform images sharing a layer, and an index over them, pushed to `repo`
/// under `tag`; returns the index bytes and digest.
async fn push_index(client: &RegistryClient, repo: &str, tag: &str) -> (Bytes, String) {
    let shared = random_blob(40_000);
    let amd = TestImage::from_parts(
        random_blob(300),
        vec![shared.clone(), random_blob(5_000)],
        None,
    );
    let arm = TestImage::from_parts(random_blob(301), vec![shared, random_blob(6_000)], None);
    amd.push(client, repo, &amd.digest).await;
    arm.push(client, repo, &arm.digest).await;
    let entry = |image: &TestImage, arch: &str| {
        format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#,
            image.digest,
            image.manifest.len()
        )
    };
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{},{}]}}"#,
        entry(&amd, "amd64"),
        entry(&arm, "arm64")
    );
    let bytes = Bytes::from(index);
    let digest = client
        .put_manifest(repo, tag, OCI_INDEX, bytes.clone())
        .await
        .expect("put index");
    (bytes, digest)
}

#[tokio::test]
async fn images_and_indexes_arrive_with_their_digests_and_recopies_upload_nothing() {
    let (_s, source, _d, dest) = two_registries().await;
    let opts = CopyOptions::default();

    let image = TestImage::random(&[100_000, 2_000]);
    image.push(&source, "src/app", "v1").await;
    let report = copy_artifact(&source, "src/app", "v1", &dest, "dst/app", None, &opts)
        .await
        .expect("copy the image");
    assert_eq!(report.digest, image.digest);
    assert!(!report.up_to_date);
    assert_eq!(report.blobs_uploaded, 3, "{report:?}");
    assert_eq!(
        report.bytes_uploaded,
        image
            .blobs()
            .iter()
            .map(|(b, _)| b.len() as u64)
            .sum::<u64>()
    );
    assert_eq!(report.manifests_pushed, 1);
    let copied = dest
        .get_manifest("dst/app", "v1")
        .await
        .expect("tag at dest");
    assert_eq!(copied.digest, image.digest);
    assert_eq!(copied.bytes, image.manifest);
    for (data, digest) in image.blobs() {
        assert_eq!(
            dest.head_blob("dst/app", &digest).await.unwrap(),
            Some(data.len() as u64)
        );
    }

    // An index: children first (by digest), the shared layer once, then the index.
    let (index_bytes, index_digest) = push_index(&source, "src/app", "multi").await;
    let report = copy_artifact(
        &source,
        "src/app",
        "multi",
        &dest,
        "dst/app",
        Some("latest"),
        &opts,
    )
    .await
    .expect("copy the index");
    assert_eq!(report.digest, index_digest);
    assert_eq!(report.manifests_pushed, 3, "{report:?}");
    // 2 configs, the shared layer, one layer per platform.
    assert_eq!(report.blobs_uploaded, 4 + 1, "{report:?}");
    assert_eq!(report.blobs_skipped, 1, "the shared layer, seen twice");
    let copied = dest.get_manifest("dst/app", "latest").await.unwrap();
    assert_eq!(copied.bytes, index_bytes);
    assert_eq!(copied.media_type, OCI_INDEX);
    for child in copied.content().unwrap().manifests {
        assert!(dest
            .head_manifest("dst/app", &child.digest)
            .await
            .unwrap()
            .is_some());
    }
    assert!(dest
        .head_manifest("dst/app", "multi")
        .await
        .unwrap()
        .is_none());

    // Again: up to date, nothing written.
    let again = copy_artifact(
        &source,
        "src/app",
        "multi",
        &dest,
        "dst/app",
        Some("latest"),
        &opts,
    )
    .await
    .unwrap();
    assert!(again.up_to_date, "{again:?}");
    assert_eq!(
        (again.blobs_uploaded, again.manifests_pushed),
        (0, 0),
        "{again:?}"
    );

    // Under a new tag: the manifests are there, every blob is skipped or not even
    // looked at (children present), and the tag is added.
    let retag = copy_artifact(
        &source,
        "src/app",
        &index_digest,
        &dest,
        "dst/app",
        Some("again"),
        &opts,
    )
    .await
    .unwrap();
    assert!(!retag.up_to_date);
    assert_eq!(retag.blobs_uploaded, 0, "{retag:?}");
    assert_eq!(
        dest.head_manifest("dst/app", "again")
            .await
            .unwrap()
            .unwrap()
            .digest,
        index_digest
    );

    // By digest without a destination tag: copied untagged.
    let untagged = copy_artifact(
        &source,
        "src/app",
        &image.digest,
        &dest,
        "dst/other",
        None,
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(untagged.digest, image.digest);
    assert!(dest
        .head_manifest("dst/other", &image.digest)
        .await
        .unwrap()
        .is_some());
    // No tags: distribution 2.8 lists an untagged repository as unknown.
    match dest.tags("dst/other").await {
        Ok(tags) => assert!(tags.is_empty(), "{tags:?}"),
        Err(e) => assert!(matches!(e, ClientError::NotFound(_)), "{e:?}"),
    }
}

#[tokio::test]
async fn a_new_tag_uploads_only_its_new_layer_and_other_repositories_mount() {
    let (_s, source, _d, dest) = two_registries().await;
    let opts = CopyOptions::default();

    let v1 = TestImage::random(&[50_000, 60_000]);
    v1.push(&source, "src/app", "v1").await;
    copy_artifact(&source, "src/app", "v1", &dest, "dst/app", None, &opts)
        .await
        .unwrap();

    let (new_layer, _) = random_blob(7_777);
    let new_layer_digest = sha256_digest(&new_layer);
    let mut layers = v1.layers.clone();
    layers.push((new_layer.clone(), new_layer_digest.clone()));
    let v2 = TestImage::from_parts(v1.config.clone(), layers, None);
    v2.push(&source, "src/app", "v2").await;
    let report = copy_artifact(&source, "src/app", "v2", &dest, "dst/app", None, &opts)
        .await
        .unwrap();
    assert_eq!(report.blobs_uploaded, 1, "{report:?}");
    assert_eq!(report.bytes_uploaded, new_layer.len() as u64);
    assert_eq!(report.blobs_skipped, 3);
    assert_eq!(
        dest.head_blob("dst/app", &new_layer_digest).await.unwrap(),
        Some(new_layer.len() as u64)
    );

    // Into another repository of the same destination: mounted from dst/app, which
    // the shared map learnt holds them.
    let report = copy_artifact(&source, "src/app", "v2", &dest, "mirror/app", None, &opts)
        .await
        .unwrap();
    assert_eq!(report.blobs_mounted, 4, "{report:?}");
    assert_eq!(report.blobs_uploaded, 0);
    assert_eq!(
        dest.head_manifest("mirror/app", "v2")
            .await
            .unwrap()
            .unwrap()
            .digest,
        v2.digest
    );
    for (data, digest) in v2.blobs() {
        assert_eq!(
            dest.head_blob("mirror/app", &digest).await.unwrap(),
            Some(data.len() as u64)
        );
    }

    // A fresh map knows nothing: hints given by the caller work the same way.
    let hinted = CopyOptions::default();
    for (_, digest) in v1.blobs() {
        hinted.blob_locations.insert(&digest, "dst/app");
    }
    let report = copy_artifact(&source, "src/app", "v1", &dest, "hinted/app", None, &hinted)
        .await
        .unwrap();
    assert_eq!(
        (report.blobs_mounted, report.blobs_uploaded),
        (3, 0),
        "{report:?}"
    );
}

/// Cancels the token when the destination sees the third `PATCH` of an upload, then
/// holds that request back: the copy is then mid-blob, some chunks sent.
struct CancelOnPatch {
    cancel: CancellationToken,
    patches: AtomicUsize,
}

#[async_trait::async_trait]
impl RequestGate for CancelOnPatch {
    async fn before_request(&self, request: RequestInfo<'_>) -> Result<GatePermit, ClientError> {
        if request.method == "PATCH" && self.patches.fetch_add(1, Ordering::SeqCst) == 2 {
            self.cancel.cancel();
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Ok(GatePermit::none())
    }
}

#[tokio::test]
async fn a_cancelled_copy_stops_mid_blob_and_pushes_no_manifest() {
    let (_s, source, dest_registry, _) = two_registries().await;
    let image = TestImage::random(&[20 * 1024 * 1024]);
    image.push(&source, "src/big", "v1").await;

    let cancel = CancellationToken::new();
    let gate = Arc::new(CancelOnPatch {
        cancel: cancel.clone(),
        patches: AtomicUsize::new(0),
    });
    let mut config = ClientConfig::new(dest_registry.url.parse().unwrap());
    config.credential = basic(USERNAME, PASSWORD);
    config.gate = Some(gate.clone());
    let dest = RegistryClient::new(config).unwrap();
    let opts = CopyOptions {
        chunk_size: Some(1024 * 1024),
        cancel: cancel.clone(),
        ..CopyOptions::default()
    };

    let started = Instant::now();
    let result = copy_artifact(&source, "src/big", "v1", &dest, "dst/big", None, &opts).await;
    assert!(matches!(result, Err(CopyError::Cancelled)), "{result:?}");
    // It did not wait for the held-back request (60 s).
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(gate.patches.load(Ordering::SeqCst) >= 3);
    assert!(!result.unwrap_err().is_transient());

    let plain = client(&dest_registry.url, basic(USERNAME, PASSWORD));
    assert!(plain
        .head_manifest("dst/big", "v1")
        .await
        .unwrap()
        .is_none());
    assert!(plain
        .head_manifest("dst/big", &image.digest)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        plain
            .head_blob("dst/big", &image.layers[0].1)
            .await
            .unwrap(),
        None
    );

    // A copy cancelled before it starts does nothing at all.
    let cancelled = CopyOptions::default();
    cancelled.cancel.cancel();
    let result = copy_artifact(
        &source, "src/big", "v1", &plain, "dst/big", None, &cancelled,
    )
    .await;
    assert!(matches!(result, Err(CopyError::Cancelled)), "{result:?}");
}

#[tokio::test]
async fn referrers_follow_their_subject() {
    let (_s, source, _d, dest) = two_registries().await;
    let opts = CopyOptions::default();
    let image = TestImage::random(&[10_000]);
    image.push(&source, "src/app", "v1").await;

    // A signature-like artifact: its own config media type and a subject. docker-registry
    // 2.8 has no referrers API: the referrers tag schema (`sha256-<hex>`) lists it.
    let artifact = TestImage::from_parts(
        random_blob(50),
        vec![random_blob(700)],
        Some((&image.digest, image.manifest.len() as u64)),
    );
    artifact.push(&source, "src/app", &artifact.digest).await;
    let referrers_index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{},"artifactType":"application/vnd.example.signature"}}]}}"#,
        artifact.digest,
        artifact.manifest.len()
    );
    let referrers_tag = image.digest.replacen(':', "-", 1);
    source
        .put_manifest(
            "src/app",
            &referrers_tag,
            OCI_INDEX,
            Bytes::from(referrers_index),
        )
        .await
        .unwrap();
    assert_eq!(
        source
            .referrers("src/app", &image.digest)
            .await
            .unwrap()
            .len(),
        1
    );

    let report = copy_artifact(&source, "src/app", "v1", &dest, "dst/app", None, &opts)
        .await
        .unwrap();
    assert_eq!(report.referrers, 1, "{report:?}");
    assert_eq!(report.manifests_pushed, 2, "{report:?}");
    let copied = dest
        .get_manifest("dst/app", &artifact.digest)
        .await
        .expect("the referrer arrived");
    assert_eq!(copied.bytes, artifact.manifest);
    for (data, digest) in artifact.blobs() {
        assert_eq!(
            dest.head_blob("dst/app", &digest).await.unwrap(),
            Some(data.len() as u64)
        );
    }

    // The destination has no referrers API either: the copy maintained its referrers
    // tag, so the referrer is listed there too.
    let listed = dest.referrers("dst/app", &image.digest).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].digest, artifact.digest);

    // Up to date, but referrers are still checked (and found present).
    let again = copy_artifact(&source, "src/app", "v1", &dest, "dst/app", None, &opts)
        .await
        .unwrap();
    assert!(again.up_to_date);
    assert_eq!(
        (again.referrers, again.manifests_pushed),
        (1, 0),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_missing_source_or_a_bad_password_is_permanent() {
    let (_s, source, d, dest) = two_registries().await;
    let opts = CopyOptions::default();
    let missing = copy_artifact(&source, "src/app", "nope", &dest, "dst/app", None, &opts).await;
    let err = missing.unwrap_err();
    assert!(
        matches!(err.client_error(), Some(ClientError::NotFound(_))),
        "{err:?}"
    );
    assert!(!err.is_transient());

    let image = TestImage::random(&[1_000]);
    image.push(&source, "src/app", "v1").await;
    let wrong = client(&d.url, basic(USERNAME, "wrong"));
    let err = copy_artifact(&source, "src/app", "v1", &wrong, "dst/app", None, &opts)
        .await
        .unwrap_err();
    assert!(
        matches!(err.client_error(), Some(ClientError::Unauthorized(_))),
        "{err:?}"
    );
    assert!(!err.is_transient());

    // Nothing listening at the destination: transient.
    let closed = format!("http://127.0.0.1:{}", berth_events::testing::free_port());
    let err = copy_artifact(
        &source,
        "src/app",
        "v1",
        &client(&closed, basic(USERNAME, PASSWORD)),
        "dst/app",
        None,
        &opts,
    )
    .await
    .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

#[tokio::test]
async fn a_cancel_stops_an_upload_in_flight_at_once() {
    let (_s, source, dest_registry, dest) = two_registries().await;
    let image = TestImage::random(&[20 * 1024 * 1024]);
    image.push(&source, "src/big", "v1").await;

    // Paced to 1 MiB/s, the layer's single streamed PUT would take 20 s.
    let opts = CopyOptions {
        bytes_per_second: 1024 * 1024,
        ..CopyOptions::default()
    };
    let copy = {
        let (source, dest, opts) = (source.clone(), dest.clone(), opts.clone());
        tokio::spawn(async move {
            copy_artifact(&source, "src/big", "v1", &dest, "dst/big", None, &opts).await
        })
    };
    // The upload session is open once the config is through and the layer started.
    eventually("the layer upload starts", DEADLINE, || {
        let uploads = dest_registry.uploads("dst/big");
        async move {
            if uploads.is_empty() {
                Err("no upload yet".to_string())
            } else {
                Ok(())
            }
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cancelled_at = Instant::now();
    opts.cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), copy)
        .await
        .expect("the copy stops well before the upload could have finished")
        .expect("the copy task");
    assert!(matches!(result, Err(CopyError::Cancelled)), "{result:?}");
    // Generous for a noisy machine; the engine waits at most 0.6 s for the chunk in
    // flight (half a second's worth at the cap).
    assert!(cancelled_at.elapsed() < Duration::from_secs(3));
    assert!(dest.head_manifest("dst/big", "v1").await.unwrap().is_none());
    assert_eq!(
        dest.head_blob("dst/big", &image.layers[0].1).await.unwrap(),
        None
    );
    // Stopped between two PATCHes, the session is one distribution can delete (it
    // cannot delete an upload whose request was cut mid-body).
    eventually("the partial upload is deleted", DEADLINE, || {
        let uploads = dest_registry.uploads("dst/big");
        async move {
            if uploads.is_empty() {
                Ok(())
            } else {
                Err(format!("uploads left: {uploads:?}"))
            }
        }
    })
    .await;
}

/// Pushes `blobs` to `repo` (monolithic uploads).
async fn push_blobs(client: &RegistryClient, repo: &str, blobs: &[(Bytes, String)]) {
    for (data, digest) in blobs {
        client
            .push_blob(
                repo,
                digest,
                data.len() as u64,
                support::stream_of(data.clone(), 4096),
                None,
            )
            .await
            .expect("push blob");
    }
}

#[tokio::test]
async fn docker_schema_2_lists_and_other_artifacts_keep_their_media_types() {
    const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    let (_s, source, _d, dest) = two_registries().await;
    let opts = CopyOptions::default();

    let config = random_blob(200);
    let layer = random_blob(3_000);
    push_blobs(&source, "src/docker", &[config.clone(), layer.clone()]).await;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":{},"digest":"{}"}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":{},"digest":"{}"}}]}}"#,
        config.0.len(),
        config.1,
        layer.0.len(),
        layer.1
    );
    let manifest_digest = source
        .put_manifest(
            "src/docker",
            "amd64",
            DOCKER_MANIFEST,
            Bytes::from(manifest.clone()),
        )
        .await
        .unwrap();
    let list = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[{{"mediaType":"{DOCKER_MANIFEST}","size":{},"digest":"{manifest_digest}","platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
        manifest.len()
    );
    let list_digest = source
        .put_manifest("src/docker", "v1", DOCKER_LIST, Bytes::from(list.clone()))
        .await
        .unwrap();
    let report = copy_artifact(
        &source,
        "src/docker",
        "v1",
        &dest,
        "dst/docker",
        None,
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(
        (report.manifests_pushed, report.blobs_uploaded),
        (2, 2),
        "{report:?}"
    );
    let copied = dest.get_manifest("dst/docker", "v1").await.unwrap();
    assert_eq!(
        (copied.digest.as_str(), copied.media_type.as_str()),
        (list_digest.as_str(), DOCKER_LIST)
    );
    assert_eq!(copied.bytes, list.as_bytes());
    let child = dest
        .get_manifest("dst/docker", &manifest_digest)
        .await
        .unwrap();
    assert_eq!(child.media_type, DOCKER_MANIFEST);

    // An OCI artifact with its own artifactType and config media type: blobs are opaque.
    let artifact_config = (Bytes::from_static(b"{}"), sha256_digest(b"{}"));
    let payload = random_blob(1_234);
    push_blobs(
        &source,
        "src/docker",
        &[artifact_config.clone(), payload.clone()],
    )
    .await;
    let artifact = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/vnd.example.sbom","config":{{"mediaType":"application/vnd.example.config+json","size":2,"digest":"{}"}},"layers":[{{"mediaType":"application/vnd.example.sbom.layer","size":{},"digest":"{}"}}]}}"#,
        artifact_config.1,
        payload.0.len(),
        payload.1
    );
    let artifact_digest = source
        .put_manifest(
            "src/docker",
            "sbom",
            OCI_MANIFEST,
            Bytes::from(artifact.clone()),
        )
        .await
        .unwrap();
    let report = copy_artifact(
        &source,
        "src/docker",
        "sbom",
        &dest,
        "dst/docker",
        None,
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(report.digest, artifact_digest);
    assert_eq!(report.blobs_uploaded, 2, "{report:?}");
    assert_eq!(
        dest.get_manifest("dst/docker", "sbom").await.unwrap().bytes,
        artifact.as_bytes()
    );
}

#[tokio::test]
async fn to_berth_with_token_auth_index_referrers_and_mounts() {
    use support::gateway::{Gateway, ADMIN, ADMIN_PASSWORD};
    let source_registry = DockerRegistry::start_with_auth().await;
    let source = client(&source_registry.url, basic(USERNAME, PASSWORD));
    let gateway = Gateway::start(&[]).await;
    let dest = client(&gateway.url, basic(ADMIN, ADMIN_PASSWORD));
    let opts = CopyOptions::default();

    let (index_bytes, index_digest) = push_index(&source, "src/app", "multi").await;
    let report = copy_artifact(
        &source,
        "src/app",
        "multi",
        &dest,
        "library/app",
        None,
        &opts,
    )
    .await
    .expect("copy the index to Berth");
    assert_eq!(
        (report.manifests_pushed, report.blobs_uploaded),
        (3, 5),
        "{report:?}"
    );
    let copied = dest.get_manifest("library/app", "multi").await.unwrap();
    assert_eq!(
        (copied.digest.as_str(), &copied.bytes),
        (index_digest.as_str(), &index_bytes)
    );

    // A referrer of the index, listed by the source's referrers tag.
    let artifact = TestImage::from_parts(
        random_blob(60),
        vec![random_blob(900)],
        Some((&index_digest, index_bytes.len() as u64)),
    );
    artifact.push(&source, "src/app", &artifact.digest).await;
    let referrers_index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{}}}]}}"#,
        artifact.digest,
        artifact.manifest.len()
    );
    source
        .put_manifest(
            "src/app",
            &index_digest.replacen(':', "-", 1),
            OCI_INDEX,
            Bytes::from(referrers_index),
        )
        .await
        .unwrap();
    let report = copy_artifact(
        &source,
        "src/app",
        "multi",
        &dest,
        "library/app",
        None,
        &opts,
    )
    .await
    .unwrap();
    assert!(report.up_to_date);
    assert_eq!(
        (report.referrers, report.manifests_pushed),
        (1, 1),
        "{report:?}"
    );
    let listed = dest.referrers("library/app", &index_digest).await.unwrap();
    assert!(
        listed.iter().any(|d| d.digest == artifact.digest),
        "{listed:?}"
    );

    // Another repository of the same Berth: every blob mounted.
    let report = copy_artifact(
        &source,
        "src/app",
        "multi",
        &dest,
        "library/mirror",
        None,
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(report.blobs_uploaded, 0, "{report:?}");
    assert!(report.blobs_mounted >= 5, "{report:?}");
}

#[tokio::test]
async fn a_source_cut_off_mid_blob_is_transient_and_a_retry_completes() {
    use berth_replication::copy::Side;
    use support::proxy::{Fault, FaultProxy, Rule};
    let (source_registry, direct_source, _d, dest) = two_registries().await;
    let image = TestImage::random(&[300_000]);
    image.push(&direct_source, "src/app", "v1").await;
    let proxy = FaultProxy::start(&source_registry.url).await;
    let source = client(&proxy.url, basic(USERNAME, PASSWORD));
    proxy.add_rule(Rule {
        method: Some("GET".into()),
        path_contains: format!("/blobs/{}", image.layers[0].1),
        times: 1,
        fault: Fault::ResetResponseAfter(100_000),
    });
    let opts = CopyOptions::default();
    let err = copy_artifact(&source, "src/app", "v1", &dest, "dst/app", None, &opts)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(
        matches!(
            err,
            CopyError::Registry {
                side: Side::Source,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(dest.head_manifest("dst/app", "v1").await.unwrap().is_none());

    // The retry skips the config it already copied and finishes.
    let report = copy_artifact(&source, "src/app", "v1", &dest, "dst/app", None, &opts)
        .await
        .unwrap();
    assert_eq!(
        (report.blobs_skipped, report.blobs_uploaded),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(
        dest.head_manifest("dst/app", "v1")
            .await
            .unwrap()
            .unwrap()
            .digest,
        image.digest
    );
}
