//! The referrers API (`GET /v2/<name>/referrers/<digest>[?artifactType=]`): manifests
//! whose `subject` is the given digest, as an OCI image index.
//!
//! The answer is 200 even when the subject itself is not in the repository: a signature
//! or SBOM may be pushed before the image it describes, and clients probe this endpoint
//! to learn whether the registry supports it at all.

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use berth_content::manifest::OCI_IMAGE_INDEX;
use berth_content::metadata::manifests::{self as stored, Referrer};
use berth_content::{Digest, RepositoryName};
use serde::Serialize;
use tracing::instrument;

use crate::error::RegistryResult;
use crate::state::AppState;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReferrersIndex {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<ReferrerDescriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReferrerDescriptor {
    media_type: String,
    digest: String,
    size: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<serde_json::Value>,
}

impl From<Referrer> for ReferrerDescriptor {
    fn from(r: Referrer) -> Self {
        ReferrerDescriptor {
            media_type: r.media_type,
            digest: r.digest,
            size: r.size,
            artifact_type: r.artifact_type,
            // A stored JSON null (never written by us, but possible) is no annotations.
            annotations: r.annotations.filter(|a| !a.is_null()),
        }
    }
}

#[instrument(skip_all, fields(repository = %name, subject = %digest))]
pub async fn list(
    state: AppState,
    name: RepositoryName,
    digest: Digest,
    req: Request,
) -> RegistryResult<Response> {
    // The spec names one `artifactType`; repeating it is read as "any of these".
    let artifact_types: Vec<String> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .filter(|(key, value)| key == "artifactType" && !value.is_empty())
            .map(|(_, value)| value.into_owned())
            .collect();
    let mut conn = state.db.acquire().await?;
    let referrers = stored::referrers(&mut conn, &name, &digest, &artifact_types).await?;
    drop(conn);
    let index = ReferrersIndex {
        schema_version: 2,
        media_type: OCI_IMAGE_INDEX,
        manifests: referrers
            .into_iter()
            .map(ReferrerDescriptor::from)
            .collect(),
    };
    let mut response = axum::Json(index).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(OCI_IMAGE_INDEX),
    );
    if !artifact_types.is_empty() {
        headers.insert(
            "oci-filters-applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(response)
}
