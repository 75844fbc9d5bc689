//! Gateway configuration: defaults, then a TOML file, then `BERTH_…` environment
//! variables (`__` separates nesting: `BERTH_LIMITS__MANIFEST_MAX_BYTES`).
//!
//! Every knob has a default that works on one machine, so `berth-gateway` with only a
//! database URL is a working registry.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use berth_events::config::{ConfigError, Secret};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// PostgreSQL connection URL (`BERTH_DATABASE_URL`).
    pub database_url: Secret,
    /// Upper bound on pooled PostgreSQL connections per gateway process.
    pub database_max_connections: u32,
    /// Root of everything the gateway keeps on local disk.
    pub data_dir: PathBuf,
    pub storage: StorageConfig,
    pub limits: LimitsConfig,
    pub delete: DeleteConfig,
    pub uploads: UploadsConfig,
    pub auth: AuthConfig,
    pub projects: ProjectsConfig,
    pub audit: AuditConfig,
    /// The URL clients reach this registry at (`https://registry.example.com`), used in
    /// token realms and `systeminfo`. Empty: derived from each request's `Host`.
    pub external_url: String,
    /// Seconds in-flight requests get to finish after SIGTERM before the process exits.
    pub shutdown_grace_secs: u64,
    /// NATS (with JetStream) for control messages and queue counts. The gateway starts
    /// and serves without it: job state is in PostgreSQL, events wait in the outbox.
    pub nats_url: String,
    /// The event pipeline's settings (`[pipeline]`), shared with the workers: the jobs
    /// API reads the heartbeat interval to tell live worker processes from dead ones.
    pub pipeline: berth_events::config::PipelineConfig,
    /// The key remote registries' credentials are encrypted with at rest (base64 of 32
    /// bytes), generated on first start (mode 0600); relative paths are under
    /// `data_dir`. Every gateway and worker of an installation must share it: a
    /// credential stored under one key cannot be read with another.
    pub secret_key_file: PathBuf,
    /// The same key given directly (`BERTH_SECRET_KEY`, base64 of 32 bytes); when set,
    /// `secret_key_file` is neither read nor created.
    pub secret_key: Option<Secret>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            database_url: Secret::new("postgres://postgres@127.0.0.1:5432/berth"),
            database_max_connections: 32,
            data_dir: PathBuf::from("./var/data"),
            storage: StorageConfig::default(),
            limits: LimitsConfig::default(),
            delete: DeleteConfig::default(),
            uploads: UploadsConfig::default(),
            auth: AuthConfig::default(),
            projects: ProjectsConfig::default(),
            audit: AuditConfig::default(),
            external_url: String::new(),
            shutdown_grace_secs: 30,
            nats_url: "nats://127.0.0.1:4222".to_owned(),
            pipeline: berth_events::config::PipelineConfig::default(),
            secret_key_file: PathBuf::from("secret.key"),
            secret_key: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Blob directory; relative paths are under `data_dir`.
    pub root: PathBuf,
    /// fsync blobs and their directory before a push is acknowledged. Turning this off
    /// risks losing acknowledged blobs on power loss (not on a process crash).
    pub fsync: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            root: PathBuf::from("storage"),
            fsync: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest manifest accepted on PUT, in bytes.
    pub manifest_max_bytes: usize,
    /// Largest `n` honoured on tag and catalog listings; larger values are clamped.
    pub page_max_entries: i64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            manifest_max_bytes: 4 * 1024 * 1024,
            page_max_entries: 1000,
        }
    }
}

/// Which DELETE operations the registry allows; a disabled one answers `UNSUPPORTED`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeleteConfig {
    pub manifests: bool,
    pub tags: bool,
    pub blobs: bool,
}

impl Default for DeleteConfig {
    fn default() -> Self {
        DeleteConfig {
            manifests: true,
            tags: true,
            blobs: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadsConfig {
    /// An upload untouched for this long is expired and its data removed.
    pub expire_after_secs: u64,
    /// How often the gateway looks for expired uploads.
    pub sweep_interval_secs: u64,
}

impl Default for UploadsConfig {
    fn default() -> Self {
        UploadsConfig {
            expire_after_secs: 24 * 3600,
            sweep_interval_secs: 600,
        }
    }
}

/// How requests are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// HTTP Basic and the Docker token flow, with projects' access rules.
    Token,
    /// No authentication: every request may do everything. Benchmarks and closed test
    /// networks only.
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// The bootstrap administrator, created on first start if no user of this name exists.
    pub admin_username: String,
    /// Its password (`BERTH_AUTH__ADMIN_PASSWORD`). Unset: a random one is generated and
    /// written to `admin_password_file` (mode 0600), never to the log.
    pub admin_password: Option<Secret>,
    /// Where a generated bootstrap password is written; relative paths are under `data_dir`.
    pub admin_password_file: PathBuf,
    /// The ES256 key tokens are signed with, generated on first start; relative paths are
    /// under `data_dir`. Every gateway and worker of an installation must share it.
    pub token_key_file: PathBuf,
    /// `iss` of issued tokens; tokens from any other issuer are refused.
    pub token_issuer: String,
    /// `service` in challenges and `aud` of tokens.
    pub service: String,
    /// Lifetime of issued tokens, in seconds.
    pub token_ttl_secs: u64,
    /// Failed logins allowed in a burst, per username and per client address.
    pub login_failure_burst: u32,
    /// One more failed login is allowed per this many seconds.
    pub login_failure_refill_secs: u64,
    /// Largest `Authorization` header accepted, in bytes.
    pub max_authorization_bytes: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Token,
            admin_username: "admin".to_owned(),
            admin_password: None,
            admin_password_file: PathBuf::from("admin-password"),
            token_key_file: PathBuf::from("auth/token-key.pem"),
            token_issuer: "berth-token-issuer".to_owned(),
            service: "berth-registry".to_owned(),
            token_ttl_secs: 1800,
            login_failure_burst: 10,
            login_failure_refill_secs: 6,
            max_authorization_bytes: 8 * 1024,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProjectsConfig {
    /// Let system administrators create a project by pushing into it (private). Others
    /// always get `NAME_UNKNOWN` for a project that does not exist.
    pub create_on_push: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Records older than this many days are deleted.
    pub retention_days: i64,
    /// How often old records are looked for, in seconds.
    pub purge_interval_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            retention_days: 90,
            purge_interval_secs: 3600,
        }
    }
}

impl Config {
    /// Loads defaults, then `file` if given, then the gateway's own `BERTH_` variables
    /// (the workers read the same environment: `BERTH_DRAIN_SECS` is theirs).
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        berth_events::config::load(Config::default(), file)
    }

    pub fn storage_root(&self) -> PathBuf {
        self.data_dir.join(&self.storage.root)
    }

    pub fn token_key_path(&self) -> PathBuf {
        self.data_dir.join(&self.auth.token_key_file)
    }

    pub fn admin_password_path(&self) -> PathBuf {
        self.data_dir.join(&self.auth.admin_password_file)
    }

    pub fn secret_key_path(&self) -> PathBuf {
        self.data_dir.join(&self.secret_key_file)
    }
}

#[cfg(test)]
// figment's Jail returns its own large error type; that is its API, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_file_and_environment_layer_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "berth.toml",
                r#"
                listen = "127.0.0.1:6000"
                [limits]
                manifest_max_bytes = 1024
                "#,
            )?;
            jail.set_env("BERTH_LIMITS__MANIFEST_MAX_BYTES", "2048");
            jail.set_env("BERTH_DELETE__BLOBS", "false");
            let config = Config::load(Some(Path::new("berth.toml"))).expect("config loads");
            assert_eq!(config.listen.port(), 6000);
            assert_eq!(config.limits.manifest_max_bytes, 2048);
            assert!(!config.delete.blobs);
            assert!(config.delete.tags);
            assert_eq!(config.uploads.expire_after_secs, 86400);
            Ok(())
        });
    }

    #[test]
    fn variables_of_other_components_are_ignored() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("BERTH_DRAIN_SECS", "5");
            jail.set_env("BERTH_LOG_FORMAT", "json");
            jail.set_env("BERTH_CONFIG", "x.toml");
            jail.set_env("BERTH_PIPELINE__RELAY__ENABLED", "false");
            let config = Config::load(None).expect("config loads");
            assert!(!config.pipeline.relay.enabled);
            jail.set_env("BERTH_PIPELINE__RELAY__ENABLD", "false");
            assert!(Config::load(None).is_err());
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("berth.toml", "lisen = \"127.0.0.1:1\"")?;
            assert!(Config::load(Some(Path::new("berth.toml"))).is_err());
            Ok(())
        });
    }

    #[test]
    fn secrets_do_not_print() {
        let config = Config {
            database_url: Secret::new("postgres://u:hunter2@h/db"),
            secret_key: Some(Secret::new("c2VjcmV0LWtleS1ieXRlcw==")),
            ..Config::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"));
        assert!(!shown.contains("c2VjcmV0LWtleS1ieXRlcw"));
    }

    #[test]
    fn the_secret_key_file_is_under_the_data_dir_and_the_key_comes_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("BERTH_DATA_DIR", "/srv/berth");
            let config = Config::load(None).expect("config loads");
            assert_eq!(
                config.secret_key_path(),
                PathBuf::from("/srv/berth/secret.key")
            );
            assert!(config.secret_key.is_none());
            jail.set_env("BERTH_SECRET_KEY_FILE", "/etc/berth/secret.key");
            jail.set_env("BERTH_SECRET_KEY", "AAAA");
            let config = Config::load(None).expect("config loads");
            assert_eq!(
                config.secret_key_path(),
                PathBuf::from("/etc/berth/secret.key")
            );
            assert_eq!(config.secret_key.as_ref().map(Secret::expose), Some("AAAA"));
            Ok(())
        });
    }
}
