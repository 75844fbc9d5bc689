//! `loadtest replication …`: the replication benchmark (issue 6), against a stack that
//! scripts/bench-replication.sh starts (PostgreSQL, nats-server, berth-gateway with
//! token auth, `berth-workers replicate`, and Debian's docker-registry as the
//! destination of an event-based push policy). Each figure prints one JSON line and
//! `replication report` turns them into a markdown table:
//!
//! - `burst`: N small images (config + 3 × 256 KiB layers; every other image shares
//!   one base layer, the rest is unique) pushed into Berth at a fixed concurrency; the
//!   time from the first push until every image is at the destination, found there by
//!   `HEAD` of its manifest with the pushed digest. Run once per worker-process count.
//! - `skopeo`: the peer. The images a burst pushed (the file it wrote) copied from
//!   Berth to a fresh docker-registry by `skopeo copy`, a fixed number at a time.
//! - `latency`: pushes at a steady rate (open loop); for each, the time from its
//!   manifest PUT's response to the first `HEAD` at the destination that answers with
//!   its digest. The destination is polled for every outstanding image every few ms.
//!
//! The destination is the truth: an image counts as replicated only once the
//! destination answers for it. With $LOADTEST_DATABASE_URL set, the replicate tasks of
//! each figure are summarised from PostgreSQL too (durations, queue waits, blobs
//! skipped/mounted/uploaded), to show where the time goes; never for the verdict.
//! Berth's password comes from $LOADTEST_PASSWORD, never the command line.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use base64::Engine as _;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use hyper::{Method, StatusCode};
use serde_json::{json, Map, Value};
use sqlx::postgres::{PgPool, PgPoolOptions};
use url::Url;

use crate::auth::Credentials;
use crate::data::{sha256_digest, Prng};
use crate::http::{empty, truncate, Registry, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST};
use crate::report::{self, Results};
use crate::scenarios::{push_image, Image};
use crate::stats::{mean_ms, percentile_ms};

/// Every image's layers.
const LAYERS: usize = 3;
const LAYER_BYTES: usize = 256 * 1024;
/// The issue's targets: Berth at least this many times faster than skopeo …
const BURST_MIN_RATIO: f64 = 2.0;
/// … and push → at the destination under this at the 99th percentile.
const LATENCY_MAX_P99_MS: f64 = 2_000.0;
/// What a HEAD of a manifest accepts: the pushed images are OCI manifests, and
/// docker-registry answers 404 for an OCI manifest the client does not accept.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Parser, Debug)]
#[command(
    name = "loadtest replication",
    about = "Benchmark Berth's replication to a docker-registry: a burst of pushes until all are \
             replicated, skopeo copying the same images as the peer, push → replicated latency",
    after_help = "Berth's password is read from $LOADTEST_PASSWORD; with $LOADTEST_DATABASE_URL \
                  the replicate tasks are summarised too. scripts/bench-replication.sh starts the \
                  servers and runs every figure."
)]
struct ReplicationCli {
    #[command(subcommand)]
    figure: Figure,
}

#[derive(Subcommand, Debug)]
enum Figure {
    /// Push N images into a project with an event-based push policy; time from the
    /// first push until all are at the destination.
    Burst(BurstArgs),
    /// The peer: `skopeo copy` of the images a burst wrote to --images, N at a time.
    Skopeo(SkopeoArgs),
    /// Push → at the destination latency at a steady push rate.
    Latency(LatencyArgs),
    /// Markdown table of the JSON lines the other figures printed.
    Report(ReportArgs),
}

#[derive(Args, Debug)]
struct Ends {
    /// berth-gateway base URL (plain HTTP).
    #[arg(long, default_value = "http://127.0.0.1:5002")]
    target: String,
    /// Log in to Berth as this user (token flow); the password is read from
    /// $LOADTEST_PASSWORD. Without it, Berth must have auth off.
    #[arg(long)]
    username: Option<String>,
    /// The destination registry's base URL (plain HTTP, no auth).
    #[arg(long)]
    dest: String,
    /// Berth project the images are pushed into (the policy's name filter covers it).
    #[arg(long, default_value = "replbench")]
    project: String,
    /// Print one JSON object on stdout (human lines go to stderr).
    #[arg(long)]
    json: bool,
    /// Seed of the generated images (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Concurrent HEAD requests the destination watcher makes.
    #[arg(long, default_value_t = 4)]
    poll_concurrency: usize,
    /// How long the warm-up image (pushed and waited for before the clock starts) may take.
    #[arg(long, default_value_t = 180)]
    warm_up_secs: u64,
}

#[derive(Args, Debug)]
struct BurstArgs {
    #[command(flatten)]
    ends: Ends,
    /// Images pushed.
    #[arg(long, default_value_t = 2_000)]
    count: usize,
    /// Repositories they are spread over: `<project>/r0` …
    #[arg(long, default_value_t = 20)]
    repos: usize,
    /// Pushes in flight.
    #[arg(long, default_value_t = 16)]
    push_concurrency: usize,
    /// Worker processes running (a label: this command starts none).
    #[arg(long)]
    processes: usize,
    /// Each process's replicate concurrency (a label).
    #[arg(long, default_value_t = 8)]
    worker_concurrency: usize,
    /// Pause between two passes over the destination.
    #[arg(long, default_value_t = 250)]
    poll_ms: u64,
    /// Write `repository<TAB>tag<TAB>digest` of every pushed image here (for `skopeo`).
    #[arg(long)]
    images_out: Option<PathBuf>,
    /// Give up when not every image is at the destination by then.
    #[arg(long, default_value_t = 1_800)]
    timeout_secs: u64,
}

#[derive(Args, Debug)]
struct SkopeoArgs {
    /// berth-gateway base URL, the source (plain HTTP).
    #[arg(long, default_value = "http://127.0.0.1:5002")]
    source: String,
    /// User for the source (password from $LOADTEST_PASSWORD); none: anonymous.
    #[arg(long)]
    username: Option<String>,
    /// The destination registry's base URL (plain HTTP, no auth), empty.
    #[arg(long)]
    dest: String,
    /// `repository<TAB>tag<TAB>digest` lines, as `burst --images-out` writes them.
    #[arg(long)]
    images: PathBuf,
    /// `skopeo copy` processes at once.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    #[arg(long, default_value = "skopeo")]
    skopeo: PathBuf,
    /// Directory for the registry auth file skopeo reads (written mode 0600, removed
    /// afterwards).
    #[arg(long, default_value = ".")]
    work_dir: PathBuf,
    /// Longest one copy may take.
    #[arg(long, default_value_t = 300)]
    copy_timeout_secs: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct LatencyArgs {
    #[command(flatten)]
    ends: Ends,
    /// Pushes per second.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    #[arg(long, default_value_t = 60)]
    duration_secs: u64,
    /// Repositories the pushes are spread over: `<project>/steady-0` …
    #[arg(long, default_value_t = 4)]
    repos: usize,
    /// Pause between two passes over the destination (a tags list per repository with
    /// outstanding images, then a HEAD of each newly listed one).
    #[arg(long, default_value_t = 20)]
    poll_ms: u64,
    /// Worker processes running (a label).
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// How long after the last push an image may take before it counts as missing.
    #[arg(long, default_value_t = 120)]
    settle_secs: u64,
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

/// Entry point of `loadtest replication …`; `args` starts with `replication`.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<()> {
    let cli = ReplicationCli::parse_from(args);
    if let Figure::Report(a) = &cli.figure {
        return run_report(a);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (name, json_out, outcome) = match cli.figure {
            Figure::Burst(a) => (
                format!("replication-burst-{}", a.processes),
                a.ends.json,
                burst(&a).await?,
            ),
            Figure::Skopeo(a) => ("replication-skopeo".to_owned(), a.json, skopeo(&a).await?),
            Figure::Latency(a) => (
                "replication-latency".to_owned(),
                a.ends.json,
                latency(&a).await?,
            ),
            Figure::Report(_) => unreachable!("handled above"),
        };
        let human = format!("{name:<22} {}", outcome.human);
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

fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

// ---------------------------------------------------------------- connections

/// Berth, logged in as `username` when given.
async fn connect_berth(target: &str, username: Option<&str>) -> Result<Registry> {
    let mut reg = Registry::new(target, Duration::from_secs(120))?;
    match username {
        Some(user) => {
            let credentials = Credentials::from_env(user)?;
            reg.login(&credentials)
                .await
                .with_context(|| format!("logging in to {target} as {user}"))?;
        }
        None => {
            let v2 = reg.url("/v2/")?;
            let resp = reg
                .send(Method::GET, &v2, &[], empty())
                .await
                .with_context(|| format!("is berth-gateway listening at {target}?"))?;
            reg.expect(resp, StatusCode::OK, &format!("GET {v2}"))
                .await?;
        }
    }
    Ok(reg)
}

/// The destination, which must answer `/v2/` without credentials.
async fn connect_dest(dest: &str) -> Result<Registry> {
    let reg = Registry::new(dest, Duration::from_secs(30))?;
    let v2 = reg.url("/v2/")?;
    let resp = reg
        .send(Method::GET, &v2, &[], empty())
        .await
        .with_context(|| format!("is the destination registry listening at {dest}?"))?;
    reg.expect(resp, StatusCode::OK, &format!("GET {v2}"))
        .await?;
    Ok(reg)
}

/// PostgreSQL when $LOADTEST_DATABASE_URL is set: only for the task summary.
async fn connect_db() -> Result<Option<PgPool>> {
    let Ok(url) = std::env::var("LOADTEST_DATABASE_URL") else {
        return Ok(None);
    };
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&url)
        .await
        .context("connecting to $LOADTEST_DATABASE_URL")?;
    Ok(Some(pool))
}

// ---------------------------------------------------------------- images

/// One benchmark image and where it is pushed.
struct BenchImage {
    repo: String,
    image: Image,
    digest: String,
}

/// An image of `layers` with a config naming `label`, tagged `tag`.
fn image_of(label: &str, layers: Vec<(Bytes, String)>, tag: String) -> Image {
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Labels": { "berth.loadtest": label } },
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
        },
    }))
    .expect("a JSON value serialises");
    let config = Bytes::from(config);
    let config_digest = sha256_digest(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len() },
        "layers": layers.iter().map(|(b, d)| json!({
            "mediaType": OCI_LAYER, "digest": d, "size": b.len(),
        })).collect::<Vec<_>>(),
    }))
    .expect("a JSON value serialises");
    Image {
        tag,
        config: (config, config_digest),
        layers,
        manifest: Bytes::from(manifest),
    }
}

fn layer(rng: &mut Prng) -> (Bytes, String) {
    let b = rng.bytes(LAYER_BYTES);
    let d = sha256_digest(&b);
    (b, d)
}

/// Images `first..first + count` of `seed`: 3 layers of 256 KiB; the even ones have
/// the seed's one base layer first, every other layer is unique. Image `i` goes to
/// `repos[i % repos.len()]`, tagged `<prefix>-<i>`.
fn bench_images(
    seed: u64,
    first: usize,
    count: usize,
    repos: &[String],
    prefix: &str,
) -> Vec<BenchImage> {
    let base = layer(&mut Prng::new(seed ^ 0xba5e_ba5e));
    (first..first + count)
        .map(|i| {
            let mut rng = Prng::new(seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let layers: Vec<(Bytes, String)> = (0..LAYERS)
                .map(|l| {
                    if l == 0 && i % 2 == 0 {
                        base.clone()
                    } else {
                        layer(&mut rng)
                    }
                })
                .collect();
            let image = image_of(&format!("{seed:x}-{i}"), layers, format!("{prefix}-{i}"));
            BenchImage {
                repo: repos[i % repos.len()].clone(),
                digest: sha256_digest(&image.manifest),
                image,
            }
        })
        .collect()
}

/// [`bench_images`] on both cores: hashing 1.5 GB takes seconds on one.
async fn make_images(
    seed: u64,
    count: usize,
    repos: Vec<String>,
    prefix: String,
) -> Result<Vec<BenchImage>> {
    let half = count / 2;
    let (r2, p2) = (repos.clone(), prefix.clone());
    let second =
        tokio::task::spawn_blocking(move || bench_images(seed, half, count - half, &r2, &p2));
    let mut images =
        tokio::task::spawn_blocking(move || bench_images(seed, 0, half, &repos, &prefix)).await?;
    images.extend(second.await?);
    Ok(images)
}

fn write_images(path: &Path, images: &[BenchImage]) -> Result<()> {
    let mut text = String::new();
    for im in images {
        text.push_str(&format!("{}\t{}\t{}\n", im.repo, im.image.tag, im.digest));
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// One image at the destination: what to `HEAD`, and what it must answer.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    repo: String,
    tag: String,
    digest: String,
}

fn parse_images(text: &str) -> Result<Vec<Target>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            let mut f = l.split('\t');
            match (f.next(), f.next(), f.next(), f.next()) {
                (Some(repo), Some(tag), Some(digest), None)
                    if !repo.is_empty() && !tag.is_empty() && digest.starts_with("sha256:") =>
                {
                    Ok(Target {
                        repo: repo.to_owned(),
                        tag: tag.to_owned(),
                        digest: digest.to_owned(),
                    })
                }
                _ => bail!("line {}: not repository<TAB>tag<TAB>digest: {l:?}", n + 1),
            }
        })
        .collect()
}

// ---------------------------------------------------------------- the destination

/// What a `HEAD` of one image's manifest at the destination found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    /// 200 with the pushed digest.
    Right,
    /// 200 with another digest.
    Wrong,
    /// 404: not there (yet).
    Absent,
}

async fn head_manifest(dest: &Registry, t: &Target) -> Result<Found> {
    let url = dest.url(&format!("/v2/{}/manifests/{}", t.repo, t.tag))?;
    let resp = dest
        .send(Method::HEAD, &url, &[("accept", MANIFEST_ACCEPT)], empty())
        .await?;
    let status = resp.status();
    let digest = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let what = format!("HEAD {url}");
    match status {
        StatusCode::OK => {
            dest.expect(resp, StatusCode::OK, &what).await?;
            if digest.as_deref() == Some(t.digest.as_str()) {
                Ok(Found::Right)
            } else {
                Ok(Found::Wrong)
            }
        }
        StatusCode::NOT_FOUND => {
            // Drains the (empty) body so the connection is reused.
            let _ = dest.expect(resp, StatusCode::NOT_FOUND, &what).await;
            Ok(Found::Absent)
        }
        _ => {
            dest.expect(resp, StatusCode::OK, &what).await?;
            unreachable!("expect fails on any status but 200")
        }
    }
}

/// `HEAD`s `items` (index, target) over `conc` connections; returns each result with
/// the moment its response arrived.
async fn head_many(
    dest: &Registry,
    items: Vec<(usize, Target)>,
    conc: usize,
) -> Vec<(usize, Instant, Result<Found>)> {
    let conc = conc.clamp(1, items.len().max(1));
    let mut lanes: Vec<Vec<(usize, Target)>> = (0..conc).map(|_| Vec::new()).collect();
    for (n, item) in items.into_iter().enumerate() {
        lanes[n % conc].push(item);
    }
    let mut set = tokio::task::JoinSet::new();
    for lane in lanes {
        let dest = dest.clone();
        set.spawn(async move {
            let mut out = Vec::with_capacity(lane.len());
            for (i, t) in lane {
                let r = head_manifest(&dest, &t).await;
                out.push((i, Instant::now(), r));
            }
            out
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(v) => all.extend(v),
            Err(e) => eprintln!("replication: a HEAD lane panicked: {e}"),
        }
    }
    all
}

/// The tags of `repo` at the destination; empty when it does not exist yet.
async fn dest_tags(dest: &Registry, repo: &str) -> Result<HashSet<String>> {
    let url = dest.url(&format!("/v2/{repo}/tags/list"))?;
    let resp = dest.send(Method::GET, &url, &[], empty()).await?;
    let status = resp.status();
    let body = {
        use http_body_util::BodyExt;
        tokio::time::timeout(dest.timeout(), resp.into_body().collect())
            .await
            .map_err(|_| anyhow!("GET {url}: timed out reading the body"))??
            .to_bytes()
    };
    match status {
        StatusCode::OK => {
            let v: Value =
                serde_json::from_slice(&body).with_context(|| format!("GET {url}: not JSON"))?;
            Ok(v.get("tags")
                .and_then(Value::as_array)
                .map(|tags| {
                    tags.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default())
        }
        StatusCode::NOT_FOUND => Ok(HashSet::new()),
        other => bail!("GET {url}: {other}: {}", truncate(&body)),
    }
}

/// Per image: when its push finished and when the destination first had it.
#[derive(Clone, Copy, Default)]
struct Slot {
    pushed: Option<Instant>,
    seen: Option<Instant>,
    wrong: bool,
}

/// The images of a figure and what is known of each.
struct Tracker {
    targets: Vec<Target>,
    slots: Mutex<Vec<Slot>>,
    /// One moment on both clocks, to put an `Instant` next to PostgreSQL's times.
    anchor: (Instant, i64),
    /// Requests the watcher made (its load on the destination).
    requests: AtomicUsize,
}

impl Tracker {
    fn new(images: &[BenchImage]) -> Tracker {
        let targets: Vec<Target> = images
            .iter()
            .map(|im| Target {
                repo: im.repo.clone(),
                tag: im.image.tag.clone(),
                digest: im.digest.clone(),
            })
            .collect();
        let slots = Mutex::new(vec![Slot::default(); targets.len()]);
        Tracker {
            targets,
            slots,
            anchor: (Instant::now(), unix_us()),
            requests: AtomicUsize::new(0),
        }
    }

    /// `at` in microseconds since the Unix epoch (this machine's clock, which
    /// PostgreSQL's `now()` reads too).
    fn unix_us(&self, at: Instant) -> i64 {
        let (i0, u0) = self.anchor;
        if at >= i0 {
            u0 + (at - i0).as_micros() as i64
        } else {
            u0 - (i0 - at).as_micros() as i64
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        // A panicking thread cannot leave a Slot half-written: take the data as it is.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pushed(&self, i: usize, at: Instant) {
        if let Some(s) = self.lock().get_mut(i) {
            s.pushed = Some(at);
        }
    }

    fn snapshot(&self) -> Vec<Slot> {
        self.lock().clone()
    }
}

/// How the watcher finds candidates.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Watch {
    /// `HEAD` every outstanding image on every pass (the warm-up's one image).
    Head,
    /// One tags list per repository with outstanding images per pass, then `HEAD` (the
    /// digest check) only of those whose tag appeared: a tag is listed from the moment
    /// a `HEAD` by tag would find it, and the watcher's load on the destination stays
    /// one request per repository per pass however many images are outstanding.
    Tags,
}

/// Polls the destination until every image of `tracker` is there with its digest,
/// recording when each first was, or `deadline` passes.
async fn watch(
    dest: &Registry,
    tracker: &Tracker,
    mode: Watch,
    pause: Duration,
    conc: usize,
    deadline: Instant,
) -> Result<()> {
    let n = tracker.targets.len();
    let mut failing_passes = 0u32;
    let mut last_error = String::new();
    loop {
        let slots = tracker.snapshot();
        let seen = slots.iter().filter(|s| s.seen.is_some()).count();
        if seen == n {
            return Ok(());
        }
        if Instant::now() > deadline {
            let wrong = slots.iter().filter(|s| s.seen.is_none() && s.wrong).count();
            let pushed = slots.iter().filter(|s| s.pushed.is_some()).count();
            bail!(
                "{seen} of {n} images at the destination by the deadline ({pushed} pushed; {wrong} \
                 there with another digest){}",
                if last_error.is_empty() {
                    String::new()
                } else {
                    format!("; last error: {last_error}")
                }
            );
        }
        let pending: Vec<usize> = (0..n)
            .filter(|&i| slots[i].pushed.is_some() && slots[i].seen.is_none())
            .collect();
        let mut errors = 0usize;
        let mut requests = 0usize;
        let candidates: Vec<usize> = match mode {
            Watch::Head => pending,
            Watch::Tags => {
                let mut by_repo: HashMap<&str, Vec<usize>> = HashMap::new();
                for &i in &pending {
                    by_repo
                        .entry(tracker.targets[i].repo.as_str())
                        .or_default()
                        .push(i);
                }
                let mut c = Vec::new();
                for (repo, idx) in by_repo {
                    requests += 1;
                    match dest_tags(dest, repo).await {
                        Ok(tags) => c.extend(
                            idx.into_iter()
                                .filter(|&i| tags.contains(&tracker.targets[i].tag)),
                        ),
                        Err(e) => {
                            errors += 1;
                            last_error = format!("{e:#}");
                        }
                    }
                }
                c
            }
        };
        let items: Vec<(usize, Target)> = candidates
            .into_iter()
            .map(|i| (i, tracker.targets[i].clone()))
            .collect();
        requests += items.len();
        for (i, at, r) in head_many(dest, items, conc).await {
            match r {
                Ok(Found::Right) => {
                    if let Some(s) = tracker.lock().get_mut(i) {
                        s.seen.get_or_insert(at);
                    }
                }
                Ok(Found::Wrong) => {
                    if let Some(s) = tracker.lock().get_mut(i) {
                        s.wrong = true;
                    }
                }
                Ok(Found::Absent) => {}
                Err(e) => {
                    errors += 1;
                    last_error = format!("{e:#}");
                }
            }
        }
        tracker.requests.fetch_add(requests, Ordering::Relaxed);
        // A destination that fails every request for a while is down, not slow.
        if requests > 0 && errors == requests {
            failing_passes += 1;
            if failing_passes >= 100 {
                bail!("every request to the destination failed for 100 passes: {last_error}");
            }
        } else {
            failing_passes = 0;
        }
        tokio::time::sleep(pause).await;
    }
}

/// Pushes one image (untimed) and waits until the destination has it: proves the
/// policy, the workers and the destination work end to end before a clock starts,
/// and warms their connections.
async fn warm_up(
    berth: &Registry,
    dest: &Registry,
    e: &Ends,
    repo: &str,
    seed: u64,
) -> Result<Duration> {
    let images = bench_images(
        seed ^ 0x77a2,
        0,
        1,
        &[repo.to_owned()],
        &format!("warm-{:x}", seed & 0xffff_ffff),
    );
    let tracker = Tracker::new(&images);
    let t0 = Instant::now();
    push_image(berth, repo, &images[0].image)
        .await
        .with_context(|| format!("warm-up push to {repo}"))?;
    tracker.pushed(0, Instant::now());
    watch(
        dest,
        &tracker,
        Watch::Head,
        Duration::from_millis(50),
        1,
        t0 + Duration::from_secs(e.warm_up_secs),
    )
    .await
    .with_context(|| {
        format!(
            "the warm-up image {repo}:{} never reached the destination within {} s; do the \
             replicate workers run, and does the policy cover {repo}?",
            images[0].image.tag, e.warm_up_secs
        )
    })?;
    Ok(t0.elapsed())
}

// ---------------------------------------------------------------- the tasks

/// The highest execution id now: the figure's executions are the ones after it.
async fn last_execution(db: &PgPool) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT coalesce(max(id), 0)::int8 FROM executions")
            .fetch_one(db)
            .await?,
    )
}

/// Waits (a while) until no replicate task after `after` is pending or running, so the
/// summary sees finished tasks; the destination has the images already.
async fn quiesce(db: &PgPool, after: i64, limit: Duration) -> Result<i64> {
    let deadline = Instant::now() + limit;
    loop {
        let busy: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tasks t JOIN executions e ON e.id = t.execution_id \
             WHERE e.kind = 'replicate' AND e.id > $1 AND t.status IN ('pending', 'running')",
        )
        .bind(after)
        .fetch_one(db)
        .await?;
        if busy == 0 || Instant::now() > deadline {
            return Ok(busy);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the replicate tasks of executions after `after` did: counts, bytes, blobs
/// skipped/mounted/uploaded (the copy payload's counters), and the percentiles (ms) of
/// event → task created (the execution's start to the task's creation), queue wait
/// (created → started) and run time (started → ended).
async fn task_summary(db: &PgPool, after: i64) -> Result<Map<String, Value>> {
    let busy = quiesce(db, after, Duration::from_secs(60)).await?;
    let row: Value = sqlx::query_scalar(
        r#"
        WITH t AS (
            SELECT t.*, e.start_time AS exec_start
            FROM tasks t JOIN executions e ON e.id = t.execution_id
            WHERE e.kind = 'replicate' AND e.id > $1
        ), n AS (
            SELECT
                CASE WHEN jsonb_typeof(payload->'blobs_skipped') = 'number'
                     THEN (payload->>'blobs_skipped')::numeric END AS skipped,
                CASE WHEN jsonb_typeof(payload->'blobs_mounted') = 'number'
                     THEN (payload->>'blobs_mounted')::numeric END AS mounted,
                CASE WHEN jsonb_typeof(payload->'blobs_uploaded') = 'number'
                     THEN (payload->>'blobs_uploaded')::numeric END AS uploaded,
                *
            FROM t
        )
        SELECT jsonb_build_object(
            'executions', (SELECT count(*) FROM executions WHERE kind = 'replicate' AND id > $1),
            'executions_not_succeeded', (SELECT count(*) FROM executions
                                         WHERE kind = 'replicate' AND id > $1 AND status <> 'succeeded'),
            'tasks', count(*),
            'tasks_succeeded', count(*) FILTER (WHERE status = 'succeeded'),
            'tasks_failed', count(*) FILTER (WHERE status = 'failed'),
            'tasks_superseded', count(*) FILTER (WHERE status_message LIKE 'superseded%'),
            'tasks_retried', count(*) FILTER (WHERE attempts > 1),
            'max_attempts', max(attempts),
            'bytes', coalesce(sum(bytes), 0),
            'blobs_skipped', coalesce(sum(skipped), 0),
            'blobs_mounted', coalesce(sum(mounted), 0),
            'blobs_uploaded', coalesce(sum(uploaded), 0),
            'event_to_task_p50_ms', percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM created_at - exec_start) * 1000),
            'event_to_task_p99_ms', percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM created_at - exec_start) * 1000),
            'wait_p50_ms', percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at) * 1000),
            'wait_p99_ms', percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at) * 1000),
            'run_p50_ms', percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM ended_at - started_at) * 1000),
            'run_p99_ms', percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM ended_at - started_at) * 1000),
            'run_max_ms', max(extract(epoch FROM ended_at - started_at) * 1000),
            'first_created_to_last_ended_s', extract(epoch FROM max(ended_at) - min(created_at)),
            'first_failure', (SELECT status_message FROM t WHERE status = 'failed' ORDER BY id LIMIT 1)
        )
        FROM n
        "#,
    )
    .bind(after)
    .fetch_one(db)
    .await
    .context("summarising the replicate tasks")?;
    let mut m = obj(row);
    // Rounded: the JSON line is for people too.
    for v in m.values_mut() {
        if let Some(x) = v.as_f64() {
            if !v.is_i64() && !v.is_u64() {
                *v = r1(x);
            }
        }
    }
    m.insert("tasks_unfinished".into(), json!(busy));
    Ok(m)
}

/// Per image, where the time from its push to its arrival went, from the replicate
/// executions and tasks after `after` (matched on the task's `source_resource`,
/// `repository:tag`): push done → execution started (the event pipeline), → its task
/// started (the queue), → the task ended (the copy), → first seen at the destination
/// (the watcher's delay, and the task's own bookkeeping after the manifest PUT: 0 when
/// the destination had it before the task ended). Percentiles in ms.
/// A task's `source_resource`, its execution's start, its start and its end (µs).
type TaskTimes = (Option<String>, i64, Option<i64>, Option<i64>);

async fn stages(db: &PgPool, after: i64, tracker: &Tracker) -> Result<Map<String, Value>> {
    let rows: Vec<TaskTimes> = sqlx::query_as(
        "SELECT t.payload->>'source_resource', \
                (extract(epoch FROM e.start_time) * 1000000)::int8, \
                (extract(epoch FROM t.started_at) * 1000000)::int8, \
                (extract(epoch FROM t.ended_at) * 1000000)::int8 \
         FROM tasks t JOIN executions e ON e.id = t.execution_id \
         WHERE e.kind = 'replicate' AND e.id > $1 AND t.status = 'succeeded' \
         ORDER BY e.id",
    )
    .bind(after)
    .fetch_all(db)
    .await
    .context("reading the replicate tasks' times")?;
    let mut by_resource: HashMap<String, (i64, i64, i64)> = HashMap::new();
    for (resource, exec, started, ended) in rows {
        if let (Some(r), Some(st), Some(en)) = (resource, started, ended) {
            // The first execution of an image is the one its push started.
            by_resource.entry(r).or_insert((exec, st, en));
        }
    }
    let slots = tracker.snapshot();
    let (mut event, mut queue, mut run, mut visible) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (t, slot) in tracker.targets.iter().zip(&slots) {
        let (Some(pushed), Some(seen)) = (slot.pushed, slot.seen) else {
            continue;
        };
        let Some(&(exec, started, ended)) = by_resource.get(&format!("{}:{}", t.repo, t.tag))
        else {
            continue;
        };
        let (p, s) = (tracker.unix_us(pushed), tracker.unix_us(seen));
        let us = |d: i64| d.max(0) as u64;
        event.push(us(exec - p));
        queue.push(us(started - exec));
        run.push(us(ended - started));
        visible.push(us(s - ended));
    }
    let mut m = Map::new();
    m.insert("matched".into(), json!(event.len()));
    for (name, v) in [
        ("event", &mut event),
        ("queue", &mut queue),
        ("copy", &mut run),
        ("seen", &mut visible),
    ] {
        v.sort_unstable();
        m.insert(format!("{name}_p50_ms"), r1(percentile_ms(v, 50.0)));
        m.insert(format!("{name}_p99_ms"), r1(percentile_ms(v, 99.0)));
    }
    Ok(m)
}

fn stages_line(s: &Map<String, Value>) -> String {
    let g = |k: &str| {
        s.get(k)
            .and_then(Value::as_f64)
            .map_or("?".to_owned(), |v| format!("{v:.0}"))
    };
    format!(
        "per image ({} matched), p50 / p99 ms: push → execution {} / {}, → task start {} / {}, copy {} / {}, \
         task end → seen at destination {} / {}",
        s.get("matched").map_or("?".to_owned(), |v| v.to_string()),
        g("event_p50_ms"),
        g("event_p99_ms"),
        g("queue_p50_ms"),
        g("queue_p99_ms"),
        g("copy_p50_ms"),
        g("copy_p99_ms"),
        g("seen_p50_ms"),
        g("seen_p99_ms"),
    )
}

fn summary_line(s: &Map<String, Value>) -> String {
    let g = |k: &str| s.get(k).map_or("?".to_owned(), |v| v.to_string());
    format!(
        "tasks: {} ({} succeeded, {} failed, {} superseded, {} retried, {} unfinished); blobs skipped {} \
         / mounted {} / uploaded {}; {} bytes; event → task p50 {} ms p99 {} ms; queue wait p50 {} ms \
         p99 {} ms; run p50 {} ms p99 {} ms max {} ms{}",
        g("tasks"),
        g("tasks_succeeded"),
        g("tasks_failed"),
        g("tasks_superseded"),
        g("tasks_retried"),
        g("tasks_unfinished"),
        g("blobs_skipped"),
        g("blobs_mounted"),
        g("blobs_uploaded"),
        g("bytes"),
        g("event_to_task_p50_ms"),
        g("event_to_task_p99_ms"),
        g("wait_p50_ms"),
        g("wait_p99_ms"),
        g("run_p50_ms"),
        g("run_p99_ms"),
        g("run_max_ms"),
        match s.get("first_failure").and_then(Value::as_str) {
            Some(m) => format!("; first failure: {m}"),
            None => String::new(),
        }
    )
}

// ---------------------------------------------------------------- burst

async fn burst(a: &BurstArgs) -> Result<Outcome> {
    ensure!(
        a.count > 0 && a.repos > 0 && a.push_concurrency > 0,
        "--count, --repos and --push-concurrency must be positive"
    );
    let e = &a.ends;
    let berth = connect_berth(&e.target, e.username.as_deref()).await?;
    let dest = connect_dest(&e.dest).await?;
    let db = connect_db().await?;
    let seed = e.seed.unwrap_or_else(clock_seed);
    let repos: Vec<String> = (0..a.repos)
        .map(|r| format!("{}/r{r}", e.project))
        .collect();
    let prefix = format!("b{}-{:x}", a.processes, seed & 0xffff_ffff);
    let images = make_images(seed, a.count, repos.clone(), prefix).await?;
    let warm = warm_up(&berth, &dest, e, &format!("{}/warmup", e.project), seed).await?;
    eprintln!(
        "burst: warm-up image replicated {:.0} ms after its push started; pushing {} images over {} \
         repositories, {} at a time, with {} worker process(es)",
        warm.as_secs_f64() * 1000.0,
        a.count,
        a.repos,
        a.push_concurrency,
        a.processes
    );
    let after = match &db {
        Some(db) => {
            quiesce(db, 0, Duration::from_secs(60)).await?;
            Some(last_execution(db).await?)
        }
        None => None,
    };

    let tracker = Arc::new(Tracker::new(&images));
    let images = Arc::new(images);
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(a.timeout_secs);
    let mut pushers = tokio::task::JoinSet::new();
    for _ in 0..a.push_concurrency.min(a.count) {
        let (berth, images, next, tracker) =
            (berth.clone(), images.clone(), next.clone(), tracker.clone());
        pushers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(im) = images.get(i) else {
                    return anyhow::Ok(());
                };
                push_image(&berth, &im.repo, &im.image)
                    .await
                    .with_context(|| format!("push {}:{}", im.repo, im.image.tag))?;
                tracker.pushed(i, Instant::now());
            }
        });
    }
    let watcher = {
        let (dest, tracker, poll, conc) =
            (dest.clone(), tracker.clone(), a.poll_ms, e.poll_concurrency);
        tokio::spawn(async move {
            watch(
                &dest,
                &tracker,
                Watch::Tags,
                Duration::from_millis(poll),
                conc,
                deadline,
            )
            .await
        })
    };
    while let Some(r) = pushers.join_next().await {
        if let Err(err) = r.map_err(anyhow::Error::from).and_then(|r| r) {
            watcher.abort();
            return Err(err);
        }
    }
    let pushes_done = Instant::now();
    // Only images that are in Berth: the skopeo figure copies from this list.
    if let Some(p) = &a.images_out {
        write_images(p, &images)?;
    }
    eprintln!(
        "burst: {} pushes done in {:.2} s; waiting for the destination",
        a.count,
        (pushes_done - t0).as_secs_f64()
    );
    watcher.await??;

    let slots = tracker.snapshot();
    let last_seen = slots
        .iter()
        .filter_map(|s| s.seen)
        .max()
        .unwrap_or(pushes_done);
    let seconds = (last_seen - t0).as_secs_f64();
    let push_seconds = (pushes_done - t0).as_secs_f64();
    let tail = last_seen
        .saturating_duration_since(pushes_done)
        .as_secs_f64();
    // Push done → seen, per image: how far replication lagged behind the pushes.
    let mut lag: Vec<u64> = slots
        .iter()
        .filter_map(|s| Some(s.seen?.saturating_duration_since(s.pushed?).as_micros() as u64))
        .collect();
    lag.sort_unstable();
    let rate = a.count as f64 / seconds;
    let mut json = obj(json!({
        "images": a.count,
        "repositories": a.repos,
        "layers": LAYERS,
        "layer_kib": LAYER_BYTES / 1024,
        "push_concurrency": a.push_concurrency,
        "processes": a.processes,
        "worker_concurrency": a.worker_concurrency,
        "seconds": r3(seconds),
        "push_seconds": r3(push_seconds),
        "after_last_push_seconds": r3(tail),
        "images_per_s": r1(rate),
        "lag_p50_ms": r1(percentile_ms(&lag, 50.0)),
        "lag_max_ms": r1(percentile_ms(&lag, 100.0)),
        "warm_up_ms": r1(warm.as_secs_f64() * 1000.0),
    }));
    let mut human = format!(
        "{} images over {} repositories, {} worker process(es) × {}: all at the destination {seconds:.2} s \
         after the first push ({rate:.1} images/s; pushes took {push_seconds:.2} s, {tail:.2} s more \
         after the last push); push → at destination p50 {:.0} ms, max {:.0} ms",
        a.count,
        a.repos,
        a.processes,
        a.worker_concurrency,
        percentile_ms(&lag, 50.0),
        percentile_ms(&lag, 100.0),
    );
    if let (Some(db), Some(after)) = (&db, after) {
        match task_summary(db, after).await {
            Ok(s) if s.get("tasks").and_then(Value::as_i64).unwrap_or(0) > 0 => {
                human.push_str(&format!("; {}", summary_line(&s)));
                json.insert("tasks".into(), Value::Object(s));
            }
            Ok(_) => human.push_str("; no replicate task in the database"),
            Err(err) => eprintln!("burst: no task summary: {err:#}"),
        }
        match stages(db, after, &tracker).await {
            Ok(st) => {
                human.push_str(&format!("; {}", stages_line(&st)));
                json.insert("stages".into(), Value::Object(st));
            }
            Err(err) => eprintln!("burst: no per-image stages: {err:#}"),
        }
    }
    json.insert(
        "watch_requests".into(),
        json!(tracker.requests.load(Ordering::Relaxed)),
    );
    Ok(Outcome { human, json })
}

// ---------------------------------------------------------------- skopeo

/// `host:port` of a plain-HTTP base URL, as docker:// references and auth files name it.
fn host_port(url: &str) -> Result<String> {
    let u = Url::parse(url).with_context(|| format!("bad URL {url:?}"))?;
    let host = u.host_str().ok_or_else(|| anyhow!("{url} has no host"))?;
    Ok(match u.port_or_known_default() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    })
}

/// Removes the auth file when the figure ends, whichever way.
struct AuthFile(PathBuf);

impl Drop for AuthFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A containers-auth.json for `host` (what `skopeo login` writes), mode 0600: the
/// password stays off every command line.
fn write_auth_file(dir: &Path, host: &str, user: &str, password: &str) -> Result<AuthFile> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join(format!("skopeo-auth-{}.json", std::process::id()));
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let body = json!({ "auths": { host: { "auth": pair } } }).to_string();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(body.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(AuthFile(path))
}

async fn skopeo(a: &SkopeoArgs) -> Result<Outcome> {
    ensure!(a.parallel > 0, "--parallel must be positive");
    let text = std::fs::read_to_string(&a.images)
        .with_context(|| format!("reading {}", a.images.display()))?;
    let targets = Arc::new(parse_images(&text)?);
    ensure!(!targets.is_empty(), "{} lists no image", a.images.display());
    let dest = connect_dest(&a.dest).await?;
    let (src_host, dest_host) = (host_port(&a.source)?, host_port(&a.dest)?);
    let version = tokio::process::Command::new(&a.skopeo)
        .arg("--version")
        .output()
        .await
        .with_context(|| format!("running {} --version", a.skopeo.display()))?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let auth = match &a.username {
        Some(user) => {
            let c = Credentials::from_env(user)?;
            Some(write_auth_file(
                &a.work_dir,
                &src_host,
                &c.username,
                &c.password,
            )?)
        }
        None => None,
    };
    eprintln!(
        "skopeo: copying {} images {src_host} → {dest_host}, {} at a time ({version})",
        targets.len(),
        a.parallel
    );

    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..a.parallel.min(targets.len()) {
        let (targets, next, skopeo) = (targets.clone(), next.clone(), a.skopeo.clone());
        let (src_host, dest_host) = (src_host.clone(), dest_host.clone());
        let auth = auth.as_ref().map(|f| f.0.clone());
        let limit = Duration::from_secs(a.copy_timeout_secs);
        set.spawn(async move {
            let mut failures: Vec<String> = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(t) = targets.get(i) else {
                    return failures;
                };
                let mut cmd = tokio::process::Command::new(&skopeo);
                // --insecure-policy: no /etc/containers/policy.json needed; signatures
                // play no part in the copy. --preserve-digests: the bench layers are
                // random bytes, which skopeo would otherwise gzip on the way (new
                // digests, CPU Berth does not spend); with it, it copies them as they
                // are, as Berth does.
                cmd.args(["--insecure-policy", "copy", "--quiet", "--preserve-digests"])
                    .args(["--src-tls-verify=false", "--dest-tls-verify=false"]);
                if let Some(f) = &auth {
                    cmd.arg("--src-authfile").arg(f);
                }
                cmd.arg(format!("docker://{src_host}/{}:{}", t.repo, t.tag))
                    .arg(format!("docker://{dest_host}/{}:{}", t.repo, t.tag))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .kill_on_drop(true);
                let what = format!("{}:{}", t.repo, t.tag);
                match tokio::time::timeout(limit, cmd.output()).await {
                    Ok(Ok(out)) if out.status.success() => {}
                    Ok(Ok(out)) => failures.push(format!(
                        "{what}: {}: {}",
                        out.status,
                        truncate(&out.stderr).trim()
                    )),
                    Ok(Err(e)) => failures.push(format!("{what}: cannot run skopeo: {e}")),
                    Err(_) => {
                        failures.push(format!("{what}: timed out after {} s", limit.as_secs()))
                    }
                }
            }
        });
    }
    let mut failures = Vec::new();
    while let Some(r) = set.join_next().await {
        failures.extend(r?);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    drop(auth);

    // Untimed: every image at the destination with the digest Berth has.
    let items: Vec<(usize, Target)> = targets.iter().cloned().enumerate().collect();
    let (mut right, mut wrong, mut absent, mut errors) = (0usize, 0usize, 0usize, 0usize);
    for (_, _, r) in head_many(&dest, items, 8).await {
        match r {
            Ok(Found::Right) => right += 1,
            Ok(Found::Wrong) => wrong += 1,
            Ok(Found::Absent) => absent += 1,
            Err(_) => errors += 1,
        }
    }
    let n = targets.len();
    for f in failures.iter().take(3) {
        eprintln!("skopeo: failed: {f}");
    }
    ensure!(
        failures.len() * 100 <= n,
        "{} of {n} skopeo copies failed (first: {})",
        failures.len(),
        failures.first().map_or("", String::as_str)
    );
    let rate = n as f64 / elapsed;
    Ok(Outcome {
        human: format!(
            "{n} images copied by skopeo, {} at a time: {elapsed:.2} s ({rate:.1} images/s); at the \
             destination with the same digest: {right}, other digest: {wrong}, missing: {absent}, \
             HEAD errors: {errors}; {} copies failed",
            a.parallel,
            failures.len()
        ),
        json: obj(json!({
            "images": n,
            "parallel": a.parallel,
            "seconds": r3(elapsed),
            "images_per_s": r1(rate),
            "failed": failures.len(),
            "verified": right,
            "other_digest": wrong,
            "missing": absent + errors,
            "skopeo_version": version,
        })),
    })
}

// ---------------------------------------------------------------- latency

async fn latency(a: &LatencyArgs) -> Result<Outcome> {
    ensure!(
        a.rate > 0.0 && a.repos > 0 && a.duration_secs > 0,
        "--rate, --repos and --duration-secs must be positive"
    );
    let e = &a.ends;
    let berth = connect_berth(&e.target, e.username.as_deref()).await?;
    let dest = connect_dest(&e.dest).await?;
    let db = connect_db().await?;
    let seed = e.seed.unwrap_or_else(clock_seed);
    let repos: Vec<String> = (0..a.repos)
        .map(|r| format!("{}/steady-{r}", e.project))
        .collect();
    let count = ((a.rate * a.duration_secs as f64).round() as usize).max(1);
    let images = make_images(
        seed,
        count,
        repos.clone(),
        format!("s-{:x}", seed & 0xffff_ffff),
    )
    .await?;
    // One warm-up image per repository: its first push creates the repository on both
    // sides, which a steady stream of pushes pays once.
    let mut warm_ms = Vec::new();
    for (r, repo) in repos.iter().enumerate() {
        let w = warm_up(&berth, &dest, e, repo, seed.wrapping_add(r as u64 + 1)).await?;
        warm_ms.push(w.as_secs_f64() * 1000.0);
    }
    eprintln!(
        "latency: warm-up images replicated in {} ms; {count} pushes at {}/s over {} repositories",
        warm_ms
            .iter()
            .map(|m| format!("{m:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        a.rate,
        repos.len()
    );
    let after = match &db {
        Some(db) => {
            quiesce(db, 0, Duration::from_secs(60)).await?;
            Some(last_execution(db).await?)
        }
        None => None,
    };

    let tracker = Arc::new(Tracker::new(&images));
    let images = Arc::new(images);
    let period = Duration::from_secs_f64(1.0 / a.rate);
    let deadline =
        Instant::now() + period.mul_f64(count as f64) + Duration::from_secs(a.settle_secs);
    let watcher = {
        let (dest, tracker, poll, conc) =
            (dest.clone(), tracker.clone(), a.poll_ms, e.poll_concurrency);
        tokio::spawn(async move {
            watch(
                &dest,
                &tracker,
                Watch::Tags,
                Duration::from_millis(poll),
                conc,
                deadline,
            )
            .await
        })
    };
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut set = tokio::task::JoinSet::new();
    let mut max_late = Duration::ZERO;
    for i in 0..count {
        let due = start + period.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        max_late = max_late.max(tokio::time::Instant::now().saturating_duration_since(due));
        let (berth, images, tracker) = (berth.clone(), images.clone(), tracker.clone());
        set.spawn(async move {
            let im = &images[i];
            let t = Instant::now();
            push_image(&berth, &im.repo, &im.image)
                .await
                .with_context(|| format!("push {}:{}", im.repo, im.image.tag))?;
            let done = Instant::now();
            tracker.pushed(i, done);
            anyhow::Ok((done - t).as_micros() as u64)
        });
    }
    let scheduled_s = (tokio::time::Instant::now() - start).as_secs_f64();
    let mut push_us = Vec::with_capacity(count);
    while let Some(r) = set.join_next().await {
        match r.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(us) => push_us.push(us),
            Err(err) => {
                watcher.abort();
                return Err(err);
            }
        }
    }
    push_us.sort_unstable();
    let achieved = count as f64 / scheduled_s.max(1e-6);
    // A watcher that gives up leaves the missing images unmeasured; they count below.
    let watched = watcher.await?;
    if let Err(err) = &watched {
        eprintln!("latency: {err:#}");
    }
    let slots = tracker.snapshot();
    let mut lat: Vec<u64> = slots
        .iter()
        .filter_map(|s| Some(s.seen?.saturating_duration_since(s.pushed?).as_micros() as u64))
        .collect();
    lat.sort_unstable();
    let missing = count - lat.len();
    // A missing image is slower than any measured one: with more than 1 % missing the
    // 99th percentile is unknown, and reported as such.
    let mut all = lat.clone();
    all.extend(std::iter::repeat_n(u64::MAX, missing));
    let pct = |p: f64| {
        let v = percentile_ms(&all, p);
        if v > 1e15 {
            f64::INFINITY
        } else {
            v
        }
    };
    let (p50, p99, max) = (pct(50.0), pct(99.0), pct(100.0));
    let mut json = obj(json!({
        "pushes": count,
        "rate": a.rate,
        "achieved_per_s": r1(achieved),
        "duration_secs": a.duration_secs,
        "repositories": a.repos,
        "processes": a.processes,
        "poll_ms": a.poll_ms,
        "p50_ms": r1(p50),
        "p99_ms": r1(p99),
        "max_ms": r1(max),
        "mean_ms": r1(mean_ms(&lat)),
        "measured": lat.len(),
        "missing": missing,
        "push_p50_ms": r1(percentile_ms(&push_us, 50.0)),
        "push_p99_ms": r1(percentile_ms(&push_us, 99.0)),
        "max_schedule_lag_ms": r1(max_late.as_secs_f64() * 1000.0),
    }));
    let mut human = format!(
        "{count} pushes at {achieved:.1}/s over {} repositories, {} worker process(es): push done → at the \
         destination p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms ({missing} missing; destination \
         polled every {} ms); push p50 {:.0} ms",
        a.repos,
        a.processes,
        a.poll_ms,
        percentile_ms(&push_us, 50.0)
    );
    if let (Some(db), Some(after)) = (&db, after) {
        match task_summary(db, after).await {
            Ok(s) if s.get("tasks").and_then(Value::as_i64).unwrap_or(0) > 0 => {
                human.push_str(&format!("; {}", summary_line(&s)));
                json.insert("tasks".into(), Value::Object(s));
            }
            Ok(_) => human.push_str("; no replicate task in the database"),
            Err(err) => eprintln!("latency: no task summary: {err:#}"),
        }
        match stages(db, after, &tracker).await {
            Ok(st) => {
                human.push_str(&format!("; {}", stages_line(&st)));
                json.insert("stages".into(), Value::Object(st));
            }
            Err(err) => eprintln!("latency: no per-image stages: {err:#}"),
        }
    }
    json.insert(
        "watch_requests".into(),
        json!(tracker.requests.load(Ordering::Relaxed)),
    );
    Ok(Outcome { human, json })
}

// ---------------------------------------------------------------- report

fn run_report(a: &ReportArgs) -> Result<()> {
    let results = report::load(&a.results)?;
    let s = render(&results, &a.note);
    print!("{}", s.markdown);
    eprintln!(
        "loadtest replication: {} targets met, {} not met or not measured",
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

fn fmt_count(x: Option<f64>) -> String {
    x.filter(|v| v.is_finite())
        .map_or("—".into(), |v| format!("{v:.0}"))
}

fn field(r: &Results, scenario: &str, name: &str) -> Option<f64> {
    r.get(scenario)?.get(name)?.as_f64()
}

fn task_field(r: &Results, scenario: &str, name: &str) -> Option<f64> {
    r.get(scenario)?.get("tasks")?.get(name)?.as_f64()
}

fn count(r: &Results, scenario: &str, name: &str) -> String {
    r.get(scenario)
        .and_then(|v| v.get(name))
        .and_then(Value::as_u64)
        .map_or("?".into(), |n| n.to_string())
}

/// The per-image stages of figure `s`, p50 (p99) ms, as one table row.
fn stage_row(r: &Results, s: &str, label: &str) -> Option<String> {
    let st = r.get(s)?.get("stages")?;
    let g = |k: &str| fmt(st.get(k).and_then(Value::as_f64));
    Some(format!(
        "| {label} | ms p50 (p99): push → execution; → task start; copy; → seen | {} ({}); {} ({}); {} ({}); {} ({}) | | | | |\n",
        g("event_p50_ms"),
        g("event_p99_ms"),
        g("queue_p50_ms"),
        g("queue_p99_ms"),
        g("copy_p50_ms"),
        g("copy_p99_ms"),
        g("seen_p50_ms"),
        g("seen_p99_ms"),
    ))
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

    let peer = field(r, "replication-skopeo", "seconds");
    for n in 1..=8usize {
        let s = format!("replication-burst-{n}");
        if !r.contains_key(&s) {
            continue;
        }
        let label = format!(
            "burst of {} pushes, {n} worker process{} × {}",
            count(r, &s, "images"),
            if n == 1 { "" } else { "es" },
            count(r, &s, "worker_concurrency"),
        );
        let secs = field(r, &s, "seconds");
        let ratio = match (secs, peer) {
            (Some(b), Some(p)) if b > 0.0 => Some(p / b),
            _ => None,
        };
        out.push_str(&format!(
            "| {label} | s, first push → all at destination | {} | {} | {} | ≥ {BURST_MIN_RATIO:.0}× skopeo | {} |\n",
            fmt(secs),
            fmt(peer),
            ratio.map_or("—".into(), |x| format!("{x:.2}×")),
            t.verdict(ratio.map(|x| x >= BURST_MIN_RATIO)),
        ));
        out.push_str(&format!(
            "| {label} | s, pushes alone / after the last push | {} / {} | | | | |\n",
            fmt(field(r, &s, "push_seconds")),
            fmt(field(r, &s, "after_last_push_seconds")),
        ));
        if let Some(row) = stage_row(r, &s, &label) {
            out.push_str(&row);
        }
        if r.get(&s).and_then(|v| v.get("tasks")).is_some() {
            out.push_str(&format!(
                "| {label} | blobs skipped / mounted / uploaded | {} / {} / {} | | | | |\n",
                fmt_count(task_field(r, &s, "blobs_skipped")),
                fmt_count(task_field(r, &s, "blobs_mounted")),
                fmt_count(task_field(r, &s, "blobs_uploaded")),
            ));
            out.push_str(&format!(
                "| {label} | task run ms p50 / p99; queue wait ms p50 / p99 | {} / {}; {} / {} | | | | |\n",
                fmt(task_field(r, &s, "run_p50_ms")),
                fmt(task_field(r, &s, "run_p99_ms")),
                fmt(task_field(r, &s, "wait_p50_ms")),
                fmt(task_field(r, &s, "wait_p99_ms")),
            ));
        }
    }
    if peer.is_none() && (1..=8).any(|n| r.contains_key(&format!("replication-burst-{n}"))) {
        out.push_str("| skopeo copy (the peer) | s | | — | | | not measured |\n");
    }
    if r.contains_key("replication-latency") {
        let s = "replication-latency";
        let label = format!(
            "push → at destination, {} pushes/s for {} s, {} worker process",
            fmt(field(r, s, "rate")),
            count(r, s, "duration_secs"),
            count(r, s, "processes"),
        );
        let p99 = field(r, s, "p99_ms");
        let missing = field(r, s, "missing").unwrap_or(0.0);
        out.push_str(&format!(
            "| {label} | p50 ms | {} | | | | |\n",
            fmt(field(r, s, "p50_ms"))
        ));
        out.push_str(&format!(
            "| {label} | p99 ms | {} | | | < {LATENCY_MAX_P99_MS:.0} ms | {} |\n",
            fmt(p99),
            // An unknown p99 (too many images missing) is a miss, not "not measured".
            t.verdict(Some(p99.is_some_and(|x| x < LATENCY_MAX_P99_MS))),
        ));
        if let Some(row) = stage_row(r, s, &label) {
            out.push_str(&row);
        }
        if missing > 0.0 {
            out.push_str(&format!(
                "| {label} | images never at destination | {missing:.0} | | | 0 | |\n"
            ));
        }
    }
    out.push('\n');
    if let Some(first) = (1..=8usize)
        .map(|n| format!("replication-burst-{n}"))
        .find(|s| r.contains_key(s))
    {
        out.push_str(&format!(
            "Burst: small images (config + 3 × 256 KiB layers of random bytes; every other image \
             shares one base layer, every other layer is unique) spread over {} repositories are \
             pushed into Berth ({} at a time, token auth as docker does it) while the workers \
             replicate them; the time runs from the first push to the moment the destination (a \
             fresh docker-registry for each run) answers a `HEAD` of the last image's manifest with \
             its digest, so Berth's figure includes the pushes. Peer: the same images, already in \
             Berth, copied to a fresh docker-registry by `skopeo copy` (docker:// to docker://, \
             `--preserve-digests`, Berth's credentials in an auth file), a fixed number of \
             processes at a time; ratio = skopeo ÷ Berth. Blob and task figures come from the \
             replicate tasks' rows.\n\n",
            count(r, &first, "repositories"),
            count(r, &first, "push_concurrency"),
        ));
    }
    if let Some(v) = r.get("replication-skopeo") {
        out.push_str(&format!(
            "skopeo: {} images, {} at a time, {}; {} failed; {} at the destination with Berth's digest.\n\n",
            count(r, "replication-skopeo", "images"),
            count(r, "replication-skopeo", "parallel"),
            v.get("skopeo_version").and_then(Value::as_str).unwrap_or("?"),
            count(r, "replication-skopeo", "failed"),
            count(r, "replication-skopeo", "verified"),
        ));
    }
    if r.contains_key("replication-latency") {
        out.push_str(&format!(
            "Latency: pushes start on a fixed schedule; each image's latency runs from its manifest \
             PUT's response to the first `HEAD` at the destination answering with its digest (every \
             {} ms the tags list of each repository with outstanding images is read, and each newly \
             listed tag is checked with a `HEAD`). The stages split each image's latency with the \
             times PostgreSQL holds: the execution's start, its task's start and end.\n\n",
            count(r, "replication-latency", "poll_ms")
        ));
    }
    for n in notes {
        out.push_str(&format!("{n}\n\n"));
    }
    out.push_str(&format!(
        "Replication targets met: {} of {}.\n",
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
    fn images_share_one_base_layer_every_other_time() {
        let repos = vec!["p/r0".to_owned(), "p/r1".to_owned()];
        let a = bench_images(7, 0, 4, &repos, "t");
        let b = bench_images(7, 2, 2, &repos, "t");
        let base = &a[0].image.layers[0].1;
        assert_eq!(&a[2].image.layers[0].1, base);
        assert_ne!(&a[1].image.layers[0].1, base);
        assert_ne!(&a[3].image.layers[0].1, base);
        // Every other layer is unique.
        let mut all: Vec<&String> = a
            .iter()
            .flat_map(|im| im.image.layers.iter().map(|l| &l.1))
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 4 * LAYERS - 1);
        // Generated in two halves or at once, the images are the same.
        assert_eq!(a[2].digest, b[0].digest);
        assert_eq!(a[3].image.tag, "t-3");
        assert_eq!(a[3].repo, "p/r1");
        assert_eq!(a[0].digest, sha256_digest(&a[0].image.manifest));
        assert_eq!(a[0].image.layers[1].0.len(), LAYER_BYTES);
    }

    #[test]
    fn image_lists_round_trip() {
        let a = bench_images(1, 0, 3, &["p/r0".to_owned()], "x");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images.tsv");
        write_images(&path, &a).unwrap();
        let t = parse_images(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(
            t[1],
            Target {
                repo: "p/r0".into(),
                tag: "x-1".into(),
                digest: a[1].digest.clone()
            }
        );
        assert!(parse_images("a\tb\n").is_err());
        assert!(parse_images("a\tb\tmd5:x\n").is_err());
    }

    #[test]
    fn hosts_of_urls() {
        assert_eq!(
            host_port("http://127.0.0.1:5022").unwrap(),
            "127.0.0.1:5022"
        );
        assert_eq!(host_port("http://localhost/").unwrap(), "localhost:80");
    }

    #[test]
    fn table() {
        let r = report::parse_results(
            r#"{"scenario":"replication-burst-1","images":2000,"repositories":20,"worker_concurrency":8,"seconds":40.0,"push_seconds":20.0,"after_last_push_seconds":20.0,"tasks":{"blobs_skipped":0,"blobs_mounted":999,"blobs_uploaded":7001,"run_p50_ms":30.0,"run_p99_ms":90.0,"wait_p50_ms":5.0,"wait_p99_ms":900.0}}
{"scenario":"replication-burst-2","images":2000,"repositories":20,"worker_concurrency":8,"seconds":60.0}
{"scenario":"replication-skopeo","images":2000,"parallel":8,"seconds":100.0,"failed":0,"verified":2000,"skopeo_version":"skopeo version 1.9.3"}
{"scenario":"replication-latency","rate":10.0,"duration_secs":60,"processes":1,"p50_ms":300.0,"p99_ms":900.0,"missing":0,"poll_ms":20,"stages":{"event_p50_ms":5.0,"event_p99_ms":20.0,"queue_p50_ms":1.0,"queue_p99_ms":3.0,"copy_p50_ms":250.0,"copy_p99_ms":800.0,"seen_p50_ms":10.0,"seen_p99_ms":30.0}}"#,
        );
        let s = render(&r, &["a note".into()]);
        let md = &s.markdown;
        assert!(
            md.contains("| burst of 2000 pushes, 1 worker process × 8 | s, first push → all at destination | 40.0 | 100 | 2.50× | ≥ 2× skopeo | yes |"),
            "{md}"
        );
        assert!(
            md.contains("2 worker processes × 8 | s, first push → all at destination | 60.0 | 100 | 1.67× | ≥ 2× skopeo | **no** |"),
            "{md}"
        );
        assert!(md.contains("| 0 / 999 / 7001 |"), "{md}");
        assert!(
            md.contains("| p99 ms | 900 | | | < 2000 ms | yes |"),
            "{md}"
        );
        assert!(
            md.contains("| 5.00 (20.0); 1.00 (3.00); 250 (800); 10.0 (30.0) |"),
            "{md}"
        );
        assert!(md.contains("skopeo version 1.9.3"), "{md}");
        assert!(md.contains("a note"));
        assert_eq!((s.met, s.missed), (2, 1), "{md}");
    }

    #[test]
    fn an_unknown_p99_is_a_miss() {
        let r = report::parse_results(
            r#"{"scenario":"replication-latency","rate":10.0,"duration_secs":20,"processes":1,"p50_ms":300.0,"p99_ms":null,"missing":7,"poll_ms":20}"#,
        );
        let s = render(&r, &[]);
        assert!(
            s.markdown
                .contains("| p99 ms | — | | | < 2000 ms | **no** |"),
            "{}",
            s.markdown
        );
        assert!(
            s.markdown.contains("| images never at destination | 7 |"),
            "{}",
            s.markdown
        );
        assert_eq!((s.met, s.missed), (0, 1));
    }
}
