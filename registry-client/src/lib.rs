//! An HTTP client for remote OCI registries (the distribution API): what the gateway
//! needs to ping an endpoint and what the replication worker needs to push to and pull
//! from one.
//!
//! Auth is negotiated like docker does: requests go out anonymously until the registry
//! answers 401 with a challenge; then Basic credentials, or a Bearer token fetched from
//! the challenge's realm for the request's scope and cached until shortly before it
//! expires; the request is retried once. Errors are classified into [`ClientError`] so
//! callers can tell transient failures (retry later) from permanent ones (fail now);
//! retrying is the caller's job.
//!
//! Rate limits and concurrency permits plug in as a [`RequestGate`]; bandwidth caps are
//! the caller's: blob bodies go in ([`RegistryClient::push_blob`]) and come out
//! ([`RegistryClient::get_blob`]) as streams, never buffered whole, so a pacing stream
//! wrapped around either caps the bytes themselves.

mod auth;
mod blobs;
mod client;
mod config;
mod error;
mod listing;
mod manifests;
mod names;
mod types;

pub use blobs::{BlobStream, MountOutcome, UploadSession};
pub use client::RegistryClient;
pub use config::{ClientConfig, Credential, GatePermit, RequestGate, RequestInfo, TokenIssuer};
pub use error::ClientError;
pub use names::sha256_digest;
pub use types::{
    is_index, media_types, Descriptor, Manifest, ManifestContent, ManifestInfo, Platform,
};
