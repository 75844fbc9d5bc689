//! The test harness: a fresh database per test cloned from a migrated template, the
//! gateway on port 0 in process (or as a child process where a test must kill it), and
//! request helpers that speak the registry API.

use std::fmt::Display;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_content::metadata::MIGRATOR;
use berth_content::Digest;
use berth_gateway::config::{AuthMode, Config, Secret};
use berth_gateway::state::AppState;
use reqwest::{RequestBuilder, Response};
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
/// It derefs to its [`RegistryClient`], so requests read `app.push_blob(…)`,
/// `app.get_manifest(…)`, `app.url(…)`.
pub struct TestApp {
    /// The registry API of this gateway.
    pub registry: RegistryClient,
    /// `127.0.0.1:<port>`, for clients such as skopeo that want host:port.
    pub host: String,
    /// Direct access to the metadata, for assertions on what was (not) written.
    pub db: PgPool,
    /// Holds the storage (`config.storage_root()`); removed on drop.
    #[allow(dead_code)]
    pub data_dir: TempDir,
    pub config: Config,
    // Declared last: dropped after the pool closes, which drops the database.
    #[allow(dead_code)]
    pub database: TestDatabase,
}

impl Deref for TestApp {
    type Target = RegistryClient;

    fn deref(&self) -> &RegistryClient {
        &self.registry
    }
}

/// The bootstrap administrator's password in every test gateway.
pub const ADMIN_PASSWORD: &str = "Admin-Passw0rd";

/// A test gateway's configuration. Registry data-path tests run with authentication
/// off and projects created on push, so they exercise the data path alone;
/// [`TestApp::spawn_secure`] turns auth on.
pub fn test_config(database: &TestDatabase, data_dir: &Path) -> Config {
    let mut config = Config {
        database_url: Secret::new(database.url.clone()),
        database_max_connections: 8,
        data_dir: data_dir.to_path_buf(),
        shutdown_grace_secs: 5,
        ..Config::default()
    };
    config.auth.mode = AuthMode::None;
    config.auth.admin_password = Some(Secret::new(ADMIN_PASSWORD));
    config.projects.create_on_push = true;
    // A closed port: the gateway must serve without NATS, and tests must not depend on
    // (or disturb) a NATS server that happens to run on this machine. Tests that need
    // NATS start a [`NatsServer`] and point `nats_url` at it.
    config.nats_url = CLOSED_NATS_URL.to_owned();
    config
}

/// A NATS URL nothing listens on (port 1, tcpmux, is never served here).
pub const CLOSED_NATS_URL: &str = "nats://127.0.0.1:1";

/// Builds a gateway from `config` and serves it on 127.0.0.1:0 in this process for the
/// rest of the test; returns its address (`http://127.0.0.1:<port>`) and its state.
pub async fn serve_in_process(config: &Config) -> (String, AppState) {
    let state = berth_gateway::build_state(config.clone())
        .await
        .expect("gateway starts");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(berth_gateway::serve(
        listener,
        state.clone(),
        std::future::pending(),
    ));
    (address, state)
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// A gateway with authentication on (`auth.mode = "token"`), projects not created
    /// on push, and the administrator `admin` / [`ADMIN_PASSWORD`].
    pub async fn spawn_secure() -> TestApp {
        Self::spawn_secure_with(|_| {}).await
    }

    pub async fn spawn_secure_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
        Self::spawn_with(|config| {
            config.auth.mode = AuthMode::Token;
            config.projects.create_on_push = false;
            adjust(config);
        })
        .await
    }

    /// The management API as the bootstrap administrator.
    pub fn admin_api(&self) -> ApiClient {
        ApiClient::new(&self.registry.address, Some(("admin", ADMIN_PASSWORD)))
    }

    /// The management API as `username`.
    pub fn api_as(&self, username: &str, password: &str) -> ApiClient {
        ApiClient::new(&self.registry.address, Some((username, password)))
    }

    /// The management API without credentials.
    pub fn anonymous_api(&self) -> ApiClient {
        ApiClient::new(&self.registry.address, None)
    }

    /// Spawns with a configuration the test adjusts first.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
        let database = TestDatabase::create().await;
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&database, data_dir.path());
        adjust(&mut config);
        let (address, _) = serve_in_process(&config).await;
        let db = PgPoolOptions::new()
            .max_connections(2)
            .connect(&database.url)
            .await
            .unwrap();
        TestApp {
            host: address.trim_start_matches("http://").to_owned(),
            registry: RegistryClient::new(&address),
            db,
            data_dir,
            config,
            database,
        }
    }

    /// A local user with `password`, written straight to the database (for tests about
    /// something else than the users API); returns its id.
    pub async fn insert_user(&self, username: &str, password: &str) -> i64 {
        let hash = berth_access::password::hash(password).unwrap();
        sqlx::query_scalar(
            "INSERT INTO users (username, password_hash) VALUES ($1, $2) RETURNING id",
        )
        .bind(username)
        .bind(hash)
        .fetch_one(&self.db)
        .await
        .unwrap()
    }

    /// A project without owner, written straight to the database; returns its id.
    pub async fn insert_project(&self, name: &str, public: bool) -> i64 {
        sqlx::query_scalar("INSERT INTO projects (name, public) VALUES ($1, $2) RETURNING id")
            .bind(name)
            .bind(public)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// Gives `user_id` the Harbor role `role_id` in `project_id`, straight in the
    /// database.
    pub async fn insert_member(&self, project_id: i64, user_id: i64, role_id: i16) {
        sqlx::query(
            "INSERT INTO project_members (project_id, user_id, role_id) VALUES ($1, $2, $3)",
        )
        .bind(project_id)
        .bind(user_id)
        .bind(role_id)
        .execute(&self.db)
        .await
        .unwrap();
    }

    /// How many audit records match all of these.
    pub async fn audit_count(&self, operation: &str, resource_type: &str, resource: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM audit_logs
             WHERE operation = $1 AND resource_type = $2 AND resource = $3",
        )
        .bind(operation)
        .bind(resource_type)
        .bind(resource)
        .fetch_one(&self.db)
        .await
        .unwrap()
    }

    /// How many rows `table` holds.
    pub async fn count_rows(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// Where storage keeps the bytes of the sha256 blob `digest`.
    pub fn blob_file(&self, digest: &Digest) -> PathBuf {
        self.config
            .storage_root()
            .join("blobs/sha256")
            .join(&digest.hex()[..2])
            .join(digest.hex())
    }
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// What a pull asks for: every manifest type a registry may hold, so none is converted.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// The registry API of one gateway by base URL. A [`TestApp`] derefs to one; tests build
/// one for a gateway that is not a `TestApp` (a [`GatewayProcess`] that a test kills and
/// restarts) and for the reference registry.
///
/// Plain request helpers (`get_blob`, `patch_chunk`, `put_manifest`, …) return the
/// response for the test to judge; `push_…`, `…_ok` and `assert_…` helpers assert the
/// success they stand for.
#[derive(Clone)]
pub struct RegistryClient {
    pub client: reqwest::Client,
    /// `http://127.0.0.1:<port>`
    pub address: String,
}

async fn send(request: RequestBuilder) -> Response {
    request.send().await.unwrap()
}

impl RegistryClient {
    pub fn new(address: &str) -> RegistryClient {
        RegistryClient {
            client: reqwest::Client::new(),
            address: address.to_owned(),
        }
    }

    /// A client of the same registry that sends `Authorization: <value>` on every
    /// request (any value, so tests can send malformed ones too).
    pub fn with_authorization(&self, value: &str) -> RegistryClient {
        let mut headers = reqwest::header::HeaderMap::new();
        let mut value = reqwest::header::HeaderValue::from_str(value).unwrap();
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
        RegistryClient {
            client: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .unwrap(),
            address: self.address.clone(),
        }
    }

    /// A client of the same registry authenticating with HTTP Basic on every request.
    pub fn with_basic(&self, username: &str, password: &str) -> RegistryClient {
        use base64::Engine;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        self.with_authorization(&format!("Basic {encoded}"))
    }

    /// A client of the same registry sending `token` as a bearer token on every request.
    pub fn with_bearer(&self, token: &str) -> RegistryClient {
        self.with_authorization(&format!("Bearer {token}"))
    }

    /// `path` may be a path (`/v2/…`) or an absolute URL from a `Location` header.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{}", self.address, path)
        }
    }

    /// `GET` of a path or URL.
    pub async fn get(&self, path: &str) -> Response {
        send(self.client.get(self.url(path))).await
    }

    // --- Blobs ----------------------------------------------------------------------

    fn blob_url(&self, repo: &str, digest: impl Display) -> String {
        self.url(&format!("/v2/{repo}/blobs/{digest}"))
    }

    /// `GET /v2/<repo>/blobs/<digest>`.
    pub async fn get_blob(&self, repo: &str, digest: impl Display) -> Response {
        send(self.client.get(self.blob_url(repo, digest))).await
    }

    /// `HEAD /v2/<repo>/blobs/<digest>`.
    pub async fn head_blob(&self, repo: &str, digest: impl Display) -> Response {
        send(self.client.head(self.blob_url(repo, digest))).await
    }

    /// `DELETE /v2/<repo>/blobs/<digest>`.
    pub async fn delete_blob(&self, repo: &str, digest: impl Display) -> Response {
        send(self.client.delete(self.blob_url(repo, digest))).await
    }

    /// Asserts that `repo` serves exactly `bytes` as the blob `digest`, with that
    /// `Docker-Content-Digest`.
    pub async fn assert_blob(&self, repo: &str, digest: &Digest, bytes: &[u8]) {
        let what = format!("GET blob {digest} in {repo}");
        let response = expect_status(self.get_blob(repo, digest).await, 200, &what).await;
        assert_eq!(
            response.headers()["docker-content-digest"],
            digest.to_string(),
            "{what}"
        );
        let body = response.bytes().await.unwrap();
        // Not assert_eq!, which would print megabytes.
        assert!(
            body[..] == bytes[..],
            "{what}: other bytes ({} served, {} expected)",
            body.len(),
            bytes.len()
        );
    }

    /// `GET` of a blob as a client pulls it: asserts 200 and that the body hashes to
    /// `digest` (a sha256 one); returns the body.
    pub async fn pull_blob(&self, repo: &str, digest: &Digest) -> Vec<u8> {
        let url = self.blob_url(repo, digest);
        let response = send(self.client.get(&url)).await;
        let status = response.status();
        let bytes = response.bytes().await.unwrap().to_vec();
        assert_eq!(
            status,
            200,
            "GET {url}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
        );
        assert_eq!(
            &Digest::sha256_of(&bytes),
            digest,
            "GET {url}: the body does not hash to the digest"
        );
        bytes
    }

    // --- Blob pushes ----------------------------------------------------------------

    /// The monolithic push, `POST …/blobs/uploads/?digest=` with the whole blob, as a
    /// request: for tests that race it against something.
    pub fn post_blob_request(
        &self,
        repo: &str,
        digest: impl Display,
        bytes: &[u8],
    ) -> RequestBuilder {
        self.client
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
            .header("Content-Type", "application/octet-stream")
            .body(bytes.to_vec())
    }

    /// The monolithic push; the response, for assertions.
    pub async fn post_blob(&self, repo: &str, digest: impl Display, bytes: &[u8]) -> Response {
        send(self.post_blob_request(repo, digest, bytes)).await
    }

    /// Pushes `bytes` with a monolithic POST; asserts the blob was created and returns
    /// its digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let digest = Digest::sha256_of(bytes);
        let response = self.post_blob(repo, &digest, bytes).await;
        assert_blob_created(response, repo, &digest).await;
        digest
    }

    /// Pushes `bytes` with `POST`, then `PUT ?digest=` with the whole body; asserts the
    /// blob was created and returns its digest.
    pub async fn push_post_put(&self, repo: &str, bytes: &[u8]) -> Digest {
        let digest = Digest::sha256_of(bytes);
        let location = self.start_upload(repo).await;
        self.complete_upload_ok(repo, &location, &digest, bytes)
            .await;
        digest
    }

    /// Pushes `bytes` as a chunked upload (POST, one PATCH per `chunk_size`, PUT);
    /// asserts every step and returns the digest.
    pub async fn push_chunked(&self, repo: &str, bytes: &[u8], chunk_size: usize) -> Digest {
        let digest = Digest::sha256_of(bytes);
        let mut location = self.start_upload(repo).await;
        for (i, chunk) in bytes.chunks(chunk_size).enumerate() {
            location = self.patch_chunk_ok(&location, i * chunk_size, chunk).await;
        }
        self.complete_upload_ok(repo, &location, &digest, &[]).await;
        digest
    }

    /// `POST …/blobs/uploads/?mount=<digest>`, with `&from=<from>` if given.
    pub async fn mount_blob(
        &self,
        repo: &str,
        digest: impl Display,
        from: Option<&str>,
    ) -> Response {
        let mut path = format!("/v2/{repo}/blobs/uploads/?mount={digest}");
        if let Some(from) = from {
            path.push_str(&format!("&from={from}"));
        }
        send(self.client.post(self.url(&path))).await
    }

    // --- Upload sessions ------------------------------------------------------------

    /// `POST …/blobs/uploads/`: asserts the 202 of a new, empty upload (`Range: 0-0`, a
    /// `Location` in `repo` that ends in its `Docker-Upload-UUID`) and returns that
    /// `Location`, a path, so it stays usable when the gateway restarts on another port.
    pub async fn start_upload(&self, repo: &str) -> String {
        let response = send(
            self.client
                .post(self.url(&format!("/v2/{repo}/blobs/uploads/"))),
        )
        .await;
        let response = expect_status(response, 202, &format!("start upload in {repo}")).await;
        let headers = response.headers();
        assert_eq!(headers["range"], "0-0");
        assert_eq!(headers["content-length"], "0");
        let location = headers["location"].to_str().unwrap();
        assert!(
            location.starts_with(&format!("/v2/{repo}/blobs/uploads/")),
            "{location}"
        );
        let uuid = headers["docker-upload-uuid"].to_str().unwrap();
        assert!(
            location.ends_with(uuid),
            "{location} does not end in {uuid}"
        );
        location.to_owned()
    }

    /// `GET` of an upload's status.
    pub async fn upload_status(&self, location: &str) -> Response {
        self.get(location).await
    }

    /// The upload's `Range`, asserting a 204 status answer with `Location` and
    /// `Docker-Upload-UUID`.
    pub async fn upload_range(&self, location: &str) -> String {
        let response = self.upload_status(location).await;
        let response = expect_status(response, 204, &format!("GET {location}")).await;
        assert!(response.headers().contains_key("location"));
        assert!(response.headers().contains_key("docker-upload-uuid"));
        response.headers()["range"].to_str().unwrap().to_owned()
    }

    /// `DELETE` of an upload: cancels it.
    pub async fn cancel_upload(&self, location: &str) -> Response {
        send(self.client.delete(self.url(location))).await
    }

    /// `PATCH` of `chunk` with `Content-Range: <start>-<end>`.
    pub async fn patch_chunk(&self, location: &str, start: usize, chunk: &[u8]) -> Response {
        let end = start + chunk.len() - 1;
        send(
            self.client
                .patch(self.url(location))
                .header("Content-Type", "application/octet-stream")
                .header("Content-Range", format!("{start}-{end}"))
                .body(chunk.to_vec()),
        )
        .await
    }

    /// `PATCH` without `Content-Range` (or `Content-Type`): the body is appended to
    /// whatever the upload holds.
    pub async fn patch_body(&self, location: &str, body: impl Into<reqwest::Body>) -> Response {
        send(self.client.patch(self.url(location)).body(body)).await
    }

    /// [`Self::patch_chunk`], asserting that the upload took the chunk and now holds
    /// `0..start+len`; returns the next `Location`.
    pub async fn patch_chunk_ok(&self, location: &str, start: usize, chunk: &[u8]) -> String {
        let response = self.patch_chunk(location, start, chunk).await;
        assert_upload_accepted(response, start + chunk.len()).await
    }

    /// `PUT <location>?digest=` with an optional last chunk.
    pub async fn complete_upload(
        &self,
        location: &str,
        digest: impl Display,
        last_chunk: &[u8],
    ) -> Response {
        send(
            self.client
                .put(self.url(&with_query(location, &format!("digest={digest}"))))
                .header("Content-Type", "application/octet-stream")
                .body(last_chunk.to_vec()),
        )
        .await
    }

    /// [`Self::complete_upload`], asserting that it created the blob in `repo`.
    pub async fn complete_upload_ok(
        &self,
        repo: &str,
        location: &str,
        digest: &Digest,
        last_chunk: &[u8],
    ) {
        let response = self.complete_upload(location, digest, last_chunk).await;
        assert_blob_created(response, repo, digest).await;
    }

    // --- Manifests ------------------------------------------------------------------

    fn manifest_url(&self, repo: &str, reference: impl Display) -> String {
        self.url(&format!("/v2/{repo}/manifests/{reference}"))
    }

    /// `PUT /v2/<repo>/manifests/<reference>` as a request: for tests that race it.
    pub fn put_manifest_request(
        &self,
        repo: &str,
        reference: impl Display,
        media_type: &str,
        bytes: &[u8],
    ) -> RequestBuilder {
        self.client
            .put(self.manifest_url(repo, reference))
            .header("Content-Type", media_type)
            .body(bytes.to_vec())
    }

    /// `PUT /v2/<repo>/manifests/<reference>` with the given media type.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: impl Display,
        media_type: &str,
        bytes: &[u8],
    ) -> Response {
        send(self.put_manifest_request(repo, reference, media_type, bytes)).await
    }

    /// `GET /v2/<repo>/manifests/<reference>`, with no `Accept`.
    pub async fn get_manifest(&self, repo: &str, reference: impl Display) -> Response {
        send(self.client.get(self.manifest_url(repo, reference))).await
    }

    /// `HEAD /v2/<repo>/manifests/<reference>`.
    pub async fn head_manifest(&self, repo: &str, reference: impl Display) -> Response {
        send(self.client.head(self.manifest_url(repo, reference))).await
    }

    /// `DELETE /v2/<repo>/manifests/<reference>`.
    pub async fn delete_manifest(&self, repo: &str, reference: impl Display) -> Response {
        send(self.client.delete(self.manifest_url(repo, reference))).await
    }

    /// `GET` of a manifest as a client pulls it, `Accept`ing every manifest type:
    /// asserts 200 and that the body hashes to `Docker-Content-Digest` (a sha256 one);
    /// returns that digest, the media type and the bytes.
    pub async fn pull_manifest(
        &self,
        repo: &str,
        reference: impl Display,
    ) -> (Digest, String, Vec<u8>) {
        let url = self.manifest_url(repo, reference);
        let response = send(self.client.get(&url).header("Accept", MANIFEST_ACCEPT)).await;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap().to_vec();
        assert_eq!(
            status,
            200,
            "GET {url}: {}",
            String::from_utf8_lossy(&bytes)
        );
        let digest = headers
            .get("docker-content-digest")
            .unwrap_or_else(|| panic!("GET {url}: no Docker-Content-Digest"));
        let digest = Digest::parse(digest.to_str().unwrap()).unwrap();
        assert_eq!(
            Digest::sha256_of(&bytes),
            digest,
            "GET {url}: the body does not hash to Docker-Content-Digest"
        );
        let media_type = headers
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (digest, media_type, bytes)
    }

    /// Asserts that `repo:reference` is not there: `GET` is `MANIFEST_UNKNOWN` and `HEAD`
    /// a 404.
    pub async fn assert_no_manifest(&self, repo: &str, reference: impl Display) {
        let response = self.get_manifest(repo, &reference).await;
        assert_oci_error(response, 404, "MANIFEST_UNKNOWN").await;
        let response = self.head_manifest(repo, &reference).await;
        assert_eq!(response.status(), 404, "HEAD {repo}:{reference}");
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
        let digest = put_ok(self, repo, reference, OCI_MANIFEST, &manifest).await;
        (manifest, digest)
    }

    // --- Listings -------------------------------------------------------------------

    /// GETs `path` and returns the JSON body and the `rel="next"` link, asserting 200.
    pub async fn get_page(&self, path: &str) -> (serde_json::Value, Option<String>) {
        let response = self.get(path).await;
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

/// Asserts `response` has `status`, showing `what` and the body if not; hands the
/// response back for further checks.
pub async fn expect_status(response: Response, status: u16, what: &str) -> Response {
    let actual = response.status().as_u16();
    if actual != status {
        let text = response.text().await.unwrap_or_default();
        panic!("{what}: expected {status}, got {actual}: {text}");
    }
    response
}

/// Asserts the 201 that ends a blob push: `Location` is the blob in `repo` and
/// `Docker-Content-Digest` is `digest`.
pub async fn assert_blob_created(response: Response, repo: &str, digest: &Digest) {
    let response = expect_status(response, 201, &format!("push of {digest} to {repo}")).await;
    assert_eq!(
        response.headers()["location"],
        format!("/v2/{repo}/blobs/{digest}").as_str()
    );
    assert_eq!(
        response.headers()["docker-content-digest"],
        digest.to_string()
    );
}

/// Asserts the 202 of an upload step that leaves the upload holding `size` bytes;
/// returns the `Location` to continue at, as a path.
pub async fn assert_upload_accepted(response: Response, size: usize) -> String {
    let response = expect_status(response, 202, "upload step").await;
    assert_eq!(
        response.headers()["range"],
        format!("0-{}", size - 1).as_str(),
        "Range"
    );
    location_path(&response).expect("an upload step answers with a Location")
}

/// Asserts the 201 of a manifest push: `Location` is the manifest in `repo` by digest,
/// and `Docker-Content-Digest` is `digest`.
pub async fn assert_manifest_created(response: Response, repo: &str, digest: &Digest) {
    let response = expect_status(response, 201, &format!("PUT manifest {digest} in {repo}")).await;
    assert_eq!(
        response.headers()["location"],
        format!("/v2/{repo}/manifests/{digest}").as_str()
    );
    assert_eq!(
        response.headers()["docker-content-digest"],
        digest.to_string()
    );
}

/// PUTs `bytes` as `media_type` and asserts it was created; returns the manifest's digest.
pub async fn put_ok(
    registry: &RegistryClient,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> Digest {
    let digest = Digest::sha256_of(bytes);
    let response = registry
        .put_manifest(repo, reference, media_type, bytes)
        .await;
    assert_manifest_created(response, repo, &digest).await;
    digest
}

/// An image config made unique by `nonce`.
pub fn config_blob(nonce: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []}, "nonce": nonce,
    }))
    .unwrap()
}

/// An OCI image manifest over a config and layers given as (digest, size).
pub fn manifest_over(config: &(Digest, usize), layers: &[(Digest, usize)]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.0.to_string(), "size": config.1},
        "layers": layers.iter().map(|(d, s)| serde_json::json!({
            "mediaType": OCI_LAYER, "digest": d.to_string(), "size": s,
        })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// Builds (and pushes the blobs of) an OCI image manifest with the given layers.
pub async fn image_manifest(registry: &RegistryClient, repo: &str, layers: &[&[u8]]) -> Vec<u8> {
    let config = config_blob(&uuid::Uuid::new_v4().to_string());
    let config_digest = registry.push_blob(repo, &config).await;
    let mut layer_descriptors = Vec::new();
    for layer in layers {
        layer_descriptors.push((registry.push_blob(repo, layer).await, layer.len()));
    }
    manifest_over(&(config_digest, config.len()), &layer_descriptors)
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

/// Asserts an OCI error response with the given status and code; returns its message.
pub async fn assert_oci_error(response: Response, status: u16, code: &str) -> String {
    let error = assert_oci_error_json(response, status, code).await;
    error["message"].as_str().unwrap().to_owned()
}

/// [`assert_oci_error`], returning the whole error (`errors[0]`), for its `detail`.
pub async fn assert_oci_error_json(
    response: Response,
    status: u16,
    code: &str,
) -> serde_json::Value {
    let actual = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(
        actual, status,
        "expected {status} {code}, got {actual}: {text}"
    );
    let mut body: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("error body is JSON: {text}"));
    assert_eq!(body["errors"][0]["code"], code, "{text}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "error message is empty: {text}");
    body["errors"][0].take()
}

/// Random bytes for blobs and layers.
pub fn random_bytes(len: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

/// `bytes` as a streamed body of `piece`-sized chunks: sent chunked, without
/// `Content-Length`.
pub fn streamed(bytes: &[u8], piece: usize) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(piece).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

/// `url` with `query` appended after `?` or `&`.
pub fn with_query(url: &str, query: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{query}")
}

/// The target of a `Link: <target>; rel="next"` header, if present.
pub fn next_link(response: &Response) -> Option<String> {
    let link = response.headers().get("link")?.to_str().ok()?;
    assert!(link.ends_with("rel=\"next\""), "unexpected Link: {link}");
    let start = link.find('<')? + 1;
    let end = link.find('>')?;
    Some(link[start..end].to_owned())
}

/// A response's `Location` without scheme and host.
pub fn location_path(response: &Response) -> Option<String> {
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
            .env("BERTH_AUTH__MODE", "none")
            .env("BERTH_AUTH__ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("BERTH_PROJECTS__CREATE_ON_PUSH", "true")
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
        // Up to 60 s: start-up runs migrations, which a loaded CI machine may take a
        // while over.
        for _ in 0..1200 {
            if let Ok(r) = client.get(format!("{}/v2/", process.address)).send().await {
                if r.status() == 200 {
                    return process;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The data dir (and its log) is deleted with the failed test, so show the log.
        let log = std::fs::read_to_string(data_dir.join(format!("gateway-{port}.log")))
            .unwrap_or_default();
        panic!("berth-gateway did not start within 60 s; its log:\n{log}");
    }

    /// The registry API of this process.
    pub fn registry(&self) -> RegistryClient {
        RegistryClient::new(&self.address)
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

/// A client of the management API (`/api/v2.0`), with optional Basic credentials.
/// Paths are relative to `/api/v2.0` (`"/projects"`); helpers return the response for
/// the test to judge.
#[derive(Clone)]
pub struct ApiClient {
    pub client: reqwest::Client,
    /// `http://127.0.0.1:<port>`
    pub address: String,
    pub credentials: Option<(String, String)>,
}

impl ApiClient {
    pub fn new(address: &str, credentials: Option<(&str, &str)>) -> ApiClient {
        ApiClient {
            client: reqwest::Client::new(),
            address: address.to_owned(),
            credentials: credentials.map(|(u, p)| (u.to_owned(), p.to_owned())),
        }
    }

    /// A request to `/api/v2.0{path}` with this client's credentials.
    pub fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        let request = self
            .client
            .request(method, format!("{}/api/v2.0{}", self.address, path));
        match &self.credentials {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn head(&self, path: &str) -> Response {
        send(self.request(reqwest::Method::HEAD, path)).await
    }

    pub async fn delete(&self, path: &str) -> Response {
        send(self.request(reqwest::Method::DELETE, path)).await
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> Response {
        send(self.request(reqwest::Method::POST, path).json(&body)).await
    }

    pub async fn put(&self, path: &str, body: serde_json::Value) -> Response {
        send(self.request(reqwest::Method::PUT, path).json(&body)).await
    }

    pub async fn patch(&self, path: &str, body: serde_json::Value) -> Response {
        send(self.request(reqwest::Method::PATCH, path).json(&body)).await
    }

    /// `GET` that must answer 200 with JSON; returns the JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let response = expect_status(self.get(path).await, 200, path).await;
        response.json().await.unwrap()
    }

    /// `GET` of a list that must answer 200 with a JSON array: the items, and the
    /// `X-Total-Count` and `Link` headers where the answer has them.
    pub async fn get_list(
        &self,
        path: &str,
    ) -> (Vec<serde_json::Value>, Option<i64>, Option<String>) {
        let response = expect_status(self.get(path).await, 200, path).await;
        let total = response
            .headers()
            .get("x-total-count")
            .map(|_| total_count(&response));
        let link = response
            .headers()
            .get("link")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: serde_json::Value = response.json().await.unwrap();
        let items = body
            .as_array()
            .unwrap_or_else(|| panic!("GET {path}: not a list: {body}"))
            .clone();
        (items, total, link)
    }

    /// Creates a project (`public` or private) as this client; asserts 201.
    pub async fn create_project(&self, name: &str, public: bool) {
        let body = serde_json::json!({
            "project_name": name,
            "metadata": { "public": if public { "true" } else { "false" } },
        });
        expect_status(self.post("/projects", body).await, 201, "create project").await;
    }
}

/// Asserts an empty answer with `status`: no body and no content type (harborapi parses
/// any JSON-typed body).
pub async fn assert_empty(response: Response, status: u16, what: &str) {
    let response = expect_status(response, status, what).await;
    assert!(
        response.headers().get("content-type").is_none(),
        "{what}: content type on an empty answer"
    );
    assert!(response.bytes().await.unwrap().is_empty(), "{what}: a body");
}

/// [`assert_empty`] with 200.
pub async fn assert_empty_ok(response: Response, what: &str) {
    assert_empty(response, 200, what).await
}

/// The `id` of each item of a list answer, in order.
pub fn ids(items: &[serde_json::Value]) -> Vec<i64> {
    items.iter().map(|i| i["id"].as_i64().unwrap()).collect()
}

/// A list answer's `X-Total-Count`.
pub fn total_count(response: &Response) -> i64 {
    response.headers()["x-total-count"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Asserts a Harbor error body with `code` and the status; returns the message.
pub async fn assert_api_error(response: Response, status: u16, code: &str) -> String {
    assert_eq!(
        response.status().as_u16(),
        status,
        "status of {}",
        response.url()
    );
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "content type {content_type:?}"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], code, "error body {body}");
    body["errors"][0]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// A nats-server with JetStream for one test, on a free port with a temporary store;
/// killed (and its store removed) when dropped.
pub struct NatsServer {
    child: Child,
    /// Holds the store and the server's log.
    dir: TempDir,
    /// `nats://127.0.0.1:<port>`
    pub url: String,
}

impl NatsServer {
    /// Starts `/usr/sbin/nats-server` (or `NATS_SERVER_BIN`, or `nats-server` on the
    /// `PATH`) and waits until its JetStream API answers.
    pub async fn start() -> NatsServer {
        let binary = std::env::var_os("NATS_SERVER_BIN")
            .map(PathBuf::from)
            .or_else(|| {
                let debian = PathBuf::from("/usr/sbin/nats-server");
                debian.exists().then_some(debian)
            })
            .unwrap_or_else(|| PathBuf::from("nats-server"));
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(&binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path().join("store"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let server = NatsServer {
            child,
            dir,
            url: format!("nats://127.0.0.1:{port}"),
        };
        // Up to 30 s on a loaded machine; any answer from the JetStream API means it is up.
        for _ in 0..300 {
            if let Ok(client) = async_nats::connect(&server.url).await {
                if client.request("$JS.API.INFO", "".into()).await.is_ok() {
                    return server;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(server.dir.path().join("server.log")).unwrap_or_default();
        panic!(
            "nats-server at {} not ready within 30 s; its log:\n{log}",
            server.url
        );
    }

    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(&self.url).await.unwrap()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
