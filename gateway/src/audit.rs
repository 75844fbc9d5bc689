//! The gateway's audit writer. Management API changes record their entry inside their
//! own transaction (`berth_access::audit::record`); registry traffic (pulls, pushes,
//! deletes, failed logins) goes through this sink, which batches inserts so a pull costs
//! no extra round trip on its own path.
//!
//! Trade-off: an entry queued here is written within a fraction of a second, but a
//! crash in that window loses it. The pushes and deletes it describes are committed
//! either way.

use std::sync::Arc;
use std::time::Duration;

use berth_access::audit::{self, AuditEntry};
use sqlx::PgPool;
use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinHandle;

/// Entries waiting beyond this make senders wait: back-pressure instead of unbounded memory.
const QUEUE_CAPACITY: usize = 10_000;
/// Most entries one INSERT writes.
const BATCH_MAX: usize = 500;

#[derive(Clone)]
pub struct AuditSink {
    sender: mpsc::Sender<AuditEntry>,
    /// Tells the writer to write what is queued and end.
    stop: Arc<watch::Sender<bool>>,
    /// The writer task, awaited once at shutdown.
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl AuditSink {
    /// A sink whose writer task drains it into `db` until [`AuditSink::shutdown`].
    pub fn start(db: PgPool) -> AuditSink {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let (stop, stop_rx) = watch::channel(false);
        let writer = tokio::spawn(write_batches(db, receiver, stop_rx));
        AuditSink {
            sender,
            stop: Arc::new(stop),
            writer: Arc::new(Mutex::new(Some(writer))),
        }
    }

    /// Writes every queued entry and stops the writer; entries recorded afterwards are
    /// logged as lost. Called once the server has finished its requests.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        if let Some(writer) = self.writer.lock().await.take() {
            let _ = writer.await;
        }
    }

    pub async fn record(&self, entry: AuditEntry) {
        if self.sender.send(entry).await.is_err() {
            tracing::error!("audit writer has stopped; an audit entry was not recorded");
        }
    }
}

async fn write_batches(
    db: PgPool,
    mut receiver: mpsc::Receiver<AuditEntry>,
    mut stop: watch::Receiver<bool>,
) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    loop {
        tokio::select! {
            received = receiver.recv_many(&mut batch, BATCH_MAX) => {
                if received == 0 {
                    break;
                }
                write(&db, &mut batch).await;
            }
            _ = async { let _ = stop.wait_for(|stop| *stop).await; } => {
                while let Ok(entry) = receiver.try_recv() {
                    batch.push(entry);
                    if batch.len() >= BATCH_MAX {
                        write(&db, &mut batch).await;
                    }
                }
                write(&db, &mut batch).await;
                break;
            }
        }
    }
}

async fn write(db: &PgPool, batch: &mut Vec<AuditEntry>) {
    if batch.is_empty() {
        return;
    }
    // A database hiccup should not drop the records: retry a few times.
    for attempt in 1..=5u32 {
        let result = match db.acquire().await {
            Ok(mut conn) => audit::record_many(&mut conn, batch).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                batch.clear();
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, entries = batch.len(), "cannot write audit entries");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
        }
    }
    tracing::error!(
        entries = batch.len(),
        "audit entries dropped after 5 attempts"
    );
    batch.clear();
}

/// Deletes records past their retention, every `interval`, until `stop`.
pub async fn purge_expired(
    db: PgPool,
    retention_days: i64,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        match db.acquire().await {
            Ok(mut conn) => match audit::purge_older_than(&mut conn, retention_days).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, retention_days, "purged old audit records"),
                Err(e) => tracing::warn!(error = %e, "cannot purge old audit records"),
            },
            Err(e) => tracing::warn!(error = %e, "cannot purge old audit records"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = async { let _ = stop.wait_for(|stop| *stop).await; } => return,
        }
    }
}
