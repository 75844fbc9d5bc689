//! The first administrator: created on first start from the configured password, or
//! from a generated one written to a file only its owner can read.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use berth_access::{password, users};
use sqlx::PgPool;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot hash the bootstrap password: {0}")]
    Hash(#[from] password::PasswordError),
    #[error("cannot write the generated administrator password to {path}: {source}")]
    PasswordFile {
        path: String,
        source: std::io::Error,
    },
    #[error("auth.admin_password is too weak: it needs 8–128 characters with upper case, lower case and a digit")]
    WeakPassword,
}

/// Ensures the bootstrap administrator exists. Never logs the password.
pub async fn ensure_admin(db: &PgPool, config: &Config) -> Result<(), BootstrapError> {
    let username = &config.auth.admin_username;
    let mut conn = db.acquire().await?;
    if users::exists(&mut conn, username).await? {
        return Ok(());
    }
    let file = config.admin_password_path();
    let secret = match &config.auth.admin_password {
        Some(configured) => {
            if !password::is_strong_secret(configured.expose()) {
                return Err(BootstrapError::WeakPassword);
            }
            configured.expose().to_owned()
        }
        None => read_or_generate(&file)?,
    };
    let hash = password::hash_blocking(secret).await?;
    if users::ensure_bootstrap_admin(&mut conn, username, &hash).await? {
        match &config.auth.admin_password {
            Some(_) => {
                tracing::info!(%username, "created the bootstrap administrator from auth.admin_password")
            }
            None => tracing::warn!(%username, password_file = %file.display(),
                "created the bootstrap administrator with a generated password; read it from the file and change it"),
        }
    }
    Ok(())
}

/// The password in `file`, or a new one written there (mode 0600). Reusing the file
/// keeps the password stable when the database is recreated under the same data dir.
fn read_or_generate(file: &Path) -> Result<String, BootstrapError> {
    let file_error = |source| BootstrapError::PasswordFile {
        path: file.display().to_string(),
        source,
    };
    if let Ok(existing) = std::fs::read_to_string(file) {
        let existing = existing.trim();
        if password::is_strong_secret(existing) {
            return Ok(existing.to_owned());
        }
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(file_error)?;
    }
    let secret = password::generate_secret(24);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .map_err(file_error)?;
    writeln!(out, "{secret}").map_err(file_error)?;
    Ok(secret)
}
