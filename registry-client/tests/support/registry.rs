//! Debian's `docker-registry` (distribution 2.8) as a child process on a free port,
//! with its filesystem storage in a temporary directory and, optionally, htpasswd
//! auth.

use std::path::PathBuf;
use std::process::Command;

use berth_events::testing::free_port;
use tempfile::TempDir;

use super::{wait_until_listening, ChildProcess};

pub const USERNAME: &str = "replicator";
pub const PASSWORD: &str = "s3cret-Passw0rd";

pub struct DockerRegistry {
    pub process: ChildProcess,
    /// `http://127.0.0.1:<port>`
    pub url: String,
    pub port: u16,
    /// The storage root (`docker/registry/v2/...` below it).
    pub storage: PathBuf,
    _dir: TempDir,
}

/// The binary: `DOCKER_REGISTRY_BIN`, else Debian's path.
fn binary() -> PathBuf {
    std::env::var_os("DOCKER_REGISTRY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/docker-registry"))
}

impl DockerRegistry {
    /// A registry with htpasswd auth for [`USERNAME`]/[`PASSWORD`].
    pub async fn start_with_auth() -> DockerRegistry {
        DockerRegistry::start(true).await
    }

    /// A registry anyone may use.
    pub async fn start_open() -> DockerRegistry {
        DockerRegistry::start(false).await
    }

    async fn start(auth: bool) -> DockerRegistry {
        let bin = binary();
        assert!(
            bin.exists(),
            "{} is missing: apt-get install -y docker-registry (scripts/deps.sh does)",
            bin.display()
        );
        let dir = tempfile::tempdir().expect("temporary directory");
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).expect("storage directory");
        let port = free_port();
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: test-secret-not-used-elsewhere\n",
            storage = storage.display()
        );
        if auth {
            // Cost 4: the lowest bcrypt allows; docker-registry checks it on every
            // request, and the test's requests are many.
            let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt hash");
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{USERNAME}:{hash}\n")).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write config");
        let mut command = Command::new(bin);
        command.arg("serve").arg(&config_path);
        let mut process =
            ChildProcess::spawn("docker-registry", command, &dir.path().join("registry.log"));
        let url = format!("http://127.0.0.1:{port}");
        wait_until_listening(&mut process, &format!("{url}/v2/")).await;
        DockerRegistry {
            process,
            url,
            port,
            storage,
            _dir: dir,
        }
    }

    /// Upload sessions in progress for `repository`: directories under `_uploads`
    /// that still have their `startedat` file. (distribution 2.8's `DELETE` of an
    /// upload removes its data and `startedat` but leaves the empty `hashstates`
    /// directories behind; the session is gone: a `GET` on its URL is 404.)
    pub fn uploads(&self, repository: &str) -> Vec<String> {
        let dir = self
            .storage
            .join("docker/registry/v2/repositories")
            .join(repository)
            .join("_uploads");
        match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().join("startedat").exists() || e.path().join("data").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}
