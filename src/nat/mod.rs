//! NAT traversal for the overlay, sans-IO: what a node needs to learn and prove about its
//! address behind a NAT (RFC 8489 STUN; RFC 5780 behaviour discovery; RFC 5626 keep-alives).
//!
//! # Layout
//! - [`stun`]: STUN Binding on the wire: telling STUN from SIP on a shared port, answering a
//!   Binding request with the address it came from, building and reading our own.
//!
//! # What it does not do (yet)
//! Asking STUN servers for the node's mapped address, the dial-back that decides whether a
//! node is a peer or a client, and a client's flow to its edge peer come next, here. No
//! sockets: the daemon owns them.

pub mod stun;
