//! The global limits against a real PostgreSQL (a database of the test's own, with all
//! migrations), and the task gate's ordering and cancellation rules.

use std::sync::Arc;
use std::time::Duration;

use berth_events::testing::TestDatabase;
use berth_registry_client::{RequestGate, RequestInfo};
use berth_replication::limits::{GlobalRateLimiter, TaskGate};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

async fn create_registry(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO registries (name, type, url, rate_limit_per_second, rate_limit_burst)
         VALUES ('peer', 'docker-registry', 'http://peer.example', 10, 2)
         RETURNING id",
    )
    .fetch_one(pool)
    .await
    .expect("insert a registry")
}

/// Three limiters, each on a pool of its own (three worker processes), share one
/// registry's 10/s with burst 2: in 2 s at most 10 × 2 + 2 requests go, all of them
/// together.
#[tokio::test]
async fn three_processes_share_one_rate() {
    let database = TestDatabase::create().await;
    let registry_id = create_registry(&database.pool).await;
    let window = Duration::from_secs(2);
    let start = Instant::now();
    let deadline = start + window;
    let mut processes = Vec::new();
    for _ in 0..3 {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&database.url)
            .await
            .expect("connect a process's pool");
        let limiter = GlobalRateLimiter::new(pool, registry_id, 10.0, 2);
        // Four tasks per process, each acquiring as fast as the limiter lets it.
        for _ in 0..4 {
            let limiter = limiter.clone();
            processes.push(tokio::spawn(async move {
                let mut sent = 0u32;
                loop {
                    let acquired = tokio::time::timeout_at(deadline, limiter.acquire()).await;
                    match acquired {
                        Ok(result) => {
                            result.expect("claim a slot");
                            if Instant::now() >= deadline {
                                break;
                            }
                            sent += 1;
                        }
                        Err(_elapsed) => break,
                    }
                }
                sent
            }));
        }
    }
    let mut total = 0;
    for process in processes {
        total += process.await.expect("task finished");
    }
    assert!(
        total <= 10 * 2 + 2,
        "{total} requests went in 2 s at 10/s burst 2"
    );
    // Not stalled: even a slow machine gets a good part of the allowance through.
    assert!(
        total >= 8,
        "only {total} requests went in 2 s at 10/s burst 2"
    );
}

/// The burst goes at once; the next request waits for its slot (about 1 / rate).
#[tokio::test]
async fn burst_then_waits_for_the_rate() {
    let database = TestDatabase::create().await;
    let registry_id = create_registry(&database.pool).await;
    let limiter = GlobalRateLimiter::new(database.pool.clone(), registry_id, 2.0, 3);
    for _ in 0..3 {
        let wait = limiter.claim().await.expect("claim");
        assert!(
            wait < Duration::from_millis(100),
            "within the burst: {wait:?}"
        );
    }
    let wait = limiter.claim().await.expect("claim");
    // 0.5 s after the first slot; allow for the time the claims took.
    assert!(
        wait > Duration::from_millis(100),
        "beyond the burst: {wait:?}"
    );
    assert!(wait <= Duration::from_millis(500), "{wait:?}");
    let wait = limiter.claim().await.expect("claim");
    assert!(wait > Duration::from_millis(600), "the one after: {wait:?}");
}

/// Rate 0 is unlimited and never touches the database (this pool cannot connect).
#[tokio::test]
async fn unlimited_never_waits() {
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(200))
        .connect_lazy("postgres://nobody@127.0.0.1:1/none")
        .expect("lazy pool");
    let limiter = GlobalRateLimiter::new(pool, 1, 0.0, 0);
    assert!(limiter.is_unlimited());
    for _ in 0..1000 {
        limiter.acquire().await.expect("unlimited");
    }
}

fn unlimited_gate(cancel: CancellationToken) -> Arc<TaskGate> {
    let pool = PgPoolOptions::new()
        .connect_lazy("postgres://nobody@127.0.0.1:1/none")
        .expect("lazy pool");
    Arc::new(TaskGate::new(
        GlobalRateLimiter::new(pool, 1, 0.0, 0),
        cancel,
    ))
}

fn request(url: &reqwest::Url, cleanup: bool) -> RequestInfo<'_> {
    RequestInfo {
        method: if cleanup { "DELETE" } else { "GET" },
        url,
        cleanup,
    }
}

/// One request in flight per task: the second waits until the first's permit goes.
#[tokio::test]
async fn one_request_at_a_time_per_task() {
    let url = reqwest::Url::parse("http://peer.example/v2/").expect("url");
    let gate = unlimited_gate(CancellationToken::new());
    let first = gate
        .before_request(request(&url, false))
        .await
        .expect("first");
    let second = {
        let gate = gate.clone();
        let url = url.clone();
        tokio::spawn(async move {
            gate.before_request(request(&url, false))
                .await
                .map(|_permit| ())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !second.is_finished(),
        "a second request went while the first was in flight"
    );
    drop(first);
    tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the second goes once the first is done")
        .expect("joined")
        .expect("permit");
}

/// Cancelled: waiting requests and new ones are refused, clean-up still goes.
#[tokio::test]
async fn cancellation_refuses_all_but_cleanup() {
    let url = reqwest::Url::parse("http://peer.example/v2/").expect("url");
    let cancel = CancellationToken::new();
    let gate = unlimited_gate(cancel.clone());
    let first = gate
        .before_request(request(&url, false))
        .await
        .expect("first");
    let waiting = {
        let gate = gate.clone();
        let url = url.clone();
        tokio::spawn(async move {
            gate.before_request(request(&url, false))
                .await
                .map(|_permit| ())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    cancel.cancel();
    let refused = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting request is answered on cancel")
        .expect("joined");
    assert!(refused.is_err(), "a waiting request went after cancel");
    drop(first);
    assert!(gate.before_request(request(&url, false)).await.is_err());
    let cleanup = tokio::time::timeout(
        Duration::from_secs(10),
        gate.before_request(request(&url, true)),
    )
    .await
    .expect("clean-up is not stuck");
    assert!(cleanup.is_ok(), "clean-up refused after cancel");
}
