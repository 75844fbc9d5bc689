//! `/users`: local accounts, managed by system administrators, each user reading and
//! changing their own profile and password. Harbor's `UserResp` shapes, never a
//! password or its hash.

use axum::extract::{OriginalUri, State};
use axum::response::Response;
use berth_access::users::{self, NewUser, ProfileChange, User, UserFilter};
use berth_access::{password, Principal};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorsBody};
use super::extract::{ApiPath, ApiQuery, Caller};
use super::json::{self, ApiJson, JsonBody};
use super::pagination::{self, PageParams};
use super::query::{contains_pattern, ListParams, Sort};
use super::{harbor_time, BASE_PATH};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(current_user))
        .routes(routes!(search_users))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(set_password))
        .routes(routes!(set_sysadmin))
}

/// Harbor's `UserResp`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserResp {
    pub user_id: i64,
    pub username: String,
    pub email: String,
    pub realname: String,
    pub comment: String,
    pub sysadmin_flag: bool,
    /// Harbor sets it for admins of an external auth source (LDAP groups); Berth has
    /// local accounts only, so it is always false.
    pub admin_role_in_auth: bool,
    #[schema(format = DateTime)]
    pub creation_time: String,
    #[schema(format = DateTime)]
    pub update_time: String,
}

impl From<User> for UserResp {
    fn from(user: User) -> Self {
        UserResp {
            user_id: user.id,
            username: user.username,
            email: user.email,
            realname: user.realname,
            comment: user.comment,
            sysadmin_flag: user.sysadmin,
            admin_role_in_auth: false,
            creation_time: harbor_time(user.created_at),
            update_time: harbor_time(user.updated_at),
        }
    }
}

/// Harbor's `UserCreationReq`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UserCreationReq {
    /// 1–255 characters, none of `,"~#$%`.
    pub username: Option<String>,
    /// Required; unique (case-insensitively).
    pub email: Option<String>,
    pub realname: Option<String>,
    /// At most 30 characters.
    pub comment: Option<String>,
    /// 8–128 characters with an upper-case letter, a lower-case letter and a digit.
    pub password: Option<String>,
}

/// Harbor's `UserProfile`; omitted fields keep their value.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UserProfile {
    pub email: Option<String>,
    pub realname: Option<String>,
    pub comment: Option<String>,
}

/// Harbor's `PasswordReq`.
#[derive(Deserialize, ToSchema)]
pub struct PasswordReq {
    /// Required when users change their own password.
    pub old_password: Option<String>,
    pub new_password: Option<String>,
}

/// Harbor's `UserSysAdminFlag`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UserSysAdminFlag {
    pub sysadmin_flag: Option<bool>,
}

/// Harbor's `UserSearchRespItem`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserSearchRespItem {
    pub user_id: i64,
    pub username: String,
}

/// Filters of `GET /users` besides `q`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserFilterParams {
    /// Username contains this (fuzzy).
    pub username: Option<String>,
    /// E-mail contains this (fuzzy).
    pub email: Option<String>,
}

/// Parameters of `GET /users/search`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserSearchParams {
    /// Username contains this (required).
    pub username: Option<String>,
}

/// The users in the caller's view of them: an administrator, or the user themself.
fn is_self_or_admin(caller: &Caller, user_id: i64) -> bool {
    caller.principal.is_sysadmin() || is_self(caller, user_id)
}

fn is_self(caller: &Caller, user_id: i64) -> bool {
    matches!(&caller.principal, Principal::User(user) if user.id == user_id)
}

/// Without `sort`, users are listed by id.
const DEFAULT_SORT: Sort<'static> = Sort {
    key: "user_id",
    descending: false,
};

fn user_not_found(user_id: i64) -> ApiError {
    ApiError::not_found(format!("user {user_id} not found"))
}

/// User `user_id`, or `NOT_FOUND`.
async fn find_user(conn: &mut PgConnection, user_id: i64) -> ApiResult<User> {
    users::find(conn, user_id)
        .await?
        .ok_or_else(|| user_not_found(user_id))
}

/// A duplicate username or e-mail address as `CONFLICT`.
fn on_duplicate(e: sqlx::Error) -> ApiError {
    let duplicate_name = ApiError::Conflict("username already exists".to_owned());
    match ApiError::on_constraint(e, "users_username_key", duplicate_name) {
        ApiError::Database(e) => ApiError::on_constraint(
            e,
            "users_email_unique",
            ApiError::Conflict("email already exists".to_owned()),
        ),
        other => other,
    }
}

fn weak_password() -> ApiError {
    ApiError::bad_request(
        "the password or secret must be longer than 8 chars with at least 1 uppercase letter, \
         1 lowercase letter and 1 number",
    )
}

/// List users (system administrators only).
///
/// `q` keys: `username` and `email`, exact (`k=v`) or fuzzy (`k=~v`). `sort`: `user_id`
/// (default), `username`, `email`, `realname`, `creation_time` or `update_time`.
#[utoipa::path(
    get,
    path = "/users",
    tag = "user",
    params(ListParams, UserFilterParams),
    responses(
        (status = 200, description = "One page of users", body = [UserResp],
         headers(("X-Total-Count" = i64, description = "Users matching"),
                 ("Link" = String, description = "Previous and next pages"))),
        (status = 400, description = "Malformed q or sort", body = ErrorsBody),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 422, description = "page or page_size out of range", body = ErrorsBody),
    )
)]
async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(params): ApiQuery<ListParams>,
    ApiQuery(filters): ApiQuery<UserFilterParams>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let page = params.page()?;
    let query = params.query()?;
    query.only(&["username", "email"])?;
    let sort = params.sort(users::SORT_KEYS, DEFAULT_SORT)?;
    // Harbor's undocumented `username` / `email` parameters are fuzzy and win over `q`.
    let filter = UserFilter {
        username_like: match &filters.username {
            Some(v) => Some(contains_pattern(v)),
            None => query.like_pattern("username")?,
        },
        email_like: match &filters.email {
            Some(v) => Some(contains_pattern(v)),
            None => query.like_pattern("email")?,
        },
    };
    let mut conn = state.db.acquire().await?;
    let total = users::count(&mut conn, &filter).await?;
    let found = users::list(&mut conn, &filter, sort, page.limit(), page.offset()).await?;
    let items: Vec<UserResp> = found.into_iter().map(UserResp::from).collect();
    Ok(pagination::paged(&uri, page, total, items))
}

/// Create a local user (system administrators only).
#[utoipa::path(
    post,
    path = "/users",
    tag = "user",
    request_body = UserCreationReq,
    responses(
        (status = 201, description = "Created",
         headers(("Location" = String, description = "/api/v2.0/users/{user_id}"))),
        (status = 400, description = "Invalid field or weak password", body = ErrorsBody),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 409, description = "Username or e-mail taken", body = ErrorsBody),
    )
)]
async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<UserCreationReq>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let username = req.username.unwrap_or_default();
    users::check_username(&username).map_err(ApiError::BadRequest)?;
    let email = req.email.unwrap_or_default();
    users::check_email(&email).map_err(ApiError::BadRequest)?;
    // Harbor requires a real name; Berth accepts its absence (an empty one), which
    // Harbor clients never rely on being refused.
    let realname = req.realname.unwrap_or_default();
    if !realname.is_empty() {
        users::check_realname(&realname).map_err(ApiError::BadRequest)?;
    }
    let comment = req.comment.unwrap_or_default();
    users::check_comment(&comment).map_err(ApiError::BadRequest)?;
    let secret = req.password.unwrap_or_default();
    if !password::is_strong_secret(&secret) {
        return Err(weak_password());
    }
    let new = NewUser {
        password_hash: password::hash_blocking(secret).await?,
        username,
        email,
        realname,
        comment,
    };
    let audit = caller.audit("create", "user", new.username.clone(), None);
    let mut conn = state.db.acquire().await?;
    let user = users::create(&mut conn, &new, &audit)
        .await
        .map_err(on_duplicate)?;
    Ok(json::created(&format!("{BASE_PATH}/users/{}", user.id)))
}

/// The calling user (users only: robots get 412, as in Harbor).
#[utoipa::path(
    get,
    path = "/users/current",
    tag = "user",
    responses(
        (status = 200, description = "The caller", body = UserResp),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 412, description = "The caller is not a user", body = ErrorsBody),
    )
)]
async fn current_user(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<JsonBody<UserResp>> {
    caller.require_authenticated()?;
    let Principal::User(identity) = &caller.principal else {
        return Err(ApiError::Precondition(format!(
            "get current user not available for security context: {}",
            caller.principal.name()
        )));
    };
    let mut conn = state.db.acquire().await?;
    let user = find_user(&mut conn, identity.id).await?;
    Ok(JsonBody(user.into()))
}

/// Search users by username (any authenticated caller), for member pickers.
#[utoipa::path(
    get,
    path = "/users/search",
    tag = "user",
    params(UserSearchParams, PageParams),
    responses(
        (status = 200, description = "One page of matching users", body = [UserSearchRespItem],
         headers(("X-Total-Count" = i64, description = "Users matching"),
                 ("Link" = String, description = "Previous and next pages"))),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 422, description = "username missing, or page out of range", body = ErrorsBody),
    )
)]
async fn search_users(
    State(state): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(params): ApiQuery<UserSearchParams>,
    ApiQuery(paging): ApiQuery<PageParams>,
) -> ApiResult<Response> {
    caller.require_authenticated()?;
    let page = paging.validate()?;
    let Some(username) = params.username else {
        return Err(ApiError::Unprocessable(
            "validation failure list:\nusername in query is required".to_owned(),
        ));
    };
    let pattern = contains_pattern(&username);
    let mut conn = state.db.acquire().await?;
    let total = users::count_by_username(&mut conn, &pattern).await?;
    let found = users::search_by_username(&mut conn, &pattern, page.limit(), page.offset()).await?;
    let items: Vec<UserSearchRespItem> = found
        .into_iter()
        .map(|u| UserSearchRespItem {
            user_id: u.id,
            username: u.username,
        })
        .collect();
    Ok(pagination::paged(&uri, page, total, items))
}

/// A user (system administrators, or the user themself).
#[utoipa::path(
    get,
    path = "/users/{user_id}",
    tag = "user",
    params(("user_id" = i64, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The user", body = UserResp),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Another user, and not an administrator", body = ErrorsBody),
        (status = 404, description = "No such user", body = ErrorsBody),
    )
)]
async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<i64>,
) -> ApiResult<JsonBody<UserResp>> {
    caller.require(is_self_or_admin(&caller, user_id))?;
    let mut conn = state.db.acquire().await?;
    let user = find_user(&mut conn, user_id).await?;
    Ok(JsonBody(user.into()))
}

/// Change a user's e-mail, real name or comment (administrators, or the user themself).
#[utoipa::path(
    put,
    path = "/users/{user_id}",
    tag = "user",
    params(("user_id" = i64, Path, description = "The user's id")),
    request_body = UserProfile,
    responses(
        (status = 200, description = "Updated"),
        (status = 400, description = "Invalid field", body = ErrorsBody),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Another user, and not an administrator", body = ErrorsBody),
        (status = 404, description = "No such user", body = ErrorsBody),
        (status = 409, description = "E-mail taken", body = ErrorsBody),
    )
)]
async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<i64>,
    ApiJson(profile): ApiJson<UserProfile>,
) -> ApiResult<Response> {
    caller.require(is_self_or_admin(&caller, user_id))?;
    if let Some(email) = &profile.email {
        users::check_email(email).map_err(ApiError::BadRequest)?;
    }
    if let Some(realname) = &profile.realname {
        users::check_realname(realname).map_err(ApiError::BadRequest)?;
    }
    if let Some(comment) = &profile.comment {
        users::check_comment(comment).map_err(ApiError::BadRequest)?;
    }
    let mut conn = state.db.acquire().await?;
    let user = find_user(&mut conn, user_id).await?;
    let change = ProfileChange {
        email: profile.email,
        realname: profile.realname,
        comment: profile.comment,
    };
    let audit = caller.audit("update", "user", user.username, None);
    users::update_profile(&mut conn, user_id, &change, &audit)
        .await
        .map_err(on_duplicate)?
        .ok_or_else(|| user_not_found(user_id))?;
    Ok(json::ok_empty())
}

/// Delete a user (system administrators only; never themselves).
#[utoipa::path(
    delete,
    path = "/users/{user_id}",
    tag = "user",
    params(("user_id" = i64, Path, description = "The user's id")),
    responses(
        (status = 200, description = "Deleted"),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not an administrator, or the caller themself", body = ErrorsBody),
        (status = 404, description = "No such user", body = ErrorsBody),
    )
)]
async fn delete_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<i64>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    if is_self(&caller, user_id) {
        return Err(ApiError::Forbidden(format!(
            "User with ID {user_id} cannot be deleted: it is the caller"
        )));
    }
    let mut conn = state.db.acquire().await?;
    let user = find_user(&mut conn, user_id).await?;
    let audit = caller.audit("delete", "user", user.username, None);
    if !users::delete(&mut conn, user_id, &audit).await? {
        return Err(user_not_found(user_id));
    }
    Ok(json::ok_empty())
}

/// Change a user's password. Users changing their own must give the current one;
/// administrators changing someone else's need not.
#[utoipa::path(
    put,
    path = "/users/{user_id}/password",
    tag = "user",
    params(("user_id" = i64, Path, description = "The user's id")),
    request_body = PasswordReq,
    responses(
        (status = 200, description = "Changed"),
        (status = 400, description = "Weak new password, or the same as the old one", body = ErrorsBody),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Wrong current password, or another user", body = ErrorsBody),
        (status = 404, description = "No such user", body = ErrorsBody),
    )
)]
async fn set_password(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<i64>,
    ApiJson(req): ApiJson<PasswordReq>,
) -> ApiResult<Response> {
    caller.require(is_self_or_admin(&caller, user_id))?;
    let mut conn = state.db.acquire().await?;
    let login = users::find_login_by_id(&mut conn, user_id)
        .await?
        .ok_or_else(|| user_not_found(user_id))?;
    // Hashing takes tens of milliseconds: no connection is held meanwhile.
    drop(conn);
    if is_self(&caller, user_id) {
        let old = req.old_password.unwrap_or_default();
        if !password::verify_blocking(old, login.password_hash.clone()).await? {
            return Err(ApiError::Forbidden(
                "Current password is incorrect".to_owned(),
            ));
        }
    }
    let new = req.new_password.unwrap_or_default();
    if !password::is_strong_secret(&new) {
        return Err(weak_password());
    }
    if password::verify_blocking(new.clone(), login.password_hash).await? {
        return Err(ApiError::bad_request(
            "New password is identical to old password",
        ));
    }
    let hash = password::hash_blocking(new).await?;
    let audit = caller.audit("change_password", "user", login.username, None);
    let mut conn = state.db.acquire().await?;
    if !users::set_password_hash(&mut conn, user_id, &hash, &audit).await? {
        return Err(user_not_found(user_id));
    }
    Ok(json::ok_empty())
}

/// Grant or revoke system administration (administrators only; not on themselves).
#[utoipa::path(
    put,
    path = "/users/{user_id}/sysadmin",
    tag = "user",
    params(("user_id" = i64, Path, description = "The user's id")),
    request_body = UserSysAdminFlag,
    responses(
        (status = 200, description = "Changed"),
        (status = 400, description = "sysadmin_flag missing", body = ErrorsBody),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not an administrator, or the caller themself", body = ErrorsBody),
        (status = 404, description = "No such user", body = ErrorsBody),
    )
)]
async fn set_sysadmin(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<i64>,
    ApiJson(req): ApiJson<UserSysAdminFlag>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    // An administrator who could drop their own flag could leave nobody to manage
    // Berth; another administrator has to do it.
    if is_self(&caller, user_id) {
        return Err(ApiError::Forbidden(
            "administrators cannot change their own sysadmin flag".to_owned(),
        ));
    }
    let flag = req
        .sysadmin_flag
        .ok_or_else(|| ApiError::bad_request("sysadmin_flag is required"))?;
    let mut conn = state.db.acquire().await?;
    let user = find_user(&mut conn, user_id).await?;
    let audit = caller.audit("set_sysadmin", "user", user.username, None);
    if !users::set_sysadmin(&mut conn, user_id, flag, &audit).await? {
        return Err(user_not_found(user_id));
    }
    Ok(json::ok_empty())
}
