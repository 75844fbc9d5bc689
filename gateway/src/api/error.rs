//! The one place where management API failures become responses, in Harbor's shape:
//! `{"errors":[{"code":"NOT_FOUND","message":"…"}]}`.
//!
//! Client mistakes carry a message meant for the client; database failures are logged
//! with their cause and answered with a generic message.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_access::password::PasswordError;
use serde_json::json;

use crate::auth::AuthError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No or wrong credentials.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed.
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    /// The resource is not in a state that allows the operation (a project that still
    /// has repositories cannot be deleted).
    #[error("precondition failed: {0}")]
    Precondition(String),
    /// A parameter outside its allowed range (`page_size` above 100), as go-swagger
    /// reports it in Harbor.
    #[error("unprocessable: {0}")]
    Unprocessable(String),
    /// The operation is switched off in this registry's configuration.
    #[error("method not allowed: {0}")]
    MethodNotAllowed(String),
    #[error("too many requests: retry in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("internal: {0}")]
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Harbor's error body, for the OpenAPI document.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorsBody {
    pub errors: Vec<ErrorItem>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorItem {
    /// `BAD_REQUEST`, `UNAUTHORIZED`, `FORBIDDEN`, `NOT_FOUND`, `CONFLICT`,
    /// `PRECONDITION`, `UNPROCESSABLE_ENTITY`, `TOO_MANY_REQUESTS`, `UNKNOWN`.
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Precondition(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Database(sqlx::Error::PoolTimedOut) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Database(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Harbor's error code for the status.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "BAD_REQUEST",
            ApiError::Unauthorized(_) => "UNAUTHORIZED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::Precondition(_) => "PRECONDITION",
            ApiError::Unprocessable(_) => "UNPROCESSABLE_ENTITY",
            ApiError::MethodNotAllowed(_) => "METHOD_NOT_ALLOWED",
            ApiError::TooManyRequests { .. } => "TOO_MANY_REQUESTS",
            ApiError::Database(sqlx::Error::PoolTimedOut) => "SERVICE_UNAVAILABLE",
            ApiError::Database(_) | ApiError::Internal(_) => "UNKNOWN",
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::NotFound(message.into())
    }

    pub fn forbidden() -> ApiError {
        ApiError::Forbidden("forbidden".to_owned())
    }

    /// The error for an anonymous caller where identification is needed, or for an
    /// authenticated one without the right.
    pub fn denied(authenticated: bool) -> ApiError {
        if authenticated {
            ApiError::forbidden()
        } else {
            ApiError::Unauthorized("unauthorized".to_owned())
        }
    }

    /// Maps a violation of the named constraint to `error`, anything else to itself.
    /// Use it for unique names: `.map_err(|e| ApiError::on_constraint(e, "users_username_key", ApiError::Conflict(…)))`.
    pub fn on_constraint(e: sqlx::Error, constraint: &str, error: ApiError) -> ApiError {
        match &e {
            sqlx::Error::Database(db) if db.constraint() == Some(constraint) => error,
            _ => ApiError::Database(e),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Malformed(message) => ApiError::Unauthorized(message),
            AuthError::InvalidCredentials => {
                ApiError::Unauthorized("invalid username or password".to_owned())
            }
            AuthError::Throttled(wait) => ApiError::TooManyRequests {
                retry_after_secs: wait.as_secs().max(1),
            },
            AuthError::Database(e) => ApiError::Database(e),
            AuthError::Hashing(e) => e.into(),
        }
    }
}

/// Hashing passwords and secrets fails only inside Berth.
impl From<PasswordError> for ApiError {
    fn from(e: PasswordError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::BadRequest(m)
            | ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::Precondition(m)
            | ApiError::Unprocessable(m)
            | ApiError::MethodNotAllowed(m) => m.clone(),
            ApiError::TooManyRequests { retry_after_secs } => {
                format!("too many failed logins; retry in {retry_after_secs} s")
            }
            ApiError::Database(sqlx::Error::PoolTimedOut) => {
                tracing::warn!(error = %self, "management API request failed: database pool exhausted");
                "the registry is overloaded; retry later".to_owned()
            }
            ApiError::Database(_) | ApiError::Internal(_) => {
                tracing::error!(error = %self, "management API request failed");
                "internal server error".to_owned()
            }
        };
        let body = json!({ "errors": [{ "code": self.code(), "message": message }] });
        let mut response = (status, axum::Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        if let ApiError::TooManyRequests { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"berth\""),
            );
        }
        response
    }
}
