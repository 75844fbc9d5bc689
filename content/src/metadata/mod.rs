//! Registry metadata in PostgreSQL: one module per concept, plain async functions over
//! a connection.
//!
//! Functions take `&mut PgConnection` so that a caller can run several of them in one
//! transaction (`&mut *tx`) or alone on a pooled connection; which writes must commit
//! together is the caller's decision, made visibly at the call site.

pub mod artifacts;
pub mod blobs;
pub mod manifests;
pub mod projects;
pub mod repositories;
pub mod tags;
pub mod uploads;

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};

/// A listing's order: an API field name its query knows, and the direction. Each
/// query breaks ties by id, so pages never overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort<'a> {
    pub key: &'a str,
    pub descending: bool,
}

impl Sort<'_> {
    /// Harbor's `key` / `-key` form, for queries that switch on one text parameter.
    pub fn signed_key(&self) -> String {
        if self.descending {
            format!("-{}", self.key)
        } else {
            self.key.to_owned()
        }
    }
}

/// Every migration under `migrations/`, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Opens a pool; nothing is queried until first use.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
}
