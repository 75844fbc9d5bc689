//! JSON in and out, Harbor's way: bodies that do not parse are a `BAD_REQUEST` with the
//! parser's reason, JSON bodies say `application/json; charset=utf-8`, and empty
//! successes carry no content type (harborapi parses any JSON-typed body).

use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::ApiError;

/// A JSON response body.
pub struct JsonBody<T>(pub T);

impl<T: Serialize> IntoResponse for JsonBody<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(bytes) => (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json; charset=utf-8"),
                )],
                bytes,
            )
                .into_response(),
            Err(e) => ApiError::Internal(format!("cannot serialize response: {e}")).into_response(),
        }
    }
}

/// A JSON request body; anything that does not parse into `T` is a 400 saying why.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request(
                "the request body is empty; JSON expected",
            ));
        }
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// `200` with no body and no content type.
pub fn ok_empty() -> Response {
    StatusCode::OK.into_response()
}

/// `201` with `Location` and no body.
pub fn created(location: &str) -> Response {
    let mut response = StatusCode::CREATED.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}
