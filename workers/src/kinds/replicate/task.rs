//! A replication task as stored in its row's payload: what to copy or delete, from
//! where to where. The event handler and the planner write it; the copy handler reads
//! it; the executions API shows `operation`, `resource_type`, `source_resource`,
//! `destination_resource` and the counts the handler adds.

use berth_events::jobs::{tasks, JobsError, NewTask};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use super::KIND;

/// What a task does at the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Copy the artifact (and what it needs) unless the destination has it.
    Copy,
    /// Delete the artifact at the destination (`replicate_deletion`).
    Deletion,
}

/// Which way the bytes go, relative to Berth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Way {
    /// Berth → the remote endpoint.
    Push,
    /// The remote endpoint → Berth.
    Pull,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPayload {
    pub policy_id: i64,
    /// The remote endpoint: the destination of a push, the source of a pull.
    pub registry_id: i64,
    pub way: Way,
    pub operation: Operation,
    /// `image` or `artifact`, as Harbor's task list shows it.
    pub resource_type: String,
    pub source_repository: String,
    /// The tag to copy, or `None` for an untagged artifact (copied by digest).
    pub tag: Option<String>,
    /// The digest the tag pointed at when the task was planned. A task whose tag moved
    /// on by the time it runs is superseded by the task of the newer digest.
    pub digest: String,
    pub destination_repository: String,
    /// `repository:tag` or `repository@digest`, for the API.
    pub source_resource: String,
    pub destination_resource: String,
}

impl TaskPayload {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        policy_id: i64,
        registry_id: i64,
        way: Way,
        operation: Operation,
        resource_type: &str,
        source_repository: &str,
        tag: Option<&str>,
        digest: &str,
        destination_repository: &str,
    ) -> TaskPayload {
        let resource = |repository: &str| match tag {
            Some(tag) => format!("{repository}:{tag}"),
            None => format!("{repository}@{digest}"),
        };
        TaskPayload {
            policy_id,
            registry_id,
            way,
            operation,
            resource_type: resource_type.to_owned(),
            source_repository: source_repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest: digest.to_owned(),
            destination_repository: destination_repository.to_owned(),
            source_resource: resource(source_repository),
            destination_resource: resource(destination_repository),
        }
    }

    pub fn parse(payload: &serde_json::Value) -> Result<TaskPayload, String> {
        TaskPayload::deserialize(payload).map_err(|e| format!("not a replication task: {e}"))
    }

    /// The task's natural key: unique within its execution.
    pub fn natural_key(&self) -> String {
        let operation = match self.operation {
            Operation::Copy => "copy",
            Operation::Deletion => "deletion",
        };
        format!(
            "{operation} {} -> {}",
            self.source_resource, self.destination_resource
        )
    }

    /// What the copy of one destination tag is serialised on: two tasks writing the
    /// same tag at the same endpoint run one after the other, so the later push wins.
    pub fn lock_key(&self) -> String {
        let target = self.tag.as_deref().unwrap_or(&self.digest);
        let endpoint = match self.way {
            Way::Push => self.registry_id.to_string(),
            Way::Pull => "berth".to_owned(),
        };
        format!(
            "replicate {endpoint} {}:{target}",
            self.destination_repository
        )
    }

    /// Adds this task to `execution_id` with its message, in the caller's transaction.
    /// Tasks go to the remote endpoint's own consumer, whose `max_ack_pending` is the
    /// endpoint's concurrency cap.
    pub async fn enqueue(
        &self,
        conn: &mut PgConnection,
        execution_id: i64,
        source: &str,
    ) -> Result<Option<i64>, JobsError> {
        let payload = serde_json::to_value(self)
            .map_err(|e| JobsError::Invalid(format!("task payload: {e}")))?;
        tasks::enqueue(
            conn,
            execution_id,
            KIND,
            &NewTask {
                natural_key: &self.natural_key(),
                destination: &self.registry_id.to_string(),
                payload,
            },
            source,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(tag: Option<&str>) -> TaskPayload {
        TaskPayload::new(
            3,
            7,
            Way::Push,
            Operation::Copy,
            "image",
            "team/app",
            tag,
            "sha256:abc",
            "mirror/app",
        )
    }

    #[test]
    fn resources_name_the_tag_or_the_digest() {
        let tagged = sample(Some("1.0"));
        assert_eq!(tagged.source_resource, "team/app:1.0");
        assert_eq!(tagged.destination_resource, "mirror/app:1.0");
        assert_eq!(tagged.natural_key(), "copy team/app:1.0 -> mirror/app:1.0");
        let untagged = sample(None);
        assert_eq!(untagged.destination_resource, "mirror/app@sha256:abc");
    }

    #[test]
    fn payload_round_trips_and_bad_payloads_are_refused() {
        let task = sample(Some("1.0"));
        let value = serde_json::to_value(&task).unwrap();
        assert_eq!(value["operation"], "copy");
        assert_eq!(value["way"], "push");
        assert_eq!(TaskPayload::parse(&value).unwrap(), task);
        assert!(TaskPayload::parse(&serde_json::json!({"policy_id": 1})).is_err());
    }

    #[test]
    fn one_lock_per_destination_tag() {
        let a = sample(Some("1.0"));
        let mut b = sample(Some("1.0"));
        b.digest = "sha256:def".into();
        assert_eq!(a.lock_key(), b.lock_key());
        assert_ne!(a.lock_key(), sample(Some("2.0")).lock_key());
    }
}
