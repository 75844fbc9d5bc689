//! The users and robot accounts API (`/api/v2.0/users…`, `/api/v2.0/robots…`) over real
//! HTTP: Harbor's shapes, who may do what, validation, and the audit rows each change
//! writes exactly once.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{
    assert_api_error, assert_empty_ok, expect_status, total_count, ApiClient, TestApp,
};

const PASSWORD: &str = "Passw0rd-Alice";

/// Creates a user through the API as the administrator; returns its id.
async fn create_user(app: &TestApp, username: &str) -> i64 {
    let body = json!({
        "username": username, "email": format!("{username}@example.com"),
        "realname": format!("{username} test"), "password": PASSWORD,
    });
    let response = expect_status(
        app.admin_api().post("/users", body).await,
        201,
        "create user",
    )
    .await;
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let id = location
        .strip_prefix("/api/v2.0/users/")
        .unwrap_or_else(|| panic!("Location {location}"));
    id.parse().unwrap()
}

/// How many audit rows record `operation` on `resource`, with who did it and the
/// project, for each.
async fn audit_rows(app: &TestApp, operation: &str, resource: &str) -> Vec<(String, Option<i64>)> {
    sqlx::query_as(
        "SELECT username, project_id FROM audit_logs
         WHERE operation = $1 AND resource = $2 ORDER BY id",
    )
    .bind(operation)
    .bind(resource)
    .fetch_all(&app.db)
    .await
    .unwrap()
}

/// A request with a body that is not JSON.
async fn send_bad_json(api: &ApiClient, method: Method, path: &str) -> reqwest::Response {
    api.request(method, path)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap()
}

// --- Users ----------------------------------------------------------------------------

#[tokio::test]
async fn admins_create_users_who_are_shown_without_their_password() {
    let app = TestApp::spawn_secure().await;
    let body = json!({
        "username": "alice", "email": "alice@example.com", "realname": "Alice Smith",
        "comment": "ci owner", "password": PASSWORD,
    });
    let response = app.admin_api().post("/users", body).await;
    let response = expect_status(response, 201, "create alice").await;
    assert!(response.headers().get("content-type").is_none());
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/api/v2.0/users/"), "{location}");

    let user = app
        .admin_api()
        .get_json(&location.replace("/api/v2.0", ""))
        .await;
    let id = user["user_id"].as_i64().unwrap();
    assert_eq!(location, format!("/api/v2.0/users/{id}"));
    assert_eq!(user["username"], "alice");
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["realname"], "Alice Smith");
    assert_eq!(user["comment"], "ci owner");
    assert_eq!(user["sysadmin_flag"], false);
    assert_eq!(user["admin_role_in_auth"], false);
    assert!(user["creation_time"].as_str().unwrap().ends_with('Z'));
    assert!(user["update_time"].as_str().unwrap().ends_with('Z'));
    let text = user.to_string();
    assert!(!text.contains("password") && !text.contains(PASSWORD) && !text.contains("argon2"));

    // Stored as an Argon2id hash only.
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$") && !hash.contains(PASSWORD));

    // The new user logs in with the password given.
    let me = app
        .api_as("alice", PASSWORD)
        .get_json("/users/current")
        .await;
    assert_eq!(me["user_id"], id);
    assert_eq!(me["username"], "alice");

    assert_eq!(
        audit_rows(&app, "create", "alice").await,
        vec![("admin".to_owned(), None)]
    );
}

#[tokio::test]
async fn user_creation_refuses_bad_input_duplicates_and_non_admins() {
    let app = TestApp::spawn_secure().await;
    create_user(&app, "alice").await;
    let admin = app.admin_api();
    let valid = |username: &str, email: &str| json!({"username": username, "email": email, "realname": "R", "password": PASSWORD});

    let bad = [
        json!({"username": "weak", "email": "weak@example.com", "password": "password1"}),
        json!({"username": "weak", "email": "weak@example.com", "password": "Sh0rt"}),
        json!({"username": "weak", "email": "weak@example.com"}),
        valid("robot$ci", "r@example.com"),
        valid("a,b", "ab@example.com"),
        valid("", "empty@example.com"),
        valid(&"u".repeat(256), "long@example.com"),
        valid("nomail", "not-an-email"),
        json!({"username": "nomail", "password": PASSWORD}),
        json!({"username": "c", "email": "c@example.com", "password": PASSWORD,
               "comment": "c".repeat(31)}),
        json!({"username": "r", "email": "r@example.com", "password": PASSWORD,
               "realname": "Smith, Alice"}),
    ];
    for body in bad {
        let response = admin.post("/users", body.clone()).await;
        assert_api_error(response, 400, "BAD_REQUEST").await;
    }
    let response = send_bad_json(&admin, Method::POST, "/users").await;
    assert_api_error(response, 400, "BAD_REQUEST").await;

    let response = admin
        .post("/users", valid("alice", "other@example.com"))
        .await;
    assert_api_error(response, 409, "CONFLICT").await;
    // E-mail addresses are unique whatever their case.
    let response = admin
        .post("/users", valid("bob", "ALICE@example.com"))
        .await;
    assert_api_error(response, 409, "CONFLICT").await;

    let alice = app.api_as("alice", PASSWORD);
    let response = alice
        .post("/users", valid("carol", "carol@example.com"))
        .await;
    assert_api_error(response, 403, "FORBIDDEN").await;
    let response = app
        .anonymous_api()
        .post("/users", valid("carol", "carol@example.com"))
        .await;
    assert_api_error(response, 401, "UNAUTHORIZED").await;

    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 2, "only admin and alice exist");
    let creates: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_logs WHERE operation = 'create' AND resource_type = 'user'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(creates, 1, "refused creations write no audit row");
}

#[tokio::test]
async fn user_listing_filters_sorts_and_pages_for_admins_only() {
    let app = TestApp::spawn_secure().await;
    for name in ["carol", "alice", "bob", "alicia"] {
        create_user(&app, name).await;
    }
    let admin = app.admin_api();

    let response = expect_status(admin.get("/users?page_size=2").await, 200, "page 1").await;
    assert_eq!(total_count(&response), 5);
    assert_eq!(
        response.headers()["link"],
        r#"</api/v2.0/users?page=2&page_size=2>; rel="next""#
    );
    let page: Value = response.json().await.unwrap();
    assert_eq!(page.as_array().unwrap().len(), 2);
    assert_eq!(page[0]["username"], "admin", "default order is by id");

    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|u| u["username"].as_str().unwrap().to_owned())
            .collect()
    };
    let sorted = admin.get_json("/users?sort=-username&page_size=100").await;
    assert_eq!(names(&sorted), ["carol", "bob", "alicia", "alice", "admin"]);
    let exact = admin.get_json("/users?q=username%3Dalice").await;
    assert_eq!(names(&exact), ["alice"]);
    let fuzzy = admin
        .get_json("/users?q=username%3D~ali&sort=username")
        .await;
    assert_eq!(names(&fuzzy), ["alice", "alicia"]);
    let by_param = admin.get_json("/users?username=lic&sort=username").await;
    assert_eq!(names(&by_param), ["alice", "alicia"]);
    let by_email = admin.get_json("/users?q=email%3Dbob%40example.com").await;
    assert_eq!(names(&by_email), ["bob"]);

    let response = expect_status(
        admin
            .get("/users?q=username%3D~ali&page=2&page_size=1")
            .await,
        200,
        "fuzzy page 2",
    )
    .await;
    assert_eq!(total_count(&response), 2);
    assert_eq!(
        response.headers()["link"],
        r#"</api/v2.0/users?q=username%3D~ali&page=1&page_size=1>; rel="prev""#
    );

    assert_api_error(
        admin.get("/users?page_size=101").await,
        422,
        "UNPROCESSABLE_ENTITY",
    )
    .await;
    assert_api_error(
        admin.get("/users?page_size=ten").await,
        422,
        "UNPROCESSABLE_ENTITY",
    )
    .await;
    assert_api_error(admin.get("/users?q=password%3Dx").await, 400, "BAD_REQUEST").await;
    assert_api_error(
        admin.get("/users?sort=password_hash").await,
        400,
        "BAD_REQUEST",
    )
    .await;
    let alice = app.api_as("alice", PASSWORD);
    assert_api_error(alice.get("/users").await, 403, "FORBIDDEN").await;
    assert_api_error(app.anonymous_api().get("/users").await, 401, "UNAUTHORIZED").await;
    let wrong = app.api_as("alice", "Wrong-Passw0rd");
    assert_api_error(wrong.get("/users").await, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn users_read_and_update_themselves_and_admins_anyone() {
    let app = TestApp::spawn_secure().await;
    let alice_id = create_user(&app, "alice").await;
    let bob_id = create_user(&app, "bob").await;
    let alice = app.api_as("alice", PASSWORD);
    let admin = app.admin_api();

    let me = alice.get_json(&format!("/users/{alice_id}")).await;
    assert_eq!(me["username"], "alice");
    let response = alice.get(&format!("/users/{bob_id}")).await;
    assert_api_error(response, 403, "FORBIDDEN").await;
    let response = app.anonymous_api().get(&format!("/users/{alice_id}")).await;
    assert_api_error(response, 401, "UNAUTHORIZED").await;
    assert_api_error(admin.get("/users/999999").await, 404, "NOT_FOUND").await;
    assert_api_error(admin.get("/users/abc").await, 422, "UNPROCESSABLE_ENTITY").await;

    // A partial update: only the comment changes.
    let path = format!("/users/{alice_id}");
    let response = alice.put(&path, json!({"comment": "new comment"})).await;
    assert_empty_ok(response, "alice updates her comment").await;
    let me = alice.get_json(&path).await;
    assert_eq!(me["comment"], "new comment");
    assert_eq!(me["email"], "alice@example.com");
    assert_eq!(me["realname"], "alice test");

    let response = admin
        .put(
            &path,
            json!({"email": "alice@corp.example.org", "realname": "Alice"}),
        )
        .await;
    assert_empty_ok(response, "admin updates alice").await;
    let me = alice.get_json(&path).await;
    assert_eq!(me["email"], "alice@corp.example.org");
    assert_eq!(me["realname"], "Alice");
    assert_eq!(me["comment"], "new comment");

    let response = alice
        .put(&format!("/users/{bob_id}"), json!({"comment": "x"}))
        .await;
    assert_api_error(response, 403, "FORBIDDEN").await;
    let response = app
        .anonymous_api()
        .put(&path, json!({"comment": "x"}))
        .await;
    assert_api_error(response, 401, "UNAUTHORIZED").await;
    let response = alice.put(&path, json!({"email": "nope"})).await;
    assert_api_error(response, 400, "BAD_REQUEST").await;
    let response = alice.put(&path, json!({"comment": "c".repeat(31)})).await;
    assert_api_error(response, 400, "BAD_REQUEST").await;
    let response = send_bad_json(&alice, Method::PUT, &path).await;
    assert_api_error(response, 400, "BAD_REQUEST").await;
    let response = alice.put(&path, json!({"email": "bob@example.com"})).await;
    assert_api_error(response, 409, "CONFLICT").await;
    let response = admin.put("/users/999999", json!({"comment": "x"})).await;
    assert_api_error(response, 404, "NOT_FOUND").await;

    assert_eq!(
        audit_rows(&app, "update", "alice").await,
        vec![("alice".to_owned(), None), ("admin".to_owned(), None)]
    );
    assert!(audit_rows(&app, "update", "bob").await.is_empty());
}

#[tokio::test]
async fn admins_delete_other_users_but_not_themselves() {
    let app = TestApp::spawn_secure().await;
    let alice_id = create_user(&app, "alice").await;
    let bob_id = create_user(&app, "bob").await;
    let admin = app.admin_api();
    let alice = app.api_as("alice", PASSWORD);

    let response = alice.delete(&format!("/users/{bob_id}")).await;
    assert_api_error(response, 403, "FORBIDDEN").await;
    let response = app
        .anonymous_api()
        .delete(&format!("/users/{bob_id}"))
        .await;
    assert_api_error(response, 401, "UNAUTHORIZED").await;
    let me = admin.get_json("/users/current").await;
    let response = admin.delete(&format!("/users/{}", me["user_id"])).await;
    assert_api_error(response, 403, "FORBIDDEN").await;
    assert_api_error(admin.delete("/users/999999").await, 404, "NOT_FOUND").await;

    let response = admin.delete(&format!("/users/{alice_id}")).await;
    assert_empty_ok(response, "delete alice").await;
    let response = admin.get(&format!("/users/{alice_id}")).await;
    assert_api_error(response, 404, "NOT_FOUND").await;
    let response = admin.delete(&format!("/users/{alice_id}")).await;
    assert_api_error(response, 404, "NOT_FOUND").await;
    // A deleted user cannot log in.
    let response = alice.get("/users/current").await;
    assert_api_error(response, 401, "UNAUTHORIZED").await;

    assert_eq!(
        audit_rows(&app, "delete", "alice").await,
        vec![("admin".to_owned(), None)]
    );
    assert!(audit_rows(&app, "delete", "bob").await.is_empty());
    assert!(audit_rows(&app, "delete", "admin").await.is_empty());
}

#[tokio::test]
async fn passwords_change_with_the_old_one_or_by_an_admin() {
    let app = TestApp::spawn_secure().await;
    let alice_id = create_user(&app, "alice").await;
    let bob_id = create_user(&app, "bob").await;
    let path = format!("/users/{alice_id}/password");
    let alice = app.api_as("alice", PASSWORD);

    let response = alice
        .put(
            &path,
            json!({"old_password": "Wrong-Passw0rd", "new_password": "Newer-Passw0rd"}),
        )
        .await;
    let message = assert_api_error(response, 403, "FORBIDDEN").await;
    assert_eq!(message, "Current password is incorrect");
    let response = alice
        .put(&path, json!({"new_password": "Newer-Passw0rd"}))
        .await;
    assert_api_error(response, 403, "FORBIDDEN").await;
    let response = alice
        .put(
            &path,
            json!({"old_password": PASSWORD, "new_password": "weakpassword"}),
        )
        .await;
    assert_api_error(response, 400, "BAD_REQUEST").await;
    let response = alice
        .put(
            &path,
            json!({"old_password": PASSWORD, "new_password": PASSWORD}),
        )
        .await;
    assert_api_error(response, 400, "BAD_REQUEST").await;
    let response = send_bad_json(&alice, Method::PUT, &path).await;
    assert_api_error(response, 400, "BAD_REQUEST").await;
    let response = alice
        .put(
            &format!("/users/{bob_id}/password"),
            json!({"new_password": "Newer-Passw0rd"}),
        )
        .await;
    assert_api_error(response, 403, "FORBIDDEN").await;
    let response = app
        .anonymous_api()
        .put(&path, json!({"new_password": "Newer-Passw0rd"}))
        .await;
    assert_api_error(response, 401, "UNAUTHORIZED").await;
    let response = app
        .admin_api()
        .put(
            "/users/999999/password",
            json!({"new_password": "Newer-Passw0rd"}),
        )
        .await;
    assert_api_error(response, 404, "NOT_FOUND").await;

    let response = alice
        .put(
            &path,
            json!({"old_password": PASSWORD, "new_password": "Newer-Passw0rd"}),
        )
        .await;
    assert_empty_ok(response, "alice changes her password").await;
    assert_api_error(alice.get("/users/current").await, 401, "UNAUTHORIZED").await;
    let alice = app.api_as("alice", "Newer-Passw0rd");
    alice.get_json("/users/current").await;

    // An administrator resets someone else's password without knowing it.
    let response = app
        .admin_api()
        .put(
            &format!("/users/{bob_id}/password"),
            json!({"new_password": "Reset-Passw0rd"}),
        )
        .await;
    assert_empty_ok(response, "admin resets bob's password").await;
    app.api_as("bob", "Reset-Passw0rd")
        .get_json("/users/current")
        .await;

    assert_eq!(
        audit_rows(&app, "change_password", "alice").await,
        vec![("alice".to_owned(), None)]
    );
    assert_eq!(
        audit_rows(&app, "change_password", "bob").await,
        vec![("admin".to_owned(), None)]
    );
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_logs WHERE resource LIKE '%Passw0rd%' OR username LIKE '%Passw0rd%'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(leaked, 0);
}

#[tokio::test]
async fn admins_grant_and_revoke_sysadmin_but_not_on_themselves() {
    let app = TestApp::spawn_secure().await;
    let alice_id = create_user(&app, "alice").await;
    let bob_id = create_user(&app, "bob").await;
    let admin = app.admin_api();
    let alice = app.api_as("alice", PASSWORD);
    let path = format!("/users/{alice_id}/sysadmin");

    assert_api_error(alice.get("/users").await, 403, "FORBIDDEN").await;
    let response = admin.put(&path, json!({"sysadmin_flag": true})).await;
    assert_empty_ok(response, "grant").await;
    assert_eq!(
        alice.get_json("/users/current").await["sysadmin_flag"],
        true
    );
    alice.get_json("/users").await;

    // The new administrator cannot drop their own flag, but may revoke another's.
    let response = alice.put(&path, json!({"sysadmin_flag": false})).await;
    assert_api_error(response, 403, "FORBIDDEN").await;
    let response = admin.put(&path, json!({"sysadmin_flag": false})).await;
    assert_empty_ok(response, "revoke").await;
    assert_api_error(alice.get("/users").await, 403, "FORBIDDEN").await;

    let response = alice
        .put(
            &format!("/users/{bob_id}/sysadmin"),
            json!({"sysadmin_flag": true}),
        )
        .await;
    assert_api_error(response, 403, "FORBIDDEN").await;
    let response = app
        .anonymous_api()
        .put(&path, json!({"sysadmin_flag": true}))
        .await;
    assert_api_error(response, 401, "UNAUTHORIZED").await;
    let response = admin
        .put("/users/999999/sysadmin", json!({"sysadmin_flag": true}))
        .await;
    assert_api_error(response, 404, "NOT_FOUND").await;
    assert_api_error(admin.put(&path, json!({})).await, 400, "BAD_REQUEST").await;
    let response = send_bad_json(&admin, Method::PUT, &path).await;
    assert_api_error(response, 400, "BAD_REQUEST").await;

    assert_eq!(
        audit_rows(&app, "set_sysadmin", "alice").await,
        vec![("admin".to_owned(), None), ("admin".to_owned(), None)]
    );
    assert!(audit_rows(&app, "set_sysadmin", "bob").await.is_empty());
}

#[tokio::test]
async fn current_user_and_search_need_authentication() {
    let app = TestApp::spawn_secure().await;
    let alice_id = create_user(&app, "alice").await;
    create_user(&app, "alicia").await;
    create_user(&app, "bob").await;
    let alice = app.api_as("alice", PASSWORD);

    let me = alice.get_json("/users/current").await;
    assert_eq!(me["user_id"], alice_id);
    assert_eq!(me["sysadmin_flag"], false);
    let admin = app.admin_api().get_json("/users/current").await;
    assert_eq!(admin["username"], "admin");
    assert_eq!(admin["sysadmin_flag"], true);
    let response = app.anonymous_api().get("/users/current").await;
    assert_api_error(response, 401, "UNAUTHORIZED").await;
    let response = app
        .api_as("alice", "Wrong-Passw0rd")
        .get("/users/current")
        .await;
    assert_api_error(response, 401, "UNAUTHORIZED").await;

    // Any user may search; the answer is ids and names only.
    let response =
        expect_status(alice.get("/users/search?username=ali").await, 200, "search").await;
    assert_eq!(total_count(&response), 2);
    let found: Value = response.json().await.unwrap();
    assert_eq!(
        found,
        json!([{"user_id": alice_id, "username": "alice"},
               {"user_id": alice_id + 1, "username": "alicia"}])
    );
    let page = alice
        .get_json("/users/search?username=ali&page=2&page_size=1")
        .await;
    assert_eq!(page[0]["username"], "alicia");
    let none = alice.get_json("/users/search?username=zed").await;
    assert_eq!(none, json!([]));
    let response = alice.get("/users/search").await;
    assert_api_error(response, 422, "UNPROCESSABLE_ENTITY").await;
    let response = alice.get("/users/search?username=a&page_size=101").await;
    assert_api_error(response, 422, "UNPROCESSABLE_ENTITY").await;
    let response = app.anonymous_api().get("/users/search?username=a").await;
    assert_api_error(response, 401, "UNAUTHORIZED").await;
}

// --- Robots ---------------------------------------------------------------------------

fn pull_permission(kind: &str, namespace: &str) -> Value {
    json!({"kind": kind, "namespace": namespace,
           "access": [{"resource": "repository", "action": "pull"}]})
}

fn project_robot(name: &str, project: &str, duration: i64) -> Value {
    json!({"name": name, "level": "project", "duration": duration,
           "description": "ci robot", "permissions": [pull_permission("project", project)]})
}

/// Creates a robot; asserts the 201 and returns its JSON (`RobotCreated`).
async fn create_robot(api: &ApiClient, body: Value) -> Value {
    let response = expect_status(api.post("/robots", body).await, 201, "create robot").await;
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    assert_eq!(location, format!("/api/v2.0/robots/{}", created["id"]));
    created
}

/// Whether `name:secret` authenticates on the API: a robot is refused
/// `/users/current` with 412 (it is not a user) once authenticated, and with 401 when
/// its credentials are not accepted.
async fn robot_logs_in(app: &TestApp, name: &str, secret: &str) -> bool {
    let response = app.api_as(name, secret).get("/users/current").await;
    match response.status().as_u16() {
        412 => true,
        401 => false,
        other => panic!(
            "robot login answered {other}: {}",
            response.text().await.unwrap()
        ),
    }
}

#[tokio::test]
async fn system_robots_show_their_secret_once_and_authenticate_with_it() {
    let app = TestApp::spawn_secure().await;
    app.insert_project("team-a", false).await;
    let admin = app.admin_api();
    let body = json!({
        "name": "ci", "level": "system", "duration": -1, "description": "everywhere",
        "permissions": [
            pull_permission("project", "*"),
            {"kind": "project", "namespace": "team-a",
             "access": [{"resource": "repository", "action": "push", "effect": "allow"}]},
            {"kind": "system", "namespace": "/",
             "access": [{"resource": "audit-log", "action": "list"}]},
        ],
    });
    let created = create_robot(&admin, body).await;
    assert_eq!(created["name"], "robot$ci");
    assert_eq!(created["expires_at"], -1);
    assert!(created["creation_time"].as_str().unwrap().ends_with('Z'));
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 32);
    let id = created["id"].as_i64().unwrap();

    let robot = admin.get_json(&format!("/robots/{id}")).await;
    assert_eq!(robot["name"], "robot$ci");
    assert_eq!(robot["level"], "system");
    assert_eq!(robot["duration"], -1);
    assert_eq!(robot["expires_at"], -1);
    assert_eq!(robot["editable"], true);
    assert_eq!(robot["disable"], false);
    assert_eq!(robot["description"], "everywhere");
    assert_eq!(robot["permissions"].as_array().unwrap().len(), 3);
    assert_eq!(robot["permissions"][1]["access"][0]["effect"], "allow");
    assert!(
        robot.get("secret").is_none(),
        "GET shows no secret: {robot}"
    );
    assert!(!robot.to_string().contains(&secret));

    let hash: String = sqlx::query_scalar("SELECT secret_hash FROM robots WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$") && !hash.contains(&secret));

    assert!(robot_logs_in(&app, "robot$ci", &secret).await);
    assert!(!robot_logs_in(&app, "robot$ci", "Wrong-Secret-123").await);
    assert!(
        !robot_logs_in(&app, "ci", &secret).await,
        "the prefix is part of the name"
    );

    // Without `Level`, the listing shows the system robots.
    let response = expect_status(admin.get("/robots").await, 200, "list").await;
    assert_eq!(total_count(&response), 1);
    let listed: Value = response.json().await.unwrap();
    assert_eq!(listed[0]["name"], "robot$ci");
    assert!(listed[0].get("secret").is_none());
    let listed = admin.get_json("/robots?q=Level%3Dsystem").await;
    assert_eq!(listed.as_array().unwrap().len(), 1);

    assert_eq!(
        audit_rows(&app, "create", "robot$ci").await,
        vec![("admin".to_owned(), None)]
    );
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_logs WHERE resource LIKE '%' || $1 || '%' OR username LIKE '%' || $1 || '%'",
    )
    .bind(&secret)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(leaked, 0);
}

#[tokio::test]
async fn project_robots_are_named_after_their_project_and_refresh_their_secret() {
    let app = TestApp::spawn_secure().await;
    let project_id = app.insert_project("team-a", false).await;
    let alice_id = create_user(&app, "alice").await;
    app.insert_member(project_id, alice_id, 1).await;
    let alice = app.api_as("alice", PASSWORD);

    let created = create_robot(&alice, project_robot("ci", "team-a", 7)).await;
    assert_eq!(created["name"], "robot$team-a+ci");
    let id = created["id"].as_i64().unwrap();
    let created_at =
        chrono::DateTime::parse_from_rfc3339(created["creation_time"].as_str().unwrap())
            .unwrap()
            .timestamp();
    assert_eq!(
        created["expires_at"].as_i64().unwrap(),
        created_at + 7 * 86_400
    );
    let first = created["secret"].as_str().unwrap().to_owned();
    assert!(robot_logs_in(&app, "robot$team-a+ci", &first).await);
    let stored: (String, Option<i64>, String) =
        sqlx::query_as("SELECT name, project_id, created_by FROM robots WHERE id = $1")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(
        stored,
        ("team-a+ci".to_owned(), Some(project_id), "alice".to_owned())
    );

    // PATCH with no secret generates one and shows it; the old one stops working.
    let path = format!("/robots/{id}");
    let response = expect_status(alice.patch(&path, json!({})).await, 200, "refresh").await;
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let refreshed: Value = response.json().await.unwrap();
    let second = refreshed["secret"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert!(!robot_logs_in(&app, "robot$team-a+ci", &first).await);
    assert!(robot_logs_in(&app, "robot$team-a+ci", &second).await);

    // harborapi sends `{"secret": null}` for "generate one".
    let response = alice.patch(&path, json!({"secret": null})).await;
    let third: Value = expect_status(response, 200, "refresh")
        .await
        .json()
        .await
        .unwrap();
    assert!(third["secret"].as_str().is_some_and(|s| s.len() == 32));

    // A chosen secret is checked, set, and not echoed.
    let response = alice.patch(&path, json!({"secret": "weak"})).await;
    assert_api_error(response, 400, "BAD_REQUEST").await;
    let response = alice
        .patch(&path, json!({"secret": "Chosen-Secret-42"}))
        .await;
    let chosen: Value = expect_status(response, 200, "set secret")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(chosen, json!({}));
    assert!(robot_logs_in(&app, "robot$team-a+ci", "Chosen-Secret-42").await);
    assert!(!robot_logs_in(&app, "robot$team-a+ci", &second).await);

    let response = send_bad_json(&alice, Method::PATCH, &path).await;
    assert_api_error(response, 400, "BAD_REQUEST").await;
    let response = app.anonymous_api().patch(&path, json!({})).await;
    assert_api_error(response, 401, "UNAUTHORIZED").await;
    let response = alice.patch("/robots/999999", json!({})).await;
    assert_api_error(response, 404, "NOT_FOUND").await;

    assert_eq!(
        audit_rows(&app, "create", "robot$team-a+ci").await,
        vec![("alice".to_owned(), Some(project_id))]
    );
    assert_eq!(
        audit_rows(&app, "refresh_secret", "robot$team-a+ci")
            .await
            .len(),
        3,
        "one row per successful refresh"
    );
}

#[tokio::test]
async fn disabling_expiring_and_deleting_robots_stop_their_logins() {
    let app = TestApp::spawn_secure().await;
    let project_id = app.insert_project("team-a", false).await;
    let admin = app.admin_api();
    let created = create_robot(&admin, project_robot("ci", "team-a", 7)).await;
    let id = created["id"].as_i64().unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let path = format!("/robots/{id}");
    assert!(robot_logs_in(&app, "robot$team-a+ci", &secret).await);

    // Revoke with `disable`, as harborapi's update_robot sends it: a partial Robot.
    let response = admin.put(&path, json!({"disable": true})).await;
    assert_empty_ok(response, "disable").await;
    assert!(!robot_logs_in(&app, "robot$team-a+ci", &secret).await);
    let robot = admin.get_json(&path).await;
    assert_eq!(robot["disable"], true);
    assert_eq!(
        robot["permissions"][0]["namespace"], "team-a",
        "permissions kept"
    );
    assert_eq!(robot["description"], "ci robot");

    // The full Robot body back, re-enabled, with a new duration and permissions.
    let mut body = robot.clone();
    body["disable"] = json!(false);
    body["duration"] = json!(10);
    body["description"] = json!("pull and push");
    body["permissions"][0]["access"] = json!([
        {"resource": "repository", "action": "pull"},
        {"resource": "repository", "action": "push"},
    ]);
    assert_empty_ok(admin.put(&path, body).await, "full update").await;
    assert!(robot_logs_in(&app, "robot$team-a+ci", &secret).await);
    let robot = admin.get_json(&path).await;
    let created_at = chrono::DateTime::parse_from_rfc3339(robot["creation_time"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert_eq!(robot["duration"], 10);
    assert_eq!(
        robot["expires_at"].as_i64().unwrap(),
        created_at + 10 * 86_400
    );
    assert_eq!(robot["description"], "pull and push");
    assert_eq!(
        robot["permissions"][0]["access"].as_array().unwrap().len(),
        2
    );

    // Name and level are fixed; the name is compared with its prefix.
    for change in [
        json!({"name": "ci"}),
        json!({"name": "robot$team-a+other"}),
        json!({"level": "system"}),
    ] {
        let response = admin.put(&path, change).await;
        assert_api_error(response, 400, "BAD_REQUEST").await;
    }
    let response = admin
        .put(
            &path,
            json!({"name": "robot$team-a+ci", "level": "project"}),
        )
        .await;
    assert_empty_ok(response, "same name and level").await;
    let bad_updates = [
        json!({"duration": -2}),
        json!({"permissions": []}),
        json!({"permissions": [pull_permission("project", "team-b")]}),
        json!({"permissions": [pull_permission("project", "team-a"), pull_permission("project", "*")]}),
    ];
    for change in bad_updates {
        let response = admin.put(&path, change).await;
        assert_api_error(response, 400, "BAD_REQUEST").await;
    }
    let response = send_bad_json(&admin, Method::PUT, &path).await;
    assert_api_error(response, 400, "BAD_REQUEST").await;
    let response = admin.put("/robots/999999", json!({"disable": true})).await;
    assert_api_error(response, 404, "NOT_FOUND").await;
    let response = app
        .anonymous_api()
        .put(&path, json!({"disable": true}))
        .await;
    assert_api_error(response, 401, "UNAUTHORIZED").await;

    // Expiry: a robot past its expires_at cannot log in.
    sqlx::query("UPDATE robots SET expires_at = now() - interval '1 minute' WHERE id = $1")
        .bind(id)
        .execute(&app.db)
        .await
        .unwrap();
    assert!(!robot_logs_in(&app, "robot$team-a+ci", &secret).await);
    sqlx::query("UPDATE robots SET expires_at = NULL WHERE id = $1")
        .bind(id)
        .execute(&app.db)
        .await
        .unwrap();
    assert!(robot_logs_in(&app, "robot$team-a+ci", &secret).await);

    let response = app.anonymous_api().delete(&path).await;
    assert_api_error(response, 401, "UNAUTHORIZED").await;
    assert_empty_ok(admin.delete(&path).await, "delete").await;
    assert!(!robot_logs_in(&app, "robot$team-a+ci", &secret).await);
    assert_api_error(admin.get(&path).await, 404, "NOT_FOUND").await;
    assert_api_error(admin.delete(&path).await, 404, "NOT_FOUND").await;

    let updates = audit_rows(&app, "update", "robot$team-a+ci").await;
    assert_eq!(
        updates.len(),
        3,
        "disable, full update, same name and level"
    );
    assert!(updates
        .iter()
        .all(|row| *row == ("admin".to_owned(), Some(project_id))));
    assert_eq!(
        audit_rows(&app, "delete", "robot$team-a+ci").await,
        vec![("admin".to_owned(), Some(project_id))]
    );
}

#[tokio::test]
async fn robot_creation_validates_like_harbor() {
    let app = TestApp::spawn_secure().await;
    app.insert_project("team-a", false).await;
    let admin = app.admin_api();

    let bad = [
        project_robot("CI", "team-a", 7),
        project_robot("ci+x", "team-a", 7),
        project_robot("-ci", "team-a", 7),
        project_robot("", "team-a", 7),
        project_robot("ci", "team-a", -2),
        project_robot("ci", "team-a", i64::from(i32::MAX)),
        json!({"name": "ci", "level": "team", "permissions": [pull_permission("project", "team-a")]}),
        json!({"name": "ci", "permissions": [pull_permission("project", "team-a")]}),
        json!({"name": "ci", "level": "project", "permissions": []}),
        json!({"name": "ci", "level": "project"}),
        json!({"name": "ci", "level": "project",
               "permissions": [{"kind": "project", "namespace": "team-a", "access": []}]}),
        json!({"name": "ci", "level": "project",
               "permissions": [pull_permission("project", "team-a"), pull_permission("project", "team-a")]}),
        json!({"name": "ci", "level": "project", "permissions": [pull_permission("project", "*")]}),
        json!({"name": "ci", "level": "project", "permissions": [pull_permission("system", "/")]}),
        json!({"name": "ci", "level": "system", "permissions": [pull_permission("system", "team-a")]}),
        json!({"name": "ci", "level": "system", "permissions": [pull_permission("cluster", "/")]}),
        json!({"name": "ci", "level": "system", "permissions": [
            {"kind": "project", "namespace": "*", "access": [{"resource": "repository", "action": "pull", "effect": "maybe"}]}]}),
        json!({"name": "ci", "level": "project", "secret": "weak",
               "permissions": [pull_permission("project", "team-a")]}),
    ];
    for body in bad {
        let response = admin.post("/robots", body.clone()).await;
        let status = response.status();
        assert_eq!(status, 400, "{body}");
        assert_api_error(response, 400, "BAD_REQUEST").await;
    }
    let response = send_bad_json(&admin, Method::POST, "/robots").await;
    assert_api_error(response, 400, "BAD_REQUEST").await;
    let response = admin
        .post("/robots", project_robot("ci", "team-z", 7))
        .await;
    assert_api_error(response, 404, "NOT_FOUND").await;
    let response = admin
        .post(
            "/robots",
            json!({"name": "ci", "level": "system",
                                "permissions": [pull_permission("project", "team-z")]}),
        )
        .await;
    assert_api_error(response, 404, "NOT_FOUND").await;
    assert_eq!(app.count_rows("robots").await, 0);

    // duration 0 (or none) is 30 days; a chosen strong secret is used as given.
    let body = json!({"name": "ci", "level": "project", "secret": "Chosen-Secret-42",
                      "permissions": [pull_permission("project", "team-a")]});
    let created = create_robot(&admin, body).await;
    assert_eq!(created["secret"], "Chosen-Secret-42");
    let robot = admin.get_json(&format!("/robots/{}", created["id"])).await;
    assert_eq!(robot["duration"], 30);
    let created_at = chrono::DateTime::parse_from_rfc3339(robot["creation_time"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert_eq!(
        robot["expires_at"].as_i64().unwrap(),
        created_at + 30 * 86_400
    );
    assert!(robot_logs_in(&app, "robot$team-a+ci", "Chosen-Secret-42").await);

    // The longest duration Harbor allows is accepted, with its nominal expiry.
    let long = i64::from(i32::MAX) - 1;
    let created = create_robot(&admin, project_robot("forever", "team-a", long)).await;
    assert!(created["expires_at"].as_i64().unwrap() > long * 86_400);

    let response = admin
        .post("/robots", project_robot("ci", "team-a", 7))
        .await;
    assert_api_error(response, 409, "CONFLICT").await;
    // The same short name in a system robot is another robot.
    let body =
        json!({"name": "ci", "level": "system", "permissions": [pull_permission("system", "/")]});
    create_robot(&admin, body.clone()).await;
    assert_api_error(admin.post("/robots", body).await, 409, "CONFLICT").await;

    let creates: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_logs WHERE operation = 'create' AND resource_type = 'robot'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(creates, 3, "one row per robot created, none for refusals");
}

#[tokio::test]
async fn project_admins_manage_their_own_projects_robots_only() {
    let app = TestApp::spawn_secure().await;
    let team_a = app.insert_project("team-a", false).await;
    let team_b = app.insert_project("team-b", true).await;
    app.insert_project("team-c", false).await;
    let alice_id = create_user(&app, "alice").await;
    let dave_id = create_user(&app, "dave").await;
    let mary_id = create_user(&app, "mary").await;
    app.insert_member(team_a, alice_id, 1).await; // project admin
    app.insert_member(team_a, dave_id, 2).await; // developer
    app.insert_member(team_a, mary_id, 4).await; // maintainer
    let alice = app.api_as("alice", PASSWORD);
    let admin = app.admin_api();

    let own = create_robot(&alice, project_robot("ci", "team-a", 7)).await;
    let own_path = format!("/robots/{}", own["id"]);
    alice.get_json(&own_path).await;
    assert_empty_ok(
        alice.put(&own_path, json!({"description": "mine"})).await,
        "update",
    )
    .await;
    let listed = alice
        .get_json(&format!("/robots?q=Level%3Dproject%2CProjectID%3D{team_a}"))
        .await;
    assert_eq!(listed[0]["name"], "robot$team-a+ci");
    // Maintainers manage robots too; developers do not.
    create_robot(
        &app.api_as("mary", PASSWORD),
        project_robot("deploy", "team-a", 7),
    )
    .await;
    let dave = app.api_as("dave", PASSWORD);
    let response = dave
        .post("/robots", project_robot("dev", "team-a", 7))
        .await;
    assert_api_error(response, 403, "FORBIDDEN").await;
    assert_api_error(dave.get(&own_path).await, 403, "FORBIDDEN").await;
    let response = dave
        .get(&format!("/robots?q=Level%3Dproject%2CProjectID%3D{team_a}"))
        .await;
    assert_api_error(response, 403, "FORBIDDEN").await;

    // Another project: public (visible, so 403) or private (invisible, so 404).
    let response = alice
        .post("/robots", project_robot("ci", "team-b", 7))
        .await;
    assert_api_error(response, 403, "FORBIDDEN").await;
    let response = alice
        .post("/robots", project_robot("ci", "team-c", 7))
        .await;
    assert_api_error(response, 404, "NOT_FOUND").await;
    let response = alice
        .get(&format!("/robots?q=Level%3Dproject%2CProjectID%3D{team_b}"))
        .await;
    assert_api_error(response, 403, "FORBIDDEN").await;

    let other = create_robot(&admin, project_robot("ci", "team-b", 7)).await;
    let other_path = format!("/robots/{}", other["id"]);
    let private = create_robot(&admin, project_robot("ci", "team-c", 7)).await;
    let private_path = format!("/robots/{}", private["id"]);
    for path in [&other_path, &private_path] {
        assert_api_error(alice.get(path).await, 403, "FORBIDDEN").await;
        let response = alice.put(path, json!({"disable": true})).await;
        assert_api_error(response, 403, "FORBIDDEN").await;
        assert_api_error(alice.patch(path, json!({})).await, 403, "FORBIDDEN").await;
        assert_api_error(alice.delete(path).await, 403, "FORBIDDEN").await;
    }

    // System robots are for administrators.
    let body =
        json!({"name": "sys", "level": "system", "permissions": [pull_permission("project", "*")]});
    assert_api_error(alice.post("/robots", body.clone()).await, 403, "FORBIDDEN").await;
    let system = create_robot(&admin, body).await;
    let system_path = format!("/robots/{}", system["id"]);
    assert_api_error(alice.get(&system_path).await, 403, "FORBIDDEN").await;
    assert_api_error(alice.delete(&system_path).await, 403, "FORBIDDEN").await;
    assert_api_error(alice.get("/robots").await, 403, "FORBIDDEN").await;

    // Robots themselves manage no robots.
    let secret = own["secret"].as_str().unwrap();
    let robot = app.api_as("robot$team-a+ci", secret);
    assert_api_error(robot.get(&own_path).await, 403, "FORBIDDEN").await;

    let anonymous = app.anonymous_api();
    assert_api_error(anonymous.get("/robots").await, 401, "UNAUTHORIZED").await;
    assert_api_error(anonymous.get(&own_path).await, 401, "UNAUTHORIZED").await;
    let response = anonymous
        .post("/robots", project_robot("x", "team-a", 7))
        .await;
    assert_api_error(response, 401, "UNAUTHORIZED").await;

    assert_empty_ok(alice.delete(&own_path).await, "delete own").await;
    assert_eq!(
        audit_rows(&app, "delete", "robot$team-a+ci").await,
        vec![("alice".to_owned(), Some(team_a))]
    );
    assert!(audit_rows(&app, "delete", "robot$team-b+ci")
        .await
        .is_empty());
    assert!(audit_rows(&app, "update", "robot$team-b+ci")
        .await
        .is_empty());
}

#[tokio::test]
async fn robot_listing_filters_by_project_and_name_and_pages() {
    let app = TestApp::spawn_secure().await;
    let team_a = app.insert_project("team-a", false).await;
    app.insert_project("team-b", false).await;
    let admin = app.admin_api();
    for name in ["build", "deploy", "scan"] {
        create_robot(&admin, project_robot(name, "team-a", -1)).await;
    }
    create_robot(&admin, project_robot("build", "team-b", -1)).await;
    let body = json!({"name": "global", "level": "system", "permissions": [pull_permission("project", "*")]});
    create_robot(&admin, body).await;

    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let q = format!("q=Level%3Dproject%2CProjectID%3D{team_a}");
    let listed = admin.get_json(&format!("/robots?{q}&sort=-name")).await;
    assert_eq!(
        names(&listed),
        [
            "robot$team-a+scan",
            "robot$team-a+deploy",
            "robot$team-a+build"
        ]
    );
    let system = admin.get_json("/robots").await;
    assert_eq!(names(&system), ["robot$global"]);
    // Harbor: ProjectID without Level=project still lists system robots.
    let system = admin
        .get_json(&format!("/robots?q=ProjectID%3D{team_a}"))
        .await;
    assert_eq!(names(&system), ["robot$global"]);

    let fuzzy = admin.get_json(&format!("/robots?{q}%2Cname%3D~de")).await;
    assert_eq!(names(&fuzzy), ["robot$team-a+deploy"]);
    let exact = admin
        .get_json(&format!("/robots?{q}%2Cname%3Drobot%24team-a%2Bscan"))
        .await;
    assert_eq!(names(&exact), ["robot$team-a+scan"]);

    let path = format!("/robots?{q}&page=2&page_size=1");
    let response = expect_status(admin.get(&path).await, 200, "page 2").await;
    assert_eq!(total_count(&response), 3);
    assert_eq!(
        response.headers()["link"],
        format!(
            r#"</api/v2.0/robots?{q}&page=1&page_size=1>; rel="prev" , </api/v2.0/robots?{q}&page=3&page_size=1>; rel="next""#
        )
        .as_str()
    );
    let page: Value = response.json().await.unwrap();
    assert_eq!(names(&page), ["robot$team-a+deploy"]);

    let refused = [
        ("/robots?q=Level%3Dproject", 400, "BAD_REQUEST"),
        (
            "/robots?q=Level%3Dproject%2CProjectID%3Dabc",
            400,
            "BAD_REQUEST",
        ),
        ("/robots?q=Level%3Dteam", 400, "BAD_REQUEST"),
        ("/robots?q=level%3Dproject", 400, "BAD_REQUEST"),
        ("/robots?sort=secret", 400, "BAD_REQUEST"),
        ("/robots?page_size=101", 422, "UNPROCESSABLE_ENTITY"),
        (
            "/robots?q=Level%3Dproject%2CProjectID%3D999999",
            404,
            "NOT_FOUND",
        ),
    ];
    for (path, status, code) in refused {
        assert_api_error(admin.get(path).await, status, code).await;
    }
}
