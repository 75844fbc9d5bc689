//! Request parts every management handler needs: who is calling and from where, and
//! which project a `{project_name_or_id}` path segment means.

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use berth_access::audit::AuditEntry;
use berth_access::Principal;

use super::error::ApiError;
use crate::auth::{self, Credentials};
use crate::state::AppState;

/// The authenticated caller. Without credentials it is the anonymous principal (Harbor
/// lets anonymous callers list public projects); wrong credentials are refused with
/// 401, throttled ones with 429.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub client: IpAddr,
}

impl Caller {
    /// 401 for anonymous callers, 403 for authenticated ones without the right.
    pub fn require(&self, allowed: bool) -> Result<(), ApiError> {
        if allowed {
            Ok(())
        } else {
            Err(ApiError::denied(self.principal.is_authenticated()))
        }
    }

    /// System administrators only.
    pub fn require_sysadmin(&self) -> Result<(), ApiError> {
        self.require(self.principal.is_sysadmin())
    }

    /// Any authenticated caller.
    pub fn require_authenticated(&self) -> Result<(), ApiError> {
        self.require(self.principal.is_authenticated())
    }

    /// An audit entry by this caller.
    pub fn audit(
        &self,
        operation: &str,
        resource_type: &str,
        resource: impl Into<String>,
        project_id: Option<i64>,
    ) -> AuditEntry {
        AuditEntry::new(
            self.principal.name(),
            self.client,
            operation,
            resource_type,
            resource,
            project_id,
        )
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let client = auth::client_address(&parts.extensions);
        let credentials =
            Credentials::from_headers(&parts.headers, state.config.auth.max_authorization_bytes)?;
        let principal = auth::authenticate(state, credentials.as_ref(), client).await?;
        Ok(Caller { principal, client })
    }
}

/// Query parameters; values of the wrong type (`page_size=ten`) are refused the way
/// go-swagger refuses them in Harbor: 422 `UNPROCESSABLE_ENTITY` in the JSON error shape.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| ApiQuery(value))
            .map_err(|e| {
                ApiError::Unprocessable(format!("validation failure list:\n{}", e.body_text()))
            })
    }
}

/// Path parameters, refused like [`ApiQuery`] when they do not parse (`/users/abc`).
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ApiPath(value))
            .map_err(|e| {
                ApiError::Unprocessable(format!("validation failure list:\n{}", e.body_text()))
            })
    }
}

/// What a `{project_name_or_id}` path segment names. Harbor's rule: with
/// `X-Is-Resource-Name: true` it is a name; otherwise a value that parses as an integer
/// is an id (project names such as `123` need the header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectKey {
    Id(i64),
    Name(String),
}

impl ProjectKey {
    pub fn from_segment(segment: &str, headers: &HeaderMap) -> ProjectKey {
        let is_name = headers
            .get("x-is-resource-name")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        match segment.parse::<i64>() {
            Ok(id) if !is_name => ProjectKey::Id(id),
            _ => ProjectKey::Name(segment.to_owned()),
        }
    }
}

impl std::fmt::Display for ProjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProjectKey::Id(id) => write!(f, "{id}"),
            ProjectKey::Name(name) => f.write_str(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn numbers_are_ids_unless_the_header_says_name() {
        let mut headers = HeaderMap::new();
        assert_eq!(ProjectKey::from_segment("12", &headers), ProjectKey::Id(12));
        assert_eq!(
            ProjectKey::from_segment("team-a", &headers),
            ProjectKey::Name("team-a".into())
        );
        headers.insert("x-is-resource-name", HeaderValue::from_static("True"));
        assert_eq!(
            ProjectKey::from_segment("12", &headers),
            ProjectKey::Name("12".into())
        );
    }
}
