//! What every handler shares: the database pool, blob storage, configuration, the
//! in-memory hashers of uploads in progress, authentication state, the audit writer and
//! the NATS connection, and the key of credentials at rest.

use std::sync::Arc;

use berth_access::secrets::SecretKey;
use berth_content::storage::BlobStore;
use sqlx::PgPool;

use crate::audit::AuditSink;
use crate::auth::AuthState;
use crate::config::Config;
use crate::v2::uploads::UploadHashers;

#[derive(Clone)]
pub struct AppState {
    /// Metadata: repositories, manifests, tags, blobs, upload sessions.
    pub db: PgPool,
    /// Blob bytes.
    pub storage: Arc<dyn BlobStore>,
    pub config: Arc<Config>,
    /// Hashers of chunked uploads in progress, so a PATCH never re-reads earlier chunks.
    pub hashers: Arc<UploadHashers>,
    /// Token signing key and login throttling.
    pub auth: Arc<AuthState>,
    /// Batched writer of registry-traffic audit records.
    pub audit: AuditSink,
    /// NATS, for control messages to the workers (cancel, pause). Connects in the
    /// background and reconnects by itself; check its state before waiting on it.
    pub nats: async_nats::Client,
    /// JetStream on that connection, for the job queues' pending counts.
    pub jetstream: async_nats::jetstream::Context,
    /// Seals and opens remote registries' credentials (`secret_key` / `secret_key_file`).
    pub secret_key: Arc<SecretKey>,
}
