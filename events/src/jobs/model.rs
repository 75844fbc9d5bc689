//! The rows and states of jobs. Statuses are stored in Berth's own words and shown in
//! Harbor's (`Success`, `Error`, `Stopped`) by the management API.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// Errors of job state operations.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("{0} not found")]
    NotFound(String),
    /// The request does not fit the current state (stopping a finished execution).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
}

/// What started an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Manual,
    Event,
    Schedule,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Event => "event",
            Trigger::Schedule => "schedule",
        }
    }

    pub fn parse(s: &str) -> Option<Trigger> {
        match s {
            "manual" => Some(Trigger::Manual),
            "event" => Some(Trigger::Event),
            "schedule" => Some(Trigger::Schedule),
            _ => None,
        }
    }

    /// Harbor's word: `MANUAL`, `EVENT`, `SCHEDULE`.
    pub fn harbor(self) -> &'static str {
        match self {
            Trigger::Manual => "MANUAL",
            Trigger::Event => "EVENT",
            Trigger::Schedule => "SCHEDULE",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl ExecutionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Pending => "pending",
            ExecutionStatus::Running => "running",
            ExecutionStatus::Succeeded => "succeeded",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<ExecutionStatus> {
        match s {
            "pending" => Some(ExecutionStatus::Pending),
            "running" => Some(ExecutionStatus::Running),
            "succeeded" => Some(ExecutionStatus::Succeeded),
            "failed" => Some(ExecutionStatus::Failed),
            "cancelled" => Some(ExecutionStatus::Cancelled),
            _ => None,
        }
    }

    /// Harbor's word for it.
    pub fn harbor(self) -> &'static str {
        match self {
            ExecutionStatus::Pending => "Pending",
            ExecutionStatus::Running => "Running",
            ExecutionStatus::Succeeded => "Success",
            ExecutionStatus::Failed => "Error",
            ExecutionStatus::Cancelled => "Stopped",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            ExecutionStatus::Succeeded | ExecutionStatus::Failed | ExecutionStatus::Cancelled
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    /// Stopped while it ran.
    Cancelled,
    /// Never ran: its execution was cancelled before it started.
    Skipped,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
            TaskStatus::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<TaskStatus> {
        match s {
            "pending" => Some(TaskStatus::Pending),
            "running" => Some(TaskStatus::Running),
            "succeeded" => Some(TaskStatus::Succeeded),
            "failed" => Some(TaskStatus::Failed),
            "cancelled" => Some(TaskStatus::Cancelled),
            "skipped" => Some(TaskStatus::Skipped),
            _ => None,
        }
    }

    /// Harbor's word for it.
    pub fn harbor(self) -> &'static str {
        match self {
            TaskStatus::Pending => "Pending",
            TaskStatus::Running => "Running",
            TaskStatus::Succeeded => "Success",
            TaskStatus::Failed => "Error",
            TaskStatus::Cancelled | TaskStatus::Skipped => "Stopped",
        }
    }

    pub fn is_final(self) -> bool {
        !matches!(self, TaskStatus::Pending | TaskStatus::Running)
    }
}

/// One trigger of a job.
#[derive(Debug, Clone)]
pub struct Execution {
    pub id: i64,
    pub kind: String,
    pub vendor_id: i64,
    pub trigger: Trigger,
    pub trigger_key: Option<String>,
    pub status: ExecutionStatus,
    pub status_message: String,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub extra_attrs: serde_json::Value,
    pub created_by: String,
    pub start_time: DateTime<Utc>,
    pub end_time: Option<DateTime<Utc>>,
}

/// One unit of work (its log is read separately: it can be large).
#[derive(Debug, Clone)]
pub struct Task {
    pub id: i64,
    pub execution_id: i64,
    pub kind: String,
    pub natural_key: String,
    pub destination: String,
    pub payload: serde_json::Value,
    pub status: TaskStatus,
    pub status_message: String,
    pub attempts: i32,
    pub bytes: i64,
    pub worker_id: Option<Uuid>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// Tasks of an execution by status (Harbor's execution `metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TaskCounts {
    pub total: i64,
    pub pending: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub skipped: i64,
}

/// A new execution.
#[derive(Debug, Clone)]
pub struct NewExecution<'a> {
    pub kind: &'a str,
    pub vendor_id: i64,
    pub trigger: Trigger,
    /// The trigger's identity; a second `create` with the same kind and key finds the
    /// first execution instead of starting another.
    pub trigger_key: Option<&'a str>,
    pub extra_attrs: serde_json::Value,
    pub created_by: &'a str,
}

/// A new task of an execution.
#[derive(Debug, Clone)]
pub struct NewTask<'a> {
    /// Unique within the execution: planning the same work twice finds the first task.
    pub natural_key: &'a str,
    pub destination: &'a str,
    pub payload: serde_json::Value,
}

/// Which executions a listing shows; `None` filters nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionFilter {
    /// Any of these worker kinds.
    pub kinds: Option<Vec<String>>,
    pub statuses: Option<Vec<ExecutionStatus>>,
    pub triggers: Option<Vec<Trigger>>,
    pub vendor_id: Option<i64>,
}

/// Which tasks of an execution a listing shows; `None` filters nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub statuses: Option<Vec<TaskStatus>>,
    /// Only tasks whose payload has this text field with this value (a kind's own
    /// attribute: replication's `resource_type`).
    pub payload_field: Option<(String, String)>,
}

/// One page of a listing, and its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListPage<'a> {
    /// `id`, `start_time` or `end_time`; any other key sorts by id. Ties are broken
    /// by id, so pages never overlap.
    pub sort_key: &'a str,
    pub descending: bool,
    pub limit: i64,
    pub offset: i64,
}

/// The stored words of `values`, for a `text[]` query parameter (`None` filters
/// nothing; an empty list matches nothing).
pub(crate) fn stored_words<T: Copy>(
    values: Option<&[T]>,
    word: fn(T) -> &'static str,
) -> Option<Vec<String>> {
    values.map(|values| values.iter().map(|v| word(*v).to_owned()).collect())
}
