//! The client's error type: one variant per way a remote registry can fail us, so the
//! replication worker can decide between "retry later" and "fail the task now" without
//! looking at strings.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Deserialize;

/// Everything that can go wrong talking to a remote registry.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ClientError {
    /// 401 even after authenticating: wrong or missing credentials.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// 403: the credential is valid but not allowed to do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 404: unknown repository, manifest, blob or upload (NAME_UNKNOWN, MANIFEST_UNKNOWN, ...).
    #[error("not found: {0}")]
    NotFound(String),
    /// 429: the registry asks us to slow down, maybe saying for how long.
    #[error("rate limited (retry after {retry_after:?})")]
    RateLimited { retry_after: Option<Duration> },
    /// 5xx (and 408): the registry failed; worth retrying.
    #[error("server error {status}: {message}")]
    Server { status: u16, message: String },
    /// The connection could not be made, was reset, or timed out.
    #[error("connection: {0}")]
    Connection(String),
    /// The registry answered something that makes no sense: a body that is not what the
    /// protocol says, a missing header, a digest that does not match the content.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The request itself is wrong: a bad repository name or digest given by the caller,
    /// or a 4xx that is none of the above (MANIFEST_INVALID, DIGEST_INVALID, ...).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The caller's byte stream (the blob being pushed) failed; nothing the remote did.
    #[error("source stream: {0}")]
    Source(String),
    /// The caller stopped the operation (its gate refused to let a request go, or it
    /// asked an upload to stop); not worth retrying.
    #[error("cancelled: {0}")]
    Cancelled(String),
}

impl ClientError {
    /// Whether a later retry of the same request may succeed: rate limits, server errors
    /// and connection failures. Authentication, permission, not-found and protocol errors
    /// will fail the same way again.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ClientError::RateLimited { .. }
                | ClientError::Server { .. }
                | ClientError::Connection(_)
        )
    }

    /// How long the registry asked us to wait (429 with `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// Classifies a transport-level failure from reqwest.
    pub(crate) fn from_reqwest(err: reqwest::Error) -> Self {
        if err.is_builder() {
            return ClientError::Invalid(error_chain(&err));
        }
        if err.is_redirect() {
            return ClientError::Protocol(error_chain(&err));
        }
        // Connect, timeout, request and body errors, and anything unclassified, are
        // network trouble as far as the caller is concerned. That includes "decode"
        // errors: reqwest reports a body cut off mid-stream as one (the client parses
        // JSON itself, so it has no other decode errors).
        ClientError::Connection(error_chain(&err))
    }

    /// Maps a non-success status and its (already read, maybe empty) body to an error.
    pub(crate) fn from_status(status: u16, headers: &HeaderMap, body: &[u8]) -> Self {
        let message = error_message(status, body);
        match status {
            401 => ClientError::Unauthorized(message),
            403 => ClientError::Forbidden(message),
            404 => ClientError::NotFound(message),
            429 => ClientError::RateLimited {
                retry_after: parse_retry_after(headers, SystemTime::now()),
            },
            408 | 500..=599 => ClientError::Server { status, message },
            _ => ClientError::Invalid(format!("status {status}: {message}")),
        }
    }
}

/// reqwest's Display hides the cause ("error sending request"); the chain says
/// "connection reset by peer", which is what an operator needs in the task log.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The readable message of an error response: the OCI error body's `code: message`
/// entries when it has them, else a short, printable prefix of whatever came back.
pub(crate) fn error_message(status: u16, body: &[u8]) -> String {
    if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
        let parts: Vec<String> = parsed
            .errors
            .iter()
            .filter_map(|e| match (&e.code, &e.message) {
                (Some(code), Some(message)) if !message.is_empty() => {
                    Some(format!("{code}: {message}"))
                }
                (Some(code), _) => Some(code.clone()),
                (None, Some(message)) => Some(message.clone()),
                (None, None) => None,
            })
            .collect();
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .filter(|c| !c.is_control() || *c == ' ')
        .take(200)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        let reason = reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("unexpected status");
        format!("HTTP {status} {reason}")
    } else {
        format!("HTTP {status}: {text}")
    }
}

/// `Retry-After` is either delta-seconds or an HTTP date (RFC 9110 §10.2.3); a date in
/// the past means "now".
pub(crate) fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn oci_error_body_becomes_the_message() {
        let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#;
        let err = ClientError::from_status(401, &HeaderMap::new(), body);
        assert_eq!(
            err,
            ClientError::Unauthorized("UNAUTHORIZED: authentication required".into())
        );
    }

    #[test]
    fn garbage_bodies_are_shortened_and_kept_printable() {
        let body = vec![b'x'; 10_000];
        let message = error_message(500, &body);
        assert!(message.len() < 220, "{message}");
        assert_eq!(error_message(502, b""), "HTTP 502 Bad Gateway");
        assert_eq!(
            error_message(500, b"{\"errors\": 3}"),
            "HTTP 500: {\"errors\": 3}"
        );
        assert_eq!(
            error_message(500, &[0xff, 0xfe, 0x00]),
            "HTTP 500: \u{fffd}\u{fffd}"
        );
    }

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let now = SystemTime::now();
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(
            parse_retry_after(&headers, now),
            Some(Duration::from_secs(2))
        );

        let later = now + Duration::from_secs(30);
        let date = httpdate::fmt_http_date(later);
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&date).unwrap());
        let parsed = parse_retry_after(&headers, now).unwrap();
        // HTTP dates have one-second resolution.
        assert!(parsed <= Duration::from_secs(30) && parsed >= Duration::from_secs(29));

        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
        );
        assert_eq!(parse_retry_after(&headers, now), Some(Duration::ZERO));

        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&headers, now), None);
    }

    #[test]
    fn transient_classification() {
        assert!(ClientError::RateLimited { retry_after: None }.is_transient());
        assert!(ClientError::Server {
            status: 503,
            message: String::new()
        }
        .is_transient());
        assert!(ClientError::Connection("reset".into()).is_transient());
        assert!(!ClientError::Unauthorized("no".into()).is_transient());
        assert!(!ClientError::Protocol("garbage".into()).is_transient());
        assert_eq!(
            ClientError::from_status(429, &HeaderMap::new(), b"").retry_after(),
            None
        );
    }
}
