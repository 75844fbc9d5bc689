//! The OCI Distribution API on `/v2/`.
//!
//! One catch-all route parses the path once ([`path::RegistryPath`]), checks the
//! caller's access ([`crate::auth::registry`]) and dispatches on the operation and
//! method; each module below handles one resource. Manifest pushes, pulls and deletes
//! are audited here, from the handler's answer, so each is recorded exactly once.

pub mod blobs;
pub mod catalog;
pub mod manifests;
pub mod path;
pub mod referrers;
pub mod tags;
pub mod uploads;

use axum::extract::{Path, Request, State};
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use berth_access::RegistryAction;
use berth_content::{Reference, RepositoryName};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::auth::registry::{self, RegistryAuth};
use crate::error::{ErrorCode, RegistryError, RegistryResult};
use crate::state::AppState;
use path::RegistryPath;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/", get(base))
        .route("/v2", get(base))
        .route("/v2/_catalog", get(catalog_checked))
        .route("/v2/{*rest}", any(dispatch))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("docker-distribution-api-version"),
            HeaderValue::from_static("registry/2.0"),
        ))
}

/// `GET /v2/`: the API version check every client starts with, and how Docker clients
/// learn where to get a token (the challenge of the 401 an anonymous caller gets).
async fn base(State(state): State<AppState>, req: Request) -> Response {
    let checked = match registry::identify(&state, req.headers(), req.extensions()).await {
        Ok(auth) => auth.require_authenticated(),
        Err(e) => Err(e),
    };
    match checked {
        Ok(()) => Json(serde_json::json!({})).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /v2/_catalog`, for system administrators only: it lists every repository.
async fn catalog_checked(State(state): State<AppState>, req: Request) -> Response {
    let checked = match registry::identify(&state, req.headers(), req.extensions()).await {
        Ok(auth) => auth.authorize_catalog(),
        Err(e) => Err(e),
    };
    match checked {
        Ok(()) => catalog::list(State(state), req).await,
        Err(e) => e.into_response(),
    }
}

async fn dispatch(
    State(state): State<AppState>,
    Path(rest): Path<String>,
    req: Request,
) -> Response {
    match route(state, &rest, req).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn route(state: AppState, rest: &str, mut req: Request) -> RegistryResult<Response> {
    let Some(path) = RegistryPath::parse(rest)? else {
        return Err(RegistryError::new(
            ErrorCode::NameUnknown,
            format!("no registry route for /v2/{rest}"),
        )
        .with_status(StatusCode::NOT_FOUND));
    };
    let method = req.method().clone();
    let action = required_action(&method);
    let auth = registry::identify(&state, req.headers(), req.extensions()).await?;
    let audited = manifest_audit(&path, &method);
    // Requests that write into the project need it looked up (and perhaps created) even
    // for callers whose rights need no database (tokens, auth off). Pulls do not: the
    // audit writer resolves a pull's project id in its batched insert, so a pull with a
    // token costs no query of its own.
    let writes_manifest = matches!(method, Method::PUT | Method::DELETE) && audited.is_some();
    let needs_project = writes_manifest || matches!(path, RegistryPath::NewUpload(_));
    let project = auth
        .authorize(&state, repository(&path), action, needs_project)
        .await?;
    if let (RegistryPath::NewUpload(_), &Method::POST) = (&path, &method) {
        drop_unauthorized_mount(&state, &auth, &mut req).await?;
    }
    let response = dispatch_path(state.clone(), path, method, rest, auth.name(), req).await?;
    if let Some(audited) = audited {
        if response.status() == audited.success {
            let entry = auth.audit(
                audited.operation,
                audited.resource_type,
                audited.resource,
                project.as_ref(),
            );
            state.audit.record(entry).await;
        }
    }
    Ok(response)
}

/// What a request does to its repository: reads pull, deletes delete, every other
/// method writes.
fn required_action(method: &Method) -> RegistryAction {
    match *method {
        Method::GET | Method::HEAD => RegistryAction::Pull,
        Method::DELETE => RegistryAction::Delete,
        _ => RegistryAction::Push,
    }
}

fn repository(path: &RegistryPath) -> &RepositoryName {
    match path {
        RegistryPath::Manifest(name, _)
        | RegistryPath::Blob(name, _)
        | RegistryPath::NewUpload(name)
        | RegistryPath::Upload(name, _)
        | RegistryPath::Tags(name)
        | RegistryPath::Referrers(name, _) => name,
    }
}

/// The audit entry a manifest request earns when the handler answers `success`.
struct ManifestAudit {
    success: StatusCode,
    operation: &'static str,
    resource_type: &'static str,
    resource: String,
}

/// Manifest GET (not HEAD: clients probe with it constantly) is a pull, PUT a push,
/// DELETE a delete of an artifact (by digest) or a tag.
fn manifest_audit(path: &RegistryPath, method: &Method) -> Option<ManifestAudit> {
    let RegistryPath::Manifest(name, reference) = path else {
        return None;
    };
    let resource = match reference {
        Reference::Tag(tag) => format!("{name}:{tag}"),
        Reference::Digest(digest) => format!("{name}@{digest}"),
    };
    let (success, operation, resource_type) = match *method {
        Method::GET => (StatusCode::OK, "pull", "artifact"),
        Method::PUT => (StatusCode::CREATED, "push", "artifact"),
        Method::DELETE => match reference {
            Reference::Tag(_) => (StatusCode::ACCEPTED, "delete", "tag"),
            Reference::Digest(_) => (StatusCode::ACCEPTED, "delete", "artifact"),
        },
        _ => return None,
    };
    Some(ManifestAudit {
        success,
        operation,
        resource_type,
        resource,
    })
}

/// A cross-repository mount (`?mount=<digest>&from=<repo>`) reads from `from`, so it
/// needs pull there too. Without it the request becomes a plain upload, as the spec
/// allows any registry to decide: the mount parameters are dropped.
async fn drop_unauthorized_mount(
    state: &AppState,
    auth: &RegistryAuth,
    req: &mut Request,
) -> RegistryResult<()> {
    let Some(query) = req.uri().query() else {
        return Ok(());
    };
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    if !pairs.iter().any(|(k, _)| k == "mount") {
        return Ok(());
    }
    let allowed = match pairs.iter().find(|(k, _)| k == "from") {
        Some((_, from)) => match RepositoryName::parse(from) {
            Ok(from) => auth.may_pull(state, &from).await?,
            // The upload handler treats an unparsable source as "cannot mount" itself.
            Err(_) => true,
        },
        None => auth.may_pull_anywhere(),
    };
    if allowed {
        return Ok(());
    }
    tracing::info!("mount source not readable by the caller; starting a plain upload");
    let kept = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().filter(|(k, _)| k != "mount" && k != "from"))
        .finish();
    let path_and_query = if kept.is_empty() {
        req.uri().path().to_owned()
    } else {
        format!("{}?{kept}", req.uri().path())
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(
        PathAndQuery::try_from(path_and_query)
            .map_err(|e| RegistryError::Internal(format!("cannot rebuild the upload URI: {e}")))?,
    );
    *req.uri_mut() = Uri::from_parts(parts)
        .map_err(|e| RegistryError::Internal(format!("cannot rebuild the upload URI: {e}")))?;
    Ok(())
}

async fn dispatch_path(
    state: AppState,
    path: RegistryPath,
    method: Method,
    rest: &str,
    // Who asked, for the events a write emits.
    actor: &str,
    req: Request,
) -> RegistryResult<Response> {
    match (path, method) {
        (RegistryPath::Manifest(name, reference), Method::GET | Method::HEAD) => {
            manifests::get(state, name, reference, req).await
        }
        (RegistryPath::Manifest(name, reference), Method::PUT) => {
            manifests::put(state, name, reference, actor, req).await
        }
        (RegistryPath::Manifest(name, reference), Method::DELETE) => {
            manifests::delete(state, name, reference, actor).await
        }
        (RegistryPath::Blob(name, digest), Method::GET | Method::HEAD) => {
            blobs::get(state, name, digest, req).await
        }
        (RegistryPath::Blob(name, digest), Method::DELETE) => {
            blobs::delete(state, name, digest).await
        }
        (RegistryPath::NewUpload(name), Method::POST) => uploads::start(state, name, req).await,
        (RegistryPath::Upload(name, id), Method::GET) => uploads::status(state, name, id).await,
        (RegistryPath::Upload(name, id), Method::PATCH) => {
            uploads::patch(state, name, id, req).await
        }
        (RegistryPath::Upload(name, id), Method::PUT) => {
            uploads::complete(state, name, id, req).await
        }
        (RegistryPath::Upload(name, id), Method::DELETE) => uploads::cancel(state, name, id).await,
        (RegistryPath::Tags(name), Method::GET) => tags::list(state, name, req).await,
        (RegistryPath::Referrers(name, digest), Method::GET) => {
            referrers::list(state, name, digest, req).await
        }
        (_, method) => Err(RegistryError::new(
            ErrorCode::Unsupported,
            format!("{method} is not supported on /v2/{rest}"),
        )),
    }
}
