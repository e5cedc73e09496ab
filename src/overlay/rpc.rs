//! The overlay's message vocabulary: what one node asks another, and what it answers.
//!
//! Each variant is meant to become one SIP request or response in `peer::overlay::wire`
//! (dSIP, draft-zangrilli-p2psip-dsip-dhtchord-00): requests are REGISTERs carrying the
//! sender's `DHT-PeerID`, answers are 200s carrying `DHT-Link` headers (`P` for the
//! predecessor, `S1…Sr` for the successor list, `F` for fingers), redirects are 302s with one
//! `Contact` per candidate. The exact table is in `docs/overlay-chord.md`.
//!
//! The vocabulary is deliberately small and carries only what Chord needs; it knows nothing of
//! SIP, of retransmission (the SIP transaction layer below retransmits over UDP) or of
//! resources and replicas (the store's business).

use std::fmt;
use std::net::SocketAddr;

use super::id::NodeId;

/// A node as others know it: its ring position and where to reach it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Contact {
    /// The node's position on the ring.
    pub id: NodeId,
    /// Its overlay address.
    pub addr: SocketAddr,
}

impl Contact {
    /// The node `id` at `addr`.
    pub fn new(id: NodeId, addr: SocketAddr) -> Contact {
        Contact { id, addr }
    }

    /// Whether this contact could be a node at all: a routable-looking address with a port.
    /// IDs themselves are always well formed once parsed; whether they match the address is
    /// [`NodeId::verify_claim`]'s question, asked by the caller who saw the packet.
    pub fn is_plausible(&self) -> bool {
        let ip = self.addr.ip();
        self.addr.port() != 0 && !ip.is_unspecified() && !ip.is_multicast()
    }
}

impl fmt::Debug for Contact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}@{}", self.id, self.addr)
    }
}

/// What one node asks another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Chord's `find_successor(key)`, one iterative step: "who is responsible for `key`, or who
    /// is closer to it than you?" Answered with [`Response::Successor`] or [`Response::Closer`].
    FindSuccessor {
        /// The key looked up.
        key: NodeId,
    },
    /// `stabilize`'s question to a successor: "who is your predecessor, and what is your
    /// successor list?" Answered with [`Response::Neighbours`], or with
    /// [`Response::NeighboursUnchanged`] when `digest` is the [`neighbours_digest`] of what the
    /// answer would say (the querier keeps the last answer and sends its digest).
    ///
    /// With `notify` (stabilize's question, always) it is also Chord's `notify`: the receiver
    /// treats the sender as a candidate predecessor before it answers, so the answer already
    /// names it and no separate `Notify` is needed. Without (a lookup reading a successor list),
    /// it is a plain question.
    GetNeighbours {
        /// The digest of the last answer the querier holds, if any.
        digest: Option<u64>,
        /// Whether the sender is also a candidate predecessor (stabilize).
        notify: bool,
    },
    /// Chord's `notify`: "I think I might be your predecessor." The candidate is the sender.
    /// (A successor's news travels as [`Request::Changed`], never as a notify.)
    /// Stabilize notifies through `GetNeighbours`; this is sent only when a candidate successor
    /// died before we adopted it, to the successor we keep.
    Notify,
    /// `check_predecessor`'s liveness probe. Answered with [`Response::Ok`].
    Ping,
    /// A push to the predecessor: "my predecessor and successor list changed; their
    /// [`neighbours_digest`] is now `digest`." From the receiver's first successor, with a
    /// digest other than that of the successor's last answer, it brings the receiver's next
    /// stabilize forward; from anyone else it changes nothing. It carries no links: what the
    /// receiver adopts still comes from its own stabilize question. Answered with
    /// [`Response::Ok`].
    Changed {
        /// The digest of the sender's new predecessor and successor list.
        digest: u64,
    },
    /// A joining node asks to be admitted; routed toward the joiner's ID like `FindSuccessor`
    /// (redirects with [`Response::Closer`]). The node that will be its predecessor or its
    /// successor answers [`Response::Joined`] with everything the joiner needs (dSIP §6.3).
    Join {
        /// The node asking to join (the sender).
        joiner: Contact,
    },
    /// Graceful departure (dSIP §6.5, Chord ToN §IV-E.3): the sender leaves and hands over its
    /// neighbours so the receiver can splice the ring without waiting for a timeout.
    Leave {
        /// The leaving node's predecessor.
        predecessor: Option<Contact>,
        /// Its successor list.
        successors: Vec<Contact>,
    },
}

impl Request {
    /// Short name for logs and counters.
    pub fn name(&self) -> &'static str {
        match self {
            Request::FindSuccessor { .. } => "FindSuccessor",
            Request::GetNeighbours { .. } => "GetNeighbours",
            Request::Notify => "Notify",
            Request::Ping => "Ping",
            Request::Changed { .. } => "Changed",
            Request::Join { .. } => "Join",
            Request::Leave { .. } => "Leave",
        }
    }
}

/// Why a request was refused (a 4xx in SIP terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefuseReason {
    /// A `Join` whose joiner is not the sender, or (with `verify_claims`) a sender whose ID
    /// does not match the address it came from.
    #[error("the sender's ID does not match the address it came from")]
    IdMismatch,
    /// The sender claims the receiver's own ID.
    #[error("that ID is in use")]
    IdInUse,
    /// The sender's contact cannot be a node (unspecified address, port 0, multicast).
    #[error("malformed contact")]
    Malformed,
    /// The receiver is not part of a ring yet and cannot route or admit.
    #[error("not joined")]
    NotJoined,
    /// The receiver has left, or is leaving, the ring.
    #[error("leaving")]
    Leaving,
}

/// What a node answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// "`node` is responsible for the key": the answerer itself (then `backups` is empty), or
    /// its successor, followed in `backups` by the rest of the answerer's successor list, which
    /// take over the key in that order if `node` has failed. A querier that did not hear this
    /// from `node` itself confirms it with `node` (and, should it not answer, with the backups).
    Successor {
        /// The node responsible.
        node: Contact,
        /// Who takes over the key, in order, if `node` has failed.
        backups: Vec<Contact>,
    },
    /// An iterative redirect (302): nodes closer to the key than the answerer, best first.
    /// More than one so that the querier can fall back when the first has died.
    Closer {
        /// Nodes closer to the key, best first.
        nodes: Vec<Contact>,
    },
    /// The answer to `GetNeighbours`.
    Neighbours {
        /// The answerer's predecessor.
        predecessor: Option<Contact>,
        /// Its successor list, nearest first.
        successors: Vec<Contact>,
    },
    /// The answer to `GetNeighbours { digest: Some(d) }` when `d` still describes the answerer's
    /// predecessor and successor list: "the same as last time".
    NeighboursUnchanged,
    /// The answer to an admitted `Join`: the joiner's predecessor, its successor list (first
    /// entry = its successor; Zave: a joiner must take a full list at once) and fingers to seed
    /// its own table.
    Joined {
        /// The joiner's predecessor.
        predecessor: Option<Contact>,
        /// Its successor list, its successor first.
        successors: Vec<Contact>,
        /// Fingers to seed its table.
        fingers: Vec<Contact>,
    },
    /// The answer to `Ping`, `Notify`, `Changed` and `Leave`.
    Ok,
    /// The request was refused.
    Refused {
        /// Why.
        reason: RefuseReason,
    },
}

impl Response {
    /// Short name for logs and counters.
    pub fn name(&self) -> &'static str {
        match self {
            Response::Successor { .. } => "Successor",
            Response::Closer { .. } => "Closer",
            Response::Neighbours { .. } => "Neighbours",
            Response::NeighboursUnchanged => "NeighboursUnchanged",
            Response::Joined { .. } => "Joined",
            Response::Ok => "Ok",
            Response::Refused { .. } => "Refused",
        }
    }
}

/// A 64-bit digest of a `Neighbours` answer (FNV-1a over each node's ID and address, in
/// order, the predecessor first), so that a querier can ask "has this changed?" in 16 hex
/// digits. Not a security measure: a node that lies about its neighbours can do so anyway.
pub fn neighbours_digest(predecessor: Option<&Contact>, successors: &[Contact]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(PRIME);
        }
    };
    let mut node = |c: Option<&Contact>| match c {
        None => eat(&[0]),
        Some(c) => {
            eat(&[1]);
            eat(&c.id.to_bytes());
            eat(c.addr.to_string().as_bytes());
        }
    };
    node(predecessor);
    for s in successors {
        node(Some(s));
    }
    h
}

/// Identifies one outgoing request; the driver hands it back with the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RpcId(pub u64);

/// Why a request got no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RpcFailure {
    /// The driver gave up (the core also gives up by itself at its own deadline).
    #[error("timed out")]
    Timeout,
    /// The transport reported the destination unreachable (ICMP, connection refused).
    #[error("unreachable")]
    Unreachable,
    /// An answer arrived but could not be understood.
    #[error("malformed response")]
    Malformed,
    /// The node answered that it is overloaded (a 503 that is not the overlay's own "leaving"
    /// refusal): it is alive. docs/security.md, H4: a busy node is asked again later, never dropped from
    /// the ring; only an explicit leave or missed answers do that.
    #[error("busy")]
    Busy,
}

/// Where a request goes: a known node, or a bare address (a bootstrap node whose ID we do not
/// know yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcTarget {
    /// A node we know.
    Node(Contact),
    /// A bare address (a bootstrap node).
    Address(SocketAddr),
}

impl RpcTarget {
    /// The address the request goes to.
    pub fn addr(&self) -> SocketAddr {
        match self {
            RpcTarget::Node(c) => c.addr,
            RpcTarget::Address(a) => *a,
        }
    }

    /// The node's ID, when known.
    pub fn id(&self) -> Option<NodeId> {
        match self {
            RpcTarget::Node(c) => Some(c.id),
            RpcTarget::Address(_) => None,
        }
    }
}

/// A request the core wants sent. Answer it with `Chord::handle_response(now, id, …)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRpc {
    /// The RPC, named in its answer.
    pub id: RpcId,
    /// Where it goes.
    pub to: RpcTarget,
    /// What it asks.
    pub request: Request,
}
