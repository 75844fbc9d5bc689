//! The event kinds: what happened, with the data a consumer needs to act without a
//! lookup. Each kind has a CloudEvents `type` (`io.berth.<noun>.<verb>.v<N>`); a change
//! of its data that old consumers could misread gets a new version, never an edit.

use serde::{Deserialize, Serialize};

/// Where an artifact lives: its project, its repository (full name, `team/app`) and
/// its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    pub project: String,
    pub repository: String,
    pub digest: String,
}

/// Every event Berth emits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A manifest was stored (by digest or under a tag).
    ArtifactPushed {
        artifact: ArtifactRef,
        media_type: String,
        /// The tag it was pushed under, if any.
        tag: Option<String>,
        /// Who pushed it (username, `robot$…`, `anonymous`).
        actor: String,
    },
    /// A manifest was deleted, with its tags.
    ArtifactDeleted {
        artifact: ArtifactRef,
        actor: String,
    },
    /// A tag now points at `artifact`; `previous` is the digest it pointed at before
    /// (`None`: the tag is new).
    TagMoved {
        artifact: ArtifactRef,
        tag: String,
        previous: Option<String>,
        actor: String,
    },
    /// A tag was removed; the artifact it pointed at stays.
    TagDeleted {
        artifact: ArtifactRef,
        tag: String,
        actor: String,
    },
    /// A task of a job is ready to run. Published on the jobs stream, consumed by the
    /// worker kind `job.kind`; what to do is in the task row, not the message.
    JobRequested { job: JobRef },
    /// An execution (or one of its tasks) was cancelled. Workers also hear about it on
    /// the core NATS control subject; this event is the durable record.
    JobCancelled {
        execution_id: i64,
        kind: String,
        /// `None`: every task of the execution.
        task_id: Option<i64>,
        actor: String,
    },
}

/// One task of a job: the message on the jobs stream carries only this, the task row
/// in PostgreSQL holds the payload, status and log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    pub execution_id: i64,
    pub task_id: i64,
    /// The worker kind that runs it (`echo`, `replicate`, `scan`, `gc`).
    pub kind: String,
    /// Where the work goes (a registry endpoint id for replication); `default` when
    /// the kind has one queue. Part of the subject, so a consumer can be per destination.
    pub destination: String,
}

#[derive(Serialize, Deserialize)]
struct ArtifactPushedV1 {
    #[serde(flatten)]
    artifact: ArtifactRef,
    media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tag: Option<String>,
    actor: String,
}

#[derive(Serialize, Deserialize)]
struct ArtifactDeletedV1 {
    #[serde(flatten)]
    artifact: ArtifactRef,
    actor: String,
}

#[derive(Serialize, Deserialize)]
struct TagMovedV1 {
    #[serde(flatten)]
    artifact: ArtifactRef,
    tag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous: Option<String>,
    actor: String,
}

#[derive(Serialize, Deserialize)]
struct TagDeletedV1 {
    #[serde(flatten)]
    artifact: ArtifactRef,
    tag: String,
    actor: String,
}

#[derive(Serialize, Deserialize)]
struct JobCancelledV1 {
    execution_id: i64,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    task_id: Option<i64>,
    actor: String,
}

pub const ARTIFACT_PUSHED: &str = "io.berth.artifact.pushed.v1";
pub const ARTIFACT_DELETED: &str = "io.berth.artifact.deleted.v1";
pub const TAG_MOVED: &str = "io.berth.tag.moved.v1";
pub const TAG_DELETED: &str = "io.berth.tag.deleted.v1";
pub const JOB_REQUESTED: &str = "io.berth.job.requested.v1";
pub const JOB_CANCELLED: &str = "io.berth.job.cancelled.v1";

/// Why an event could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum KindError {
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("data of {kind} does not match its schema: {source}")]
    Data {
        kind: String,
        source: serde_json::Error,
    },
}

impl Event {
    /// The CloudEvents `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::ArtifactPushed { .. } => ARTIFACT_PUSHED,
            Event::ArtifactDeleted { .. } => ARTIFACT_DELETED,
            Event::TagMoved { .. } => TAG_MOVED,
            Event::TagDeleted { .. } => TAG_DELETED,
            Event::JobRequested { .. } => JOB_REQUESTED,
            Event::JobCancelled { .. } => JOB_CANCELLED,
        }
    }

    /// The artifact the event is about, for artifact and tag events.
    pub fn artifact(&self) -> Option<&ArtifactRef> {
        match self {
            Event::ArtifactPushed { artifact, .. }
            | Event::ArtifactDeleted { artifact, .. }
            | Event::TagMoved { artifact, .. }
            | Event::TagDeleted { artifact, .. } => Some(artifact),
            Event::JobRequested { .. } | Event::JobCancelled { .. } => None,
        }
    }

    /// Events with the same key are published in the order they were written: the
    /// repository for artifact events (a push and the delete after it must not swap),
    /// the execution for job events.
    pub fn ordering_key(&self) -> String {
        match self {
            Event::JobRequested { job } => format!("execution:{}", job.execution_id),
            Event::JobCancelled { execution_id, .. } => format!("execution:{execution_id}"),
            other => other
                .artifact()
                .map(|a| a.repository.clone())
                .unwrap_or_default(),
        }
    }

    /// The CloudEvents `subject`: what the event is about, for humans and filters.
    pub fn about(&self) -> String {
        match self {
            Event::JobRequested { job } => {
                format!("execution/{}/task/{}", job.execution_id, job.task_id)
            }
            Event::JobCancelled {
                execution_id,
                task_id: Some(task_id),
                ..
            } => format!("execution/{execution_id}/task/{task_id}"),
            Event::JobCancelled { execution_id, .. } => format!("execution/{execution_id}"),
            other => other
                .artifact()
                .map(|a| format!("{}@{}", a.repository, a.digest))
                .unwrap_or_default(),
        }
    }

    /// The CloudEvents `data`.
    pub fn data(&self) -> serde_json::Value {
        let value = match self.clone() {
            Event::ArtifactPushed {
                artifact,
                media_type,
                tag,
                actor,
            } => serde_json::to_value(ArtifactPushedV1 {
                artifact,
                media_type,
                tag,
                actor,
            }),
            Event::ArtifactDeleted { artifact, actor } => {
                serde_json::to_value(ArtifactDeletedV1 { artifact, actor })
            }
            Event::TagMoved {
                artifact,
                tag,
                previous,
                actor,
            } => serde_json::to_value(TagMovedV1 {
                artifact,
                tag,
                previous,
                actor,
            }),
            Event::TagDeleted {
                artifact,
                tag,
                actor,
            } => serde_json::to_value(TagDeletedV1 {
                artifact,
                tag,
                actor,
            }),
            Event::JobRequested { job } => serde_json::to_value(job),
            Event::JobCancelled {
                execution_id,
                kind,
                task_id,
                actor,
            } => serde_json::to_value(JobCancelledV1 {
                execution_id,
                kind,
                task_id,
                actor,
            }),
        };
        // Plain structs of strings always serialize.
        value.unwrap_or(serde_json::Value::Null)
    }

    /// Reads an event back from its `type` and `data`.
    pub fn from_parts(type_name: &str, data: serde_json::Value) -> Result<Event, KindError> {
        let bad = |source| KindError::Data {
            kind: type_name.to_owned(),
            source,
        };
        Ok(match type_name {
            ARTIFACT_PUSHED => {
                let d: ArtifactPushedV1 = serde_json::from_value(data).map_err(bad)?;
                Event::ArtifactPushed {
                    artifact: d.artifact,
                    media_type: d.media_type,
                    tag: d.tag,
                    actor: d.actor,
                }
            }
            ARTIFACT_DELETED => {
                let d: ArtifactDeletedV1 = serde_json::from_value(data).map_err(bad)?;
                Event::ArtifactDeleted {
                    artifact: d.artifact,
                    actor: d.actor,
                }
            }
            TAG_MOVED => {
                let d: TagMovedV1 = serde_json::from_value(data).map_err(bad)?;
                Event::TagMoved {
                    artifact: d.artifact,
                    tag: d.tag,
                    previous: d.previous,
                    actor: d.actor,
                }
            }
            TAG_DELETED => {
                let d: TagDeletedV1 = serde_json::from_value(data).map_err(bad)?;
                Event::TagDeleted {
                    artifact: d.artifact,
                    tag: d.tag,
                    actor: d.actor,
                }
            }
            JOB_REQUESTED => Event::JobRequested {
                job: serde_json::from_value(data).map_err(bad)?,
            },
            JOB_CANCELLED => {
                let d: JobCancelledV1 = serde_json::from_value(data).map_err(bad)?;
                Event::JobCancelled {
                    execution_id: d.execution_id,
                    kind: d.kind,
                    task_id: d.task_id,
                    actor: d.actor,
                }
            }
            other => return Err(KindError::UnknownType(other.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact() -> ArtifactRef {
        ArtifactRef {
            project: "team".into(),
            repository: "team/app".into(),
            digest: "sha256:abc".into(),
        }
    }

    #[test]
    fn every_kind_round_trips_through_type_and_data() {
        let events = [
            Event::ArtifactPushed {
                artifact: artifact(),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                tag: Some("1.0".into()),
                actor: "alice".into(),
            },
            Event::ArtifactDeleted {
                artifact: artifact(),
                actor: "alice".into(),
            },
            Event::TagMoved {
                artifact: artifact(),
                tag: "latest".into(),
                previous: Some("sha256:old".into()),
                actor: "robot$team+ci".into(),
            },
            Event::TagDeleted {
                artifact: artifact(),
                tag: "latest".into(),
                actor: "alice".into(),
            },
            Event::JobRequested {
                job: JobRef {
                    execution_id: 7,
                    task_id: 42,
                    kind: "echo".into(),
                    destination: "default".into(),
                },
            },
            Event::JobCancelled {
                execution_id: 7,
                kind: "echo".into(),
                task_id: None,
                actor: "admin".into(),
            },
        ];
        for event in events {
            let back = Event::from_parts(event.type_name(), event.data()).unwrap();
            assert_eq!(back, event);
        }
    }

    #[test]
    fn unknown_types_and_bad_data_are_errors() {
        assert!(matches!(
            Event::from_parts("io.berth.nothing.v1", serde_json::json!({})),
            Err(KindError::UnknownType(_))
        ));
        assert!(matches!(
            Event::from_parts(ARTIFACT_PUSHED, serde_json::json!({"project": 1})),
            Err(KindError::Data { .. })
        ));
    }
}
