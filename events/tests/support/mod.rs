//! A nats-server with JetStream per test, on a free port with a temporary store, killed
//! when the test ends (pass or fail).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;

pub struct NatsServer {
    child: Child,
    /// The store directory, removed on drop.
    dir: PathBuf,
    pub url: String,
}

/// The nats-server binary: `NATS_SERVER_BIN`, else Debian's path, else `PATH`.
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(path);
    }
    let debian = PathBuf::from("/usr/sbin/nats-server");
    if debian.exists() {
        return debian;
    }
    PathBuf::from("nats-server")
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

impl NatsServer {
    pub async fn start() -> NatsServer {
        NatsServer::start_on(free_port()).await
    }

    pub fn free_port() -> u16 {
        free_port()
    }

    pub async fn start_on(port: u16) -> NatsServer {
        let dir = std::env::temp_dir().join(format!("berth-nats-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create store dir");
        let log = std::fs::File::create(dir.join("server.log")).expect("log file");
        let child = Command::new(binary())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.join("store"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        let server = NatsServer {
            child,
            dir,
            url: format!("nats://127.0.0.1:{port}"),
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Any answer from the JetStream API means JetStream is up. (async-nats
            // 0.42's `query_account` cannot parse nats-server 2.9's answer.)
            if let Ok(client) = async_nats::connect(&self.url).await {
                if client.request("$JS.API.INFO", "".into()).await.is_ok() {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!("nats-server at {} not ready: {}", self.url, self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(&self.url).await.expect("connect")
    }

    pub async fn jetstream(&self) -> jetstream::Context {
        jetstream::new(self.client().await)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A throwaway database on the server of `DATABASE_URL` (default 127.0.0.1:5432),
/// migrated from `migrations/`, dropped when the guard goes.
pub struct TestDb {
    pub name: String,
    pub pool: sqlx::PgPool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

fn admin_options() -> sqlx::postgres::PgConnectOptions {
    use std::str::FromStr;
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    sqlx::postgres::PgConnectOptions::from_str(&url).expect("DATABASE_URL is a PostgreSQL URL")
}

impl TestDb {
    pub async fn create() -> TestDb {
        use sqlx::ConnectOptions;
        let name = format!("berth_events_rt_{}", uuid::Uuid::new_v4().simple());
        let mut admin = admin_options()
            .connect()
            .await
            .expect("connect to PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect_with(admin_options().database(&name))
            .await
            .expect("connect to the test database");
        MIGRATOR.run(&pool).await.expect("migrations apply");
        TestDb { name, pool }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot await; a short-lived thread with its own runtime does.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                use sqlx::ConnectOptions;
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

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what` after
/// `timeout` (generous: the machine is small and busy).
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
