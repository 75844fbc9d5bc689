//! `berth-workers [--config FILE] <kind>`: one worker process. Parses the command
//! line, sets up logging, turns SIGTERM/SIGINT into a drain, and runs the process.

use std::path::PathBuf;

use berth_workers::cli::{self, Command};
use berth_workers::config::Config;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = cli::parse(
        std::env::args().skip(1),
        std::env::var_os("BERTH_CONFIG").map(PathBuf::from),
    );
    let (kind, config_file) = match command {
        Ok(Command::Run { kind, config }) => (kind, config),
        Ok(Command::Help) => {
            print!("{}", cli::usage());
            return Ok(());
        }
        Err(e) => {
            eprint!("berth-workers: {e}\n\n{}", cli::usage());
            std::process::exit(2);
        }
    };
    init_logging();
    let config = Config::load(config_file.as_deref())?;

    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    berth_workers::process::run(kind, config, shutdown).await
}

/// Text logs, or JSON lines when `BERTH_LOG_FORMAT=json`; the level from `RUST_LOG`
/// (default `info`).
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if std::env::var("BERTH_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
}

/// The first SIGTERM or SIGINT starts the drain; a second one exits at once (messages
/// of running tasks are then redelivered after their ack wait).
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the workers");
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown requested: draining (a second signal exits at once)");
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::warn!("second signal: exiting without draining");
    std::process::exit(130);
}
