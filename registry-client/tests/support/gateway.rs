//! Berth's gateway as a child process with token auth: its own database (cloned from
//! the migrated template) and nats-server, the admin password known, and projects
//! created by the admin's first push.

use std::path::PathBuf;
use std::process::Command;

use berth_events::testing::{free_port, NatsServer, TestDatabase};
use tempfile::TempDir;

use super::{wait_until_listening, ChildProcess};

pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "Admin-Passw0rd";

pub struct Gateway {
    pub process: ChildProcess,
    /// `http://127.0.0.1:<port>`
    pub url: String,
    pub port: u16,
    pub data_dir: PathBuf,
    _nats: NatsServer,
    _database: TestDatabase,
    _dir: TempDir,
}

/// `target/debug/berth-gateway`, found from this test binary's own path
/// (`target/debug/deps/client-…`): a test cannot ask cargo for another package's
/// binary. `BERTH_GATEWAY_BIN` overrides.
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BERTH_GATEWAY_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let gateway = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary is in target/<profile>/deps")
        .join("berth-gateway");
    assert!(
        gateway.exists(),
        "{} does not exist: build it first with `cargo build -p berth-gateway`",
        gateway.display()
    );
    gateway
}

impl Gateway {
    /// Staging data of uploads in progress (`<storage root>/uploads/<id>`), whatever
    /// the storage root's name below the data directory.
    pub fn uploads(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.data_dir) else {
            return found;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            if let Ok(uploads) = std::fs::read_dir(entry.path().join("uploads")) {
                found.extend(uploads.filter_map(|e| e.ok()).map(|e| e.path()));
            }
        }
        found
    }

    /// Starts a gateway with token auth; `extra_env` adds `BERTH_…` settings.
    pub async fn start(extra_env: &[(&str, &str)]) -> Gateway {
        let database = TestDatabase::create().await;
        let nats = NatsServer::start().await;
        let dir = tempfile::tempdir().expect("temporary directory");
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir).expect("data directory");
        let port = free_port();
        let mut command = Command::new(binary());
        command
            .env("BERTH_LISTEN", format!("127.0.0.1:{port}"))
            .env("BERTH_DATABASE_URL", &database.url)
            .env("BERTH_DATABASE_MAX_CONNECTIONS", "6")
            .env("BERTH_DATA_DIR", &data_dir)
            .env("BERTH_AUTH__MODE", "token")
            .env("BERTH_AUTH__ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("BERTH_PROJECTS__CREATE_ON_PUSH", "true")
            .env("BERTH_STORAGE__FSYNC", "false")
            .env("BERTH_SHUTDOWN_GRACE_SECS", "2")
            .env("BERTH_NATS_URL", nats.url())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(extra_env.iter().copied());
        let mut process =
            ChildProcess::spawn("berth-gateway", command, &dir.path().join("gateway.log"));
        let url = format!("http://127.0.0.1:{port}");
        wait_until_listening(&mut process, &format!("{url}/v2/")).await;
        Gateway {
            process,
            url,
            port,
            data_dir,
            _nats: nats,
            _database: database,
            _dir: dir,
        }
    }
}
