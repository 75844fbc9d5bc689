//! What the client hands back: manifest metadata, manifests with their exact bytes,
//! and OCI descriptors (index children, layers, referrers).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::ClientError;

/// Media types the client asks for and knows how to read.
pub mod media_types {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
}

/// The `Accept` header for manifest requests: every manifest type we can replicate.
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// Whether a manifest media type is an index (its children are manifests).
pub fn is_index(media_type: &str) -> bool {
    media_type == media_types::OCI_INDEX || media_type == media_types::DOCKER_MANIFEST_LIST
}

/// What `HEAD` on a manifest says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestInfo {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

/// A fetched manifest: the exact bytes (so digests match wherever they are pushed),
/// the media type the registry served it as, and its verified digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: String,
}

impl Manifest {
    /// The descriptors this manifest points at.
    pub fn content(&self) -> Result<ManifestContent, ClientError> {
        ManifestContent::parse(&self.bytes)
    }
}

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

/// The platform of an index entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

/// The references inside a manifest: an image manifest has a config and layers, an
/// index has child manifests; either may have a subject (it is then a referrer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestContent {
    /// The manifest's own `mediaType` field, when it has one.
    pub media_type: Option<String>,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    subject: Option<Descriptor>,
}

impl ManifestContent {
    /// Parses an image manifest or index (OCI or Docker schema 2).
    pub fn parse(bytes: &[u8]) -> Result<Self, ClientError> {
        let raw: RawManifest = serde_json::from_slice(bytes)
            .map_err(|e| ClientError::Protocol(format!("manifest is not valid JSON: {e}")))?;
        if raw.schema_version != Some(2) {
            return Err(ClientError::Protocol(format!(
                "unsupported manifest schemaVersion {:?}",
                raw.schema_version
            )));
        }
        Ok(ManifestContent {
            media_type: raw.media_type,
            config: raw.config,
            layers: raw.layers.unwrap_or_default(),
            manifests: raw.manifests.unwrap_or_default(),
            subject: raw.subject,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_image_and_index() {
        let image = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:aa","size":2},
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:bb","size":3}],
            "subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:cc","size":4}}"#;
        let content = ManifestContent::parse(image).unwrap();
        assert_eq!(content.config.unwrap().size, 2);
        assert_eq!(content.layers.len(), 1);
        assert_eq!(content.subject.unwrap().digest, "sha256:cc");

        let index = br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "digest":"sha256:dd","size":5,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}}]}"#;
        let content = ManifestContent::parse(index).unwrap();
        assert_eq!(
            content.manifests[0]
                .platform
                .as_ref()
                .unwrap()
                .variant
                .as_deref(),
            Some("v8")
        );
        assert!(is_index(media_types::DOCKER_MANIFEST_LIST));
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        for bad in [
            &b"nope"[..],
            b"{}",
            br#"{"schemaVersion":1}"#,
            br#"{"schemaVersion":2,"layers":3}"#,
        ] {
            assert!(matches!(
                ManifestContent::parse(bad),
                Err(ClientError::Protocol(_))
            ));
        }
    }
}
