//! The consumer runtime every worker kind runs on. A kind supplies a handler and says,
//! through [`Failure`], whether an error is worth retrying; the runtime does the rest:
//! fetching with bounded concurrency, in-progress heartbeats while a handler runs, ack
//! on success, `nak` with exponential backoff and jitter on transient failures,
//! terminate plus a copy to the dead-letter stream on permanent ones (or after
//! `max_deliver`), task bookkeeping in PostgreSQL, cancellation, pausing, and a
//! graceful drain on shutdown.

use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::envelope::Envelope;
use crate::jobs::Task;
use crate::kind::Event;

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
}

impl TaskContext {
    /// Adds a line to the task's log (flushed with each heartbeat and at the end).
    pub fn log(&self, line: impl AsRef<str>) {
        let stamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
        if let Ok(mut log) = self.log.lock() {
            log.push_str(&format!("{stamp} {}\n", line.as_ref()));
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
