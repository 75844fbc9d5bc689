//! Schedules fire once per due time however many workers poll them, and once (not
//! once per missed due time) after an outage.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use serde_json::json;

use crate::harness::{check, eventually, Pipeline, WorkerOptions, DEADLINE};

/// The due times of the executions schedule `id` started, from their trigger keys
/// (`schedule:<id>:<due time>`), in creation order.
async fn fired(p: &Pipeline, id: i64) -> Vec<DateTime<Utc>> {
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT trigger_key FROM executions WHERE kind = 'echo' AND trigger = 'schedule'
           AND trigger_key LIKE $1 ORDER BY id",
    )
    .bind(format!("schedule:{id}:%"))
    .fetch_all(&p.db)
    .await
    .expect("read executions");
    keys.iter()
        .map(|key| {
            let due = key
                .strip_prefix(&format!("schedule:{id}:"))
                .expect("the key names the schedule");
            DateTime::parse_from_rfc3339(due)
                .unwrap_or_else(|e| panic!("due time in {key}: {e}"))
                .with_timezone(&Utc)
        })
        .collect()
}

/// Instants with a whole even second in (`from`, `to`]: the due times of `*/2 * * * * *`.
fn even_seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> usize {
    (from.timestamp() + 1..=to.timestamp())
        .filter(|s| s % 2 == 0)
        .count()
}

/// Whole minutes in (`from`, `to`].
fn minutes_between(from: DateTime<Utc>, to: DateTime<Utc>) -> usize {
    (from.timestamp() + 1..=to.timestamp())
        .filter(|s| s % 60 == 0)
        .count()
}

#[tokio::test]
async fn a_schedule_fires_once_per_due_time_with_three_workers_and_once_after_an_outage() {
    let mut p = Pipeline::start().await;
    let options = WorkerOptions::default();
    p.start_workers(3, options.clone()).await;

    let created = p.db_now().await;
    let every_two =
        berth_events::schedules::upsert(&p.db, "echo", 1, "*/2 * * * * *", &json!({"sleep_ms": 0}))
            .await
            .expect("create the schedule");
    tokio::time::sleep(Duration::from_secs(7)).await;
    berth_events::schedules::set_enabled(&p.db, every_two, false)
        .await
        .expect("disable the schedule");
    let stopped = p.db_now().await;

    let due_times = fired(&p, every_two).await;
    let distinct: BTreeSet<_> = due_times.iter().collect();
    assert_eq!(
        distinct.len(),
        due_times.len(),
        "a due time fired twice: {due_times:?}"
    );
    for due in &due_times {
        assert!(
            due.timestamp() % 2 == 0 && due.nanosecond() == 0,
            "{due} is not a due time of */2"
        );
        assert!(
            *due > created && *due <= stopped,
            "{due} outside the window"
        );
    }
    // Not more often than the due times in the window, and not starved.
    let possible = even_seconds_between(created, stopped);
    assert!(
        (2..=possible).contains(&due_times.len()),
        "{} firings for {possible} due times: {due_times:?}",
        due_times.len()
    );

    // Outage: no worker runs while a per-minute schedule misses an hour of due times.
    p.stop_workers().await;
    // Start the window well before a minute boundary, so that (on any sane machine) no
    // regular due time falls inside it; if one does, it may fire once more.
    let now = p.db_now().await;
    if now.second() >= 50 {
        tokio::time::sleep(Duration::from_secs(u64::from(61 - now.second()))).await;
    }
    let overdue =
        berth_events::schedules::upsert(&p.db, "echo", 2, "* * * * *", &json!({"sleep_ms": 0}))
            .await
            .expect("create the schedule");
    sqlx::query("UPDATE schedules SET next_run_at = now() - interval '1 hour' WHERE id = $1")
        .bind(overdue)
        .execute(&p.db)
        .await
        .expect("move the schedule an hour back");
    let back = p.db_now().await;
    p.start_workers(3, options).await;

    eventually("the overdue schedule fires", DEADLINE, || async {
        let n = fired(&p, overdue).await.len();
        check(n >= 1, "not yet")
    })
    .await;
    // Three workers polling every 200 ms have had many chances to fire it again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let checked = p.db_now().await;
    let due_times = fired(&p, overdue).await;
    let regular = minutes_between(back, checked);
    assert!(
        (1..=1 + regular).contains(&due_times.len()),
        "an hour of missed due times fires once (plus {regular} regular ones): {due_times:?}"
    );
    let schedule = berth_events::schedules::get(&p.db, overdue)
        .await
        .expect("read the schedule")
        .expect("the schedule exists");
    assert!(
        schedule.next_run_at > checked,
        "next run {} is in the future of {checked}",
        schedule.next_run_at
    );

    // Each firing ran its task.
    let executions: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM executions WHERE trigger = 'schedule' ORDER BY id")
            .fetch_all(&p.db)
            .await
            .unwrap();
    for id in executions {
        let tasks = p.wait_tasks_final(id, DEADLINE).await;
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].status, "succeeded", "{:?}", tasks[0]);
    }
}
