//! Repositories: `GET /repositories`, `GET /projects/{project_name}/repositories`,
//! `GET|DELETE /projects/{project_name}/repositories/{repository_name}`.
//!
//! Also what the artifact endpoints share with these: the twice URL-encoded repository
//! segment (`a%252Fb`) and the lookup of a repository in a project.
//!
//! List handlers take `OriginalUri`, not `Uri`: under the `/api/v2.0` nest `Uri` has
//! lost that prefix, and the `Link` header must carry it (harborapi strips it back off).

use axum::extract::{OriginalUri, Path, State};
use axum::http::Uri;
use axum::response::Response;
use berth_access::Principal;
use berth_content::metadata::artifacts::{self, RepositoryFilter, RepositoryRow, Visibility};
use berth_content::metadata::projects;
use berth_content::RepositoryName;
use berth_events::{ArtifactRef, Event};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorsBody};
use super::extract::{ApiQuery, Caller, ProjectKey};
use super::harbor_time;
use super::json::{ok_empty, JsonBody};
use super::pagination::paged;
use super::project_access::ProjectAccess;
use super::query::{ListParams, Sort};
use crate::events;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_all_repositories))
        .routes(routes!(list_project_repositories))
        .routes(routes!(get_repository, delete_repository))
}

/// Harbor's `Repository`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Repository {
    pub id: i64,
    pub project_id: i64,
    /// The full name, `project/repo`.
    pub name: String,
    /// Always empty: Berth keeps no repository descriptions.
    pub description: String,
    pub artifact_count: i64,
    /// Always 0: Berth does not count pulls.
    pub pull_count: i64,
    pub creation_time: String,
    pub update_time: String,
}

impl From<RepositoryRow> for Repository {
    fn from(row: RepositoryRow) -> Repository {
        Repository {
            id: row.id,
            project_id: row.project_id,
            name: row.name,
            description: String::new(),
            artifact_count: row.artifact_count,
            pull_count: 0,
            creation_time: harbor_time(row.created_at),
            update_time: harbor_time(row.updated_at),
        }
    }
}

/// Decodes `%XX` escapes; everything else stays as it is.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| segment.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                i += 3;
            }
            None => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

/// The full repository name from a project and a `{repository_name}` path segment.
/// Clients encode the segment twice (`team/app/web` → `app%252Fweb`); the router has
/// decoded it once, so decode it again (a once-encoded `app%2Fweb` arrives as `app/web`
/// and decoding again changes nothing). A name that cannot exist is not found.
pub fn repository_name(project: &str, segment: &str) -> ApiResult<RepositoryName> {
    let repository = percent_decode(segment).unwrap_or_else(|| segment.to_owned());
    let full = format!("{project}/{repository}");
    RepositoryName::parse(&full)
        .map_err(|_| ApiError::not_found(format!("repository {full} not found")))
}

/// The project of a `{project_name}` segment, with the caller's rights there, and the
/// repository of a `{repository_name}` segment within it.
pub async fn find_in_project(
    conn: &mut PgConnection,
    caller: &Caller,
    project_name: &str,
    segment: &str,
) -> ApiResult<(ProjectAccess, RepositoryName, RepositoryRow)> {
    let access = ProjectAccess::resolve(
        &mut *conn,
        caller,
        &ProjectKey::Name(project_name.to_owned()),
    )
    .await?;
    let name = repository_name(&access.project.name, segment)?;
    let row = artifacts::find_repository(&mut *conn, name.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("repository {name} not found")))?;
    Ok((access, name, row))
}

/// Which projects' repositories `principal` may list: public ones, plus its memberships
/// (users) or the projects its permissions name (robots).
async fn visibility(conn: &mut PgConnection, principal: &Principal) -> ApiResult<Visibility> {
    use berth_access::authorize::registry_actions;
    use berth_access::RegistryAction;
    if principal.is_sysadmin() {
        return Ok(Visibility::All);
    }
    let robot = match principal {
        Principal::User(user) => {
            return Ok(Visibility::Limited {
                member: Some(user.id),
                projects: Vec::new(),
            })
        }
        Principal::Robot(robot) => robot,
        Principal::Anonymous | Principal::Unrestricted => {
            return Ok(Visibility::Limited {
                member: None,
                projects: Vec::new(),
            })
        }
    };
    let mut candidates = Vec::new();
    match robot.project_id {
        Some(id) => candidates.extend(projects::find_by_id(&mut *conn, id).await?),
        None => {
            if robot
                .permissions
                .iter()
                .any(|p| p.namespace == "*" && p.allows("*", RegistryAction::Pull))
            {
                return Ok(Visibility::All);
            }
            for permission in &robot.permissions {
                candidates.extend(projects::find_by_name(&mut *conn, &permission.namespace).await?);
            }
        }
    }
    let projects = candidates
        .into_iter()
        .filter(|project| {
            registry_actions(principal, project, None).contains(&RegistryAction::Pull)
        })
        .map(|project| project.id)
        .collect();
    Ok(Visibility::Limited {
        member: None,
        projects,
    })
}

const SORT_KEYS: [&str; 4] = ["id", "name", "creation_time", "update_time"];
const DEFAULT_SORT: Sort<'static> = Sort {
    key: "creation_time",
    descending: true,
};

async fn list(
    conn: &mut PgConnection,
    uri: &Uri,
    params: &ListParams,
    visibility: Visibility,
    project_id: Option<i64>,
) -> ApiResult<Response> {
    let page = params.page()?;
    let sort = params.sort(&SORT_KEYS, DEFAULT_SORT)?;
    let q = params.query()?;
    q.only(&["name", "project_id"])?;
    let name_like = q.like_pattern("name")?;
    let wanted = q
        .exact("project_id")?
        .map(|value| {
            value
                .parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("project_id {value:?} is not an id")))
        })
        .transpose()?;
    let project_id = match (project_id, wanted) {
        // Within one project's list, another project's id matches nothing.
        (Some(id), Some(wanted)) if id != wanted => {
            return Ok(paged(uri, page, 0, Vec::<Repository>::new()));
        }
        (id, wanted) => id.or(wanted),
    };
    let filter = RepositoryFilter {
        visibility,
        project_id,
        name_like: name_like.as_deref(),
    };
    let total = artifacts::count_repositories(&mut *conn, &filter).await?;
    let rows = artifacts::list_repositories(&mut *conn, &filter, sort, page.limit(), page.offset())
        .await?;
    let items: Vec<Repository> = rows.into_iter().map(Repository::from).collect();
    Ok(paged(uri, page, total, items))
}

/// Every repository the caller can read: all for administrators, otherwise those of
/// public projects and of the caller's projects.
#[utoipa::path(
    get,
    path = "/repositories",
    tag = "repository",
    params(ListParams),
    responses(
        (status = 200, description = "One page of repositories", body = [Repository],
         headers(("X-Total-Count" = i64, description = "Repositories over all pages"),
                 ("Link" = String, description = "prev/next pages"))),
        (status = 400, description = "Malformed q or sort", body = ErrorsBody),
        (status = 401, description = "Wrong credentials", body = ErrorsBody),
        (status = 422, description = "page or page_size out of range", body = ErrorsBody),
    )
)]
async fn list_all_repositories(
    State(state): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Response> {
    let mut conn = state.db.acquire().await?;
    let visibility = visibility(&mut conn, &caller.principal).await?;
    list(&mut conn, &uri, &params, visibility, None).await
}

/// The repositories of one project.
#[utoipa::path(
    get,
    path = "/projects/{project_name}/repositories",
    tag = "repository",
    params(("project_name" = String, Path, description = "The project's name"), ListParams),
    responses(
        (status = 200, description = "One page of repositories", body = [Repository],
         headers(("X-Total-Count" = i64, description = "Repositories over all pages"),
                 ("Link" = String, description = "prev/next pages"))),
        (status = 400, description = "Malformed q or sort", body = ErrorsBody),
        (status = 401, description = "Private project, no credentials", body = ErrorsBody),
        (status = 404, description = "No such project", body = ErrorsBody),
        (status = 422, description = "page or page_size out of range", body = ErrorsBody),
    )
)]
async fn list_project_repositories(
    State(state): State<AppState>,
    caller: Caller,
    Path(project_name): Path<String>,
    OriginalUri(uri): OriginalUri,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Response> {
    let mut conn = state.db.acquire().await?;
    let access =
        ProjectAccess::resolve(&mut conn, &caller, &ProjectKey::Name(project_name)).await?;
    list(
        &mut conn,
        &uri,
        &params,
        Visibility::All,
        Some(access.project.id),
    )
    .await
}

/// One repository; `repository_name` is the name within the project, URL-encoded twice
/// when it contains `/` (`a%252Fb`).
#[utoipa::path(
    get,
    path = "/projects/{project_name}/repositories/{repository_name}",
    tag = "repository",
    params(
        ("project_name" = String, Path, description = "The project's name"),
        ("repository_name" = String, Path, description = "The repository's name within the project, URL-encoded twice (a/b → a%252Fb)"),
    ),
    responses(
        (status = 200, description = "The repository", body = Repository),
        (status = 401, description = "Private project, no credentials", body = ErrorsBody),
        (status = 404, description = "No such project or repository", body = ErrorsBody),
    )
)]
async fn get_repository(
    State(state): State<AppState>,
    caller: Caller,
    Path((project_name, repository)): Path<(String, String)>,
) -> ApiResult<JsonBody<Repository>> {
    let mut conn = state.db.acquire().await?;
    let (_, _, row) = find_in_project(&mut conn, &caller, &project_name, &repository).await?;
    Ok(JsonBody(Repository::from(row)))
}

/// Deletes a repository with all its artifacts and tags; blobs stay until garbage
/// collection.
#[utoipa::path(
    delete,
    path = "/projects/{project_name}/repositories/{repository_name}",
    tag = "repository",
    params(
        ("project_name" = String, Path, description = "The project's name"),
        ("repository_name" = String, Path, description = "The repository's name within the project, URL-encoded twice (a/b → a%252Fb)"),
    ),
    responses(
        (status = 200, description = "Deleted"),
        (status = 401, description = "Private project, no credentials", body = ErrorsBody),
        (status = 403, description = "No delete right in the project", body = ErrorsBody),
        (status = 404, description = "No such project or repository", body = ErrorsBody),
        (status = 405, description = "Deleting is switched off (delete.manifests)", body = ErrorsBody),
    )
)]
async fn delete_repository(
    State(state): State<AppState>,
    caller: Caller,
    Path((project_name, repository)): Path<(String, String)>,
) -> ApiResult<Response> {
    super::artifacts::require_enabled(state.config.delete.manifests, "deleting repositories")?;
    let mut tx = state.db.begin().await?;
    let (access, name, row) = find_in_project(&mut tx, &caller, &project_name, &repository).await?;
    access.require(&caller, access.can_delete())?;
    let Some(digests) = artifacts::delete_repository(&mut tx, row.id).await? else {
        return Err(ApiError::not_found(format!("repository {name} not found")));
    };
    let entry = caller.audit(
        "delete",
        "repository",
        name.as_str(),
        Some(access.project.id),
    );
    berth_access::audit::record(&mut tx, &entry).await?;
    // Consumers (replication of deletions, scan reports) learn of every artifact that
    // went, as if each had been deleted alone.
    for digest in digests {
        let deleted = Event::ArtifactDeleted {
            artifact: ArtifactRef {
                project: name.project().to_owned(),
                repository: name.to_string(),
                digest,
            },
            actor: caller.principal.name().to_owned(),
        };
        events::emit(&mut tx, &deleted).await?;
    }
    tx.commit().await?;
    tracing::info!(repository = %name, "repository deleted");
    Ok(ok_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_segments_decode_twice() {
        let name = |segment| repository_name("team", segment).map(|n| n.to_string());
        assert_eq!(name("app%2Fweb").unwrap(), "team/app/web");
        assert_eq!(name("app/web").unwrap(), "team/app/web");
        assert_eq!(name("app").unwrap(), "team/app");
        assert_eq!(name("%zz").unwrap_err().status(), 404);
        assert!(name("App").is_err());
        assert_eq!(percent_decode("a%2").as_deref(), Some("a%2"));
    }
}
