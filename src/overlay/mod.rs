//! The overlay: a sans-IO Chord ring (Stoica et al., "Chord: A Scalable Peer-to-peer Lookup
//! Protocol for Internet Applications", SIGCOMM 2001 / IEEE/ACM ToN 2003), with the
//! corrections of Pamela Zave's analysis ("Using lightweight modeling to understand Chord",
//! 2012; "Reasoning about identifier spaces", 2017) and the join/leave exchanges of dSIP
//! (draft-zangrilli-p2psip-dsip-dhtchord-00).
//!
//! # Contract
//! [`Chord`] is one node. Feed it commands ([`Chord::join`], [`Chord::leave`],
//! [`Chord::lookup`]), requests from other nodes ([`Chord::handle_request`], answered at once),
//! answers to its own requests ([`Chord::handle_response`]) and the clock
//! ([`Chord::handle_timeout`] at [`Chord::poll_timeout`]); drain [`Chord::poll_rpc`] and
//! [`Chord::poll_event`]. Every input carries `now`; nothing reads a clock or a socket.
//!
//! # Layout
//! - [`id`]: `NodeId`, hashing addresses and keys, ring intervals.
//! - [`rpc`]: `Contact`, the `Request`/`Response` vocabulary, RPC ids and targets.
//! - [`finger`]: the finger table.
//! - [`successors`]: the successor list.
//! - [`lookup`]: one iterative lookup's state.
//! - [`config`]: `ChordConfig` and why its defaults are what they are.
//! - [`chord`]: the state machine (`server.rs` answers, `maintenance.rs` does the periodic work).
//! - [`testnet`]: a lock-step many-node network on a virtual clock, with the ring invariants;
//!   used by the tests here and by the simulator.
//!
//! # Not here
//! SIP (`peer::overlay::wire` maps this vocabulary onto REGISTERs), checking that a sender's ID
//! matches its address (the caller, with [`NodeId::verify_claim`]), retransmission (SIP
//! transactions), storage and replica placement (the store), NAT traversal.

pub mod chord;
pub mod config;
pub mod finger;
pub mod id;
pub mod lookup;
pub mod rpc;
pub mod successors;
pub mod testnet;

#[cfg(test)]
mod tests;

pub use chord::{Chord, ChordCounters, Event, LookupMeasures, NodeState};
pub use config::ChordConfig;
pub use finger::Finger;
pub use id::{IdHash, IdParseError, NodeId, ID_BITS};
pub use lookup::{LookupError, LookupId};
pub use rpc::{neighbours_digest, Contact, OutgoingRpc, RefuseReason, Request, Response, RpcFailure, RpcId, RpcTarget};
