//! What `/status` shows of the anchor: the calls in progress and the totals since start.

use super::call::CallState;
use super::ice::PathKind;

/// One call in `/status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CallStatus {
    /// The Call-ID.
    pub call_id: String,
    /// The other user's AoR.
    pub peer_aor: String,
    /// Where the call is.
    pub state: CallState,
    /// The path's kind, once one is selected.
    pub path: Option<PathKind>,
    /// Whether either phone holds the call (RFC 3264 §8.4: a stream `sendonly`, `recvonly`
    /// or `inactive`).
    pub held: bool,
    /// Datagrams from the far phone delivered to ours.
    pub packets_in: u64,
    /// Datagrams from our phone sent on.
    pub packets_out: u64,
    /// Their bytes.
    pub bytes_in: u64,
    /// Their bytes.
    pub bytes_out: u64,
    /// Unix time it began.
    pub started_at: u64,
    /// Milliseconds from the start of the ICE checks to the first path selected.
    pub ice_ms: Option<u64>,
    /// Milliseconds from the INVITE to the first 18x or 2xx handed to our phone (the caller's
    /// node: dial to ringing, less the phone's own hop).
    pub ringing_ms: Option<u64>,
    /// Milliseconds from the INVITE to the first datagram handed to our phone.
    pub first_media_ms: Option<u64>,
}

/// Counts since start (`/status`'s `counters`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AnchorTotals {
    /// Calls anchored.
    pub calls_anchored: u64,
    /// Calls whose far node did not prove its user (no media).
    pub calls_refused: u64,
    /// Calls whose path never formed, or was lost.
    pub calls_failed: u64,
    /// Datagrams relayed from far phones to ours (ended calls included).
    pub media_packets_in: u64,
    /// …from ours to far phones.
    pub media_packets_out: u64,
    /// Their bytes.
    pub media_bytes_in: u64,
    /// Their bytes.
    pub media_bytes_out: u64,
    /// Frames dropped (forged, replayed, off the selected pair).
    pub media_frames_dropped: u64,
}
