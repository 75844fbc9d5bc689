//! Berth's event contract: the CloudEvents 1.0 envelope every event travels in, the
//! typed and versioned event kinds, and the NATS subjects they are published on.
//!
//! The gateway builds events here and writes them to the outbox in the transaction of
//! the change they describe; the relay and the workers read them back with the same
//! types. This crate must never do I/O: it is the shape of the messages, not their
//! transport, so every component can depend on it.

pub mod envelope;
pub mod kind;
pub mod subject;

pub use envelope::{Envelope, EnvelopeError};
pub use kind::{ArtifactRef, Event};
