//! Blob pull (`GET`/`HEAD`, `Range`) and delete on `/v2/<name>/blobs/<digest>`.

use berth_content::Digest;

use crate::helpers::{assert_oci_error, random_bytes, TestApp};

/// `GET` of the blob with a `Range` header.
async fn get_range(app: &TestApp, repo: &str, digest: &Digest, range: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/v2/{repo}/blobs/{digest}")))
        .header("Range", range)
        .send()
        .await
        .unwrap()
}

/// Asserts the 200 and the headers that `GET` and `HEAD` of a whole blob answer with.
fn assert_blob_headers(response: &reqwest::Response, len: usize, digest: &Digest) {
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["content-length"], len.to_string().as_str());
    assert_eq!(headers["docker-content-digest"], digest.to_string());
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(headers["accept-ranges"], "bytes");
}

#[tokio::test]
async fn head_answers_with_the_blob_headers() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(1234);
    let digest = app.push_blob("head/repo", &bytes).await;
    let response = app.head_blob("head/repo", &digest).await;
    assert_blob_headers(&response, 1234, &digest);
    assert!(response.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn head_does_not_touch_storage() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(100);
    let digest = app.push_blob("meta", &bytes).await;
    // With the bytes gone from disk, HEAD still answers from metadata.
    std::fs::remove_file(app.blob_file(&digest)).unwrap();
    let response = app.head_blob("meta", &digest).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], "100");
}

#[tokio::test]
async fn get_streams_the_blob() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(3 * 1024 * 1024 + 5);
    let digest = app.push_blob("get/repo", &bytes).await;
    let response = app.get_blob("get/repo", &digest).await;
    assert_blob_headers(&response, bytes.len(), &digest);
    let body = response.bytes().await.unwrap();
    assert_eq!(Digest::sha256_of(&body), digest);
}

#[tokio::test]
async fn blobs_are_served_only_by_repositories_that_link_them() {
    let app = TestApp::spawn().await;
    let digest = app.push_blob("linked", b"linked bytes").await;
    // Another existing repository, and one that does not exist at all.
    app.push_blob("other", b"other bytes").await;
    for repo in ["other", "no/such/repo"] {
        let response = app.get_blob(repo, &digest).await;
        assert_oci_error(response, 404, "BLOB_UNKNOWN").await;
        assert_eq!(app.head_blob(repo, &digest).await.status(), 404);
    }
    let unknown = Digest::sha256_of(b"never pushed");
    let response = app.get_blob("linked", &unknown).await;
    assert_oci_error(response, 404, "BLOB_UNKNOWN").await;
    let response = app.get_blob("linked", "sha256:short").await;
    assert_oci_error(response, 400, "DIGEST_INVALID").await;
}

#[tokio::test]
async fn ranges_are_served_as_partial_content() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(1000);
    let digest = app.push_blob("range", &bytes).await;

    let cases: [(&str, usize, usize); 5] = [
        ("bytes=0-99", 0, 99),
        ("bytes=100-100", 100, 100),
        ("bytes=900-", 900, 999),
        ("bytes=-10", 990, 999),
        // An end past the blob is clamped to its last byte.
        ("bytes=500-5000", 500, 999),
    ];
    for (range, start, end) in cases {
        let response = get_range(&app, "range", &digest, range).await;
        assert_eq!(response.status(), 206, "{range}");
        assert_eq!(
            response.headers()["content-range"],
            format!("bytes {start}-{end}/1000").as_str(),
            "{range}"
        );
        assert_eq!(
            response.headers()["content-length"],
            (end - start + 1).to_string().as_str()
        );
        assert_eq!(
            response.headers()["docker-content-digest"],
            digest.to_string()
        );
        assert_eq!(
            response.bytes().await.unwrap().as_ref(),
            &bytes[start..=end],
            "{range}"
        );
    }
}

#[tokio::test]
async fn ranges_within_a_large_blob_stream() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(4 * 1024 * 1024);
    let digest = app.push_blob("range/large", &bytes).await;
    let response = get_range(&app, "range/large", &digest, "bytes=1000000-3999999").await;
    assert_eq!(response.status(), 206);
    assert_eq!(
        response.bytes().await.unwrap().as_ref(),
        &bytes[1_000_000..4_000_000]
    );
}

#[tokio::test]
async fn unsatisfiable_and_malformed_ranges_get_416() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(1000);
    let digest = app.push_blob("badrange", &bytes).await;
    for range in [
        "bytes=1000-",
        "bytes=5000-6000",
        "bytes=-0",
        "bytes=20-10",
        "bytes=abc",
        "items=0-10",
        "bytes=0-1,5-6",
    ] {
        let response = get_range(&app, "badrange", &digest, range).await;
        assert_eq!(
            response
                .headers()
                .get("content-range")
                .map(|v| v.to_str().unwrap()),
            Some("bytes */1000"),
            "{range}"
        );
        assert_oci_error(response, 416, "RANGE_INVALID").await;
    }
}

#[tokio::test]
async fn delete_unlinks_the_blob_from_one_repository() {
    let app = TestApp::spawn().await;
    let bytes = random_bytes(500);
    let digest = app.push_blob("del/a", &bytes).await;
    app.push_blob("del/b", &bytes).await;

    let response = app.delete_blob("del/a", &digest).await;
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.headers()["docker-content-digest"],
        digest.to_string()
    );
    assert_eq!(app.head_blob("del/a", &digest).await.status(), 404);
    let response = app.get_blob("del/a", &digest).await;
    assert_oci_error(response, 404, "BLOB_UNKNOWN").await;
    // The other repository still serves it.
    app.assert_blob("del/b", &digest, &bytes).await;

    // Deleting again, or in a repository that never had it, is BLOB_UNKNOWN.
    for repo in ["del/a", "del/none"] {
        let response = app.delete_blob(repo, &digest).await;
        assert_oci_error(response, 404, "BLOB_UNKNOWN").await;
    }
    // Pushing it again links it again.
    app.push_blob("del/a", &bytes).await;
    assert_eq!(app.head_blob("del/a", &digest).await.status(), 200);
}

#[tokio::test]
async fn delete_can_be_disabled() {
    let app = TestApp::spawn_with(|c| c.delete.blobs = false).await;
    let digest = app.push_blob("nodelete", b"keep me").await;
    let response = app.delete_blob("nodelete", &digest).await;
    assert_oci_error(response, 405, "UNSUPPORTED").await;
    assert_eq!(app.head_blob("nodelete", &digest).await.status(), 200);
}
