//! Robot accounts: named credentials with explicit permissions, an expiry, and a secret
//! that is shown once and stored hashed.
//!
//! Names are stored as Harbor stores them (`<project>+<name>` for project robots,
//! `<name>` for system ones) and shown and logged in with the `robot$` prefix. Every
//! change runs in one transaction with its audit entry.

use berth_content::metadata::Sort;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection};

use crate::audit::{self, AuditEntry};
use crate::role::RegistryAction;

/// Every robot logs in as `robot$<stored name>`.
pub const NAME_PREFIX: &str = "robot$";

/// One entry of a robot's permissions, in Harbor's v2 model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RobotPermission {
    /// `project` (namespace: a project name, or `*` for every project) or `system`
    /// (namespace `/`).
    pub kind: String,
    pub namespace: String,
    pub access: Vec<RobotAccess>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RobotAccess {
    pub resource: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
}

impl RobotPermission {
    /// Whether this permission lets its robot do `action` on repositories of `project`.
    /// Harbor's robot UI grants `repository:pull`, `repository:push` and
    /// `artifact:delete`; `repository:delete` and `*` are honoured too. An explicit
    /// `effect: deny` grants nothing.
    pub fn allows(&self, project: &str, action: RegistryAction) -> bool {
        if self.kind != "project" || !(self.namespace == project || self.namespace == "*") {
            return false;
        }
        self.access.iter().any(|access| {
            if access.effect.as_deref().is_some_and(|e| e == "deny") {
                return false;
            }
            let action_matches = access.action == "*" || access.action == action.as_str();
            let resource_matches = match action {
                RegistryAction::Pull | RegistryAction::Push => {
                    access.resource == "repository" || access.resource == "*"
                }
                RegistryAction::Delete => {
                    matches!(access.resource.as_str(), "repository" | "artifact" | "*")
                }
            };
            action_matches && resource_matches
        })
    }
}

/// What a robot login needs.
#[derive(Debug, Clone)]
pub struct RobotLogin {
    pub id: i64,
    /// The stored name, without the prefix.
    pub name: String,
    pub project_id: Option<i64>,
    pub secret_hash: String,
    pub disabled: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub permissions: Vec<RobotPermission>,
}

impl RobotLogin {
    /// Disabled and expired robots authenticate as nobody.
    pub fn usable_at(&self, now: DateTime<Utc>) -> bool {
        !self.disabled && self.expires_at.is_none_or(|expiry| expiry > now)
    }
}

/// The stored name behind a login name: `robot$team+ci` → `team+ci`.
pub fn stored_name(login: &str) -> Option<&str> {
    login
        .strip_prefix(NAME_PREFIX)
        .filter(|name| !name.is_empty())
}

/// A row's permissions. Rows are written only from validated permissions; a row that
/// no longer parses (a hand edit) shows and grants nothing rather than failing every
/// login and listing.
fn parse_permissions(robot: &str, permissions: serde_json::Value) -> Vec<RobotPermission> {
    serde_json::from_value(permissions).unwrap_or_else(|e| {
        tracing::warn!(robot = %robot, error = %e, "robot permissions do not parse; granting nothing");
        Vec::new()
    })
}

pub async fn find_for_login(
    conn: &mut PgConnection,
    stored_name: &str,
) -> Result<Option<RobotLogin>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT id, name, project_id, secret_hash, disabled, expires_at, permissions
           FROM robots WHERE name = $1"#,
        stored_name
    )
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let permissions = parse_permissions(&row.name, row.permissions);
    Ok(Some(RobotLogin {
        id: row.id,
        name: row.name,
        project_id: row.project_id,
        secret_hash: row.secret_hash,
        disabled: row.disabled,
        expires_at: row.expires_at,
        permissions,
    }))
}

/// A robot's level: `system` robots are created by administrators and may span
/// projects; `project` robots belong to one project and go with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RobotLevel {
    System,
    Project,
}

impl RobotLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            RobotLevel::System => "system",
            RobotLevel::Project => "project",
        }
    }

    pub fn parse(level: &str) -> Option<RobotLevel> {
        match level {
            "system" => Some(RobotLevel::System),
            "project" => Some(RobotLevel::Project),
            _ => None,
        }
    }
}

/// What `duration: 0` means: Harbor's default `robot_token_duration`, in days.
pub const DEFAULT_DURATION_DAYS: i64 = 30;

/// Durations beyond this many days (about 7,900 years) are stored without an expiry
/// time: the instant would not fit PostgreSQL's timestamps, and the robot never expires
/// in practice. The API still reports the nominal `expires_at`.
const MAX_STORED_EXPIRY_DAYS: i64 = 2_900_000;

/// Harbor's robot name rule, `^[a-z0-9]+(?:[._-][a-z0-9]+)*$`, at most 255 characters:
/// `+` is impossible, so `<project>+<name>` is unambiguous.
pub fn check_name(name: &str) -> Result<(), String> {
    let mut previous_separator = true;
    let well_formed = !name.is_empty()
        && name.len() <= 255
        && name.chars().all(|c| {
            let separator = matches!(c, '.' | '_' | '-');
            let ok =
                c.is_ascii_lowercase() || c.is_ascii_digit() || (separator && !previous_separator);
            previous_separator = separator;
            ok
        })
        && !previous_separator;
    if well_formed {
        Ok(())
    } else {
        Err("robot name is not in lower case or contains illegal characters".to_owned())
    }
}

/// Harbor's duration rule: days from −1 (never expires) up to, not including,
/// MaxInt32; `0` means the default. Returns the days to store.
pub fn check_duration(days: i64) -> Result<i64, String> {
    if !(-1..i64::from(i32::MAX)).contains(&days) {
        return Err(format!("bad request error duration input: {days}"));
    }
    Ok(if days == 0 {
        DEFAULT_DURATION_DAYS
    } else {
        days
    })
}

/// A robot account as the management API shows it (never its secret).
#[derive(Debug, Clone, PartialEq)]
pub struct Robot {
    pub id: i64,
    /// The stored name, without the prefix.
    pub name: String,
    pub description: String,
    pub level: RobotLevel,
    /// Set for project robots.
    pub project_id: Option<i64>,
    pub disabled: bool,
    /// As given at creation or update (−1: never expires); `0` was stored as the default.
    pub duration_days: i64,
    /// When logins stop working; `None` never.
    pub expires_at: Option<DateTime<Utc>>,
    pub permissions: Vec<RobotPermission>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Robot {
    /// The name it logs in with and the API shows: `robot$team-a+ci`.
    pub fn login_name(&self) -> String {
        format!("{NAME_PREFIX}{}", self.name)
    }

    /// Harbor's `expires_at`: Unix seconds, or −1 for never.
    pub fn expires_at_unix(&self) -> i64 {
        match self.expires_at {
            Some(expiry) => expiry.timestamp(),
            None if self.duration_days < 0 => -1,
            // Too far ahead to store (see MAX_STORED_EXPIRY_DAYS): report the nominal time.
            None => self
                .created_at
                .timestamp()
                .saturating_add(self.duration_days.saturating_mul(86_400)),
        }
    }
}

/// A robot to create; the name, duration and permissions have passed the checks.
#[derive(Debug, Clone)]
pub struct NewRobot {
    /// The stored name: `<project>+<name>` or `<name>`.
    pub name: String,
    pub description: String,
    pub level: RobotLevel,
    pub project_id: Option<i64>,
    pub secret_hash: String,
    pub disabled: bool,
    pub duration_days: i64,
    pub permissions: Vec<RobotPermission>,
    /// Who created it (the principal's name).
    pub created_by: String,
}

/// A change to a robot: `None` keeps the stored value. A new duration recomputes the
/// expiry from the creation time, as Harbor does.
#[derive(Debug, Clone, Default)]
pub struct RobotChange {
    pub description: Option<String>,
    pub disabled: Option<bool>,
    pub duration_days: Option<i64>,
    pub permissions: Option<Vec<RobotPermission>>,
}

/// Which robots a listing shows: those of one project, or (`project_id: None`) the
/// system robots; optionally only names matching an (escaped) SQL `LIKE` pattern on the
/// stored name.
#[derive(Debug, Clone, Default)]
pub struct RobotFilter {
    pub project_id: Option<i64>,
    pub name_like: Option<String>,
}

/// The keys a robot listing sorts by.
pub const SORT_KEYS: &[&str] = &["id", "name", "creation_time", "update_time", "expires_at"];

/// A row of `robots` without the secret hash.
struct RobotRow {
    id: i64,
    name: String,
    description: String,
    level: String,
    project_id: Option<i64>,
    disabled: bool,
    duration_days: i64,
    expires_at: Option<DateTime<Utc>>,
    permissions: serde_json::Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl RobotRow {
    fn into_robot(self) -> Robot {
        // The level column is CHECKed.
        let level = RobotLevel::parse(&self.level).unwrap_or(RobotLevel::System);
        let permissions = parse_permissions(&self.name, self.permissions);
        Robot {
            id: self.id,
            name: self.name,
            description: self.description,
            level,
            project_id: self.project_id,
            disabled: self.disabled,
            duration_days: self.duration_days,
            expires_at: self.expires_at,
            permissions,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

fn permissions_json(permissions: &[RobotPermission]) -> Result<serde_json::Value, sqlx::Error> {
    serde_json::to_value(permissions).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// Creates a robot and records `audit` with it.
pub async fn create(
    conn: &mut PgConnection,
    robot: &NewRobot,
    audit: &AuditEntry,
) -> Result<Robot, sqlx::Error> {
    let permissions = permissions_json(&robot.permissions)?;
    let mut tx = conn.begin().await?;
    let row = sqlx::query_as!(
        RobotRow,
        r#"INSERT INTO robots (name, description, level, project_id, secret_hash, disabled,
                               duration_days, expires_at, permissions, created_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7::bigint,
                   CASE WHEN $7::bigint < 0 OR $7::bigint > $10::bigint THEN NULL
                        ELSE now() + make_interval(days => $7::int) END,
                   $8, $9)
           RETURNING id, name, description, level, project_id, disabled, duration_days,
                     expires_at, permissions, created_at, updated_at"#,
        robot.name,
        robot.description,
        robot.level.as_str(),
        robot.project_id,
        robot.secret_hash,
        robot.disabled,
        robot.duration_days,
        permissions,
        robot.created_by,
        MAX_STORED_EXPIRY_DAYS
    )
    .fetch_one(&mut *tx)
    .await?;
    audit::record(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(row.into_robot())
}

pub async fn find(conn: &mut PgConnection, id: i64) -> Result<Option<Robot>, sqlx::Error> {
    let row = sqlx::query_as!(
        RobotRow,
        r#"SELECT id, name, description, level, project_id, disabled, duration_days,
                  expires_at, permissions, created_at, updated_at
           FROM robots WHERE id = $1"#,
        id
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(RobotRow::into_robot))
}

/// How many robots `filter` matches.
pub async fn count(conn: &mut PgConnection, filter: &RobotFilter) -> Result<i64, sqlx::Error> {
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "total!" FROM robots
           WHERE project_id IS NOT DISTINCT FROM $1
             AND ($2::text IS NULL OR name LIKE $2)"#,
        filter.project_id,
        filter.name_like
    )
    .fetch_one(conn)
    .await?;
    Ok(total)
}

/// One page of the robots `filter` matches, ordered by `sort` (a key of [`SORT_KEYS`])
/// and then by id.
pub async fn list(
    conn: &mut PgConnection,
    filter: &RobotFilter,
    sort: Sort<'_>,
    limit: i64,
    offset: i64,
) -> Result<Vec<Robot>, sqlx::Error> {
    // One CASE per key and direction keeps the statement static (and checked).
    let rows = sqlx::query_as!(
        RobotRow,
        r#"SELECT id, name, description, level, project_id, disabled, duration_days,
                  expires_at, permissions, created_at, updated_at
           FROM robots
           WHERE project_id IS NOT DISTINCT FROM $1
             AND ($2::text IS NULL OR name LIKE $2)
           ORDER BY
             CASE WHEN $3 = 'name' THEN name END ASC,
             CASE WHEN $3 = '-name' THEN name END DESC,
             CASE WHEN $3 = 'creation_time' THEN created_at END ASC,
             CASE WHEN $3 = '-creation_time' THEN created_at END DESC,
             CASE WHEN $3 = 'update_time' THEN updated_at END ASC,
             CASE WHEN $3 = '-update_time' THEN updated_at END DESC,
             CASE WHEN $3 = 'expires_at' THEN expires_at END ASC NULLS LAST,
             CASE WHEN $3 = '-expires_at' THEN expires_at END DESC NULLS FIRST,
             CASE WHEN $3 = '-id' THEN id END DESC,
             id ASC
           LIMIT $4 OFFSET $5"#,
        filter.project_id,
        filter.name_like,
        sort.signed_key(),
        limit,
        offset
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(RobotRow::into_robot).collect())
}

/// Applies `change` to robot `id` and records `audit`; `None` when there is no such
/// robot.
pub async fn update(
    conn: &mut PgConnection,
    id: i64,
    change: &RobotChange,
    audit: &AuditEntry,
) -> Result<Option<Robot>, sqlx::Error> {
    let permissions = change
        .permissions
        .as_deref()
        .map(permissions_json)
        .transpose()?;
    let mut tx = conn.begin().await?;
    // The right-hand sides see the old row: the expiry is recomputed from the creation
    // time only when the duration really changes, as Harbor does.
    let row = sqlx::query_as!(
        RobotRow,
        r#"UPDATE robots SET
               description = COALESCE($2, description),
               disabled = COALESCE($3, disabled),
               expires_at = CASE
                   WHEN $4::bigint IS NULL OR $4 = duration_days THEN expires_at
                   WHEN $4::bigint < 0 OR $4::bigint > $6::bigint THEN NULL
                   ELSE created_at + make_interval(days => $4::int) END,
               duration_days = COALESCE($4, duration_days),
               permissions = COALESCE($5, permissions),
               updated_at = now()
           WHERE id = $1
           RETURNING id, name, description, level, project_id, disabled, duration_days,
                     expires_at, permissions, created_at, updated_at"#,
        id,
        change.description,
        change.disabled,
        change.duration_days,
        permissions,
        MAX_STORED_EXPIRY_DAYS
    )
    .fetch_optional(&mut *tx)
    .await?;
    if row.is_some() {
        audit::record(&mut tx, audit).await?;
    }
    tx.commit().await?;
    Ok(row.map(RobotRow::into_robot))
}

/// Replaces robot `id`'s secret hash and records `audit`; false when there is no such
/// robot. The old secret stops working at once.
pub async fn set_secret_hash(
    conn: &mut PgConnection,
    id: i64,
    secret_hash: &str,
    audit: &AuditEntry,
) -> Result<bool, sqlx::Error> {
    let change = sqlx::query!(
        "UPDATE robots SET secret_hash = $2, updated_at = now() WHERE id = $1",
        id,
        secret_hash
    );
    audit::execute_recorded(conn, change, audit).await
}

/// Deletes robot `id` and records `audit`; false when there is no such robot.
pub async fn delete(
    conn: &mut PgConnection,
    id: i64,
    audit: &AuditEntry,
) -> Result<bool, sqlx::Error> {
    let change = sqlx::query!("DELETE FROM robots WHERE id = $1", id);
    audit::execute_recorded(conn, change, audit).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permission(namespace: &str, grants: &[(&str, &str)]) -> RobotPermission {
        RobotPermission {
            kind: "project".into(),
            namespace: namespace.into(),
            access: grants
                .iter()
                .map(|(resource, action)| RobotAccess {
                    resource: (*resource).into(),
                    action: (*action).into(),
                    effect: None,
                })
                .collect(),
        }
    }

    #[test]
    fn permissions_grant_only_their_project_and_actions() {
        let p = permission("team-a", &[("repository", "pull"), ("artifact", "delete")]);
        assert!(p.allows("team-a", RegistryAction::Pull));
        assert!(!p.allows("team-a", RegistryAction::Push));
        assert!(p.allows("team-a", RegistryAction::Delete));
        assert!(!p.allows("team-b", RegistryAction::Pull));
        let everywhere = permission("*", &[("repository", "push")]);
        assert!(everywhere.allows("team-b", RegistryAction::Push));
        let mut system = everywhere.clone();
        system.kind = "system".into();
        assert!(!system.allows("team-b", RegistryAction::Push));
    }

    #[test]
    fn login_names_need_the_prefix() {
        assert_eq!(stored_name("robot$team+ci"), Some("team+ci"));
        assert_eq!(stored_name("robot$"), None);
        assert_eq!(stored_name("alice"), None);
    }

    #[test]
    fn robot_names_follow_harbors_rule() {
        for good in ["ci", "ci-bot", "a.b_c-d", "x1", "9"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "", "CI", "ci+bot", "-ci", "ci-", "a..b", "a-_b", "robot$ci", "a b",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_name(&"a".repeat(256)).is_err());
    }

    #[test]
    fn durations_are_days_from_minus_one_and_zero_is_the_default() {
        assert_eq!(check_duration(-1), Ok(-1));
        assert_eq!(check_duration(0), Ok(DEFAULT_DURATION_DAYS));
        assert_eq!(check_duration(7), Ok(7));
        assert!(check_duration(-2).is_err());
        assert!(check_duration(i64::from(i32::MAX)).is_err());
        assert!(check_duration(i64::from(i32::MAX) - 1).is_ok());
    }

    #[test]
    fn expires_at_is_unix_seconds_or_minus_one() {
        let created = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut robot = Robot {
            id: 1,
            name: "team-a+ci".into(),
            description: String::new(),
            level: RobotLevel::Project,
            project_id: Some(1),
            disabled: false,
            duration_days: -1,
            expires_at: None,
            permissions: Vec::new(),
            created_at: created,
            updated_at: created,
        };
        assert_eq!(robot.login_name(), "robot$team-a+ci");
        assert_eq!(robot.expires_at_unix(), -1);
        robot.duration_days = 3;
        robot.expires_at = Some(created + chrono::TimeDelta::days(3));
        assert_eq!(robot.expires_at_unix(), 1_700_000_000 + 3 * 86_400);
        robot.duration_days = 10_000_000;
        robot.expires_at = None;
        assert_eq!(robot.expires_at_unix(), 1_700_000_000 + 10_000_000 * 86_400);
    }
}
