//! Registry authentication as docker does it, so the benchmark pays what a real client
//! pays: HTTP Basic on every request where the registry challenges with `Basic`
//! (docker-registry with htpasswd), and the token flow where it challenges with `Bearer`
//! (Berth, Harbor): Basic credentials to the realm with a repository scope, then the
//! token as `Bearer` on every request of that scope, cached until shortly before it
//! expires.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use base64::Engine as _;
use hyper::Method;
use serde_json::Value;
use url::Url;

/// A token is renewed this long before it expires, so no request goes out with a token
/// that lapses in flight.
const RENEW_BEFORE: Duration = Duration::from_secs(30);
/// What the token spec says to assume when `expires_in` is absent.
const DEFAULT_EXPIRES_IN: u64 = 60;

/// The password is read from this variable, never from the command line, where `ps`
/// would show it.
pub const PASSWORD_ENV: &str = "LOADTEST_PASSWORD";

pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    /// `username` with the password from [`PASSWORD_ENV`].
    pub fn from_env(username: &str) -> Result<Credentials> {
        let password = std::env::var(PASSWORD_ENV)
            .map_err(|_| anyhow!("--username {username} needs the password in ${PASSWORD_ENV}"))?;
        Ok(Credentials {
            username: username.to_owned(),
            password,
        })
    }

    fn basic_header(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

/// How the registry wants to be authenticated, from its `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    Basic,
    Token { realm: Url, service: String },
}

impl Scheme {
    /// The scheme of a `WWW-Authenticate` header value.
    pub fn from_challenge(header: &str) -> Result<Scheme> {
        let (scheme, params) =
            parse_challenge(header).ok_or_else(|| anyhow!("unreadable challenge {header:?}"))?;
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Ok(Scheme::Basic),
            "bearer" => {
                let realm = params
                    .get("realm")
                    .ok_or_else(|| anyhow!("Bearer challenge without realm: {header:?}"))?;
                let realm = Url::parse(realm).with_context(|| format!("token realm {realm:?}"))?;
                if realm.scheme() != "http" {
                    bail!("only http:// token realms are supported, got {realm}");
                }
                Ok(Scheme::Token {
                    realm,
                    service: params.get("service").cloned().unwrap_or_default(),
                })
            }
            other => bail!("unsupported authentication scheme {other:?} in {header:?}"),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Scheme::Basic => "basic",
            Scheme::Token { .. } => "token",
        }
    }
}

/// `Scheme k="v",k2="v2"` → the scheme and its parameters. Quoted values may hold
/// commas (`scope="repository:a:pull,push"`).
pub fn parse_challenge(header: &str) -> Option<(String, HashMap<String, String>)> {
    let header = header.trim();
    let (scheme, mut rest) = match header.split_once(' ') {
        Some((s, r)) => (s, r.trim()),
        None => (header, ""),
    };
    if scheme.is_empty() {
        return None;
    }
    let mut params = HashMap::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.insert(key, value.to_owned());
        rest = after.trim_start().trim_start_matches(',').trim_start();
    }
    Some((scheme.to_owned(), params))
}

/// The token scope a request needs, as docker asks for it: `pull` to read a repository,
/// `pull,push` to write to it; none for `/v2/` itself.
pub fn scope_for(method: &Method, path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v2/")?;
    let segments: Vec<&str> = rest.split('/').collect();
    // The repository name ends before the first route keyword, as in the registry's
    // own router.
    let end = segments
        .iter()
        .position(|s| matches!(*s, "blobs" | "manifests" | "tags" | "referrers"))?;
    if end == 0 {
        return None;
    }
    let name = segments[..end].join("/");
    let actions = if *method == Method::GET || *method == Method::HEAD {
        "pull"
    } else {
        "pull,push"
    };
    Some(format!("repository:{name}:{actions}"))
}

struct Cached {
    header: String,
    renew_at: Instant,
}

/// Credentials plus, for the token flow, the tokens obtained so far (one per scope).
pub struct Auth {
    pub scheme: Scheme,
    basic: String,
    /// Held across a token request, so concurrent workers that miss the cache wait for
    /// one request instead of each logging in: what one docker client does.
    tokens: tokio::sync::Mutex<HashMap<String, Cached>>,
    token_requests: AtomicU64,
}

/// The part of a token response the client uses.
struct Token {
    value: String,
    expires_in: u64,
}

impl Auth {
    pub fn new(scheme: Scheme, credentials: &Credentials) -> Auth {
        Auth {
            scheme,
            basic: credentials.basic_header(),
            tokens: tokio::sync::Mutex::new(HashMap::new()),
            token_requests: AtomicU64::new(0),
        }
    }

    /// Token requests made so far.
    pub fn token_requests(&self) -> u64 {
        self.token_requests.load(Ordering::Relaxed)
    }

    /// The `Authorization` value for a request. `fetch` performs a token request
    /// (GET of the URL with the given `Authorization`) and returns status and body.
    pub async fn header<F, Fut>(&self, method: &Method, path: &str, fetch: F) -> Result<String>
    where
        F: FnOnce(Url, String) -> Fut,
        Fut: std::future::Future<Output = Result<(hyper::StatusCode, bytes::Bytes)>>,
    {
        let (realm, service) = match &self.scheme {
            Scheme::Basic => return Ok(self.basic.clone()),
            Scheme::Token { realm, service } => (realm, service),
        };
        let scope = scope_for(method, path);
        let key = scope.clone().unwrap_or_default();
        let mut tokens = self.tokens.lock().await;
        if let Some(cached) = tokens.get(&key) {
            if Instant::now() < cached.renew_at {
                return Ok(cached.header.clone());
            }
        }
        let mut url = realm.clone();
        {
            let mut query = url.query_pairs_mut();
            if !service.is_empty() {
                query.append_pair("service", service);
            }
            if let Some(scope) = &scope {
                query.append_pair("scope", scope);
            }
        }
        self.token_requests.fetch_add(1, Ordering::Relaxed);
        let requested = Instant::now();
        let (status, body) = fetch(url.clone(), self.basic.clone()).await?;
        if status != hyper::StatusCode::OK {
            bail!(
                "token request {url}: expected 200 OK, got {status}: {}",
                crate::http::truncate(&body)
            );
        }
        let token = parse_token(&body).with_context(|| format!("token response of {url}"))?;
        let lifetime = Duration::from_secs(token.expires_in);
        let header = format!("Bearer {}", token.value);
        tokens.insert(
            key,
            Cached {
                header: header.clone(),
                renew_at: requested + lifetime.saturating_sub(RENEW_BEFORE),
            },
        );
        Ok(header)
    }
}

fn parse_token(body: &[u8]) -> Result<Token> {
    let json: Value = serde_json::from_slice(body).context("not JSON")?;
    // `token` per the distribution spec; `access_token` is the OAuth2 spelling.
    let value = json
        .get("token")
        .or_else(|| json.get("access_token"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| anyhow!("no token in {json}"))?;
    let expires_in = json
        .get("expires_in")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_EXPIRES_IN);
    Ok(Token {
        value: value.to_owned(),
        expires_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge() {
        let header = r#"Bearer realm="http://127.0.0.1:5002/service/token",service="berth-registry",scope="repository:a/b:pull,push""#;
        let (scheme, params) = parse_challenge(header).unwrap();
        assert_eq!(scheme, "Bearer");
        assert_eq!(params["realm"], "http://127.0.0.1:5002/service/token");
        assert_eq!(params["service"], "berth-registry");
        assert_eq!(params["scope"], "repository:a/b:pull,push");
        assert_eq!(
            Scheme::from_challenge(header).unwrap(),
            Scheme::Token {
                realm: Url::parse("http://127.0.0.1:5002/service/token").unwrap(),
                service: "berth-registry".into()
            }
        );
    }

    #[test]
    fn basic_challenge() {
        assert_eq!(
            Scheme::from_challenge(r#"Basic realm="Registry Realm""#).unwrap(),
            Scheme::Basic
        );
        assert_eq!(Scheme::from_challenge("Basic").unwrap(), Scheme::Basic);
        assert!(Scheme::from_challenge(r#"Negotiate x="y""#).is_err());
        assert!(Scheme::from_challenge(r#"Bearer service="x""#).is_err());
    }

    #[test]
    fn scopes() {
        let get = Method::GET;
        assert_eq!(
            scope_for(&get, "/v2/bench/berth/manifests/t").as_deref(),
            Some("repository:bench/berth:pull")
        );
        assert_eq!(
            scope_for(&Method::HEAD, "/v2/a/blobs/sha256:00").as_deref(),
            Some("repository:a:pull")
        );
        assert_eq!(
            scope_for(&Method::PUT, "/v2/a/b/c/blobs/uploads/u1").as_deref(),
            Some("repository:a/b/c:pull,push")
        );
        assert_eq!(scope_for(&get, "/v2/"), None);
        assert_eq!(scope_for(&get, "/v2/_catalog"), None);
    }

    #[test]
    fn token_body() {
        let t = parse_token(br#"{"token":"abc","expires_in":300,"issued_at":"x"}"#).unwrap();
        assert_eq!((t.value.as_str(), t.expires_in), ("abc", 300));
        let t = parse_token(br#"{"access_token":"def"}"#).unwrap();
        assert_eq!(
            (t.value.as_str(), t.expires_in),
            ("def", DEFAULT_EXPIRES_IN)
        );
        assert!(parse_token(br#"{"token":""}"#).is_err());
        assert!(parse_token(b"nope").is_err());
    }
}
