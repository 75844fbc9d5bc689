//! Worker configuration: defaults, then a TOML file, then `BERTH_…` environment
//! variables (`__` separates nesting: `BERTH_PIPELINE__RELAY__ENABLED=false`), the same
//! layering as the gateway's. Every knob has a default that works on one machine.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_events::config::PipelineConfig;
pub use berth_events::config::{ConfigError, Secret};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// PostgreSQL connection URL (`BERTH_DATABASE_URL`).
    pub database_url: Secret,
    /// Upper bound on pooled PostgreSQL connections per worker process. The relay's
    /// lease and its LISTEN hold two more connections outside the pool.
    pub database_max_connections: u32,
    /// NATS server URL (`BERTH_NATS_URL`); may carry credentials.
    pub nats_url: Secret,
    /// The event pipeline: streams, relay, consumers, polls (shared with the gateway).
    pub pipeline: PipelineConfig,
    /// Seconds running tasks get to finish after SIGTERM before they are cancelled and
    /// their messages released for another worker.
    pub drain_secs: u64,
    /// The key remote registries' credentials are encrypted with (base64 of 32 bytes):
    /// the gateway's file, which the gateway generates on its first start. Workers never
    /// create it, and a relative path is relative to the working directory. Needed by
    /// the workers that talk to remote registries (`replicate`).
    pub secret_key_file: PathBuf,
    /// The same key given directly (`BERTH_SECRET_KEY`); when set, `secret_key_file` is
    /// not read.
    pub secret_key: Option<Secret>,
    /// The `replicate` kind.
    pub replicate: ReplicateConfig,
}

/// How the `replicate` kind reaches Berth's own registry and its remotes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicateConfig {
    /// Berth's registry as the workers reach it (`BERTH_REPLICATE__REGISTRY_URL`): the
    /// source of push replications and the destination of pull replications. Workers
    /// read and write Berth's content through its `/v2/`, so pushes they make are
    /// checked, audited and announced like anyone's, whatever the storage backend.
    pub registry_url: String,
    /// The gateway's token signing key (`auth.token_key_file` under its data dir):
    /// workers sign themselves short-lived tokens for exactly the repositories a task
    /// touches. Never created by a worker.
    pub token_key_file: PathBuf,
    /// Must match the gateway's `auth.token_issuer`.
    pub token_issuer: String,
    /// Lifetime of the tokens workers sign for themselves.
    pub token_ttl_secs: u64,
    /// How often the worker looks for new registry endpoints and changed limits, to
    /// start or reconfigure their consumers.
    pub registry_poll_ms: u64,
    /// Connect timeout, and the longest wait for the next bytes of a response.
    pub request_timeout_secs: u64,
    /// Blob upload chunk size for policies with `copy_by_chunk`.
    pub chunk_size_mib: u64,
}

impl Default for ReplicateConfig {
    fn default() -> Self {
        ReplicateConfig {
            registry_url: "http://127.0.0.1:5000".to_owned(),
            token_key_file: PathBuf::from("./var/data/auth/token-key.pem"),
            token_issuer: "berth-token-issuer".to_owned(),
            token_ttl_secs: 900,
            registry_poll_ms: 5000,
            request_timeout_secs: 30,
            chunk_size_mib: 10,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: Secret::new("postgres://postgres@127.0.0.1:5432/berth"),
            database_max_connections: 16,
            nats_url: Secret::new("nats://127.0.0.1:4222"),
            pipeline: PipelineConfig::default(),
            drain_secs: 30,
            secret_key_file: PathBuf::from("./var/data/secret.key"),
            secret_key: None,
            replicate: ReplicateConfig::default(),
        }
    }
}

impl Config {
    /// Loads defaults, then `file` if given, then the worker's own `BERTH_` variables
    /// (the gateway reads the same environment: `BERTH_LISTEN` is its).
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        berth_events::config::load(Config::default(), file)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_secs)
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
                "workers.toml",
                r#"
                drain_secs = 5
                [pipeline.relay]
                batch_size = 100
                [pipeline.consumers.echo]
                concurrency = 8
                "#,
            )?;
            jail.set_env("BERTH_PIPELINE__RELAY__ENABLED", "false");
            jail.set_env("BERTH_NATS_URL", "nats://nats.example:4222");
            jail.set_env("BERTH_DRAIN_SECS", "7");
            jail.set_env("BERTH_LOG_FORMAT", "json");
            // The gateway's: ignored here.
            jail.set_env("BERTH_LISTEN", "127.0.0.1:1");
            jail.set_env("BERTH_AUTH__MODE", "none");
            let config = Config::load(Some(Path::new("workers.toml"))).expect("config loads");
            assert_eq!(config.drain_secs, 7);
            assert_eq!(config.pipeline.relay.batch_size, 100);
            assert!(!config.pipeline.relay.enabled);
            assert_eq!(config.pipeline.consumer("echo").concurrency, 8);
            assert_eq!(config.pipeline.consumer("scan").concurrency, 4);
            assert_eq!(config.nats_url.expose(), "nats://nats.example:4222");
            assert_eq!(
                config.database_url.expose(),
                "postgres://postgres@127.0.0.1:5432/berth"
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("workers.toml", "drain_sec = 5")?;
            assert!(Config::load(Some(Path::new("workers.toml"))).is_err());
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("BERTH_PIPELINE__RELAY__ENABLD", "false");
            assert!(Config::load(None).is_err());
            Ok(())
        });
    }

    #[test]
    fn secrets_do_not_print() {
        let config = Config {
            database_url: Secret::new("postgres://u:hunter2@h/db"),
            nats_url: Secret::new("nats://u:s3cret@h:4222"),
            secret_key: Some(Secret::new("c2VjcmV0LWtleS1ieXRlcw==")),
            ..Config::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("s3cret"));
        assert!(!shown.contains("c2VjcmV0LWtleS1ieXRlcw"));
    }

    #[test]
    fn the_secret_key_is_shared_with_the_gateway_through_the_environment() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load(None).expect("config loads");
            assert_eq!(
                config.secret_key_file,
                PathBuf::from("./var/data/secret.key")
            );
            jail.set_env("BERTH_SECRET_KEY_FILE", "/etc/berth/secret.key");
            jail.set_env("BERTH_SECRET_KEY", "AAAA");
            let config = Config::load(None).expect("config loads");
            assert_eq!(
                config.secret_key_file,
                PathBuf::from("/etc/berth/secret.key")
            );
            assert_eq!(config.secret_key.as_ref().map(Secret::expose), Some("AAAA"));
            Ok(())
        });
    }
}
