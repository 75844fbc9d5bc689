//! Berth's workers: one binary, one subcommand per worker kind, each a handler on the
//! consumer runtime of `berth-events`. Every process also runs the outbox relay (one
//! leads cluster-wide), the scheduler and the control listener, so a single
//! `berth-workers echo` is a complete pipeline beside a gateway.
//!
//! `main.rs` only parses arguments, sets up logging and waits for signals; `process`
//! is the lifecycle (start, register, run, drain), testable in process.

pub mod cli;
pub mod config;
pub mod kinds;
pub mod process;
