//! Test support for the registry client: real peers as child processes (Debian's
//! `docker-registry` with htpasswd auth, Berth's gateway with token auth), a
//! fault-injecting HTTP proxy to put in front of them, and small image builders.
//!
//! Everything panics on failure: a panic that names the cause is the report wanted.

#![allow(dead_code)] // each test module uses a different part

pub mod gateway;
pub mod proxy;
pub mod registry;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_registry_client::{sha256_digest, ClientConfig, Credential, RegistryClient};
use bytes::Bytes;
use futures::Stream;
use rand::RngCore;

/// How long anything that should happen "soon" may take: generous, these tests run on
/// a busy 2-core machine and the deadline only matters when something is broken.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `probe` every 100 ms until it returns `Ok`; panics with the last `Err` after
/// `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) => {
                if start.elapsed() > within {
                    panic!("{what}: not within {within:?}; last observation: {last}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client for `url` with `credential`.
pub fn client(url: &str, credential: Credential) -> RegistryClient {
    let mut config = ClientConfig::new(url.parse().expect("a URL"));
    config.credential = credential;
    config.timeout = Duration::from_secs(20);
    RegistryClient::new(config).expect("client builds")
}

pub fn basic(username: &str, password: &str) -> Credential {
    Credential::Basic {
        username: username.to_owned(),
        password: password.to_owned(),
    }
}

/// `len` random bytes and their digest.
pub fn random_blob(len: usize) -> (Bytes, String) {
    let mut data = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut data);
    let digest = sha256_digest(&data);
    (Bytes::from(data), digest)
}

/// `data` as a stream of `piece`-byte items, the way a file or a throttle yields it.
pub fn stream_of(
    data: Bytes,
    piece: usize,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let pieces: Vec<Result<Bytes, std::io::Error>> = (0..data.len())
        .step_by(piece.max(1))
        .map(|start| Ok(data.slice(start..(start + piece).min(data.len()))))
        .collect();
    futures::stream::iter(pieces)
}

/// Reads a blob stream to the end; the error it ends with, if any.
pub async fn collect<S>(mut stream: S) -> Result<Vec<u8>, berth_registry_client::ClientError>
where
    S: Stream<Item = Result<Bytes, berth_registry_client::ClientError>> + Unpin,
{
    use futures::StreamExt;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// A single-arch OCI image: config, layers and the manifest bytes.
pub struct TestImage {
    pub config: (Bytes, String),
    pub layers: Vec<(Bytes, String)>,
    pub manifest: Bytes,
    pub digest: String,
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

impl TestImage {
    /// An image with random layers of the given sizes.
    pub fn random(layer_sizes: &[usize]) -> TestImage {
        let config_json = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"nonce":"{}"}}"#,
            hex::encode(random_blob(8).0)
        );
        let config = (
            Bytes::from(config_json.clone()),
            sha256_digest(config_json.as_bytes()),
        );
        let layers: Vec<(Bytes, String)> = layer_sizes.iter().map(|s| random_blob(*s)).collect();
        TestImage::from_parts(config, layers, None)
    }

    /// An image manifest over given blobs, optionally with a subject (a referrer).
    pub fn from_parts(
        config: (Bytes, String),
        layers: Vec<(Bytes, String)>,
        subject: Option<(&str, u64)>,
    ) -> TestImage {
        let layer_json: Vec<String> = layers
            .iter()
            .map(|(data, digest)| {
                format!(
                    r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{digest}","size":{}}}"#,
                    data.len()
                )
            })
            .collect();
        let subject_json = subject
            .map(|(digest, size)| {
                format!(r#","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{digest}","size":{size}}}"#)
            })
            .unwrap_or_default();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{}]{subject_json}}}"#,
            config.1,
            config.0.len(),
            layer_json.join(",")
        );
        let digest = sha256_digest(manifest.as_bytes());
        TestImage {
            config,
            layers,
            manifest: Bytes::from(manifest),
            digest,
        }
    }

    /// Every blob: config first, then the layers.
    pub fn blobs(&self) -> Vec<(Bytes, String)> {
        let mut all = vec![self.config.clone()];
        all.extend(self.layers.iter().cloned());
        all
    }

    /// Pushes blobs (monolithic) and the manifest under `tag` with `client`.
    pub async fn push(&self, client: &RegistryClient, repository: &str, tag: &str) {
        for (data, digest) in self.blobs() {
            if client
                .head_blob(repository, &digest)
                .await
                .expect("head blob")
                .is_some()
            {
                continue;
            }
            client
                .push_blob(
                    repository,
                    &digest,
                    data.len() as u64,
                    stream_of(data, 64 * 1024),
                    None,
                )
                .await
                .expect("push blob");
        }
        let digest = client
            .put_manifest(repository, tag, OCI_MANIFEST, self.manifest.clone())
            .await
            .expect("put manifest");
        assert_eq!(digest, self.digest);
    }
}

// --- Child processes ---------------------------------------------------------------

/// A child process whose output goes to `log`; killed on drop, and its log tail
/// printed when the test is failing, since the temporary directory goes with it.
pub struct ChildProcess {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl ChildProcess {
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> ChildProcess {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the child's log");
        let stderr = file.try_clone().expect("clone the log handle");
        let child = command
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({command:?}): {e}"));
        ChildProcess {
            name: name.to_owned(),
            log: log.to_path_buf(),
            child: Some(child),
        }
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- last lines of {} ---\n{}",
                self.name,
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

/// Waits until `url` answers at all (any status) while `process` runs.
pub async fn wait_until_listening(process: &mut ChildProcess, url: &str) {
    let http = reqwest::Client::new();
    let name = process.name.clone();
    eventually(&format!("{name} answers {url}"), DEADLINE, || {
        let exited = process.exited();
        let request = http.get(url).send();
        let name = name.clone();
        async move {
            if let Some(status) = exited {
                panic!("{name} exited at start ({status})");
            }
            request.await.map(|_| ()).map_err(|e| e.to_string())
        }
    })
    .await;
}
