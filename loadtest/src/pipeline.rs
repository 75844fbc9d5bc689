//! `loadtest pipeline …`: the event pipeline benchmark (issue 5), against a stack that
//! scripts/bench-pipeline.sh starts (nats-server, PostgreSQL, berth-gateway,
//! berth-workers). Each figure prints one JSON line, as the registry scenarios do, and
//! `pipeline report` turns them into a markdown table:
//!
//! - `relay`: outbox → JetStream throughput of one `berth-workers relay` process; its
//!   peer, in the same run, is this process publishing the same payloads to JetStream
//!   itself, pipelined the way the relay does it. The ratio is the share of raw
//!   JetStream speed the relay keeps while reading and deleting rows in PostgreSQL.
//! - `latency`: push → handler latency at a steady push rate (open loop: a push starts
//!   on schedule whether or not the ones before it finished).
//! - `cancel`: stop request → the last in-flight task stopped.
//! - `scale`: tasks/s of one execution of sleeping echo tasks with whatever worker
//!   processes run now; the report divides by N × the 1-process rate.
//!
//! The database URL comes from $LOADTEST_DATABASE_URL, never the command line (it may
//! carry a password). Times recorded by PostgreSQL (`now()` in a worker's transaction)
//! are compared with this process's wall clock: both read the same machine's clock.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use async_nats::header::{HeaderMap, NATS_MESSAGE_ID};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgPool, PgPoolOptions};
use uuid::Uuid;

use crate::data::sha256_digest;
use crate::http::{full, Registry, OCI_MANIFEST};
use crate::report::{self, Results};
use crate::scenarios::{make_image, push_image, Image};
use crate::stats::{mean_ms, percentile_ms};

/// The streams berth-events provisions (events/src/streams.rs).
const EVENTS_STREAM: &str = "BERTH_EVENTS";
const JOBS_STREAM: &str = "BERTH_JOBS";
/// The raw peer's stream and subject prefix: nothing of Berth's listens there.
const RAW_STREAM: &str = "BENCH_RAW";
const RAW_PREFIX: &str = "bench.raw";
/// Repositories the relay figure's events are spread over (ordering keys).
const RELAY_REPOS: usize = 50;
/// The jobs API (gateway/src/api/executions.rs).
const EXECUTIONS: &str = "/api/v2.0/executions";
/// "Linear scaling": N processes must reach this share of N × the 1-process rate.
const SCALE_MIN_RATIO: f64 = 0.9;
const RELAY_MIN_EVENTS_PER_S: f64 = 5_000.0;
const LATENCY_MAX_P99_MS: f64 = 250.0;
const CANCEL_MAX_MS: f64 = 1_000.0;

#[derive(Parser, Debug)]
#[command(
    name = "loadtest pipeline",
    about = "Benchmark Berth's event pipeline: outbox relay throughput, push → handler latency, \
             cancel latency, task throughput per worker process",
    after_help = "The database URL is read from $LOADTEST_DATABASE_URL. scripts/bench-pipeline.sh \
                  starts the servers and runs every figure."
)]
struct PipelineCli {
    #[command(subcommand)]
    figure: Figure,
}

#[derive(Subcommand, Debug)]
enum Figure {
    /// Outbox → JetStream events/s of one `berth-workers relay`, and raw JetStream
    /// publishing of the same payloads as its peer. Needs an empty outbox and no relay
    /// running; purges BERTH_EVENTS afterwards so no consumer sees the bench events.
    Relay(RelayArgs),
    /// Push → handler latency at a steady push rate (one echo worker running).
    Latency(LatencyArgs),
    /// Stop request → last in-flight task stopped (one echo worker, concurrency 4).
    Cancel(CancelArgs),
    /// Tasks/s of one execution of sleeping echo tasks with the workers running now.
    Scale(ScaleArgs),
    /// Markdown table of the JSON lines the other figures printed.
    Report(ReportArgs),
}

#[derive(Args, Debug)]
struct Nats {
    /// NATS server with JetStream (the one the workers use).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Print one JSON object on stdout (human lines go to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct Gateway {
    /// berth-gateway base URL (plain HTTP, auth off).
    #[arg(long, default_value = "http://127.0.0.1:5002")]
    target: String,
    /// Durable consumer of the echo kind on BERTH_JOBS.
    #[arg(long, default_value = "echo")]
    job_consumer: String,
    /// How long to wait for the pipeline to be idle before a measurement.
    #[arg(long, default_value_t = 120)]
    settle_secs: u64,
}

#[derive(Args, Debug)]
struct RelayArgs {
    #[command(flatten)]
    nats: Nats,
    /// The berth-workers binary: `<bin> relay` is started with this process's
    /// environment (BERTH_DATABASE_URL, BERTH_NATS_URL, …).
    #[arg(long)]
    workers_bin: PathBuf,
    /// Events (outbox rows).
    #[arg(long, default_value_t = 50_000)]
    count: usize,
    /// Publishes in flight before the peer awaits their acks: the relay's batch size
    /// (BERTH_PIPELINE__RELAY__BATCH_SIZE), so both pipeline alike.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// File the relay's output is appended to (default: discarded).
    #[arg(long)]
    log: Option<PathBuf>,
    /// Give up when the relay has not finished by then.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
}

#[derive(Args, Debug)]
struct LatencyArgs {
    #[command(flatten)]
    nats: Nats,
    #[command(flatten)]
    gateway: Gateway,
    /// Durable consumer of the echo kind on BERTH_EVENTS.
    #[arg(long, default_value = "echo-events")]
    event_consumer: String,
    /// Pushes per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    #[arg(long, default_value_t = 20)]
    duration_secs: u64,
    /// Repositories the pushes are spread over: `<prefix>-0` …
    #[arg(long, default_value_t = 4)]
    repos: usize,
    #[arg(long, default_value = "bench/pipeline")]
    repo_prefix: String,
    /// Size of each image's one layer, bytes.
    #[arg(long, default_value_t = 4096)]
    layer_bytes: usize,
    /// Seed of the generated images (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Args, Debug)]
struct CancelArgs {
    #[command(flatten)]
    nats: Nats,
    #[command(flatten)]
    gateway: Gateway,
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Tasks that block until cancelled (the worker's concurrency).
    #[arg(long, default_value_t = 4)]
    blocked: usize,
    /// Tasks queued behind them.
    #[arg(long, default_value_t = 500)]
    queued: usize,
}

#[derive(Args, Debug)]
struct ScaleArgs {
    #[command(flatten)]
    nats: Nats,
    #[command(flatten)]
    gateway: Gateway,
    /// Worker processes running (a label: this command starts none).
    #[arg(long)]
    processes: usize,
    /// Each process's concurrency (a label, for the ceiling).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    #[arg(long, default_value_t = 2_000)]
    tasks: usize,
    /// How long each task's handler sleeps.
    #[arg(long, default_value_t = 50)]
    sleep_ms: u64,
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
}

#[derive(Args, Debug)]
struct ReportArgs {
    /// JSON lines printed by the figures (a later line of a figure replaces an earlier).
    #[arg(long)]
    results: PathBuf,
    /// A note printed under the table (repeatable).
    #[arg(long)]
    note: Vec<String>,
}

/// Entry point of `loadtest pipeline …`; `args` starts with `pipeline`.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<()> {
    let cli = PipelineCli::parse_from(args);
    if let Figure::Report(a) = &cli.figure {
        return run_report(a);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (name, json_out, outcome) = match cli.figure {
            Figure::Relay(a) => ("pipeline-relay".to_owned(), a.nats.json, relay(&a).await?),
            Figure::Latency(a) => (
                "pipeline-latency".to_owned(),
                a.nats.json,
                latency(&a).await?,
            ),
            Figure::Cancel(a) => ("pipeline-cancel".to_owned(), a.nats.json, cancel(&a).await?),
            Figure::Scale(a) => (
                format!("pipeline-scale-{}", a.processes),
                a.nats.json,
                scale(&a).await?,
            ),
            Figure::Report(_) => unreachable!("handled above"),
        };
        let human = format!("{name:<18} {}", outcome.human);
        let mut obj = Map::new();
        obj.insert("scenario".into(), json!(name));
        obj.extend(outcome.json);
        if json_out {
            eprintln!("{human}");
            println!("{}", Value::Object(obj));
        } else {
            println!("{human}");
        }
        Ok(())
    })
}

struct Outcome {
    human: String,
    json: Map<String, Value>,
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn r1(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 10.0).round() / 10.0)
    } else {
        Value::Null
    }
}

fn r3(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

// ---------------------------------------------------------------- connections

async fn connect_db() -> Result<PgPool> {
    let url = std::env::var("LOADTEST_DATABASE_URL")
        .context("LOADTEST_DATABASE_URL must name Berth's database")?;
    PgPoolOptions::new()
        .max_connections(3)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&url)
        .await
        .context("connecting to $LOADTEST_DATABASE_URL")
}

async fn connect_nats(url: &str) -> Result<jetstream::Context> {
    let client = async_nats::connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {url}"))?;
    Ok(jetstream::new(client))
}

/// Messages stored in `stream`; `None` while it does not exist (or cannot be asked).
async fn stream_messages(js: &jetstream::Context, stream: &str) -> Option<u64> {
    js.get_stream(stream)
        .await
        .ok()
        .map(|s| s.cached_info().state.messages)
}

/// Waits until every `(stream, consumer)` exists: the workers provision them at start,
/// and a measurement that began before would time their start-up.
async fn wait_consumers(js: &jetstream::Context, consumers: &[(&str, &str)]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for (stream, consumer) in consumers {
        loop {
            let found = match js.get_stream(stream).await {
                Ok(s) => s.consumer_info(consumer).await.is_ok(),
                Err(_) => false,
            };
            if found {
                break;
            }
            if Instant::now() > deadline {
                bail!("consumer {consumer:?} on stream {stream} does not exist after 60 s; are the echo workers running?");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Waits until the pipeline is idle: no outbox row, no echo task pending or running,
/// nothing pending or unacked on `consumers`. A measurement must not pay for the
/// leftovers of the one before (the 500 queued tasks of a cancelled execution are
/// skipped one by one as they arrive).
async fn settle(
    db: &PgPool,
    js: &jetstream::Context,
    consumers: &[(&str, &str)],
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(db)
            .await?;
        let tasks: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tasks WHERE kind = 'echo' AND status IN ('pending', 'running')",
        )
        .fetch_one(db)
        .await?;
        let mut queued = 0u64;
        for (stream, consumer) in consumers {
            let info = js
                .get_stream(stream)
                .await
                .map_err(|e| anyhow!("stream {stream}: {e}"))?
                .consumer_info(consumer)
                .await
                .map_err(|e| anyhow!("consumer {consumer} on {stream}: {e}"))?;
            queued += info.num_pending + info.num_ack_pending as u64;
        }
        if outbox == 0 && tasks == 0 && queued == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the pipeline is still busy after {} s ({outbox} outbox rows, {tasks} echo tasks \
                 pending or running, {queued} messages queued or unacked)",
                limit.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------- the jobs API

/// One JSON request to the gateway's API; returns status, headers and body.
async fn api(
    reg: &Registry,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(StatusCode, hyper::HeaderMap, Bytes)> {
    let url = reg.url(path)?;
    let resp = match body {
        Some(b) => {
            let bytes = Bytes::from(serde_json::to_vec(b)?);
            let len = bytes.len().to_string();
            reg.send(
                method.clone(),
                &url,
                &[
                    ("content-type", "application/json"),
                    ("content-length", &len),
                ],
                full(bytes),
            )
            .await?
        }
        None => {
            reg.send(method.clone(), &url, &[], crate::http::empty())
                .await?
        }
    };
    let (parts, body) = resp.into_parts();
    let bytes = tokio::time::timeout(reg.timeout(), body.collect())
        .await
        .map_err(|_| anyhow!("{method} {url}: timed out reading the body"))?
        .with_context(|| format!("{method} {url}: reading the body"))?
        .to_bytes();
    Ok((parts.status, parts.headers, bytes))
}

/// `POST /api/v2.0/executions` of an echo execution with `tasks`; returns its id.
async fn start_execution(reg: &Registry, tasks: Vec<Value>) -> Result<i64> {
    let body = json!({ "kind": "echo", "tasks": tasks });
    let (status, headers, bytes) = api(reg, Method::POST, EXECUTIONS, Some(&body)).await?;
    if status != StatusCode::CREATED {
        bail!(
            "POST {EXECUTIONS}: expected 201, got {status}: {}",
            crate::http::truncate(&bytes)
        );
    }
    let location = headers
        .get(hyper::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| anyhow!("POST {EXECUTIONS}: 201 without a Location"))?;
    location
        .rsplit('/')
        .next()
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| anyhow!("POST {EXECUTIONS}: Location {location:?} names no execution id"))
}

async fn gateway(target: &str) -> Result<Registry> {
    let reg = Registry::new(target, Duration::from_secs(60))?;
    let (status, _, _) = api(&reg, Method::GET, "/v2/", None)
        .await
        .with_context(|| format!("is berth-gateway listening at {target}?"))?;
    ensure!(
        status == StatusCode::OK,
        "GET {target}/v2/ answered {status}; the benchmark wants auth off"
    );
    Ok(reg)
}

// ---------------------------------------------------------------- (a) relay

/// One benchmark event: an `artifact.pushed` envelope as the gateway writes it.
struct BenchEvent {
    id: Uuid,
    repo: usize,
    payload: Bytes,
}

impl BenchEvent {
    fn subject(&self) -> String {
        format!("berth.events.artifact.pushed.bench.r{}", self.repo)
    }

    fn raw_subject(&self) -> String {
        format!("{RAW_PREFIX}.artifact.pushed.bench.r{}", self.repo)
    }

    fn ordering_key(&self) -> String {
        format!("bench/r{}", self.repo)
    }
}

/// `n` CloudEvents envelopes shaped like the gateway's `io.berth.artifact.pushed.v1`
/// (about 450 bytes each), spread over `RELAY_REPOS` repositories.
fn bench_events(n: usize) -> Vec<BenchEvent> {
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    (0..n)
        .map(|i| {
            let id = Uuid::new_v4();
            let repo = i % RELAY_REPOS;
            let repository = format!("bench/r{repo}");
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(id.as_bytes())));
            let envelope = json!({
                "specversion": "1.0",
                "id": id,
                "source": "/berth/gateway",
                "type": "io.berth.artifact.pushed.v1",
                "time": time,
                "subject": format!("{repository}@{digest}"),
                "datacontenttype": "application/json",
                "data": {
                    "project": "bench",
                    "repository": repository,
                    "digest": digest,
                    "media_type": OCI_MANIFEST,
                    "tag": format!("v{i}"),
                    "actor": "admin",
                },
            });
            BenchEvent {
                id,
                repo,
                payload: Bytes::from(envelope.to_string()),
            }
        })
        .collect()
}

async fn insert_outbox(db: &PgPool, events: &[BenchEvent]) -> Result<()> {
    for chunk in events.chunks(5_000) {
        let ids: Vec<Uuid> = chunk.iter().map(|e| e.id).collect();
        let subjects: Vec<String> = chunk.iter().map(BenchEvent::subject).collect();
        let keys: Vec<String> = chunk.iter().map(BenchEvent::ordering_key).collect();
        let payloads: Vec<Vec<u8>> = chunk.iter().map(|e| e.payload.to_vec()).collect();
        sqlx::query(
            "INSERT INTO outbox (event_id, subject, ordering_key, payload) \
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::bytea[])",
        )
        .bind(ids)
        .bind(subjects)
        .bind(keys)
        .bind(payloads)
        .execute(db)
        .await
        .context("inserting outbox rows")?;
    }
    Ok(())
}

async fn relay(a: &RelayArgs) -> Result<Outcome> {
    ensure!(
        a.count > 0 && a.batch > 0,
        "--count and --batch must be positive"
    );
    let db = connect_db().await?;
    let js = connect_nats(&a.nats.nats_url).await?;
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&db)
        .await?;
    ensure!(
        waiting == 0,
        "the outbox already holds {waiting} rows; the relay figure needs it empty and no relay running"
    );
    let n = a.count;
    let events = tokio::task::spawn_blocking(move || bench_events(n)).await?;
    let payload_bytes = events.iter().map(|e| e.payload.len()).sum::<usize>() as f64 / n as f64;
    let t_insert = Instant::now();
    insert_outbox(&db, &events).await?;
    let insert_s = t_insert.elapsed().as_secs_f64();
    let before = stream_messages(&js, EVENTS_STREAM).await.unwrap_or(0);
    let target = before + n as u64;
    eprintln!(
        "relay: {n} outbox rows of {payload_bytes:.0} B inserted in {insert_s:.2} s; starting {} relay",
        a.workers_bin.display()
    );

    let log = match &a.log {
        Some(p) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening {}", p.display()))?,
        ),
        None => Stdio::null(),
    };
    let log_err = match &a.log {
        Some(p) => Stdio::from(
            std::fs::OpenOptions::new()
                .append(true)
                .open(p)
                .with_context(|| format!("opening {}", p.display()))?,
        ),
        None => Stdio::null(),
    };
    let t0 = Instant::now();
    let mut child = tokio::process::Command::new(&a.workers_bin)
        .arg("relay")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        // An error below must not leave a relay running.
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} relay", a.workers_bin.display()))?;
    let deadline = t0 + Duration::from_secs(a.timeout_secs);
    let mut first = None;
    // Until BERTH_EVENTS holds every event…
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("the relay exited early ({status}); see its log");
        }
        let stored = stream_messages(&js, EVENTS_STREAM).await.unwrap_or(before);
        if first.is_none() && stored > before {
            first = Some(t0.elapsed());
        }
        if stored >= target {
            ensure!(
                stored == target,
                "BERTH_EVENTS holds {} new messages, {n} were written: de-duplication failed",
                stored - before
            );
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the relay published {} of {n} events in {} s",
                stored - before,
                a.timeout_secs
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stored_at = t0.elapsed();
    // …and the outbox is empty (the relay deletes a batch after its acks).
    loop {
        let left: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM outbox)")
            .fetch_one(&db)
            .await?;
        if !left {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the outbox is not empty {} s after the relay started",
                a.timeout_secs
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let total = t0.elapsed();
    stop_child(&mut child).await;
    let first = first.unwrap_or(total);
    let rate = n as f64 / total.as_secs_f64();
    let after_first = n as f64 / (total - first).as_secs_f64().max(1e-6);

    // The peer: the same payloads, straight to JetStream.
    let raw = raw_publish(&js, &events, a.batch).await?;
    let raw_rate = n as f64 / raw.as_secs_f64();
    // Nothing may consume the bench events later (the echo event consumer would turn
    // each into an execution); the outbox flow they measured is done.
    js.get_stream(EVENTS_STREAM)
        .await
        .map_err(|e| anyhow!("stream {EVENTS_STREAM}: {e}"))?
        .purge()
        .await
        .map_err(|e| anyhow!("purging {EVENTS_STREAM}: {e}"))?;
    let ratio = rate / raw_rate;
    Ok(Outcome {
        human: format!(
            "{n} events of {payload_bytes:.0} B: relay {rate:.0} events/s ({:.2} s; first event after \
             {:.0} ms, {after_first:.0} events/s from then), raw JetStream publish {raw_rate:.0} events/s \
             ({:.2} s, batches of {}); ratio {ratio:.2}",
            total.as_secs_f64(),
            first.as_secs_f64() * 1000.0,
            raw.as_secs_f64(),
            a.batch
        ),
        json: obj(json!({
            "events": n,
            "batch": a.batch,
            "payload_bytes": r1(payload_bytes),
            "seconds": r3(total.as_secs_f64()),
            "events_per_s": r1(rate),
            "first_event_ms": r1(first.as_secs_f64() * 1000.0),
            "stored_ms": r1(stored_at.as_secs_f64() * 1000.0),
            "events_per_s_after_first": r1(after_first),
            "raw_seconds": r3(raw.as_secs_f64()),
            "raw_events_per_s": r1(raw_rate),
            "ratio": r3(ratio),
            "insert_seconds": r3(insert_s),
        })),
    })
}

/// SIGTERM, a grace period, then SIGKILL.
async fn stop_child(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) on our own child's pid, which `wait` below has not reaped.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .is_err()
    {
        eprintln!("relay: ignored SIGTERM for 15 s; killing it");
        let _ = child.kill().await;
    }
}

/// Publishes `events` to a fresh stream with BERTH_EVENTS's settings, `batch` at a time
/// (send all, then await every ack), each with its `Nats-Msg-Id`: what the relay does,
/// minus PostgreSQL. Returns the time from the first send to the last ack.
async fn raw_publish(
    js: &jetstream::Context,
    events: &[BenchEvent],
    batch: usize,
) -> Result<Duration> {
    let events_config = js
        .get_stream(EVENTS_STREAM)
        .await
        .map_err(|e| anyhow!("stream {EVENTS_STREAM}: {e}"))?
        .cached_info()
        .config
        .clone();
    // A leftover of an interrupted run.
    let _ = js.delete_stream(RAW_STREAM).await;
    js.create_stream(stream::Config {
        name: RAW_STREAM.to_owned(),
        subjects: vec![format!("{RAW_PREFIX}.>")],
        retention: events_config.retention,
        storage: events_config.storage,
        max_age: events_config.max_age,
        max_bytes: events_config.max_bytes,
        max_messages: events_config.max_messages,
        max_message_size: events_config.max_message_size,
        discard: events_config.discard,
        duplicate_window: events_config.duplicate_window,
        num_replicas: events_config.num_replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow!("creating stream {RAW_STREAM}: {e}"))?;
    let t0 = Instant::now();
    for chunk in events.chunks(batch) {
        let mut acks = Vec::with_capacity(chunk.len());
        for e in chunk {
            let mut headers = HeaderMap::new();
            headers.insert(NATS_MESSAGE_ID, e.id.to_string().as_str());
            let ack = js
                .publish_with_headers(e.raw_subject(), headers, e.payload.clone())
                .await
                .map_err(|err| anyhow!("publishing to {RAW_STREAM}: {err}"))?;
            acks.push(ack);
        }
        for ack in acks {
            let ack = ack
                .await
                .map_err(|err| anyhow!("ack from {RAW_STREAM}: {err}"))?;
            ensure!(
                !ack.duplicate,
                "{RAW_STREAM} took a bench event for a duplicate"
            );
        }
    }
    let elapsed = t0.elapsed();
    let stored = stream_messages(js, RAW_STREAM).await.unwrap_or(0);
    ensure!(
        stored == events.len() as u64,
        "{RAW_STREAM} holds {stored} messages, {} were published",
        events.len()
    );
    js.delete_stream(RAW_STREAM)
        .await
        .map_err(|e| anyhow!("deleting stream {RAW_STREAM}: {e}"))?;
    Ok(elapsed)
}

// ---------------------------------------------------------------- (b) latency

/// One timed push: which image, and when its manifest PUT returned.
struct Pushed {
    index: usize,
    done_us: i64,
    push_us: u64,
    late_us: u64,
}

async fn latency(a: &LatencyArgs) -> Result<Outcome> {
    ensure!(
        a.rate > 0.0 && a.repos > 0,
        "--rate and --repos must be positive"
    );
    let reg = gateway(&a.gateway.target).await?;
    let db = connect_db().await?;
    let js = connect_nats(&a.nats.nats_url).await?;
    let consumers = [
        (EVENTS_STREAM, a.event_consumer.as_str()),
        (JOBS_STREAM, a.gateway.job_consumer.as_str()),
    ];
    wait_consumers(&js, &consumers).await?;

    let count = ((a.rate * a.duration_secs as f64).round() as usize).max(1);
    let seed = a.seed.unwrap_or_else(|| unix_us() as u64);
    let layer = a.layer_bytes;
    let repos: Vec<String> = (0..a.repos)
        .map(|r| format!("{}-{r}", a.repo_prefix))
        .collect();
    // Generated before the clock starts; one warm-up image per repository after them.
    let warm_ups = repos.len();
    let images: Vec<Image> = tokio::task::spawn_blocking(move || {
        (0..count + warm_ups)
            .map(|i| {
                make_image(
                    seed,
                    i as u64,
                    1,
                    layer,
                    format!("p-{:x}-{i}", seed & 0xffff_ffff),
                )
            })
            .collect()
    })
    .await?;
    let images = std::sync::Arc::new(images);
    // Warm-up, untimed: the first push to a repository creates its project and
    // repository rows, and the first event of a kind warms the workers' connections.
    for (r, repo) in repos.iter().enumerate() {
        let img = images
            .get(count + r)
            .ok_or_else(|| anyhow!("warm-up image {r} missing"))?;
        push_image(&reg, repo, img)
            .await
            .with_context(|| format!("warm-up push to {repo}"))?;
    }
    settle(
        &db,
        &js,
        &consumers,
        Duration::from_secs(a.gateway.settle_secs),
    )
    .await
    .context("after the warm-up pushes")?;

    eprintln!(
        "latency: {count} pushes at {:.0}/s over {} repositories",
        a.rate,
        repos.len()
    );
    let period = Duration::from_secs_f64(1.0 / a.rate);
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..count {
        let due = start + period.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        let late = tokio::time::Instant::now().saturating_duration_since(due);
        let (reg, images, repo) = (reg.clone(), images.clone(), repos[i % repos.len()].clone());
        set.spawn(async move {
            let t = Instant::now();
            push_image(&reg, &repo, &images[i])
                .await
                .with_context(|| format!("push {i} to {repo}"))?;
            anyhow::Ok(Pushed {
                index: i,
                done_us: unix_us(),
                push_us: t.elapsed().as_micros() as u64,
                late_us: late.as_micros() as u64,
            })
        });
    }
    let scheduled_s = (tokio::time::Instant::now() - start).as_secs_f64();
    let mut pushed = Vec::with_capacity(count);
    while let Some(r) = set.join_next().await {
        pushed.push(r??);
    }
    let achieved = count as f64 / scheduled_s.max(1e-6);

    // Each push's event becomes an execution whose one task is named
    // `<repository>@<digest>` by the echo event handler.
    let key_of = |p: &Pushed| {
        let img = &images[p.index];
        format!(
            "{}@{}",
            repos[p.index % repos.len()],
            sha256_digest(&img.manifest)
        )
    };
    let keys: Vec<String> = pushed.iter().map(key_of).collect();
    let deadline = Instant::now() + Duration::from_secs(a.gateway.settle_secs);
    let rows: Vec<(String, i64, Option<i64>)> = loop {
        let rows: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT t.natural_key, \
                    (extract(epoch FROM e.start_time) * 1000000)::int8, \
                    (extract(epoch FROM t.started_at) * 1000000)::int8 \
             FROM executions e JOIN tasks t ON t.execution_id = e.id \
             WHERE e.kind = 'echo' AND e.trigger = 'event' AND t.natural_key = ANY($1)",
        )
        .bind(&keys)
        .fetch_all(&db)
        .await?;
        let started = rows.iter().filter(|r| r.2.is_some()).count();
        if started >= keys.len() {
            break rows;
        }
        if Instant::now() > deadline {
            if rows.is_empty() {
                bail!(
                    "no echo execution with trigger 'event' has a task named <repository>@<digest> \
                     of a pushed manifest after {} s; does the echo event consumer run?",
                    a.gateway.settle_secs
                );
            }
            eprintln!(
                "latency: {} of {} pushes have an execution, {started} a started task, after {} s; \
                 reporting those",
                rows.len(),
                keys.len(),
                a.gateway.settle_secs
            );
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let done: std::collections::HashMap<&str, i64> = keys
        .iter()
        .zip(&pushed)
        .map(|(k, p)| (k.as_str(), p.done_us))
        .collect();
    let (mut handler, mut task, mut negative) = (Vec::new(), Vec::new(), 0usize);
    for (key, exec_us, task_us) in &rows {
        let Some(done_us) = done.get(key.as_str()) else {
            continue;
        };
        // A handler may start a hair before the response reaches this process.
        let d = exec_us - done_us;
        if d < 0 {
            negative += 1;
        }
        handler.push(d.max(0) as u64);
        if let Some(t) = task_us {
            task.push((t - done_us).max(0) as u64);
        }
    }
    handler.sort_unstable();
    task.sort_unstable();
    let mut push: Vec<u64> = pushed.iter().map(|p| p.push_us).collect();
    push.sort_unstable();
    let max_late_ms = pushed.iter().map(|p| p.late_us).max().unwrap_or(0) as f64 / 1000.0;
    let missing = keys.len() - handler.len();
    let (p50, p99, max) = (
        percentile_ms(&handler, 50.0),
        percentile_ms(&handler, 99.0),
        percentile_ms(&handler, 100.0),
    );
    let (t50, t99, tmax) = (
        percentile_ms(&task, 50.0),
        percentile_ms(&task, 99.0),
        percentile_ms(&task, 100.0),
    );
    Ok(Outcome {
        human: format!(
            "{count} pushes at {achieved:.1}/s: push done → event handler p50 {p50:.1} ms, p99 {p99:.1} ms, \
             max {max:.1} ms; → echo task start p50 {t50:.1} ms, p99 {t99:.1} ms, max {tmax:.1} ms; \
             push p50 {:.1} ms; {missing} without an execution",
            percentile_ms(&push, 50.0)
        ),
        json: obj(json!({
            "pushes": count,
            "rate": a.rate,
            "achieved_per_s": r1(achieved),
            "duration_secs": a.duration_secs,
            "repositories": repos.len(),
            "p50_ms": r3(p50),
            "p99_ms": r3(p99),
            "max_ms": r3(max),
            "mean_ms": r3(mean_ms(&handler)),
            "task_p50_ms": r3(t50),
            "task_p99_ms": r3(t99),
            "task_max_ms": r3(tmax),
            "push_p50_ms": r3(percentile_ms(&push, 50.0)),
            "push_p99_ms": r3(percentile_ms(&push, 99.0)),
            "max_schedule_lag_ms": r3(max_late_ms),
            "measured": handler.len(),
            "tasks_started": task.len(),
            "missing": missing,
            "negative": negative,
        })),
    })
}

// ---------------------------------------------------------------- (c) cancel

/// One stop: milliseconds from just before the PUT to the last blocked task's end,
/// to the execution's end, and of the PUT itself.
struct Stop {
    last_task_ms: f64,
    execution_ms: Option<f64>,
    put_ms: f64,
}

async fn cancel(a: &CancelArgs) -> Result<Outcome> {
    ensure!(
        a.repeat > 0 && a.blocked > 0,
        "--repeat and --blocked must be positive"
    );
    let reg = gateway(&a.gateway.target).await?;
    let db = connect_db().await?;
    let js = connect_nats(&a.nats.nats_url).await?;
    let consumers = [(JOBS_STREAM, a.gateway.job_consumer.as_str())];
    wait_consumers(&js, &consumers).await?;
    let mut stops = Vec::new();
    for run in 0..a.repeat {
        settle(
            &db,
            &js,
            &consumers,
            Duration::from_secs(a.gateway.settle_secs),
        )
        .await
        .with_context(|| format!("before stop {}", run + 1))?;
        let stop = cancel_once(a, &reg, &db).await?;
        eprintln!(
            "cancel {}: last in-flight task stopped {:.1} ms after the request (PUT {:.1} ms)",
            run + 1,
            stop.last_task_ms,
            stop.put_ms
        );
        stops.push(stop);
    }
    let mut ms: Vec<f64> = stops.iter().map(|s| s.last_task_ms).collect();
    ms.sort_by(f64::total_cmp);
    let worst = ms.last().copied().unwrap_or(f64::NAN);
    let median = ms[ms.len() / 2];
    let execution_worst = stops
        .iter()
        .filter_map(|s| s.execution_ms)
        .fold(f64::NAN, f64::max);
    Ok(Outcome {
        human: format!(
            "{} stops of {} in-flight + {} queued tasks: last in-flight task stopped after worst \
             {worst:.1} ms, median {median:.1} ms; execution Stopped after worst {execution_worst:.1} ms",
            a.repeat, a.blocked, a.queued
        ),
        json: obj(json!({
            "repeat": a.repeat,
            "blocked": a.blocked,
            "queued": a.queued,
            "worst_ms": r3(worst),
            "median_ms": r3(median),
            "runs_ms": stops.iter().map(|s| r3(s.last_task_ms)).collect::<Vec<_>>(),
            "put_ms": stops.iter().map(|s| r3(s.put_ms)).collect::<Vec<_>>(),
            "execution_stopped_ms": stops.iter().map(|s| s.execution_ms.map_or(Value::Null, r3)).collect::<Vec<_>>(),
        })),
    })
}

async fn cancel_once(a: &CancelArgs, reg: &Registry, db: &PgPool) -> Result<Stop> {
    let tasks: Vec<Value> = std::iter::repeat_n(json!({ "block": true }), a.blocked)
        .chain(std::iter::repeat_n(json!({ "sleep_ms": 0 }), a.queued))
        .collect();
    let id = start_execution(reg, tasks).await?;
    let blocked = i64::try_from(a.blocked)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let running: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tasks \
             WHERE execution_id = $1 AND payload @> '{\"block\": true}' AND status = 'running'",
        )
        .bind(id)
        .fetch_one(db)
        .await?;
        if running >= blocked {
            break;
        }
        if Instant::now() > deadline {
            bail!("execution {id}: {running} of {blocked} blocking tasks running after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let t0_us = unix_us();
    let t0 = Instant::now();
    let path = format!("{EXECUTIONS}/{id}");
    let (status, _, body) =
        api(reg, Method::PUT, &path, Some(&json!({ "action": "stop" }))).await?;
    let put_ms = t0.elapsed().as_secs_f64() * 1000.0;
    ensure!(
        status == StatusCode::OK,
        "PUT {path} stop: expected 200, got {status}: {}",
        crate::http::truncate(&body)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let last_us = loop {
        let (open, last): (i64, Option<i64>) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE ended_at IS NULL), \
                    (extract(epoch FROM max(ended_at)) * 1000000)::int8 \
             FROM tasks WHERE execution_id = $1 AND payload @> '{\"block\": true}'",
        )
        .bind(id)
        .fetch_one(db)
        .await?;
        if open == 0 {
            break last.ok_or_else(|| anyhow!("execution {id}: no blocking task found"))?;
        }
        if Instant::now() > deadline {
            bail!("execution {id}: {open} blocking tasks still running 60 s after the stop");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let not_cancelled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasks \
         WHERE execution_id = $1 AND payload @> '{\"block\": true}' AND status <> 'cancelled'",
    )
    .bind(id)
    .fetch_one(db)
    .await?;
    if not_cancelled > 0 {
        eprintln!(
            "cancel: execution {id}: {not_cancelled} blocking tasks ended but not as cancelled"
        );
    }
    // The execution is Stopped once none of its tasks runs; informative only.
    let deadline = Instant::now() + Duration::from_secs(30);
    let execution_ms = loop {
        let (status, end): (String, Option<i64>) = sqlx::query_as(
            "SELECT status, (extract(epoch FROM end_time) * 1000000)::int8 FROM executions WHERE id = $1",
        )
        .bind(id)
        .fetch_one(db)
        .await?;
        if status == "cancelled" {
            break end.map(|e| (e - t0_us) as f64 / 1000.0);
        }
        if Instant::now() > deadline {
            eprintln!("cancel: execution {id} is {status:?}, not cancelled, 30 s after the stop");
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Ok(Stop {
        last_task_ms: (last_us - t0_us) as f64 / 1000.0,
        execution_ms,
        put_ms,
    })
}

// ---------------------------------------------------------------- (d) scale

async fn scale(a: &ScaleArgs) -> Result<Outcome> {
    ensure!(
        a.tasks > 0 && a.processes > 0,
        "--tasks and --processes must be positive"
    );
    let reg = gateway(&a.gateway.target).await?;
    let db = connect_db().await?;
    let js = connect_nats(&a.nats.nats_url).await?;
    let consumers = [(JOBS_STREAM, a.gateway.job_consumer.as_str())];
    wait_consumers(&js, &consumers).await?;
    settle(
        &db,
        &js,
        &consumers,
        Duration::from_secs(a.gateway.settle_secs),
    )
    .await?;
    // Workers heartbeat every 2 s by default; a row fresher than 10 s is a live process.
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM worker_processes WHERE heartbeat_at > now() - interval '10 seconds'",
    )
    .fetch_one(&db)
    .await?;
    if live != i64::try_from(a.processes)? {
        eprintln!(
            "scale: {live} worker processes heartbeat, --processes says {}",
            a.processes
        );
    }

    let tasks = vec![json!({ "sleep_ms": a.sleep_ms }); a.tasks];
    let t0 = Instant::now();
    let id = start_execution(&reg, tasks).await?;
    let path = format!("{EXECUTIONS}/{id}");
    let deadline = t0 + Duration::from_secs(a.timeout_secs);
    loop {
        let (status, _, body) = api(&reg, Method::GET, &path, None).await?;
        ensure!(
            status == StatusCode::OK,
            "GET {path}: expected 200, got {status}: {}",
            crate::http::truncate(&body)
        );
        let v: Value = serde_json::from_slice(&body).with_context(|| format!("GET {path}"))?;
        match v.get("status").and_then(Value::as_str) {
            Some("Success") => break,
            Some(s @ ("Error" | "Stopped")) => bail!("execution {id} ended {s}: {v}"),
            _ => {}
        }
        if Instant::now() > deadline {
            bail!(
                "execution {id} has not succeeded after {} s: {v}",
                a.timeout_secs
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let rate = a.tasks as f64 / elapsed;
    let ceiling = (a.processes * a.concurrency) as f64 * 1000.0 / a.sleep_ms.max(1) as f64;
    Ok(Outcome {
        human: format!(
            "{} tasks of {} ms with {} process(es) × {}: {rate:.1} tasks/s ({elapsed:.2} s, POST to Success; \
             ceiling {ceiling:.0} tasks/s)",
            a.tasks, a.sleep_ms, a.processes, a.concurrency
        ),
        json: obj(json!({
            "processes": a.processes,
            "concurrency": a.concurrency,
            "tasks": a.tasks,
            "sleep_ms": a.sleep_ms,
            "seconds": r3(elapsed),
            "tasks_per_s": r1(rate),
            "ceiling_tasks_per_s": r1(ceiling),
            "live_worker_processes": live,
        })),
    })
}

// ---------------------------------------------------------------- report

fn run_report(a: &ReportArgs) -> Result<()> {
    let results = report::load(&a.results)?;
    let s = render(&results, &a.note);
    print!("{}", s.markdown);
    eprintln!(
        "loadtest pipeline: {} targets met, {} not met or not measured",
        s.met, s.missed
    );
    Ok(())
}

fn fmt(x: Option<f64>) -> String {
    match x {
        Some(v) if !v.is_finite() => "—".into(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
        None => "—".into(),
    }
}

fn field(r: &Results, scenario: &str, name: &str) -> Option<f64> {
    r.get(scenario)?.get(name)?.as_f64()
}

fn count(r: &Results, scenario: &str, name: &str) -> String {
    r.get(scenario)
        .and_then(|v| v.get(name))
        .and_then(Value::as_u64)
        .map_or("?".into(), |n| n.to_string())
}

struct Summary {
    markdown: String,
    met: usize,
    missed: usize,
}

struct Tally {
    met: usize,
    missed: usize,
}

impl Tally {
    fn verdict(&mut self, ok: Option<bool>) -> &'static str {
        match ok {
            Some(true) => {
                self.met += 1;
                "yes"
            }
            Some(false) => {
                self.missed += 1;
                "**no**"
            }
            None => {
                self.missed += 1;
                "n/a"
            }
        }
    }
}

fn render(r: &Results, notes: &[String]) -> Summary {
    let mut out = String::new();
    let mut t = Tally { met: 0, missed: 0 };
    out.push_str("| figure | metric | Berth | peer | ratio | target | met? |\n");
    out.push_str("|---|---|---:|---:|---:|---|---|\n");

    if r.contains_key("pipeline-relay") {
        let s = "pipeline-relay";
        let rate = field(r, s, "events_per_s");
        let raw = field(r, s, "raw_events_per_s");
        let ratio = field(r, s, "ratio");
        out.push_str(&format!(
            "| outbox → JetStream, {} events of {} B, one relay, batches of {} | events/s | {} | {} | {} | ≥ {:.0} events/s | {} |\n",
            count(r, s, "events"),
            fmt(field(r, s, "payload_bytes")),
            count(r, s, "batch"),
            fmt(rate),
            fmt(raw),
            ratio.map_or("—".into(), |x| format!("{x:.2}×")),
            RELAY_MIN_EVENTS_PER_S,
            t.verdict(rate.map(|x| x >= RELAY_MIN_EVENTS_PER_S)),
        ));
    }
    if r.contains_key("pipeline-latency") {
        let s = "pipeline-latency";
        let label = format!(
            "push → echo event handler, {} pushes/s for {} s",
            fmt(field(r, s, "rate")),
            count(r, s, "duration_secs")
        );
        let p99 = field(r, s, "p99_ms");
        out.push_str(&format!(
            "| {label} | p50 ms | {} | | | | |\n",
            fmt(field(r, s, "p50_ms"))
        ));
        out.push_str(&format!(
            "| {label} | p99 ms | {} | | | < {LATENCY_MAX_P99_MS:.0} ms | {} |\n",
            fmt(p99),
            t.verdict(p99.map(|x| x < LATENCY_MAX_P99_MS)),
        ));
        let t99 = field(r, s, "task_p99_ms");
        let label = "push → its echo task's handler (event → execution → jobs stream)";
        out.push_str(&format!(
            "| {label} | p50 ms | {} | | | | |\n",
            fmt(field(r, s, "task_p50_ms"))
        ));
        out.push_str(&format!(
            "| {label} | p99 ms | {} | | | < {LATENCY_MAX_P99_MS:.0} ms | {} |\n",
            fmt(t99),
            t.verdict(t99.map(|x| x < LATENCY_MAX_P99_MS)),
        ));
    }
    if r.contains_key("pipeline-cancel") {
        let s = "pipeline-cancel";
        let label = format!(
            "stop request → last of {} in-flight tasks stopped ({} queued), {} runs",
            count(r, s, "blocked"),
            count(r, s, "queued"),
            count(r, s, "repeat")
        );
        let worst = field(r, s, "worst_ms");
        out.push_str(&format!(
            "| {label} | worst ms | {} | | | < {CANCEL_MAX_MS:.0} ms | {} |\n",
            fmt(worst),
            t.verdict(worst.map(|x| x < CANCEL_MAX_MS)),
        ));
        out.push_str(&format!(
            "| {label} | median ms | {} | | | | |\n",
            fmt(field(r, s, "median_ms"))
        ));
    }
    let one = field(r, "pipeline-scale-1", "tasks_per_s");
    let mut scale_rows = false;
    for n in 1..=8usize {
        let s = format!("pipeline-scale-{n}");
        if !r.contains_key(&s) {
            continue;
        }
        scale_rows = true;
        let rate = field(r, &s, "tasks_per_s");
        let label = format!(
            "{} echo tasks of {} ms, {n} worker process{} × {}",
            count(r, &s, "tasks"),
            count(r, &s, "sleep_ms"),
            if n == 1 { "" } else { "es" },
            count(r, &s, "concurrency"),
        );
        if n == 1 {
            out.push_str(&format!(
                "| {label} | tasks/s | {} | | | (the reference; ceiling {}) | |\n",
                fmt(rate),
                fmt(field(r, &s, "ceiling_tasks_per_s"))
            ));
            continue;
        }
        let ideal = one.map(|x| x * n as f64);
        let ratio = match (rate, ideal) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        out.push_str(&format!(
            "| {label} | tasks/s | {} | {} | {} | ≥ {SCALE_MIN_RATIO:.2}× ideal | {} |\n",
            fmt(rate),
            fmt(ideal),
            // Three decimals: the verdict is on the unrounded ratio, and 0.895 must not
            // read as a failed 0.90.
            ratio.map_or("—".into(), |x| format!("{x:.3}×")),
            t.verdict(ratio.map(|x| x >= SCALE_MIN_RATIO)),
        ));
    }
    out.push('\n');
    if r.contains_key("pipeline-relay") {
        out.push_str(
            "Outbox → JetStream: the rows are inserted with no relay running, then one \
             `berth-workers relay` starts; the time runs from its start (process start-up and \
             stream provisioning included) until BERTH_EVENTS holds every event and the outbox \
             is empty. Peer: the load generator publishing the same payloads to a stream with \
             BERTH_EVENTS's settings on the same server, with `Nats-Msg-Id`, pipelined in \
             batches of the relay's size (send all, await the acks); ratio = relay ÷ raw.\n\n",
        );
    }
    if r.contains_key("pipeline-latency") {
        out.push_str(
            "Push latency: from the moment the manifest PUT's response reached the load generator \
             to the start of the echo event handler's transaction (`executions.start_time`), and \
             to the echo job handler's start (`tasks.started_at`); a handler that started \
             before the response arrived counts as 0 ms. Pushes (config + one small layer + \
             manifest, a new tag each) start on a fixed schedule.\n\n",
        );
    }
    if r.contains_key("pipeline-cancel") {
        out.push_str(
            "Cancel: from just before `PUT /api/v2.0/executions/{id}` `{\"action\":\"stop\"}` to \
             the latest `tasks.ended_at` of the blocked in-flight tasks, one worker process of \
             concurrency 4.\n\n",
        );
    }
    if scale_rows {
        out.push_str(
            "Task throughput: from `POST /api/v2.0/executions` to the execution's status \
             `Success`; peer = ideal linear scaling, N × the 1-process rate; ratio = measured ÷ \
             ideal. Ceiling = processes × concurrency × 1000 ÷ sleep ms.\n\n",
        );
    }
    for n in notes {
        out.push_str(&format!("{n}\n\n"));
    }
    out.push_str(&format!(
        "Event pipeline targets met: {} of {}.\n",
        t.met,
        t.met + t.missed
    ));
    Summary {
        markdown: out,
        met: t.met,
        missed: t.missed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_events_look_like_the_gateways() {
        let events = bench_events(3);
        let v: Value = serde_json::from_slice(&events[1].payload).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "io.berth.artifact.pushed.v1");
        assert_eq!(v["id"], events[1].id.to_string());
        assert_eq!(v["data"]["repository"], "bench/r1");
        assert_eq!(events[1].subject(), "berth.events.artifact.pushed.bench.r1");
        assert_eq!(
            events[1].raw_subject(),
            "bench.raw.artifact.pushed.bench.r1"
        );
        assert_eq!(events[1].ordering_key(), "bench/r1");
        let len = events[0].payload.len();
        assert!((350..=550).contains(&len), "{len}");
        assert_ne!(events[0].id, events[1].id);
    }

    #[test]
    fn table() {
        let r = report::parse_results(
            r#"{"scenario":"pipeline-relay","events":50000,"batch":500,"payload_bytes":451.2,"events_per_s":6000.0,"raw_events_per_s":20000.0,"ratio":0.3}
{"scenario":"pipeline-latency","rate":100.0,"duration_secs":20,"p50_ms":10.0,"p99_ms":300.0,"task_p50_ms":20.0,"task_p99_ms":40.0}
{"scenario":"pipeline-cancel","blocked":4,"queued":500,"repeat":3,"worst_ms":120.0,"median_ms":100.0}
{"scenario":"pipeline-scale-1","tasks":2000,"sleep_ms":50,"concurrency":4,"tasks_per_s":78.0,"ceiling_tasks_per_s":80.0}
{"scenario":"pipeline-scale-2","tasks":2000,"sleep_ms":50,"concurrency":4,"tasks_per_s":150.0}
{"scenario":"pipeline-scale-3","tasks":2000,"sleep_ms":50,"concurrency":4,"tasks_per_s":180.0}"#,
        );
        let s = render(&r, &["a note".into()]);
        let md = &s.markdown;
        assert!(md.contains(
            "| outbox → JetStream, 50000 events of 451 B, one relay, batches of 500 | events/s | 6000 | 20000 | 0.30× | ≥ 5000 events/s | yes |"
        ), "{md}");
        assert!(
            md.contains("| p99 ms | 300 | | | < 250 ms | **no** |"),
            "{md}"
        );
        assert!(
            md.contains("| worst ms | 120 | | | < 1000 ms | yes |"),
            "{md}"
        );
        assert!(md.contains(
            "| 2000 echo tasks of 50 ms, 2 worker processes × 4 | tasks/s | 150 | 156 | 0.962× | ≥ 0.90× ideal | yes |"
        ), "{md}");
        assert!(
            md.contains("| 180 | 234 | 0.769× | ≥ 0.90× ideal | **no** |"),
            "{md}"
        );
        assert!(md.contains("a note"));
        // relay, two latencies, cancel, scale 2 and 3.
        assert_eq!((s.met, s.missed), (4, 2), "{md}");
    }

    #[test]
    fn missing_figures_are_left_out() {
        let s = render(&Results::default(), &[]);
        assert!(!s.markdown.contains("outbox"));
        assert_eq!((s.met, s.missed), (0, 0));
    }
}
