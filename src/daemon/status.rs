//! What `GET /status` reports: a snapshot the event loop takes of the peer on request.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;
use tokio::sync::oneshot;

use crate::peer::{Counters, Peer};

/// The JSON body of `GET /status`. Field names are a contract with `p2psip status` and scripts.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The overlay Node-ID; `null` until the overlay exists.
    pub node_id: Option<String>,
    pub version: &'static str,
    pub listen: SocketAddr,
    pub proxy: SocketAddr,
    pub http: SocketAddr,
    pub domain: String,
    pub join: Vec<SocketAddr>,
    pub data_dir: PathBuf,
    pub uptime_secs: u64,
    pub counters: Counters,
    pub transactions: Transactions,
}

/// Transactions now in progress (`server`, `client`); the totals since start are in the
/// counters (`server_transactions`, `client_transactions`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Transactions {
    pub server: u64,
    pub client: u64,
}

impl Transactions {
    pub fn of(peer: &Peer) -> Transactions {
        let (server, client) = peer.transaction_counts();
        Transactions { server: server as u64, client: client as u64 }
    }
}

/// A request for a snapshot, answered by the event loop that owns the peer.
pub(crate) type StatusQuery = oneshot::Sender<Status>;

/// The parts of the status that do not change while the node runs.
#[derive(Debug, Clone)]
pub(crate) struct NodeInfo {
    pub listen: SocketAddr,
    pub proxy: SocketAddr,
    pub http: SocketAddr,
    pub domain: String,
    pub join: Vec<SocketAddr>,
    pub data_dir: PathBuf,
}
