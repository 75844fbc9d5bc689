//! The referrers API.
use axum::extract::Request;
use axum::response::Response;
use berth_content::{Digest, RepositoryName};

use crate::error::{ErrorCode, RegistryError, RegistryResult};
use crate::state::AppState;

pub async fn list(
    _state: AppState,
    _name: RepositoryName,
    _digest: Digest,
    _req: Request,
) -> RegistryResult<Response> {
    Err(RegistryError::new(ErrorCode::Unsupported, "not yet"))
}
