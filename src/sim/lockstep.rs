//! The one lock-step network of whole [`Peer`]s on a virtual clock: the simulator's core, and
//! what unit tests use when they build their peers themselves (storage with identities,
//! attackers, floods).
//!
//! Peers sit in slots, numbered in the order they were added, each at its own address.
//! Datagrams travel on the simulator's [`Network`] (the [`LinkConfig`] of [`crate::netem`];
//! a zero delay by default, so every answer arrives at once). [`LockStep::step`] does the one
//! thing that comes next in time — deliver a datagram (first on a tie) or fire a peer's
//! deadline — and names the peer it touched; the caller then drains that peer with
//! [`LockStep::drain`] (its transmits into the network, its events to the caller), which also
//! files the peer's next deadline. [`crate::sim::Sim`] adds its oracle and bookkeeping on top;
//! [`LockStep::run_for`] is the plain loop for tests. Deadlines are kept in time order, so a
//! step costs a logarithm of the number of peers, not a scan.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::network::{Network, NetworkStats};
use crate::netem::LinkConfig;
use crate::peer::{Endpoint, Input, Listener, Peer, PeerEvent, Transmit};

struct Slot {
    addr: SocketAddr,
    /// `None` once removed: a dead node keeps its number and address.
    peer: Option<Peer>,
    /// The deadline filed in `LockStep::timers`.
    timer: Option<Instant>,
}

/// The source port of datagrams a peer sends from a one-shot socket ([`Listener::OneShot`]).
pub const ONE_SHOT_PORT: u16 = 49_999;

/// Peers exchanging their real SIP bytes over a virtual network, in lock-step.
pub struct LockStep {
    now: Instant,
    slots: Vec<Slot>,
    by_addr: BTreeMap<SocketAddr, usize>,
    timers: BTreeSet<(Instant, usize)>,
    network: Network,
    /// Datagrams sent to addresses where no peer was ever added, per address.
    undelivered: BTreeMap<SocketAddr, usize>,
    /// Peers behind a filtering NAT (RFC 4787 §5, address-and-port-dependent filtering):
    /// what each has sent to; a datagram to one of them from anywhere else is dropped.
    filtered: BTreeMap<SocketAddr, BTreeSet<SocketAddr>>,
}

impl LockStep {
    /// No peers yet; datagrams arrive at once and are never lost.
    pub fn new(now: Instant) -> LockStep {
        let instant = LinkConfig { latency: Duration::ZERO, jitter: Duration::ZERO, loss_percent: 0.0 };
        LockStep::with_link(now, instant, 0)
    }

    /// No peers yet; datagrams as `link` says, drawn from `seed`.
    pub fn with_link(now: Instant, link: LinkConfig, seed: u64) -> LockStep {
        LockStep {
            now,
            slots: Vec::new(),
            by_addr: BTreeMap::new(),
            timers: BTreeSet::new(),
            network: Network::new(link, seed),
            undelivered: BTreeMap::new(),
            filtered: BTreeMap::new(),
        }
    }

    /// The virtual clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Adds `peer` at `addr` (its overlay address); returns its number. Drain it once it has
    /// something to say (`drain`): a new peer is not drained here.
    pub fn insert(&mut self, addr: SocketAddr, peer: Peer) -> usize {
        let ix = self.slots.len();
        self.slots.push(Slot { addr, peer: Some(peer), timer: None });
        self.by_addr.insert(addr, ix);
        ix
    }

    /// Puts the peer at `addr` behind a filtering NAT: from now on it receives only from
    /// addresses it has sent to (address-and-port-dependent filtering, RFC 4787 §5).
    pub fn filter_unsolicited(&mut self, addr: SocketAddr) {
        self.filtered.entry(addr).or_default();
    }

    /// Removes peer `ix` (killed, or gone): its datagrams are dropped from now on.
    pub fn remove(&mut self, ix: usize) -> Option<Peer> {
        let slot = self.slots.get_mut(ix)?;
        if let Some(t) = slot.timer.take() {
            self.timers.remove(&(t, ix));
        }
        slot.peer.take()
    }

    /// How many peers were ever added, removed ones included.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Peer `ix`, while it lives.
    pub fn get(&self, ix: usize) -> Option<&Peer> {
        self.slots.get(ix)?.peer.as_ref()
    }

    /// Peer `ix`, while it lives.
    pub fn get_mut(&mut self, ix: usize) -> Option<&mut Peer> {
        self.slots.get_mut(ix)?.peer.as_mut()
    }

    /// The address of peer `ix`.
    pub fn addr(&self, ix: usize) -> Option<SocketAddr> {
        self.slots.get(ix).map(|s| s.addr)
    }

    /// The last peer's address, removed or not.
    pub fn last_addr(&self) -> Option<SocketAddr> {
        self.slots.last().map(|s| s.addr)
    }

    /// The number of the peer at `addr`.
    pub fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.by_addr.get(&addr).copied()
    }

    /// The live peer at `addr`.
    ///
    /// # Panics
    /// When there is none: a test names only peers it added.
    pub fn peer(&mut self, addr: SocketAddr) -> &mut Peer {
        let ix = self.index_of(addr).expect("a peer at that address");
        self.get_mut(ix).expect("a live peer at that address")
    }

    /// The live peer at `addr`.
    ///
    /// # Panics
    /// When there is none.
    pub fn at(&self, addr: SocketAddr) -> &Peer {
        let ix = self.index_of(addr).expect("a peer at that address");
        self.get(ix).expect("a live peer at that address")
    }

    /// Removes the peer at `addr` (killed): its datagrams are dropped from now on.
    pub fn remove_at(&mut self, addr: SocketAddr) -> Option<Peer> {
        let ix = self.index_of(addr)?;
        self.remove(ix)
    }

    /// Every live peer with its address, in the order they were added.
    pub fn peers(&self) -> impl Iterator<Item = (SocketAddr, &Peer)> + '_ {
        self.slots.iter().filter_map(|s| Some((s.addr, s.peer.as_ref()?)))
    }

    /// Every live peer, mutably, with its address.
    pub fn peers_mut(&mut self) -> impl Iterator<Item = (SocketAddr, &mut Peer)> + '_ {
        self.slots.iter_mut().filter_map(|s| Some((s.addr, s.peer.as_mut()?)))
    }

    /// What the network has carried.
    pub fn network_stats(&self) -> NetworkStats {
        self.network.stats()
    }

    /// Datagrams sent to `addr` where no peer was ever added.
    pub fn undelivered(&self, addr: SocketAddr) -> usize {
        self.undelivered.get(&addr).copied().unwrap_or(0)
    }

    /// Does the next thing due at or before `deadline`: delivers the next datagram (first on
    /// a tie) or fires the next deadline, and moves the clock there. `None` when nothing is
    /// due by then; `Some(None)` when the datagram found no live peer; else the number of the
    /// peer it touched, to be drained.
    pub fn step(&mut self, deadline: Instant) -> Option<Option<usize>> {
        let next_timer = self.timers.first().map(|(t, _)| *t);
        let next_datagram = self.network.poll_at();
        let next = match (next_timer, next_datagram) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        if next > deadline {
            return None;
        }
        self.now = self.now.max(next);
        let now = self.now;
        if next_datagram == Some(next) {
            let Some(d) = self.network.poll_delivery(now) else { return Some(None) };
            let Some(&ix) = self.by_addr.get(&d.to) else {
                *self.undelivered.entry(d.to).or_default() += 1;
                return Some(None);
            };
            if self.filtered.get(&d.to).is_some_and(|sent_to| !sent_to.contains(&d.from)) {
                return Some(None);
            }
            let slot = &mut self.slots[ix];
            let Some(peer) = slot.peer.as_mut() else { return Some(None) };
            // One node's story can be filtered from a thousand, as the daemon's `node` span does.
            let _span = tracing::debug_span!("node", addr = %slot.addr).entered();
            let from = Endpoint { listener: Listener::Overlay, transport: d.transport, remote: d.from, conn: None };
            peer.handle_input(now, Input::Receive { from, data: d.data });
            return Some(Some(ix));
        }
        let (_, ix) = self.timers.pop_first()?;
        self.slots[ix].timer = None;
        let slot = &mut self.slots[ix];
        let Some(peer) = slot.peer.as_mut() else { return Some(None) };
        let _span = tracing::debug_span!("node", addr = %slot.addr).entered();
        peer.handle_input(now, Input::Timeout);
        Some(Some(ix))
    }

    /// Sends what peer `ix` wants sent (each transmit shown to `on_transmit` first), hands its
    /// events to `on_event`, and files its next deadline.
    pub fn drain(&mut self, ix: usize, mut on_transmit: impl FnMut(&Transmit), on_event: impl FnMut(PeerEvent)) {
        let now = self.now;
        let Some(slot) = self.slots.get_mut(ix) else { return };
        let Some(peer) = slot.peer.as_mut() else { return };
        let (addr, network) = (slot.addr, &mut self.network);
        let mut sent_to = self.filtered.get_mut(&addr);
        let next = peer.drain(
            |t| {
                on_transmit(&t);
                if let Some(sent_to) = sent_to.as_mut() {
                    sent_to.insert(t.to.remote);
                }
                // A one-shot socket: the same IP address, a port of its own.
                let from = match t.to.listener {
                    Listener::OneShot => SocketAddr::new(addr.ip(), ONE_SHOT_PORT),
                    _ => addr,
                };
                network.send(now, from, t.to.remote, t.to.transport, t.data);
            },
            on_event,
        );
        if slot.timer != next {
            if let Some(t) = slot.timer {
                self.timers.remove(&(t, ix));
            }
            if let Some(t) = next {
                self.timers.insert((t, ix));
            }
            slot.timer = next;
        }
    }

    /// Moves the clock to `deadline` (never back): for a caller stepping itself, once
    /// [`LockStep::step`] has nothing left before it.
    pub fn wait_until(&mut self, deadline: Instant) {
        self.now = self.now.max(deadline);
    }

    /// Runs up to `deadline`, draining each peer it touches; then the clock reads `deadline`.
    /// Every peer is drained first, so what commands queued (a put, a join) goes out.
    pub fn run_until(&mut self, deadline: Instant, mut on_event: impl FnMut(SocketAddr, PeerEvent)) {
        for ix in 0..self.slots.len() {
            let addr = self.slots[ix].addr;
            self.drain(ix, |_| {}, |e| on_event(addr, e));
        }
        while let Some(touched) = self.step(deadline) {
            if let Some(ix) = touched {
                let addr = self.slots[ix].addr;
                self.drain(ix, |_| {}, |e| on_event(addr, e));
            }
        }
        self.now = self.now.max(deadline);
    }

    /// [`LockStep::run_until`] `d` from now.
    pub fn run_for(&mut self, d: Duration, on_event: impl FnMut(SocketAddr, PeerEvent)) {
        let deadline = self.now + d;
        self.run_until(deadline, on_event);
    }
}
