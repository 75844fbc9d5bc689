//! `loadtest`: benchmark any OCI Distribution registry over plain HTTP.
//!
//! ```text
//! loadtest <scenario>[,<scenario>…] --target http://127.0.0.1:5000 [--repo bench/x]
//!          [--size-mib N] [--concurrency N] [--count N] [--duration-secs N] [--json]
//!          [--username NAME]   (password in $LOADTEST_PASSWORD)
//! loadtest report --berth berth.jsonl --baseline registry.jsonl [--openssl speed.txt]
//!          [--berth-auth berth-auth.jsonl --baseline-auth registry-auth.jsonl]
//! ```
//! Scenarios: push-blob, pull-blob, chunked-upload, push-images, get-manifest,
//! head-blob, concurrent-push, and `all` (every one, in that order).
//!
//! `loadtest pipeline relay|latency|cancel|scale|report …` benchmarks Berth's event
//! pipeline instead (src/pipeline.rs; `loadtest pipeline --help`), and
//! `loadtest replication burst|skopeo|latency|report …` its replication to a
//! docker-registry (src/replication.rs; `loadtest replication --help`).

mod auth;
mod data;
mod http;
mod pipeline;
mod replication;
mod report;
mod scenarios;
mod stats;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::scenarios::{Opts, State, ALL};

#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    about = "Benchmark an OCI registry: blob push/pull, chunked upload, image push, manifest GET and blob HEAD rates",
    after_help = "Scenarios: push-blob, pull-blob, chunked-upload, push-images, get-manifest, head-blob, \
                  concurrent-push, all (comma-separated lists are allowed), or `report`.\n\
                  Defaults per scenario: push/pull/concurrent-push 1024 MiB, chunked-upload 256 MiB in 8 MiB \
                  chunks, push-images 500 images at concurrency 32, get-manifest/head-blob 64 connections \
                  for 10 s, concurrent-push 32 uploads."
)]
struct Cli {
    /// Scenario name(s), comma-separated, `all`, or `report`.
    scenario: String,
    /// Registry base URL (plain HTTP).
    #[arg(long, default_value = "http://127.0.0.1:5000")]
    target: String,
    /// Repository to push to.
    #[arg(long, default_value = "bench/loadtest")]
    repo: String,
    /// Blob size in MiB (push-blob, pull-blob, chunked-upload, concurrent-push).
    #[arg(long)]
    size_mib: Option<u64>,
    /// PATCH size for chunked-upload, MiB.
    #[arg(long, default_value_t = 8)]
    chunk_mib: u64,
    /// Concurrent workers / connections.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Number of images for push-images.
    #[arg(long)]
    count: Option<usize>,
    /// Length of the request-rate scenarios.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Authenticate as this user, as docker does: HTTP Basic where the registry
    /// challenges with Basic, the token flow where it challenges with Bearer. The
    /// password is read from $LOADTEST_PASSWORD.
    #[arg(long)]
    username: Option<String>,
    /// Upper bound on requests in a request-rate scenario.
    #[arg(long, default_value_t = 20_000_000)]
    max_requests: u64,
    /// Repeat push-blob / pull-blob this many times and report the best.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Seed for the generated data (default: from the clock, so every run
    /// pushes new content).
    #[arg(long)]
    seed: Option<u64>,
    /// Skip the (untimed) digest check of pull-blob.
    #[arg(long)]
    no_verify: bool,
    /// Print one JSON object per scenario on stdout (human lines go to stderr).
    #[arg(long)]
    json: bool,
    /// Client runtime threads (default: number of cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Timeout for any single request.
    #[arg(long, default_value_t = 1800)]
    timeout_secs: u64,
    /// Sample this process's RSS during each scenario (VmRSS peak; VmHWM is
    /// reset at the start where permitted) and include it in the results.
    #[arg(long)]
    watch_pid: Option<u32>,
    /// report: JSON-lines results of Berth.
    #[arg(long)]
    berth: Option<PathBuf>,
    /// report: JSON-lines results of the baseline registry.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// report: JSON-lines results of Berth with authentication on.
    #[arg(long)]
    berth_auth: Option<PathBuf>,
    /// report: JSON-lines results of the baseline registry with authentication on.
    #[arg(long)]
    baseline_auth: Option<PathBuf>,
    /// report: output of `openssl speed -evp sha256`.
    #[arg(long)]
    openssl: Option<PathBuf>,
    /// report: a note printed under the table (repeatable).
    #[arg(long)]
    note: Vec<String>,
}

fn main() {
    // `loadtest pipeline …` has subcommands and flags of its own.
    if std::env::args_os().nth(1).is_some_and(|a| a == "pipeline") {
        if let Err(e) = pipeline::main(std::env::args_os().skip(1)) {
            eprintln!("loadtest pipeline: error: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "replication")
    {
        if let Err(e) = replication::main(std::env::args_os().skip(1)) {
            eprintln!("loadtest replication: error: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let cli = Cli::parse();
    if let Err(e) = real_main(cli) {
        eprintln!("loadtest: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main(cli: Cli) -> Result<()> {
    if cli.scenario == "report" {
        return run_report(&cli);
    }
    let names: Vec<String> = if cli.scenario == "all" {
        ALL.iter().map(|s| s.to_string()).collect()
    } else {
        cli.scenario
            .split(',')
            .map(|s| s.trim().to_string())
            .collect()
    };
    for n in &names {
        if !ALL.contains(&n.as_str()) {
            bail!(
                "unknown scenario {n:?}; known: {}, all, report",
                ALL.join(", ")
            );
        }
    }
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(run_scenarios(&cli, &names))
}

async fn run_scenarios(cli: &Cli, names: &[String]) -> Result<()> {
    let mut reg = http::Registry::new(&cli.target, Duration::from_secs(cli.timeout_secs))?;
    // Fail early and clearly when the registry is not there or refuses the credentials.
    let v2 = reg.url("/v2/")?;
    match &cli.username {
        Some(username) => {
            let credentials = auth::Credentials::from_env(username)?;
            reg.login(&credentials)
                .await
                .with_context(|| format!("logging in to {} as {username}", cli.target))?;
        }
        None => {
            let resp = reg
                .send(Method::GET, &v2, &[], http::empty())
                .await
                .with_context(|| format!("is a registry listening at {}?", cli.target))?;
            reg.expect(resp, StatusCode::OK, &format!("GET {v2}"))
                .await?;
        }
    }

    let seed = cli.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let opts = Opts {
        repo: cli.repo.clone(),
        size_mib: cli.size_mib,
        chunk_mib: cli.chunk_mib,
        concurrency: cli.concurrency,
        count: cli.count,
        duration: Duration::from_secs(cli.duration_secs),
        max_requests: cli.max_requests,
        repeat: cli.repeat,
        seed,
        verify: !cli.no_verify,
    };
    let mut state = State::default();
    for name in names {
        let watch = cli.watch_pid.map(stats::RssWatch::start);
        let tokens_before = reg.token_requests();
        let outcome = scenarios::run(name, &reg, &opts, &mut state)
            .await
            .with_context(|| format!("scenario {name} against {}", cli.target))?;
        let mut human = format!("{name:<15} {}: {}", cli.target, outcome.human);
        let mut obj = serde_json::Map::new();
        obj.insert("scenario".into(), json!(name));
        obj.insert("target".into(), json!(cli.target));
        obj.insert("auth".into(), json!(reg.auth_name()));
        if reg.auth_name() == "token" {
            let tokens = reg.token_requests() - tokens_before;
            obj.insert("token_requests".into(), json!(tokens));
            human.push_str(&format!("; {tokens} token request(s)"));
        }
        obj.extend(outcome.json);
        if let Some(w) = watch {
            let r = w.finish();
            let peak = r.sampled_peak_kib as f64 / 1024.0;
            obj.insert("peak_rss_mib".into(), json!((peak * 10.0).round() / 10.0));
            let mut extra = format!(
                "; pid {} peak RSS {peak:.1} MiB (sampled)",
                cli.watch_pid.unwrap()
            );
            if let Some(h) = r.vmhwm_kib {
                let h = h as f64 / 1024.0;
                obj.insert("vmhwm_mib".into(), json!((h * 10.0).round() / 10.0));
                obj.insert("vmhwm_reset".into(), json!(r.hwm_reset));
                extra.push_str(&format!(
                    ", VmHWM {h:.1} MiB{}",
                    if r.hwm_reset {
                        ""
                    } else {
                        " (process lifetime)"
                    }
                ));
            }
            human.push_str(&extra);
        }
        if cli.json {
            eprintln!("{human}");
            println!("{}", Value::Object(obj));
        } else {
            println!("{human}");
        }
    }
    Ok(())
}

fn run_report(cli: &Cli) -> Result<()> {
    let berth = match &cli.berth {
        Some(p) => report::load(p)?,
        None => bail!("report needs --berth FILE"),
    };
    let base = match &cli.baseline {
        Some(p) => report::load(p)?,
        None => Default::default(),
    };
    let sha = match &cli.openssl {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let v = report::parse_openssl(&text);
            if v.is_none() {
                eprintln!(
                    "loadtest: warning: no sha256 figure found in {}",
                    p.display()
                );
            }
            v
        }
        None => None,
    };
    let load_or_empty = |p: &Option<PathBuf>| match p {
        Some(p) => report::load(p),
        None => Ok(Default::default()),
    };
    let authed = report::Authed {
        berth: load_or_empty(&cli.berth_auth)?,
        baseline: load_or_empty(&cli.baseline_auth)?,
    };
    let s = report::render(&berth, &base, &authed, sha, &cli.note);
    print!("{}", s.markdown);
    eprintln!(
        "loadtest: {} targets met, {} not met or not measured",
        s.met, s.missed
    );
    Ok(())
}
