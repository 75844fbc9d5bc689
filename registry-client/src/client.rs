//! The client and its one request path: gate, authenticate, send, and on a 401 learn
//! the challenge, fetch credentials and retry once.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use tracing::debug;
use url::Url;

use crate::auth::{parse_challenges, scope_key, AuthState, CachedToken, Challenge, TokenResponse};
use crate::config::{ClientConfig, Credential, GatePermit, RequestGate, RequestInfo};
use crate::ClientError;

/// Largest error or token body read; anything longer is cut (the message is for people).
const MAX_SMALL_BODY: usize = 64 * 1024;

/// A client for one remote registry. Cloning is cheap and clones share the connection
/// pool and the token cache.
#[derive(Clone)]
pub struct RegistryClient {
    pub(crate) inner: Arc<Inner>,
    /// Per client, not shared: [`RegistryClient::with_gate`] gives each task its own
    /// gate over the shared connections and tokens.
    gate: Option<Arc<dyn RequestGate>>,
}

pub(crate) struct Inner {
    /// The connection pool.
    pub http: reqwest::Client,
    /// The registry's base URL with a trailing slash, so `v2/...` joins below it.
    pub base: Url,
    pub credential: Credential,
    /// Learned challenge and cached tokens; a std mutex because it is never held
    /// across an await.
    pub auth: Mutex<AuthState>,
    /// Held while a token is fetched, so concurrent requests needing the same scope
    /// (a worker copying many blobs at once) wait for one fetch instead of each
    /// hitting the token service.
    pub token_fetch: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("base", &self.inner.base.as_str())
            .field("credential", &self.inner.credential)
            .finish()
    }
}

/// A request body: replayable bytes, or a stream that can be sent once.
pub(crate) enum RequestBody {
    Empty,
    Bytes(Bytes),
    Stream(Option<reqwest::Body>),
}

/// One request to send through [`RegistryClient::send`].
pub(crate) struct Request {
    pub method: Method,
    pub url: Url,
    /// Token scopes this request needs (`repository:x:pull`, ...); empty for `/v2/`.
    pub scopes: Vec<String>,
    pub headers: HeaderMap,
    pub body: RequestBody,
    /// Marks the best-effort DELETE of an abandoned upload for the gate.
    pub cleanup: bool,
}

impl Request {
    pub fn new(method: Method, url: Url, scopes: Vec<String>) -> Self {
        Request {
            method,
            url,
            scopes,
            headers: HeaderMap::new(),
            body: RequestBody::Empty,
            cleanup: false,
        }
    }
}

/// Where the Authorization header we attach came from: a 401 after a `Fresh` one
/// means the credential is refused, after a `Cached` token (maybe revoked or expired
/// early) or `None` it is worth one more try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthOrigin {
    None,
    Cached,
    Fresh,
}

impl RegistryClient {
    /// Builds a client; no request is sent until the first call.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        if !matches!(config.url.scheme(), "http" | "https") {
            return Err(ClientError::Invalid(format!(
                "registry URL must be http or https: {}",
                config.url
            )));
        }
        if config.url.host_str().is_none_or(str::is_empty) {
            return Err(ClientError::Invalid(format!(
                "registry URL has no host: {}",
                config.url
            )));
        }
        let mut base = config.url.clone();
        base.set_query(None);
        base.set_fragment(None);
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .connect_timeout(config.timeout)
            // A per-read timeout, not a whole-request one: blobs take as long as they take.
            .read_timeout(config.timeout)
            .danger_accept_invalid_certs(config.insecure)
            .build()
            .map_err(|e| ClientError::Invalid(format!("building the HTTP client: {e}")))?;
        Ok(RegistryClient {
            inner: Arc::new(Inner {
                http,
                base,
                credential: config.credential,
                auth: Mutex::new(AuthState::default()),
                token_fetch: tokio::sync::Mutex::new(()),
            }),
            gate: config.gate,
        })
    }

    /// This client with `gate` in place of its own: the same connection pool, learned
    /// challenge and token cache (so a task reuses open connections and tokens of the
    /// tasks before it), its requests passing `gate`.
    pub fn with_gate(&self, gate: Arc<dyn RequestGate>) -> RegistryClient {
        RegistryClient {
            inner: self.inner.clone(),
            gate: Some(gate),
        }
    }

    /// The base URL requests go below.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// `GET /v2/` with auth negotiation: `Ok(())` when the registry is reachable, speaks
    /// the distribution API and accepts the credential.
    pub async fn ping(&self) -> Result<(), ClientError> {
        let url = self.url("v2/")?;
        let (response, _permit) = self
            .send(Request::new(Method::GET, url, Vec::new()))
            .await?;
        let response = expect_status(response, &[StatusCode::OK]).await?;
        // Registries say which API they speak; a 200 from some other web server is not
        // a registry. The header is optional in the spec, so only a wrong value fails.
        if let Some(version) = response.headers().get("docker-distribution-api-version") {
            let version = version.to_str().unwrap_or("");
            if !version.trim().starts_with("registry/2") {
                return Err(ClientError::Protocol(format!(
                    "unexpected Docker-Distribution-Api-Version {version:?}"
                )));
            }
        }
        Ok(())
    }

    /// `base` joined with a relative path (`v2/...`).
    pub(crate) fn url(&self, path: &str) -> Result<Url, ClientError> {
        self.inner
            .base
            .join(path)
            .map_err(|e| ClientError::Invalid(format!("bad request path {path:?}: {e}")))
    }

    /// Sends a request with auth negotiation. Returns the response whatever its status
    /// except 401, which is retried once with fresh credentials and then becomes
    /// `Unauthorized`; the permit must be held while the response body is read.
    pub(crate) async fn send(
        &self,
        mut request: Request,
    ) -> Result<(Response, GatePermit), ClientError> {
        let (mut auth, mut origin) = self.known_auth(&request.scopes).await?;
        let mut retried = false;
        loop {
            let body = match &mut request.body {
                RequestBody::Empty => None,
                RequestBody::Bytes(bytes) => Some(reqwest::Body::from(bytes.clone())),
                RequestBody::Stream(stream) => match stream.take() {
                    Some(stream) => Some(stream),
                    None => {
                        // Only reachable when a streamed request was refused with
                        // credentials that worked before (a cached token the registry
                        // no longer takes: expired early by its clock, or its key
                        // changed): the body is gone, so it cannot be sent again here,
                        // but new credentials are in the cache now. Transient, not
                        // `Unauthorized`: a retry of the upload will succeed, and
                        // callers fail tasks at once on `Unauthorized`.
                        return Err(ClientError::Server {
                            status: 401,
                            message: "the registry refused a cached token during a streamed \
                                      upload; retry with the new one"
                                .into(),
                        });
                    }
                },
            };
            let permit = self
                .gate(request.method.as_str(), &request.url, request.cleanup)
                .await?;
            let mut builder = self
                .inner
                .http
                .request(request.method.clone(), request.url.clone())
                .headers(request.headers.clone());
            if let Some(value) = &auth {
                builder = builder.header(AUTHORIZATION, value.clone());
            }
            if let Some(body) = body {
                builder = builder.body(body);
            }
            let response = builder.send().await.map_err(ClientError::from_reqwest)?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok((response, permit));
            }
            let challenge = parse_challenges(
                response
                    .headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            );
            let message = read_error(response).await;
            drop(permit);
            let ClientError::Unauthorized(message) = message else {
                return Err(message);
            };
            if retried || origin == AuthOrigin::Fresh {
                return Err(ClientError::Unauthorized(message));
            }
            let Some(challenge) = challenge else {
                return Err(ClientError::Unauthorized(message));
            };
            debug!(url = %request.url, ?challenge, "registry asked for credentials");
            {
                let mut state = self.lock_auth();
                // Forget the token only if it is the one refused: a concurrent request
                // may have cached a newer one meanwhile.
                let key = scope_key(&request.scopes);
                let refused = state.tokens.get(&key).is_some_and(|cached| {
                    auth.as_ref()
                        .and_then(|sent| sent.to_str().ok())
                        .and_then(|sent| sent.strip_prefix("Bearer "))
                        == Some(cached.token.as_str())
                });
                if refused {
                    state.tokens.remove(&key);
                }
                state.challenge = Some(challenge.clone());
            }
            (auth, origin) = self
                .fresh_auth(&challenge, &request.scopes, &message)
                .await?;
            retried = true;
        }
    }

    fn lock_auth(&self) -> std::sync::MutexGuard<'_, AuthState> {
        // A poisoned lock only means another request panicked mid-update of a cache;
        // the cache is still usable.
        self.inner.auth.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn gate(
        &self,
        method: &str,
        url: &Url,
        cleanup: bool,
    ) -> Result<GatePermit, ClientError> {
        match &self.gate {
            Some(gate) => {
                gate.before_request(RequestInfo {
                    method,
                    url,
                    cleanup,
                })
                .await
            }
            None => Ok(GatePermit::none()),
        }
    }

    /// The Authorization header for what we already know about the registry: none
    /// before the first challenge, Basic for Basic registries, a cached token (or a
    /// new one, fetched without waiting for a 401) for token registries.
    async fn known_auth(
        &self,
        scopes: &[String],
    ) -> Result<(Option<HeaderValue>, AuthOrigin), ClientError> {
        let challenge = {
            let state = self.lock_auth();
            let Some(challenge) = state.challenge.clone() else {
                return Ok((None, AuthOrigin::None));
            };
            if let Some(token) = state.tokens.get(&scope_key(scopes)) {
                if token.is_valid(Instant::now()) {
                    return Ok((Some(bearer(&token.token)?), AuthOrigin::Cached));
                }
            }
            challenge
        };
        match challenge {
            Challenge::Basic => Ok((self.basic_header()?, AuthOrigin::Cached)),
            Challenge::Bearer { .. } => {
                let (header, _) = self.fresh_auth(&challenge, scopes, "").await?;
                // Fetched before any 401 for this request: a 401 now may be a scope
                // the server wants on top of ours, so one retry is still allowed.
                Ok((header, AuthOrigin::Cached))
            }
        }
    }

    /// Credentials answering `challenge`: Basic, or a new token for the scopes.
    async fn fresh_auth(
        &self,
        challenge: &Challenge,
        scopes: &[String],
        refusal: &str,
    ) -> Result<(Option<HeaderValue>, AuthOrigin), ClientError> {
        match challenge {
            Challenge::Basic => match self.basic_header()? {
                Some(header) => Ok((Some(header), AuthOrigin::Fresh)),
                None => Err(ClientError::Unauthorized(if refusal.is_empty() {
                    "the registry requires credentials and none are configured".into()
                } else {
                    format!("{refusal} (no credentials configured)")
                })),
            },
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let mut all_scopes = scopes.to_vec();
                // The server may name a scope we did not think of (its own names for
                // the catalog, say); asking for it as well costs nothing.
                if let Some(asked) = scope {
                    for s in asked.split(' ').filter(|s| !s.is_empty()) {
                        if !all_scopes.iter().any(|have| have == s) {
                            all_scopes.push(s.to_string());
                        }
                    }
                }
                let _fetching = self.inner.token_fetch.lock().await;
                // Another request may have fetched one while we waited.
                let key = scope_key(scopes);
                let cached = self
                    .lock_auth()
                    .tokens
                    .get(&key)
                    .filter(|t| t.is_valid(Instant::now()))
                    .map(|t| t.token.clone());
                if let Some(token) = cached {
                    return Ok((Some(bearer(&token)?), AuthOrigin::Fresh));
                }
                let token = match &self.inner.credential {
                    Credential::Issuer(issuer) => {
                        let (token, expires_in) =
                            issuer.issue(service.as_deref(), &all_scopes).map_err(|e| {
                                ClientError::Invalid(format!("cannot sign a registry token: {e}"))
                            })?;
                        CachedToken::new(token, Some(expires_in), Instant::now())
                    }
                    _ => {
                        self.fetch_token(realm, service.as_deref(), &all_scopes)
                            .await?
                    }
                };
                let header = bearer(&token.token)?;
                self.lock_auth().tokens.insert(key, token);
                Ok((Some(header), AuthOrigin::Fresh))
            }
        }
    }

    fn basic_header(&self) -> Result<Option<HeaderValue>, ClientError> {
        match &self.inner.credential {
            Credential::None | Credential::Issuer(_) => Ok(None),
            Credential::Basic { username, password } => {
                let encoded = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                let mut value =
                    HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|_| {
                        ClientError::Invalid("credential cannot be sent in a header".into())
                    })?;
                value.set_sensitive(true);
                Ok(Some(value))
            }
        }
    }

    /// GET the token service with our credential (if any), `service` and `scope`s.
    async fn fetch_token(
        &self,
        realm: &Url,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<CachedToken, ClientError> {
        let mut url = realm.clone();
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            for scope in scopes {
                query.append_pair("scope", scope);
            }
        }
        // `query_pairs_mut` leaves a bare `?` when nothing was added.
        if url.query() == Some("") {
            url.set_query(None);
        }
        let _permit = self.gate("GET", &url, false).await?;
        let mut builder = self.inner.http.get(url.clone());
        if let Some(header) = self.basic_header()? {
            builder = builder.header(AUTHORIZATION, header);
        }
        let response = builder.send().await.map_err(ClientError::from_reqwest)?;
        if !response.status().is_success() {
            return Err(match read_error(response).await {
                ClientError::Unauthorized(message) => ClientError::Unauthorized(format!(
                    "token service refused the credential: {message}"
                )),
                other => other,
            });
        }
        let body = read_limited(response, MAX_SMALL_BODY).await?;
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            ClientError::Protocol(format!(
                "token service answered something that is not a token: {e}"
            ))
        })?;
        let token = parsed
            .token
            .filter(|t| !t.is_empty())
            .or(parsed.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| ClientError::Protocol("token service answered no token".into()))?;
        debug!(realm = %realm, ?scopes, "fetched a registry token");
        Ok(CachedToken::new(token, parsed.expires_in, Instant::now()))
    }
}

fn bearer(token: &str) -> Result<HeaderValue, ClientError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        ClientError::Protocol("token service answered a token that cannot be sent".into())
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Reads at most `limit` bytes of a body; more is a protocol error (the caller expected
/// something small: a token, a manifest, a tag list).
pub(crate) async fn read_limited(response: Response, limit: usize) -> Result<Bytes, ClientError> {
    if let Some(length) = response.content_length() {
        if length > limit as u64 {
            return Err(ClientError::Protocol(format!(
                "response of {length} bytes exceeds the {limit}-byte limit"
            )));
        }
    }
    let mut stream = response.bytes_stream();
    let mut buffer = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ClientError::from_reqwest)?;
        if buffer.len() + chunk.len() > limit {
            return Err(ClientError::Protocol(format!(
                "response exceeds the {limit}-byte limit"
            )));
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buffer))
}

/// Turns an error response into its `ClientError`, reading (part of) the body for the
/// message. Never fails: a body that cannot be read just gives a shorter message.
pub(crate) async fn read_error(response: Response) -> ClientError {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = MAX_SMALL_BODY.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_SMALL_BODY {
            break;
        }
    }
    ClientError::from_status(status, &headers, &body)
}

/// The response when its status is one of `expected`, else its error.
pub(crate) async fn expect_status(
    response: Response,
    expected: &[StatusCode],
) -> Result<Response, ClientError> {
    if expected.contains(&response.status()) {
        return Ok(response);
    }
    let status = response.status();
    if status.is_success() || status.is_redirection() || status.is_informational() {
        return Err(ClientError::Protocol(format!(
            "unexpected status {status} from {}",
            response.url()
        )));
    }
    Err(read_error(response).await)
}
