//! SIP traffic by kind: which Chord RPC each datagram belongs to, split into requests,
//! responses and retransmissions of either (the breakdown behind `traffic_by_kind`).
//!
//! Each peer notes the Call-ID and kind of every overlay request it sends
//! ([`crate::peer::Peer::record_rpc_kinds`]); a response carries its request's Call-ID
//! (RFC 3261 §8.2.6.2), so both directions are attributed. A second copy of a request, or of a
//! response, with the same Call-ID is a retransmission (every overlay RPC is one non-INVITE
//! transaction with a fresh Call-ID). Requests the Chord core did not send are, in the
//! simulator, storage operations (`storage`).

// `calls` is only looked up and pruned, never read in order: a hash map is safe here and
// keeps a 10,000-node run fast (clippy.toml bans it elsewhere).
use std::collections::BTreeMap;
#[allow(clippy::disallowed_types)]
use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Messages and bytes of one class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    /// Datagrams.
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// One kind's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindCounts {
    /// First copies of requests.
    pub requests: Count,
    /// First copies of responses.
    pub responses: Count,
    /// Later copies of either (UDP retransmissions, RFC 3261 §17.1.2.2 and §17.2.2).
    pub retransmissions: Count,
}

/// Per-node rates of one class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rate {
    /// Per live node per second.
    pub messages_per_node_per_s: f64,
    /// Per live node per second.
    pub bytes_per_node_per_s: f64,
}

/// Per-node rates of one kind (`traffic_by_kind` in the JSON).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct KindTraffic {
    /// Requests, first copies.
    pub requests: Rate,
    /// Responses, first copies.
    pub responses: Rate,
    /// Copies of either sent again.
    pub retransmissions: Rate,
    /// All of them.
    pub total: Rate,
}

struct Call {
    kind: &'static str,
    request_sent: bool,
    response_sent: bool,
    at: Instant,
}

/// How long a Call-ID is remembered: longer than any transaction lives (Timer F and J, 64·T1).
const REMEMBER: Duration = Duration::from_secs(64);

/// Counts every datagram by kind.
#[derive(Default)]
pub struct Tally {
    #[allow(clippy::disallowed_types)]
    calls: HashMap<String, Call>,
    counts: BTreeMap<&'static str, KindCounts>,
    pruned_at: Option<Instant>,
}

impl Tally {
    /// A peer sent (or is about to send) the request with this Call-ID, for this kind.
    pub fn note(&mut self, now: Instant, call_id: String, kind: &'static str) {
        self.calls.insert(call_id, Call { kind, request_sent: false, response_sent: false, at: now });
    }

    /// Counts one datagram.
    pub fn count(&mut self, now: Instant, data: &[u8]) {
        let (is_response, call_id) = scan(data);
        let (kind, first) = match call_id.and_then(|c| self.calls.get_mut(c).map(|call| (c, call))) {
            Some((_, call)) => {
                let seen = if is_response { &mut call.response_sent } else { &mut call.request_sent };
                let first = !*seen;
                *seen = true;
                (call.kind, first)
            }
            None => match call_id {
                Some(c) if !is_response => {
                    let call = Call { kind: "storage", request_sent: true, response_sent: false, at: now };
                    self.calls.insert(c.to_owned(), call);
                    ("storage", true)
                }
                _ => ("other", true),
            },
        };
        let counts = self.counts.entry(kind).or_default();
        let class = match (first, is_response) {
            (false, _) => &mut counts.retransmissions,
            (true, true) => &mut counts.responses,
            (true, false) => &mut counts.requests,
        };
        class.messages += 1;
        class.bytes += data.len() as u64;
        self.prune(now);
    }

    /// The counts so far, by kind.
    pub fn snapshot(&self) -> BTreeMap<&'static str, KindCounts> {
        self.counts.clone()
    }

    fn prune(&mut self, now: Instant) {
        let due = self.pruned_at.is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(10));
        if due {
            self.pruned_at = Some(now);
            self.calls.retain(|_, c| now.saturating_duration_since(c.at) < REMEMBER);
        }
    }
}

/// The per-node rates of each kind between two snapshots, over `per` node-seconds.
pub fn rates(
    before: &BTreeMap<&'static str, KindCounts>,
    after: &BTreeMap<&'static str, KindCounts>,
    per: f64,
) -> BTreeMap<String, KindTraffic> {
    let rate = |a: Count, b: Count| Rate {
        messages_per_node_per_s: a.messages.saturating_sub(b.messages) as f64 / per,
        bytes_per_node_per_s: a.bytes.saturating_sub(b.bytes) as f64 / per,
    };
    after
        .iter()
        .map(|(kind, a)| {
            let b = before.get(kind).copied().unwrap_or_default();
            let requests = rate(a.requests, b.requests);
            let responses = rate(a.responses, b.responses);
            let retransmissions = rate(a.retransmissions, b.retransmissions);
            let total = Rate {
                messages_per_node_per_s: requests.messages_per_node_per_s
                    + responses.messages_per_node_per_s
                    + retransmissions.messages_per_node_per_s,
                bytes_per_node_per_s: requests.bytes_per_node_per_s
                    + responses.bytes_per_node_per_s
                    + retransmissions.bytes_per_node_per_s,
            };
            (kind.to_string(), KindTraffic { requests, responses, retransmissions, total })
        })
        .filter(|(_, t)| t.total.messages_per_node_per_s > 0.0)
        .collect()
}

/// Whether a SIP message is a response, and its Call-ID, read from the raw text without a full
/// parse (long or compact header name, RFC 3261 §7.3.3; header names are case-insensitive).
fn scan(data: &[u8]) -> (bool, Option<&str>) {
    let is_response = data.starts_with(b"SIP/");
    let text = std::str::from_utf8(data).unwrap_or("");
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let call_id = head.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case("i") || name.eq_ignore_ascii_case("call-id")).then(|| value.trim())
    });
    (is_response, call_id)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // one real reading as the virtual clock's epoch

    use super::*;

    #[test]
    fn requests_responses_and_copies_are_told_apart() {
        let now = Instant::now();
        let mut t = Tally::default();
        t.note(now, "abc".into(), "stabilize");
        let req = b"REGISTER sip:x SIP/2.0\r\nv: SIP/2.0/UDP a\r\ni: abc\r\n\r\n";
        let resp = b"SIP/2.0 200 OK\r\nCall-ID: abc\r\n\r\n";
        let storage = b"REGISTER sip:y SIP/2.0\r\ni: other\r\n\r\n";
        t.count(now, req);
        t.count(now, req);
        t.count(now, resp);
        t.count(now, resp);
        t.count(now, storage);
        t.count(now, b"garbage");
        let s = t.snapshot();
        let st = s["stabilize"];
        assert_eq!(st.requests, Count { messages: 1, bytes: req.len() as u64 });
        assert_eq!(st.responses, Count { messages: 1, bytes: resp.len() as u64 });
        assert_eq!(st.retransmissions, Count { messages: 2, bytes: (req.len() + resp.len()) as u64 });
        assert_eq!(s["storage"].requests.messages, 1);
        assert_eq!(s["other"].requests.messages, 1);
        let r = rates(&BTreeMap::new(), &s, 2.0);
        assert_eq!(r["stabilize"].total.messages_per_node_per_s, 2.0);
    }
}
