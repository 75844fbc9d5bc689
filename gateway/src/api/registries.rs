//! `/registries` and `/replication/adapters`: the remote registries replication pushes
//! to and pulls from, in Harbor's model, for system administrators only.
//!
//! A credential's secret is sealed with the installation's secret key before it is
//! stored and never leaves the gateway again: responses show `*****` where one is
//! stored, as Harbor does, and audit records name the registry only.
//!
//! `status` is the outcome of the last ping, stored in the row: a registry is pinged
//! when it is created, when its connection settings change, and on `POST
//! /registries/ping` by id. Listing and reading never touch the network, so a list of
//! fifty registries with ten unreachable answers at once. Unlike Harbor, an unreachable
//! or refusing registry is still saved (marked `unhealthy`): a peer down for maintenance
//! or not yet set up must be configurable, and Docker Hub must be configurable offline.
//!
//! Berth adds per-registry limits as extra fields of Harbor's `Registry`
//! (`rate_limit_per_second`, `rate_limit_burst`, `max_concurrency`), which Harbor
//! clients ignore and the replication worker enforces across all its processes.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{OriginalUri, State};
use axum::response::Response;
use berth_access::registries::{
    self, BasicCredential, NewRegistry, Registry, RegistryFilter, RegistryLimits, RegistryStatus,
    RegistryType, RegistryUpdate, SealedSecret, SecretChange,
};
use berth_access::secrets::SecretString;
use berth_registry_client::{ClientConfig, ClientError, Credential, RegistryClient};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorsBody};
use super::extract::{ApiPath, ApiQuery, Caller};
use super::json::{self, ApiJson, JsonBody};
use super::pagination;
use super::query::{contains_pattern, ListParams, Sort};
use super::{harbor_time, BASE_PATH};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_registries, create_registry))
        .routes(routes!(get_registry, update_registry, delete_registry))
        .routes(routes!(ping_registry))
        .routes(routes!(get_registry_info))
        .routes(routes!(list_adapters))
        .routes(routes!(list_adapter_infos))
}

/// What responses show instead of a stored secret (Harbor's mask). Sent back in an
/// update or a ping, it means "the stored secret".
pub const SECRET_MASK: &str = "*****";

/// The only credential type Berth stores.
const BASIC: &str = "basic";

/// The longest a ping may take, connection and answer (and token request) included.
pub const PING_TIMEOUT: Duration = Duration::from_secs(10);

// ---- Shapes -------------------------------------------------------------------------

/// Harbor's `RegistryCredential`. In responses the secret is `*****` when one is stored
/// and empty otherwise.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct RegistryCredential {
    /// `basic` (the default when omitted).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The user name; empty for anonymous access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<String>,
    /// The password or token. Never returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_secret: Option<String>,
}

/// Harbor's `Registry`, with Berth's limits.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Registry)]
pub struct RegistryResp {
    pub id: i64,
    pub name: String,
    pub description: String,
    /// `docker-registry`, `harbor` or `docker-hub`.
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    /// Whether TLS certificates go unchecked.
    pub insecure: bool,
    pub credential: RegistryCredential,
    /// The last ping's outcome: `healthy`, `unhealthy`, or `unknown` (never pinged).
    pub status: String,
    #[schema(format = DateTime)]
    pub creation_time: String,
    #[schema(format = DateTime)]
    pub update_time: String,
    /// Berth: requests per second to this registry, across all workers; 0 is unlimited.
    pub rate_limit_per_second: f64,
    /// Berth: requests allowed in a burst above the rate; 0 is one second's worth.
    pub rate_limit_burst: i32,
    /// Berth: requests in flight to this registry, across all workers; 0 is unlimited.
    pub max_concurrency: i32,
}

impl From<Registry> for RegistryResp {
    fn from(r: Registry) -> RegistryResp {
        RegistryResp {
            id: r.id,
            credential: RegistryCredential {
                kind: Some(r.credential_type.clone()),
                access_key: Some(r.access_key.clone()),
                access_secret: Some(if r.has_secret { SECRET_MASK } else { "" }.to_owned()),
            },
            name: r.name,
            description: r.description,
            kind: r.kind.as_str().to_owned(),
            url: r.url,
            insecure: r.insecure,
            status: r.status.as_str().to_owned(),
            creation_time: harbor_time(r.created_at),
            update_time: harbor_time(r.updated_at),
            rate_limit_per_second: r.limits.rate_limit_per_second,
            rate_limit_burst: r.limits.rate_limit_burst,
            max_concurrency: r.limits.max_concurrency,
        }
    }
}

/// Harbor's `Registry` as a POST body; `id`, `status` and the times are ignored.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RegistryCreate {
    /// 1 to 64 characters, unique.
    pub name: Option<String>,
    pub description: Option<String>,
    /// `docker-registry`, `harbor` or `docker-hub`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `http(s)://host[:port]`; without a scheme, `http://` is assumed. Docker Hub's
    /// defaults to `https://hub.docker.com`.
    pub url: Option<String>,
    pub insecure: Option<bool>,
    /// Omitted, or with an empty key and secret: anonymous access.
    pub credential: Option<RegistryCredential>,
    /// Berth: 0 (default, unlimited) to 100000.
    pub rate_limit_per_second: Option<f64>,
    /// Berth: 0 (default, one second's worth) to 100000.
    pub rate_limit_burst: Option<i32>,
    /// Berth: 0 (default, unlimited) to 10000.
    pub max_concurrency: Option<i32>,
}

/// Harbor's `RegistryUpdate`, with Berth's limits: omitted fields keep their value.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RegistryUpdateReq {
    pub name: Option<String>,
    pub description: Option<String>,
    pub url: Option<String>,
    /// `basic`.
    pub credential_type: Option<String>,
    pub access_key: Option<String>,
    /// A new secret; empty removes it, `*****` keeps it.
    pub access_secret: Option<String>,
    pub insecure: Option<bool>,
    pub rate_limit_per_second: Option<f64>,
    pub rate_limit_burst: Option<i32>,
    pub max_concurrency: Option<i32>,
}

/// Harbor's `RegistryPing`: a stored registry (`id`), a registry not yet stored (`type`
/// and `url`), or a stored one with some settings replaced (a new secret before saving
/// it).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RegistryPing {
    pub id: Option<i64>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub url: Option<String>,
    pub credential_type: Option<String>,
    pub access_key: Option<String>,
    /// `*****` means the stored secret.
    pub access_secret: Option<String>,
    pub insecure: Option<bool>,
}

/// Harbor's `FilterStyle`.
#[derive(Debug, Serialize, ToSchema)]
pub struct FilterStyle {
    /// `name`, `tag` or `resource`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `input` (a pattern) or `radio` (one of `values`).
    pub style: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Harbor's `RegistryInfo`: what a policy with this registry may use.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegistryInfo {
    #[serde(rename = "type")]
    pub kind: String,
    pub description: String,
    pub supported_resource_filters: Vec<FilterStyle>,
    /// `manual`, `scheduled`; `event_based` only for the local registry (id 0): events
    /// are what Berth's own pushes raise, and a remote raises none Berth hears.
    pub supported_triggers: Vec<String>,
    /// Whether blobs may be copied in chunks.
    pub supported_copy_by_chunk: bool,
}

/// Harbor's `RegistryEndpoint`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegistryEndpoint {
    pub key: String,
    pub value: String,
}

/// Harbor's `RegistryProviderEndpointPattern`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegistryProviderEndpointPattern {
    /// `EndpointPatternTypeFix`: the URL is one of `endpoints`.
    pub endpoint_type: String,
    pub endpoints: Vec<RegistryEndpoint>,
}

/// Harbor's `RegistryProviderInfo`: how a UI should ask for a registry of this type.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegistryProviderInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_pattern: Option<RegistryProviderEndpointPattern>,
}

/// Harbor's deprecated `name` filter of the registry list (fuzzy).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NameParam {
    /// Deprecated by Harbor for `q=name=~…`: registries whose name contains it.
    pub name: Option<String>,
}

// ---- Validation ---------------------------------------------------------------------

/// Without `sort`, registries are listed by id.
const DEFAULT_SORT: Sort<'static> = Sort {
    key: "id",
    descending: false,
};

fn registry_not_found(id: i64) -> ApiError {
    ApiError::not_found(format!("registry {id} not found"))
}

fn name_taken(name: &str) -> ApiError {
    ApiError::Conflict(format!("registry {name} already exists"))
}

fn parse_type(kind: Option<&str>) -> ApiResult<RegistryType> {
    let kind = kind.unwrap_or_default();
    if kind.is_empty() {
        return Err(ApiError::bad_request("type cannot be empty"));
    }
    RegistryType::parse(kind).ok_or_else(|| {
        let known: Vec<&str> = RegistryType::ALL.iter().map(|t| t.as_str()).collect();
        ApiError::bad_request(format!(
            "unsupported registry type {kind:?}; supported: {}",
            known.join(", ")
        ))
    })
}

fn check_credential_type(kind: Option<&str>) -> ApiResult<()> {
    match kind {
        None | Some("") | Some(BASIC) => Ok(()),
        Some(other) => Err(ApiError::bad_request(format!(
            "unsupported credential type {other:?}; supported: basic"
        ))),
    }
}

/// The URL to store: normalised, or the type's default when none is given.
fn parse_url(kind: RegistryType, url: Option<&str>) -> ApiResult<String> {
    let given = url.map(str::trim).filter(|u| !u.is_empty());
    match (given, kind.default_url()) {
        (Some(url), _) => registries::normalize_url(url).map_err(ApiError::BadRequest),
        (None, Some(default)) => Ok(default.to_owned()),
        (None, None) => Err(ApiError::bad_request("url cannot be empty")),
    }
}

fn check_name(name: &str) -> ApiResult<()> {
    registries::check_name(name).map_err(ApiError::BadRequest)
}

fn check_limits(limits: RegistryLimits) -> ApiResult<RegistryLimits> {
    limits.check().map_err(ApiError::BadRequest)?;
    Ok(limits)
}

/// `secret` sealed for storage. Only absurd sizes fail, and the body limit keeps those
/// out.
fn seal(state: &AppState, secret: &str) -> ApiResult<SealedSecret> {
    SealedSecret::seal(&state.secret_key, secret).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// A stored secret could not be opened: the configured key is not the one it was sealed
/// with (or the row was altered). The operator must fix the key; the caller sees why.
fn unreadable_secret(registry: &Registry, error: impl std::fmt::Display) -> String {
    tracing::error!(registry = %registry.name, error = %error, "cannot open a stored registry credential");
    format!("cannot read the stored credential: {error}")
}

// ---- Pinging ------------------------------------------------------------------------

/// Where and how to reach a registry.
struct Endpoint {
    kind: RegistryType,
    url: String,
    insecure: bool,
    credential: Option<BasicCredential>,
}

/// Pings `endpoint` (`GET /v2/` with auth negotiation), within [`PING_TIMEOUT`]. Without
/// a credential only reachability counts (a 401 or 403 is fine, as Harbor's anonymous
/// ping has it); with one, the registry must accept it. The error is readable.
async fn ping(endpoint: &Endpoint) -> Result<(), String> {
    let api_url = endpoint.kind.api_url(&endpoint.url);
    let url = url::Url::parse(&api_url).map_err(|e| format!("invalid URL {api_url}: {e}"))?;
    let mut config = ClientConfig::new(url);
    config.insecure = endpoint.insecure;
    config.timeout = PING_TIMEOUT;
    config.user_agent = concat!("berth-gateway/", env!("CARGO_PKG_VERSION")).to_owned();
    let anonymous = endpoint.credential.is_none();
    if let Some(credential) = &endpoint.credential {
        config.credential = Credential::Basic {
            username: credential.username.clone(),
            password: credential.password.expose().to_owned(),
        };
    }
    let client = RegistryClient::new(config).map_err(|e| e.to_string())?;
    let result = match tokio::time::timeout(PING_TIMEOUT, client.ping()).await {
        Ok(result) => result,
        Err(_) => {
            return Err(format!(
                "{api_url} did not answer within {} s",
                PING_TIMEOUT.as_secs()
            ))
        }
    };
    match result {
        Ok(()) => Ok(()),
        Err(ClientError::Unauthorized(_) | ClientError::Forbidden(_)) if anonymous => Ok(()),
        Err(ClientError::Unauthorized(reason)) => Err(format!(
            "{api_url} refused the credential (wrong access key or secret): {reason}"
        )),
        Err(e) => Err(format!("{api_url}: {e}")),
    }
}

/// The status a ping of `endpoint` yields, logging why it failed.
async fn ping_status(name: &str, endpoint: &Endpoint) -> RegistryStatus {
    match ping(endpoint).await {
        Ok(()) => RegistryStatus::Healthy,
        Err(reason) => {
            tracing::info!(registry = %name, reason = %reason, "registry ping failed");
            RegistryStatus::Unhealthy
        }
    }
}

/// The stored secret of `registry` in clear; `Ok(None)` when it has none.
async fn stored_secret(
    state: &AppState,
    registry: &Registry,
) -> ApiResult<Result<Option<SecretString>, String>> {
    let mut conn = state.db.acquire().await?;
    let Some(sealed) = registries::sealed_secret(&mut conn, registry.id)
        .await?
        .flatten()
    else {
        return Ok(Ok(None));
    };
    Ok(sealed
        .open(&state.secret_key)
        .map(Some)
        .map_err(|e| unreadable_secret(registry, e)))
}

// ---- Handlers -----------------------------------------------------------------------

/// List registries.
///
/// `q` keys: `name` and `url` (exact or `~fuzzy`), `type` (exact or `{a b}`). `sort`:
/// `id` (default), `name`, `type`, `url`, `creation_time`, `update_time`.
#[utoipa::path(
    get,
    path = "/registries",
    tag = "registry",
    operation_id = "listRegistries",
    params(ListParams, NameParam),
    responses(
        (status = 200, description = "One page of registries", body = [RegistryResp],
         headers(("X-Total-Count" = i64, description = "Registries matching"),
                 ("Link" = String, description = "Previous and next pages"))),
        (status = 400, description = "Malformed q or sort", body = ErrorsBody),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 422, description = "page or page_size out of range", body = ErrorsBody),
    )
)]
async fn list_registries(
    State(state): State<AppState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(params): ApiQuery<ListParams>,
    ApiQuery(name): ApiQuery<NameParam>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let page = params.page()?;
    let query = params.query()?;
    query.only(&["name", "type", "url"])?;
    let sort = params.sort(registries::SORT_KEYS, DEFAULT_SORT)?;
    let mut name_like = query.like_pattern("name")?;
    // Harbor: the deprecated `name` parameter is a fuzzy match on the name.
    if let Some(name) = name.name.filter(|n| !n.is_empty()) {
        name_like = Some(contains_pattern(&name));
    }
    let filter = RegistryFilter {
        name_like,
        url_like: query.like_pattern("url")?,
        types: query.one_of("type")?,
    };
    let mut conn = state.db.acquire().await?;
    let total = registries::count(&mut conn, &filter).await?;
    let found = registries::list(&mut conn, &filter, sort, page.limit(), page.offset()).await?;
    let items: Vec<RegistryResp> = found.into_iter().map(RegistryResp::from).collect();
    Ok(pagination::paged(&uri, page, total, items))
}

/// Create a registry. It is pinged first and saved whatever the outcome, with `status`
/// saying how the ping went.
#[utoipa::path(
    post,
    path = "/registries",
    tag = "registry",
    operation_id = "createRegistry",
    request_body = RegistryCreate,
    responses(
        (status = 201, description = "Created",
         headers(("Location" = String, description = "/api/v2.0/registries/{id}"))),
        (status = 400, description = "Invalid name, type, URL, credential or limits", body = ErrorsBody),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 409, description = "A registry of that name exists", body = ErrorsBody),
    )
)]
async fn create_registry(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<RegistryCreate>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let name = req.name.unwrap_or_default();
    check_name(&name)?;
    let kind = parse_type(req.kind.as_deref())?;
    let url = parse_url(kind, req.url.as_deref())?;
    let credential = req.credential.unwrap_or_default();
    check_credential_type(credential.kind.as_deref())?;
    let access_key = credential.access_key.unwrap_or_default();
    let secret = credential.access_secret.filter(|s| !s.is_empty());
    if secret.as_deref() == Some(SECRET_MASK) {
        return Err(ApiError::bad_request(format!(
            "access_secret {SECRET_MASK:?} is the mask Berth shows for stored secrets; give the secret itself"
        )));
    }
    let limits = check_limits(RegistryLimits {
        rate_limit_per_second: req.rate_limit_per_second.unwrap_or(0.0),
        rate_limit_burst: req.rate_limit_burst.unwrap_or(0),
        max_concurrency: req.max_concurrency.unwrap_or(0),
    })?;
    let insecure = req.insecure.unwrap_or(false);
    let endpoint = Endpoint {
        kind,
        url: url.clone(),
        insecure,
        credential: registries::basic_credential(
            &access_key,
            secret.as_deref().map(SecretString::new),
        ),
    };
    let status = ping_status(&name, &endpoint).await;
    let new = NewRegistry {
        access_secret: secret.as_deref().map(|s| seal(&state, s)).transpose()?,
        name,
        description: req.description.unwrap_or_default(),
        kind,
        url,
        insecure,
        access_key,
        status,
        limits,
    };
    let audit = caller.audit("create", "registry", new.name.clone(), None);
    let mut conn = state.db.acquire().await?;
    let registry = registries::create(&mut conn, &new, &audit)
        .await
        .map_err(|e| ApiError::on_constraint(e, "registries_name_key", name_taken(&new.name)))?;
    Ok(json::created(&format!(
        "{BASE_PATH}/registries/{}",
        registry.id
    )))
}

/// A registry, with `*****` in place of its secret.
#[utoipa::path(
    get,
    path = "/registries/{id}",
    tag = "registry",
    operation_id = "getRegistry",
    params(("id" = i64, Path, description = "The registry's id")),
    responses(
        (status = 200, description = "The registry", body = RegistryResp),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 404, description = "No such registry", body = ErrorsBody),
    )
)]
async fn get_registry(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<JsonBody<RegistryResp>> {
    caller.require_sysadmin()?;
    let mut conn = state.db.acquire().await?;
    let registry = registries::find(&mut conn, id)
        .await?
        .ok_or_else(|| registry_not_found(id))?;
    Ok(JsonBody(registry.into()))
}

/// Update a registry: omitted fields keep their value; the type cannot change. When the
/// URL, `insecure` or the credential change, the registry is pinged again.
#[utoipa::path(
    put,
    path = "/registries/{id}",
    tag = "registry",
    operation_id = "updateRegistry",
    params(("id" = i64, Path, description = "The registry's id")),
    request_body = RegistryUpdateReq,
    responses(
        (status = 200, description = "Updated"),
        (status = 400, description = "Invalid name, URL, credential or limits", body = ErrorsBody),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 404, description = "No such registry", body = ErrorsBody),
        (status = 409, description = "Another registry has that name", body = ErrorsBody),
    )
)]
async fn update_registry(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<RegistryUpdateReq>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let mut conn = state.db.acquire().await?;
    let current = registries::find(&mut conn, id)
        .await?
        .ok_or_else(|| registry_not_found(id))?;
    drop(conn);
    let name = req.name.unwrap_or_else(|| current.name.clone());
    check_name(&name)?;
    let url = match req.url.as_deref() {
        Some(url) => parse_url(current.kind, Some(url))?,
        None => current.url.clone(),
    };
    check_credential_type(req.credential_type.as_deref())?;
    let limits = check_limits(RegistryLimits {
        rate_limit_per_second: req
            .rate_limit_per_second
            .unwrap_or(current.limits.rate_limit_per_second),
        rate_limit_burst: req
            .rate_limit_burst
            .unwrap_or(current.limits.rate_limit_burst),
        max_concurrency: req
            .max_concurrency
            .unwrap_or(current.limits.max_concurrency),
    })?;
    let insecure = req.insecure.unwrap_or(current.insecure);
    let access_key = req.access_key.unwrap_or_else(|| current.access_key.clone());
    // Harbor's UI sends the mask back when the secret was left alone.
    let new_secret = req.access_secret.filter(|s| s != SECRET_MASK);
    let connection_changed = url != current.url
        || insecure != current.insecure
        || access_key != current.access_key
        || new_secret.is_some();
    let status = if connection_changed {
        let secret = match &new_secret {
            Some(secret) => Ok(Some(SecretString::new(secret.as_str()))),
            None => stored_secret(&state, &current).await?,
        };
        match secret {
            Ok(secret) => {
                let endpoint = Endpoint {
                    kind: current.kind,
                    url: url.clone(),
                    insecure,
                    credential: registries::basic_credential(&access_key, secret),
                };
                ping_status(&name, &endpoint).await
            }
            Err(_) => RegistryStatus::Unhealthy,
        }
    } else {
        current.status
    };
    let access_secret = match new_secret {
        None => SecretChange::Keep,
        Some(secret) if secret.is_empty() => SecretChange::Set(None),
        Some(secret) => SecretChange::Set(Some(seal(&state, &secret)?)),
    };
    let change = RegistryUpdate {
        description: req
            .description
            .unwrap_or_else(|| current.description.clone()),
        kind: current.kind,
        url,
        insecure,
        access_key,
        access_secret,
        status,
        limits,
        name,
    };
    let audit = caller.audit("update", "registry", change.name.clone(), None);
    let mut conn = state.db.acquire().await?;
    registries::update(&mut conn, id, &change, &audit)
        .await
        .map_err(|e| ApiError::on_constraint(e, "registries_name_key", name_taken(&change.name)))?
        .ok_or_else(|| registry_not_found(id))?;
    Ok(json::ok_empty())
}

/// Delete a registry. Refused with 412 while a replication policy uses it.
#[utoipa::path(
    delete,
    path = "/registries/{id}",
    tag = "registry",
    operation_id = "deleteRegistry",
    params(("id" = i64, Path, description = "The registry's id")),
    responses(
        (status = 200, description = "Deleted"),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 404, description = "No such registry", body = ErrorsBody),
        (status = 412, description = "A replication policy uses it", body = ErrorsBody),
    )
)]
async fn delete_registry(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let mut conn = state.db.acquire().await?;
    let registry = registries::find(&mut conn, id)
        .await?
        .ok_or_else(|| registry_not_found(id))?;
    let audit = caller.audit("delete", "registry", registry.name.clone(), None);
    // The policies' foreign keys decide, so a policy created concurrently cannot be
    // left pointing at nothing.
    let deleted = registries::delete(&mut conn, id, &audit)
        .await
        .map_err(|e| {
            if registries::is_in_use(&e) {
                ApiError::Precondition(format!(
                    "the registry {id} is referenced by replication policies, cannot delete it"
                ))
            } else {
                ApiError::Database(e)
            }
        })?;
    if !deleted {
        return Err(registry_not_found(id));
    }
    Ok(json::ok_empty())
}

/// Check that a registry is reachable and accepts its credential: a stored one (`id`),
/// one not yet stored (`type`, `url`, credential), or a stored one with some settings
/// replaced. 200 when it is; 400 saying why when it is not. A ping of a stored
/// registry by `id` alone also records the outcome as its `status`.
#[utoipa::path(
    post,
    path = "/registries/ping",
    tag = "registry",
    operation_id = "pingRegistry",
    request_body = RegistryPing,
    responses(
        (status = 200, description = "The registry is healthy"),
        (status = 400, description = "Unhealthy (the message says why), or a missing or invalid type or URL", body = ErrorsBody),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 404, description = "No registry with that id", body = ErrorsBody),
    )
)]
async fn ping_registry(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<RegistryPing>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let stored = match req.id {
        Some(id) => {
            let mut conn = state.db.acquire().await?;
            let registry = registries::find(&mut conn, id)
                .await?
                .ok_or_else(|| registry_not_found(id))?;
            Some(registry)
        }
        None => None,
    };
    let by_id_alone = stored.is_some()
        && req.kind.is_none()
        && req.url.is_none()
        && req.credential_type.is_none()
        && req.access_key.is_none()
        && req.access_secret.is_none()
        && req.insecure.is_none();
    let kind = match (req.kind.as_deref(), &stored) {
        (Some(kind), _) => parse_type(Some(kind))?,
        (None, Some(registry)) => registry.kind,
        (None, None) => return Err(ApiError::bad_request("type or url cannot be empty")),
    };
    let url = match (req.url.as_deref(), &stored) {
        (Some(url), _) => parse_url(kind, Some(url))?,
        (None, Some(registry)) => registry.url.clone(),
        (None, None) => parse_url(kind, None)
            .map_err(|_| ApiError::bad_request("type or url cannot be empty"))?,
    };
    check_credential_type(req.credential_type.as_deref())?;
    let insecure = req
        .insecure
        .or(stored.as_ref().map(|r| r.insecure))
        .unwrap_or(false);
    let access_key = req
        .access_key
        .or(stored.as_ref().map(|r| r.access_key.clone()))
        .unwrap_or_default();
    let secret = match (req.access_secret.filter(|s| s != SECRET_MASK), &stored) {
        (Some(secret), _) => Ok(Some(SecretString::new(secret))),
        (None, Some(registry)) => stored_secret(&state, registry).await?,
        (None, None) => Ok(None),
    };
    let name = stored.as_ref().map_or("(not stored)", |r| r.name.as_str());
    let outcome = match secret {
        Ok(secret) => {
            let endpoint = Endpoint {
                kind,
                url,
                insecure,
                credential: registries::basic_credential(&access_key, secret),
            };
            ping(&endpoint).await
        }
        Err(reason) => Err(reason),
    };
    if let (true, Some(registry)) = (by_id_alone, &stored) {
        let status = if outcome.is_ok() {
            RegistryStatus::Healthy
        } else {
            RegistryStatus::Unhealthy
        };
        let mut conn = state.db.acquire().await?;
        registries::set_status(&mut conn, registry.id, status).await?;
    }
    match outcome {
        Ok(()) => Ok(json::ok_empty()),
        Err(reason) => {
            tracing::info!(registry = %name, reason = %reason, "registry ping failed");
            Err(ApiError::bad_request(format!(
                "failed to ping registry: {reason}"
            )))
        }
    }
}

/// The filters and triggers a replication policy with this registry may use. Id 0 is
/// the local Berth registry, the source of push-mode policies.
#[utoipa::path(
    get,
    path = "/registries/{id}/info",
    tag = "registry",
    operation_id = "getRegistryInfo",
    params(("id" = i64, Path, description = "The registry's id; 0 for the local registry")),
    responses(
        (status = 200, description = "What the registry supports", body = RegistryInfo),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 404, description = "No such registry", body = ErrorsBody),
    )
)]
async fn get_registry_info(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<JsonBody<RegistryInfo>> {
    caller.require_sysadmin()?;
    if id == 0 {
        return Ok(JsonBody(registry_info(
            RegistryType::Harbor,
            "the local Berth registry".to_owned(),
            true,
        )));
    }
    let mut conn = state.db.acquire().await?;
    let registry = registries::find(&mut conn, id)
        .await?
        .ok_or_else(|| registry_not_found(id))?;
    Ok(JsonBody(registry_info(
        registry.kind,
        registry.description,
        false,
    )))
}

/// What Berth's replication supports with a registry of `kind`. Every type is the
/// Distribution API underneath, and Berth copies any OCI artifact, not only images.
/// Docker Hub is not offered chunked copies, as in Harbor.
fn registry_info(kind: RegistryType, description: String, local: bool) -> RegistryInfo {
    let input = |kind: &str| FilterStyle {
        kind: kind.to_owned(),
        style: "input".to_owned(),
        values: Vec::new(),
    };
    let mut triggers = vec!["manual".to_owned(), "scheduled".to_owned()];
    if local {
        triggers.push("event_based".to_owned());
    }
    RegistryInfo {
        kind: kind.as_str().to_owned(),
        description,
        supported_resource_filters: vec![
            input("name"),
            input("tag"),
            FilterStyle {
                kind: "resource".to_owned(),
                style: "radio".to_owned(),
                values: vec!["image".to_owned(), "artifact".to_owned()],
            },
        ],
        supported_triggers: triggers,
        supported_copy_by_chunk: kind != RegistryType::DockerHub,
    }
}

/// The registry types Berth can replicate with.
#[utoipa::path(
    get,
    path = "/replication/adapters",
    tag = "registry",
    operation_id = "listRegistryProviderTypes",
    responses(
        (status = 200, description = "Type names", body = [String]),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
    )
)]
async fn list_adapters(caller: Caller) -> ApiResult<JsonBody<Vec<&'static str>>> {
    caller.require_sysadmin()?;
    Ok(JsonBody(
        RegistryType::ALL.iter().map(|t| t.as_str()).collect(),
    ))
}

/// For each registry type, how its endpoint is given: Docker Hub's is fixed, the others
/// take any URL (an empty object, as in Harbor).
#[utoipa::path(
    get,
    path = "/replication/adapterinfos",
    tag = "registry",
    operation_id = "listRegistryProviderInfos",
    responses(
        (status = 200, description = "By type name", body = BTreeMap<String, RegistryProviderInfo>),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
    )
)]
async fn list_adapter_infos(
    caller: Caller,
) -> ApiResult<JsonBody<BTreeMap<&'static str, RegistryProviderInfo>>> {
    caller.require_sysadmin()?;
    let infos = RegistryType::ALL
        .into_iter()
        .map(|kind| {
            let endpoint_pattern = kind
                .default_url()
                .map(|url| RegistryProviderEndpointPattern {
                    endpoint_type: "EndpointPatternTypeFix".to_owned(),
                    endpoints: vec![RegistryEndpoint {
                        key: url.trim_start_matches("https://").to_owned(),
                        value: url.to_owned(),
                    }],
                });
            (kind.as_str(), RegistryProviderInfo { endpoint_pattern })
        })
        .collect();
    Ok(JsonBody(infos))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn registry(has_secret: bool) -> Registry {
        Registry {
            id: 3,
            name: "remote".into(),
            description: "a peer".into(),
            kind: RegistryType::DockerRegistry,
            url: "http://127.0.0.1:5001".into(),
            insecure: false,
            credential_type: "basic".into(),
            access_key: "bob".into(),
            has_secret,
            status: RegistryStatus::Healthy,
            limits: RegistryLimits {
                rate_limit_per_second: 10.0,
                rate_limit_burst: 5,
                max_concurrency: 2,
            },
            created_at: at("2025-01-01T00:00:00Z"),
            updated_at: at("2025-01-02T00:00:00Z"),
        }
    }

    #[test]
    fn a_registry_reads_as_harbors_registry_with_the_secret_masked() {
        let body = serde_json::to_value(RegistryResp::from(registry(true))).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "id": 3, "name": "remote", "description": "a peer",
                "type": "docker-registry", "url": "http://127.0.0.1:5001",
                "insecure": false,
                "credential": {"type": "basic", "access_key": "bob", "access_secret": "*****"},
                "status": "healthy",
                "creation_time": "2025-01-01T00:00:00.000Z",
                "update_time": "2025-01-02T00:00:00.000Z",
                "rate_limit_per_second": 10.0, "rate_limit_burst": 5, "max_concurrency": 2,
            })
        );
        let without = serde_json::to_value(RegistryResp::from(registry(false))).unwrap();
        assert_eq!(without["credential"]["access_secret"], "");
    }

    #[test]
    fn types_and_credential_types_are_checked() {
        assert_eq!(
            parse_type(Some("docker-hub")).unwrap(),
            RegistryType::DockerHub
        );
        assert!(matches!(parse_type(None), Err(ApiError::BadRequest(_))));
        assert!(matches!(
            parse_type(Some("quay")),
            Err(ApiError::BadRequest(_))
        ));
        assert!(check_credential_type(None).is_ok());
        assert!(check_credential_type(Some("basic")).is_ok());
        assert!(check_credential_type(Some("oauth")).is_err());
    }

    #[test]
    fn docker_hub_urls_default_and_others_are_required() {
        assert_eq!(
            parse_url(RegistryType::DockerHub, None).unwrap(),
            "https://hub.docker.com"
        );
        assert_eq!(
            parse_url(RegistryType::DockerHub, Some(" ")).unwrap(),
            "https://hub.docker.com"
        );
        assert!(parse_url(RegistryType::DockerRegistry, None).is_err());
        assert_eq!(
            parse_url(RegistryType::Harbor, Some("h.example/")).unwrap(),
            "http://h.example"
        );
    }

    #[test]
    fn only_the_local_registry_offers_event_based_triggers() {
        let remote = serde_json::to_value(registry_info(
            RegistryType::DockerRegistry,
            String::new(),
            false,
        ))
        .unwrap();
        assert_eq!(
            remote["supported_triggers"],
            serde_json::json!(["manual", "scheduled"])
        );
        assert_eq!(
            remote["supported_resource_filters"],
            serde_json::json!([
                {"type": "name", "style": "input"},
                {"type": "tag", "style": "input"},
                {"type": "resource", "style": "radio", "values": ["image", "artifact"]},
            ])
        );
        assert_eq!(remote["supported_copy_by_chunk"], true);
        let local = registry_info(RegistryType::Harbor, String::new(), true);
        assert!(local.supported_triggers.contains(&"event_based".to_owned()));
        let hub = registry_info(RegistryType::DockerHub, String::new(), false);
        assert!(!hub.supported_copy_by_chunk);
    }
}
