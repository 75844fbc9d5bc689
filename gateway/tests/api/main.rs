//! End-to-end tests of the gateway over real HTTP, against a real PostgreSQL.
//! One test binary with a module per area, sharing the harness in `helpers`.

mod base;
mod helpers;
