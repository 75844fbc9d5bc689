//! Berth's registry gateway: the OCI Distribution API on `/v2/`, the Docker token
//! endpoint, and the Harbor-compatible management API on `/api/v2.0/`, served from
//! PostgreSQL metadata and blob storage.
//!
//! The gateway is stateless apart from uploads' in-memory hashers, which are a cache: any
//! replica can continue any upload. It must never run background jobs (replication,
//! scanning, GC): those belong to the workers, reached through the event pipeline.

pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod error;
pub mod events;
pub mod state;
pub mod v2;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use berth_content::metadata;
use berth_content::storage::FilesystemStore;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

use crate::audit::AuditSink;
use crate::auth::AuthState;
use crate::config::Config;
use crate::state::AppState;
use crate::v2::uploads::UploadHashers;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot connect to PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot apply migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot open blob storage at {path}: {source}")]
    Storage {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    TokenKey(#[from] berth_access::token::TokenError),
    #[error("{0}")]
    SecretKey(#[from] berth_access::secrets::SecretKeyError),
    #[error("cannot create the bootstrap administrator: {0}")]
    Bootstrap(#[from] auth::bootstrap::BootstrapError),
    #[error("invalid NATS configuration: {0}")]
    Nats(#[from] async_nats::ConnectError),
}

/// Connects to PostgreSQL, applies migrations, opens storage and starts connecting to
/// NATS: everything a gateway needs before it can answer a request.
pub async fn build_state(config: Config) -> Result<AppState, StartError> {
    let db = metadata::connect(
        config.database_url.expose(),
        config.database_max_connections,
    )
    .await?;
    metadata::MIGRATOR.run(&db).await?;
    let root = config.storage_root();
    let storage = FilesystemStore::open(&root, config.storage.fsync).map_err(|source| {
        StartError::Storage {
            path: root.display().to_string(),
            source,
        }
    })?;
    let keys = berth_access::token::TokenKeys::load_or_generate(
        &config.token_key_path(),
        &config.auth.token_issuer,
    )?;
    let secret_key = berth_access::secrets::SecretKey::from_config(
        config.secret_key.as_ref().map(|key| key.expose()),
        &config.secret_key_path(),
        true,
    )?;
    if config.auth.mode == config::AuthMode::Token {
        auth::bootstrap::ensure_admin(&db, &config).await?;
    } else {
        tracing::warn!("auth.mode = \"none\": every request may push, pull and delete anything");
    }
    // Returns at once even when NATS is down: the registry serves without it.
    let nats = berth_events::nats::connect(&config.nats_url, "berth-gateway").await?;
    let jetstream = async_nats::jetstream::new(nats.clone());
    Ok(AppState {
        nats,
        jetstream,
        auth: Arc::new(AuthState::new(keys, &config.auth)),
        audit: AuditSink::start(db.clone()),
        db,
        storage: Arc::new(storage),
        config: Arc::new(config),
        hashers: Arc::new(UploadHashers::default()),
        secret_key: Arc::new(secret_key),
    })
}

pub fn router(state: AppState) -> Router {
    v2::router()
        .merge(auth::token_service::router())
        .merge(api::router())
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish (up to the
/// configured grace period) and stops background tasks.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = Duration::from_secs(state.config.shutdown_grace_secs);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sweeper = tokio::spawn(v2::uploads::sweep_expired(state.clone(), stop_rx.clone()));
    let purger = tokio::spawn(audit::purge_expired(
        state.db.clone(),
        state.config.audit.retention_days,
        Duration::from_secs(state.config.audit.purge_interval_secs),
        stop_rx.clone(),
    ));
    let audit = state.audit.clone();
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();

    let mut stopped = stop_rx.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stop_tx.send(true);
    });
    let server = tokio::spawn(async move { server.await });
    let result = tokio::select! {
        result = server => result.unwrap_or_else(|e| Err(std::io::Error::other(e))),
        _ = async {
            let _ = stopped.wait_for(|stop| *stop).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests did not finish within the grace period");
            Ok(())
        }
    };
    sweeper.abort();
    purger.abort();
    audit.shutdown().await;
    result
}
