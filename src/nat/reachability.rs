//! Reachability by dial-back: may others open a conversation with this node, or only answer
//! one it opened? Only a node others can reach may be a peer on the ring (RFC 6940 §3.2.1;
//! libp2p's AutoNAT); every other node is a client.
//!
//! The node asks a peer it is about to join through (a bootstrap node), from its overlay
//! socket and before sending to anyone else:
//!
//! 1. a plain STUN Binding request (RFC 8489): the answer names the address the peer saw,
//!    our *mapped* address;
//! 2. a Binding request with CHANGE-REQUEST (RFC 5780 §7.2, both flags): "answer from an
//!    address and port I have not sent to". The asked peer cannot answer from another address
//!    itself, so it asks another peer of the ring to send the answer, or, on a ring of one,
//!    sends it from a fresh socket of its own (`crate::peer` does that side).
//!
//! The answer's transaction ID is the nonce: 96 random bits only the asked peer saw. It must
//! arrive from an address the node has never sent to (not the asked peer, not a STUN server),
//! or it proves nothing: a NAT lets answers from those through anyway. If it arrives before the
//! deadline, the mapped address is reachable from outside and becomes the node's public
//! address (its Node ID derives from it); if not, the node is behind a NAT or firewall that
//! filters (RFC 4787 §5) and can only be a client.
//!
//! Requests are retransmitted from an RTO of 250 ms doubling (RFC 8489 §6.2.1 allows a
//! shorter RTO than 500 ms where the path is known to be short; the verdict waits for the
//! dial-back, not for these); a bootstrap node that does not answer the plain request is
//! replaced by the next.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::stun::{binding_request, binding_request_changing, StunTransactionId};

/// The first retransmission timeout.
const RTO: Duration = Duration::from_millis(250);
/// Plain requests per bootstrap node before the next is tried: 0, 0.25, 0.75 s; given up
/// at 1.75 s.
const MAPPING_TRIES: u32 = 3;
/// Dial-back asks: 0, 0.25, 0.75, 1.75 s (each lost ask or lost dial-back is covered by the
/// next); the verdict "unreachable" comes [`DIAL_BACK_WAIT`] after the first.
pub const DIAL_BACK_TRIES: u32 = 4;
/// How long a dial-back may take to arrive after the first ask.
pub const DIAL_BACK_WAIT: Duration = Duration::from_secs(3);

/// What the probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The dial-back arrived: others can reach the node at `public`.
    Reachable {
        /// The mapped address the asked peer saw, now confirmed from another address.
        public: SocketAddr,
        /// The peer that asked for the dial-back, and where it came from.
        asked: SocketAddr,
        /// Where the dial-back came from.
        dialled_from: SocketAddr,
    },
    /// The asked peer answered, but no dial-back arrived in time.
    Unreachable {
        /// The mapped address the asked peer saw.
        mapped: SocketAddr,
        /// The peer asked.
        asked: SocketAddr,
    },
    /// No bootstrap node answered at all: nothing is known.
    NoAnswer,
}

/// The role a node is asked to take (`--role`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleChoice {
    /// A peer if the dial-back arrives, a client if not; a node that starts a ring is a peer.
    #[default]
    Auto,
    /// A peer, or a clear error if the dial-back does not arrive.
    Peer,
    /// A client whatever the dial-back would say: takes no ring position.
    Client,
}

impl std::str::FromStr for RoleChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<RoleChoice, String> {
        match s {
            "auto" => Ok(RoleChoice::Auto),
            "peer" => Ok(RoleChoice::Peer),
            "client" => Ok(RoleChoice::Client),
            other => Err(format!("unknown role {other:?}: auto, peer or client")),
        }
    }
}

/// The role a node has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The dial-back is under way.
    Deciding,
    /// On the ring: others reach it, it routes and stores for them.
    Peer,
    /// Off the ring: reachable only through an outbound flow (RFC 6940 §3.2.1).
    Client,
}

impl Role {
    /// The word `/status` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Deciding => "deciding",
            Role::Peer => "peer",
            Role::Client => "client",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Asking `asked[index]` for our mapped address.
    Mapping,
    /// Asked for the dial-back; waiting for it.
    DialBack {
        mapped: SocketAddr,
        first_ask: Instant,
    },
    Done,
}

/// One reachability probe (sans-IO): send what [`DialBack::poll_transmit`] returns from the
/// overlay socket, feed back STUN Binding answers ([`DialBack::handle_answer`]) and timeouts,
/// and read [`DialBack::verdict`].
#[derive(Debug)]
pub struct DialBack {
    bootstrap: Vec<SocketAddr>,
    index: usize,
    phase: Phase,
    /// Every address this socket has sent to: a dial-back from one of them proves nothing.
    sent_to: BTreeSet<SocketAddr>,
    /// The transaction of the current request, and how often it went out.
    id: StunTransactionId,
    tries: u32,
    next_send: Instant,
    verdict: Option<Verdict>,
    outbox: VecDeque<(SocketAddr, Vec<u8>)>,
}

impl DialBack {
    /// A probe through `bootstrap` (tried in order). `sent_to` names the other addresses the
    /// overlay socket has sent to (the STUN servers): a dial-back from them would not count.
    pub fn new(
        bootstrap: Vec<SocketAddr>,
        sent_to: impl IntoIterator<Item = SocketAddr>,
        now: Instant,
        mut new_id: impl FnMut() -> StunTransactionId,
    ) -> DialBack {
        let mut probe = DialBack {
            bootstrap,
            index: 0,
            phase: Phase::Mapping,
            sent_to: sent_to.into_iter().collect(),
            id: new_id(),
            tries: 0,
            next_send: now,
            verdict: None,
            outbox: VecDeque::new(),
        };
        if probe.bootstrap.is_empty() {
            probe.finish(Verdict::NoAnswer);
        } else {
            probe.handle_timeout(now, new_id);
        }
        probe
    }

    /// The outcome, once there is one.
    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict
    }

    /// Whether `id` is one of this probe's transactions.
    pub fn owns(&self, id: &StunTransactionId) -> bool {
        self.phase != Phase::Done && *id == self.id
    }

    /// A Binding success answering transaction `id` arrived from `from`, naming `mapped`.
    pub fn handle_answer(
        &mut self,
        now: Instant,
        id: StunTransactionId,
        from: SocketAddr,
        mapped: SocketAddr,
        new_id: impl FnMut() -> StunTransactionId,
    ) {
        if id != self.id {
            return;
        }
        match self.phase {
            Phase::Mapping if Some(&from) == self.bootstrap.get(self.index) => {
                // Test I answered: now ask for the dial-back, with a fresh nonce.
                self.phase = Phase::DialBack { mapped, first_ask: now };
                self.tries = 0;
                self.next_send = now;
                self.id = [0; 12];
                self.send(now, new_id);
            }
            Phase::DialBack { mapped: seen, .. } if !self.sent_to.contains(&from) => {
                // The dial-back names the address it was sent to; a mismatch would mean the
                // asked peer's view and the dialler's differ, and the first one stands.
                let asked = self.bootstrap[self.index];
                let _ = mapped;
                self.finish(Verdict::Reachable { public: seen, asked, dialled_from: from });
            }
            _ => {}
        }
    }

    /// Retransmits, moves to the next bootstrap node, or gives the verdict, as time says.
    pub fn handle_timeout(&mut self, now: Instant, new_id: impl FnMut() -> StunTransactionId) {
        match self.phase {
            Phase::Done => {}
            Phase::DialBack { mapped, first_ask } => {
                if now >= first_ask + DIAL_BACK_WAIT {
                    let asked = self.bootstrap[self.index];
                    self.finish(Verdict::Unreachable { mapped, asked });
                } else if now >= self.next_send && self.tries < DIAL_BACK_TRIES {
                    self.send(now, new_id);
                }
            }
            Phase::Mapping => {
                if now < self.next_send {
                    return;
                }
                if self.tries >= MAPPING_TRIES {
                    self.index += 1;
                    self.tries = 0;
                    if self.index >= self.bootstrap.len() {
                        self.finish(Verdict::NoAnswer);
                        return;
                    }
                }
                self.send(now, new_id);
            }
        }
    }

    /// When [`DialBack::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Done => None,
            Phase::Mapping => Some(self.next_send),
            Phase::DialBack { first_ask, .. } => {
                let verdict = first_ask + DIAL_BACK_WAIT;
                Some(if self.tries < DIAL_BACK_TRIES { self.next_send.min(verdict) } else { verdict })
            }
        }
    }

    /// The next datagram to send from the overlay socket, and where.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.outbox.pop_front()
    }

    fn send(&mut self, now: Instant, mut new_id: impl FnMut() -> StunTransactionId) {
        let to = self.bootstrap[self.index];
        // A retransmission keeps its transaction ID (RFC 8489 §6.2.1); a new request, or
        // the first to a new node, gets a new one.
        if self.tries == 0 {
            self.id = new_id();
        }
        let data = match self.phase {
            Phase::Mapping => binding_request(self.id),
            _ => binding_request_changing(self.id, true, true),
        };
        self.sent_to.insert(to);
        self.outbox.push_back((to, data));
        self.next_send = now + RTO * (1 << self.tries);
        self.tries += 1;
    }

    fn finish(&mut self, verdict: Verdict) {
        self.phase = Phase::Done;
        self.verdict = Some(verdict);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // one real reading as the virtual clock's epoch
    use super::*;
    use crate::nat::stun::{binding_success, counting_ids, parse, StunMessage};

    fn sent(probe: &mut DialBack) -> Vec<(SocketAddr, StunMessage)> {
        std::iter::from_fn(|| probe.poll_transmit()).map(|(to, d)| (to, parse(&d).unwrap())).collect()
    }

    fn request_id(m: &StunMessage) -> (StunTransactionId, bool) {
        match m {
            StunMessage::BindingRequest { id, change, .. } => (*id, *change),
            other => panic!("not a request: {other:?}"),
        }
    }

    fn answer(probe: &mut DialBack, now: Instant, id: StunTransactionId, from: SocketAddr, mapped: SocketAddr) {
        let StunMessage::BindingSuccess { id, mapped, .. } = parse(&binding_success(id, mapped, false)).unwrap() else {
            panic!()
        };
        probe.handle_answer(now, id, from, mapped, counting_ids());
    }

    const BOOT: &str = "198.51.100.1:5060";
    const HELPER: &str = "198.51.100.2:5060";
    const STUN: &str = "198.51.100.9:3478";
    const MAPPED: &str = "203.0.113.11:40000";

    #[test]
    fn a_dial_back_from_an_unknown_address_proves_reachability() {
        let t0 = Instant::now();
        let a = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let mut probe = DialBack::new(vec![a(BOOT)], [a(STUN)], t0, counting_ids());
        let out = sent(&mut probe);
        let (id, change) = request_id(&out[0].1);
        assert_eq!((out.len(), out[0].0, change), (1, a(BOOT), false), "first the mapped address");
        answer(&mut probe, t0, id, a(BOOT), a(MAPPED));
        let out = sent(&mut probe);
        let (ask, change) = request_id(&out[0].1);
        assert!(change && ask != id, "then the dial-back, with a new nonce");
        // An answer from the asked node itself, or from a STUN server we used, proves nothing.
        answer(&mut probe, t0, ask, a(BOOT), a(MAPPED));
        answer(&mut probe, t0, ask, a(STUN), a(MAPPED));
        // ...nor one with another nonce.
        answer(&mut probe, t0, [77; 12], a(HELPER), a(MAPPED));
        assert_eq!(probe.verdict(), None);
        answer(&mut probe, t0, ask, a(HELPER), a(MAPPED));
        assert_eq!(
            probe.verdict(),
            Some(Verdict::Reachable { public: a(MAPPED), asked: a(BOOT), dialled_from: a(HELPER) })
        );
        assert_eq!(probe.poll_timeout(), None);
    }

    #[test]
    fn no_dial_back_by_the_deadline_means_unreachable_and_asks_are_repeated_until_then() {
        let t0 = Instant::now();
        let a = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let mut probe = DialBack::new(vec![a(BOOT)], [], t0, counting_ids());
        let (id, _) = request_id(&sent(&mut probe)[0].1);
        answer(&mut probe, t0, id, a(BOOT), a(MAPPED));
        let mut asks = sent(&mut probe).len();
        let mut now = t0;
        while let Some(at) = probe.poll_timeout() {
            now = at;
            probe.handle_timeout(now, counting_ids());
            asks += sent(&mut probe).len();
        }
        assert_eq!(asks, DIAL_BACK_TRIES as usize);
        assert_eq!(now, t0 + DIAL_BACK_WAIT);
        assert_eq!(probe.verdict(), Some(Verdict::Unreachable { mapped: a(MAPPED), asked: a(BOOT) }));
    }

    #[test]
    fn a_silent_bootstrap_node_is_replaced_by_the_next_and_none_answering_is_no_answer() {
        let t0 = Instant::now();
        let a = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let mut probe = DialBack::new(vec![a(BOOT), a(HELPER)], [], t0, counting_ids());
        let mut to = Vec::new();
        let mut now = t0;
        to.extend(sent(&mut probe).into_iter().map(|(t, _)| t));
        while let Some(at) = probe.poll_timeout() {
            now = at;
            probe.handle_timeout(now, counting_ids());
            to.extend(sent(&mut probe).into_iter().map(|(t, _)| t));
        }
        let per_node = MAPPING_TRIES as usize;
        assert_eq!(to, [vec![a(BOOT); per_node], vec![a(HELPER); per_node]].concat());
        assert_eq!(probe.verdict(), Some(Verdict::NoAnswer));
        assert_eq!(now, t0 + 2 * (RTO * 7), "three tries of 0.25, 0.5 and 1 s per node");
    }
}
