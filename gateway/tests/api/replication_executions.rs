//! Harbor's replication executions (`/replication/executions`): views of the generic
//! executions of kind `replicate`. No worker runs here: tests play the worker's part
//! through `berth_events::jobs` and SQL on the test's own pool. The policies' remote
//! registries are URLs nothing listens on: nothing contacts them.

use berth_events::jobs::{tasks, NewTask, TaskStatus};
use berth_events::{Envelope, Event};
use serde_json::{json, Value};

use crate::helpers::{
    assert_api_error, assert_empty_ok, expect_status, ids, location_path, ApiClient, TestApp,
};

const CLOSED_URL: &str = "http://127.0.0.1:1";

/// The id at the end of a 201's Location under `prefix`.
fn created_id(response: &reqwest::Response, prefix: &str) -> i64 {
    let location = location_path(response).expect("Location on 201");
    location
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("Location {location}"))
        .parse()
        .unwrap()
}

/// A registry and an enabled push policy to it; returns the policy id.
async fn create_policy(api: &ApiClient, name: &str, enabled: bool) -> i64 {
    let registry =
        json!({"name": format!("{name}-target"), "type": "docker-registry", "url": CLOSED_URL});
    let response = expect_status(api.post("/registries", registry).await, 201, "registry").await;
    let registry_id = created_id(&response, "/api/v2.0/registries/");
    let policy = json!({"name": name, "dest_registry": {"id": registry_id}, "enabled": enabled,
                        "trigger": {"type": "manual"}});
    let response = expect_status(
        api.post("/replication/policies", policy).await,
        201,
        "policy",
    )
    .await;
    created_id(&response, "/api/v2.0/replication/policies/")
}

/// Starts a replication of `policy_id`; asserts 201, an empty body and the Location.
async fn start(api: &ApiClient, policy_id: i64) -> i64 {
    let response = expect_status(
        api.post("/replication/executions", json!({"policy_id": policy_id}))
            .await,
        201,
        "start replication",
    )
    .await;
    let id = created_id(&response, "/api/v2.0/replication/executions/");
    assert!(
        response.bytes().await.unwrap().is_empty(),
        "201 with a body"
    );
    id
}

/// Stops with no body at all, as harborapi's `stop_replication` does.
async fn stop(api: &ApiClient, id: i64) -> reqwest::Response {
    api.request(
        reqwest::Method::PUT,
        &format!("/replication/executions/{id}"),
    )
    .send()
    .await
    .unwrap()
}

#[tokio::test]
async fn a_started_replication_has_one_planning_task_sent_through_the_outbox() {
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();
    let policy = create_policy(&api, "to-hub", true).await;
    let id = start(&api, policy).await;

    let execution = api.get_json(&format!("/replication/executions/{id}")).await;
    assert_eq!(execution["id"], id);
    assert_eq!(execution["policy_id"], policy);
    // Pending (planning not started) shows as Harbor's InProgress.
    assert_eq!(execution["status"], "InProgress");
    assert_eq!(execution["berth_status"], "pending");
    assert_eq!(execution["status_text"], "");
    assert_eq!(execution["trigger"], "manual");
    assert!(execution["start_time"].as_str().unwrap().ends_with('Z'));
    assert!(execution.get("end_time").is_none(), "{execution}");
    for (key, n) in [
        ("total", 1),
        ("in_progress", 1),
        ("failed", 0),
        ("succeed", 0),
        ("stopped", 0),
    ] {
        assert_eq!(execution[key], n, "{key} in {execution}");
    }

    // The generic execution behind it.
    let generic: (String, i64, String, Value, String) = sqlx::query_as(
        "SELECT kind, vendor_id, trigger, extra_attrs, created_by FROM executions WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        generic,
        (
            "replicate".to_owned(),
            policy,
            "manual".to_owned(),
            json!({"policy_id": policy, "operator": "admin"}),
            "admin".to_owned()
        )
    );
    let task: (i64, String, String, String, Value) = sqlx::query_as(
        "SELECT id, kind, natural_key, destination, payload FROM tasks WHERE execution_id = $1",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(task.1, "replicate");
    assert_eq!(task.2, "plan");
    assert_eq!(task.3, "default");
    assert_eq!(task.4, json!({"policy_id": policy, "plan": true}));

    // Its job.requested message is in the outbox, committed with the execution.
    let rows: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT subject, payload FROM outbox ORDER BY id")
            .fetch_all(&app.db)
            .await
            .unwrap();
    let requested: Vec<(String, i64, i64)> = rows
        .iter()
        .filter_map(
            |(subject, payload)| match Envelope::parse(payload).unwrap().event().unwrap() {
                Event::JobRequested { job } => {
                    Some((subject.clone(), job.execution_id, job.task_id))
                }
                _ => None,
            },
        )
        .collect();
    assert_eq!(requested.len(), 1, "{requested:?}");
    assert_eq!((requested[0].1, requested[0].2), (id, task.0));
    assert!(requested[0].0.contains("replicate"), "{requested:?}");
    assert_eq!(
        app.audit_count("create", "execution", &format!("execution/{id}"))
            .await,
        1
    );

    // The planning task as a Harbor task.
    let (items, total, _) = api
        .get_list(&format!("/replication/executions/{id}/tasks"))
        .await;
    assert_eq!(total, Some(1));
    let plan = &items[0];
    assert_eq!(plan["id"], task.0);
    assert_eq!(plan["execution_id"], id);
    assert_eq!(plan["status"], "Pending");
    assert_eq!(plan["operation"], "plan");
    assert_eq!(plan["job_id"], task.0.to_string());
    assert_eq!(plan["resource_type"], "");
    assert_eq!(plan["attempts"], 0);
    assert_eq!(plan["bytes"], 0);
}

#[tokio::test]
async fn starting_refuses_unknown_and_disabled_policies() {
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();
    let disabled = create_policy(&api, "paused", false).await;
    let response = api
        .post(
            "/replication/executions",
            json!({"policy_id": disabled + 100}),
        )
        .await;
    assert_api_error(response, 404, "NOT_FOUND").await;
    let response = api
        .post("/replication/executions", json!({"policy_id": disabled}))
        .await;
    let message = assert_api_error(response, 412, "PRECONDITION").await;
    assert!(message.contains("disabled"), "{message}");
    let response = api.post("/replication/executions", json!({})).await;
    assert_api_error(response, 400, "BAD_REQUEST").await;
    assert_eq!(app.count_rows("executions").await, 0);
    assert_eq!(app.count_rows("tasks").await, 0);
}

#[tokio::test]
async fn executions_are_listed_filtered_and_stopped() {
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();
    let first = create_policy(&api, "first", true).await;
    let second = create_policy(&api, "second", true).await;
    let a = start(&api, first).await;
    let b = start(&api, second).await;
    let c = start(&api, first).await;
    // An execution of another kind is not a replication.
    let response = api
        .post("/executions", json!({"kind": "echo", "tasks": [{}]}))
        .await;
    let echo = created_id(
        &expect_status(response, 201, "echo").await,
        "/api/v2.0/executions/",
    );

    let (items, total, _) = api.get_list("/replication/executions").await;
    assert_eq!(ids(&items), [c, b, a], "newest first");
    assert_eq!(total, Some(3));
    let (items, _, _) = api
        .get_list(&format!("/replication/executions?policy_id={first}"))
        .await;
    assert_eq!(ids(&items), [c, a]);
    let (items, _, _) = api
        .get_list(&format!("/replication/executions?q=policy_id%3D{second}"))
        .await;
    assert_eq!(ids(&items), [b]);
    let (items, _, _) = api
        .get_list("/replication/executions?sort=id&page_size=2&page=1")
        .await;
    assert_eq!(ids(&items), [a, b]);

    // Stop one: its pending planning task is skipped and it settles Stopped.
    assert_empty_ok(stop(&api, a).await, "stop").await;
    let stopped = api.get_json(&format!("/replication/executions/{a}")).await;
    assert_eq!(stopped["status"], "Stopped", "{stopped}");
    assert_eq!(stopped["berth_status"], "cancelled");
    assert_eq!(stopped["cancel_requested"], true);
    assert_eq!(stopped["stopped"], 1);
    assert_eq!(stopped["in_progress"], 0);
    assert!(stopped["end_time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        app.audit_count("stop", "execution", &format!("execution/{a}"))
            .await,
        1
    );
    // Stopping it again changes nothing and answers 200, as Harbor does.
    assert_empty_ok(stop(&api, a).await, "second stop").await;
    assert_eq!(
        app.audit_count("stop", "execution", &format!("execution/{a}"))
            .await,
        1
    );
    let (tasks_of_a, _, _) = api
        .get_list(&format!("/replication/executions/{a}/tasks"))
        .await;
    assert_eq!(tasks_of_a[0]["status"], "Stopped");
    assert_eq!(tasks_of_a[0]["berth_status"], "skipped");

    for (query, expected) in [
        ("status=Stopped", vec![a]),
        ("status=InProgress", vec![c, b]),
        ("status=cancelled", vec![a]),
        ("status=Failed", vec![]),
        ("trigger=manual", vec![c, b, a]),
        ("trigger=scheduled", vec![]),
        ("trigger=event_based", vec![]),
        (&format!("policy_id={first}&status=InProgress"), vec![c]),
        ("q=status%3D%7BStopped%20Succeed%7D", vec![a]),
    ] {
        let (items, _, _) = api
            .get_list(&format!("/replication/executions?{query}"))
            .await;
        assert_eq!(ids(&items), expected, "{query}");
    }
    for query in [
        "status=Done",
        "trigger=cron",
        "q=vendor_id%3D1",
        "status=Failed&q=status%3DStopped",
        "sort=name",
    ] {
        let response = api.get(&format!("/replication/executions?{query}")).await;
        assert_api_error(response, 400, "BAD_REQUEST").await;
    }
    let response = api.get("/replication/executions?policy_id=one").await;
    assert_api_error(response, 422, "UNPROCESSABLE_ENTITY").await;

    // The echo execution is invisible here, and 404 on every path.
    for path in [
        format!("/replication/executions/{echo}"),
        format!("/replication/executions/{echo}/tasks"),
    ] {
        assert_api_error(api.get(&path).await, 404, "NOT_FOUND").await;
    }
    let echo_task: i64 = sqlx::query_scalar("SELECT id FROM tasks WHERE execution_id = $1")
        .bind(echo)
        .fetch_one(&app.db)
        .await
        .unwrap();
    let response = api
        .get(&format!(
            "/replication/executions/{echo}/tasks/{echo_task}/log"
        ))
        .await;
    assert_api_error(response, 404, "NOT_FOUND").await;
    assert_api_error(stop(&api, echo).await, 404, "NOT_FOUND").await;
    let still: String = sqlx::query_scalar("SELECT status FROM executions WHERE id = $1")
        .bind(echo)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(still, "pending", "a 404 stop must not stop it");
    assert_api_error(
        api.get("/replication/executions/999999").await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_api_error(stop(&api, 999_999).await, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn tasks_show_their_copy_fields_progress_and_logs() {
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();
    let policy = create_policy(&api, "copies", true).await;
    let id = start(&api, policy).await;
    let other = start(&api, policy).await;

    // Play the worker: plan two copies, finish the plan and one copy, fail the other.
    let mut tx = app.db.begin().await.unwrap();
    let mut copies = Vec::new();
    for (key, resource_type, src) in [
        ("team/app@sha256:aa→1", "image", "team/app:1.0"),
        ("team/chart@sha256:bb→1", "artifact", "team/chart:2.0"),
    ] {
        let task = NewTask {
            natural_key: key,
            destination: "registry-1",
            payload: json!({
                "resource_type": resource_type, "source_resource": src,
                "destination_resource": format!("mirror/{src}"), "operation": "copy",
                "blobs_skipped": 2, "blobs_mounted": 1, "blobs_uploaded": 3,
            }),
        };
        let task_id = tasks::enqueue(&mut tx, id, "replicate", &task, "/test")
            .await
            .unwrap()
            .unwrap();
        copies.push(task_id);
    }
    tx.commit().await.unwrap();
    let plan: i64 =
        sqlx::query_scalar("SELECT id FROM tasks WHERE execution_id = $1 AND natural_key = 'plan'")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    let worker = uuid::Uuid::new_v4();
    for task_id in [plan, copies[0], copies[1]] {
        assert!(matches!(
            tasks::begin(&app.db, task_id, worker).await.unwrap(),
            tasks::Begin::Run(_)
        ));
    }
    tasks::append_log(&app.db, copies[0], "copied 3 blobs\n")
        .await
        .unwrap();
    tasks::finish(&app.db, plan, TaskStatus::Succeeded, "planned 2 copies", 0)
        .await
        .unwrap();
    tasks::finish(&app.db, copies[0], TaskStatus::Succeeded, "", 4096)
        .await
        .unwrap();

    let running = api.get_json(&format!("/replication/executions/{id}")).await;
    assert_eq!(running["status"], "InProgress");
    assert_eq!(
        (
            &running["total"],
            &running["succeed"],
            &running["in_progress"]
        ),
        (&json!(3), &json!(2), &json!(1))
    );
    tasks::finish(
        &app.db,
        copies[1],
        TaskStatus::Failed,
        "401 from the destination",
        0,
    )
    .await
    .unwrap();
    let failed = api.get_json(&format!("/replication/executions/{id}")).await;
    assert_eq!(failed["status"], "Failed", "{failed}");
    assert_eq!(failed["failed"], 1);
    assert!(failed["end_time"].is_string());

    let (items, total, _) = api
        .get_list(&format!("/replication/executions/{id}/tasks"))
        .await;
    assert_eq!(total, Some(3));
    assert_eq!(ids(&items), [plan, copies[0], copies[1]]);
    assert_eq!(items[0]["operation"], "plan");
    assert_eq!(items[0]["status"], "Succeed");
    let copy = &items[1];
    assert_eq!(copy["status"], "Succeed");
    assert_eq!(copy["operation"], "copy");
    assert_eq!(copy["resource_type"], "image");
    assert_eq!(copy["src_resource"], "team/app:1.0");
    assert_eq!(copy["dst_resource"], "mirror/team/app:1.0");
    assert_eq!(copy["bytes"], 4096);
    assert_eq!(
        (
            &copy["blobs_skipped"],
            &copy["blobs_mounted"],
            &copy["blobs_uploaded"]
        ),
        (&json!(2), &json!(1), &json!(3))
    );
    assert_eq!(copy["attempts"], 1);
    assert!(copy["start_time"].as_str().unwrap().ends_with('Z'));
    assert!(copy["end_time"].as_str().unwrap().ends_with('Z'));
    assert!(copy["duration_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(items[2]["status"], "Failed");
    assert_eq!(items[2]["status_message"], "401 from the destination");

    for (query, expected) in [
        ("status=Failed", vec![copies[1]]),
        ("status=Succeed", vec![plan, copies[0]]),
        ("status=InProgress", vec![]),
        ("resource_type=artifact", vec![copies[1]]),
        ("resource_type=image&status=Succeed", vec![copies[0]]),
        ("sort=-id&page_size=1&page=2", vec![copies[0]]),
    ] {
        let (items, _, _) = api
            .get_list(&format!("/replication/executions/{id}/tasks?{query}"))
            .await;
        assert_eq!(ids(&items), expected, "{query}");
    }
    let response = api
        .get(&format!("/replication/executions/{id}/tasks?status=Done"))
        .await;
    assert_api_error(response, 400, "BAD_REQUEST").await;

    let response = expect_status(
        api.get(&format!(
            "/replication/executions/{id}/tasks/{}/log",
            copies[0]
        ))
        .await,
        200,
        "log",
    )
    .await;
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(response.text().await.unwrap(), "copied 3 blobs\n");
    // A task of another execution is not this one's.
    let response = api
        .get(&format!(
            "/replication/executions/{other}/tasks/{}/log",
            copies[0]
        ))
        .await;
    assert_api_error(response, 404, "NOT_FOUND").await;
    let response = api
        .get(&format!("/replication/executions/{id}/tasks/999999/log"))
        .await;
    assert_api_error(response, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn replication_executions_are_for_system_administrators() {
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();
    let policy = create_policy(&api, "guarded", true).await;
    let id = start(&api, policy).await;
    let task: i64 = sqlx::query_scalar("SELECT id FROM tasks WHERE execution_id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    app.insert_user("dev", "Dev-Passw0rd").await;
    let dev = app.api_as("dev", "Dev-Passw0rd");
    let anonymous = app.anonymous_api();
    for (client, status, code) in [(&dev, 403, "FORBIDDEN"), (&anonymous, 401, "UNAUTHORIZED")] {
        let response = client
            .post("/replication/executions", json!({"policy_id": policy}))
            .await;
        assert_api_error(response, status, code).await;
        for path in [
            "/replication/executions".to_owned(),
            format!("/replication/executions/{id}"),
            format!("/replication/executions/{id}/tasks"),
            format!("/replication/executions/{id}/tasks/{task}/log"),
        ] {
            assert_api_error(client.get(&path).await, status, code).await;
        }
        assert_api_error(stop(client, id).await, status, code).await;
    }
    // Nothing was started or stopped by them.
    assert_eq!(app.count_rows("executions").await, 1);
    let execution = api.get_json(&format!("/replication/executions/{id}")).await;
    assert_eq!(execution["cancel_requested"], false);
}

#[tokio::test]
async fn the_openapi_document_lists_the_replication_executions_api() {
    let app = TestApp::spawn().await;
    let document = app.anonymous_api().get_json("/openapi.json").await;
    let paths = &document["paths"];
    for (path, method, operation) in [
        (
            "/api/v2.0/replication/executions",
            "get",
            "listReplicationExecutions",
        ),
        (
            "/api/v2.0/replication/executions",
            "post",
            "startReplication",
        ),
        (
            "/api/v2.0/replication/executions/{id}",
            "get",
            "getReplicationExecution",
        ),
        (
            "/api/v2.0/replication/executions/{id}",
            "put",
            "stopReplication",
        ),
        (
            "/api/v2.0/replication/executions/{id}/tasks",
            "get",
            "listReplicationTasks",
        ),
        (
            "/api/v2.0/replication/executions/{id}/tasks/{task_id}/log",
            "get",
            "getReplicationLog",
        ),
    ] {
        assert_eq!(
            paths[path][method]["operationId"], operation,
            "{method} {path}"
        );
    }
    let schemas = &document["components"]["schemas"];
    for schema in [
        "ReplicationExecution",
        "ReplicationTask",
        "StartReplicationExecution",
    ] {
        assert!(
            schemas[schema].is_object(),
            "{schema} is not in the document"
        );
    }
}
