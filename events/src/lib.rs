//! Berth's event pipeline, shared by the gateway and every worker kind.
//!
//! The contract (`envelope`, `kind`, `subject`) is pure data: the CloudEvents 1.0
//! envelope, typed and versioned event kinds, and their NATS subjects. Around it: the
//! transactional outbox and the relay that publishes it to JetStream (`outbox`,
//! `relay`), stream and consumer provisioning (`streams`), job state in PostgreSQL
//! (`jobs`), cron schedules (`schedules`), control messages for cancellation and
//! pausing (`control`), and the one consumer runtime every worker kind runs on
//! (`runtime`): a kind supplies a handler and its error classification, nothing else.
//!
//! This crate must never know what a job does (that is the worker kinds' business),
//! never call the registry's HTTP API, and never lose or invent an event: an event
//! exists if and only if its change committed, and a message is acked only after its
//! effect is recorded.

pub mod config;
pub mod control;
pub mod envelope;
pub mod jobs;
pub mod kind;
pub mod nats;
pub mod outbox;
pub mod relay;
pub mod runtime;
pub mod schedules;
pub mod streams;
pub mod subject;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;

pub use envelope::{Envelope, EnvelopeError};
pub use kind::{ArtifactRef, Event, JobRef};
