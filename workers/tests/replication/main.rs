//! The replicate worker's end-to-end tests (issue 6, "What the tests must show"): a
//! source Berth with auth on, `berth-workers replicate` processes, and real peers over
//! real sockets — Debian's `docker-registry` with htpasswd, a second Berth with token
//! auth, the fault-injecting proxy in front of them. Endpoints, policies and
//! executions are driven through the management API (and, in `harborapi`, through the
//! real Harbor client).
//!
//! Needs `target/debug/berth-gateway` (`cargo build -p berth-gateway`; scripts/test.sh
//! builds it), `/usr/sbin/nats-server`, `/usr/bin/docker-registry`, and for the
//! harborapi test the venv `scripts/deps.sh test` makes. `DATABASE_URL` names the
//! PostgreSQL server (default postgres://postgres@127.0.0.1:5432/postgres).

// The pipeline tests' harness (processes, the gateway, workers, job state), shared
// rather than copied; this suite uses part of it.
#[allow(dead_code, unused_imports)]
#[path = "../pipeline/harness.rs"]
mod pipeline_harness;

// registry-client's test support: docker-registry, the second Berth, the fault proxy,
// test images.
#[path = "../../../registry-client/tests/support/mod.rs"]
mod support;

mod harness;

mod caps;
mod faults;
mod filters;
mod harborapi;
mod lifecycle;
mod peers;
mod push;
mod triggers;
