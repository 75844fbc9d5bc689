//! Artifacts and their tags under
//! `/projects/{project_name}/repositories/{repository_name}/artifacts`: list, get and
//! delete artifacts; list, create and delete tags.
//!
//! An artifact is Harbor's name for a manifest in a repository. Deleting one follows the
//! registry's `DELETE /v2/<name>/manifests/<digest>` (one implementation,
//! `metadata::manifests::delete`): its tags go with it, its blobs stay for garbage
//! collection, and a manifest that an index still lists is refused.

use std::collections::BTreeMap;

use axum::extract::{OriginalUri, Path, State};
use axum::response::Response;
use berth_content::manifest::{artifact_kind, DOCKER_MANIFEST_LIST, OCI_IMAGE_INDEX};
use berth_content::metadata::artifacts::{
    self, ArtifactFilter, ArtifactRow, ChildRow, RepositoryRow, TagFilter, TagRow,
};
use berth_content::metadata::manifests::{self as stored, DeleteOutcome};
use berth_content::metadata::tags;
use berth_content::{Digest, Reference, RepositoryName, Tag};
use berth_events::{ArtifactRef, Event};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorsBody};
use super::extract::{ApiQuery, Caller};
use super::harbor_time;
use super::json::{created, ok_empty, ApiJson, JsonBody};
use super::pagination::paged;
use super::query::{ListParams, Query, QueryValue, Sort};
use super::repositories::find_in_project;
use crate::events;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_artifacts))
        .routes(routes!(get_artifact, delete_artifact))
        .routes(routes!(list_tags, create_tag))
        .routes(routes!(delete_tag))
}

/// Harbor's zero time: Berth does not record pulls.
const NEVER: &str = "0001-01-01T00:00:00.000Z";
/// Config blobs larger than this are not read for `extra_attrs`.
const CONFIG_READ_LIMIT: i64 = 1024 * 1024;

/// Harbor's `Artifact`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Artifact {
    pub id: i64,
    /// `IMAGE` for container images and image indexes, `CHART` for Helm charts,
    /// `UNKNOWN` otherwise.
    #[serde(rename = "type")]
    pub kind: String,
    /// The config's media type for manifests, the manifest's own for indexes.
    pub media_type: String,
    pub manifest_media_type: String,
    /// `artifactType`, or the config's media type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub project_id: i64,
    pub repository_id: i64,
    /// The repository's full name, `project/repo`.
    pub repository_name: String,
    pub digest: String,
    /// The manifest's bytes plus the config and layers it references.
    pub size: i64,
    pub push_time: String,
    /// Always Harbor's zero time: pulls are not recorded per artifact.
    pub pull_time: String,
    /// For images: `architecture`, `os`, `author`, `created`, `config` from the config.
    #[schema(value_type = Object)]
    pub extra_attrs: Map<String, Value>,
    pub annotations: BTreeMap<String, String>,
    /// The manifests of an index.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<ArtifactReference>,
    /// `null` when the list was asked `with_tag=false`.
    pub tags: Option<Vec<ArtifactTag>>,
    #[schema(value_type = Object)]
    pub addition_links: Map<String, Value>,
}

/// Harbor's `Reference`: an index's child.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Reference)]
pub struct ArtifactReference {
    pub parent_id: i64,
    pub child_id: i64,
    pub child_digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// Harbor's `Platform`. The OS version and features keys are spelt as in Harbor's
/// swagger, quotes included, which is what harborapi's model reads.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Platform {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(rename = "'os.version'", skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(rename = "'os.features'", skip_serializing_if = "Option::is_none")]
    pub os_features: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Harbor's `Tag`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Tag)]
pub struct ArtifactTag {
    pub id: i64,
    pub repository_id: i64,
    pub artifact_id: i64,
    pub name: String,
    /// When the tag was last pointed at this artifact.
    pub push_time: String,
    pub pull_time: String,
    /// Always false: Berth has no tag immutability rules.
    pub immutable: bool,
    /// Always false: Berth does not track signatures.
    pub signed: bool,
}

impl From<TagRow> for ArtifactTag {
    fn from(row: TagRow) -> ArtifactTag {
        ArtifactTag {
            id: row.id,
            repository_id: row.repository_id,
            artifact_id: row.manifest_id,
            name: row.name,
            push_time: harbor_time(row.updated_at),
            pull_time: NEVER.to_owned(),
            immutable: false,
            signed: false,
        }
    }
}

/// The body of a tag creation: Harbor's `Tag`, of which only `name` is used.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TagRequest {
    pub name: Option<String>,
}

/// The artifact list's and GET's own parameter; Harbor's other `with_*` switches are
/// accepted and ignored (labels, scans, signatures, accessories do not exist in Berth).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WithTagParams {
    /// Include each artifact's tags (default true).
    pub with_tag: Option<bool>,
}

/// The artifact a `{reference}` (a digest or a tag) names in the repository.
async fn find_artifact(
    conn: &mut PgConnection,
    repository: &RepositoryRow,
    name: &RepositoryName,
    reference: &str,
) -> ApiResult<ArtifactRow> {
    let parsed = Reference::parse(reference).map_err(|e| {
        ApiError::bad_request(format!("{reference:?} is neither a digest nor a tag: {e}"))
    })?;
    artifacts::find_artifact(&mut *conn, repository.id, &parsed)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "artifact {reference} not found in repository {name}"
            ))
        })
}

/// The parts of a stored manifest that the artifact JSON shows and no column holds.
#[derive(Debug, Default, Deserialize)]
struct ManifestView {
    #[serde(default)]
    config: Option<ConfigView>,
    #[serde(default)]
    manifests: Vec<ChildView>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigView {
    media_type: String,
    digest: String,
    #[serde(default)]
    size: i64,
}

#[derive(Debug, Deserialize)]
struct ChildView {
    digest: String,
    #[serde(default)]
    platform: Option<PlatformView>,
}

#[derive(Debug, Deserialize)]
struct PlatformView {
    architecture: Option<String>,
    os: Option<String>,
    #[serde(rename = "os.version")]
    os_version: Option<String>,
    #[serde(rename = "os.features")]
    os_features: Option<Vec<String>>,
    variant: Option<String>,
}

impl ManifestView {
    /// Stored manifests parsed when they were pushed; should one not parse now, the
    /// artifact is still listed, with less detail.
    fn of(row: &ArtifactRow) -> ManifestView {
        serde_json::from_slice(&row.content).unwrap_or_default()
    }
}

/// Annotations as Harbor's string map; a value that is not a string (never valid OCI,
/// but stored as pushed) is shown as its JSON text.
fn annotations(value: Option<&Value>) -> BTreeMap<String, String> {
    let Some(Value::Object(map)) = value else {
        return BTreeMap::new();
    };
    map.iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

/// `architecture`, `os`, `author`, `created` and `config` of an image's config blob.
/// Best effort: an unreadable or oversized config leaves them out.
async fn image_attrs(state: &AppState, config: &ConfigView) -> Map<String, Value> {
    let mut attrs = Map::new();
    if !(0..=CONFIG_READ_LIMIT).contains(&config.size) {
        return attrs;
    }
    let Ok(digest) = Digest::parse(&config.digest) else {
        return attrs;
    };
    let bytes = match state.storage.read_blob(&digest, None).await {
        Ok(stream) => {
            stream
                .try_fold(Vec::new(), |mut all, chunk| async move {
                    all.extend_from_slice(&chunk);
                    Ok(all)
                })
                .await
        }
        Err(e) => Err(std::io::Error::other(e)),
    };
    let parsed = bytes
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok());
    match parsed {
        Some(image) => {
            for key in ["architecture", "os", "author", "created", "config"] {
                if let Some(value) = image.get(key) {
                    attrs.insert(key.to_owned(), value.clone());
                }
            }
        }
        None => tracing::debug!(config = %digest, "config blob unreadable; no extra_attrs"),
    }
    attrs
}

/// The artifact JSON of `rows`, with their tags when `with_tag`.
async fn artifacts_json(
    state: &AppState,
    conn: &mut PgConnection,
    repository: &RepositoryRow,
    rows: Vec<ArtifactRow>,
    with_tag: bool,
) -> ApiResult<Vec<Artifact>> {
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut tags_by_artifact: BTreeMap<i64, Vec<ArtifactTag>> = BTreeMap::new();
    if with_tag {
        for tag in artifacts::tags_of(&mut *conn, &ids).await? {
            tags_by_artifact
                .entry(tag.manifest_id)
                .or_default()
                .push(tag.into());
        }
    }
    let index_ids: Vec<i64> = rows
        .iter()
        .filter(|r| {
            matches!(
                r.media_type.as_str(),
                OCI_IMAGE_INDEX | DOCKER_MANIFEST_LIST
            )
        })
        .map(|r| r.id)
        .collect();
    let mut children: BTreeMap<i64, Vec<ChildRow>> = BTreeMap::new();
    if !index_ids.is_empty() {
        for child in artifacts::children_of(&mut *conn, &index_ids).await? {
            children.entry(child.parent_id).or_default().push(child);
        }
    }

    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let view = ManifestView::of(&row);
        let config_media_type = view.config.as_ref().map(|c| c.media_type.as_str());
        let kind = artifact_kind(&row.media_type, config_media_type);
        let extra_attrs = match (&view.config, kind) {
            (Some(config), "IMAGE") => image_attrs(state, config).await,
            _ => Map::new(),
        };
        let references = children
            .remove(&row.id)
            .unwrap_or_default()
            .into_iter()
            .map(|child| {
                let platform = view
                    .manifests
                    .iter()
                    .find(|m| m.digest == child.child_digest)
                    .and_then(|m| m.platform.as_ref())
                    .map(|p| Platform {
                        architecture: p.architecture.clone(),
                        os: p.os.clone(),
                        os_version: p.os_version.clone(),
                        os_features: p.os_features.clone(),
                        variant: p.variant.clone(),
                    });
                ArtifactReference {
                    parent_id: child.parent_id,
                    child_id: child.child_id,
                    child_digest: child.child_digest,
                    platform,
                }
            })
            .collect();
        items.push(Artifact {
            id: row.id,
            kind: kind.to_owned(),
            media_type: config_media_type.unwrap_or(&row.media_type).to_owned(),
            manifest_media_type: row.media_type.clone(),
            artifact_type: row.artifact_type.clone(),
            project_id: repository.project_id,
            repository_id: repository.id,
            repository_name: repository.name.clone(),
            digest: row.digest.clone(),
            size: row.size,
            push_time: harbor_time(row.pushed_at),
            pull_time: NEVER.to_owned(),
            extra_attrs,
            annotations: annotations(row.annotations.as_ref()),
            references,
            tags: with_tag.then(|| tags_by_artifact.remove(&row.id).unwrap_or_default()),
            addition_links: Map::new(),
        });
    }
    Ok(items)
}

/// Harbor's `tags` query keyword.
fn tag_filter(q: &Query) -> ApiResult<(TagFilter<'static>, Option<String>)> {
    match q.get("tags") {
        None => Ok((TagFilter::Default, None)),
        Some(QueryValue::Exact(v)) if v == "*" => Ok((TagFilter::Tagged, None)),
        Some(QueryValue::Exact(v)) if v == "nil" => Ok((TagFilter::Untagged, None)),
        Some(QueryValue::Exact(_) | QueryValue::Fuzzy(_)) => {
            Ok((TagFilter::Default, q.like_pattern("tags")?))
        }
        Some(_) => Err(ApiError::bad_request(
            "query key \"tags\" takes *, nil, a tag or ~part of a tag",
        )),
    }
}

const ARTIFACT_SORT_KEYS: [&str; 3] = ["id", "push_time", "digest"];
const ARTIFACT_DEFAULT_SORT: Sort<'static> = Sort {
    key: "push_time",
    descending: true,
};

/// The artifacts of a repository. By default (as Harbor) the untagged children of an
/// index are left out: they show as the index's `references`.
///
/// `q` keys: `tags=*` (tagged), `tags=nil` (untagged), `tags=v` / `tags=~v`,
/// `digest=sha256:…`, `media_type=…`. `sort`: `push_time` (default `-push_time`),
/// `digest` or `id`.
#[utoipa::path(
    get,
    path = "/projects/{project_name}/repositories/{repository_name}/artifacts",
    tag = "artifact",
    params(
        ("project_name" = String, Path, description = "The project's name"),
        ("repository_name" = String, Path, description = "The repository's name within the project, URL-encoded twice (a/b → a%252Fb)"),
        ListParams,
        WithTagParams,
    ),
    responses(
        (status = 200, description = "One page of artifacts", body = [Artifact],
         headers(("X-Total-Count" = i64, description = "Artifacts over all pages"),
                 ("Link" = String, description = "prev/next pages"))),
        (status = 400, description = "Malformed q or sort", body = ErrorsBody),
        (status = 401, description = "Private project, no credentials", body = ErrorsBody),
        (status = 404, description = "No such project or repository", body = ErrorsBody),
        (status = 422, description = "page or page_size out of range", body = ErrorsBody),
    )
)]
async fn list_artifacts(
    State(state): State<AppState>,
    caller: Caller,
    Path((project_name, repository)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    ApiQuery(params): ApiQuery<ListParams>,
    ApiQuery(switches): ApiQuery<WithTagParams>,
) -> ApiResult<Response> {
    let page = params.page()?;
    let sort = params.sort(&ARTIFACT_SORT_KEYS, ARTIFACT_DEFAULT_SORT)?;
    let q = params.query()?;
    q.only(&["tags", "digest", "media_type"])?;
    let (tag_mode, tag_pattern) = tag_filter(&q)?;
    let filter = ArtifactFilter {
        tags: match &tag_pattern {
            Some(pattern) => TagFilter::Matching(pattern),
            None => tag_mode,
        },
        digest: q.exact("digest")?,
        media_type: q.exact("media_type")?,
    };

    let mut conn = state.db.acquire().await?;
    let (_, _, repository) =
        find_in_project(&mut conn, &caller, &project_name, &repository).await?;
    let total = artifacts::count_artifacts(&mut conn, repository.id, &filter).await?;
    let rows = artifacts::list_artifacts(
        &mut conn,
        repository.id,
        &filter,
        sort,
        page.limit(),
        page.offset(),
    )
    .await?;
    let items = artifacts_json(
        &state,
        &mut conn,
        &repository,
        rows,
        switches.with_tag.unwrap_or(true),
    )
    .await?;
    Ok(paged(&uri, page, total, items))
}

/// One artifact by digest or tag.
#[utoipa::path(
    get,
    path = "/projects/{project_name}/repositories/{repository_name}/artifacts/{reference}",
    tag = "artifact",
    params(
        ("project_name" = String, Path, description = "The project's name"),
        ("repository_name" = String, Path, description = "The repository's name within the project, URL-encoded twice (a/b → a%252Fb)"),
        ("reference" = String, Path, description = "A digest (sha256:…) or a tag"),
        WithTagParams,
    ),
    responses(
        (status = 200, description = "The artifact", body = Artifact),
        (status = 400, description = "Neither a digest nor a tag", body = ErrorsBody),
        (status = 401, description = "Private project, no credentials", body = ErrorsBody),
        (status = 404, description = "No such project, repository or artifact", body = ErrorsBody),
    )
)]
async fn get_artifact(
    State(state): State<AppState>,
    caller: Caller,
    Path((project_name, repository, reference)): Path<(String, String, String)>,
    ApiQuery(params): ApiQuery<WithTagParams>,
) -> ApiResult<JsonBody<Artifact>> {
    let mut conn = state.db.acquire().await?;
    let (_, name, repository) =
        find_in_project(&mut conn, &caller, &project_name, &repository).await?;
    let row = find_artifact(&mut conn, &repository, &name, &reference).await?;
    let with_tag = params.with_tag.unwrap_or(true);
    let mut items = artifacts_json(&state, &mut conn, &repository, vec![row], with_tag).await?;
    items
        .pop()
        .map(JsonBody)
        .ok_or_else(|| ApiError::Internal("an artifact went missing while it was shown".into()))
}

/// Deletes an artifact and its tags, as `DELETE /v2/<name>/manifests/<digest>` does;
/// refused while an index lists it.
#[utoipa::path(
    delete,
    path = "/projects/{project_name}/repositories/{repository_name}/artifacts/{reference}",
    tag = "artifact",
    params(
        ("project_name" = String, Path, description = "The project's name"),
        ("repository_name" = String, Path, description = "The repository's name within the project, URL-encoded twice (a/b → a%252Fb)"),
        ("reference" = String, Path, description = "A digest (sha256:…) or a tag"),
    ),
    responses(
        (status = 200, description = "Deleted"),
        (status = 400, description = "Neither a digest nor a tag", body = ErrorsBody),
        (status = 401, description = "Private project, no credentials", body = ErrorsBody),
        (status = 403, description = "No delete right in the project", body = ErrorsBody),
        (status = 404, description = "No such project, repository or artifact", body = ErrorsBody),
        (status = 412, description = "An index still lists the artifact", body = ErrorsBody),
        (status = 405, description = "Deleting is switched off (delete.manifests / delete.tags)", body = ErrorsBody),
    )
)]
async fn delete_artifact(
    State(state): State<AppState>,
    caller: Caller,
    Path((project_name, repository, reference)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    require_enabled(state.config.delete.manifests, "deleting artifacts")?;
    let mut tx = state.db.begin().await?;
    let (access, name, repository) =
        find_in_project(&mut tx, &caller, &project_name, &repository).await?;
    access.require(&caller, access.can_delete())?;
    let row = find_artifact(&mut tx, &repository, &name, &reference).await?;
    let digest = Digest::parse(&row.digest)
        .map_err(|e| ApiError::Internal(format!("stored digest {}: {e}", row.digest)))?;
    match stored::delete(&mut tx, &name, &digest).await? {
        DeleteOutcome::Deleted => {}
        DeleteOutcome::NotFound => {
            return Err(ApiError::not_found(format!(
                "artifact {reference} not found in repository {name}"
            )))
        }
        DeleteOutcome::ReferencedBy(parents) => {
            return Err(ApiError::Precondition(format!(
                "artifact {digest} is referenced by index {}; delete the index first",
                parents.join(", ")
            )))
        }
    }
    let entry = caller.audit(
        "delete",
        "artifact",
        format!("{name}@{digest}"),
        Some(access.project.id),
    );
    berth_access::audit::record(&mut tx, &entry).await?;
    let deleted = Event::ArtifactDeleted {
        artifact: artifact_ref(&name, digest.to_string()),
        actor: caller.principal.name().to_owned(),
    };
    events::emit(&mut tx, &deleted).await?;
    tx.commit().await?;
    tracing::info!(repository = %name, %digest, "artifact deleted");
    Ok(ok_empty())
}

const TAG_SORT_KEYS: [&str; 3] = ["id", "name", "push_time"];
const TAG_DEFAULT_SORT: Sort<'static> = Sort {
    key: "push_time",
    descending: true,
};

/// The tags of one artifact.
#[utoipa::path(
    get,
    path = "/projects/{project_name}/repositories/{repository_name}/artifacts/{reference}/tags",
    tag = "artifact",
    params(
        ("project_name" = String, Path, description = "The project's name"),
        ("repository_name" = String, Path, description = "The repository's name within the project, URL-encoded twice (a/b → a%252Fb)"),
        ("reference" = String, Path, description = "A digest (sha256:…) or a tag"),
        ListParams,
    ),
    responses(
        (status = 200, description = "One page of tags", body = [ArtifactTag],
         headers(("X-Total-Count" = i64, description = "Tags over all pages"),
                 ("Link" = String, description = "prev/next pages"))),
        (status = 400, description = "Malformed q, sort or reference", body = ErrorsBody),
        (status = 401, description = "Private project, no credentials", body = ErrorsBody),
        (status = 404, description = "No such project, repository or artifact", body = ErrorsBody),
        (status = 422, description = "page or page_size out of range", body = ErrorsBody),
    )
)]
async fn list_tags(
    State(state): State<AppState>,
    caller: Caller,
    Path((project_name, repository, reference)): Path<(String, String, String)>,
    OriginalUri(uri): OriginalUri,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Response> {
    let page = params.page()?;
    let sort = params.sort(&TAG_SORT_KEYS, TAG_DEFAULT_SORT)?;
    let q = params.query()?;
    q.only(&["name"])?;
    let name_like = q.like_pattern("name")?;

    let mut conn = state.db.acquire().await?;
    let (_, name, repository) =
        find_in_project(&mut conn, &caller, &project_name, &repository).await?;
    let row = find_artifact(&mut conn, &repository, &name, &reference).await?;
    let total = artifacts::count_tags(&mut conn, row.id, name_like.as_deref()).await?;
    let tags = artifacts::list_tags(
        &mut conn,
        row.id,
        name_like.as_deref(),
        sort,
        page.limit(),
        page.offset(),
    )
    .await?;
    let items: Vec<ArtifactTag> = tags.into_iter().map(ArtifactTag::from).collect();
    Ok(paged(&uri, page, total, items))
}

/// Tags an artifact. A tag of that name already in the repository is a conflict, as in
/// Harbor: the API does not move tags.
#[utoipa::path(
    post,
    path = "/projects/{project_name}/repositories/{repository_name}/artifacts/{reference}/tags",
    tag = "artifact",
    params(
        ("project_name" = String, Path, description = "The project's name"),
        ("repository_name" = String, Path, description = "The repository's name within the project, URL-encoded twice (a/b → a%252Fb)"),
        ("reference" = String, Path, description = "A digest (sha256:…) or a tag"),
    ),
    request_body = TagRequest,
    responses(
        (status = 201, description = "Created",
         headers(("Location" = String, description = "The new tag"))),
        (status = 400, description = "Bad JSON, or an invalid tag name", body = ErrorsBody),
        (status = 401, description = "Private project, no credentials", body = ErrorsBody),
        (status = 403, description = "No push right in the project", body = ErrorsBody),
        (status = 404, description = "No such project, repository or artifact", body = ErrorsBody),
        (status = 409, description = "The repository already has a tag of that name", body = ErrorsBody),
    )
)]
async fn create_tag(
    State(state): State<AppState>,
    caller: Caller,
    Path((project_name, repository, reference)): Path<(String, String, String)>,
    OriginalUri(uri): OriginalUri,
    ApiJson(body): ApiJson<TagRequest>,
) -> ApiResult<Response> {
    let requested = body
        .name
        .ok_or_else(|| ApiError::bad_request("the tag's name is required"))?;
    let tag = Tag::parse(&requested).map_err(|e| ApiError::bad_request(e.to_string()))?;

    let mut tx = state.db.begin().await?;
    let (access, name, repository) =
        find_in_project(&mut tx, &caller, &project_name, &repository).await?;
    access.require(&caller, access.can_push())?;
    let row = find_artifact(&mut tx, &repository, &name, &reference).await?;
    if !tags::create(&mut tx, repository.id, &tag, row.id).await? {
        return Err(ApiError::Conflict(format!(
            "tag {tag} already exists in repository {name}"
        )));
    }
    let entry = caller.audit(
        "create",
        "tag",
        format!("{name}:{tag}"),
        Some(access.project.id),
    );
    berth_access::audit::record(&mut tx, &entry).await?;
    let moved = Event::TagMoved {
        artifact: artifact_ref(&name, row.digest.clone()),
        tag: tag.to_string(),
        previous: None,
        actor: caller.principal.name().to_owned(),
    };
    events::emit(&mut tx, &moved).await?;
    tx.commit().await?;
    tracing::info!(repository = %name, %tag, digest = %row.digest, "tag created");
    Ok(created(&format!(
        "{}/{tag}",
        uri.path().trim_end_matches('/')
    )))
}

/// Removes a tag from an artifact; the artifact stays.
#[utoipa::path(
    delete,
    path = "/projects/{project_name}/repositories/{repository_name}/artifacts/{reference}/tags/{tag_name}",
    tag = "artifact",
    params(
        ("project_name" = String, Path, description = "The project's name"),
        ("repository_name" = String, Path, description = "The repository's name within the project, URL-encoded twice (a/b → a%252Fb)"),
        ("reference" = String, Path, description = "A digest (sha256:…) or a tag"),
        ("tag_name" = String, Path, description = "The tag to remove"),
    ),
    responses(
        (status = 200, description = "Deleted"),
        (status = 400, description = "Neither a digest nor a tag", body = ErrorsBody),
        (status = 401, description = "Private project, no credentials", body = ErrorsBody),
        (status = 403, description = "No delete right in the project", body = ErrorsBody),
        (status = 404, description = "No such project, repository, artifact, or tag on it", body = ErrorsBody),
        (status = 405, description = "Deleting is switched off (delete.manifests / delete.tags)", body = ErrorsBody),
    )
)]
async fn delete_tag(
    State(state): State<AppState>,
    caller: Caller,
    Path((project_name, repository, reference, tag_name)): Path<(String, String, String, String)>,
) -> ApiResult<Response> {
    require_enabled(state.config.delete.tags, "deleting tags")?;
    let mut tx = state.db.begin().await?;
    let (access, name, repository) =
        find_in_project(&mut tx, &caller, &project_name, &repository).await?;
    access.require(&caller, access.can_delete())?;
    let row = find_artifact(&mut tx, &repository, &name, &reference).await?;
    let not_found = || {
        ApiError::not_found(format!(
            "tag {tag_name} attached to artifact {} not found",
            row.digest
        ))
    };
    let tag = Tag::parse(&tag_name).map_err(|_| not_found())?;
    if !tags::delete_from(&mut tx, repository.id, &tag, row.id).await? {
        return Err(not_found());
    }
    let entry = caller.audit(
        "delete",
        "tag",
        format!("{name}:{tag}"),
        Some(access.project.id),
    );
    berth_access::audit::record(&mut tx, &entry).await?;
    let deleted = Event::TagDeleted {
        artifact: artifact_ref(&name, row.digest.clone()),
        tag: tag.to_string(),
        actor: caller.principal.name().to_owned(),
    };
    events::emit(&mut tx, &deleted).await?;
    tx.commit().await?;
    tracing::info!(repository = %name, %tag, "tag deleted");
    Ok(ok_empty())
}

/// The event payload's name for an artifact of repository `name`.
fn artifact_ref(name: &RepositoryName, digest: String) -> ArtifactRef {
    ArtifactRef {
        project: name.project().to_owned(),
        repository: name.to_string(),
        digest,
    }
}

/// The `delete.*` switches hold for the management API as for `/v2/`: a registry that
/// refuses deletes refuses them on every surface.
pub fn require_enabled(enabled: bool, what: &str) -> ApiResult<()> {
    if enabled {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed(format!(
            "{what} is disabled on this registry"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_become_strings() {
        let value = serde_json::json!({"a": "x", "b": 1});
        let map = annotations(Some(&value));
        assert_eq!(map["a"], "x");
        assert_eq!(map["b"], "1");
        assert!(annotations(None).is_empty());
    }

    #[test]
    fn tag_keyword_modes() {
        let filter = |q| tag_filter(&Query::parse(Some(q)).unwrap()).unwrap();
        assert_eq!(filter("tags=*"), (TagFilter::Tagged, None));
        assert_eq!(filter("tags=nil"), (TagFilter::Untagged, None));
        assert_eq!(filter("tags=v1").1.as_deref(), Some("v1"));
        assert_eq!(filter("tags=~v").1.as_deref(), Some("%v%"));
        assert!(tag_filter(&Query::parse(Some("tags=[a~b]")).unwrap()).is_err());
    }
}
