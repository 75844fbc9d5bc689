//! The management API's projects, project members, metadata, and ping/health/systeminfo,
//! over real HTTP against a gateway with authentication on.

use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::helpers::{
    assert_api_error, assert_empty_ok, expect_status, total_count, ApiClient, TestApp,
};

const PASSWORD: &str = "User-Passw0rd";

/// A user and an API client logged in as them.
async fn user_api(app: &TestApp, username: &str) -> (i64, ApiClient) {
    let id = app.insert_user(username, PASSWORD).await;
    (id, app.api_as(username, PASSWORD))
}

async fn project_id(app: &TestApp, name: &str) -> i64 {
    sqlx::query_scalar("SELECT id FROM projects WHERE name = $1")
        .bind(name)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// How many audit records about projects and members exist at all.
async fn management_audit_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM audit_logs WHERE resource_type IN ('project', 'member')",
    )
    .fetch_one(&app.db)
    .await
    .unwrap()
}

/// A repository with one manifest in `project`, written straight to the metadata (the
/// registry push path is tested elsewhere); returns the repository id.
async fn add_repository(app: &TestApp, project: &str, repo: &str) -> i64 {
    let repository_id: i64 = sqlx::query_scalar(
        "INSERT INTO repositories (name, project_id)
         SELECT $1, id FROM projects WHERE name = $2 RETURNING id",
    )
    .bind(format!("{project}/{repo}"))
    .bind(project)
    .fetch_one(&app.db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO manifests (repository_id, digest, media_type, size, content)
         VALUES ($1, $2, 'application/vnd.oci.image.manifest.v1+json', 2, '{}'::bytea)",
    )
    .bind(repository_id)
    .bind(format!("sha256:{}", "a".repeat(64)))
    .execute(&app.db)
    .await
    .unwrap();
    repository_id
}

/// Sends `body` verbatim as JSON.
async fn send_raw(api: &ApiClient, method: Method, path: &str, body: &str) -> Response {
    api.request(method, path)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// The targets of a `Link` header by relation.
fn links(response: &Response) -> (Option<String>, Option<String>) {
    let Some(link) = header(response, "link") else {
        return (None, None);
    };
    let (mut prev, mut next) = (None, None);
    for part in link.split(" , ") {
        let target = part[part.find('<').unwrap() + 1..part.find('>').unwrap()].to_owned();
        if part.ends_with(r#"rel="prev""#) {
            prev = Some(target);
        } else if part.ends_with(r#"rel="next""#) {
            next = Some(target);
        } else {
            panic!("unexpected Link part {part:?}");
        }
    }
    (prev, next)
}

/// Project names in a listing.
async fn names(response: Response) -> Vec<String> {
    assert_eq!(response.status(), 200, "listing of {}", response.url());
    let body: Value = response.json().await.unwrap();
    body.as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

// ----- ping, health, systeminfo -----------------------------------------------------------

#[tokio::test]
async fn ping_health_and_systeminfo_answer_in_harbor_shapes() {
    let app = TestApp::spawn_secure().await;
    let anonymous = app.anonymous_api();

    let ping = expect_status(anonymous.get("/ping").await, 200, "ping").await;
    assert!(header(&ping, "content-type")
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(ping.text().await.unwrap(), "Pong");

    let health = anonymous.get_json("/health").await;
    assert_eq!(health["status"], "healthy", "{health}");
    let components: Vec<&str> = health["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["status"], "healthy", "{c}");
            c["name"].as_str().unwrap()
        })
        .collect();
    assert_eq!(components, ["database", "storage"]);

    // Anonymous callers get the unprotected fields only, as in Harbor.
    let info = anonymous.get_json("/systeminfo").await;
    assert_eq!(info["auth_mode"], "db_auth");
    assert_eq!(info["self_registration"], false);
    assert!(info["harbor_version"].as_str().unwrap().starts_with("v2."));
    assert!(info.get("external_url").is_none(), "{info}");

    let info = app.admin_api().get_json("/systeminfo").await;
    let external = format!("http://{}", app.host);
    assert_eq!(info["external_url"], external.as_str());
    assert_eq!(info["registry_url"], app.host.as_str());
    assert_eq!(info["project_creation_restriction"], "everyone");
    assert_eq!(info["has_ca_root"], false);
    assert_eq!(info["read_only"], false);
    assert_eq!(info["with_chartmuseum"], false);
    assert_eq!(info["with_notary"], false);
    assert_eq!(info["primary_auth_mode"], false);
    assert!(info["current_time"].as_str().unwrap().ends_with('Z'));

    let volumes = app.admin_api().get_json("/systeminfo/volumes").await;
    let storage = &volumes["storage"][0];
    assert!(storage["total"].as_u64().unwrap() > 0, "{volumes}");
    assert!(storage["free"].as_u64().unwrap() <= storage["total"].as_u64().unwrap());

    assert_api_error(
        anonymous.get("/systeminfo/volumes").await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    let (_, alice) = user_api(&app, "alice").await;
    assert_api_error(alice.get("/systeminfo/volumes").await, 403, "FORBIDDEN").await;
    // The OpenAPI document lists this module's operations.
    let document = anonymous
        .client
        .get(format!("{}/api/v2.0/openapi.json", anonymous.address))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let paths = &document["paths"];
    for (path, method) in [
        ("/api/v2.0/ping", "get"),
        ("/api/v2.0/health", "get"),
        ("/api/v2.0/systeminfo/volumes", "get"),
        ("/api/v2.0/projects", "head"),
        ("/api/v2.0/projects", "post"),
        ("/api/v2.0/projects/{project_name_or_id}", "delete"),
        ("/api/v2.0/projects/{project_name_or_id}/_deletable", "get"),
        ("/api/v2.0/projects/{project_name_or_id}/metadatas", "post"),
        ("/api/v2.0/projects/{project_name_or_id}/metadatas/", "get"),
        (
            "/api/v2.0/projects/{project_name_or_id}/metadatas/{meta_name}",
            "put",
        ),
        (
            "/api/v2.0/projects/{project_name_or_id}/members/{mid}",
            "put",
        ),
    ] {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} not documented"
        );
    }

    // Wrong credentials are refused rather than treated as anonymous.
    let wrong = app.api_as("alice", "Wrong-Passw0rd");
    assert_api_error(wrong.get("/systeminfo").await, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn systeminfo_uses_the_configured_external_url() {
    let app = TestApp::spawn_secure_with(|config| {
        config.external_url = "https://registry.example.com/".to_owned();
    })
    .await;
    let info = app.admin_api().get_json("/systeminfo").await;
    assert_eq!(info["external_url"], "https://registry.example.com");
    assert_eq!(info["registry_url"], "registry.example.com");
}

#[tokio::test]
async fn health_reports_storage_that_cannot_be_written() {
    let app = TestApp::spawn_secure().await;
    let root = app.config.storage_root();
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::write(&root, b"not a directory").unwrap();
    let health = app.anonymous_api().get_json("/health").await;
    assert_eq!(health["status"], "unhealthy", "{health}");
    let storage = &health["components"][1];
    assert_eq!(storage["name"], "storage");
    assert_eq!(storage["status"], "unhealthy");
    assert!(
        storage["error"].as_str().unwrap().contains("not writable"),
        "{storage}"
    );
    assert_eq!(health["components"][0]["status"], "healthy");
}

// ----- create, get, head ------------------------------------------------------------------

#[tokio::test]
async fn an_admin_creates_gets_and_checks_a_project() {
    let app = TestApp::spawn_secure().await;
    let admin = app.admin_api();

    let response = admin
        .post(
            "/projects",
            json!({"project_name": "team-a", "metadata": {"public": "false", "auto_scan": "true"}}),
        )
        .await;
    let response = expect_status(response, 201, "create").await;
    let id = project_id(&app, "team-a").await;
    assert_eq!(
        header(&response, "location").unwrap(),
        format!("/api/v2.0/projects/{id}")
    );
    assert_eq!(header(&response, "content-type"), None);

    // harborapi asks for the name in Location.
    let response = admin
        .request(Method::POST, "/projects")
        .header("X-Resource-Name-In-Location", "true")
        .json(&json!({"project_name": "123", "public": true}))
        .send()
        .await
        .unwrap();
    let response = expect_status(response, 201, "create by name").await;
    assert_eq!(
        header(&response, "location").unwrap(),
        "/api/v2.0/projects/123"
    );

    let by_id = admin.get_json(&format!("/projects/{id}")).await;
    let by_name = admin.get_json("/projects/team-a").await;
    assert_eq!(by_id, by_name);
    assert_eq!(by_id["project_id"], id);
    assert_eq!(by_id["name"], "team-a");
    assert_eq!(by_id["owner_name"], "admin");
    assert!(by_id["owner_id"].is_i64());
    assert_eq!(by_id["repo_count"], 0);
    assert_eq!(by_id["deleted"], false);
    assert_eq!(by_id["togglable"], true);
    assert_eq!(by_id["current_user_role_id"], 1);
    assert_eq!(by_id["current_user_role_ids"], json!([1]));
    assert_eq!(
        by_id["metadata"],
        json!({"public": "false", "auto_scan": "true"})
    );
    assert_eq!(by_id["cve_allowlist"]["items"], json!([]));
    let created = by_id["creation_time"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(created).is_ok());
    assert!(created.ends_with('Z') && created.len() == 24, "{created}");

    // A numeric name needs X-Is-Resource-Name; without it "123" is an id.
    let response = admin
        .request(Method::GET, "/projects/123")
        .header("X-Is-Resource-Name", "true")
        .send()
        .await
        .unwrap();
    let numeric: Value = expect_status(response, 200, "get 123")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(numeric["name"], "123");
    assert_eq!(numeric["metadata"]["public"], "true");
    assert_api_error(admin.get("/projects/123").await, 404, "NOT_FOUND").await;
    assert_api_error(admin.get("/projects/999999").await, 404, "NOT_FOUND").await;
    assert_api_error(admin.get("/projects/nope").await, 404, "NOT_FOUND").await;

    // HEAD: 200 when it exists, 404 when not; the name is required.
    assert_eq!(
        admin.head("/projects?project_name=team-a").await.status(),
        200
    );
    assert_eq!(
        admin.head("/projects?project_name=nope").await.status(),
        404
    );
    assert_eq!(admin.head("/projects").await.status(), 422);

    // The creator is the project admin, and each creation is audited once.
    let role: i16 = sqlx::query_scalar(
        "SELECT m.role_id FROM project_members m JOIN users u ON u.id = m.user_id
         WHERE m.project_id = $1 AND u.username = 'admin'",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(role, 1);
    assert_eq!(app.audit_count("create", "project", "team-a").await, 1);
    assert_eq!(app.audit_count("create", "project", "123").await, 1);
    assert_eq!(management_audit_rows(&app).await, 2);
}

#[tokio::test]
async fn project_creation_refuses_bad_requests() {
    let app = TestApp::spawn_secure().await;
    let admin = app.admin_api();
    admin.create_project("taken", false).await;

    let anonymous = app.anonymous_api();
    assert_api_error(
        anonymous
            .post("/projects", json!({"project_name": "anon"}))
            .await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    assert_api_error(
        send_raw(&admin, Method::POST, "/projects", "{\"project_name\": ").await,
        400,
        "BAD_REQUEST",
    )
    .await;
    let empty = admin
        .request(Method::POST, "/projects")
        .send()
        .await
        .unwrap();
    assert_api_error(empty, 400, "BAD_REQUEST").await;
    assert_api_error(admin.post("/projects", json!({})).await, 400, "BAD_REQUEST").await;
    for bad in ["Team", "a b", "-a", "a--b", "a/b", "", &"a".repeat(256)] {
        let response = admin.post("/projects", json!({"project_name": bad})).await;
        assert_api_error(response, 400, "BAD_REQUEST").await;
    }
    let message = assert_api_error(
        admin
            .post("/projects", json!({"project_name": "taken"}))
            .await,
        409,
        "CONFLICT",
    )
    .await;
    assert!(message.contains("taken"), "{message}");
    let message = assert_api_error(
        admin
            .post(
                "/projects",
                json!({"project_name": "proxy", "registry_id": 1}),
            )
            .await,
        400,
        "BAD_REQUEST",
    )
    .await;
    assert_eq!(message, "proxy cache projects are not supported yet");
    for body in [
        json!({"project_name": "q1", "storage_limit": 1024}),
        json!({"project_name": "q2", "metadata": {"public": "maybe"}}),
        json!({"project_name": "q3", "metadata": {"severity": "worst"}}),
        json!({"project_name": "q4", "metadata": {"retention_id": "7"}}),
        json!({"project_name": "q5", "metadata": {"nested": {"a": 1}}}),
        json!({"project_name": "q6", "cve_allowlist": {"items": [{"cve_id": "CVE-2024-1"}]}}),
    ] {
        assert_api_error(admin.post("/projects", body).await, 400, "BAD_REQUEST").await;
    }
    // Null and -1 mean "none", as Harbor's clients send them.
    let response = admin
        .post(
            "/projects",
            json!({"project_name": "fine", "storage_limit": -1, "registry_id": null,
                   "metadata": {"public": "true", "proxy_speed_kb": "100"}}),
        )
        .await;
    expect_status(response, 201, "create with nulls").await;
    let fine = admin.get_json("/projects/fine").await;
    assert_eq!(fine["metadata"], json!({"public": "true"}));

    // Only the two successful creations were audited.
    assert_eq!(management_audit_rows(&app).await, 2);
    assert_eq!(app.count_rows("projects").await, 2);
}

#[tokio::test]
async fn any_user_may_create_a_project_and_becomes_its_admin() {
    let app = TestApp::spawn_secure().await;
    let (alice_id, alice) = user_api(&app, "alice").await;
    let response = alice
        .post("/projects", json!({"project_name": "alices"}))
        .await;
    expect_status(response, 201, "user creates").await;
    let project = alice.get_json("/projects/alices").await;
    assert_eq!(project["owner_id"], alice_id);
    assert_eq!(project["owner_name"], "alice");
    assert_eq!(project["current_user_role_id"], 1);
    assert_eq!(project["metadata"]["public"], "false");
    // The admin sees it too, without being a member.
    let seen = app.admin_api().get_json("/projects/alices").await;
    assert_eq!(seen["current_user_role_id"], 0);
    assert_eq!(seen["current_user_role_ids"], json!([]));
    let entry: (String, Option<i64>) =
        sqlx::query_as("SELECT username, project_id FROM audit_logs WHERE operation = 'create'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(
        entry,
        (
            "alice".to_owned(),
            Some(project["project_id"].as_i64().unwrap())
        )
    );
}

// ----- listing ------------------------------------------------------------------------------

#[tokio::test]
async fn listings_show_what_the_caller_may_see_and_filter_it() {
    let app = TestApp::spawn_secure().await;
    let admin = app.admin_api();
    admin.create_project("pub-one", true).await;
    admin.create_project("pub-two", true).await;
    admin.create_project("priv-alice", false).await;
    admin.create_project("priv-other", false).await;
    let (alice_id, alice) = user_api(&app, "alice").await;
    app.insert_member(project_id(&app, "priv-alice").await, alice_id, 2)
        .await;
    let (_, bob) = user_api(&app, "bob").await;
    expect_status(
        bob.post("/projects", json!({"project_name": "bobs"})).await,
        201,
        "bob",
    )
    .await;

    let all = ["bobs", "priv-alice", "priv-other", "pub-one", "pub-two"];
    assert_eq!(names(admin.get("/projects").await).await, all);
    assert_eq!(
        names(app.anonymous_api().get("/projects").await).await,
        ["pub-one", "pub-two"]
    );
    assert_eq!(
        names(alice.get("/projects").await).await,
        ["priv-alice", "pub-one", "pub-two"]
    );
    // public=false: only private projects the caller may see; anonymous gets none.
    assert_eq!(
        names(alice.get("/projects?public=false").await).await,
        ["priv-alice"]
    );
    let response = app.anonymous_api().get("/projects?public=false").await;
    assert_eq!(total_count(&response), 0);
    assert_eq!(header(&response, "link"), None);
    assert!(names(response).await.is_empty());
    assert_eq!(
        names(admin.get("/projects?public=true").await).await,
        ["pub-one", "pub-two"]
    );

    // The alice listing shows her role in her project.
    let listed: Value = alice.get_json("/projects?name=alice").await;
    assert_eq!(listed[0]["current_user_role_id"], 2);

    // name (fuzzy), owner, q, sort.
    assert_eq!(
        names(admin.get("/projects?name=priv").await).await,
        ["priv-alice", "priv-other"]
    );
    assert_eq!(
        names(admin.get("/projects?owner=bob").await).await,
        ["bobs"]
    );
    assert_eq!(
        names(admin.get("/projects?q=name%3D~one").await).await,
        ["pub-one"]
    );
    assert_eq!(
        names(admin.get("/projects?q=name%3Dpub").await).await,
        Vec::<String>::new()
    );
    assert_eq!(
        names(admin.get("/projects?q=public%3Dtrue,name%3D~two").await).await,
        ["pub-two"]
    );
    assert_eq!(
        names(admin.get("/projects?q=owner%3Dbob").await).await,
        ["bobs"]
    );
    let one = project_id(&app, "pub-one").await;
    let two = project_id(&app, "pub-two").await;
    assert_eq!(
        names(
            admin
                .get(&format!("/projects?q=project_id%3D%7B{one}%20{two}%7D"))
                .await
        )
        .await,
        ["pub-one", "pub-two"]
    );
    let mut reversed = all.to_vec();
    reversed.reverse();
    assert_eq!(
        names(admin.get("/projects?sort=-name").await).await,
        reversed
    );
    assert_eq!(
        names(admin.get("/projects?sort=project_id").await).await,
        ["pub-one", "pub-two", "priv-alice", "priv-other", "bobs"]
    );

    // Refusals.
    assert_api_error(
        admin.get("/projects?page_size=101").await,
        422,
        "UNPROCESSABLE_ENTITY",
    )
    .await;
    assert_api_error(
        admin.get("/projects?page=0").await,
        422,
        "UNPROCESSABLE_ENTITY",
    )
    .await;
    assert_api_error(
        admin.get("/projects?public=maybe").await,
        422,
        "UNPROCESSABLE_ENTITY",
    )
    .await;
    assert_api_error(admin.get("/projects?q=name").await, 400, "BAD_REQUEST").await;
    assert_api_error(
        admin.get("/projects?q=colour%3Dred").await,
        400,
        "BAD_REQUEST",
    )
    .await;
    assert_api_error(admin.get("/projects?sort=owner").await, 400, "BAD_REQUEST").await;
}

#[tokio::test]
async fn listings_page_with_total_count_and_links() {
    let app = TestApp::spawn_secure().await;
    let admin = app.admin_api();
    for i in 0..5 {
        admin.create_project(&format!("p{i}"), false).await;
    }
    let first = admin.get("/projects?name=p&page_size=2").await;
    assert_eq!(total_count(&first), 5);
    let (prev, next) = links(&first);
    assert_eq!(prev, None);
    let next = next.unwrap();
    assert_eq!(next, "/api/v2.0/projects?name=p&page=2&page_size=2");
    assert_eq!(names(first).await, ["p0", "p1"]);

    let second = admin.get(next.trim_start_matches("/api/v2.0")).await;
    assert_eq!(total_count(&second), 5);
    let (prev, next) = links(&second);
    assert_eq!(
        prev.unwrap(),
        "/api/v2.0/projects?name=p&page=1&page_size=2"
    );
    let next = next.unwrap();
    assert_eq!(names(second).await, ["p2", "p3"]);

    let last = admin.get(next.trim_start_matches("/api/v2.0")).await;
    let (prev, next) = links(&last);
    assert!(prev.is_some());
    assert_eq!(next, None);
    assert_eq!(names(last).await, ["p4"]);

    // Past the end: an empty page, still with the total.
    let beyond = admin.get("/projects?page=9&page_size=2").await;
    assert_eq!(total_count(&beyond), 5);
    assert!(names(beyond).await.is_empty());
}

// ----- visibility of one project -------------------------------------------------------------

#[tokio::test]
async fn private_projects_are_hidden_from_non_members() {
    let app = TestApp::spawn_secure().await;
    let admin = app.admin_api();
    admin.create_project("secret", false).await;
    admin.create_project("open", true).await;
    let (alice_id, alice) = user_api(&app, "alice").await;
    let (_, mallory) = user_api(&app, "mallory").await;
    let id = project_id(&app, "secret").await;
    app.insert_member(id, alice_id, 3).await;

    let seen = alice.get_json("/projects/secret").await;
    assert_eq!(seen["current_user_role_id"], 3);
    assert_eq!(
        alice.head("/projects?project_name=secret").await.status(),
        200
    );

    // A non-member learns nothing, not even that it exists; anonymous callers are told
    // to log in.
    assert_api_error(mallory.get("/projects/secret").await, 404, "NOT_FOUND").await;
    assert_api_error(
        mallory.get(&format!("/projects/{id}")).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_eq!(
        mallory.head("/projects?project_name=secret").await.status(),
        404
    );
    let anonymous = app.anonymous_api();
    assert_api_error(anonymous.get("/projects/secret").await, 401, "UNAUTHORIZED").await;
    assert_eq!(
        anonymous
            .head("/projects?project_name=secret")
            .await
            .status(),
        401
    );

    // Public projects are readable by everyone.
    assert_eq!(anonymous.get_json("/projects/open").await["name"], "open");
    assert_eq!(
        mallory.get_json("/projects/open").await["current_user_role_id"],
        0
    );
    assert_eq!(
        anonymous.head("/projects?project_name=open").await.status(),
        200
    );
}

// ----- update -----------------------------------------------------------------------------

#[tokio::test]
async fn project_updates_merge_metadata_and_need_a_project_admin() {
    let app = TestApp::spawn_secure().await;
    let admin = app.admin_api();
    admin.create_project("team", false).await;
    let id = project_id(&app, "team").await;

    let response = admin
        .put(
            "/projects/team",
            json!({"metadata": {"auto_scan": "true", "severity": "High"}}),
        )
        .await;
    assert_empty_ok(response, "update metadata").await;
    // A partial update keeps what it does not name; project_name is ignored.
    let response = admin
        .request(Method::PUT, &format!("/projects/{id}"))
        .header("X-Is-Resource-Name", "false")
        .json(&json!({"project_name": "renamed", "metadata": {"public": "true"}}))
        .send()
        .await
        .unwrap();
    assert_empty_ok(response, "update public").await;
    let project = admin.get_json("/projects/team").await;
    assert_eq!(
        project["metadata"],
        json!({"public": "true", "auto_scan": "true", "severity": "high"})
    );
    // The deprecated flag works when metadata.public is absent.
    assert_empty_ok(
        admin.put("/projects/team", json!({"public": false})).await,
        "deprecated",
    )
    .await;
    assert_eq!(
        admin.get_json("/projects/team").await["metadata"]["public"],
        "false"
    );
    assert_eq!(app.audit_count("update", "project", "team").await, 3);

    // Refusals change nothing and record nothing.
    let (dev_id, developer) = user_api(&app, "dev").await;
    app.insert_member(project_id(&app, "team").await, dev_id, 2)
        .await;
    let (_, stranger) = user_api(&app, "stranger").await;
    let body = json!({"metadata": {"public": "true"}});
    assert_api_error(
        developer.put("/projects/team", body.clone()).await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert_api_error(
        stranger.put("/projects/team", body.clone()).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_api_error(
        app.anonymous_api()
            .put("/projects/team", body.clone())
            .await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    assert_api_error(
        admin.put("/projects/nope", body.clone()).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_api_error(
        send_raw(&admin, Method::PUT, "/projects/team", "{not json").await,
        400,
        "BAD_REQUEST",
    )
    .await;
    for bad in [
        json!({"metadata": {"public": "maybe"}}),
        json!({"metadata": {"retention_id": "5"}}),
        json!({"registry_id": 3}),
        json!({"storage_limit": 10}),
        json!({"cve_allowlist": {"project_id": id + 1, "items": []}}),
    ] {
        assert_api_error(admin.put("/projects/team", bad).await, 400, "BAD_REQUEST").await;
    }
    // Anonymous callers of a public project are told to log in.
    admin
        .put("/projects/team", json!({"metadata": {"public": "true"}}))
        .await;
    assert_api_error(
        app.anonymous_api().put("/projects/team", body).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    assert_eq!(app.audit_count("update", "project", "team").await, 4);
}

// ----- delete, summary, deletable -----------------------------------------------------------

#[tokio::test]
async fn projects_with_repositories_cannot_be_deleted() {
    let app = TestApp::spawn_secure().await;
    let admin = app.admin_api();
    admin.create_project("full", false).await;
    let (dev_id, developer) = user_api(&app, "dev").await;
    app.insert_member(project_id(&app, "full").await, dev_id, 2)
        .await;
    let repository = add_repository(&app, "full", "app").await;

    assert_eq!(admin.get_json("/projects/full").await["repo_count"], 1);
    let deletable = admin.get_json("/projects/full/_deletable").await;
    assert_eq!(deletable["deletable"], false);
    assert_eq!(
        deletable["message"],
        "the project contains repositories, can not be deleted"
    );
    let message = assert_api_error(admin.delete("/projects/full").await, 412, "PRECONDITION").await;
    assert_eq!(
        message,
        "the project contains repositories, can not be deleted"
    );
    assert_api_error(developer.delete("/projects/full").await, 403, "FORBIDDEN").await;
    assert_api_error(
        developer.get("/projects/full/_deletable").await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert_eq!(app.audit_count("delete", "project", "full").await, 0);

    // Once the repository's artifacts are gone the project can go, and so does the
    // empty repository row left behind.
    sqlx::query("DELETE FROM manifests WHERE repository_id = $1")
        .bind(repository)
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(admin.get_json("/projects/full").await["repo_count"], 0);
    // An upload in progress still holds it: deleting would orphan its staged bytes.
    sqlx::query("INSERT INTO upload_sessions (id, repository_id) VALUES ($1, $2)")
        .bind(uuid::Uuid::new_v4())
        .bind(repository)
        .execute(&app.db)
        .await
        .unwrap();
    let deletable = admin.get_json("/projects/full/_deletable").await;
    assert_eq!(deletable["deletable"], false);
    let message = assert_api_error(admin.delete("/projects/full").await, 412, "PRECONDITION").await;
    assert!(message.contains("uploads in progress"), "{message}");
    sqlx::query("DELETE FROM upload_sessions")
        .execute(&app.db)
        .await
        .unwrap();
    let deletable = admin.get_json("/projects/full/_deletable").await;
    assert_eq!(deletable, json!({"deletable": true, "message": ""}));
    assert_empty_ok(admin.delete("/projects/full").await, "delete").await;
    assert_api_error(admin.get("/projects/full").await, 404, "NOT_FOUND").await;
    assert_api_error(admin.delete("/projects/full").await, 404, "NOT_FOUND").await;
    assert_eq!(app.count_rows("repositories").await, 0);
    assert_eq!(app.count_rows("project_members").await, 0);
    assert_eq!(app.audit_count("delete", "project", "full").await, 1);
}

#[tokio::test]
async fn project_admins_delete_their_projects_and_others_cannot() {
    let app = TestApp::spawn_secure().await;
    let (_, alice) = user_api(&app, "alice").await;
    expect_status(
        alice
            .post("/projects", json!({"project_name": "mine"}))
            .await,
        201,
        "c",
    )
    .await;
    let (_, bob) = user_api(&app, "bob").await;
    assert_api_error(bob.delete("/projects/mine").await, 404, "NOT_FOUND").await;
    assert_api_error(
        app.anonymous_api().delete("/projects/mine").await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    let id = project_id(&app, "mine").await;
    assert_empty_ok(
        alice.delete(&format!("/projects/{id}")).await,
        "delete by id",
    )
    .await;
    assert_eq!(app.count_rows("projects").await, 0);
    assert_eq!(app.audit_count("delete", "project", "mine").await, 1);
}

#[tokio::test]
async fn summaries_count_repositories_and_members_by_role() {
    let app = TestApp::spawn_secure().await;
    let admin = app.admin_api();
    admin.create_project("team", true).await;
    for (name, role) in [("m1", 4), ("d1", 2), ("d2", 2), ("g1", 3), ("l1", 5)] {
        let id = app.insert_user(name, PASSWORD).await;
        app.insert_member(project_id(&app, "team").await, id, role)
            .await;
    }
    add_repository(&app, "team", "one").await;
    let summary = app
        .api_as("g1", PASSWORD)
        .get_json("/projects/team/summary")
        .await;
    assert_eq!(
        summary,
        json!({"repo_count": 1, "project_admin_count": 1, "maintainer_count": 1,
               "developer_count": 2, "guest_count": 1, "limited_guest_count": 1})
    );
    // Non-members of a public project see the repository count only.
    let summary = app.anonymous_api().get_json("/projects/team/summary").await;
    assert_eq!(summary, json!({"repo_count": 1}));
    assert_api_error(admin.get("/projects/none/summary").await, 404, "NOT_FOUND").await;
    admin.create_project("hidden", false).await;
    assert_api_error(
        app.api_as("g1", PASSWORD)
            .get("/projects/hidden/summary")
            .await,
        404,
        "NOT_FOUND",
    )
    .await;
}

// ----- metadata endpoints -------------------------------------------------------------------

#[tokio::test]
async fn metadata_entries_are_added_read_changed_and_removed() {
    let app = TestApp::spawn_secure().await;
    let admin = app.admin_api();
    admin.create_project("team", true).await;

    // Both spellings of the collection path.
    assert_eq!(
        admin.get_json("/projects/team/metadatas").await,
        json!({"public": "true"})
    );
    assert_eq!(
        admin.get_json("/projects/team/metadatas/").await,
        json!({"public": "true"})
    );

    assert_empty_ok(
        admin
            .post("/projects/team/metadatas", json!({"auto_scan": "True"}))
            .await,
        "add",
    )
    .await;
    assert_empty_ok(
        admin
            .post("/projects/team/metadatas/", json!({"severity": "low"}))
            .await,
        "add with slash",
    )
    .await;
    assert_eq!(
        admin.get_json("/projects/team/metadatas/auto_scan").await,
        json!({"auto_scan": "true"})
    );
    assert_api_error(
        admin
            .post("/projects/team/metadatas", json!({"auto_scan": "false"}))
            .await,
        409,
        "CONFLICT",
    )
    .await;
    assert_api_error(
        admin
            .post("/projects/team/metadatas", json!({"public": "false"}))
            .await,
        409,
        "CONFLICT",
    )
    .await;
    assert_api_error(
        admin.post("/projects/team/metadatas", json!({})).await,
        400,
        "BAD_REQUEST",
    )
    .await;

    assert_empty_ok(
        admin
            .put(
                "/projects/team/metadatas/severity",
                json!({"severity": "Critical"}),
            )
            .await,
        "put",
    )
    .await;
    assert_eq!(
        admin.get_json("/projects/team/metadatas/severity").await,
        json!({"severity": "critical"})
    );
    assert_api_error(
        admin
            .put("/projects/team/metadatas/severity", json!({"other": "x"}))
            .await,
        400,
        "BAD_REQUEST",
    )
    .await;
    assert_api_error(
        admin
            .put(
                "/projects/team/metadatas/severity",
                json!({"severity": "worst"}),
            )
            .await,
        400,
        "BAD_REQUEST",
    )
    .await;
    assert_api_error(
        admin
            .put(
                "/projects/team/metadatas/prevent_vul",
                json!({"prevent_vul": "true"}),
            )
            .await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_api_error(
        admin.get("/projects/team/metadatas/absent").await,
        404,
        "NOT_FOUND",
    )
    .await;

    assert_empty_ok(
        admin.delete("/projects/team/metadatas/severity").await,
        "delete",
    )
    .await;
    assert_api_error(
        admin.delete("/projects/team/metadatas/severity").await,
        404,
        "NOT_FOUND",
    )
    .await;
    // Removing `public` makes the project private.
    assert_empty_ok(
        admin.delete("/projects/team/metadatas/public").await,
        "delete public",
    )
    .await;
    assert_eq!(
        admin.get_json("/projects/team/metadatas").await,
        json!({"public": "false", "auto_scan": "true"})
    );

    // Refusals.
    let (dev_id, developer) = user_api(&app, "dev").await;
    app.insert_member(project_id(&app, "team").await, dev_id, 2)
        .await;
    assert_eq!(
        developer.get_json("/projects/team/metadatas").await["auto_scan"],
        "true"
    );
    assert_api_error(
        developer
            .post("/projects/team/metadatas", json!({"prevent_vul": "true"}))
            .await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert_api_error(
        developer.delete("/projects/team/metadatas/auto_scan").await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert_api_error(
        app.anonymous_api().get("/projects/team/metadatas").await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    assert_api_error(
        send_raw(&admin, Method::POST, "/projects/team/metadatas", "[").await,
        400,
        "BAD_REQUEST",
    )
    .await;
    assert_api_error(
        admin.get("/projects/none/metadatas").await,
        404,
        "NOT_FOUND",
    )
    .await;

    // Five changes, each one project update.
    assert_eq!(app.audit_count("update", "project", "team").await, 5);
}

// ----- members ----------------------------------------------------------------------------

#[tokio::test]
async fn members_are_added_listed_changed_and_removed() {
    let app = TestApp::spawn_secure().await;
    let admin = app.admin_api();
    admin.create_project("team", false).await;
    let id = project_id(&app, "team").await;
    let alice_id = app.insert_user("alice", PASSWORD).await;
    let bob_id = app.insert_user("bob", PASSWORD).await;

    let response = admin
        .post(
            "/projects/team/members",
            json!({"role_id": 2, "member_user": {"username": "alice"}}),
        )
        .await;
    let response = expect_status(response, 201, "add alice").await;
    let location = header(&response, "location").unwrap();
    let alice_mid: i64 = location.rsplit('/').next().unwrap().parse().unwrap();
    assert_eq!(
        location,
        format!("/api/v2.0/projects/team/members/{alice_mid}")
    );

    // By user id, addressing the project by id: the Location keeps the id.
    let response = admin
        .post(
            &format!("/projects/{id}/members"),
            json!({"role_id": 3, "member_user": {"user_id": bob_id}}),
        )
        .await;
    let response = expect_status(response, 201, "add bob").await;
    let location = header(&response, "location").unwrap();
    assert!(
        location.starts_with(&format!("/api/v2.0/projects/{id}/members/")),
        "{location}"
    );
    let bob_mid: i64 = location.rsplit('/').next().unwrap().parse().unwrap();

    let member = admin
        .get_json(&format!("/projects/team/members/{alice_mid}"))
        .await;
    assert_eq!(
        member,
        json!({"id": alice_mid, "project_id": id, "entity_name": "alice", "role_name": "developer",
               "role_id": 2, "entity_id": alice_id, "entity_type": "u"})
    );

    let response = admin.get("/projects/team/members").await;
    assert_eq!(total_count(&response), 3);
    let listed: Value = response.json().await.unwrap();
    let entities: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["entity_name"].as_str().unwrap())
        .collect();
    assert_eq!(entities, ["admin", "alice", "bob"]);
    assert_eq!(listed[0]["role_name"], "projectAdmin");

    let filtered = admin.get_json("/projects/team/members?entityname=li").await;
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    assert_eq!(filtered[0]["entity_name"], "alice");

    let page = admin.get("/projects/team/members?page=2&page_size=1").await;
    assert_eq!(total_count(&page), 3);
    let (prev, next) = links(&page);
    assert_eq!(
        prev.unwrap(),
        "/api/v2.0/projects/team/members?page=1&page_size=1"
    );
    assert_eq!(
        next.unwrap(),
        "/api/v2.0/projects/team/members?page=3&page_size=1"
    );
    assert_eq!(
        page.json::<Value>().await.unwrap()[0]["entity_name"],
        "alice"
    );

    // Any member may list; the guest bob sees the same.
    let bob = app.api_as("bob", PASSWORD);
    assert_eq!(
        bob.get_json("/projects/team/members")
            .await
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        bob.get_json(&format!("/projects/team/members/{bob_mid}"))
            .await["role_name"],
        "guest"
    );

    // Change bob to maintainer, then remove alice.
    assert_empty_ok(
        admin
            .put(
                &format!("/projects/team/members/{bob_mid}"),
                json!({"role_id": 4}),
            )
            .await,
        "update role",
    )
    .await;
    assert_eq!(
        admin
            .get_json(&format!("/projects/team/members/{bob_mid}"))
            .await["role_id"],
        4
    );
    assert_empty_ok(
        admin
            .delete(&format!("/projects/team/members/{alice_mid}"))
            .await,
        "remove",
    )
    .await;
    assert_api_error(
        admin
            .get(&format!("/projects/team/members/{alice_mid}"))
            .await,
        404,
        "NOT_FOUND",
    )
    .await;
    // Alice lost access with her membership.
    assert_api_error(
        app.api_as("alice", PASSWORD).get("/projects/team").await,
        404,
        "NOT_FOUND",
    )
    .await;

    // Each change was audited exactly once, as <project>/<username>.
    assert_eq!(app.audit_count("create", "member", "team/alice").await, 1);
    assert_eq!(app.audit_count("create", "member", "team/bob").await, 1);
    assert_eq!(app.audit_count("update", "member", "team/bob").await, 1);
    assert_eq!(app.audit_count("delete", "member", "team/alice").await, 1);
    let member_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_logs WHERE resource_type = 'member'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(member_rows, 4);
}

#[tokio::test]
async fn member_changes_refuse_bad_requests_and_wrong_roles() {
    let app = TestApp::spawn_secure().await;
    let admin = app.admin_api();
    admin.create_project("team", false).await;
    admin.create_project("open", true).await;
    let (dev_id, developer) = user_api(&app, "dev").await;
    app.insert_member(project_id(&app, "team").await, dev_id, 2)
        .await;
    let carol_id = app.insert_user("carol", PASSWORD).await;
    let (_, stranger) = user_api(&app, "stranger").await;
    let dev_mid: i64 = sqlx::query_scalar("SELECT id FROM project_members WHERE user_id = $1")
        .bind(dev_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    let add = |role: i64, user: Value| json!({"role_id": role, "member_user": user});
    let before = management_audit_rows(&app).await;

    // Wrong role, strangers, anonymous.
    assert_api_error(
        developer
            .post(
                "/projects/team/members",
                add(3, json!({"user_id": carol_id})),
            )
            .await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert_api_error(
        developer
            .put(
                &format!("/projects/team/members/{dev_mid}"),
                json!({"role_id": 1}),
            )
            .await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert_api_error(
        developer
            .delete(&format!("/projects/team/members/{dev_mid}"))
            .await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert_api_error(
        stranger.get("/projects/team/members").await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_api_error(
        stranger.get("/projects/open/members").await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert_api_error(
        app.anonymous_api().get("/projects/open/members").await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    assert_api_error(
        app.anonymous_api()
            .post(
                "/projects/open/members",
                add(3, json!({"username": "carol"})),
            )
            .await,
        401,
        "UNAUTHORIZED",
    )
    .await;

    // Bad bodies.
    assert_api_error(
        send_raw(
            &admin,
            Method::POST,
            "/projects/team/members",
            "{\"role_id\": 2,",
        )
        .await,
        400,
        "BAD_REQUEST",
    )
    .await;
    for role in [0, 6, -1] {
        assert_api_error(
            admin
                .post(
                    "/projects/team/members",
                    add(role, json!({"username": "carol"})),
                )
                .await,
            400,
            "BAD_REQUEST",
        )
        .await;
    }
    assert_api_error(
        admin
            .post(
                "/projects/team/members",
                json!({"member_user": {"username": "carol"}}),
            )
            .await,
        400,
        "BAD_REQUEST",
    )
    .await;
    assert_api_error(
        admin
            .post("/projects/team/members", add(2, json!({})))
            .await,
        400,
        "BAD_REQUEST",
    )
    .await;
    let message = assert_api_error(
        admin
            .post(
                "/projects/team/members",
                json!({"role_id": 2, "member_group": {"group_name": "devs"}}),
            )
            .await,
        400,
        "BAD_REQUEST",
    )
    .await;
    assert_eq!(message, "groups are not supported");
    assert_api_error(
        admin
            .put(
                &format!("/projects/team/members/{dev_mid}"),
                json!({"role_id": 9}),
            )
            .await,
        400,
        "BAD_REQUEST",
    )
    .await;
    assert_api_error(
        send_raw(
            &admin,
            Method::PUT,
            &format!("/projects/team/members/{dev_mid}"),
            "nope",
        )
        .await,
        400,
        "BAD_REQUEST",
    )
    .await;

    // Unknown users, projects and members; duplicates.
    assert_api_error(
        admin
            .post(
                "/projects/team/members",
                add(2, json!({"username": "ghost"})),
            )
            .await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_api_error(
        admin
            .post("/projects/team/members", add(2, json!({"user_id": 999999})))
            .await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_api_error(
        admin
            .post(
                "/projects/ghost/members",
                add(2, json!({"username": "carol"})),
            )
            .await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_api_error(
        admin
            .post("/projects/team/members", add(3, json!({"username": "dev"})))
            .await,
        409,
        "CONFLICT",
    )
    .await;
    assert_api_error(
        admin.get("/projects/team/members/999999").await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_api_error(
        admin
            .put("/projects/team/members/999999", json!({"role_id": 2}))
            .await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_api_error(
        admin.delete("/projects/team/members/999999").await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_api_error(
        admin.get("/projects/team/members/0").await,
        400,
        "BAD_REQUEST",
    )
    .await;
    assert_api_error(
        admin.get("/projects/team/members/abc").await,
        422,
        "UNPROCESSABLE_ENTITY",
    )
    .await;
    // A membership of another project is not found through this one.
    assert_api_error(
        admin
            .get(&format!("/projects/open/members/{dev_mid}"))
            .await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_api_error(
        admin.get("/projects/team/members?page_size=101").await,
        422,
        "UNPROCESSABLE_ENTITY",
    )
    .await;

    // Nothing was written or audited.
    assert_eq!(management_audit_rows(&app).await, before);
    assert_eq!(app.count_rows("project_members").await, 3);
}
