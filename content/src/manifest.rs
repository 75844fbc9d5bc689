//! Manifest parsing: which media types Berth accepts and what a manifest references.
//!
//! The registry stores manifests byte for byte and never re-serialises them; this module
//! only reads them to learn what they point at (blobs that must exist, child manifests
//! of an index, a referrers `subject`) and to refuse what is not a manifest at all.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::digest::Digest;

pub const OCI_IMAGE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_IMAGE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// The media types a manifest PUT may carry; also what GET may be asked for.
pub const SUPPORTED_MEDIA_TYPES: [&str; 4] = [
    OCI_IMAGE_MANIFEST,
    OCI_IMAGE_INDEX,
    DOCKER_MANIFEST_V2,
    DOCKER_MANIFEST_LIST,
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("manifest media type {0:?} is not supported; use an OCI image manifest or index, or a Docker schema 2 manifest or manifest list")]
    UnsupportedMediaType(String),
    #[error("manifest mediaType {body:?} disagrees with Content-Type {header:?}")]
    MediaTypeMismatch { header: String, body: String },
    #[error("manifest is invalid: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

impl Descriptor {
    /// Foreign (non-distributable) layers live elsewhere, named by their `urls`;
    /// registries do not hold them, so they are not required to exist.
    fn is_foreign(&self) -> bool {
        !self.urls.is_empty()
            && (self.media_type.contains("foreign") || self.media_type.contains("nondistributable"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// An image or artifact manifest: a config and layers (blobs).
    Image,
    /// An index or manifest list: child manifests.
    Index,
}

/// What the registry needs to know about a manifest it is about to store.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedManifest {
    pub media_type: String,
    pub kind: ManifestKind,
    /// Blobs that must exist in the repository: config and distributable layers.
    pub blobs: Vec<Descriptor>,
    /// Manifests an index points at; they must exist in the repository.
    pub children: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    /// `artifactType`, or else the config's media type, as the referrers API reports it.
    pub artifact_type: Option<String>,
    pub annotations: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<Value>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<Map<String, Value>>,
}

/// Content types that say nothing about which manifest this is.
fn is_generic_content_type(content_type: &str) -> bool {
    matches!(
        content_type,
        "" | "application/json" | "application/octet-stream"
    )
}

/// Strips parameters such as `; charset=utf-8` from a Content-Type value.
pub fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// Parses manifest bytes as received with the request's `Content-Type`.
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<ParsedManifest, ManifestError> {
    let header = content_type.map(essence).unwrap_or("");
    if DOCKER_SCHEMA1.contains(&header) {
        return Err(ManifestError::UnsupportedMediaType(header.to_owned()));
    }
    let raw: RawManifest =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::InvalidJson(e.to_string()))?;

    match raw.schema_version.as_ref().and_then(Value::as_i64) {
        Some(2) => {}
        Some(1) => {
            return Err(ManifestError::UnsupportedMediaType(
                DOCKER_SCHEMA1[1].to_owned(),
            ))
        }
        _ => return Err(ManifestError::Invalid("schemaVersion must be 2".to_owned())),
    }

    let media_type = match (&raw.media_type, is_generic_content_type(header)) {
        (Some(body), false) if body != header => {
            return Err(ManifestError::MediaTypeMismatch {
                header: header.to_owned(),
                body: body.clone(),
            })
        }
        (Some(body), _) => body.clone(),
        (None, false) => header.to_owned(),
        // Neither says: OCI lets image manifests and indexes omit mediaType, so tell them
        // apart by shape.
        (None, true) if raw.manifests.is_some() => OCI_IMAGE_INDEX.to_owned(),
        (None, true) => OCI_IMAGE_MANIFEST.to_owned(),
    };

    let kind = match media_type.as_str() {
        OCI_IMAGE_MANIFEST | DOCKER_MANIFEST_V2 => ManifestKind::Image,
        OCI_IMAGE_INDEX | DOCKER_MANIFEST_LIST => ManifestKind::Index,
        other => return Err(ManifestError::UnsupportedMediaType(other.to_owned())),
    };

    let check_sizes = |descriptors: &[Descriptor]| -> Result<(), ManifestError> {
        match descriptors.iter().find(|d| d.size < 0) {
            Some(d) => Err(ManifestError::Invalid(format!(
                "descriptor {} has a negative size",
                d.digest
            ))),
            None => Ok(()),
        }
    };

    let (blobs, children, artifact_type) = match kind {
        ManifestKind::Image => {
            if raw.manifests.is_some() {
                return Err(ManifestError::Invalid(
                    "an image manifest must not have \"manifests\"".to_owned(),
                ));
            }
            let config = raw
                .config
                .ok_or_else(|| ManifestError::Invalid("missing \"config\"".to_owned()))?;
            let layers = raw.layers.ok_or_else(|| {
                ManifestError::Invalid("missing \"layers\" (use [] for none)".to_owned())
            })?;
            let artifact_type = raw
                .artifact_type
                .clone()
                .or_else(|| Some(config.media_type.clone()));
            let mut blobs = vec![config];
            blobs.extend(layers.into_iter().filter(|l| !l.is_foreign()));
            (blobs, Vec::new(), artifact_type)
        }
        ManifestKind::Index => {
            if raw.config.is_some() || raw.layers.is_some() {
                return Err(ManifestError::Invalid(
                    "an index must not have \"config\" or \"layers\"".to_owned(),
                ));
            }
            let children = raw
                .manifests
                .ok_or_else(|| ManifestError::Invalid("missing \"manifests\"".to_owned()))?;
            (Vec::new(), children, raw.artifact_type.clone())
        }
    };
    check_sizes(&blobs)?;
    check_sizes(&children)?;
    if let Some(subject) = &raw.subject {
        check_sizes(std::slice::from_ref(subject))?;
    }

    Ok(ParsedManifest {
        media_type,
        kind,
        blobs,
        children,
        subject: raw.subject,
        artifact_type,
        annotations: raw.annotations,
    })
}

/// Harbor's artifact type from the manifest and config media types.
pub fn artifact_kind(manifest_media_type: &str, config_media_type: Option<&str>) -> &'static str {
    match (manifest_media_type, config_media_type) {
        (OCI_IMAGE_INDEX | DOCKER_MANIFEST_LIST, _) => "IMAGE",
        (
            OCI_IMAGE_MANIFEST | DOCKER_MANIFEST_V2,
            Some(
                "application/vnd.oci.image.config.v1+json"
                | "application/vnd.docker.container.image.v1+json",
            ),
        ) => "IMAGE",
        (_, Some("application/vnd.cncf.helm.config.v1+json")) => "CHART",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_media_types() {
        let image = Some("application/vnd.oci.image.config.v1+json");
        assert_eq!(artifact_kind(OCI_IMAGE_MANIFEST, image), "IMAGE");
        assert_eq!(artifact_kind(OCI_IMAGE_INDEX, None), "IMAGE");
        assert_eq!(
            artifact_kind(
                OCI_IMAGE_MANIFEST,
                Some("application/vnd.cncf.helm.config.v1+json")
            ),
            "CHART"
        );
        assert_eq!(
            artifact_kind(
                OCI_IMAGE_MANIFEST,
                Some("application/vnd.oci.empty.v1+json")
            ),
            "UNKNOWN"
        );
    }

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn image(media_type: Option<&str>) -> Vec<u8> {
        let mut v = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D1, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D2, "size": 10}],
        });
        if let Some(mt) = media_type {
            v["mediaType"] = mt.into();
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn image_manifest_references_config_and_layers() {
        let m = parse(&image(Some(OCI_IMAGE_MANIFEST)), Some(OCI_IMAGE_MANIFEST)).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.blobs.len(), 2);
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn media_type_from_header_body_or_shape() {
        assert_eq!(
            parse(&image(None), Some(DOCKER_MANIFEST_V2))
                .unwrap()
                .media_type,
            DOCKER_MANIFEST_V2
        );
        assert_eq!(
            parse(&image(None), None).unwrap().media_type,
            OCI_IMAGE_MANIFEST
        );
        assert_eq!(
            parse(
                &image(Some(OCI_IMAGE_MANIFEST)),
                Some("application/json; charset=utf-8")
            )
            .unwrap()
            .media_type,
            OCI_IMAGE_MANIFEST
        );
    }

    #[test]
    fn mismatched_media_type_is_refused() {
        assert!(matches!(
            parse(&image(Some(OCI_IMAGE_MANIFEST)), Some(DOCKER_MANIFEST_V2)),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
    }

    #[test]
    fn index_references_children_and_subject() {
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_IMAGE_INDEX,
            "artifactType": "application/example",
            "manifests": [{"mediaType": OCI_IMAGE_MANIFEST, "digest": D1, "size": 100}],
            "subject": {"mediaType": OCI_IMAGE_MANIFEST, "digest": D2, "size": 100},
        });
        let m = parse(&serde_json::to_vec(&body).unwrap(), Some(OCI_IMAGE_INDEX)).unwrap();
        assert_eq!(m.kind, ManifestKind::Index);
        assert_eq!(m.children.len(), 1);
        assert_eq!(m.subject.unwrap().digest.to_string(), D2);
        assert_eq!(m.artifact_type.as_deref(), Some("application/example"));
    }

    #[test]
    fn bad_manifests_are_refused() {
        assert!(matches!(
            parse(b"{not json", None),
            Err(ManifestError::InvalidJson(_))
        ));
        assert!(matches!(
            parse(b"[]", None),
            Err(ManifestError::InvalidJson(_))
        ));
        assert!(matches!(
            parse(br#"{"schemaVersion":1}"#, None),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            parse(br#"{"schemaVersion":2}"#, None),
            Err(ManifestError::Invalid(_))
        ));
        assert!(matches!(
            parse(&image(Some("application/vnd.example+json")), None),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
        let bad_digest = br#"{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:zz","size":1},"layers":[]}"#;
        assert!(matches!(
            parse(bad_digest, None),
            Err(ManifestError::InvalidJson(_))
        ));
        let negative = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"a","digest":"{D1}","size":-1}},"layers":[]}}"#
        );
        assert!(matches!(
            parse(negative.as_bytes(), None),
            Err(ManifestError::Invalid(_))
        ));
    }
}
