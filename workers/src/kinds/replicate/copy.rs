//! The copy handler: runs one replication task (copy or deletion) against the remote
//! endpoint, behind the endpoint's global limits.
//!
//! Order at the destination is kept per tag: a task first takes a PostgreSQL advisory
//! lock on its destination tag (every process, one holder), then checks the source tag
//! still points at the task's digest. A task whose tag moved on is superseded: the task
//! of the newer push runs after it and copies the newer digest, so a tag pushed five
//! times in a burst is copied once or twice, and the destination ends at the last push
//! whatever order the tasks ran in.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_content::metadata::projects;
use berth_events::jobs::tasks;
use berth_events::runtime::{Failure, JobHandler, TaskContext};
use berth_registry_client::{ClientError, RegistryClient};
use berth_replication::copy::{copy_artifact, CopyError, CopyOptions, CopyReport};
use berth_replication::{store, Policy};
use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use super::clients::ClientSetupError;
use super::task::{Operation, TaskPayload, Way};
use super::Shared;

/// How often a task waiting for its destination tag's lock tries again.
const LOCK_POLL: Duration = Duration::from_millis(100);

pub struct CopyJob {
    pub shared: Arc<Shared>,
}

#[async_trait]
impl JobHandler for CopyJob {
    async fn run(&self, ctx: &TaskContext) -> Result<(), Failure> {
        let task = TaskPayload::parse(&ctx.task.payload).map_err(Failure::permanent)?;
        let policy = store::get(&ctx.db, task.policy_id)
            .await
            .map_err(|e| Failure::transient(format!("reading the policy: {e}")))?
            .ok_or_else(|| {
                Failure::permanent(format!(
                    "replication policy {} no longer exists",
                    task.policy_id
                ))
            })?;
        let clients = &self.shared.clients;
        let remote = clients
            .remote(task.registry_id, ctx.cancel.clone())
            .await
            .map_err(setup_failure)?;
        let local = clients.local();
        let (source, dest) = match task.way {
            Way::Push => (&local, &remote.client),
            Way::Pull => (&remote.client, &local),
        };
        ctx.log(format!(
            "{} {} ({}) -> {} ({})",
            match task.operation {
                Operation::Copy => "copy",
                Operation::Deletion => "delete",
            },
            task.source_resource,
            side_name(task.way, true, &remote.name),
            task.destination_resource,
            side_name(task.way, false, &remote.name),
        ));

        if task.way == Way::Pull && task.operation == Operation::Copy {
            ensure_project(ctx, &task.destination_repository).await?;
        }
        let _lock = TagLock::acquire(&ctx.db, &task.lock_key(), &ctx.cancel).await?;
        match task.operation {
            Operation::Copy => {
                let chunk = self.shared.chunk_size;
                let locations = self.shared.blob_locations(task.registry_id, task.way);
                copy(ctx, &task, &policy, source, dest, chunk, locations).await
            }
            Operation::Deletion => delete(ctx, &task, dest).await,
        }
    }
}

/// Pull mode creates the destination project when it is missing, as Harbor does: a
/// pull policy names where images go, and making the operator create every project
/// first would fail the first run of every new namespace.
async fn ensure_project(ctx: &TaskContext, repository: &str) -> Result<(), Failure> {
    let Some(project) = repository.split('/').next().filter(|p| !p.is_empty()) else {
        return Err(Failure::permanent(format!(
            "destination repository {repository:?} has no project"
        )));
    };
    let mut conn = ctx
        .db
        .acquire()
        .await
        .map_err(|e| Failure::transient(format!("creating project {project}: {e}")))?;
    if projects::find_by_name(&mut conn, project)
        .await
        .map_err(|e| Failure::transient(format!("creating project {project}: {e}")))?
        .is_none()
    {
        // Private, owned by the first administrator (Harbor's rule for projects
        // created by the system).
        projects::find_or_create(&mut conn, project, false, None)
            .await
            .map_err(|e| Failure::transient(format!("creating project {project}: {e}")))?;
        ctx.log(format!("created the private project {project}"));
    }
    Ok(())
}

/// "Berth" or the endpoint's name, for the log line.
fn side_name(way: Way, source: bool, remote: &str) -> String {
    match (way, source) {
        (Way::Push, true) | (Way::Pull, false) => "Berth".to_owned(),
        _ => format!("endpoint {remote}"),
    }
}

async fn copy(
    ctx: &TaskContext,
    task: &TaskPayload,
    policy: &Policy,
    source: &RegistryClient,
    dest: &RegistryClient,
    chunk_size: u64,
    blob_locations: berth_replication::copy::BlobLocations,
) -> Result<(), Failure> {
    let reference = task.tag.as_deref().unwrap_or(&task.digest);
    // Superseded or gone: the source is the truth at the time the lock is held.
    let now = source
        .head_manifest(&task.source_repository, reference)
        .await
        .map_err(|e| client_failure("source", &task.source_resource, e))?;
    let Some(now) = now else {
        let message = format!(
            "skipped: {} no longer exists at the source",
            task.source_resource
        );
        ctx.log(&message);
        ctx.set_outcome(message);
        return Ok(());
    };
    if now.digest != task.digest {
        let message = format!(
            "superseded: {} now points at {} (this task was for {}); the task of the newer push copies it",
            task.source_resource, now.digest, task.digest
        );
        ctx.log(&message);
        ctx.set_outcome(message);
        return Ok(());
    }
    if !policy.override_existing {
        if let Some(tag) = task.tag.as_deref() {
            let there = dest
                .head_manifest(&task.destination_repository, tag)
                .await
                .map_err(|e| client_failure("destination", &task.destination_resource, e))?;
            if let Some(there) = there.filter(|t| t.digest != task.digest) {
                let message = format!(
                    "skipped: {} exists at the destination as {} and the policy does not override",
                    task.destination_resource, there.digest
                );
                ctx.log(&message);
                ctx.set_outcome(message);
                return Ok(());
            }
        }
    }

    let options = CopyOptions {
        chunk_size: policy.copy_by_chunk.then_some(chunk_size.max(1024 * 1024)),
        bytes_per_second: policy.bandwidth_bytes_per_second().unwrap_or(0),
        cancel: ctx.cancel.clone(),
        blob_locations,
        bytes_sent: Arc::default(),
    };
    if options.bytes_per_second > 0 {
        ctx.log(format!(
            "bandwidth cap {} bytes/s (speed {} kbit/s)",
            options.bytes_per_second, policy.speed_kbps
        ));
    }
    let started = std::time::Instant::now();
    // Pin the digest, not the tag: the source tag may move during the copy, and the
    // destination tag must point at what the checks above approved.
    let result = copy_artifact(
        source,
        &task.source_repository,
        &task.digest,
        dest,
        &task.destination_repository,
        task.tag.as_deref(),
        &options,
    )
    .await;
    // What went out, finished or not: a stopped task shows what it moved.
    ctx.add_bytes(options.bytes_sent.load(Ordering::Relaxed));
    let report = match result {
        Ok(report) => report,
        Err(e) => return Err(copy_failure(e)),
    };
    ctx.log(summary(&report, started.elapsed()));
    if report.up_to_date {
        ctx.set_outcome("up to date at the destination");
    }
    let counts = json!({
        "blobs_skipped": report.blobs_skipped,
        "blobs_mounted": report.blobs_mounted,
        "blobs_uploaded": report.blobs_uploaded,
        "manifests_pushed": report.manifests_pushed,
        "referrers": report.referrers,
        "up_to_date": report.up_to_date,
    });
    if let Err(e) = tasks::merge_payload(&ctx.db, ctx.task.id, &counts).await {
        // The copy is done; only the counts are missing from the API.
        tracing::warn!(error = %e, "could not record the copy's counts");
    }
    Ok(())
}

fn summary(report: &CopyReport, took: Duration) -> String {
    format!(
        "copied {} in {:.2} s: blobs skipped {}, mounted {}, uploaded {} ({} bytes); manifests pushed {}; referrers {}{}",
        report.digest,
        took.as_secs_f64(),
        report.blobs_skipped,
        report.blobs_mounted,
        report.blobs_uploaded,
        report.bytes_uploaded,
        report.manifests_pushed,
        report.referrers,
        if report.up_to_date { " (already up to date)" } else { "" }
    )
}

/// Deletes the task's artifact at the destination: by digest, and for a tag only if the
/// destination's tag still points at the deleted digest (a newer push there stays).
async fn delete(
    ctx: &TaskContext,
    task: &TaskPayload,
    dest: &RegistryClient,
) -> Result<(), Failure> {
    if let Some(tag) = task.tag.as_deref() {
        let there = dest
            .head_manifest(&task.destination_repository, tag)
            .await
            .map_err(|e| client_failure("destination", &task.destination_resource, e))?;
        match there {
            Some(there) if there.digest == task.digest => {}
            Some(there) => {
                let message = format!(
                    "skipped: {} points at {} at the destination, not the deleted {}",
                    task.destination_resource, there.digest, task.digest
                );
                ctx.log(&message);
                ctx.set_outcome(message);
                return Ok(());
            }
            None => {
                ctx.set_outcome("already absent at the destination");
                return Ok(());
            }
        }
    }
    match dest
        .delete_manifest(&task.destination_repository, &task.digest)
        .await
    {
        Ok(()) => {
            ctx.log(format!(
                "deleted {}@{} at the destination",
                task.destination_repository, task.digest
            ));
            Ok(())
        }
        Err(ClientError::NotFound(_)) => {
            ctx.set_outcome("already absent at the destination");
            Ok(())
        }
        Err(e) => Err(client_failure("destination", &task.destination_resource, e)),
    }
}

/// A client-setup problem is the operator's to fix (a missing key, a deleted endpoint)
/// except a database hiccup.
fn setup_failure(e: ClientSetupError) -> Failure {
    match e {
        ClientSetupError::Database(_) => Failure::transient(e.to_string()),
        other => Failure::permanent(other.to_string()),
    }
}

/// Transient registry trouble (429, 5xx, connections) is retried, honouring
/// `Retry-After`; anything else (401, 403, unknown namespace, garbage) fails the task
/// at once with the registry's reason.
pub(super) fn client_failure(side: &str, resource: &str, e: ClientError) -> Failure {
    let reason = format!("{side} {resource}: {e}");
    if e.is_transient() {
        Failure::Transient {
            reason,
            retry_after: e.retry_after(),
        }
    } else {
        Failure::permanent(reason)
    }
}

fn copy_failure(e: CopyError) -> Failure {
    if e.is_transient() {
        Failure::Transient {
            reason: e.to_string(),
            retry_after: e.retry_after(),
        }
    } else {
        // Cancellation lands here too; the runtime records a stop, not a failure,
        // because the task's token has fired.
        Failure::permanent(e.to_string())
    }
}

/// A session-level advisory lock on one destination tag, on a connection of its own
/// (detached from the pool): if the task is dropped or the process dies, the
/// connection closes and PostgreSQL releases the lock, so a lock can never outlive
/// its holder or be left on a pooled connection.
struct TagLock {
    conn: Option<PgConnection>,
}

impl TagLock {
    async fn acquire(
        db: &PgPool,
        key: &str,
        cancel: &CancellationToken,
    ) -> Result<TagLock, Failure> {
        let transient = |e: sqlx::Error| Failure::transient(format!("destination tag lock: {e}"));
        let mut conn = db.acquire().await.map_err(transient)?.detach();
        loop {
            let got: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                    .bind(key)
                    .fetch_one(&mut conn)
                    .await
                    .map_err(transient)?;
            if got {
                return Ok(TagLock { conn: Some(conn) });
            }
            tokio::select! {
                _ = tokio::time::sleep(LOCK_POLL) => {}
                _ = cancel.cancelled() => return Err(Failure::transient("cancelled while waiting for the destination tag")),
            }
        }
    }
}

impl Drop for TagLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Closing releases the lock; a graceful close is a courtesy to the server.
            tokio::spawn(async move {
                let _ = conn.close().await;
            });
        }
    }
}
