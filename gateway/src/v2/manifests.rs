//! Manifest pull, push and delete (`/v2/<name>/manifests/<reference>`).
//!
//! Manifests are stored and served byte for byte: the digest a client computes over what
//! it pushed is the digest it pulls. A push is accepted only when everything the
//! manifest references is already in the repository, and is written in one transaction
//! with its references and tag, so a crash never leaves a half-pushed manifest.
//!
//! Pulls serve the stored media type whatever the client's `Accept` says: Berth never
//! converts manifests, and every client that can push a type sends it in `Accept`.

use std::error::Error as _;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_content::manifest::{self, ManifestError};
use berth_content::metadata::manifests::{
    self as stored, DeleteOutcome, NewManifest, StoreOutcome,
};
use berth_content::metadata::{repositories, tags};
use berth_content::{Digest, DigestHasher, Reference, RepositoryName};
use bytes::Bytes;
use serde_json::json;
use tracing::instrument;

use berth_events::{ArtifactRef, Event};

use crate::error::{ErrorCode, RegistryError, RegistryResult};
use crate::events;
use crate::state::AppState;

/// `GET` and `HEAD`: the exact stored bytes with their media type and digest.
#[instrument(skip_all, fields(repository = %name, reference = %reference))]
pub async fn get(
    state: AppState,
    name: RepositoryName,
    reference: Reference,
    req: Request,
) -> RegistryResult<Response> {
    let with_content = req.method() != Method::HEAD;
    let mut conn = state.db.acquire().await?;
    let found = match &reference {
        Reference::Tag(tag) => stored::find_by_tag(&mut conn, &name, tag, with_content).await?,
        Reference::Digest(digest) => {
            stored::find_by_digest(&mut conn, &name, digest, with_content).await?
        }
    };
    drop(conn);
    let Some(found) = found else {
        return Err(manifest_unknown(&name, &reference));
    };
    let mut response = if with_content {
        Body::from(found.content).into_response()
    } else {
        Body::empty().into_response()
    };
    let headers = response.headers_mut();
    // Stored values came through our own parsing, but a header must never panic: an
    // unrepresentable one is left out rather than trusted.
    if let Ok(v) = HeaderValue::from_str(&found.media_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&found.digest) {
        headers.insert("docker-content-digest", v);
    }
    // Set explicitly so that HEAD, which has no body, reports the manifest's size.
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(found.size));
    Ok(response)
}

/// `PUT`: verifies, stores and (for a tag reference) tags a manifest.
#[instrument(skip_all, fields(repository = %name, reference = %reference, digest))]
pub async fn put(
    state: AppState,
    name: RepositoryName,
    reference: Reference,
    actor: &str,
    req: Request,
) -> RegistryResult<Response> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let limit = state.config.limits.manifest_max_bytes;
    let bytes = read_limited(req, limit).await?;

    let parsed = manifest::parse(&bytes, content_type.as_deref()).map_err(manifest_invalid)?;

    // The digest is of the exact bytes, in the algorithm the client named if it pushed
    // by digest (so sha512 pushes work), sha256 otherwise.
    let digest = match &reference {
        Reference::Digest(expected) => {
            let mut hasher = DigestHasher::new(expected.algorithm());
            hasher.update(&bytes);
            let actual = hasher.finish();
            if &actual != expected {
                return Err(RegistryError::new(
                    ErrorCode::DigestInvalid,
                    format!("the manifest's digest is {actual}, not {expected} as the URL says"),
                )
                .with_detail(json!({"expected": expected, "actual": actual})));
            }
            actual
        }
        Reference::Tag(_) => Digest::sha256_of(&bytes),
    };
    tracing::Span::current().record("digest", tracing::field::display(&digest));

    let new = NewManifest {
        digest: &digest,
        media_type: &parsed.media_type,
        artifact_type: parsed.artifact_type.as_deref(),
        subject: parsed.subject.as_ref().map(|s| &s.digest),
        annotations: parsed.annotations.clone().map(serde_json::Value::Object),
        content: &bytes,
        blobs: parsed.blobs.iter().map(|d| d.digest.to_string()).collect(),
        children: parsed
            .children
            .iter()
            .map(|d| d.digest.to_string())
            .collect(),
    };

    let mut tx = state.db.begin().await?;
    // Unlocked: a lock on the repository row would serialise (and, against the
    // foreign-key checks of concurrent pushes, deadlock) every push to it.
    let repository_id = repositories::find_or_create(&mut tx, &name).await?;
    let manifest_id = match stored::store(&mut tx, repository_id, &new).await? {
        StoreOutcome::Stored(id) => id,
        // Dropping `tx` rolls back: nothing of this push is visible.
        StoreOutcome::MissingBlob(missing) => {
            return Err(RegistryError::new(
                ErrorCode::ManifestBlobUnknown,
                format!("blob {missing} referenced by the manifest is not in repository {name}"),
            )
            .with_detail(json!({"digest": missing})));
        }
        StoreOutcome::MissingChild(missing) => {
            return Err(RegistryError::new(
                ErrorCode::ManifestBlobUnknown,
                format!(
                    "manifest {missing} referenced by the index is not in repository {name}; \
                     push it first"
                ),
            )
            .with_detail(json!({"digest": missing})));
        }
    };
    let artifact = ArtifactRef {
        project: name.project().to_owned(),
        repository: name.to_string(),
        digest: digest.to_string(),
    };
    let tag = match &reference {
        Reference::Tag(tag) => Some(tag),
        Reference::Digest(_) => None,
    };
    events::emit(
        &mut tx,
        &Event::ArtifactPushed {
            artifact: artifact.clone(),
            media_type: parsed.media_type.clone(),
            tag: tag.map(|t| t.to_string()),
            actor: actor.to_owned(),
        },
    )
    .await?;
    if let Some(tag) = tag {
        let previous = tags::set(&mut tx, repository_id, tag, manifest_id).await?;
        if previous.as_deref() != Some(artifact.digest.as_str()) {
            let moved = Event::TagMoved {
                artifact,
                tag: tag.to_string(),
                previous,
                actor: actor.to_owned(),
            };
            events::emit(&mut tx, &moved).await?;
        }
    }
    tx.commit().await?;
    tracing::info!(media_type = %parsed.media_type, "manifest pushed");

    let mut response = StatusCode::CREATED.into_response();
    let headers = response.headers_mut();
    let location = format!("/v2/{name}/manifests/{digest}");
    // Names and digests are validated ASCII, so these cannot fail; still no unwrap.
    if let Ok(v) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&digest.to_string()) {
        headers.insert("docker-content-digest", v);
    }
    if let Some(subject) = &parsed.subject {
        if let Ok(v) = HeaderValue::from_str(&subject.digest.to_string()) {
            headers.insert("oci-subject", v);
        }
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    Ok(response)
}

/// `DELETE`: by digest removes the manifest (and its tags); by tag removes only the tag.
#[instrument(skip_all, fields(repository = %name, reference = %reference))]
pub async fn delete(
    state: AppState,
    name: RepositoryName,
    reference: Reference,
    actor: &str,
) -> RegistryResult<Response> {
    match &reference {
        Reference::Tag(tag) => {
            if !state.config.delete.tags {
                return Err(RegistryError::new(
                    ErrorCode::Unsupported,
                    "deleting tags is disabled on this registry",
                ));
            }
            let mut tx = state.db.begin().await?;
            let Some(digest) = tags::delete(&mut tx, &name, tag).await? else {
                return Err(manifest_unknown(&name, &reference));
            };
            let deleted = Event::TagDeleted {
                artifact: ArtifactRef {
                    project: name.project().to_owned(),
                    repository: name.to_string(),
                    digest,
                },
                tag: tag.to_string(),
                actor: actor.to_owned(),
            };
            events::emit(&mut tx, &deleted).await?;
            tx.commit().await?;
        }
        Reference::Digest(digest) => {
            if !state.config.delete.manifests {
                return Err(RegistryError::new(
                    ErrorCode::Unsupported,
                    "deleting manifests is disabled on this registry",
                ));
            }
            let mut tx = state.db.begin().await?;
            match stored::delete(&mut tx, &name, digest).await? {
                DeleteOutcome::Deleted => {
                    let deleted = Event::ArtifactDeleted {
                        artifact: ArtifactRef {
                            project: name.project().to_owned(),
                            repository: name.to_string(),
                            digest: digest.to_string(),
                        },
                        actor: actor.to_owned(),
                    };
                    events::emit(&mut tx, &deleted).await?;
                    tx.commit().await?
                }
                DeleteOutcome::NotFound => return Err(manifest_unknown(&name, &reference)),
                DeleteOutcome::ReferencedBy(parents) => {
                    return Err(RegistryError::new(
                        ErrorCode::Denied,
                        format!(
                            "manifest {digest} is referenced by index {}; delete the index first",
                            parents.join(", ")
                        ),
                    )
                    .with_status(StatusCode::CONFLICT)
                    .with_detail(json!({"referencedBy": parents})));
                }
            }
        }
    }
    tracing::info!("deleted");
    Ok(StatusCode::ACCEPTED.into_response())
}

fn manifest_unknown(name: &RepositoryName, reference: &Reference) -> RegistryError {
    RegistryError::new(
        ErrorCode::ManifestUnknown,
        format!("manifest {reference} is unknown to repository {name}"),
    )
    .with_detail(json!({"reference": reference.to_string()}))
}

fn manifest_invalid(e: ManifestError) -> RegistryError {
    RegistryError::new(ErrorCode::ManifestInvalid, e.to_string())
}

/// Reads the whole body but never more than `limit` bytes (plus one, to know it was
/// exceeded). `Content-Length` is used only to refuse early; the body itself is what is
/// bounded, since the header may be absent (chunked) or wrong.
async fn read_limited(req: Request, limit: usize) -> RegistryResult<Bytes> {
    let too_large = || {
        RegistryError::new(
            ErrorCode::ManifestInvalid,
            format!("the manifest is larger than this registry's limit of {limit} bytes"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        .with_detail(json!({"limit": limit}))
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match axum::body::to_bytes(req.into_body(), limit).await {
        Ok(bytes) => Ok(bytes),
        Err(e) => {
            let mut source = e.source();
            while let Some(cause) = source {
                if cause.is::<http_body_util::LengthLimitError>() {
                    return Err(too_large());
                }
                source = cause.source();
            }
            tracing::info!(error = %e, "manifest body failed mid-stream");
            Err(RegistryError::new(
                ErrorCode::ManifestInvalid,
                "the request body ended before it was complete",
            ))
        }
    }
}
