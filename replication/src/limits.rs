//! Per-destination limits the replicate worker keeps GLOBAL, across every worker
//! process: a registry's `rate_limit_per_second` / `rate_limit_burst` and its
//! `max_concurrency` (see `access::registries::RegistryLimits`) bound what the remote
//! registry sees from the whole installation, not from each process.
//!
//! ## Rate: a GCRA whose state is one PostgreSQL row per registry
//!
//! The generic cell rate algorithm keeps one number per registry, the theoretical
//! arrival time (TAT): when the bucket would be empty again. With emission interval
//! `T = 1 / rate` and a burst of `b` requests, a request claims the next slot,
//! `tat ← max(tat, now) + T`, and may go at `tat − b·T` (now, if that is past). This is
//! the "reserve and wait" form: no request is refused, each caller learns how long to
//! sleep. Over any window of length `D` at most `b + rate·D` requests go.
//!
//! The claim is one statement (`INSERT … ON CONFLICT DO UPDATE … RETURNING`) on table
//! `registry_rate` (migration 0009): the row lock serialises claimers from every
//! process, and PostgreSQL's clock is the one clock they all share. Why PostgreSQL:
//! - every worker already holds a pool on it: no new service, no new failure mode;
//! - one round trip (well under a millisecond here) per request is negligible at the
//!   rates registry APIs allow (tens to hundreds per second), and a request to a remote
//!   registry costs far more;
//! - it is exact across processes: the row lock makes claims atomic, where NATS KV
//!   would need compare-and-swap retries on a revision (contention grows with the number
//!   of processes) and bucket timestamps from each process's own clock;
//! - dividing the rate by the number of processes needs that number (it changes as
//!   workers start, stop and scale) and wastes the share of idle processes;
//! - it survives restarts: a restarted worker cannot burst again over a bucket already
//!   spent.
//!
//! A caller dropped while it sleeps has claimed a slot it does not use: the limiter
//! errs on the slow side, never the fast one.
//!
//! ## Concurrency: JetStream's max_ack_pending, and one request at a time per task
//!
//! A counting semaphore in PostgreSQL would cost a write to take and one to release per
//! request, and leak permits when a process dies mid-request. Instead:
//! - each destination registry gets its own JetStream consumer ([`consumer_settings`]:
//!   `replicate-<registry id>`, filter `berth.jobs.replicate.<registry id>`) with
//!   `max_ack_pending = max_concurrency`: the NATS server itself, across all processes,
//!   never lets more than that many of the registry's tasks be in flight;
//! - each task sends its requests to the registry one at a time ([`TaskGate`]: a mutex
//!   per task held for the duration of each request, streamed bodies included).
//!
//! So the requests in flight to a registry are at most `max_concurrency`. A permit is
//! held until the request is done — for `get_blob` until its body stream is dropped —
//! so a task must drop a blob stream before its next request to the same registry, or
//! it waits on itself.

use std::sync::Arc;
use std::time::Duration;

use berth_registry_client::{ClientError, GatePermit, RequestGate, RequestInfo};
use sqlx::PgPool;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::policy::JOB_KIND;

/// Why a limiter could not give its answer.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// The claim on the registry's row failed (database down, or the registry was
    /// deleted: its row goes with it).
    #[error("rate limiter: {0}")]
    Database(#[from] sqlx::Error),
}

/// The emission interval of `rate_per_second`, in seconds (`rate_per_second > 0`).
fn emission_interval(rate_per_second: f64) -> f64 {
    1.0 / rate_per_second
}

/// GCRA: the new theoretical arrival time after claiming one slot at `now` (seconds on
/// any clock), given the previous one (`None` for a registry never used). The SQL in
/// [`GlobalRateLimiter::claim`] computes exactly this; this copy is for the unit tests.
#[cfg(test)]
fn next_tat(previous: Option<f64>, now: f64, interval: f64) -> f64 {
    match previous {
        Some(tat) if tat > now => tat + interval,
        _ => now + interval,
    }
}

/// GCRA: how long to wait before sending, given how far the claimed TAT is ahead of
/// now: the request goes at `tat − burst × interval`.
fn wait_for(tat_ahead_seconds: f64, burst: u32, interval: f64) -> Duration {
    let wait = tat_ahead_seconds - f64::from(burst) * interval;
    if wait.is_finite() && wait > 0.0 {
        Duration::from_secs_f64(wait)
    } else {
        Duration::ZERO
    }
}

/// A rate limit on requests to one registry, shared by every process using the same
/// database. Cheap to clone per task: it holds a pool handle and three numbers.
#[derive(Debug, Clone)]
pub struct GlobalRateLimiter {
    db: PgPool,
    registry_id: i64,
    /// Requests per second; 0 (or less) is unlimited and never touches the database.
    rate_per_second: f64,
    /// Requests that may go at once (at least 1).
    burst: u32,
}

impl GlobalRateLimiter {
    /// `burst` as `RegistryLimits::effective_burst` gives it; 0 is taken as 1.
    /// `rate_per_second` of 0 lets every request through at once.
    pub fn new(db: PgPool, registry_id: i64, rate_per_second: f64, burst: u32) -> Self {
        GlobalRateLimiter {
            db,
            registry_id,
            rate_per_second,
            burst: burst.max(1),
        }
    }

    /// Whether this limiter delays anything.
    pub fn is_unlimited(&self) -> bool {
        !(self.rate_per_second.is_finite() && self.rate_per_second > 0.0)
    }

    /// Waits until one more request to the registry keeps every process together within
    /// the rate and burst. Cancellable by dropping (the slot claimed stays used).
    pub async fn acquire(&self) -> Result<(), LimitError> {
        let wait = self.claim().await?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// Claims the next slot; returns how long to wait before it.
    pub async fn claim(&self) -> Result<Duration, LimitError> {
        if self.is_unlimited() {
            return Ok(Duration::ZERO);
        }
        let interval = emission_interval(self.rate_per_second);
        // clock_timestamp(), not now(): now() is the transaction's start, before any
        // wait for the row lock, and would let a claim land in the past.
        let ahead = sqlx::query_scalar!(
            r#"INSERT INTO registry_rate (registry_id, tat)
               VALUES ($1, clock_timestamp() + make_interval(secs => $2))
               ON CONFLICT (registry_id) DO UPDATE
                   SET tat = GREATEST(registry_rate.tat, clock_timestamp())
                             + make_interval(secs => $2)
               RETURNING EXTRACT(EPOCH FROM (tat - clock_timestamp()))::float8 AS "ahead!""#,
            self.registry_id,
            interval,
        )
        .fetch_one(&self.db)
        .await?;
        Ok(wait_for(ahead, self.burst, interval))
    }
}

/// What the worker needs to create the JetStream consumer of one destination registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSettings {
    /// Durable consumer name: `replicate-<registry id>`.
    pub name: String,
    /// Its filter subject: `berth.jobs.replicate.<registry id>` (`subject::for_job`).
    pub filter_subject: String,
    /// Tasks of this registry in flight across all processes.
    pub max_ack_pending: i64,
}

/// The consumer of registry `registry_id`'s replication tasks. `max_concurrency` is the
/// registry's (0: unlimited, then `default_max_ack_pending`, the kind's configured
/// value, applies). Tasks must be published with destination `registry_id.to_string()`.
pub fn consumer_settings(
    registry_id: i64,
    max_concurrency: i32,
    default_max_ack_pending: i64,
) -> ConsumerSettings {
    let max_ack_pending = if max_concurrency > 0 {
        i64::from(max_concurrency)
    } else {
        default_max_ack_pending.max(1)
    };
    ConsumerSettings {
        name: format!("{JOB_KIND}-{registry_id}"),
        filter_subject: berth_events::subject::for_job(JOB_KIND, &registry_id.to_string()),
        max_ack_pending,
    }
}

/// The registry client's gate for one task talking to one registry: one request at a
/// time for the task, each after the global rate limiter let it go. Once the task is
/// cancelled, requests are refused — except clean-up (`RequestInfo::cleanup`: the
/// `DELETE` of an abandoned upload), which waits its turn and goes.
pub struct TaskGate {
    limiter: GlobalRateLimiter,
    one_at_a_time: Arc<Mutex<()>>,
    cancel: CancellationToken,
}

impl TaskGate {
    pub fn new(limiter: GlobalRateLimiter, cancel: CancellationToken) -> Self {
        TaskGate {
            limiter,
            one_at_a_time: Arc::new(Mutex::new(())),
            cancel,
        }
    }
}

fn cancelled() -> ClientError {
    // Not retryable: the task is going away.
    ClientError::Cancelled("the task was cancelled".to_owned())
}

fn limiter_failed(e: LimitError) -> ClientError {
    // Retryable: the database is usually back soon.
    ClientError::Connection(e.to_string())
}

#[async_trait::async_trait]
impl RequestGate for TaskGate {
    async fn before_request(&self, request: RequestInfo<'_>) -> Result<GatePermit, ClientError> {
        if request.cleanup {
            let turn = self.one_at_a_time.clone().lock_owned().await;
            self.limiter.acquire().await.map_err(limiter_failed)?;
            return Ok(GatePermit::new(turn));
        }
        if self.cancel.is_cancelled() {
            return Err(cancelled());
        }
        // The turn first, then the rate slot: a slot claimed while waiting on the task's
        // own previous request would be wasted. `biased`: cancellation wins a tie.
        let turn = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return Err(cancelled()),
            turn = self.one_at_a_time.clone().lock_owned() => turn,
        };
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return Err(cancelled()),
            acquired = self.limiter.acquire() => acquired.map_err(limiter_failed)?,
        }
        Ok(GatePermit::new(turn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays the GCRA for requests arriving at `arrivals` (seconds): when each goes.
    fn schedule(arrivals: &[f64], rate: f64, burst: u32) -> Vec<f64> {
        let interval = emission_interval(rate);
        let mut tat = None;
        arrivals
            .iter()
            .map(|&now| {
                let claimed = next_tat(tat, now, interval);
                tat = Some(claimed);
                now + wait_for(claimed - now, burst, interval).as_secs_f64()
            })
            .collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn burst_goes_at_once_then_the_rate() {
        let sends = schedule(&[0.0; 6], 10.0, 3);
        let expected = [0.0, 0.0, 0.0, 0.1, 0.2, 0.3];
        for (got, want) in sends.iter().zip(expected) {
            assert!(close(*got, want), "{sends:?}");
        }
    }

    #[test]
    fn burst_of_one_spaces_every_request() {
        let sends = schedule(&[0.0; 4], 4.0, 1);
        let expected = [0.0, 0.25, 0.5, 0.75];
        for (got, want) in sends.iter().zip(expected) {
            assert!(close(*got, want), "{sends:?}");
        }
    }

    #[test]
    fn idle_time_refills_the_burst_but_no_more() {
        // Two at once, a long pause, then five at once: the burst (2) again, not more.
        let sends = schedule(&[0.0, 0.0, 10.0, 10.0, 10.0, 10.0, 10.0], 2.0, 2);
        let expected = [0.0, 0.0, 10.0, 10.0, 10.5, 11.0, 11.5];
        for (got, want) in sends.iter().zip(expected) {
            assert!(close(*got, want), "{sends:?}");
        }
    }

    #[test]
    fn no_window_exceeds_rate_times_length_plus_burst() {
        // Requests every 10 ms for 5 s at 7/s, burst 4.
        let arrivals: Vec<f64> = (0..500).map(|i| f64::from(i) * 0.01).collect();
        let (rate, burst) = (7.0, 4);
        let mut sends = schedule(&arrivals, rate, burst);
        sends.sort_by(f64::total_cmp);
        for (i, start) in sends.iter().enumerate() {
            for length in [0.0, 0.05, 0.5, 1.0, 3.0] {
                let count = sends[i..]
                    .iter()
                    .take_while(|t| **t <= start + length + 1e-9)
                    .count();
                let bound = f64::from(burst) + rate * length;
                assert!(
                    count as f64 <= bound + 1e-9,
                    "{count} in {length} s from {start}"
                );
            }
        }
        // And it is not simply stalling: the last of 500 goes at (500 − 4) / 7 s.
        let last = sends.last().copied().unwrap_or_default();
        assert!(close(last, 496.0 / 7.0), "{last}");
    }

    #[test]
    fn wait_is_never_negative_or_nan() {
        assert_eq!(wait_for(-5.0, 2, 0.1), Duration::ZERO);
        assert_eq!(wait_for(f64::NAN, 2, 0.1), Duration::ZERO);
        assert_eq!(wait_for(0.2, 2, 0.1), Duration::ZERO);
        assert!(wait_for(0.35, 2, 0.1) > Duration::from_millis(149));
    }

    #[test]
    fn consumer_per_registry() {
        let settings = consumer_settings(42, 5, 256);
        assert_eq!(settings.name, "replicate-42");
        assert_eq!(settings.filter_subject, "berth.jobs.replicate.42");
        assert_eq!(settings.max_ack_pending, 5);
        assert_eq!(consumer_settings(7, 0, 256).max_ack_pending, 256);
    }
}
