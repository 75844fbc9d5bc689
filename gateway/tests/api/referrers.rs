//! The referrers API: manifests naming a subject, listed as an OCI index, with the
//! `artifactType` filter and the `OCI-Subject` header on push.

use std::fmt::Display;

use berth_content::Digest;
use serde_json::json;

use crate::helpers::{
    assert_manifest_created, assert_oci_error, empty_index, expect_status, put_ok, TestApp,
    OCI_EMPTY, OCI_INDEX, OCI_MANIFEST,
};

/// Asserts that the push of the manifest `digest` was created and that `OCI-Subject`
/// tells the client the registry processed its `subject`.
async fn assert_referrer_created(
    response: reqwest::Response,
    repo: &str,
    digest: &Digest,
    subject: &Digest,
) {
    let response = expect_status(response, 201, "PUT referrer").await;
    assert_eq!(
        response.headers()["oci-subject"],
        subject.to_string().as_str()
    );
    assert_manifest_created(response, repo, digest).await;
}

/// Pushes an artifact manifest (empty config, one layer) with `subject`; returns its
/// bytes and digest.
async fn push_referrer(
    app: &TestApp,
    repo: &str,
    subject: (&[u8], &Digest, &str),
    artifact_type: &str,
    annotations: serde_json::Value,
) -> (Vec<u8>, Digest) {
    let empty = app.push_blob(repo, b"{}").await;
    let payload = format!("payload of {artifact_type}");
    let layer = app.push_blob(repo, payload.as_bytes()).await;
    let (subject_bytes, subject_digest, subject_type) = subject;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": OCI_EMPTY, "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": layer, "size": payload.len()}],
        "subject": {"mediaType": subject_type, "digest": subject_digest, "size": subject_bytes.len()},
        "annotations": annotations,
    }))
    .unwrap();
    let digest = Digest::sha256_of(&manifest);
    let response = app
        .put_manifest(repo, &digest, OCI_MANIFEST, &manifest)
        .await;
    assert_referrer_created(response, repo, &digest, subject_digest).await;
    (manifest, digest)
}

/// `GET /v2/<repo>/referrers/<subject><query>`.
async fn referrers(
    app: &TestApp,
    repo: &str,
    subject: impl Display,
    query: &str,
) -> reqwest::Response {
    app.get(&format!("/v2/{repo}/referrers/{subject}{query}"))
        .await
}

/// Asserts the response is an OCI index and returns its `manifests`.
async fn index_manifests(response: reqwest::Response) -> Vec<serde_json::Value> {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], OCI_INDEX);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["schemaVersion"], 2);
    assert_eq!(body["mediaType"], OCI_INDEX);
    body["manifests"].as_array().unwrap().clone()
}

/// The unfiltered referrers of `subject` in `repo`, asserting an OCI index.
async fn referrer_list(app: &TestApp, repo: &str, subject: impl Display) -> Vec<serde_json::Value> {
    index_manifests(referrers(app, repo, subject, "").await).await
}

#[tokio::test]
async fn no_referrers_is_an_empty_index() {
    let app = TestApp::spawn().await;
    let (_, digest) = app.push_image("plain", "v1", &[b"x"]).await;
    let response = referrers(&app, "plain", &digest, "").await;
    assert!(response.headers().get("oci-filters-applied").is_none());
    assert!(index_manifests(response).await.is_empty());
    // Unknown subject, unknown repository: still 200 and empty.
    let unknown = Digest::sha256_of(b"unknown");
    assert!(referrer_list(&app, "plain", &unknown).await.is_empty());
    assert!(referrer_list(&app, "nope", &unknown).await.is_empty());
}

#[tokio::test]
async fn referrers_are_listed_with_their_artifact_types_and_filtered() {
    let app = TestApp::spawn().await;
    let (image, image_digest) = app.push_image("signed", "v1", &[b"x"]).await;
    let subject = (image.as_slice(), &image_digest, OCI_MANIFEST);
    let (sig, sig_digest) = push_referrer(
        &app,
        "signed",
        subject,
        "application/vnd.example.signature",
        json!({"org.example.signer": "alice"}),
    )
    .await;
    let (sbom, sbom_digest) = push_referrer(
        &app,
        "signed",
        subject,
        "application/vnd.example.sbom",
        json!({"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}),
    )
    .await;

    assert_eq!(
        referrer_list(&app, "signed", &image_digest).await,
        vec![
            json!({
                "mediaType": OCI_MANIFEST, "digest": sig_digest, "size": sig.len(),
                "artifactType": "application/vnd.example.signature",
                "annotations": {"org.example.signer": "alice"},
            }),
            json!({
                "mediaType": OCI_MANIFEST, "digest": sbom_digest, "size": sbom.len(),
                "artifactType": "application/vnd.example.sbom",
                "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
            }),
        ]
    );

    let filter = "?artifactType=application%2Fvnd.example.sbom";
    let response = referrers(&app, "signed", &image_digest, filter).await;
    assert_eq!(response.headers()["oci-filters-applied"], "artifactType");
    let manifests = index_manifests(response).await;
    assert_eq!(manifests.len(), 1);
    assert_eq!(manifests[0]["digest"], sbom_digest.to_string());

    let filter = "?artifactType=application/vnd.example.nothing";
    let response = referrers(&app, "signed", &image_digest, filter).await;
    assert_eq!(response.headers()["oci-filters-applied"], "artifactType");
    assert!(index_manifests(response).await.is_empty());

    // Referrers are per repository.
    assert!(referrer_list(&app, "other", &image_digest).await.is_empty());
}

#[tokio::test]
async fn a_referrer_may_arrive_before_its_subject() {
    let app = TestApp::spawn().await;
    let future_subject = empty_index("pushed later");
    let subject_digest = Digest::sha256_of(&future_subject);

    // An index as referrer: no blobs needed, artifactType from the index itself.
    let referrer = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": "application/vnd.example.bundle",
        "manifests": [],
        "subject": {"mediaType": OCI_INDEX, "digest": subject_digest, "size": future_subject.len()},
    }))
    .unwrap();
    let referrer_digest = Digest::sha256_of(&referrer);
    let response = app.put_manifest("early", "ref", OCI_INDEX, &referrer).await;
    assert_referrer_created(response, "early", &referrer_digest, &subject_digest).await;

    assert_eq!(
        referrer_list(&app, "early", &subject_digest).await,
        vec![json!({
            "mediaType": OCI_INDEX, "digest": referrer_digest, "size": referrer.len(),
            "artifactType": "application/vnd.example.bundle",
        })]
    );

    // The subject arrives; the referrer is still listed.
    put_ok(&app, "early", "subject", OCI_INDEX, &future_subject).await;
    assert_eq!(referrer_list(&app, "early", &subject_digest).await.len(), 1);

    // Deleting the referrer removes it from the list.
    let response = app.delete_manifest("early", &referrer_digest).await;
    assert_eq!(response.status(), 202);
    assert!(referrer_list(&app, "early", &subject_digest)
        .await
        .is_empty());
}

#[tokio::test]
async fn an_image_referrer_without_artifact_type_reports_its_config_media_type() {
    let app = TestApp::spawn().await;
    let subject = empty_index("subject");
    let subject_digest = put_ok(&app, "cfg", "s", OCI_INDEX, &subject).await;
    let config = app.push_blob("cfg", b"custom config").await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.example.config", "digest": config, "size": 13},
        "layers": [],
        "subject": {"mediaType": OCI_INDEX, "digest": subject_digest, "size": subject.len()},
    }))
    .unwrap();
    put_ok(&app, "cfg", "r", OCI_MANIFEST, &manifest).await;
    let manifests = referrer_list(&app, "cfg", &subject_digest).await;
    assert_eq!(manifests.len(), 1);
    assert_eq!(
        manifests[0]["artifactType"],
        "application/vnd.example.config"
    );
    assert!(manifests[0].get("annotations").is_none());
}

#[tokio::test]
async fn an_invalid_subject_digest_is_digest_invalid() {
    let app = TestApp::spawn().await;
    for digest in [
        "sha256:abc",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "latest",
    ] {
        let response = referrers(&app, "r", digest, "").await;
        assert_oci_error(response, 400, "DIGEST_INVALID").await;
    }
}
