//! Messages the server gave up on by itself. The runtime dead-letters a message on its
//! last allowed delivery, and the server's `max_deliver` is one higher as a backstop;
//! but a worker process that dies (SIGKILL, OOM) or hangs on that last server-allowed
//! delivery never gets to. The server then stops delivering the message without a
//! word to anyone but its advisory: on the work-queue jobs stream the message would
//! stay in the stream forever, and its task row `running` forever.
//!
//! So every worker process listens (core NATS, one queue group, so one process handles
//! each advisory) for `MAX_DELIVERIES` advisories of the jobs and events streams and
//! does what the runtime would have done: copies the message to the dead letters (same
//! message id as the runtime's, so a copy already made is absorbed), marks a task
//! failed, and removes a task message from the jobs stream.
//!
//! Every step is idempotent, so a failed step is retried by running them all again.
//! An advisory is sent once and not kept: one whose handling fails after the retries
//! is logged and lost.

use std::time::Duration;

use async_nats::jetstream::stream::{DeleteMessageErrorKind, RawMessageErrorKind};
use async_nats::jetstream::ErrorCode;
use futures::StreamExt;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::dead_letter::{self, DeadLetterError, Origin};
use super::{Counters, Runtime};
use crate::envelope::Envelope;
use crate::jobs::{tasks, JobsError, TaskStatus};
use crate::kind::Event;
use crate::streams;

/// Advisories of consumers of the jobs stream that reached their `max_deliver`
/// (the last token is the consumer).
pub const JOBS_SUBJECT: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.BERTH_JOBS.*";
/// The same for the events stream.
pub const EVENTS_SUBJECT: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.BERTH_EVENTS.*";
/// Every worker process joins this queue group: each advisory is handled once.
pub const QUEUE_GROUP: &str = "berth-advisories";

/// Wait before subscribing again when the subscription could not be made or ended.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_secs(1);
/// How often one advisory's handling is tried (NATS or PostgreSQL briefly away),
/// with pauses doubling from `RETRY_PAUSE`.
const ATTEMPTS: u32 = 5;
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The reason recorded on the dead letter and the task.
pub fn reason(deliveries: u64) -> String {
    format!(
        "delivered {deliveries} times without an ack: the worker died or hung on every delivery"
    )
}

/// nats-server's `io.nats.jetstream.advisory.v1.max_deliver`, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct MaxDeliveries {
    stream: String,
    consumer: String,
    stream_seq: u64,
    deliveries: u64,
}

impl MaxDeliveries {
    /// The advisory in `payload`, if it is one about a message of ours.
    fn parse(payload: &[u8]) -> Result<MaxDeliveries, String> {
        let advisory: MaxDeliveries = serde_json::from_slice(payload)
            .map_err(|e| format!("not a max_deliver advisory: {e}"))?;
        if advisory.stream != streams::JOBS_STREAM && advisory.stream != streams::EVENTS_STREAM {
            return Err(format!("not a Berth stream: {:?}", advisory.stream));
        }
        if advisory.consumer.is_empty() {
            return Err("no consumer named".to_owned());
        }
        if advisory.stream_seq == 0 {
            return Err("no stream sequence".to_owned());
        }
        Ok(advisory)
    }
}

/// How one advisory ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    /// Copied to the dead letters (and its task failed, its job message removed).
    DeadLettered,
    /// The message is no longer in its stream: acked, removed or aged out meanwhile.
    Gone,
}

#[derive(Debug, thiserror::Error)]
enum AdvisoryError {
    #[error("reading the message: {0}")]
    Fetch(String),
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
    #[error("failing its task: {0}")]
    Task(#[from] JobsError),
    #[error("removing it from the stream: {0}")]
    Delete(String),
}

impl Runtime {
    /// Handles `MAX_DELIVERIES` advisories of the jobs and events streams until
    /// `shutdown` fires. Every worker process runs this beside its loops.
    pub async fn run_advisories(&self, shutdown: CancellationToken) {
        'subscribe: while !shutdown.is_cancelled() {
            let subscriptions = async {
                let client = &self.inner.client;
                let jobs = client
                    .queue_subscribe(JOBS_SUBJECT, QUEUE_GROUP.to_owned())
                    .await?;
                let events = client
                    .queue_subscribe(EVENTS_SUBJECT, QUEUE_GROUP.to_owned())
                    .await?;
                Ok::<_, async_nats::SubscribeError>((jobs, events))
            };
            let (jobs, events) = match subscriptions.await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to JetStream advisories; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(RESUBSCRIBE_PAUSE) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            };
            // Dropping a subscription unsubscribes it.
            let mut advisories = futures::stream::select(jobs, events);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break 'subscribe,
                    message = advisories.next() => match message {
                        // One at a time: advisories are rare (one per message whose
                        // worker died on its last delivery), and the subscription
                        // buffers the rest meanwhile.
                        Some(message) => self.on_advisory(&message.payload, &shutdown).await,
                        None => {
                            tracing::warn!("advisory subscription ended; subscribing again");
                            tokio::time::sleep(RESUBSCRIBE_PAUSE).await;
                            continue 'subscribe;
                        }
                    },
                }
            }
        }
    }

    /// Acts on one advisory, retrying; a malformed one is logged and skipped.
    async fn on_advisory(&self, payload: &[u8], shutdown: &CancellationToken) {
        let advisory = match MaxDeliveries::parse(payload) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a malformed max_deliver advisory");
                return;
            }
        };
        let span = tracing::info_span!(
            "abandoned",
            stream = %advisory.stream,
            consumer = %advisory.consumer,
            stream_sequence = advisory.stream_seq,
            deliveries = advisory.deliveries,
        );
        async {
            let mut pause = RETRY_PAUSE;
            for attempt in 1..=ATTEMPTS {
                match self.settle_abandoned(&advisory).await {
                    Ok(Handled::DeadLettered) => {
                        Counters::bump(&self.inner.counters.abandoned);
                        tracing::warn!(
                            outcome = "dead-lettered",
                            "the server stopped delivering a message; dead-lettered"
                        );
                        return;
                    }
                    Ok(Handled::Gone) => {
                        tracing::info!(
                            outcome = "gone",
                            "the server stopped delivering a message that is no longer in its stream"
                        );
                        return;
                    }
                    Err(e) if attempt < ATTEMPTS => {
                        tracing::warn!(error = %e, attempt, "could not settle an abandoned message; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = shutdown.cancelled() => {
                                tracing::error!(error = %e, "shutting down with an abandoned message unsettled");
                                return;
                            }
                        }
                        pause = pause.saturating_mul(2);
                    }
                    Err(e) => tracing::error!(
                        error = %e,
                        "could not settle an abandoned message; it stays where it is"
                    ),
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Dead-letters the message an advisory is about, fails its task and removes a
    /// task message from the jobs stream. Each step may already have been done.
    async fn settle_abandoned(&self, advisory: &MaxDeliveries) -> Result<Handled, AdvisoryError> {
        let js = &self.inner.js;
        let stream = js
            .get_stream_no_info(&advisory.stream)
            .await
            .map_err(|e| AdvisoryError::Fetch(e.to_string()))?;
        let message = match stream.get_raw_message(advisory.stream_seq).await {
            Ok(message) => message,
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(Handled::Gone),
            Err(e) => return Err(AdvisoryError::Fetch(e.to_string())),
        };
        let reason = reason(advisory.deliveries);

        // The copy first: a task marked failed whose message was lost would leave no
        // trace in the dead letters.
        let origin = Origin {
            stream: &advisory.stream,
            consumer: &advisory.consumer,
            subject: message.subject.as_str(),
            stream_sequence: advisory.stream_seq,
            deliveries: advisory.deliveries,
        };
        dead_letter::publish(js, &origin, &reason, message.payload.clone()).await?;

        if let Some(task_id) = job_task(&message.payload) {
            self.fail_task(task_id, &reason).await?;
        }

        // Work queue: nobody else will ever take it, and it would stay forever. (The
        // events stream keeps its messages for its other consumers until they age.)
        if advisory.stream == streams::JOBS_STREAM {
            match stream.delete_message(advisory.stream_seq).await {
                Ok(_) => {}
                // Gone meanwhile (removed by someone else): what we wanted.
                Err(e) if is_missing(e.kind()) => {}
                Err(e) => return Err(AdvisoryError::Delete(e.to_string())),
            }
        }
        Ok(Handled::DeadLettered)
    }

    /// Marks task `task_id` failed with `reason` (and settles its execution), with a
    /// line in its log saying why; a task already final is left alone.
    async fn fail_task(&self, task_id: i64, reason: &str) -> Result<(), JobsError> {
        let db = &self.inner.db;
        let Some(task) = tasks::get(db, task_id).await? else {
            return Ok(());
        };
        if task.status.is_final() {
            return Ok(());
        }
        let stamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
        if let Err(e) = tasks::append_log(db, task_id, &format!("{stamp} failed: {reason}\n")).await
        {
            tracing::warn!(error = %e, task_id, "could not write the task log");
        }
        tasks::finish(db, task_id, TaskStatus::Failed, reason, 0).await?;
        tracing::warn!(task_id, execution_id = task.execution_id, reason = %reason, "task failed");
        Ok(())
    }
}

/// The task a job message names, if it is one.
fn job_task(payload: &[u8]) -> Option<i64> {
    match Envelope::parse(payload).ok()?.event().ok()? {
        Event::JobRequested { job } => Some(job.task_id),
        _ => None,
    }
}

/// Whether a delete failed because the message is not there: nats-server answers
/// "sequence not found", or a failed delete (10057) whose text is "no message found".
fn is_missing(kind: DeleteMessageErrorKind) -> bool {
    match kind {
        DeleteMessageErrorKind::JetStream(e) => {
            let code = e.error_code();
            code == ErrorCode::SEQUENCE_NOT_FOUND
                || (code == ErrorCode::STREAM_MESSAGE_DELETE_FAILED
                    && e.to_string().contains("no message found"))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::JobRef;

    #[test]
    fn advisories_parse_and_anything_else_is_skipped() {
        // As nats-server 2.9 sends it.
        let payload = br#"{"type":"io.nats.jetstream.advisory.v1.max_deliver",
            "id":"x","timestamp":"2026-01-01T00:00:00Z","stream":"BERTH_JOBS",
            "consumer":"echo","stream_seq":7,"deliveries":4}"#;
        assert_eq!(
            MaxDeliveries::parse(payload),
            Ok(MaxDeliveries {
                stream: "BERTH_JOBS".into(),
                consumer: "echo".into(),
                stream_seq: 7,
                deliveries: 4,
            })
        );
        assert!(MaxDeliveries::parse(b"{not json").is_err());
        assert!(MaxDeliveries::parse(br#"{"stream":"BERTH_JOBS"}"#).is_err());
        let other = br#"{"stream":"OTHER","consumer":"c","stream_seq":1,"deliveries":2}"#;
        assert!(MaxDeliveries::parse(other).is_err());
        let no_seq = br#"{"stream":"BERTH_EVENTS","consumer":"c","stream_seq":0,"deliveries":2}"#;
        assert!(MaxDeliveries::parse(no_seq).is_err());
        let no_consumer =
            br#"{"stream":"BERTH_EVENTS","consumer":"","stream_seq":3,"deliveries":2}"#;
        assert!(MaxDeliveries::parse(no_consumer).is_err());
    }

    #[test]
    fn only_job_requests_name_a_task() {
        let job = Event::JobRequested {
            job: JobRef {
                execution_id: 1,
                task_id: 2,
                kind: "echo".into(),
                destination: "default".into(),
            },
        };
        let bytes = serde_json::to_vec(&Envelope::new(&job, "/t")).unwrap();
        assert_eq!(job_task(&bytes), Some(2));
        assert_eq!(job_task(b"{not json"), None);
    }

    #[test]
    fn the_reason_says_how_many_deliveries() {
        assert_eq!(
            reason(4),
            "delivered 4 times without an ack: the worker died or hung on every delivery"
        );
    }
}
