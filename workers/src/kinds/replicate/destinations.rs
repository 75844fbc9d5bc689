//! One consumer per remote endpoint. The endpoint's `max_concurrency` is its consumer's
//! `max_ack_pending`, which JetStream enforces across every worker process: that is the
//! global concurrency cap, with no lease to renew and nothing to clean up when a worker
//! dies (its messages come back after `ack_wait`). Endpoints created later get their
//! consumer at the next poll; a changed cap is applied to the consumer in place.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use berth_events::runtime::{JobHandler, JobsConsumer, Runtime};
use berth_events::streams;
use berth_replication::limits::consumer_settings;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::KIND;

struct Running {
    max_concurrency: i32,
    stop: CancellationToken,
}

/// Runs the endpoints' consumers until `shutdown`, then drains them.
pub async fn run(
    runtime: Runtime,
    db: PgPool,
    handler: Arc<dyn JobHandler>,
    poll: Duration,
    shutdown: CancellationToken,
) {
    let mut running: HashMap<i64, Running> = HashMap::new();
    let mut loops = JoinSet::new();
    loop {
        match endpoints(&db).await {
            Ok(found) => {
                // Endpoints deleted since: their loops stop (nothing can be queued for
                // an endpoint a policy no longer names).
                running.retain(|id, r| {
                    let keep = found.iter().any(|(f, _)| f == id);
                    if !keep {
                        r.stop.cancel();
                    }
                    keep
                });
                for (id, max_concurrency) in found {
                    let consumer = jobs_consumer(&runtime, id, max_concurrency);
                    match running.get_mut(&id) {
                        Some(r) if r.max_concurrency == max_concurrency => {}
                        Some(r) => {
                            // The server updates max_ack_pending of a durable in place.
                            match streams::ensure_consumer(
                                runtime.jetstream(),
                                streams::JOBS_STREAM,
                                &consumer.name,
                                &consumer.filter_subject,
                                &consumer.config,
                            )
                            .await
                            {
                                Ok(_) => {
                                    tracing::info!(
                                        registry_id = id,
                                        max_concurrency,
                                        "endpoint concurrency changed"
                                    );
                                    r.max_concurrency = max_concurrency;
                                }
                                Err(e) => {
                                    tracing::warn!(registry_id = id, error = %e, "cannot update the endpoint's consumer; retrying")
                                }
                            }
                        }
                        None => {
                            let stop = shutdown.child_token();
                            let (runtime, handler, token) =
                                (runtime.clone(), handler.clone(), stop.clone());
                            tracing::info!(registry_id = id, consumer = %consumer.name, max_ack_pending = consumer.config.max_ack_pending, "starting the endpoint's consumer");
                            loops.spawn(async move {
                                runtime.run_jobs_on(consumer, handler, token).await
                            });
                            running.insert(
                                id,
                                Running {
                                    max_concurrency,
                                    stop,
                                },
                            );
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list registry endpoints; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = shutdown.cancelled() => break,
        }
        while loops.try_join_next().is_some() {}
    }
    // Each loop drains on the shutdown token (theirs are its children).
    while loops.join_next().await.is_some() {}
}

/// The jobs consumer of endpoint `id`.
pub fn jobs_consumer(runtime: &Runtime, id: i64, max_concurrency: i32) -> JobsConsumer {
    let mut config = runtime.config().consumer(KIND);
    let settings = consumer_settings(id, max_concurrency, config.max_ack_pending);
    config.max_ack_pending = settings.max_ack_pending;
    JobsConsumer {
        kind: KIND.to_owned(),
        name: settings.name,
        filter_subject: settings.filter_subject,
        config,
    }
}

async fn endpoints(db: &PgPool) -> Result<Vec<(i64, i32)>, sqlx::Error> {
    sqlx::query_as("SELECT id, max_concurrency FROM registries ORDER BY id")
        .fetch_all(db)
        .await
}
