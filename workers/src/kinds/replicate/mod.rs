//! The `replicate` kind: Harbor's replication on the shared consumer runtime.
//!
//! | module | what it does |
//! |---|---|
//! | `events` | event-based push policies: a moved tag or a deletion → an execution with one task |
//! | `plan` | manual and scheduled executions: list the source under the filters → copy tasks |
//! | `copy` | one task: the copy (or deletion) at the destination, serialised per destination tag |
//! | `destinations` | one jobs consumer per remote endpoint, its `max_ack_pending` the endpoint's global concurrency cap |
//! | `clients` | registry clients: Berth's own (self-signed tokens), a remote's (stored credential, global rate limit) |
//! | `task` | the task payload the others share |
//!
//! Consumers: `replicate-events` (domain events), `replicate` (planning tasks, published
//! to destination `default`), and `replicate-<endpoint id>` (copy tasks).

mod clients;
mod copy;
mod destinations;
mod events;
mod plan;
mod task;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use berth_access::secrets::SecretKey;
use berth_events::config::PipelineConfig;
use berth_events::runtime::{JobsConsumer, Runtime};
use berth_events::{streams, subject};
use berth_replication::copy::BlobLocations;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

pub use task::{Operation, TaskPayload, Way};

/// The worker kind: its tasks, executions and consumers.
pub const KIND: &str = berth_replication::JOB_KIND;
/// Destination of planning tasks (manual and scheduled executions).
pub const PLAN_DESTINATION: &str = "default";
/// The durable consumer of the domain events the kind reacts to.
pub const EVENTS_CONSUMER: &str = "replicate-events";
/// Every domain event: pushes, tag moves and deletions in every project.
pub const EVENTS_FILTER: &str = "berth.events.>";
/// How long a map of where blobs are at an endpoint is trusted before it starts over
/// (a mount of a blob the endpoint lost falls back to an upload, so this bounds memory,
/// not correctness).
const BLOB_LOCATIONS_TTL: Duration = Duration::from_secs(3600);

/// What every handler of the kind shares in one process.
pub struct Shared {
    clients: clients::Clients,
    /// Upload chunk size for policies with `copy_by_chunk`.
    chunk_size: u64,
    /// CloudEvents source of what the kind emits (the tasks it enqueues).
    source: String,
    /// Per endpoint (and direction): where blobs are known to be at the destination,
    /// for cross-repository mounts.
    locations: Mutex<HashMap<(i64, Way), (BlobLocations, Instant)>>,
}

impl Shared {
    fn blob_locations(&self, registry_id: i64, way: Way) -> BlobLocations {
        let Ok(mut map) = self.locations.lock() else {
            return BlobLocations::default();
        };
        let entry = map
            .entry((registry_id, way))
            .or_insert_with(|| (BlobLocations::default(), Instant::now()));
        if entry.1.elapsed() > BLOB_LOCATIONS_TTL {
            *entry = (BlobLocations::default(), Instant::now());
        }
        entry.0.clone()
    }
}

/// `image` for Harbor's IMAGE type, `artifact` otherwise (the task list's words).
fn resource_type(kind: &str) -> &'static str {
    if kind.eq_ignore_ascii_case("image") {
        "image"
    } else {
        "artifact"
    }
}

/// Loads what the kind needs before it takes work: the key credentials are sealed
/// with and the gateway's token signing key. Missing either is a configuration error
/// the process exits with.
pub fn setup(config: &Config, db: PgPool, source: &str) -> anyhow::Result<Arc<Shared>> {
    let secret_key = match &config.secret_key {
        Some(key) => SecretKey::from_base64(key.expose(), "BERTH_SECRET_KEY"),
        None => SecretKey::load(&config.secret_key_file),
    }
    .context("the replicate worker needs the gateway's secret key to open registry credentials")?;
    let clients = clients::Clients::new(db, Arc::new(secret_key), &config.replicate)
        .context("the replicate worker cannot reach Berth's registry")?;
    Ok(Arc::new(Shared {
        clients,
        chunk_size: config.replicate.chunk_size_mib.saturating_mul(1024 * 1024),
        source: source.to_owned(),
        locations: Mutex::new(HashMap::new()),
    }))
}

/// The consumer of planning tasks.
pub fn plan_consumer(pipeline: &PipelineConfig) -> JobsConsumer {
    JobsConsumer {
        kind: KIND.to_owned(),
        name: streams::jobs_consumer_name(KIND),
        filter_subject: subject::for_job(KIND, PLAN_DESTINATION),
        config: pipeline.consumer(KIND),
    }
}

/// Creates the kind's fixed consumers (the endpoints' come with their loops).
pub async fn provision(
    js: &jetstream::Context,
    pipeline: &PipelineConfig,
) -> Result<(), streams::StreamsError> {
    let plan = plan_consumer(pipeline);
    streams::ensure_consumer(
        js,
        streams::JOBS_STREAM,
        &plan.name,
        &plan.filter_subject,
        &plan.config,
    )
    .await?;
    streams::ensure_consumer(
        js,
        streams::EVENTS_STREAM,
        EVENTS_CONSUMER,
        EVENTS_FILTER,
        &pipeline.consumer(KIND),
    )
    .await?;
    Ok(())
}

/// Runs the kind's consumers until `shutdown`, then drains them.
pub async fn run(
    runtime: Runtime,
    shared: Arc<Shared>,
    db: PgPool,
    registry_poll: Duration,
    shutdown: CancellationToken,
) {
    let plan = plan_consumer(runtime.config());
    tokio::join!(
        runtime.run_events(
            EVENTS_CONSUMER,
            EVENTS_FILTER,
            KIND,
            Arc::new(events::ReplicateEvents),
            shutdown.clone(),
        ),
        runtime.run_jobs_on(
            plan,
            Arc::new(plan::PlanJob {
                shared: shared.clone()
            }),
            shutdown.clone(),
        ),
        destinations::run(
            runtime.clone(),
            db,
            Arc::new(copy::CopyJob { shared }),
            registry_poll,
            shutdown.clone(),
        ),
    );
}
