//! Manifest pull, push and delete.
use axum::extract::Request;
use axum::response::Response;
use berth_content::{Reference, RepositoryName};

use crate::error::{ErrorCode, RegistryError, RegistryResult};
use crate::state::AppState;

pub async fn get(
    _state: AppState,
    _name: RepositoryName,
    _reference: Reference,
    _req: Request,
) -> RegistryResult<Response> {
    Err(RegistryError::new(ErrorCode::Unsupported, "not yet"))
}

pub async fn put(
    _state: AppState,
    _name: RepositoryName,
    _reference: Reference,
    _req: Request,
) -> RegistryResult<Response> {
    Err(RegistryError::new(ErrorCode::Unsupported, "not yet"))
}

pub async fn delete(
    _state: AppState,
    _name: RepositoryName,
    _reference: Reference,
) -> RegistryResult<Response> {
    Err(RegistryError::new(ErrorCode::Unsupported, "not yet"))
}
