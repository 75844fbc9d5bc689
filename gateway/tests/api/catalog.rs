//! `_catalog`: repositories holding manifests, paginated like tag lists.

use serde_json::json;

use crate::helpers::{assert_oci_error, empty_index, put_ok, TestApp, OCI_INDEX};

/// Byte order: `-` < `.` < `/` < digits < `_` < letters.
const REPOSITORIES: [&str; 6] = ["a-b", "a.b", "a/b", "a/b/c", "a_b", "ab"];

async fn app_with_repositories() -> TestApp {
    let app = TestApp::spawn().await;
    for repo in REPOSITORIES.iter().rev() {
        put_ok(&app, repo, "t", OCI_INDEX, &empty_index(repo)).await;
    }
    app
}

#[tokio::test]
async fn catalog_lists_repositories_with_manifests_in_byte_order() {
    let app = app_with_repositories().await;
    // A repository that only ever had its manifest deleted is left out.
    let digest = put_ok(&app, "gone", "t", OCI_INDEX, &empty_index("gone")).await;
    assert_eq!(app.delete_manifest("gone", &digest).await.status(), 202);
    let (body, link) = app.get_page("/v2/_catalog").await;
    assert_eq!(body, json!({"repositories": REPOSITORIES}));
    assert_eq!(link, None);
}

#[tokio::test]
async fn an_empty_registry_has_an_empty_catalog() {
    let app = TestApp::spawn().await;
    let (body, link) = app.get_page("/v2/_catalog").await;
    assert_eq!(body, json!({"repositories": []}));
    assert_eq!(link, None);
}

#[tokio::test]
async fn walking_the_catalog_visits_every_repository_once() {
    let app = app_with_repositories().await;
    let pages = app.walk_pages("/v2/_catalog?n=1", "repositories").await;
    assert_eq!(pages.len(), REPOSITORIES.len());
    assert_eq!(pages.concat(), REPOSITORIES);

    let pages = app.walk_pages("/v2/_catalog?n=4", "repositories").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 2]);
    assert_eq!(pages.concat(), REPOSITORIES);

    // The link carries n and the last name (URL-encoded, since names contain '/').
    let response = app.get("/v2/_catalog?n=3").await;
    assert_eq!(
        response.headers()["link"],
        "</v2/_catalog?n=3&last=a%2Fb>; rel=\"next\""
    );
}

#[tokio::test]
async fn catalog_pagination_edges() {
    let app = app_with_repositories().await;
    // Pages that are the last: their list, and no link.
    for (query, expected) in [
        ("?n=0", json!([])),
        ("?last=a/b", json!(["a/b/c", "a_b", "ab"])),
        ("?last=zzz", json!([])),
        ("?n=6", json!(REPOSITORIES)),
        ("?n=1000000", json!(REPOSITORIES)),
    ] {
        let (body, link) = app.get_page(&format!("/v2/_catalog{query}")).await;
        assert_eq!(body["repositories"], expected, "{query}");
        assert_eq!(link, None, "{query}");
    }
    for n in ["-5", "many"] {
        let response = app.get(&format!("/v2/_catalog?n={n}")).await;
        assert_oci_error(response, 400, "SIZE_INVALID").await;
    }
}

#[tokio::test]
async fn catalog_pages_are_clamped() {
    let app = TestApp::spawn_with(|c| c.limits.page_max_entries = 4).await;
    for repo in REPOSITORIES {
        put_ok(&app, repo, "t", OCI_INDEX, &empty_index(repo)).await;
    }
    let (body, link) = app.get_page("/v2/_catalog?n=50").await;
    assert_eq!(body["repositories"], json!(REPOSITORIES[..4]));
    assert_eq!(link.as_deref(), Some("/v2/_catalog?n=4&last=a%2Fb%2Fc"));
    let pages = app.walk_pages("/v2/_catalog", "repositories").await;
    assert_eq!(pages.concat(), REPOSITORIES);
}

#[tokio::test]
async fn repositories_with_only_blobs_are_not_listed() {
    let app = TestApp::spawn().await;
    app.push_blob("blobs/only", b"a blob").await;
    put_ok(&app, "with/manifest", "t", OCI_INDEX, &empty_index("m")).await;
    let (body, _) = app.get_page("/v2/_catalog").await;
    assert_eq!(body["repositories"], json!(["with/manifest"]));
}
