//! The `Authorization` header, parsed once: Basic credentials or a bearer token.

use axum::http::HeaderMap;
use base64::Engine;

use super::AuthError;

#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic { username: String, password: String },
    Bearer(String),
}

// Never print secrets, even in debug logs.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

impl Credentials {
    /// `Ok(None)` without an `Authorization` header; an error for one that is too long,
    /// not ASCII, of an unknown scheme, or badly encoded.
    pub fn from_headers(
        headers: &HeaderMap,
        max_bytes: usize,
    ) -> Result<Option<Credentials>, AuthError> {
        let mut values = headers.get_all(axum::http::header::AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(malformed("more than one Authorization header"));
        }
        if value.len() > max_bytes {
            return Err(malformed(&format!(
                "Authorization header is longer than {max_bytes} bytes"
            )));
        }
        let value = value
            .to_str()
            .map_err(|_| malformed("Authorization header is not visible ASCII"))?;
        Self::parse(value).map(Some)
    }

    pub fn parse(value: &str) -> Result<Credentials, AuthError> {
        let (scheme, rest) = value
            .trim()
            .split_once(' ')
            .ok_or_else(|| malformed("Authorization header has no credentials after its scheme"))?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .map_err(|_| malformed("Basic credentials are not valid base64"))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| malformed("Basic credentials are not UTF-8"))?;
            let (username, password) = decoded.split_once(':').ok_or_else(|| {
                malformed("Basic credentials have no ':' between user and password")
            })?;
            if username.is_empty() {
                return Err(malformed("Basic credentials have an empty username"));
            }
            Ok(Credentials::Basic {
                username: username.to_owned(),
                password: password.to_owned(),
            })
        } else if scheme.eq_ignore_ascii_case("bearer") {
            if rest.is_empty() || rest.contains(' ') {
                return Err(malformed("Bearer credentials must be one token"));
            }
            Ok(Credentials::Bearer(rest.to_owned()))
        } else {
            Err(malformed(&format!(
                "unsupported Authorization scheme {scheme:?}; use Basic or Bearer"
            )))
        }
    }
}

fn malformed(message: &str) -> AuthError {
    AuthError::Malformed(message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn basic(raw: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    #[test]
    fn parses_basic_and_bearer() {
        assert_eq!(
            Credentials::parse(&basic("alice:pa:ss")).unwrap(),
            Credentials::Basic {
                username: "alice".into(),
                password: "pa:ss".into()
            }
        );
        assert_eq!(
            Credentials::parse("bearer abc.def.ghi").unwrap(),
            Credentials::Bearer("abc.def.ghi".into())
        );
    }

    #[test]
    fn refuses_malformed_headers() {
        for bad in [
            "Basic",
            "Basic !!!",
            &basic("no-colon"),
            &basic(":password"),
            "Bearer a b",
            "Digest abc",
            "Negotiate",
        ] {
            assert!(
                matches!(Credentials::parse(bad), Err(AuthError::Malformed(_))),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn refuses_over_long_and_duplicate_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {}", "a".repeat(100))).unwrap(),
        );
        assert!(Credentials::from_headers(&headers, 50).is_err());
        assert!(Credentials::from_headers(&headers, 500).unwrap().is_some());
        headers.append("authorization", HeaderValue::from_static("Bearer b"));
        assert!(Credentials::from_headers(&headers, 500).is_err());
        assert!(Credentials::from_headers(&HeaderMap::new(), 500)
            .unwrap()
            .is_none());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let creds = Credentials::parse(&basic("alice:hunter2")).unwrap();
        assert!(!format!("{creds:?}").contains("hunter2"));
    }
}
