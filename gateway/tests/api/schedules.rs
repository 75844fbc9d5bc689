//! Harbor's schedule listing (`GET /schedules`) and paused status (`GET
//! /schedules/{job_type}/paused`). Schedules are written through
//! `berth_events::schedules` on the test's own pool, as the policies of later issues
//! will write them; no worker runs.

use berth_events::schedules;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::helpers::{assert_api_error, assert_empty_ok, ids, ApiClient, TestApp};

async fn upsert(app: &TestApp, kind: &str, vendor_id: i64, cron: &str) -> i64 {
    schedules::upsert(&app.db, kind, vendor_id, cron, &json!({}))
        .await
        .unwrap()
}

/// `GET /schedules{query}`: the items, `X-Total-Count` (always sent) and `Link`.
async fn list(api: &ApiClient, query: &str) -> (Vec<Value>, i64, Option<String>) {
    let (items, total, link) = api.get_list(&format!("/schedules{query}")).await;
    (items, total.expect("X-Total-Count on /schedules"), link)
}

fn time(value: &Value) -> DateTime<Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is no time"));
    assert!(text.ends_with('Z'), "{text} is not UTC");
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

async fn paused(api: &ApiClient, job_type: &str) -> bool {
    let body = api.get_json(&format!("/schedules/{job_type}/paused")).await;
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    body["paused"]
        .as_bool()
        .unwrap_or_else(|| panic!("{job_type}: {body}"))
}

async fn queue_action(api: &ApiClient, job_type: &str, action: &str) {
    let response = api
        .put(
            &format!("/jobservice/queues/{job_type}"),
            json!({ "action": action }),
        )
        .await;
    assert_empty_ok(response, &format!("{action} {job_type}")).await;
}

#[tokio::test]
async fn schedules_list_in_harbors_shape_and_page() {
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();
    let (items, total, link) = list(&api, "").await;
    assert_eq!((items, total, link), (vec![], 0, None));

    let before = Utc::now() - chrono::Duration::seconds(5);
    let gc = upsert(&app, "gc", 0, "0 3 * * *").await;
    let replicate = upsert(&app, "replicate", 42, "*/5 * * * *").await;
    let echo = upsert(&app, "echo", 0, "@hourly").await;
    schedules::set_enabled(&app.db, replicate, false)
        .await
        .unwrap();
    // The echo schedule comes due and fires once, so it has a last run.
    sqlx::query("UPDATE schedules SET next_run_at = now() - interval '1 minute' WHERE id = $1")
        .bind(echo)
        .execute(&app.db)
        .await
        .unwrap();
    let due = schedules::get(&app.db, echo)
        .await
        .unwrap()
        .unwrap()
        .next_run_at;
    assert_eq!(
        schedules::fire_due(&app.db, "/test").await.unwrap().len(),
        1
    );

    let (items, total, link) = list(&api, "").await;
    assert_eq!(total, 3);
    assert_eq!(link, None);
    assert_eq!(ids(&items), vec![gc, replicate, echo]);

    let first = &items[0];
    let mut keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "cron",
            "enabled",
            "id",
            "kind",
            "next_run_at",
            "update_time",
            "vendor_id",
            "vendor_type"
        ],
        "{first}"
    );
    assert_eq!(first["vendor_type"], "GC");
    assert_eq!(first["kind"], "gc");
    assert_eq!(first["vendor_id"], 0);
    assert_eq!(first["cron"], "0 3 * * *");
    assert_eq!(first["enabled"], true);
    assert!(time(&first["update_time"]) >= before);
    let next = time(&first["next_run_at"]);
    assert!(next > before, "{first}");
    assert!(next <= Utc::now() + chrono::Duration::days(1), "{first}");

    assert_eq!(items[1]["vendor_type"], "REPLICATE");
    assert_eq!(items[1]["vendor_id"], 42);
    assert_eq!(items[1]["cron"], "*/5 * * * *");
    assert_eq!(items[1]["enabled"], false);
    assert!(items[1].get("last_run_at").is_none(), "{}", items[1]);

    assert_eq!(items[2]["vendor_type"], "ECHO");
    assert_eq!(items[2]["enabled"], true);
    // Harbor's times carry milliseconds; PostgreSQL's microseconds.
    assert_eq!(
        items[2]["last_run_at"],
        due.to_rfc3339_opts(SecondsFormat::Millis, true)
    );
    assert!(time(&items[2]["next_run_at"]) > due);

    // Replacing the expression of (kind, vendor_id) shows in place.
    assert_eq!(upsert(&app, "gc", 0, "0 4 * * *").await, gc);
    let (items, _, _) = list(&api, "").await;
    assert_eq!(items[0]["cron"], "0 4 * * *");

    // Harbor's paging.
    let (page, total, link) = list(&api, "?page_size=2").await;
    assert_eq!((ids(&page), total), (vec![gc, replicate], 3));
    let link = link.expect("a next link");
    assert!(
        link.contains("/api/v2.0/schedules?page=2&page_size=2") && link.ends_with("rel=\"next\""),
        "{link}"
    );
    let (page, total, link) = list(&api, "?page=2&page_size=2").await;
    assert_eq!((ids(&page), total), (vec![echo], 3));
    let link = link.expect("a prev link");
    assert!(!link.contains("next"), "{link}");
    let (page, total, _) = list(&api, "?page=3&page_size=2").await;
    assert_eq!((page, total), (vec![], 3));
    for query in ["?page_size=101", "?page=0", "?page_size=ten"] {
        let response = api.get(&format!("/schedules{query}")).await;
        assert_api_error(response, 422, "UNPROCESSABLE_ENTITY").await;
    }

    // A deleted schedule is gone from the listing.
    assert!(schedules::delete(&app.db, replicate).await.unwrap());
    let (items, total, _) = list(&api, "").await;
    assert_eq!((ids(&items), total), (vec![gc, echo], 2));
}

#[tokio::test]
async fn paused_follows_the_job_queues() {
    let app = TestApp::spawn_secure().await;
    let api = app.admin_api();

    // No schedules yet: `echo` is the only kind Berth knows.
    assert!(!paused(&api, "all").await);
    assert!(!paused(&api, "echo").await);
    queue_action(&api, "echo", "pause").await;
    assert!(paused(&api, "echo").await);
    assert!(paused(&api, "all").await);
    queue_action(&api, "echo", "resume").await;
    assert!(!paused(&api, "all").await);

    // A schedule makes its kind known; `all` is paused only when every kind is.
    upsert(&app, "gc", 0, "0 3 * * *").await;
    upsert(&app, "echo", 0, "@hourly").await;
    assert!(!paused(&api, "gc").await);
    queue_action(&api, "echo", "pause").await;
    assert!(paused(&api, "echo").await);
    assert!(!paused(&api, "gc").await);
    assert!(
        !paused(&api, "all").await,
        "gc's scheduled runs would start"
    );
    queue_action(&api, "gc", "pause").await;
    assert!(paused(&api, "gc").await);
    assert!(paused(&api, "all").await);
    // Harbor compares `all` without regard to case.
    assert!(paused(&api, "ALL").await);

    // The dashboard's resume-all and pause-all.
    queue_action(&api, "all", "resume").await;
    for job_type in ["all", "echo", "gc"] {
        assert!(!paused(&api, job_type).await, "{job_type}");
    }
    queue_action(&api, "all", "pause").await;
    for job_type in ["all", "echo", "gc"] {
        assert!(paused(&api, job_type).await, "{job_type}");
    }
    // A kind paused ahead of time, with no schedule, is known and paused.
    queue_action(&api, "scan", "pause").await;
    assert!(paused(&api, "scan").await);
    assert!(paused(&api, "all").await);

    // A kind nothing knows of, and a name no kind can have.
    let response = api.get("/schedules/nope/paused").await;
    assert_api_error(response, 404, "NOT_FOUND").await;
    for job_type in ["Not.A.Kind", "Echo"] {
        let response = api.get(&format!("/schedules/{job_type}/paused")).await;
        assert_api_error(response, 400, "BAD_REQUEST").await;
    }
}

#[tokio::test]
async fn only_system_administrators_see_schedules() {
    let app = TestApp::spawn_secure().await;
    upsert(&app, "gc", 0, "0 3 * * *").await;
    app.insert_user("dev", "Dev-Passw0rd").await;
    for (client, status, code) in [
        (app.anonymous_api(), 401, "UNAUTHORIZED"),
        (app.api_as("dev", "Dev-Passw0rd"), 403, "FORBIDDEN"),
    ] {
        for path in [
            "/schedules",
            "/schedules?page=1&page_size=5",
            "/schedules/all/paused",
            "/schedules/gc/paused",
            // Refused before the job type is looked at.
            "/schedules/nope/paused",
        ] {
            assert_api_error(client.get(path).await, status, code).await;
        }
    }
    // The administrator sees what they were refused.
    let (items, total, _) = list(&app.admin_api(), "").await;
    assert_eq!((items.len(), total), (1, 1));
}

#[tokio::test]
async fn the_openapi_document_lists_the_schedules_api() {
    let app = TestApp::spawn_secure().await;
    let document = app.anonymous_api().get_json("/openapi.json").await;
    let paths = &document["paths"];
    assert_eq!(
        paths["/api/v2.0/schedules"]["get"]["operationId"],
        "listSchedules"
    );
    assert_eq!(
        paths["/api/v2.0/schedules/{job_type}/paused"]["get"]["operationId"],
        "getSchedulePaused"
    );
    let list_params: Vec<&str> = paths["/api/v2.0/schedules"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(list_params, ["page", "page_size"]);
    let schemas = &document["components"]["schemas"];
    for field in ["id", "vendor_type", "vendor_id", "cron", "update_time"] {
        assert!(
            schemas["ScheduleTask"]["properties"].get(field).is_some(),
            "ScheduleTask.{field}"
        );
    }
    assert!(schemas["SchedulerStatus"]["properties"]
        .get("paused")
        .is_some());
}
