//! The tokio driver: sockets, timers, files, signals and the HTTP status API. The only part of
//! p2psip that does I/O or reads the clock.
//!
//! # Layout
//! - [`node`]: the node runtime ([`run`]): listeners, the event loop that owns the
//!   [`Peer`](crate::peer::Peer), TCP connections, the settings file.
//! - [`http`]: the local status and lookup API and its JSON ([`http::status`]); what its
//!   handlers ask the event loop ([`http::query`]).
//! - [`files`]: what a node keeps in its data directory: the enrolled identity and
//!   configuration document ([`files::data_dir`]), root, key and chain
//!   ([`files::identity`]), local accounts ([`files::accounts`]), stored records on disk
//!   ([`files::record_store`], redb).
//! - [`ca`]: the enrollment CA as a program (`p2psip ca`): its directory ([`ca::files`]), its
//!   HTTPS endpoint ([`ca::server`]), verification mail ([`ca::smtp`]).
//! - [`client`]: one-shot clients: `p2psip enroll` ([`client::enroll`]) and `p2psip status`
//!   ([`client::status`]).
//! - [`demo`]: `p2psip demo`, a CA and three nodes as child processes on loopback.
//! - `signal`: SIGINT/SIGTERM, shared by the node and the CA server.
//!
//! TCP connections are capped per listener and per source, and closed on deadlines
//! (`node::event_loop`, `node::connection`). Not here yet: TLS.

pub mod ca;
pub mod client;
pub mod demo;
mod error;
pub mod files;
pub mod http;
pub mod node;
pub mod service;
mod signal;

pub use client::status::{fetch_json, fetch_status};
pub use error::{DaemonError, StatusError};
pub use http::query::LookupAnswer;
pub use node::config::{Config, ConfigError, Overrides};
pub use node::run;

/// The wall clock as Unix seconds (certificate and document validity).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The operating system's randomness (ring's `SystemRandom`), for the key generation and
/// signatures of the programs the daemon runs; the sans-IO code takes it as an argument.
pub fn os_random() -> ring::rand::SystemRandom {
    ring::rand::SystemRandom::new()
}
