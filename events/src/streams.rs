//! JetStream streams and consumers, provisioned idempotently at start: the events
//! stream (limits retention), the jobs stream (work queue) and the dead letters.
//!
//! Every process provisions at start, so several may race: creating a stream or a
//! consumer that exists is never an error here. A stream that exists with another
//! configuration is updated to this one; a consumer likewise (nats-server accepts a
//! create with the same durable name and changed editable fields as an update).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use crate::config::{ConsumerConfig, StreamsConfig};
use crate::subject;

/// Domain events, `berth.events.>`: limits retention, file storage, max age from config.
pub const EVENTS_STREAM: &str = "BERTH_EVENTS";
/// Tasks, `berth.jobs.>`: work-queue retention (a message is gone once acked).
pub const JOBS_STREAM: &str = "BERTH_JOBS";
/// Messages given up by a consumer, `berth.dead.>`, with the reason in headers.
pub const DEAD_LETTER_STREAM: &str = "BERTH_DEAD_LETTERS";

/// How often a create-then-update round is retried when another process deletes or
/// creates the same stream between our two requests.
const PROVISION_ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    #[error("JetStream: {0}")]
    JetStream(String),
}

/// The three streams' configurations for `config`.
pub fn stream_configs(config: &StreamsConfig) -> [stream::Config; 3] {
    let events_max_age = Duration::from_secs(config.events_max_age_secs);
    let dead_max_age = Duration::from_secs(config.dead_letters_max_age_secs);
    let window = Duration::from_secs(config.duplicate_window_secs);
    [
        stream::Config {
            name: EVENTS_STREAM.to_owned(),
            description: Some("Berth domain events".to_owned()),
            subjects: vec![format!("{}.>", subject::EVENTS_PREFIX)],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: events_max_age,
            duplicate_window: duplicate_window(window, events_max_age),
            num_replicas: config.replicas.max(1),
            ..Default::default()
        },
        stream::Config {
            name: JOBS_STREAM.to_owned(),
            description: Some("Berth tasks, one message per task".to_owned()),
            subjects: vec![format!("{}.>", subject::JOBS_PREFIX)],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: window,
            num_replicas: config.replicas.max(1),
            ..Default::default()
        },
        stream::Config {
            name: DEAD_LETTER_STREAM.to_owned(),
            description: Some("Berth messages given up by a consumer".to_owned()),
            subjects: vec![format!("{}.>", subject::DEAD_PREFIX)],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: dead_max_age,
            // The runtime sets a message id on dead letters, so a message given up
            // twice (its ack lost) is stored once.
            duplicate_window: duplicate_window(window, dead_max_age),
            num_replicas: config.replicas.max(1),
            ..Default::default()
        },
    ]
}

/// The server refuses a de-duplication window longer than the stream's max age.
fn duplicate_window(window: Duration, max_age: Duration) -> Duration {
    if max_age.is_zero() {
        window
    } else {
        window.min(max_age)
    }
}

/// Creates the three streams, or updates them to `config` if they exist.
pub async fn provision(
    js: &jetstream::Context,
    config: &StreamsConfig,
) -> Result<(), StreamsError> {
    for stream in stream_configs(config) {
        provision_stream(js, stream).await?;
    }
    Ok(())
}

/// Creates `config`'s stream or updates it in place. Safe to race with other
/// processes doing the same: an identical create succeeds, and a create that finds the
/// name taken turns into an update.
pub async fn provision_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<(), StreamsError> {
    let name = config.name.clone();
    let mut last_error = String::new();
    for _ in 0..PROVISION_ATTEMPTS {
        match js.create_stream(config.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if is_code(e.kind(), jetstream::ErrorCode::STREAM_NAME_EXIST) => {}
            Err(e) => {
                return Err(StreamsError::JetStream(format!(
                    "creating stream {name}: {e}"
                )))
            }
        }
        match js.update_stream(&config).await {
            Ok(_) => {
                tracing::info!(stream = %name, "stream updated to the configured settings");
                return Ok(());
            }
            // Deleted between our create and our update: create again.
            Err(e) if e.kind() == jetstream::context::CreateStreamErrorKind::NotFound => {
                last_error = format!("updating stream {name}: {e}");
            }
            Err(e) => {
                return Err(StreamsError::JetStream(format!(
                    "updating stream {name}: {e}"
                )))
            }
        }
    }
    Err(StreamsError::JetStream(last_error))
}

fn is_code(kind: jetstream::context::CreateStreamErrorKind, code: jetstream::ErrorCode) -> bool {
    matches!(kind, jetstream::context::CreateStreamErrorKind::JetStream(e) if e.error_code() == code)
}

/// The durable name of worker kind `kind`'s consumer on the jobs stream. A kind may
/// also have consumers of its own named `<kind>-<part>` (one per replication endpoint).
pub fn jobs_consumer_name(kind: &str) -> String {
    kind.to_owned()
}

/// The worker kind a consumer on the jobs stream belongs to: `replicate` for both
/// `replicate` and `replicate-7`. Kind names have no `-`.
pub fn kind_of_jobs_consumer(durable: &str) -> &str {
    durable.split('-').next().unwrap_or(durable)
}

/// The server-side consumer configuration for `config`.
pub fn consumer_config(
    durable: &str,
    filter_subject: &str,
    config: &ConsumerConfig,
) -> consumer::pull::Config {
    let backoff: Vec<Duration> = config
        .backoff_secs
        .iter()
        .map(|s| Duration::from_secs(*s))
        .collect();
    // The runtime gives a message up itself at `max_deliver` (so it can copy it to the
    // dead letters and fail its task); the server's limit, one higher, is a backstop
    // for a worker that dies on the last delivery. nats-server also requires
    // max_deliver > len(backoff).
    let runtime_limit = config.max_deliver.max(1);
    let max_deliver = runtime_limit.saturating_add(1).max(
        i64::try_from(backoff.len())
            .unwrap_or(i64::MAX)
            .saturating_add(1),
    );
    consumer::pull::Config {
        durable_name: Some(durable.to_owned()),
        name: Some(durable.to_owned()),
        deliver_policy: consumer::DeliverPolicy::All,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: config.ack_wait(),
        max_deliver,
        filter_subject: filter_subject.to_owned(),
        max_ack_pending: config.max_ack_pending.max(1),
        backoff,
        ..Default::default()
    }
}

/// Creates (or updates to `config`) the durable pull consumer `durable` on `stream`
/// with one filter subject.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    stream: &str,
    durable: &str,
    filter_subject: &str,
    config: &ConsumerConfig,
) -> Result<jetstream::consumer::PullConsumer, StreamsError> {
    let wanted = consumer_config(durable, filter_subject, config);
    // With the durable name and filter in the subject, nats-server treats a create of
    // an existing consumer as an update of its editable fields (ack_wait, max_deliver,
    // max_ack_pending, backoff) and refuses changes it cannot apply.
    js.create_consumer_on_stream(wanted, stream)
        .await
        .map_err(|e| StreamsError::JetStream(format!("consumer {durable} on {stream}: {e}")))
}

/// A consumer's counts as JetStream reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerCounts {
    /// Messages not yet delivered.
    pub pending: u64,
    /// Delivered, not yet acked (running now).
    pub ack_pending: u64,
    /// Delivered more than once and not yet acked.
    pub redelivered: u64,
    /// Deliveries so far (consumer sequence).
    pub delivered: u64,
}

/// The counts of consumer `durable` on `stream`; `None` if it does not exist (no
/// worker of that kind ever started).
pub async fn consumer_counts(
    js: &jetstream::Context,
    stream: &str,
    durable: &str,
) -> Result<Option<ConsumerCounts>, StreamsError> {
    let handle = js
        .get_stream_no_info(stream)
        .await
        .map_err(|e| StreamsError::JetStream(format!("stream {stream}: {e}")))?;
    match handle.consumer_info(durable).await {
        Ok(info) => Ok(Some(ConsumerCounts {
            pending: info.num_pending,
            ack_pending: u64::try_from(info.num_ack_pending).unwrap_or(u64::MAX),
            redelivered: u64::try_from(info.num_redelivered).unwrap_or(u64::MAX),
            delivered: info.delivered.consumer_sequence,
        })),
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::ConsumerInfoErrorKind::NotFound
                    | jetstream::context::ConsumerInfoErrorKind::StreamNotFound
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(StreamsError::JetStream(format!(
            "consumer {durable} on {stream}: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumers_belong_to_the_kind_before_the_dash() {
        assert_eq!(kind_of_jobs_consumer(&jobs_consumer_name("echo")), "echo");
        assert_eq!(kind_of_jobs_consumer("replicate-42"), "replicate");
    }

    #[test]
    fn consumer_max_deliver_leaves_the_runtime_its_last_delivery() {
        let config = ConsumerConfig {
            max_deliver: 5,
            backoff_secs: vec![1, 2],
            ..ConsumerConfig::default()
        };
        let c = consumer_config("echo", "berth.jobs.echo.>", &config);
        assert_eq!(c.max_deliver, 6);
        assert_eq!(
            c.backoff,
            vec![Duration::from_secs(1), Duration::from_secs(2)]
        );
        assert_eq!(c.ack_policy, consumer::AckPolicy::Explicit);
        // A backoff list longer than max_deliver would be refused by the server.
        let config = ConsumerConfig {
            max_deliver: 2,
            backoff_secs: vec![1, 1, 1, 1],
            ..ConsumerConfig::default()
        };
        assert_eq!(consumer_config("echo", "x", &config).max_deliver, 5);
        let config = ConsumerConfig {
            backoff_secs: Vec::new(),
            ..ConsumerConfig::default()
        };
        assert!(consumer_config("echo", "x", &config).backoff.is_empty());
    }

    #[test]
    fn duplicate_window_never_exceeds_max_age() {
        let configs = stream_configs(&StreamsConfig {
            events_max_age_secs: 60,
            dead_letters_max_age_secs: 0,
            duplicate_window_secs: 600,
            replicas: 1,
        });
        assert_eq!(configs[0].duplicate_window, Duration::from_secs(60));
        assert_eq!(configs[1].duplicate_window, Duration::from_secs(600));
        assert_eq!(configs[2].duplicate_window, Duration::from_secs(600));
        assert_eq!(configs[1].retention, stream::RetentionPolicy::WorkQueue);
    }
}
