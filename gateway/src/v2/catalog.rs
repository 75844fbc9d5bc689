//! `GET /v2/_catalog?n=&last=`: repositories that hold at least one manifest.
//!
//! Paginated exactly like tag listing (see [`super::tags::Page`]). Repositories that
//! only ever received blobs, or whose manifests were all deleted, are left out: there
//! is nothing in them to pull.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use berth_content::metadata::repositories;
use serde_json::json;
use tracing::instrument;

use super::tags::{paged_response, Page};
use crate::error::RegistryResult;
use crate::state::AppState;

pub async fn list(State(state): State<AppState>, req: Request) -> Response {
    match catalog(state, req).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

#[instrument(skip_all)]
async fn catalog(state: AppState, req: Request) -> RegistryResult<Response> {
    let page = Page::parse(req.uri().query(), state.config.limits.page_max_entries)?;
    let entries = if page.n == 0 {
        Vec::new()
    } else {
        let mut conn = state.db.acquire().await?;
        repositories::list_with_content(&mut conn, page.last.as_deref(), page.fetch_limit()).await?
    };
    let (entries, next) = page.take_page(entries);
    Ok(paged_response(
        json!({"repositories": entries}),
        &page,
        "/v2/_catalog",
        next,
    ))
}
