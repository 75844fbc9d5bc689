//! The one place where failures become `/v2/` responses.
//!
//! Client mistakes carry an OCI error code and a message meant for the client.
//! Infrastructure failures (database, storage) are logged with their cause and
//! answered with a generic body: internal details never leak to clients.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_content::storage::StorageError;
use serde_json::{json, Value};

/// The OCI Distribution Spec's error codes, plus the two every registry needs for
/// failures that are not the client's (`UNKNOWN`, `UNAVAILABLE`) and `RANGE_INVALID`,
/// which Distribution uses for unsatisfiable ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    RangeInvalid,
    Unknown,
    Unavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::RangeInvalid => "RANGE_INVALID",
            ErrorCode::Unknown => "UNKNOWN",
            ErrorCode::Unavailable => "UNAVAILABLE",
        }
    }

    /// The status a code is answered with unless the caller says otherwise.
    pub fn default_status(self) -> StatusCode {
        match self {
            ErrorCode::BlobUnknown
            | ErrorCode::BlobUploadUnknown
            | ErrorCode::ManifestUnknown
            | ErrorCode::NameUnknown => StatusCode::NOT_FOUND,
            ErrorCode::BlobUploadInvalid
            | ErrorCode::DigestInvalid
            | ErrorCode::ManifestBlobUnknown
            | ErrorCode::ManifestInvalid
            | ErrorCode::NameInvalid
            | ErrorCode::SizeInvalid => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Denied => StatusCode::FORBIDDEN,
            ErrorCode::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The client's request is wrong or names something that does not exist.
    #[error("{code:?}: {message}")]
    Client {
        code: ErrorCode,
        status: StatusCode,
        message: String,
        detail: Option<Value>,
        /// Extra response headers, e.g. `Range` on a 416 for an upload.
        headers: Vec<(&'static str, String)>,
    },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// Any other failure that is not the client's (password hashing, token signing):
    /// logged, answered `UNKNOWN`.
    #[error("internal: {0}")]
    Internal(String),
}

pub type RegistryResult<T> = Result<T, RegistryError>;

impl RegistryError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RegistryError::Client {
            code,
            status: code.default_status(),
            message: message.into(),
            detail: None,
            headers: Vec::new(),
        }
    }

    pub fn with_status(mut self, new_status: StatusCode) -> Self {
        if let RegistryError::Client { status, .. } = &mut self {
            *status = new_status;
        }
        self
    }

    pub fn with_detail(mut self, new_detail: Value) -> Self {
        if let RegistryError::Client { detail, .. } = &mut self {
            *detail = Some(new_detail);
        }
        self
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        if let RegistryError::Client { headers, .. } = &mut self {
            headers.push((name, value.into()));
        }
        self
    }

    /// The OCI code this error answers with; tests and logs use it.
    pub fn code(&self) -> ErrorCode {
        match self {
            RegistryError::Client { code, .. } => *code,
            RegistryError::Database(sqlx::Error::PoolTimedOut) => ErrorCode::Unavailable,
            RegistryError::Storage(StorageError::Body(_)) => ErrorCode::BlobUploadInvalid,
            RegistryError::Database(_) | RegistryError::Storage(_) | RegistryError::Internal(_) => {
                ErrorCode::Unknown
            }
        }
    }
}

fn body(code: ErrorCode, message: &str, detail: Option<Value>) -> Json<Value> {
    Json(json!({
        "errors": [{
            "code": code.as_str(),
            "message": message,
            "detail": detail.unwrap_or(Value::Null),
        }]
    }))
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let code = self.code();
        match self {
            RegistryError::Client {
                status,
                message,
                detail,
                headers,
                ..
            } => {
                let mut response = (status, body(code, &message, detail)).into_response();
                for (name, value) in headers {
                    if let Ok(value) = HeaderValue::from_str(&value) {
                        response.headers_mut().insert(name, value);
                    }
                }
                response
            }
            RegistryError::Storage(StorageError::Body(e)) => {
                // The client is usually gone; if it is not, it learns its body broke.
                tracing::info!(error = %e, "request body failed mid-stream");
                let message = "the request body ended before it was complete";
                (code.default_status(), body(code, message, None)).into_response()
            }
            other => {
                tracing::error!(error = %other, "request failed");
                let message = match code {
                    ErrorCode::Unavailable => "the registry is overloaded; retry later",
                    _ => "internal error; the registry logged the cause",
                };
                (code.default_status(), body(code, message, None)).into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn client_errors_render_the_spec_body() {
        let response = RegistryError::new(ErrorCode::BlobUnknown, "blob unknown to registry")
            .with_detail(json!({"digest": "sha256:x"}))
            .into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(value["errors"][0]["detail"]["digest"], "sha256:x");
    }

    #[tokio::test]
    async fn internal_errors_do_not_leak() {
        let response =
            RegistryError::Database(sqlx::Error::Protocol("secret detail".into())).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("secret detail"));
    }
}
