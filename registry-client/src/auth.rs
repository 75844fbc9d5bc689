//! Auth negotiation the way docker does it: parse the registry's `WWW-Authenticate`
//! challenge, fetch Bearer tokens from its token service per scope, and cache them
//! until shortly before they expire.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Deserialize;
use url::Url;

/// What the registry asked for in its last 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// HTTP Basic (htpasswd registries).
    Basic,
    /// A token from `realm` (Docker's token spec, Harbor, Berth, Docker Hub).
    Bearer {
        realm: Url,
        service: Option<String>,
        /// The scope the server said it needs, when it says one.
        scope: Option<String>,
    },
}

/// Picks the challenge to answer from all `WWW-Authenticate` header values: Bearer
/// when offered (it scopes access), else Basic. `None` when there is no usable one.
pub(crate) fn parse_challenges<'a>(values: impl Iterator<Item = &'a str>) -> Option<Challenge> {
    let mut basic = false;
    for value in values {
        for (scheme, params) in split_challenges(value) {
            if scheme.eq_ignore_ascii_case("bearer") {
                let realm = params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("realm"))
                    .and_then(|(_, v)| Url::parse(v).ok())
                    .filter(|u| matches!(u.scheme(), "http" | "https"));
                let Some(realm) = realm else { continue };
                let get = |name: &str| {
                    params
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.clone())
                        .filter(|v| !v.is_empty())
                };
                return Some(Challenge::Bearer {
                    realm,
                    service: get("service"),
                    scope: get("scope"),
                });
            }
            if scheme.eq_ignore_ascii_case("basic") {
                basic = true;
            }
        }
    }
    basic.then_some(Challenge::Basic)
}

/// Splits one header value into `(scheme, params)` challenges (RFC 9110 §11.6.1:
/// several challenges may share one header, separated by commas, which also separate
/// parameters; a new challenge starts where a token is not followed by `=`).
fn split_challenges(value: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let chars: Vec<char> = value.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && (chars[*i].is_whitespace() || chars[*i] == ',') {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            break;
        }
        // A token: scheme or parameter name.
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '=' && chars[i] != ',' {
            i += 1;
        }
        let token: String = chars[start..i].iter().collect();
        let mut j = i;
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        if j < chars.len() && chars[j] == '=' && !out.is_empty() {
            // name=value parameter of the current challenge.
            i = j + 1;
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            let mut param_value = String::new();
            if i < chars.len() && chars[i] == '"' {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                    }
                    param_value.push(chars[i]);
                    i += 1;
                }
                i += 1; // closing quote (or past the end on a truncated value)
            } else {
                while i < chars.len() && chars[i] != ',' && !chars[i].is_whitespace() {
                    param_value.push(chars[i]);
                    i += 1;
                }
            }
            if let Some(last) = out.last_mut() {
                last.1.push((token, param_value));
            }
        } else if !token.is_empty() {
            out.push((token, Vec::new()));
        } else {
            // A stray '=' with nothing before it: skip it rather than loop forever.
            i += 1;
        }
    }
    out
}

/// The token service's answer (Docker's token spec; OAuth2 services say `access_token`).
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

/// The spec's default lifetime when the service does not say.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// A token and until when we use it.
#[derive(Debug, Clone)]
pub(crate) struct CachedToken {
    pub token: String,
    pub valid_until: Instant,
}

impl CachedToken {
    /// Used until shortly before the service's `expires_in`: a tenth of the lifetime
    /// early, at least 5 s and at most 60 s, so a token never expires in flight.
    pub fn new(token: String, expires_in: Option<u64>, now: Instant) -> Self {
        let lifetime = expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        let margin = (lifetime / 10).clamp(Duration::from_secs(5), Duration::from_secs(60));
        CachedToken {
            token,
            valid_until: now + lifetime.saturating_sub(margin),
        }
    }

    pub fn is_valid(&self, now: Instant) -> bool {
        now < self.valid_until
    }
}

/// What the client learned about the registry's auth.
#[derive(Debug, Default)]
pub(crate) struct AuthState {
    /// The last challenge seen; `None` until the first 401.
    pub challenge: Option<Challenge>,
    /// Tokens by scope key (the sorted scopes joined by spaces).
    pub tokens: HashMap<String, CachedToken>,
}

/// The cache key of a set of scopes.
pub(crate) fn scope_key(scopes: &[String]) -> String {
    let mut sorted: Vec<&str> = scopes.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_with_quoted_params() {
        let value = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull",error="insufficient_scope""#;
        assert_eq!(
            parse_challenges([value].into_iter()),
            Some(Challenge::Bearer {
                realm: Url::parse("https://auth.docker.io/token").unwrap(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
            })
        );
    }

    #[test]
    fn basic_challenge_and_mixed_headers() {
        assert_eq!(
            parse_challenges([r#"Basic realm="Registry Realm""#].into_iter()),
            Some(Challenge::Basic)
        );
        // Bearer wins when both are offered, in one header or two.
        let both = r#"Basic realm="x", Bearer realm="http://h/token", service=h"#;
        assert!(matches!(
            parse_challenges([both].into_iter()),
            Some(Challenge::Bearer { service: Some(s), .. }) if s == "h"
        ));
        assert!(matches!(
            parse_challenges(["Basic realm=x", "Bearer realm=\"http://h/t\""].into_iter()),
            Some(Challenge::Bearer { .. })
        ));
    }

    #[test]
    fn garbage_challenges_are_not_usable() {
        for value in [
            "",
            "=",
            "Bearer",
            "Bearer realm=\"not a url\"",
            "Negotiate abc",
            "\"\"\"",
            "Bearer realm=\"ftp://x/\"",
            "Bearer realm=\"http://h/t",
        ] {
            let parsed = parse_challenges([value].into_iter());
            assert!(
                !matches!(parsed, Some(Challenge::Basic)),
                "{value:?} gave {parsed:?}"
            );
        }
        // A truncated quoted value still parses what it can without panicking.
        let _ = parse_challenges(["Bearer realm=\"http://h/t\",service=\"abc"].into_iter());
    }

    #[test]
    fn tokens_expire_early() {
        let now = Instant::now();
        let token = CachedToken::new("t".into(), Some(300), now);
        assert!(token.is_valid(now + Duration::from_secs(260)));
        assert!(!token.is_valid(now + Duration::from_secs(271)));
        let default = CachedToken::new("t".into(), None, now);
        assert!(!default.is_valid(now + Duration::from_secs(55)));
        // A zero lifetime is never cached as valid.
        assert!(!CachedToken::new("t".into(), Some(0), now).is_valid(now));
    }

    #[test]
    fn scope_keys_ignore_order() {
        let a = scope_key(&["repository:b:pull".into(), "repository:a:pull,push".into()]);
        let b = scope_key(&["repository:a:pull,push".into(), "repository:b:pull".into()]);
        assert_eq!(a, b);
    }
}
