//! Authentication shared by every surface: parsing `Authorization`, checking Basic
//! credentials of users and robots (with login throttling), and the state that holds
//! the token signing key.
//!
//! `/v2/` access checks live in [`registry`], the token endpoint in [`token_service`],
//! the bootstrap administrator in [`bootstrap`].

pub mod bootstrap;
pub mod credentials;
pub mod registry;
pub mod token_service;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Extensions;
use berth_access::audit::AuditEntry;
use berth_access::login_limiter::{LoginLimiter, LoginLimits};
use berth_access::principal::{RobotIdentity, UserIdentity};
use berth_access::token::TokenKeys;
use berth_access::{password, robots, users, Principal};

use crate::audit::AuditSink;
use crate::config::{AuthConfig, AuthMode};
use crate::state::AppState;
pub use credentials::Credentials;

/// What the gateway keeps in memory for authentication.
pub struct AuthState {
    /// Signs and verifies registry tokens.
    pub keys: TokenKeys,
    /// Failed-login throttling, per username and per client address.
    pub limiter: LoginLimiter,
}

impl AuthState {
    pub fn new(keys: TokenKeys, config: &AuthConfig) -> AuthState {
        AuthState {
            keys,
            limiter: LoginLimiter::new(LoginLimits {
                burst: config.login_failure_burst,
                refill_every: Duration::from_secs(config.login_failure_refill_secs),
            }),
        }
    }
}

/// Why credentials did not produce a principal.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The `Authorization` header cannot be understood; the message says why.
    #[error("{0}")]
    Malformed(String),
    /// Wrong username or password, unknown user, disabled or expired robot. One message
    /// for all of them, so the response does not tell which.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// Too many recent failures for this username or client address.
    #[error("too many failed logins; retry in {} s", .0.as_secs().max(1))]
    Throttled(Duration),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("password hashing: {0}")]
    Hashing(#[from] password::PasswordError),
}

/// The principal behind a request's credentials. No credentials is the anonymous
/// principal; with `auth.mode = "none"` everyone is unrestricted. Bearer tokens are not
/// principals (they carry grants, not identities) and are refused here.
pub async fn authenticate(
    state: &AppState,
    credentials: Option<&Credentials>,
    client: IpAddr,
) -> Result<Principal, AuthError> {
    if state.config.auth.mode == AuthMode::None {
        return Ok(Principal::Unrestricted);
    }
    match credentials {
        None => Ok(Principal::Anonymous),
        Some(Credentials::Basic { username, password }) => {
            authenticate_basic(state, username, password, client).await
        }
        Some(Credentials::Bearer(_)) => Err(AuthError::Malformed(
            "a bearer token is not accepted here; use HTTP Basic".to_owned(),
        )),
    }
}

/// Checks a username (or `robot$…` name) and password, throttled per username and
/// client address. Every failure is audited.
pub async fn authenticate_basic(
    state: &AppState,
    username: &str,
    secret: &str,
    client: IpAddr,
) -> Result<Principal, AuthError> {
    if let Err(throttled) = state.auth.limiter.check(username, client) {
        audit_login_failure(&state.audit, username, client).await;
        return Err(AuthError::Throttled(throttled.retry_after));
    }
    let principal = match robots::stored_name(username) {
        Some(stored) => check_robot(state, stored, secret).await?,
        None => check_user(state, username, secret).await?,
    };
    match principal {
        Some(principal) => Ok(principal),
        None => {
            state.auth.limiter.record_failure(username, client);
            audit_login_failure(&state.audit, username, client).await;
            Err(AuthError::InvalidCredentials)
        }
    }
}

/// Whether `secret` matches `hash`. An unknown user or robot (no hash) costs one hash
/// verification too, against a decoy, so timing does not reveal which names exist.
async fn verify_or_decoy(secret: &str, hash: Option<&str>) -> Result<bool, AuthError> {
    let hash = hash.map_or_else(|| password::decoy_hash().to_owned(), str::to_owned);
    Ok(password::verify_blocking(secret.to_owned(), hash).await?)
}

async fn check_user(
    state: &AppState,
    username: &str,
    secret: &str,
) -> Result<Option<Principal>, AuthError> {
    let mut conn = state.db.acquire().await?;
    let login = users::find_for_login(&mut conn, username).await?;
    drop(conn);
    let matches = verify_or_decoy(secret, login.as_ref().map(|l| l.password_hash.as_str())).await?;
    Ok(login.filter(|_| matches).map(|login| {
        Principal::User(UserIdentity {
            id: login.id,
            username: login.username,
            sysadmin: login.sysadmin,
        })
    }))
}

async fn check_robot(
    state: &AppState,
    stored_name: &str,
    secret: &str,
) -> Result<Option<Principal>, AuthError> {
    let mut conn = state.db.acquire().await?;
    let login = robots::find_for_login(&mut conn, stored_name).await?;
    drop(conn);
    let matches = verify_or_decoy(secret, login.as_ref().map(|l| l.secret_hash.as_str())).await?;
    let now = chrono::Utc::now();
    Ok(login
        .filter(|login| matches && login.usable_at(now))
        .map(|login| {
            Principal::Robot(RobotIdentity {
                id: login.id,
                name: format!("{}{}", robots::NAME_PREFIX, login.name),
                project_id: login.project_id,
                permissions: login.permissions,
            })
        }))
}

async fn audit_login_failure(audit: &AuditSink, username: &str, client: IpAddr) {
    let entry = AuditEntry::new(username, client, "login_failed", "user", username, None);
    audit
        .record(AuditEntry {
            success: false,
            ..entry
        })
        .await;
}

/// The peer address of the connection, or the unspecified address when the server
/// runs without connection info (in-process routers in unit tests).
pub fn client_address(extensions: &Extensions) -> IpAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}
