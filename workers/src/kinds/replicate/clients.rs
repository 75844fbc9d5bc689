//! Registry clients for one task: Berth's own registry, reached through its `/v2/` with
//! tokens the worker signs itself, and a remote endpoint, reached with its stored
//! credential behind the task's gate (global rate limit, one request at a time,
//! cancellation).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_access::registries::{self, RegistryType, RegistryWithCredential};
use berth_access::secrets::SecretKey;
use berth_access::token::TokenKeys;
use berth_access::{ResourceAccess, Scope};
use berth_registry_client::{ClientConfig, Credential, RegistryClient, RequestGate, TokenIssuer};
use berth_replication::limits::{GlobalRateLimiter, TaskGate};
use berth_replication::naming::PathComponents;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::config::ReplicateConfig;

/// The subject of the tokens workers sign: what Berth's audit log shows as the actor of
/// replication pulls and pushes.
pub const SUBJECT: &str = "berth-replicator";

const USER_AGENT: &str = concat!("berth-workers/", env!("CARGO_PKG_VERSION"));

/// Why a client could not be made. Every variant is a configuration problem an
/// operator must fix, so tasks fail at once with it.
#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    #[error("cannot read the token signing key {path}: {reason} (set replicate.token_key_file to the gateway's auth.token_key_file under its data dir)")]
    TokenKey { path: String, reason: String },
    #[error("replicate.registry_url {url:?} is not a URL: {reason}")]
    LocalUrl { url: String, reason: String },
    #[error("registry endpoint {0} does not exist (deleted?)")]
    NoSuchRegistry(i64),
    #[error("registry endpoint {name}: {reason}")]
    Remote { name: String, reason: String },
    #[error("database: {0}")]
    Database(String),
}

/// Signs tokens for Berth's registry with the gateway's key: exactly the scopes each
/// request asks for (the worker is trusted with every repository; what it asks for is
/// what its task touches).
struct LocalIssuer {
    keys: TokenKeys,
    ttl: Duration,
}

impl TokenIssuer for LocalIssuer {
    fn issue(&self, service: Option<&str>, scopes: &[String]) -> Result<(String, u64), String> {
        let service = service.ok_or("the registry's challenge names no service")?;
        let access = Scope::parse_all(scopes.iter().map(String::as_str))
            .into_iter()
            .map(|s| ResourceAccess {
                kind: s.kind,
                name: s.name,
                actions: s.actions,
            })
            .collect();
        let token = self
            .keys
            .issue(SUBJECT, service, access, self.ttl)
            .map_err(|e| e.to_string())?;
        Ok((token, self.ttl.as_secs()))
    }
}

/// Everything needed to make clients: loaded once per process. Clients are kept and
/// shared between tasks (each task gets its own gate over them), so tasks reuse open
/// connections and tokens instead of opening and negotiating their own.
pub struct Clients {
    db: PgPool,
    secret_key: Arc<SecretKey>,
    local: RegistryClient,
    /// Per endpoint, with the `updated_at` it was built from: a changed URL or
    /// credential builds a new client.
    remotes: Mutex<HashMap<i64, (DateTime<Utc>, RegistryClient)>>,
    timeout: Duration,
}

impl Clients {
    pub fn new(
        db: PgPool,
        secret_key: Arc<SecretKey>,
        config: &ReplicateConfig,
    ) -> Result<Clients, ClientSetupError> {
        let local_url =
            Url::parse(&config.registry_url).map_err(|e| ClientSetupError::LocalUrl {
                url: config.registry_url.clone(),
                reason: e.to_string(),
            })?;
        let keys = load_token_keys(&config.token_key_file, &config.token_issuer)?;
        let timeout = Duration::from_secs(config.request_timeout_secs.max(1));
        let mut local = ClientConfig::new(local_url.clone());
        local.credential = Credential::Issuer(Arc::new(LocalIssuer {
            keys,
            ttl: Duration::from_secs(config.token_ttl_secs.max(60)),
        }));
        local.timeout = timeout;
        local.user_agent = USER_AGENT.to_owned();
        let local = RegistryClient::new(local).map_err(|e| ClientSetupError::LocalUrl {
            url: local_url.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Clients {
            db,
            secret_key,
            local,
            remotes: Mutex::new(HashMap::new()),
            timeout,
        })
    }

    /// Berth's own registry: cancellation is the copy's business (the copy races every
    /// request with its token), and Berth's own limits are not ours to impose.
    pub fn local(&self) -> RegistryClient {
        self.local.clone()
    }

    /// Remote endpoint `registry_id` for one task: its credential, and a gate holding
    /// the task to the endpoint's global rate limit, one request at a time, and
    /// refusing requests once `cancel` fires.
    pub async fn remote(
        &self,
        registry_id: i64,
        cancel: CancellationToken,
    ) -> Result<Remote, ClientSetupError> {
        let mut conn = self
            .db
            .acquire()
            .await
            .map_err(|e| ClientSetupError::Database(e.to_string()))?;
        let found = registries::with_credential(&mut conn, registry_id, &self.secret_key)
            .await
            .map_err(|e| match e {
                registries::CredentialError::Database(e) => {
                    ClientSetupError::Database(e.to_string())
                }
                other => ClientSetupError::Remote {
                    name: registry_id.to_string(),
                    reason: other.to_string(),
                },
            })?
            .ok_or(ClientSetupError::NoSuchRegistry(registry_id))?;
        let RegistryWithCredential {
            registry,
            credential,
        } = found;
        let limits = registry.limits;
        let limiter = GlobalRateLimiter::new(
            self.db.clone(),
            registry.id,
            limits.rate_limit_per_second,
            limits.effective_burst().unwrap_or(1),
        );
        let gate: Arc<dyn RequestGate> = Arc::new(TaskGate::new(limiter, cancel));
        let cached = self.remotes.lock().ok().and_then(|map| {
            map.get(&registry.id)
                .filter(|(built_from, _)| *built_from == registry.updated_at)
                .map(|(_, client)| client.clone())
        });
        let shared = match cached {
            Some(client) => client,
            None => {
                let client = self.remote_client(&registry, credential)?;
                if let Ok(mut map) = self.remotes.lock() {
                    map.insert(registry.id, (registry.updated_at, client.clone()));
                }
                client
            }
        };
        let client = shared.with_gate(gate);
        Ok(Remote {
            client,
            name: registry.name,
            path_components: path_components(registry.kind),
        })
    }
}

impl Clients {
    fn remote_client(
        &self,
        registry: &registries::Registry,
        credential: Option<registries::BasicCredential>,
    ) -> Result<RegistryClient, ClientSetupError> {
        let api_url = registry.api_url();
        let url = Url::parse(&api_url).map_err(|e| ClientSetupError::Remote {
            name: registry.name.clone(),
            reason: format!("invalid URL {api_url}: {e}"),
        })?;
        let mut config = ClientConfig::new(url);
        config.insecure = registry.insecure;
        config.timeout = self.timeout;
        config.user_agent = USER_AGENT.to_owned();
        if let Some(credential) = credential {
            config.credential = Credential::Basic {
                username: credential.username,
                password: credential.password.expose().to_owned(),
            };
        }
        RegistryClient::new(config).map_err(|e| ClientSetupError::Remote {
            name: registry.name.clone(),
            reason: e.to_string(),
        })
    }
}

/// A remote endpoint's client and what naming needs to know of it.
pub struct Remote {
    pub client: RegistryClient,
    pub name: String,
    pub path_components: PathComponents,
}

/// The repository depth each endpoint type accepts (Harbor's adapter info).
pub fn path_components(kind: RegistryType) -> PathComponents {
    match kind {
        RegistryType::DockerRegistry => PathComponents::Any,
        RegistryType::Harbor => PathComponents::AtLeastTwo,
        RegistryType::DockerHub => PathComponents::OnlyTwo,
    }
}

fn load_token_keys(path: &Path, issuer: &str) -> Result<TokenKeys, ClientSetupError> {
    let shown = path.display().to_string();
    let pem = std::fs::read_to_string(path).map_err(|e| ClientSetupError::TokenKey {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    TokenKeys::from_pem(&pem, issuer).map_err(|reason| ClientSetupError::TokenKey {
        path: shown,
        reason,
    })
}
