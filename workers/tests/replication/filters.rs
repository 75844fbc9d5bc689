//! Filters and flattening: a name filter with `**`, a tag filter that excludes, and
//! Harbor's destination namespace with replace counts 1 and -1 (see
//! replication/src/naming.rs for the rules).

use serde_json::json;

use crate::harness::{
    digest_at, docker_client, docker_registry, docker_registry_body, push_policy, Stack, DEADLINE,
};
use crate::support::TestImage;

#[tokio::test]
async fn filters_select_and_flattening_renames_as_documented() {
    let mut stack = Stack::start().await;
    stack.start_replicator(4).await;
    let dest = docker_registry().await;
    let dest_client = docker_client(&dest.url);
    let registry = stack
        .api
        .create_registry(&docker_registry_body("dest", &dest.url))
        .await;
    let no_dev = json!({"type": "tag", "value": "*-dev", "decoration": "excludes"});

    // team/** into mirror/, replacing one namespace level: team/a/app → mirror/a/app.
    let mut body = push_policy("mirror", registry);
    body["filters"] = json!([{"type": "name", "value": "team/**"}, no_dev]);
    body["dest_namespace"] = json!("mirror");
    body["dest_namespace_replace_count"] = json!(1);
    let mirror = stack.api.create_policy(&body).await;
    // team/a/** into flat/, replacing the whole namespace: team/a/app → flat/app.
    let mut body = push_policy("flat", registry);
    body["filters"] = json!([{"type": "name", "value": "team/a/**"}, no_dev]);
    body["dest_namespace"] = json!("flat");
    body["dest_namespace_replace_count"] = json!(-1);
    let flat = stack.api.create_policy(&body).await;

    // What no policy takes first, so it has had every chance to be copied by the time
    // the rest has arrived.
    let dev = TestImage::random(&[1_000]);
    dev.push(&stack.source, "team/a/app", "1.0-dev").await;
    let other = TestImage::random(&[1_000]);
    other.push(&stack.source, "other/app", "9.9").await;
    let deep = TestImage::random(&[1_000]);
    deep.push(&stack.source, "team/a/app", "1.0").await;
    let shallow = TestImage::random(&[1_000]);
    shallow.push(&stack.source, "team/app", "2.0").await;

    for (policy, src, dst, image) in [
        (mirror, "team/a/app:1.0", "mirror/a/app:1.0", &deep),
        (mirror, "team/app:2.0", "mirror/app:2.0", &shallow),
        (flat, "team/a/app:1.0", "flat/app:1.0", &deep),
    ] {
        let task = stack.api.wait_copy(policy, src, DEADLINE).await;
        assert_eq!(task["status"], "Succeed", "{task}");
        assert_eq!(task["dst_resource"], dst, "{task}");
        let (repo, tag) = dst.split_once(':').expect("repo:tag");
        assert_eq!(
            digest_at(&dest_client, repo, tag).await.as_deref(),
            Some(image.digest.as_str()),
            "{dst}"
        );
    }

    // Every push has been handled and every task has ended: what is not at the
    // destination now never will be.
    stack.wait_events_handled().await;
    for policy in [mirror, flat] {
        let tasks = stack.api.wait_policy_settled(policy, DEADLINE).await;
        for task in &tasks {
            assert!(
                task["src_resource"] != "team/a/app:1.0-dev"
                    && task["src_resource"] != "other/app:9.9",
                "policy {policy} took a filtered-out artifact: {task}"
            );
        }
    }
    let mut repositories = dest_client.catalog(100).await.expect("the catalog");
    repositories.sort();
    assert_eq!(repositories, ["flat/app", "mirror/a/app", "mirror/app"]);
    for (repo, tags) in [
        ("mirror/a/app", ["1.0"]),
        ("mirror/app", ["2.0"]),
        ("flat/app", ["1.0"]),
    ] {
        let mut found = dest_client.tags(repo).await.expect("the tags");
        found.sort();
        assert_eq!(found, tags, "tags of {repo}");
    }
}
