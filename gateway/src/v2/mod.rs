//! The OCI Distribution API on `/v2/`.
//!
//! One catch-all route parses the path once ([`path::RegistryPath`]) and dispatches on
//! the operation and method; each module below handles one resource.

pub mod blobs;
pub mod catalog;
pub mod manifests;
pub mod path;
pub mod referrers;
pub mod tags;
pub mod uploads;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::error::{ErrorCode, RegistryError, RegistryResult};
use crate::state::AppState;
use path::RegistryPath;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/", get(base))
        .route("/v2", get(base))
        .route("/v2/_catalog", get(catalog::list))
        .route("/v2/{*rest}", any(dispatch))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("docker-distribution-api-version"),
            HeaderValue::from_static("registry/2.0"),
        ))
}

/// `GET /v2/`: the API version check every client starts with.
async fn base() -> Json<serde_json::Value> {
    Json(serde_json::json!({}))
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

async fn route(state: AppState, rest: &str, req: Request) -> RegistryResult<Response> {
    let Some(path) = RegistryPath::parse(rest)? else {
        return Err(RegistryError::new(
            ErrorCode::NameUnknown,
            format!("no registry route for /v2/{rest}"),
        )
        .with_status(axum::http::StatusCode::NOT_FOUND));
    };
    let method = req.method().clone();
    match (path, method) {
        (RegistryPath::Manifest(name, reference), Method::GET | Method::HEAD) => {
            manifests::get(state, name, reference, req).await
        }
        (RegistryPath::Manifest(name, reference), Method::PUT) => {
            manifests::put(state, name, reference, req).await
        }
        (RegistryPath::Manifest(name, reference), Method::DELETE) => {
            manifests::delete(state, name, reference).await
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
