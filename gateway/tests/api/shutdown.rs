//! Graceful shutdown: SIGTERM stops new connections, lets an upload in flight finish
//! and commit, and the process exits cleanly.

use std::time::Duration;

use berth_content::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::crash::{staged_bytes, stalled_request};
use crate::helpers::{random_bytes, GatewayProcess, TestDatabase};

const MIB: usize = 1024 * 1024;

#[tokio::test]
async fn sigterm_lets_an_upload_in_flight_finish() {
    let database = TestDatabase::create().await;
    let data_dir = tempfile::tempdir().unwrap();
    let mut gateway = GatewayProcess::start(&database.url, data_dir.path()).await;

    let body = random_bytes(4 * MIB);
    let digest = Digest::sha256_of(&body);
    let path = format!("/v2/shutdown/app/blobs/uploads/?digest={digest}");
    let mut stream = stalled_request(
        &gateway.host,
        "POST",
        &path,
        "application/octet-stream",
        &[],
        &body,
        MIB,
    )
    .await;
    // The handler is streaming the body once its first bytes reach the staging file.
    for _ in 0..600 {
        if staged_bytes(data_dir.path()) >= MIB as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        staged_bytes(data_dir.path()) >= MIB as u64,
        "upload never started streaming"
    );

    let pid = gateway.child.id() as libc::pid_t;
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);

    // New connections are refused once the listener closes...
    let probe = reqwest::Client::new();
    let mut refused = false;
    for _ in 0..200 {
        if probe
            .get(format!("{}/v2/", gateway.address))
            .send()
            .await
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        refused,
        "the gateway kept accepting connections after SIGTERM"
    );

    // ...but the request in flight completes and is acknowledged.
    stream.write_all(&body[MIB..]).await.unwrap();
    stream.flush().await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut response))
        .await
        .expect("response within a minute")
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 201"),
        "in-flight upload after SIGTERM: {response}"
    );

    let mut exit = None;
    for _ in 0..200 {
        if let Some(status) = gateway.child.try_wait().unwrap() {
            exit = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exit = exit.expect("the gateway exits after draining");
    assert!(exit.success(), "gateway exit status after SIGTERM: {exit}");

    // What was acknowledged is there after a restart.
    let restarted = GatewayProcess::start(&database.url, data_dir.path()).await;
    restarted
        .registry()
        .assert_blob("shutdown/app", &digest, &body)
        .await;
}
