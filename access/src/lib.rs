//! Who may do what in Berth: local users, robot accounts, project roles, password and
//! secret hashing, registry bearer tokens, login throttling, the audit log, and the
//! remote registries replication talks to, with their credentials encrypted at rest.
//!
//! The gateway authenticates requests with it, and workers mint short-lived tokens with
//! it. It decides and records; it never serves HTTP, and it never stores or logs a
//! password, robot secret or token in clear.

pub mod audit;
pub mod authorize;
pub mod login_limiter;
pub mod members;
pub mod password;
pub mod principal;
pub mod registries;
pub mod robots;
pub mod role;
pub mod scope;
pub mod secrets;
pub mod token;
pub mod users;

pub use principal::Principal;
pub use role::{ProjectRole, RegistryAction};
pub use scope::{ResourceAccess, Scope};
