//! Blob push over `/v2/<name>/blobs/uploads/`: monolithic, POST+PUT, chunked PATCH,
//! mounts, cancellation, expiry, and the faults an upload must survive (bad ranges,
//! wrong digests, clients that vanish mid-body, a gateway restart).

use std::time::Duration;

use berth_content::{Algorithm, Digest, DigestHasher};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::helpers::{
    assert_blob_created, assert_oci_error, assert_upload_accepted, random_bytes, serve_in_process,
    streamed, RegistryClient, TestApp,
};

/// The staging file of the upload at `location`.
fn upload_file(app: &TestApp, location: &str) -> std::path::PathBuf {
    let id = location.rsplit('/').next().unwrap();
    app.config.storage_root().join("uploads").join(id)
}

/// Asserts that the upload at `location` is unknown to every upload request.
async fn assert_upload_unknown(app: &TestApp, location: &str) {
    let response = app.upload_status(location).await;
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let response = app.patch_chunk(location, 0, b"abc").await;
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let response = app
        .complete_upload(location, Digest::sha256_of(b""), b"")
        .await;
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let response = app.cancel_upload(location).await;
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

/// A sha512 digest, which clients may choose instead of sha256.
fn sha512_of(bytes: &[u8]) -> Digest {
    let mut hasher = DigestHasher::new(Algorithm::Sha512);
    hasher.update(bytes);
    hasher.finish()
}

#[tokio::test]
async fn monolithic_post_creates_the_blob() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(4096);
    let digest = Digest::sha256_of(&bytes);
    let response = app.post_blob("mono/app", &digest, &bytes).await;
    assert_blob_created(response, "mono/app", &digest).await;
    app.assert_blob("mono/app", &digest, &bytes).await;
    // Nothing is left behind: no session row, no staging file.
    assert_eq!(app.count_rows("upload_sessions").await, 0);
    let staged = std::fs::read_dir(app.config.storage_root().join("uploads"))
        .unwrap()
        .count();
    assert_eq!(staged, 0);
    // Pushing the same blob again is not an error.
    assert_eq!(app.push_blob("mono/app", &bytes).await, digest);
}

#[tokio::test]
async fn monolithic_post_with_wrong_digest_leaves_nothing() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(100);
    let wrong = Digest::sha256_of(b"something else");
    let response = app.post_blob("mono", &wrong, &bytes).await;
    assert_oci_error(response, 400, "DIGEST_INVALID").await;
    assert_eq!(app.head_blob("mono", &wrong).await.status(), 404);
    assert_eq!(app.count_rows("upload_sessions").await, 0);
}

#[tokio::test]
async fn post_then_put_with_the_body() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(10_000);
    let digest = Digest::sha256_of(&bytes);
    let location = app.start_upload("two/step").await;
    app.complete_upload_ok("two/step", &location, &digest, &bytes)
        .await;
    app.assert_blob("two/step", &digest, &bytes).await;
    // The session ended with the upload.
    let response = app.upload_status(&location).await;
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert!(!upload_file(&app, &location).exists());
}

#[tokio::test]
async fn empty_blob_can_be_pushed() {
    let app = TestApp::spawn().await;
    let digest = Digest::sha256_of(b"");
    let location = app.start_upload("empty").await;
    app.complete_upload_ok("empty", &location, &digest, b"")
        .await;
    app.assert_blob("empty", &digest, b"").await;
}

#[tokio::test]
async fn chunked_upload_with_content_range_then_put() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(3 * 50_000 + 17);
    let digest = Digest::sha256_of(&bytes);
    let mut location = app.start_upload("chunked").await;
    let mut offset = 0;
    for chunk in bytes.chunks(50_006) {
        // Each answer holds the range so far; clients follow its Location.
        location = app.patch_chunk_ok(&location, offset, chunk).await;
        offset += chunk.len();
    }
    assert_eq!(offset, bytes.len());
    assert_eq!(
        app.upload_range(&location).await,
        format!("0-{}", bytes.len() - 1)
    );
    app.complete_upload_ok("chunked", &location, &digest, b"")
        .await;
    app.assert_blob("chunked", &digest, &bytes).await;
}

#[tokio::test]
async fn patch_without_content_range_appends_the_stream() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(300_000);
    let digest = Digest::sha256_of(&bytes);
    let location = app.start_upload("streamed").await;
    // A chunked-transfer body: no Content-Length, no Content-Range.
    let response = app.patch_body(&location, streamed(&bytes, 7_000)).await;
    assert_upload_accepted(response, 300_000).await;
    // A second streamed PATCH appends after the first, then PUT with a last chunk.
    let response = app.patch_body(&location, b"tail".to_vec()).await;
    assert_upload_accepted(response, 300_004).await;
    let mut all = bytes.clone();
    all.extend_from_slice(b"tail");
    all.extend_from_slice(b"final");
    let digest_all = Digest::sha256_of(&all);
    app.complete_upload_ok("streamed", &location, &digest_all, b"final")
        .await;
    app.assert_blob("streamed", &digest_all, &all).await;
    assert_eq!(app.head_blob("streamed", &digest).await.status(), 404);
}

#[tokio::test]
async fn content_range_gaps_and_overlaps_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(2_000);
    let location = app.start_upload("ranges").await;
    app.patch_chunk_ok(&location, 0, &bytes[..1_000]).await;

    // A gap: the chunk starts after the end of what the registry has.
    let response = app.patch_chunk(&location, 1_001, &bytes[1_001..]).await;
    assert_eq!(response.headers()["range"], "0-999");
    assert!(response.headers().contains_key("location"));
    assert_oci_error(response, 416, "RANGE_INVALID").await;
    // An overlap: it starts before.
    let response = app.patch_chunk(&location, 500, &bytes[500..]).await;
    assert_eq!(response.headers()["range"], "0-999");
    assert_oci_error(response, 416, "RANGE_INVALID").await;
    // A range whose length disagrees with the body, and one that is not a range at all.
    for (content_range, body) in [
        ("1000-1999", &bytes[1_000..1_500]),
        ("bytes=lots", &bytes[1_000..]),
    ] {
        let response = app
            .client
            .patch(app.url(&location))
            .header("Content-Range", content_range)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_oci_error(response, 416, "RANGE_INVALID").await;
    }

    assert_eq!(app.upload_range(&location).await, "0-999");
    // The upload continues from where it really is.
    app.patch_chunk_ok(&location, 1_000, &bytes[1_000..]).await;
    let digest = Digest::sha256_of(&bytes);
    app.complete_upload_ok("ranges", &location, &digest, b"")
        .await;
    app.assert_blob("ranges", &digest, &bytes).await;
}

#[tokio::test]
async fn wrong_digest_discards_the_upload() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(5_000);
    let location = app.start_upload("wrong").await;
    app.patch_chunk_ok(&location, 0, &bytes).await;
    let claimed = Digest::sha256_of(b"not these bytes");
    let response = app.complete_upload(&location, &claimed, b"").await;
    assert_oci_error(response, 400, "DIGEST_INVALID").await;
    // Neither the claimed nor the real digest became visible, and the session is gone.
    assert_eq!(app.head_blob("wrong", &claimed).await.status(), 404);
    let real = Digest::sha256_of(&bytes);
    assert_eq!(app.head_blob("wrong", &real).await.status(), 404);
    let response = app.upload_status(&location).await;
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert!(!upload_file(&app, &location).exists());
    assert_eq!(app.count_rows("blobs").await, 0);
}

#[tokio::test]
async fn missing_malformed_and_unsupported_digests_are_refused() {
    let app = TestApp::spawn().await;
    let location = app.start_upload("digests").await;
    app.patch_chunk_ok(&location, 0, b"abc").await;

    let response = app.client.put(app.url(&location)).send().await.unwrap();
    let message = assert_oci_error(response, 400, "DIGEST_INVALID").await;
    assert!(message.contains("digest"), "{message}");
    let response = app.complete_upload(&location, "sha256:nothex", b"").await;
    assert_oci_error(response, 400, "DIGEST_INVALID").await;
    let md5 = "md5:900150983cd24fb0d6963f7d28e17f72";
    let response = app.complete_upload(&location, md5, b"").await;
    let message = assert_oci_error(response, 400, "DIGEST_INVALID").await;
    assert!(message.contains("unsupported"), "{message}");
    // A monolithic push with an unsupported algorithm creates nothing.
    let response = app.post_blob("digests", md5, b"abc").await;
    assert_oci_error(response, 400, "DIGEST_INVALID").await;

    // A digest the client can still correct keeps the session.
    assert_eq!(app.upload_range(&location).await, "0-2");
    let response = app
        .complete_upload(&location, Digest::sha256_of(b"abc"), b"")
        .await;
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn sha512_uploads_are_verified_with_sha512() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(70_000);
    let digest = sha512_of(&bytes);

    // Chunked: the chunks are hashed as sha256 while they stream; completion re-hashes.
    let location = app.start_upload("sha512").await;
    app.patch_chunk_ok(&location, 0, &bytes[..40_000]).await;
    app.complete_upload_ok("sha512", &location, &digest, &bytes[40_000..])
        .await;
    app.assert_blob("sha512", &digest, &bytes).await;

    // Monolithic: hashed as sha512 from the first byte.
    let other = random_bytes(1_000);
    let other_digest = sha512_of(&other);
    let response = app.post_blob("sha512", &other_digest, &other).await;
    assert_blob_created(response, "sha512", &other_digest).await;
    app.assert_blob("sha512", &other_digest, &other).await;
}

#[tokio::test]
async fn unknown_and_foreign_upload_ids_are_unknown() {
    let app = TestApp::spawn().await;
    let unknown = format!("/v2/repo/blobs/uploads/{}", uuid::Uuid::new_v4());
    assert_upload_unknown(&app, &unknown).await;
    let response = app.upload_status("/v2/repo/blobs/uploads/not-a-uuid").await;
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;

    // An upload started in one repository cannot be used through another.
    let location = app.start_upload("owner").await;
    let foreign = location.replace("/v2/owner/", "/v2/intruder/");
    assert_upload_unknown(&app, &foreign).await;
    // And the owner's upload is untouched.
    assert_eq!(app.upload_range(&location).await, "0-0");
}

#[tokio::test]
async fn cancel_removes_the_upload_and_its_data() {
    let app = TestApp::spawn().await;
    let location = app.start_upload("cancel").await;
    app.patch_chunk_ok(&location, 0, &random_bytes(1_000)).await;
    assert!(upload_file(&app, &location).exists());
    let response = app.cancel_upload(&location).await;
    assert_eq!(response.status(), 204);
    assert!(!upload_file(&app, &location).exists());
    let response = app.upload_status(&location).await;
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let response = app.patch_chunk(&location, 1_000, b"more").await;
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn mount_from_another_repository() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(2_000);
    let digest = app.push_blob("source/repo", &bytes).await;
    assert_eq!(app.head_blob("target/repo", &digest).await.status(), 404);

    let response = app
        .mount_blob("target/repo", &digest, Some("source/repo"))
        .await;
    assert_blob_created(response, "target/repo", &digest).await;
    app.assert_blob("target/repo", &digest, &bytes).await;

    // From a repository that does not link the blob: a normal upload starts instead.
    let response = app.mount_blob("third", &digest, Some("elsewhere")).await;
    assert_eq!(response.status(), 202);
    assert!(response.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/v2/third/blobs/uploads/"));
    assert_eq!(app.head_blob("third", &digest).await.status(), 404);
}

#[tokio::test]
async fn mount_without_from_uses_any_known_blob() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(2_000);
    let digest = app.push_blob("somewhere", &bytes).await;
    let response = app.mount_blob("anywhere", &digest, None).await;
    assert_blob_created(response, "anywhere", &digest).await;
    app.assert_blob("anywhere", &digest, &bytes).await;

    // A blob the registry has never seen: fall back to an upload session.
    let unknown = Digest::sha256_of(b"never pushed");
    let response = app.mount_blob("anywhere", &unknown, None).await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    app.complete_upload_ok("anywhere", &location, &unknown, b"never pushed")
        .await;
    app.assert_blob("anywhere", &unknown, b"never pushed").await;

    // A malformed mount digest is the client's error.
    let response = app
        .mount_blob("anywhere", "sha256:xyz", Some("somewhere"))
        .await;
    assert_oci_error(response, 400, "DIGEST_INVALID").await;
}

#[tokio::test]
async fn client_disconnecting_mid_patch_leaves_the_upload_resumable() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(200_000);
    let location = app.start_upload("vanish").await;
    app.patch_chunk_ok(&location, 0, &bytes[..100_000]).await;

    // A streamed PATCH that promises 500 000 bytes, sends 150 000 of garbage (more than
    // the rest of the blob, so the garbage outlives the resumed chunk on disk), and
    // hangs up.
    let mut stream = TcpStream::connect(&app.host).await.unwrap();
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: 500000\r\n\r\n",
        app.host
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&random_bytes(150_000)).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(stream);

    // The registry still has exactly the first chunk…
    assert_eq!(app.upload_range(&location).await, "0-99999");
    // …and the upload resumes from there (waiting for the failed PATCH to let go of
    // the upload) and completes with the right digest: neither the garbage bytes on
    // disk nor the hasher that saw them count.
    app.patch_chunk_ok(&location, 100_000, &bytes[100_000..])
        .await;
    let digest = Digest::sha256_of(&bytes);
    app.complete_upload_ok("vanish", &location, &digest, b"")
        .await;
    app.assert_blob("vanish", &digest, &bytes).await;
}

#[tokio::test]
async fn body_shorter_than_content_length_is_size_invalid() {
    let app = TestApp::spawn().await;
    let location = app.start_upload("short").await;
    app.patch_chunk_ok(&location, 0, b"abc").await;
    // Announce 1 000 bytes, send 400, and close our sending side while still reading.
    let mut stream = TcpStream::connect(&app.host).await.unwrap();
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: {}\r\nContent-Length: 1000\r\n\r\n",
        app.host
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&random_bytes(400)).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer)
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("SIZE_INVALID"), "{answer}");
    assert_eq!(app.upload_range(&location).await, "0-2");
}

#[tokio::test]
async fn uploads_survive_a_restart() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(3 * 64 * 1024);
    let digest = Digest::sha256_of(&bytes);
    let location = app.start_upload("restart").await;
    app.patch_chunk_ok(&location, 0, &bytes[..65_536]).await;

    // Another gateway on the same database and storage has no cached hasher: it
    // rebuilds it from the stored bytes.
    let (address, state) = serve_in_process(&app.config).await;
    let second = RegistryClient::new(&address);
    assert_eq!(second.upload_range(&location).await, "0-65535");
    second
        .patch_chunk_ok(&location, 65_536, &bytes[65_536..131_072])
        .await;
    assert_eq!(state.hashers.len(), 1);
    // Back on the first gateway, its cached hasher is at the wrong offset: it must not
    // be used. Then the second forgets everything, as a restart would.
    app.patch_chunk_ok(&location, 131_072, &bytes[131_072..163_840])
        .await;
    state.hashers.clear();
    second
        .complete_upload_ok("restart", &location, &digest, &bytes[163_840..])
        .await;
    app.assert_blob("restart", &digest, &bytes).await;
}

#[tokio::test]
async fn concurrent_patches_to_one_upload_do_not_corrupt_it() {
    let app = TestApp::spawn().await;
    let location = app.start_upload("race").await;
    let chunk = random_bytes(64 * 1024);
    // Eight clients race to write the same first chunk; exactly one wins, the others
    // are told the range moved.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (registry, location, chunk) = (app.registry.clone(), location.clone(), chunk.clone());
        tasks.push(tokio::spawn(async move {
            let response = registry.patch_chunk(&location, 0, &chunk).await;
            response.status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, vec![202, 416, 416, 416, 416, 416, 416, 416]);
    assert_eq!(app.upload_range(&location).await, "0-65535");
    let digest = Digest::sha256_of(&chunk);
    let response = app.complete_upload(&location, &digest, b"").await;
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn expired_uploads_are_unknown_and_their_data_gone() {
    let app = TestApp::spawn().await;
    let location = app.start_upload("expire").await;
    app.patch_chunk_ok(&location, 0, b"abc").await;
    let fresh = app.start_upload("expire").await;
    assert!(upload_file(&app, &location).exists());
    // Age one session by a day; the other stays fresh.
    let id: uuid::Uuid = location.rsplit('/').next().unwrap().parse().unwrap();
    sqlx::query("UPDATE upload_sessions SET updated_at = now() - interval '1 day' WHERE id = $1")
        .bind(id)
        .execute(&app.db)
        .await
        .unwrap();

    let (_, state) = serve_in_process(&app.config).await;
    let expired = berth_gateway::v2::uploads::expire_uploads(&state, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(expired, 1);
    assert!(!upload_file(&app, &location).exists());
    let response = app.upload_status(&location).await;
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let response = app.patch_chunk(&location, 3, b"def").await;
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_eq!(app.upload_range(&fresh).await, "0-0");
}

#[tokio::test]
async fn the_gateway_sweeps_expired_uploads_by_itself() {
    let app = TestApp::spawn_with(|c| {
        c.uploads.expire_after_secs = 1;
        c.uploads.sweep_interval_secs = 1;
    })
    .await;
    let location = app.start_upload("sweep").await;
    assert!(upload_file(&app, &location).exists());
    let mut gone = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !upload_file(&app, &location).exists() {
            gone = true;
            break;
        }
    }
    assert!(gone, "the sweeper did not remove the expired upload");
    let response = app.upload_status(&location).await;
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn large_blob_streams_in_and_out() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(20 * 1024 * 1024);
    let digest = Digest::sha256_of(&bytes);
    let location = app.start_upload("large").await;
    // Streamed in 1 MiB pieces without Content-Length, so the gateway cannot buffer by
    // size; then completed with an empty PUT.
    let response = app
        .patch_body(&location, streamed(&bytes, 1024 * 1024))
        .await;
    assert_upload_accepted(response, bytes.len()).await;
    app.complete_upload_ok("large", &location, &digest, b"")
        .await;

    // Read back as a stream, hashing as it arrives.
    use futures::StreamExt;
    let response = app.get_blob("large", &digest).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-length"],
        (20 * 1024 * 1024).to_string().as_str()
    );
    let mut hasher = DigestHasher::new(Algorithm::Sha256);
    let mut received = 0usize;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        received += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!(received, bytes.len());
    assert_eq!(hasher.finish(), digest);
}
