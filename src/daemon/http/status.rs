//! What `GET /status` reports: a snapshot the event loop takes of the peer on request.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;

use crate::overlay::{Chord, ChordCounters, Contact, LookupMeasures, NodeState};
use crate::peer::{Counters, Peer};

/// The JSON body of `GET /status`. Field names are a contract with `p2psip status` and scripts.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The overlay Node-ID, 40 hex digits.
    pub node_id: String,
    /// The p2psip version.
    pub version: &'static str,
    /// `listen`, `proxy`, `http`, `domain`, `join`, `data_dir`, at the top level of the JSON.
    #[serde(flatten)]
    pub node: NodeInfo,
    /// Seconds since the node started.
    pub uptime_secs: u64,
    /// Messages, bytes, errors and refusals since start, and the media anchor's totals.
    pub counters: StatusCounters,
    /// Live SIP transactions.
    pub transactions: Transactions,
    /// The proxy listener's admission control: how busy the loop was over the last 100 ms,
    /// and the share of new requests it refuses now (503), in percent.
    pub load: Load,
    /// The ring predecessor, once known.
    pub predecessor: Option<Node>,
    /// The successor list, nearest first.
    pub successors: Vec<Node>,
    /// The distinct finger entries that name a node, in finger order.
    pub fingers: Vec<FingerEntry>,
    /// The overlay's name, this node's state in it, and Chord's counters.
    pub overlay: OverlayStatus,
    /// The phones registered with the proxy listener now.
    pub phones: Vec<crate::proxy::PhoneStatus>,
    /// The registrar and proxy: accounts, registered contacts, requests in flight. (`proxy`,
    /// the top-level key, is the proxy listener's address.)
    pub registrar: crate::proxy::ProxyStatus,
    /// Signed storage's counters; `null` when storage is off.
    pub storage: Option<crate::peer::StorageCounters>,
    /// Offline messages: held here for others, waiting for our user, delivered to our user's
    /// phones, and the mailbox's counters; `null` when storage is off.
    pub mailbox: Option<crate::mailbox::MailboxStatus>,
    /// Presence: buddies watched for our phones, our user's watchers (allowed and pending),
    /// and what our phones are told of each buddy; `null` on a node with no enrolled user.
    pub presence: Option<crate::presence::PresenceStatus>,
    /// TCP connections open or opening now, on both listeners.
    pub tcp_connections: usize,
    /// What STUN servers and the dial-back say of this node's address (`null` with neither:
    /// a node that started a ring and has no STUN servers).
    pub nat: Option<crate::nat::discovery::NatStatus>,
    /// `peer` (on the ring), `client` (off it) or `deciding` (the dial-back is under way).
    pub role: &'static str,
    /// A client's edge peer, once it is bound there; `null` on a peer.
    pub edge: Option<Node>,
    /// How many users clients have bound at this node, their edge (0 on a client).
    pub clients: usize,
    /// TCP connection limits and deadlines: what they refused and closed.
    pub tcp: crate::daemon::node::event_loop::TcpCounters,
    /// The node on its local network (mDNS); `null` when it is not announced there
    /// (`--no-mdns`, or a loopback address).
    pub mdns: Option<MdnsStatus>,
    /// Calls whose media this node anchors now (`crate::media::anchor`).
    pub calls: Vec<crate::media::anchor::CallStatus>,
    /// The media anchor's sockets open now; `null` with the anchor off.
    pub media_sockets: Option<usize>,
    /// TURN allocations the anchor holds now (spare legs' and calls'); `null` with it off.
    pub media_relays: Option<usize>,
}

/// `counters`: the peer's, and the media anchor's totals beside them (one flat object).
#[derive(Debug, Clone, Serialize)]
pub struct StatusCounters {
    /// Messages, bytes, errors and refusals.
    #[serde(flatten)]
    pub peer: Counters,
    /// Calls anchored, refused, failed; media packets and bytes relayed.
    #[serde(flatten)]
    pub media: crate::media::anchor::AnchorTotals,
}

/// A node as the status API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The Node ID, 40 hex digits.
    pub node_id: String,
    /// Its overlay address.
    pub addr: SocketAddr,
}

impl From<&Contact> for Node {
    fn from(c: &Contact) -> Node {
        Node { node_id: c.id.to_string(), addr: c.addr }
    }
}

/// One finger: the start of its interval (40 hex) and the node it points at.
#[derive(Debug, Clone, Serialize)]
pub struct FingerEntry {
    /// The start of the finger's interval, 40 hex digits.
    pub start: String,
    /// The node it points at, 40 hex digits.
    pub node_id: String,
    /// That node's overlay address.
    pub addr: SocketAddr,
}

/// `"overlay"` in the status.
#[derive(Debug, Clone, Serialize)]
pub struct OverlayStatus {
    /// The overlay's name.
    pub name: String,
    /// `alone`, `joining`, `joined`, `leaving` or `left`.
    pub state: &'static str,
    /// What the Chord core has done.
    pub counters: ChordCounters,
    /// Hops and seconds of the user lookups that found their node (cumulative buckets).
    pub lookups: LookupMeasures,
}

impl OverlayStatus {
    /// The overlay part of the status from the Chord core.
    pub fn of(name: &str, chord: &Chord) -> OverlayStatus {
        OverlayStatus {
            name: name.to_owned(),
            state: state_name(chord.state()),
            counters: chord.counters().clone(),
            lookups: chord.lookup_measures().clone(),
        }
    }
}

/// The state's name in the status (`joined`…).
pub fn state_name(state: NodeState) -> &'static str {
    match state {
        NodeState::Alone => "alone",
        NodeState::Joining => "joining",
        NodeState::Joined => "joined",
        NodeState::Leaving => "leaving",
        NodeState::Left => "left",
        NodeState::Client => "client",
    }
}

/// Fingers that name a node, each node listed once (at its first, lowest-index finger).
pub fn distinct_fingers(chord: &Chord) -> Vec<FingerEntry> {
    let mut seen = std::collections::BTreeSet::new();
    chord
        .fingers()
        .filter_map(|f| {
            let node = f.node?;
            seen.insert(node.id).then(|| FingerEntry {
                start: f.start.to_string(),
                node_id: node.id.to_string(),
                addr: node.addr,
            })
        })
        .collect()
}

/// Transactions now in progress (`server`, `client`); the totals since start are in the
/// counters (`server_transactions`, `client_transactions`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Transactions {
    /// Server transactions.
    pub server: u64,
    /// Client transactions.
    pub client: u64,
}

impl Transactions {
    /// The peer's live transactions.
    pub fn of(peer: &Peer) -> Transactions {
        let counts = peer.transaction_counts();
        Transactions { server: counts.server as u64, client: counts.client as u64 }
    }
}

/// See [`Status::load`].
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Load {
    /// The share of the last window the loop worked.
    pub busy_percent: u32,
    /// The share of the last window's time with input left queued.
    pub queued_percent: u32,
    /// The share of new requests refused with 503 now.
    pub shed_percent: u32,
}

impl Load {
    /// The peer's admission view, in percent.
    pub fn of(peer: &Peer) -> Load {
        let load = peer.load();
        let pct = |x: f64| (x * 100.0).round().clamp(0.0, 100.0) as u32;
        Load { busy_percent: pct(load.busy), queued_percent: pct(load.queued), shed_percent: pct(load.shed) }
    }
}

/// The parts of the status that do not change while the node runs.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    /// The overlay listener's address.
    pub listen: SocketAddr,
    /// The proxy listener's address.
    pub proxy: SocketAddr,
    /// This API's address.
    pub http: SocketAddr,
    /// The SIP domain phones register in.
    pub domain: String,
    /// The nodes it joined through.
    pub join: Vec<SocketAddr>,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// The enrolled identity loaded from the data directory, `null` when not enrolled.
    pub identity: Option<IdentityStatus>,
    /// The STUN servers it asks, as configured (`stun:` URIs).
    pub stun_servers: Vec<String>,
    /// The TURN servers configured for calls' media (`turn:` URIs; credentials never shown).
    pub turn_servers: Vec<String>,
}

/// `"identity"` in the status: who this node's user is, as its certificate says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityStatus {
    /// The user's AoR.
    pub aor: String,
    /// The leaf certificate's issuer (distinguished name).
    pub issuer: String,
    /// The leaf certificate's notAfter, Unix seconds.
    pub not_after: u64,
    /// The configuration document's sequence number.
    pub config_sequence: u64,
}

impl IdentityStatus {
    /// The identity part of the status from what the data directory holds.
    pub fn of(enrolled: &crate::daemon::files::data_dir::Enrolled) -> IdentityStatus {
        IdentityStatus {
            aor: enrolled.identity.aor.to_string(),
            issuer: enrolled.issuer(),
            not_after: enrolled.identity.not_after,
            config_sequence: enrolled.config.sequence,
        }
    }
}

/// `"mdns"` in the status.
#[derive(Debug, Clone, Serialize)]
pub struct MdnsStatus {
    /// Started without `--join`, it is still listening for nodes of its overlay before it
    /// joins them or starts the ring.
    pub deciding: bool,
    /// Nodes of our overlay heard while deciding.
    pub heard: usize,
    /// Its announcement says it is on a ring.
    pub on_ring: bool,
}
