//! The outbox relay: publishes outbox rows to JetStream, in id order, and deletes each
//! row only after JetStream acknowledged it.
//!
//! One relay is active cluster-wide at a time: the leader holds a PostgreSQL
//! session-level advisory lock on a dedicated connection. If its process dies, the
//! connection closes, PostgreSQL releases the lock, and a standby takes over within its
//! poll interval.
//!
//! Why a lease rather than every relay claiming rows with `FOR UPDATE SKIP LOCKED`:
//! with several relays claiming disjoint batches, two events of one repository can sit
//! in batches of different relays and reach JetStream in either order, so keeping
//! per-repository order would need per-key claiming (one key per relay at a time, and
//! a key's rows locked until their acks arrive), which is intricate and still
//! serialises each repository. With one publisher, the global publish order is the id
//! order, and per-repository order follows trivially. Throughput does not need more
//! than one: a pipelined batch (send every row, then await the acks) costs one
//! JetStream round trip and two PostgreSQL statements, so one relay reaches thousands
//! of events per second. The standbys exist for availability, not speed.
//!
//! Delivery: a row is published, possibly more than once (the relay died between the
//! ack and the delete, or a later ack of the batch failed), and JetStream drops the
//! copies: each message carries the event id as `Nats-Msg-Id` and the streams keep a
//! de-duplication window.
//!
//! Even two relays at once (a leader whose lease connection died and who has not
//! noticed yet, beside its successor) keep the order: both publish the same rows in id
//! order, and de-duplication keeps each row's first arrival, so the stored order is
//! still the id order. The leader notices at its next query, which runs on the lease
//! connection.

use std::time::Duration;

use async_nats::header::{HeaderMap, NATS_MESSAGE_ID};
use async_nats::jetstream;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection, PgExecutor, PgPool};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::RelayConfig;
use crate::outbox;

/// The advisory lock key of the relay lease (the bytes of `brthrely`). Any constant
/// works as long as nothing else in the database uses it.
pub const LEASE_KEY: i64 = 0x6272_7468_7265_6c79;

/// Delays between retries after a failed publish: short, because NATS usually comes
/// back quickly and events should flow the moment it does, and capped, because a
/// relay that waits long after NATS returns is a backlog nobody asked for.
const RETRY_INITIAL: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// While failures repeat, a warning is logged at most this often (the rest at debug).
const WARN_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox query failed: {0}")]
    Database(#[from] sqlx::Error),
    /// A publish failed; the rows before it were acked and deleted (`published`), the
    /// failed one and those after it stay for the next round.
    #[error("publishing event {event_id} failed after {published} acked in this round: {reason}")]
    Publish {
        event_id: Uuid,
        published: usize,
        reason: String,
    },
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Rows read from the outbox (at most the batch size).
    pub fetched: usize,
    /// Rows acked by JetStream and deleted.
    pub published: usize,
    /// Of those, how many JetStream recognised as already stored (a replay after a
    /// relay died between ack and delete).
    pub duplicates: usize,
}

/// One outbox row as the relay reads it.
struct PendingRow {
    id: i64,
    event_id: Uuid,
    subject: String,
    payload: Vec<u8>,
}

/// Runs the relay until `shutdown`: competes for the lease, and while it holds it,
/// publishes the outbox. Never returns early and never panics on a database or NATS
/// failure: it logs, backs off and tries again.
pub async fn run(
    db: PgPool,
    js: jetstream::Context,
    config: RelayConfig,
    shutdown: CancellationToken,
) {
    let poll = config.poll_interval();
    // The dedicated connection that holds (or tries for) the lease; kept across
    // attempts so a standby does not open a connection every poll.
    let mut lease_conn: Option<PgConnection> = None;
    let mut standby_logged = false;
    while !shutdown.is_cancelled() {
        if lease_conn.is_none() {
            match PgConnection::connect_with(&db.connect_options()).await {
                Ok(conn) => lease_conn = Some(conn),
                Err(e) => {
                    tracing::warn!(error = %e, "relay: cannot connect to PostgreSQL for the lease; retrying")
                }
            }
        }
        if let Some(mut conn) = lease_conn.take() {
            match try_lease(&mut conn).await {
                Ok(true) => {
                    tracing::info!("relay: leading (holds the outbox lease)");
                    standby_logged = false;
                    lead(&mut conn, &db, &js, &config, &shutdown).await;
                    // Closing the session releases the lock whatever state it is in;
                    // the connection may be dead already, which is why leading ended.
                    let _ = conn.close().await;
                    tracing::info!("relay: no longer leading");
                }
                Ok(false) => {
                    if !standby_logged {
                        tracing::info!("relay: standby (another process holds the outbox lease)");
                        standby_logged = true;
                    }
                    lease_conn = Some(conn);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "relay: lease query failed; reconnecting");
                    let _ = conn.close().await;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
    if let Some(conn) = lease_conn {
        let _ = conn.close().await;
    }
}

/// Takes the lease on `conn` if nobody holds it. The lock belongs to the session: it
/// lasts until the connection closes, and no transaction may be open around it.
pub async fn try_lease(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let got = sqlx::query_scalar!(r#"SELECT pg_try_advisory_lock($1) AS "got!""#, LEASE_KEY)
        .fetch_one(&mut *conn)
        .await?;
    Ok(got)
}

/// Publishes while `conn` holds the lease; returns on shutdown or when the lease
/// connection fails (the lease may be lost, so the caller starts over).
async fn lead(
    conn: &mut PgConnection,
    db: &PgPool,
    js: &jetstream::Context,
    config: &RelayConfig,
    shutdown: &CancellationToken,
) {
    let poll = config.poll_interval();
    let mut listener = listen(db).await;
    let mut retry = RETRY_INITIAL;
    let mut failing = FailureLog::default();
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        // The batch queries run on the lease connection itself: a query that succeeds
        // proves the session, and so the lock, is still alive. A round is not
        // interrupted by shutdown; its publishes are bounded by `publish_timeout`.
        //
        // After a failure, rounds publish one row until one is acked: a relay probing
        // an unreachable NATS should not pile whole batches into the client's buffer,
        // to be flushed as duplicates when it reconnects.
        let batch_size = if failing.is_failing() {
            1
        } else {
            config.batch_size
        };
        match relay_once(conn, js, batch_size, config.publish_timeout()).await {
            Ok(round) => {
                let probed = failing.is_failing();
                failing.recovered();
                retry = RETRY_INITIAL;
                if probed {
                    // The probe went through: back to full batches at once.
                    continue;
                }
                if round.duplicates > 0 {
                    tracing::info!(
                        duplicates = round.duplicates,
                        "relay: republished events JetStream already had (dropped by de-duplication)"
                    );
                }
                if round.fetched > 0
                    && i64::try_from(round.fetched).unwrap_or(i64::MAX) >= config.batch_size
                {
                    // A full batch: more rows are likely waiting.
                    continue;
                }
            }
            Err(RelayError::Database(e)) => {
                tracing::warn!(error = %e, "relay: outbox query failed on the lease connection; giving up the lease");
                return;
            }
            Err(e @ RelayError::Publish { .. }) => {
                failing.failed(&e);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
        }
        // Nothing (more) to do: wait for a notification, the poll, or shutdown.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
            lost = notified(&mut listener) => {
                if lost {
                    // The listener's connection failed; polling carries on, and the
                    // next wait tries to listen again.
                    listener = None;
                }
            }
        }
        if listener.is_none() {
            listener = listen(db).await;
        }
    }
}

/// A listener on the outbox channel, or `None` if PostgreSQL refused (the relay then
/// relies on polling until the next attempt).
async fn listen(db: &PgPool) -> Option<PgListener> {
    let mut listener = match PgListener::connect_with(db).await {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "relay: cannot LISTEN; polling only");
            return None;
        }
    };
    if let Err(e) = listener.listen(outbox::NOTIFY_CHANNEL).await {
        tracing::debug!(error = %e, "relay: cannot LISTEN; polling only");
        return None;
    }
    Some(listener)
}

/// Waits for the next notification; returns `true` if the listener failed. Without a
/// listener it never returns (the caller's poll timer wins).
async fn notified(listener: &mut Option<PgListener>) -> bool {
    match listener {
        Some(l) => match l.try_recv().await {
            Ok(Some(_)) => false,
            // `None`: the connection was lost (notifications meanwhile are gone, which
            // the poll covers).
            Ok(None) | Err(_) => true,
        },
        None => std::future::pending().await,
    }
}

/// One round on `conn` (no lease needed: tests and the benchmark call it directly):
/// reads up to `batch_size` rows in id order, publishes them pipelined, and deletes
/// the contiguous prefix JetStream acked.
///
/// Only a prefix is deleted because a failure mid-batch must leave the failed row and
/// every row after it for the next round, which republishes them in id order; rows
/// after the failure that JetStream did store are dropped there as duplicates. (A
/// later row stored before an earlier one that JetStream *refused* would overtake it;
/// JetStream refuses per stream, not per message, so in practice the rows after a
/// refused one are refused too.)
pub async fn relay_once(
    conn: &mut PgConnection,
    js: &jetstream::Context,
    batch_size: i64,
    publish_timeout: Duration,
) -> Result<Round, RelayError> {
    let rows = fetch_batch(&mut *conn, batch_size.max(1)).await?;
    if rows.is_empty() {
        return Ok(Round::default());
    }
    let fetched = rows.len();
    let keys: Vec<(i64, Uuid)> = rows.iter().map(|r| (r.id, r.event_id)).collect();
    let outcome = publish_batch(js, rows, publish_timeout).await;
    if outcome.acked > 0 {
        let ids: Vec<i64> = keys[..outcome.acked].iter().map(|(id, _)| *id).collect();
        delete_rows(&mut *conn, &ids).await?;
    }
    match outcome.failure {
        None => Ok(Round {
            fetched,
            published: outcome.acked,
            duplicates: outcome.duplicates,
        }),
        Some(reason) => Err(RelayError::Publish {
            // `acked` is the index of the first row that did not make it.
            event_id: keys.get(outcome.acked).map(|(_, e)| *e).unwrap_or_default(),
            published: outcome.acked,
            reason,
        }),
    }
}

struct BatchOutcome {
    /// Length of the acked prefix.
    acked: usize,
    duplicates: usize,
    /// Why the row at index `acked` was not acked, if the batch stopped short.
    failure: Option<String>,
}

/// Sends every row, then awaits the acks in order. Messages of one connection reach
/// the server, and the stream, in the order they were sent, so pipelining keeps the
/// id order while paying one round trip per batch instead of one per row.
async fn publish_batch(
    js: &jetstream::Context,
    rows: Vec<PendingRow>,
    publish_timeout: Duration,
) -> BatchOutcome {
    let mut acks = Vec::with_capacity(rows.len());
    let mut failure = None;
    for row in rows {
        let mut headers = HeaderMap::new();
        headers.insert(NATS_MESSAGE_ID, row.event_id.to_string().as_str());
        let send = js.publish_with_headers(row.subject, headers, Bytes::from(row.payload));
        match tokio::time::timeout(publish_timeout, send).await {
            Ok(Ok(ack)) => acks.push(ack),
            Ok(Err(e)) => {
                failure = Some(e.to_string());
                break;
            }
            Err(_) => {
                failure = Some("timed out sending the message to NATS".to_owned());
                break;
            }
        }
    }
    let mut outcome = BatchOutcome {
        acked: 0,
        duplicates: 0,
        failure: None,
    };
    for ack in acks {
        match tokio::time::timeout(publish_timeout, ack).await {
            Ok(Ok(ack)) => {
                outcome.acked += 1;
                if ack.duplicate {
                    outcome.duplicates += 1;
                }
            }
            Ok(Err(e)) => {
                // An earlier row than a failed send: this is the first failure.
                outcome.failure = Some(e.to_string());
                return outcome;
            }
            Err(_) => {
                outcome.failure = Some("timed out waiting for JetStream's ack".to_owned());
                return outcome;
            }
        }
    }
    outcome.failure = failure;
    outcome
}

async fn fetch_batch(conn: &mut PgConnection, limit: i64) -> Result<Vec<PendingRow>, sqlx::Error> {
    sqlx::query_as!(
        PendingRow,
        r#"SELECT id, event_id, subject, payload FROM outbox ORDER BY id LIMIT $1"#,
        limit
    )
    .fetch_all(conn)
    .await
}

/// Deletes exactly the published rows. Not an id range: a transaction that took a
/// lower id may commit after the batch was read, and its row, inside the range, has
/// not been published yet.
async fn delete_rows(conn: &mut PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM outbox WHERE id = ANY($1)", ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// The outbox backlog: how many rows wait, and when the oldest was written (`None`
/// when empty). Its age is the pipeline's main health signal.
pub async fn backlog(db: impl PgExecutor<'_>) -> Result<(i64, Option<DateTime<Utc>>), sqlx::Error> {
    let row = sqlx::query!(r#"SELECT count(*) AS "rows!", min(created_at) AS oldest FROM outbox"#)
        .fetch_one(db)
        .await?;
    Ok((row.rows, row.oldest))
}

/// Logs a run of publish failures without flooding: the first one and then one every
/// `WARN_EVERY` at warn level, and the recovery.
#[derive(Default)]
struct FailureLog {
    since: Option<Instant>,
    last_warn: Option<Instant>,
    count: u64,
}

impl FailureLog {
    fn failed(&mut self, error: &RelayError) {
        let now = Instant::now();
        self.count += 1;
        self.since.get_or_insert(now);
        let due = self
            .last_warn
            .is_none_or(|t| now.duration_since(t) >= WARN_EVERY);
        if due {
            self.last_warn = Some(now);
            tracing::warn!(error = %error, failures = self.count, "relay: publish failed; events wait in the outbox and are retried");
        } else {
            tracing::debug!(error = %error, failures = self.count, "relay: publish failed again");
        }
    }

    fn is_failing(&self) -> bool {
        self.since.is_some()
    }

    fn recovered(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                failures = self.count,
                after_secs = since.elapsed().as_secs_f64(),
                "relay: publishing again"
            );
        }
        self.last_warn = None;
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use async_nats::jetstream;
    use sqlx::{Acquire, PgPool};
    use tokio::time::Instant;

    use super::*;
    use crate::outbox::{self, OutboxRow};
    use crate::testing::{NatsServer, TestDatabase};

    /// A JetStream context and the test stream (created, or found again after a
    /// restart).
    async fn ready(nats: &NatsServer) -> (jetstream::Context, jetstream::stream::Stream) {
        let js = nats.jetstream().await;
        let stream = js
            .get_or_create_stream(stream_config())
            .await
            .expect("the test stream");
        (js, stream)
    }

    /// A JetStream context on a client that reconnects as the relay's does, so it
    /// outlives an outage; the test stream exists before the outage.
    async fn reconnecting_jetstream(nats: &NatsServer) -> jetstream::Context {
        ready(nats).await;
        let client = crate::nats::connect(&nats.url(), "relay-test")
            .await
            .unwrap();
        jetstream::new(client)
    }

    fn stream_config() -> jetstream::stream::Config {
        jetstream::stream::Config {
            name: "RELAY_TEST".into(),
            subjects: vec!["berth.>".into()],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        }
    }

    /// Writes `n` rows over three repositories (ids interleave them) and returns their
    /// event ids in write order.
    async fn write_rows(db: &PgPool, n: usize) -> Vec<Uuid> {
        let mut conn = db.acquire().await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        let mut ids = Vec::new();
        for i in 0..n {
            let event_id = Uuid::new_v4();
            let repository = format!("team.r{}", i % 3);
            let payload = format!("{{\"n\":{i}}}");
            outbox::insert(
                &mut tx,
                &OutboxRow {
                    event_id,
                    subject: &format!("berth.events.test.{repository}"),
                    ordering_key: &repository,
                    payload: payload.as_bytes(),
                },
            )
            .await
            .unwrap();
            ids.push(event_id);
        }
        tx.commit().await.unwrap();
        ids
    }

    /// The `Nats-Msg-Id`s in the stream, in stream order.
    async fn published(stream: &jetstream::stream::Stream) -> Vec<Uuid> {
        let mut info = stream.clone();
        let state = info.info().await.unwrap().state.clone();
        let mut out = Vec::new();
        for seq in state.first_sequence..=state.last_sequence {
            if state.messages == 0 {
                break;
            }
            let m = stream.get_raw_message(seq).await.unwrap();
            let id = m.headers.get(NATS_MESSAGE_ID).unwrap().as_str().to_owned();
            out.push(Uuid::parse_str(&id).unwrap());
        }
        out
    }

    async fn outbox_rows(db: &PgPool) -> i64 {
        backlog(db).await.unwrap().0
    }

    #[tokio::test]
    async fn rounds_publish_in_id_order_delete_and_absorb_replays() {
        let t = TestDatabase::create().await;
        let nats = NatsServer::start().await;
        let (js, stream) = ready(&nats).await;
        let written = write_rows(&t.pool, 120).await;
        let (rows, oldest) = backlog(&t.pool).await.unwrap();
        assert_eq!((rows, oldest.is_some()), (120, true));

        let mut conn = t.pool.acquire().await.unwrap();
        let timeout = Duration::from_secs(10);
        let mut rounds = Vec::new();
        loop {
            let round = relay_once(&mut conn, &js, 50, timeout).await.unwrap();
            if round.fetched == 0 {
                break;
            }
            rounds.push((round.fetched, round.published, round.duplicates));
        }
        assert_eq!(rounds, vec![(50, 50, 0), (50, 50, 0), (20, 20, 0)]);
        assert_eq!(backlog(&t.pool).await.unwrap(), (0, None));
        assert_eq!(published(&stream).await, written);

        // A relay that died between the ack and the delete publishes the row again:
        // JetStream reports the copy as a duplicate and stores nothing.
        let replayed = written[7];
        let payload = b"{}";
        outbox::insert(
            &mut conn,
            &OutboxRow {
                event_id: replayed,
                subject: "berth.events.test.team.r1",
                ordering_key: "team.r1",
                payload,
            },
        )
        .await
        .unwrap();
        let round = relay_once(&mut conn, &js, 50, timeout).await.unwrap();
        assert_eq!((round.published, round.duplicates), (1, 1));
        assert_eq!(published(&stream).await.len(), 120);
        assert_eq!(outbox_rows(&t.pool).await, 0);
    }

    #[tokio::test]
    async fn with_nats_down_rows_wait_and_flow_when_it_returns() {
        let t = TestDatabase::create().await;
        let mut nats = NatsServer::start().await;
        let relay_js = reconnecting_jetstream(&nats).await;
        let mut conn = t.pool.acquire().await.unwrap();
        // Connected and working first.
        let first = write_rows(&t.pool, 3).await;
        relay_once(&mut conn, &relay_js, 100, Duration::from_secs(10))
            .await
            .unwrap();

        nats.stop().await;
        let waiting = write_rows(&t.pool, 30).await;
        let err = relay_once(&mut conn, &relay_js, 100, Duration::from_millis(300)).await;
        assert!(
            matches!(err, Err(RelayError::Publish { published: 0, .. })),
            "{err:?}"
        );
        assert_eq!(
            outbox_rows(&t.pool).await,
            30,
            "nothing unacked may be deleted"
        );

        nats.restart().await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while outbox_rows(&t.pool).await > 0 {
            assert!(
                Instant::now() < deadline,
                "the outbox did not drain after NATS returned"
            );
            let _ = relay_once(&mut conn, &relay_js, 100, Duration::from_secs(2)).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Every event once, in write order (reconnecting resends buffered messages;
        // de-duplication drops the copies).
        let (_, stream) = ready(&nats).await;
        assert_eq!(published(&stream).await, [first, waiting].concat());
    }

    #[tokio::test]
    async fn the_relay_rides_out_a_nats_outage() {
        let t = TestDatabase::create().await;
        let mut nats = NatsServer::start().await;
        let relay_js = reconnecting_jetstream(&nats).await;
        let config = RelayConfig {
            enabled: true,
            batch_size: 25,
            poll_interval_ms: 100,
            publish_timeout_ms: 500,
        };
        let stop = CancellationToken::new();
        let relay = tokio::spawn(run(t.pool.clone(), relay_js, config, stop.clone()));
        let mut written = write_rows(&t.pool, 10).await;
        eventually("the first rows flow", async || {
            outbox_rows(&t.pool).await == 0
        })
        .await;

        nats.stop().await;
        written.extend(write_rows(&t.pool, 100).await);
        // Long enough for several failed rounds and backoffs.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            outbox_rows(&t.pool).await,
            100,
            "nothing unacked may be deleted"
        );

        nats.restart().await;
        eventually("the backlog drains after NATS returns", async || {
            outbox_rows(&t.pool).await == 0
        })
        .await;
        let (_, stream) = ready(&nats).await;
        assert_eq!(published(&stream).await, written);
        stop.cancel();
        relay.await.unwrap();
    }

    async fn lease_holders(db: &PgPool) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(db)
        .await
        .unwrap()
    }

    async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !check().await {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn one_relay_leads_and_a_standby_takes_over() {
        let t = TestDatabase::create().await;
        let nats = NatsServer::start().await;
        let (js, stream) = ready(&nats).await;
        let config = RelayConfig {
            enabled: true,
            batch_size: 40,
            poll_interval_ms: 100,
            publish_timeout_ms: 5_000,
        };
        let stop_a = CancellationToken::new();
        let a = tokio::spawn(run(
            t.pool.clone(),
            js.clone(),
            config.clone(),
            stop_a.clone(),
        ));
        eventually("relay A leads", async || lease_holders(&t.pool).await == 1).await;
        let stop_b = CancellationToken::new();
        let b = tokio::spawn(run(
            t.pool.clone(),
            js.clone(),
            config.clone(),
            stop_b.clone(),
        ));

        let mut written = write_rows(&t.pool, 200).await;
        eventually("the outbox drains", async || {
            outbox_rows(&t.pool).await == 0
        })
        .await;
        assert_eq!(lease_holders(&t.pool).await, 1);

        // The leader stops; the standby takes the lease and publishes what follows.
        stop_a.cancel();
        a.await.unwrap();
        written.extend(write_rows(&t.pool, 100).await);
        eventually("the standby drains the outbox", async || {
            outbox_rows(&t.pool).await == 0
        })
        .await;
        assert_eq!(published(&stream).await, written);

        stop_b.cancel();
        b.await.unwrap();
        eventually("the lease is released", async || {
            lease_holders(&t.pool).await == 0
        })
        .await;
    }
}
