//! `/robots`: robot accounts in Harbor's v2 model, the credentials CI systems and
//! replication peers use. System robots are managed by system administrators, project
//! robots by those who manage the project's robots. A secret is shown once, at creation
//! or refresh, and stored only as an Argon2id hash.

use axum::extract::{OriginalUri, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_access::password;
use berth_access::robots::{
    self, NewRobot, Robot, RobotAccess, RobotChange, RobotFilter, RobotLevel, RobotPermission,
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorsBody};
use super::extract::{ApiPath, ApiQuery, Caller, ProjectKey};
use super::json::{self, ApiJson, JsonBody};
use super::pagination;
use super::project_access::ProjectAccess;
use super::query::{ListParams, Sort};
use super::{harbor_time, BASE_PATH};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_robots, create_robot))
        .routes(routes!(
            get_robot,
            update_robot,
            refresh_secret,
            delete_robot
        ))
}

/// Length of generated secrets: well inside Harbor's 8–128 and 190 bits of entropy.
const SECRET_LENGTH: usize = 32;

/// Harbor's `Access`: one resource and action a permission grants.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Access {
    /// e.g. `repository`, `artifact`, `tag`, or `*`.
    pub resource: String,
    /// e.g. `pull`, `push`, `delete`, `list`, `read`, or `*`.
    pub action: String,
    /// `allow` (the default) or `deny`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
}

/// Harbor's `RobotPermission`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = RobotPermission)]
pub struct Permission {
    /// `project` or `system`.
    pub kind: String,
    /// A project name or `*` for kind `project`; `/` for kind `system`.
    pub namespace: String,
    pub access: Vec<Access>,
}

impl From<Permission> for RobotPermission {
    fn from(p: Permission) -> Self {
        RobotPermission {
            kind: p.kind,
            namespace: p.namespace,
            access: p
                .access
                .into_iter()
                .map(|a| RobotAccess {
                    resource: a.resource,
                    action: a.action,
                    effect: a.effect,
                })
                .collect(),
        }
    }
}

impl From<RobotPermission> for Permission {
    fn from(p: RobotPermission) -> Self {
        Permission {
            kind: p.kind,
            namespace: p.namespace,
            access: p
                .access
                .into_iter()
                .map(|a| Access {
                    resource: a.resource,
                    action: a.action,
                    effect: a.effect,
                })
                .collect(),
        }
    }
}

/// Harbor's `Robot` as returned: never with a secret.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Robot)]
pub struct RobotResp {
    pub id: i64,
    /// With the prefix: `robot$<project>+<name>` or `robot$<name>`.
    pub name: String,
    pub description: String,
    /// `system` or `project`.
    pub level: String,
    /// Days; −1 never expires.
    pub duration: i64,
    /// Unix seconds; −1 never.
    pub expires_at: i64,
    /// Always true: every Berth robot is a v2 robot.
    pub editable: bool,
    pub disable: bool,
    pub permissions: Vec<Permission>,
    #[schema(format = DateTime)]
    pub creation_time: String,
    #[schema(format = DateTime)]
    pub update_time: String,
}

impl From<Robot> for RobotResp {
    fn from(robot: Robot) -> Self {
        RobotResp {
            id: robot.id,
            name: robot.login_name(),
            expires_at: robot.expires_at_unix(),
            description: robot.description,
            level: robot.level.as_str().to_owned(),
            duration: robot.duration_days,
            editable: true,
            disable: robot.disabled,
            permissions: robot
                .permissions
                .into_iter()
                .map(Permission::from)
                .collect(),
            creation_time: harbor_time(robot.created_at),
            update_time: harbor_time(robot.updated_at),
        }
    }
}

/// Harbor's `RobotCreate`.
#[derive(Deserialize, ToSchema)]
pub struct RobotCreate {
    /// `^[a-z0-9]+(?:[._-][a-z0-9]+)*$`, without prefix or project.
    pub name: Option<String>,
    pub description: Option<String>,
    /// A caller-chosen secret (8–128 characters with upper, lower and digit); omitted or
    /// empty: Berth generates one.
    pub secret: Option<String>,
    /// `system` or `project`.
    pub level: Option<String>,
    pub disable: Option<bool>,
    /// Days from −1 (never expires) below MaxInt32; 0 or omitted is 30.
    pub duration: Option<i64>,
    pub permissions: Option<Vec<Permission>>,
}

/// Harbor's `RobotCreated`: the only time the generated secret is shown.
#[derive(Serialize, ToSchema)]
pub struct RobotCreated {
    pub id: i64,
    pub name: String,
    pub secret: String,
    #[schema(format = DateTime)]
    pub creation_time: String,
    pub expires_at: i64,
}

/// Harbor's `Robot` as a PUT body; omitted fields keep their value, and fields Harbor
/// ignores on update (`id`, `secret`, `expires_at`, times) are ignored.
#[derive(Deserialize, ToSchema)]
pub struct RobotUpdate {
    /// Must equal the stored name, with its prefix.
    pub name: Option<String>,
    /// Must equal the stored level.
    pub level: Option<String>,
    pub description: Option<String>,
    pub disable: Option<bool>,
    /// A changed duration recomputes `expires_at` from the creation time.
    pub duration: Option<i64>,
    /// Replaces the permissions.
    pub permissions: Option<Vec<Permission>>,
}

/// Harbor's `RobotSec`. In a request: the new secret, or empty/omitted to generate one.
/// In a response: the generated secret, omitted when the caller chose it.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RobotSec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// Without `sort`, robots are listed by id.
const DEFAULT_SORT: Sort<'static> = Sort {
    key: "id",
    descending: false,
};

fn robot_not_found(robot_id: i64) -> ApiError {
    ApiError::not_found(format!("robot {robot_id} not found"))
}

fn weak_secret() -> ApiError {
    ApiError::bad_request(
        "the secret must longer than 8 chars with at least 1 uppercase letter, \
         1 lowercase letter and 1 number",
    )
}

fn parse_level(level: Option<&str>) -> ApiResult<RobotLevel> {
    let level = level.unwrap_or_default();
    RobotLevel::parse(level)
        .ok_or_else(|| ApiError::bad_request(format!("bad request error level input: {level}")))
}

/// Harbor's shape rules: at least one permission, each with at least one access; a
/// project robot has exactly one, of kind `project`. Also refuses empty resources and
/// actions and effects other than allow/deny.
fn check_permissions_shape(level: RobotLevel, permissions: &[Permission]) -> ApiResult<()> {
    if permissions.is_empty() {
        return Err(ApiError::bad_request("bad request empty permission"));
    }
    for permission in permissions {
        if permission.access.is_empty() {
            return Err(ApiError::bad_request("bad request empty access"));
        }
        for access in &permission.access {
            if access.resource.is_empty() || access.action.is_empty() {
                return Err(ApiError::bad_request(
                    "every access needs a resource and an action",
                ));
            }
            if !matches!(
                access.effect.as_deref(),
                None | Some("allow") | Some("deny")
            ) {
                return Err(ApiError::bad_request("effect must be allow or deny"));
            }
        }
    }
    if level == RobotLevel::Project {
        let [permission] = permissions else {
            return Err(ApiError::bad_request(
                "bad request permission: a project robot takes exactly one permission",
            ));
        };
        if permission.kind != "project" || permission.namespace == "*" {
            return Err(ApiError::bad_request(
                "a project robot's permission must be of kind project and name one project",
            ));
        }
    }
    Ok(())
}

/// The namespaces of a system robot's permissions: `/` for kind `system`; `*` or an
/// existing project for kind `project` (404 otherwise, as Harbor).
async fn check_system_namespaces(
    conn: &mut PgConnection,
    permissions: &[Permission],
) -> ApiResult<()> {
    for permission in permissions {
        match permission.kind.as_str() {
            "system" if permission.namespace == "/" => {}
            "system" => return Err(ApiError::bad_request("unknown namespace")),
            "project" if permission.namespace == "*" => {}
            "project" => {
                let name = &permission.namespace;
                if berth_content::metadata::projects::find_by_name(&mut *conn, name)
                    .await?
                    .is_none()
                {
                    return Err(ApiError::not_found(format!("project {name} not found")));
                }
            }
            _ => return Err(ApiError::bad_request("unknown robot kind")),
        }
    }
    Ok(())
}

/// Checks the caller may manage `robot`; returns its project for project robots. A
/// project the caller cannot even see is a plain 403 here: the robot's id was given,
/// not the project's.
async fn require_robot_rights(
    conn: &mut PgConnection,
    caller: &Caller,
    robot: &Robot,
) -> ApiResult<Option<ProjectAccess>> {
    let Some(project_id) = robot.project_id else {
        caller.require_sysadmin()?;
        return Ok(None);
    };
    let access = match ProjectAccess::resolve(conn, caller, &ProjectKey::Id(project_id)).await {
        Ok(access) => access,
        Err(ApiError::NotFound(_)) => return Err(ApiError::forbidden()),
        Err(e) => return Err(e),
    };
    access.require(caller, access.can_manage_robots())?;
    Ok(Some(access))
}

/// Looks up robot `robot_id` and checks the caller may manage it.
async fn robot_for_caller(
    conn: &mut PgConnection,
    caller: &Caller,
    robot_id: i64,
) -> ApiResult<(Robot, Option<ProjectAccess>)> {
    caller.require_authenticated()?;
    let robot = robots::find(&mut *conn, robot_id)
        .await?
        .ok_or_else(|| robot_not_found(robot_id))?;
    let project = require_robot_rights(conn, caller, &robot).await?;
    Ok((robot, project))
}

/// The caller's secret if given (checked for strength), or a generated one; and
/// whether it was generated (then it is shown).
fn choose_secret(given: Option<String>) -> ApiResult<(String, bool)> {
    match given.filter(|s| !s.is_empty()) {
        Some(secret) if password::is_strong_secret(&secret) => Ok((secret, false)),
        Some(_) => Err(weak_secret()),
        None => Ok((password::generate_secret(SECRET_LENGTH), true)),
    }
}

/// List robots: a project's (`q=Level=project,ProjectID=<id>`, for those who manage
/// its robots) or the system robots (administrators).
///
/// `q` keys: `Level=project,ProjectID=<id>` for a project's robots (keys are
/// case-sensitive); without `Level`, system robots. `name` (exact or `~fuzzy`) filters
/// by name. `sort`: `id` (default), `name`, `creation_time`, `update_time` or
/// `expires_at`.
#[utoipa::path(
    get,
    path = "/robots",
    tag = "robot",
    params(ListParams),
    responses(
        (status = 200, description = "One page of robots", body = [RobotResp],
         headers(("X-Total-Count" = i64, description = "Robots matching"),
                 ("Link" = String, description = "Previous and next pages"))),
        (status = 400, description = "Malformed q or sort; Level=project without ProjectID", body = ErrorsBody),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "May not manage these robots", body = ErrorsBody),
        (status = 404, description = "No such project", body = ErrorsBody),
        (status = 422, description = "page or page_size out of range", body = ErrorsBody),
    )
)]
async fn list_robots(
    State(state): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Response> {
    caller.require_authenticated()?;
    let page = params.page()?;
    let query = params.query()?;
    query.only(&["Level", "ProjectID", "name"])?;
    let sort = params.sort(robots::SORT_KEYS, DEFAULT_SORT)?;
    // Names are matched as stored, so a `robot$` the caller copied from a response is
    // dropped first.
    let name_like =
        query.like_pattern_of("name", |v| v.strip_prefix(robots::NAME_PREFIX).unwrap_or(v))?;
    // Harbor: without `Level`, only system robots, whatever `ProjectID` says.
    let level = match query.exact("Level")? {
        None => RobotLevel::System,
        Some(level) => parse_level(Some(level))?,
    };
    let mut conn = state.db.acquire().await?;
    let project_id = match level {
        RobotLevel::System => {
            caller.require_sysadmin()?;
            None
        }
        RobotLevel::Project => {
            let raw = query.exact("ProjectID")?.ok_or_else(|| {
                ApiError::bad_request("must with project ID when to query project robots")
            })?;
            let id: i64 = raw
                .parse()
                .map_err(|_| ApiError::bad_request("Project ID must be int type."))?;
            let access = ProjectAccess::resolve(&mut conn, &caller, &ProjectKey::Id(id)).await?;
            access.require(&caller, access.can_manage_robots())?;
            Some(access.project.id)
        }
    };
    let filter = RobotFilter {
        project_id,
        name_like,
    };
    let total = robots::count(&mut conn, &filter).await?;
    let found = robots::list(&mut conn, &filter, sort, page.limit(), page.offset()).await?;
    let items: Vec<RobotResp> = found.into_iter().map(RobotResp::from).collect();
    Ok(pagination::paged(&uri, page, total, items))
}

/// Create a robot account; the answer carries its secret, shown this once.
#[utoipa::path(
    post,
    path = "/robots",
    tag = "robot",
    request_body = RobotCreate,
    responses(
        (status = 201, description = "Created", body = RobotCreated,
         headers(("Location" = String, description = "/api/v2.0/robots/{robot_id}"))),
        (status = 400, description = "Invalid name, level, duration, permissions or secret", body = ErrorsBody),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "May not manage these robots", body = ErrorsBody),
        (status = 404, description = "A permission names an unknown project", body = ErrorsBody),
        (status = 409, description = "A robot of that name exists", body = ErrorsBody),
    )
)]
async fn create_robot(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<RobotCreate>,
) -> ApiResult<Response> {
    caller.require_authenticated()?;
    let name = req.name.unwrap_or_default();
    robots::check_name(&name).map_err(ApiError::BadRequest)?;
    let duration_days =
        robots::check_duration(req.duration.unwrap_or(0)).map_err(ApiError::BadRequest)?;
    let level = parse_level(req.level.as_deref())?;
    let permissions = req.permissions.unwrap_or_default();
    check_permissions_shape(level, &permissions)?;
    let mut conn = state.db.acquire().await?;
    let (stored_name, project_id) = match level {
        RobotLevel::System => {
            caller.require_sysadmin()?;
            check_system_namespaces(&mut conn, &permissions).await?;
            (name, None)
        }
        RobotLevel::Project => {
            let key = ProjectKey::Name(permissions[0].namespace.clone());
            let access = ProjectAccess::resolve(&mut conn, &caller, &key).await?;
            access.require(&caller, access.can_manage_robots())?;
            (
                format!("{}+{name}", access.project.name),
                Some(access.project.id),
            )
        }
    };
    drop(conn);
    let (secret, _generated) = choose_secret(req.secret)?;
    let new = NewRobot {
        secret_hash: password::hash_blocking(secret.clone()).await?,
        name: stored_name,
        description: req.description.unwrap_or_default(),
        level,
        project_id,
        disabled: req.disable.unwrap_or(false),
        duration_days,
        permissions: permissions.into_iter().map(RobotPermission::from).collect(),
        created_by: caller.principal.name().to_owned(),
    };
    let login_name = format!("{}{}", robots::NAME_PREFIX, new.name);
    let audit = caller.audit("create", "robot", login_name.clone(), project_id);
    let mut conn = state.db.acquire().await?;
    let robot = robots::create(&mut conn, &new, &audit).await.map_err(|e| {
        let conflict = ApiError::Conflict(format!("robot {login_name} already exists"));
        ApiError::on_constraint(e, "robots_name_key", conflict)
    })?;
    let location = format!("{BASE_PATH}/robots/{}", robot.id);
    let body = RobotCreated {
        id: robot.id,
        name: robot.login_name(),
        expires_at: robot.expires_at_unix(),
        creation_time: harbor_time(robot.created_at),
        secret,
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        JsonBody(body),
    )
        .into_response())
}

/// A robot account, without its secret.
#[utoipa::path(
    get,
    path = "/robots/{robot_id}",
    tag = "robot",
    params(("robot_id" = i64, Path, description = "The robot's id")),
    responses(
        (status = 200, description = "The robot", body = RobotResp),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "May not manage this robot", body = ErrorsBody),
        (status = 404, description = "No such robot", body = ErrorsBody),
    )
)]
async fn get_robot(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(robot_id): ApiPath<i64>,
) -> ApiResult<JsonBody<RobotResp>> {
    let mut conn = state.db.acquire().await?;
    let (robot, _) = robot_for_caller(&mut conn, &caller, robot_id).await?;
    Ok(JsonBody(robot.into()))
}

/// Update a robot's description, `disable` flag (revocation), duration or
/// permissions. Its name and level cannot change.
#[utoipa::path(
    put,
    path = "/robots/{robot_id}",
    tag = "robot",
    params(("robot_id" = i64, Path, description = "The robot's id")),
    request_body = RobotUpdate,
    responses(
        (status = 200, description = "Updated"),
        (status = 400, description = "Changed name or level; invalid duration or permissions", body = ErrorsBody),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "May not manage this robot", body = ErrorsBody),
        (status = 404, description = "No such robot, or a permission names an unknown project", body = ErrorsBody),
    )
)]
async fn update_robot(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(robot_id): ApiPath<i64>,
    ApiJson(req): ApiJson<RobotUpdate>,
) -> ApiResult<Response> {
    let mut conn = state.db.acquire().await?;
    let (robot, project) = robot_for_caller(&mut conn, &caller, robot_id).await?;
    let name_changed = req.name.as_ref().is_some_and(|n| *n != robot.login_name());
    let level_changed = req
        .level
        .as_ref()
        .is_some_and(|l| l != robot.level.as_str());
    if name_changed || level_changed {
        return Err(ApiError::bad_request(
            "cannot update the level or name of robot",
        ));
    }
    let duration_days = req
        .duration
        .map(robots::check_duration)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    if let Some(permissions) = &req.permissions {
        check_permissions_shape(robot.level, permissions)?;
        match &project {
            // A project robot stays in its project.
            Some(access) if permissions[0].namespace != access.project.name => {
                return Err(ApiError::bad_request(
                    "a project robot's permission must name its own project",
                ));
            }
            Some(_) => {}
            None => check_system_namespaces(&mut conn, permissions).await?,
        }
    }
    let change = RobotChange {
        description: req.description,
        disabled: req.disable,
        duration_days,
        permissions: req
            .permissions
            .map(|ps| ps.into_iter().map(RobotPermission::from).collect()),
    };
    let audit = caller.audit("update", "robot", robot.login_name(), robot.project_id);
    robots::update(&mut conn, robot_id, &change, &audit)
        .await?
        .ok_or_else(|| robot_not_found(robot_id))?;
    Ok(json::ok_empty())
}

/// Refresh a robot's secret: generate one (empty or omitted `secret`; it is returned
/// this once) or set the caller's (checked for strength; not echoed). The old secret
/// stops working at once.
#[utoipa::path(
    patch,
    path = "/robots/{robot_id}",
    tag = "robot",
    params(("robot_id" = i64, Path, description = "The robot's id")),
    request_body = RobotSec,
    responses(
        (status = 200, description = "Refreshed", body = RobotSec),
        (status = 400, description = "Weak secret", body = ErrorsBody),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "May not manage this robot", body = ErrorsBody),
        (status = 404, description = "No such robot", body = ErrorsBody),
    )
)]
async fn refresh_secret(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(robot_id): ApiPath<i64>,
    ApiJson(req): ApiJson<RobotSec>,
) -> ApiResult<JsonBody<RobotSec>> {
    let mut conn = state.db.acquire().await?;
    let (robot, _) = robot_for_caller(&mut conn, &caller, robot_id).await?;
    drop(conn);
    let (secret, generated) = choose_secret(req.secret)?;
    let hash = password::hash_blocking(secret.clone()).await?;
    let audit = caller.audit(
        "refresh_secret",
        "robot",
        robot.login_name(),
        robot.project_id,
    );
    let mut conn = state.db.acquire().await?;
    if !robots::set_secret_hash(&mut conn, robot_id, &hash, &audit).await? {
        return Err(robot_not_found(robot_id));
    }
    Ok(JsonBody(RobotSec {
        secret: generated.then_some(secret),
    }))
}

/// Delete a robot account; its secret stops working at once.
#[utoipa::path(
    delete,
    path = "/robots/{robot_id}",
    tag = "robot",
    params(("robot_id" = i64, Path, description = "The robot's id")),
    responses(
        (status = 200, description = "Deleted"),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "May not manage this robot", body = ErrorsBody),
        (status = 404, description = "No such robot", body = ErrorsBody),
    )
)]
async fn delete_robot(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(robot_id): ApiPath<i64>,
) -> ApiResult<Response> {
    let mut conn = state.db.acquire().await?;
    let (robot, _) = robot_for_caller(&mut conn, &caller, robot_id).await?;
    let audit = caller.audit("delete", "robot", robot.login_name(), robot.project_id);
    if !robots::delete(&mut conn, robot_id, &audit).await? {
        return Err(robot_not_found(robot_id));
    }
    Ok(json::ok_empty())
}
