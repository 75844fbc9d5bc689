//! Local user accounts: the rules for their fields, and their rows.
//!
//! Every change runs in one transaction with its audit entry, so the audit log holds
//! the change exactly when it committed. Password hashes are read only by logins and
//! password changes; nothing here returns one to a caller that could show it.

use berth_content::metadata::Sort;
use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

use crate::audit::{self, AuditEntry};

/// What a login needs: the stored hash and what the user may do.
#[derive(Debug, Clone)]
pub struct UserLogin {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub sysadmin: bool,
}

/// A user as the management API shows it: everything but the password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub realname: String,
    pub comment: String,
    pub sysadmin: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A user to create; the fields have passed the `check_…` rules.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub email: String,
    pub realname: String,
    pub comment: String,
    pub password_hash: String,
}

/// A profile change: `None` keeps the stored value (Harbor clients send only the
/// fields their caller set).
#[derive(Debug, Clone, Default)]
pub struct ProfileChange {
    pub email: Option<String>,
    pub realname: Option<String>,
    pub comment: Option<String>,
}

/// Which users a listing shows: SQL `LIKE` patterns (already escaped) on username and
/// email; `None` matches every user.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    pub username_like: Option<String>,
    pub email_like: Option<String>,
}

/// The keys a user listing sorts by (`sort=username`, `sort=-creation_time`).
pub const SORT_KEYS: &[&str] = &[
    "user_id",
    "username",
    "email",
    "realname",
    "creation_time",
    "update_time",
];

/// Characters Harbor refuses in usernames and real names.
const ILLEGAL_NAME_CHARS: &[char] = &[',', '"', '~', '#', '$', '%'];

/// Harbor's username rule: 1–255 characters, none of `,"~#$%`. That also keeps every
/// username clear of the `robot$` prefix, so a user can never log in as a robot.
pub fn check_username(username: &str) -> Result<(), String> {
    if username.trim().is_empty() || username.chars().count() > 255 {
        return Err("username must be 1 to 255 characters".to_owned());
    }
    if username.starts_with(crate::robots::NAME_PREFIX) {
        return Err("username must not start with robot$".to_owned());
    }
    if username.contains(ILLEGAL_NAME_CHARS) {
        return Err(r#"username must not contain any of , " ~ # $ %"#.to_owned());
    }
    Ok(())
}

/// An e-mail address of the plain `local@domain.tld` shape (Harbor's regular
/// expression, without quoted local parts or IP literals), at most 255 characters.
pub fn check_email(email: &str) -> Result<(), String> {
    let invalid = || Err("email with illegal format".to_owned());
    if email.is_empty() {
        return Err("email can't be empty".to_owned());
    }
    if email.chars().count() > 255 {
        return Err("email must be at most 255 characters".to_owned());
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return invalid();
    };
    let local_ok = !local.is_empty()
        && local.split('.').all(|part| {
            !part.is_empty()
                && !part
                    .chars()
                    .any(|c| c.is_whitespace() || "<>()[]\\.,;:@\"".contains(c) || c.is_control())
        });
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()));
    if local_ok && domain_ok {
        Ok(())
    } else {
        invalid()
    }
}

/// Harbor's real-name rule: 1–255 characters, none of `,~#$%`.
pub fn check_realname(realname: &str) -> Result<(), String> {
    if realname.is_empty() || realname.chars().count() > 255 {
        return Err("realname with illegal length".to_owned());
    }
    if realname.contains([',', '~', '#', '$', '%']) {
        return Err("realname contains illegal characters".to_owned());
    }
    Ok(())
}

/// Harbor's comment rule: at most 30 characters.
pub fn check_comment(comment: &str) -> Result<(), String> {
    if comment.chars().count() > 30 {
        return Err("comment with illegal length".to_owned());
    }
    Ok(())
}

pub async fn find_for_login(
    conn: &mut PgConnection,
    username: &str,
) -> Result<Option<UserLogin>, sqlx::Error> {
    sqlx::query_as!(
        UserLogin,
        "SELECT id, username, password_hash, sysadmin FROM users WHERE username = $1",
        username
    )
    .fetch_optional(conn)
    .await
}

/// The login record of user `id`: for password changes, which check the old password.
pub async fn find_login_by_id(
    conn: &mut PgConnection,
    id: i64,
) -> Result<Option<UserLogin>, sqlx::Error> {
    sqlx::query_as!(
        UserLogin,
        "SELECT id, username, password_hash, sysadmin FROM users WHERE id = $1",
        id
    )
    .fetch_optional(conn)
    .await
}

/// Creates the bootstrap administrator unless a user of that name exists; returns
/// whether it was created. An existing account is left alone, so changing the
/// configured password later never overrides a password changed through the API.
pub async fn ensure_bootstrap_admin(
    conn: &mut PgConnection,
    username: &str,
    password_hash: &str,
) -> Result<bool, sqlx::Error> {
    let created = sqlx::query_scalar!(
        r#"INSERT INTO users (username, password_hash, sysadmin, realname, comment)
           VALUES ($1, $2, true, 'Berth administrator', 'bootstrap administrator')
           ON CONFLICT (username) DO NOTHING
           RETURNING id"#,
        username,
        password_hash
    )
    .fetch_optional(conn)
    .await?;
    Ok(created.is_some())
}

pub async fn exists(conn: &mut PgConnection, username: &str) -> Result<bool, sqlx::Error> {
    let found = sqlx::query_scalar!("SELECT 1 AS one FROM users WHERE username = $1", username)
        .fetch_optional(conn)
        .await?;
    Ok(found.is_some())
}

pub async fn find(conn: &mut PgConnection, id: i64) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as!(
        User,
        r#"SELECT id, username, email, realname, comment, sysadmin AS "sysadmin!",
                  created_at, updated_at
           FROM users WHERE id = $1"#,
        id
    )
    .fetch_optional(conn)
    .await
}

/// How many users `filter` matches.
pub async fn count(conn: &mut PgConnection, filter: &UserFilter) -> Result<i64, sqlx::Error> {
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "total!" FROM users
           WHERE ($1::text IS NULL OR username LIKE $1)
             AND ($2::text IS NULL OR email LIKE $2)"#,
        filter.username_like,
        filter.email_like
    )
    .fetch_one(conn)
    .await?;
    Ok(total)
}

/// One page of the users `filter` matches, ordered by `sort` (a key of [`SORT_KEYS`])
/// and then by id, so pages never overlap.
pub async fn list(
    conn: &mut PgConnection,
    filter: &UserFilter,
    sort: Sort<'_>,
    limit: i64,
    offset: i64,
) -> Result<Vec<User>, sqlx::Error> {
    // One CASE per key and direction keeps the statement static (and checked) while
    // the key comes from the request; unknown keys sort by id alone.
    sqlx::query_as!(
        User,
        r#"SELECT id, username, email, realname, comment, sysadmin AS "sysadmin!",
                  created_at, updated_at
           FROM users
           WHERE ($1::text IS NULL OR username LIKE $1)
             AND ($2::text IS NULL OR email LIKE $2)
           ORDER BY
             CASE WHEN $3 = 'username' THEN username END ASC,
             CASE WHEN $3 = '-username' THEN username END DESC,
             CASE WHEN $3 = 'email' THEN email END ASC,
             CASE WHEN $3 = '-email' THEN email END DESC,
             CASE WHEN $3 = 'realname' THEN realname END ASC,
             CASE WHEN $3 = '-realname' THEN realname END DESC,
             CASE WHEN $3 = 'creation_time' THEN created_at END ASC,
             CASE WHEN $3 = '-creation_time' THEN created_at END DESC,
             CASE WHEN $3 = 'update_time' THEN updated_at END ASC,
             CASE WHEN $3 = '-update_time' THEN updated_at END DESC,
             CASE WHEN $3 = '-user_id' THEN id END DESC,
             id ASC
           LIMIT $4 OFFSET $5"#,
        filter.username_like,
        filter.email_like,
        sort.signed_key(),
        limit,
        offset
    )
    .fetch_all(conn)
    .await
}

/// Creates a user and records `audit` with it.
pub async fn create(
    conn: &mut PgConnection,
    user: &NewUser,
    audit: &AuditEntry,
) -> Result<User, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let created = sqlx::query_as!(
        User,
        r#"INSERT INTO users (username, email, realname, comment, password_hash)
           VALUES ($1, $2, $3, $4, $5)
           RETURNING id, username, email, realname, comment, sysadmin AS "sysadmin!",
                     created_at, updated_at"#,
        user.username,
        user.email,
        user.realname,
        user.comment,
        user.password_hash
    )
    .fetch_one(&mut *tx)
    .await?;
    audit::record(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(created)
}

/// Applies a profile change to user `id` and records `audit`; `None` when there is no
/// such user.
pub async fn update_profile(
    conn: &mut PgConnection,
    id: i64,
    change: &ProfileChange,
    audit: &AuditEntry,
) -> Result<Option<User>, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let updated = sqlx::query_as!(
        User,
        r#"UPDATE users SET email = COALESCE($2, email),
                            realname = COALESCE($3, realname),
                            comment = COALESCE($4, comment),
                            updated_at = now()
           WHERE id = $1
           RETURNING id, username, email, realname, comment, sysadmin AS "sysadmin!",
                     created_at, updated_at"#,
        id,
        change.email,
        change.realname,
        change.comment
    )
    .fetch_optional(&mut *tx)
    .await?;
    if updated.is_some() {
        audit::record(&mut tx, audit).await?;
    }
    tx.commit().await?;
    Ok(updated)
}

/// Replaces user `id`'s password hash and records `audit`; false when there is no such
/// user.
pub async fn set_password_hash(
    conn: &mut PgConnection,
    id: i64,
    password_hash: &str,
    audit: &AuditEntry,
) -> Result<bool, sqlx::Error> {
    let change = sqlx::query!(
        "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1",
        id,
        password_hash
    );
    audit::execute_recorded(conn, change, audit).await
}

/// Grants or revokes system administration and records `audit`; false when there is
/// no such user.
pub async fn set_sysadmin(
    conn: &mut PgConnection,
    id: i64,
    sysadmin: bool,
    audit: &AuditEntry,
) -> Result<bool, sqlx::Error> {
    let change = sqlx::query!(
        "UPDATE users SET sysadmin = $2, updated_at = now() WHERE id = $1",
        id,
        sysadmin
    );
    audit::execute_recorded(conn, change, audit).await
}

/// Deletes user `id` (their memberships go with them; projects they own keep existing
/// without an owner) and records `audit`; false when there is no such user.
pub async fn delete(
    conn: &mut PgConnection,
    id: i64,
    audit: &AuditEntry,
) -> Result<bool, sqlx::Error> {
    let change = sqlx::query!("DELETE FROM users WHERE id = $1", id);
    audit::execute_recorded(conn, change, audit).await
}

/// One entry of a user search: what a member picker needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub id: i64,
    pub username: String,
}

/// How many usernames match the `LIKE` pattern.
pub async fn count_by_username(
    conn: &mut PgConnection,
    username_like: &str,
) -> Result<i64, sqlx::Error> {
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "total!" FROM users WHERE username LIKE $1"#,
        username_like
    )
    .fetch_one(conn)
    .await?;
    Ok(total)
}

/// One page of the users whose username matches the `LIKE` pattern, by username.
pub async fn search_by_username(
    conn: &mut PgConnection,
    username_like: &str,
    limit: i64,
    offset: i64,
) -> Result<Vec<UserSummary>, sqlx::Error> {
    sqlx::query_as!(
        UserSummary,
        r#"SELECT id, username FROM users WHERE username LIKE $1
           ORDER BY username, id LIMIT $2 OFFSET $3"#,
        username_like,
        limit,
        offset
    )
    .fetch_all(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_harbors_rule() {
        assert!(check_username("alice").is_ok());
        assert!(check_username("alice.smith-2@corp").is_ok());
        assert!(check_username("").is_err());
        assert!(check_username("  ").is_err());
        assert!(check_username(&"a".repeat(256)).is_err());
        assert!(check_username(&"a".repeat(255)).is_ok());
        assert!(check_username("robot$ci").is_err());
        for bad in ["a,b", "a\"b", "a~b", "a#b", "a$b", "a%b"] {
            assert!(check_username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_need_a_local_part_and_a_dotted_domain() {
        assert!(check_email("alice@example.com").is_ok());
        assert!(check_email("a.b+c@mail.example.org").is_ok());
        for bad in [
            "",
            "alice",
            "alice@",
            "@example.com",
            "alice@example",
            "alice@example.c",
            "al ice@example.com",
            "alice@exa_mple.com",
            "a..b@example.com",
            "alice@example..com",
        ] {
            assert!(check_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn realnames_and_comments_have_limits() {
        assert!(check_realname("Alice Smith").is_ok());
        assert!(check_realname("").is_err());
        assert!(check_realname("Smith, Alice").is_err());
        assert!(check_comment("").is_ok());
        assert!(check_comment(&"c".repeat(30)).is_ok());
        assert!(check_comment(&"c".repeat(31)).is_err());
    }
}
