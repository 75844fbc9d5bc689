//! OCI content shared by Berth's gateway and workers.
//!
//! This crate holds what every Berth process needs to agree on: digests, repository
//! names and references (parsed once, trusted afterwards), manifest parsing, the blob
//! storage trait with its filesystem implementation, and the PostgreSQL metadata
//! queries. It must never know about HTTP, authentication or the event pipeline: those
//! belong to the processes that use it, and keeping them out lets the gateway and the
//! workers depend on this crate without depending on each other.

pub mod digest;
pub mod manifest;
pub mod metadata;
pub mod name;
pub mod storage;

pub use digest::{Algorithm, Digest, DigestError, DigestHasher};
pub use name::{NameError, Reference, RepositoryName, Tag};
