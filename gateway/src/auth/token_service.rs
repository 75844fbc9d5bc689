//! `/service/token`: the Docker registry token endpoint.
//!
//! `GET` with optional Basic credentials and `scope` parameters answers a short-lived
//! signed token granting, per requested scope, only the actions the caller holds
//! there (the intersection: asking for more is not an error, the token just carries
//! less). `POST` takes the OAuth2 password grant form that containerd sends. Without
//! credentials and without scopes the request is a credential check (`docker login`)
//! and is refused.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use berth_access::{authorize, Principal, RegistryAction, ResourceAccess, Scope};
use berth_content::RepositoryName;
use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use super::client_address;
use super::Credentials;
use crate::api::error::{ApiError, ApiResult};
use crate::api::json::JsonBody;
use crate::state::AppState;

/// Largest form body `POST /service/token` reads.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// Most scopes one token request may name. Clients ask for one to three; each costs a
/// rights lookup, and a token carrying hundreds would exceed what `/v2/` accepts.
const MAX_SCOPES: usize = 32;

pub fn router() -> Router<AppState> {
    Router::new().route("/service/token", get(get_token).post(post_token))
}

/// The token response: `token` for Docker's spec, `access_token` for OAuth2 clients.
#[derive(Debug, Serialize)]
struct TokenResponse {
    token: String,
    access_token: String,
    expires_in: u64,
    issued_at: String,
    /// Only in OAuth2 responses: the granted scopes, space-separated.
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

/// `GET /service/token?service=…&scope=…&scope=…[&account=…]`.
async fn get_token(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    respond(issue_from_query(&state, &parts).await)
}

async fn issue_from_query(state: &AppState, req: &Parts) -> ApiResult<TokenResponse> {
    let params = query_pairs(req.uri.query().unwrap_or(""));
    check_service(state, param(&params, "service"))?;
    let scopes = Scope::parse_all(
        params
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.as_str()),
    );
    let client = client_address(&req.extensions);
    let credentials =
        Credentials::from_headers(&req.headers, state.config.auth.max_authorization_bytes)?;
    let principal = super::authenticate(state, credentials.as_ref(), client).await?;
    if !principal.is_authenticated() && scopes.is_empty() {
        // What `docker login` sends to check credentials: there are none to check.
        return Err(ApiError::Unauthorized(
            "authentication required: send HTTP Basic credentials".to_owned(),
        ));
    }
    issue(state, &principal, &scopes, false).await
}

/// `POST /service/token` with `grant_type=password&username=…&password=…&service=…&scope=…`.
async fn post_token(State(state): State<AppState>, req: Request) -> Response {
    respond(issue_from_form(&state, req).await)
}

async fn issue_from_form(state: &AppState, req: Request) -> ApiResult<TokenResponse> {
    let client = client_address(req.extensions());
    let body = axum::body::to_bytes(req.into_body(), MAX_FORM_BYTES)
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read the form body: {e}")))?;
    let params = query_pairs(&String::from_utf8_lossy(&body));
    match param(&params, "grant_type") {
        Some("password") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unsupported grant_type {other:?}; only \"password\" is supported"
            )))
        }
        None => return Err(ApiError::bad_request("grant_type is required")),
    }
    check_service(state, param(&params, "service"))?;
    let (Some(username), Some(password)) = (param(&params, "username"), param(&params, "password"))
    else {
        return Err(ApiError::bad_request(
            "the password grant needs username and password",
        ));
    };
    let principal = super::authenticate(
        state,
        Some(&Credentials::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        }),
        client,
    )
    .await?;
    let scopes = Scope::parse_all(
        params
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.as_str()),
    );
    issue(state, &principal, &scopes, true).await
}

fn respond(result: ApiResult<TokenResponse>) -> Response {
    match result {
        Ok(body) => {
            let mut response = JsonBody(body).into_response();
            // A bearer credential must not be kept by caches between client and server.
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => e.into_response(),
    }
}

fn query_pairs(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The token's audience is the service it names, so it must be ours.
fn check_service(state: &AppState, service: Option<&str>) -> ApiResult<()> {
    let ours = &state.config.auth.service;
    match service {
        Some(service) if service == ours => Ok(()),
        Some(service) => Err(ApiError::bad_request(format!(
            "unable to handle service {service:?}; this registry is {ours:?}"
        ))),
        None => Err(ApiError::bad_request(format!(
            "the service parameter is required (this registry is {ours:?})"
        ))),
    }
}

/// Signs a token for `principal` granting its rights within `scopes`.
async fn issue(
    state: &AppState,
    principal: &Principal,
    scopes: &[Scope],
    oauth: bool,
) -> ApiResult<TokenResponse> {
    if scopes.len() > MAX_SCOPES {
        return Err(ApiError::bad_request(format!(
            "{} scopes requested; at most {MAX_SCOPES} per token",
            scopes.len()
        )));
    }
    let mut access = Vec::with_capacity(scopes.len());
    if !scopes.is_empty() {
        let mut conn = state.db.acquire().await?;
        for scope in scopes {
            let actions = granted_actions(&mut conn, state, principal, scope).await?;
            access.push(ResourceAccess {
                kind: scope.kind.clone(),
                name: scope.name.clone(),
                actions,
            });
        }
    }
    let granted_scope = oauth.then(|| {
        access
            .iter()
            .filter(|a| !a.actions.is_empty())
            .map(|a| format!("{}:{}:{}", a.kind, a.name, a.actions.join(",")))
            .collect::<Vec<_>>()
            .join(" ")
    });
    let ttl = Duration::from_secs(state.config.auth.token_ttl_secs);
    let issued_at = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let token = state
        .auth
        .keys
        .issue(principal.name(), &state.config.auth.service, access, ttl)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(TokenResponse {
        access_token: token.clone(),
        token,
        expires_in: ttl.as_secs(),
        issued_at,
        scope: granted_scope,
    })
}

/// The requested actions of `scope` that `principal` holds, in the order asked.
async fn granted_actions(
    conn: &mut PgConnection,
    state: &AppState,
    principal: &Principal,
    scope: &Scope,
) -> ApiResult<Vec<String>> {
    let rights: BTreeSet<RegistryAction> = match scope.kind.as_str() {
        "repository" => repository_rights(conn, state, principal, &scope.name).await?,
        // The catalog lists every repository: administrators only.
        "registry" if scope.name == "catalog" && principal.is_sysadmin() => {
            return Ok(scope
                .actions
                .iter()
                .filter(|a| *a == "*")
                .take(1)
                .cloned()
                .collect());
        }
        _ => BTreeSet::new(),
    };
    Ok(intersect(&scope.actions, &rights))
}

/// What `principal` may do in the project of repository `name`. A project that does
/// not exist grants nothing, except push and pull to an administrator when a push may
/// create it.
async fn repository_rights(
    conn: &mut PgConnection,
    state: &AppState,
    principal: &Principal,
    name: &str,
) -> ApiResult<BTreeSet<RegistryAction>> {
    let Ok(name) = RepositoryName::parse(name) else {
        return Ok(BTreeSet::new());
    };
    match authorize::actions_on_project(conn, principal, name.project()).await? {
        Some((_, actions)) => Ok(actions),
        None if principal.is_sysadmin() && state.config.projects.create_on_push => {
            Ok(BTreeSet::from([RegistryAction::Pull, RegistryAction::Push]))
        }
        None => Ok(BTreeSet::new()),
    }
}

/// The requested words that `rights` cover, deduplicated; `*` only when every action
/// is held.
fn intersect(requested: &[String], rights: &BTreeSet<RegistryAction>) -> Vec<String> {
    let mut granted: Vec<String> = Vec::new();
    for word in requested {
        let held = match RegistryAction::parse(word) {
            Some(action) => rights.contains(&action),
            None => word == "*" && RegistryAction::ALL.iter().all(|a| rights.contains(a)),
        };
        if held && !granted.contains(word) {
            granted.push(word.clone());
        }
    }
    granted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn grants_are_the_intersection_of_request_and_rights() {
        use RegistryAction::*;
        let pull_only = BTreeSet::from([Pull]);
        assert_eq!(
            intersect(&words(&["pull", "push"]), &pull_only),
            words(&["pull"])
        );
        assert!(intersect(&words(&["push", "*"]), &pull_only).is_empty());
        let all = BTreeSet::from([Pull, Push, Delete]);
        assert_eq!(
            intersect(&words(&["*", "pull", "pull", "scanner-pull"]), &all),
            words(&["*", "pull"])
        );
    }
}
