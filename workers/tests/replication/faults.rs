//! A destination that misbehaves, through the fault proxy in front of docker-registry:
//! 429 with `Retry-After`, a connection reset in the middle of a blob, a refused
//! credential, and answers that are not a registry's.

use std::time::{Duration, Instant};

use berth_registry_client::RegistryClient;

use crate::harness::{
    digest_at, docker_client, docker_registry, docker_registry_body, eventually, is_final,
    push_policy, registry_body, seen_after, show, Stack, DEADLINE,
};
use crate::support::proxy::{Fault, FaultProxy, Rule};
use crate::support::registry::{DockerRegistry, USERNAME};
use crate::support::{collect, stream_of, TestImage};

/// A source stack with one worker, a docker-registry behind a fault proxy, and an
/// event-based policy to it through the proxy.
struct Rig {
    stack: Stack,
    proxy: FaultProxy,
    dest_client: RegistryClient,
    policy: i64,
    // Kept for its process: dropped with the rig.
    _dest: DockerRegistry,
}

impl Rig {
    /// [`AdminApi::wait_copy`](crate::harness::AdminApi::wait_copy) with what the
    /// proxy saw in the failure message.
    async fn wait_copy(&self, src_resource: &str) -> serde_json::Value {
        let api = &self.stack.api;
        let proxy = &self.proxy;
        let policy = self.policy;
        eventually(
            &format!("policy {policy} copies {src_resource}"),
            DEADLINE,
            || async move {
                let tasks = api.copies_of(policy, src_resource).await;
                let (task, log) = match tasks.last() {
                    Some(task) if is_final(task) => return Ok(task.clone()),
                    Some(task) => (task.to_string(), api.task_log(task).await),
                    None => ("no copy task yet".to_owned(), String::new()),
                };
                Err(format!(
                    "{task}\ntask log:\n{log}\nthe proxy saw:\n{}",
                    show(&proxy.log())
                ))
            },
        )
        .await
    }
}

async fn rig() -> Rig {
    let mut stack = Stack::start().await;
    stack.start_replicator(4).await;
    let dest = docker_registry().await;
    let proxy = FaultProxy::start(&dest.url).await;
    let registry = stack
        .api
        .create_registry(&docker_registry_body("dest", &proxy.url))
        .await;
    let policy = stack
        .api
        .create_policy(&push_policy("to-dest", registry))
        .await;
    Rig {
        stack,
        proxy,
        // Straight to the registry: the test's own reads are not the worker's requests.
        dest_client: docker_client(&dest.url),
        policy,
        _dest: dest,
    }
}

#[tokio::test]
async fn retry_after_is_honoured_before_any_further_request() {
    let rig = rig().await;
    rig.proxy.add_rule(Rule {
        method: Some("POST".to_owned()),
        path_contains: "/blobs/uploads/".to_owned(),
        times: 1,
        fault: Fault::TooManyRequests {
            retry_after: Some("2".to_owned()),
        },
    });
    let image = TestImage::random(&[100_000]);
    image.push(&rig.stack.source, "proj/app", "v1").await;
    let task = rig.wait_copy("proj/app:v1").await;
    assert_eq!(task["status"], "Succeed", "{task}");
    assert_eq!(
        digest_at(&rig.dest_client, "proj/app", "v1")
            .await
            .as_deref(),
        Some(image.digest.as_str())
    );

    let log = rig.proxy.log();
    let limited = log
        .iter()
        .find(|s| s.status == 429 && s.faulted)
        .unwrap_or_else(|| panic!("no 429 was answered:\n{}", show(&log)))
        .clone();
    // The 429 is logged before it is sent, so the client sees it later still: the
    // next request can only be 2 s or more after it. (100 ms of slack for a limiter
    // whose deadline is computed on the database's clock.)
    let after = seen_after(&log, limited.at);
    let first = after
        .iter()
        .map(|s| s.at)
        .min()
        .unwrap_or_else(|| panic!("nothing after the 429:\n{}", show(&log)));
    let waited = first.duration_since(limited.at);
    println!(
        "the next request came {waited:?} after the 429:\n{}",
        show(&log)
    );
    assert!(
        waited >= Duration::from_millis(1_900),
        "a request {waited:?} after a 429 with Retry-After: 2:\n{}",
        show(&log)
    );
}

#[tokio::test]
async fn a_connection_reset_mid_blob_is_retried_and_the_blob_is_right() {
    let rig = rig().await;
    let image = TestImage::random(&[2 * 1024 * 1024]);
    // The destination has the config already: the only upload is the layer, so the
    // reset hits its bytes.
    let (config, config_digest) = image.config.clone();
    rig.dest_client
        .push_blob(
            "proj/app",
            &config_digest,
            config.len() as u64,
            stream_of(config, 64 * 1024),
            None,
        )
        .await
        .expect("seed the config");
    // Whichever request carries the layer's bytes (PATCH or PUT), it is cut after
    // 512 KiB, once.
    for method in ["PATCH", "PUT"] {
        rig.proxy.add_rule(Rule {
            method: Some(method.to_owned()),
            path_contains: "/blobs/uploads/".to_owned(),
            times: 1,
            fault: Fault::ResetRequestAfter(512 * 1024),
        });
    }
    image.push(&rig.stack.source, "proj/app", "v1").await;
    let task = rig.wait_copy("proj/app:v1").await;
    let log = rig.proxy.log();
    assert_eq!(task["status"], "Succeed", "{task}\n{}", show(&log));
    assert!(
        log.iter().any(|s| s.faulted && s.status == 0),
        "no upload was reset:\n{}",
        show(&log)
    );
    assert_eq!(
        digest_at(&rig.dest_client, "proj/app", "v1")
            .await
            .as_deref(),
        Some(image.digest.as_str())
    );
    // The layer reads back whole, verified against its digest as it streams.
    let (data, digest) = &image.layers[0];
    let stream = rig
        .dest_client
        .get_blob("proj/app", digest)
        .await
        .expect("GET the layer");
    let read = collect(stream).await.expect("the layer reads back");
    assert!(
        read == data.as_ref(),
        "the layer at the destination differs"
    );
}

#[tokio::test]
async fn wrong_credentials_fail_the_task_at_once_with_a_readable_reason() {
    let mut stack = Stack::start().await;
    stack.start_replicator(4).await;
    let dest = docker_registry().await;
    let wrong = "Not-The-Passw0rd";
    // Saved although its ping fails (marked unhealthy), as Harbor does.
    let registry = stack
        .api
        .create_registry(&registry_body("dest", &dest.url, USERNAME, wrong))
        .await;
    let policy = stack
        .api
        .create_policy(&push_policy("to-dest", registry))
        .await;
    let image = TestImage::random(&[10_000]);
    let pushed = Instant::now();
    image.push(&stack.source, "proj/app", "v1").await;
    let task = stack.api.wait_copy(policy, "proj/app:v1", DEADLINE).await;
    assert_eq!(task["status"], "Failed", "{task}");
    assert_eq!(
        task["attempts"], 1,
        "a refused credential is not retried: {task}"
    );
    let message = task["status_message"].as_str().unwrap_or_default();
    let lower = message.to_lowercase();
    assert!(
        [
            "401",
            "unauthorized",
            "credential",
            "denied",
            "authentication"
        ]
        .iter()
        .any(|word| lower.contains(word)),
        "the reason does not say the credential was refused: {message:?}"
    );
    assert!(
        !message.contains(wrong),
        "the reason shows the secret: {message:?}"
    );
    println!("failed {:?} after the push: {message}", pushed.elapsed());
    assert_eq!(
        digest_at(&docker_client(&dest.url), "proj/app", "v1").await,
        None
    );
}

#[tokio::test]
async fn garbage_answers_fail_the_task_and_the_worker_serves_the_next() {
    let mut rig = rig().await;
    rig.proxy.add_rule(Rule {
        method: None,
        path_contains: "/v2/team/garbage/".to_owned(),
        times: usize::MAX,
        fault: Fault::Respond {
            status: 200,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: b"<html>\x00\xff{{{ this is not a registry".to_vec(),
        },
    });
    let pids = rig.stack.p.live_worker_pids();
    assert_eq!(pids.len(), 1);

    let garbage = TestImage::random(&[10_000]);
    garbage.push(&rig.stack.source, "team/garbage", "1").await;
    let task = rig.wait_copy("team/garbage:1").await;
    let log = rig.proxy.log();
    assert_eq!(task["status"], "Failed", "{task}\n{}", show(&log));
    assert!(
        !task["status_message"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "a failed task says why: {task}"
    );
    assert!(log.iter().any(|s| s.faulted), "{}", show(&log));

    // The same process is alive and copies the next artifact.
    assert_eq!(rig.stack.p.live_worker_pids(), pids, "the worker died");
    let fine = TestImage::random(&[10_000]);
    fine.push(&rig.stack.source, "team/fine", "1").await;
    let task = rig.wait_copy("team/fine:1").await;
    assert_eq!(task["status"], "Succeed", "{task}");
    assert_eq!(
        digest_at(&rig.dest_client, "team/fine", "1")
            .await
            .as_deref(),
        Some(fine.digest.as_str())
    );
    assert_eq!(rig.stack.p.live_worker_pids(), pids, "the worker died");
}
