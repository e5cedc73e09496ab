//! What the node has seen and done, for `p2psip status` and for tests.

/// Monotonic counters; the driver reads them for the status API.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// SIP messages received (datagrams and stream frames), whether or not they parsed.
    pub messages_in: u64,
    /// SIP messages sent, retransmissions included.
    pub messages_out: u64,
    /// Bytes received, on both listeners.
    pub bytes_in: u64,
    /// Bytes sent, on both listeners.
    pub bytes_out: u64,
    /// Input that was not a SIP message at all, or whose framing was broken.
    pub parse_errors: u64,
    /// Requests refused with a 4xx–6xx because they were malformed or unsupported.
    pub requests_rejected: u64,
    /// Messages dropped without an answer (responses matching nothing, unanswerable garbage).
    pub messages_dropped: u64,
    /// Of those, responses matching no client transaction (never relayed, RFC 6026).
    pub stray_responses: u64,
    /// Retransmitted requests absorbed by a server transaction.
    pub retransmissions_absorbed: u64,
    /// UDP datagrams over the size limit, dropped before parsing.
    pub oversized_datagrams: u64,
    /// CRLF keep-alive pings answered (RFC 5626 §4.4.1).
    pub keepalives: u64,
    /// Server transactions created since start.
    pub server_transactions: u64,
    /// Client transactions created since start.
    pub client_transactions: u64,
    /// Overlay requests (`Require: dht`) received on the overlay listener.
    pub overlay_requests: u64,
    /// Overlay requests refused: a bad DHT-PeerID, a claimed ID that does not match the source
    /// address, another overlay or protocol version, or Chord's own refusal.
    pub overlay_refused: u64,
    /// Requests refused with 503 because too many server transactions were alive, or by the
    /// load-based admission control.
    pub overload_rejected: u64,
    /// Of those, the ones the load-based admission control refused (the loop was too busy).
    pub load_shed: u64,
    /// Overlay answers cut short so that an address that has not answered us gets at most
    /// three times what it sent over UDP (docs/security.md, M1); one per entry dropped.
    pub answers_trimmed: u64,
    /// STUN Binding requests answered with the address they came from (RFC 8489 §6.3; the
    /// keep-alives of clients' flows, RFC 5626 §4.4.2, and other nodes learning their address).
    pub stun_answered: u64,
    /// STUN messages that were not a Binding request we answer, dropped (dial-back asks over
    /// the rate limit, or to a node that is not a peer, among them).
    pub stun_dropped: u64,
    /// Dial-backs nodes asked of us (RFC 5780 CHANGE-REQUEST on the overlay port).
    pub dial_backs_asked: u64,
    /// Dial-backs we sent: for a node that asked us on a ring of one, or for another peer.
    pub dial_backs_sent: u64,
}
