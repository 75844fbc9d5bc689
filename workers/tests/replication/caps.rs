//! Limits as the destination sees them: a registry's concurrency and request rate
//! held across three worker processes, and a policy's bandwidth cap on the bytes.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{
    count, docker_client, docker_registry, docker_registry_body, max_in_window, push_policy,
    seen_after, show, speed_for, wait_digest, Stack, DEADLINE, MIB,
};
use crate::support::proxy::FaultProxy;
use crate::support::TestImage;

#[tokio::test]
async fn concurrency_and_rate_limits_hold_across_three_workers() {
    const IMAGES: usize = 12;
    const RATE: f64 = 10.0;
    const BURST: usize = 2;
    const CONCURRENCY: usize = 2;

    let mut stack = Stack::start().await;
    for _ in 0..3 {
        let mut options = stack.replicate_options(4);
        // Three workers, a gateway and the test's pools, two tests at a time: keep
        // well under PostgreSQL's 100 connections.
        options
            .extra_env
            .push(("BERTH_DATABASE_MAX_CONNECTIONS".to_owned(), "4".to_owned()));
        stack.p.start_worker(options).await;
    }
    let dest = docker_registry().await;
    let dest_client = docker_client(&dest.url);
    let proxy = FaultProxy::start(&dest.url).await;
    let mut body = docker_registry_body("limited", &proxy.url);
    body["rate_limit_per_second"] = json!(RATE);
    body["rate_limit_burst"] = json!(BURST);
    body["max_concurrency"] = json!(CONCURRENCY);
    let registry = stack.api.create_registry(&body).await;
    let policy = stack
        .api
        .create_policy(&push_policy("to-limited", registry))
        .await;

    let start = Instant::now();
    let images: Vec<TestImage> = (0..IMAGES).map(|_| TestImage::random(&[20_000])).collect();
    for (i, image) in images.iter().enumerate() {
        image
            .push(&stack.source, &format!("proj/app-{i}"), "1")
            .await;
    }
    // 12 copies of ~6 requests each at 10/s: ten seconds and more.
    for (i, image) in images.iter().enumerate() {
        wait_digest(
            &dest_client,
            &format!("proj/app-{i}"),
            "1",
            &image.digest,
            Duration::from_secs(180),
        )
        .await;
    }
    let tasks = stack.api.wait_policy_settled(policy, DEADLINE).await;
    for task in tasks.iter().filter(|t| t["operation"] == "copy") {
        assert_eq!(task["status"], "Succeed", "{task}");
    }

    let log = seen_after(&proxy.log(), start);
    let span = log
        .last()
        .map(|l| l.at.duration_since(start))
        .unwrap_or_default();
    println!(
        "{} requests reached the destination in {span:?}, at most {} at once",
        log.len(),
        proxy.max_in_flight()
    );
    assert!(
        proxy.max_in_flight() <= CONCURRENCY,
        "{} requests in flight at once, the limit is {CONCURRENCY}:\n{}",
        proxy.max_in_flight(),
        show(&log)
    );
    // GCRA: within any window of length L at most burst + rate × L requests START.
    // The proxy logs a forwarded request when its answer comes, which a slow request
    // answers later than a quick one that started after it: two requests of slack.
    for window in [0.25, 0.5, 1.0, 2.0, 4.0, 8.0] {
        let allowed = BURST + (RATE * window).ceil() as usize + 2;
        let seen = max_in_window(&log, Duration::from_secs_f64(window));
        assert!(
            seen <= allowed,
            "{seen} requests within {window} s, at most {allowed} allowed:\n{}",
            show(&log)
        );
    }
}

#[tokio::test]
async fn a_bandwidth_cap_is_never_beaten() {
    const LAYER: usize = 10 * MIB;
    const CAP: u64 = 4 * MIB as u64;

    let mut stack = Stack::start().await;
    stack.start_replicator(4).await;
    let dest = docker_registry().await;
    let dest_client = docker_client(&dest.url);
    let proxy = FaultProxy::start(&dest.url).await;
    let registry = stack
        .api
        .create_registry(&docker_registry_body("dest", &proxy.url))
        .await;
    let mut body = push_policy("capped", registry);
    body["speed"] = json!(speed_for(CAP));
    assert_eq!(body["speed"], 32768);
    let policy = stack.api.create_policy(&body).await;

    // 40 MiB of random layers: nothing compresses, nothing is there already.
    let image = TestImage::random(&[LAYER, LAYER, LAYER, LAYER]);
    // Before the push: the copy cannot start before the push, and the registry's
    // creation ping is behind us.
    let pushed = Instant::now();
    image.push(&stack.source, "proj/big", "v1").await;
    let task = stack
        .api
        .wait_copy(policy, "proj/big:v1", Duration::from_secs(180))
        .await;
    assert_eq!(task["status"], "Succeed", "{task}");
    assert_eq!(count(&task, "blobs_uploaded"), 5, "{task}");
    wait_digest(&dest_client, "proj/big", "v1", &image.digest, DEADLINE).await;

    // The copy's requests all come after `pushed`. The first one is answered before
    // any layer byte is sent (one request at a time per task), and the last blob
    // upload request is answered after every layer byte arrived: the bytes took at
    // most that long. At 4 MiB/s, 40 MiB take 10 s (the throttle lets one 64 KiB
    // piece ahead per stream); 90 % of that is the bound.
    let log = seen_after(&proxy.log(), pushed);
    let first = log
        .first()
        .unwrap_or_else(|| panic!("no request after the push"));
    let last_upload = log
        .iter()
        .filter(|s| {
            (s.method == "PUT" || s.method == "PATCH") && s.path_and_query.contains("/blobs/")
        })
        .map(|s| s.at)
        .max()
        .unwrap_or_else(|| panic!("no blob upload:\n{}", show(&log)));
    let took = last_upload.duration_since(first.at);
    let total = 4 * LAYER;
    let floor = Duration::from_secs_f64(total as f64 / CAP as f64 * 0.9);
    println!(
        "{} MiB in at most {took:?}: {:.2} MiB/s at most (cap {} MiB/s)",
        total / MIB,
        total as f64 / MIB as f64 / took.as_secs_f64(),
        CAP / MIB as u64
    );
    assert!(
        took >= floor,
        "40 MiB arrived within {took:?}, faster than the 4 MiB/s cap allows ({floor:?}):\n{}",
        show(&log)
    );
    assert!(
        task["bytes"].as_i64().unwrap_or(0) >= total as i64,
        "bytes {} < {total}: {task}",
        task["bytes"]
    );
}
