//! The audit log: `GET /audit-logs` and `GET /projects/{project_name}/logs`.
//!
//! Administrators see every record; other users see the records of the projects they
//! are members of (records without a project, such as failed logins and user changes,
//! are for administrators only). Robots read no audit log: Harbor grants that only
//! through an explicit `log` permission, which Berth's robots do not have.

use axum::extract::{OriginalUri, Path, State};
use axum::http::Uri;
use axum::response::Response;
use berth_access::audit::{self, AuditFilter, AuditRecord};
use berth_access::Principal;
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiResult, ErrorsBody};
use super::extract::{ApiQuery, Caller, ProjectKey};
use super::harbor_time;
use super::pagination::paged;
use super::project_access::ProjectAccess;
use super::query::{ListParams, Sort};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_audit_logs))
        .routes(routes!(list_project_logs))
}

/// Harbor's `AuditLog`, with Berth's `client_addr`, `outcome` and `project_id`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditLog {
    pub id: i64,
    /// `anonymous`, a username, or `robot$…`.
    pub username: String,
    /// e.g. `team-a/app:1.0`, `team-a/app@sha256:…`, `team-a`.
    pub resource: String,
    /// `project`, `repository`, `artifact`, `tag`, `member`, `robot`, `user`, …
    pub resource_type: String,
    /// `create`, `update`, `delete`, `pull`, `push`, `login_failed`, …
    pub operation: String,
    pub op_time: String,
    /// Berth: the client's address.
    pub client_addr: String,
    /// Berth: `success` or `failure`.
    pub outcome: String,
    /// Berth: the project the record is about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<i64>,
}

impl From<AuditRecord> for AuditLog {
    fn from(record: AuditRecord) -> AuditLog {
        AuditLog {
            id: record.id,
            username: record.username,
            resource: record.resource,
            resource_type: record.resource_type,
            operation: record.operation,
            op_time: harbor_time(record.op_time),
            client_addr: record.client_addr,
            outcome: record.outcome,
            project_id: record.project_id,
        }
    }
}

const SORT_KEYS: [&str; 6] = [
    "id",
    "op_time",
    "username",
    "operation",
    "resource_type",
    "resource",
];
const DEFAULT_SORT: Sort<'static> = Sort {
    key: "op_time",
    descending: true,
};

/// One page of the records `project_ids` allows (`None`: all), filtered by `q`.
async fn list(
    conn: &mut PgConnection,
    uri: &Uri,
    params: &ListParams,
    project_ids: Option<Vec<i64>>,
) -> ApiResult<Response> {
    let page = params.page()?;
    let sort = params.sort(&SORT_KEYS, DEFAULT_SORT)?;
    let q = params.query()?;
    q.only(&[
        "username",
        "operation",
        "resource_type",
        "resource",
        "op_time",
    ])?;
    let (from, to) = q.time_range("op_time")?;
    let filter = AuditFilter {
        project_ids,
        username_like: q.like_pattern("username")?,
        operations: q.one_of("operation")?,
        resource_types: q.one_of("resource_type")?,
        resource_like: q.like_pattern("resource")?,
        from,
        to,
    };
    let total = audit::count(&mut *conn, &filter).await?;
    let records = audit::list(&mut *conn, &filter, sort, page.limit(), page.offset()).await?;
    let items: Vec<AuditLog> = records.into_iter().map(AuditLog::from).collect();
    Ok(paged(uri, page, total, items))
}

/// The audit log: everything for administrators, the records of their projects for
/// other users. `q` keys: `username`, `resource` (exact or `~fuzzy`), `operation`,
/// `resource_type` (a value or `{a b}`), `op_time` (`[from~to]`).
#[utoipa::path(
    get,
    path = "/audit-logs",
    tag = "auditlog",
    params(ListParams),
    responses(
        (status = 200, description = "One page of audit records, newest first by default",
         body = [AuditLog],
         headers(("X-Total-Count" = i64, description = "Records over all pages"),
                 ("Link" = String, description = "prev/next pages"))),
        (status = 400, description = "Malformed q or sort", body = ErrorsBody),
        (status = 401, description = "No credentials", body = ErrorsBody),
        (status = 422, description = "page or page_size out of range", body = ErrorsBody),
    )
)]
async fn list_audit_logs(
    State(state): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Response> {
    caller.require_authenticated()?;
    let mut conn = state.db.acquire().await?;
    let project_ids = match &caller.principal {
        principal if principal.is_sysadmin() => None,
        Principal::User(user) => Some(audit::member_project_ids(&mut conn, user.id).await?),
        _ => Some(Vec::new()),
    };
    list(&mut conn, &uri, &params, project_ids).await
}

/// The audit records of one project, for its members and administrators.
#[utoipa::path(
    get,
    path = "/projects/{project_name}/logs",
    tag = "auditlog",
    params(("project_name" = String, Path, description = "The project's name"), ListParams),
    responses(
        (status = 200, description = "One page of the project's audit records",
         body = [AuditLog],
         headers(("X-Total-Count" = i64, description = "Records over all pages"),
                 ("Link" = String, description = "prev/next pages"))),
        (status = 400, description = "Malformed q or sort", body = ErrorsBody),
        (status = 401, description = "No credentials", body = ErrorsBody),
        (status = 403, description = "Not a member of the project", body = ErrorsBody),
        (status = 404, description = "No such project", body = ErrorsBody),
        (status = 422, description = "page or page_size out of range", body = ErrorsBody),
    )
)]
async fn list_project_logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(project_name): Path<String>,
    OriginalUri(uri): OriginalUri,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Response> {
    let mut conn = state.db.acquire().await?;
    let access =
        ProjectAccess::resolve(&mut conn, &caller, &ProjectKey::Name(project_name)).await?;
    caller.require_authenticated()?;
    access.require(&caller, access.can_see_members())?;
    list(&mut conn, &uri, &params, Some(vec![access.project.id])).await
}
