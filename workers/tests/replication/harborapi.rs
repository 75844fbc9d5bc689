//! Replication through the real Harbor client: the source Berth (auth on), a
//! docker-registry with htpasswd as the destination and one replicate worker, then the
//! pytest suite in workers/tests/replication/harborapi drives harborapi (PyPI, pinned
//! in gateway/tests/harborapi/requirements.txt) against them.
//!
//! Python runs from the venv `scripts/deps.sh test` creates: `TEST_PYTHON` (which
//! `make test` sets), else ./var/venv/bin/python. Without it this test fails, never
//! skips, as gateway/tests/api/harborapi.rs does: a skipped client suite would hide
//! every incompatibility it exists to catch.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::harness::{docker_registry, Stack, ADMIN, ADMIN_PASSWORD};
use crate::support::registry::{PASSWORD, USERNAME};

/// Only stops a hung run from hanging the suite; the suite takes well under this.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(600);

/// The workspace root (the suite's paths are relative to it).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workers crate is in the workspace")
        .to_path_buf()
}

/// The venv's interpreter, or a failure telling how to make one.
fn test_python() -> PathBuf {
    let python = std::env::var_os("TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("var/venv/bin/python"));
    assert!(
        python.is_file(),
        "{} does not exist: run `scripts/deps.sh test` (it creates ./var/venv with \
         harborapi and pytest), or set TEST_PYTHON to an interpreter that has them; \
         `make test` does both",
        python.display()
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harborapi_drives_replication_end_to_end() {
    // Fail on a missing venv before spending time on the stack.
    let python = test_python();
    let mut stack = Stack::start().await;
    stack.start_replicator(4).await;
    let dest = docker_registry().await;

    let suite = "workers/tests/replication/harborapi";
    let mut command = tokio::process::Command::new(&python);
    command
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", suite])
        .env("BERTH_URL", &stack.p.gateway.address)
        .env("BERTH_ADMIN_USERNAME", ADMIN)
        .env("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("DEST_URL", &dest.url)
        .env("DEST_USERNAME", USERNAME)
        .env("DEST_PASSWORD", PASSWORD)
        // Keep the source tree clean of __pycache__.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(workspace())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let shown = format!("{} -m pytest -q {suite}", python.display());
    let output = match tokio::time::timeout(PYTHON_TIMEOUT, command.output()).await {
        Ok(output) => output.unwrap_or_else(|e| panic!("{shown}: {e}")),
        Err(_) => panic!("{shown} did not finish within {PYTHON_TIMEOUT:?}"),
    };
    let text = format!(
        "$ {shown}\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Shown with --nocapture: which client tests ran, not just that the suite passed.
    println!("{text}");
    assert!(
        output.status.success(),
        "the harborapi replication suite failed:\n{text}"
    );
}
