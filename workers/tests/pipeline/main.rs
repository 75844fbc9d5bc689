//! The event pipeline's acceptance tests (issue 5, "What the tests must show"): real
//! PostgreSQL, a real nats-server with JetStream, the gateway and `berth-workers echo`
//! processes, started per test by the harness.
//!
//! Needs `target/debug/berth-gateway` (`cargo build -p berth-gateway`; scripts/test.sh
//! builds it) and `/usr/sbin/nats-server`; `DATABASE_URL` names the PostgreSQL server
//! (default postgres://postgres@127.0.0.1:5432/postgres).

mod harness;

mod cancel;
mod crash;
mod events_once;
mod nats_outage;
mod pause;
mod poison;
mod retries;
mod schedules;
mod shared_consumer;
