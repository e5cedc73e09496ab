//! Requests from our own phones to SIP domains other than the overlay's (`sip:carol@example.com`):
//! the node forwards them as an ordinary outbound proxy would (RFC 3261 §16), to the server
//! DNS names for the domain (RFC 3263), and Record-Routes so the dialog stays on it.
//!
//! What lives here is sans-IO: the RFC 3263 procedure as a state machine that asks for DNS
//! records and is handed the answers (`resolve`). The proxy parks the request while the daemon
//! asks DNS (hickory-resolver) and hands the targets back; the proxy tries them in order
//! (§4.3). Only phones the proxy has authenticated reach this path: a request from the
//! overlay for another domain is refused, so no node becomes a relay for others.

pub mod resolve;

use std::net::SocketAddr;

use crate::transport::Transport;

pub use resolve::{Answer, Naptr, Query, Resolution, ResolveError, Srv};

/// Where to send a request for another domain: a transport and an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Target {
    /// UDP or TCP.
    pub transport: Transport,
    /// The server's address and port.
    pub addr: SocketAddr,
}
