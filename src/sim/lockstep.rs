//! A small lock-step network of whole [`Peer`]s keyed by address, on a virtual clock, for
//! tests that build their peers themselves (storage with identities, attackers, floods). It
//! carries datagrams on the simulator's own [`Network`] (a zero-delay [`LinkConfig`] by
//! default, so every answer arrives at once) and drives each peer with [`Peer::drain`], the
//! drive loop every synchronous driver shares. [`crate::sim::Sim`] is the same idea at
//! scale, with its own address plan, churn and bookkeeping.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::network::Network;
use crate::netem::LinkConfig;
use crate::peer::{Endpoint, Input, Listener, Peer, PeerEvent};

/// Peers exchanging their real SIP bytes over a virtual network.
pub struct LockStep {
    /// The virtual clock.
    pub now: Instant,
    /// The peers, by their overlay address.
    pub peers: BTreeMap<SocketAddr, Peer>,
    /// Datagrams sent to addresses with no peer, per address.
    pub undelivered: BTreeMap<SocketAddr, usize>,
    network: Network,
}

impl LockStep {
    /// No peers yet; datagrams arrive at once and are never lost.
    pub fn new(now: Instant) -> LockStep {
        let instant = LinkConfig { latency: Duration::ZERO, jitter: Duration::ZERO, loss_percent: 0.0 };
        LockStep::with_link(now, instant, 0)
    }

    /// No peers yet; datagrams as `link` says, drawn from `seed`.
    pub fn with_link(now: Instant, link: LinkConfig, seed: u64) -> LockStep {
        LockStep { now, peers: BTreeMap::new(), undelivered: BTreeMap::new(), network: Network::new(link, seed) }
    }

    /// Adds a peer at `addr` (its overlay address).
    pub fn insert(&mut self, addr: SocketAddr, peer: Peer) {
        self.peers.insert(addr, peer);
    }

    /// The peer at `addr`.
    ///
    /// # Panics
    /// When there is none: a test names only peers it added.
    pub fn peer(&mut self, addr: SocketAddr) -> &mut Peer {
        self.peers.get_mut(&addr).expect("a peer at that address")
    }

    /// Runs for `d` of virtual time: sends what every peer wants sent, delivers what is due,
    /// fires the deadlines that come; every peer's events go to `on_event` with its address.
    pub fn run_for(&mut self, d: Duration, mut on_event: impl FnMut(SocketAddr, PeerEvent)) {
        let end = self.now + d;
        loop {
            self.flush(&mut on_event);
            while let Some(delivery) = self.network.poll_delivery(self.now) {
                let Some(dest) = self.peers.get_mut(&delivery.to) else {
                    *self.undelivered.entry(delivery.to).or_default() += 1;
                    continue;
                };
                let from = Endpoint {
                    listener: Listener::Overlay,
                    transport: delivery.transport,
                    remote: delivery.from,
                    conn: None,
                };
                dest.handle_input(self.now, Input::Receive { from, data: delivery.data });
                self.flush(&mut on_event);
            }
            let next = [self.network.poll_at(), self.peers.values().filter_map(Peer::poll_timeout).min()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    for p in self.peers.values_mut() {
                        if p.poll_timeout().is_some_and(|d| d <= self.now) {
                            p.handle_input(self.now, Input::Timeout);
                        }
                    }
                }
                _ => {
                    self.now = end;
                    return;
                }
            }
        }
    }

    /// Every peer's outputs: transmits into the network, events to `on_event`.
    fn flush(&mut self, on_event: &mut impl FnMut(SocketAddr, PeerEvent)) {
        let now = self.now;
        let network = &mut self.network;
        for (&addr, p) in self.peers.iter_mut() {
            p.drain(|t| network.send(now, addr, t.to.remote, t.to.transport, t.data), |e| on_event(addr, e));
        }
    }
}
