//! Sockets kept open ahead of calls, so a call's INVITE leaves with its candidates at once
//! (no binding or STUN round trip on the call's path, the warm case of B11):
//! - **legs**: one UDP socket per call toward the far node, on the node's own address; each
//!   spare leg has already asked a reflector (a STUN server, or a peer: peers answer STUN on
//!   their overlay port) which address its NAT gives it, its server-reflexive candidate;
//! - **pairs**: an even RTP port and the odd RTCP port above it on the phone-facing address,
//!   one pair per stream, from the configured range (RFC 3550 §11).
//!
//! The daemon binds what the pool asks for and reports the addresses back; the pool counts
//! every socket it has and never asks for more than its bound.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::turn::TurnLeg;
use crate::nat::stun::StunTransactionId;
use crate::sdp::RelayPorts;

/// A socket (or pair of sockets) the daemon holds for the anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SocketId(pub u64);

impl std::fmt::Display for SocketId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "media-socket-{}", self.0)
    }
}

/// What to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// One UDP socket on the node's address (any port).
    Leg,
    /// Two UDP sockets on the phone-facing address, an even port and the next one, from the
    /// configured range.
    Pair,
}

/// A spare leg.
#[derive(Debug)]
pub struct Leg {
    /// Its socket.
    pub id: SocketId,
    /// Its bound address (the host candidate).
    pub addr: SocketAddr,
    /// The address a reflector saw (the server-reflexive candidate), when it answered.
    pub srflx: Option<SocketAddr>,
    /// The Binding request out, its transaction ID, when and to whom it went, and how many
    /// times.
    asking: Option<(StunTransactionId, Instant, SocketAddr, u8)>,
    /// Its TURN allocation, when TURN servers are configured.
    pub turn: Option<TurnLeg>,
}

/// How long a reflector gets to answer a leg's Binding request before it is sent again
/// (RFC 8489 §6.2.1's RTO for a known LAN-to-Internet path is smaller than its 500 ms
/// default; 250 ms keeps a fresh leg's candidate ready within a second).
const STUN_RTO: Duration = Duration::from_millis(250);
/// Binding requests per leg before it goes without a server-reflexive candidate.
const STUN_TRIES: u8 = 4;

/// The sockets kept ready, and the count of all the anchor holds.
#[derive(Debug, Default)]
pub struct Pool {
    next_id: u64,
    opening: BTreeMap<SocketId, SocketKind>,
    legs: VecDeque<Leg>,
    pairs: VecDeque<(SocketId, RelayPorts)>,
    /// Sockets open or opening, spare or in a call.
    held: usize,
}

impl Pool {
    /// Asks for sockets until `legs` spare legs and `pairs` spare pairs are open or opening,
    /// within `max_held` sockets in all; returns what to open.
    pub fn refill(&mut self, legs: usize, pairs: usize, max_held: usize) -> Vec<(SocketId, SocketKind)> {
        let mut out = Vec::new();
        let opening = |k: SocketKind, o: &BTreeMap<SocketId, SocketKind>| o.values().filter(|v| **v == k).count();
        for (kind, want, have) in [
            (SocketKind::Leg, legs, self.legs.len() + opening(SocketKind::Leg, &self.opening)),
            (SocketKind::Pair, pairs, self.pairs.len() + opening(SocketKind::Pair, &self.opening)),
        ] {
            for _ in have..want {
                if self.held >= max_held {
                    return out;
                }
                let id = SocketId(self.next_id);
                self.next_id += 1;
                self.held += 1;
                self.opening.insert(id, kind);
                out.push((id, kind));
            }
        }
        out
    }

    /// The daemon opened `id` at `addrs` (one address for a leg, two for a pair). Returns
    /// the leg when one opened, so its reflexive address can be asked.
    pub fn opened(&mut self, id: SocketId, addrs: &[SocketAddr]) -> Option<SocketKind> {
        let kind = self.opening.remove(&id)?;
        match (kind, addrs) {
            (SocketKind::Leg, [addr, ..]) => {
                self.legs.push_back(Leg { id, addr: *addr, srflx: None, asking: None, turn: None });
            }
            (SocketKind::Pair, [rtp, rtcp, ..]) => {
                self.pairs.push_back((id, RelayPorts { rtp: rtp.port(), rtcp: rtcp.port() }));
            }
            _ => {
                self.held -= 1;
                return None;
            }
        }
        Some(kind)
    }

    /// The daemon could not open `id`.
    pub fn open_failed(&mut self, id: SocketId) {
        if self.opening.remove(&id).is_some() {
            self.held -= 1;
        }
    }

    /// A socket a call held is closed.
    pub fn released(&mut self) {
        self.held = self.held.saturating_sub(1);
    }

    /// How many sockets are open or opening.
    pub fn held(&self) -> usize {
        self.held
    }

    /// A spare leg for a call: the most gathered first (a reflexive address and a relay).
    pub fn take_leg(&mut self) -> Option<Leg> {
        let gathered = |l: &Leg| {
            usize::from(l.srflx.is_some()) + usize::from(l.turn.as_ref().is_some_and(|t| t.relayed().is_some()))
        };
        let best = self.legs.iter().enumerate().max_by_key(|(i, l)| (gathered(l), usize::MAX - i)).map(|(i, _)| i)?;
        self.legs.remove(best)
    }

    /// The spare leg `id`.
    pub fn leg_mut(&mut self, id: SocketId) -> Option<&mut Leg> {
        self.legs.iter_mut().find(|l| l.id == id)
    }

    /// Drives the spare legs' TURN allocations; what they send to their servers.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<(SocketId, SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        for leg in &mut self.legs {
            if let Some(t) = leg.turn.as_mut() {
                if t.poll_timeout().is_some_and(|at| at <= now) {
                    t.handle_timeout(now);
                }
                while let Some(bytes) = t.poll_transmit() {
                    out.push((leg.id, t.server(), bytes));
                }
            }
        }
        out
    }

    /// Live TURN allocations of spare legs.
    pub fn relays(&self) -> usize {
        self.legs.iter().filter(|l| l.turn.as_ref().is_some_and(TurnLeg::is_live)).count()
    }

    /// A spare pair for a stream.
    pub fn take_pair(&mut self) -> Option<(SocketId, RelayPorts)> {
        self.pairs.pop_front()
    }

    /// Binding requests to send from spare legs now: `(leg, reflector, transaction id)`.
    /// `new_id` draws transaction IDs.
    pub fn poll_stun(
        &mut self,
        now: Instant,
        reflectors: &[SocketAddr],
        mut new_id: impl FnMut() -> StunTransactionId,
    ) -> Vec<(SocketId, SocketAddr, StunTransactionId)> {
        let mut out = Vec::new();
        if reflectors.is_empty() {
            return out;
        }
        for leg in self.legs.iter_mut().filter(|l| l.srflx.is_none()) {
            let due = match leg.asking {
                None => Some(0),
                Some((_, at, _, tries)) if tries < STUN_TRIES && now >= at + STUN_RTO => Some(tries),
                Some(_) => None,
            };
            if let Some(tries) = due {
                // Each try asks the next reflector.
                let to = reflectors[tries as usize % reflectors.len()];
                let id = new_id();
                leg.asking = Some((id, now, to, tries + 1));
                out.push((leg.id, to, id));
            }
        }
        out
    }

    /// When [`poll_stun`](Self::poll_stun) or [`handle_timeout`](Self::handle_timeout) has
    /// more to do.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let stun = self
            .legs
            .iter()
            .filter(|l| l.srflx.is_none())
            .filter_map(|l| match l.asking {
                Some((_, at, _, tries)) if tries < STUN_TRIES => Some(at + STUN_RTO),
                _ => None,
            })
            .min();
        let turn = self.legs.iter_mut().filter_map(|l| l.turn.as_mut()?.poll_timeout()).min();
        [stun, turn].into_iter().flatten().min()
    }

    /// A Binding answer arrived on leg `id` from `from`: its mapped address is the leg's
    /// server-reflexive candidate if it answers our request from the reflector we asked.
    pub fn stun_answer(&mut self, id: SocketId, from: SocketAddr, tx: StunTransactionId, mapped: SocketAddr) -> bool {
        let Some(leg) = self.legs.iter_mut().find(|l| l.id == id) else { return false };
        match leg.asking {
            Some((asked, _, to, _)) if asked == tx && to == from => {
                leg.srflx = Some(mapped);
                true
            }
            _ => false,
        }
    }

    /// Whether `id` is a spare leg (datagrams on it are only STUN answers).
    pub fn is_spare_leg(&self, id: SocketId) -> bool {
        self.legs.iter().any(|l| l.id == id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // one real reading as the virtual clock's epoch
    use super::*;

    #[test]
    fn refills_within_the_bound_and_hands_out_what_opened() {
        let mut p = Pool::default();
        let asked = p.refill(2, 3, 4);
        assert_eq!(asked.len(), 4, "bounded");
        assert_eq!(p.refill(2, 3, 4), vec![], "nothing more while opening");
        let leg = asked.iter().find(|(_, k)| *k == SocketKind::Leg).unwrap().0;
        let pair = asked.iter().find(|(_, k)| *k == SocketKind::Pair).unwrap().0;
        assert_eq!(p.opened(leg, &["10.0.0.2:40000".parse().unwrap()]), Some(SocketKind::Leg));
        assert_eq!(
            p.opened(pair, &["127.0.0.1:20000".parse().unwrap(), "127.0.0.1:20001".parse().unwrap()]),
            Some(SocketKind::Pair)
        );
        assert_eq!(p.opened(pair, &[]), None, "twice");
        assert_eq!(p.take_pair().unwrap().1, RelayPorts { rtp: 20000, rtcp: 20001 });
        assert_eq!(p.take_pair(), None);
        let l = p.take_leg().unwrap();
        assert_eq!(l.addr, "10.0.0.2:40000".parse().unwrap());
        p.released();
        assert_eq!(p.held(), 3);
    }

    #[test]
    fn legs_learn_their_reflexive_address_from_the_reflector_asked() {
        let t0 = Instant::now();
        let mut p = Pool::default();
        let (id, _) = p.refill(1, 0, 10)[0];
        p.opened(id, &["10.0.0.2:40000".parse().unwrap()]);
        let r: SocketAddr = "198.51.100.1:5070".parse().unwrap();
        let mut n = 0u8;
        let mut ids = || {
            n += 1;
            [n; 12]
        };
        let asks = p.poll_stun(t0, &[r], &mut ids);
        assert_eq!(asks, vec![(id, r, [1; 12])]);
        assert_eq!(p.poll_stun(t0, &[r], &mut ids), vec![], "not again before the RTO");
        assert_eq!(p.poll_timeout(), Some(t0 + STUN_RTO));
        let mapped: SocketAddr = "203.0.113.5:61000".parse().unwrap();
        assert!(!p.stun_answer(id, "198.51.100.2:5070".parse().unwrap(), [1; 12], mapped), "another source");
        assert!(!p.stun_answer(id, r, [9; 12], mapped), "another transaction");
        assert!(p.stun_answer(id, r, [1; 12], mapped));
        assert_eq!(p.poll_timeout(), None);
        assert_eq!(p.take_leg().unwrap().srflx, Some(mapped));
    }
}
