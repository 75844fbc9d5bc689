//! Test support (the `testing` feature, for tests only): a throwaway PostgreSQL database
//! cloned from a migrated template, and a nats-server with JetStream as a child process
//! that a test can stop and start again. berth-events' own tests and the workers'
//! pipeline tests share this one copy.
//!
//! Everything here panics on failure: it only runs inside tests, where a panic that
//! names the cause is the report wanted.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

/// How long a server gets to become ready: generous, since the machines these tests
/// run on are small and busy, and the deadline only matters when something is broken.
const READY_DEADLINE: Duration = Duration::from_secs(60);

// --- PostgreSQL --------------------------------------------------------------------

/// The migrations the gateway runs at start, applied once to a template database that
/// each test clones: cloning takes milliseconds, migrating for every test would not.
static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Held while the template is built and cloned: tests and test binaries race to build
/// it, and PostgreSQL refuses to clone a template someone is connected to.
const TEMPLATE_LOCK: i64 = 4242002;

/// The server tests create their databases on: `DATABASE_URL` (any database of it),
/// else the local default.
fn admin_options() -> PgConnectOptions {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    PgConnectOptions::from_str(&url)
        .unwrap_or_else(|e| panic!("DATABASE_URL is not a PostgreSQL URL: {e}"))
}

/// The template's name changes whenever the migrations do, so a stale template is
/// never cloned. (`DefaultHasher` may hash differently after a toolchain upgrade; that
/// only builds one more template.)
fn template_name() -> String {
    let mut hasher = DefaultHasher::new();
    for migration in MIGRATOR.iter() {
        migration.version.hash(&mut hasher);
        migration.checksum.hash(&mut hasher);
    }
    format!("berth_events_template_{:016x}", hasher.finish())
}

/// A database of its own for one test, cloned from the migrated template, dropped
/// (best effort) when the guard goes.
pub struct TestDatabase {
    pub name: String,
    /// Its URL, for child processes (gateway, workers).
    pub url: String,
    /// A pool on it for the test itself.
    pub pool: PgPool,
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        let admin = admin_options();
        let mut conn = admin
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect to PostgreSQL (DATABASE_URL): {e}"));
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(TEMPLATE_LOCK)
            .execute(&mut conn)
            .await
            .expect("take the template lock");
        let template = template_name();
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&template)
                .fetch_one(&mut conn)
                .await
                .expect("look for the template");
        if !exists {
            // Built under another name and renamed when complete: a run that dies
            // half-way never leaves a template without all its migrations.
            let building = format!("{template}_building");
            for statement in [
                format!("DROP DATABASE IF EXISTS {building}"),
                format!("CREATE DATABASE {building}"),
            ] {
                sqlx::query(&statement)
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("{statement}: {e}"));
            }
            let mut template_conn = admin
                .clone()
                .database(&building)
                .connect()
                .await
                .expect("connect to the template being built");
            MIGRATOR
                .run(&mut template_conn)
                .await
                .expect("migrations apply to the template");
            template_conn
                .close()
                .await
                .expect("close the template connection");
            sqlx::query(&format!("ALTER DATABASE {building} RENAME TO {template}"))
                .execute(&mut conn)
                .await
                .expect("rename the template");
        }
        let name = format!("berth_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .execute(&mut conn)
            .await
            .expect("clone the template");
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(TEMPLATE_LOCK)
            .execute(&mut conn)
            .await
            .expect("release the template lock");
        let options = admin.database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options.clone())
            .await
            .expect("connect to the test database");
        TestDatabase {
            url: options.to_url_lossy().to_string(),
            name,
            pool,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot await, and may run inside or outside a runtime: a short-lived
        // thread with its own runtime does the async work either way.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = admin_options().connect().await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

// --- NATS --------------------------------------------------------------------------

/// A free TCP port on 127.0.0.1 (free when asked; nothing reserves it).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// The nats-server binary: `NATS_SERVER_BIN`, else Debian's path, else `PATH`'s.
fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(path);
    }
    let debian = PathBuf::from("/usr/sbin/nats-server");
    if debian.exists() {
        return debian;
    }
    PathBuf::from("nats-server")
}

/// A nats-server with JetStream for one test, on its own port with a temporary store.
/// It can be stopped and started again on the same port and store (its streams
/// survive, as in production); it is killed and its directory removed on drop.
pub struct NatsServer {
    port: u16,
    /// The store (`store/`) and the server's log (`server.log`).
    dir: PathBuf,
    /// `None` while stopped.
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server on a free port and waits until JetStream answers.
    pub async fn start() -> NatsServer {
        NatsServer::start_on(free_port()).await
    }

    /// Starts a server on `port` and waits until JetStream answers.
    pub async fn start_on(port: u16) -> NatsServer {
        let dir = std::env::temp_dir().join(format!("berth-nats-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create the NATS store directory");
        let mut server = NatsServer {
            port,
            dir,
            child: None,
        };
        server.restart().await;
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's log (every start's output, in order).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the server again after [`stop`](Self::stop) or [`kill`](Self::kill), on
    /// the same port and store, and waits until JetStream answers.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        let binary = nats_server_binary();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the NATS log");
        let stdout = log.try_clone().expect("clone the log handle");
        let child = Command::new(&binary)
            .arg("-js")
            .args(["-a", "127.0.0.1"])
            .args(["-p", &self.port.to_string()])
            .arg("-sd")
            .arg(self.dir.join("store"))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start {}: {e} (install nats-server, or name it in NATS_SERVER_BIN)",
                    binary.display()
                )
            });
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// Polls until `$JS.API.INFO` answers without an error, which it does once
    /// JetStream has recovered its store. (async-nats 0.42's typed account info does
    /// not parse nats-server 2.9's answer.)
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("nats-server exited at start ({status}): {}", self.log());
            }
            let last = match self.jetstream_info().await {
                Ok(()) => return,
                Err(last) => last,
            };
            if Instant::now() > deadline {
                panic!(
                    "nats-server at {} not ready within {READY_DEADLINE:?} ({last}): {}",
                    self.url(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn jetstream_info(&self) -> Result<(), String> {
        let client = tokio::time::timeout(Duration::from_secs(2), async_nats::connect(self.url()))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| format!("connect: {e}"))?;
        let reply = client
            .request("$JS.API.INFO", "".into())
            .await
            .map_err(|e| format!("JetStream info: {e}"))?;
        let info: serde_json::Value = serde_json::from_slice(&reply.payload)
            .map_err(|e| format!("JetStream info is not JSON: {e}"))?;
        match info.get("error") {
            None => Ok(()),
            Some(error) => Err(format!("JetStream info: {error}")),
        }
    }

    /// Stops the server with SIGTERM, so it flushes its store like an orderly
    /// shutdown, and waits until it has exited (killed after 20 s).
    pub async fn stop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        if child.try_wait().ok().flatten().is_none() {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: `kill` only sends a signal; the pid is our own unreaped
                // child, so it cannot have been recycled for another process.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                self.child = None;
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
    }

    /// SIGKILL: the server gets no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A new connection (a fresh one each call, so a test never holds a connection
    /// across a restart unless it means to).
    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url())
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url()))
    }

    /// A JetStream context on a new connection.
    pub async fn jetstream(&self) -> jetstream::Context {
        jetstream::new(self.client().await)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
