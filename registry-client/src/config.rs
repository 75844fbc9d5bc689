//! What a client is built from: the endpoint, its credential, TLS and timeout settings,
//! and the optional gate every request passes through (the replication worker's rate
//! limiter and concurrency permits live behind it, so the client needs no knowledge of
//! them).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::ClientError;

/// How the client authenticates to the remote registry. The scheme on the wire (Basic
/// or a Bearer token from the registry's token service) is negotiated per request from
/// the registry's `WWW-Authenticate` challenge; this only holds the secret.
#[derive(Clone, Default)]
pub enum Credential {
    /// Anonymous access.
    #[default]
    None,
    /// Username and password (Harbor's "basic" access key and secret).
    Basic { username: String, password: String },
    /// Tokens signed by the caller for the scopes each request needs, instead of asking
    /// the registry's token service: how Berth's workers reach Berth's own registry,
    /// whose signing key they share. Answers Bearer challenges only.
    Issuer(Arc<dyn TokenIssuer>),
}

impl PartialEq for Credential {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Credential::None, Credential::None) => true,
            (
                Credential::Basic { username, password },
                Credential::Basic {
                    username: u,
                    password: p,
                },
            ) => username == u && password == p,
            (Credential::Issuer(a), Credential::Issuer(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Credential {}

/// Signs registry tokens (see [`Credential::Issuer`]).
pub trait TokenIssuer: Send + Sync {
    /// A token for `scopes` (`repository:team/app:pull,push`, …) at `service` (the
    /// challenge's), and how many seconds it is valid.
    fn issue(&self, service: Option<&str>, scopes: &[String]) -> Result<(String, u64), String>;
}

// Hand-written so a password never reaches a log line through `{:?}`.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::None => f.write_str("None"),
            Credential::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credential::Issuer(_) => f.write_str("Issuer"),
        }
    }
}

/// Settings for one remote registry endpoint.
#[derive(Clone)]
pub struct ClientConfig {
    /// Base URL of the registry, e.g. `http://127.0.0.1:5001`; `/v2/...` is appended.
    pub url: Url,
    /// The credential to authenticate with.
    pub credential: Credential,
    /// Accept invalid TLS certificates (self-signed endpoints marked `insecure`).
    pub insecure: bool,
    /// Connect timeout, and the longest the client waits for the next bytes of a
    /// response. Not a limit on a whole request: a large blob may take minutes.
    pub timeout: Duration,
    /// The `User-Agent` header sent with every request.
    pub user_agent: String,
    /// Called before every request the client sends (token requests and upload clean-up
    /// included); `None` lets requests through at once.
    pub gate: Option<Arc<dyn RequestGate>>,
}

impl ClientConfig {
    /// A configuration with anonymous access, TLS verification, a 30 s timeout and
    /// Berth's user agent; change the public fields as needed.
    pub fn new(url: Url) -> Self {
        ClientConfig {
            url,
            credential: Credential::None,
            insecure: false,
            timeout: Duration::from_secs(30),
            user_agent: concat!("berth-registry-client/", env!("CARGO_PKG_VERSION")).to_string(),
            gate: None,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url.as_str())
            .field("credential", &self.credential)
            .field("insecure", &self.insecure)
            .field("timeout", &self.timeout)
            .field("user_agent", &self.user_agent)
            .field("gate", &self.gate.as_ref().map(|_| "<gate>"))
            .finish()
    }
}

/// What a request is, as told to the gate.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Full URL of the request (the token service's URL for token requests).
    pub url: &'a Url,
    /// True for the best-effort `DELETE` of an abandoned upload session, sent after the
    /// caller's operation failed or was dropped. A gate that refuses requests once the
    /// task is cancelled should still let these through, or the partial upload stays at
    /// the remote until the registry's own clean-up runs.
    pub cleanup: bool,
}

/// Hook run before every request. The replication worker plugs its global rate limiter
/// and per-destination concurrency permits in here.
///
/// The returned [`GatePermit`] is held until the request is finished: for streamed
/// responses (`get_blob`) until the body stream is exhausted or dropped, for streamed
/// uploads until the registry answered. Returning an error aborts the request with it
/// (for example when the task was cancelled while waiting for a permit).
///
/// Bandwidth caps are not the gate's business: `push_blob` takes the body as a stream,
/// and `get_blob` returns one, so the caller wraps either in its own throttling stream.
#[async_trait::async_trait]
pub trait RequestGate: Send + Sync {
    async fn before_request(&self, request: RequestInfo<'_>) -> Result<GatePermit, ClientError>;
}

/// Whatever the gate wants held for the duration of a request (a semaphore permit, a
/// lease guard); dropped when the request is done.
#[derive(Default)]
pub struct GatePermit {
    _held: Option<Box<dyn Send + Sync>>,
}

impl GatePermit {
    /// A permit holding nothing: the gate only delays.
    pub fn none() -> Self {
        GatePermit { _held: None }
    }

    /// A permit holding `value` until the request is done.
    pub fn new<T: Send + Sync + 'static>(value: T) -> Self {
        GatePermit {
            _held: Some(Box::new(value)),
        }
    }
}

impl fmt::Debug for GatePermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GatePermit")
    }
}
