//! The `echo` kind: a handler that does what its task payload says, for the pipeline's
//! tests and benchmark. It stands in for the real kinds (replicate, scan, gc) and
//! exercises every path of the runtime: success, sleeping, transient and permanent
//! failures, failing a number of times, and blocking until cancelled.
//!
//! It also reacts to `artifact.pushed` events the way a real kind plans its work: one
//! execution per event (keyed by the event id, so a redelivered event plans nothing)
//! with one task.

use std::time::Duration;

use async_trait::async_trait;
use berth_events::envelope::Envelope;
use berth_events::jobs::{executions, tasks, NewExecution, NewTask, Trigger};
use berth_events::runtime::{EventContext, EventHandler, Failure, JobHandler, TaskContext};
use berth_events::Event;
use serde::Deserialize;
use serde_json::json;

/// The worker kind's name: its queue, its consumer, its executions.
pub const KIND: &str = "echo";
/// The durable consumer of the domain events echo reacts to.
pub const EVENTS_CONSUMER: &str = "echo-events";
/// What that consumer receives: every pushed artifact.
pub const EVENTS_FILTER: &str = "berth.events.artifact.pushed.>";

/// What an echo task does, from its payload; every field is optional, and fields the
/// handler does not know (the event data planned tasks carry) are ignored.
#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct EchoPayload {
    /// Sleep this long (cancellable) before anything else.
    #[serde(default)]
    pub sleep_ms: Option<u64>,
    /// Wait until the task is cancelled.
    #[serde(default)]
    pub block: bool,
    /// `"transient"`: fail every attempt, retryably; `"permanent"`: fail for good.
    #[serde(default)]
    pub fail: Option<String>,
    /// Fail transiently while the attempt number is at most this, then succeed.
    #[serde(default)]
    pub fail_times: Option<i32>,
}

/// What a run ends with, once the sleep and the block are over.
#[derive(Debug, PartialEq)]
enum Verdict {
    Succeed,
    Fail(Failure),
}

impl EchoPayload {
    pub fn parse(payload: &serde_json::Value) -> Result<EchoPayload, Failure> {
        EchoPayload::deserialize(payload)
            .map_err(|e| Failure::permanent(format!("not an echo payload: {e}")))
    }

    /// The outcome of attempt `attempt` (1 for the first).
    fn verdict(&self, attempt: i32) -> Verdict {
        match self.fail.as_deref() {
            Some("transient") => {
                return Verdict::Fail(Failure::transient("failing on purpose (fail: transient)"))
            }
            Some("permanent") => {
                return Verdict::Fail(Failure::permanent("failing on purpose (fail: permanent)"))
            }
            Some(other) => {
                return Verdict::Fail(Failure::permanent(format!(
                    "unknown fail mode {other:?}; expected \"transient\" or \"permanent\""
                )))
            }
            None => {}
        }
        match self.fail_times {
            Some(k) if attempt <= k => Verdict::Fail(Failure::transient(format!(
                "failing on purpose (attempt {attempt} of fail_times {k})"
            ))),
            _ => Verdict::Succeed,
        }
    }
}

/// The echo job handler.
pub struct EchoJob;

#[async_trait]
impl JobHandler for EchoJob {
    async fn run(&self, ctx: &TaskContext) -> Result<(), Failure> {
        let task = &ctx.task;
        let payload = EchoPayload::parse(&task.payload)?;
        ctx.log(format!(
            "echo: task {} of execution {}, attempt {}, payload {}",
            task.id, task.execution_id, task.attempts, task.payload
        ));
        let stopped = || Failure::transient("stopped");
        if let Some(ms) = payload.sleep_ms.filter(|ms| *ms > 0) {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                // The runtime counts an error after the token fired as stopped, not failed.
                _ = ctx.cancel.cancelled() => return Err(stopped()),
            }
        }
        if payload.block {
            ctx.log("echo: blocking until cancelled");
            ctx.cancel.cancelled().await;
            return Err(stopped());
        }
        match payload.verdict(task.attempts) {
            Verdict::Succeed => {
                ctx.log("echo: done");
                Ok(())
            }
            Verdict::Fail(failure) => {
                ctx.log(format!("echo: {}", failure.reason()));
                Err(failure)
            }
        }
    }
}

/// Plans one echo task per pushed artifact.
pub struct EchoEvents;

#[async_trait]
impl EventHandler for EchoEvents {
    async fn handle(
        &self,
        event: Event,
        envelope: &Envelope,
        ctx: &EventContext,
    ) -> Result<(), Failure> {
        let Event::ArtifactPushed {
            artifact, actor, ..
        } = event
        else {
            // The consumer's filter sends only pushes; anything else is not ours.
            return Ok(());
        };
        let event_id = envelope.id.to_string();
        let transient =
            |e: &dyn std::fmt::Display| Failure::transient(format!("planning the echo task: {e}"));
        let mut tx = ctx.db.begin().await.map_err(|e| transient(&e))?;
        let execution = executions::create(
            &mut tx,
            &NewExecution {
                kind: KIND,
                vendor_id: 0,
                trigger: Trigger::Event,
                trigger_key: Some(&event_id),
                extra_attrs: json!({
                    "event_id": event_id,
                    "repository": artifact.repository,
                    "digest": artifact.digest,
                }),
                created_by: &actor,
            },
        )
        .await
        .map_err(|e| transient(&e))?;
        let Some(execution_id) = execution else {
            // Delivered before: its execution and task exist already.
            tracing::debug!(event_id = %event_id, "artifact.pushed seen before; nothing to plan");
            return Ok(());
        };
        let natural_key = format!("{}@{}", artifact.repository, artifact.digest);
        tasks::enqueue(
            &mut tx,
            execution_id,
            KIND,
            &NewTask {
                natural_key: &natural_key,
                destination: "default",
                payload: json!({
                    "sleep_ms": 0,
                    "event_id": event_id,
                    "repository": artifact.repository,
                    "digest": artifact.digest,
                }),
            },
            &ctx.source,
        )
        .await
        .map_err(|e| transient(&e))?;
        tx.commit().await.map_err(|e| transient(&e))?;
        tracing::info!(event_id = %event_id, execution_id, task = %natural_key, "planned an echo task");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(v: serde_json::Value) -> EchoPayload {
        EchoPayload::parse(&v).unwrap()
    }

    #[test]
    fn payloads_parse_and_ignore_unknown_fields() {
        assert_eq!(payload(json!({})), EchoPayload::default());
        let p = payload(json!({"sleep_ms": 5, "event_id": "x", "repository": "team/app"}));
        assert_eq!(p.sleep_ms, Some(5));
        assert!(matches!(
            EchoPayload::parse(&json!({"sleep_ms": "soon"})),
            Err(Failure::Permanent(_))
        ));
        assert!(matches!(
            EchoPayload::parse(&json!([1, 2])),
            Err(Failure::Permanent(_))
        ));
    }

    #[test]
    fn fail_modes_decide_the_verdict() {
        assert_eq!(payload(json!({})).verdict(1), Verdict::Succeed);
        assert!(matches!(
            payload(json!({"fail": "transient"})).verdict(9),
            Verdict::Fail(Failure::Transient { .. })
        ));
        assert!(matches!(
            payload(json!({"fail": "permanent"})).verdict(1),
            Verdict::Fail(Failure::Permanent(_))
        ));
        assert!(matches!(
            payload(json!({"fail": "sometimes"})).verdict(1),
            Verdict::Fail(Failure::Permanent(_))
        ));
    }

    #[test]
    fn fail_times_fails_the_first_attempts_then_succeeds() {
        let p = payload(json!({"fail_times": 2}));
        assert!(matches!(
            p.verdict(1),
            Verdict::Fail(Failure::Transient { .. })
        ));
        assert!(matches!(
            p.verdict(2),
            Verdict::Fail(Failure::Transient { .. })
        ));
        assert_eq!(p.verdict(3), Verdict::Succeed);
        assert_eq!(
            payload(json!({"fail_times": 0})).verdict(1),
            Verdict::Succeed
        );
    }
}
