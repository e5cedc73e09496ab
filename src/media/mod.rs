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
//!
//! # What it does not do (yet)
//! No TURN allocation (the relayed candidate kind exists; the daemon's TURN client does not),
//! no anchor of the phone side, no ICE restart.

pub mod frag;
pub mod ice;
pub mod keys;
pub mod tunnel;
