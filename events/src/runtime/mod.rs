//! The consumer runtime every worker kind runs on. A kind supplies a handler and says,
//! through [`Failure`], whether an error is worth retrying; the runtime does the rest:
//! fetching with bounded concurrency, in-progress heartbeats while a handler runs, ack
//! on success, `nak` with exponential backoff and jitter on transient failures,
//! terminate plus a copy to the dead-letter stream on permanent ones (or after
//! `max_deliver`), task bookkeeping in PostgreSQL, cancellation, pausing, and a
//! graceful drain on shutdown.
//!
//! Entry points: [`Runtime::run_jobs`] (a worker kind's tasks on the jobs stream),
//! [`Runtime::run_events`] (reactions to domain events) and [`Runtime::run_control`]
//! (cancellations and pauses; every worker process runs it beside its loops), and
//! [`Runtime::run_advisories`] (messages the server stopped delivering because their
//! worker died on the last delivery; every worker process runs it too).

pub mod advisory;
mod cancel;
mod consumer;
mod control;
pub mod dead_letter;
pub mod retry;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::PipelineConfig;
use crate::envelope::Envelope;
use crate::jobs::Task;
use crate::kind::Event;

pub use cancel::InFlight;
pub use consumer::JobsConsumer;
pub use retry::Action;

/// How a handler failed, which decides what happens to the message.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Worth another try (a timeout, a 5xx, a 429): `nak` with the backoff delay, or
    /// `retry_after` when the peer said how long to wait; dead-lettered once
    /// `max_deliver` deliveries failed.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Will never succeed (bad input, a 4xx that is not 429): terminated and
    /// dead-lettered at once, the task marked failed.
    Permanent(String),
}

impl Failure {
    pub fn transient(reason: impl Into<String>) -> Failure {
        Failure::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Failure {
        Failure::Permanent(reason.into())
    }

    pub fn reason(&self) -> &str {
        match self {
            Failure::Transient { reason, .. } | Failure::Permanent(reason) => reason,
        }
    }
}

/// What a job handler sees of its task.
pub struct TaskContext {
    /// The task row as this attempt began (`attempts` counts this attempt).
    pub task: Task,
    /// Fires when someone stops the task or its execution, or the worker shuts down
    /// past its drain deadline. Handlers that spawn processes kill them on it; the
    /// runtime also drops the handler's future when it fires.
    pub cancel: CancellationToken,
    /// PostgreSQL, for handlers that plan further tasks.
    pub db: sqlx::PgPool,
    pub(crate) log: std::sync::Mutex<String>,
    pub(crate) bytes: std::sync::atomic::AtomicI64,
    pub(crate) outcome: std::sync::Mutex<String>,
}

impl TaskContext {
    /// Adds a line to the task's log (flushed with each heartbeat and at the end).
    pub fn log(&self, line: impl AsRef<str>) {
        let stamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
        if let Ok(mut log) = self.log.lock() {
            log.push_str(&format!("{stamp} {}\n", line.as_ref()));
        }
    }

    /// The task's status message if it succeeds (why a success did nothing, say:
    /// "superseded by a newer push"); failures carry their own reason.
    pub fn set_outcome(&self, message: impl Into<String>) {
        if let Ok(mut outcome) = self.outcome.lock() {
            *outcome = message.into();
        }
    }

    /// Counts bytes the task moved.
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(
            i64::try_from(n).unwrap_or(i64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// A worker kind's job handler: runs one task. Must be idempotent (a task can be
/// delivered again after a crash); the runtime records the outcome.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    async fn run(&self, ctx: &TaskContext) -> Result<(), Failure>;
}

/// What an event handler sees besides the event.
pub struct EventContext {
    pub db: sqlx::PgPool,
    /// CloudEvents `source` for events this handler emits (`/berth/workers/<kind>`).
    pub source: String,
    /// 1 on first delivery.
    pub delivery: u64,
}

/// A worker kind's reaction to domain events (plan tasks for a pushed artifact, say).
/// Must be idempotent: create executions with the event id as trigger key.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    async fn handle(
        &self,
        event: Event,
        envelope: &Envelope,
        ctx: &EventContext,
    ) -> Result<(), Failure>;
}

/// How long a shutdown waits for running handlers before it cancels them.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// The consumer runtime of one worker process. Cheap to clone; clones share the
/// in-flight registry, the pause state and the counters.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
    /// How long a shutdown lets running handlers finish before cancelling them.
    drain_timeout: Duration,
}

struct Inner {
    /// Core NATS, for the control subject and to flush acks before exit.
    client: async_nats::Client,
    /// JetStream: consumers, acks and dead letters.
    js: jetstream::Context,
    /// Task bookkeeping, paused queues and cancellation polls.
    db: sqlx::PgPool,
    config: PipelineConfig,
    /// This process, as recorded on the tasks it runs.
    worker_id: Uuid,
    /// CloudEvents `source` handed to event handlers for what they emit.
    source: String,
    registry: cancel::Registry,
    pauses: cancel::Pauses,
    counters: Counters,
}

/// Message outcomes since the process started (the metrics read them).
#[derive(Default)]
struct Counters {
    handled_ok: AtomicU64,
    failed_transient: AtomicU64,
    failed_permanent: AtomicU64,
    dead_lettered: AtomicU64,
    malformed: AtomicU64,
    cancelled: AtomicU64,
    skipped: AtomicU64,
    interrupted: AtomicU64,
    abandoned: AtomicU64,
}

/// A snapshot of the runtime's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Handlers that succeeded (message acked).
    pub handled_ok: u64,
    /// Transient failures (each retry counts, and the last one before giving up).
    pub failed_transient: u64,
    /// Permanent failures (dead-lettered at once).
    pub failed_permanent: u64,
    /// Messages copied to the dead-letter stream and terminated.
    pub dead_lettered: u64,
    /// Messages that were not a valid envelope or event (also dead-lettered).
    pub malformed: u64,
    /// Tasks stopped by request while running.
    pub cancelled: u64,
    /// Task messages acked without running: the task was final, stopped before it
    /// started, or gone.
    pub skipped: u64,
    /// Handlers stopped by the drain deadline; their messages go back to the queue.
    pub interrupted: u64,
    /// Messages the server stopped delivering at its own `max_deliver` (their worker
    /// died or hung on every delivery), dead-lettered by this process from the
    /// server's advisory. Not counted in `dead_lettered`, which is the runtime's own.
    pub abandoned: u64,
}

impl Runtime {
    pub fn new(
        client: async_nats::Client,
        js: jetstream::Context,
        db: sqlx::PgPool,
        config: PipelineConfig,
        worker_id: Uuid,
        source: impl Into<String>,
    ) -> Runtime {
        Runtime {
            inner: Arc::new(Inner {
                client,
                js,
                db,
                config,
                worker_id,
                source: source.into(),
                registry: cancel::Registry::default(),
                pauses: cancel::Pauses::default(),
                counters: Counters::default(),
            }),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }

    /// How long a shutdown lets running handlers finish before cancelling them.
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Runtime {
        self.drain_timeout = timeout;
        self
    }

    pub fn worker_id(&self) -> Uuid {
        self.inner.worker_id
    }

    /// JetStream, for kinds that manage consumers of their own.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.js
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.inner.config
    }

    /// The tasks running in this process now, oldest first.
    pub fn in_flight(&self) -> Vec<InFlight> {
        self.inner.registry.snapshot()
    }

    /// Whether this process currently holds back worker kind `kind`.
    pub fn is_paused(&self, kind: &str) -> bool {
        self.inner.pauses.is_paused(kind)
    }

    /// Stops the running tasks of `execution_id` (only `task_id` if given) in this
    /// process, as a control message does. Returns how many it stopped.
    pub fn cancel(&self, execution_id: i64, task_id: Option<i64>) -> usize {
        self.inner.registry.cancel(execution_id, task_id)
    }

    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            handled_ok: get(&c.handled_ok),
            failed_transient: get(&c.failed_transient),
            failed_permanent: get(&c.failed_permanent),
            dead_lettered: get(&c.dead_lettered),
            malformed: get(&c.malformed),
            cancelled: get(&c.cancelled),
            skipped: get(&c.skipped),
            interrupted: get(&c.interrupted),
            abandoned: get(&c.abandoned),
        }
    }
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
