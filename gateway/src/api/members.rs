//! Project members on the management API: who holds which role in a project, in
//! Harbor's shapes. Users only: Berth has no user groups.
//!
//! Members and system administrators may list members; project admins and system
//! administrators change them. Every change is audited in its own transaction.

use axum::extract::{OriginalUri, State};
use axum::http::HeaderMap;
use axum::response::Response;
use berth_access::members::{self, Member, UserRef};
use berth_access::{audit, ProjectRole};
use berth_content::metadata::projects::ProjectRef;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorsBody};
use super::extract::{ApiPath, ApiQuery, Caller};
use super::json::{created, ok_empty, ApiJson, JsonBody};
use super::pagination::{paged, PageParams};
use super::project_access::ProjectAccess;
use super::query::contains_pattern;
use super::BASE_PATH;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_members, add_member))
        .routes(routes!(get_member, update_member, delete_member))
}

/// Harbor's `ProjectMemberEntity`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectMemberEntity {
    /// The membership id (`{mid}` in paths), not the user id.
    pub id: i64,
    pub project_id: i64,
    /// The username.
    pub entity_name: String,
    /// `projectAdmin`, `developer`, `guest`, `maintainer` or `limitedGuest`.
    pub role_name: String,
    pub role_id: i64,
    /// The user id.
    pub entity_id: i64,
    /// Always `u` (user).
    pub entity_type: String,
}

impl From<Member> for ProjectMemberEntity {
    fn from(member: Member) -> ProjectMemberEntity {
        ProjectMemberEntity {
            id: member.id,
            project_id: member.project_id,
            role_name: member
                .role()
                .map_or("unknown", ProjectRole::name)
                .to_owned(),
            role_id: i64::from(member.role_id),
            entity_name: member.username,
            entity_id: member.user_id,
            entity_type: "u".to_owned(),
        }
    }
}

/// Harbor's `ProjectMember` request.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ProjectMemberReq {
    /// 1 projectAdmin, 2 developer, 3 guest, 4 maintainer, 5 limitedGuest.
    pub role_id: Option<i64>,
    pub member_user: Option<UserEntity>,
    /// Refused: user groups are not supported.
    #[schema(value_type = Option<Object>)]
    pub member_group: Option<Value>,
}

/// The user to add: by id or by username.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UserEntity {
    pub user_id: Option<i64>,
    pub username: Option<String>,
}

/// Harbor's `RoleRequest`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RoleRequest {
    pub role_id: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListMembersParams {
    /// Part of the member's username.
    pub entityname: Option<String>,
}

fn parse_role(role_id: Option<i64>) -> ApiResult<ProjectRole> {
    role_id.and_then(ProjectRole::from_id).ok_or_else(|| {
        ApiError::bad_request(
            "role_id must be 1 (projectAdmin), 2 (developer), 3 (guest), 4 (maintainer) or 5 (limitedGuest)",
        )
    })
}

/// Harbor refuses member id 0 as missing (a non-integer `{mid}` is refused by
/// [`ApiPath`] with 422, as go-swagger does).
fn check_member_id(mid: i64) -> ApiResult<()> {
    if mid == 0 {
        return Err(ApiError::bad_request("the project member id is required"));
    }
    Ok(())
}

/// Records `operation` on `username`'s membership of `project`, in the transaction of
/// the change.
async fn record_member_audit(
    tx: &mut PgConnection,
    caller: &Caller,
    operation: &str,
    project: &ProjectRef,
    username: &str,
) -> ApiResult<()> {
    let resource = format!("{}/{username}", project.name);
    let entry = caller.audit(operation, "member", resource, Some(project.id));
    audit::record(tx, &entry).await?;
    Ok(())
}

fn member_not_found(mid: i64, access: &ProjectAccess) -> ApiError {
    ApiError::not_found(format!(
        "member {mid} not found in project {}",
        access.project.name
    ))
}

/// The members of a project, by username.
#[utoipa::path(
    get,
    path = "/projects/{project_name_or_id}/members",
    tag = "member",
    operation_id = "listProjectMembers",
    params(
        ("project_name_or_id" = String, Path, description = "Project name or id"),
        ("X-Is-Resource-Name" = Option<bool>, Header, description = "`true`: the path holds a name"),
        ListMembersParams,
        PageParams,
    ),
    responses(
        (status = 200, description = "One page of members, with X-Total-Count and Link", body = Vec<ProjectMemberEntity>),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a member", body = ErrorsBody),
        (status = 404, description = "No such project", body = ErrorsBody),
        (status = 422, description = "page or page_size out of range", body = ErrorsBody),
    )
)]
pub async fn list_members(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    // The full request URI: `Uri` inside the nested API router lacks `/api/v2.0`,
    // and the Link header must carry it.
    OriginalUri(uri): OriginalUri,
    ApiPath(segment): ApiPath<String>,
    ApiQuery(params): ApiQuery<ListMembersParams>,
    ApiQuery(paging): ApiQuery<PageParams>,
) -> ApiResult<Response> {
    let page = paging.validate()?;
    let mut conn = state.db.acquire().await?;
    let access = ProjectAccess::resolve_segment(&mut conn, &caller, &segment, &headers).await?;
    access.require(&caller, access.can_see_members())?;
    let name_like = params
        .entityname
        .as_deref()
        .filter(|n| !n.is_empty())
        .map(contains_pattern);
    let project_id = access.project.id;
    let total = members::count(&mut conn, project_id, name_like.as_deref()).await?;
    let rows = members::list(
        &mut conn,
        project_id,
        name_like.as_deref(),
        page.limit(),
        page.offset(),
    )
    .await?;
    let items: Vec<ProjectMemberEntity> = rows.into_iter().map(Into::into).collect();
    Ok(paged(&uri, page, total, items))
}

/// Adds a user to the project with a role (project admins).
#[utoipa::path(
    post,
    path = "/projects/{project_name_or_id}/members",
    tag = "member",
    operation_id = "createProjectMember",
    request_body = ProjectMemberReq,
    params(
        ("project_name_or_id" = String, Path, description = "Project name or id"),
        ("X-Is-Resource-Name" = Option<bool>, Header, description = "`true`: the path holds a name"),
    ),
    responses(
        (status = 201, description = "Added; Location: /api/v2.0/projects/{project_name_or_id}/members/{mid}"),
        (status = 400, description = "Bad JSON or role, or a group", body = ErrorsBody),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a project admin", body = ErrorsBody),
        (status = 404, description = "No such project or user", body = ErrorsBody),
        (status = 409, description = "Already a member", body = ErrorsBody),
    )
)]
pub async fn add_member(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(segment): ApiPath<String>,
    ApiJson(req): ApiJson<ProjectMemberReq>,
) -> ApiResult<Response> {
    let mut conn = state.db.acquire().await?;
    let access = ProjectAccess::resolve_segment(&mut conn, &caller, &segment, &headers).await?;
    access.require(&caller, access.can_manage())?;

    let is_group = req
        .member_group
        .as_ref()
        .is_some_and(|g| !g.is_null() && g.as_object().is_none_or(|o| !o.is_empty()));
    if is_group {
        return Err(ApiError::bad_request("groups are not supported"));
    }
    let role = parse_role(req.role_id)?;
    let user = match req.member_user {
        Some(UserEntity {
            user_id: Some(id), ..
        }) if id > 0 => UserRef::Id(id),
        Some(UserEntity {
            username: Some(name),
            ..
        }) if !name.is_empty() => UserRef::Name(name),
        _ => {
            return Err(ApiError::bad_request(
                "member_user with a user_id or a username is required",
            ))
        }
    };
    let (user_id, username) = members::find_user(&mut conn, &user).await?.ok_or_else(|| {
        ApiError::not_found(match &user {
            UserRef::Id(id) => format!("user {id} not found"),
            UserRef::Name(name) => format!("user {name} not found"),
        })
    })?;
    drop(conn);

    let project = &access.project;
    let mut tx = state.db.begin().await?;
    let member_id = members::add(&mut tx, project.id, user_id, role)
        .await
        .map_err(|e| {
            ApiError::on_constraint(
                e,
                "project_members_project_id_user_id_key",
                ApiError::Conflict(format!(
                    "user {username} is already a member of project {}",
                    project.name
                )),
            )
        })?;
    record_member_audit(&mut tx, &caller, "create", project, &username).await?;
    tx.commit().await?;
    // Harbor builds the Location from the path as given: a name or an id.
    Ok(created(&format!(
        "{BASE_PATH}/projects/{segment}/members/{member_id}"
    )))
}

/// One member.
#[utoipa::path(
    get,
    path = "/projects/{project_name_or_id}/members/{mid}",
    tag = "member",
    operation_id = "getProjectMember",
    params(
        ("project_name_or_id" = String, Path, description = "Project name or id"),
        ("mid" = i64, Path, description = "Membership id"),
        ("X-Is-Resource-Name" = Option<bool>, Header, description = "`true`: the path holds a name"),
    ),
    responses(
        (status = 200, description = "The member", body = ProjectMemberEntity),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a member", body = ErrorsBody),
        (status = 404, description = "No such project or member", body = ErrorsBody),
    )
)]
pub async fn get_member(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath((segment, mid)): ApiPath<(String, i64)>,
) -> ApiResult<JsonBody<ProjectMemberEntity>> {
    let mut conn = state.db.acquire().await?;
    let access = ProjectAccess::resolve_segment(&mut conn, &caller, &segment, &headers).await?;
    access.require(&caller, access.can_see_members())?;
    check_member_id(mid)?;
    let member = members::get(&mut conn, access.project.id, mid)
        .await?
        .ok_or_else(|| member_not_found(mid, &access))?;
    Ok(JsonBody(member.into()))
}

/// Changes a member's role (project admins).
#[utoipa::path(
    put,
    path = "/projects/{project_name_or_id}/members/{mid}",
    tag = "member",
    operation_id = "updateProjectMember",
    request_body = RoleRequest,
    params(
        ("project_name_or_id" = String, Path, description = "Project name or id"),
        ("mid" = i64, Path, description = "Membership id"),
        ("X-Is-Resource-Name" = Option<bool>, Header, description = "`true`: the path holds a name"),
    ),
    responses(
        (status = 200, description = "Updated"),
        (status = 400, description = "Bad JSON or role", body = ErrorsBody),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a project admin", body = ErrorsBody),
        (status = 404, description = "No such project or member", body = ErrorsBody),
    )
)]
pub async fn update_member(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath((segment, mid)): ApiPath<(String, i64)>,
    ApiJson(req): ApiJson<RoleRequest>,
) -> ApiResult<Response> {
    let mut conn = state.db.acquire().await?;
    let access = ProjectAccess::resolve_segment(&mut conn, &caller, &segment, &headers).await?;
    access.require(&caller, access.can_manage())?;
    drop(conn);
    check_member_id(mid)?;
    let role = parse_role(req.role_id)?;
    let project = &access.project;
    let mut tx = state.db.begin().await?;
    let member = members::set_role(&mut tx, project.id, mid, role)
        .await?
        .ok_or_else(|| member_not_found(mid, &access))?;
    record_member_audit(&mut tx, &caller, "update", project, &member.username).await?;
    tx.commit().await?;
    Ok(ok_empty())
}

/// Removes a member (project admins).
#[utoipa::path(
    delete,
    path = "/projects/{project_name_or_id}/members/{mid}",
    tag = "member",
    operation_id = "deleteProjectMember",
    params(
        ("project_name_or_id" = String, Path, description = "Project name or id"),
        ("mid" = i64, Path, description = "Membership id"),
        ("X-Is-Resource-Name" = Option<bool>, Header, description = "`true`: the path holds a name"),
    ),
    responses(
        (status = 200, description = "Removed"),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a project admin", body = ErrorsBody),
        (status = 404, description = "No such project or member", body = ErrorsBody),
    )
)]
pub async fn delete_member(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath((segment, mid)): ApiPath<(String, i64)>,
) -> ApiResult<Response> {
    let mut conn = state.db.acquire().await?;
    let access = ProjectAccess::resolve_segment(&mut conn, &caller, &segment, &headers).await?;
    access.require(&caller, access.can_manage())?;
    drop(conn);
    check_member_id(mid)?;
    let project = &access.project;
    let mut tx = state.db.begin().await?;
    let member = members::remove(&mut tx, project.id, mid)
        .await?
        .ok_or_else(|| member_not_found(mid, &access))?;
    record_member_audit(&mut tx, &caller, "delete", project, &member.username).await?;
    tx.commit().await?;
    Ok(ok_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_member_ids_are_checked() {
        assert_eq!(parse_role(Some(4)).unwrap(), ProjectRole::Maintainer);
        assert!(parse_role(Some(0)).is_err());
        assert!(parse_role(Some(6)).is_err());
        assert!(parse_role(None).is_err());
        assert!(check_member_id(12).is_ok());
        assert!(matches!(check_member_id(0), Err(ApiError::BadRequest(_))));
    }
}
