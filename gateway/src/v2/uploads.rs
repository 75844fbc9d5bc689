//! Blob uploads.
use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::Request;
use axum::response::Response;
use berth_content::{DigestHasher, RepositoryName};
use uuid::Uuid;

use crate::error::{ErrorCode, RegistryError, RegistryResult};
use crate::state::AppState;

#[derive(Default)]
pub struct UploadHashers {
    _inner: Mutex<HashMap<Uuid, (u64, DigestHasher)>>,
}

pub async fn sweep_expired(_state: AppState, _stop: tokio::sync::watch::Receiver<bool>) {}

pub async fn start(
    _state: AppState,
    _name: RepositoryName,
    _req: Request,
) -> RegistryResult<Response> {
    Err(RegistryError::new(ErrorCode::Unsupported, "not yet"))
}
pub async fn status(
    _state: AppState,
    _name: RepositoryName,
    _id: Uuid,
) -> RegistryResult<Response> {
    Err(RegistryError::new(ErrorCode::Unsupported, "not yet"))
}
pub async fn patch(
    _state: AppState,
    _name: RepositoryName,
    _id: Uuid,
    _req: Request,
) -> RegistryResult<Response> {
    Err(RegistryError::new(ErrorCode::Unsupported, "not yet"))
}
pub async fn complete(
    _state: AppState,
    _name: RepositoryName,
    _id: Uuid,
    _req: Request,
) -> RegistryResult<Response> {
    Err(RegistryError::new(ErrorCode::Unsupported, "not yet"))
}
pub async fn cancel(
    _state: AppState,
    _name: RepositoryName,
    _id: Uuid,
) -> RegistryResult<Response> {
    Err(RegistryError::new(ErrorCode::Unsupported, "not yet"))
}
