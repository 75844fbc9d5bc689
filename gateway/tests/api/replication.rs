//! Harbor's replication policy endpoints (`/replication/policies`): Harbor's shapes
//! (both registries shown, this one as "Local" with id 0), Harbor's refusals, the cron
//! schedule kept in step with each scheduled policy, audit records, and system
//! administrators only. The remote registries are created through `/registries` with
//! a URL nothing listens on: policies never contact them.

use serde_json::{json, Value};

use crate::helpers::{
    assert_api_error, assert_empty_ok, expect_status, location_path, ApiClient, TestApp,
};

/// A URL nothing listens on: the registry is stored (marked unhealthy) at once.
const CLOSED_URL: &str = "http://127.0.0.1:1";

/// Creates a registry through the API; returns its id.
async fn create_registry(api: &ApiClient, name: &str) -> i64 {
    let body = json!({"name": name, "type": "docker-registry", "url": CLOSED_URL});
    let response = expect_status(api.post("/registries", body).await, 201, "create registry").await;
    let location = location_path(&response).expect("Location on 201");
    location
        .strip_prefix("/api/v2.0/registries/")
        .unwrap_or_else(|| panic!("Location {location}"))
        .parse()
        .unwrap()
}

/// Creates a policy; asserts 201 with an empty body and a Location; returns its id.
async fn create_policy(api: &ApiClient, body: Value) -> i64 {
    let response = expect_status(
        api.post("/replication/policies", body).await,
        201,
        "create policy",
    )
    .await;
    let location = location_path(&response).expect("Location on 201");
    let id = location
        .strip_prefix("/api/v2.0/replication/policies/")
        .unwrap_or_else(|| panic!("Location {location}"))
        .parse()
        .unwrap();
    assert!(
        response.bytes().await.unwrap().is_empty(),
        "201 with a body"
    );
    id
}

async fn get_policy(api: &ApiClient, id: i64) -> Value {
    api.get_json(&format!("/replication/policies/{id}")).await
}

fn push_body(name: &str, dest: i64) -> Value {
    json!({"name": name, "dest_registry": {"id": dest}})
}

/// The replicate schedule of policy `id`: (schedule id, cron, payload, enabled).
async fn schedule_of(app: &TestApp, id: i64) -> Option<(i64, String, Value, bool)> {
    sqlx::query_as(
        "SELECT id, cron, payload, enabled FROM schedules WHERE kind = 'replicate' AND vendor_id = $1",
    )
    .bind(id)
    .fetch_optional(&app.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn policies_are_created_read_listed_updated_and_deleted_in_harbors_shapes() {
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();
    let hub = create_registry(&api, "hub").await;
    let id = create_policy(
        &api,
        json!({
            "name": "to-hub",
            "description": "library to the hub",
            "dest_registry": {"id": hub},
            "dest_namespace": "mirror",
            "dest_namespace_replace_count": 1,
            "trigger": {"type": "event_based", "trigger_settings": {"cron": ""}},
            "filters": [
                {"type": "name", "value": "library/**"},
                {"type": "tag", "value": "v*", "decoration": "excludes"},
                {"type": "resource", "value": "image"},
            ],
            "deletion": true,
            "override": true,
            "enabled": true,
            "speed": 2048,
            "copy_by_chunk": true,
        }),
    )
    .await;

    let policy = get_policy(&api, id).await;
    assert_eq!(policy["id"], id);
    assert_eq!(policy["name"], "to-hub");
    assert_eq!(policy["description"], "library to the hub");
    // Push mode: this registry is the source, as Harbor's "Local" registry.
    let local = &policy["src_registry"];
    assert_eq!(local["id"], 0);
    assert_eq!(local["name"], "Local");
    assert_eq!(local["type"], "harbor");
    assert_eq!(local["status"], "healthy");
    assert_eq!(local["url"], app.registry.address);
    let dest = &policy["dest_registry"];
    assert_eq!(dest["id"], hub);
    assert_eq!(dest["name"], "hub");
    assert_eq!(dest["type"], "docker-registry");
    assert_eq!(dest["url"], CLOSED_URL);
    assert_eq!(policy["dest_namespace"], "mirror");
    assert_eq!(policy["dest_namespace_replace_count"], 1);
    assert_eq!(
        policy["trigger"],
        json!({"type": "event_based", "trigger_settings": {"cron": ""}})
    );
    assert_eq!(
        policy["filters"],
        json!([
            {"type": "name", "value": "library/**"},
            {"type": "tag", "value": "v*", "decoration": "excludes"},
            {"type": "resource", "value": "image"},
        ])
    );
    // Harbor's deprecated `deletion` is read, and both spellings are answered.
    assert_eq!(policy["replicate_deletion"], true);
    assert_eq!(policy["deletion"], true);
    assert_eq!(policy["override"], true);
    assert_eq!(policy["enabled"], true);
    assert_eq!(policy["speed"], 2048);
    assert_eq!(policy["copy_by_chunk"], true);
    let created = policy["creation_time"].as_str().unwrap().to_owned();
    assert!(
        created.ends_with('Z') && created.len() == "2025-01-01T00:00:00.000Z".len(),
        "{created}"
    );
    assert_eq!(
        app.audit_count("create", "replication_policy", "to-hub")
            .await,
        1
    );

    // The list shows the same policy, with Harbor's count header.
    let (items, total, _) = api.get_list("/replication/policies").await;
    assert_eq!(total, Some(1));
    assert_eq!(items, vec![policy.clone()]);

    // PUT of the policy as read changes nothing but the update time.
    assert_empty_ok(
        api.put(&format!("/replication/policies/{id}"), policy.clone())
            .await,
        "PUT the policy as read",
    )
    .await;
    let again = get_policy(&api, id).await;
    let without_time = |mut v: Value| {
        v.as_object_mut().unwrap().remove("update_time");
        v
    };
    assert_eq!(without_time(again), without_time(policy.clone()));

    // PUT replaces the whole policy: what it leaves out takes its default.
    let puller = create_registry(&api, "upstream").await;
    assert_empty_ok(
        api.put(
            &format!("/replication/policies/{id}"),
            json!({
                "name": "from-upstream",
                "src_registry": {"id": puller},
                "dest_registry": {"id": 0},
                "trigger": {"type": "manual"},
                "replicate_deletion": false,
                "deletion": true,
                "speed": -1,
            }),
        )
        .await,
        "PUT a new policy",
    )
    .await;
    let changed = get_policy(&api, id).await;
    assert_eq!(changed["name"], "from-upstream");
    assert_eq!(changed["description"], "");
    assert_eq!(changed["src_registry"]["id"], puller);
    assert_eq!(changed["src_registry"]["name"], "upstream");
    assert_eq!(changed["dest_registry"]["id"], 0);
    assert_eq!(changed["dest_registry"]["name"], "Local");
    assert_eq!(changed["dest_namespace"], "");
    assert_eq!(changed["dest_namespace_replace_count"], -1);
    assert_eq!(changed["trigger"], json!({"type": "manual"}));
    assert_eq!(changed["filters"], json!([]));
    // `replicate_deletion` wins over `deletion` when both come.
    assert_eq!(changed["replicate_deletion"], false);
    assert_eq!(changed["override"], false);
    assert_eq!(changed["enabled"], false);
    // A negative speed is stored as 0, as Harbor does.
    assert_eq!(changed["speed"], 0);
    assert_eq!(changed["creation_time"], created.as_str());
    assert_eq!(
        app.audit_count("update", "replication_policy", "from-upstream")
            .await,
        1
    );

    // A policy without a trigger shows none.
    let bare = create_policy(&api, push_body("bare", hub)).await;
    assert!(get_policy(&api, bare).await.get("trigger").is_none());

    assert_empty_ok(
        api.delete(&format!("/replication/policies/{id}")).await,
        "delete policy",
    )
    .await;
    assert_api_error(
        api.get(&format!("/replication/policies/{id}")).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_eq!(
        app.audit_count("delete", "replication_policy", "from-upstream")
            .await,
        1
    );
    // The registry the remaining policy uses cannot be deleted; the other one can.
    assert_api_error(
        api.delete(&format!("/registries/{hub}")).await,
        412,
        "PRECONDITION",
    )
    .await;
    assert_empty_ok(
        api.delete(&format!("/registries/{puller}")).await,
        "delete an unused registry",
    )
    .await;
}

#[tokio::test]
async fn invalid_policies_are_refused_with_harbors_answers() {
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();
    let hub = create_registry(&api, "hub").await;
    let other = create_registry(&api, "other").await;
    create_policy(&api, push_body("taken", hub)).await;

    let refused = |body: Value| {
        let api = api.clone();
        async move {
            assert_api_error(
                api.post("/replication/policies", body).await,
                400,
                "BAD_REQUEST",
            )
            .await
        }
    };
    let both =
        "either src_registry or dest_registry should be empty and the other one shouldn't be empty";
    assert_eq!(
        refused(json!({"name": "x", "src_registry": {"id": hub}, "dest_registry": {"id": other}}))
            .await,
        both
    );
    assert_eq!(refused(json!({"name": "x"})).await, both);
    assert_eq!(
        refused(json!({"name": "x", "src_registry": {"id": 0}, "dest_registry": {"id": 0}})).await,
        both
    );
    assert_eq!(
        refused(json!({"dest_registry": {"id": hub}})).await,
        "empty name"
    );
    let mut bad_trigger = push_body("x", hub);
    bad_trigger["trigger"] = json!({"type": "immediately"});
    assert_eq!(refused(bad_trigger).await, "invalid trigger type");
    let mut no_cron = push_body("x", hub);
    no_cron["trigger"] = json!({"type": "scheduled"});
    assert_eq!(
        refused(no_cron).await,
        "the cron string cannot be empty when the trigger type is scheduled"
    );
    let mut bad_cron = push_body("x", hub);
    bad_cron["trigger"] = json!({"type": "scheduled", "trigger_settings": {"cron": "61 * * * *"}});
    assert!(refused(bad_cron)
        .await
        .starts_with("invalid cron string for scheduled trigger: 61 * * * *"));
    let with_filter = |filter: Value| {
        let mut body = push_body("x", hub);
        body["filters"] = json!([filter]);
        body
    };
    assert_eq!(
        refused(with_filter(json!({"type": "repository", "value": "a"}))).await,
        "invalid filter type"
    );
    assert_eq!(
        refused(with_filter(
            json!({"type": "tag", "value": "v*", "decoration": "include"})
        ))
        .await,
        "invalid filter decoration, :include"
    );
    assert_eq!(
        refused(with_filter(
            json!({"type": "name", "value": "a/**", "decoration": "matches"})
        ))
        .await,
        "only tag and label filter support decoration"
    );
    assert_eq!(
        refused(with_filter(json!({"type": "name", "value": 7}))).await,
        "the type of filter value isn't string"
    );
    assert_eq!(
        refused(with_filter(json!({"type": "resource", "value": "chart"}))).await,
        "invalid resource filter: chart"
    );
    assert!(refused(with_filter(json!({"type": "tag", "value": "v[1"})))
        .await
        .contains("syntax error"));
    assert!(
        refused(with_filter(json!({"type": "label", "value": ["prod"]})))
            .await
            .contains("no artifact labels")
    );
    let mut bad_namespace = push_body("x", hub);
    bad_namespace["dest_namespace"] = json!("Mirror");
    assert_eq!(
        refused(bad_namespace).await,
        "invalid destination namespace: Mirror"
    );
    let mut bad_count = push_body("x", hub);
    bad_count["dest_namespace_replace_count"] = json!(200);
    assert!(refused(bad_count).await.contains("between -128 and 127"));
    let message = assert_api_error(
        api.post("/replication/policies", json!("not a policy"))
            .await,
        400,
        "BAD_REQUEST",
    )
    .await;
    assert!(message.contains("invalid JSON body"), "{message}");

    // Harbor answers an unknown registry with 404.
    let message = assert_api_error(
        api.post("/replication/policies", push_body("x", hub + 100))
            .await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_eq!(message, format!("registry {} not found", hub + 100));
    let message = assert_api_error(
        api.post("/replication/policies", push_body("taken", other))
            .await,
        409,
        "CONFLICT",
    )
    .await;
    assert_eq!(message, "replication policy taken already exists");

    // Updates are checked the same way; a missing policy is a 404 whatever the body.
    let id = create_policy(&api, push_body("second", hub)).await;
    assert_api_error(
        api.put(
            &format!("/replication/policies/{id}"),
            push_body("taken", hub),
        )
        .await,
        409,
        "CONFLICT",
    )
    .await;
    assert_api_error(
        api.put(
            &format!("/replication/policies/{id}"),
            json!({"name": "second"}),
        )
        .await,
        400,
        "BAD_REQUEST",
    )
    .await;
    assert_api_error(
        api.put("/replication/policies/999999", json!({})).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_api_error(
        api.delete("/replication/policies/999999").await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_api_error(
        api.get("/replication/policies/abc").await,
        422,
        "UNPROCESSABLE_ENTITY",
    )
    .await;
    // Nothing refused was stored or audited.
    assert_eq!(app.count_rows("replication_policies").await, 2);
    assert_eq!(
        app.audit_count("create", "replication_policy", "x").await,
        0
    );
    assert_eq!(app.count_rows("schedules").await, 0);
}

#[tokio::test]
async fn the_cron_schedule_follows_the_policy() {
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();
    let hub = create_registry(&api, "hub").await;
    let scheduled = |cron: &str, enabled: bool| {
        json!({
            "name": "nightly",
            "dest_registry": {"id": hub},
            "enabled": enabled,
            "trigger": {"type": "scheduled", "trigger_settings": {"cron": cron}},
        })
    };
    let id = create_policy(&api, scheduled("0 0 3 * * *", true)).await;
    let (schedule_id, cron, payload, enabled) = schedule_of(&app, id)
        .await
        .expect("an enabled scheduled policy has a schedule");
    assert_eq!(cron, "0 0 3 * * *");
    assert_eq!(payload, json!({"policy_id": id}));
    assert!(enabled);
    // Harbor's schedule listing shows it as a replication schedule of the policy.
    let (items, _, _) = api.get_list("/schedules").await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["vendor_type"], "REPLICATE");
    assert_eq!(items[0]["vendor_id"], id);

    let put = |body: Value| {
        let api = api.clone();
        async move {
            assert_empty_ok(
                api.put(&format!("/replication/policies/{id}"), body).await,
                "update policy",
            )
            .await
        }
    };
    // A new cron moves the same schedule.
    put(scheduled("0 30 4 * * *", true)).await;
    let (moved_id, cron, _, _) = schedule_of(&app, id).await.unwrap();
    assert_eq!((moved_id, cron.as_str()), (schedule_id, "0 30 4 * * *"));
    // Disabled: no schedule; enabled again: one.
    put(scheduled("0 30 4 * * *", false)).await;
    assert!(schedule_of(&app, id).await.is_none());
    put(scheduled("0 0 5 * * *", true)).await;
    assert_eq!(schedule_of(&app, id).await.unwrap().1, "0 0 5 * * *");
    // Manual or event-based: none.
    put(
        json!({"name": "nightly", "dest_registry": {"id": hub}, "enabled": true,
               "trigger": {"type": "event_based"}}),
    )
    .await;
    assert!(schedule_of(&app, id).await.is_none());
    // A refused update leaves the policy and its (absent) schedule as they were.
    assert_api_error(
        api.put(
            &format!("/replication/policies/{id}"),
            json!({"name": "nightly", "dest_registry": {"id": hub + 100}, "enabled": true,
                   "trigger": {"type": "scheduled", "trigger_settings": {"cron": "0 0 6 * * *"}}}),
        )
        .await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert!(schedule_of(&app, id).await.is_none());
    assert_eq!(get_policy(&api, id).await["trigger"]["type"], "event_based");
    // A refused create leaves no schedule behind.
    assert_api_error(
        api.post("/replication/policies", scheduled("0 0 3 * * *", true))
            .await,
        409,
        "CONFLICT",
    )
    .await;
    assert_eq!(app.count_rows("schedules").await, 0);
    // Deleting the policy deletes its schedule.
    put(scheduled("0 0 5 * * *", true)).await;
    assert!(schedule_of(&app, id).await.is_some());
    assert_empty_ok(
        api.delete(&format!("/replication/policies/{id}")).await,
        "delete policy",
    )
    .await;
    assert_eq!(app.count_rows("schedules").await, 0);
}

#[tokio::test]
async fn a_policy_with_a_running_execution_is_not_deleted() {
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();
    let hub = create_registry(&api, "hub").await;
    let id = create_policy(&api, push_body("busy", hub)).await;
    let execution: i64 = sqlx::query_scalar(
        "INSERT INTO executions (kind, vendor_id, trigger, status)
         VALUES ('replicate', $1, 'manual', 'running') RETURNING id",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let message = assert_api_error(
        api.delete(&format!("/replication/policies/{id}")).await,
        412,
        "PRECONDITION",
    )
    .await;
    assert!(
        message.contains(&format!("execution {execution}")),
        "{message}"
    );
    assert_eq!(get_policy(&api, id).await["name"], "busy");
    assert_eq!(
        app.audit_count("delete", "replication_policy", "busy")
            .await,
        0
    );

    // Finished, it goes with the policy, as in Harbor.
    sqlx::query("UPDATE executions SET status = 'succeeded', end_time = now() WHERE id = $1")
        .bind(execution)
        .execute(&app.db)
        .await
        .unwrap();
    assert_empty_ok(
        api.delete(&format!("/replication/policies/{id}")).await,
        "delete a policy whose executions finished",
    )
    .await;
    assert_eq!(app.count_rows("executions").await, 0);
}

#[tokio::test]
async fn lists_filter_sort_and_page() {
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();
    let hub = create_registry(&api, "hub").await;
    let upstream = create_registry(&api, "upstream").await;
    for name in ["alpha", "beta", "gamma"] {
        create_policy(&api, push_body(name, hub)).await;
    }
    create_policy(
        &api,
        json!({"name": "pull-in", "src_registry": {"id": upstream}}),
    )
    .await;
    let names = |items: &[Value]| -> Vec<String> {
        items
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect()
    };
    // Newest first, as Harbor lists them.
    let (items, total, _) = api.get_list("/replication/policies").await;
    assert_eq!(total, Some(4));
    assert_eq!(names(&items), ["pull-in", "gamma", "beta", "alpha"]);
    let (items, total, link) = api
        .get_list("/replication/policies?sort=name&page=1&page_size=2")
        .await;
    assert_eq!(total, Some(4));
    assert_eq!(names(&items), ["alpha", "beta"]);
    let link = link.expect("a Link header");
    assert!(
        link.contains("/api/v2.0/replication/policies?sort=name&page=2&page_size=2"),
        "{link}"
    );
    let (items, _, _) = api
        .get_list("/replication/policies?sort=-name&page=2&page_size=2")
        .await;
    assert_eq!(names(&items), ["beta", "alpha"]);
    let (items, total, _) = api.get_list("/replication/policies?q=name%3D~amm").await;
    assert_eq!((names(&items), total), (vec!["gamma".to_owned()], Some(1)));
    let (items, _, _) = api.get_list("/replication/policies?q=name%3Dbeta").await;
    assert_eq!(names(&items), ["beta"]);
    // The deprecated `name` parameter is a fuzzy match.
    let (items, _, _) = api.get_list("/replication/policies?name=ull").await;
    assert_eq!(names(&items), ["pull-in"]);
    // 0 is this registry: pull policies have it as destination.
    let (items, _, _) = api
        .get_list("/replication/policies?q=dest_registry_id%3D0")
        .await;
    assert_eq!(names(&items), ["pull-in"]);
    let (items, _, _) = api
        .get_list(&format!(
            "/replication/policies?q=dest_registry_id%3D{hub}&sort=name"
        ))
        .await;
    assert_eq!(names(&items), ["alpha", "beta", "gamma"]);
    assert_api_error(
        api.get("/replication/policies?q=color%3Dred").await,
        400,
        "BAD_REQUEST",
    )
    .await;
    assert_api_error(
        api.get("/replication/policies?sort=speed").await,
        400,
        "BAD_REQUEST",
    )
    .await;
    assert_api_error(
        api.get("/replication/policies?q=src_registry_id%3Done")
            .await,
        400,
        "BAD_REQUEST",
    )
    .await;
    assert_api_error(
        api.get("/replication/policies?page_size=101").await,
        422,
        "UNPROCESSABLE_ENTITY",
    )
    .await;
}

#[tokio::test]
async fn only_system_administrators_manage_policies() {
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();
    let hub = create_registry(&api, "hub").await;
    let id = create_policy(&api, push_body("guarded", hub)).await;
    app.insert_user("dev", "Dev-Passw0rd").await;
    let dev = app.api_as("dev", "Dev-Passw0rd");
    let anonymous = app.anonymous_api();
    let path = format!("/replication/policies/{id}");
    for (client, status, code) in [(&dev, 403, "FORBIDDEN"), (&anonymous, 401, "UNAUTHORIZED")] {
        assert_api_error(client.get("/replication/policies").await, status, code).await;
        assert_api_error(client.get(&path).await, status, code).await;
        assert_api_error(
            client
                .post("/replication/policies", push_body("mine", hub))
                .await,
            status,
            code,
        )
        .await;
        assert_api_error(
            client.put(&path, push_body("mine", hub)).await,
            status,
            code,
        )
        .await;
        assert_api_error(client.delete(&path).await, status, code).await;
    }
    assert_eq!(get_policy(&api, id).await["name"], "guarded");
    assert_eq!(app.count_rows("replication_policies").await, 1);
}
