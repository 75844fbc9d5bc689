//! Runs every loadtest scenario, at toy sizes, against Debian's docker-registry on a
//! loopback port, and checks the failure path and the report. Fails, rather than
//! skipping, where docker-registry is not installed: `make test` installs it.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Registry {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn docker_registry() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("docker-registry"))
        .find(|p| p.is_file())
}

/// A bcrypt hash (cost 5, as `htpasswd -B` makes) of [`PASSWORD`]: a test fixture.
const HTPASSWD: &str = "bench:$2b$05$y2cflbP3BGmb.XQPxErWD.bzvehkRhzh078969UwNRb0ZxmMpmyku\n";
const PASSWORD: &str = "loadtest-Passw0rd";

fn start(bin: &Path) -> Registry {
    start_with(bin, false)
}

/// docker-registry, with htpasswd authentication (user `bench`) when `htpasswd`.
fn start_with(bin: &Path, htpasswd: bool) -> Registry {
    let dir = tempfile::tempdir().unwrap();
    let auth = if htpasswd {
        let file = dir.path().join("htpasswd");
        std::fs::write(&file, HTPASSWD).unwrap();
        format!(
            "auth:\n  htpasswd:\n    realm: loadtest\n    path: {}\n",
            file.display()
        )
    } else {
        String::new()
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n{auth}",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let child = Command::new(bin)
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "docker-registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Registry {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

fn loadtest(args: &[&str]) -> Output {
    loadtest_with_password(args, None)
}

fn loadtest_with_password(args: &[&str], password: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_loadtest"));
    command.args(args).env_remove("LOADTEST_PASSWORD");
    if let Some(password) = password {
        command.env("LOADTEST_PASSWORD", password);
    }
    command.output().unwrap()
}

#[test]
fn basic_auth_against_htpasswd_registry() {
    let bin = docker_registry().expect(
        "docker-registry is not installed: apt-get install docker-registry (make test does)",
    );
    let reg = start_with(&bin, true);
    let args = [
        "push-images,get-manifest",
        "--target",
        &reg.url,
        "--repo",
        "lt/auth",
        "--count",
        "4",
        "--concurrency",
        "2",
        "--duration-secs",
        "1",
        "--json",
        "--username",
        "bench",
    ];
    let out = loadtest_with_password(&args, Some(PASSWORD));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadtest failed:\n{stderr}");
    let recs: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 2);
    for rec in &recs {
        assert_eq!(rec["auth"], "basic", "{rec}");
        assert!(rec.get("token_requests").is_none(), "{rec}");
    }
    assert!(recs[0]["images_per_s"].as_f64().unwrap() > 0.0);
    assert!(recs[1]["req_per_s"].as_f64().unwrap() > 0.0);

    // A wrong password fails at login, naming the refusal.
    let out = loadtest_with_password(&args, Some("wrong"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("with credentials: expected 200 OK, got 401"),
        "{err}"
    );
    // No password at all is a usage error.
    let out = loadtest_with_password(&args, None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("LOADTEST_PASSWORD"));
    // Without credentials the registry refuses the first request.
    let out = loadtest(&["get-manifest", "--target", &reg.url, "--repo", "lt/auth"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

#[test]
fn scenarios_against_docker_registry() {
    let bin = docker_registry().expect(
        "docker-registry is not installed: apt-get install docker-registry (make test does)",
    );
    let reg = start(&bin);
    let pid = reg.child.id().to_string();
    let out = loadtest(&[
        "all",
        "--target",
        &reg.url,
        "--repo",
        "lt/test",
        "--size-mib",
        "3",
        "--chunk-mib",
        "1",
        "--count",
        "6",
        "--concurrency",
        "3",
        "--duration-secs",
        "1",
        "--watch-pid",
        &pid,
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadtest failed:\n{stderr}");
    let recs: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = recs
        .iter()
        .map(|r| r["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "push-blob",
            "pull-blob",
            "chunked-upload",
            "push-images",
            "get-manifest",
            "head-blob",
            "concurrent-push"
        ]
    );
    let f = |i: usize, k: &str| {
        recs[i][k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} in {}", recs[i]))
    };
    assert!(f(0, "mib_per_s") > 0.0);
    assert!(f(1, "mib_per_s") > 0.0);
    assert_eq!(recs[1]["verified"], true);
    assert_eq!(recs[2]["chunks"], 3);
    assert!(f(3, "images_per_s") > 0.0);
    assert_eq!(recs[3]["count"], 6);
    assert!(f(3, "p99_ms") >= f(3, "p50_ms"));
    for i in [4, 5] {
        assert!(f(i, "req_per_s") > 0.0);
        assert!(f(i, "requests") > 0.0);
        assert!(f(i, "p99_ms") >= f(i, "p50_ms"));
        assert_eq!(recs[i]["concurrency"], 3);
    }
    assert!(f(6, "vmhwm_mib") > 1.0);
    assert_eq!(
        stderr.lines().count(),
        7,
        "one human line per scenario:\n{stderr}"
    );

    // The report of a registry against itself: every ratio is 1.
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("r.jsonl");
    std::fs::write(&results, stdout.as_bytes()).unwrap();
    let r = results.to_str().unwrap();
    let out = loadtest(&["report", "--berth", r, "--baseline", r]);
    assert!(out.status.success());
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(md.starts_with("| scenario | metric | Berth | docker-registry | ratio |"));
    assert!(md.contains("| pull 3 MiB blob | MiB/s |"), "{md}");
    assert!(md.contains("| 1.00× | ≥ 1.5× | **no** |"), "{md}");

    // Unexpected answers fail loudly, with the registry's body in the message.
    let out = loadtest(&[
        "push-blob",
        "--target",
        &reg.url,
        "--repo",
        "Bad_Repo",
        "--size-mib",
        "1",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected 202 Accepted, got 404"), "{err}");
    assert!(err.contains("page not found"), "{err}");
}

#[test]
fn unreachable_target_fails() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = loadtest(&["head-blob", "--target", &format!("http://127.0.0.1:{port}")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a registry listening"));
    let out = loadtest(&["no-such-scenario"]);
    assert!(!out.status.success());
}
