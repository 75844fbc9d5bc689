//! Live worker processes (Harbor's worker pools): each process registers at start,
//! heartbeats with the tasks it runs, and deregisters when it drains. A process killed
//! without draining leaves its row behind; `live` ignores rows whose heartbeat is
//! older than the caller's bound, and `prune` removes them eventually.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::model::JobsError;

/// One worker process as it last reported.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerProcess {
    pub id: Uuid,
    /// The worker kind it runs (`echo`, `relay`, …).
    pub kind: String,
    pub host: String,
    pub pid: i32,
    /// Tasks it runs at once.
    pub concurrency: i32,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// The tasks running at the last heartbeat, as the runtime reports them.
    pub in_flight: serde_json::Value,
}

/// Registers process `id`; registering again (after a heartbeat found the row gone)
/// replaces the row.
pub async fn register(
    db: impl PgExecutor<'_>,
    id: Uuid,
    kind: &str,
    host: &str,
    pid: i32,
    concurrency: i32,
) -> Result<(), JobsError> {
    sqlx::query!(
        r#"INSERT INTO worker_processes (id, kind, host, pid, concurrency)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (id) DO UPDATE
           SET kind = $2, host = $3, pid = $4, concurrency = $5, heartbeat_at = now()"#,
        id,
        kind,
        host,
        pid,
        concurrency
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records that process `id` is alive and runs `in_flight`. Returns `false` if its row
/// is gone (pruned while the process was stalled): the caller registers again.
pub async fn heartbeat(
    db: impl PgExecutor<'_>,
    id: Uuid,
    in_flight: &serde_json::Value,
) -> Result<bool, JobsError> {
    let done = sqlx::query!(
        r#"UPDATE worker_processes SET heartbeat_at = now(), in_flight = $2 WHERE id = $1"#,
        id,
        in_flight
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Removes process `id` (it drained and exits).
pub async fn deregister(db: impl PgExecutor<'_>, id: Uuid) -> Result<(), JobsError> {
    sqlx::query!("DELETE FROM worker_processes WHERE id = $1", id)
        .execute(db)
        .await?;
    Ok(())
}

/// Processes that heartbeated within `max_age`, by kind and start time.
pub async fn live(
    db: impl PgExecutor<'_>,
    max_age: Duration,
) -> Result<Vec<WorkerProcess>, JobsError> {
    Ok(sqlx::query_as!(
        WorkerProcess,
        r#"SELECT id, kind, host, pid, concurrency, started_at, heartbeat_at, in_flight
           FROM worker_processes
           WHERE heartbeat_at > now() - make_interval(secs => $1)
           ORDER BY kind, started_at, id"#,
        max_age.as_secs_f64()
    )
    .fetch_all(db)
    .await?)
}

pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<WorkerProcess>, JobsError> {
    Ok(sqlx::query_as!(
        WorkerProcess,
        r#"SELECT id, kind, host, pid, concurrency, started_at, heartbeat_at, in_flight
           FROM worker_processes WHERE id = $1"#,
        id
    )
    .fetch_optional(db)
    .await?)
}

/// Deletes the rows of processes silent for longer than `max_age` (killed without
/// draining). Returns how many.
pub async fn prune(db: impl PgExecutor<'_>, max_age: Duration) -> Result<u64, JobsError> {
    let done = sqlx::query!(
        r#"DELETE FROM worker_processes WHERE heartbeat_at < now() - make_interval(secs => $1)"#,
        max_age.as_secs_f64()
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// This machine's name, for the pools API: the kernel's hostname, else `$HOSTNAME`,
/// else `unknown`.
pub fn hostname() -> String {
    let from_kernel = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned());
    let from_env = || std::env::var("HOSTNAME").ok().map(|s| s.trim().to_owned());
    from_kernel
        .filter(|s| !s.is_empty())
        .or_else(|| from_env().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::TestDatabase;

    #[tokio::test]
    async fn processes_register_heartbeat_and_go() {
        let t = TestDatabase::create().await;
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        register(&t.pool, a, "echo", "host-a", 10, 4).await.unwrap();
        register(&t.pool, b, "relay", "host-b", 11, 0)
            .await
            .unwrap();
        let in_flight = serde_json::json!([{"task_id": 1, "execution_id": 2}]);
        assert!(heartbeat(&t.pool, a, &in_flight).await.unwrap());
        assert_eq!(get(&t.pool, a).await.unwrap().unwrap().in_flight, in_flight);

        // b went silent a minute ago: not live with a 10 s bound, pruned with 30 s.
        sqlx::query("UPDATE worker_processes SET heartbeat_at = now() - interval '60 seconds' WHERE id = $1")
            .bind(b)
            .execute(&t.pool)
            .await
            .unwrap();
        let ids = |ps: Vec<WorkerProcess>| ps.into_iter().map(|p| p.id).collect::<Vec<_>>();
        assert_eq!(
            ids(live(&t.pool, Duration::from_secs(10)).await.unwrap()),
            vec![a]
        );
        assert_eq!(
            ids(live(&t.pool, Duration::from_secs(120)).await.unwrap()),
            vec![a, b]
        );
        assert_eq!(prune(&t.pool, Duration::from_secs(30)).await.unwrap(), 1);
        assert!(
            !heartbeat(&t.pool, b, &in_flight).await.unwrap(),
            "a pruned row is reported gone"
        );

        deregister(&t.pool, a).await.unwrap();
        assert!(get(&t.pool, a).await.unwrap().is_none());
        assert!(live(&t.pool, Duration::from_secs(120))
            .await
            .unwrap()
            .is_empty());
    }

    #[test]
    fn hostname_is_never_empty() {
        let name = hostname();
        assert!(!name.is_empty());
        assert!(!name.contains('\n'));
    }
}
