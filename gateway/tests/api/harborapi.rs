//! The management API through the real Harbor client: a secure gateway with one pushed
//! image, then the pytest suite in gateway/tests/harborapi drives harborapi (PyPI,
//! pinned) against it. Also validates `/api/v2.0/openapi.json` with
//! openapi-spec-validator.
//!
//! Python runs from the venv `scripts/deps.sh test` creates; `make test` passes its
//! interpreter as `TEST_PYTHON`. Without it these tests fail, never skip: a skipped
//! client suite would hide every incompatibility it exists to catch.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::helpers::{expect_status, TestApp, ADMIN_PASSWORD};

/// The whole suite takes seconds; this only stops a hung run from hanging `make test`.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(600);

/// Where the image the suite reads is pushed. A nested repository name, so harborapi's
/// double URL-encoding of `app/web` (`app%252Fweb`) is exercised on every call.
const PROJECT: &str = "team";
const REPOSITORY: &str = "app/web";
const TAG: &str = "1.0";
/// The prefix of every name the suite creates, so the audit rows can be checked here.
const PREFIX: &str = "hapi";

/// The venv's interpreter, or a failure telling how to make one.
fn test_python() -> PathBuf {
    let Some(python) = std::env::var_os("TEST_PYTHON") else {
        panic!(
            "TEST_PYTHON is not set: run `scripts/deps.sh test` (it creates ./var/venv with \
             harborapi, pytest and openapi-spec-validator) and set \
             TEST_PYTHON=$PWD/var/venv/bin/python, or run `make test`, which does both"
        );
    };
    let python = PathBuf::from(python);
    assert!(
        python.is_file(),
        "TEST_PYTHON={} does not exist: run `scripts/deps.sh test` to create the venv",
        python.display()
    );
    python
}

/// Runs `python args…` with `env`, returning whether it succeeded and its output.
async fn run_python(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let python = test_python();
    let mut command = tokio::process::Command::new(&python);
    command
        .args(args)
        .envs(env.iter().copied())
        // Keep the source tree clean of __pycache__ and .pytest_cache.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let shown = format!("{} {}", python.display(), args.join(" "));
    let output = match tokio::time::timeout(PYTHON_TIMEOUT, command.output()).await {
        Ok(output) => output.unwrap_or_else(|e| panic!("{shown}: {e}")),
        Err(_) => panic!("{shown} did not finish within {PYTHON_TIMEOUT:?}"),
    };
    let text = format!(
        "$ {shown}\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harborapi_client_suite_passes() {
    // Fail on a missing venv before spending time on the gateway.
    test_python();
    let app = TestApp::spawn_secure().await;
    app.admin_api().create_project(PROJECT, false).await;
    let repo = format!("{PROJECT}/{REPOSITORY}");
    app.registry
        .with_basic("admin", ADMIN_PASSWORD)
        .push_image(
            &repo,
            TAG,
            &[b"harborapi layer one", b"harborapi layer two"],
        )
        .await;

    let url = format!("{}/api/v2.0", app.registry.address);
    let suite = Path::new("tests").join("harborapi");
    let (ok, output) = run_python(
        &[
            "-m",
            "pytest",
            &suite.display().to_string(),
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        &[
            ("HARBOR_URL", &url),
            ("HARBOR_USERNAME", "admin"),
            ("HARBOR_PASSWORD", ADMIN_PASSWORD),
            ("HARBOR_PROJECT", PROJECT),
            ("HARBOR_REPOSITORY", REPOSITORY),
            ("HARBOR_TAG", TAG),
            ("HARBOR_PREFIX", PREFIX),
        ],
    )
    .await;
    // Shown with --nocapture: which client tests ran, not just that the suite passed.
    println!("{output}");
    assert!(ok, "the harborapi suite failed:\n{output}");

    // What the suite did through the client is in the audit log exactly once each.
    let project = format!("{PREFIX}-proj");
    assert_eq!(app.audit_count("create", "project", &project).await, 1);
    assert_eq!(app.audit_count("update", "project", &project).await, 1);
    assert_eq!(
        app.audit_count("delete", "project", &format!("{PREFIX}-empty"))
            .await,
        1
    );
    let robot = format!("robot${PROJECT}+{PREFIX}-ci");
    assert_eq!(app.audit_count("create", "robot", &robot).await, 1);
    assert_eq!(app.audit_count("delete", "robot", &robot).await, 1);
    let tag = format!("{repo}:{PREFIX}-extra");
    assert_eq!(app.audit_count("create", "tag", &tag).await, 1);
    assert_eq!(app.audit_count("delete", "tag", &tag).await, 1);
    // The non-empty project survived its refused delete.
    let response = app.admin_api().get(&format!("/projects/{PROJECT}")).await;
    expect_status(response, 200, "GET the project whose delete was refused").await;
}

#[tokio::test]
async fn openapi_document_validates() {
    test_python();
    let app = TestApp::spawn_secure().await;
    // Anonymous: the document describes the API, it does not need credentials.
    let response = app.anonymous_api().get("/openapi.json").await;
    let response = expect_status(response, 200, "GET /api/v2.0/openapi.json").await;
    let document: serde_json::Value = response.json().await.unwrap();
    assert!(
        document["openapi"].as_str().unwrap_or("").starts_with("3."),
        "not an OpenAPI 3 document: {}",
        document["openapi"]
    );
    let paths = document["paths"].as_object().expect("paths is an object");
    for expected in [
        "/api/v2.0/projects",
        "/api/v2.0/robots",
        "/api/v2.0/audit-logs",
    ] {
        assert!(paths.contains_key(expected), "{expected} is not documented");
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&document).unwrap()).unwrap();
    let (ok, output) = run_python(
        &["-m", "openapi_spec_validator", &file.display().to_string()],
        &[],
    )
    .await;
    assert!(
        ok,
        "openapi-spec-validator rejected /api/v2.0/openapi.json:\n{output}"
    );
}
