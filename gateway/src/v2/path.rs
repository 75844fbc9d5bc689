//! Parses `/v2/<name…>/<operation>` once, for every registry route.
//!
//! A repository name may itself contain `blobs` or `manifests` as components, so the
//! operation is recognised from the end of the path, and only what precedes it is the
//! name.

use berth_content::{Digest, Reference, RepositoryName};
use uuid::Uuid;

use crate::error::{ErrorCode, RegistryError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryPath {
    /// `/v2/<name>/manifests/<reference>`
    Manifest(RepositoryName, Reference),
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepositoryName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    NewUpload(RepositoryName),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(RepositoryName, Uuid),
    /// `/v2/<name>/tags/list`
    Tags(RepositoryName),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepositoryName, Digest),
}

impl RegistryPath {
    /// Parses the part of the path after `/v2/`. `Ok(None)` means no registry route
    /// matches (404); `Err` means the route matched but a component is invalid.
    pub fn parse(rest: &str) -> Result<Option<RegistryPath>, RegistryError> {
        let segments: Vec<&str> = rest.split('/').collect();
        let n = segments.len();
        let name_of = |len: usize| -> Result<RepositoryName, RegistryError> {
            let name = segments[..len].join("/");
            RepositoryName::parse(&name).map_err(|e| {
                RegistryError::new(
                    ErrorCode::NameInvalid,
                    format!("invalid repository name: {e}"),
                )
            })
        };
        if n >= 3 && segments[n - 3] == "blobs" && segments[n - 2] == "uploads" {
            let name = name_of(n - 3)?;
            let id = segments[n - 1];
            if id.is_empty() {
                return Ok(Some(RegistryPath::NewUpload(name)));
            }
            let id = Uuid::parse_str(id).map_err(|_| {
                RegistryError::new(
                    ErrorCode::BlobUploadUnknown,
                    format!("upload {id:?} is unknown"),
                )
            })?;
            return Ok(Some(RegistryPath::Upload(name, id)));
        }
        if n >= 2 && segments[n - 2] == "blobs" && segments[n - 1] == "uploads" {
            return Ok(Some(RegistryPath::NewUpload(name_of(n - 2)?)));
        }
        if n >= 3 && segments[n - 2] == "tags" && segments[n - 1] == "list" {
            return Ok(Some(RegistryPath::Tags(name_of(n - 2)?)));
        }
        if n < 3 {
            return Ok(None);
        }
        let last = segments[n - 1];
        match segments[n - 2] {
            "manifests" => {
                let name = name_of(n - 2)?;
                let reference = Reference::parse(last).map_err(|e| {
                    RegistryError::new(
                        ErrorCode::ManifestInvalid,
                        format!("invalid reference: {e}"),
                    )
                    .with_status(axum::http::StatusCode::BAD_REQUEST)
                })?;
                Ok(Some(RegistryPath::Manifest(name, reference)))
            }
            "blobs" => Ok(Some(RegistryPath::Blob(
                name_of(n - 2)?,
                parse_digest(last)?,
            ))),
            "referrers" => Ok(Some(RegistryPath::Referrers(
                name_of(n - 2)?,
                parse_digest(last)?,
            ))),
            _ => Ok(None),
        }
    }
}

pub fn parse_digest(input: &str) -> Result<Digest, RegistryError> {
    Digest::parse(input)
        .map_err(|e| RegistryError::new(ErrorCode::DigestInvalid, format!("invalid digest: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn parse(p: &str) -> Option<RegistryPath> {
        RegistryPath::parse(p).unwrap()
    }

    fn code(p: &str) -> ErrorCode {
        RegistryPath::parse(p).unwrap_err().code()
    }

    #[test]
    fn recognises_operations_from_the_end() {
        let name = |s: &str| RepositoryName::parse(s).unwrap();
        assert_eq!(
            parse("a/blobs/b/manifests/latest"),
            Some(RegistryPath::Manifest(
                name("a/blobs/b"),
                Reference::parse("latest").unwrap()
            ))
        );
        assert_eq!(
            parse(&format!("x/blobs/{D}")),
            Some(RegistryPath::Blob(name("x"), Digest::parse(D).unwrap()))
        );
        assert_eq!(
            parse("x/y/blobs/uploads/"),
            Some(RegistryPath::NewUpload(name("x/y")))
        );
        assert_eq!(
            parse("x/y/blobs/uploads"),
            Some(RegistryPath::NewUpload(name("x/y")))
        );
        let id = Uuid::new_v4();
        assert_eq!(
            parse(&format!("x/blobs/uploads/{id}")),
            Some(RegistryPath::Upload(name("x"), id))
        );
        assert_eq!(
            parse("tags/tags/list"),
            Some(RegistryPath::Tags(name("tags")))
        );
        assert_eq!(
            parse(&format!("r/referrers/{D}")),
            Some(RegistryPath::Referrers(
                name("r"),
                Digest::parse(D).unwrap()
            ))
        );
        assert_eq!(parse("x/unknown/op"), None);
        assert_eq!(parse("x"), None);
    }

    #[test]
    fn invalid_components_get_their_codes() {
        assert_eq!(code("UPPER/manifests/latest"), ErrorCode::NameInvalid);
        assert_eq!(code("a//b/manifests/latest"), ErrorCode::NameInvalid);
        assert_eq!(code("a/../b/manifests/latest"), ErrorCode::NameInvalid);
        assert_eq!(code("/manifests/latest"), ErrorCode::NameInvalid);
        assert_eq!(code("a/manifests/-bad"), ErrorCode::ManifestInvalid);
        assert_eq!(code("a/blobs/sha256:abc"), ErrorCode::DigestInvalid);
        assert_eq!(
            code("a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e"),
            ErrorCode::DigestInvalid
        );
        assert_eq!(
            code("a/blobs/uploads/not-a-uuid"),
            ErrorCode::BlobUploadUnknown
        );
    }
}
