//! Blob push over `/v2/<name>/blobs/uploads/`: monolithic, POST+PUT, chunked PATCH,
//! mounts, cancellation, expiry, and the faults an upload must survive (bad ranges,
//! wrong digests, clients that vanish mid-body, a gateway restart).

use std::time::Duration;

use berth_content::{Algorithm, Digest, DigestHasher};
use berth_gateway::config::Config;
use berth_gateway::state::AppState;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{assert_oci_error, random_bytes, TestApp};

/// Starts a new upload in `repo`; returns its absolute URL.
async fn start_upload(app: &TestApp, repo: &str) -> String {
    let response = app
        .client
        .post(app.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    let headers = response.headers();
    assert_eq!(headers["range"], "0-0");
    assert_eq!(headers["content-length"], "0");
    let location = headers["location"].to_str().unwrap();
    assert!(
        location.starts_with(&format!("/v2/{repo}/blobs/uploads/")),
        "{location}"
    );
    let uuid = headers["docker-upload-uuid"].to_str().unwrap();
    assert!(location.ends_with(uuid));
    app.location_url(location)
}

/// PATCHes a chunk with `Content-Range`; returns the response.
async fn patch_chunk(app: &TestApp, url: &str, start: usize, chunk: &[u8]) -> reqwest::Response {
    app.client
        .patch(url)
        .header("Content-Type", "application/octet-stream")
        .header(
            "Content-Range",
            format!("{start}-{}", start + chunk.len() - 1),
        )
        .body(chunk.to_vec())
        .send()
        .await
        .unwrap()
}

/// PUTs `?digest=` with an optional final chunk.
async fn put_digest(app: &TestApp, url: &str, digest: &str, body: &[u8]) -> reqwest::Response {
    let url = with_query(url, &format!("digest={digest}"));
    app.client
        .put(url)
        .header("Content-Type", "application/octet-stream")
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

fn with_query(url: &str, query: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{query}")
}

/// The upload's reported `Range`, via `GET` on its URL.
async fn upload_range(app: &TestApp, url: &str) -> String {
    let response = app.client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 204, "{}", response.text().await.unwrap());
    assert!(response.headers().contains_key("location"));
    assert!(response.headers().contains_key("docker-upload-uuid"));
    response.headers()["range"].to_str().unwrap().to_owned()
}

async fn assert_blob(app: &TestApp, repo: &str, bytes: &[u8], digest: &Digest) {
    let response = app
        .client
        .get(app.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["docker-content-digest"],
        digest.to_string()
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), bytes);
}

async fn head_status(app: &TestApp, repo: &str, digest: &Digest) -> u16 {
    app.client
        .head(app.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn upload_file(app: &TestApp, url: &str) -> std::path::PathBuf {
    let id = url.rsplit('/').next().unwrap();
    app.config.storage_root().join("uploads").join(id)
}

/// A second gateway on the same database and data directory, with empty upload
/// caches: what a restart or another replica looks like to an upload in progress.
async fn second_gateway(config: &Config) -> (String, AppState) {
    let state = berth_gateway::build_state(config.clone())
        .await
        .expect("second gateway starts");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(berth_gateway::serve(
        listener,
        state.clone(),
        std::future::pending(),
    ));
    (address, state)
}

#[tokio::test]
async fn monolithic_post_creates_the_blob() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(4096);
    let digest = Digest::sha256_of(&bytes);
    let response = app
        .client
        .post(app.url(&format!("/v2/mono/app/blobs/uploads/?digest={digest}")))
        .header("Content-Type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.headers()["location"],
        format!("/v2/mono/app/blobs/{digest}").as_str()
    );
    assert_eq!(
        response.headers()["docker-content-digest"],
        digest.to_string()
    );
    assert_blob(&app, "mono/app", &bytes, &digest).await;
    // Nothing is left behind: no session row, no staging file.
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM upload_sessions")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(sessions, 0);
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
    let response = app
        .client
        .post(app.url(&format!("/v2/mono/blobs/uploads/?digest={wrong}")))
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_oci_error(response, 400, "DIGEST_INVALID").await;
    assert_eq!(head_status(&app, "mono", &wrong).await, 404);
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM upload_sessions")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(sessions, 0);
}

#[tokio::test]
async fn post_then_put_with_the_body() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(10_000);
    let digest = Digest::sha256_of(&bytes);
    let url = start_upload(&app, "two/step").await;
    let response = put_digest(&app, &url, &digest.to_string(), &bytes).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    assert_eq!(
        response.headers()["location"],
        format!("/v2/two/step/blobs/{digest}").as_str()
    );
    assert_eq!(
        response.headers()["docker-content-digest"],
        digest.to_string()
    );
    assert_blob(&app, "two/step", &bytes, &digest).await;
    // The session ended with the upload.
    let response = app.client.get(&url).send().await.unwrap();
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert!(!upload_file(&app, &url).exists());
}

#[tokio::test]
async fn empty_blob_can_be_pushed() {
    let app = TestApp::spawn().await;
    let digest = Digest::sha256_of(b"");
    let url = start_upload(&app, "empty").await;
    let response = put_digest(&app, &url, &digest.to_string(), b"").await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    assert_blob(&app, "empty", b"", &digest).await;
}

#[tokio::test]
async fn chunked_upload_with_content_range_then_put() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(3 * 50_000 + 17);
    let digest = Digest::sha256_of(&bytes);
    let url = start_upload(&app, "chunked").await;
    let mut offset = 0;
    let mut location = url.clone();
    for chunk in bytes.chunks(50_006) {
        let response = patch_chunk(&app, &location, offset, chunk).await;
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
        offset += chunk.len();
        assert_eq!(
            response.headers()["range"],
            format!("0-{}", offset - 1).as_str()
        );
        // Clients follow the Location of each answer.
        location = app.location_url(response.headers()["location"].to_str().unwrap());
    }
    assert_eq!(offset, bytes.len());
    assert_eq!(
        upload_range(&app, &location).await,
        format!("0-{}", bytes.len() - 1)
    );
    let response = put_digest(&app, &location, &digest.to_string(), b"").await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    assert_blob(&app, "chunked", &bytes, &digest).await;
}

#[tokio::test]
async fn patch_without_content_range_appends_the_stream() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(300_000);
    let digest = Digest::sha256_of(&bytes);
    let url = start_upload(&app, "streamed").await;
    // A chunked-transfer body: no Content-Length, no Content-Range.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(7_000).map(|c| Ok(c.to_vec())).collect();
    let response = app
        .client
        .patch(&url)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    assert_eq!(response.headers()["range"], "0-299999");
    // A second streamed PATCH appends after the first, then PUT with a last chunk.
    let response = app
        .client
        .patch(&url)
        .body(b"tail".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["range"], "0-300003");
    let mut all = bytes.clone();
    all.extend_from_slice(b"tail");
    all.extend_from_slice(b"final");
    let digest_all = Digest::sha256_of(&all);
    let response = put_digest(&app, &url, &digest_all.to_string(), b"final").await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    assert_blob(&app, "streamed", &all, &digest_all).await;
    assert_eq!(head_status(&app, "streamed", &digest).await, 404);
}

#[tokio::test]
async fn content_range_gaps_and_overlaps_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(2_000);
    let url = start_upload(&app, "ranges").await;
    assert_eq!(
        patch_chunk(&app, &url, 0, &bytes[..1_000]).await.status(),
        202
    );

    // A gap: the chunk starts after the end of what the registry has.
    let response = patch_chunk(&app, &url, 1_001, &bytes[1_001..]).await;
    assert_eq!(response.headers()["range"], "0-999");
    assert!(response.headers().contains_key("location"));
    assert_oci_error(response, 416, "RANGE_INVALID").await;
    // An overlap: it starts before.
    let response = patch_chunk(&app, &url, 500, &bytes[500..]).await;
    assert_eq!(response.headers()["range"], "0-999");
    assert_oci_error(response, 416, "RANGE_INVALID").await;
    // A range whose length disagrees with the body.
    let response = app
        .client
        .patch(&url)
        .header("Content-Range", "1000-1999")
        .body(bytes[1_000..1_500].to_vec())
        .send()
        .await
        .unwrap();
    assert_oci_error(response, 416, "RANGE_INVALID").await;
    // And one that is not a range at all.
    let response = app
        .client
        .patch(&url)
        .header("Content-Range", "bytes=lots")
        .body(bytes[1_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_oci_error(response, 416, "RANGE_INVALID").await;

    assert_eq!(upload_range(&app, &url).await, "0-999");
    // The upload continues from where it really is.
    assert_eq!(
        patch_chunk(&app, &url, 1_000, &bytes[1_000..])
            .await
            .status(),
        202
    );
    let digest = Digest::sha256_of(&bytes);
    let response = put_digest(&app, &url, &digest.to_string(), b"").await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    assert_blob(&app, "ranges", &bytes, &digest).await;
}

#[tokio::test]
async fn wrong_digest_discards_the_upload() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(5_000);
    let url = start_upload(&app, "wrong").await;
    assert_eq!(patch_chunk(&app, &url, 0, &bytes).await.status(), 202);
    let claimed = Digest::sha256_of(b"not these bytes");
    let response = put_digest(&app, &url, &claimed.to_string(), b"").await;
    assert_oci_error(response, 400, "DIGEST_INVALID").await;
    // Neither the claimed nor the real digest became visible, and the session is gone.
    assert_eq!(head_status(&app, "wrong", &claimed).await, 404);
    assert_eq!(
        head_status(&app, "wrong", &Digest::sha256_of(&bytes)).await,
        404
    );
    let response = app.client.get(&url).send().await.unwrap();
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert!(!upload_file(&app, &url).exists());
    let blobs: i64 = sqlx::query_scalar("SELECT count(*) FROM blobs")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(blobs, 0);
}

#[tokio::test]
async fn missing_malformed_and_unsupported_digests_are_refused() {
    let app = TestApp::spawn().await;
    let url = start_upload(&app, "digests").await;
    assert_eq!(patch_chunk(&app, &url, 0, b"abc").await.status(), 202);

    let response = app.client.put(&url).send().await.unwrap();
    let message = assert_oci_error(response, 400, "DIGEST_INVALID").await;
    assert!(message.contains("digest"), "{message}");
    let response = put_digest(&app, &url, "sha256:nothex", b"").await;
    assert_oci_error(response, 400, "DIGEST_INVALID").await;
    let response = put_digest(&app, &url, "md5:900150983cd24fb0d6963f7d28e17f72", b"").await;
    let message = assert_oci_error(response, 400, "DIGEST_INVALID").await;
    assert!(message.contains("unsupported"), "{message}");
    // A monolithic push with an unsupported algorithm creates nothing.
    let response = app
        .client
        .post(app.url("/v2/digests/blobs/uploads/?digest=md5:900150983cd24fb0d6963f7d28e17f72"))
        .body(b"abc".to_vec())
        .send()
        .await
        .unwrap();
    assert_oci_error(response, 400, "DIGEST_INVALID").await;

    // A digest the client can still correct keeps the session.
    assert_eq!(upload_range(&app, &url).await, "0-2");
    let response = put_digest(&app, &url, &Digest::sha256_of(b"abc").to_string(), b"").await;
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn sha512_uploads_are_verified_with_sha512() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(70_000);
    let mut hasher = DigestHasher::new(Algorithm::Sha512);
    hasher.update(&bytes);
    let digest = hasher.finish();

    // Chunked: the chunks are hashed as sha256 while they stream; completion re-hashes.
    let url = start_upload(&app, "sha512").await;
    assert_eq!(
        patch_chunk(&app, &url, 0, &bytes[..40_000]).await.status(),
        202
    );
    let response = put_digest(&app, &url, &digest.to_string(), &bytes[40_000..]).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    assert_blob(&app, "sha512", &bytes, &digest).await;

    // Monolithic: hashed as sha512 from the first byte.
    let other = random_bytes(1_000);
    let mut hasher = DigestHasher::new(Algorithm::Sha512);
    hasher.update(&other);
    let other_digest = hasher.finish();
    let response = app
        .client
        .post(app.url(&format!("/v2/sha512/blobs/uploads/?digest={other_digest}")))
        .body(other.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    assert_blob(&app, "sha512", &other, &other_digest).await;
}

#[tokio::test]
async fn unknown_and_foreign_upload_ids_are_unknown() {
    let app = TestApp::spawn().await;
    let unknown = app.url(&format!("/v2/repo/blobs/uploads/{}", uuid::Uuid::new_v4()));
    let response = app.client.get(&unknown).send().await.unwrap();
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let response = patch_chunk(&app, &unknown, 0, b"abc").await;
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let response = put_digest(&app, &unknown, &Digest::sha256_of(b"").to_string(), b"").await;
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let response = app.client.delete(&unknown).send().await.unwrap();
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let response = app
        .client
        .get(app.url("/v2/repo/blobs/uploads/not-a-uuid"))
        .send()
        .await
        .unwrap();
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;

    // An upload started in one repository cannot be used through another.
    let url = start_upload(&app, "owner").await;
    let foreign = url.replace("/v2/owner/", "/v2/intruder/");
    let response = app.client.get(&foreign).send().await.unwrap();
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let response = patch_chunk(&app, &foreign, 0, b"abc").await;
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let response = put_digest(&app, &foreign, &Digest::sha256_of(b"").to_string(), b"").await;
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let response = app.client.delete(&foreign).send().await.unwrap();
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
    // And the owner's upload is untouched.
    assert_eq!(upload_range(&app, &url).await, "0-0");
}

#[tokio::test]
async fn cancel_removes_the_upload_and_its_data() {
    let app = TestApp::spawn().await;
    let url = start_upload(&app, "cancel").await;
    assert_eq!(
        patch_chunk(&app, &url, 0, &random_bytes(1_000))
            .await
            .status(),
        202
    );
    assert!(upload_file(&app, &url).exists());
    let response = app.client.delete(&url).send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert!(!upload_file(&app, &url).exists());
    let response = app.client.get(&url).send().await.unwrap();
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let response = patch_chunk(&app, &url, 1_000, b"more").await;
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn mount_from_another_repository() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(2_000);
    let digest = app.push_blob("source/repo", &bytes).await;
    assert_eq!(head_status(&app, "target/repo", &digest).await, 404);

    let response = app
        .client
        .post(app.url(&format!(
            "/v2/target/repo/blobs/uploads/?mount={digest}&from=source/repo"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    assert_eq!(
        response.headers()["location"],
        format!("/v2/target/repo/blobs/{digest}").as_str()
    );
    assert_eq!(
        response.headers()["docker-content-digest"],
        digest.to_string()
    );
    assert_blob(&app, "target/repo", &bytes, &digest).await;

    // From a repository that does not link the blob: a normal upload starts instead.
    let response = app
        .client
        .post(app.url(&format!(
            "/v2/third/blobs/uploads/?mount={digest}&from=elsewhere"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert!(response.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/v2/third/blobs/uploads/"));
    assert_eq!(head_status(&app, "third", &digest).await, 404);
}

#[tokio::test]
async fn mount_without_from_uses_any_known_blob() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(2_000);
    let digest = app.push_blob("somewhere", &bytes).await;
    let response = app
        .client
        .post(app.url(&format!("/v2/anywhere/blobs/uploads/?mount={digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    assert_blob(&app, "anywhere", &bytes, &digest).await;

    // A blob the registry has never seen: fall back to an upload session.
    let unknown = Digest::sha256_of(b"never pushed");
    let response = app
        .client
        .post(app.url(&format!("/v2/anywhere/blobs/uploads/?mount={unknown}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let location = app.location_url(response.headers()["location"].to_str().unwrap());
    let response = put_digest(&app, &location, &unknown.to_string(), b"never pushed").await;
    assert_eq!(response.status(), 201);
    assert_blob(&app, "anywhere", b"never pushed", &unknown).await;

    // A malformed mount digest is the client's error.
    let response = app
        .client
        .post(app.url("/v2/anywhere/blobs/uploads/?mount=sha256:xyz&from=somewhere"))
        .send()
        .await
        .unwrap();
    assert_oci_error(response, 400, "DIGEST_INVALID").await;
}

#[tokio::test]
async fn client_disconnecting_mid_patch_leaves_the_upload_resumable() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(200_000);
    let url = start_upload(&app, "vanish").await;
    assert_eq!(
        patch_chunk(&app, &url, 0, &bytes[..100_000]).await.status(),
        202
    );

    // A streamed PATCH that promises 500 000 bytes, sends 150 000 of garbage (more than
    // the rest of the blob, so the garbage outlives the resumed chunk on disk), and
    // hangs up.
    let path = url.trim_start_matches(&app.address).to_owned();
    let mut stream = TcpStream::connect(&app.host).await.unwrap();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: 500000\r\n\r\n",
        app.host
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&random_bytes(150_000)).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(stream);

    // The registry still has exactly the first chunk…
    assert_eq!(upload_range(&app, &url).await, "0-99999");
    // …and the upload resumes from there (waiting for the failed PATCH to let go of
    // the upload) and completes with the right digest: neither the garbage bytes on
    // disk nor the hasher that saw them count.
    let response = patch_chunk(&app, &url, 100_000, &bytes[100_000..]).await;
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    let digest = Digest::sha256_of(&bytes);
    let response = put_digest(&app, &url, &digest.to_string(), b"").await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    assert_blob(&app, "vanish", &bytes, &digest).await;
}

#[tokio::test]
async fn body_shorter_than_content_length_is_size_invalid() {
    let app = TestApp::spawn().await;
    let url = start_upload(&app, "short").await;
    assert_eq!(patch_chunk(&app, &url, 0, b"abc").await.status(), 202);
    // Announce 1 000 bytes, send 400, and close our sending side while still reading.
    let path = url.trim_start_matches(&app.address).to_owned();
    let mut stream = TcpStream::connect(&app.host).await.unwrap();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 1000\r\n\r\n",
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
    assert_eq!(upload_range(&app, &url).await, "0-2");
}

#[tokio::test]
async fn uploads_survive_a_restart() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(3 * 64 * 1024);
    let digest = Digest::sha256_of(&bytes);
    let url = start_upload(&app, "restart").await;
    assert_eq!(
        patch_chunk(&app, &url, 0, &bytes[..65_536]).await.status(),
        202
    );

    // Another gateway on the same database and storage has no cached hasher: it
    // rebuilds it from the stored bytes.
    let (second, state) = second_gateway(&app.config).await;
    let path = url.trim_start_matches(&app.address).to_owned();
    let second_url = format!("{second}{path}");
    assert_eq!(upload_range(&app, &second_url).await, "0-65535");
    let response = patch_chunk(&app, &second_url, 65_536, &bytes[65_536..131_072]).await;
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    assert_eq!(state.hashers.len(), 1);
    // Back on the first gateway, its cached hasher is at the wrong offset: it must not
    // be used. Then the second forgets everything, as a restart would.
    let response = patch_chunk(&app, &url, 131_072, &bytes[131_072..163_840]).await;
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    state.hashers.clear();
    let response = put_digest(&app, &second_url, &digest.to_string(), &bytes[163_840..]).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    assert_blob(&app, "restart", &bytes, &digest).await;
}

#[tokio::test]
async fn concurrent_patches_to_one_upload_do_not_corrupt_it() {
    let app = TestApp::spawn().await;
    let url = start_upload(&app, "race").await;
    let chunk = random_bytes(64 * 1024);
    // Eight clients race to write the same first chunk; exactly one wins, the others
    // are told the range moved.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, url, chunk) = (app.client.clone(), url.clone(), chunk.clone());
        tasks.push(tokio::spawn(async move {
            client
                .patch(&url)
                .header("Content-Range", format!("0-{}", chunk.len() - 1))
                .body(chunk)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, vec![202, 416, 416, 416, 416, 416, 416, 416]);
    assert_eq!(upload_range(&app, &url).await, "0-65535");
    let digest = Digest::sha256_of(&chunk);
    let response = put_digest(&app, &url, &digest.to_string(), b"").await;
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn expired_uploads_are_unknown_and_their_data_gone() {
    let app = TestApp::spawn().await;
    let url = start_upload(&app, "expire").await;
    assert_eq!(patch_chunk(&app, &url, 0, b"abc").await.status(), 202);
    let fresh = start_upload(&app, "expire").await;
    assert!(upload_file(&app, &url).exists());
    // Age one session by a day; the other stays fresh.
    let id: uuid::Uuid = url.rsplit('/').next().unwrap().parse().unwrap();
    sqlx::query("UPDATE upload_sessions SET updated_at = now() - interval '1 day' WHERE id = $1")
        .bind(id)
        .execute(&app.db)
        .await
        .unwrap();

    let (_, state) = second_gateway(&app.config).await;
    let expired = berth_gateway::v2::uploads::expire_uploads(&state, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(expired, 1);
    assert!(!upload_file(&app, &url).exists());
    let response = app.client.get(&url).send().await.unwrap();
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let response = patch_chunk(&app, &url, 3, b"def").await;
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_eq!(upload_range(&app, &fresh).await, "0-0");
}

#[tokio::test]
async fn the_gateway_sweeps_expired_uploads_by_itself() {
    let app = TestApp::spawn_with(|c| {
        c.uploads.expire_after_secs = 1;
        c.uploads.sweep_interval_secs = 1;
    })
    .await;
    let url = start_upload(&app, "sweep").await;
    assert!(upload_file(&app, &url).exists());
    let mut gone = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !upload_file(&app, &url).exists() {
            gone = true;
            break;
        }
    }
    assert!(gone, "the sweeper did not remove the expired upload");
    let response = app.client.get(&url).send().await.unwrap();
    assert_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn large_blob_streams_in_and_out() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(20 * 1024 * 1024);
    let digest = Digest::sha256_of(&bytes);
    let url = start_upload(&app, "large").await;
    // Streamed in 1 MiB pieces without Content-Length, so the gateway cannot buffer by
    // size; then completed with an empty PUT.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(1024 * 1024).map(|c| Ok(c.to_vec())).collect();
    let response = app
        .client
        .patch(&url)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    let response = put_digest(&app, &url, &digest.to_string(), b"").await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());

    // Read back as a stream, hashing as it arrives.
    use futures::StreamExt;
    let response = app
        .client
        .get(app.url(&format!("/v2/large/blobs/{digest}")))
        .send()
        .await
        .unwrap();
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
