//! Harbor's registry endpoints (`/registries`, `/registries/ping`, `/registries/{id}/info`,
//! `/replication/adapters`, `/replication/adapterinfos`) against a real peer: Debian's
//! `docker-registry` with htpasswd (bcrypt) authentication, started per test.
//!
//! What must hold: Harbor's shapes; a secret is stored sealed and never comes back (not
//! in a registry, a list, an error or the audit log); pings tell a reachable registry
//! from one that refuses the credential or does not answer, with a readable reason;
//! only system administrators get in.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::helpers::{
    assert_api_error, assert_empty_ok, expect_status, location_path, serve_in_process, ApiClient,
    TestApp,
};
use crate::skopeo::require_binary;

/// The peer's user and password.
const REMOTE_USER: &str = "remote";
const REMOTE_PASSWORD: &str = "Remote-Passw0rd";
/// A bcrypt hash (cost 5) of [`REMOTE_PASSWORD`], made once with Python's `bcrypt`: a
/// test fixture, so the tests need no bcrypt implementation.
const REMOTE_HTPASSWD: &str =
    "remote:$2a$05$94GkJFq78OT2PWon4hjLgOrbHXBkvRj.xWHjOs./7RVO.HbdLCCzC\n";

/// A URL nothing listens on: connections are refused at once.
const CLOSED_URL: &str = "http://127.0.0.1:1";

/// `docker-registry serve` on a free port with htpasswd authentication and its own
/// storage; killed on drop.
struct AuthRegistry {
    child: Child,
    /// `http://127.0.0.1:<port>`
    url: String,
    /// Holds config.yml, htpasswd, the storage and the log.
    dir: TempDir,
}

impl AuthRegistry {
    async fn start() -> AuthRegistry {
        require_binary("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, REMOTE_HTPASSWD).unwrap();
        let config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n\
             auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
            dir.path().join("storage").display(),
            htpasswd.display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut registry = AuthRegistry {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let client = reqwest::Client::new();
        // Up to a minute: generous on a loaded machine; it starts in well under 1 s.
        for _ in 0..600 {
            if let Ok(Some(status)) = registry.child.try_wait() {
                panic!("docker-registry exited ({status}):\n{}", registry.log());
            }
            if let Ok(response) = client.get(format!("{}/v2/", registry.url)).send().await {
                // Up and asking for credentials.
                if response.status() == 401 {
                    return registry;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("docker-registry did not answer:\n{}", registry.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A registry body for `POST /registries`.
fn registry_body(name: &str, url: &str, user: &str, password: &str) -> Value {
    json!({
        "name": name,
        "type": "docker-registry",
        "url": url,
        "description": format!("{name} for the tests"),
        "insecure": false,
        "credential": {"type": "basic", "access_key": user, "access_secret": password},
    })
}

/// Creates a registry; returns its id (from `Location`).
async fn create(api: &ApiClient, body: Value) -> i64 {
    let response = expect_status(api.post("/registries", body).await, 201, "create registry").await;
    let location = location_path(&response).expect("Location on 201");
    let id = location
        .strip_prefix("/api/v2.0/registries/")
        .unwrap_or_else(|| panic!("Location {location}"));
    assert!(
        response.bytes().await.unwrap().is_empty(),
        "201 with a body"
    );
    id.parse().unwrap()
}

async fn get(api: &ApiClient, id: i64) -> Value {
    api.get_json(&format!("/registries/{id}")).await
}

async fn ping(api: &ApiClient, body: Value) -> reqwest::Response {
    api.post("/registries/ping", body).await
}

/// The body of a response as text, for "the secret is not in it" checks.
async fn text(response: reqwest::Response) -> String {
    response.text().await.unwrap()
}

#[tokio::test]
async fn registries_are_created_read_listed_updated_and_deleted_in_harbors_shapes() {
    let remote = AuthRegistry::start().await;
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();

    let mut body = registry_body(
        "peer",
        &format!("{}/", remote.url),
        REMOTE_USER,
        REMOTE_PASSWORD,
    );
    body["rate_limit_per_second"] = json!(10.5);
    body["rate_limit_burst"] = json!(4);
    body["max_concurrency"] = json!(2);
    let id = create(&api, body).await;

    let registry = get(&api, id).await;
    let times = (
        registry["creation_time"].clone(),
        registry["update_time"].clone(),
    );
    assert!(times.0.as_str().unwrap().ends_with('Z'), "{registry}");
    let mut shown = registry.clone();
    shown.as_object_mut().unwrap().remove("creation_time");
    shown.as_object_mut().unwrap().remove("update_time");
    assert_eq!(
        shown,
        json!({
            "id": id, "name": "peer", "description": "peer for the tests",
            "type": "docker-registry",
            // Normalised: no trailing slash.
            "url": remote.url,
            "insecure": false,
            "credential": {"type": "basic", "access_key": REMOTE_USER, "access_secret": "*****"},
            // Pinged at creation, with the credential.
            "status": "healthy",
            "rate_limit_per_second": 10.5, "rate_limit_burst": 4, "max_concurrency": 2,
        })
    );

    // Stored sealed: the column holds neither the secret nor anything that contains it.
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT access_secret FROM registries WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(sealed.len() > REMOTE_PASSWORD.len());
    assert!(!sealed
        .windows(REMOTE_PASSWORD.len())
        .any(|w| w == REMOTE_PASSWORD.as_bytes()));

    // A second, anonymous one; the list shows both, by id, with the Harbor list headers.
    let anonymous = create(
        &api,
        json!({"name": "open", "type": "harbor", "url": CLOSED_URL}),
    )
    .await;
    let open = get(&api, anonymous).await;
    assert_eq!(
        open["credential"],
        json!({"type": "basic", "access_key": "", "access_secret": ""})
    );
    // Nothing listens there.
    assert_eq!(open["status"], "unhealthy");
    assert_eq!(open["rate_limit_per_second"], 0.0);
    let response = api.get("/registries").await;
    let response = expect_status(response, 200, "list").await;
    assert_eq!(response.headers()["x-total-count"], "2");
    let listed = text(response).await;
    assert!(!listed.contains(REMOTE_PASSWORD), "{listed}");
    let items: Vec<Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0], registry);
    assert_eq!(items[1]["name"], "open");

    // Update: omitted fields keep their values; the mask keeps the secret.
    let response = api
        .put(
            &format!("/registries/{id}"),
            json!({"description": "changed", "access_secret": "*****", "max_concurrency": 3}),
        )
        .await;
    assert_empty_ok(response, "update description").await;
    let updated = get(&api, id).await;
    assert_eq!(updated["description"], "changed");
    assert_eq!(updated["max_concurrency"], 3);
    assert_eq!(updated["rate_limit_per_second"], 10.5);
    assert_eq!(updated["url"], remote.url);
    assert_eq!(updated["credential"]["access_secret"], "*****");
    assert_eq!(updated["status"], "healthy");
    // The stored secret still works: a ping by id uses it.
    assert_empty_ok(ping(&api, json!({"id": id})).await, "ping after update").await;

    // A wrong secret is saved (Berth keeps unreachable peers configurable) and marked.
    let response = api
        .put(
            &format!("/registries/{id}"),
            json!({"access_secret": "wrong-password"}),
        )
        .await;
    assert_empty_ok(response, "update with a wrong secret").await;
    assert_eq!(get(&api, id).await["status"], "unhealthy");
    let response = api
        .put(
            &format!("/registries/{id}"),
            json!({"access_secret": REMOTE_PASSWORD}),
        )
        .await;
    assert_empty_ok(response, "update with the right secret").await;
    assert_eq!(get(&api, id).await["status"], "healthy");
    // An empty secret removes it.
    let response = api
        .put(
            &format!("/registries/{anonymous}"),
            json!({"access_key": "someone", "access_secret": ""}),
        )
        .await;
    assert_empty_ok(response, "update the anonymous one").await;
    let open = get(&api, anonymous).await;
    assert_eq!(open["credential"]["access_key"], "someone");
    assert_eq!(open["credential"]["access_secret"], "");

    // Delete.
    assert_empty_ok(api.delete(&format!("/registries/{id}")).await, "delete").await;
    let message = assert_api_error(
        api.get(&format!("/registries/{id}")).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert!(message.contains(&id.to_string()), "{message}");
    assert_api_error(
        api.delete(&format!("/registries/{id}")).await,
        404,
        "NOT_FOUND",
    )
    .await;

    // Audited by name, and the secret is nowhere in the audit log.
    assert_eq!(app.audit_count("create", "registry", "peer").await, 1);
    assert_eq!(app.audit_count("update", "registry", "peer").await, 3);
    assert_eq!(app.audit_count("delete", "registry", "peer").await, 1);
    let logs =
        text(expect_status(api.get("/audit-logs?page_size=100").await, 200, "audit").await).await;
    assert!(logs.contains("registry"), "{logs}");
    assert!(!logs.contains(REMOTE_PASSWORD), "{logs}");
    let in_database: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_logs WHERE resource LIKE '%' || $1 || '%'")
            .bind(REMOTE_PASSWORD)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(in_database, 0);
}

#[tokio::test]
async fn lists_filter_sort_and_page() {
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();
    for (name, kind) in [
        ("reg-b", "docker-registry"),
        ("reg-a", "harbor"),
        ("other", "docker-registry"),
    ] {
        create(&api, json!({"name": name, "type": kind, "url": CLOSED_URL})).await;
    }
    let names = |items: &[Value]| -> Vec<String> {
        items
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (items, total, _) = api.get_list("/registries?q=name%3D~reg&sort=name").await;
    assert_eq!(
        (names(&items), total),
        (vec!["reg-a".into(), "reg-b".into()], Some(2))
    );
    // Harbor's deprecated `name` parameter: fuzzy.
    let (items, _, _) = api.get_list("/registries?name=the").await;
    assert_eq!(names(&items), vec!["other"]);
    let (items, _, _) = api
        .get_list("/registries?q=type%3D%7Bharbor%20docker-hub%7D")
        .await;
    assert_eq!(names(&items), vec!["reg-a"]);
    let (items, total, link) = api
        .get_list("/registries?sort=-name&page_size=1&page=2")
        .await;
    // reg-b, reg-a, other: the second of one-item pages.
    assert_eq!((names(&items), total), (vec!["reg-a".into()], Some(3)));
    let link = link.expect("Link header");
    assert!(
        link.contains("rel=\"next\"") && link.contains("rel=\"prev\""),
        "{link}"
    );
    assert_api_error(
        api.get("/registries?q=password%3Dx").await,
        400,
        "BAD_REQUEST",
    )
    .await;
    assert_api_error(api.get("/registries?sort=secret").await, 400, "BAD_REQUEST").await;
    assert_api_error(
        api.get("/registries?page_size=101").await,
        422,
        "UNPROCESSABLE_ENTITY",
    )
    .await;
}

#[tokio::test]
async fn names_are_unique_and_invalid_registries_are_refused() {
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();
    let first = create(
        &api,
        json!({"name": "peer", "type": "docker-registry", "url": CLOSED_URL}),
    )
    .await;
    let message = assert_api_error(
        api.post(
            "/registries",
            json!({"name": "peer", "type": "harbor", "url": "http://127.0.0.1:2"}),
        )
        .await,
        409,
        "CONFLICT",
    )
    .await;
    assert!(message.contains("peer"), "{message}");

    let base = json!({"name": "x", "type": "docker-registry", "url": CLOSED_URL});
    let with = |key: &str, value: Value| {
        let mut body = base.clone();
        body[key] = value;
        body
    };
    let refused = [
        (with("url", json!("ftp://example.com")), "scheme"),
        (
            with("url", json!("https://user:pw@example.com")),
            "credential",
        ),
        (with("url", json!("")), "url"),
        (with("type", json!("quay")), "quay"),
        (with("type", json!(null)), "type"),
        (with("name", json!("")), "name"),
        (with("name", json!("n".repeat(65))), "64"),
        (
            with("rate_limit_per_second", json!(-1)),
            "rate_limit_per_second",
        ),
        (with("rate_limit_burst", json!(-3)), "rate_limit_burst"),
        (with("max_concurrency", json!(20_000)), "max_concurrency"),
        (
            with(
                "credential",
                json!({"type": "oauth", "access_key": "a", "access_secret": "b"}),
            ),
            "oauth",
        ),
        (
            with(
                "credential",
                json!({"access_key": "a", "access_secret": "*****"}),
            ),
            "mask",
        ),
    ];
    for (body, expected) in refused {
        let message = assert_api_error(
            api.post("/registries", body.clone()).await,
            400,
            "BAD_REQUEST",
        )
        .await;
        assert!(message.contains(expected), "{body}: {message}");
    }
    // Not JSON at all, or a number where a number is expected but too large.
    assert_api_error(
        api.post("/registries", json!("peer")).await,
        400,
        "BAD_REQUEST",
    )
    .await;
    assert_api_error(
        api.post("/registries", with("max_concurrency", json!(1e12)))
            .await,
        400,
        "BAD_REQUEST",
    )
    .await;
    assert_eq!(app.count_rows("registries").await, 1);

    // Docker Hub: the URL defaults to Harbor's, and no network is needed to save it.
    let hub = create(&api, json!({"name": "hub", "type": "docker-hub"})).await;
    let shown = get(&api, hub).await;
    assert_eq!(shown["url"], "https://hub.docker.com");
    assert_eq!(shown["type"], "docker-hub");

    // Renaming onto another's name is a conflict too; bad updates change nothing.
    assert_api_error(
        api.put(&format!("/registries/{hub}"), json!({"name": "peer"}))
            .await,
        409,
        "CONFLICT",
    )
    .await;
    assert_api_error(
        api.put(
            &format!("/registries/{first}"),
            json!({"url": "gopher://x"}),
        )
        .await,
        400,
        "BAD_REQUEST",
    )
    .await;
    assert_api_error(
        api.put(
            &format!("/registries/{first}"),
            json!({"rate_limit_per_second": 1e9}),
        )
        .await,
        400,
        "BAD_REQUEST",
    )
    .await;
    assert_api_error(
        api.put("/registries/999999", json!({"name": "z"})).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_eq!(get(&api, first).await["url"], CLOSED_URL);
    assert_eq!(get(&api, hub).await["name"], "hub");
}

#[tokio::test]
async fn pings_tell_healthy_from_refused_and_unreachable_with_a_reason() {
    let mut remote = AuthRegistry::start().await;
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();
    let unsaved = |secret: &str| {
        json!({
            "type": "docker-registry", "url": remote.url, "credential_type": "basic",
            "access_key": REMOTE_USER, "access_secret": secret, "insecure": false,
        })
    };

    assert_empty_ok(
        ping(&api, unsaved(REMOTE_PASSWORD)).await,
        "ping, right password",
    )
    .await;
    let response = ping(&api, unsaved("wrong-password")).await;
    let message = assert_api_error(response, 400, "BAD_REQUEST").await;
    assert!(message.starts_with("failed to ping registry"), "{message}");
    assert!(message.contains("credential"), "{message}");
    assert!(!message.contains("wrong-password"), "{message}");
    // Anonymous: only reachability counts (the 401 challenge is an answer).
    assert_empty_ok(
        ping(&api, json!({"type": "docker-registry", "url": remote.url})).await,
        "anonymous ping",
    )
    .await;
    let message = assert_api_error(
        ping(&api, json!({"type": "docker-registry", "url": CLOSED_URL})).await,
        400,
        "BAD_REQUEST",
    )
    .await;
    assert!(message.contains("127.0.0.1:1"), "{message}");
    let message = assert_api_error(ping(&api, json!({})).await, 400, "BAD_REQUEST").await;
    assert!(message.contains("type or url"), "{message}");
    assert_api_error(
        ping(&api, json!({"type": "docker-registry", "url": "ftp://x"})).await,
        400,
        "BAD_REQUEST",
    )
    .await;
    assert_api_error(ping(&api, json!({"id": 999999})).await, 404, "NOT_FOUND").await;

    // A stored registry: by id alone (the outcome is recorded), and with a secret to
    // try before saving it (not recorded).
    let id = create(
        &api,
        registry_body("peer", &remote.url, REMOTE_USER, REMOTE_PASSWORD),
    )
    .await;
    assert_empty_ok(ping(&api, json!({"id": id})).await, "ping by id").await;
    let message = assert_api_error(
        ping(&api, json!({"id": id, "access_secret": "wrong-password"})).await,
        400,
        "BAD_REQUEST",
    )
    .await;
    assert!(message.contains("credential"), "{message}");
    assert_eq!(get(&api, id).await["status"], "healthy");
    assert_empty_ok(
        ping(&api, json!({"id": id, "access_secret": "*****"})).await,
        "the mask means the stored secret",
    )
    .await;

    // The peer goes away: a ping by id says so and records it.
    remote.stop();
    let message = assert_api_error(ping(&api, json!({"id": id})).await, 400, "BAD_REQUEST").await;
    assert!(message.contains("failed to ping registry"), "{message}");
    assert_eq!(get(&api, id).await["status"], "unhealthy");
}

#[tokio::test]
async fn a_berth_peer_with_token_auth_is_pinged_through_the_token_flow() {
    // Another Berth (token auth) as the remote: the ping negotiates a bearer token.
    let peer = TestApp::spawn_secure().await;
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();
    let body = json!({
        "type": "harbor", "url": peer.registry.address,
        "access_key": "admin", "access_secret": crate::helpers::ADMIN_PASSWORD,
    });
    assert_empty_ok(ping(&api, body.clone()).await, "ping a Berth peer").await;
    let mut wrong = body;
    wrong["access_secret"] = json!("Wrong-Passw0rd");
    let message = assert_api_error(ping(&api, wrong).await, 400, "BAD_REQUEST").await;
    assert!(message.contains("credential"), "{message}");
}

#[tokio::test]
async fn only_system_administrators_manage_registries() {
    let app = TestApp::spawn_secure().await;
    let admin = app.admin_api();
    let id = create(
        &admin,
        json!({"name": "peer", "type": "docker-registry", "url": CLOSED_URL}),
    )
    .await;
    app.insert_user("dev", "Dev-Passw0rd").await;
    for (api, status, code) in [
        (app.anonymous_api(), 401, "UNAUTHORIZED"),
        (app.api_as("dev", "Dev-Passw0rd"), 403, "FORBIDDEN"),
    ] {
        let body = json!({"name": "mine", "type": "docker-registry", "url": CLOSED_URL});
        assert_api_error(api.get("/registries").await, status, code).await;
        assert_api_error(api.post("/registries", body).await, status, code).await;
        assert_api_error(api.get(&format!("/registries/{id}")).await, status, code).await;
        assert_api_error(
            api.put(&format!("/registries/{id}"), json!({"name": "taken"}))
                .await,
            status,
            code,
        )
        .await;
        assert_api_error(api.delete(&format!("/registries/{id}")).await, status, code).await;
        assert_api_error(ping(&api, json!({"id": id})).await, status, code).await;
        assert_api_error(
            api.get(&format!("/registries/{id}/info")).await,
            status,
            code,
        )
        .await;
        assert_api_error(api.get("/replication/adapters").await, status, code).await;
        assert_api_error(api.get("/replication/adapterinfos").await, status, code).await;
    }
    assert_eq!(get(&admin, id).await["name"], "peer");
    assert_eq!(app.count_rows("registries").await, 1);
}

#[tokio::test]
async fn adapters_and_registry_info_describe_what_replication_supports() {
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();
    assert_eq!(
        api.get_json("/replication/adapters").await,
        json!(["docker-hub", "docker-registry", "harbor"])
    );
    assert_eq!(
        api.get_json("/replication/adapterinfos").await,
        json!({
            "docker-hub": {"endpoint_pattern": {
                "endpoint_type": "EndpointPatternTypeFix",
                "endpoints": [{"key": "hub.docker.com", "value": "https://hub.docker.com"}],
            }},
            "docker-registry": {},
            "harbor": {},
        })
    );
    let id = create(
        &api,
        json!({"name": "peer", "type": "docker-registry", "url": CLOSED_URL, "description": "d"}),
    )
    .await;
    assert_eq!(
        api.get_json(&format!("/registries/{id}/info")).await,
        json!({
            "type": "docker-registry", "description": "d",
            "supported_resource_filters": [
                {"type": "name", "style": "input"},
                {"type": "tag", "style": "input"},
                {"type": "resource", "style": "radio", "values": ["image", "artifact"]},
            ],
            "supported_triggers": ["manual", "scheduled"],
            "supported_copy_by_chunk": true,
        })
    );
    let local = api.get_json("/registries/0/info").await;
    assert_eq!(
        local["supported_triggers"],
        json!(["manual", "scheduled", "event_based"])
    );
    assert_api_error(api.get("/registries/999999/info").await, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn a_registry_in_use_by_a_policy_is_not_deleted() {
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();
    let id = create(
        &api,
        json!({"name": "peer", "type": "docker-registry", "url": CLOSED_URL}),
    )
    .await;
    // A push-mode policy names it as destination, a pull-mode one as source; written
    // straight to the table, as this test is about the registry's side.
    for column in ["dest_registry_id", "src_registry_id"] {
        sqlx::query(&format!(
            "INSERT INTO replication_policies (name, {column}) VALUES ($1, $2)"
        ))
        .bind(format!("uses-{column}"))
        .bind(id)
        .execute(&app.db)
        .await
        .unwrap();
        let message = assert_api_error(
            api.delete(&format!("/registries/{id}")).await,
            412,
            "PRECONDITION",
        )
        .await;
        assert!(
            message.contains("referenced by replication policies"),
            "{message}"
        );
        assert_eq!(get(&api, id).await["name"], "peer");
        assert_eq!(app.audit_count("delete", "registry", "peer").await, 0);
        sqlx::query("DELETE FROM replication_policies")
            .execute(&app.db)
            .await
            .unwrap();
    }
    assert_empty_ok(
        api.delete(&format!("/registries/{id}")).await,
        "delete when unused",
    )
    .await;
    assert_eq!(app.audit_count("delete", "registry", "peer").await, 1);
}

#[tokio::test]
async fn credentials_need_the_key_they_were_stored_with() {
    let remote = AuthRegistry::start().await;
    let app = TestApp::spawn_secure().await;
    // Generated at first start, beside the other keys, readable by its owner only.
    let key_file: PathBuf = app.config.secret_key_path();
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode, 0o600, "{}", key_file.display());
    let api = app.admin_api();
    let id = create(
        &api,
        registry_body("peer", &remote.url, REMOTE_USER, REMOTE_PASSWORD),
    )
    .await;

    // A second gateway on the same database with the same key (given inline) reads it.
    let same_key = std::fs::read_to_string(&key_file).unwrap();
    let mut config = app.config.clone();
    config.secret_key = Some(berth_gateway::config::Secret::new(same_key.trim()));
    config.secret_key_file = PathBuf::from("no-such-dir/never-created.key");
    let (address, _) = serve_in_process(&config).await;
    let twin = ApiClient::new(&address, Some(("admin", crate::helpers::ADMIN_PASSWORD)));
    assert_empty_ok(
        ping(&twin, json!({"id": id})).await,
        "ping with the same key",
    )
    .await;
    assert!(!app.data_dir.path().join("no-such-dir").exists());

    // With another key it cannot, and says why (without the secret).
    let other = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    config.secret_key = Some(berth_gateway::config::Secret::new(other));
    let (address, _) = serve_in_process(&config).await;
    let stranger = ApiClient::new(&address, Some(("admin", crate::helpers::ADMIN_PASSWORD)));
    let message =
        assert_api_error(ping(&stranger, json!({"id": id})).await, 400, "BAD_REQUEST").await;
    assert!(message.contains("secret key does not match"), "{message}");
    // Reading and listing do not need the secret.
    assert_eq!(
        get(&stranger, id).await["credential"]["access_secret"],
        "*****"
    );
    // A new secret given with the ping is used as is.
    assert_empty_ok(
        ping(
            &stranger,
            json!({"id": id, "access_secret": REMOTE_PASSWORD}),
        )
        .await,
        "ping with a given secret",
    )
    .await;
}
