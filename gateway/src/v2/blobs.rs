//! Blob pull (`GET`/`HEAD`, with single `Range` requests) and delete on
//! `/v2/<name>/blobs/<digest>`.
//!
//! A repository serves a blob only when it links it (`repository_blobs`); the link, not
//! the bytes in storage, is what "the blob exists here" means. HEAD answers from
//! metadata alone, so existence checks (every push starts with one per layer) never
//! touch storage. GET streams from storage, so memory does not grow with blob size.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_content::metadata::blobs;
use berth_content::storage::ByteRange;
use berth_content::{Digest, RepositoryName};
use tracing::instrument;

use crate::error::{ErrorCode, RegistryError, RegistryResult};
use crate::state::AppState;

const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

/// `GET`/`HEAD /v2/<name>/blobs/<digest>`.
#[instrument(skip_all, fields(repository = %name, digest = %digest))]
pub async fn get(
    state: AppState,
    name: RepositoryName,
    digest: Digest,
    req: Request,
) -> RegistryResult<Response> {
    let size = {
        let mut conn = state.db.acquire().await?;
        blobs::find_linked(&mut conn, &name, &digest).await?
    };
    let Some(size) = size.and_then(|s| u64::try_from(s).ok()) else {
        return Err(blob_unknown(&name, &digest));
    };

    let range = match req.headers().get(header::RANGE) {
        None => None,
        Some(value) => {
            let parsed = value
                .to_str()
                .map_err(|_| RangeError::Malformed)
                .and_then(|v| parse_range(v, size));
            match parsed {
                Ok(range) => Some(range),
                Err(e) => {
                    return Err(RegistryError::new(
                        ErrorCode::RangeInvalid,
                        format!("Range {value:?}: {e} (the blob has {size} bytes)"),
                    )
                    .with_header("content-range", format!("bytes */{size}")));
                }
            }
        }
    };

    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // A parsed digest is `algorithm:hex`, always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&digest.to_string()) {
        headers.insert(DOCKER_CONTENT_DIGEST, value.clone());
        // Content never changes under a digest, so the digest is a perfect validator.
        if let Ok(etag) = HeaderValue::from_str(&format!("\"{digest}\"")) {
            headers.insert(header::ETAG, etag);
        }
    }
    let status = match range {
        Some(r) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(r.len()));
            if let Ok(value) = HeaderValue::from_str(&format!("bytes {}-{}/{size}", r.start, r.end))
            {
                headers.insert(header::CONTENT_RANGE, value);
            }
            StatusCode::PARTIAL_CONTENT
        }
        None => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            StatusCode::OK
        }
    };

    let body = if req.method() == Method::HEAD {
        Body::empty()
    } else {
        Body::from_stream(state.storage.read_blob(&digest, range).await?)
    };
    Ok((status, headers, body).into_response())
}

/// `DELETE /v2/<name>/blobs/<digest>`: unlinks the blob from the repository. The bytes
/// stay until garbage collection finds no repository and no manifest using them.
#[instrument(skip_all, fields(repository = %name, digest = %digest))]
pub async fn delete(
    state: AppState,
    name: RepositoryName,
    digest: Digest,
) -> RegistryResult<Response> {
    if !state.config.delete.blobs {
        return Err(RegistryError::new(
            ErrorCode::Unsupported,
            "blob deletion is disabled on this registry",
        ));
    }
    let mut conn = state.db.acquire().await?;
    if !blobs::unlink(&mut conn, &name, &digest).await? {
        return Err(blob_unknown(&name, &digest));
    }
    tracing::info!("blob unlinked from repository");
    let mut response = StatusCode::ACCEPTED.into_response();
    if let Ok(value) = HeaderValue::from_str(&digest.to_string()) {
        response.headers_mut().insert(DOCKER_CONTENT_DIGEST, value);
    }
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    Ok(response)
}

fn blob_unknown(name: &RepositoryName, digest: &Digest) -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUnknown,
        format!("blob {digest} is unknown to repository {}", name.as_str()),
    )
    .with_detail(serde_json::json!({ "digest": digest.to_string() }))
}

/// Why a `Range` header cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("only a single range of the form bytes=<start>-<end>, bytes=<start>- or bytes=-<suffix length> is supported")]
    Malformed,
    #[error("the range starts past the end of the blob")]
    Unsatisfiable,
}

/// Parses a single-range `Range` header against a blob of `size` bytes (RFC 9110
/// §14.1.2): `bytes=a-b` (b clamped to the last byte), `bytes=a-`, `bytes=-n` (the last
/// n bytes, the whole blob when n ≥ size). Multiple ranges are refused as malformed:
/// registry clients never send them, and serving them means multipart bodies.
pub fn parse_range(value: &str, size: u64) -> Result<ByteRange, RangeError> {
    let spec = value
        .trim()
        .strip_prefix("bytes=")
        .ok_or(RangeError::Malformed)?
        .trim();
    if spec.contains(',') {
        return Err(RangeError::Malformed);
    }
    let (first, last) = spec.split_once('-').ok_or(RangeError::Malformed)?;
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| -> Result<u64, RangeError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RangeError::Malformed);
        }
        // More digits than u64 holds: far past any blob's end, not malformed.
        Ok(s.parse::<u64>().unwrap_or(u64::MAX))
    };
    if first.is_empty() {
        let suffix = number(last)?;
        if suffix == 0 || size == 0 {
            return Err(RangeError::Unsatisfiable);
        }
        return Ok(ByteRange {
            start: size.saturating_sub(suffix),
            end: size - 1,
        });
    }
    let start = number(first)?;
    let end = if last.is_empty() {
        None
    } else {
        Some(number(last)?)
    };
    if let Some(end) = end {
        if end < start {
            return Err(RangeError::Malformed);
        }
    }
    if start >= size {
        return Err(RangeError::Unsatisfiable);
    }
    let end = end.map_or(size - 1, |end| end.min(size - 1));
    Ok(ByteRange { start, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> Result<ByteRange, RangeError> {
        Ok(ByteRange { start, end })
    }

    #[test]
    fn parses_closed_open_and_suffix_ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), r(0, 9));
        assert_eq!(parse_range("bytes=10-10", 100), r(10, 10));
        assert_eq!(parse_range(" bytes= 5 - 9 ", 100), r(5, 9));
        assert_eq!(parse_range("bytes=90-", 100), r(90, 99));
        assert_eq!(parse_range("bytes=0-", 1), r(0, 0));
        assert_eq!(parse_range("bytes=-10", 100), r(90, 99));
        assert_eq!(parse_range("bytes=-100", 100), r(0, 99));
    }

    #[test]
    fn clamps_ends_past_the_blob() {
        assert_eq!(parse_range("bytes=50-1000", 100), r(50, 99));
        assert_eq!(parse_range("bytes=-1000", 100), r(0, 99));
        assert_eq!(
            parse_range("bytes=0-99999999999999999999999999", 100),
            r(0, 99)
        );
    }

    #[test]
    fn refuses_unsatisfiable_ranges() {
        assert_eq!(
            parse_range("bytes=100-", 100),
            Err(RangeError::Unsatisfiable)
        );
        assert_eq!(
            parse_range("bytes=100-200", 100),
            Err(RangeError::Unsatisfiable)
        );
        assert_eq!(parse_range("bytes=-0", 100), Err(RangeError::Unsatisfiable));
        assert_eq!(parse_range("bytes=0-", 0), Err(RangeError::Unsatisfiable));
        assert_eq!(parse_range("bytes=-5", 0), Err(RangeError::Unsatisfiable));
        assert_eq!(
            parse_range("bytes=99999999999999999999999-", 100),
            Err(RangeError::Unsatisfiable)
        );
    }

    #[test]
    fn refuses_malformed_ranges() {
        for bad in [
            "",
            "bytes=",
            "bytes=-",
            "0-9",
            "items=0-9",
            "bytes 0-9",
            "bytes=9-0",
            "bytes=a-b",
            "bytes=0-9,20-29",
            "bytes=+1-2",
            "bytes=1-+2",
            "bytes=--5",
            "bytes=1-2-3",
        ] {
            assert_eq!(parse_range(bad, 100), Err(RangeError::Malformed), "{bad:?}");
        }
    }
}
