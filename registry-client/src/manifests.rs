//! Manifests: HEAD, GET (digest verified, bytes preserved), PUT and DELETE.

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, Response, StatusCode};

use crate::client::{expect_status, read_limited, Request, RequestBody};
use crate::names::{check_digest, check_reference, check_repository, digest_of, Algorithm};
use crate::types::{media_types, Manifest, ManifestInfo, MANIFEST_ACCEPT};
use crate::{ClientError, RegistryClient};

/// Largest manifest accepted (distribution's own limit is 4 MiB).
pub(crate) const MAX_MANIFEST: usize = 4 * 1024 * 1024;

/// Scope for reading a repository.
pub(crate) fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

/// Scope for writing to a repository.
pub(crate) fn push_scope(repository: &str) -> String {
    format!("repository:{repository}:pull,push")
}

impl RegistryClient {
    /// `HEAD` a manifest: `None` when the registry does not have it. When the registry
    /// leaves out the digest or the size the manifest is fetched to compute them.
    pub async fn head_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<ManifestInfo>, ClientError> {
        let url = manifest_url(self, repository, reference)?;
        let mut request = Request::new(Method::HEAD, url, vec![pull_scope(repository)]);
        request
            .headers
            .insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        let (digest, size, media_type) = {
            // Released before the fallback GET below: a gate allowing one request at a
            // time per caller would otherwise wait on itself.
            let (response, _permit) = self.send(request).await?;
            if response.status() == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            let response = expect_status(response, &[StatusCode::OK]).await?;
            let headers = response.headers();
            let digest = header_str(headers, "docker-content-digest").map(str::to_owned);
            let size = headers
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            (digest, size, content_type(headers))
        };
        match (digest, size, media_type) {
            (Some(digest), Some(size), Some(media_type)) => {
                check_digest(&digest).map_err(|_| {
                    ClientError::Protocol(format!("malformed Docker-Content-Digest {digest:?}"))
                })?;
                if is_digest(reference) && digest != reference {
                    return Err(ClientError::Protocol(format!(
                        "asked for manifest {reference}, registry says {digest}"
                    )));
                }
                Ok(Some(ManifestInfo {
                    digest,
                    media_type,
                    size,
                }))
            }
            _ => match self.get_manifest(repository, reference).await {
                Ok(manifest) => Ok(Some(ManifestInfo {
                    size: manifest.bytes.len() as u64,
                    digest: manifest.digest,
                    media_type: manifest.media_type,
                })),
                Err(ClientError::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    /// `GET` a manifest by tag or digest. The bytes are kept exactly as served; the
    /// digest is computed from them and must match the reference (when it is a digest)
    /// and the registry's `Docker-Content-Digest` (when given).
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Manifest, ClientError> {
        let url = manifest_url(self, repository, reference)?;
        let reference_algorithm = check_reference(reference)?;
        let mut request = Request::new(Method::GET, url, vec![pull_scope(repository)]);
        request
            .headers
            .insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        let (response, _permit) = self.send(request).await?;
        let response = expect_status(response, &[StatusCode::OK]).await?;
        let header_digest =
            header_str(response.headers(), "docker-content-digest").map(str::to_owned);
        let served_type = content_type(response.headers());
        let bytes = read_limited(response, MAX_MANIFEST).await?;

        let algorithm = reference_algorithm.unwrap_or(Algorithm::Sha256);
        let digest = digest_of(algorithm, &bytes);
        if reference_algorithm.is_some() && digest != reference {
            return Err(ClientError::Protocol(format!(
                "manifest content has digest {digest}, not the requested {reference}"
            )));
        }
        if let Some(header) = header_digest {
            verify_header_digest(&header, &bytes)?;
        }
        let media_type = manifest_media_type(served_type, &bytes)?;
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// `PUT` a manifest under a tag or its digest; returns its sha256 digest (or the
    /// reference's algorithm when the reference is a digest), checked against the
    /// registry's `Docker-Content-Digest`.
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<String, ClientError> {
        let url = manifest_url(self, repository, reference)?;
        let reference_algorithm = check_reference(reference)?;
        let digest = digest_of(reference_algorithm.unwrap_or(Algorithm::Sha256), &bytes);
        if reference_algorithm.is_some() && digest != reference {
            return Err(ClientError::Invalid(format!(
                "manifest content has digest {digest}, not {reference}"
            )));
        }
        let content_type = HeaderValue::from_str(media_type)
            .map_err(|_| ClientError::Invalid(format!("invalid media type {media_type:?}")))?;
        let mut request = Request::new(Method::PUT, url, vec![push_scope(repository)]);
        request.headers.insert(CONTENT_TYPE, content_type);
        request.body = RequestBody::Bytes(bytes.clone());
        let (response, _permit) = self.send(request).await?;
        let response = expect_status(
            response,
            &[
                StatusCode::CREATED,
                StatusCode::OK,
                StatusCode::ACCEPTED,
                StatusCode::NO_CONTENT,
            ],
        )
        .await?;
        if let Some(header) = header_str(response.headers(), "docker-content-digest") {
            verify_header_digest(header, &bytes)?;
        }
        Ok(digest)
    }

    /// `DELETE` a manifest by digest. `NotFound` when the registry does not have it;
    /// registries with deletion disabled answer `Invalid` (405 UNSUPPORTED).
    pub async fn delete_manifest(&self, repository: &str, digest: &str) -> Result<(), ClientError> {
        check_digest(digest)?;
        let url = manifest_url(self, repository, digest)?;
        let request = Request::new(
            Method::DELETE,
            url,
            vec![format!("repository:{repository}:delete")],
        );
        let (response, _permit) = self.send(request).await?;
        expect_status(
            response,
            &[StatusCode::ACCEPTED, StatusCode::OK, StatusCode::NO_CONTENT],
        )
        .await?;
        Ok(())
    }
}

fn is_digest(reference: &str) -> bool {
    reference.contains(':')
}

fn manifest_url(
    client: &RegistryClient,
    repository: &str,
    reference: &str,
) -> Result<url::Url, ClientError> {
    check_repository(repository)?;
    check_reference(reference)?;
    client.url(&format!("v2/{repository}/manifests/{reference}"))
}

pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// `Content-Type` without parameters.
fn content_type(headers: &HeaderMap) -> Option<String> {
    let value = header_str(headers, CONTENT_TYPE.as_str())?;
    let media_type = value.split(';').next().unwrap_or("").trim();
    (!media_type.is_empty()).then(|| media_type.to_string())
}

/// The registry's `Docker-Content-Digest` must be the digest of what it sent (or what
/// we sent it), in whatever algorithm it names.
fn verify_header_digest(header: &str, bytes: &[u8]) -> Result<(), ClientError> {
    let algorithm = check_digest(header).map_err(|_| {
        ClientError::Protocol(format!("malformed Docker-Content-Digest {header:?}"))
    })?;
    let actual = digest_of(algorithm, bytes);
    if actual != header {
        return Err(ClientError::Protocol(format!(
            "registry says the manifest digest is {header}, the content's is {actual}"
        )));
    }
    Ok(())
}

/// The manifest's media type: as served when that is a specific (vendor) type, else
/// the manifest's own `mediaType` field, else inferred from its shape.
/// Fails when the bytes are not a manifest at all.
fn manifest_media_type(served: Option<String>, bytes: &[u8]) -> Result<String, ClientError> {
    // Whatever the type, the bytes must be a manifest: an HTML error page served with
    // 200 by a misconfigured proxy must not be replicated as one.
    let content = crate::types::ManifestContent::parse(bytes)?;
    // Registries serve the type the manifest was pushed with; only a generic one
    // (`application/json`, `text/plain`, ...) says nothing.
    if let Some(served) = served.filter(|s| s.starts_with("application/vnd.")) {
        return Ok(served);
    }
    Ok(content.media_type.unwrap_or_else(|| {
        if content.manifests.is_empty() {
            media_types::OCI_MANIFEST.to_string()
        } else {
            media_types::OCI_INDEX.to_string()
        }
    }))
}

/// Reads a small JSON response into `T`.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    response: Response,
    limit: usize,
    what: &str,
) -> Result<T, ClientError> {
    let body = read_limited(response, limit).await?;
    serde_json::from_slice(&body)
        .map_err(|e| ClientError::Protocol(format!("{what} is not what the API says: {e}")))
}
