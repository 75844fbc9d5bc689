//! The replication harness: the pipeline harness's stack (a database, a nats-server,
//! the gateway, worker processes; `../pipeline/harness.rs`) with the gateway's auth ON
//! and `berth-workers replicate` processes, plus registry-client's test peers
//! (Debian's `docker-registry` with htpasswd, a second Berth with token auth, the
//! fault proxy; `registry-client/tests/support`) and an admin client of the
//! management API.
//!
//! Assertions read replication results where a user would: the executions and tasks
//! of `/api/v2.0/replication/executions`, and the destination registry itself.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_registry_client::RegistryClient;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::pipeline_harness::EVENTS_STREAM;
pub use crate::pipeline_harness::{check, eventually, Pipeline, WorkerOptions, DEADLINE};
use crate::support::proxy::Seen;
use crate::support::registry::{DockerRegistry, PASSWORD, USERNAME};
use crate::support::{basic, client, random_blob, TestImage, OCI_INDEX, OCI_MANIFEST};

/// The gateway's bootstrap administrator (the pipeline harness sets this password).
pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "Admin-Passw0rd";

/// The durable consumer of events the replicate kind runs.
pub const REPLICATE_EVENTS_CONSUMER: &str = "replicate-events";

/// Harbor's final task and execution statuses.
const FINAL: [&str; 3] = ["Succeed", "Failed", "Stopped"];

/// `speed` (Harbor's kbit/s) for a cap of `bytes_per_second`: bytes/s = speed × 128.
pub fn speed_for(bytes_per_second: u64) -> i64 {
    i64::try_from(bytes_per_second / 128).expect("a speed fits i64")
}

pub const MIB: usize = 1024 * 1024;

// --- The stack -----------------------------------------------------------------------

/// One test's source side: the pipeline (database, NATS, gateway with auth on, worker
/// processes), the management API and the registry as the admin.
pub struct Stack {
    pub p: Pipeline,
    pub api: AdminApi,
    /// The source Berth's `/v2/` as the admin (token auth negotiated by the client).
    pub source: RegistryClient,
}

impl Stack {
    /// The source side with no worker yet. Auth is the gateway's default (token), so
    /// everything the workers do to it goes through tokens they sign themselves.
    pub async fn start() -> Stack {
        let p = Pipeline::start_with(&[("BERTH_AUTH__MODE".to_owned(), "token".to_owned())]).await;
        let data_dir = p.gateway.data_dir.clone();
        // Both keys are made at start; wait rather than assume they were made before
        // the gateway answered.
        for file in [
            data_dir.join("secret.key"),
            data_dir.join("auth/token-key.pem"),
        ] {
            eventually(
                &format!("the gateway writes {}", file.display()),
                DEADLINE,
                || {
                    let exists = file.exists();
                    async move { check(exists, "not yet") }
                },
            )
            .await;
        }
        let api = AdminApi::new(&p.gateway.address);
        let source = client(&p.gateway.address, basic(ADMIN, ADMIN_PASSWORD));
        Stack { p, api, source }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.p.gateway.data_dir.clone()
    }

    /// Options of a `berth-workers replicate` process running `concurrency` tasks at
    /// once, with short acks and retries: a killed worker's task returns after 5 s, a
    /// transient failure is retried after 200 ms.
    pub fn replicate_options(&self, concurrency: usize) -> WorkerOptions {
        let data_dir = self.data_dir();
        let mut options = WorkerOptions {
            kind: "replicate".to_owned(),
            concurrency,
            ack_wait_secs: 5,
            max_deliver: 5,
            retry_initial_ms: 200,
            retry_multiplier: 2.0,
            retry_jitter: 0.1,
            ..WorkerOptions::default()
        };
        // A kind's own consumer entry replaces the generic one entirely, so it gets
        // every knob the generic one has (in case the kind reads its own).
        let c = "BERTH_PIPELINE__CONSUMERS__REPLICATE__";
        let own = [
            ("CONCURRENCY", concurrency.to_string()),
            ("ACK_WAIT_SECS", options.ack_wait_secs.to_string()),
            ("MAX_DELIVER", options.max_deliver.to_string()),
            ("MAX_ACK_PENDING", options.max_ack_pending.to_string()),
            ("RETRY_INITIAL_MS", options.retry_initial_ms.to_string()),
            ("RETRY_MULTIPLIER", options.retry_multiplier.to_string()),
            ("RETRY_MAX_MS", "2000".to_owned()),
            ("RETRY_JITTER", options.retry_jitter.to_string()),
        ];
        options
            .extra_env
            .extend(own.into_iter().map(|(k, v)| (format!("{c}{k}"), v)));
        options.extra_env.extend([
            (
                "BERTH_PIPELINE__CONSUMER__RETRY_MAX_MS".to_owned(),
                "2000".to_owned(),
            ),
            (
                "BERTH_SECRET_KEY_FILE".to_owned(),
                data_dir.join("secret.key").display().to_string(),
            ),
            (
                "BERTH_REPLICATE__TOKEN_KEY_FILE".to_owned(),
                data_dir.join("auth/token-key.pem").display().to_string(),
            ),
            (
                "BERTH_REPLICATE__REGISTRY_URL".to_owned(),
                self.p.gateway.address.clone(),
            ),
            (
                "BERTH_REPLICATE__REGISTRY_POLL_MS".to_owned(),
                "200".to_owned(),
            ),
        ]);
        options
    }

    /// Starts a replicate worker with [`Stack::replicate_options`]; returns its index.
    pub async fn start_replicator(&mut self, concurrency: usize) -> usize {
        let options = self.replicate_options(concurrency);
        self.p.start_worker(options).await
    }

    /// Waits until every event so far has been handled by the replicate kind: the
    /// outbox is empty (everything was published), then the events consumer has
    /// nothing pending or unacknowledged (everything published was handled, and the
    /// executions and tasks it made are in the database).
    pub async fn wait_events_handled(&self) {
        eventually(
            "the replicate kind handles every event",
            DEADLINE,
            || async move {
                let outbox = self.p.outbox_count().await;
                if outbox > 0 {
                    return Err(format!("{outbox} rows in the outbox"));
                }
                let info = self
                    .p
                    .consumer_info(EVENTS_STREAM, REPLICATE_EVENTS_CONSUMER)
                    .await?;
                check(
                    info.num_pending == 0 && info.num_ack_pending == 0,
                    format!(
                        "{} pending, {} unacknowledged",
                        info.num_pending, info.num_ack_pending
                    ),
                )
            },
        )
        .await;
    }

    /// The pid of the worker process running task `task_id` now, if any.
    pub async fn worker_pid_of_task(&self, task_id: i64) -> Option<u32> {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT w.pid FROM tasks t JOIN worker_processes w ON w.id = t.worker_id
             WHERE t.id = $1 AND t.status = 'running'",
        )
        .bind(task_id)
        .fetch_optional(&self.p.db)
        .await
        .expect("read the task's worker");
        pid.and_then(|pid| u32::try_from(pid).ok())
    }
}

// --- The management API ------------------------------------------------------------

/// `/api/v2.0` as the admin (Basic).
#[derive(Clone)]
pub struct AdminApi {
    http: reqwest::Client,
    base: String,
}

/// The id at the end of a `Location` header.
fn id_from_location(location: &str) -> i64 {
    location
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("Location {location:?} does not end in an id"))
}

impl AdminApi {
    pub fn new(address: &str) -> AdminApi {
        AdminApi {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("an HTTP client"),
            base: format!("{address}/api/v2.0"),
        }
    }

    /// A request to `/api/v2.0{path}`: status, `Location`, and the body (JSON, or a
    /// string when not JSON, `Null` when empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Option<String>, Value) {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .basic_auth(ADMIN, Some(ADMIN_PASSWORD));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(if text.is_empty() {
            Value::Null
        } else {
            Value::String(text)
        });
        (status, location, json)
    }

    /// `GET` that must answer 200.
    pub async fn get(&self, path: &str) -> Value {
        let (status, _, body) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// `POST` that must answer 201; the id its `Location` names.
    pub async fn create(&self, path: &str, body: &Value) -> i64 {
        let (status, location, answer) = self.call(reqwest::Method::POST, path, Some(body)).await;
        assert_eq!(status, 201, "POST {path} {body}: {answer}");
        id_from_location(&location.unwrap_or_else(|| panic!("POST {path}: 201 without Location")))
    }

    pub async fn create_registry(&self, body: &Value) -> i64 {
        self.create("/registries", body).await
    }

    pub async fn create_policy(&self, body: &Value) -> i64 {
        self.create("/replication/policies", body).await
    }

    /// Reads policy `id`, lets `change` edit it, and PUTs it back.
    pub async fn update_policy(&self, id: i64, change: impl FnOnce(&mut Value)) {
        let path = format!("/replication/policies/{id}");
        let mut policy = self.get(&path).await;
        change(&mut policy);
        let (status, _, answer) = self.call(reqwest::Method::PUT, &path, Some(&policy)).await;
        assert_eq!(status, 200, "PUT {path}: {answer}");
    }

    /// `POST /replication/executions {"policy_id": N}`: a manual run; its id.
    pub async fn start_replication(&self, policy_id: i64) -> i64 {
        self.create(
            "/replication/executions",
            &json!({ "policy_id": policy_id }),
        )
        .await
    }

    /// `PUT /replication/executions/{id}` without a body, as harborapi stops one.
    pub async fn stop_replication(&self, id: i64) {
        let path = format!("/replication/executions/{id}");
        let (status, _, answer) = self.call(reqwest::Method::PUT, &path, None).await;
        assert_eq!(status, 200, "PUT {path}: {answer}");
    }

    pub async fn execution(&self, id: i64) -> Value {
        self.get(&format!("/replication/executions/{id}")).await
    }

    /// The executions of `policy_id`, newest first (up to 100).
    pub async fn executions(&self, policy_id: i64) -> Vec<Value> {
        let list = self
            .get(&format!(
                "/replication/executions?policy_id={policy_id}&page_size=100"
            ))
            .await;
        list.as_array().cloned().unwrap_or_default()
    }

    /// The tasks of execution `id`, in id order (up to 100).
    pub async fn tasks(&self, id: i64) -> Vec<Value> {
        let list = self
            .get(&format!(
                "/replication/executions/{id}/tasks?page_size=100&sort=id"
            ))
            .await;
        list.as_array().cloned().unwrap_or_default()
    }

    /// Every task of every execution of `policy_id`, each with its execution's
    /// `trigger` added as `execution_trigger`.
    pub async fn policy_tasks(&self, policy_id: i64) -> Vec<Value> {
        let mut all = Vec::new();
        for execution in self.executions(policy_id).await {
            let id = execution["id"].as_i64().expect("an execution id");
            for mut task in self.tasks(id).await {
                task["execution_trigger"] = execution["trigger"].clone();
                all.push(task);
            }
        }
        all.sort_by_key(|t| t["id"].as_i64());
        all
    }

    /// The copy tasks of `policy_id` whose source is `src_resource` (`repo:tag`).
    pub async fn copies_of(&self, policy_id: i64, src_resource: &str) -> Vec<Value> {
        self.policy_tasks(policy_id)
            .await
            .into_iter()
            .filter(|t| t["operation"] == "copy" && t["src_resource"] == src_resource)
            .collect()
    }

    /// Waits until a copy task of `policy_id` from `src_resource` exists and has
    /// ended; returns it (the latest, when there are several).
    pub async fn wait_copy(&self, policy_id: i64, src_resource: &str, within: Duration) -> Value {
        eventually(
            &format!("policy {policy_id} copies {src_resource}"),
            within,
            || async move {
                let tasks = self.copies_of(policy_id, src_resource).await;
                match tasks.last() {
                    Some(task) if is_final(task) => Ok(task.clone()),
                    Some(task) => {
                        let log = self.task_log(task).await;
                        Err(format!("not final yet: {task}\ntask log:\n{log}"))
                    }
                    None => {
                        let all = self.policy_tasks(policy_id).await;
                        Err(format!("no copy task yet; the policy's tasks: {all:?}"))
                    }
                }
            },
        )
        .await
    }

    /// The log of `task` (`GET …/tasks/{id}/log`).
    pub async fn task_log(&self, task: &Value) -> String {
        let path = format!(
            "/replication/executions/{}/tasks/{}/log",
            task["execution_id"], task["id"]
        );
        let (status, _, body) = self.call(reqwest::Method::GET, &path, None).await;
        match body {
            Value::String(text) if status == 200 => text,
            other => format!("({status}: {other})"),
        }
    }

    /// Waits until execution `id` has ended; returns it.
    pub async fn wait_execution(&self, id: i64, within: Duration) -> Value {
        eventually(
            &format!("replication execution {id} ends"),
            within,
            || async move {
                let execution = self.execution(id).await;
                check(is_final(&execution), &execution)?;
                Ok(execution)
            },
        )
        .await
    }

    /// Waits until every task of every execution of `policy_id` has ended (and there
    /// is at least one); returns them.
    pub async fn wait_policy_settled(&self, policy_id: i64, within: Duration) -> Vec<Value> {
        eventually(
            &format!("every task of policy {policy_id} ends"),
            within,
            || async move {
                let tasks = self.policy_tasks(policy_id).await;
                let open: Vec<&Value> = tasks.iter().filter(|t| !is_final(t)).collect();
                check(!tasks.is_empty() && open.is_empty(), format!("{open:?}"))?;
                Ok(tasks)
            },
        )
        .await
    }
}

/// Whether a task or an execution has a final Harbor status.
pub fn is_final(item: &Value) -> bool {
    FINAL.iter().any(|s| item["status"] == *s)
}

/// A task's count field (`blobs_uploaded`, …) as a number; panics when absent.
pub fn count(task: &Value, key: &str) -> i64 {
    task[key]
        .as_i64()
        .unwrap_or_else(|| panic!("task without {key}: {task}"))
}

// --- Request bodies ----------------------------------------------------------------

/// A `docker-registry` endpoint at `url` with a basic credential.
pub fn registry_body(name: &str, url: &str, username: &str, password: &str) -> Value {
    json!({
        "name": name,
        "type": "docker-registry",
        "url": url,
        "insecure": false,
        "credential": {"type": "basic", "access_key": username, "access_secret": password},
    })
}

/// The endpoint of a test docker-registry (htpasswd user) at `url` (the registry's
/// own URL, or a proxy's in front of it).
pub fn docker_registry_body(name: &str, url: &str) -> Value {
    registry_body(name, url, USERNAME, PASSWORD)
}

/// An enabled, event-based push policy to registry `dest` with nothing filtered and
/// names kept; tests change what they need.
pub fn push_policy(name: &str, dest: i64) -> Value {
    json!({
        "name": name,
        "dest_registry": {"id": dest},
        "trigger": {"type": "event_based", "trigger_settings": {"cron": ""}},
        "filters": [],
        "dest_namespace": "",
        "dest_namespace_replace_count": -1,
        "override": true,
        "enabled": true,
        "replicate_deletion": false,
        "speed": 0,
    })
}

// --- Registries ----------------------------------------------------------------------

/// A client of a test docker-registry (htpasswd user) at `url`.
pub fn docker_client(url: &str) -> RegistryClient {
    client(url, basic(USERNAME, PASSWORD))
}

/// The digest `repository:reference` has at `registry`, `None` when it is not there.
pub async fn digest_at(
    registry: &RegistryClient,
    repository: &str,
    reference: &str,
) -> Option<String> {
    registry
        .head_manifest(repository, reference)
        .await
        .unwrap_or_else(|e| panic!("HEAD {repository}:{reference}: {e}"))
        .map(|info| info.digest)
}

/// Waits until `repository:reference` is `digest` at `registry`.
pub async fn wait_digest(
    registry: &RegistryClient,
    repository: &str,
    reference: &str,
    digest: &str,
    within: Duration,
) {
    eventually(
        &format!("{repository}:{reference} is {digest} at the destination"),
        within,
        || async move {
            let found = registry.head_manifest(repository, reference).await;
            match found {
                Ok(Some(info)) => check(info.digest == digest, &info.digest),
                Ok(None) => Err("not there".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
}

/// An image over `layers` with a config of its own (JSON, unique).
pub fn image_with_layers(layers: Vec<(Bytes, String)>) -> TestImage {
    TestImage::from_parts(TestImage::random(&[]).config, layers, None)
}

/// A multi-arch OCI index over two platform images that share a layer.
pub struct TestIndex {
    pub children: Vec<TestImage>,
    pub bytes: Bytes,
    pub digest: String,
}

impl TestIndex {
    pub fn random() -> TestIndex {
        let shared = random_blob(60_000);
        let amd = image_with_layers(vec![shared.clone(), random_blob(5_000)]);
        let arm = image_with_layers(vec![shared, random_blob(6_000)]);
        let entry = |image: &TestImage, arch: &str| {
            json!({
                "mediaType": OCI_MANIFEST,
                "digest": image.digest,
                "size": image.manifest.len(),
                "platform": {"architecture": arch, "os": "linux"},
            })
        };
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [entry(&amd, "amd64"), entry(&arm, "arm64")],
        }))
        .expect("serialize an index");
        let digest = berth_registry_client::sha256_digest(&index);
        TestIndex {
            children: vec![amd, arm],
            bytes: Bytes::from(index),
            digest,
        }
    }

    /// Pushes the children by digest, then the index under `tag`.
    pub async fn push(&self, registry: &RegistryClient, repository: &str, tag: &str) {
        for child in &self.children {
            child.push(registry, repository, &child.digest).await;
        }
        let digest = registry
            .put_manifest(repository, tag, OCI_INDEX, self.bytes.clone())
            .await
            .expect("put the index");
        assert_eq!(digest, self.digest);
    }
}

/// Asserts that `repository` at `registry` has the index under `tag` with the same
/// bytes, and each child under its digest.
pub async fn assert_index_at(
    registry: &RegistryClient,
    repository: &str,
    tag: &str,
    index: &TestIndex,
) {
    let manifest = registry
        .get_manifest(repository, tag)
        .await
        .unwrap_or_else(|e| panic!("GET {repository}:{tag}: {e}"));
    assert_eq!(manifest.digest, index.digest, "{repository}:{tag}");
    assert_eq!(
        manifest.bytes, index.bytes,
        "{repository}:{tag}: other bytes"
    );
    for child in &index.children {
        assert_eq!(
            digest_at(registry, repository, &child.digest)
                .await
                .as_deref(),
            Some(child.digest.as_str()),
            "child {} of {repository}:{tag}",
            child.digest
        );
        for (_, blob) in child.blobs() {
            assert!(
                registry
                    .head_blob(repository, &blob)
                    .await
                    .expect("HEAD a blob")
                    .is_some(),
                "blob {blob} of child {} is missing in {repository}",
                child.digest
            );
        }
    }
}

/// Starts a docker-registry with htpasswd auth.
pub async fn docker_registry() -> DockerRegistry {
    DockerRegistry::start_with_auth().await
}

// --- The proxy's log -------------------------------------------------------------------

/// The requests of `log` the proxy saw after `since`.
pub fn seen_after(log: &[Seen], since: Instant) -> Vec<Seen> {
    log.iter().filter(|s| s.at > since).cloned().collect()
}

/// The most entries of `log` within any window of length `window`.
pub fn max_in_window(log: &[Seen], window: Duration) -> usize {
    let mut times: Vec<Instant> = log.iter().map(|s| s.at).collect();
    times.sort();
    let mut most = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end].duration_since(times[start]) > window {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

/// The log, one request a line, for failure messages.
pub fn show(log: &[Seen]) -> String {
    let Some(first) = log.first().map(|s| s.at) else {
        return "(no requests)".to_owned();
    };
    log.iter()
        .map(|s| {
            format!(
                "{:>8.3}s {} {} → {}{}",
                s.at.saturating_duration_since(first).as_secs_f64(),
                s.method,
                s.path_and_query,
                s.status,
                if s.faulted { " (fault)" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The most bytes any upload in progress for `repository` at `registry` holds (its
/// `data` file under the storage root; 0 when there is none): how far a blob upload
/// has got.
pub fn partial_upload_bytes(registry: &DockerRegistry, repository: &str) -> u64 {
    let dir = registry
        .storage
        .join("docker/registry/v2/repositories")
        .join(repository)
        .join("_uploads");
    registry
        .uploads(repository)
        .iter()
        .filter_map(|id| std::fs::metadata(dir.join(id).join("data")).ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

/// Pushes `image`'s blobs to `repository` at `registry`, not its manifest (no event).
pub async fn push_blobs(registry: &RegistryClient, repository: &str, image: &TestImage) {
    for (data, digest) in image.blobs() {
        if registry
            .head_blob(repository, &digest)
            .await
            .expect("HEAD a blob")
            .is_some()
        {
            continue;
        }
        registry
            .push_blob(
                repository,
                &digest,
                data.len() as u64,
                crate::support::stream_of(data, 64 * 1024),
                None,
            )
            .await
            .expect("push a blob");
    }
}
