//! `/replication/policies`: replication policies in Harbor's model (`berth_replication`
//! holds the model, its checks and its queries), for system administrators only, as
//! Harbor's system-level policies are.
//!
//! Harbor's shapes, including its quirks that clients rely on:
//! - a policy shows both registries: the remote one, and this registry as Harbor's
//!   "Local" registry (id 0). A policy sent back as read (`src_registry.id = 0`) is
//!   therefore valid: id 0, like a missing registry, means "this registry".
//! - PUT replaces the whole policy; omitted fields take their defaults.
//! - Harbor reads the deprecated `deletion` and ignores `replicate_deletion`; Berth
//!   takes `replicate_deletion` when given, else `deletion`, and answers both.
//! - a negative `speed` is stored as 0 (unlimited); `speed` is in kilobits per second.
//! - an unknown registry is a 404 (`registry N not found`), as Harbor answers.
//!
//! A change, its schedule (for an enabled scheduled policy: a `replicate` schedule with
//! the policy id as `vendor_id`) and its audit record commit in one transaction.

use std::collections::BTreeMap;

use axum::extract::{OriginalUri, State};
use axum::http::HeaderMap;
use axum::response::Response;
use berth_access::audit;
use berth_access::registries::{self as registry_store, Registry};
use berth_replication::filter::Filter;
use berth_replication::policy::{Direction, Policy, PolicyInput, PolicySpec, TriggerInput};
use berth_replication::store::{self, PolicyFilter, DEFAULT_SORT, SORT_KEYS};
use berth_replication::ReplicationError;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorsBody};
use super::extract::{ApiPath, ApiQuery, Caller};
use super::json::{self, ApiJson, JsonBody};
use super::pagination::{self, PageParams};
use super::query::{contains_pattern, parse_sort, Query};
use super::registries::{RegistryCredential, RegistryResp};
use super::system::external_url;
use super::{harbor_time, BASE_PATH};
use crate::config::Config;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_policies, create_policy))
        .routes(routes!(get_policy, update_policy, delete_policy))
}

/// The audit log's resource type for policies.
const AUDIT_RESOURCE: &str = "replication_policy";

impl From<ReplicationError> for ApiError {
    fn from(e: ReplicationError) -> ApiError {
        match e {
            ReplicationError::Invalid(m) => ApiError::BadRequest(m),
            ReplicationError::NotFound(m) => ApiError::NotFound(m),
            ReplicationError::Conflict(m) => ApiError::Conflict(m),
            ReplicationError::Precondition(m) => ApiError::Precondition(m),
            ReplicationError::Database(e) => ApiError::Database(e),
        }
    }
}

// ---- Shapes -------------------------------------------------------------------------

/// Harbor's `ReplicationTriggerSettings`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ReplicationTriggerSettings {
    /// The cron of a `scheduled` trigger: UTC, 6 fields with seconds (`0 0 3 * * *`),
    /// or 5, or `@daily`.
    #[serde(default)]
    pub cron: String,
}

/// Harbor's `ReplicationTrigger`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ReplicationTrigger {
    /// `manual`, `scheduled` or `event_based`.
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_settings: Option<ReplicationTriggerSettings>,
}

/// Harbor's `ReplicationFilter`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ReplicationFilter {
    /// `name`, `tag`, `resource`, or `label` (which must be empty: Berth has no labels).
    #[serde(rename = "type", default)]
    pub kind: String,
    /// A pattern for `name` and `tag` (`library/**`, `v1.*`, `{a,b}`, `regex:^v[0-9]+$`),
    /// `image` or `artifact` for `resource`, a list for `label`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
    /// `matches` (the default) or `excludes`; tag filters only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub decoration: String,
}

/// A registry in a policy request: Harbor reads its `id` only (0 or absent: this
/// registry); the rest of a registry read back from the API is ignored.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct RegistryRef {
    pub id: Option<i64>,
}

/// Harbor's `ReplicationPolicy` as a POST or PUT body.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ReplicationPolicyReq {
    pub name: Option<String>,
    pub description: Option<String>,
    /// Pull mode: the remote registry to copy from.
    pub src_registry: Option<RegistryRef>,
    /// Push mode: the remote registry to copy to.
    pub dest_registry: Option<RegistryRef>,
    /// Where copies land; empty keeps the source's name.
    pub dest_namespace: Option<String>,
    /// How many leading path components `dest_namespace` replaces; −1 (default)
    /// replaces all but the last.
    pub dest_namespace_replace_count: Option<i64>,
    pub trigger: Option<ReplicationTrigger>,
    pub filters: Option<Vec<ReplicationFilter>>,
    pub replicate_deletion: Option<bool>,
    /// Deprecated spelling of `replicate_deletion` (the one Harbor reads).
    pub deletion: Option<bool>,
    /// Overwrite a destination tag that points elsewhere.
    #[serde(rename = "override")]
    pub override_existing: Option<bool>,
    pub enabled: Option<bool>,
    /// Bandwidth cap per task in kilobits per second; −1 or 0 is unlimited.
    pub speed: Option<i64>,
    pub copy_by_chunk: Option<bool>,
}

/// Harbor's `ReplicationPolicy`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ReplicationPolicy)]
pub struct ReplicationPolicyResp {
    pub id: i64,
    pub name: String,
    pub description: String,
    /// The registry copied from; this registry is Harbor's "Local" (id 0).
    pub src_registry: RegistryResp,
    /// The registry copied to; this registry is Harbor's "Local" (id 0).
    pub dest_registry: RegistryResp,
    pub dest_namespace: String,
    pub dest_namespace_replace_count: i32,
    /// Absent for a policy created without one (started by hand only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<ReplicationTrigger>,
    pub filters: Vec<ReplicationFilter>,
    pub replicate_deletion: bool,
    /// The same as `replicate_deletion` (Harbor's deprecated name).
    pub deletion: bool,
    #[serde(rename = "override")]
    pub override_existing: bool,
    pub enabled: bool,
    /// Kilobits per second; 0 is unlimited.
    pub speed: i32,
    pub copy_by_chunk: bool,
    #[schema(format = DateTime)]
    pub creation_time: String,
    #[schema(format = DateTime)]
    pub update_time: String,
}

/// The list's parameters: Harbor's `q`, `sort`, pages, and the deprecated `name`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PolicyListParams {
    /// `name=x` or `name=~x`, `src_registry_id=N`, `dest_registry_id=N` (0: this
    /// registry).
    pub q: Option<String>,
    /// `id`, `name`, `creation_time` or `update_time`, `-` for descending; default
    /// `-creation_time` (newest first).
    pub sort: Option<String>,
    pub page: Option<i64>,
    pub page_size: Option<i64>,
    /// Deprecated: a fuzzy name match (`q=name=~x`).
    pub name: Option<String>,
}

fn to_input(req: ReplicationPolicyReq) -> PolicyInput {
    PolicyInput {
        name: req.name,
        description: req.description,
        src_registry_id: req.src_registry.and_then(|r| r.id),
        dest_registry_id: req.dest_registry.and_then(|r| r.id),
        dest_namespace: req.dest_namespace,
        dest_namespace_replace_count: req.dest_namespace_replace_count,
        trigger: req.trigger.map(|t| TriggerInput {
            kind: t.kind,
            cron: t.trigger_settings.map(|s| s.cron),
        }),
        filters: req.filters.map(|filters| {
            filters
                .into_iter()
                .map(|f| Filter {
                    kind: f.kind,
                    value: f.value,
                    decoration: f.decoration,
                })
                .collect()
        }),
        replicate_deletion: req.replicate_deletion.or(req.deletion),
        override_existing: req.override_existing,
        enabled: req.enabled,
        speed: req.speed,
        copy_by_chunk: req.copy_by_chunk,
    }
}

/// Harbor's zero time, which it shows as the local registry's creation and update time.
const ZERO_TIME: &str = "0001-01-01T00:00:00.000Z";

/// This registry as Harbor shows its own side of a policy: id 0, "Local", type
/// `harbor`, always healthy, authenticated by an internal secret (masked; Berth's
/// workers read local content directly and need none).
fn local_registry(config: &Config, headers: &HeaderMap) -> RegistryResp {
    RegistryResp {
        id: 0,
        name: "Local".to_owned(),
        description: String::new(),
        kind: "harbor".to_owned(),
        url: external_url(config, headers),
        insecure: false,
        credential: RegistryCredential {
            kind: Some("secret".to_owned()),
            access_key: None,
            access_secret: None,
        },
        status: "healthy".to_owned(),
        creation_time: ZERO_TIME.to_owned(),
        update_time: ZERO_TIME.to_owned(),
        rate_limit_per_second: 0.0,
        rate_limit_burst: 0,
        max_concurrency: 0,
    }
}

/// Renders policies, looking each remote registry up once.
struct Renderer<'a> {
    config: &'a Config,
    headers: &'a HeaderMap,
    registries: BTreeMap<i64, Registry>,
}

impl Renderer<'_> {
    fn new<'a>(state: &'a AppState, headers: &'a HeaderMap) -> Renderer<'a> {
        Renderer {
            config: &state.config,
            headers,
            registries: BTreeMap::new(),
        }
    }

    async fn remote(&mut self, conn: &mut PgConnection, id: i64) -> ApiResult<RegistryResp> {
        if let Some(found) = self.registries.get(&id) {
            return Ok(RegistryResp::from(found.clone()));
        }
        // The policy's foreign key keeps its registry from being deleted, so a miss is
        // a broken database, not a client mistake.
        let registry = registry_store::find(conn, id).await?.ok_or_else(|| {
            ApiError::Internal(format!("registry {id} of a replication policy is missing"))
        })?;
        self.registries.insert(id, registry.clone());
        Ok(RegistryResp::from(registry))
    }

    async fn render(
        &mut self,
        conn: &mut PgConnection,
        policy: Policy,
    ) -> ApiResult<ReplicationPolicyResp> {
        let remote = self
            .remote(conn, policy.direction.remote_registry_id())
            .await?;
        let local = local_registry(self.config, self.headers);
        let (src_registry, dest_registry) = match policy.direction {
            Direction::Push { .. } => (local, remote),
            Direction::Pull { .. } => (remote, local),
        };
        Ok(ReplicationPolicyResp {
            id: policy.id,
            name: policy.name,
            description: policy.description,
            src_registry,
            dest_registry,
            dest_namespace: policy.dest_namespace,
            dest_namespace_replace_count: policy.dest_namespace_replace_count,
            trigger: policy.trigger.map(|t| ReplicationTrigger {
                kind: t.kind.as_str().to_owned(),
                trigger_settings: t.cron.map(|cron| ReplicationTriggerSettings { cron }),
            }),
            filters: policy
                .filters
                .into_iter()
                .map(|f| ReplicationFilter {
                    kind: f.kind,
                    value: f.value,
                    decoration: f.decoration,
                })
                .collect(),
            replicate_deletion: policy.replicate_deletion,
            deletion: policy.replicate_deletion,
            override_existing: policy.override_existing,
            enabled: policy.enabled,
            speed: policy.speed_kbps,
            copy_by_chunk: policy.copy_by_chunk,
            creation_time: harbor_time(policy.creation_time),
            update_time: harbor_time(policy.update_time),
        })
    }
}

fn policy_not_found(id: i64) -> ApiError {
    ApiError::not_found(format!("replication policy {id} not found"))
}

/// A registry id in `q`: an integer, 0 for this registry.
fn registry_id_term(query: &Query, key: &str) -> ApiResult<Option<i64>> {
    query
        .exact(key)?
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("{key} must be an integer (got {v:?})")))
        })
        .transpose()
}

// ---- Handlers -----------------------------------------------------------------------

/// List replication policies.
///
/// `q` keys: `name` (exact, or `~fuzzy`), `src_registry_id`, `dest_registry_id` (0:
/// this registry, so `dest_registry_id=0` lists pull policies). `name` (deprecated) is
/// a fuzzy name match. Newest first unless `sort` says otherwise.
#[utoipa::path(
    get,
    path = "/replication/policies",
    tag = "replication",
    operation_id = "listReplicationPolicies",
    params(PolicyListParams),
    responses(
        (status = 200, description = "One page of policies", body = [ReplicationPolicyResp],
         headers(("X-Total-Count" = i64, description = "Policies matching"),
                 ("Link" = String, description = "Previous and next pages"))),
        (status = 400, description = "Malformed q or sort", body = ErrorsBody),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 422, description = "page or page_size out of range", body = ErrorsBody),
    )
)]
async fn list_policies(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    ApiQuery(params): ApiQuery<PolicyListParams>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let page = PageParams {
        page: params.page,
        page_size: params.page_size,
    }
    .validate()?;
    let query = Query::parse(params.q.as_deref())?;
    query.only(&["name", "src_registry_id", "dest_registry_id"])?;
    let sort = parse_sort(params.sort.as_deref(), SORT_KEYS, DEFAULT_SORT)?;
    let name_like = match (query.like_pattern("name")?, params.name.as_deref()) {
        (Some(pattern), _) => Some(pattern),
        (None, Some(name)) if !name.is_empty() => Some(contains_pattern(name)),
        (None, _) => None,
    };
    let filter = PolicyFilter {
        name_like,
        src_registry_id: registry_id_term(&query, "src_registry_id")?,
        dest_registry_id: registry_id_term(&query, "dest_registry_id")?,
    };
    let mut conn = state.db.acquire().await?;
    let total = store::count(&mut conn, &filter).await?;
    let policies = store::list(&mut conn, &filter, sort, page.limit(), page.offset()).await?;
    let mut renderer = Renderer::new(&state, &headers);
    let mut items = Vec::with_capacity(policies.len());
    for policy in policies {
        items.push(renderer.render(&mut conn, policy).await?);
    }
    Ok(pagination::paged(&uri, page, total, items))
}

/// Create a replication policy: push mode (`dest_registry`) or pull mode
/// (`src_registry`), exactly one of them a remote registry.
#[utoipa::path(
    post,
    path = "/replication/policies",
    tag = "replication",
    operation_id = "createReplicationPolicy",
    request_body = ReplicationPolicyReq,
    responses(
        (status = 201, description = "Created",
         headers(("Location" = String, description = "/api/v2.0/replication/policies/{id}"))),
        (status = 400, description = "Invalid name, registries, filters, namespace or trigger", body = ErrorsBody),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 404, description = "No such registry", body = ErrorsBody),
        (status = 409, description = "A policy of that name exists", body = ErrorsBody),
    )
)]
async fn create_policy(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<ReplicationPolicyReq>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let spec = PolicySpec::parse(to_input(req))?;
    let mut tx = state.db.begin().await?;
    let policy = store::create(&mut tx, &spec, caller.principal.name()).await?;
    let entry = caller.audit("create", AUDIT_RESOURCE, policy.name.clone(), None);
    audit::record(&mut tx, &entry).await?;
    tx.commit().await?;
    Ok(json::created(&format!(
        "{BASE_PATH}/replication/policies/{}",
        policy.id
    )))
}

/// A replication policy.
#[utoipa::path(
    get,
    path = "/replication/policies/{id}",
    tag = "replication",
    operation_id = "getReplicationPolicy",
    params(("id" = i64, Path, description = "The policy's id")),
    responses(
        (status = 200, description = "The policy", body = ReplicationPolicyResp),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 404, description = "No such policy", body = ErrorsBody),
    )
)]
async fn get_policy(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<JsonBody<ReplicationPolicyResp>> {
    caller.require_sysadmin()?;
    let mut conn = state.db.acquire().await?;
    let policy = store::get(&mut *conn, id)
        .await?
        .ok_or_else(|| policy_not_found(id))?;
    let rendered = Renderer::new(&state, &headers)
        .render(&mut conn, policy)
        .await?;
    Ok(JsonBody(rendered))
}

/// Replace a replication policy (every field: omitted ones take their defaults, as in
/// Harbor). Its schedule follows: created, moved or removed.
#[utoipa::path(
    put,
    path = "/replication/policies/{id}",
    tag = "replication",
    operation_id = "updateReplicationPolicy",
    params(("id" = i64, Path, description = "The policy's id")),
    request_body = ReplicationPolicyReq,
    responses(
        (status = 200, description = "Updated"),
        (status = 400, description = "Invalid name, registries, filters, namespace or trigger", body = ErrorsBody),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 404, description = "No such policy or registry", body = ErrorsBody),
        (status = 409, description = "Another policy has that name", body = ErrorsBody),
    )
)]
async fn update_policy(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<ReplicationPolicyReq>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let mut tx = state.db.begin().await?;
    // A missing policy is a 404 before anything about the body (Harbor checks the
    // policy first).
    if store::get(&mut *tx, id).await?.is_none() {
        return Err(policy_not_found(id));
    }
    let spec = PolicySpec::parse(to_input(req))?;
    let policy = store::update(&mut tx, id, &spec).await?;
    let entry = caller.audit("update", AUDIT_RESOURCE, policy.name.clone(), None);
    audit::record(&mut tx, &entry).await?;
    tx.commit().await?;
    Ok(json::ok_empty())
}

/// Delete a replication policy, with its schedule and its finished executions. 412
/// while one of its executions runs: stop it first.
#[utoipa::path(
    delete,
    path = "/replication/policies/{id}",
    tag = "replication",
    operation_id = "deleteReplicationPolicy",
    params(("id" = i64, Path, description = "The policy's id")),
    responses(
        (status = 200, description = "Deleted"),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
        (status = 404, description = "No such policy", body = ErrorsBody),
        (status = 412, description = "An execution of the policy is running", body = ErrorsBody),
    )
)]
async fn delete_policy(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Response> {
    caller.require_sysadmin()?;
    let mut tx = state.db.begin().await?;
    let policy = store::delete(&mut tx, id).await?;
    let entry = caller.audit("delete", AUDIT_RESOURCE, policy.name, None);
    audit::record(&mut tx, &entry).await?;
    tx.commit().await?;
    Ok(json::ok_empty())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(body: serde_json::Value) -> PolicyInput {
        to_input(serde_json::from_value(body).unwrap())
    }

    #[test]
    fn a_policy_read_back_is_a_valid_request() {
        // What GET answers for a push policy, sent back unchanged.
        let input = parse(json!({
            "id": 3, "name": "p", "description": "",
            "src_registry": {"id": 0, "name": "Local", "type": "harbor", "url": "http://x",
                             "credential": {"type": "secret"}, "status": "healthy",
                             "creation_time": ZERO_TIME, "update_time": ZERO_TIME},
            "dest_registry": {"id": 5, "name": "hub", "type": "docker-registry"},
            "trigger": {"type": "manual", "trigger_settings": {"cron": ""}},
            "filters": [{"type": "name", "value": "library/**"}],
            "replicate_deletion": true, "deletion": true, "override": true,
            "enabled": true, "speed": 0, "copy_by_chunk": false,
            "dest_namespace": "", "dest_namespace_replace_count": -1,
            "creation_time": "2025-01-01T00:00:00.000Z"
        }));
        let spec = PolicySpec::parse(input).unwrap();
        assert_eq!(
            spec.direction,
            Direction::Push {
                dest_registry_id: 5
            }
        );
        assert!(spec.replicate_deletion && spec.override_existing && spec.enabled);
        assert_eq!(spec.trigger.unwrap().cron.as_deref(), Some(""));
    }

    #[test]
    fn deletion_spellings() {
        // Harbor's UI and old clients send `deletion` only.
        assert_eq!(
            parse(json!({"deletion": true})).replicate_deletion,
            Some(true)
        );
        // The documented field wins when both come.
        assert_eq!(
            parse(json!({"deletion": true, "replicate_deletion": false})).replicate_deletion,
            Some(false)
        );
        assert_eq!(parse(json!({})).replicate_deletion, None);
    }

    #[test]
    fn trigger_settings_become_a_cron() {
        let input = parse(
            json!({"trigger": {"type": "scheduled", "trigger_settings": {"cron": "0 0 3 * * *"}}}),
        );
        assert_eq!(
            input.trigger,
            Some(TriggerInput {
                kind: "scheduled".into(),
                cron: Some("0 0 3 * * *".into())
            })
        );
        let input = parse(json!({"trigger": {"type": "event_based"}}));
        assert_eq!(input.trigger.unwrap().cron, None);
        let input = parse(json!({"trigger": {"type": "manual", "trigger_settings": {}}}));
        assert_eq!(input.trigger.unwrap().cron, Some(String::new()));
    }

    #[test]
    fn filter_values_keep_their_json_type() {
        let input = parse(json!({"filters": [
            {"type": "label", "value": [], "decoration": "matches"},
            {"type": "tag", "value": "v*", "decoration": "excludes"},
            {"type": "name"}
        ]}));
        let filters = input.filters.unwrap();
        assert_eq!(filters[0].value, json!([]));
        assert_eq!(filters[1].decoration, "excludes");
        assert_eq!(filters[2].value, serde_json::Value::Null);
    }
}
