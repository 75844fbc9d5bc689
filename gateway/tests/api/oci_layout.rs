//! OCI image layouts on disk: a builder that writes images and multi-arch indexes of
//! random layers into a temporary directory, and a reader for layouts that tools such as
//! skopeo wrote, so tests can compare what went into a registry with what came out.
//!
//! Layers are real tar archives (one file of random bytes each), optionally gzipped,
//! and configs carry the matching `diff_ids`: clients that check images get valid ones.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use berth_content::Digest;
use flate2::write::GzEncoder;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::helpers::{random_bytes, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};

pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar: clients compress it on push, so the pushed manifest differs.
    None,
    /// A gzipped tar: clients push it as it is, so digests survive the copy.
    Gzip,
}

#[derive(Debug, Clone, Copy)]
pub struct LayerSpec {
    /// Size of the random file inside the layer's tar.
    pub size: usize,
    pub compression: Compression,
}

#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub os: &'static str,
    pub architecture: &'static str,
    pub layers: Vec<LayerSpec>,
}

impl ImageSpec {
    /// A linux image with a layer per (size, compression).
    pub fn linux(architecture: &'static str, layers: &[(usize, Compression)]) -> ImageSpec {
        ImageSpec {
            os: "linux",
            architecture,
            layers: layers
                .iter()
                .map(|&(size, compression)| LayerSpec { size, compression })
                .collect(),
        }
    }
}

/// An image written into a layout.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    pub layer_digests: Vec<Digest>,
}

impl BuiltImage {
    /// The config and every layer.
    pub fn blob_digests(&self) -> Vec<Digest> {
        let mut digests = vec![self.config_digest.clone()];
        digests.extend(self.layer_digests.iter().cloned());
        digests
    }
}

/// A multi-arch index written into a layout, with its platform images.
#[derive(Debug, Clone)]
pub struct BuiltIndex {
    pub index: Vec<u8>,
    pub digest: Digest,
    pub images: Vec<BuiltImage>,
}

/// A layout under construction in a temporary directory (removed on drop).
pub struct OciLayout {
    dir: TempDir,
    /// The descriptors of `index.json`, one per tag.
    refs: Vec<Value>,
}

impl OciLayout {
    pub fn new() -> OciLayout {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        std::fs::write(
            dir.path().join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        let layout = OciLayout {
            dir,
            refs: Vec::new(),
        };
        layout.write_index_json();
        layout
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `oci:<path>:<tag>`, as skopeo names an image in this layout.
    pub fn reference(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.path().display())
    }

    /// Writes an image (random layers, config, manifest) and tags it.
    pub fn add_image(&mut self, tag: &str, spec: &ImageSpec) -> BuiltImage {
        let image = self.write_image(spec);
        self.tag(
            tag,
            OCI_MANIFEST,
            &image.manifest_digest,
            image.manifest.len(),
        );
        image
    }

    /// Writes one image per spec and an index over them, and tags the index.
    pub fn add_index(&mut self, tag: &str, specs: &[ImageSpec]) -> BuiltIndex {
        let images: Vec<BuiltImage> = specs.iter().map(|s| self.write_image(s)).collect();
        let manifests: Vec<Value> = images
            .iter()
            .zip(specs)
            .map(|(image, spec)| {
                json!({
                    "mediaType": OCI_MANIFEST,
                    "digest": image.manifest_digest.to_string(),
                    "size": image.manifest.len(),
                    "platform": {"architecture": spec.architecture, "os": spec.os},
                })
            })
            .collect();
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": manifests,
        }))
        .unwrap();
        let digest = self.write_blob(&index);
        self.tag(tag, OCI_INDEX, &digest, index.len());
        BuiltIndex {
            index,
            digest,
            images,
        }
    }

    fn write_image(&self, spec: &ImageSpec) -> BuiltImage {
        let mut layer_descriptors = Vec::new();
        let mut layer_digests = Vec::new();
        let mut diff_ids = Vec::new();
        for (i, layer) in spec.layers.iter().enumerate() {
            let tar = tar_with_one_file(&format!("layer-{i}.bin"), &random_bytes(layer.size));
            diff_ids.push(Digest::sha256_of(&tar).to_string());
            let (bytes, media_type) = match layer.compression {
                Compression::None => (tar, OCI_LAYER_TAR),
                Compression::Gzip => (gzip(&tar), OCI_LAYER_GZIP),
            };
            let digest = self.write_blob(&bytes);
            layer_descriptors.push(json!({
                "mediaType": media_type,
                "digest": digest.to_string(),
                "size": bytes.len(),
            }));
            layer_digests.push(digest);
        }
        let config = serde_json::to_vec(&json!({
            "architecture": spec.architecture,
            "os": spec.os,
            "config": {"Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": spec.layers.iter().map(|_| json!({"created_by": "berth test"})).collect::<Vec<_>>(),
        }))
        .unwrap();
        let config_digest = self.write_blob(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
            "layers": layer_descriptors,
        }))
        .unwrap();
        let manifest_digest = self.write_blob(&manifest);
        BuiltImage {
            manifest,
            manifest_digest,
            config_digest,
            layer_digests,
        }
    }

    fn write_blob(&self, bytes: &[u8]) -> Digest {
        let digest = Digest::sha256_of(bytes);
        std::fs::write(blob_path(self.path(), &digest), bytes).unwrap();
        digest
    }

    fn tag(&mut self, tag: &str, media_type: &str, digest: &Digest, size: usize) {
        self.refs.retain(|r| r["annotations"][REF_NAME] != tag);
        self.refs.push(json!({
            "mediaType": media_type,
            "digest": digest.to_string(),
            "size": size,
            "annotations": {REF_NAME: tag},
        }));
        self.write_index_json();
    }

    fn write_index_json(&self) {
        let index = json!({"schemaVersion": 2, "manifests": self.refs});
        std::fs::write(
            self.path().join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }
}

fn blob_path(layout: &Path, digest: &Digest) -> PathBuf {
    layout.join("blobs").join("sha256").join(digest.hex())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    // Random data does not compress: the fastest level costs least for the same result.
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A POSIX ustar archive holding one regular file.
fn tar_with_one_file(name: &str, content: &[u8]) -> Vec<u8> {
    fn octal(field: &mut [u8], value: u64) {
        // NUL-terminated, zero-padded octal filling the field.
        let width = field.len() - 1;
        let digits = format!("{value:0width$o}");
        field[..width].copy_from_slice(digits.as_bytes());
        field[width] = 0;
    }
    assert!(name.len() < 100, "tar name too long: {name}");
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut header[100..108], 0o644); // mode
    octal(&mut header[108..116], 0); // uid
    octal(&mut header[116..124], 0); // gid
    octal(&mut header[124..136], content.len() as u64); // size
    octal(&mut header[136..148], 1_700_000_000); // mtime
    header[156] = b'0'; // regular file
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field taken as spaces.
    header[148..156].copy_from_slice(b"        ");
    let sum: u64 = header.iter().map(|&b| u64::from(b)).sum();
    let checksum = format!("{sum:06o}\0 ");
    header[148..156].copy_from_slice(checksum.as_bytes());

    let mut tar = header.to_vec();
    tar.extend_from_slice(content);
    tar.resize(tar.len().div_ceil(512) * 512, 0);
    // Two zero blocks end the archive.
    tar.resize(tar.len() + 1024, 0);
    tar
}

/// A descriptor, as `index.json` and indexes hold them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// What a manifest references: child manifests (of an index) and blobs (of an image).
#[derive(Debug, Default)]
pub struct References {
    pub manifests: Vec<Digest>,
    pub blobs: Vec<Digest>,
}

/// The references of an image manifest or index, from its JSON.
pub fn references(manifest: &[u8]) -> References {
    let value: Value = serde_json::from_slice(manifest).expect("manifest is JSON");
    let digest_of = |d: &Value| -> Digest {
        Digest::parse(d["digest"].as_str().expect("descriptor has a digest")).unwrap()
    };
    let mut refs = References::default();
    if let Some(children) = value["manifests"].as_array() {
        refs.manifests = children.iter().map(digest_of).collect();
    }
    if value["config"].is_object() {
        refs.blobs.push(digest_of(&value["config"]));
    }
    if let Some(layers) = value["layers"].as_array() {
        refs.blobs.extend(layers.iter().map(digest_of));
    }
    refs
}

/// A layout some tool wrote, opened for reading.
pub struct LayoutReader {
    path: PathBuf,
    index: Value,
}

impl LayoutReader {
    pub fn open(path: &Path) -> LayoutReader {
        let bytes = std::fs::read(path.join("index.json"))
            .unwrap_or_else(|e| panic!("{}/index.json: {e}", path.display()));
        LayoutReader {
            path: path.to_path_buf(),
            index: serde_json::from_slice(&bytes).expect("index.json is JSON"),
        }
    }

    /// The descriptor `index.json` holds for `tag`.
    pub fn resolve(&self, tag: &str) -> Descriptor {
        let found = self.index["manifests"]
            .as_array()
            .expect("index.json has manifests")
            .iter()
            .find(|d| d["annotations"][REF_NAME] == tag)
            .unwrap_or_else(|| panic!("no tag {tag} in {}", self.index));
        Descriptor {
            media_type: found["mediaType"].as_str().unwrap_or_default().to_owned(),
            digest: Digest::parse(found["digest"].as_str().unwrap()).unwrap(),
            size: found["size"].as_u64().unwrap(),
        }
    }

    /// A blob's bytes, checked against its digest.
    pub fn blob(&self, digest: &Digest) -> Vec<u8> {
        let path = blob_path(&self.path, digest);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            &Digest::sha256_of(&bytes),
            digest,
            "{} does not hash to its name",
            path.display()
        );
        bytes
    }

    /// Every manifest and blob reachable from `root`, by digest.
    pub fn tree(&self, root: &Digest) -> BTreeMap<Digest, Vec<u8>> {
        let mut tree = BTreeMap::new();
        let mut pending = vec![root.clone()];
        while let Some(digest) = pending.pop() {
            let manifest = self.blob(&digest);
            let refs = references(&manifest);
            for blob in refs.blobs {
                let bytes = self.blob(&blob);
                tree.insert(blob, bytes);
            }
            pending.extend(refs.manifests);
            tree.insert(digest, manifest);
        }
        tree
    }
}

#[test]
fn the_layout_builder_writes_valid_layouts() {
    let mut layout = OciLayout::new();
    let layers = [(1000, Compression::None), (513, Compression::Gzip)];
    let image = layout.add_image("one", &ImageSpec::linux("amd64", &layers));
    let index = layout.add_index(
        "multi",
        &[
            ImageSpec::linux("amd64", &layers),
            ImageSpec::linux("arm64", &layers[1..]),
        ],
    );
    let reader = LayoutReader::open(layout.path());
    let one = reader.resolve("one");
    assert_eq!(one.digest, image.manifest_digest);
    assert_eq!(one.media_type, OCI_MANIFEST);
    assert_eq!(reader.tree(&one.digest).len(), 4);
    let multi = reader.resolve("multi");
    assert_eq!(multi.digest, index.digest);
    assert_eq!(multi.media_type, OCI_INDEX);
    // index + 2 manifests + 2 configs + 3 layers
    assert_eq!(reader.tree(&multi.digest).len(), 8);

    // The uncompressed layer is a tar whose first entry holds the file, and the gzip
    // layer decompresses to a tar whose digest the config lists as a diff_id.
    let tar = reader.blob(&image.layer_digests[0]);
    assert_eq!(tar.len() % 512, 0);
    assert_eq!(&tar[..11], b"layer-0.bin");
    assert_eq!(&tar[257..262], b"ustar");
    // GNU tar, essential on every Debian system, reads it back.
    let listed = std::process::Command::new("tar")
        .arg("-tvf")
        .arg(
            layout
                .path()
                .join("blobs/sha256")
                .join(image.layer_digests[0].hex()),
        )
        .output()
        .expect("run tar");
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(
        listing.contains(" 1000 ") && listing.contains("layer-0.bin"),
        "{listing}"
    );
    let gz = reader.blob(&image.layer_digests[1]);
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut unzipped).unwrap();
    let config: Value = serde_json::from_slice(&reader.blob(&image.config_digest)).unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"][1],
        Digest::sha256_of(&unzipped).to_string()
    );
}
