//! Listening for control messages (cancel, pause) and polling PostgreSQL for the same
//! state, in case a message was missed: the message makes it fast, the poll makes it
//! certain.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::Runtime;
use crate::control::Control;
use crate::jobs::{queues, tasks};
use crate::subject::CONTROL_SUBJECT;

/// Wait before subscribing again when the subscription could not be made or ended.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_secs(1);

impl Runtime {
    /// Applies control messages and polls paused queues and cancellations every
    /// `pipeline.control_poll` (and at once), until `shutdown` fires. Every worker
    /// process runs this beside its loops.
    pub async fn run_control(&self, shutdown: CancellationToken) {
        let mut poll = tokio::time::interval(self.inner.config.control_poll());
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        'subscribe: while !shutdown.is_cancelled() {
            let mut subscription = match self.inner.client.subscribe(CONTROL_SUBJECT).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to control messages; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(RESUBSCRIBE_PAUSE) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            };
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        let _ = subscription.unsubscribe().await;
                        break 'subscribe;
                    }
                    message = subscription.next() => match message {
                        Some(message) => self.apply_control(&message.payload),
                        None => {
                            tracing::warn!("control subscription ended; subscribing again");
                            tokio::time::sleep(RESUBSCRIBE_PAUSE).await;
                            continue 'subscribe;
                        }
                    },
                    _ = poll.tick() => self.poll_control().await,
                }
            }
        }
    }

    /// Acts on one control message; a malformed one is logged and ignored (the poll
    /// catches up with the state it may have meant).
    pub(crate) fn apply_control(&self, payload: &[u8]) {
        match Control::parse(payload) {
            Ok(Control::Cancel {
                execution_id,
                task_id,
            }) => {
                let stopped = self.inner.registry.cancel(execution_id, task_id);
                tracing::info!(execution_id, task_id, stopped, "cancel request");
            }
            Ok(Control::Pause { kind, paused }) => {
                tracing::info!(kind = %kind, paused, "queue pause changed");
                self.inner.pauses.set(&kind, paused);
            }
            Err(e) => tracing::warn!(error = %e, "ignoring a malformed control message"),
        }
    }

    /// Reads paused queues and stop requests for running tasks from PostgreSQL.
    async fn poll_control(&self) {
        self.poll_pauses().await;
        let ids = self.inner.registry.task_ids();
        if ids.is_empty() {
            return;
        }
        match tasks::cancel_requested(&self.inner.db, &ids).await {
            Ok(stop) if !stop.is_empty() => {
                let stopped = self.inner.registry.cancel_tasks(&stop);
                if stopped > 0 {
                    tracing::info!(?stop, stopped, "stop requests found by polling");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot poll stop requests"),
        }
    }

    pub(crate) async fn poll_pauses(&self) {
        let generation = self.inner.pauses.generation();
        match queues::paused_kinds(&self.inner.db).await {
            Ok(kinds) => {
                let kinds: BTreeSet<String> = kinds.into_iter().collect();
                self.inner.pauses.replace(kinds, generation);
            }
            Err(e) => tracing::warn!(error = %e, "cannot poll paused queues"),
        }
    }
}
