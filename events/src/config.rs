//! Pipeline settings shared by the gateway and the workers (the `[pipeline]` section of
//! either's config), and the loading both configurations share: defaults, then a TOML
//! file, then `BERTH_…` environment variables (`__` separates nesting:
//! `BERTH_PIPELINE__RELAY__ENABLED=false`). Every default works on one machine.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    pub streams: StreamsConfig,
    pub relay: RelayConfig,
    /// Consumer settings for worker kinds without their own entry in `consumers`.
    pub consumer: ConsumerConfig,
    /// Per worker kind (`[pipeline.consumers.echo]`): replaces `consumer` entirely.
    pub consumers: BTreeMap<String, ConsumerConfig>,
    /// How often a worker process re-reads paused queues and cancellations from
    /// PostgreSQL, in case it missed a control message (milliseconds).
    pub control_poll_ms: u64,
    /// How often a worker process heartbeats its registration (milliseconds); it
    /// counts as gone after three missed heartbeats.
    pub heartbeat_ms: u64,
    /// How often a worker process looks for due schedules (milliseconds).
    pub schedule_poll_ms: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            streams: StreamsConfig::default(),
            relay: RelayConfig::default(),
            consumer: ConsumerConfig::default(),
            consumers: BTreeMap::new(),
            control_poll_ms: 2_000,
            heartbeat_ms: 2_000,
            schedule_poll_ms: 1_000,
        }
    }
}

impl PipelineConfig {
    /// The consumer settings of worker kind `kind`.
    pub fn consumer(&self, kind: &str) -> ConsumerConfig {
        self.consumers
            .get(kind)
            .cloned()
            .unwrap_or_else(|| self.consumer.clone())
    }

    pub fn control_poll(&self) -> Duration {
        Duration::from_millis(self.control_poll_ms.max(10))
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.max(10))
    }

    pub fn schedule_poll(&self) -> Duration {
        Duration::from_millis(self.schedule_poll_ms.max(10))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StreamsConfig {
    /// How long the events stream keeps domain events (seconds; limits retention).
    pub events_max_age_secs: u64,
    /// How long the dead-letter stream keeps messages (seconds).
    pub dead_letters_max_age_secs: u64,
    /// JetStream de-duplication window (seconds): a relay that dies between publish
    /// and delete republishes within it, and the server drops the copy.
    pub duplicate_window_secs: u64,
    /// Stream replicas (1 on one server, 3 on a cluster).
    pub replicas: usize,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        StreamsConfig {
            events_max_age_secs: 7 * 24 * 3600,
            dead_letters_max_age_secs: 30 * 24 * 3600,
            duplicate_window_secs: 600,
            replicas: 1,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Run the outbox relay in this process (one relay is active at a time, however
    /// many processes enable it).
    pub enabled: bool,
    /// Rows published per round trip.
    pub batch_size: i64,
    /// How often the relay looks for rows without a notification (milliseconds).
    pub poll_interval_ms: u64,
    /// How long a publish waits for JetStream's ack before the batch is retried
    /// (milliseconds).
    pub publish_timeout_ms: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            enabled: true,
            batch_size: 500,
            poll_interval_ms: 1_000,
            publish_timeout_ms: 10_000,
        }
    }
}

impl RelayConfig {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.max(10))
    }

    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms.max(10))
    }
}

/// One worker kind's durable consumer and how its runtime treats failures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerConfig {
    /// Tasks one worker process runs at once.
    pub concurrency: usize,
    /// Seconds without an ack or an in-progress heartbeat before JetStream redelivers
    /// (a crashed worker's task comes back after this).
    pub ack_wait_secs: u64,
    /// Deliveries before a message is given up and dead-lettered.
    pub max_deliver: i64,
    /// Messages delivered and not yet acked, across every process of the kind: the
    /// server enforces it, so it is a global concurrency cap.
    pub max_ack_pending: i64,
    /// Server-side redelivery delays after an ack timeout (seconds, one per delivery;
    /// empty: `ack_wait` each time).
    pub backoff_secs: Vec<u64>,
    /// Delay before the first retry of a transient failure (milliseconds); each
    /// further retry waits `retry_multiplier` times longer, up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    pub retry_multiplier: f64,
    pub retry_max_ms: u64,
    /// Random spread of each retry delay, as a fraction (0.2: ±20 %).
    pub retry_jitter: f64,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            concurrency: 4,
            ack_wait_secs: 30,
            max_deliver: 5,
            max_ack_pending: 256,
            backoff_secs: Vec::new(),
            retry_initial_ms: 1_000,
            retry_multiplier: 2.0,
            retry_max_ms: 60_000,
            retry_jitter: 0.2,
        }
    }
}

impl ConsumerConfig {
    pub fn ack_wait(&self) -> Duration {
        Duration::from_secs(self.ack_wait_secs.max(1))
    }
}

/// A string that never prints: connection URLs carry passwords.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(#[from] Box<figment::Error>);

/// Loads `defaults`, then `file` if given, then the `BERTH_` environment variables
/// whose first key is one of the configuration's own (see [`top_level_keys`]). The
/// configuration's structs refuse unknown keys (`deny_unknown_fields`), so a misspelt
/// knob fails here rather than being ignored.
pub fn load<T: Serialize + DeserializeOwned>(
    defaults: T,
    file: Option<&Path>,
) -> Result<T, ConfigError> {
    let environment = own_environment(&defaults);
    let mut figment = Figment::from(Serialized::defaults(defaults));
    if let Some(file) = file {
        figment = figment.merge(Toml::file_exact(file));
    }
    figment
        .merge(environment)
        .extract()
        .map_err(|e| ConfigError(Box::new(e)))
}

/// The `BERTH_` variables meant for the configuration whose defaults are `defaults`.
/// (`BERTH_CONFIG` and `BERTH_LOG_FORMAT` are read before any configuration, and are
/// no configuration's key.)
fn own_environment<T: Serialize>(defaults: &T) -> Env {
    let keys = top_level_keys(defaults);
    Env::prefixed("BERTH_")
        .filter(move |key| env_key_is_ours(&keys, key.as_str()))
        .split("__")
}

/// The top-level keys of a configuration, from its defaults (`listen`, `pipeline`, …).
///
/// Gateway and workers read the same `BERTH_…` environment (one `.env`, one systemd
/// drop-in, one Helm ConfigMap), but each refuses keys it does not know. Each takes
/// from the environment only the variables whose first key is one of its own, so
/// `BERTH_LISTEN` does not stop a worker; a misspelt nested key still fails at start.
fn top_level_keys<T: Serialize>(defaults: &T) -> Vec<String> {
    match serde_json::to_value(defaults) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Whether environment key `key` (prefix stripped, `__` between levels, any case)
/// starts with one of `keys`.
fn env_key_is_ours(keys: &[String], key: &str) -> bool {
    let first = key.split("__").next().unwrap_or(key);
    keys.iter().any(|k| k.eq_ignore_ascii_case(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_keys_are_matched_on_their_first_level() {
        let keys = top_level_keys(&PipelineConfig::default());
        assert!(keys.contains(&"relay".to_owned()));
        assert!(env_key_is_ours(&keys, "RELAY__ENABLED"));
        assert!(env_key_is_ours(&keys, "relay"));
        assert!(!env_key_is_ours(&keys, "LISTEN"));
        assert!(!env_key_is_ours(&keys, "relayx__enabled"));
    }
}
