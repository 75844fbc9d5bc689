//! Registry authentication end to end: HTTP Basic and the Docker token flow on `/v2/`,
//! the token endpoint's grants, refusals of forged, expired, widened and malformed
//! credentials, login throttling, projects' access rules, and the audit of registry
//! traffic. Users, members and robots are set up with SQL, so these tests depend only
//! on the registry side.

use std::time::{Duration, SystemTime};

use base64::Engine;
use berth_access::token::TokenKeys;
use berth_access::ResourceAccess;
use berth_content::Digest;
use reqwest::Response;
use serde_json::{json, Value};

use crate::helpers::{
    assert_oci_error, expect_status, random_bytes, RegistryClient, TestApp, ADMIN_PASSWORD,
    OCI_MANIFEST,
};
use crate::oci_layout::{Compression, ImageSpec, OciLayout};
use crate::skopeo::{require_binary, skopeo};

const SERVICE: &str = "berth-registry";
const GUEST: i16 = 3;
const DEVELOPER: i16 = 2;
const MAINTAINER: i16 = 4;

// --- Fixtures -----------------------------------------------------------------------

/// A robot of project `project` (id `project_id`) called `robot$<project>+<name>`,
/// with `actions` on repositories; returns its login name.
struct RobotSpec<'a> {
    project: &'a str,
    project_id: i64,
    name: &'a str,
    secret: &'a str,
    actions: &'a [&'a str],
    disabled: bool,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

async fn add_robot(app: &TestApp, robot: RobotSpec<'_>) -> String {
    let stored = format!("{}+{}", robot.project, robot.name);
    let access: Vec<Value> = robot
        .actions
        .iter()
        .map(|a| json!({"resource": "repository", "action": a}))
        .collect();
    let permissions = json!([{"kind": "project", "namespace": robot.project, "access": access}]);
    sqlx::query(
        r#"INSERT INTO robots (name, level, project_id, secret_hash, disabled, duration_days,
                               expires_at, permissions)
           VALUES ($1, 'project', $2, $3, $4, 30, $5, $6)"#,
    )
    .bind(&stored)
    .bind(robot.project_id)
    .bind(berth_access::password::hash(robot.secret).unwrap())
    .bind(robot.disabled)
    .bind(robot.expires_at)
    .bind(permissions)
    .execute(&app.db)
    .await
    .unwrap();
    format!("robot${stored}")
}

/// `team-a` (private) with `dev` (developer), `guest` (guest) and `keeper`
/// (maintainer); `public-a` (public); `secret` (private, no members).
struct World {
    app: TestApp,
    team_a: i64,
}

const DEV: (&str, &str) = ("dev", "Dev-Passw0rd");
const GUEST_USER: (&str, &str) = ("guest", "Guest-Passw0rd");
const KEEPER: (&str, &str) = ("keeper", "Keeper-Passw0rd");
const ADMIN: (&str, &str) = ("admin", ADMIN_PASSWORD);

async fn world() -> World {
    world_with(|_| {}).await
}

async fn world_with(adjust: impl FnOnce(&mut berth_gateway::config::Config)) -> World {
    let app = TestApp::spawn_secure_with(adjust).await;
    let team_a = app.insert_project("team-a", false).await;
    app.insert_project("public-a", true).await;
    app.insert_project("secret", false).await;
    for (user, role) in [(DEV, DEVELOPER), (GUEST_USER, GUEST), (KEEPER, MAINTAINER)] {
        let id = app.insert_user(user.0, user.1).await;
        app.insert_member(team_a, id, role).await;
    }
    World { app, team_a }
}

impl World {
    fn basic(&self, (user, password): (&str, &str)) -> RegistryClient {
        self.app.with_basic(user, password)
    }
}

// --- Request helpers ----------------------------------------------------------------

/// `GET /service/token` with optional Basic credentials and the given scopes.
async fn request_token(app: &TestApp, creds: Option<(&str, &str)>, scopes: &[&str]) -> Response {
    let mut url = format!(
        "{}/service/token?service={SERVICE}&account=ignored",
        app.address
    );
    for scope in scopes {
        let encoded: String = url::form_urlencoded::byte_serialize(scope.as_bytes()).collect();
        url.push_str(&format!("&scope={encoded}"));
    }
    let mut request = app.client.get(url);
    if let Some((user, password)) = creds {
        request = request.basic_auth(user, Some(password));
    }
    request.send().await.unwrap()
}

/// A token for `scopes`, asserting the endpoint's 200 and its body's shape.
async fn token_for(app: &TestApp, creds: Option<(&str, &str)>, scopes: &[&str]) -> String {
    let response = expect_status(request_token(app, creds, scopes).await, 200, "token").await;
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token"], body["access_token"], "{body}");
    assert_eq!(body["expires_in"], 1800, "{body}");
    assert!(
        body["issued_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{body}"
    );
    body["token"].as_str().unwrap().to_owned()
}

fn token_payload(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The `access` claim as `(type, name, actions)`.
fn access_of(token: &str) -> Vec<(String, String, Vec<String>)> {
    let access: Vec<ResourceAccess> =
        serde_json::from_value(token_payload(token)["access"].clone()).unwrap();
    access
        .into_iter()
        .map(|a| (a.kind, a.name, a.actions))
        .collect()
}

fn access(kind: &str, name: &str, actions: &[&str]) -> (String, String, Vec<String>) {
    (
        kind.to_owned(),
        name.to_owned(),
        actions.iter().map(|a| (*a).to_owned()).collect(),
    )
}

fn challenge(response: &Response) -> String {
    response
        .headers()
        .get("www-authenticate")
        .unwrap_or_else(|| panic!("{} has no WWW-Authenticate", response.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

/// `POST …/blobs/uploads/`: what a push starts with.
async fn start_push(client: &RegistryClient, repo: &str) -> Response {
    client
        .client
        .post(client.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap()
}

/// Asserts a 401 `UNAUTHORIZED` with a Bearer challenge; returns (message, challenge).
async fn assert_unauthorized(response: Response) -> (String, String) {
    let challenge = challenge(&response);
    assert!(challenge.starts_with("Bearer realm=\""), "{challenge}");
    let message = assert_oci_error(response, 401, "UNAUTHORIZED").await;
    (message, challenge)
}

async fn assert_denied(response: Response) {
    let message = assert_oci_error(response, 403, "DENIED").await;
    assert_eq!(message, "requested access to the resource is denied");
}

/// Audit rows of `operation`, as (username, resource_type, resource, outcome).
async fn audit_rows(app: &TestApp, operation: &str) -> Vec<(String, String, String, String)> {
    sqlx::query_as(
        "SELECT username, resource_type, resource, outcome FROM audit_logs
         WHERE operation = $1 AND username NOT LIKE 'audit-sentinel-%' ORDER BY id",
    )
    .bind(operation)
    .fetch_all(&app.db)
    .await
    .unwrap()
}

/// Waits until every audit entry recorded so far is written. Registry traffic is
/// audited through a batched FIFO writer: once an entry queued now (a failed login of
/// a sentinel user) is in the table, every earlier one is too.
async fn flush_audit(app: &TestApp) {
    let sentinel = format!("audit-sentinel-{}", uuid::Uuid::new_v4().simple());
    let response = app.with_basic(&sentinel, "wrong").get("/v2/").await;
    assert_eq!(response.status(), 401);
    for _ in 0..600 {
        let written: i64 =
            sqlx::query_scalar("SELECT count(*) FROM audit_logs WHERE username = $1")
                .bind(&sentinel)
                .fetch_one(&app.db)
                .await
                .unwrap();
        if written > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the audit writer did not write within 30 s");
}

/// The token signing key of `app`, read from its data dir.
fn keys_of(app: &TestApp) -> TokenKeys {
    TokenKeys::load_or_generate(&app.config.token_key_path(), &app.config.auth.token_issuer)
        .unwrap()
}

fn repo_access(name: &str, actions: &[&str]) -> Vec<ResourceAccess> {
    vec![ResourceAccess {
        kind: "repository".into(),
        name: name.into(),
        actions: actions.iter().map(|a| (*a).to_owned()).collect(),
    }]
}

/// Runs skopeo, returning whether it succeeded and its stderr (for refusals).
async fn skopeo_outcome(args: &[&str]) -> (bool, String) {
    require_binary("skopeo");
    let output = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new("skopeo")
            .arg("--insecure-policy")
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("skopeo finishes within 300 s")
    .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn small_layout() -> OciLayout {
    let mut layout = OciLayout::new();
    layout.add_image(
        "v1",
        &ImageSpec::linux(
            "amd64",
            &[(50_000, Compression::Gzip), (10, Compression::Gzip)],
        ),
    );
    layout
}

// --- /v2/ base and the challenge ----------------------------------------------------

#[tokio::test]
async fn base_challenges_anonymous_callers_and_accepts_basic_and_tokens() {
    let w = world().await;
    let app = &w.app;
    let response = app.get("/v2/").await;
    assert_eq!(
        response.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    let (message, challenge) = assert_unauthorized(response).await;
    assert_eq!(message, "authentication required");
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"http://{}/service/token\",service=\"{SERVICE}\"",
            app.host
        )
    );

    assert_eq!(w.basic(ADMIN).get("/v2/").await.status(), 200);
    assert_eq!(w.basic(DEV).get("/v2/").await.status(), 200);
    let (message, _) = assert_unauthorized(w.basic(("dev", "wrong")).get("/v2/").await).await;
    assert_eq!(message, "invalid username or password");
    let (message, _) =
        assert_unauthorized(w.basic(("nobody", "Whatever-1")).get("/v2/").await).await;
    assert_eq!(message, "invalid username or password");

    // `docker login`: a token without scopes proves the credentials.
    let token = token_for(app, Some(DEV), &[]).await;
    assert_eq!(token_payload(&token)["sub"], "dev");
    assert_eq!(token_payload(&token)["aud"], SERVICE);
    assert_eq!(app.with_bearer(&token).get("/v2/").await.status(), 200);
}

#[tokio::test]
async fn the_realm_is_the_external_url_when_configured() {
    let app =
        TestApp::spawn_secure_with(|c| c.external_url = "https://registry.example.com/".into())
            .await;
    let (_, challenge) = assert_unauthorized(app.get("/v2/team/app/tags/list").await).await;
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"https://registry.example.com/service/token\",service=\"{SERVICE}\",\
             scope=\"repository:team/app:pull\""
        )
    );
}

// --- skopeo through the token flow --------------------------------------------------

#[tokio::test]
async fn skopeo_pushes_and_pulls_with_creds_through_the_token_flow() {
    let w = world().await;
    let app = &w.app;
    let source = small_layout();
    let destination = format!("docker://{}/team-a/app:v1", app.host);
    let dev_creds = format!("{}:{}", DEV.0, DEV.1);
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--retry-times=0",
        "--dest-creds",
        &dev_creds,
        &source.reference("v1"),
        &destination,
    ])
    .await;
    let (digest, media_type, _) = w.basic(DEV).pull_manifest("team-a/app", "v1").await;
    assert_eq!(media_type, OCI_MANIFEST);

    // Out again with --src-creds, as the guest (pull only).
    let pulled = tempfile::tempdir().unwrap();
    let guest_creds = format!("{}:{}", GUEST_USER.0, GUEST_USER.1);
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--retry-times=0",
        "--src-creds",
        &guest_creds,
        &destination,
        &format!("oci:{}:v1", pulled.path().display()),
    ])
    .await;
    let index: Value =
        serde_json::from_slice(&std::fs::read(pulled.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.to_string());

    // The guest cannot push, and anonymous callers cannot pull a private project.
    let (ok, stderr) = skopeo_outcome(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--retry-times=0",
        "--dest-creds",
        &guest_creds,
        &source.reference("v1"),
        &format!("docker://{}/team-a/app:guest", app.host),
    ])
    .await;
    assert!(!ok, "a guest pushed");
    assert!(
        stderr.contains("denied") || stderr.contains("unauthorized"),
        "{stderr}"
    );
    let (ok, stderr) = skopeo_outcome(&[
        "inspect",
        "--tls-verify=false",
        "--retry-times=0",
        "--no-creds",
        &destination,
    ])
    .await;
    assert!(!ok, "anonymous inspect of a private project worked");
    assert!(
        stderr.to_lowercase().contains("unauthorized")
            || stderr.to_lowercase().contains("authentication required"),
        "{stderr}"
    );

    // skopeo used bearer tokens: the push is audited under the token's subject.
    flush_audit(app).await;
    let pushes = audit_rows(app, "push").await;
    assert_eq!(
        pushes,
        vec![(
            "dev".to_owned(),
            "artifact".to_owned(),
            "team-a/app:v1".to_owned(),
            "success".to_owned()
        )]
    );
}

#[tokio::test]
async fn skopeo_login_stores_credentials_that_later_copies_use() {
    let w = world().await;
    let app = &w.app;
    let auth_dir = tempfile::tempdir().unwrap();
    let authfile = auth_dir.path().join("auth.json").display().to_string();

    let (ok, stderr) = skopeo_outcome(&[
        "login",
        "--tls-verify=false",
        "--authfile",
        &authfile,
        "-u",
        DEV.0,
        "-p",
        "wrong-password",
        &app.host,
    ])
    .await;
    assert!(!ok, "login with a wrong password succeeded");
    assert!(stderr.contains("invalid username/password"), "{stderr}");

    skopeo(&[
        "login",
        "--tls-verify=false",
        "--authfile",
        &authfile,
        "-u",
        DEV.0,
        "-p",
        DEV.1,
        &app.host,
    ])
    .await;
    let source = small_layout();
    let destination = format!("docker://{}/team-a/logged-in:v1", app.host);
    skopeo(&[
        "copy",
        "--authfile",
        &authfile,
        "--dest-tls-verify=false",
        "--retry-times=0",
        &source.reference("v1"),
        &destination,
    ])
    .await;
    let raw = skopeo(&[
        "inspect",
        "--authfile",
        &authfile,
        "--tls-verify=false",
        "--raw",
        &destination,
    ])
    .await;
    let (_, _, stored) = w.basic(DEV).pull_manifest("team-a/logged-in", "v1").await;
    assert!(
        raw == stored,
        "inspect --raw differs from the stored manifest"
    );
}

// --- Projects' access rules ---------------------------------------------------------

#[tokio::test]
async fn anonymous_callers_pull_public_projects_only() {
    let w = world().await;
    let app = &w.app;
    let admin = w.basic(ADMIN);
    let (_, public_digest) = admin
        .push_image("public-a/app", "1.0", &[b"public layer"])
        .await;
    admin
        .push_image("team-a/app", "1.0", &[b"private layer"])
        .await;

    // Public: anonymous Basic-less pulls work, directly and with an anonymous token.
    let (digest, _, _) = app.pull_manifest("public-a/app", "1.0").await;
    assert_eq!(digest, public_digest);
    let anonymous = token_for(app, None, &["repository:public-a/app:pull,push"]).await;
    assert_eq!(
        access_of(&anonymous),
        vec![access("repository", "public-a/app", &["pull"])]
    );
    assert_eq!(token_payload(&anonymous)["sub"], "anonymous");
    let (digest, _, _) = app
        .with_bearer(&anonymous)
        .pull_manifest("public-a/app", "1.0")
        .await;
    assert_eq!(digest, public_digest);
    // …but not pushes.
    let (_, challenge) = assert_unauthorized(start_push(app, "public-a/app").await).await;
    assert!(
        challenge.ends_with("scope=\"repository:public-a/app:pull,push\""),
        "{challenge}"
    );

    // Private: 401 with the challenge naming the scope to ask for.
    let (message, challenge) =
        assert_unauthorized(app.get_manifest("team-a/app", "1.0").await).await;
    assert_eq!(message, "authentication required");
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"http://{}/service/token\",service=\"{SERVICE}\",\
             scope=\"repository:team-a/app:pull\"",
            app.host
        )
    );
    let blob = Digest::sha256_of(b"private layer");
    assert_unauthorized(app.get_blob("team-a/app", &blob).await).await;
    // An anonymous token for it grants nothing, and using it asks for more scope.
    let nothing = token_for(app, None, &["repository:team-a/app:pull"]).await;
    assert_eq!(
        access_of(&nothing),
        vec![access("repository", "team-a/app", &[])]
    );
    let (message, challenge) = assert_unauthorized(
        app.with_bearer(&nothing)
            .get_manifest("team-a/app", "1.0")
            .await,
    )
    .await;
    assert!(message.contains("does not grant pull"), "{message}");
    assert!(
        challenge.ends_with(",error=\"insufficient_scope\""),
        "{challenge}"
    );
    // A project that does not exist looks the same to anonymous callers.
    assert_unauthorized(app.get_manifest("no-such/app", "1.0").await).await;
}

#[tokio::test]
async fn guests_pull_but_cannot_push_and_only_maintainers_delete() {
    let w = world().await;
    let app = &w.app;
    let (_, digest) = w
        .basic(DEV)
        .push_image("team-a/app", "1.0", &[b"layer"])
        .await;

    let guest = w.basic(GUEST_USER);
    let (pulled, _, _) = guest.pull_manifest("team-a/app", "1.0").await;
    assert_eq!(pulled, digest);
    assert_denied(start_push(&guest, "team-a/app").await).await;
    assert_denied(
        guest
            .put_manifest("team-a/app", "2.0", OCI_MANIFEST, b"{}")
            .await,
    )
    .await;
    assert_denied(guest.delete_manifest("team-a/app", "1.0").await).await;

    // Through the token flow the guest's push token carries pull only.
    let token = token_for(app, Some(GUEST_USER), &["repository:team-a/app:pull,push"]).await;
    assert_eq!(
        access_of(&token),
        vec![access("repository", "team-a/app", &["pull"])]
    );
    let (message, challenge) =
        assert_unauthorized(start_push(&app.with_bearer(&token), "team-a/app").await).await;
    assert!(message.contains("does not grant push"), "{message}");
    assert!(
        challenge
            .contains("scope=\"repository:team-a/app:pull,push\",error=\"insufficient_scope\""),
        "{challenge}"
    );

    // Developers push but do not delete; maintainers delete.
    assert_denied(w.basic(DEV).delete_manifest("team-a/app", "1.0").await).await;
    let response = w.basic(KEEPER).delete_manifest("team-a/app", "1.0").await;
    assert_eq!(response.status(), 202);
    // Users outside the project are denied, whatever they ask for.
    app.insert_user("outsider", "Outsider-Passw0rd").await;
    assert_denied(
        app.with_basic("outsider", "Outsider-Passw0rd")
            .get_manifest("team-a/app", &digest)
            .await,
    )
    .await;
}

#[tokio::test]
async fn the_token_endpoint_grants_the_intersection_of_request_and_rights() {
    let w = world().await;
    let app = &w.app;
    let guest = token_for(
        app,
        Some(GUEST_USER),
        &[
            "repository:team-a/app:pull,push repository:secret/app:pull",
            "registry:catalog:*",
            "repository:public-a/x:pull,delete",
            "repository:no-such/app:pull,push",
            "plugin:thing:pull",
        ],
    )
    .await;
    assert_eq!(
        access_of(&guest),
        vec![
            access("repository", "team-a/app", &["pull"]),
            access("repository", "secret/app", &[]),
            access("registry", "catalog", &[]),
            access("repository", "public-a/x", &["pull"]),
            access("repository", "no-such/app", &[]),
            access("plugin", "thing", &[]),
        ]
    );
    let admin = token_for(
        app,
        Some(ADMIN),
        &[
            "repository:team-a/app:*,pull,push,delete",
            "registry:catalog:*",
            "repository:no-such/app:pull,push",
        ],
    )
    .await;
    assert_eq!(
        access_of(&admin),
        vec![
            access("repository", "team-a/app", &["*", "pull", "push", "delete"]),
            access("registry", "catalog", &["*"]),
            // No create_on_push here: a missing project grants nothing, even to admins.
            access("repository", "no-such/app", &[]),
        ]
    );
    let payload = token_payload(&admin);
    assert_eq!(payload["iss"], "berth-token-issuer");
    let lifetime = payload["exp"].as_i64().unwrap() - payload["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 1800);

    // Refusals: no credentials and no scope, wrong password, another service, bearer
    // credentials, a malformed header.
    let response = request_token(app, None, &[]).await;
    let message = crate::helpers::assert_api_error(response, 401, "UNAUTHORIZED").await;
    assert!(message.contains("authentication required"), "{message}");
    let many: Vec<String> = (0..33)
        .map(|i| format!("repository:team-a/app{i}:pull"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let response = request_token(app, Some(DEV), &many).await;
    let message = crate::helpers::assert_api_error(response, 400, "BAD_REQUEST").await;
    assert!(message.contains("at most 32"), "{message}");
    let response =
        request_token(app, Some(("dev", "wrong")), &["repository:team-a/app:pull"]).await;
    let message = crate::helpers::assert_api_error(response, 401, "UNAUTHORIZED").await;
    assert_eq!(message, "invalid username or password");
    let response = app
        .client
        .get(format!(
            "{}/service/token?service=other&scope=repository:team-a/app:pull",
            app.address
        ))
        .basic_auth(DEV.0, Some(DEV.1))
        .send()
        .await
        .unwrap();
    let message = crate::helpers::assert_api_error(response, 400, "BAD_REQUEST").await;
    assert!(message.contains("unable to handle service"), "{message}");
    let response = app
        .client
        .get(format!("{}/service/token?service={SERVICE}", app.address))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    crate::helpers::assert_api_error(response, 401, "UNAUTHORIZED").await;
    let response = app
        .client
        .get(format!("{}/service/token?service={SERVICE}", app.address))
        .header("Authorization", "Basic !!!")
        .send()
        .await
        .unwrap();
    let message = crate::helpers::assert_api_error(response, 401, "UNAUTHORIZED").await;
    assert!(message.contains("base64"), "{message}");
}

#[tokio::test]
async fn the_oauth2_password_grant_issues_tokens_too() {
    let w = world().await;
    let app = &w.app;
    let post = |form: Vec<(&'static str, String)>| {
        app.client
            .post(format!("{}/service/token", app.address))
            .form(&form)
            .send()
    };
    let response = post(vec![
        ("grant_type", "password".into()),
        ("username", DEV.0.into()),
        ("password", DEV.1.into()),
        ("service", SERVICE.into()),
        ("client_id", "containerd".into()),
        (
            "scope",
            "repository:team-a/app:pull,push repository:secret/app:pull".into(),
        ),
    ])
    .await
    .unwrap();
    let body: Value = expect_status(response, 200, "password grant")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["scope"], "repository:team-a/app:pull,push", "{body}");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(
        access_of(token),
        vec![
            access("repository", "team-a/app", &["pull", "push"]),
            access("repository", "secret/app", &[]),
        ]
    );
    let response = start_push(&app.with_bearer(token), "team-a/app").await;
    assert_eq!(response.status(), 202);

    let response = post(vec![
        ("grant_type", "password".into()),
        ("username", DEV.0.into()),
        ("password", "wrong".into()),
        ("service", SERVICE.into()),
    ])
    .await
    .unwrap();
    crate::helpers::assert_api_error(response, 401, "UNAUTHORIZED").await;
    let response = post(vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", "x".into()),
        ("service", SERVICE.into()),
    ])
    .await
    .unwrap();
    let message = crate::helpers::assert_api_error(response, 400, "BAD_REQUEST").await;
    assert!(message.contains("grant_type"), "{message}");
}

// --- Robots -------------------------------------------------------------------------

#[tokio::test]
async fn robots_do_what_their_permissions_say_until_expired_or_disabled() {
    let w = world().await;
    let app = &w.app;
    let robot = |name, actions, disabled, expires_at| RobotSpec {
        project: "team-a",
        project_id: w.team_a,
        name,
        secret: "Robot-Secret-1",
        actions,
        disabled,
        expires_at,
    };
    let puller = add_robot(app, robot("puller", &["pull"], false, None)).await;
    let pusher = add_robot(app, robot("ci", &["pull", "push"], false, None)).await;
    let expired = add_robot(
        app,
        robot(
            "old",
            &["pull", "push"],
            false,
            Some(chrono::Utc::now() - chrono::Duration::hours(1)),
        ),
    )
    .await;
    let revoked = add_robot(app, robot("revoked", &["pull", "push"], true, None)).await;

    let ci = app.with_basic(&pusher, "Robot-Secret-1");
    let (_, digest) = ci.push_image("team-a/app", "1.0", &[b"robot layer"]).await;

    let pull_only = app.with_basic(&puller, "Robot-Secret-1");
    let (pulled, _, _) = pull_only.pull_manifest("team-a/app", "1.0").await;
    assert_eq!(pulled, digest);
    assert_denied(start_push(&pull_only, "team-a/app").await).await;
    // Its project only.
    assert_denied(pull_only.get_manifest("secret/app", "1.0").await).await;
    let token = token_for(
        app,
        Some((&puller, "Robot-Secret-1")),
        &[
            "repository:team-a/app:pull,push",
            "repository:secret/app:pull",
        ],
    )
    .await;
    assert_eq!(
        access_of(&token),
        vec![
            access("repository", "team-a/app", &["pull"]),
            access("repository", "secret/app", &[]),
        ]
    );
    assert_eq!(token_payload(&token)["sub"], puller.as_str());
    assert_unauthorized(start_push(&app.with_bearer(&token), "team-a/app").await).await;

    for refused in [&expired, &revoked] {
        let client = app.with_basic(refused, "Robot-Secret-1");
        let (message, _) =
            assert_unauthorized(client.get_manifest("team-a/app", "1.0").await).await;
        assert_eq!(message, "invalid username or password", "{refused}");
        let response = request_token(
            app,
            Some((refused, "Robot-Secret-1")),
            &["repository:team-a/app:pull"],
        )
        .await;
        crate::helpers::assert_api_error(response, 401, "UNAUTHORIZED").await;
    }
    // A wrong secret for a working robot is refused the same way.
    let (message, _) = assert_unauthorized(
        app.with_basic(&pusher, "Wrong-Secret-1")
            .get_manifest("team-a/app", "1.0")
            .await,
    )
    .await;
    assert_eq!(message, "invalid username or password");
}

// --- Tokens -------------------------------------------------------------------------

#[tokio::test]
async fn a_token_for_one_project_cannot_touch_another() {
    let w = world().await;
    let app = &w.app;
    let team_b = app.insert_project("team-b", false).await;
    let dev_id: i64 = sqlx::query_scalar("SELECT id FROM users WHERE username = 'dev'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    app.insert_member(team_b, dev_id, DEVELOPER).await;
    let admin = w.basic(ADMIN);
    admin.push_image("team-b/app", "1.0", &[b"b layer"]).await;

    let token_a = token_for(app, Some(DEV), &["repository:team-a/app:pull,push"]).await;
    let with_a = app.with_bearer(&token_a);
    with_a.push_image("team-a/app", "1.0", &[b"a layer"]).await;
    // The same user may touch team-b, but not with this token.
    let (message, challenge) =
        assert_unauthorized(with_a.get_manifest("team-b/app", "1.0").await).await;
    assert!(
        message.contains("does not grant pull on team-b/app"),
        "{message}"
    );
    assert!(
        challenge.ends_with("scope=\"repository:team-b/app:pull\",error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert_unauthorized(start_push(&with_a, "team-b/app").await).await;
    // Nor another repository of team-a that it does not name.
    assert_unauthorized(with_a.get_manifest("team-a/other", "1.0").await).await;
    assert_unauthorized(with_a.get("/v2/_catalog").await).await;
}

#[tokio::test]
async fn forged_expired_widened_and_malformed_credentials_are_refused_clearly() {
    let w = world().await;
    let app = &w.app;
    w.basic(DEV)
        .push_image("team-a/app", "1.0", &[b"layer"])
        .await;
    let keys = keys_of(app);
    let issuer = app.config.auth.token_issuer.clone();
    let push = repo_access("team-a/app", &["pull", "push"]);

    // The app's own key signs a token that works: the fixtures below differ in one way.
    let good = keys
        .issue("dev", SERVICE, push.clone(), Duration::from_secs(300))
        .unwrap();
    app.with_bearer(&good)
        .pull_manifest("team-a/app", "1.0")
        .await;

    let refused = |token: String| {
        let client = app.with_bearer(&token);
        async move {
            assert_unauthorized(client.get_manifest("team-a/app", "1.0").await)
                .await
                .0
        }
    };
    let foreign = TokenKeys::generate(&issuer)
        .issue("dev", SERVICE, push.clone(), Duration::from_secs(300))
        .unwrap();
    let message = refused(foreign).await;
    assert!(message.starts_with("token signature invalid"), "{message}");

    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let expired = keys
        .issue_at(
            "dev",
            SERVICE,
            push.clone(),
            an_hour_ago,
            Duration::from_secs(300),
        )
        .unwrap();
    let message = refused(expired).await;
    assert!(message.starts_with("token expired"), "{message}");

    let other_service = keys
        .issue(
            "dev",
            "another-registry",
            push.clone(),
            Duration::from_secs(300),
        )
        .unwrap();
    let message = refused(other_service).await;
    assert!(
        message.starts_with("token is for another service"),
        "{message}"
    );

    // A real pull-only token whose payload is edited to add push.
    let pull_only = token_for(app, Some(GUEST_USER), &["repository:team-a/app:pull"]).await;
    let mut parts: Vec<String> = pull_only.split('.').map(str::to_owned).collect();
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = String::from_utf8(engine.decode(&parts[1]).unwrap()).unwrap();
    let widened_payload = payload.replace("[\"pull\"]", "[\"pull\",\"push\"]");
    assert_ne!(payload, widened_payload);
    parts[1] = engine.encode(widened_payload);
    let widened = parts.join(".");
    let (message, _) =
        assert_unauthorized(start_push(&app.with_bearer(&widened), "team-a/app").await).await;
    assert!(message.starts_with("token signature invalid"), "{message}");

    let message = refused("not.a.token".to_owned()).await;
    assert!(message.starts_with("token"), "{message}");

    // Malformed and over-long headers.
    for (header, expected) in [
        ("Bearer", "no credentials after its scheme"),
        ("Bearer a b", "must be one token"),
        ("Basic !!!", "not valid base64"),
        ("Digest abc", "unsupported Authorization scheme"),
    ] {
        let response = app
            .with_authorization(header)
            .get_manifest("team-a/app", "1.0")
            .await;
        let (message, _) = assert_unauthorized(response).await;
        assert!(message.contains(expected), "{header:?}: {message}");
    }
    let long = format!("Bearer {}", "a".repeat(9000));
    let response = app
        .with_authorization(&long)
        .get_manifest("team-a/app", "1.0")
        .await;
    let (message, _) = assert_unauthorized(response).await;
    assert!(message.contains("longer than 8192 bytes"), "{message}");
}

// --- Login throttling ---------------------------------------------------------------

#[tokio::test]
async fn failed_logins_are_throttled_and_the_throttle_releases() {
    let w = world_with(|c| {
        c.auth.login_failure_burst = 3;
        // Long enough that slow password checks (debug builds) do not refill the
        // bucket between failures; the release below waits for it.
        c.auth.login_failure_refill_secs = 15;
    })
    .await;
    let app = &w.app;
    let wrong = w.basic(("dev", "wrong"));
    let mut failures = 0;
    let throttled = loop {
        let response = wrong.get("/v2/").await;
        if response.status() == 429 {
            break response;
        }
        assert_eq!(response.status(), 401);
        failures += 1;
        assert!(failures <= 10, "no throttling after {failures} failures");
    };
    assert!(failures >= 3, "throttled after only {failures} failures");
    let retry_after: u64 = throttled.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=15).contains(&retry_after), "Retry-After {retry_after}");
    let message = assert_oci_error(throttled, 429, "TOOMANYREQUESTS").await;
    assert!(message.contains("too many failed logins"), "{message}");
    // While throttled, even the right password is refused, on /v2/ and the token endpoint.
    assert_oci_error(w.basic(DEV).get("/v2/").await, 429, "TOOMANYREQUESTS").await;
    let response = request_token(app, Some(DEV), &[]).await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));

    // It releases: seconds, not an account lockout.
    let mut released = false;
    for _ in 0..240 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if w.basic(DEV).get("/v2/").await.status() == 200 {
            released = true;
            break;
        }
    }
    assert!(released, "the login throttle did not release within 120 s");
}

// --- Audit --------------------------------------------------------------------------

#[tokio::test]
async fn the_audit_log_records_each_push_pull_delete_and_failed_login_once() {
    let w = world().await;
    let app = &w.app;
    let keeper = w.basic(KEEPER);
    let (_, digest) = keeper
        .push_image("team-a/app", "1.0", &[b"audited layer"])
        .await;
    keeper.pull_manifest("team-a/app", "1.0").await;
    // A pull with a token: the audit writer, not the request, finds its project.
    let token = token_for(app, Some(KEEPER), &["repository:team-a/app:pull"]).await;
    app.with_bearer(&token)
        .pull_manifest("team-a/app", "1.0")
        .await;
    // Not audited: HEAD probes, blob pulls, refused requests.
    assert_eq!(
        keeper.head_manifest("team-a/app", "1.0").await.status(),
        200
    );
    keeper
        .pull_blob("team-a/app", &Digest::sha256_of(b"audited layer"))
        .await;
    assert_denied(
        w.basic(GUEST_USER)
            .delete_manifest("team-a/app", "1.0")
            .await,
    )
    .await;
    assert_eq!(
        keeper.delete_manifest("team-a/app", "1.0").await.status(),
        202
    );
    assert_eq!(
        keeper.delete_manifest("team-a/app", &digest).await.status(),
        202
    );
    assert_unauthorized(w.basic(("dev", "Not-The-Password1")).get("/v2/").await).await;
    flush_audit(app).await;

    let row = |user: &str, kind: &str, resource: String, outcome: &str| {
        (
            user.to_owned(),
            kind.to_owned(),
            resource,
            outcome.to_owned(),
        )
    };
    assert_eq!(
        audit_rows(app, "push").await,
        vec![row(
            "keeper",
            "artifact",
            "team-a/app:1.0".into(),
            "success"
        )]
    );
    let pulled = row("keeper", "artifact", "team-a/app:1.0".into(), "success");
    assert_eq!(audit_rows(app, "pull").await, vec![pulled.clone(), pulled]);
    assert_eq!(
        audit_rows(app, "delete").await,
        vec![
            row("keeper", "tag", "team-a/app:1.0".into(), "success"),
            row(
                "keeper",
                "artifact",
                format!("team-a/app@{digest}"),
                "success"
            ),
        ]
    );
    assert_eq!(
        audit_rows(app, "login_failed").await,
        vec![row("dev", "user", "dev".into(), "failure")]
    );
    // Registry entries name the project and the client's address.
    let (project_ids, addresses): (Vec<Option<i64>>, Vec<String>) = sqlx::query_as::<_, (Option<i64>, String)>(
        "SELECT project_id, client_addr FROM audit_logs WHERE operation IN ('push', 'pull', 'delete')",
    )
    .fetch_all(&app.db)
    .await
    .unwrap()
    .into_iter()
    .unzip();
    assert!(
        project_ids.iter().all(|id| *id == Some(w.team_a)),
        "{project_ids:?}"
    );
    assert!(addresses.iter().all(|a| a == "127.0.0.1"), "{addresses:?}");
}

// --- Missing projects ---------------------------------------------------------------

#[tokio::test]
async fn pushes_into_a_missing_project_are_refused_without_create_on_push() {
    let w = world().await;
    let app = &w.app;
    for who in [ADMIN, DEV] {
        let message = assert_oci_error(
            start_push(&w.basic(who), "no-such/app").await,
            404,
            "NAME_UNKNOWN",
        )
        .await;
        assert_eq!(message, "project no-such does not exist");
    }
    // Anonymous callers are challenged rather than told which names exist.
    assert_unauthorized(start_push(app, "no-such/app").await).await;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM projects WHERE name = 'no-such')")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(!exists);
}

#[tokio::test]
async fn administrators_create_projects_by_pushing_when_configured() {
    let w = world_with(|c| c.projects.create_on_push = true).await;
    let app = &w.app;
    // A developer elsewhere still cannot create projects.
    assert_oci_error(
        start_push(&w.basic(DEV), "fresh/app").await,
        404,
        "NAME_UNKNOWN",
    )
    .await;

    // The admin's first push races several blob uploads into the new project; it is
    // created once, private, owned by the admin, and audited once.
    let admin = w.basic(ADMIN);
    let blobs: Vec<Vec<u8>> = (0..6).map(|_| random_bytes(1000)).collect();
    let pushes = blobs.iter().map(|b| admin.push_blob("fresh/app", b));
    futures::future::join_all(pushes).await;
    admin.push_image("fresh/app", "1.0", &[b"first"]).await;
    let (public, owner): (bool, Option<String>) = sqlx::query_as(
        "SELECT p.public, u.username FROM projects p LEFT JOIN users u ON u.id = p.owner_id
         WHERE p.name = 'fresh'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(!public);
    assert_eq!(owner.as_deref(), Some("admin"));

    // Through the token flow too: an admin's token grants push on a missing project.
    let token = token_for(app, Some(ADMIN), &["repository:via-token/app:pull,push"]).await;
    assert_eq!(
        access_of(&token),
        vec![access("repository", "via-token/app", &["pull", "push"])]
    );
    app.with_bearer(&token)
        .push_image("via-token/app", "1.0", &[b"token layer"])
        .await;
    // A developer's token for a missing project grants nothing.
    let nothing = token_for(app, Some(DEV), &["repository:dev-made/app:pull,push"]).await;
    assert_eq!(
        access_of(&nothing),
        vec![access("repository", "dev-made/app", &[])]
    );

    flush_audit(app).await;
    let created: Vec<(String, String)> = sqlx::query_as(
        "SELECT username, resource FROM audit_logs
         WHERE operation = 'create' AND resource_type = 'project' ORDER BY id",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(
        created,
        vec![
            ("admin".to_owned(), "fresh".to_owned()),
            ("admin".to_owned(), "via-token".to_owned())
        ]
    );
}

// --- Catalog and mounts -------------------------------------------------------------

#[tokio::test]
async fn the_catalog_is_for_administrators_only() {
    let w = world().await;
    let app = &w.app;
    w.basic(DEV)
        .push_image("team-a/app", "1.0", &[b"layer"])
        .await;

    let (_, challenge) = assert_unauthorized(app.get("/v2/_catalog").await).await;
    assert!(
        challenge.ends_with("scope=\"registry:catalog:*\""),
        "{challenge}"
    );
    assert_denied(w.basic(DEV).get("/v2/_catalog").await).await;
    let (body, _) = w.basic(ADMIN).get_page("/v2/_catalog").await;
    assert_eq!(body["repositories"], json!(["team-a/app"]));

    let admin_token = token_for(app, Some(ADMIN), &["registry:catalog:*"]).await;
    let (body, _) = app.with_bearer(&admin_token).get_page("/v2/_catalog").await;
    assert_eq!(body["repositories"], json!(["team-a/app"]));
    let dev_token = token_for(app, Some(DEV), &["registry:catalog:*"]).await;
    let (_, challenge) =
        assert_unauthorized(app.with_bearer(&dev_token).get("/v2/_catalog").await).await;
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
}

#[tokio::test]
async fn mounts_need_pull_on_the_source_or_become_plain_uploads() {
    let w = world().await;
    let secret_blob = random_bytes(500);
    let digest = w.basic(ADMIN).push_blob("secret/app", &secret_blob).await;
    let shared_blob = random_bytes(500);
    let shared = w.basic(DEV).push_blob("team-a/base", &shared_blob).await;

    let dev = w.basic(DEV);
    // From a repository the developer cannot read: a plain upload starts instead.
    let response = dev
        .mount_blob("team-a/app", &digest, Some("secret/app"))
        .await;
    assert_eq!(
        response.status(),
        202,
        "mounted from an unreadable repository"
    );
    // Without `from` the source could be anywhere: a plain upload too.
    let response = dev.mount_blob("team-a/app", &digest, None).await;
    assert_eq!(response.status(), 202, "mounted from anywhere");
    assert_eq!(dev.head_blob("team-a/app", &digest).await.status(), 404);
    // From a readable repository the mount happens.
    let response = dev
        .mount_blob("team-a/app", &shared, Some("team-a/base"))
        .await;
    assert_eq!(response.status(), 201);
    dev.assert_blob("team-a/app", &shared, &shared_blob).await;
    // Administrators read everything, so their mounts without `from` work.
    let response = w
        .basic(ADMIN)
        .mount_blob("team-a/admin", &digest, None)
        .await;
    assert_eq!(response.status(), 201);
}

// --- Auth off -----------------------------------------------------------------------

#[tokio::test]
async fn with_auth_off_everything_is_allowed_and_credentials_are_ignored() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/v2/").await.status(), 200);
    assert_eq!(
        app.with_authorization("Digest junk")
            .get("/v2/")
            .await
            .status(),
        200
    );
    let (_, digest) = app.push_image("anything/app", "1.0", &[b"layer"]).await;
    assert_eq!(app.get("/v2/_catalog").await.status(), 200);
    assert_eq!(
        app.delete_manifest("anything/app", &digest).await.status(),
        202
    );
    // Pulls of a repository in a project nobody created get the data path's answer.
    assert_oci_error(
        app.get_manifest("nowhere/app", "1.0").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
}
