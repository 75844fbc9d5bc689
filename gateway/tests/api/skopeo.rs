//! Berth against a real client: skopeo copies OCI layouts (a multi-layer image and a
//! multi-arch index) into Berth and back out, inspects and lists tags, and every manifest
//! and blob must come back byte for byte with the digests Berth reports.
//!
//! Also home to the plumbing that interop tests share: running skopeo, and reading a
//! whole image tree from any registry over HTTP.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use berth_content::Digest;
use serde_json::Value;

use crate::helpers::{RegistryClient, TestApp, OCI_INDEX, OCI_MANIFEST};
use crate::oci_layout::{references, Compression, ImageSpec, LayoutReader, OciLayout};

/// Generous: skopeo on a loaded 2-core machine can be slow, but it never hangs forever.
const SKOPEO_TIMEOUT: Duration = Duration::from_secs(300);

/// Panics with install instructions when a tool the test needs is not on PATH: a
/// missing tool must fail the test, never skip it silently.
pub fn require_binary(name: &str) {
    match std::process::Command::new(name).arg("--version").output() {
        Ok(_) => {}
        Err(e) => panic!(
            "`{name}` is required by this test but could not be run ({e}); \
             install the Debian package (`apt-get install {name}`) or run `make test`, \
             which installs it"
        ),
    }
}

/// Runs `skopeo --insecure-policy <args>` and returns its stdout; panics with the
/// command and its stderr when it fails or times out. `--insecure-policy` keeps the
/// tests independent of the machine's /etc/containers/policy.json.
pub async fn skopeo(args: &[&str]) -> Vec<u8> {
    require_binary("skopeo");
    let mut command = tokio::process::Command::new("skopeo");
    command
        .arg("--insecure-policy")
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let shown = format!("skopeo --insecure-policy {}", args.join(" "));
    let output = match tokio::time::timeout(SKOPEO_TIMEOUT, command.output()).await {
        Ok(output) => output.unwrap_or_else(|e| panic!("{shown}: {e}")),
        Err(_) => panic!("{shown} did not finish within {SKOPEO_TIMEOUT:?}"),
    };
    assert!(
        output.status.success(),
        "{shown} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// `skopeo copy` of one image or (with `all`) of an index and all its images, between
/// any two plain-HTTP registries or layouts; returns the digest skopeo wrote.
pub async fn skopeo_copy(source: &str, destination: &str, all: bool) -> Digest {
    let digest_file = tempfile::NamedTempFile::new().unwrap();
    let digest_path = digest_file.path().display().to_string();
    let mut args = vec![
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--retry-times=0",
        "--digestfile",
        &digest_path,
    ];
    if all {
        args.push("--all");
    }
    args.extend([source, destination]);
    skopeo(&args).await;
    let written = std::fs::read_to_string(digest_file.path()).unwrap();
    Digest::parse(written.trim()).unwrap_or_else(|e| panic!("digest file {written:?}: {e}"))
}

/// Everything reachable from one manifest in a registry, as fetched over HTTP.
#[derive(Debug)]
pub struct RegistryTree {
    /// `Docker-Content-Digest` of the manifest the reference named.
    pub digest: Digest,
    pub media_type: String,
    /// Every manifest and blob, by digest, each checked to hash to its digest.
    pub contents: BTreeMap<Digest, Vec<u8>>,
}

/// Fetches a manifest and everything it references, recursively, from `registry`,
/// checking every digest on the way.
pub async fn registry_tree(registry: &RegistryClient, repo: &str, reference: &str) -> RegistryTree {
    let (digest, media_type, bytes) = registry.pull_manifest(repo, reference).await;
    let mut contents = BTreeMap::new();
    let mut pending = vec![(digest.clone(), bytes)];
    while let Some((manifest_digest, manifest)) = pending.pop() {
        let refs = references(&manifest);
        for blob in refs.blobs {
            let bytes = registry.pull_blob(repo, &blob).await;
            contents.insert(blob, bytes);
        }
        for child in refs.manifests {
            let (child_digest, _, bytes) = registry.pull_manifest(repo, &child).await;
            assert_eq!(
                child_digest, child,
                "{}: manifest {child} by digest",
                registry.address
            );
            pending.push((child_digest, bytes));
        }
        contents.insert(manifest_digest, manifest);
    }
    RegistryTree {
        digest,
        media_type,
        contents,
    }
}

/// Asserts that a layout skopeo pulled holds exactly the registry's tree under `tag`.
pub fn assert_layout_matches(layout: &Path, tag: &str, registry: &RegistryTree) {
    let reader = LayoutReader::open(layout);
    let pulled = reader.resolve(tag);
    assert_eq!(
        pulled.digest, registry.digest,
        "the pulled manifest's digest differs from the registry's Docker-Content-Digest"
    );
    assert_eq!(pulled.media_type, registry.media_type);
    let tree = reader.tree(&pulled.digest);
    assert_eq!(
        tree.keys().collect::<Vec<_>>(),
        registry.contents.keys().collect::<Vec<_>>(),
        "the pulled layout and the registry hold different digests"
    );
    for (digest, bytes) in &tree {
        assert!(
            registry.contents[digest] == *bytes,
            "{digest} differs between the pulled layout and the registry"
        );
    }
}

#[tokio::test]
async fn skopeo_copies_a_multi_layer_image_in_and_out_byte_for_byte() {
    let app = TestApp::spawn().await;
    let mut source = OciLayout::new();
    // Uncompressed layers make skopeo compress on push, so the manifest Berth receives
    // is skopeo's, not the layout's: comparisons below are Berth against what skopeo
    // reported and against what comes back out.
    let image = source.add_image(
        "v1",
        &ImageSpec::linux(
            "amd64",
            &[
                (700_000, Compression::Gzip),
                (300_000, Compression::None),
                (1, Compression::Gzip),
                (2 * 1024 * 1024, Compression::None),
            ],
        ),
    );
    let destination = format!("docker://{}/skopeo/multi-layer:v1", app.host);
    let pushed = skopeo_copy(&source.reference("v1"), &destination, false).await;

    let berth = registry_tree(&app, "skopeo/multi-layer", "v1").await;
    assert_eq!(
        berth.digest, pushed,
        "Berth's digest for the tag is not what skopeo pushed"
    );
    assert_eq!(berth.media_type, OCI_MANIFEST);
    let manifest: Value = serde_json::from_slice(&berth.contents[&berth.digest]).unwrap();
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 4);
    // Gzipped layers and the config are pushed unchanged.
    for (i, layer) in image.layer_digests.iter().enumerate() {
        if i == 0 || i == 2 {
            assert_eq!(manifest["layers"][i]["digest"], layer.to_string());
        }
    }
    assert_eq!(
        manifest["config"]["digest"],
        image.config_digest.to_string()
    );
    // By digest too.
    let by_digest = registry_tree(&app, "skopeo/multi-layer", &pushed.to_string()).await;
    assert_eq!(by_digest.contents, berth.contents);

    // Out again, into a new layout: the same bytes under the same digests.
    let pulled = tempfile::tempdir().unwrap();
    let pulled_ref = format!("oci:{}:v1", pulled.path().display());
    let pulled_digest = skopeo_copy(&destination, &pulled_ref, false).await;
    assert_eq!(pulled_digest, berth.digest);
    assert_layout_matches(pulled.path(), "v1", &berth);

    // inspect: the digest and the layers Berth holds.
    let inspect: Value =
        serde_json::from_slice(&skopeo(&["inspect", "--tls-verify=false", &destination]).await)
            .unwrap();
    assert_eq!(inspect["Digest"], berth.digest.to_string(), "{inspect}");
    let inspected_layers: Vec<&str> = inspect["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let manifest_layers: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(inspected_layers, manifest_layers);
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Os"], "linux");

    // inspect --raw: exactly the stored manifest bytes.
    let raw = skopeo(&["inspect", "--tls-verify=false", "--raw", &destination]).await;
    assert!(
        raw == berth.contents[&berth.digest],
        "inspect --raw differs"
    );

    // A second tag for the same image, then list-tags.
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &destination,
        &format!("docker://{}/skopeo/multi-layer:latest", app.host),
    ])
    .await;
    let listed: Value = serde_json::from_slice(
        &skopeo(&[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{}/skopeo/multi-layer", app.host),
        ])
        .await,
    )
    .unwrap();
    let mut tags: Vec<&str> = listed["Tags"]
        .as_array()
        .unwrap_or_else(|| panic!("list-tags: {listed}"))
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    tags.sort_unstable();
    assert_eq!(tags, ["latest", "v1"]);
    let (latest, _, _) = app.pull_manifest("skopeo/multi-layer", "latest").await;
    assert_eq!(latest, berth.digest);
}

#[tokio::test]
async fn skopeo_copies_a_multi_arch_index_in_and_out_byte_for_byte() {
    let app = TestApp::spawn().await;
    let mut source = OciLayout::new();
    // Gzip layers only: skopeo pushes the layout's bytes unchanged, so the digests must
    // be the source's all the way through.
    let index = source.add_index(
        "multi",
        &[
            ImageSpec::linux(
                "amd64",
                &[(400_000, Compression::Gzip), (90_000, Compression::Gzip)],
            ),
            ImageSpec::linux(
                "arm64",
                &[(250_000, Compression::Gzip), (10, Compression::Gzip)],
            ),
        ],
    );
    let source_tree = LayoutReader::open(source.path()).tree(&index.digest);
    let destination = format!("docker://{}/skopeo/multi-arch:multi", app.host);
    let pushed = skopeo_copy(&source.reference("multi"), &destination, true).await;
    assert_eq!(pushed, index.digest, "skopeo changed the index on push");

    let berth = registry_tree(&app, "skopeo/multi-arch", "multi").await;
    assert_eq!(berth.digest, index.digest);
    assert_eq!(berth.media_type, OCI_INDEX);
    assert_eq!(
        berth.contents, source_tree,
        "Berth holds other bytes than the source"
    );
    for image in &index.images {
        let (digest, media_type, _) = app
            .pull_manifest("skopeo/multi-arch", &image.manifest_digest)
            .await;
        assert_eq!(digest, image.manifest_digest);
        assert_eq!(media_type, OCI_MANIFEST);
        for blob in image.blob_digests() {
            let response = app.head_blob("skopeo/multi-arch", &blob).await;
            assert_eq!(response.status(), 200, "HEAD {blob}");
        }
    }

    let pulled = tempfile::tempdir().unwrap();
    let pulled_ref = format!("oci:{}:multi", pulled.path().display());
    let pulled_digest = skopeo_copy(&destination, &pulled_ref, true).await;
    assert_eq!(pulled_digest, index.digest);
    assert_layout_matches(pulled.path(), "multi", &berth);

    // inspect --raw is the index; inspect resolves this machine's platform (amd64).
    let raw = skopeo(&["inspect", "--tls-verify=false", "--raw", &destination]).await;
    assert!(raw == index.index, "inspect --raw is not the pushed index");
    let inspect: Value = serde_json::from_slice(
        &skopeo(&[
            "--override-arch=amd64",
            "--override-os=linux",
            "inspect",
            "--tls-verify=false",
            &destination,
        ])
        .await,
    )
    .unwrap();
    assert_eq!(inspect["Digest"], index.digest.to_string(), "{inspect}");
    let amd64 = &index.images[0];
    let inspected_layers: Vec<String> = inspect["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = amd64.layer_digests.iter().map(|d| d.to_string()).collect();
    assert_eq!(inspected_layers, expected);

    let listed: Value = serde_json::from_slice(
        &skopeo(&[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{}/skopeo/multi-arch", app.host),
        ])
        .await,
    )
    .unwrap();
    assert_eq!(listed["Tags"], serde_json::json!(["multi"]), "{listed}");
}
