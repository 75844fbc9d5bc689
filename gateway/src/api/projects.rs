//! Projects on the management API: list, existence check, create, get, update, delete,
//! summary, deletability, and the per-key metadata endpoints, in Harbor's shapes.
//!
//! A project's `public` flag is a column (every pull checks it); Harbor's other
//! metadata lives in `projects.metadata` as strings. The API shows both as one
//! `metadata` object, as Harbor does.

use std::collections::BTreeMap;

use axum::extract::{OriginalUri, State};
use axum::http::HeaderMap;
use axum::response::Response;
use berth_access::{audit, members, Principal, ProjectRole};
use berth_content::metadata::projects::{
    self, NewProject, ProjectDetail, ProjectFilter, ProjectName, ProjectSettings, Visibility,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorsBody};
use super::extract::{ApiPath, ApiQuery, Caller, ProjectKey};
use super::json::{created, ok_empty, ApiJson, JsonBody};
use super::pagination::paged;
use super::project_access::ProjectAccess;
use super::query::{contains_pattern, ListParams, Sort};
use super::{harbor_time, BASE_PATH};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_projects, head_project, create_project))
        .routes(routes!(get_project, update_project, delete_project))
        .routes(routes!(project_summary))
        .routes(routes!(project_deletable))
        .routes(routes!(list_metadata, add_metadata))
        .routes(routes!(list_metadata_slash, add_metadata_slash))
        .routes(routes!(
            get_metadata_entry,
            update_metadata_entry,
            delete_metadata_entry
        ))
}

// ----- Harbor's models ------------------------------------------------------------------

/// Harbor's `Project`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Project {
    pub project_id: i64,
    /// Absent once the owner's account is deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_name: Option<String>,
    pub name: String,
    pub creation_time: String,
    pub update_time: String,
    pub deleted: bool,
    pub togglable: bool,
    /// The caller's role id in the project; 0 when not a member (deprecated by Harbor).
    pub current_user_role_id: i64,
    pub current_user_role_ids: Vec<i64>,
    /// Repositories holding at least one artifact.
    pub repo_count: i64,
    /// Every value is a string: `public` is `"true"` or `"false"`.
    pub metadata: BTreeMap<String, String>,
    /// Always empty: Berth has no per-project CVE allowlists yet.
    pub cve_allowlist: CveAllowlist,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CveAllowlist {
    pub project_id: i64,
    pub items: Vec<CveAllowlistItem>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CveAllowlistItem {
    pub cve_id: String,
}

impl Project {
    fn from_detail(detail: ProjectDetail) -> Project {
        let role_ids: Vec<i64> = detail.viewer_role_id.map(i64::from).into_iter().collect();
        let settings = ProjectSettings {
            public: detail.public,
            metadata: detail.metadata,
        };
        Project {
            project_id: detail.id,
            owner_id: detail.owner_id,
            owner_name: detail.owner_name,
            name: detail.name,
            creation_time: harbor_time(detail.created_at),
            update_time: harbor_time(detail.updated_at),
            deleted: false,
            togglable: true,
            current_user_role_id: role_ids.first().copied().unwrap_or(0),
            current_user_role_ids: role_ids,
            repo_count: detail.repo_count,
            metadata: shown_metadata(&settings),
            cve_allowlist: CveAllowlist {
                project_id: detail.id,
                items: Vec::new(),
            },
        }
    }
}

/// Harbor's `ProjectReq`. Every field is optional: harborapi sends only what the caller
/// set, and PUT is a partial update.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ProjectReq {
    /// Required on create; ignored on update (projects are not renamed).
    pub project_name: Option<String>,
    /// Deprecated: used when `metadata.public` is absent.
    pub public: Option<bool>,
    /// String values; `public` is `"true"` or `"false"`.
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub metadata: Option<BTreeMap<String, Value>>,
    /// Accepted only empty: CVE allowlists are not supported yet.
    #[schema(value_type = Option<Object>)]
    pub cve_allowlist: Option<Value>,
    /// Accepted only as null, -1 or 0 (unlimited): quotas are not supported yet.
    pub storage_limit: Option<i64>,
    /// Must be null: proxy cache projects are not supported yet.
    pub registry_id: Option<i64>,
    /// Must be null: only proxy cache projects take it.
    pub retention_days: Option<i64>,
}

/// Harbor's `ProjectSummary`; the member counts are shown to members and system
/// administrators only.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectSummary {
    pub repo_count: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_admin_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintainer_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub developer_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limited_guest_count: Option<i64>,
}

/// Harbor's `ProjectDeletable`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectDeletable {
    pub deletable: bool,
    /// Why not; empty when deletable.
    pub message: String,
}

// ----- metadata rules -------------------------------------------------------------------

/// Harbor's boolean metadata, stored as `"true"` / `"false"`.
const BOOL_KEYS: &[&str] = &[
    "public",
    "enable_content_trust",
    "enable_content_trust_cosign",
    "prevent_vul",
    "auto_scan",
    "auto_sbom_generation",
    "reuse_sys_cve_allowlist",
];

/// Proxy-cache settings, which Harbor drops on projects that are not proxy caches (all
/// of Berth's).
const PROXY_KEYS: &[&str] = &[
    "proxy_speed_kb",
    "max_upstream_conn",
    "proxy_cache_filter_pattern",
    "proxy_cache_filter_kind",
];

/// Bounds on free-form metadata, so a project row stays small.
const MAX_METADATA_KEYS: usize = 64;
const MAX_METADATA_KEY_LEN: usize = 128;
const MAX_METADATA_VALUE_LEN: usize = 1024;

/// Harbor's metadata as shown: the stored keys plus `public`.
fn shown_metadata(settings: &ProjectSettings) -> BTreeMap<String, String> {
    let mut shown = settings.metadata.clone();
    shown.insert("public".to_owned(), settings.public.to_string());
    shown
}

/// Go's `strconv.ParseBool`, which Harbor validates boolean metadata with.
fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A metadata value as Harbor's string: strings as they are; booleans and numbers
/// (which some clients send) spelled out. `None` for null, which means "not set".
fn metadata_string(key: &str, value: &Value) -> ApiResult<Option<String>> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Array(_) | Value::Object(_) => Err(ApiError::bad_request(format!(
            "metadata {key}: the value must be a string"
        ))),
    }
}

/// Checks one metadata entry and returns its stored form, or `None` for keys Berth
/// ignores (proxy-cache settings, an empty `retention_id`).
fn normalize_entry(key: &str, value: &str) -> ApiResult<Option<String>> {
    let invalid = || ApiError::bad_request(format!("invalid value of metadata {key}: {value:?}"));
    if BOOL_KEYS.contains(&key) {
        return parse_go_bool(value)
            .map(|b| Some(b.to_string()))
            .ok_or_else(invalid);
    }
    if PROXY_KEYS.contains(&key) {
        return Ok(None);
    }
    match key {
        "severity" => {
            let lower = value.to_ascii_lowercase();
            match lower.as_str() {
                "none" | "negligible" | "low" | "medium" | "high" | "critical" => Ok(Some(lower)),
                _ => Err(invalid()),
            }
        }
        // Berth has no retention policies, so no project has a retention id to keep.
        "retention_id" if value.is_empty() => Ok(None),
        "retention_id" => Err(ApiError::bad_request(
            "the retention_id in the request's payload should be omitted: tag retention is not supported yet",
        )),
        _ => {
            let key_ok = (1..=MAX_METADATA_KEY_LEN).contains(&key.len())
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
            if !key_ok {
                return Err(ApiError::bad_request(format!(
                    "invalid metadata key {key:?}: 1 to {MAX_METADATA_KEY_LEN} characters of [a-z0-9_.-]"
                )));
            }
            if value.len() > MAX_METADATA_VALUE_LEN {
                return Err(ApiError::bad_request(format!(
                    "metadata {key}: the value is longer than {MAX_METADATA_VALUE_LEN} bytes"
                )));
            }
            Ok(Some(value.to_owned()))
        }
    }
}

/// Sets `key` in `settings` after checking it; returns whether it was stored (ignored
/// keys are not).
fn set_entry(settings: &mut ProjectSettings, key: &str, value: &Value) -> ApiResult<bool> {
    let Some(value) = metadata_string(key, value)? else {
        return Ok(false);
    };
    let Some(value) = normalize_entry(key, &value)? else {
        return Ok(false);
    };
    if key == "public" {
        settings.public = value == "true";
    } else {
        settings.metadata.insert(key.to_owned(), value);
        if settings.metadata.len() > MAX_METADATA_KEYS {
            return Err(ApiError::bad_request(format!(
                "a project holds at most {MAX_METADATA_KEYS} metadata entries"
            )));
        }
    }
    Ok(true)
}

/// Applies a `ProjectReq`'s `public` and `metadata` to `settings` (a merge: keys the
/// request does not name are kept).
fn apply_request(settings: &mut ProjectSettings, req: &ProjectReq) -> ApiResult<()> {
    let metadata = req.metadata.clone().unwrap_or_default();
    let names_public = metadata.get("public").is_some_and(|v| !v.is_null());
    if let (Some(public), false) = (req.public, names_public) {
        settings.public = public;
    }
    for (key, value) in &metadata {
        set_entry(settings, key, value)?;
    }
    Ok(())
}

/// The parts of a `ProjectReq` Berth does not implement: refused unless they ask for
/// nothing.
fn refuse_unsupported(req: &ProjectReq, project_id: Option<i64>) -> ApiResult<()> {
    if req.registry_id.is_some() {
        return Err(ApiError::bad_request(
            "proxy cache projects are not supported yet",
        ));
    }
    if req.retention_days.is_some() {
        return Err(ApiError::bad_request(
            "retention_days is only supported when creating a proxy cache project",
        ));
    }
    if let Some(limit) = req.storage_limit {
        if limit != -1 && limit != 0 {
            return Err(ApiError::bad_request(
                "storage quotas are not supported yet: storage_limit must be -1 (unlimited)",
            ));
        }
    }
    if let Some(allowlist) = &req.cve_allowlist {
        if let Some(id) = allowlist.get("project_id").and_then(Value::as_i64) {
            if id != 0 && Some(id) != project_id {
                return Err(ApiError::bad_request(format!(
                    "project_id in cve_allowlist must be {} but it's {id}",
                    project_id.unwrap_or(0)
                )));
            }
        }
        let has_items = allowlist
            .get("items")
            .and_then(Value::as_array)
            .is_some_and(|items| !items.is_empty());
        if has_items {
            return Err(ApiError::bad_request(
                "project CVE allowlists are not supported yet",
            ));
        }
    }
    Ok(())
}

// ----- handlers -------------------------------------------------------------------------

/// The project list's filters besides `q`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProjectFilterParams {
    /// Part of the project name.
    pub name: Option<String>,
    pub public: Option<bool>,
    /// The owner's username.
    pub owner: Option<String>,
    /// Accepted for compatibility; details are always included.
    pub with_detail: Option<bool>,
}

const SORT_KEYS: [&str; 4] = ["name", "creation_time", "update_time", "project_id"];
const DEFAULT_SORT: Sort<'static> = Sort {
    key: "name",
    descending: false,
};

/// The projects the caller may see, filtered and paged.
///
/// `q` keys: `name` (`name=x` or `name=~x`), `public` (`true`/`false`), `owner` (a
/// username), `project_id` (`project_id=1` or `project_id={1 2}`). `sort`: `name`
/// (default), `creation_time`, `update_time` or `project_id`.
#[utoipa::path(
    get,
    path = "/projects",
    tag = "project",
    operation_id = "listProjects",
    params(ListParams, ProjectFilterParams),
    responses(
        (status = 200, description = "One page of projects, with X-Total-Count and Link", body = Vec<Project>),
        (status = 400, description = "Bad q or sort", body = ErrorsBody),
        (status = 401, description = "Wrong credentials", body = ErrorsBody),
        (status = 422, description = "page or page_size out of range", body = ErrorsBody),
    )
)]
pub async fn list_projects(
    State(state): State<AppState>,
    caller: Caller,
    // The full request URI: `Uri` inside the nested API router lacks `/api/v2.0`,
    // and the Link header must carry it.
    OriginalUri(uri): OriginalUri,
    ApiQuery(params): ApiQuery<ListParams>,
    ApiQuery(filters): ApiQuery<ProjectFilterParams>,
) -> ApiResult<Response> {
    let page = params.page()?;
    let filter = list_filter(&caller.principal, &params, &filters)?;
    let sort = params.sort(&SORT_KEYS, DEFAULT_SORT)?;
    let viewer = match &caller.principal {
        Principal::User(user) => Some(user.id),
        _ => None,
    };
    let mut conn = state.db.acquire().await?;
    let total = projects::count(&mut conn, &filter).await?;
    let rows = projects::list(
        &mut conn,
        &filter,
        sort,
        viewer,
        page.limit(),
        page.offset(),
    )
    .await?;
    let items: Vec<Project> = rows.into_iter().map(Project::from_detail).collect();
    Ok(paged(&uri, page, total, items))
}

/// Which projects the principal may see, narrowed by the request's filters.
fn list_filter(
    principal: &Principal,
    params: &ListParams,
    filters: &ProjectFilterParams,
) -> ApiResult<ProjectFilter> {
    let q = params.query()?;
    q.only(&["name", "public", "owner", "project_id"])?;
    let visibility = match principal {
        Principal::Unrestricted => Visibility::All,
        Principal::User(user) if user.sysadmin => Visibility::All,
        Principal::User(user) => Visibility::Limited {
            member_user_id: Some(user.id),
            names: Vec::new(),
        },
        // A robot sees the projects its permissions name; one covering `*` sees all.
        Principal::Robot(robot) => {
            if robot
                .permissions
                .iter()
                .any(|p| p.kind == "project" && p.namespace == "*")
            {
                Visibility::All
            } else {
                Visibility::Limited {
                    member_user_id: None,
                    names: robot
                        .permissions
                        .iter()
                        .map(|p| p.namespace.clone())
                        .collect(),
                }
            }
        }
        Principal::Anonymous => Visibility::Limited {
            member_user_id: None,
            names: Vec::new(),
        },
    };
    let name_like = match filters.name.as_deref().filter(|n| !n.is_empty()) {
        // Harbor's `name` parameter is a fuzzy match and wins over `q`.
        Some(name) => Some(contains_pattern(name)),
        None => q.like_pattern("name")?,
    };
    let public = match filters.public {
        Some(public) => Some(public),
        None => q
            .exact("public")?
            .map(|v| {
                parse_go_bool(v).ok_or_else(|| {
                    ApiError::bad_request(format!("invalid query value public={v}: true or false"))
                })
            })
            .transpose()?,
    };
    let owner = match filters.owner.as_deref().filter(|o| !o.is_empty()) {
        Some(owner) => Some(owner.to_owned()),
        None => q.exact("owner")?.map(str::to_owned),
    };
    let ids = q
        .one_of("project_id")?
        .map(|values| {
            values
                .iter()
                .map(|v| {
                    v.parse::<i64>().map_err(|_| {
                        ApiError::bad_request(format!("invalid query value project_id={v}"))
                    })
                })
                .collect::<ApiResult<Vec<i64>>>()
        })
        .transpose()?;
    Ok(ProjectFilter {
        visibility,
        name_like,
        public,
        owner,
        ids,
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HeadProjectParams {
    /// The project name to look for.
    pub project_name: Option<String>,
}

/// Whether a project of that name exists (and the caller may see it).
#[utoipa::path(
    head,
    path = "/projects",
    tag = "project",
    operation_id = "headProject",
    params(HeadProjectParams),
    responses(
        (status = 200, description = "The project exists"),
        (status = 401, description = "Private project, anonymous caller"),
        (status = 404, description = "No such project"),
        (status = 422, description = "project_name missing"),
    )
)]
pub async fn head_project(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<HeadProjectParams>,
) -> ApiResult<Response> {
    let name = params
        .project_name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::Unprocessable(
                "validation failure list:\nproject_name in query is required".to_owned(),
            )
        })?;
    let mut conn = state.db.acquire().await?;
    ProjectAccess::resolve(&mut conn, &caller, &ProjectKey::Name(name)).await?;
    Ok(ok_empty())
}

/// Creates a project owned by the caller, who becomes its project admin.
#[utoipa::path(
    post,
    path = "/projects",
    tag = "project",
    operation_id = "createProject",
    request_body = ProjectReq,
    params(
        ("X-Resource-Name-In-Location" = Option<bool>, Header,
         description = "`true`: the Location ends in the project name instead of its id"),
    ),
    responses(
        (status = 201, description = "Created; Location: /api/v2.0/projects/{id}"),
        (status = 400, description = "Bad JSON, name or metadata", body = ErrorsBody),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "A project-level robot", body = ErrorsBody),
        (status = 409, description = "The name is taken", body = ErrorsBody),
    )
)]
pub async fn create_project(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ProjectReq>,
) -> ApiResult<Response> {
    caller.require_authenticated()?;
    let owner_id = match &caller.principal {
        Principal::User(user) => Some(user.id),
        Principal::Robot(robot) if robot.project_id.is_some() => {
            return Err(ApiError::Forbidden(
                "Only system level robot can create project".to_owned(),
            ))
        }
        // System robots (and everyone when auth is off): the first administrator owns it.
        _ => None,
    };
    let name = req
        .project_name
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("project_name is required"))?;
    let name = ProjectName::parse(name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    refuse_unsupported(&req, None)?;
    let mut settings = ProjectSettings {
        public: false,
        metadata: BTreeMap::new(),
    };
    apply_request(&mut settings, &req)?;

    let new = NewProject {
        name: name.clone(),
        public: settings.public,
        metadata: settings.metadata,
        owner_id,
    };
    let mut tx = state.db.begin().await?;
    let project = projects::create(&mut tx, &new).await.map_err(|e| {
        ApiError::on_constraint(
            e,
            "projects_name_key",
            ApiError::Conflict(format!("the project {} already exists", name.as_str())),
        )
    })?;
    if let Some(owner) = project.owner_id {
        members::add(&mut tx, project.id, owner, ProjectRole::ProjectAdmin).await?;
    }
    let entry = caller.audit("create", "project", name.as_str(), Some(project.id));
    audit::record(&mut tx, &entry).await?;
    tx.commit().await?;

    let name_in_location = headers
        .get("x-resource-name-in-location")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let location = if name_in_location {
        format!("{BASE_PATH}/projects/{}", name.as_str())
    } else {
        format!("{BASE_PATH}/projects/{}", project.id)
    };
    Ok(created(&location))
}

/// The project's full row, for a project just resolved (so it exists unless deleted
/// meanwhile).
async fn detail(
    conn: &mut PgConnection,
    caller: &Caller,
    access: &ProjectAccess,
) -> ApiResult<ProjectDetail> {
    let viewer = match &caller.principal {
        Principal::User(user) => Some(user.id),
        _ => None,
    };
    projects::get_detail(conn, access.project.id, viewer)
        .await?
        .ok_or_else(|| gone(access))
}

fn gone(access: &ProjectAccess) -> ApiError {
    ApiError::not_found(format!("project {} not found", access.project.name))
}

/// The project's settings, locked for the rest of the transaction, so concurrent
/// metadata merges do not lose each other's keys.
async fn lock_settings(
    conn: &mut PgConnection,
    access: &ProjectAccess,
) -> ApiResult<ProjectSettings> {
    projects::settings_for_update(conn, access.project.id)
        .await?
        .ok_or_else(|| gone(access))
}

/// Stores `settings` and records the change as a project update, then commits.
async fn save_settings(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    caller: &Caller,
    access: &ProjectAccess,
    settings: &ProjectSettings,
) -> ApiResult<()> {
    projects::update_settings(
        &mut tx,
        access.project.id,
        settings.public,
        &settings.metadata,
    )
    .await?;
    let entry = caller.audit(
        "update",
        "project",
        access.project.name.as_str(),
        Some(access.project.id),
    );
    audit::record(&mut tx, &entry).await?;
    tx.commit().await?;
    Ok(())
}

/// One project.
#[utoipa::path(
    get,
    path = "/projects/{project_name_or_id}",
    tag = "project",
    operation_id = "getProject",
    params(
        ("project_name_or_id" = String, Path, description = "Project name or id"),
        ("X-Is-Resource-Name" = Option<bool>, Header, description = "`true`: the path holds a name even if it looks like a number"),
    ),
    responses(
        (status = 200, description = "The project", body = Project),
        (status = 401, description = "Private project, anonymous caller", body = ErrorsBody),
        (status = 404, description = "No such project (or not visible to the caller)", body = ErrorsBody),
    )
)]
pub async fn get_project(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(segment): ApiPath<String>,
) -> ApiResult<JsonBody<Project>> {
    let mut conn = state.db.acquire().await?;
    let access = ProjectAccess::resolve_segment(&mut conn, &caller, &segment, &headers).await?;
    let detail = detail(&mut conn, &caller, &access).await?;
    Ok(JsonBody(Project::from_detail(detail)))
}

/// Changes `public` and merges `metadata` (project admins and system administrators).
#[utoipa::path(
    put,
    path = "/projects/{project_name_or_id}",
    tag = "project",
    operation_id = "updateProject",
    request_body = ProjectReq,
    params(
        ("project_name_or_id" = String, Path, description = "Project name or id"),
        ("X-Is-Resource-Name" = Option<bool>, Header, description = "`true`: the path holds a name"),
    ),
    responses(
        (status = 200, description = "Updated"),
        (status = 400, description = "Bad JSON or metadata", body = ErrorsBody),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a project admin", body = ErrorsBody),
        (status = 404, description = "No such project", body = ErrorsBody),
    )
)]
pub async fn update_project(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(segment): ApiPath<String>,
    ApiJson(req): ApiJson<ProjectReq>,
) -> ApiResult<Response> {
    let mut conn = state.db.acquire().await?;
    let access = ProjectAccess::resolve_segment(&mut conn, &caller, &segment, &headers).await?;
    access.require(&caller, access.can_manage())?;
    drop(conn);
    refuse_unsupported(&req, Some(access.project.id))?;
    let mut tx = state.db.begin().await?;
    let mut settings = lock_settings(&mut tx, &access).await?;
    apply_request(&mut settings, &req)?;
    save_settings(tx, &caller, &access, &settings).await?;
    Ok(ok_empty())
}

/// Deletes a project without repositories (project admins and system administrators).
#[utoipa::path(
    delete,
    path = "/projects/{project_name_or_id}",
    tag = "project",
    operation_id = "deleteProject",
    params(
        ("project_name_or_id" = String, Path, description = "Project name or id"),
        ("X-Is-Resource-Name" = Option<bool>, Header, description = "`true`: the path holds a name"),
    ),
    responses(
        (status = 200, description = "Deleted"),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a project admin", body = ErrorsBody),
        (status = 404, description = "No such project", body = ErrorsBody),
        (status = 412, description = "The project still has repositories", body = ErrorsBody),
    )
)]
pub async fn delete_project(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(segment): ApiPath<String>,
) -> ApiResult<Response> {
    let mut conn = state.db.acquire().await?;
    let access = ProjectAccess::resolve_segment(&mut conn, &caller, &segment, &headers).await?;
    access.require(&caller, access.can_manage())?;
    drop(conn);
    let fk_violation =
        || ApiError::Precondition(projects::DeleteBlocker::Repositories.message().to_owned());
    let mut tx = state.db.begin().await?;
    if let Some(blocker) = projects::delete_if_empty(&mut tx, access.project.id)
        .await
        .map_err(|e| ApiError::on_constraint(e, "repositories_project_id_fkey", fk_violation()))?
    {
        return Err(ApiError::Precondition(blocker.message().to_owned()));
    }
    let entry = caller.audit(
        "delete",
        "project",
        access.project.name.as_str(),
        Some(access.project.id),
    );
    audit::record(&mut tx, &entry).await?;
    tx.commit()
        .await
        .map_err(|e| ApiError::on_constraint(e, "repositories_project_id_fkey", fk_violation()))?;
    Ok(ok_empty())
}

/// Repository and member counts.
#[utoipa::path(
    get,
    path = "/projects/{project_name_or_id}/summary",
    tag = "project",
    operation_id = "getProjectSummary",
    params(
        ("project_name_or_id" = String, Path, description = "Project name or id"),
        ("X-Is-Resource-Name" = Option<bool>, Header, description = "`true`: the path holds a name"),
    ),
    responses(
        (status = 200, description = "The summary", body = ProjectSummary),
        (status = 401, description = "Private project, anonymous caller", body = ErrorsBody),
        (status = 404, description = "No such project", body = ErrorsBody),
    )
)]
pub async fn project_summary(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(segment): ApiPath<String>,
) -> ApiResult<JsonBody<ProjectSummary>> {
    let mut conn = state.db.acquire().await?;
    let access = ProjectAccess::resolve_segment(&mut conn, &caller, &segment, &headers).await?;
    let detail = detail(&mut conn, &caller, &access).await?;
    let mut summary = ProjectSummary {
        repo_count: detail.repo_count,
        project_admin_count: None,
        maintainer_count: None,
        developer_count: None,
        guest_count: None,
        limited_guest_count: None,
    };
    // Harbor shows the member counts to those who may list the members.
    if access.can_see_members() {
        let counts = members::role_counts(&mut conn, access.project.id).await?;
        summary.project_admin_count = Some(counts.project_admin);
        summary.maintainer_count = Some(counts.maintainer);
        summary.developer_count = Some(counts.developer);
        summary.guest_count = Some(counts.guest);
        summary.limited_guest_count = Some(counts.limited_guest);
    }
    Ok(JsonBody(summary))
}

/// Whether the project could be deleted now, and why not.
#[utoipa::path(
    get,
    path = "/projects/{project_name_or_id}/_deletable",
    tag = "project",
    operation_id = "getProjectDeletable",
    params(
        ("project_name_or_id" = String, Path, description = "Project name or id"),
        ("X-Is-Resource-Name" = Option<bool>, Header, description = "`true`: the path holds a name"),
    ),
    responses(
        (status = 200, description = "Deletability", body = ProjectDeletable),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a project admin", body = ErrorsBody),
        (status = 404, description = "No such project", body = ErrorsBody),
    )
)]
pub async fn project_deletable(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(segment): ApiPath<String>,
) -> ApiResult<JsonBody<ProjectDeletable>> {
    let mut conn = state.db.acquire().await?;
    let access = ProjectAccess::resolve_segment(&mut conn, &caller, &segment, &headers).await?;
    access.require(&caller, access.can_manage())?;
    let blocker = projects::delete_blocker(&mut conn, access.project.id).await?;
    Ok(JsonBody(ProjectDeletable {
        deletable: blocker.is_none(),
        message: blocker.map(|b| b.message().to_owned()).unwrap_or_default(),
    }))
}

// ----- metadata endpoints -----------------------------------------------------------------

async fn list_metadata_impl(
    state: AppState,
    caller: Caller,
    headers: HeaderMap,
    segment: String,
) -> ApiResult<JsonBody<BTreeMap<String, String>>> {
    let mut conn = state.db.acquire().await?;
    let access = ProjectAccess::resolve_segment(&mut conn, &caller, &segment, &headers).await?;
    let detail = detail(&mut conn, &caller, &access).await?;
    Ok(JsonBody(shown_metadata(&ProjectSettings {
        public: detail.public,
        metadata: detail.metadata,
    })))
}

async fn add_metadata_impl(
    state: AppState,
    caller: Caller,
    headers: HeaderMap,
    segment: String,
    body: BTreeMap<String, Value>,
) -> ApiResult<Response> {
    let mut conn = state.db.acquire().await?;
    let access = ProjectAccess::resolve_segment(&mut conn, &caller, &segment, &headers).await?;
    access.require(&caller, access.can_manage())?;
    drop(conn);
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "at least one metadata key/value pair is required",
        ));
    }
    let mut tx = state.db.begin().await?;
    let mut settings = lock_settings(&mut tx, &access).await?;
    for (key, value) in &body {
        // `public` always exists; other keys must be new (Harbor: 409 on a duplicate).
        if key == "public" || settings.metadata.contains_key(key) {
            return Err(ApiError::Conflict(format!(
                "the metadata {key} already exists; update it with PUT"
            )));
        }
        if !set_entry(&mut settings, key, value)? {
            return Err(ApiError::bad_request(format!(
                "metadata {key} is not supported on this project"
            )));
        }
    }
    save_settings(tx, &caller, &access, &settings).await?;
    Ok(ok_empty())
}

/// The project's metadata.
#[utoipa::path(
    get,
    path = "/projects/{project_name_or_id}/metadatas",
    tag = "projectMetadata",
    operation_id = "listProjectMetadatas",
    params(
        ("project_name_or_id" = String, Path, description = "Project name or id"),
        ("X-Is-Resource-Name" = Option<bool>, Header, description = "`true`: the path holds a name"),
    ),
    responses(
        (status = 200, description = "Every metadata entry", body = BTreeMap<String, String>),
        (status = 401, description = "Private project, anonymous caller", body = ErrorsBody),
        (status = 404, description = "No such project", body = ErrorsBody),
    )
)]
pub async fn list_metadata(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(segment): ApiPath<String>,
) -> ApiResult<JsonBody<BTreeMap<String, String>>> {
    list_metadata_impl(state, caller, headers, segment).await
}

/// The project's metadata (Harbor's swagger spells the path with a trailing slash).
#[utoipa::path(
    get,
    path = "/projects/{project_name_or_id}/metadatas/",
    tag = "projectMetadata",
    operation_id = "listProjectMetadatasSlash",
    params(
        ("project_name_or_id" = String, Path, description = "Project name or id"),
        ("X-Is-Resource-Name" = Option<bool>, Header, description = "`true`: the path holds a name"),
    ),
    responses(
        (status = 200, description = "Every metadata entry", body = BTreeMap<String, String>),
        (status = 401, description = "Private project, anonymous caller", body = ErrorsBody),
        (status = 404, description = "No such project", body = ErrorsBody),
    )
)]
pub async fn list_metadata_slash(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(segment): ApiPath<String>,
) -> ApiResult<JsonBody<BTreeMap<String, String>>> {
    list_metadata_impl(state, caller, headers, segment).await
}

/// Adds metadata entries that do not exist yet (project admins).
#[utoipa::path(
    post,
    path = "/projects/{project_name_or_id}/metadatas",
    tag = "projectMetadata",
    operation_id = "addProjectMetadatas",
    request_body = BTreeMap<String, String>,
    params(
        ("project_name_or_id" = String, Path, description = "Project name or id"),
        ("X-Is-Resource-Name" = Option<bool>, Header, description = "`true`: the path holds a name"),
    ),
    responses(
        (status = 200, description = "Added"),
        (status = 400, description = "Bad JSON, key or value", body = ErrorsBody),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a project admin", body = ErrorsBody),
        (status = 404, description = "No such project", body = ErrorsBody),
        (status = 409, description = "A key exists already", body = ErrorsBody),
    )
)]
pub async fn add_metadata(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(segment): ApiPath<String>,
    ApiJson(body): ApiJson<BTreeMap<String, Value>>,
) -> ApiResult<Response> {
    add_metadata_impl(state, caller, headers, segment, body).await
}

/// Adds metadata entries (the trailing-slash spelling of Harbor's swagger).
#[utoipa::path(
    post,
    path = "/projects/{project_name_or_id}/metadatas/",
    tag = "projectMetadata",
    operation_id = "addProjectMetadatasSlash",
    request_body = BTreeMap<String, String>,
    params(
        ("project_name_or_id" = String, Path, description = "Project name or id"),
        ("X-Is-Resource-Name" = Option<bool>, Header, description = "`true`: the path holds a name"),
    ),
    responses(
        (status = 200, description = "Added"),
        (status = 400, description = "Bad JSON, key or value", body = ErrorsBody),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a project admin", body = ErrorsBody),
        (status = 404, description = "No such project", body = ErrorsBody),
        (status = 409, description = "A key exists already", body = ErrorsBody),
    )
)]
pub async fn add_metadata_slash(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(segment): ApiPath<String>,
    ApiJson(body): ApiJson<BTreeMap<String, Value>>,
) -> ApiResult<Response> {
    add_metadata_impl(state, caller, headers, segment, body).await
}

fn metadata_not_found(key: &str, access: &ProjectAccess) -> ApiError {
    ApiError::not_found(format!(
        "metadata {key} not found in project {}",
        access.project.name
    ))
}

/// One metadata entry, as `{key: value}`.
#[utoipa::path(
    get,
    path = "/projects/{project_name_or_id}/metadatas/{meta_name}",
    tag = "projectMetadata",
    operation_id = "getProjectMetadata",
    params(
        ("project_name_or_id" = String, Path, description = "Project name or id"),
        ("meta_name" = String, Path, description = "Metadata key"),
        ("X-Is-Resource-Name" = Option<bool>, Header, description = "`true`: the path holds a name"),
    ),
    responses(
        (status = 200, description = "The entry", body = BTreeMap<String, String>),
        (status = 401, description = "Private project, anonymous caller", body = ErrorsBody),
        (status = 404, description = "No such project or key", body = ErrorsBody),
    )
)]
pub async fn get_metadata_entry(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath((segment, key)): ApiPath<(String, String)>,
) -> ApiResult<JsonBody<BTreeMap<String, String>>> {
    let mut conn = state.db.acquire().await?;
    let access = ProjectAccess::resolve_segment(&mut conn, &caller, &segment, &headers).await?;
    let detail = detail(&mut conn, &caller, &access).await?;
    let shown = shown_metadata(&ProjectSettings {
        public: detail.public,
        metadata: detail.metadata,
    });
    let value = shown
        .get(&key)
        .cloned()
        .ok_or_else(|| metadata_not_found(&key, &access))?;
    Ok(JsonBody(BTreeMap::from([(key, value)])))
}

/// Changes one existing metadata entry; the body is `{meta_name: value}`.
#[utoipa::path(
    put,
    path = "/projects/{project_name_or_id}/metadatas/{meta_name}",
    tag = "projectMetadata",
    operation_id = "updateProjectMetadata",
    request_body = BTreeMap<String, String>,
    params(
        ("project_name_or_id" = String, Path, description = "Project name or id"),
        ("meta_name" = String, Path, description = "Metadata key"),
        ("X-Is-Resource-Name" = Option<bool>, Header, description = "`true`: the path holds a name"),
    ),
    responses(
        (status = 200, description = "Updated"),
        (status = 400, description = "Bad JSON or value, or the body lacks the key", body = ErrorsBody),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a project admin", body = ErrorsBody),
        (status = 404, description = "No such project or key", body = ErrorsBody),
    )
)]
pub async fn update_metadata_entry(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath((segment, key)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<BTreeMap<String, Value>>,
) -> ApiResult<Response> {
    let mut conn = state.db.acquire().await?;
    let access = ProjectAccess::resolve_segment(&mut conn, &caller, &segment, &headers).await?;
    access.require(&caller, access.can_manage())?;
    drop(conn);
    let value = body
        .get(&key)
        .filter(|v| !v.is_null())
        .ok_or_else(|| ApiError::bad_request(format!("the body must be {{\"{key}\": <value>}}")))?;
    let mut tx = state.db.begin().await?;
    let mut settings = lock_settings(&mut tx, &access).await?;
    if key != "public" && !settings.metadata.contains_key(&key) {
        return Err(metadata_not_found(&key, &access));
    }
    set_entry(&mut settings, &key, value)?;
    save_settings(tx, &caller, &access, &settings).await?;
    Ok(ok_empty())
}

/// Removes one metadata entry. Removing `public` makes the project private, which is
/// what a project without that entry is in Harbor.
#[utoipa::path(
    delete,
    path = "/projects/{project_name_or_id}/metadatas/{meta_name}",
    tag = "projectMetadata",
    operation_id = "deleteProjectMetadata",
    params(
        ("project_name_or_id" = String, Path, description = "Project name or id"),
        ("meta_name" = String, Path, description = "Metadata key"),
        ("X-Is-Resource-Name" = Option<bool>, Header, description = "`true`: the path holds a name"),
    ),
    responses(
        (status = 200, description = "Removed"),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a project admin", body = ErrorsBody),
        (status = 404, description = "No such project or key", body = ErrorsBody),
    )
)]
pub async fn delete_metadata_entry(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath((segment, key)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let mut conn = state.db.acquire().await?;
    let access = ProjectAccess::resolve_segment(&mut conn, &caller, &segment, &headers).await?;
    access.require(&caller, access.can_manage())?;
    drop(conn);
    let mut tx = state.db.begin().await?;
    let mut settings = lock_settings(&mut tx, &access).await?;
    if key == "public" {
        settings.public = false;
    } else if settings.metadata.remove(&key).is_none() {
        return Err(metadata_not_found(&key, &access));
    }
    save_settings(tx, &caller, &access, &settings).await?;
    Ok(ok_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ProjectSettings {
        ProjectSettings {
            public: false,
            metadata: BTreeMap::new(),
        }
    }

    #[test]
    fn metadata_is_normalised_and_checked() {
        let mut s = settings();
        assert!(set_entry(&mut s, "public", &Value::from("True")).unwrap());
        assert!(s.public);
        assert!(set_entry(&mut s, "auto_scan", &Value::from(true)).unwrap());
        assert!(set_entry(&mut s, "severity", &Value::from("HIGH")).unwrap());
        assert!(!set_entry(&mut s, "proxy_speed_kb", &Value::from(10)).unwrap());
        assert!(!set_entry(&mut s, "retention_id", &Value::from("")).unwrap());
        assert!(!set_entry(&mut s, "severity", &Value::Null).unwrap());
        assert_eq!(s.metadata["auto_scan"], "true");
        assert_eq!(s.metadata["severity"], "high");
        assert!(!s.metadata.contains_key("proxy_speed_kb"));
        assert!(set_entry(&mut s, "public", &Value::from("yes")).is_err());
        assert!(set_entry(&mut s, "severity", &Value::from("bad")).is_err());
        assert!(set_entry(&mut s, "retention_id", &Value::from("3")).is_err());
        assert!(set_entry(&mut s, "Bad Key", &Value::from("x")).is_err());
        assert!(set_entry(&mut s, "nested", &serde_json::json!({"a": 1})).is_err());
        assert_eq!(shown_metadata(&s)["public"], "true");
    }

    #[test]
    fn the_deprecated_public_flag_yields_to_metadata() {
        let mut s = settings();
        let req = ProjectReq {
            public: Some(true),
            metadata: Some(BTreeMap::from([(
                "public".to_owned(),
                Value::from("false"),
            )])),
            ..ProjectReq::default()
        };
        apply_request(&mut s, &req).unwrap();
        assert!(!s.public);
        let req = ProjectReq {
            public: Some(true),
            ..ProjectReq::default()
        };
        apply_request(&mut s, &req).unwrap();
        assert!(s.public);
    }

    #[test]
    fn sort_keys() {
        let parse_sort = |sort| crate::api::query::parse_sort(sort, &SORT_KEYS, DEFAULT_SORT);
        assert_eq!(parse_sort(None).unwrap(), DEFAULT_SORT);
        assert_eq!(
            parse_sort(Some("-creation_time")).unwrap().signed_key(),
            "-creation_time"
        );
        assert_eq!(
            parse_sort(Some("project_id")).unwrap().signed_key(),
            "project_id"
        );
        assert!(parse_sort(Some("owner")).is_err());
        assert!(parse_sort(Some("name,-project_id")).is_err());
    }

    #[test]
    fn unsupported_requests_are_refused() {
        let ok = ProjectReq {
            storage_limit: Some(-1),
            cve_allowlist: Some(serde_json::json!({"items": [], "project_id": 0})),
            ..ProjectReq::default()
        };
        assert!(refuse_unsupported(&ok, Some(4)).is_ok());
        for bad in [
            ProjectReq {
                registry_id: Some(1),
                ..ProjectReq::default()
            },
            ProjectReq {
                storage_limit: Some(1024),
                ..ProjectReq::default()
            },
            ProjectReq {
                retention_days: Some(7),
                ..ProjectReq::default()
            },
            ProjectReq {
                cve_allowlist: Some(serde_json::json!({"items": [{"cve_id": "CVE-1"}]})),
                ..ProjectReq::default()
            },
            ProjectReq {
                cve_allowlist: Some(serde_json::json!({"project_id": 9})),
                ..ProjectReq::default()
            },
        ] {
            assert!(refuse_unsupported(&bad, Some(4)).is_err(), "{bad:?}");
        }
    }
}
