//! A deterministic many-node simulator: whole [`Peer`]s, exchanging the real SIP bytes they
//! emit, over a virtual network ([`network`]) on a virtual clock.
//!
//! # Contract
//! The simulator is the second driver of the sans-IO peer (the daemon is the first): one loop
//! over a virtual clock that delivers the next datagram or fires the next node deadline,
//! whichever is earlier, then drains that node's outputs ([`Peer::drain`]): transmits into
//! the network, events into the simulator's records. Every random choice (addresses of joiners,
//! latency, loss, victims, keys, node seeds) comes from ChaCha8 generators seeded by
//! [`SimConfig::seed`], so a run, and a failure it reports, replays exactly from its seed.
//!
//! # Layout
//! - [`network`]: latency ± jitter and loss for opaque datagrams.
//! - this file: [`Sim`], the nodes and their lifecycle (spawn, join, leave, kill, lookup) and the
//!   event loop; it implements the overlay's [`RingView`], so the ring invariants of
//!   [`crate::overlay::testnet::invariants`] apply to it unchanged.
//! - [`scenario`]: the experiments behind `p2psip sim` (grow, converge, measure hops, fail,
//!   churn) and their [`scenario::SimReport`].
//! - [`tally`]: every datagram attributed to the Chord RPC it carries (`traffic_by_kind`).
//!
//! # Not here
//! Sockets, threads or sleeping; TCP (every message is a UDP datagram); NAT; partitions.
//! A killed node's state is dropped at once, so memory follows the live population.

pub mod lockstep;
pub mod network;
pub mod records;
pub mod scenario;
pub mod tally;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::identity::{TrustAnchor, VerifiedCache};
use crate::netem::LinkConfig;
use crate::overlay::testnet::invariants::{InvariantViolation, RingView};
use crate::overlay::{Chord, ChordConfig, Event, LookupError, LookupId, NodeId, NodeState};
use crate::peer::StorageConfig;
use crate::peer::{Peer, PeerConfig, PeerEvent, StorageEvent};
use crate::store::MemoryStore;
use lockstep::LockStep;
use network::NetworkStats;

/// The overlay port of a simulated node; a second node on the same host takes the next ports.
pub const OVERLAY_PORT: u16 = 5070;

/// Every tenth node shares its host with the node before it (a second instance on one
/// machine, or two phones behind one NAT'd address), on the next port.
const SHARED_HOST_EVERY: usize = 10;

/// The simulation's parameters.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seeds the simulator's generator, the network's and every node's.
    pub seed: u64,
    /// The virtual network's link model.
    pub network: LinkConfig,
    /// Every node's Chord configuration.
    pub chord: ChordConfig,
    /// Signed storage on every node, checked against this root.
    pub storage: Option<SimStorage>,
    /// Consecutive nodes per shared address: 0 or 1 keeps the default (every tenth node shares
    /// the previous node's host); n ≥ 2 puts every n consecutive nodes on one address, on
    /// consecutive ports, so their IDs are contiguous (a Sybil group).
    pub same_address: usize,
}

/// Storage for every simulated node.
#[derive(Debug, Clone)]
pub struct SimStorage {
    /// The root the records are checked against.
    pub root: TrustAnchor,
    /// Every node's storage settings.
    pub config: StorageConfig,
}

impl SimConfig {
    /// The defaults, seeded by `seed`.
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            network: LinkConfig::default(),
            chord: ChordConfig::default(),
            storage: None,
            same_address: 0,
        }
    }
}

/// One finished lookup, judged when it finished against the nodes admitted at that instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupRecord {
    /// The node that looked up.
    pub node: usize,
    /// Its lookup.
    pub id: LookupId,
    /// The key.
    pub key: NodeId,
    /// The node named, or why none was.
    pub result: Result<NodeId, LookupError>,
    /// Chord routing hops: nodes asked to route (zero when the querier knew the answer).
    pub hops: usize,
    /// Nodes asked to confirm the answer (the node named responsible, or its backups).
    pub confirmations: usize,
    /// When it started.
    pub started_at: Instant,
    /// When it ended.
    pub finished_at: Instant,
    /// The answer was the key's true successor among the admitted nodes when it arrived.
    pub correct: bool,
    /// The answer named a node that was no longer in the ring (dead, gone, or rejoining): the
    /// caller finds out when it contacts that node, and looks up again.
    pub named_departed: bool,
}

/// N peers on a virtual network.
pub struct Sim {
    start: Instant,
    config: SimConfig,
    rng: ChaCha8Rng,
    /// The peers and their network.
    net: LockStep,
    /// Every node's ID, by number (a dead node keeps its ID).
    ids: Vec<NodeId>,
    /// IDs of nodes in the ring by their own account (joined, or a ring of one): the oracle.
    admitted: BTreeSet<NodeId>,
    pending_lookups: BTreeMap<(usize, LookupId), (NodeId, Instant)>,
    finished_lookups: Vec<LookupRecord>,
    /// Storage operations finished, by node, in order (drained by [`Sim::take_storage_events`]).
    storage_events: Vec<(usize, StorageEvent)>,
    /// Addresses handed out so far (a node's address is never reused).
    next_host: u32,
    /// Every datagram sent, by kind of RPC.
    tally: tally::Tally,
}

impl Sim {
    /// An empty network whose virtual clock starts at `start`.
    pub fn new(start: Instant, config: SimConfig) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let net = LockStep::with_link(start, config.network.clone(), rng.random());
        Sim {
            start,
            config,
            rng,
            net,
            ids: Vec::new(),
            admitted: BTreeSet::new(),
            pending_lookups: BTreeMap::new(),
            finished_lookups: Vec::new(),
            storage_events: Vec::new(),
            next_host: 0,
            tally: tally::Tally::default(),
        }
    }

    /// The virtual clock.
    pub fn now(&self) -> Instant {
        self.net.now()
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.net.now() - self.start
    }

    /// The run's seed.
    pub fn seed(&self) -> u64 {
        self.config.seed
    }

    /// The run's settings.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The run's generator, for scenario choices (victims, keys).
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// What the network has carried.
    pub fn network_stats(&self) -> NetworkStats {
        self.net.network_stats()
    }

    /// Datagrams sent so far, by kind of RPC ([`tally`]).
    pub fn traffic_by_kind(&self) -> BTreeMap<&'static str, tally::KindCounts> {
        self.tally.snapshot()
    }

    /// Nodes ever spawned, dead or alive.
    pub fn len(&self) -> usize {
        self.net.len()
    }

    /// Whether no node was ever spawned.
    pub fn is_empty(&self) -> bool {
        self.net.is_empty()
    }

    /// Node `ix`'s peer, while it lives.
    pub fn peer(&self, ix: usize) -> Option<&Peer> {
        self.net.get(ix)
    }

    /// Node `ix`'s peer, mutably, for tests that plant state behind the protocol's back.
    #[cfg(test)]
    pub(crate) fn peer_mut(&mut self, ix: usize) -> Option<&mut Peer> {
        self.net.get_mut(ix)
    }

    /// Node `ix`'s address.
    pub fn addr(&self, ix: usize) -> Option<SocketAddr> {
        self.net.addr(ix)
    }

    /// Whether node `ix` lives.
    pub fn is_alive(&self, ix: usize) -> bool {
        self.peer(ix).is_some()
    }

    /// Live nodes that have not left: who should be in the ring.
    pub fn members(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.net.len())
            .filter(|&ix| self.net.get(ix).is_some_and(|p| !matches!(p.chord().state(), NodeState::Left)))
    }

    /// Live nodes in the ring by their own account (joined, or a ring of one).
    pub fn admitted(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.net.len()).filter(|&ix| {
            self.net.get(ix).is_some_and(|p| matches!(p.chord().state(), NodeState::Joined | NodeState::Alone))
        })
    }

    /// The key's true successor among the admitted nodes, now.
    pub fn true_successor(&self, key: NodeId) -> Option<NodeId> {
        self.admitted.range(key..).next().or(self.admitted.iter().next()).copied()
    }

    /// The address the next node gets: `10.a.b.c:5070`, except that every tenth node shares
    /// the previous node's host on the next port.
    fn next_addr(&mut self) -> SocketAddr {
        let k = self.net.len();
        let group = self.config.same_address;
        let shares = if group >= 2 { !k.is_multiple_of(group) } else { k % SHARED_HOST_EVERY == SHARED_HOST_EVERY - 1 };
        if shares {
            if let Some(prev) = self.net.last_addr() {
                return SocketAddr::new(prev.ip(), prev.port() + 1);
            }
        }
        self.next_host += 1;
        let h = self.next_host;
        let ip = Ipv4Addr::new(10, (h >> 16) as u8, (h >> 8) as u8, h as u8);
        SocketAddr::new(IpAddr::V4(ip), OVERLAY_PORT)
    }

    /// Starts a node at a fresh address. It is a ring of one until it joins.
    pub fn spawn(&mut self) -> usize {
        let addr = self.next_addr();
        let proxy = SocketAddr::new(addr.ip(), 5060);
        let config =
            PeerConfig { seed: self.rng.random(), chord: self.config.chord.clone(), ..PeerConfig::new(addr, proxy) };
        let now = self.net.now();
        let mut peer = Peer::new(config, now);
        peer.record_rpc_kinds();
        if let Some(storage) = &self.config.storage {
            let ids = VerifiedCache::new(storage.root.clone(), 4096);
            peer.enable_storage(now, storage.config.clone(), Box::new(MemoryStore::new()), ids, None);
        }
        let id = peer.node_id();
        let ix = self.net.insert(addr, peer);
        self.ids.push(id);
        if self.net.len() == 1 || self.admitted.is_empty() {
            // The first node creates the ring; later ones are alone only until they join.
            self.admitted.insert(id);
        }
        self.after(ix);
        ix
    }

    /// Has node `ix` join through the nodes in `bootstrap`, tried in order.
    pub fn join(&mut self, ix: usize, bootstrap: &[usize]) {
        let addrs = bootstrap.iter().filter_map(|b| self.addr(*b)).collect();
        let now = self.net.now();
        if let Some(p) = self.net.get_mut(ix) {
            p.join(now, addrs);
            self.after(ix);
        }
    }

    /// Node `ix` leaves gracefully; its state is dropped once it reports `Left`.
    pub fn leave(&mut self, ix: usize) {
        let now = self.net.now();
        if let Some(p) = self.net.get_mut(ix) {
            self.admitted.remove(&p.node_id());
            p.leave(now);
            self.after(ix);
        }
    }

    /// Node `ix` vanishes without a word; datagrams to it are dropped.
    pub fn kill(&mut self, ix: usize) {
        if self.net.remove(ix).is_some() {
            self.admitted.remove(&self.ids[ix]);
        }
        self.pending_lookups.retain(|(n, _), _| *n != ix);
    }

    /// Stores `record` from node `ix`; the outcome arrives in [`Sim::take_storage_events`].
    pub fn put(&mut self, ix: usize, record: crate::store::Record) -> Option<crate::peer::StorageOpId> {
        let now = self.net.now();
        let op = self.net.get_mut(ix)?.put(now, record);
        self.after(ix);
        op
    }

    /// Fetches a registration from node `ix`; the outcome arrives in [`Sim::take_storage_events`].
    pub fn fetch(&mut self, ix: usize, key: &str) -> Option<crate::peer::StorageOpId> {
        let now = self.net.now();
        let op = self.net.get_mut(ix)?.fetch(now, crate::store::RecordKind::Registration, key);
        self.after(ix);
        op
    }

    /// Starts a lookup for `key` at node `ix`; its record appears in [`Sim::finished_lookups`].
    pub fn lookup(&mut self, ix: usize, key: NodeId) -> Option<LookupId> {
        let now = self.net.now();
        let id = self.net.get_mut(ix)?.lookup(now, key);
        self.pending_lookups.insert((ix, id), (key, now));
        self.after(ix);
        Some(id)
    }

    /// Lookups started and not yet ended.
    pub fn pending_lookups(&self) -> usize {
        self.pending_lookups.len()
    }

    /// Lookups that ended, in order.
    pub fn finished_lookups(&self) -> &[LookupRecord] {
        &self.finished_lookups
    }

    /// Hands over the finished lookups' records, forgetting them.
    pub fn take_storage_events(&mut self) -> Vec<(usize, StorageEvent)> {
        std::mem::take(&mut self.storage_events)
    }

    /// Takes the lookups that ended.
    pub fn take_finished_lookups(&mut self) -> Vec<LookupRecord> {
        std::mem::take(&mut self.finished_lookups)
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let deadline = self.net.now() + d;
        self.run_until(deadline);
    }

    /// Delivers datagrams and fires deadlines in time order up to `deadline`.
    pub fn run_until(&mut self, deadline: Instant) {
        while let Some(touched) = self.net.step(deadline) {
            if let Some(ix) = touched {
                self.after(ix);
            }
        }
        self.net.wait_until(deadline);
    }

    /// Runs in steps of `step` until `ok` holds, for at most `limit`; returns how long it took.
    pub fn run_until_ok(
        &mut self,
        limit: Duration,
        step: Duration,
        mut ok: impl FnMut(&Sim) -> Result<(), InvariantViolation>,
    ) -> Result<Duration, InvariantViolation> {
        let began = self.net.now();
        loop {
            match ok(self) {
                Ok(()) => return Ok(self.net.now() - began),
                Err(e) if self.net.now() - began >= limit => return Err(e),
                Err(_) => self.run_for(step),
            }
        }
    }

    /// Sends what node `ix` wants sent, records what it reported, and files its next deadline.
    fn after(&mut self, ix: usize) {
        let now = self.net.now();
        let Some(peer) = self.net.get_mut(ix) else { return };
        for (call_id, kind) in peer.take_rpc_kinds() {
            self.tally.note(now, call_id, kind);
        }
        let tally = &mut self.tally;
        let mut events = Vec::new();
        self.net.drain(ix, |t| tally.count(now, &t.data), |e| events.push(e));
        let mut gone = false;
        for event in events {
            let event = match event {
                PeerEvent::Overlay(event) => event,
                PeerEvent::Storage(event) => {
                    self.storage_events.push((ix, event));
                    continue;
                }
                // Simulated nodes are all reachable peers: no dial-back is asked; they have no
                // mailbox and no phones calling other domains.
                PeerEvent::Role(_) | PeerEvent::Delivered(_) | PeerEvent::Resolve(_) => continue,
            };
            match event {
                Event::Joined { .. } => {
                    self.admitted.insert(self.ids[ix]);
                }
                Event::Isolated => {
                    self.admitted.remove(&self.ids[ix]);
                }
                Event::Left => gone = true,
                Event::LookupDone { id, result, path, confirmations, .. } => {
                    let Some((key, started_at)) = self.pending_lookups.remove(&(ix, id)) else { continue };
                    let truth = self.admitted.range(key..).next().or(self.admitted.iter().next()).copied();
                    let result = result.map(|c| c.id);
                    let correct = result.as_ref().ok().is_some_and(|r| Some(*r) == truth);
                    let named_departed = result.as_ref().ok().is_some_and(|r| !self.admitted.contains(r));
                    self.finished_lookups.push(LookupRecord {
                        node: ix,
                        id,
                        key,
                        result,
                        hops: path.len().saturating_sub(confirmations as usize),
                        confirmations: confirmations as usize,
                        started_at,
                        finished_at: now,
                        correct,
                        named_departed,
                    });
                }
                _ => {}
            }
        }
        if gone {
            self.net.remove(ix);
        }
    }
}

impl RingView for Sim {
    fn member_indices(&self) -> Vec<usize> {
        self.members().collect()
    }

    fn chord_of(&self, ix: usize) -> Option<&Chord> {
        self.peer(ix).map(Peer::chord)
    }

    fn elapsed_time(&self) -> Duration {
        self.elapsed()
    }

    fn run_seed(&self) -> u64 {
        self.seed()
    }
}
