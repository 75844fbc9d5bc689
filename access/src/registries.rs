//! Remote registries (Harbor's registry endpoints): where replication pushes to and pulls
//! from, with the credential it presents and Berth's per-endpoint limits.
//!
//! The secret of a credential is sealed with the installation's [`SecretKey`] before it
//! reaches this module's writes and is never part of a [`Registry`]: only the replication
//! worker (and the ping) read it back, through [`credential`]. Every change runs in one
//! transaction with its audit entry.

use berth_content::metadata::Sort;
use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

use crate::audit::{self, AuditEntry};
use crate::secrets::{OpenError, SealError, SecretKey, SecretString};

/// What a sealed registry secret is bound to: a value sealed for anything else does not
/// open as a registry secret.
const SECRET_CONTEXT: &[u8] = b"berth:registries.access_secret";

/// Longest registry name (Harbor's rule).
pub const NAME_MAX_CHARS: usize = 64;

/// Harbor's adapter types Berth speaks. Each is the Distribution API underneath; they
/// differ in defaults (Docker Hub's fixed endpoints) and in what `info` advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryType {
    /// Any registry serving the Distribution API v2 (`docker-registry`, Zot, Berth …).
    DockerRegistry,
    /// A Harbor (or another Berth): the Distribution API behind the token flow.
    Harbor,
    DockerHub,
}

/// Docker Hub's web and API endpoint: what Harbor stores as a `docker-hub` registry's URL.
pub const DOCKER_HUB_URL: &str = "https://hub.docker.com";
/// Where Docker Hub serves the Distribution API.
pub const DOCKER_HUB_REGISTRY_URL: &str = "https://registry-1.docker.io";

impl RegistryType {
    /// Every type, in the order `GET /replication/adapters` lists them.
    pub const ALL: [RegistryType; 3] = [
        RegistryType::DockerHub,
        RegistryType::DockerRegistry,
        RegistryType::Harbor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RegistryType::DockerRegistry => "docker-registry",
            RegistryType::Harbor => "harbor",
            RegistryType::DockerHub => "docker-hub",
        }
    }

    pub fn parse(value: &str) -> Option<RegistryType> {
        Self::ALL.into_iter().find(|t| t.as_str() == value)
    }

    /// The URL a registry of this type gets when none is given.
    pub fn default_url(self) -> Option<&'static str> {
        match self {
            RegistryType::DockerHub => Some(DOCKER_HUB_URL),
            RegistryType::DockerRegistry | RegistryType::Harbor => None,
        }
    }

    /// Where the Distribution API (`/v2/`) of a registry of this type stored with `url`
    /// is: Docker Hub's is fixed, as in Harbor's adapter; the others' is their URL.
    pub fn api_url(self, url: &str) -> String {
        match self {
            RegistryType::DockerHub => DOCKER_HUB_REGISTRY_URL.to_owned(),
            RegistryType::DockerRegistry | RegistryType::Harbor => url.to_owned(),
        }
    }
}

/// The last ping's outcome, as Harbor names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryStatus {
    Healthy,
    Unhealthy,
    /// Never pinged.
    Unknown,
}

impl RegistryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryStatus::Healthy => "healthy",
            RegistryStatus::Unhealthy => "unhealthy",
            RegistryStatus::Unknown => "unknown",
        }
    }

    pub fn parse(value: &str) -> Option<RegistryStatus> {
        match value {
            "healthy" => Some(RegistryStatus::Healthy),
            "unhealthy" => Some(RegistryStatus::Unhealthy),
            "unknown" => Some(RegistryStatus::Unknown),
            _ => None,
        }
    }
}

/// Berth's limits on traffic to one registry, held together by every worker process.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RegistryLimits {
    /// Requests per second; 0 is unlimited.
    pub rate_limit_per_second: f64,
    /// Requests allowed at once above the rate; 0 is one second's worth
    /// (see [`RegistryLimits::effective_burst`]).
    pub rate_limit_burst: i32,
    /// Requests in flight; 0 is unlimited.
    pub max_concurrency: i32,
}

/// Upper bounds that keep the limits meaningful (and the limiter's arithmetic finite).
pub const MAX_RATE_PER_SECOND: f64 = 100_000.0;
pub const MAX_BURST: i32 = 100_000;
pub const MAX_CONCURRENCY: i32 = 10_000;

impl RegistryLimits {
    /// Checks the ranges; the message names the field.
    pub fn check(&self) -> Result<(), String> {
        let rate = self.rate_limit_per_second;
        if !rate.is_finite() || !(0.0..=MAX_RATE_PER_SECOND).contains(&rate) {
            return Err(format!(
                "rate_limit_per_second must be between 0 (unlimited) and {MAX_RATE_PER_SECOND} (got {rate})"
            ));
        }
        if !(0..=MAX_BURST).contains(&self.rate_limit_burst) {
            return Err(format!(
                "rate_limit_burst must be between 0 (one second's worth) and {MAX_BURST} (got {})",
                self.rate_limit_burst
            ));
        }
        if !(0..=MAX_CONCURRENCY).contains(&self.max_concurrency) {
            return Err(format!(
                "max_concurrency must be between 0 (unlimited) and {MAX_CONCURRENCY} (got {})",
                self.max_concurrency
            ));
        }
        Ok(())
    }

    /// The burst a limiter should allow: as configured, or one second's worth of
    /// requests (at least one) when 0. `None` when the rate is unlimited.
    pub fn effective_burst(&self) -> Option<u32> {
        if self.rate_limit_per_second <= 0.0 {
            return None;
        }
        let burst = if self.rate_limit_burst > 0 {
            self.rate_limit_burst as u32
        } else {
            self.rate_limit_per_second.ceil().max(1.0) as u32
        };
        Some(burst)
    }
}

/// Harbor's URL rule (`NormalizeAndValidateHTTPURL`): trims spaces and trailing slashes,
/// assumes `http://` without a scheme, allows only http and https, lower-cases the host.
/// Berth also refuses credentials in the URL (they would be stored in clear: they belong
/// in the credential), queries and fragments. Returns `scheme://host[:port][/path]`.
pub fn normalize_url(input: &str) -> Result<String, String> {
    let trimmed = input.trim();
    if trimmed.trim_end_matches('/').is_empty() {
        return Err("the registry URL is empty".to_owned());
    }
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    let url = url::Url::parse(&with_scheme).map_err(|e| format!("invalid URL {input:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "invalid HTTP scheme {:?} in URL {input:?}: http or https expected",
            url.scheme()
        ));
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(format!("the URL {input:?} has no host"));
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "the registry URL must not carry a user name or password: give them as the credential"
                .to_owned(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "the registry URL {input:?} must not have a query or fragment"
        ));
    }
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = url.path().trim_end_matches('/');
    Ok(format!(
        "{}://{}{port}{path}",
        url.scheme(),
        host.to_lowercase()
    ))
}

/// Harbor's name rule: 1 to 64 characters.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name cannot be empty".to_owned());
    }
    if name.chars().count() > NAME_MAX_CHARS {
        return Err(format!("the max length of name is {NAME_MAX_CHARS}"));
    }
    if name.chars().any(char::is_control) {
        return Err("the name must not contain control characters".to_owned());
    }
    Ok(())
}

/// A remote registry as the API shows it: never its secret, only whether it has one.
#[derive(Debug, Clone, PartialEq)]
pub struct Registry {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub kind: RegistryType,
    /// Normalised, as stored (Docker Hub: `https://hub.docker.com`).
    pub url: String,
    pub insecure: bool,
    /// Always `basic` today.
    pub credential_type: String,
    /// The user name; empty for anonymous access.
    pub access_key: String,
    /// Whether a secret is stored.
    pub has_secret: bool,
    pub status: RegistryStatus,
    pub limits: RegistryLimits,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Registry {
    /// Where its Distribution API is (see [`RegistryType::api_url`]).
    pub fn api_url(&self) -> String {
        self.kind.api_url(&self.url)
    }

    /// Whether requests go without credentials.
    pub fn is_anonymous(&self) -> bool {
        self.access_key.is_empty() && !self.has_secret
    }
}

/// A registry secret sealed for storage (nonce || ciphertext).
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret(Vec<u8>);

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedSecret({} bytes)", self.0.len())
    }
}

impl SealedSecret {
    /// Seals `secret` with `key` for storage in `registries.access_secret`.
    pub fn seal(key: &SecretKey, secret: &str) -> Result<SealedSecret, SealError> {
        key.seal_str(SECRET_CONTEXT, secret).map(SealedSecret)
    }

    /// The secret in clear.
    pub fn open(&self, key: &SecretKey) -> Result<SecretString, OpenError> {
        key.open_string(SECRET_CONTEXT, &self.0)
    }
}

/// A registry to create; every field has passed the checks.
#[derive(Debug, Clone)]
pub struct NewRegistry {
    pub name: String,
    pub description: String,
    pub kind: RegistryType,
    pub url: String,
    pub insecure: bool,
    pub access_key: String,
    pub access_secret: Option<SealedSecret>,
    pub status: RegistryStatus,
    pub limits: RegistryLimits,
}

/// What an update does to the stored secret.
#[derive(Debug, Clone)]
pub enum SecretChange {
    Keep,
    /// Replace it; `None` removes it.
    Set(Option<SealedSecret>),
}

/// A registry's new state (the handler merges the request into the stored row, as
/// Harbor does); the secret is kept unless changed.
#[derive(Debug, Clone)]
pub struct RegistryUpdate {
    pub name: String,
    pub description: String,
    pub kind: RegistryType,
    pub url: String,
    pub insecure: bool,
    pub access_key: String,
    pub access_secret: SecretChange,
    pub status: RegistryStatus,
    pub limits: RegistryLimits,
}

/// Which registries a listing shows: names and URLs matching (escaped) SQL `LIKE`
/// patterns, types among a list.
#[derive(Debug, Clone, Default)]
pub struct RegistryFilter {
    pub name_like: Option<String>,
    pub url_like: Option<String>,
    pub types: Option<Vec<String>>,
}

/// The keys a registry listing sorts by.
pub const SORT_KEYS: &[&str] = &["id", "name", "type", "url", "creation_time", "update_time"];

/// A row of `registries` without the secret.
struct RegistryRow {
    id: i64,
    name: String,
    description: String,
    kind: String,
    url: String,
    insecure: bool,
    credential_type: String,
    access_key: String,
    has_secret: bool,
    status: String,
    rate_limit_per_second: f64,
    rate_limit_burst: i32,
    max_concurrency: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl RegistryRow {
    fn into_registry(self) -> Registry {
        // Both columns are CHECKed against these very lists.
        let kind = RegistryType::parse(&self.kind).unwrap_or(RegistryType::DockerRegistry);
        let status = RegistryStatus::parse(&self.status).unwrap_or(RegistryStatus::Unknown);
        Registry {
            id: self.id,
            name: self.name,
            description: self.description,
            kind,
            url: self.url,
            insecure: self.insecure,
            credential_type: self.credential_type,
            access_key: self.access_key,
            has_secret: self.has_secret,
            status,
            limits: RegistryLimits {
                rate_limit_per_second: self.rate_limit_per_second,
                rate_limit_burst: self.rate_limit_burst,
                max_concurrency: self.max_concurrency,
            },
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// Creates a registry and records `audit` with it. A taken name violates
/// `registries_name_key`.
pub async fn create(
    conn: &mut PgConnection,
    registry: &NewRegistry,
    audit: &AuditEntry,
) -> Result<Registry, sqlx::Error> {
    let secret = registry.access_secret.as_ref().map(|s| s.0.as_slice());
    let mut tx = conn.begin().await?;
    let row = sqlx::query_as!(
        RegistryRow,
        r#"INSERT INTO registries (name, description, type, url, insecure, access_key,
                                   access_secret, status, rate_limit_per_second,
                                   rate_limit_burst, max_concurrency)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
           RETURNING id, name, description, type AS kind, url, insecure, credential_type,
                     access_key, access_secret IS NOT NULL AS "has_secret!", status,
                     rate_limit_per_second, rate_limit_burst, max_concurrency,
                     created_at, updated_at"#,
        registry.name,
        registry.description,
        registry.kind.as_str(),
        registry.url,
        registry.insecure,
        registry.access_key,
        secret,
        registry.status.as_str(),
        registry.limits.rate_limit_per_second,
        registry.limits.rate_limit_burst,
        registry.limits.max_concurrency
    )
    .fetch_one(&mut *tx)
    .await?;
    audit::record(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(row.into_registry())
}

pub async fn find(conn: &mut PgConnection, id: i64) -> Result<Option<Registry>, sqlx::Error> {
    let row = sqlx::query_as!(
        RegistryRow,
        r#"SELECT id, name, description, type AS kind, url, insecure, credential_type,
                  access_key, access_secret IS NOT NULL AS "has_secret!", status,
                  rate_limit_per_second, rate_limit_burst, max_concurrency,
                  created_at, updated_at
           FROM registries WHERE id = $1"#,
        id
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(RegistryRow::into_registry))
}

/// How many registries `filter` matches.
pub async fn count(conn: &mut PgConnection, filter: &RegistryFilter) -> Result<i64, sqlx::Error> {
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "total!" FROM registries
           WHERE ($1::text IS NULL OR name LIKE $1)
             AND ($2::text IS NULL OR url LIKE $2)
             AND ($3::text[] IS NULL OR type = ANY($3))"#,
        filter.name_like,
        filter.url_like,
        filter.types.as_deref()
    )
    .fetch_one(conn)
    .await?;
    Ok(total)
}

/// One page of the registries `filter` matches, ordered by `sort` (a key of
/// [`SORT_KEYS`]) and then by id.
pub async fn list(
    conn: &mut PgConnection,
    filter: &RegistryFilter,
    sort: Sort<'_>,
    limit: i64,
    offset: i64,
) -> Result<Vec<Registry>, sqlx::Error> {
    // One CASE per key and direction keeps the statement static (and checked).
    let rows = sqlx::query_as!(
        RegistryRow,
        r#"SELECT id, name, description, type AS kind, url, insecure, credential_type,
                  access_key, access_secret IS NOT NULL AS "has_secret!", status,
                  rate_limit_per_second, rate_limit_burst, max_concurrency,
                  created_at, updated_at
           FROM registries
           WHERE ($1::text IS NULL OR name LIKE $1)
             AND ($2::text IS NULL OR url LIKE $2)
             AND ($3::text[] IS NULL OR type = ANY($3))
           ORDER BY
             CASE WHEN $4 = 'name' THEN name END ASC,
             CASE WHEN $4 = '-name' THEN name END DESC,
             CASE WHEN $4 = 'type' THEN type END ASC,
             CASE WHEN $4 = '-type' THEN type END DESC,
             CASE WHEN $4 = 'url' THEN url END ASC,
             CASE WHEN $4 = '-url' THEN url END DESC,
             CASE WHEN $4 = 'creation_time' THEN created_at END ASC,
             CASE WHEN $4 = '-creation_time' THEN created_at END DESC,
             CASE WHEN $4 = 'update_time' THEN updated_at END ASC,
             CASE WHEN $4 = '-update_time' THEN updated_at END DESC,
             CASE WHEN $4 = '-id' THEN id END DESC,
             id ASC
           LIMIT $5 OFFSET $6"#,
        filter.name_like,
        filter.url_like,
        filter.types.as_deref(),
        sort.signed_key(),
        limit,
        offset
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(RegistryRow::into_registry).collect())
}

/// Writes `change` to registry `id` and records `audit`; `None` when there is no such
/// registry. A taken name violates `registries_name_key`.
pub async fn update(
    conn: &mut PgConnection,
    id: i64,
    change: &RegistryUpdate,
    audit: &AuditEntry,
) -> Result<Option<Registry>, sqlx::Error> {
    let (replace_secret, secret) = match &change.access_secret {
        SecretChange::Keep => (false, None),
        SecretChange::Set(secret) => (true, secret.as_ref().map(|s| s.0.as_slice())),
    };
    let mut tx = conn.begin().await?;
    let row = sqlx::query_as!(
        RegistryRow,
        r#"UPDATE registries SET
               name = $2, description = $3, type = $4, url = $5, insecure = $6,
               access_key = $7,
               access_secret = CASE WHEN $8 THEN $9 ELSE access_secret END,
               status = $10, rate_limit_per_second = $11, rate_limit_burst = $12,
               max_concurrency = $13, updated_at = now()
           WHERE id = $1
           RETURNING id, name, description, type AS kind, url, insecure, credential_type,
                     access_key, access_secret IS NOT NULL AS "has_secret!", status,
                     rate_limit_per_second, rate_limit_burst, max_concurrency,
                     created_at, updated_at"#,
        id,
        change.name,
        change.description,
        change.kind.as_str(),
        change.url,
        change.insecure,
        change.access_key,
        replace_secret,
        secret,
        change.status.as_str(),
        change.limits.rate_limit_per_second,
        change.limits.rate_limit_burst,
        change.limits.max_concurrency
    )
    .fetch_optional(&mut *tx)
    .await?;
    if row.is_some() {
        audit::record(&mut tx, audit).await?;
    }
    tx.commit().await?;
    Ok(row.map(RegistryRow::into_registry))
}

/// Records the outcome of a ping (or of a replication task's contact) without touching
/// `updated_at`: the registry's settings did not change. False when there is no such
/// registry.
pub async fn set_status(
    conn: &mut PgConnection,
    id: i64,
    status: RegistryStatus,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE registries SET status = $2 WHERE id = $1",
        id,
        status.as_str()
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes registry `id` and records `audit`; false when there is no such registry. A
/// registry a replication policy names is kept by that table's foreign key: the error
/// is a foreign-key violation (see [`is_in_use`]).
pub async fn delete(
    conn: &mut PgConnection,
    id: i64,
    audit: &AuditEntry,
) -> Result<bool, sqlx::Error> {
    let change = sqlx::query!("DELETE FROM registries WHERE id = $1", id);
    audit::execute_recorded(conn, change, audit).await
}

/// Whether `error` (from [`delete`]) says a row elsewhere still refers to the registry.
pub fn is_in_use(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation)
}

/// The stored, still sealed secret of registry `id`: `None` when there is no such
/// registry, `Some(None)` when it has no secret.
pub async fn sealed_secret(
    conn: &mut PgConnection,
    id: i64,
) -> Result<Option<Option<SealedSecret>>, sqlx::Error> {
    let row = sqlx::query_scalar!("SELECT access_secret FROM registries WHERE id = $1", id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|secret| secret.map(SealedSecret)))
}

/// Why a registry's credential could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot read the credential of registry {registry}: {source}")]
    Open { registry: String, source: OpenError },
}

/// A registry with its credential in clear, for the code that talks to it.
#[derive(Debug, Clone)]
pub struct RegistryWithCredential {
    pub registry: Registry,
    /// `None`: anonymous access (no user name and no secret).
    pub credential: Option<BasicCredential>,
}

/// HTTP Basic credentials (also what the token flow presents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicCredential {
    pub username: String,
    pub password: SecretString,
}

/// Registry `id` with its credential opened with `key`; `None` when there is no such
/// registry.
pub async fn with_credential(
    conn: &mut PgConnection,
    id: i64,
    key: &SecretKey,
) -> Result<Option<RegistryWithCredential>, CredentialError> {
    let Some(registry) = find(&mut *conn, id).await? else {
        return Ok(None);
    };
    let secret = match sealed_secret(conn, id).await?.flatten() {
        Some(sealed) => Some(sealed.open(key).map_err(|source| CredentialError::Open {
            registry: registry.name.clone(),
            source,
        })?),
        None => None,
    };
    let credential = basic_credential(&registry.access_key, secret);
    Ok(Some(RegistryWithCredential {
        registry,
        credential,
    }))
}

/// The credential of a user name and an optional secret: none when both are empty.
pub fn basic_credential(access_key: &str, secret: Option<SecretString>) -> Option<BasicCredential> {
    if access_key.is_empty() && secret.as_ref().is_none_or(|s| s.expose().is_empty()) {
        return None;
    }
    Some(BasicCredential {
        username: access_key.to_owned(),
        password: secret.unwrap_or_else(|| SecretString::new("")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalised_as_harbor_does() {
        let ok = |input: &str, expected: &str| {
            assert_eq!(normalize_url(input).as_deref(), Ok(expected), "{input}");
        };
        ok(
            "https://Registry.Example.com/",
            "https://registry.example.com",
        );
        ok("  http://127.0.0.1:5000//  ", "http://127.0.0.1:5000");
        ok(
            "registry.example.com:5000",
            "http://registry.example.com:5000",
        );
        ok("https://example.com/mirror/", "https://example.com/mirror");
        ok("http://[::1]:5000", "http://[::1]:5000");
        for bad in [
            "",
            "   ",
            "ftp://example.com",
            "https://",
            "https://user:pw@example.com",
            "https://user@example.com",
            "https://example.com/?a=b",
            "https://example.com/#x",
            "http://exa mple.com",
        ] {
            assert!(normalize_url(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn names_are_one_to_64_characters() {
        assert!(check_name("remote").is_ok());
        assert!(check_name(&"é".repeat(64)).is_ok());
        assert!(check_name("").is_err());
        assert!(check_name(&"a".repeat(65)).is_err());
        assert!(check_name("a\nb").is_err());
    }

    #[test]
    fn types_round_trip_and_docker_hub_has_fixed_endpoints() {
        for kind in RegistryType::ALL {
            assert_eq!(RegistryType::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(RegistryType::parse("gcr"), None);
        assert_eq!(RegistryType::DockerHub.default_url(), Some(DOCKER_HUB_URL));
        assert_eq!(
            RegistryType::DockerHub.api_url(DOCKER_HUB_URL),
            DOCKER_HUB_REGISTRY_URL
        );
        assert_eq!(
            RegistryType::Harbor.api_url("https://h.example"),
            "https://h.example"
        );
    }

    #[test]
    fn limits_are_range_checked() {
        let mut limits = RegistryLimits::default();
        assert!(limits.check().is_ok());
        assert_eq!(limits.effective_burst(), None);
        limits.rate_limit_per_second = 2.5;
        assert_eq!(limits.effective_burst(), Some(3));
        limits.rate_limit_burst = 10;
        assert_eq!(limits.effective_burst(), Some(10));
        limits.rate_limit_per_second = 0.1;
        limits.rate_limit_burst = 0;
        assert_eq!(limits.effective_burst(), Some(1));
        for bad in [-1.0, f64::NAN, f64::INFINITY, MAX_RATE_PER_SECOND + 1.0] {
            let limits = RegistryLimits {
                rate_limit_per_second: bad,
                ..RegistryLimits::default()
            };
            assert!(limits.check().is_err(), "{bad}");
        }
        let negative_burst = RegistryLimits {
            rate_limit_burst: -1,
            ..RegistryLimits::default()
        };
        assert!(negative_burst.check().is_err());
        let too_many = RegistryLimits {
            max_concurrency: MAX_CONCURRENCY + 1,
            ..RegistryLimits::default()
        };
        assert!(too_many.check().unwrap_err().contains("max_concurrency"));
    }

    #[test]
    fn sealed_secrets_open_only_as_registry_secrets() {
        let key = SecretKey::generate();
        let sealed = SealedSecret::seal(&key, "Remote-Passw0rd").unwrap();
        assert_eq!(sealed.open(&key).unwrap().expose(), "Remote-Passw0rd");
        assert!(!format!("{sealed:?}").contains("Remote"));
        // The same bytes sealed for another purpose do not open here.
        let other_purpose = SealedSecret(key.seal_str(b"other", "Remote-Passw0rd").unwrap());
        assert_eq!(other_purpose.open(&key), Err(OpenError::KeyMismatch));
    }

    #[test]
    fn anonymous_means_no_user_and_no_secret() {
        assert_eq!(basic_credential("", None), None);
        assert_eq!(basic_credential("", Some(SecretString::new(""))), None);
        let with_user = basic_credential("bob", None).unwrap();
        assert_eq!(with_user.username, "bob");
        assert_eq!(with_user.password.expose(), "");
        assert!(basic_credential("", Some(SecretString::new("token"))).is_some());
    }
}
