//! The body of the `sdp` fuzz target in `fuzz/`, kept in the library so that its committed
//! corpus also replays as an ordinary test (`tests/it/fuzz_corpus.rs`). An SDP body arrives from
//! the far phone through another node: every byte may be an attacker's. Not part of the API.

use std::net::{IpAddr, Ipv4Addr};

use super::{RelayPorts, Sdp};

/// `sdp`: whatever the bytes, parsing does not panic; a description that parses is read
/// ([`Sdp::streams`]), rewritten toward an anchor ([`Sdp::anchor`]) and written without
/// panicking, and what is written parses again (or fails cleanly) without panicking.
pub fn fuzz_sdp(data: &[u8]) {
    let Ok(mut sdp) = Sdp::parse(data) else { return };
    let streams = sdp.streams();
    for s in &streams {
        let _ = s.is_off();
    }
    let relay: Vec<Option<RelayPorts>> =
        (0..streams.len()).map(|i| (i % 3 != 2).then_some(RelayPorts { rtp: 30_000, rtcp: 30_001 })).collect();
    sdp.anchor(IpAddr::V4(Ipv4Addr::LOCALHOST), &relay);
    let written = sdp.encode();
    if let Ok(again) = Sdp::parse(&written) {
        let _ = again.streams();
    }
}
