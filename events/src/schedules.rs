//! Cron schedules (replication policies, scan-all, GC) in PostgreSQL. Every worker
//! process polls for due rows; whichever claims one (`FOR UPDATE SKIP LOCKED`) starts
//! its execution and moves `next_run_at` past now in the same transaction, so a due
//! time fires once however many workers run, and an outage spanning several due times
//! fires once when the workers return (missed runs of a GC or a scan are not worth
//! replaying one by one).
//!
//! Expressions are UTC cron with seconds (`0 0 3 * * *`), also accepted without them
//! (`0 3 * * *`) or with a trailing year; `@daily` and friends work too. Weekdays are
//! numbered as in Unix cron and Harbor (0 or 7 = Sunday, 1 = Monday), and translated
//! for the `cron` crate, which counts Sunday as 1.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::{PgExecutor, PgPool};
use tokio_util::sync::CancellationToken;

use crate::jobs::{executions, tasks, JobsError, NewExecution, NewTask, Trigger};

/// Due schedules claimed per transaction; more are fired by the next call at once.
const FIRE_BATCH: i64 = 16;

/// One schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub id: i64,
    /// The worker kind whose task each firing starts.
    pub kind: String,
    /// What it belongs to (a replication policy id); 0 for none.
    pub vendor_id: i64,
    /// The expression as given.
    pub cron: String,
    /// The payload of the task each firing starts.
    pub payload: serde_json::Value,
    pub enabled: bool,
    pub next_run_at: DateTime<Utc>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Parses a cron expression (5, 6 or 7 fields, or a `@` shorthand); the error names
/// the expression and why it is refused.
pub fn parse_cron(expression: &str) -> Result<cron::Schedule, JobsError> {
    let trimmed = expression.trim();
    let invalid =
        |why: String| JobsError::Invalid(format!("invalid cron expression {expression:?}: {why}"));
    let normalized = if trimmed.starts_with('@') {
        trimmed.to_owned()
    } else {
        let mut fields: Vec<String> = trimmed.split_whitespace().map(str::to_owned).collect();
        match fields.len() {
            5 => fields.insert(0, "0".to_owned()),
            6 | 7 => {}
            n => {
                return Err(invalid(format!(
                    "{n} fields; expected 5 (minute hour day month weekday), 6 (seconds first) or 7 (and a year)"
                )))
            }
        }
        fields[5] = unix_weekdays(&fields[5]).map_err(invalid)?;
        fields.join(" ")
    };
    cron::Schedule::from_str(&normalized).map_err(|e| invalid(e.to_string()))
}

/// Translates a weekday field from Unix numbering (0–7, Sunday 0 or 7) to the `cron`
/// crate's (1–7, Sunday 1). Names (`MON-FRI`), `*` and `?` pass unchanged.
fn unix_weekdays(field: &str) -> Result<String, String> {
    let day = |s: &str| -> Result<Option<u32>, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(None);
        }
        match s.parse::<u32>() {
            Ok(n) if n <= 7 => Ok(Some(n)),
            _ => Err(format!("weekday {s} is out of range 0-7")),
        }
    };
    // Unix 0..=6 is Sunday..Saturday, 7 is Sunday again; the crate counts 1..=7.
    let map = |n: u32| n % 7 + 1;
    let mut items = Vec::new();
    for item in field.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => (base, Some(step)),
            None => (item, None),
        };
        let with_step = |s: String| match step {
            Some(step) => format!("{s}/{step}"),
            None => s,
        };
        if let Some((from, to)) = base.split_once('-') {
            match (day(from)?, day(to)?) {
                (Some(a), Some(7)) if a > 0 && step.is_none() => {
                    // `5-7` (Friday to Sunday) wraps in the crate's numbering.
                    items.push(format!("{}-7", map(a)));
                    items.push("1".to_owned());
                }
                (Some(a), Some(b)) if b < 7 || a == 0 => {
                    // `0-7` is every day; `0-6` the same.
                    let b = if b == 7 { 6 } else { b };
                    items.push(with_step(format!("{}-{}", map(a), map(b))));
                }
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "weekday range {item} ending on 7 cannot take a step; write 0 for Sunday"
                    ))
                }
                // Names, or something the parser will refuse with its own message.
                _ => items.push(item.to_owned()),
            }
        } else if let Some(n) = day(base)? {
            items.push(with_step(map(n).to_string()));
        } else {
            items.push(item.to_owned());
        }
    }
    Ok(items.join(","))
}

/// The first time of `schedule` strictly after `after`; `None` if there is none (a
/// 7-field expression whose years have passed).
pub fn next_after(schedule: &cron::Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.after(&after).next()
}

/// Creates the schedule of (`kind`, `vendor_id`), or replaces its expression and
/// payload; its next run is computed from now. Returns its id.
pub async fn upsert(
    db: impl PgExecutor<'_>,
    kind: &str,
    vendor_id: i64,
    cron: &str,
    payload: &serde_json::Value,
) -> Result<i64, JobsError> {
    let schedule = parse_cron(cron)?;
    let Some(next) = next_after(&schedule, Utc::now()) else {
        return Err(JobsError::Invalid(format!(
            "cron expression {cron:?} has no future time"
        )));
    };
    let id = sqlx::query_scalar!(
        r#"INSERT INTO schedules (kind, vendor_id, cron, payload, next_run_at)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (kind, vendor_id) DO UPDATE
           SET cron = $3, payload = $4, next_run_at = $5, updated_at = now()
           RETURNING id"#,
        kind,
        vendor_id,
        cron.trim(),
        payload,
        next
    )
    .fetch_one(db)
    .await?;
    Ok(id)
}

/// Enables or disables schedule `id`. Enabling moves its next run past now, so a
/// schedule switched back on does not fire for the time it was off.
pub async fn set_enabled(db: &PgPool, id: i64, enabled: bool) -> Result<(), JobsError> {
    let Some(current) = get(db, id).await? else {
        return Err(JobsError::NotFound(format!("schedule {id}")));
    };
    let next = if enabled && !current.enabled {
        let schedule = parse_cron(&current.cron)?;
        next_after(&schedule, Utc::now()).ok_or_else(|| {
            JobsError::Invalid(format!(
                "cron expression {:?} has no future time",
                current.cron
            ))
        })?
    } else {
        current.next_run_at
    };
    let done = sqlx::query!(
        r#"UPDATE schedules SET enabled = $2, next_run_at = $3, updated_at = now() WHERE id = $1"#,
        id,
        enabled,
        next
    )
    .execute(db)
    .await?;
    if done.rows_affected() == 0 {
        return Err(JobsError::NotFound(format!("schedule {id}")));
    }
    Ok(())
}

/// Deletes schedule `id`; `false` if there was none.
pub async fn delete(db: impl PgExecutor<'_>, id: i64) -> Result<bool, JobsError> {
    let done = sqlx::query!("DELETE FROM schedules WHERE id = $1", id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn get(db: impl PgExecutor<'_>, id: i64) -> Result<Option<Schedule>, JobsError> {
    Ok(sqlx::query_as!(
        Schedule,
        r#"SELECT id, kind, vendor_id, cron, payload, enabled, next_run_at, last_run_at,
                  created_at, updated_at
           FROM schedules WHERE id = $1"#,
        id
    )
    .fetch_optional(db)
    .await?)
}

/// The schedule of (`kind`, `vendor_id`), e.g. a replication policy's.
pub async fn find(
    db: impl PgExecutor<'_>,
    kind: &str,
    vendor_id: i64,
) -> Result<Option<Schedule>, JobsError> {
    Ok(sqlx::query_as!(
        Schedule,
        r#"SELECT id, kind, vendor_id, cron, payload, enabled, next_run_at, last_run_at,
                  created_at, updated_at
           FROM schedules WHERE kind = $1 AND vendor_id = $2"#,
        kind,
        vendor_id
    )
    .fetch_optional(db)
    .await?)
}

/// Every schedule, or those of `kind`, by id.
pub async fn list(db: impl PgExecutor<'_>, kind: Option<&str>) -> Result<Vec<Schedule>, JobsError> {
    Ok(sqlx::query_as!(
        Schedule,
        r#"SELECT id, kind, vendor_id, cron, payload, enabled, next_run_at, last_run_at,
                  created_at, updated_at
           FROM schedules WHERE $1::text IS NULL OR kind = $1
           ORDER BY id"#,
        kind
    )
    .fetch_all(db)
    .await?)
}

/// Fires the due schedules this call can claim: for each, an execution (trigger
/// `schedule`, key `schedule:<id>:<due time>`) with one task whose message goes
/// through the outbox, and the next run moved to the first cron time after now. All in
/// one transaction: a crash fires nothing and a concurrent caller skips the claimed
/// rows. Returns the ids of the executions started.
pub async fn fire_due(db: &PgPool, source: &str) -> Result<Vec<i64>, JobsError> {
    let mut tx = db.begin().await?;
    let due = sqlx::query!(
        r#"SELECT id, kind, vendor_id, cron, payload, next_run_at, now() AS "now!"
           FROM schedules
           WHERE enabled AND next_run_at <= now()
           ORDER BY next_run_at
           FOR UPDATE SKIP LOCKED
           LIMIT $1"#,
        FIRE_BATCH
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut fired = Vec::new();
    for s in due {
        let schedule = match parse_cron(&s.cron) {
            Ok(schedule) => schedule,
            Err(e) => {
                // Only a row edited outside `upsert` gets here; firing it every poll
                // would be worse than stopping it.
                tracing::warn!(schedule_id = s.id, error = %e, "schedule disabled: its cron expression does not parse");
                sqlx::query!(
                    "UPDATE schedules SET enabled = false, updated_at = now() WHERE id = $1",
                    s.id
                )
                .execute(&mut *tx)
                .await?;
                continue;
            }
        };
        let due_at = s.next_run_at;
        let trigger_key = format!(
            "schedule:{}:{}",
            s.id,
            due_at.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        let execution = executions::create(
            &mut tx,
            &NewExecution {
                kind: &s.kind,
                vendor_id: s.vendor_id,
                trigger: Trigger::Schedule,
                trigger_key: Some(&trigger_key),
                extra_attrs: serde_json::json!({ "schedule_id": s.id, "due_at": due_at }),
                created_by: "schedule",
            },
        )
        .await?;
        // `None`: this due time fired before (someone moved `next_run_at` back); the
        // schedule only moves on.
        if let Some(execution_id) = execution {
            tasks::enqueue(
                &mut tx,
                execution_id,
                &s.kind,
                &NewTask {
                    natural_key: "scheduled",
                    destination: "default",
                    payload: s.payload.clone(),
                },
                source,
            )
            .await?;
            fired.push(execution_id);
        }
        // After now, not after the due time: however many due times an outage
        // spanned, the schedule fires once on return.
        match next_after(&schedule, s.now) {
            Some(next) => {
                sqlx::query!(
                    r#"UPDATE schedules SET last_run_at = $2, next_run_at = $3, updated_at = now()
                       WHERE id = $1"#,
                    s.id,
                    due_at,
                    next
                )
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query!(
                    r#"UPDATE schedules SET last_run_at = $2, enabled = false, updated_at = now()
                       WHERE id = $1"#,
                    s.id,
                    due_at
                )
                .execute(&mut *tx)
                .await?;
            }
        }
        tracing::info!(schedule_id = s.id, kind = %s.kind, execution_id = ?execution, due_at = %due_at, "schedule fired");
    }
    tx.commit().await?;
    Ok(fired)
}

/// Fires due schedules every `poll` until `shutdown`; any number of processes may run
/// it. Errors are logged and retried at the next poll.
pub async fn run(db: PgPool, poll: Duration, source: String, shutdown: CancellationToken) {
    loop {
        let mut more = false;
        match fire_due(&db, &source).await {
            // A full batch: more may be due right now.
            Ok(fired) => more = i64::try_from(fired.len()).unwrap_or(i64::MAX) >= FIRE_BATCH,
            Err(e) => {
                tracing::warn!(error = %e, "schedules: firing due schedules failed; retrying")
            }
        }
        if more {
            if shutdown.is_cancelled() {
                return;
            }
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::testing::TestDatabase;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(expr: &str, after: &str) -> Option<DateTime<Utc>> {
        next_after(&parse_cron(expr).unwrap(), at(after))
    }

    #[test]
    fn five_six_and_seven_fields_and_shorthands_parse() {
        assert_eq!(
            next("0 3 * * *", "2025-01-01T10:00:00Z"),
            Some(at("2025-01-02T03:00:00Z"))
        );
        assert_eq!(
            next("30 0 3 * * *", "2025-01-01T10:00:00Z"),
            Some(at("2025-01-02T03:00:30Z"))
        );
        assert_eq!(
            next("0 0 3 * * * 2026", "2025-01-01T10:00:00Z"),
            Some(at("2026-01-01T03:00:00Z"))
        );
        assert_eq!(
            next("@hourly", "2025-01-01T10:20:00Z"),
            Some(at("2025-01-01T11:00:00Z"))
        );
        assert_eq!(next("0 0 0 1 1 * 2000", "2025-01-01T10:00:00Z"), None);
        for bad in [
            "",
            "* * * *",
            "1 2 3 4 5 6 7 8",
            "61 * * * *",
            "x * * * *",
            "* * * * 9",
        ] {
            assert!(
                matches!(parse_cron(bad), Err(JobsError::Invalid(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn next_time_is_strictly_after() {
        // Exactly on a due time: the next one, not the same one.
        assert_eq!(
            next("* * * * *", "2025-01-01T10:00:00Z"),
            Some(at("2025-01-01T10:01:00Z"))
        );
        assert_eq!(
            next("* * * * *", "2025-01-01T10:00:00.5Z"),
            Some(at("2025-01-01T10:01:00Z"))
        );
        assert_eq!(
            next("*/10 * * * * *", "2025-01-01T10:00:00Z"),
            Some(at("2025-01-01T10:00:10Z"))
        );
    }

    #[test]
    fn weekdays_count_as_in_unix_cron() {
        // 2025-01-05 is a Sunday, 2025-01-06 a Monday.
        assert_eq!(
            next("0 3 * * 0", "2025-01-01T00:00:00Z"),
            Some(at("2025-01-05T03:00:00Z"))
        );
        assert_eq!(
            next("0 3 * * 7", "2025-01-01T00:00:00Z"),
            Some(at("2025-01-05T03:00:00Z"))
        );
        assert_eq!(
            next("0 3 * * 1", "2025-01-01T00:00:00Z"),
            Some(at("2025-01-06T03:00:00Z"))
        );
        assert_eq!(
            next("0 0 3 * * SUN", "2025-01-01T00:00:00Z"),
            Some(at("2025-01-05T03:00:00Z"))
        );
        // Monday to Friday from Saturday 2025-01-04: Monday.
        assert_eq!(
            next("0 3 * * 1-5", "2025-01-04T00:00:00Z"),
            Some(at("2025-01-06T03:00:00Z"))
        );
        // Friday to Sunday (wraps) from Saturday 10:00: Sunday.
        assert_eq!(
            next("0 3 * * 5-7", "2025-01-04T10:00:00Z"),
            Some(at("2025-01-05T03:00:00Z"))
        );
        assert_eq!(
            next("0 3 * * 0-6", "2025-01-04T10:00:00Z"),
            Some(at("2025-01-05T03:00:00Z"))
        );
        assert_eq!(unix_weekdays("1,3,5").unwrap(), "2,4,6");
        assert_eq!(unix_weekdays("*/2").unwrap(), "*/2");
        assert_eq!(unix_weekdays("?").unwrap(), "?");
        assert!(unix_weekdays("8").is_err());
    }

    #[test]
    fn catching_up_skips_to_the_first_time_after_now() {
        // Due an hour ago, per minute: the run moves past now, not one minute on.
        let schedule = parse_cron("* * * * *").unwrap();
        let now = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 30).unwrap();
        assert_eq!(next_after(&schedule, now), Some(at("2025-01-01T12:01:00Z")));
    }

    async fn due_schedule(db: &PgPool, cron: &str, due: &str) -> i64 {
        let id = upsert(db, "echo", 0, cron, &serde_json::json!({"sleep_ms": 0}))
            .await
            .unwrap();
        sqlx::query("UPDATE schedules SET next_run_at = now() - $2::interval WHERE id = $1")
            .bind(id)
            .bind(due)
            .execute(db)
            .await
            .unwrap();
        id
    }

    async fn count(db: &PgPool, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
    }

    #[tokio::test]
    async fn a_due_schedule_fires_once_with_three_concurrent_callers() {
        let t = TestDatabase::create().await;
        let id = due_schedule(&t.pool, "0 3 * * *", "1 second").await;
        let (a, b, c) = tokio::join!(
            fire_due(&t.pool, "/test/a"),
            fire_due(&t.pool, "/test/b"),
            fire_due(&t.pool, "/test/c")
        );
        let fired: Vec<i64> = [a.unwrap(), b.unwrap(), c.unwrap()].concat();
        assert_eq!(fired.len(), 1, "fired {fired:?}");
        assert_eq!(count(&t.pool, "SELECT count(*) FROM executions").await, 1);
        assert_eq!(count(&t.pool, "SELECT count(*) FROM tasks").await, 1);
        // The task's message waits in the outbox.
        assert_eq!(
            count(
                &t.pool,
                "SELECT count(*) FROM outbox WHERE subject = 'berth.jobs.echo.default'"
            )
            .await,
            1
        );
        let execution = executions::get(&t.pool, fired[0]).await.unwrap().unwrap();
        assert_eq!(execution.trigger, Trigger::Schedule);
        assert!(execution
            .trigger_key
            .unwrap()
            .starts_with(&format!("schedule:{id}:")));
        let s = get(&t.pool, id).await.unwrap().unwrap();
        assert!(s.next_run_at > Utc::now());
        assert!(s.last_run_at.is_some());
        // Nothing is due any more.
        assert!(fire_due(&t.pool, "/test/a").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_outage_spanning_many_due_times_fires_once() {
        let t = TestDatabase::create().await;
        let id = due_schedule(&t.pool, "* * * * *", "1 hour").await;
        let due_before = get(&t.pool, id).await.unwrap().unwrap().next_run_at;
        let fired = fire_due(&t.pool, "/test").await.unwrap();
        assert_eq!(fired.len(), 1);
        assert!(fire_due(&t.pool, "/test").await.unwrap().is_empty());
        assert_eq!(count(&t.pool, "SELECT count(*) FROM executions").await, 1);
        let s = get(&t.pool, id).await.unwrap().unwrap();
        assert_eq!(s.last_run_at, Some(due_before));
        let now = Utc::now();
        assert!(s.next_run_at > now - chrono::Duration::seconds(5));
        assert!(s.next_run_at <= now + chrono::Duration::seconds(61));
        let task = sqlx::query_scalar::<_, serde_json::Value>("SELECT payload FROM tasks")
            .fetch_one(&t.pool)
            .await
            .unwrap();
        assert_eq!(task, serde_json::json!({"sleep_ms": 0}));
    }

    #[tokio::test]
    async fn disabled_schedules_do_not_fire_and_reenabling_does_not_catch_up() {
        let t = TestDatabase::create().await;
        let id = due_schedule(&t.pool, "0 3 * * *", "1 hour").await;
        set_enabled(&t.pool, id, false).await.unwrap();
        assert!(fire_due(&t.pool, "/test").await.unwrap().is_empty());
        set_enabled(&t.pool, id, true).await.unwrap();
        assert!(fire_due(&t.pool, "/test").await.unwrap().is_empty());
        assert!(get(&t.pool, id).await.unwrap().unwrap().next_run_at > Utc::now());
        // Upsert replaces the expression of (kind, vendor_id) rather than adding one.
        let again = upsert(&t.pool, "echo", 0, "0 4 * * *", &serde_json::json!({}))
            .await
            .unwrap();
        assert_eq!(again, id);
        assert_eq!(list(&t.pool, Some("echo")).await.unwrap().len(), 1);
        assert_eq!(
            find(&t.pool, "echo", 0).await.unwrap().unwrap().cron,
            "0 4 * * *"
        );
        assert!(delete(&t.pool, id).await.unwrap());
        assert!(!delete(&t.pool, id).await.unwrap());
        assert!(matches!(
            set_enabled(&t.pool, id, true).await,
            Err(JobsError::NotFound(_))
        ));
        assert!(matches!(
            upsert(&t.pool, "echo", 0, "nonsense", &serde_json::json!({})).await,
            Err(JobsError::Invalid(_))
        ));
    }
}
