//! Integration tests of the registry client against real peers over real sockets:
//! Debian's `docker-registry` with htpasswd auth, Berth's gateway with token auth, and
//! a fault-injecting proxy of our own in front of them.
//!
//! Needs `/usr/bin/docker-registry`, `/usr/sbin/nats-server`, PostgreSQL
//! (`DATABASE_URL`, default the local server) and `target/debug/berth-gateway`
//! (`cargo build -p berth-gateway`).

#[path = "../support/mod.rs"]
mod support;

mod berth;
mod docker_registry;
mod faults;
