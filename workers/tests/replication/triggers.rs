//! Replications started by hand (`POST /replication/executions`) and by a policy's
//! cron schedule: a planning task lists the source under the filters and copies it.

use std::time::Duration;

use serde_json::json;

use crate::harness::{
    digest_at, docker_client, docker_registry, docker_registry_body, eventually, push_policy,
    wait_digest, Stack, DEADLINE,
};
use crate::support::TestImage;

#[tokio::test]
async fn manual_and_cron_triggers_copy_what_the_filters_select() {
    let mut stack = Stack::start().await;
    stack.start_replicator(4).await;
    let dest = docker_registry().await;
    let dest_client = docker_client(&dest.url);
    let registry = stack
        .api
        .create_registry(&docker_registry_body("dest", &dest.url))
        .await;
    // What is there before any policy: no event can have copied it.
    let one = TestImage::random(&[20_000]);
    one.push(&stack.source, "proj/one", "1").await;
    let two = TestImage::random(&[20_000]);
    two.push(&stack.source, "proj/two", "1").await;
    let other = TestImage::random(&[20_000]);
    other.push(&stack.source, "other/three", "1").await;

    // By hand.
    let mut body = push_policy("by-hand", registry);
    body["trigger"] = json!({"type": "manual"});
    body["filters"] = json!([{"type": "name", "value": "proj/**"}]);
    body["dest_namespace"] = json!("manual");
    body["dest_namespace_replace_count"] = json!(1);
    let manual = stack.api.create_policy(&body).await;
    let execution = stack.api.start_replication(manual).await;
    let ended = stack
        .api
        .wait_execution(execution, Duration::from_secs(120))
        .await;
    assert_eq!(ended["status"], "Succeed", "{ended}");
    assert_eq!(ended["trigger"], "manual", "{ended}");
    let tasks = stack.api.tasks(execution).await;
    let mut copied: Vec<&str> = tasks
        .iter()
        .filter(|t| t["operation"] == "copy")
        .map(|t| {
            assert_eq!(t["status"], "Succeed", "{t}");
            t["src_resource"].as_str().unwrap_or_default()
        })
        .collect();
    copied.sort();
    assert_eq!(copied, ["proj/one:1", "proj/two:1"], "{tasks:?}");
    for (repo, image) in [("manual/one", &one), ("manual/two", &two)] {
        assert_eq!(
            digest_at(&dest_client, repo, "1").await.as_deref(),
            Some(image.digest.as_str()),
            "{repo}"
        );
    }

    // By a schedule firing every second (six fields: seconds first).
    let mut body = push_policy("every-second", registry);
    body["trigger"] = json!({"type": "scheduled", "trigger_settings": {"cron": "* * * * * *"}});
    body["filters"] = json!([{"type": "name", "value": "proj/**"}]);
    body["dest_namespace"] = json!("cron");
    body["dest_namespace_replace_count"] = json!(1);
    let cron = stack.api.create_policy(&body).await;
    let api = &stack.api;
    let scheduled = eventually(
        "a scheduled execution succeeds",
        Duration::from_secs(120),
        || async move {
            let executions = api.executions(cron).await;
            executions
                .iter()
                .find(|e| e["trigger"] == "scheduled" && e["status"] == "Succeed")
                .cloned()
                .ok_or_else(|| format!("{executions:?}"))
        },
    )
    .await;
    for (repo, image) in [("cron/one", &one), ("cron/two", &two)] {
        wait_digest(&dest_client, repo, "1", &image.digest, DEADLINE).await;
    }
    let id = scheduled["id"].as_i64().expect("an execution id");
    let tasks = stack.api.tasks(id).await;
    assert!(
        tasks
            .iter()
            .filter(|t| t["operation"] == "copy")
            .all(|t| t["src_resource"] != "other/three:1"),
        "{tasks:?}"
    );
    // Switched off, it fires no more.
    stack
        .api
        .update_policy(cron, |policy| policy["enabled"] = json!(false))
        .await;
    let mut repositories = dest_client.catalog(100).await.expect("the catalog");
    repositories.sort();
    assert_eq!(
        repositories,
        ["cron/one", "cron/two", "manual/one", "manual/two"]
    );
}
