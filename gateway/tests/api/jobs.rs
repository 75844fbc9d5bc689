//! The jobs API: `/executions` (Berth's generic resource in Harbor's shapes) and
//! Harbor's job-service dashboard (`/jobservice/...`). No worker runs here: tests play
//! the worker's part through `berth_events::jobs` on the test's own pool, and the
//! gateway's NATS URL is a closed port unless a test starts its own nats-server.

use std::time::{Duration, Instant};

use berth_events::control::Control;
use berth_events::jobs::{executions, pool, tasks, NewExecution, TaskStatus, Trigger};
use berth_events::{Envelope, Event};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::helpers::{
    assert_api_error, assert_empty_ok, expect_status, ids, ApiClient, NatsServer, TestApp,
};

/// Starts an `echo` execution with `payloads` as the admin; returns its id.
async fn start(api: &ApiClient, payloads: Vec<Value>) -> i64 {
    let response = api
        .post("/executions", json!({"kind": "echo", "tasks": payloads}))
        .await;
    let response = expect_status(response, 201, "POST /executions").await;
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let id = location
        .strip_prefix("/api/v2.0/executions/")
        .unwrap_or_else(|| panic!("Location {location}"))
        .parse()
        .unwrap();
    assert!(response.bytes().await.unwrap().is_empty());
    id
}

/// The ids of an execution's tasks in creation order.
async fn task_ids(app: &TestApp, execution_id: i64) -> Vec<i64> {
    sqlx::query_scalar("SELECT id FROM tasks WHERE execution_id = $1 ORDER BY id")
        .bind(execution_id)
        .fetch_all(&app.db)
        .await
        .unwrap()
}

/// The events in the outbox, oldest first.
async fn outbox_events(app: &TestApp) -> Vec<(String, Event)> {
    let rows: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT subject, payload FROM outbox ORDER BY id")
            .fetch_all(&app.db)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(subject, payload)| {
            let envelope = Envelope::parse(&payload).unwrap();
            assert_eq!(envelope.source, "/berth/gateway");
            (subject, envelope.event().unwrap())
        })
        .collect()
}

/// The task ids of the `job.requested` events in the outbox, in order.
async fn requested_tasks(app: &TestApp) -> Vec<i64> {
    outbox_events(app)
        .await
        .into_iter()
        .filter_map(|(_, event)| match event {
            Event::JobRequested { job } => Some(job.task_id),
            _ => None,
        })
        .collect()
}

async fn put_raw(api: &ApiClient, path: &str, body: &'static str) -> reqwest::Response {
    api.request(reqwest::Method::PUT, path)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The queue `job_type` in a `GET /jobservice/queues` answer.
fn queue<'a>(queues: &'a [Value], job_type: &str) -> &'a Value {
    queues
        .iter()
        .find(|q| q["job_type"] == job_type)
        .unwrap_or_else(|| panic!("no queue {job_type} in {queues:?}"))
}

#[tokio::test]
async fn a_started_execution_reads_in_harbors_shapes() {
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();
    let id = start(&api, vec![json!({"n": 0}), json!({"n": 1}), json!("two")]).await;

    let execution = api.get_json(&format!("/executions/{id}")).await;
    assert_eq!(execution["id"], id);
    assert_eq!(execution["vendor_type"], "ECHO");
    assert_eq!(execution["vendor_id"], 0);
    assert_eq!(execution["status"], "Pending");
    assert_eq!(execution["berth_status"], "pending");
    assert_eq!(execution["kind"], "echo");
    assert_eq!(execution["trigger"], "MANUAL");
    assert_eq!(execution["status_message"], "");
    assert_eq!(execution["extra_attrs"], json!({}));
    assert_eq!(execution["cancel_requested"], false);
    assert!(execution["start_time"].as_str().unwrap().ends_with('Z'));
    assert!(execution.get("end_time").is_none(), "{execution}");
    assert_eq!(
        execution["metrics"],
        json!({
            "task_count": 3, "success_task_count": 0, "error_task_count": 0,
            "pending_task_count": 3, "running_task_count": 0, "scheduled_task_count": 0,
            "stopped_task_count": 0,
        })
    );

    // Each task went out through the outbox, in the execution's transaction.
    let tasks_in_db = task_ids(&app, id).await;
    assert_eq!(tasks_in_db.len(), 3);
    let events = outbox_events(&app).await;
    assert_eq!(events.len(), 3, "{events:?}");
    for ((subject, event), task_id) in events.iter().zip(&tasks_in_db) {
        assert_eq!(subject, "berth.jobs.echo.default");
        match event {
            Event::JobRequested { job } => {
                assert_eq!(job.execution_id, id);
                assert_eq!(job.task_id, *task_id);
                assert_eq!(job.kind, "echo");
                assert_eq!(job.destination, "default");
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(
        app.audit_count("create", "execution", &format!("execution/{id}"))
            .await,
        1
    );

    let (tasks, total, link) = api.get_list(&format!("/executions/{id}/tasks")).await;
    assert_eq!(total, Some(3));
    assert_eq!(link, None);
    assert_eq!(ids(&tasks), tasks_in_db);
    for (index, task) in tasks.iter().enumerate() {
        assert_eq!(task["execution_id"], id);
        assert_eq!(task["status"], "Pending");
        assert_eq!(task["berth_status"], "pending");
        assert_eq!(task["run_count"], 0);
        assert_eq!(task["kind"], "echo");
        assert_eq!(task["extra_attrs"]["natural_key"], index.to_string());
        assert_eq!(task["extra_attrs"]["destination"], "default");
        assert_eq!(task["extra_attrs"]["bytes"], 0);
        assert!(task["creation_time"].is_string() && task["update_time"].is_string());
        assert!(task.get("start_time").is_none() && task.get("end_time").is_none());
    }
    assert_eq!(tasks[0]["extra_attrs"]["payload"], json!({"n": 0}));
    assert_eq!(tasks[2]["extra_attrs"]["payload"], json!("two"));

    // Paging over tasks.
    let (first, total, link) = api
        .get_list(&format!("/executions/{id}/tasks?page_size=2"))
        .await;
    assert_eq!((ids(&first), total), (tasks_in_db[..2].to_vec(), Some(3)));
    let link = link.expect("a next link");
    assert!(
        link.contains("page=2") && link.ends_with("rel=\"next\""),
        "{link}"
    );
    let (second, _, _) = api
        .get_list(&format!("/executions/{id}/tasks?page=2&page_size=2"))
        .await;
    assert_eq!(ids(&second), tasks_in_db[2..].to_vec());
    let (newest_first, _, _) = api
        .get_list(&format!("/executions/{id}/tasks?sort=-id"))
        .await;
    assert_eq!(
        ids(&newest_first),
        tasks_in_db.iter().rev().copied().collect::<Vec<_>>()
    );

    // A task's log, as the worker wrote it, in both places Harbor serves logs.
    tasks::append_log(&app.db, tasks_in_db[1], "line one\nline two\n")
        .await
        .unwrap();
    for path in [
        format!("/executions/{id}/tasks/{}/log", tasks_in_db[1]),
        format!("/jobservice/jobs/{}/log", tasks_in_db[1]),
    ] {
        let response = expect_status(api.get(&path).await, 200, &path).await;
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        assert_eq!(response.text().await.unwrap(), "line one\nline two\n");
    }
}

#[tokio::test]
async fn execution_lists_filter_sort_and_page() {
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();
    let first = start(&api, vec![json!({})]).await;
    let second = start(&api, vec![json!({}), json!({})]).await;
    let third = start(&api, vec![json!({})]).await;
    // Another kind, started by a schedule (as a worker would), for the filters.
    let mut conn = app.db.acquire().await.unwrap();
    let scheduled = executions::create(
        &mut conn,
        &NewExecution {
            kind: "gc",
            vendor_id: 7,
            trigger: Trigger::Schedule,
            trigger_key: Some("schedule:1:2024-01-01T00:00:00Z"),
            extra_attrs: json!({"dry_run": true}),
            created_by: "scheduler",
        },
    )
    .await
    .unwrap()
    .unwrap();
    drop(conn);

    let (all, total, _) = api.get_list("/executions").await;
    assert_eq!(total, Some(4));
    assert_eq!(
        ids(&all),
        vec![scheduled, third, second, first],
        "newest first"
    );
    let gc = &all[0];
    assert_eq!(gc["vendor_type"], "GC");
    assert_eq!(gc["vendor_id"], 7);
    assert_eq!(gc["trigger"], "SCHEDULE");
    assert_eq!(gc["extra_attrs"], json!({"dry_run": true}));
    assert_eq!(gc["metrics"]["task_count"], 0);
    assert_eq!(all[2]["metrics"]["task_count"], 2);

    let cases: [(&str, Vec<i64>); 9] = [
        ("q=kind%3Decho", vec![third, second, first]),
        ("q=vendor_type%3DGC", vec![scheduled]),
        (
            "q=kind%3D%7Becho%20gc%7D",
            vec![scheduled, third, second, first],
        ),
        ("q=trigger%3DSCHEDULE", vec![scheduled]),
        ("q=trigger%3Dmanual", vec![third, second, first]),
        ("q=vendor_id%3D7", vec![scheduled]),
        ("q=status%3DPending", vec![scheduled, third, second, first]),
        ("q=status%3Dsucceeded", vec![]),
        ("sort=id", vec![first, second, third, scheduled]),
    ];
    for (query, expected) in cases {
        let (items, total, _) = api.get_list(&format!("/executions?{query}")).await;
        assert_eq!(ids(&items), expected, "{query}");
        assert_eq!(total, Some(expected.len() as i64), "{query}");
    }

    let (page, total, link) = api.get_list("/executions?page=2&page_size=3&sort=id").await;
    assert_eq!((ids(&page), total), (vec![scheduled], Some(4)));
    assert!(link.unwrap().contains("rel=\"prev\""));

    for bad in [
        "q=color%3Dred",
        "q=status%3Dexploded",
        "q=trigger%3Dwhenever",
        "q=vendor_id%3Dseven",
        "q=kind",
        "sort=name",
    ] {
        let response = api.get(&format!("/executions?{bad}")).await;
        assert_api_error(response, 400, "BAD_REQUEST").await;
    }
    let response = api.get("/executions?page_size=101").await;
    assert_api_error(response, 422, "UNPROCESSABLE_ENTITY").await;
    let response = api
        .get(&format!("/executions/{second}/tasks?q=status%3Dweird"))
        .await;
    assert_api_error(response, 400, "BAD_REQUEST").await;
    let response = api
        .get(&format!("/executions/{second}/tasks?q=kind%3Decho"))
        .await;
    assert_api_error(response, 400, "BAD_REQUEST").await;
}

#[tokio::test]
async fn stopping_skips_pending_tasks_and_stopping_again_changes_nothing() {
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();
    let id = start(&api, vec![json!(0), json!(1), json!(2)]).await;
    let task = task_ids(&app, id).await;
    // A worker has started the first task.
    let worker = uuid::Uuid::new_v4();
    assert!(matches!(
        tasks::begin(&app.db, task[0], worker).await.unwrap(),
        tasks::Begin::Run(_)
    ));

    // Harbor's stop: PUT without a body.
    let response = api
        .request(reqwest::Method::PUT, &format!("/executions/{id}"))
        .send()
        .await
        .unwrap();
    assert_empty_ok(response, "stop").await;

    let execution = api.get_json(&format!("/executions/{id}")).await;
    assert_eq!(execution["status"], "Running", "{execution}");
    assert_eq!(execution["cancel_requested"], true);
    assert_eq!(execution["metrics"]["running_task_count"], 1);
    assert_eq!(execution["metrics"]["stopped_task_count"], 2);
    let (skipped, _, _) = api
        .get_list(&format!("/executions/{id}/tasks?q=status%3Dskipped"))
        .await;
    assert_eq!(ids(&skipped), task[1..].to_vec());
    assert!(skipped.iter().all(|t| t["status"] == "Stopped"));
    let cancelled: Vec<i64> = outbox_events(&app)
        .await
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::JobCancelled {
                execution_id,
                task_id: None,
                ..
            } => Some(execution_id),
            _ => None,
        })
        .collect();
    assert_eq!(cancelled, vec![id]);
    // A worker that asks whether to go on is told to stop.
    assert_eq!(
        tasks::cancel_requested(&app.db, &[task[0]]).await.unwrap(),
        vec![task[0]]
    );

    // The worker stops its task: the execution has stopped.
    tasks::finish(&app.db, task[0], TaskStatus::Cancelled, "cancelled", 0)
        .await
        .unwrap();
    let execution = api.get_json(&format!("/executions/{id}")).await;
    assert_eq!(execution["status"], "Stopped");
    assert_eq!(execution["berth_status"], "cancelled");
    assert_eq!(execution["metrics"]["stopped_task_count"], 3);
    assert!(execution["end_time"].is_string());
    let (stopped, total, _) = api
        .get_list(&format!("/executions/{id}/tasks?q=status%3DStopped"))
        .await;
    assert_eq!((ids(&stopped), total), (task.clone(), Some(3)));
    let (listed, _, _) = api.get_list("/executions?q=status%3DStopped").await;
    assert_eq!(ids(&listed), vec![id]);

    // Stopping a stopped execution is a no-op that succeeds, as in Harbor.
    let events_before = outbox_events(&app).await.len();
    let response = api
        .put(&format!("/executions/{id}"), json!({"action": "stop"}))
        .await;
    assert_empty_ok(response, "second stop").await;
    assert_eq!(outbox_events(&app).await.len(), events_before);
    assert_eq!(
        api.get_json(&format!("/executions/{id}")).await["status"],
        "Stopped"
    );
    assert_eq!(
        app.audit_count("stop", "execution", &format!("execution/{id}"))
            .await,
        1
    );
}

#[tokio::test]
async fn retry_requeues_the_failed_tasks_of_a_finished_execution() {
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();
    let id = start(&api, vec![json!("fails"), json!("works")]).await;
    let task = task_ids(&app, id).await;
    let worker = uuid::Uuid::new_v4();
    for t in &task {
        tasks::begin(&app.db, *t, worker).await.unwrap();
    }
    let response = api
        .put(&format!("/executions/{id}"), json!({"action": "retry"}))
        .await;
    assert_api_error(response, 409, "CONFLICT").await;

    tasks::finish(&app.db, task[0], TaskStatus::Failed, "boom", 0)
        .await
        .unwrap();
    tasks::finish(&app.db, task[1], TaskStatus::Succeeded, "", 10)
        .await
        .unwrap();
    let execution = api.get_json(&format!("/executions/{id}")).await;
    assert_eq!(execution["status"], "Error");
    assert_eq!(execution["metrics"]["error_task_count"], 1);
    assert_eq!(execution["metrics"]["success_task_count"], 1);
    let (failed, _, _) = api
        .get_list(&format!("/executions/{id}/tasks?q=status%3DError"))
        .await;
    assert_eq!(ids(&failed), vec![task[0]]);
    assert_eq!(failed[0]["status_message"], "boom");
    assert_eq!(failed[0]["run_count"], 1);
    assert!(failed[0]["start_time"].is_string() && failed[0]["end_time"].is_string());
    assert_eq!(requested_tasks(&app).await, task);

    let response = api
        .put(&format!("/executions/{id}"), json!({"action": "retry"}))
        .await;
    assert_empty_ok(response, "retry").await;
    let execution = api.get_json(&format!("/executions/{id}")).await;
    assert_eq!(execution["status"], "Running");
    assert_eq!(execution["metrics"]["pending_task_count"], 1);
    assert_eq!(execution["metrics"]["success_task_count"], 1);
    let retried = api
        .get_json(&format!("/executions/{id}/tasks?q=status%3Dpending"))
        .await;
    assert_eq!(ids(retried.as_array().unwrap()), vec![task[0]]);
    // One new message for the failed task only.
    assert_eq!(requested_tasks(&app).await, vec![task[0], task[1], task[0]]);

    // Running again: no second retry until it has finished.
    let response = api
        .put(&format!("/executions/{id}"), json!({"action": "retry"}))
        .await;
    assert_api_error(response, 409, "CONFLICT").await;
    // Finished without failures: nothing to retry.
    tasks::begin(&app.db, task[0], worker).await.unwrap();
    tasks::finish(&app.db, task[0], TaskStatus::Succeeded, "", 0)
        .await
        .unwrap();
    assert_eq!(
        api.get_json(&format!("/executions/{id}")).await["status"],
        "Success"
    );
    let response = api
        .put(&format!("/executions/{id}"), json!({"action": "retry"}))
        .await;
    assert_api_error(response, 409, "CONFLICT").await;
    assert_eq!(
        app.audit_count("retry", "execution", &format!("execution/{id}"))
            .await,
        1
    );
}

#[tokio::test]
async fn jobs_stop_one_at_a_time() {
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();
    let id = start(&api, vec![json!(0), json!(1)]).await;
    let task = task_ids(&app, id).await;

    let response = api
        .put(
            &format!("/jobservice/jobs/{}", task[0]),
            json!({"action": "stop"}),
        )
        .await;
    assert_empty_ok(response, "stop job").await;
    let tasks = api.get_json(&format!("/executions/{id}/tasks")).await;
    assert_eq!(tasks[0]["berth_status"], "skipped");
    assert_eq!(tasks[1]["berth_status"], "pending");
    assert_eq!(
        api.get_json(&format!("/executions/{id}")).await["status"],
        "Pending"
    );
    let stopped: Vec<Option<i64>> = outbox_events(&app)
        .await
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::JobCancelled { task_id, .. } => Some(task_id),
            _ => None,
        })
        .collect();
    assert_eq!(stopped, vec![Some(task[0])]);

    // Already finished: left as it is.
    let response = api
        .request(
            reqwest::Method::PUT,
            &format!("/jobservice/jobs/{}", task[0]),
        )
        .send()
        .await
        .unwrap();
    assert_empty_ok(response, "stop a stopped job").await;
    assert_eq!(
        app.audit_count("stop", "job", &format!("job/{}", task[0]))
            .await,
        1
    );

    // The last task stopped: the execution has stopped.
    let response = api
        .put(
            &format!("/jobservice/jobs/{}", task[1]),
            json!({"action": "stop"}),
        )
        .await;
    assert_empty_ok(response, "stop the other job").await;
    assert_eq!(
        api.get_json(&format!("/executions/{id}")).await["status"],
        "Stopped"
    );
}

#[tokio::test]
async fn bad_requests_and_missing_things_get_harbors_errors() {
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();
    let id = start(&api, vec![json!(0)]).await;
    let other = start(&api, vec![json!(0)]).await;
    let task = task_ids(&app, id).await[0];

    for path in [
        "/executions/999999".to_owned(),
        "/executions/999999/tasks".to_owned(),
        format!("/executions/{other}/tasks/{task}/log"),
        "/jobservice/jobs/999999/log".to_owned(),
        "/jobservice/jobs/not-a-number/log".to_owned(),
        format!("/jobservice/pools/{}/workers", uuid::Uuid::new_v4()),
        "/jobservice/pools/nope/workers".to_owned(),
    ] {
        assert_api_error(api.get(&path).await, 404, "NOT_FOUND").await;
    }
    for (path, body) in [
        ("/executions/999999", json!({"action": "stop"})),
        ("/executions/999999", json!({"action": "retry"})),
        ("/jobservice/jobs/999999", json!({"action": "stop"})),
        ("/jobservice/jobs/abc", json!({"action": "stop"})),
    ] {
        assert_api_error(api.put(path, body).await, 404, "NOT_FOUND").await;
    }

    let too_many: Vec<Value> = (0..10_001).map(|_| json!({})).collect();
    for body in [
        json!({"kind": "replicate", "tasks": [{}]}),
        json!({"kind": "nope", "tasks": [{}]}),
        json!({"kind": "echo", "tasks": []}),
        json!({"kind": "echo", "tasks": too_many}),
        json!({"kind": "echo", "tasks": [{}], "priority": 1}),
        json!({"kind": "echo"}),
    ] {
        assert_api_error(api.post("/executions", body).await, 400, "BAD_REQUEST").await;
    }
    let executions_before = app.count_rows("executions").await;
    assert_eq!(executions_before, 2, "a refused start writes nothing");

    let execution = format!("/executions/{id}");
    let queue = "/jobservice/queues/echo";
    let job = format!("/jobservice/jobs/{task}");
    for (path, body) in [
        (execution.as_str(), r#"{"action":"explode"}"#),
        (execution.as_str(), r#"{"action":"pause"}"#),
        (execution.as_str(), "{not json"),
        (queue, ""),
        (queue, "{}"),
        (queue, r#"{"action":"retry"}"#),
        ("/jobservice/queues/Not.A.Kind", r#"{"action":"pause"}"#),
        (job.as_str(), r#"{"action":"pause"}"#),
    ] {
        let response = put_raw(&api, path, body).await;
        assert_api_error(response, 400, "BAD_REQUEST").await;
    }
    // Nothing was stopped or paused by the refused requests.
    assert_eq!(api.get_json(&execution).await["status"], "Pending");
    assert_eq!(app.count_rows("job_queues").await, 0);
}

#[tokio::test]
async fn only_system_administrators_reach_the_jobs_api() {
    let app = TestApp::spawn_secure().await;
    let id = start(&app.admin_api(), vec![json!(0)]).await;
    let task = task_ids(&app, id).await[0];
    app.insert_user("dev", "Dev-Passw0rd").await;
    let gets = [
        "/executions".to_owned(),
        format!("/executions/{id}"),
        format!("/executions/{id}/tasks"),
        format!("/executions/{id}/tasks/{task}/log"),
        "/jobservice/queues".to_owned(),
        "/jobservice/pools".to_owned(),
        "/jobservice/pools/all/workers".to_owned(),
        format!("/jobservice/jobs/{task}/log"),
    ];
    let puts = [
        format!("/executions/{id}"),
        "/jobservice/queues/echo".to_owned(),
        format!("/jobservice/jobs/{task}"),
    ];
    for (client, status, code) in [
        (app.anonymous_api(), 401, "UNAUTHORIZED"),
        (app.api_as("dev", "Dev-Passw0rd"), 403, "FORBIDDEN"),
    ] {
        for path in &gets {
            assert_api_error(client.get(path).await, status, code).await;
        }
        for path in &puts {
            let response = client.put(path, json!({"action": "stop"})).await;
            assert_api_error(response, status, code).await;
        }
        let response = client
            .post("/executions", json!({"kind": "echo", "tasks": [{}]}))
            .await;
        assert_api_error(response, status, code).await;
    }
    // Nothing changed.
    assert_eq!(app.count_rows("executions").await, 1);
    assert_eq!(
        app.admin_api().get_json(&format!("/executions/{id}")).await["status"],
        "Pending"
    );
}

#[tokio::test]
async fn queues_answer_from_postgresql_without_nats_and_pause_resume_stop() {
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();

    let response = expect_status(api.get("/jobservice/queues").await, 200, "queues").await;
    assert_eq!(response.headers()["x-berth-jetstream"], "unreachable");
    let queues: Vec<Value> = response.json().await.unwrap();
    assert_eq!(
        queue(&queues, "echo"),
        &json!({"job_type": "echo", "count": 0, "latency": 0, "paused": false,
                "count_source": "postgresql"})
    );

    let id = start(&api, vec![json!(0), json!(1), json!(2)]).await;
    // Make the oldest pending task a minute old, for the latency.
    sqlx::query("UPDATE tasks SET created_at = now() - interval '60 seconds' WHERE id = $1")
        .bind(task_ids(&app, id).await[0])
        .execute(&app.db)
        .await
        .unwrap();
    let (queues, _, _) = api.get_list("/jobservice/queues").await;
    let echo = queue(&queues, "echo");
    assert_eq!(echo["count"], 3);
    let latency = echo["latency"].as_i64().unwrap();
    assert!((60..600).contains(&latency), "latency {latency}");

    let paused = |kind: &'static str| {
        let db = app.db.clone();
        async move {
            sqlx::query_scalar::<_, bool>("SELECT paused FROM job_queues WHERE kind = $1")
                .bind(kind)
                .fetch_optional(&db)
                .await
                .unwrap()
        }
    };
    let response = api
        .put("/jobservice/queues/echo", json!({"action": "pause"}))
        .await;
    assert_empty_ok(response, "pause echo").await;
    assert_eq!(paused("echo").await, Some(true));
    let (queues, _, _) = api.get_list("/jobservice/queues").await;
    assert_eq!(queue(&queues, "echo")["paused"], true);
    // A kind no worker runs yet can be paused ahead of time; it is listed from then on.
    let response = api
        .put("/jobservice/queues/scan", json!({"action": "pause"}))
        .await;
    assert_empty_ok(response, "pause scan").await;
    let (queues, _, _) = api.get_list("/jobservice/queues").await;
    assert_eq!(queue(&queues, "scan")["paused"], true);
    assert_eq!(queue(&queues, "scan")["count"], 0);
    let response = api
        .put("/jobservice/queues/all", json!({"action": "resume"}))
        .await;
    assert_empty_ok(response, "resume all").await;
    assert_eq!(
        (paused("echo").await, paused("scan").await),
        (Some(false), Some(false))
    );
    let (queues, _, _) = api.get_list("/jobservice/queues").await;
    assert!(queues.iter().all(|q| q["paused"] == false), "{queues:?}");
    assert_eq!(app.audit_count("pause", "job_queue", "echo").await, 1);
    assert_eq!(app.audit_count("resume", "job_queue", "scan").await, 1);

    // Stop: every unfinished execution of the kind is stopped.
    let other = start(&api, vec![json!(0)]).await;
    let response = api
        .put("/jobservice/queues/echo", json!({"action": "stop"}))
        .await;
    assert_empty_ok(response, "stop echo").await;
    for execution in [id, other] {
        assert_eq!(
            api.get_json(&format!("/executions/{execution}")).await["status"],
            "Stopped"
        );
    }
    let (queues, _, _) = api.get_list("/jobservice/queues").await;
    assert_eq!(queue(&queues, "echo")["count"], 0);
    assert_eq!(queue(&queues, "echo")["latency"], 0);
}

#[tokio::test]
async fn pools_list_live_worker_processes_and_their_slots() {
    // A long heartbeat interval, so the registered row stays live however slow the
    // machine is.
    let app = TestApp::spawn_secure_with(|c| c.pipeline.heartbeat_ms = 60_000).await;
    let api = app.admin_api();
    assert_eq!(api.get_json("/jobservice/pools").await, json!([]));

    let id = start(&api, vec![json!(0)]).await;
    let task = task_ids(&app, id).await[0];
    let live = uuid::Uuid::new_v4();
    pool::register(&app.db, live, "echo", "host-a", 4242, 3)
        .await
        .unwrap();
    let in_flight =
        json!([{"task_id": task, "execution_id": id, "started_at": "2024-05-01T10:00:00Z"}]);
    assert!(pool::heartbeat(&app.db, live, &in_flight).await.unwrap());
    // A process that stopped heartbeating an hour ago is not a pool any more.
    let dead = uuid::Uuid::new_v4();
    pool::register(&app.db, dead, "echo", "host-b", 99, 1)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE worker_processes SET heartbeat_at = now() - interval '1 hour' WHERE id = $1",
    )
    .bind(dead)
    .execute(&app.db)
    .await
    .unwrap();

    let pools = api.get_json("/jobservice/pools").await;
    let pools = pools.as_array().unwrap();
    assert_eq!(pools.len(), 1, "{pools:?}");
    assert_eq!(pools[0]["worker_pool_id"], live.to_string());
    assert_eq!(pools[0]["pid"], 4242);
    assert_eq!(pools[0]["host"], "host-a");
    assert_eq!(pools[0]["concurrency"], 3);
    assert_eq!(pools[0]["kind"], "echo");
    assert!(pools[0]["start_at"].is_string() && pools[0]["heartbeat_at"].is_string());

    let workers = api
        .get_json(&format!("/jobservice/pools/{live}/workers"))
        .await;
    let workers = workers.as_array().unwrap();
    assert_eq!(workers.len(), 3);
    assert_eq!(
        workers[0],
        json!({
            "id": format!("{live}-0"), "pool_id": live.to_string(), "job_name": "echo",
            "job_id": task.to_string(), "start_at": "2024-05-01T10:00:00.000Z",
            "check_in": format!("execution/{id}"), "checkin_at": pools[0]["heartbeat_at"],
        })
    );
    assert_eq!(workers[1]["job_id"], "");
    assert!(workers[1].get("start_at").is_none());
    assert_eq!(workers[2]["id"], format!("{live}-2"));
    assert_eq!(
        api.get_json("/jobservice/pools/all/workers").await,
        Value::Array(workers.clone())
    );
    let response = api.get(&format!("/jobservice/pools/{dead}/workers")).await;
    assert_api_error(response, 404, "NOT_FOUND").await;
}

/// Waits up to 10 s for the next control message.
async fn next_control(subscriber: &mut async_nats::Subscriber) -> Control {
    let message = tokio::time::timeout(Duration::from_secs(10), subscriber.next())
        .await
        .expect("a control message within 10 s")
        .expect("the subscription is open");
    Control::parse(&message.payload).unwrap()
}

#[tokio::test]
async fn with_nats_counts_come_from_jetstream_and_workers_hear_stops() {
    use berth_events::config::{ConsumerConfig, StreamsConfig};
    use berth_events::streams::{self, JOBS_STREAM};

    let nats = NatsServer::start().await;
    let url = nats.url.clone();
    let app = TestApp::spawn_secure_with(|c| c.nats_url = url).await;
    let api = app.admin_api();
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    streams::provision(&js, &StreamsConfig::default())
        .await
        .unwrap();
    streams::ensure_consumer(
        &js,
        JOBS_STREAM,
        &streams::jobs_consumer_name("echo"),
        &berth_events::subject::jobs_of_kind("echo"),
        &ConsumerConfig::default(),
    )
    .await
    .unwrap();
    // Five messages wait on the stream, none in PostgreSQL: the count must be
    // JetStream's.
    for n in 0..5 {
        js.publish(
            berth_events::subject::for_job("echo", "default"),
            format!("{n}").into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let mut control = client
        .subscribe(berth_events::subject::CONTROL_SUBJECT)
        .await
        .unwrap();
    client.flush().await.unwrap();

    // The gateway connects in the background: wait for its counts to come from
    // JetStream.
    let deadline = Instant::now() + Duration::from_secs(30);
    let echo = loop {
        let response = expect_status(api.get("/jobservice/queues").await, 200, "queues").await;
        let reachable = response.headers().get("x-berth-jetstream").is_none();
        let queues: Vec<Value> = response.json().await.unwrap();
        let echo = queue(&queues, "echo").clone();
        if reachable && echo["count_source"] == "jetstream" {
            break echo;
        }
        assert!(
            Instant::now() < deadline,
            "never counted from JetStream: {queues:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(echo["count"], 5);

    let id = start(&api, vec![json!(0), json!(1)]).await;
    let response = api
        .put(&format!("/executions/{id}"), json!({"action": "stop"}))
        .await;
    assert_empty_ok(response, "stop").await;
    assert_eq!(
        next_control(&mut control).await,
        Control::Cancel {
            execution_id: id,
            task_id: None
        }
    );
    let response = api
        .put("/jobservice/queues/echo", json!({"action": "pause"}))
        .await;
    assert_empty_ok(response, "pause").await;
    assert_eq!(
        next_control(&mut control).await,
        Control::Pause {
            kind: "echo".to_owned(),
            paused: true
        }
    );
    let other = start(&api, vec![json!(0)]).await;
    let task = task_ids(&app, other).await[0];
    let response = api
        .put(
            &format!("/jobservice/jobs/{task}"),
            json!({"action": "stop"}),
        )
        .await;
    assert_empty_ok(response, "stop job").await;
    assert_eq!(
        next_control(&mut control).await,
        Control::Cancel {
            execution_id: other,
            task_id: Some(task)
        }
    );
}

#[tokio::test]
async fn the_openapi_document_lists_the_jobs_api() {
    let app = TestApp::spawn_secure().await;
    let document = app.anonymous_api().get_json("/openapi.json").await;
    let paths = document["paths"].as_object().unwrap();
    for (path, method, operation) in [
        ("/api/v2.0/executions", "get", "listExecutions"),
        ("/api/v2.0/executions", "post", "startExecution"),
        ("/api/v2.0/executions/{id}", "get", "getExecution"),
        ("/api/v2.0/executions/{id}", "put", "updateExecution"),
        (
            "/api/v2.0/executions/{id}/tasks",
            "get",
            "listExecutionTasks",
        ),
        (
            "/api/v2.0/executions/{id}/tasks/{task_id}/log",
            "get",
            "getExecutionTaskLog",
        ),
        ("/api/v2.0/jobservice/queues", "get", "listJobQueues"),
        (
            "/api/v2.0/jobservice/queues/{job_type}",
            "put",
            "actionPendingJobs",
        ),
        ("/api/v2.0/jobservice/pools", "get", "getWorkerPools"),
        (
            "/api/v2.0/jobservice/pools/{pool_id}/workers",
            "get",
            "getWorkers",
        ),
        (
            "/api/v2.0/jobservice/jobs/{job_id}",
            "put",
            "stopRunningJob",
        ),
        (
            "/api/v2.0/jobservice/jobs/{job_id}/log",
            "get",
            "actionGetJobLog",
        ),
    ] {
        assert_eq!(
            paths[path][method]["operationId"], operation,
            "{method} {path}"
        );
    }
    let schemas = document["components"]["schemas"].as_object().unwrap();
    for schema in [
        "Execution",
        "Task",
        "Metrics",
        "JobQueue",
        "WorkerPool",
        "Worker",
        "ActionRequest",
    ] {
        assert!(schemas.contains_key(schema), "schema {schema}");
    }
}
