//! End-to-end tests of the gateway over real HTTP, against a real PostgreSQL.
//! One test binary with a module per area, sharing the harness in `helpers`.

mod api_content;
mod api_projects;
mod api_users;
mod auth;
mod base;
mod blobs;
mod catalog;
mod concurrency;
mod crash;
mod harborapi;
mod helpers;
mod interop;
mod jobs;
mod manifests;
mod oci_layout;
mod outbox;
mod referrers;
mod registries;
mod replication;
mod replication_executions;
mod schedules;
mod shutdown;
mod skopeo;
mod tags;
mod uploads;
