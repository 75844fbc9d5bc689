//! Liveness and facts about the installation: `ping`, `health`, `systeminfo` and
//! `systeminfo/volumes`, in Harbor's shapes.
//!
//! `health` checks what Berth itself depends on (PostgreSQL and the blob storage
//! directory) rather than Harbor's component list; clients only read `status`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorsBody};
use super::extract::Caller;
use super::harbor_time;
use super::json::JsonBody;
use crate::config::Config;
use crate::state::AppState;

/// What `systeminfo` reports as Harbor's version: the API level Berth follows.
pub const HARBOR_VERSION: &str = "v2.11.0-berth";

/// How long a health probe may take before its component counts as unhealthy.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ping))
        .routes(routes!(health))
        .routes(routes!(system_info))
        .routes(routes!(system_volumes))
}

/// Whether the API answers at all.
#[utoipa::path(
    get,
    path = "/ping",
    tag = "ping",
    operation_id = "getPing",
    responses((status = 200, description = "The API is up", body = String, content_type = "text/plain"))
)]
pub async fn ping() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        "Pong",
    )
        .into_response()
}

/// Harbor's `OverallHealthStatus`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OverallHealthStatus {
    /// `healthy` when every component is.
    pub status: String,
    pub components: Vec<ComponentHealthStatus>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ComponentHealthStatus {
    /// `database` or `storage`.
    pub name: String,
    /// `healthy` or `unhealthy`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ComponentHealthStatus {
    fn from_probe(name: &str, probe: Result<(), String>) -> ComponentHealthStatus {
        let (status, error) = match probe {
            Ok(()) => ("healthy", None),
            Err(e) => ("unhealthy", Some(e)),
        };
        ComponentHealthStatus {
            name: name.to_owned(),
            status: status.to_owned(),
            error,
        }
    }
}

/// The health of the database and the blob storage. Always 200, as in Harbor: the
/// body says what is wrong.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    operation_id = "getHealth",
    responses((status = 200, description = "Health of each component", body = OverallHealthStatus))
)]
pub async fn health(State(state): State<AppState>) -> JsonBody<OverallHealthStatus> {
    let (database, storage) = tokio::join!(
        probe_database(&state),
        probe_storage(state.config.storage_root())
    );
    let components = vec![
        ComponentHealthStatus::from_probe("database", database),
        ComponentHealthStatus::from_probe("storage", storage),
    ];
    let healthy = components.iter().all(|c| c.status == "healthy");
    JsonBody(OverallHealthStatus {
        status: if healthy { "healthy" } else { "unhealthy" }.to_owned(),
        components,
    })
}

async fn probe_database(state: &AppState) -> Result<(), String> {
    let query = sqlx::query_scalar!(r#"SELECT 1 AS "one!""#).fetch_one(&state.db);
    match tokio::time::timeout(PROBE_TIMEOUT, query).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health: database probe failed");
            Err("the database does not answer".to_owned())
        }
        Err(_) => Err("the database did not answer within 5 s".to_owned()),
    }
}

/// The storage root must be a directory we can create files in: write and remove a
/// probe file, since permission bits alone do not show a read-only mount or a full disk
/// of inodes.
async fn probe_storage(root: PathBuf) -> Result<(), String> {
    let probe = async move {
        let metadata = tokio::fs::metadata(&root).await?;
        if !metadata.is_dir() {
            return Err(std::io::Error::other("the storage root is not a directory"));
        }
        let file = root.join(format!(".health-{}", uuid::Uuid::new_v4().simple()));
        tokio::fs::write(&file, b"ok").await?;
        tokio::fs::remove_file(&file).await
    };
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health: storage probe failed");
            Err(format!("the storage directory is not writable: {e}"))
        }
        Err(_) => Err("the storage directory did not answer within 5 s".to_owned()),
    }
}

/// Harbor's `GeneralInfo`. Anonymous callers get only the unprotected fields, as in
/// Harbor.
#[derive(Debug, Serialize, ToSchema)]
pub struct GeneralInfo {
    pub auth_mode: String,
    pub primary_auth_mode: bool,
    pub self_registration: bool,
    pub harbor_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_creation_restriction: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub has_ca_root: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with_chartmuseum: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with_notary: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_storage_provider_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification_enable: Option<bool>,
    /// RFC 3339 with milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_time: Option<String>,
}

/// General facts about the installation.
#[utoipa::path(
    get,
    path = "/systeminfo",
    tag = "systeminfo",
    operation_id = "getSystemInfo",
    responses(
        (status = 200, description = "General information", body = GeneralInfo),
        (status = 401, description = "Wrong credentials", body = ErrorsBody),
    )
)]
pub async fn system_info(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> JsonBody<GeneralInfo> {
    let mut info = GeneralInfo {
        auth_mode: "db_auth".to_owned(),
        primary_auth_mode: false,
        self_registration: false,
        harbor_version: HARBOR_VERSION.to_owned(),
        registry_url: None,
        external_url: None,
        project_creation_restriction: None,
        has_ca_root: None,
        read_only: None,
        with_chartmuseum: None,
        with_notary: None,
        registry_storage_provider_name: None,
        notification_enable: None,
        current_time: None,
    };
    if caller.principal.is_authenticated() {
        let external = external_url(&state.config, &headers);
        info.registry_url = Some(registry_host(&external).to_owned());
        info.external_url = Some(external);
        info.project_creation_restriction = Some("everyone".to_owned());
        info.has_ca_root = Some(false);
        info.read_only = Some(false);
        info.with_chartmuseum = Some(false);
        info.with_notary = Some(false);
        info.registry_storage_provider_name = Some("filesystem".to_owned());
        info.notification_enable = Some(false);
        info.current_time = Some(harbor_time(chrono::Utc::now()));
    }
    JsonBody(info)
}

/// The configured external URL, or one built from the request's `Host` (and
/// `X-Forwarded-Proto`, when a proxy terminates TLS in front of us).
pub(crate) fn external_url(config: &Config, headers: &HeaderMap) -> String {
    if !config.external_url.is_empty() {
        return config.external_url.trim_end_matches('/').to_owned();
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let host = header("x-forwarded-host")
        .or_else(|| header("host"))
        .unwrap_or("localhost");
    let scheme = match header("x-forwarded-proto") {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

/// `registry.example.com[:port]` of `https://registry.example.com[:port]/…`.
fn registry_host(external_url: &str) -> &str {
    let rest = external_url
        .split_once("://")
        .map_or(external_url, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

/// Harbor's `SystemInfo`: the capacity of the blob storage's file system.
#[derive(Debug, Serialize, ToSchema)]
pub struct SystemInfo {
    pub storage: Vec<Storage>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Storage {
    /// Bytes.
    pub total: u64,
    /// Bytes available to the registry.
    pub free: u64,
}

/// Capacity of the storage volume (system administrators only).
#[utoipa::path(
    get,
    path = "/systeminfo/volumes",
    tag = "systeminfo",
    operation_id = "getVolumes",
    responses(
        (status = 200, description = "Storage capacity", body = SystemInfo),
        (status = 401, description = "Not authenticated", body = ErrorsBody),
        (status = 403, description = "Not a system administrator", body = ErrorsBody),
    )
)]
pub async fn system_volumes(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<JsonBody<SystemInfo>> {
    caller.require_sysadmin()?;
    let root = state.config.storage_root();
    let space = tokio::task::spawn_blocking(move || disk_space(&root))
        .await
        .map_err(|e| ApiError::Internal(format!("statvfs task failed: {e}")))?
        .map_err(|e| ApiError::Internal(format!("cannot read the storage volume's size: {e}")))?;
    Ok(JsonBody(SystemInfo {
        storage: vec![space],
    }))
}

/// Total and available bytes of the file system holding `path`.
fn disk_space(path: &Path) -> std::io::Result<Storage> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a NUL-terminated string that lives across the call, and
    // `stat` points to writable memory of the type statvfs fills; nothing else aliases it.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised the struct (it was zeroed anyway).
    let stat = unsafe { stat.assume_init() };
    // The field types differ between platforms (u32 or u64); widen them all.
    #[allow(clippy::unnecessary_cast)]
    let (fragment, blocks, available) = (
        stat.f_frsize as u64,
        stat.f_blocks as u64,
        stat.f_bavail as u64,
    );
    Ok(Storage {
        total: blocks.saturating_mul(fragment),
        free: available.saturating_mul(fragment),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_host_strips_scheme_and_path() {
        assert_eq!(
            registry_host("https://r.example.com:8443/x"),
            "r.example.com:8443"
        );
        assert_eq!(registry_host("r.example.com"), "r.example.com");
    }

    #[test]
    fn disk_space_of_a_temp_dir_is_plausible() {
        let space = disk_space(&std::env::temp_dir()).unwrap();
        assert!(space.total > 0);
        assert!(space.free <= space.total);
    }
}
