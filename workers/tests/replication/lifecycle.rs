//! A task's life beyond the happy path: superseded by a newer push (coalescing),
//! stopped by the user mid-copy, and orphaned by a worker killed mid-copy.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{
    check, digest_at, docker_client, docker_registry, docker_registry_body, eventually,
    image_with_layers, partial_upload_bytes, push_blobs, push_policy, seen_after, show, speed_for,
    wait_digest, Stack, DEADLINE, MIB,
};
use crate::support::proxy::FaultProxy;
use crate::support::{random_blob, TestImage, OCI_MANIFEST};

#[tokio::test]
async fn a_tag_pushed_five_times_is_copied_at_most_twice_and_ends_at_the_last_digest() {
    let mut stack = Stack::start().await;
    stack.start_replicator(4).await;
    let dest = docker_registry().await;
    let dest_client = docker_client(&dest.url);
    let proxy = FaultProxy::start(&dest.url).await;
    // One task at a time to this registry, and a first copy that takes seconds (4 MiB
    // at 1 MiB/s): the five pushes are over before it is, so every task after it finds
    // its push superseded, except the one of the last push.
    let mut body = docker_registry_body("dest", &proxy.url);
    body["max_concurrency"] = json!(1);
    let registry = stack.api.create_registry(&body).await;
    let mut body = push_policy("to-dest", registry);
    body["speed"] = json!(speed_for(MIB as u64));
    let policy = stack.api.create_policy(&body).await;

    let shared = random_blob(4 * MIB);
    let images: Vec<TestImage> = (0..5)
        .map(|_| image_with_layers(vec![shared.clone()]))
        .collect();
    for image in &images {
        push_blobs(&stack.source, "proj/app", image).await;
    }
    let start = Instant::now();
    for image in &images {
        stack
            .source
            .put_manifest("proj/app", "latest", OCI_MANIFEST, image.manifest.clone())
            .await
            .expect("push the manifest");
    }
    println!("five pushes in {:?}", start.elapsed());
    let last = &images[4].digest;
    wait_digest(
        &dest_client,
        "proj/app",
        "latest",
        last,
        Duration::from_secs(120),
    )
    .await;
    stack.wait_events_handled().await;
    let tasks = stack.api.wait_policy_settled(policy, DEADLINE).await;
    let copies: Vec<_> = tasks
        .iter()
        .filter(|t| t["operation"] == "copy" && t["src_resource"] == "proj/app:latest")
        .collect();
    assert!(!copies.is_empty(), "no copy task: {tasks:?}");
    for task in &copies {
        assert_eq!(task["status"], "Succeed", "{task}");
    }
    let performed: Vec<_> = copies
        .iter()
        .filter(|t| {
            !t["status_message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("superseded")
        })
        .collect();
    let log = seen_after(&proxy.log(), start);
    // A copy PUTs the manifest by digest, then under the tag: count the latter.
    let manifest_puts = log
        .iter()
        .filter(|s| {
            s.method == "PUT" && s.path_and_query.ends_with("/v2/proj/app/manifests/latest")
        })
        .count();
    println!(
        "{} tasks, {} performed, {manifest_puts} manifest PUTs",
        copies.len(),
        performed.len()
    );
    for task in &copies {
        println!(
            "task {}: {} blobs_uploaded={} {:?}",
            task["id"], task["status"], task["blobs_uploaded"], task["status_message"]
        );
    }
    assert!(
        performed.len() <= 2,
        "{} copies performed: {performed:?}",
        performed.len()
    );
    assert!(
        (1..=2).contains(&manifest_puts),
        "{manifest_puts} manifest PUTs:\n{}",
        show(&log)
    );
    // Still there after everything settled: no late copy of an older push.
    assert_eq!(
        digest_at(&dest_client, "proj/app", "latest")
            .await
            .as_deref(),
        Some(last.as_str())
    );
}

#[tokio::test]
async fn a_stopped_execution_stops_its_copies_and_leaves_no_partial_upload() {
    let mut stack = Stack::start().await;
    stack.start_replicator(4).await;
    let dest = docker_registry().await;
    let proxy = FaultProxy::start(&dest.url).await;
    let registry = stack
        .api
        .create_registry(&docker_registry_body("dest", &proxy.url))
        .await;
    // 12 MiB at 1 MiB/s: twelve seconds of copying to stop in.
    let image = TestImage::random(&[6 * MIB, 6 * MIB]);
    image.push(&stack.source, "proj/big", "v1").await;
    let mut body = push_policy("slow", registry);
    body["trigger"] = json!({"type": "manual"});
    body["speed"] = json!(speed_for(MIB as u64));
    let policy = stack.api.create_policy(&body).await;
    let execution = stack.api.start_replication(policy).await;

    // Stop it while a layer is half-way up.
    eventually("a layer upload is under way", DEADLINE, || {
        let bytes = partial_upload_bytes(&dest, "proj/big");
        async move { check(bytes >= 512 * 1024, format!("{bytes} bytes uploaded")) }
    })
    .await;
    let stopped_at = Instant::now();
    stack.api.stop_replication(execution).await;

    let ended = stack.api.wait_execution(execution, DEADLINE).await;
    assert_eq!(ended["status"], "Stopped", "{ended}");
    assert_eq!(ended["berth_status"], "cancelled", "{ended}");
    let tasks = stack.api.tasks(execution).await;
    assert!(
        tasks.iter().any(|t| t["status"] == "Stopped"),
        "no task was stopped: {tasks:?}"
    );
    eventually("the partial upload is gone", DEADLINE, || {
        let open = dest.uploads("proj/big");
        async move { check(open.is_empty(), format!("{open:?}")) }
    })
    .await;

    // Settled: from now on nothing reaches the destination.
    let settled = proxy.log();
    let last = settled.last().map(|s| s.at).unwrap_or(stopped_at);
    println!(
        "last request {:?} after the stop",
        last.saturating_duration_since(stopped_at)
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = proxy.log();
    assert_eq!(
        later.len(),
        settled.len(),
        "requests after the execution was stopped and settled:\n{}",
        show(&later[settled.len()..])
    );
    assert_eq!(
        digest_at(&docker_client(&dest.url), "proj/big", "v1").await,
        None
    );
    assert!(dest.uploads("proj/big").is_empty());
}

#[tokio::test]
async fn a_task_of_a_killed_worker_is_redelivered_and_completed() {
    let mut stack = Stack::start().await;
    stack.start_replicator(4).await;
    stack.start_replicator(4).await;
    let dest = docker_registry().await;
    let dest_client = docker_client(&dest.url);
    let registry = stack
        .api
        .create_registry(&docker_registry_body("dest", &dest.url))
        .await;
    let mut body = push_policy("slow", registry);
    body["speed"] = json!(speed_for(MIB as u64));
    let policy = stack.api.create_policy(&body).await;
    // 6 MiB at 1 MiB/s: six seconds of copying to kill the worker in.
    let image = TestImage::random(&[6 * MIB]);
    image.push(&stack.source, "proj/big", "v1").await;

    eventually("a layer upload is under way", DEADLINE, || {
        let bytes = partial_upload_bytes(&dest, "proj/big");
        async move { check(bytes >= 512 * 1024, format!("{bytes} bytes uploaded")) }
    })
    .await;
    let running = stack.api.copies_of(policy, "proj/big:v1").await;
    let task = running
        .iter()
        .find(|t| t["status"] == "InProgress")
        .unwrap_or_else(|| panic!("no copy in progress: {running:?}"));
    let task_id = task["id"].as_i64().expect("a task id");
    let pid = stack
        .worker_pid_of_task(task_id)
        .await
        .unwrap_or_else(|| panic!("task {task_id} runs on no live worker"));
    let index = stack
        .p
        .workers
        .iter()
        .position(|w| w.pid() == pid)
        .unwrap_or_else(|| panic!("pid {pid} is none of the test's workers"));
    stack.p.kill_worker(index);

    let task = stack
        .api
        .wait_copy(policy, "proj/big:v1", Duration::from_secs(120))
        .await;
    assert_eq!(task["status"], "Succeed", "{task}");
    assert!(
        task["attempts"].as_i64().unwrap_or(0) >= 2,
        "the copy was not attempted again: {task}"
    );
    wait_digest(&dest_client, "proj/big", "v1", &image.digest, DEADLINE).await;
    assert_eq!(stack.p.live_worker_pids().len(), 1);
}
