//! Control messages on core NATS (`berth.control`, not JetStream): fast, best-effort
//! signals from the management API to every worker process. They carry no state of
//! their own: the state is in PostgreSQL (cancel_requested_at, job_queues), which
//! workers also poll, so a lost message delays an effect by one poll and loses nothing.

use serde::{Deserialize, Serialize};

use crate::subject::CONTROL_SUBJECT;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Control {
    /// Stop the running tasks of an execution (or only `task_id`).
    Cancel {
        execution_id: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task_id: Option<i64>,
    },
    /// Stop (`true`) or resume starting tasks of worker kind `kind`.
    Pause { kind: String, paused: bool },
}

impl Control {
    pub fn to_bytes(&self) -> Vec<u8> {
        // An enum of integers and strings always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn parse(bytes: &[u8]) -> Result<Control, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Publishes `message` on the control subject. Best effort by design: the caller has
/// already committed the state change, and workers poll for it anyway.
pub async fn publish(client: &async_nats::Client, message: &Control) {
    if let Err(e) = client
        .publish(CONTROL_SUBJECT, message.to_bytes().into())
        .await
    {
        tracing::warn!(error = %e, "control message not sent; workers will see the change on their next poll");
    }
    // Flush so the message leaves now, not with the next batch of writes.
    let _ = client.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_round_trip() {
        for m in [
            Control::Cancel {
                execution_id: 3,
                task_id: None,
            },
            Control::Cancel {
                execution_id: 3,
                task_id: Some(9),
            },
            Control::Pause {
                kind: "echo".into(),
                paused: true,
            },
        ] {
            assert_eq!(Control::parse(&m.to_bytes()).unwrap(), m);
        }
        assert!(Control::parse(b"{\"action\":\"reboot\"}").is_err());
    }
}
