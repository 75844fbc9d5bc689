//! `_catalog`.
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};

use crate::error::{ErrorCode, RegistryError};
use crate::state::AppState;

pub async fn list(State(_state): State<AppState>, _req: Request) -> Response {
    RegistryError::new(ErrorCode::Unsupported, "not yet").into_response()
}
