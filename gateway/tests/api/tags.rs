//! Tag listing: lexical byte order, `n`/`last` pagination and its `Link` header.

use serde_json::json;

use crate::helpers::{assert_oci_error, empty_index, next_link, put_ok, TestApp, OCI_INDEX};

/// In byte order, which differs from most locales' (upper case first, `-` < `.` < `_`).
const TAGS: [&str; 7] = ["1.0", "B", "Z9", "a", "a-1", "a.1", "a_1"];

async fn app_with_tags() -> TestApp {
    let app = TestApp::spawn().await;
    // Push in an order unlike the expected one, some tags on the same manifest.
    for (i, tag) in TAGS.iter().rev().enumerate() {
        let index = empty_index(&format!("{}", i % 3));
        put_ok(&app, "lib/tagged", tag, OCI_INDEX, &index).await;
    }
    app
}

#[tokio::test]
async fn tags_are_listed_in_byte_order() {
    let app = app_with_tags().await;
    let response = app.get("/v2/lib/tagged/tags/list").await;
    assert_eq!(response.status(), 200);
    assert!(next_link(&response).is_none());
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body, json!({"name": "lib/tagged", "tags": TAGS}));
}

#[tokio::test]
async fn walking_one_tag_at_a_time_visits_every_tag_once() {
    let app = app_with_tags().await;
    let pages = app.walk_pages("/v2/lib/tagged/tags/list?n=1", "tags").await;
    // One page per tag; the link stops after the last one.
    assert_eq!(pages.len(), TAGS.len());
    assert!(pages.iter().all(|p| p.len() == 1));
    assert_eq!(pages.concat(), TAGS);

    let pages = app.walk_pages("/v2/lib/tagged/tags/list?n=3", "tags").await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![3, 3, 1]
    );
    assert_eq!(pages.concat(), TAGS);

    // Exactly one full page: no link to an empty page.
    let response = app.get("/v2/lib/tagged/tags/list?n=7").await;
    assert!(next_link(&response).is_none());
}

#[tokio::test]
async fn the_link_header_has_the_spec_shape() {
    let app = app_with_tags().await;
    let response = app.get("/v2/lib/tagged/tags/list?n=2").await;
    assert_eq!(
        response.headers()["link"],
        "</v2/lib/tagged/tags/list?n=2&last=B>; rel=\"next\""
    );
}

#[tokio::test]
async fn pagination_edges() {
    let app = app_with_tags().await;
    // Pages that are the last: their list, and no link.
    for (query, expected) in [
        // n=0: an empty list.
        ("?n=0", json!([])),
        // last is exclusive.
        ("?last=a", json!(["a-1", "a.1", "a_1"])),
        // last beyond the end: empty.
        ("?last=zzz", json!([])),
        // n larger than the total: everything.
        ("?n=500", json!(TAGS)),
    ] {
        let (body, link) = app
            .get_page(&format!("/v2/lib/tagged/tags/list{query}"))
            .await;
        assert_eq!(body["tags"], expected, "{query}");
        assert_eq!(link, None, "{query}");
    }
    // last need not be an existing tag.
    let (body, _) = app.get_page("/v2/lib/tagged/tags/list?n=2&last=Y").await;
    assert_eq!(body["tags"], json!(["Z9", "a"]));
}

#[tokio::test]
async fn n_is_clamped_to_the_configured_maximum() {
    let app = TestApp::spawn_with(|c| c.limits.page_max_entries = 3).await;
    for tag in TAGS {
        put_ok(&app, "clamped", tag, OCI_INDEX, &empty_index("x")).await;
    }
    let (body, link) = app.get_page("/v2/clamped/tags/list?n=100").await;
    assert_eq!(body["tags"], json!(TAGS[..3]));
    assert_eq!(link.as_deref(), Some("/v2/clamped/tags/list?n=3&last=Z9"));
    // Without n, pages are of the maximum size too.
    let pages = app.walk_pages("/v2/clamped/tags/list", "tags").await;
    assert_eq!(pages.len(), 3);
    assert_eq!(pages.concat(), TAGS);
}

#[tokio::test]
async fn invalid_n_is_refused() {
    let app = app_with_tags().await;
    for n in ["-1", "abc", "1.5", "0x10"] {
        let response = app.get(&format!("/v2/lib/tagged/tags/list?n={n}")).await;
        assert_oci_error(response, 400, "SIZE_INVALID").await;
    }
}

#[tokio::test]
async fn unknown_repository_is_name_unknown() {
    let app = TestApp::spawn().await;
    let response = app.get("/v2/no/such/repo/tags/list").await;
    assert_oci_error(response, 404, "NAME_UNKNOWN").await;
}

#[tokio::test]
async fn a_repository_whose_tags_were_deleted_lists_none() {
    let app = TestApp::spawn().await;
    put_ok(&app, "emptied", "only", OCI_INDEX, &empty_index("e")).await;
    assert_eq!(app.delete_manifest("emptied", "only").await.status(), 202);
    let (body, link) = app.get_page("/v2/emptied/tags/list").await;
    assert_eq!(body, json!({"name": "emptied", "tags": []}));
    assert_eq!(link, None);
}
