//! The pipeline harness: every test gets a fresh PostgreSQL database, its own
//! nats-server (which it can stop and restart on the same port and store; both from
//! `berth_events::testing`), the gateway
//! and any number of `berth-workers echo` processes as children, plus clients for the
//! registry, the management API, JetStream and the database.
//!
//! Everything runs as real processes because the properties under test are about
//! processes: a worker killed with SIGKILL, NATS going away under a running gateway,
//! three workers sharing one consumer. Children die with the test (`Drop`), and when a
//! test fails the tails of their logs are printed, since the temporary directory that
//! holds them is removed.
//!
//! Waiting is always polling with a generous deadline ([`eventually`]): these tests
//! run on a loaded 2-core CI machine, so they assert on counts and orders, and on
//! timings only as lower bounds.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use berth_events::testing::{free_port, NatsServer, TestDatabase};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use tempfile::TempDir;

pub use berth_events::streams::{DEAD_LETTER_STREAM, EVENTS_STREAM, JOBS_STREAM};

/// How long a test waits for anything that should happen "soon" (a process to start,
/// events to flow). Generous: a deadline only matters when something is broken.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The durable consumer of echo tasks on the jobs stream.
pub const ECHO_CONSUMER: &str = "echo";
/// The durable consumer of `artifact.pushed` events that the echo kind runs.
pub const ECHO_EVENTS_CONSUMER: &str = "echo-events";

// --- Polling -----------------------------------------------------------------------

/// Polls `probe` every 100 ms until it returns `Ok`, and returns that value; panics
/// with `what` and the last `Err` once `within` has passed.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) => {
                if start.elapsed() > within {
                    panic!("{what}: not within {within:?}; last observation: {last}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `Ok(())` when `condition` holds, else `Err(observation)`: for [`eventually`] probes.
pub fn check(condition: bool, observation: impl Display) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(observation.to_string())
    }
}

// --- Child processes ---------------------------------------------------------------

/// A child process whose stdout and stderr go to `log`; killed on drop.
pub struct ChildProcess {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl ChildProcess {
    /// Starts `command` with its output appended to `log` (a restart keeps the
    /// earlier output).
    fn spawn(name: &str, mut command: Command, log: &Path) -> ChildProcess {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the child's log");
        let stderr = file.try_clone().expect("clone the log handle");
        let child = command
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({command:?}): {e}"));
        ChildProcess {
            name: name.to_owned(),
            log: log.to_path_buf(),
            child: Some(child),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends SIGTERM and waits up to `grace` for the process to exit, then kills it.
    /// Returns whether it exited by itself.
    pub async fn terminate(&mut self, grace: Duration) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        if child.try_wait().ok().flatten().is_none() {
            let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
            // SAFETY: `kill` only sends a signal; the pid is our own unreaped child, so
            // it cannot have been recycled for another process.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let start = Instant::now();
        while start.elapsed() < grace {
            if child.try_wait().ok().flatten().is_some() {
                self.child = None;
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
        false
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// --- The gateway -------------------------------------------------------------------

/// Where `cargo build -p berth-gateway` put the gateway: next to the workers binary.
/// (A test of one package cannot ask cargo for another package's binary.)
pub fn gateway_binary() -> PathBuf {
    let workers = PathBuf::from(env!("CARGO_BIN_EXE_berth-workers"));
    let gateway = workers
        .parent()
        .expect("the workers binary is in a directory")
        .join("berth-gateway");
    assert!(
        gateway.exists(),
        "{} does not exist: build it first with `cargo build -p berth-gateway` \
         (scripts/test.sh does)",
        gateway.display()
    );
    gateway
}

pub struct Gateway {
    pub process: ChildProcess,
    /// `http://127.0.0.1:<port>`
    pub address: String,
    /// `BERTH_DATA_DIR`: where it keeps its blobs, `secret.key` and `auth/token-key.pem`
    /// (the replication tests hand the keys to their workers).
    #[allow(dead_code)]
    pub data_dir: PathBuf,
}

impl Gateway {
    async fn start(
        database_url: &str,
        nats_url: &str,
        dir: &Path,
        pipeline_env: &[(String, String)],
    ) -> Gateway {
        let port = free_port();
        let data_dir = dir.join("gateway-data");
        std::fs::create_dir_all(&data_dir).expect("create the gateway data directory");
        let mut command = Command::new(gateway_binary());
        command
            .env("BERTH_LISTEN", format!("127.0.0.1:{port}"))
            .env("BERTH_DATABASE_URL", database_url)
            .env("BERTH_DATABASE_MAX_CONNECTIONS", "8")
            .env("BERTH_DATA_DIR", &data_dir)
            .env("BERTH_AUTH__MODE", "none")
            .env("BERTH_AUTH__ADMIN_PASSWORD", "Admin-Passw0rd")
            .env("BERTH_PROJECTS__CREATE_ON_PUSH", "true")
            // Nothing here needs durable blobs; fsync would only slow 200 pushes.
            .env("BERTH_STORAGE__FSYNC", "false")
            .env("BERTH_SHUTDOWN_GRACE_SECS", "2")
            .env("BERTH_NATS_URL", nats_url)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(pipeline_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut process = ChildProcess::spawn("berth-gateway", command, &dir.join("gateway.log"));
        let address = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let probe = format!("{address}/v2/");
        eventually("the gateway answers /v2/", DEADLINE, || {
            let exited = process.exited();
            let request = client.get(&probe).send();
            async move {
                if let Some(status) = exited {
                    panic!("berth-gateway exited at start ({status})");
                }
                let response = request.await.map_err(|e| e.to_string())?;
                // 401: up, with auth on (the replication tests turn it on).
                check(
                    response.status() == 200 || response.status() == 401,
                    response.status(),
                )
            }
        })
        .await;
        Gateway {
            process,
            address,
            data_dir,
        }
    }
}

// --- Workers -----------------------------------------------------------------------

/// Settings of one `berth-workers <kind>` process (echo unless `kind` says otherwise).
/// The defaults are short so tests stay short: a crashed worker's task returns after a
/// few seconds, control changes are noticed within a fraction of a second.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The subcommand: `echo` by default.
    pub kind: String,
    pub ack_wait_secs: u64,
    pub max_deliver: i64,
    pub max_ack_pending: i64,
    pub concurrency: usize,
    pub retry_initial_ms: u64,
    pub retry_multiplier: f64,
    pub retry_jitter: f64,
    pub relay: bool,
    /// Further `BERTH_…` variables.
    pub extra_env: Vec<(String, String)>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            kind: "echo".to_owned(),
            ack_wait_secs: 5,
            max_deliver: 5,
            max_ack_pending: 64,
            concurrency: 4,
            retry_initial_ms: 200,
            retry_multiplier: 2.0,
            retry_jitter: 0.1,
            relay: true,
            extra_env: Vec::new(),
        }
    }
}

impl WorkerOptions {
    fn env(&self) -> Vec<(String, String)> {
        let c = "BERTH_PIPELINE__CONSUMER__";
        let mut env = vec![
            (format!("{c}ACK_WAIT_SECS"), self.ack_wait_secs.to_string()),
            (format!("{c}MAX_DELIVER"), self.max_deliver.to_string()),
            (
                format!("{c}MAX_ACK_PENDING"),
                self.max_ack_pending.to_string(),
            ),
            (format!("{c}CONCURRENCY"), self.concurrency.to_string()),
            (
                format!("{c}RETRY_INITIAL_MS"),
                self.retry_initial_ms.to_string(),
            ),
            (
                format!("{c}RETRY_MULTIPLIER"),
                self.retry_multiplier.to_string(),
            ),
            (format!("{c}RETRY_JITTER"), self.retry_jitter.to_string()),
            (
                "BERTH_PIPELINE__RELAY__ENABLED".to_owned(),
                self.relay.to_string(),
            ),
            (
                "BERTH_PIPELINE__RELAY__POLL_INTERVAL_MS".to_owned(),
                "200".to_owned(),
            ),
        ];
        env.extend(pipeline_env());
        env.extend(self.extra_env.iter().cloned());
        env
    }
}

/// Pipeline settings the gateway and every worker share: quick heartbeats, control
/// polls and schedule polls, so the tests' waits are short.
fn pipeline_env() -> Vec<(String, String)> {
    vec![
        ("BERTH_PIPELINE__HEARTBEAT_MS".to_owned(), "500".to_owned()),
        (
            "BERTH_PIPELINE__CONTROL_POLL_MS".to_owned(),
            "250".to_owned(),
        ),
        (
            "BERTH_PIPELINE__SCHEDULE_POLL_MS".to_owned(),
            "200".to_owned(),
        ),
    ]
}

pub struct Worker {
    pub process: ChildProcess,
}

impl Worker {
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

// --- The whole pipeline ------------------------------------------------------------

/// One test's pipeline: database, NATS, gateway, workers, and clients of each.
pub struct Pipeline {
    /// The test's own connection pool, for assertions on job state.
    pub db: PgPool,
    pub nats: NatsServer,
    pub gateway: Gateway,
    pub registry: Registry,
    pub api: Api,
    /// Workers in start order; a stopped one stays in the list (its log is printed on
    /// failure) with its process gone.
    pub workers: Vec<Worker>,
    /// Logs and the gateway's data (the nats-server keeps its store and log in a
    /// directory of its own).
    pub dir: TempDir,
    // Declared last: dropped after the pool, which lets the database go.
    pub database: TestDatabase,
}

impl Pipeline {
    /// A database, a nats-server and a gateway; no workers yet.
    pub async fn start() -> Pipeline {
        Pipeline::start_with(&[]).await
    }

    /// [`Pipeline::start`] with further `BERTH_…` settings for the gateway (they win
    /// over the harness's own: `BERTH_AUTH__MODE=token` turns auth on).
    pub async fn start_with(gateway_env: &[(String, String)]) -> Pipeline {
        let mut env = pipeline_env();
        env.extend_from_slice(gateway_env);
        let database = TestDatabase::create().await;
        let dir = tempfile::Builder::new()
            .prefix("berth-pipeline-")
            .tempdir()
            .expect("create a temporary directory");
        let nats = NatsServer::start().await;
        let gateway = Gateway::start(&database.url, &nats.url(), dir.path(), &env).await;
        Pipeline {
            registry: Registry::new(&gateway.address),
            api: Api::new(&gateway.address),
            db: database.pool.clone(),
            nats,
            gateway,
            workers: Vec::new(),
            dir,
            database,
        }
    }

    /// Starts `berth-workers <options.kind>` and waits until it registered in
    /// the worker pool (which it does once its consumers exist). Returns its index in
    /// `workers`.
    pub async fn start_worker(&mut self, options: WorkerOptions) -> usize {
        let index = self.workers.len();
        let mut command = Command::new(env!("CARGO_BIN_EXE_berth-workers"));
        command
            .arg(&options.kind)
            .env("BERTH_DATABASE_URL", &self.database.url)
            .env("BERTH_NATS_URL", self.nats.url())
            // Up to three workers and a gateway per test, two tests at a time: keep
            // well under PostgreSQL's 100 connections.
            .env("BERTH_DATABASE_MAX_CONNECTIONS", "6")
            .env("BERTH_DRAIN_SECS", "10")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(options.env());
        let log = self.dir.path().join(format!("worker-{index}.log"));
        let process = ChildProcess::spawn(&format!("berth-workers #{index}"), command, &log);
        self.workers.push(Worker { process });
        self.wait_registered(index).await;
        index
    }

    /// Starts `n` workers with the same options; returns their indexes.
    pub async fn start_workers(&mut self, n: usize, options: WorkerOptions) -> Vec<usize> {
        let mut indexes = Vec::new();
        for _ in 0..n {
            indexes.push(self.start_worker(options.clone()).await);
        }
        indexes
    }

    async fn wait_registered(&mut self, index: usize) {
        let pid = i32::try_from(self.workers[index].pid()).expect("pid fits i32");
        let db = self.db.clone();
        let worker = &mut self.workers[index];
        eventually(
            &format!("worker #{index} (pid {pid}) registers in worker_processes"),
            DEADLINE,
            || {
                let exited = worker.process.exited();
                let db = db.clone();
                async move {
                    if let Some(status) = exited {
                        panic!("worker #{index} exited at start ({status})");
                    }
                    let n: i64 =
                        sqlx::query_scalar("SELECT count(*) FROM worker_processes WHERE pid = $1")
                            .bind(pid)
                            .fetch_one(&db)
                            .await
                            .map_err(|e| e.to_string())?;
                    check(n > 0, "not registered yet")
                }
            },
        )
        .await;
    }

    /// SIGTERM to worker `index`; waits for it to drain and exit. Returns whether it
    /// exited within `grace` by itself (else it was killed).
    pub async fn stop_worker(&mut self, index: usize, grace: Duration) -> bool {
        self.workers[index].process.terminate(grace).await
    }

    /// SIGKILL to worker `index`.
    pub fn kill_worker(&mut self, index: usize) {
        self.workers[index].process.kill();
    }

    /// Stops every worker gracefully.
    pub async fn stop_workers(&mut self) {
        for i in 0..self.workers.len() {
            self.stop_worker(i, Duration::from_secs(30)).await;
        }
    }

    /// The pids of the workers still running.
    pub fn live_worker_pids(&mut self) -> Vec<u32> {
        self.workers
            .iter_mut()
            .filter_map(|w| {
                let running = w.process.child.is_some() && w.process.exited().is_none();
                running.then(|| w.pid())
            })
            .collect()
    }

    // --- JetStream ---------------------------------------------------------------

    pub async fn jetstream(&self) -> jetstream::Context {
        self.nats.jetstream().await
    }

    /// Messages of `stream` in sequence order (a stream's sequence is its publish
    /// order). Sequences that are gone (acked from a work queue) are skipped.
    pub async fn stream_messages(&self, stream: &str) -> Vec<jetstream::message::StreamMessage> {
        let js = self.jetstream().await;
        let mut handle = js
            .get_stream(stream)
            .await
            .unwrap_or_else(|e| panic!("stream {stream}: {e}"));
        let state = handle
            .info()
            .await
            .unwrap_or_else(|e| panic!("stream {stream} info: {e}"))
            .state
            .clone();
        let mut messages = Vec::new();
        if state.messages == 0 {
            return messages;
        }
        for seq in state.first_sequence..=state.last_sequence {
            if let Ok(message) = handle.get_raw_message(seq).await {
                messages.push(message);
            }
        }
        messages
    }

    /// How many messages `stream` holds; 0 if it does not exist yet.
    pub async fn stream_count(&self, stream: &str) -> Result<u64, String> {
        let js = self.jetstream().await;
        let mut handle = js
            .get_stream(stream)
            .await
            .map_err(|e| format!("stream {stream}: {e}"))?;
        Ok(handle
            .info()
            .await
            .map_err(|e| format!("stream {stream} info: {e}"))?
            .state
            .messages)
    }

    /// The server's view of consumer `durable` on `stream`.
    pub async fn consumer_info(
        &self,
        stream: &str,
        durable: &str,
    ) -> Result<jetstream::consumer::Info, String> {
        let js = self.jetstream().await;
        let handle = js
            .get_stream(stream)
            .await
            .map_err(|e| format!("stream {stream}: {e}"))?;
        handle
            .consumer_info(durable)
            .await
            .map_err(|e| format!("consumer {durable} on {stream}: {e}"))
    }

    /// The dead letters, in order.
    pub async fn dead_letters(&self) -> Vec<DeadLetter> {
        self.stream_messages(DEAD_LETTER_STREAM)
            .await
            .into_iter()
            .map(|m| DeadLetter {
                subject: m.subject.to_string(),
                reason: header(&m.headers, "Berth-Dead-Reason"),
                deliveries: header(&m.headers, "Berth-Dead-Deliveries"),
                original_subject: header(&m.headers, "Berth-Dead-Subject"),
                payload: m.payload.to_vec(),
            })
            .collect()
    }

    // --- Job state -----------------------------------------------------------------

    /// The tasks of an execution in id order.
    pub async fn tasks(&self, execution_id: i64) -> Vec<TaskRow> {
        sqlx::query_as::<_, TaskRow>(
            "SELECT id, payload, status, status_message, attempts, worker_id, log,
                    started_at, ended_at
             FROM tasks WHERE execution_id = $1 ORDER BY id",
        )
        .bind(execution_id)
        .fetch_all(&self.db)
        .await
        .expect("read tasks")
    }

    /// One task by id.
    pub async fn task(&self, id: i64) -> TaskRow {
        sqlx::query_as::<_, TaskRow>(
            "SELECT id, payload, status, status_message, attempts, worker_id, log,
                    started_at, ended_at
             FROM tasks WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&self.db)
        .await
        .expect("read task")
    }

    /// How many tasks of an execution are in each status.
    pub async fn task_statuses(&self, execution_id: i64) -> BTreeMap<String, i64> {
        sqlx::query_as::<_, (String, i64)>(
            "SELECT status, count(*) FROM tasks WHERE execution_id = $1 GROUP BY status",
        )
        .bind(execution_id)
        .fetch_all(&self.db)
        .await
        .expect("count tasks")
        .into_iter()
        .collect()
    }

    /// Waits until every task of the execution is final; returns them.
    pub async fn wait_tasks_final(&self, execution_id: i64, within: Duration) -> Vec<TaskRow> {
        eventually(
            &format!("every task of execution {execution_id} finishes"),
            within,
            || async move {
                let statuses = self.task_statuses(execution_id).await;
                let unfinished: i64 = ["pending", "running"]
                    .iter()
                    .filter_map(|s| statuses.get(*s))
                    .sum();
                check(
                    unfinished == 0 && !statuses.is_empty(),
                    format!("{statuses:?}"),
                )
            },
        )
        .await;
        self.tasks(execution_id).await
    }

    /// Rows in the outbox.
    pub async fn outbox_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&self.db)
            .await
            .expect("count outbox rows")
    }

    /// The database server's clock (the clock of every timestamp in the job tables).
    pub async fn db_now(&self) -> DateTime<Utc> {
        sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(&self.db)
            .await
            .expect("read the database clock")
    }

    /// Prints the tails of every log; called when a test fails.
    fn print_logs(&self) {
        let mut logs = vec![("nats-server".to_owned(), self.nats.log_path())];
        logs.push(("berth-gateway".to_owned(), self.gateway.process.log.clone()));
        for w in &self.workers {
            logs.push((w.process.name.clone(), w.process.log.clone()));
        }
        for (name, path) in logs {
            eprintln!(
                "----- {name}: last lines of {} -----\n{}",
                path.display(),
                tail(&path, 60)
            );
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        // Children first: they write into `dir` and hold connections to the database.
        for w in &mut self.workers {
            w.process.kill();
        }
        self.gateway.process.kill();
        self.nats.kill();
    }
}

/// A value of header `name` as a string ("" when absent). The name is parsed, not
/// taken as is: a received `Nats-Msg-Id` is the client's standard header, which a
/// custom header of the same spelling does not match.
pub fn header(headers: &async_nats::HeaderMap, name: &str) -> String {
    name.parse::<async_nats::header::HeaderName>()
        .ok()
        .and_then(|name| headers.get(name))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}

/// A message of the dead-letter stream.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub subject: String,
    pub reason: String,
    pub deliveries: String,
    pub original_subject: String,
    pub payload: Vec<u8>,
}

/// A task row, as tests look at it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TaskRow {
    pub id: i64,
    pub payload: Value,
    pub status: String,
    pub status_message: String,
    pub attempts: i32,
    pub worker_id: Option<uuid::Uuid>,
    pub log: String,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

// --- Registry client ---------------------------------------------------------------

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The few registry calls these tests need: monolithic blob pushes and manifest PUTs.
#[derive(Clone)]
pub struct Registry {
    client: reqwest::Client,
    address: String,
}

impl Registry {
    pub fn new(address: &str) -> Registry {
        Registry {
            client: reqwest::Client::new(),
            address: address.to_owned(),
        }
    }

    /// Pushes `bytes` with one `POST …/blobs/uploads/?digest=`; asserts 201 and returns
    /// the digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256_digest(bytes);
        let response = self
            .client
            .post(format!(
                "{}/v2/{repo}/blobs/uploads/?digest={digest}",
                self.address
            ))
            .header("Content-Type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .expect("blob push request");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, 201, "push blob {digest} to {repo}: {body}");
        digest
    }

    /// `PUT /v2/<repo>/manifests/<reference>`; returns status and body.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> (u16, String) {
        let response = self
            .client
            .put(format!("{}/v2/{repo}/manifests/{reference}", self.address))
            .header("Content-Type", media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .expect("manifest push request");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// PUTs a manifest by its digest (so the push emits one event, no tag move);
    /// asserts 201 and returns the digest.
    pub async fn put_manifest_by_digest(
        &self,
        repo: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> String {
        let digest = sha256_digest(bytes);
        let (status, body) = self.put_manifest(repo, &digest, media_type, bytes).await;
        assert_eq!(status, 201, "push manifest {digest} to {repo}: {body}");
        digest
    }

    /// Pushes an empty OCI index made unique by `nonce`: a manifest without blobs, so
    /// one request is one push. Returns its digest.
    pub async fn push_index(&self, repo: &str, nonce: &str) -> String {
        let bytes = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [],
            "annotations": {"test.nonce": nonce},
        }))
        .expect("serialize an index");
        self.put_manifest_by_digest(repo, OCI_INDEX, &bytes).await
    }

    /// Pushes a small image (config and one layer, both unique by `nonce`) by digest;
    /// returns the manifest digest.
    pub async fn push_image(&self, repo: &str, nonce: &str) -> String {
        let config = image_config(nonce);
        let layer = format!("layer of {nonce}").into_bytes();
        let config_digest = self.push_blob(repo, &config).await;
        let layer_digest = self.push_blob(repo, &layer).await;
        let manifest = image_manifest(
            (&config_digest, config.len()),
            &[(&layer_digest, layer.len())],
        );
        self.put_manifest_by_digest(repo, OCI_MANIFEST, &manifest)
            .await
    }
}

/// An image config made unique by `nonce`.
pub fn image_config(nonce: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []}, "nonce": nonce,
    }))
    .expect("serialize a config")
}

/// An OCI image manifest over a config and layers given as (digest, size).
pub fn image_manifest(config: (&str, usize), layers: &[(&str, usize)]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.0, "size": config.1},
        "layers": layers.iter().map(|(d, s)| json!({
            "mediaType": OCI_LAYER, "digest": d, "size": s,
        })).collect::<Vec<_>>(),
    }))
    .expect("serialize a manifest")
}

// --- Management API client ---------------------------------------------------------

/// The jobs API (`/api/v2.0`). With `auth.mode = "none"` every caller is a system
/// administrator, so no credentials.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    address: String,
}

impl Api {
    pub fn new(address: &str) -> Api {
        Api {
            client: reqwest::Client::new(),
            address: address.to_owned(),
        }
    }

    /// A request to `/api/v2.0{path}`; returns the status, the `Location` header and
    /// the body (JSON, or `Null` when empty or not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Option<String>, Value) {
        let mut request = self
            .client
            .request(method.clone(), format!("{}/api/v2.0{path}", self.address));
        if let Some(body) = body {
            request = request.json(&body);
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

    /// `GET` that must answer 200; returns the JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let (status, _, body) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Starts an execution of `kind` with one task per payload; returns its id (from
    /// `Location`).
    pub async fn create_execution(&self, kind: &str, tasks: Vec<Value>) -> i64 {
        let (status, location, body) = self
            .call(
                reqwest::Method::POST,
                "/executions",
                Some(json!({"kind": kind, "tasks": tasks})),
            )
            .await;
        assert_eq!(status, 201, "POST /executions: {body}");
        let location = location.expect("POST /executions answers with a Location");
        location
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("Location {location:?} does not end in an execution id"))
    }

    /// `GET /executions/{id}`.
    pub async fn execution(&self, id: i64) -> Value {
        self.get_json(&format!("/executions/{id}")).await
    }

    /// `GET /executions/{id}/tasks`.
    pub async fn execution_tasks(&self, id: i64) -> Value {
        self.get_json(&format!("/executions/{id}/tasks?page_size=100"))
            .await
    }

    /// `PUT /executions/{id}` `{"action":"stop"}`; asserts 200.
    pub async fn stop_execution(&self, id: i64) {
        let (status, _, body) = self
            .call(
                reqwest::Method::PUT,
                &format!("/executions/{id}"),
                Some(json!({"action": "stop"})),
            )
            .await;
        assert_eq!(status, 200, "stop execution {id}: {body}");
    }

    /// `GET /jobservice/queues`.
    pub async fn queues(&self) -> Value {
        self.get_json("/jobservice/queues").await
    }

    /// The queue of `job_type` in `GET /jobservice/queues`.
    pub async fn queue(&self, job_type: &str) -> Value {
        let queues = self.queues().await;
        queues
            .as_array()
            .and_then(|all| all.iter().find(|q| q["job_type"] == job_type).cloned())
            .unwrap_or_else(|| panic!("no queue {job_type} in {queues}"))
    }

    /// `PUT /jobservice/queues/{job_type}` with `action`; asserts 200.
    pub async fn queue_action(&self, job_type: &str, action: &str) {
        let (status, _, body) = self
            .call(
                reqwest::Method::PUT,
                &format!("/jobservice/queues/{job_type}"),
                Some(json!({"action": action})),
            )
            .await;
        assert_eq!(status, 200, "{action} queue {job_type}: {body}");
    }

    /// `GET /jobservice/pools`.
    pub async fn pools(&self) -> Value {
        self.get_json("/jobservice/pools").await
    }
}
