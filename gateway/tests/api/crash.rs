//! Crash safety: the real gateway binary is SIGKILLed with uploads and manifest pushes in
//! flight, restarted on the same database and data directory, and must have lost
//! nothing that completed and show nothing half-written.
//!
//! "In flight" is made certain, not left to timing: requests are written by hand on raw
//! sockets with a `Content-Length` larger than what was sent, so the gateway is inside
//! the body when it dies. Pushes that race the kill with complete bodies may land or not;
//! either is fine as long as what landed is whole.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use berth_content::Digest;
use sqlx::postgres::PgPoolOptions;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::helpers::{
    assert_oci_error, config_blob, location_path, manifest_over, put_ok, random_bytes, with_query,
    GatewayProcess, RegistryClient, TestDatabase, OCI_INDEX, OCI_MANIFEST,
};

const MIB: usize = 1024 * 1024;
const REPO: &str = "crash/app";

/// Writes a request head and the first part of its body on a new connection, and
/// returns the connection: the rest of the body never comes.
pub(crate) async fn stalled_request(
    host: &str,
    method: &str,
    path: &str,
    content_type: &str,
    extra_headers: &[(&str, String)],
    body: &[u8],
    sent: usize,
) -> TcpStream {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    for (name, value) in extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = TcpStream::connect(host).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..sent]).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

/// Bytes in upload staging files: how the test sees that stalled bodies have arrived.
pub(crate) fn staged_bytes(data_dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(data_dir.join("storage/uploads")) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Pushes a new config made unique by `nonce`; returns an image manifest over it and
/// `layer`, a blob already pushed.
async fn manifest_with_new_config(
    registry: &RegistryClient,
    nonce: &str,
    layer: &(Digest, usize),
) -> Vec<u8> {
    let config = config_blob(nonce);
    let config_digest = registry.push_blob(REPO, &config).await;
    manifest_over(&(config_digest, config.len()), std::slice::from_ref(layer))
}

/// A chunked upload left with some chunks accepted when the gateway died.
struct OpenUpload {
    location: String,
    /// Bytes the gateway acknowledged with 202 before the kill.
    accepted: usize,
    content: Vec<u8>,
}

#[tokio::test]
async fn a_killed_gateway_loses_no_completed_push_and_shows_no_partial_one() {
    let database = TestDatabase::create().await;
    let data_dir = tempfile::tempdir().unwrap();
    let mut gateway = GatewayProcess::start(&database.url, data_dir.path()).await;
    let registry = gateway.registry();

    // --- Completed before the kill -------------------------------------------------
    let mut completed_blobs: BTreeMap<Digest, Vec<u8>> = BTreeMap::new();
    for size in [1, 100_000, 3 * MIB + 5] {
        let bytes = random_bytes(size);
        completed_blobs.insert(registry.push_blob(REPO, &bytes).await, bytes);
    }
    let chunked = random_bytes(2 * MIB + MIB / 2);
    completed_blobs.insert(registry.push_chunked(REPO, &chunked, MIB).await, chunked);
    let post_put = random_bytes(MIB);
    completed_blobs.insert(registry.push_post_put(REPO, &post_put).await, post_put);

    // Two tagged images and an index over them.
    let mut completed_manifests: Vec<(String, Digest, Vec<u8>)> = Vec::new();
    let mut image_descriptors = Vec::new();
    for i in 0..2 {
        let config = config_blob(&format!("done-{i}"));
        let config_digest = registry.push_blob(REPO, &config).await;
        completed_blobs.insert(config_digest.clone(), config.clone());
        let mut layers = Vec::new();
        for size in [200_000, 50_000] {
            let layer = random_bytes(size);
            layers.push((registry.push_blob(REPO, &layer).await, size));
            completed_blobs.insert(layers.last().unwrap().0.clone(), layer);
        }
        let manifest = manifest_over(&(config_digest, config.len()), &layers);
        let tag = format!("done-{i}");
        let digest = put_ok(&registry, REPO, &tag, OCI_MANIFEST, &manifest).await;
        let architecture = ["amd64", "arm64"][i];
        image_descriptors.push(serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": digest.to_string(), "size": manifest.len(),
            "platform": {"architecture": architecture, "os": "linux"},
        }));
        completed_manifests.push((tag, digest, manifest));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": image_descriptors,
    }))
    .unwrap();
    let digest = put_ok(&registry, REPO, "done-index", OCI_INDEX, &index).await;
    completed_manifests.push(("done-index".into(), digest, index));

    // --- In flight at the kill -----------------------------------------------------
    let mut stalled = Vec::new();
    let mut expected_staged = 0usize;
    // Monolithic uploads stalled halfway and one byte short of the end.
    let mut stalled_blobs = Vec::new();
    for sent_fraction in [(1, 2), (1, 3), (1, 1)] {
        let bytes = random_bytes(4 * MIB);
        let digest = Digest::sha256_of(&bytes);
        let sent = if sent_fraction == (1, 1) {
            bytes.len() - 1
        } else {
            bytes.len() * sent_fraction.0 / sent_fraction.1
        };
        stalled.push(
            stalled_request(
                &gateway.host,
                "POST",
                &format!("/v2/{REPO}/blobs/uploads/?digest={digest}"),
                "application/octet-stream",
                &[],
                &bytes,
                sent,
            )
            .await,
        );
        expected_staged += sent;
        stalled_blobs.push(digest);
    }
    // POST, then a PUT with the whole blob as its body, stalled.
    {
        let bytes = random_bytes(3 * MIB);
        let digest = Digest::sha256_of(&bytes);
        let location = registry.start_upload(REPO).await;
        stalled.push(
            stalled_request(
                &gateway.host,
                "PUT",
                &with_query(&location, &format!("digest={digest}")),
                "application/octet-stream",
                &[],
                &bytes,
                2 * MIB,
            )
            .await,
        );
        expected_staged += 2 * MIB;
        stalled_blobs.push(digest);
    }
    // Chunked uploads with chunks accepted; two with a further PATCH stalled mid-body.
    let mut open_uploads = Vec::new();
    for (accepted_chunks, stall_next) in [(1, false), (2, true), (1, true)] {
        let content = random_bytes(3 * MIB + 1234);
        let mut location = registry.start_upload(REPO).await;
        for c in 0..accepted_chunks {
            location = registry
                .patch_chunk_ok(&location, c * MIB, &content[c * MIB..(c + 1) * MIB])
                .await;
        }
        let accepted = accepted_chunks * MIB;
        expected_staged += accepted;
        if stall_next {
            let next = &content[accepted..accepted + MIB];
            stalled.push(
                stalled_request(
                    &gateway.host,
                    "PATCH",
                    &location,
                    "application/octet-stream",
                    &[(
                        "Content-Range",
                        format!("{accepted}-{}", accepted + MIB - 1),
                    )],
                    next,
                    300_000,
                )
                .await,
            );
            expected_staged += 300_000;
        }
        open_uploads.push(OpenUpload {
            location,
            accepted,
            content,
        });
    }
    // Manifest pushes stalled mid-body, over complete blobs.
    let layer = completed_blobs
        .iter()
        .find(|(_, b)| b.len() == 100_000)
        .map(|(d, b)| (d.clone(), b.len()))
        .unwrap();
    let mut stalled_manifests = Vec::new();
    for i in 0..2 {
        let tag = format!("stalled-{i}");
        let manifest = manifest_with_new_config(&registry, &tag, &layer).await;
        stalled.push(
            stalled_request(
                &gateway.host,
                "PUT",
                &format!("/v2/{REPO}/manifests/{tag}"),
                OCI_MANIFEST,
                &[],
                &manifest,
                manifest.len() / 2,
            )
            .await,
        );
        stalled_manifests.push((tag, Digest::sha256_of(&manifest)));
    }
    // Complete requests racing the kill: each may or may not land, but one that was
    // acknowledged with 201 before the kill must survive it.
    let mut racing_manifests = Vec::new();
    for i in 0..4 {
        let tag = format!("racing-{i}");
        let manifest = manifest_with_new_config(&registry, &tag, &layer).await;
        let request = registry.put_manifest_request(REPO, &tag, OCI_MANIFEST, &manifest);
        racing_manifests.push((tag, manifest, tokio::spawn(acknowledged(request))));
    }
    let mut racing_blobs = Vec::new();
    for _ in 0..3 {
        let bytes = random_bytes(6 * MIB);
        let digest = Digest::sha256_of(&bytes);
        let request = registry.post_blob_request(REPO, &digest, &bytes);
        racing_blobs.push((digest, bytes, tokio::spawn(acknowledged(request))));
    }

    // Best effort, never asserted: give the gateway time to take in the stalled bodies,
    // so that the kill hits uploads with bytes on disk.
    for _ in 0..300 {
        if staged_bytes(data_dir.path()) >= expected_staged as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A moment for the racing requests to get under way; where the kill finds them
    // does not matter.
    tokio::time::sleep(Duration::from_millis(100)).await;
    eprintln!(
        "crash: {} of {expected_staged} stalled bytes staged at the kill",
        staged_bytes(data_dir.path())
    );

    // --- Kill and restart ----------------------------------------------------------
    gateway.kill();
    drop(stalled);
    let mut racing_manifest_acks = Vec::new();
    for (tag, manifest, racer) in racing_manifests {
        racing_manifest_acks.push((tag, manifest, racer.await.unwrap()));
    }
    let mut racing_blob_acks = Vec::new();
    for (digest, bytes, racer) in racing_blobs {
        racing_blob_acks.push((digest, bytes, racer.await.unwrap()));
    }
    let gateway = GatewayProcess::start(&database.url, data_dir.path()).await;
    let registry = gateway.registry();

    // Every completed blob is intact.
    for (digest, bytes) in &completed_blobs {
        registry.assert_blob(REPO, digest, bytes).await;
    }
    // Every completed manifest is intact, by tag and by digest.
    for (tag, digest, bytes) in &completed_manifests {
        for reference in [tag.clone(), digest.to_string()] {
            let (served_digest, _, body) = registry.pull_manifest(REPO, &reference).await;
            assert_eq!(&served_digest, digest, "{reference}");
            assert!(body == *bytes, "{reference}: other bytes");
        }
    }
    // No stalled blob is visible.
    for digest in &stalled_blobs {
        assert_eq!(
            registry.head_blob(REPO, digest).await.status(),
            404,
            "interrupted upload of {digest} is visible"
        );
    }
    // No stalled manifest is visible, by tag or by digest.
    for (tag, digest) in &stalled_manifests {
        registry.assert_no_manifest(REPO, tag).await;
        registry.assert_no_manifest(REPO, digest).await;
    }
    // A racing manifest landed whole with its tag, or not at all; acknowledged, it landed.
    for (tag, manifest, acknowledged) in &racing_manifest_acks {
        let digest = Digest::sha256_of(manifest);
        let by_tag = registry.get_manifest(REPO, tag).await;
        let by_digest = registry.head_manifest(REPO, &digest).await;
        eprintln!(
            "crash: racing manifest {tag} acknowledged: {acknowledged}, after the restart: {}",
            by_tag.status()
        );
        match by_tag.status().as_u16() {
            200 => {
                assert_eq!(
                    by_digest.status(),
                    200,
                    "{tag} is tagged but {digest} is not found"
                );
                assert_eq!(
                    by_tag.headers()["docker-content-digest"].to_str().unwrap(),
                    digest.to_string()
                );
                assert!(by_tag.bytes().await.unwrap()[..] == manifest[..], "{tag}");
            }
            404 => {
                assert!(
                    !acknowledged,
                    "{tag} was acknowledged with 201 before the kill and is lost"
                );
                assert_eq!(
                    by_digest.status(),
                    404,
                    "{digest} landed without its tag {tag}: the manifest and its tag must \
                     commit together"
                );
            }
            other => panic!("GET {tag} after restart: {other}"),
        }
    }
    // A racing blob landed whole or not at all; acknowledged, it landed.
    for (digest, bytes, acknowledged) in &racing_blob_acks {
        let response = registry.get_blob(REPO, digest).await;
        eprintln!(
            "crash: racing blob {digest} acknowledged: {acknowledged}, after the restart: {}",
            response.status()
        );
        match response.status().as_u16() {
            200 => assert!(response.bytes().await.unwrap()[..] == bytes[..], "{digest}"),
            404 => assert!(
                !acknowledged,
                "{digest} was acknowledged with 201 before the kill and is lost"
            ),
            other => panic!("GET racing blob {digest} after restart: {other}"),
        }
    }
    // Interrupted chunked uploads resume from exactly what was accepted, or are gone.
    for upload in &open_uploads {
        let digest = Digest::sha256_of(&upload.content);
        assert_eq!(
            registry.head_blob(REPO, &digest).await.status(),
            404,
            "unfinished upload {digest} is visible"
        );
        let status = registry.upload_status(&upload.location).await;
        if status.status() == 404 {
            assert_oci_error(status, 404, "BLOB_UPLOAD_UNKNOWN").await;
            eprintln!(
                "crash: upload {} is gone after the restart",
                upload.location
            );
            continue;
        }
        assert_eq!(
            status.status(),
            204,
            "GET upload status after restart: {}",
            status.text().await.unwrap()
        );
        let range = status
            .headers()
            .get("range")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            range,
            Some(format!("0-{}", upload.accepted - 1)),
            "the upload resumed with another size than the {} bytes accepted before the kill",
            upload.accepted
        );
        eprintln!(
            "crash: upload {} resumes after the restart",
            upload.location
        );
        let location = location_path(&status).unwrap_or_else(|| upload.location.clone());
        let location = registry
            .patch_chunk_ok(
                &location,
                upload.accepted,
                &upload.content[upload.accepted..],
            )
            .await;
        registry
            .complete_upload_ok(REPO, &location, &digest, &[])
            .await;
        registry.assert_blob(REPO, &digest, &upload.content).await;
    }

    // Storage: every blob file hashes to its name; every blob row has its file.
    let blobs_root = data_dir.path().join("storage/blobs/sha256");
    let mut stored_files = BTreeMap::new();
    for prefix in std::fs::read_dir(&blobs_root).unwrap() {
        let prefix = prefix.unwrap();
        for file in std::fs::read_dir(prefix.path()).unwrap() {
            let path = file.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(
                Digest::sha256_of(&bytes).hex(),
                name,
                "{} does not hash to its name",
                path.display()
            );
            stored_files.insert(format!("sha256:{name}"), bytes.len() as i64);
        }
    }
    let db = PgPoolOptions::new()
        .max_connections(1)
        .connect(&database.url)
        .await
        .unwrap();
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT digest, size FROM blobs")
        .fetch_all(&db)
        .await
        .unwrap();
    for (digest, size) in &rows {
        assert_eq!(
            stored_files.get(digest),
            Some(size),
            "blob row {digest} ({size} bytes) has no complete file in storage"
        );
    }
    for digest in &stalled_blobs {
        assert!(
            !rows.iter().any(|(d, _)| *d == digest.to_string()),
            "interrupted {digest} has a blobs row"
        );
    }
    db.close().await;

    // And the restarted gateway takes new pushes.
    let bytes = random_bytes(10_000);
    registry.push_blob(REPO, &bytes).await;
}

/// Sends a request that races the kill: whether the gateway answered 201 before it died.
async fn acknowledged(request: reqwest::RequestBuilder) -> bool {
    match request.send().await {
        Ok(response) => response.status() == 201,
        Err(_) => false,
    }
}
