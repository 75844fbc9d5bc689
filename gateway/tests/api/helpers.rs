//! The test harness: a fresh database per test cloned from a migrated template, the
//! gateway on port 0 in process (or as a child process where a test must kill it), and
//! request helpers that speak the registry API.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_content::metadata::MIGRATOR;
use berth_content::Digest;
use berth_gateway::config::{Config, Secret};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tempfile::TempDir;
use tokio::net::TcpListener;

/// The PostgreSQL server tests create their databases on. `make test` sets it.
fn admin_url() -> String {
    std::env::var("DATABASE_URL").expect(
        "DATABASE_URL must point at a PostgreSQL server where tests may CREATE DATABASE (make test sets it)",
    )
}

fn url_for_database(admin: &str, database: &str) -> String {
    let mut url = url::Url::parse(admin).expect("DATABASE_URL is a URL");
    url.set_path(&format!("/{database}"));
    url.to_string()
}

/// The template's name changes whenever the migrations do, so a stale template is
/// never cloned.
fn template_name() -> String {
    let mut fingerprint = String::new();
    for migration in MIGRATOR.iter() {
        fingerprint.push_str(&hex::encode(&migration.checksum));
    }
    let digest = Digest::sha256_of(fingerprint.as_bytes());
    format!("berth_test_template_{}", &digest.hex()[..16])
}

/// A database of its own for one test, dropped when the test ends.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        let admin = admin_url();
        let mut conn = PgConnection::connect(&admin)
            .await
            .expect("connect to DATABASE_URL");
        let template = template_name();
        // Test binaries and threads race to build the template; one does it.
        sqlx::query("SELECT pg_advisory_lock(4242001)")
            .execute(&mut conn)
            .await
            .unwrap();
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&template)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        if !exists {
            let building = format!("{template}_building");
            sqlx::query(&format!("DROP DATABASE IF EXISTS {building}"))
                .execute(&mut conn)
                .await
                .unwrap();
            sqlx::query(&format!("CREATE DATABASE {building}"))
                .execute(&mut conn)
                .await
                .unwrap();
            let mut tconn = PgConnection::connect(&url_for_database(&admin, &building))
                .await
                .unwrap();
            MIGRATOR
                .run(&mut tconn)
                .await
                .expect("migrations apply to the template");
            tconn.close().await.unwrap();
            sqlx::query(&format!("ALTER DATABASE {building} RENAME TO {template}"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        let name = format!("berth_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("SELECT pg_advisory_unlock(4242001)")
            .execute(&mut conn)
            .await
            .unwrap();
        let url = url_for_database(&admin, &name);
        TestDatabase { name, url }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee; a short-lived thread with its own
        // runtime does the async work.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A gateway running in this process on 127.0.0.1:0 with its own database and storage.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`
    pub address: String,
    /// `127.0.0.1:<port>`, for clients such as skopeo that want host:port.
    pub host: String,
    pub client: reqwest::Client,
    /// Direct access to the metadata, for assertions on what was (not) written.
    pub db: PgPool,
    pub data_dir: TempDir,
    pub config: Config,
    // Declared last: dropped after the pool closes, which drops the database.
    #[allow(dead_code)]
    pub database: TestDatabase,
}

pub fn test_config(database: &TestDatabase, data_dir: &Path) -> Config {
    Config {
        database_url: Secret::new(database.url.clone()),
        database_max_connections: 8,
        data_dir: data_dir.to_path_buf(),
        shutdown_grace_secs: 5,
        ..Config::default()
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// Spawns with a configuration the test adjusts first.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
        let database = TestDatabase::create().await;
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&database, data_dir.path());
        adjust(&mut config);
        let state = berth_gateway::build_state(config.clone())
            .await
            .expect("gateway starts");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(berth_gateway::serve(
            listener,
            state,
            std::future::pending(),
        ));
        let db = PgPoolOptions::new()
            .max_connections(2)
            .connect(&database.url)
            .await
            .unwrap();
        TestApp {
            address: format!("http://127.0.0.1:{port}"),
            host: format!("127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            db,
            data_dir,
            config,
            database,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Absolute URL for a `Location` header, which may be relative.
    pub fn location_url(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            self.url(location)
        }
    }

    /// Pushes `bytes` as a blob with a monolithic POST and returns its digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let digest = Digest::sha256_of(bytes);
        let response = self
            .client
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
            .header("Content-Type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            201,
            "push blob: {}",
            response.text().await.unwrap()
        );
        digest
    }

    /// PUTs a manifest with the given media type; returns the response for assertions.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> reqwest::Response {
        self.client
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("Content-Type", media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Pushes a small OCI image (config + layers of the given contents) tagged
    /// `reference`; returns the manifest bytes and digest.
    pub async fn push_image(
        &self,
        repo: &str,
        reference: &str,
        layers: &[&[u8]],
    ) -> (Vec<u8>, Digest) {
        let manifest = image_manifest(self, repo, layers).await;
        let response = self
            .put_manifest(repo, reference, OCI_MANIFEST, &manifest)
            .await;
        assert_eq!(
            response.status(),
            201,
            "push manifest: {}",
            response.text().await.unwrap()
        );
        let digest = Digest::sha256_of(&manifest);
        (manifest, digest)
    }
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Builds (and pushes the blobs of) an OCI image manifest with the given layers.
pub async fn image_manifest(app: &TestApp, repo: &str, layers: &[&[u8]]) -> Vec<u8> {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
        "nonce": uuid::Uuid::new_v4().to_string(),
    }))
    .unwrap();
    let config_digest = app.push_blob(repo, &config).await;
    let mut layer_descriptors = Vec::new();
    for layer in layers {
        let digest = app.push_blob(repo, layer).await;
        layer_descriptors.push(serde_json::json!({"mediaType": OCI_LAYER, "digest": digest.to_string(), "size": layer.len()}));
    }
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
        "layers": layer_descriptors,
    }))
    .unwrap()
}

/// Asserts an OCI error response with the given status and code; returns its message.
pub async fn assert_oci_error(response: reqwest::Response, status: u16, code: &str) -> String {
    let actual = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(
        actual, status,
        "expected {status} {code}, got {actual}: {text}"
    );
    let body: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("error body is JSON: {text}"));
    assert_eq!(body["errors"][0]["code"], code, "{text}");
    let message = body["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!message.is_empty(), "error message is empty: {text}");
    message
}

/// Random bytes for blobs and layers.
pub fn random_bytes(len: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

/// The gateway as a child process, for tests that must kill it. Killed on drop.
pub struct GatewayProcess {
    pub child: Child,
    pub address: String,
    pub host: String,
}

impl GatewayProcess {
    /// Starts `berth-gateway` on a free port with the given database and data dir and
    /// waits until `/v2/` answers.
    pub async fn start(database_url: &str, data_dir: &Path) -> GatewayProcess {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let log = std::fs::File::create(data_dir.join(format!("gateway-{port}.log"))).unwrap();
        let child = Command::new(gateway_binary())
            .env("BERTH_LISTEN", format!("127.0.0.1:{port}"))
            .env("BERTH_DATABASE_URL", database_url)
            .env("BERTH_DATA_DIR", data_dir)
            .env("BERTH_DATABASE_MAX_CONNECTIONS", "8")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start berth-gateway");
        let process = GatewayProcess {
            child,
            address: format!("http://127.0.0.1:{port}"),
            host: format!("127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("{}/v2/", process.address)).send().await {
                if r.status() == 200 {
                    return process;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("berth-gateway did not start; see {}", data_dir.display());
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn gateway_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_berth-gateway"))
}

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

impl TestApp {
    /// `GET /v2/<repo>/manifests/<reference>`.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .send()
            .await
            .unwrap()
    }

    /// `HEAD /v2/<repo>/manifests/<reference>`.
    pub async fn head_manifest(&self, repo: &str, reference: &str) -> reqwest::Response {
        self.client
            .head(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .send()
            .await
            .unwrap()
    }

    /// `DELETE /v2/<repo>/manifests/<reference>`.
    pub async fn delete_manifest(&self, repo: &str, reference: &str) -> reqwest::Response {
        self.client
            .delete(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .send()
            .await
            .unwrap()
    }

    /// GETs `path` and returns the JSON body and the `rel="next"` link, asserting 200.
    pub async fn get_page(&self, path: &str) -> (serde_json::Value, Option<String>) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = response.status();
        let link = next_link(&response);
        let text = response.text().await.unwrap();
        assert_eq!(status, 200, "GET {path}: {text}");
        (serde_json::from_str(&text).unwrap(), link)
    }

    /// Follows `rel="next"` links from `path` until they stop, returning each page's
    /// `key` array (`tags` or `repositories`).
    pub async fn walk_pages(&self, path: &str, key: &str) -> Vec<Vec<String>> {
        let mut pages = Vec::new();
        let mut next = Some(path.to_owned());
        while let Some(path) = next.take() {
            assert!(pages.len() < 1000, "pagination does not end");
            let (body, link) = self.get_page(&path).await;
            let entries = body[key]
                .as_array()
                .unwrap_or_else(|| panic!("{key} is an array: {body}"))
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect();
            pages.push(entries);
            next = link;
        }
        pages
    }
}

/// The target of a `Link: <target>; rel="next"` header, if present.
pub fn next_link(response: &reqwest::Response) -> Option<String> {
    let link = response.headers().get("link")?.to_str().ok()?;
    assert!(link.ends_with("rel=\"next\""), "unexpected Link: {link}");
    let start = link.find('<')? + 1;
    let end = link.find('>')?;
    Some(link[start..end].to_owned())
}

/// An OCI index with no children: a manifest that needs no blobs, made unique by `nonce`.
pub fn empty_index(nonce: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [],
        "annotations": {"test.nonce": nonce},
    }))
    .unwrap()
}

/// PUTs `bytes` as `media_type` and asserts 201; returns the manifest's digest.
pub async fn put_ok(
    app: &TestApp,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> Digest {
    let response = app.put_manifest(repo, reference, media_type, bytes).await;
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 201, "PUT {repo}:{reference}: {text}");
    Digest::sha256_of(bytes)
}

/// The registry API by base URL, for gateways that are not a [`TestApp`] (a
/// [`GatewayProcess`] that a test kills and restarts) and for uploads driven step by step.
#[derive(Clone)]
pub struct RegistryClient {
    pub client: reqwest::Client,
    /// `http://127.0.0.1:<port>`
    pub address: String,
}

impl RegistryClient {
    pub fn new(address: &str) -> RegistryClient {
        RegistryClient {
            client: reqwest::Client::new(),
            address: address.to_owned(),
        }
    }

    /// `path` may be a path (`/v2/…`) or an absolute URL from a `Location` header.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{}", self.address, path)
        }
    }

    /// Monolithic `POST …/blobs/uploads/?digest=`; asserts 201 and returns the digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let digest = Digest::sha256_of(bytes);
        let response = self
            .client
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
            .header("Content-Type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 201, "monolithic push of {digest}: {text}");
        digest
    }

    /// `POST …/blobs/uploads/`; asserts 202 and returns the `Location` as a path (with
    /// its query), so that it stays usable when the gateway restarts on another port.
    pub async fn start_upload(&self, repo: &str) -> String {
        let response = self
            .client
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/")))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let location = location_path(&response);
        let text = response.text().await.unwrap();
        assert_eq!(status, 202, "start upload in {repo}: {text}");
        location.unwrap_or_else(|| panic!("start upload in {repo}: no Location"))
    }

    /// `PATCH` of the chunk that starts at `start`; asserts 202 and that the upload now
    /// holds `0..start+len`, and returns the next `Location` as a path.
    pub async fn patch_chunk(&self, location: &str, start: usize, chunk: &[u8]) -> String {
        let end = start + chunk.len() - 1;
        let response = self
            .client
            .patch(self.url(location))
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{start}-{end}"))
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let range = response
            .headers()
            .get("range")
            .map(|v| v.to_str().unwrap().to_owned());
        let next = location_path(&response);
        let text = response.text().await.unwrap();
        assert_eq!(status, 202, "PATCH {location} {start}-{end}: {text}");
        assert_eq!(range.as_deref(), Some(format!("0-{end}").as_str()), "Range");
        next.unwrap_or_else(|| panic!("PATCH {location}: no Location"))
    }

    /// `PUT <location>?digest=` with an optional last chunk; the response, for assertions.
    pub async fn complete_upload(
        &self,
        location: &str,
        digest: &Digest,
        body: &[u8],
    ) -> reqwest::Response {
        let separator = if location.contains('?') { '&' } else { '?' };
        self.client
            .put(self.url(&format!("{location}{separator}digest={digest}")))
            .header("Content-Type", "application/octet-stream")
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// A chunked upload (POST, one PATCH per `chunk_size`, PUT); asserts 201.
    pub async fn push_chunked(&self, repo: &str, bytes: &[u8], chunk_size: usize) -> Digest {
        let digest = Digest::sha256_of(bytes);
        let mut location = self.start_upload(repo).await;
        for (i, chunk) in bytes.chunks(chunk_size).enumerate() {
            location = self.patch_chunk(&location, i * chunk_size, chunk).await;
        }
        let response = self.complete_upload(&location, &digest, &[]).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 201, "chunked push of {digest}: {text}");
        digest
    }

    /// `PUT …/manifests/<reference>`; the response, for assertions.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> reqwest::Response {
        self.client
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("Content-Type", media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap()
    }
}

/// A response's `Location` without scheme and host.
pub fn location_path(response: &reqwest::Response) -> Option<String> {
    let location = response.headers().get("location")?.to_str().ok()?;
    if location.starts_with("http://") || location.starts_with("https://") {
        let url = url::Url::parse(location).ok()?;
        Some(match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        })
    } else {
        Some(location.to_owned())
    }
}
