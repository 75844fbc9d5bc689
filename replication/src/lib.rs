//! Replication policies, shared by the gateway (which manages them through Harbor's
//! `/api/v2.0/replication/policies`) and the `replicate` worker (which runs them):
//!
//! | module | what it holds |
//! |---|---|
//! | `policy` | the policy model in Harbor's terms, and the checks a new or changed one must pass |
//! | `store` | the policies in PostgreSQL, each scheduled policy's cron schedule kept beside it |
//! | `filter` | Harbor's name, tag, resource and label filters: what they accept and what they select |
//! | `pattern` | Harbor's glob (`*`, `**`, `?`, `[…]`, `{a,b}`) and `regex:` patterns |
//! | `naming` | where a copy lands: the destination namespace and Harbor's flattening levels |
//! | `copy` | the copy engine: one artifact with its blobs, children and referrers, registry to registry |
//! | `limits` | a registry's rate and concurrency limits, global across worker processes |
//! | `throttle` | Harbor's per-task bandwidth cap on blob streams |
//!
//! Everything a policy decides is here, once, and follows Harbor's source (named in
//! each module), so a policy carried over from Harbor replicates the same artifacts to
//! the same names.

pub mod copy;
pub mod filter;
pub mod limits;
pub mod naming;
pub mod pattern;
pub mod policy;
pub mod store;
pub mod throttle;

pub use filter::{Candidate, Filter, Filters};
pub use naming::{destination_repository, PathComponents};
pub use pattern::Pattern;
pub use policy::{
    Direction, Policy, PolicyInput, PolicySpec, Trigger, TriggerInput, TriggerType, JOB_KIND,
};

use berth_events::jobs::JobsError;

/// Why a policy operation failed, in the terms the API answers with.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The policy breaks a rule (Harbor's message where it has one): 400.
    #[error("{0}")]
    Invalid(String),
    /// No such policy, or the registry it names does not exist: 404.
    #[error("{0}")]
    NotFound(String),
    /// The name is taken: 409.
    #[error("{0}")]
    Conflict(String),
    /// Not now: an execution of the policy is still running: 412.
    #[error("{0}")]
    Precondition(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<JobsError> for ReplicationError {
    fn from(e: JobsError) -> Self {
        match e {
            JobsError::Database(e) => ReplicationError::Database(e),
            JobsError::NotFound(m) => ReplicationError::NotFound(m),
            JobsError::Conflict(m) => ReplicationError::Conflict(m),
            JobsError::Invalid(m) => ReplicationError::Invalid(m),
        }
    }
}
