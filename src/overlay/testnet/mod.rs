//! A lock-step network of [`Chord`] nodes on a virtual clock: the overlay's test bench, with
//! abstract RPCs instead of SIP (the simulator, `crate::sim`, runs whole peers and shares its
//! [`invariants`]).
//!
//! One event queue holds every message in flight, each delayed and lost as the simulator's
//! link model says ([`crate::netem::LinkConfig`]: latency ± jitter, loss in percent), drawn
//! from one seeded ChaCha8 generator, so a run is replayed exactly from its seed. Like
//! the SIP transaction layer that will sit under Chord in the daemon, the bench resends a
//! request that has not been answered after `T1`, `2·T1`, `4·T1`… (RFC 3261 §17.1.2.2, Timer E)
//! until the node's RPC deadline, and answers every copy that arrives from the cached response,
//! so loss costs latency and only rarely a failure. Nodes
//! answer requests synchronously, as the SIP layer will; a killed node simply stops answering
//! and its peers find out through their own deadlines. Time jumps from one event to the next,
//! so an hour of ring life costs only the messages it contains.
//!
//! The ring's correctness conditions are in [`invariants`]; ready-made experiments (build a
//! ring, measure lookup paths) in [`scenarios`].
//!
//! Nothing here is only for tests, and nothing reads the real clock: the caller supplies the
//! base `Instant` (tests take `Instant::now()` once; the simulator may do the same).

pub mod invariants;
pub mod scenarios;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::chord::{Chord, Event, NodeState};
use super::config::ChordConfig;
use super::id::NodeId;
use super::lookup::{LookupError, LookupId};
use super::rpc::{Contact, Request, Response, RpcId};
use crate::netem::LinkConfig;

/// The network's behaviour and the nodes' configuration.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Each message's delay and loss (request or response), as in the simulator.
    pub link: LinkConfig,
    /// Seeds the network's generator, which in turn seeds every node.
    pub seed: u64,
    /// Every node's configuration (its `seed` is replaced per node).
    pub chord: ChordConfig,
    /// Keep every node's events (off for very large runs to save memory).
    pub record_events: bool,
    /// SIP's T1 for the modelled retransmissions; `None` sends each request once.
    pub retransmit_interval: Option<Duration>,
}

impl NetConfig {
    /// 30 ms ± 20 ms one-way latency (10–50 ms), no loss, default Chord settings except that nodes check
    /// every sender's ID against its address (the bench passes true source addresses).
    pub fn new(seed: u64) -> NetConfig {
        NetConfig {
            link: LinkConfig::default(),
            seed,
            chord: ChordConfig { verify_claims: true, ..ChordConfig::default() },
            record_events: true,
            retransmit_interval: Some(Duration::from_millis(500)),
        }
    }
}

/// How a lookup started through [`TestNet::lookup`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupOutcome {
    /// The key looked up.
    pub key: NodeId,
    /// The node found, or why none was.
    pub result: Result<Contact, LookupError>,
    /// The nodes asked, in order.
    pub path: Vec<Contact>,
    /// When it started.
    pub started_at: Instant,
    /// When it ended.
    pub finished_at: Instant,
}

/// Message counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Requests sent, copies included.
    pub requests_sent: u64,
    /// Responses sent.
    pub responses_sent: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages lost.
    pub lost: u64,
    /// Requests that reached a dead or absent node.
    pub unanswered: u64,
}

struct Slot {
    contact: Contact,
    chord: Chord,
    alive: bool,
    incarnation: u32,
    timer: Option<Instant>,
    events: Vec<(Instant, Event)>,
    lookups: BTreeMap<LookupId, LookupOutcome>,
    lookup_started: BTreeMap<LookupId, Instant>,
}

enum Delivery {
    /// `copies`: when later copies of the request (retransmissions) arrive, after this one.
    Request {
        from: usize,
        to: SocketAddr,
        rpc: RpcId,
        request: Request,
        copies: Vec<Duration>,
    },
    Response {
        to: usize,
        incarnation: u32,
        rpc: RpcId,
        response: Response,
    },
}

struct Queued {
    at: Instant,
    seq: u64,
    delivery: Delivery,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Queued) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Queued) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    // Reversed: `BinaryHeap` is a max-heap and we want the earliest first.
    fn cmp(&self, other: &Queued) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// N Chord nodes, a virtual clock and the messages between them.
pub struct TestNet {
    start: Instant,
    now: Instant,
    rng: ChaCha8Rng,
    config: NetConfig,
    slots: Vec<Slot>,
    by_addr: BTreeMap<SocketAddr, usize>,
    queue: BinaryHeap<Queued>,
    timers: BTreeSet<(Instant, usize)>,
    seq: u64,
    stats: NetStats,
}

impl TestNet {
    /// An empty network whose clock starts at `start`.
    pub fn new(start: Instant, config: NetConfig) -> TestNet {
        TestNet {
            start,
            now: start,
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            config,
            slots: Vec::new(),
            by_addr: BTreeMap::new(),
            queue: BinaryHeap::new(),
            timers: BTreeSet::new(),
            seq: 0,
            stats: NetStats::default(),
        }
    }

    /// The virtual clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now.saturating_duration_since(self.start)
    }

    /// The network's settings.
    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    /// The run's seed.
    pub fn seed(&self) -> u64 {
        self.config.seed
    }

    /// The network's generator, for experiments that need randomness of their own (random
    /// keys, random bootstrap nodes) without breaking replay from the seed.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// What the network has carried.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// The address [`TestNet::spawn_many`] gives node `i`: `10.x.y.z:5060`.
    pub fn default_addr(i: usize) -> SocketAddr {
        let n = u32::try_from(i + 1).unwrap_or(u32::MAX) & 0x00ff_ffff;
        SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n)), 5060)
    }

    /// Starts a node at `addr` (its ID derived from the address), alone until told to join.
    /// Returns its index. An address already in use is replaced.
    pub fn spawn(&mut self, addr: SocketAddr) -> usize {
        let id = NodeId::from_addr(addr.ip(), addr.port(), self.config.chord.id_hash);
        let contact = Contact::new(id, addr);
        let chord = self.new_chord(contact.clone());
        let ix = self.slots.len();
        self.slots.push(Slot {
            contact,
            chord,
            alive: true,
            incarnation: 0,
            timer: None,
            events: Vec::new(),
            lookups: BTreeMap::new(),
            lookup_started: BTreeMap::new(),
        });
        self.by_addr.insert(addr, ix);
        self.drain(ix);
        ix
    }

    /// Starts `n` nodes at their default addresses.
    pub fn spawn_many(&mut self, n: usize) -> Vec<usize> {
        (0..n).map(|_| self.spawn(TestNet::default_addr(self.slots.len()))).collect()
    }

    fn new_chord(&mut self, me: Contact) -> Chord {
        let mut config = self.config.chord.clone();
        config.seed = self.rng.random();
        Chord::new(me, config, self.now)
    }

    /// Tells node `ix` to join through the nodes `bootstrap` (by index).
    pub fn join(&mut self, ix: usize, bootstrap: &[usize]) {
        let addrs = bootstrap.iter().filter_map(|b| self.slots.get(*b).map(|s| s.contact.addr)).collect();
        let now = self.now;
        if let Some(slot) = self.live_slot(ix) {
            slot.chord.join(now, addrs);
            self.drain(ix);
        }
    }

    /// Tells node `ix` to leave gracefully.
    pub fn leave(&mut self, ix: usize) {
        let now = self.now;
        if let Some(slot) = self.live_slot(ix) {
            slot.chord.leave(now);
            self.drain(ix);
        }
    }

    /// Kills node `ix`: from now on it neither answers nor acts.
    pub fn kill(&mut self, ix: usize) {
        if let Some(slot) = self.slots.get_mut(ix) {
            slot.alive = false;
            if let Some(t) = slot.timer.take() {
                self.timers.remove(&(t, ix));
            }
        }
    }

    /// Restarts node `ix` with a fresh state and the same address (hence the same ID), alone;
    /// answers to its previous incarnation's requests are dropped. Join it afterwards.
    pub fn restart(&mut self, ix: usize) {
        let Some(contact) = self.slots.get(ix).map(|s| s.contact.clone()) else { return };
        self.kill(ix);
        let chord = self.new_chord(contact);
        if let Some(slot) = self.slots.get_mut(ix) {
            slot.chord = chord;
            slot.alive = true;
            slot.incarnation += 1;
        }
        self.drain(ix);
    }

    /// Node `to` receives a `Ping` from node `from` (answered and forgotten): all `to` learns
    /// is that `from` exists, as when a node hears from a stranger.
    pub fn ping_from(&mut self, from: usize, to: usize) {
        let Some(sender) = self.slots.get(from).map(|s| s.contact.clone()) else { return };
        let now = self.now;
        if let Some(slot) = self.live_slot(to) {
            let _ = slot.chord.handle_request(now, sender, Request::Ping);
            self.drain(to);
        }
    }

    /// Starts a lookup for `key` at node `ix`; see [`TestNet::lookup_outcome`].
    pub fn lookup(&mut self, ix: usize, key: NodeId) -> Option<LookupId> {
        let now = self.now;
        let slot = self.live_slot(ix)?;
        let id = slot.chord.lookup(now, key);
        slot.lookup_started.insert(id, now);
        self.drain(ix);
        Some(id)
    }

    /// The outcome of node `ix`'s lookup `id`, once it ended.
    pub fn lookup_outcome(&self, ix: usize, id: LookupId) -> Option<&LookupOutcome> {
        self.slots.get(ix)?.lookups.get(&id)
    }

    /// Every finished lookup of node `ix`.
    pub fn lookup_outcomes(&self, ix: usize) -> impl Iterator<Item = &LookupOutcome> {
        self.slots.get(ix).into_iter().flat_map(|s| s.lookups.values())
    }

    /// How many nodes were ever added.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether node `ix` is alive.
    pub fn is_alive(&self, ix: usize) -> bool {
        self.slots.get(ix).is_some_and(|s| s.alive)
    }

    /// Node `ix`'s current incarnation (dead or alive).
    pub fn node(&self, ix: usize) -> Option<&Chord> {
        self.slots.get(ix).map(|s| &s.chord)
    }

    /// Node `ix`'s contact.
    pub fn contact(&self, ix: usize) -> Option<&Contact> {
        self.slots.get(ix).map(|s| &s.contact)
    }

    /// The index of the node with ID `id`, if any.
    pub fn index_of(&self, id: NodeId) -> Option<usize> {
        self.slots.iter().position(|s| s.contact.id == id)
    }

    /// Indices of live nodes.
    pub fn live(&self) -> impl Iterator<Item = usize> + '_ {
        self.slots.iter().enumerate().filter(|(_, s)| s.alive).map(|(i, _)| i)
    }

    /// Indices of nodes that should be in the ring: alive and not gone (`Left`).
    pub fn members(&self) -> impl Iterator<Item = usize> + '_ {
        self.live().filter(|i| self.slots[*i].chord.state() != NodeState::Left)
    }

    /// Indices of nodes that are in the ring by their own account: alive and admitted (joined,
    /// or a ring of one). These are the ones that can look things up and be responsible.
    pub fn admitted(&self) -> impl Iterator<Item = usize> + '_ {
        self.live().filter(|i| matches!(self.slots[*i].chord.state(), NodeState::Joined | NodeState::Alone))
    }

    /// Everything node `ix` reported, with when (empty unless `record_events`).
    pub fn events(&self, ix: usize) -> &[(Instant, Event)] {
        self.slots.get(ix).map(|s| s.events.as_slice()).unwrap_or(&[])
    }

    /// Runs the network for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let deadline = self.now + d;
        self.run_until(deadline);
    }

    /// Runs every event due up to and including `deadline`, then sets the clock to it.
    pub fn run_until(&mut self, deadline: Instant) {
        while let Some(at) = self.next_at() {
            if at > deadline {
                break;
            }
            self.now = self.now.max(at);
            self.step();
        }
        self.now = self.now.max(deadline);
    }

    /// Runs until `check` passes (checked every `every`) or `limit` of virtual time passes.
    /// Returns the virtual time it took, or the last failure.
    pub fn run_until_ok<E>(
        &mut self,
        limit: Duration,
        every: Duration,
        mut check: impl FnMut(&TestNet) -> Result<(), E>,
    ) -> Result<Duration, E> {
        let begin = self.now;
        let end = begin + limit;
        loop {
            match check(self) {
                Ok(()) => return Ok(self.now.saturating_duration_since(begin)),
                Err(e) if self.now >= end => return Err(e),
                Err(_) => {}
            }
            let next = (self.now + every).min(end);
            self.run_until(next);
        }
    }

    fn next_at(&self) -> Option<Instant> {
        let message = self.queue.peek().map(|q| q.at);
        let timer = self.timers.first().map(|(t, _)| *t);
        match (message, timer) {
            (Some(m), Some(t)) => Some(m.min(t)),
            (m, t) => m.or(t),
        }
    }

    fn step(&mut self) {
        let message = self.queue.peek().map(|q| q.at);
        let timer = self.timers.first().copied();
        match (message, timer) {
            (Some(m), Some((t, _))) if m <= t => self.deliver_next(),
            (Some(_), None) => self.deliver_next(),
            (_, Some((t, ix))) => {
                self.timers.remove(&(t, ix));
                let now = self.now;
                if let Some(slot) = self.live_slot(ix) {
                    slot.timer = None;
                    slot.chord.handle_timeout(now);
                    self.drain(ix);
                }
            }
            (None, None) => {}
        }
    }

    fn deliver_next(&mut self) {
        let Some(q) = self.queue.pop() else { return };
        let now = self.now;
        match q.delivery {
            Delivery::Request { from, to, rpc, request, copies } => {
                let Some(&dst) = self.by_addr.get(&to) else {
                    self.stats.unanswered += 1;
                    return;
                };
                let Some(sender) = self.slots.get(from).map(|s| (s.contact.clone(), s.incarnation)) else { return };
                if !self.is_alive(dst) {
                    self.stats.unanswered += 1;
                    return;
                }
                self.stats.delivered += 1;
                let Some(slot) = self.live_slot(dst) else { return };
                let response = slot.chord.handle_request(now, sender.0, request);
                self.drain(dst);
                // The response goes back once per copy of the request that arrives, until one
                // copy survives the trip.
                for offset in std::iter::once(Duration::ZERO).chain(copies) {
                    self.stats.responses_sent += 1;
                    if !self.lose() {
                        let delivery = Delivery::Response { to: from, incarnation: sender.1, rpc, response };
                        let at = offset + self.latency();
                        self.schedule_in(at, delivery);
                        break;
                    }
                }
            }
            Delivery::Response { to, incarnation, rpc, response } => {
                if self.slots.get(to).is_none_or(|s| !s.alive || s.incarnation != incarnation) {
                    return;
                }
                self.stats.delivered += 1;
                let Some(slot) = self.live_slot(to) else { return };
                slot.chord.handle_response(now, rpc, Ok(response));
                self.drain(to);
            }
        }
    }

    fn live_slot(&mut self, ix: usize) -> Option<&mut Slot> {
        self.slots.get_mut(ix).filter(|s| s.alive)
    }

    fn lose(&mut self) -> bool {
        let lost = self.config.link.lost(&mut self.rng);
        if lost {
            self.stats.lost += 1;
        }
        lost
    }

    fn latency(&mut self) -> Duration {
        self.config.link.delay(&mut self.rng)
    }

    fn schedule_in(&mut self, delay: Duration, delivery: Delivery) {
        self.seq += 1;
        self.queue.push(Queued { at: self.now + delay, seq: self.seq, delivery });
    }

    /// Sends a request with its modelled retransmissions: copies leave at 0, T1, 3·T1, 7·T1…
    /// before the RPC deadline; each is lost or delayed independently.
    fn send_request(&mut self, from: usize, to: SocketAddr, rpc: RpcId, request: Request) {
        self.stats.requests_sent += 1;
        let deadline = self.config.chord.rpc_timeout;
        let mut arrivals = Vec::new();
        let mut sent_at = Duration::ZERO;
        let mut gap = self.config.retransmit_interval;
        loop {
            if !self.lose() {
                arrivals.push(sent_at + self.latency());
            }
            match gap {
                Some(g) if !g.is_zero() && sent_at + g < deadline => {
                    sent_at += g;
                    gap = Some(g * 2);
                }
                _ => break,
            }
        }
        arrivals.sort();
        let Some((&first, later)) = arrivals.split_first() else { return };
        let copies = later.iter().map(|t| *t - first).collect();
        self.schedule_in(first, Delivery::Request { from, to, rpc, request, copies });
    }

    /// Collects node `ix`'s requests and events and re-arms its timer.
    fn drain(&mut self, ix: usize) {
        let now = self.now;
        let record = self.config.record_events;
        let mut outgoing = Vec::new();
        let Some(slot) = self.live_slot(ix) else { return };
        while let Some(rpc) = slot.chord.poll_rpc() {
            outgoing.push(rpc);
        }
        while let Some(event) = slot.chord.poll_event() {
            if let Event::LookupDone { id, key, result, path, .. } = &event {
                let started_at = slot.lookup_started.remove(id).unwrap_or(now);
                let outcome = LookupOutcome {
                    key: *key,
                    result: result.clone(),
                    path: path.clone(),
                    started_at,
                    finished_at: now,
                };
                slot.lookups.insert(*id, outcome);
            }
            if record {
                slot.events.push((now, event));
            }
        }
        let old = slot.timer;
        let new = slot.chord.poll_timeout().map(|t| t.max(now));
        slot.timer = new;
        if old != new {
            if let Some(t) = old {
                self.timers.remove(&(t, ix));
            }
            if let Some(t) = new {
                self.timers.insert((t, ix));
            }
        }
        for rpc in outgoing {
            self.send_request(ix, rpc.to.addr(), rpc.id, rpc.request);
        }
    }
}
