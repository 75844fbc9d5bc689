//! The API version check and headers every client relies on.

use crate::helpers::{assert_oci_error, TestApp};

#[tokio::test]
async fn version_check_answers_with_the_api_version_header() {
    let app = TestApp::spawn().await;
    let response = app.get("/v2/").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_get_oci_errors() {
    let app = TestApp::spawn().await;
    let response = app.get("/v2/a/nonsense/op").await;
    assert_oci_error(response, 404, "NAME_UNKNOWN").await;
    let response = app
        .client
        .post(app.url("/v2/a/tags/list"))
        .send()
        .await
        .unwrap();
    assert_oci_error(response, 405, "UNSUPPORTED").await;
    let response = app.get("/v2/UPPER/tags/list").await;
    assert_oci_error(response, 400, "NAME_INVALID").await;
}
