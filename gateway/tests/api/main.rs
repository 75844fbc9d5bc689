//! End-to-end tests of the gateway over real HTTP, against a real PostgreSQL.
//! One test binary with a module per area, sharing the harness in `helpers`.

mod base;
mod blobs;
mod catalog;
mod concurrency;
mod crash;
mod helpers;
mod interop;
mod manifests;
mod oci_layout;
mod referrers;
mod shutdown;
mod skopeo;
mod tags;
mod uploads;
