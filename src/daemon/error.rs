//! What can stop the daemon from starting or running. Peer misbehaviour never appears here:
//! it is counted and logged by the peer and the connection tasks.

use std::net::SocketAddr;

use super::node::config::ConfigError;

/// Why the node could not start (or a status request failed).
// Each variant's `#[error]` message says what it means, naming its fields.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Accounts(#[from] super::files::accounts::AccountsFileError),
    /// Binding a listener failed, usually because the address is already in use.
    #[error("cannot bind the {what} to {addr}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The node's seed (tags, branches, nonce keys) must be unpredictable.
    #[error("the system random number generator failed")]
    Random,
    /// The identity files or the record database could not be used.
    #[error("storage: {0}")]
    Storage(String),
    /// `--role peer`, but no dial-back reached the node: others cannot reach it.
    #[error(
        "--role peer: this node is not reachable from outside (no dial-back arrived at {mapped}, \
         the address {asked} saw us at). Forward UDP and TCP port {port} to this host on the \
         router, or run with --role auto (the node then joins as a client)"
    )]
    NotReachable { mapped: SocketAddr, asked: SocketAddr, port: u16 },
    /// Any other operating-system failure while setting up (signals, socket addresses).
    #[error("cannot {doing}")]
    Io {
        doing: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Errors of `p2psip status`: talking to a node's HTTP API.
// Each variant's `#[error]` message says what it means, naming its fields.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("no node is answering at http://{addr} (is `p2psip node` running?)")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the node at http://{addr} did not answer within {secs} s")]
    Timeout { addr: SocketAddr, secs: u64 },
    #[error("cannot build a request for http://{addr}")]
    Request {
        addr: SocketAddr,
        #[source]
        source: hyper::http::Error,
    },
    #[error("HTTP exchange with http://{addr} failed")]
    Http {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("the node at http://{addr} answered {status}: {message}")]
    Status { addr: SocketAddr, status: hyper::StatusCode, message: String },
    #[error("the node at http://{addr} did not return JSON")]
    Json {
        addr: SocketAddr,
        #[source]
        source: serde_json::Error,
    },
}
