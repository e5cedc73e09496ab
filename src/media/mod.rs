//! The media anchor (issue 14): each node anchors its own phone's media on local relay ports
//! and carries every RTP and RTCP packet of a call to the other node over one ICE path
//! (RFC 8445), encrypted and authenticated between the two nodes (`docs/media-security.md`).
//!
//! Sans-IO: sessions take `now` and datagrams and return what to send and when to wake; the
//! daemon owns the relay sockets.
//!
//! # Layout
//! - [`keys`]: the per-call key agreement: ephemeral P-256 shares signed with each node's
//!   enrolled AoR key, checked against the certificate that proved the AoR.
//! - [`tunnel`]: the keys each direction derives, and the frame a phone datagram travels in
//!   (AES-128-GCM, counter, replay window).
//! - [`frag`]: the `application/trickle-ice-sdpfrag` part (RFC 8840) one node's agent hands the
//!   other's: credentials, candidates, the signed share and the certificate.
//! - [`ice`]: [`ice::IceSession`], our trait over an ICE agent, and its rtc-ice implementation.
//! - [`pool`]: sockets opened ahead of calls (legs with their server-reflexive address
//!   gathered and their TURN allocation made, relay port pairs), within a bound.
//! - [`turn`]: a leg's TURN allocation (RFC 8656) through rtc-turn: the relayed candidate,
//!   permissions, refreshes, release.
//! - [`phone`]: one stream's phone side: where the phone wants media, latching, RTCP mux.
//! - [`call`]: one call: its leg, ICE session, tunnel and phone streams; relays datagrams.
//! - [`anchor`]: [`anchor::Anchor`], every anchored call of the node: the signalling hooks the
//!   proxy calls, sockets in and out; `body`: the phone's body and our ICE part, apart or
//!   together; [`status`]: what `/status` shows of it.
//!
//! # What it does not do (yet)
//! No ICE restart (a node that moves networks mid-call loses the call's media); TURN over UDP
//! only.

pub mod anchor;
mod body;
pub mod call;
pub mod frag;
#[doc(hidden)]
pub mod fuzzing;
pub mod ice;
pub mod keys;
pub mod phone;
pub mod pool;
pub mod status;
pub mod tunnel;
pub mod turn;
