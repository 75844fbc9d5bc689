//! Berth and the reference registry (Debian's `docker-registry`, CNCF Distribution)
//! exchange images and multi-arch indexes through skopeo in both directions, and must
//! agree on every manifest digest and every byte.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::helpers::{RegistryClient, TestApp, OCI_INDEX, OCI_MANIFEST};
use crate::oci_layout::{Compression, ImageSpec, LayoutReader, OciLayout};
use crate::skopeo::{registry_tree, require_binary, skopeo_copy, RegistryTree};

/// `docker-registry serve` on a free port with its own storage; killed on drop.
pub struct DockerRegistry {
    child: Child,
    /// `http://127.0.0.1:<port>`
    pub address: String,
    /// `127.0.0.1:<port>`
    pub host: String,
    /// Holds config.yml, the storage root and the log; kept while the registry runs.
    dir: TempDir,
}

impl DockerRegistry {
    pub async fn start() -> DockerRegistry {
        require_binary("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let storage = dir.path().join("storage");
        let config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut registry = DockerRegistry {
            child,
            address: format!("http://127.0.0.1:{port}"),
            host: format!("127.0.0.1:{port}"),
            dir,
        };
        let client = reqwest::Client::new();
        // Up to a minute: generous for a loaded machine, and it starts in well under 1 s.
        for _ in 0..600 {
            if let Ok(Some(status)) = registry.child.try_wait() {
                panic!(
                    "docker-registry exited ({status}) at start:\n{}",
                    registry.log()
                );
            }
            if let Ok(r) = client.get(format!("{}/v2/", registry.address)).send().await {
                if r.status() == 200 {
                    return registry;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "docker-registry did not answer GET /v2/:\n{}",
            registry.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A layout with an image (`image`, one uncompressed layer so the client rewrites it on
/// its first push) and a two-platform index (`multi`).
fn source_layout() -> OciLayout {
    let mut layout = OciLayout::new();
    layout.add_image(
        "image",
        &ImageSpec::linux(
            "amd64",
            &[
                (300_000, Compression::Gzip),
                (200_000, Compression::None),
                (50, Compression::Gzip),
            ],
        ),
    );
    layout.add_index(
        "multi",
        &[
            ImageSpec::linux(
                "amd64",
                &[(120_000, Compression::Gzip), (3_000, Compression::Gzip)],
            ),
            ImageSpec::linux("arm64", &[(80_000, Compression::Gzip)]),
        ],
    );
    layout
}

fn assert_same_tree(what: &str, from: &RegistryTree, to: &RegistryTree) {
    assert_eq!(from.digest, to.digest, "{what}: manifest digests differ");
    assert_eq!(from.media_type, to.media_type, "{what}: media types differ");
    assert_eq!(
        from.contents.keys().collect::<Vec<_>>(),
        to.contents.keys().collect::<Vec<_>>(),
        "{what}: the registries hold different digests"
    );
    assert!(from.contents == to.contents, "{what}: bytes differ");
}

/// A repository in a registry, as skopeo (`docker://<host>/<name>`) and HTTP see it.
struct Repository<'a> {
    host: &'a str,
    registry: RegistryClient,
    name: &'a str,
}

impl<'a> Repository<'a> {
    fn new(host: &'a str, address: &str, name: &'a str) -> Repository<'a> {
        Repository {
            host,
            registry: RegistryClient::new(address),
            name,
        }
    }

    fn reference(&self, tag: &str) -> String {
        format!("docker://{}/{}:{tag}", self.host, self.name)
    }

    async fn tree(&self, tag: &str) -> RegistryTree {
        registry_tree(&self.registry, self.name, tag).await
    }
}

/// Copies the layout's `image` and `multi` into `first` with skopeo, then from `first`
/// into `second`: skopeo must find nothing to rewrite on the second copy, and both
/// registries must then hold the same tree, of the source's media type, under each tag.
async fn copy_through(layout: &OciLayout, first: &Repository<'_>, second: &Repository<'_>) {
    for (tag, all, media_type) in [("image", false, OCI_MANIFEST), ("multi", true, OCI_INDEX)] {
        let pushed = skopeo_copy(&layout.reference(tag), &first.reference(tag), all).await;
        let copied = skopeo_copy(&first.reference(tag), &second.reference(tag), all).await;
        assert_eq!(
            copied, pushed,
            "{tag}: skopeo rewrote the manifest {} served on its way to {}",
            first.name, second.name
        );
        let from = first.tree(tag).await;
        let to = second.tree(tag).await;
        assert_eq!(from.digest, pushed);
        assert_eq!(from.media_type, media_type);
        assert_eq!(to.media_type, media_type);
        assert_same_tree(tag, &from, &to);
    }
}

#[tokio::test]
async fn the_reference_registry_works_with_the_layout_builder() {
    // The plumbing on its own, so that a failure of the tests below points at Berth.
    let registry = DockerRegistry::start().await;
    let plumbing = Repository::new(&registry.host, &registry.address, "plumbing/multi");
    let layout = source_layout();
    let multi = LayoutReader::open(layout.path()).resolve("multi");
    let pushed = skopeo_copy(
        &layout.reference("multi"),
        &plumbing.reference("multi"),
        true,
    )
    .await;
    assert_eq!(pushed, multi.digest);
    let tree = plumbing.tree("multi").await;
    assert_eq!(tree.digest, multi.digest);
    assert_eq!(tree.media_type, OCI_INDEX);
    assert_eq!(
        tree.contents,
        LayoutReader::open(layout.path()).tree(&multi.digest)
    );
}

#[tokio::test]
async fn images_and_indexes_copy_from_berth_to_the_reference_registry() {
    let app = TestApp::spawn().await;
    let registry = DockerRegistry::start().await;
    let berth = Repository::new(&app.host, &app.address, "interop/out");
    let mirror = Repository::new(&registry.host, &registry.address, "mirror/out");
    copy_through(&source_layout(), &berth, &mirror).await;
}

#[tokio::test]
async fn images_and_indexes_copy_from_the_reference_registry_to_berth() {
    let app = TestApp::spawn().await;
    let registry = DockerRegistry::start().await;
    let upstream = Repository::new(&registry.host, &registry.address, "upstream/in");
    let berth = Repository::new(&app.host, &app.address, "interop/in");
    copy_through(&source_layout(), &upstream, &berth).await;
    // And back out of Berth to the reference registry under another name: a round trip
    // through both registries changes nothing.
    let back = skopeo_copy(
        &berth.reference("multi"),
        &format!("docker://{}/roundtrip/back:multi", registry.host),
        true,
    )
    .await;
    assert_eq!(back, upstream.tree("multi").await.digest);
}
