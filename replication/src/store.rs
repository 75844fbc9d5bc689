//! Replication policies in PostgreSQL (`replication_policies`, migration 0008), with
//! the cron schedule of each enabled scheduled policy kept beside it: a `schedules` row
//! of kind [`JOB_KIND`] whose `vendor_id` is the policy id and whose payload is
//! `{"policy_id": id}`, written by the same statements' transaction, so a policy and
//! its schedule never disagree.
//!
//! Writers take a connection that should be inside a transaction (`&mut tx`): each
//! write is several statements, and the caller adds its audit record to the same
//! transaction.

use berth_content::metadata::Sort;
use berth_events::schedules;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

use crate::filter::Filter;
use crate::policy::{Direction, Policy, PolicySpec, Trigger, TriggerType, JOB_KIND};
use crate::ReplicationError;

/// Keys listings sort by.
pub const SORT_KEYS: &[&str] = &["id", "name", "creation_time", "update_time"];

/// Harbor lists policies newest first.
pub const DEFAULT_SORT: Sort<'static> = Sort {
    key: "creation_time",
    descending: true,
};

const NAME_KEY: &str = "replication_policies_name_key";
const SRC_FK: &str = "replication_policies_src_registry_id_fkey";
const DEST_FK: &str = "replication_policies_dest_registry_id_fkey";

/// Which policies a listing shows; `None` filters nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyFilter {
    /// An SQL `LIKE` pattern on the name.
    pub name_like: Option<String>,
    /// Harbor's `src_registry_id`: a registry id, or 0 for the policies whose source is
    /// this registry (push mode).
    pub src_registry_id: Option<i64>,
    /// Harbor's `dest_registry_id`: a registry id, or 0 for pull mode.
    pub dest_registry_id: Option<i64>,
}

/// The schedule payload of policy `id`: the task each firing starts.
pub fn schedule_payload(id: i64) -> serde_json::Value {
    serde_json::json!({ "policy_id": id })
}

struct PolicyRow {
    id: i64,
    name: String,
    description: String,
    src_registry_id: Option<i64>,
    dest_registry_id: Option<i64>,
    dest_namespace: String,
    dest_namespace_replace_count: i32,
    trigger_type: Option<String>,
    cron: Option<String>,
    filters: serde_json::Value,
    replicate_deletion: bool,
    override_existing: bool,
    enabled: bool,
    speed_kbps: i32,
    copy_by_chunk: bool,
    creator: String,
    creation_time: DateTime<Utc>,
    update_time: DateTime<Utc>,
}

fn corrupt(id: i64, what: &str) -> ReplicationError {
    ReplicationError::Database(sqlx::Error::Decode(
        format!("replication policy {id}: {what}").into(),
    ))
}

impl TryFrom<PolicyRow> for Policy {
    type Error = ReplicationError;

    fn try_from(r: PolicyRow) -> Result<Policy, ReplicationError> {
        // The table's CHECK constraints keep these consistent; a row that is not has
        // been edited by hand, and is reported rather than guessed at.
        let direction = match (r.src_registry_id, r.dest_registry_id) {
            (Some(src_registry_id), None) => Direction::Pull { src_registry_id },
            (None, Some(dest_registry_id)) => Direction::Push { dest_registry_id },
            _ => return Err(corrupt(r.id, "not exactly one remote registry")),
        };
        let trigger = match r.trigger_type.as_deref() {
            None => None,
            Some(t) => Some(Trigger {
                kind: TriggerType::parse(t).ok_or_else(|| corrupt(r.id, "unknown trigger"))?,
                cron: r.cron,
            }),
        };
        let filters: Vec<Filter> = serde_json::from_value(r.filters)
            .map_err(|e| corrupt(r.id, &format!("filters: {e}")))?;
        Ok(Policy {
            id: r.id,
            name: r.name,
            description: r.description,
            direction,
            dest_namespace: r.dest_namespace,
            dest_namespace_replace_count: r.dest_namespace_replace_count,
            trigger,
            filters,
            replicate_deletion: r.replicate_deletion,
            override_existing: r.override_existing,
            enabled: r.enabled,
            speed_kbps: r.speed_kbps,
            copy_by_chunk: r.copy_by_chunk,
            creator: r.creator,
            creation_time: r.creation_time,
            update_time: r.update_time,
        })
    }
}

fn rows_to_policies(rows: Vec<PolicyRow>) -> Result<Vec<Policy>, ReplicationError> {
    rows.into_iter().map(Policy::try_from).collect()
}

/// Maps the violations a write can meet to what the client did wrong.
fn write_error(e: sqlx::Error, spec: &PolicySpec) -> ReplicationError {
    if let sqlx::Error::Database(db) = &e {
        match db.constraint() {
            Some(NAME_KEY) => {
                return ReplicationError::Conflict(format!(
                    "replication policy {} already exists",
                    spec.name
                ))
            }
            Some(SRC_FK | DEST_FK) => {
                return ReplicationError::NotFound(format!(
                    "registry {} not found",
                    spec.direction.remote_registry_id()
                ))
            }
            _ => {}
        }
    }
    ReplicationError::Database(e)
}

fn filters_json(spec: &PolicySpec) -> Result<serde_json::Value, ReplicationError> {
    serde_json::to_value(&spec.filters)
        .map_err(|e| ReplicationError::Invalid(format!("filters: {e}")))
}

/// Creates a policy from `spec` by `creator`, and its schedule if it is enabled and
/// scheduled. 409 on a taken name, 404 on an unknown registry.
pub async fn create(
    conn: &mut PgConnection,
    spec: &PolicySpec,
    creator: &str,
) -> Result<Policy, ReplicationError> {
    let filters = filters_json(spec)?;
    let trigger_type = spec.trigger.as_ref().map(|t| t.kind.as_str());
    let cron = spec.trigger.as_ref().and_then(|t| t.cron.as_deref());
    let row = sqlx::query_as!(
        PolicyRow,
        r#"INSERT INTO replication_policies
               (name, description, src_registry_id, dest_registry_id, dest_namespace,
                dest_namespace_replace_count, trigger_type, cron, filters, replicate_deletion,
                override, speed_kbps, copy_by_chunk, enabled, creator)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
           RETURNING id, name, description, src_registry_id, dest_registry_id, dest_namespace,
                     dest_namespace_replace_count, trigger_type, cron, filters,
                     replicate_deletion, override AS override_existing, enabled, speed_kbps,
                     copy_by_chunk, creator, creation_time, update_time"#,
        spec.name,
        spec.description,
        spec.direction.src_registry_id(),
        spec.direction.dest_registry_id(),
        spec.dest_namespace,
        spec.dest_namespace_replace_count,
        trigger_type,
        cron,
        filters,
        spec.replicate_deletion,
        spec.override_existing,
        spec.speed_kbps,
        spec.copy_by_chunk,
        spec.enabled,
        creator
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| write_error(e, spec))?;
    let policy = Policy::try_from(row)?;
    sync_schedule(conn, &policy).await?;
    Ok(policy)
}

/// Replaces policy `id` with `spec` (Harbor's PUT replaces the whole policy; the
/// creator and creation time stay), and creates, moves or removes its schedule to
/// match. 404 if there is no such policy.
pub async fn update(
    conn: &mut PgConnection,
    id: i64,
    spec: &PolicySpec,
) -> Result<Policy, ReplicationError> {
    let filters = filters_json(spec)?;
    let trigger_type = spec.trigger.as_ref().map(|t| t.kind.as_str());
    let cron = spec.trigger.as_ref().and_then(|t| t.cron.as_deref());
    let row = sqlx::query_as!(
        PolicyRow,
        r#"UPDATE replication_policies
           SET name = $2, description = $3, src_registry_id = $4, dest_registry_id = $5,
               dest_namespace = $6, dest_namespace_replace_count = $7, trigger_type = $8,
               cron = $9, filters = $10, replicate_deletion = $11, override = $12,
               speed_kbps = $13, copy_by_chunk = $14, enabled = $15, update_time = now()
           WHERE id = $1
           RETURNING id, name, description, src_registry_id, dest_registry_id, dest_namespace,
                     dest_namespace_replace_count, trigger_type, cron, filters,
                     replicate_deletion, override AS override_existing, enabled, speed_kbps,
                     copy_by_chunk, creator, creation_time, update_time"#,
        id,
        spec.name,
        spec.description,
        spec.direction.src_registry_id(),
        spec.direction.dest_registry_id(),
        spec.dest_namespace,
        spec.dest_namespace_replace_count,
        trigger_type,
        cron,
        filters,
        spec.replicate_deletion,
        spec.override_existing,
        spec.speed_kbps,
        spec.copy_by_chunk,
        spec.enabled
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| write_error(e, spec))?;
    let Some(row) = row else {
        return Err(policy_not_found(id));
    };
    let policy = Policy::try_from(row)?;
    sync_schedule(conn, &policy).await?;
    Ok(policy)
}

/// Deletes policy `id` with its schedule and its finished executions (as Harbor does);
/// returns what was deleted. 404 if there is none; 412 while one of its executions is
/// pending or running (stop it first), as in Harbor.
///
/// The policy row is locked first: whoever starts an execution of a policy should
/// read it `FOR SHARE` ([`get_for_share`]) in the transaction that creates the
/// execution, so a start and a delete cannot interleave.
pub async fn delete(conn: &mut PgConnection, id: i64) -> Result<Policy, ReplicationError> {
    let row = sqlx::query_as!(
        PolicyRow,
        r#"SELECT id, name, description, src_registry_id, dest_registry_id, dest_namespace,
                  dest_namespace_replace_count, trigger_type, cron, filters,
                  replicate_deletion, override AS override_existing, enabled, speed_kbps,
                  copy_by_chunk, creator, creation_time, update_time
           FROM replication_policies WHERE id = $1
           FOR UPDATE"#,
        id
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Err(policy_not_found(id));
    };
    let policy = Policy::try_from(row)?;
    let running = sqlx::query_scalar!(
        r#"SELECT id FROM executions
           WHERE kind = $1 AND vendor_id = $2 AND status IN ('pending', 'running')
           ORDER BY id LIMIT 1"#,
        JOB_KIND,
        id
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(execution) = running {
        return Err(ReplicationError::Precondition(format!(
            "the execution {execution} of policy {id} is running; stop it first"
        )));
    }
    // Tasks go with their executions (ON DELETE CASCADE).
    sqlx::query!(
        "DELETE FROM executions WHERE kind = $1 AND vendor_id = $2",
        JOB_KIND,
        id
    )
    .execute(&mut *conn)
    .await?;
    if let Some(schedule) = schedules::find(&mut *conn, JOB_KIND, id).await? {
        schedules::delete(&mut *conn, schedule.id).await?;
    }
    sqlx::query!("DELETE FROM replication_policies WHERE id = $1", id)
        .execute(&mut *conn)
        .await?;
    Ok(policy)
}

/// Makes the schedule of `policy` what it should be: present with its cron while it is
/// enabled and scheduled (its next run computed afresh, as Harbor reschedules on every
/// update), absent otherwise.
pub async fn sync_schedule(
    conn: &mut PgConnection,
    policy: &Policy,
) -> Result<(), ReplicationError> {
    match policy.schedule_cron() {
        Some(cron) => {
            schedules::upsert(
                &mut *conn,
                JOB_KIND,
                policy.id,
                cron,
                &schedule_payload(policy.id),
            )
            .await?;
        }
        None => {
            if let Some(schedule) = schedules::find(&mut *conn, JOB_KIND, policy.id).await? {
                schedules::delete(&mut *conn, schedule.id).await?;
            }
        }
    }
    Ok(())
}

fn policy_not_found(id: i64) -> ReplicationError {
    ReplicationError::NotFound(format!("replication policy {id} not found"))
}

pub async fn get(db: impl PgExecutor<'_>, id: i64) -> Result<Option<Policy>, ReplicationError> {
    let row = sqlx::query_as!(
        PolicyRow,
        r#"SELECT id, name, description, src_registry_id, dest_registry_id, dest_namespace,
                  dest_namespace_replace_count, trigger_type, cron, filters,
                  replicate_deletion, override AS override_existing, enabled, speed_kbps,
                  copy_by_chunk, creator, creation_time, update_time
           FROM replication_policies WHERE id = $1"#,
        id
    )
    .fetch_optional(db)
    .await?;
    row.map(Policy::try_from).transpose()
}

/// Policy `id`, locked against deletion until the caller's transaction ends: for
/// starting an execution of it.
pub async fn get_for_share(
    conn: &mut PgConnection,
    id: i64,
) -> Result<Option<Policy>, ReplicationError> {
    let row = sqlx::query_as!(
        PolicyRow,
        r#"SELECT id, name, description, src_registry_id, dest_registry_id, dest_namespace,
                  dest_namespace_replace_count, trigger_type, cron, filters,
                  replicate_deletion, override AS override_existing, enabled, speed_kbps,
                  copy_by_chunk, creator, creation_time, update_time
           FROM replication_policies WHERE id = $1
           FOR SHARE"#,
        id
    )
    .fetch_optional(conn)
    .await?;
    row.map(Policy::try_from).transpose()
}

/// How many policies `filter` matches.
pub async fn count(
    conn: &mut PgConnection,
    filter: &PolicyFilter,
) -> Result<i64, ReplicationError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM replication_policies
           WHERE ($1::text IS NULL OR name LIKE $1)
             AND ($2::bigint IS NULL OR COALESCE(src_registry_id, 0) = $2)
             AND ($3::bigint IS NULL OR COALESCE(dest_registry_id, 0) = $3)"#,
        filter.name_like,
        filter.src_registry_id,
        filter.dest_registry_id
    )
    .fetch_one(conn)
    .await?)
}

/// One page of the policies `filter` matches, by `sort` (one of [`SORT_KEYS`]) and
/// then by id in the same direction, so pages never overlap.
pub async fn list(
    conn: &mut PgConnection,
    filter: &PolicyFilter,
    sort: Sort<'_>,
    limit: i64,
    offset: i64,
) -> Result<Vec<Policy>, ReplicationError> {
    // One CASE per key and direction keeps the statement static (and checked).
    let rows = sqlx::query_as!(
        PolicyRow,
        r#"SELECT id, name, description, src_registry_id, dest_registry_id, dest_namespace,
                  dest_namespace_replace_count, trigger_type, cron, filters,
                  replicate_deletion, override AS override_existing, enabled, speed_kbps,
                  copy_by_chunk, creator, creation_time, update_time
           FROM replication_policies
           WHERE ($1::text IS NULL OR name LIKE $1)
             AND ($2::bigint IS NULL OR COALESCE(src_registry_id, 0) = $2)
             AND ($3::bigint IS NULL OR COALESCE(dest_registry_id, 0) = $3)
           ORDER BY
             CASE WHEN $4 = 'name' THEN name END ASC,
             CASE WHEN $4 = '-name' THEN name END DESC,
             CASE WHEN $4 = 'creation_time' THEN creation_time END ASC,
             CASE WHEN $4 = '-creation_time' THEN creation_time END DESC,
             CASE WHEN $4 = 'update_time' THEN update_time END ASC,
             CASE WHEN $4 = '-update_time' THEN update_time END DESC,
             CASE WHEN $4 LIKE '-%' THEN id END DESC,
             id ASC
           LIMIT $5 OFFSET $6"#,
        filter.name_like,
        filter.src_registry_id,
        filter.dest_registry_id,
        sort.signed_key(),
        limit,
        offset
    )
    .fetch_all(conn)
    .await?;
    rows_to_policies(rows)
}

/// The enabled event-based policies, by id: what the event handler matches every push
/// against.
pub async fn event_based(db: impl PgExecutor<'_>) -> Result<Vec<Policy>, ReplicationError> {
    let rows = sqlx::query_as!(
        PolicyRow,
        r#"SELECT id, name, description, src_registry_id, dest_registry_id, dest_namespace,
                  dest_namespace_replace_count, trigger_type, cron, filters,
                  replicate_deletion, override AS override_existing, enabled, speed_kbps,
                  copy_by_chunk, creator, creation_time, update_time
           FROM replication_policies
           WHERE enabled AND trigger_type = 'event_based'
           ORDER BY id"#
    )
    .fetch_all(db)
    .await?;
    rows_to_policies(rows)
}

#[cfg(test)]
mod tests {
    use berth_events::testing::TestDatabase;
    use serde_json::json;
    use sqlx::{Connection, PgPool};

    use super::*;
    use crate::policy::{PolicyInput, TriggerInput};

    async fn registry(db: &PgPool, name: &str) -> i64 {
        sqlx::query_scalar(
            "INSERT INTO registries (name, type, url) VALUES ($1, 'docker-registry', 'http://127.0.0.1:1') RETURNING id",
        )
        .bind(name)
        .fetch_one(db)
        .await
        .unwrap()
    }

    fn spec(name: &str, dest: i64) -> PolicySpec {
        PolicySpec::parse(PolicyInput {
            name: Some(name.into()),
            dest_registry_id: Some(dest),
            ..PolicyInput::default()
        })
        .unwrap()
    }

    fn scheduled(name: &str, dest: i64, cron: &str, enabled: bool) -> PolicySpec {
        PolicySpec::parse(PolicyInput {
            name: Some(name.into()),
            dest_registry_id: Some(dest),
            enabled: Some(enabled),
            trigger: Some(TriggerInput {
                kind: "scheduled".into(),
                cron: Some(cron.into()),
            }),
            ..PolicyInput::default()
        })
        .unwrap()
    }

    async fn create_committed(db: &PgPool, spec: &PolicySpec) -> Result<Policy, ReplicationError> {
        let mut tx = db.begin().await.unwrap();
        let policy = create(&mut tx, spec, "admin").await?;
        tx.commit().await.unwrap();
        Ok(policy)
    }

    #[tokio::test]
    async fn round_trip_of_every_field() {
        let t = TestDatabase::create().await;
        let hub = registry(&t.pool, "hub").await;
        let spec = PolicySpec::parse(PolicyInput {
            name: Some("mirror".into()),
            description: Some("to the hub".into()),
            dest_registry_id: Some(hub),
            dest_namespace: Some("mirror".into()),
            dest_namespace_replace_count: Some(1),
            trigger: Some(TriggerInput {
                kind: "event_based".into(),
                cron: Some(String::new()),
            }),
            filters: Some(vec![
                Filter {
                    kind: "name".into(),
                    value: json!("library/**"),
                    decoration: String::new(),
                },
                Filter {
                    kind: "tag".into(),
                    value: json!("v*"),
                    decoration: "excludes".into(),
                },
            ]),
            replicate_deletion: Some(true),
            override_existing: Some(true),
            enabled: Some(true),
            speed: Some(2048),
            copy_by_chunk: Some(true),
            ..PolicyInput::default()
        })
        .unwrap();
        let created = create_committed(&t.pool, &spec).await.unwrap();
        let read = get(&t.pool, created.id).await.unwrap().unwrap();
        assert_eq!(read, created);
        assert_eq!(read.name, "mirror");
        assert_eq!(read.description, "to the hub");
        assert_eq!(
            read.direction,
            Direction::Push {
                dest_registry_id: hub
            }
        );
        assert_eq!(read.dest_namespace_replace_count, 1);
        assert_eq!(read.trigger, spec.trigger);
        assert_eq!(read.filters, spec.filters);
        assert!(read.replicate_deletion && read.override_existing && read.enabled);
        assert!(read.copy_by_chunk);
        assert_eq!(read.speed_kbps, 2048);
        assert_eq!(read.creator, "admin");
        // The event handler's query finds it; no schedule for a non-scheduled policy.
        let event_based_ids: Vec<i64> = event_based(&t.pool)
            .await
            .unwrap()
            .iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(event_based_ids, vec![created.id]);
        assert!(schedules::find(&t.pool, JOB_KIND, created.id)
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn names_are_unique_and_registries_must_exist() {
        let t = TestDatabase::create().await;
        let hub = registry(&t.pool, "hub").await;
        create_committed(&t.pool, &spec("one", hub)).await.unwrap();
        let again = create_committed(&t.pool, &spec("one", hub)).await;
        assert!(
            matches!(&again, Err(ReplicationError::Conflict(m)) if m == "replication policy one already exists"),
            "{again:?}"
        );
        let missing = create_committed(&t.pool, &spec("two", hub + 100)).await;
        assert!(
            matches!(&missing, Err(ReplicationError::NotFound(m)) if m == &format!("registry {} not found", hub + 100)),
            "{missing:?}"
        );
        let two = create_committed(&t.pool, &spec("two", hub)).await.unwrap();
        let mut tx = t.pool.begin().await.unwrap();
        let renamed = update(&mut tx, two.id, &spec("one", hub)).await;
        assert!(matches!(renamed, Err(ReplicationError::Conflict(_))));
        drop(tx);
        let mut conn = t.pool.acquire().await.unwrap();
        assert!(matches!(
            update(&mut conn, 9999, &spec("x", hub)).await,
            Err(ReplicationError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn the_schedule_follows_the_policy() {
        let t = TestDatabase::create().await;
        let hub = registry(&t.pool, "hub").await;
        let policy = create_committed(&t.pool, &scheduled("nightly", hub, "0 3 * * *", true))
            .await
            .unwrap();
        let schedule = schedules::find(&t.pool, JOB_KIND, policy.id)
            .await
            .unwrap()
            .expect("an enabled scheduled policy has a schedule");
        assert_eq!(schedule.cron, "0 3 * * *");
        assert_eq!(schedule.payload, json!({"policy_id": policy.id}));
        assert!(schedule.enabled);

        let mut conn = t.pool.acquire().await.unwrap();
        // A new cron moves the same schedule.
        let mut tx = conn.begin().await.unwrap();
        update(
            &mut tx,
            policy.id,
            &scheduled("nightly", hub, "0 4 * * *", true),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let moved = schedules::find(&t.pool, JOB_KIND, policy.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((moved.id, moved.cron.as_str()), (schedule.id, "0 4 * * *"));
        // Disabled: gone. Enabled again: back.
        let mut tx = conn.begin().await.unwrap();
        update(
            &mut tx,
            policy.id,
            &scheduled("nightly", hub, "0 4 * * *", false),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert!(schedules::find(&t.pool, JOB_KIND, policy.id)
            .await
            .unwrap()
            .is_none());
        let mut tx = conn.begin().await.unwrap();
        update(
            &mut tx,
            policy.id,
            &scheduled("nightly", hub, "0 5 * * *", true),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert!(schedules::find(&t.pool, JOB_KIND, policy.id)
            .await
            .unwrap()
            .is_some());
        // Manual: gone.
        let mut tx = conn.begin().await.unwrap();
        update(&mut tx, policy.id, &spec("nightly", hub))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(schedules::find(&t.pool, JOB_KIND, policy.id)
            .await
            .unwrap()
            .is_none());
        // A failed write leaves no schedule behind (it is in the same transaction).
        let mut tx = conn.begin().await.unwrap();
        let failed = create(
            &mut tx,
            &scheduled("nightly", hub, "0 3 * * *", true),
            "admin",
        )
        .await;
        assert!(matches!(failed, Err(ReplicationError::Conflict(_))));
        drop(tx);
        assert_eq!(
            schedules::list(&t.pool, Some(JOB_KIND))
                .await
                .unwrap()
                .len(),
            0
        );
    }

    #[tokio::test]
    async fn deleting_takes_the_schedule_and_finished_executions_and_waits_for_running_ones() {
        let t = TestDatabase::create().await;
        let hub = registry(&t.pool, "hub").await;
        let policy = create_committed(&t.pool, &scheduled("nightly", hub, "0 3 * * *", true))
            .await
            .unwrap();
        let execution: i64 = sqlx::query_scalar(
            "INSERT INTO executions (kind, vendor_id, trigger) VALUES ('replicate', $1, 'manual') RETURNING id",
        )
        .bind(policy.id)
        .fetch_one(&t.pool)
        .await
        .unwrap();
        let mut conn = t.pool.acquire().await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        let refused = delete(&mut tx, policy.id).await;
        assert!(
            matches!(&refused, Err(ReplicationError::Precondition(m)) if m.contains(&execution.to_string())),
            "{refused:?}"
        );
        drop(tx);
        sqlx::query("UPDATE executions SET status = 'succeeded', end_time = now() WHERE id = $1")
            .bind(execution)
            .execute(&t.pool)
            .await
            .unwrap();
        let mut tx = conn.begin().await.unwrap();
        let deleted = delete(&mut tx, policy.id).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(deleted.name, "nightly");
        assert!(get(&t.pool, policy.id).await.unwrap().is_none());
        assert!(schedules::find(&t.pool, JOB_KIND, policy.id)
            .await
            .unwrap()
            .is_none());
        let executions: i64 = sqlx::query_scalar("SELECT count(*) FROM executions")
            .fetch_one(&t.pool)
            .await
            .unwrap();
        assert_eq!(executions, 0);
        let mut tx = conn.begin().await.unwrap();
        assert!(matches!(
            delete(&mut tx, policy.id).await,
            Err(ReplicationError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn listing_filters_sorts_and_pages() {
        let t = TestDatabase::create().await;
        let hub = registry(&t.pool, "hub").await;
        let other = registry(&t.pool, "other").await;
        for (name, dest) in [("alpha", hub), ("beta", other), ("gamma", hub)] {
            create_committed(&t.pool, &spec(name, dest)).await.unwrap();
        }
        let pull = PolicySpec::parse(PolicyInput {
            name: Some("pull-in".into()),
            src_registry_id: Some(other),
            ..PolicyInput::default()
        })
        .unwrap();
        create_committed(&t.pool, &pull).await.unwrap();
        let mut conn = t.pool.acquire().await.unwrap();
        let names = |policies: Vec<Policy>| -> Vec<String> {
            policies.into_iter().map(|p| p.name).collect()
        };
        let all = PolicyFilter::default();
        assert_eq!(count(&mut conn, &all).await.unwrap(), 4);
        // Newest first by default; ties (same transaction time is impossible here, but
        // equal times are) broken by id in the same direction.
        let newest = list(&mut conn, &all, DEFAULT_SORT, 10, 0).await.unwrap();
        assert_eq!(names(newest), ["pull-in", "gamma", "beta", "alpha"]);
        let by_name = Sort {
            key: "name",
            descending: false,
        };
        assert_eq!(
            names(list(&mut conn, &all, by_name, 2, 1).await.unwrap()),
            ["beta", "gamma"]
        );
        let to_hub = PolicyFilter {
            dest_registry_id: Some(hub),
            ..PolicyFilter::default()
        };
        assert_eq!(count(&mut conn, &to_hub).await.unwrap(), 2);
        let pushes = PolicyFilter {
            src_registry_id: Some(0),
            ..PolicyFilter::default()
        };
        assert_eq!(count(&mut conn, &pushes).await.unwrap(), 3);
        let pulls = PolicyFilter {
            dest_registry_id: Some(0),
            ..PolicyFilter::default()
        };
        assert_eq!(
            names(list(&mut conn, &pulls, by_name, 10, 0).await.unwrap()),
            ["pull-in"]
        );
        let fuzzy = PolicyFilter {
            name_like: Some("%amm%".into()),
            ..PolicyFilter::default()
        };
        assert_eq!(
            names(list(&mut conn, &fuzzy, by_name, 10, 0).await.unwrap()),
            ["gamma"]
        );
    }
}
