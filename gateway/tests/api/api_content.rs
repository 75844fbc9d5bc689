//! The management API's content endpoints over real HTTP: repositories, artifacts, tags
//! and the audit log, on a gateway with authentication on. Content is pushed through
//! `/v2/` as the administrator; projects, users and memberships are made with SQL so
//! these tests depend on no other management endpoint.

use berth_content::Digest;
use reqwest::Response;
use serde_json::{json, Value};

use crate::helpers::{
    assert_api_error, assert_empty, expect_status, image_manifest, put_ok, ApiClient,
    RegistryClient, TestApp, ADMIN_PASSWORD, OCI_INDEX, OCI_MANIFEST,
};

const PASSWORD: &str = "Passw0rd-Content";
const PROJECT_ADMIN: i16 = 1;
const DEVELOPER: i16 = 2;
const GUEST: i16 = 3;
const MAINTAINER: i16 = 4;

/// A user with `role_id` in `project_id`, and a management API client acting as them.
async fn member(app: &TestApp, username: &str, project_id: i64, role_id: i16) -> ApiClient {
    let user_id = app.insert_user(username, PASSWORD).await;
    app.insert_member(project_id, user_id, role_id).await;
    app.api_as(username, PASSWORD)
}

/// The registry API as the administrator.
fn admin_registry(app: &TestApp) -> RegistryClient {
    app.registry.with_basic("admin", ADMIN_PASSWORD)
}

/// `/projects/{project}/repositories/{repo}` with the repository encoded twice, as
/// harborapi sends it.
fn repo_path(full_name: &str) -> String {
    let (project, repository) = full_name.split_once('/').unwrap();
    format!(
        "/projects/{project}/repositories/{}",
        repository.replace('/', "%252F")
    )
}

async fn json_of(response: Response, what: &str) -> (Value, reqwest::header::HeaderMap) {
    let response = expect_status(response, 200, what).await;
    let headers = response.headers().clone();
    (response.json().await.unwrap(), headers)
}

fn total(headers: &reqwest::header::HeaderMap) -> i64 {
    headers["x-total-count"].to_str().unwrap().parse().unwrap()
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("an array: {list}"))
        .iter()
        .map(|item| item[key].as_str().unwrap().to_owned())
        .collect()
}

/// An OCI index over the given (digest, size) manifests, each with a linux platform of
/// the given architecture.
fn index_over(children: &[(&Digest, usize, &str)]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": children.iter().map(|(digest, size, arch)| json!({
            "mediaType": OCI_MANIFEST, "digest": digest.to_string(), "size": size,
            "platform": {"architecture": arch, "os": "linux", "os.version": "6.1"},
        })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// Pushes an untagged image by digest; returns its digest and size.
async fn push_untagged(registry: &RegistryClient, repo: &str, layer: &[u8]) -> (Digest, usize) {
    let manifest = image_manifest(registry, repo, &[layer]).await;
    let digest = Digest::sha256_of(&manifest);
    put_ok(registry, repo, &digest.to_string(), OCI_MANIFEST, &manifest).await;
    (digest, manifest.len())
}

#[tokio::test]
async fn repositories_list_get_filter_sort_and_page() {
    let app = TestApp::spawn_secure().await;
    let team = app.insert_project("team", false).await;
    app.insert_project("other", true).await;
    let registry = admin_registry(&app);
    registry.push_image("team/app", "v1", &[b"app layer"]).await;
    registry
        .push_image("team/app", "v2", &[b"app layer 2"])
        .await;
    registry
        .push_image("team/tools/web", "v1", &[b"web layer"])
        .await;
    registry.push_image("other/x", "v1", &[b"x layer"]).await;
    let api = app.admin_api();

    let (list, headers) = json_of(api.get("/repositories?sort=name").await, "list").await;
    assert_eq!(total(&headers), 3);
    assert_eq!(
        names(&list, "name"),
        ["other/x", "team/app", "team/tools/web"]
    );
    let app_repo = &list[1];
    assert_eq!(app_repo["project_id"], team);
    assert_eq!(app_repo["artifact_count"], 2);
    assert_eq!(app_repo["pull_count"], 0);
    assert_eq!(app_repo["description"], "");
    assert!(app_repo["id"].is_i64());
    for key in ["creation_time", "update_time"] {
        let time = app_repo[key].as_str().unwrap();
        assert!(time.ends_with('Z') && time.len() == 24, "{key}: {time}");
    }

    // q: exact and fuzzy names; sort descending; pages with a relative Link.
    let (list, headers) = json_of(api.get("/repositories?q=name%3Dteam/app").await, "q").await;
    assert_eq!(total(&headers), 1);
    assert_eq!(names(&list, "name"), ["team/app"]);
    let (list, _) = json_of(
        api.get("/repositories?q=name%3D~team&sort=-name").await,
        "q",
    )
    .await;
    assert_eq!(names(&list, "name"), ["team/tools/web", "team/app"]);
    let response = api.get("/repositories?sort=name&page=2&page_size=1").await;
    let link = response.headers()["link"].to_str().unwrap().to_owned();
    assert_eq!(
        link,
        "</api/v2.0/repositories?sort=name&page=1&page_size=1>; rel=\"prev\" , \
         </api/v2.0/repositories?sort=name&page=3&page_size=1>; rel=\"next\""
    );
    let (list, _) = json_of(response, "page 2").await;
    assert_eq!(names(&list, "name"), ["team/app"]);

    let other: i64 = sqlx::query_scalar("SELECT id FROM projects WHERE name = 'other'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let by_project = format!("/repositories?q=project_id%3D{team}");
    let (_, headers) = json_of(api.get(&by_project).await, "q project_id").await;
    assert_eq!(total(&headers), 2);
    let mismatch = format!("/projects/team/repositories?q=project_id%3D{other}");
    let (list, headers) = json_of(api.get(&mismatch).await, "other project's id").await;
    assert_eq!((list, total(&headers)), (json!([]), 0));

    // One project's repositories; one repository, double- or single-encoded.
    let (list, headers) = json_of(api.get("/projects/team/repositories").await, "team").await;
    assert_eq!(total(&headers), 2);
    assert_eq!(names(&list, "name").len(), 2);
    let (repo, _) = json_of(api.get(&repo_path("team/tools/web")).await, "get").await;
    assert_eq!(repo["name"], "team/tools/web");
    assert_eq!(repo["artifact_count"], 1);
    let (repo, _) = json_of(
        api.get("/projects/team/repositories/tools%2Fweb").await,
        "single-encoded",
    )
    .await;
    assert_eq!(repo["name"], "team/tools/web");

    // Refusals.
    let refusals = [
        ("/repositories?page_size=101", 422, "UNPROCESSABLE_ENTITY"),
        ("/repositories?page=x", 422, "UNPROCESSABLE_ENTITY"),
        ("/repositories?q=nmae%3Dx", 400, "BAD_REQUEST"),
        ("/repositories?sort=size", 400, "BAD_REQUEST"),
        (
            "/projects/team/repositories?page_size=101",
            422,
            "UNPROCESSABLE_ENTITY",
        ),
        ("/projects/nope/repositories", 404, "NOT_FOUND"),
        ("/projects/team/repositories/nope", 404, "NOT_FOUND"),
        ("/projects/nope/repositories/app", 404, "NOT_FOUND"),
        ("/projects/team/repositories/Bad%2520Name", 404, "NOT_FOUND"),
    ];
    for (path, status, code) in refusals {
        assert_api_error(api.get(path).await, status, code).await;
    }
    let wrong_password = app.api_as("admin", "wrong");
    assert_api_error(
        wrong_password.get("/repositories").await,
        401,
        "UNAUTHORIZED",
    )
    .await;
}

#[tokio::test]
async fn repositories_are_visible_to_whoever_may_pull() {
    let app = TestApp::spawn_secure().await;
    let private = app.insert_project("private", false).await;
    app.insert_project("public", true).await;
    app.insert_project("hidden", false).await;
    let registry = admin_registry(&app);
    registry.push_image("private/app", "v1", &[b"p"]).await;
    registry.push_image("public/app", "v1", &[b"q"]).await;
    registry.push_image("hidden/app", "v1", &[b"r"]).await;
    let guest = member(&app, "guest", private, GUEST).await;

    let anonymous = app.anonymous_api();
    let (list, headers) = json_of(anonymous.get("/repositories").await, "anonymous").await;
    assert_eq!(total(&headers), 1);
    assert_eq!(names(&list, "name"), ["public/app"]);
    let (list, _) = json_of(guest.get("/repositories?sort=name").await, "guest").await;
    assert_eq!(names(&list, "name"), ["private/app", "public/app"]);
    let (list, _) = json_of(app.admin_api().get("/repositories").await, "admin").await;
    assert_eq!(names(&list, "name").len(), 3);

    // A private project: 401 without credentials, 404 to non-members.
    assert_api_error(
        anonymous.get("/projects/private/repositories").await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    assert_api_error(
        anonymous.get(&repo_path("private/app")).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    assert_api_error(
        guest.get("/projects/hidden/repositories").await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_api_error(guest.get(&repo_path("hidden/app")).await, 404, "NOT_FOUND").await;
    json_of(guest.get(&repo_path("private/app")).await, "guest get").await;
    json_of(
        anonymous.get(&repo_path("public/app")).await,
        "anonymous public",
    )
    .await;
}

#[tokio::test]
async fn repository_delete_needs_delete_rights_and_is_audited_once() {
    let app = TestApp::spawn_secure().await;
    let team = app.insert_project("team", false).await;
    let registry = admin_registry(&app);
    let (_, digest) = registry.push_image("team/app/web", "v1", &[b"layer"]).await;
    registry.push_image("team/other", "v1", &[b"other"]).await;
    let guest = member(&app, "guest", team, GUEST).await;
    let developer = member(&app, "developer", team, DEVELOPER).await;
    let maintainer = member(&app, "maintainer", team, MAINTAINER).await;
    let blobs_before = app.count_rows("blobs").await;
    let path = repo_path("team/app/web");

    assert_api_error(guest.delete(&path).await, 403, "FORBIDDEN").await;
    assert_api_error(developer.delete(&path).await, 403, "FORBIDDEN").await;
    assert_api_error(app.anonymous_api().delete(&path).await, 401, "UNAUTHORIZED").await;
    assert_api_error(
        maintainer.delete(&repo_path("team/nope")).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_eq!(
        app.audit_count("delete", "repository", "team/app/web")
            .await,
        0
    );

    assert_empty(maintainer.delete(&path).await, 200, "delete repository").await;
    assert_api_error(maintainer.get(&path).await, 404, "NOT_FOUND").await;
    assert_api_error(maintainer.delete(&path).await, 404, "NOT_FOUND").await;
    let response = registry.get_manifest("team/app/web", &digest).await;
    assert_eq!(
        response.status(),
        404,
        "the manifest went with the repository"
    );
    // Blobs stay for garbage collection; the other repository is untouched.
    assert_eq!(app.count_rows("blobs").await, blobs_before);
    json_of(maintainer.get(&repo_path("team/other")).await, "other").await;

    assert_eq!(
        app.audit_count("delete", "repository", "team/app/web")
            .await,
        1
    );
    let (username, project_id): (String, Option<i64>) = sqlx::query_as(
        "SELECT username, project_id FROM audit_logs WHERE resource_type = 'repository'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((username.as_str(), project_id), ("maintainer", Some(team)));
}

/// team/tools/web holds: `a` tagged v1 and v2, `b` tagged latest, `c` untagged, and an
/// index tagged multi over `d` (untagged) and `a`.
struct Content {
    a: Digest,
    b: Digest,
    c: Digest,
    d: Digest,
    index: Digest,
}

const REPO: &str = "team/tools/web";

async fn push_content(app: &TestApp) -> Content {
    let registry = admin_registry(app);
    let (manifest_a, a) = registry.push_image(REPO, "v1", &[b"layer a"]).await;
    put_ok(&registry, REPO, "v2", OCI_MANIFEST, &manifest_a).await;
    let (_, b) = registry.push_image(REPO, "latest", &[b"layer b"]).await;
    let (c, _) = push_untagged(&registry, REPO, b"layer c").await;
    let (d, d_size) = push_untagged(&registry, REPO, b"layer d").await;
    let index = index_over(&[(&d, d_size, "arm64"), (&a, manifest_a.len(), "amd64")]);
    let index = put_ok(&registry, REPO, "multi", OCI_INDEX, &index).await;
    Content { a, b, c, d, index }
}

fn digests(list: &Value) -> Vec<String> {
    names(list, "digest")
}

#[tokio::test]
async fn artifacts_list_with_tags_filters_sort_and_pages() {
    let app = TestApp::spawn_secure().await;
    let team = app.insert_project("team", false).await;
    let content = push_content(&app).await;
    let api = app.admin_api();
    let base = format!("{}/artifacts", repo_path(REPO));

    // Default: everything but the untagged child of the index, newest first.
    let (list, headers) = json_of(api.get(&base).await, "list").await;
    assert_eq!(total(&headers), 4);
    let expected: Vec<String> = [&content.index, &content.c, &content.b, &content.a]
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(digests(&list), expected);

    let a = &list[3];
    assert_eq!(a["type"], "IMAGE");
    assert_eq!(a["media_type"], "application/vnd.oci.image.config.v1+json");
    assert_eq!(a["manifest_media_type"], OCI_MANIFEST);
    assert_eq!(
        a["artifact_type"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(a["project_id"], team);
    assert_eq!(a["repository_name"], REPO);
    assert!(a["repository_id"].is_i64() && a["id"].is_i64());
    assert!(a["size"].as_i64().unwrap() > "layer a".len() as i64);
    assert_eq!(a["pull_time"], "0001-01-01T00:00:00.000Z");
    assert!(a["push_time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(a["extra_attrs"]["architecture"], "amd64");
    assert_eq!(a["extra_attrs"]["os"], "linux");
    assert_eq!(a["annotations"], json!({}));
    assert_eq!(a["addition_links"], json!({}));
    assert!(a.get("references").is_none());
    let mut tag_names = names(&a["tags"], "name");
    tag_names.sort();
    assert_eq!(tag_names, ["v1", "v2"]);
    let tag = &a["tags"][0];
    assert_eq!(tag["artifact_id"], a["id"]);
    assert_eq!(tag["repository_id"], a["repository_id"]);
    assert!(tag["id"].is_i64());
    assert_eq!(tag["immutable"], false);
    assert_eq!(tag["signed"], false);
    assert_eq!(tag["pull_time"], "0001-01-01T00:00:00.000Z");

    let index = &list[0];
    assert_eq!(index["type"], "IMAGE");
    assert_eq!(index["media_type"], OCI_INDEX);
    assert_eq!(index["manifest_media_type"], OCI_INDEX);
    assert_eq!(names(&index["tags"], "name"), ["multi"]);
    let references = index["references"].as_array().unwrap();
    assert_eq!(references.len(), 2);
    let d_ref = references
        .iter()
        .find(|r| r["child_digest"] == content.d.to_string())
        .unwrap();
    assert_eq!(d_ref["parent_id"], index["id"]);
    assert!(d_ref["child_id"].is_i64());
    assert_eq!(d_ref["platform"]["architecture"], "arm64");
    assert_eq!(d_ref["platform"]["os"], "linux");
    assert_eq!(d_ref["platform"]["'os.version'"], "6.1");
    assert_eq!(list[1]["tags"], json!([]));

    // with_tag=false: tags are null.
    let (list, _) = json_of(api.get(&format!("{base}?with_tag=false")).await, "no tags").await;
    assert!(list.as_array().unwrap().iter().all(|a| a["tags"].is_null()));

    // q filters.
    let filtered = |q: &str| format!("{base}?q={}", q.replace('=', "%3D").replace('+', "%2B"));
    let cases: [(String, Vec<&Digest>); 7] = [
        (
            "tags=*".into(),
            vec![&content.index, &content.b, &content.a],
        ),
        ("tags=nil".into(), vec![&content.c]),
        ("tags=v2".into(), vec![&content.a]),
        ("tags=~ult".into(), vec![&content.index]),
        (format!("digest={}", content.c), vec![&content.c]),
        // An index's untagged child shows through its parent only, as in Harbor.
        (format!("digest={}", content.d), vec![]),
        (format!("media_type={OCI_INDEX}"), vec![&content.index]),
    ];
    for (q, expected) in cases {
        let (list, headers) = json_of(api.get(&filtered(&q)).await, &q).await;
        let expected: Vec<String> = expected.iter().map(|d| d.to_string()).collect();
        assert_eq!(digests(&list), expected, "q={q}");
        assert_eq!(total(&headers), expected.len() as i64, "q={q}");
    }

    // Sort and pages.
    let (list, _) = json_of(api.get(&format!("{base}?sort=push_time")).await, "asc").await;
    assert_eq!(digests(&list)[0], content.a.to_string());
    let response = api.get(&format!("{base}?page=1&page_size=3")).await;
    let link = response.headers()["link"].to_str().unwrap().to_owned();
    assert!(
        link.ends_with("page=2&page_size=3>; rel=\"next\""),
        "{link}"
    );
    let (page1, _) = json_of(response, "page 1").await;
    let (page2, _) = json_of(api.get(&format!("{base}?page=2&page_size=3")).await, "2").await;
    assert_eq!(page1.as_array().unwrap().len(), 3);
    assert_eq!(digests(&page2), [content.a.to_string()]);

    let refusals = [
        (format!("{base}?page_size=101"), 422, "UNPROCESSABLE_ENTITY"),
        (
            format!("{base}?with_tag=maybe"),
            422,
            "UNPROCESSABLE_ENTITY",
        ),
        (filtered("tags=[a~b]"), 400, "BAD_REQUEST"),
        (filtered("label=x"), 400, "BAD_REQUEST"),
        (format!("{base}?sort=size"), 400, "BAD_REQUEST"),
        (
            format!("{}/artifacts", repo_path("team/nope")),
            404,
            "NOT_FOUND",
        ),
        (
            "/projects/nope/repositories/x/artifacts".to_owned(),
            404,
            "NOT_FOUND",
        ),
    ];
    for (path, status, code) in refusals {
        assert_api_error(api.get(&path).await, status, code).await;
    }
    assert_api_error(app.anonymous_api().get(&base).await, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn artifact_get_by_digest_or_tag() {
    let app = TestApp::spawn_secure().await;
    let team = app.insert_project("team", false).await;
    let content = push_content(&app).await;
    let guest = member(&app, "guest", team, GUEST).await;
    let base = format!("{}/artifacts", repo_path(REPO));

    let (by_tag, _) = json_of(guest.get(&format!("{base}/v2")).await, "by tag").await;
    assert_eq!(by_tag["digest"], content.a.to_string());
    assert_eq!(by_tag["tags"].as_array().unwrap().len(), 2);
    let (by_digest, _) = json_of(
        guest
            .get(&format!(
                "{base}/{}?page=1&page_size=10&with_tag=true",
                content.a
            ))
            .await,
        "by digest",
    )
    .await;
    assert_eq!(by_digest["id"], by_tag["id"]);
    // An index's untagged child is found by digest.
    let (child, _) = json_of(guest.get(&format!("{base}/{}", content.d)).await, "child").await;
    assert_eq!(child["digest"], content.d.to_string());
    assert_eq!(child["tags"], json!([]));
    let (untagged, _) = json_of(
        guest
            .get(&format!("{base}/{}?with_tag=false", content.b))
            .await,
        "no tags",
    )
    .await;
    assert!(untagged["tags"].is_null());

    let missing = Digest::sha256_of(b"nothing");
    let refusals = [
        (format!("{base}/{missing}"), 404, "NOT_FOUND"),
        (format!("{base}/nope"), 404, "NOT_FOUND"),
        (format!("{base}/sha256:123"), 400, "BAD_REQUEST"),
        (format!("{base}/-bad-"), 400, "BAD_REQUEST"),
        (
            format!("{}/artifacts/v1", repo_path("team/nope")),
            404,
            "NOT_FOUND",
        ),
    ];
    for (path, status, code) in refusals {
        assert_api_error(guest.get(&path).await, status, code).await;
    }
    assert_api_error(
        app.anonymous_api().get(&format!("{base}/v1")).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    app.insert_user("stranger", PASSWORD).await;
    let stranger = app.api_as("stranger", PASSWORD);
    assert_api_error(stranger.get(&format!("{base}/v1")).await, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn artifact_delete_shares_the_registry_rules_and_is_audited_once() {
    let app = TestApp::spawn_secure().await;
    let team = app.insert_project("team", false).await;
    let content = push_content(&app).await;
    let guest = member(&app, "guest", team, GUEST).await;
    let developer = member(&app, "developer", team, DEVELOPER).await;
    let maintainer = member(&app, "maintainer", team, MAINTAINER).await;
    let base = format!("{}/artifacts", repo_path(REPO));
    let registry = admin_registry(&app);

    assert_api_error(
        guest.delete(&format!("{base}/latest")).await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert_api_error(
        developer.delete(&format!("{base}/latest")).await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert_api_error(
        app.anonymous_api().delete(&format!("{base}/latest")).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    assert_api_error(
        maintainer.delete(&format!("{base}/nope")).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_api_error(
        maintainer.delete(&format!("{base}/sha256:zz")).await,
        400,
        "BAD_REQUEST",
    )
    .await;

    // By tag: the artifact goes with every tag, as a registry DELETE by digest does.
    assert_empty(
        maintainer.delete(&format!("{base}/latest")).await,
        200,
        "delete b",
    )
    .await;
    registry.assert_no_manifest(REPO, &content.b).await;
    registry.assert_no_manifest(REPO, "latest").await;
    let resource = format!("{REPO}@{}", content.b);
    assert_eq!(app.audit_count("delete", "artifact", &resource).await, 1);
    let project_id: Option<i64> =
        sqlx::query_scalar("SELECT project_id FROM audit_logs WHERE resource = $1")
            .bind(&resource)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(project_id, Some(team));
    assert_api_error(
        maintainer.delete(&format!("{base}/{}", content.b)).await,
        404,
        "NOT_FOUND",
    )
    .await;

    // A manifest an index lists: 412, nothing deleted, nothing audited.
    let message = assert_api_error(
        maintainer.delete(&format!("{base}/{}", content.d)).await,
        412,
        "PRECONDITION",
    )
    .await;
    assert!(message.contains(&content.index.to_string()), "{message}");
    assert_api_error(
        maintainer.delete(&format!("{base}/v1")).await,
        412,
        "PRECONDITION",
    )
    .await;
    registry.pull_manifest(REPO, &content.d).await;
    let child_resource = format!("{REPO}@{}", content.d);
    assert_eq!(
        app.audit_count("delete", "artifact", &child_resource).await,
        0
    );

    // Once the index is gone, its children can go; a project admin may delete too.
    let admin = member(&app, "owner", team, PROJECT_ADMIN).await;
    assert_empty(admin.delete(&format!("{base}/multi")).await, 200, "index").await;
    assert_empty(
        admin.delete(&format!("{base}/{}", content.d)).await,
        200,
        "child",
    )
    .await;
    assert_eq!(
        app.audit_count("delete", "artifact", &child_resource).await,
        1
    );
    let (list, _) = json_of(admin.get(&base).await, "left").await;
    let mut left = digests(&list);
    left.sort();
    let mut expected = vec![content.a.to_string(), content.c.to_string()];
    expected.sort();
    assert_eq!(left, expected);
}

#[tokio::test]
async fn tags_list_create_and_delete() {
    let app = TestApp::spawn_secure().await;
    let team = app.insert_project("team", false).await;
    let content = push_content(&app).await;
    let guest = member(&app, "guest", team, GUEST).await;
    let developer = member(&app, "developer", team, DEVELOPER).await;
    let maintainer = member(&app, "maintainer", team, MAINTAINER).await;
    let registry = admin_registry(&app);
    let tags = format!("{}/artifacts/{}/tags", repo_path(REPO), content.a);

    // List, with q, sort and pages.
    let (list, headers) = json_of(guest.get(&format!("{tags}?sort=name")).await, "tags").await;
    assert_eq!(total(&headers), 2);
    assert_eq!(names(&list, "name"), ["v1", "v2"]);
    let (list, _) = json_of(guest.get(&format!("{tags}?q=name%3D~2")).await, "q").await;
    assert_eq!(names(&list, "name"), ["v2"]);
    let response = guest.get(&format!("{tags}?sort=-name&page_size=1")).await;
    assert!(response.headers()["link"]
        .to_str()
        .unwrap()
        .contains("rel=\"next\""));
    let (list, _) = json_of(response, "page").await;
    assert_eq!(names(&list, "name"), ["v2"]);
    for (path, status, code) in [
        (format!("{tags}?page_size=101"), 422, "UNPROCESSABLE_ENTITY"),
        (format!("{tags}?q=tag%3Dx"), 400, "BAD_REQUEST"),
        (
            format!("{}/artifacts/nope/tags", repo_path(REPO)),
            404,
            "NOT_FOUND",
        ),
    ] {
        assert_api_error(guest.get(&path).await, status, code).await;
    }
    assert_api_error(app.anonymous_api().get(&tags).await, 401, "UNAUTHORIZED").await;

    // Create: push rights; an existing name is a conflict, wherever it points.
    let body = json!({"name": "release"});
    assert_api_error(guest.post(&tags, body.clone()).await, 403, "FORBIDDEN").await;
    assert_api_error(
        app.anonymous_api().post(&tags, body.clone()).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    let response = developer.post(&tags, body.clone()).await;
    let response = expect_status(response, 201, "create tag").await;
    assert_eq!(
        response.headers()["location"],
        format!("/api/v2.0{tags}/release").as_str()
    );
    assert!(response.headers().get("content-type").is_none());
    let (digest, _, _) = registry.pull_manifest(REPO, "release").await;
    assert_eq!(digest, content.a);
    assert_eq!(
        app.audit_count("create", "tag", &format!("{REPO}:release"))
            .await,
        1
    );
    assert_api_error(developer.post(&tags, body.clone()).await, 409, "CONFLICT").await;
    assert_api_error(
        developer.post(&tags, json!({"name": "latest"})).await,
        409,
        "CONFLICT",
    )
    .await;
    assert_eq!(
        app.audit_count("create", "tag", &format!("{REPO}:release"))
            .await,
        1
    );
    let bad_json = developer
        .request(reqwest::Method::POST, &tags)
        .header("content-type", "application/json")
        .body("{\"name\":")
        .send()
        .await
        .unwrap();
    assert_api_error(bad_json, 400, "BAD_REQUEST").await;
    for body in [json!({}), json!({"name": "-bad"}), json!({"name": 5})] {
        assert_api_error(developer.post(&tags, body).await, 400, "BAD_REQUEST").await;
    }
    assert_api_error(
        developer
            .post(
                &format!("{}/artifacts/nope/tags", repo_path(REPO)),
                json!({"name": "x"}),
            )
            .await,
        404,
        "NOT_FOUND",
    )
    .await;

    // Delete: delete rights; only a tag on this artifact.
    let release = format!("{tags}/release");
    assert_api_error(guest.delete(&release).await, 403, "FORBIDDEN").await;
    assert_api_error(developer.delete(&release).await, 403, "FORBIDDEN").await;
    assert_api_error(
        maintainer.delete(&format!("{tags}/latest")).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_api_error(
        maintainer.delete(&format!("{tags}/nope")).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_api_error(
        maintainer.delete(&format!("{tags}/-bad")).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_eq!(
        app.audit_count("delete", "tag", &format!("{REPO}:release"))
            .await,
        0
    );
    assert_empty(maintainer.delete(&release).await, 200, "delete tag").await;
    registry.assert_no_manifest(REPO, "release").await;
    registry.pull_manifest(REPO, &content.a).await;
    assert_api_error(maintainer.delete(&release).await, 404, "NOT_FOUND").await;
    assert_eq!(
        app.audit_count("delete", "tag", &format!("{REPO}:release"))
            .await,
        1
    );
    let (username, project_id): (String, Option<i64>) = sqlx::query_as(
        "SELECT username, project_id FROM audit_logs WHERE operation = 'delete' AND resource_type = 'tag'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((username.as_str(), project_id), ("maintainer", Some(team)));
}

/// Inserts an audit record at a fixed time.
async fn audit(
    app: &TestApp,
    time: &str,
    user: &str,
    op: &str,
    kind: &str,
    resource: &str,
    project: Option<i64>,
) {
    sqlx::query(
        "INSERT INTO audit_logs (op_time, username, operation, resource_type, resource, project_id, client_addr)
         VALUES ($1::timestamptz, $2, $3, $4, $5, $6, '10.0.0.1')",
    )
    .bind(time)
    .bind(user)
    .bind(op)
    .bind(kind)
    .bind(resource)
    .bind(project)
    .execute(&app.db)
    .await
    .unwrap();
}

#[tokio::test]
async fn audit_logs_filter_sort_page_and_show_members_their_projects() {
    let app = TestApp::spawn_secure().await;
    let alpha = app.insert_project("alpha", false).await;
    let beta = app.insert_project("beta", true).await;
    let reader = member(&app, "reader", alpha, GUEST).await;
    audit(
        &app,
        "2024-01-01T10:00:00Z",
        "alice",
        "push",
        "artifact",
        "alpha/app:1",
        Some(alpha),
    )
    .await;
    audit(
        &app,
        "2024-02-01T10:00:00Z",
        "bob",
        "delete",
        "tag",
        "alpha/app:old",
        Some(alpha),
    )
    .await;
    audit(
        &app,
        "2024-03-01T10:00:00Z",
        "alice",
        "pull",
        "artifact",
        "beta/web:1",
        Some(beta),
    )
    .await;
    audit(
        &app,
        "2024-04-01T10:00:00Z",
        "robot$ci",
        "login_failed",
        "user",
        "robot$ci",
        None,
    )
    .await;
    let admin = app.admin_api();
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_logs")
        .fetch_one(&app.db)
        .await
        .unwrap();

    let (list, headers) = json_of(admin.get("/audit-logs?page_size=100").await, "all").await;
    assert_eq!(total(&headers), all);
    let ours: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["client_addr"] == "10.0.0.1")
        .collect();
    assert_eq!(ours.len(), 4);
    // Newest first.
    assert_eq!(ours[0]["operation"], "login_failed");
    assert_eq!(ours[3]["resource"], "alpha/app:1");
    let record = ours[3];
    assert_eq!(record["username"], "alice");
    assert_eq!(record["resource_type"], "artifact");
    assert_eq!(record["operation"], "push");
    assert_eq!(record["op_time"], "2024-01-01T10:00:00.000Z");
    assert_eq!(record["outcome"], "success");
    assert_eq!(record["project_id"], alpha);
    assert!(record["id"].is_i64());
    assert!(ours[0].get("project_id").is_none());

    // q: each key, and sort.
    let query = |q: &str| {
        format!(
            "/audit-logs?q={}",
            q.replace('=', "%3D").replace(' ', "%20")
        )
    };
    let cases = [
        ("username=alice", vec!["beta/web:1", "alpha/app:1"]),
        ("username=~ali", vec!["beta/web:1", "alpha/app:1"]),
        (
            "operation={push delete}",
            vec!["alpha/app:old", "alpha/app:1"],
        ),
        ("operation=pull", vec!["beta/web:1"]),
        ("resource_type=tag", vec!["alpha/app:old"]),
        ("resource=~alpha/", vec!["alpha/app:old", "alpha/app:1"]),
        ("resource=beta/web:1", vec!["beta/web:1"]),
        (
            "op_time=[2024-01-15 00:00:00~2024-03-15 00:00:00]",
            vec!["beta/web:1", "alpha/app:old"],
        ),
        ("op_time=[2024-03-15T00:00:00~]", vec!["robot$ci"]),
        ("username=alice,operation=push", vec!["alpha/app:1"]),
    ];
    for (q, expected) in cases {
        let (list, headers) = json_of(admin.get(&query(q)).await, q).await;
        assert_eq!(names(&list, "resource"), expected, "q={q}");
        assert_eq!(total(&headers), expected.len() as i64, "q={q}");
    }
    let (list, _) = json_of(
        admin
            .get(&format!("{}&sort=op_time", query("username=alice")))
            .await,
        "sort",
    )
    .await;
    assert_eq!(names(&list, "resource"), ["alpha/app:1", "beta/web:1"]);
    let response = admin
        .get(&format!("{}&page_size=1", query("username=alice")))
        .await;
    assert!(response.headers()["link"]
        .to_str()
        .unwrap()
        .contains("rel=\"next\""));

    // A member sees their projects' records only; others see nothing or are refused.
    let (list, headers) = json_of(reader.get("/audit-logs").await, "member").await;
    assert_eq!(total(&headers), 2);
    assert_eq!(names(&list, "resource"), ["alpha/app:old", "alpha/app:1"]);
    app.insert_user("nobody", PASSWORD).await;
    let nobody = app.api_as("nobody", PASSWORD);
    let (list, _) = json_of(nobody.get("/audit-logs").await, "nobody").await;
    assert_eq!(list, json!([]));
    assert_api_error(
        app.anonymous_api().get("/audit-logs").await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    for (path, status, code) in [
        ("/audit-logs?page_size=101", 422, "UNPROCESSABLE_ENTITY"),
        ("/audit-logs?q=who%3Dx", 400, "BAD_REQUEST"),
        ("/audit-logs?q=op_time%3D[x~]", 400, "BAD_REQUEST"),
        ("/audit-logs?sort=client_addr", 400, "BAD_REQUEST"),
    ] {
        assert_api_error(admin.get(path).await, status, code).await;
    }

    // Project logs: members and administrators.
    let (list, headers) = json_of(reader.get("/projects/alpha/logs").await, "alpha").await;
    assert_eq!(total(&headers), 2);
    assert_eq!(names(&list, "resource"), ["alpha/app:old", "alpha/app:1"]);
    let (list, _) = json_of(
        reader
            .get(&format!(
                "/projects/alpha/logs?{}",
                &query("operation=push")[12..]
            ))
            .await,
        "alpha q",
    )
    .await;
    assert_eq!(names(&list, "resource"), ["alpha/app:1"]);
    let (list, _) = json_of(admin.get("/projects/beta/logs").await, "beta").await;
    assert_eq!(names(&list, "resource"), ["beta/web:1"]);
    assert_api_error(reader.get("/projects/beta/logs").await, 403, "FORBIDDEN").await;
    assert_api_error(nobody.get("/projects/alpha/logs").await, 404, "NOT_FOUND").await;
    assert_api_error(
        app.anonymous_api().get("/projects/beta/logs").await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    assert_api_error(
        app.anonymous_api().get("/projects/alpha/logs").await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    assert_api_error(admin.get("/projects/nope/logs").await, 404, "NOT_FOUND").await;
    assert_api_error(
        reader.get("/projects/alpha/logs?page_size=101").await,
        422,
        "UNPROCESSABLE_ENTITY",
    )
    .await;
}

#[tokio::test]
async fn openapi_document_lists_the_content_endpoints() {
    let app = TestApp::spawn_secure().await;
    let (document, _) = json_of(app.anonymous_api().get("/openapi.json").await, "openapi").await;
    let paths = &document["paths"];
    let repo = "/api/v2.0/projects/{project_name}/repositories/{repository_name}";
    let expected = [
        ("/api/v2.0/repositories", "get"),
        ("/api/v2.0/projects/{project_name}/repositories", "get"),
        (repo, "get"),
        (repo, "delete"),
        ("/api/v2.0/projects/{project_name}/repositories/{repository_name}/artifacts", "get"),
        (
            "/api/v2.0/projects/{project_name}/repositories/{repository_name}/artifacts/{reference}",
            "delete",
        ),
        (
            "/api/v2.0/projects/{project_name}/repositories/{repository_name}/artifacts/{reference}/tags",
            "post",
        ),
        (
            "/api/v2.0/projects/{project_name}/repositories/{repository_name}/artifacts/{reference}/tags/{tag_name}",
            "delete",
        ),
        ("/api/v2.0/audit-logs", "get"),
        ("/api/v2.0/projects/{project_name}/logs", "get"),
    ];
    for (path, method) in expected {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} in the document"
        );
    }
    for schema in [
        "Repository",
        "Artifact",
        "Tag",
        "Reference",
        "Platform",
        "AuditLog",
    ] {
        assert!(
            document["components"]["schemas"][schema].is_object(),
            "schema {schema}"
        );
    }
}

#[tokio::test]
async fn audit_records_past_their_retention_are_purged() {
    let app = TestApp::spawn_secure_with(|config| {
        config.audit.retention_days = 30;
        config.audit.purge_interval_secs = 1;
    })
    .await;
    for (resource, age_days) in [("old/app:1", 31), ("recent/app:1", 29)] {
        sqlx::query(
            "INSERT INTO audit_logs (username, operation, resource_type, resource, op_time)
             VALUES ('admin', 'pull', 'artifact', $1, now() - make_interval(days => $2))",
        )
        .bind(resource)
        .bind(age_days)
        .execute(&app.db)
        .await
        .unwrap();
    }
    // The purger runs every second; give a loaded machine a generous bound.
    let mut purged = false;
    for _ in 0..600 {
        if app.audit_count("pull", "artifact", "old/app:1").await == 0 {
            purged = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        purged,
        "a record older than the retention was not purged within 60 s"
    );
    assert_eq!(app.audit_count("pull", "artifact", "recent/app:1").await, 1);
}

#[tokio::test]
async fn the_delete_switches_hold_for_the_management_api_too() {
    let app = TestApp::spawn_secure_with(|config| {
        config.delete.manifests = false;
        config.delete.tags = false;
    })
    .await;
    app.insert_project("team", false).await;
    let content = push_content(&app).await;
    let api = app.admin_api();
    let base = format!("{}/artifacts", repo_path(REPO));
    for path in [
        format!("{base}/{}", content.b),
        format!("{base}/{}/tags/latest", content.b),
        repo_path(REPO),
    ] {
        let message = assert_api_error(api.delete(&path).await, 405, "METHOD_NOT_ALLOWED").await;
        assert!(message.contains("disabled"), "{message}");
    }
    // Nothing went.
    let (tags, _) = json_of(api.get(&format!("{base}/{}/tags", content.b)).await, "tags").await;
    assert_eq!(names(&tags, "name"), vec!["latest".to_owned()]);
    assert_eq!(
        app.audit_count("delete", "artifact", &format!("{REPO}@{}", content.b))
            .await,
        0
    );
}
