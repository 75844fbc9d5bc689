//! One worker process from start to exit:
//!
//! 1. connect to PostgreSQL and NATS, neither of which has to be up yet;
//! 2. provision the streams and this kind's consumers in the background, retrying
//!    until NATS answers (the relay does not wait for it);
//! 3. wait until the gateway has migrated the database (workers never migrate: two
//!    programs racing to apply migrations is a failure mode nobody needs);
//! 4. start the relay (if enabled), the scheduler, the control listener and the
//!    listener for messages the server stopped delivering (`runtime::advisory`);
//! 5. once the consumers exist, register in `worker_processes` and heartbeat there
//!    with the running tasks (so a registered worker is one that can take work);
//! 6. run the kind's consumers until shutdown, drain them, stop the rest, deregister.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use berth_events::config::PipelineConfig;
use berth_events::jobs::pool;
use berth_events::runtime::Runtime;
use berth_events::{relay, schedules, streams, subject};
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Config;
use crate::kinds::{echo, replicate, Kind};

/// The migrations this binary was built with: it waits until the database has them.
/// Embedding them costs a few kilobytes and keeps the check exact.
static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// How often a process waiting for the database or NATS logs that it still waits.
const WAIT_LOG_EVERY: Duration = Duration::from_secs(10);
/// Longest pause between two provisioning attempts.
const PROVISION_RETRY_MAX: Duration = Duration::from_secs(5);
/// Registrations silent this long are deleted (processes killed without draining);
/// `live` already hides them after a few missed heartbeats.
const PRUNE_AFTER: Duration = Duration::from_secs(3600);
/// After the drain timeout, how long the process still waits for its consumers'
/// bookkeeping (recording interrupted tasks, naks) before it exits regardless.
const DRAIN_SLACK: Duration = Duration::from_secs(15);

/// Runs worker kind `kind` until `shutdown` fires, then drains and returns.
pub async fn run(kind: Kind, config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let worker_id = Uuid::new_v4();
    let source = format!("/berth/workers/{}", kind.name());
    let pid = std::process::id();
    tracing::info!(kind = kind.name(), %worker_id, pid, "berth-workers starting");

    // Lazy: nothing is queried until the schema check, which retries.
    let db = PgPoolOptions::new()
        .max_connections(config.database_max_connections.max(2))
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy(config.database_url.expose())
        .context("BERTH_DATABASE_URL is not a PostgreSQL URL")?;
    // Returns at once and connects in the background (see `berth_events::nats`).
    let client = berth_events::nats::connect(
        config.nats_url.expose(),
        &format!("berth-workers {} {worker_id}", kind.name()),
    )
    .await
    .context("cannot set up the NATS client (is BERTH_NATS_URL a NATS URL?)")?;
    let js = jetstream::new(client.clone());

    let provisioning = tokio::spawn(provision(
        js.clone(),
        config.pipeline.clone(),
        kind,
        shutdown.clone(),
    ));

    // Before anything is started: a replicate worker without its keys must exit with
    // the reason, not take tasks it can only fail.
    let replication = match kind {
        Kind::Replicate => Some(replicate::setup(&config, db.clone(), &source)?),
        _ => None,
    };

    if !wait_for_schema(&db, &shutdown).await {
        provisioning.abort();
        return Ok(());
    }

    // Stopped only after the consumers drained: the relay publishes what draining
    // tasks write, the control listener still cancels them, and the heartbeat keeps
    // the process listed while it drains.
    let late = CancellationToken::new();
    let mut background = JoinSet::new();
    if config.pipeline.relay.enabled {
        background.spawn(relay::run(
            db.clone(),
            js.clone(),
            config.pipeline.relay.clone(),
            late.clone(),
        ));
    } else {
        tracing::info!("relay disabled in this process (pipeline.relay.enabled = false)");
    }
    background.spawn(schedules::run(
        db.clone(),
        config.pipeline.schedule_poll(),
        source.clone(),
        shutdown.clone(),
    ));
    let runtime = Runtime::new(
        client.clone(),
        js.clone(),
        db.clone(),
        config.pipeline.clone(),
        worker_id,
        source,
    )
    .with_drain_timeout(config.drain_timeout());
    {
        let runtime = runtime.clone();
        let late = late.clone();
        background.spawn(async move { runtime.run_control(late).await });
    }
    background.spawn({
        let (runtime, late) = (runtime.clone(), late.clone());
        async move { runtime.run_advisories(late).await }
    });

    // Registering means "can take work", so it waits for the consumers.
    let provisioned = tokio::select! {
        done = provisioning => done.unwrap_or(false),
        _ = shutdown.cancelled() => false,
    };
    let registration = Registration {
        id: worker_id,
        kind,
        host: pool::hostname(),
        pid: i32::try_from(pid).unwrap_or(i32::MAX),
        concurrency: if kind.runs_jobs() {
            i32::try_from(config.pipeline.consumer(kind.name()).concurrency).unwrap_or(i32::MAX)
        } else {
            0
        },
    };
    if provisioned && registration.register(&db, &shutdown).await {
        {
            let db = db.clone();
            let runtime = runtime.clone();
            let every = config.pipeline.heartbeat();
            let late = late.clone();
            background
                .spawn(async move { heartbeat(&db, &runtime, &registration, every, late).await });
        }
        tracing::info!(kind = kind.name(), %worker_id, "berth-workers ready");

        let consumers = async {
            match kind {
                Kind::Echo => {
                    tokio::join!(
                        runtime.run_jobs(echo::KIND, Arc::new(echo::EchoJob), shutdown.clone()),
                        runtime.run_events(
                            echo::EVENTS_CONSUMER,
                            echo::EVENTS_FILTER,
                            echo::KIND,
                            Arc::new(echo::EchoEvents),
                            shutdown.clone(),
                        ),
                    );
                }
                Kind::Replicate => {
                    if let Some(shared) = replication.clone() {
                        replicate::run(
                            runtime.clone(),
                            shared,
                            db.clone(),
                            Duration::from_millis(config.replicate.registry_poll_ms.max(100)),
                            shutdown.clone(),
                        )
                        .await;
                    }
                }
                Kind::Relay => shutdown.cancelled().await,
            }
        };
        // The runtime drains within the drain timeout; this bounds the whole exit in
        // case bookkeeping hangs on an unreachable database.
        let deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(config.drain_timeout() + DRAIN_SLACK).await;
        };
        tokio::select! {
            _ = consumers => tracing::info!("consumers drained"),
            _ = deadline => tracing::warn!("drain deadline passed; exiting with handlers still running (their messages will be redelivered)"),
        }
    } else {
        shutdown.cancelled().await;
    }

    late.cancel();
    let stop_background = async { while background.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_SLACK, stop_background)
        .await
        .is_err()
    {
        tracing::warn!("relay, scheduler or control listener did not stop in time");
    }
    if let Err(e) = pool::deregister(&db, worker_id).await {
        tracing::warn!(error = %e, "could not deregister; the pools API hides this process after its heartbeat ages");
    }
    // Acks and naks sent during the drain leave before the process does.
    let _ = tokio::time::timeout(Duration::from_secs(5), client.flush()).await;
    db.close().await;
    tracing::info!(kind = kind.name(), %worker_id, "berth-workers stopped");
    Ok(())
}

/// Waits until the database has every migration this binary knows; `false` if
/// shutdown came first.
async fn wait_for_schema(db: &PgPool, shutdown: &CancellationToken) -> bool {
    let needed = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let mut logged: Option<Instant> = None;
    loop {
        let why = match applied_migration(db).await {
            Ok(have) if have >= needed => {
                if logged.is_some() {
                    tracing::info!(migration = have, "database schema ready");
                }
                return true;
            }
            Ok(have) => format!(
                "waiting for the database schema: migration {needed} not applied yet (have {have}); the gateway applies migrations when it starts"
            ),
            Err(e) => format!("waiting for PostgreSQL: {e}"),
        };
        if logged.is_none_or(|t| t.elapsed() >= WAIT_LOG_EVERY) {
            tracing::warn!("{why}");
            logged = Some(Instant::now());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return false,
        }
    }
}

/// The newest migration applied successfully; 0 on a database never migrated.
///
/// Unchecked queries: `_sqlx_migrations` is sqlx's bookkeeping, not Berth's schema, and
/// databases migrated by hand for development do not have it.
async fn applied_migration(db: &PgPool) -> Result<i64, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(db)
        .await?;
    if !exists {
        return Ok(0);
    }
    sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM _sqlx_migrations WHERE success")
        .fetch_one(db)
        .await
}

/// Creates the streams and this kind's consumers, retrying until NATS answers.
/// Returns `false` if shutdown came first.
async fn provision(
    js: jetstream::Context,
    pipeline: PipelineConfig,
    kind: Kind,
    shutdown: CancellationToken,
) -> bool {
    let mut pause = Duration::from_millis(250);
    let mut logged: Option<Instant> = None;
    loop {
        let attempt = async {
            streams::provision(&js, &pipeline.streams).await?;
            if kind == Kind::Echo {
                let config = pipeline.consumer(echo::KIND);
                streams::ensure_consumer(
                    &js,
                    streams::JOBS_STREAM,
                    &streams::jobs_consumer_name(echo::KIND),
                    &subject::jobs_of_kind(echo::KIND),
                    &config,
                )
                .await?;
                streams::ensure_consumer(
                    &js,
                    streams::EVENTS_STREAM,
                    echo::EVENTS_CONSUMER,
                    echo::EVENTS_FILTER,
                    &config,
                )
                .await?;
            }
            if kind == Kind::Replicate {
                replicate::provision(&js, &pipeline).await?;
            }
            Ok::<(), streams::StreamsError>(())
        };
        let error = tokio::select! {
            result = attempt => match result {
                Ok(()) => {
                    tracing::info!("streams and consumers provisioned");
                    return true;
                }
                Err(e) => e,
            },
            _ = shutdown.cancelled() => return false,
        };
        if logged.is_none_or(|t| t.elapsed() >= WAIT_LOG_EVERY) {
            tracing::warn!(error = %error, "cannot provision the streams yet (is NATS up?); retrying");
            logged = Some(Instant::now());
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.cancelled() => return false,
        }
        pause = (pause * 2).min(PROVISION_RETRY_MAX);
    }
}

/// This process as the pools API lists it.
struct Registration {
    id: Uuid,
    kind: Kind,
    host: String,
    pid: i32,
    concurrency: i32,
}

impl Registration {
    /// Registers, retrying while the database is unreachable; `false` if shutdown
    /// came first.
    async fn register(&self, db: &PgPool, shutdown: &CancellationToken) -> bool {
        loop {
            match self.write(db).await {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot register in worker_processes; retrying")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.cancelled() => return false,
            }
        }
    }

    async fn write(&self, db: &PgPool) -> Result<(), berth_events::jobs::JobsError> {
        pool::register(
            db,
            self.id,
            self.kind.name(),
            &self.host,
            self.pid,
            self.concurrency,
        )
        .await
    }
}

/// Reports the running tasks every `every` until `stop`; registers again if the row
/// went missing, and now and then deletes rows of processes long dead.
async fn heartbeat(
    db: &PgPool,
    runtime: &Runtime,
    registration: &Registration,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beats: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        beats += 1;
        let in_flight = serde_json::to_value(runtime.in_flight()).unwrap_or_default();
        match pool::heartbeat(db, registration.id, &in_flight).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("registration row gone; registering again");
                if let Err(e) = registration.write(db).await {
                    tracing::warn!(error = %e, "cannot register again; retrying at the next heartbeat");
                }
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed; retrying"),
        }
        if beats.is_multiple_of(100) {
            match pool::prune(db, PRUNE_AFTER).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    rows = n,
                    "deleted registrations of worker processes long gone"
                ),
                Err(e) => tracing::debug!(error = %e, "pruning old registrations failed"),
            }
        }
    }
}
