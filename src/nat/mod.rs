//! NAT traversal for the overlay, sans-IO: what a node needs to learn and prove about its
//! address behind a NAT (RFC 8489 STUN; RFC 5780 behaviour discovery; RFC 5626 keep-alives).
//!
//! # Layout
//! - [`stun`]: STUN Binding on the wire: telling STUN from SIP on a shared port, answering a
//!   Binding request with the address it came from, building and reading our own.
//! - [`discovery`]: asking the configured STUN servers for the node's mapped address, and,
//!   where a server has a second address (OTHER-ADDRESS), RFC 5780's mapping and filtering
//!   tests; with two plain servers, the mapping alone.
//! - [`reachability`]: the dial-back that tells whether others can reach the node (a peer)
//!   or not (a client): a STUN Binding with CHANGE-REQUEST answered from another peer.
//! - [`flow`]: a client's outbound flow to its edge peer (RFC 5626): the REGISTER, its
//!   refresh, and STUN keep-alives.
//! - [`turn`]: TURN servers as configured (`turn:` URIs and credentials), for the media of
//!   calls that no direct path carries.
//!
//! # What it does not do
//! No sockets: the daemon owns them.

pub mod discovery;
pub mod flow;
pub mod reachability;
pub mod stun;
pub mod turn;
