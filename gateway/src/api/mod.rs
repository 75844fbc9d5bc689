//! The management API on `/api/v2.0/`, compatible with Harbor's REST API v2.0 for every
//! resource Berth has, so Harbor automation (harborapi, harbor-cli, Terraform) works
//! unchanged. Berth's additions are extra fields or endpoints Harbor clients ignore.
//!
//! Every route is registered through utoipa's `OpenApiRouter`, so the OpenAPI document
//! served at `/api/v2.0/openapi.json` is built from the same list as the router and
//! cannot drift from it. Each resource module exports `router()`; handlers are thin:
//! authenticate ([`extract::Caller`]), check the right, call the domain layer, answer.

pub mod artifacts;
pub mod audit_logs;
pub mod error;
pub mod executions;
pub mod extract;
pub mod jobservice;
pub mod json;
pub mod members;
pub mod pagination;
pub mod project_access;
pub mod projects;
pub mod query;
pub mod registries;
pub mod replication;
pub mod replication_executions;
pub mod repositories;
pub mod robots;
pub mod schedules;
pub mod system;
pub mod users;

use axum::routing::get;
use axum::Router;
use chrono::{DateTime, SecondsFormat, Utc};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub const BASE_PATH: &str = "/api/v2.0";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Berth management API",
        description = "Harbor REST API v2.0 compatible management API of the Berth registry. \
                       Only the operations listed here are implemented.",
        version = "2.0"
    ),
    components(schemas(error::ErrorsBody)),
    modifiers(&BasicAuth),
    security(("basic" = []), ())
)]
struct ApiDoc;

struct BasicAuth;

impl utoipa::Modify for BasicAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
    }
}

/// Every management route, and the OpenAPI document describing exactly those routes.
pub fn router_and_document() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let api = OpenApiRouter::<AppState>::new()
        .merge(system::router())
        .merge(projects::router())
        .merge(members::router())
        .merge(users::router())
        .merge(robots::router())
        .merge(repositories::router())
        .merge(artifacts::router())
        .merge(audit_logs::router())
        .merge(executions::router())
        .merge(jobservice::router())
        .merge(schedules::router())
        .merge(registries::router())
        .merge(replication::router())
        .merge(replication_executions::router());
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest(BASE_PATH, api)
        .split_for_parts()
}

pub fn router() -> Router<AppState> {
    let (router, document) = router_and_document();
    let document = std::sync::Arc::new(document);
    router.route(
        &format!("{BASE_PATH}/openapi.json"),
        get(move || {
            let document = document.clone();
            async move { json::JsonBody(document.as_ref().clone()) }
        }),
    )
}

/// Harbor's timestamp format: RFC 3339 in UTC with milliseconds (`2024-05-01T10:00:00.000Z`).
pub fn harbor_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}
