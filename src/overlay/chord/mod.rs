//! `Chord`: one node's overlay state machine (Stoica et al., SIGCOMM 2001 / ToN 2003, with
//! Zave's corrections; dSIP dhtchord-00 for the join and leave exchanges).
//!
//! Inputs: [`Chord::join`], [`Chord::leave`], [`Chord::lookup`] (commands);
//! [`Chord::handle_request`] (a request from another node, answered synchronously);
//! [`Chord::handle_response`] (the answer to one of our requests); [`Chord::handle_timeout`].
//! Outputs: [`Chord::poll_rpc`] (requests to send), [`Chord::poll_event`] (what happened),
//! [`Chord::poll_timeout`] (when to call `handle_timeout` next). Every input takes `now`;
//! nothing here reads a clock, and the only randomness is timer jitter from a seeded ChaCha8.
//!
//! Where things live: answering requests (`find_successor`, `notify`, admitting a joiner,
//! splicing out a leaver) in `server.rs`; our own periodic work (`stabilize`,
//! `check_predecessor`, `fix_fingers`), lookups, joining and leaving in `maintenance.rs`.
//!
//! Not here: SIP (the caller maps [`Request`]/[`Response`] onto REGISTERs), verifying that a
//! sender's ID matches its address (the caller, with [`NodeId::verify_claim`]), retransmission
//! (the SIP transaction layer), storage and replication (the store).

mod client;
mod hedge;
mod join_leave;
mod lookups;
mod maintenance;
mod proof;
mod push;
mod server;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::ChordConfig;
use super::finger::{Finger, FingerTable};
use super::id::NodeId;
use super::lookup::{Lookup, LookupError, LookupId};
use super::rpc::{Contact, OutgoingRpc, Request, Response, RpcFailure, RpcId, RpcTarget};
use super::successors::SuccessorList;
use crate::histogram::Histogram;

/// Where the node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// A ring of one: created, or the last node left after the others departed gracefully.
    /// Answers requests and admits joiners.
    Alone,
    /// Looking for its place through the bootstrap list (first join, or rejoin after
    /// isolation). Does not route or admit.
    Joining,
    /// Part of a ring with at least one other node.
    Joined,
    /// Told its neighbours it is leaving; waiting for their answers.
    Leaving,
    /// Gone. Refuses everything; the driver may drop it.
    Left,
    /// Off the ring, through an edge peer (`client`): looks up, takes no position, answers
    /// nothing as a node.
    Client,
}

/// What happened, in the past tense. Drained with [`Chord::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A join (or rejoin) was admitted; `successor` is our successor.
    Joined {
        /// Our first successor.
        successor: Contact,
    },
    /// Our successor changed.
    SuccessorChanged {
        /// The new successor (ourselves when alone).
        successor: Contact,
    },
    /// Our predecessor changed.
    PredecessorChanged {
        /// The new predecessor, if any.
        predecessor: Option<Contact>,
    },
    /// A lookup started with [`Chord::lookup`] finished. `path` lists the nodes asked, in order;
    /// the last `confirmations` of them (at most) were asked to confirm an answer rather than to
    /// route: Chord's routing hops are `path.len() - confirmations`.
    LookupDone {
        /// The lookup.
        id: LookupId,
        /// The key it looked up.
        key: NodeId,
        /// The node responsible for `key`, or why none was found.
        result: Result<Contact, LookupError>,
        /// The nodes asked, in order.
        path: Vec<Contact>,
        /// How many of the last on `path` were asked to confirm.
        confirmations: u32,
    },
    /// Every successor failed: we are cut off from the ring and rejoin through the bootstrap
    /// list (and any other node we still know).
    Isolated,
    /// Every bootstrap node failed or refused; the join is retried after
    /// [`ChordConfig::join_retry_interval`].
    BootstrapFailed,
    /// [`Chord::leave`] has finished.
    Left,
    /// A client's edge peer changed (the first, a failed one replaced, or none left).
    EdgeChanged {
        /// The new edge, if any peer is left.
        edge: Option<Contact>,
    },
}

/// Upper bounds of the lookup-hop buckets: Chord's paths are about ½·log2 N long (4.4 for
/// 1,000 nodes in the simulator), with a confirmation or two on top.
const HOP_BOUNDS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0];
/// Upper bounds of the lookup-time buckets, in seconds: a loopback hop takes a fraction of a
/// millisecond, an Internet one tens to hundreds; the RPC deadline is seconds.
const LOOKUP_SECONDS_BOUNDS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The hops and time of user lookups that found their node (the ones calls, messages and
/// storage wait on; the ring's own finger and place lookups are not in them).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LookupMeasures {
    /// Nodes asked, confirmations included (`/lookup`'s `hops`).
    pub hops: Histogram,
    /// From the lookup being asked for to its answer, retries included, in seconds.
    pub seconds: Histogram,
}

impl Default for LookupMeasures {
    fn default() -> LookupMeasures {
        LookupMeasures { hops: Histogram::new(HOP_BOUNDS), seconds: Histogram::new(LOOKUP_SECONDS_BOUNDS) }
    }
}

/// What the node has seen, for the status API and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChordCounters {
    /// Overlay requests answered.
    pub requests_handled: u64,
    /// Requests answered with `Refused` for any reason.
    pub requests_refused: u64,
    /// `Join`s refused because the joiner was not the sender or claimed our ID.
    pub joins_refused: u64,
    /// Requests from contacts that cannot be nodes (port 0, unspecified or multicast address).
    pub malformed_contacts: u64,
    /// RPCs sent.
    pub rpcs_sent: u64,
    /// Requests that failed: our deadline passed, or the driver reported a failure.
    pub rpc_failures: u64,
    /// Responses that came after their deadline or matched nothing; ignored.
    pub late_responses: u64,
    /// Answers that made no sense for the question (a `Joined` to a `Ping`, …); ignored.
    pub unexpected_responses: u64,
    /// Lookups started.
    pub lookups_started: u64,
    /// Lookups that ended without an answer.
    pub lookups_failed: u64,
    /// User lookups that found nobody at first and were started again
    /// (`ChordConfig::lookup_retry_delay`).
    pub lookups_retried: u64,
    /// Times every successor was lost at once.
    pub isolations: u64,
    /// Node contacts other nodes named (in links, redirects, hand-offs, answers) whose ID is
    /// not the one their address derives; dropped unused (docs/security.md, H1).
    pub forged_links: u64,
    /// Notifies and joins not acted on because their sender never answered our ping.
    pub proofs_failed: u64,
    /// Requests not acted on because too many proofs were under way.
    pub proofs_dropped: u64,
    /// Leaves ignored because the node said to leave still answered as a live node.
    pub leaves_ignored: u64,
    /// Pushes from our successor that said its neighbours changed and brought our next
    /// stabilize forward (`push`).
    pub pushes_heeded: u64,
    /// Lookup routing steps given up on after their soft deadline, the lookup going on with
    /// its next candidate (`hedge`).
    pub hops_hedged: u64,
    /// Confirmations whose named node did not answer within a few round trips, so the
    /// lookup went on with its backups (`hedge`).
    pub confirmations_hedged: u64,
}

/// Why a pending request was sent, so its answer goes to the right place.
#[derive(Debug, Clone)]
enum Purpose {
    /// `stabilize`: `GetNeighbours` to our successor, or to a candidate closer successor.
    Stabilize {
        asked: Contact,
    },
    Notify,
    /// A `Ping` to a successor further down the list, sent when the first one failed
    /// (`stabilize_failed`): one that fails it too is dropped.
    SuccessorCheck {
        asked: Contact,
    },
    CheckPredecessor {
        predecessor: Contact,
        candidate: Option<Contact>,
    },
    Lookup {
        lookup: LookupId,
        asked: Contact,
    },
    Join,
    Leave,
    /// A `Changed` to our predecessor: our neighbours changed (`push`).
    Push,
    /// A `Changed` to our former predecessor: a node joined between it and us (`push`).
    Handover,
    /// A `Ping` proving `candidate`'s address before acting on its request (`proof`).
    Prove {
        candidate: Contact,
        then: proof::Then,
    },
    /// A client asking its edge for its neighbours (`client`).
    ClientRefresh {
        asked: Contact,
    },
}

/// The last full answer to stabilize's `GetNeighbours`, and who gave it: its digest makes the
/// next question conditional.
#[derive(Debug, Clone)]
struct NeighboursCache {
    from: Contact,
    predecessor: Option<Contact>,
    successors: Vec<Contact>,
}

#[derive(Debug, Clone)]
struct Pending {
    deadline: Instant,
    /// When it was sent, for the round-trip estimate (`hedge`).
    sent: Instant,
    purpose: Purpose,
    to: RpcTarget,
}

#[derive(Debug, Clone)]
enum LookupPurpose {
    User(LookupId),
    Finger(u32),
    /// Who does the rest of the ring think is responsible for our own ID? See
    /// `Chord::check_own_place`.
    OwnPlace,
}

#[derive(Debug, Clone)]
struct ActiveLookup {
    lookup: Lookup,
    purpose: LookupPurpose,
    /// The request the lookup waits on; answers to others it gave up on (`hedge`) only add
    /// what they teach.
    waiting: Option<RpcId>,
    /// Requests it gave up on that are still in flight. A lookup with nobody left to ask
    /// waits for them rather than ending.
    stragglers: u32,
}

#[derive(Debug, Clone)]
struct JoinAttempt {
    targets: VecDeque<RpcTarget>,
    redirects: u32,
}

/// One Chord node. See the module documentation for the contract.
#[derive(Debug)]
pub struct Chord {
    me: Contact,
    config: ChordConfig,
    rng: ChaCha8Rng,
    state: NodeState,
    predecessor: Option<Contact>,
    /// When the predecessor last spoke to us (any request), so `check_predecessor` can skip
    /// its ping.
    predecessor_heard_at: Option<Instant>,
    successors: SuccessorList,
    fingers: FingerTable,
    bootstrap: Vec<SocketAddr>,

    next_rpc: u64,
    pending: BTreeMap<RpcId, Pending>,
    deadlines: BTreeSet<(Instant, RpcId)>,
    outbox: VecDeque<OutgoingRpc>,
    events: VecDeque<Event>,

    next_lookup: u64,
    lookups: BTreeMap<LookupId, ActiveLookup>,
    /// User lookups that found nobody, due to start again: `(when, id) -> key`.
    lookup_retries: BTreeMap<(Instant, LookupId), NodeId>,
    /// The first attempt's path and confirmations of each retried lookup, still in flight, so
    /// the answer reports everything asked.
    retried_lookups: BTreeMap<LookupId, (Vec<Contact>, u32)>,
    /// When each user lookup in flight was asked for (its first attempt's start).
    user_lookups_started: BTreeMap<LookupId, Instant>,
    /// Hops and time of the user lookups that found their node.
    measures: LookupMeasures,

    stabilize_at: Instant,
    /// The current stabilize period: from `stabilize_interval`, doubled after each round that
    /// changed nothing, up to `stabilize_max_interval`; reset by any change or failure.
    stabilize_period: Duration,
    /// When the neighbourhood last changed (`stabilize_changed`): the period stretches only
    /// after `stabilize_quiet_hold` without a change.
    changed_at: Instant,
    neighbours_cache: Option<NeighboursCache>,
    /// Steps taken by the stabilize round in flight, if one is.
    stabilize_steps: Option<u32>,
    check_predecessor_at: Instant,
    checking_predecessor: bool,
    /// A lookup of our own ID is in flight (`check_own_place`).
    checking_own_place: bool,
    /// When the next periodic own-place check is due.
    own_place_at: Instant,
    fix_fingers_at: Instant,
    /// Fingers left to check in the round in flight, if one is.
    finger_budget: Option<u32>,
    /// The finger the next check starts from; wraps to 0 after the last.
    next_finger: u32,
    join: Option<JoinAttempt>,
    join_retry_at: Option<Instant>,
    leaves_outstanding: usize,
    /// Nodes that failed to answer, ignored until the instant given.
    recently_failed: BTreeMap<NodeId, Instant>,
    /// The digest of the successor list our predecessor last heard of from us, and whether
    /// a push is in flight (`push`).
    pushed_digest: Option<u64>,
    /// The predecessor that digest was last pushed to: a new predecessor may hold an older
    /// copy of our list (`push`).
    pushed_to: Option<NodeId>,
    /// The node we last gave our list in an answer (stabilize's question, or admitting it as
    /// our predecessor), and that list's digest as `push` computes it.
    answered: Option<(NodeId, u64)>,
    pushing: bool,
    /// When the change seen first since the last push goes out (`push::PUSH_DELAY`).
    push_at: Option<Instant>,
    /// Round trips measured on answered requests (`hedge`).
    rtt: hedge::RttEstimator,
    /// Soft deadlines of lookup steps in flight (`hedge`).
    soft_deadlines: BTreeSet<(Instant, RpcId)>,
    /// When confirmations in flight are given up on by their lookups (`hedge`).
    verdicts: BTreeSet<(Instant, RpcId)>,
    /// Our successor said its list changed while a stabilize round was in flight: another
    /// round follows this one (`push`).
    stabilize_hinted: bool,
    /// When the last stabilize round started: pushes bring the next one forward, but no
    /// closer than [`push::HINT_GAP`] to it.
    stabilize_started_at: Option<Instant>,
    /// Nodes that answered us, at which address and when (`proof`).
    proven: BTreeMap<NodeId, (SocketAddr, Instant)>,
    /// Proofs under way: the node, and which kind of request waits on it.
    proving: BTreeSet<(NodeId, u8)>,
    counters: ChordCounters,
    /// A client's peers, its edge first (`client`).
    client_peers: Vec<Contact>,
    /// When a client next asks its edge for its neighbours.
    client_refresh_at: Option<Instant>,
    /// A client's edge now (`client`).
    client_edge: Option<Contact>,
    /// Peers that refused the client, passed over until the instant given.
    client_refused: BTreeMap<NodeId, Instant>,
}

impl Chord {
    /// A ring of one: `me` is its own successor and has no predecessor.
    pub fn new(me: Contact, config: ChordConfig, now: Instant) -> Chord {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let r = config.successor_list_len;
        let stabilize_at = now + jittered(&mut rng, &config, config.stabilize_interval);
        let check_predecessor_at = now + jittered(&mut rng, &config, config.check_predecessor_interval);
        let fix_fingers_at = now + jittered(&mut rng, &config, config.fix_fingers_interval);
        // A uniform phase over the whole period, so that nodes started together (and a
        // network measured over less than one period) spread their checks evenly.
        let own_place_at = now + config.own_place_interval.mul_f64(rng.random_range(0.0..1.0));
        let stabilize_period = config.stabilize_interval;
        Chord {
            successors: SuccessorList::new(me.id, r),
            fingers: FingerTable::new(me.clone()),
            me,
            config,
            rng,
            state: NodeState::Alone,
            predecessor: None,
            predecessor_heard_at: None,
            bootstrap: Vec::new(),
            next_rpc: 0,
            pending: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            next_lookup: 0,
            lookups: BTreeMap::new(),
            lookup_retries: BTreeMap::new(),
            retried_lookups: BTreeMap::new(),
            user_lookups_started: BTreeMap::new(),
            measures: LookupMeasures::default(),
            stabilize_at,
            stabilize_period,
            changed_at: now,
            neighbours_cache: None,
            stabilize_steps: None,
            check_predecessor_at,
            checking_predecessor: false,
            checking_own_place: false,
            own_place_at,
            fix_fingers_at,
            finger_budget: None,
            next_finger: 0,
            join: None,
            join_retry_at: None,
            leaves_outstanding: 0,
            recently_failed: BTreeMap::new(),
            pushed_digest: None,
            pushed_to: None,
            answered: None,
            pushing: false,
            push_at: None,
            rtt: hedge::RttEstimator::default(),
            soft_deadlines: BTreeSet::new(),
            verdicts: BTreeSet::new(),
            stabilize_hinted: false,
            stabilize_started_at: None,
            proven: BTreeMap::new(),
            proving: BTreeSet::new(),
            counters: ChordCounters::default(),
            client_peers: Vec::new(),
            client_refresh_at: None,
            client_edge: None,
            client_refused: BTreeMap::new(),
        }
    }

    /// Our own contact: Node ID and overlay address.
    pub fn me(&self) -> &Contact {
        &self.me
    }

    /// The settings it runs with.
    pub fn config(&self) -> &ChordConfig {
        &self.config
    }

    /// Where this node is in joining, being on the ring, and leaving.
    pub fn state(&self) -> NodeState {
        self.state
    }

    /// Our predecessor, once known.
    pub fn predecessor(&self) -> Option<&Contact> {
        self.predecessor.as_ref()
    }

    /// Our successor: the first entry of the successor list, or ourselves when we have none.
    pub fn successor(&self) -> &Contact {
        self.successors.first().unwrap_or(&self.me)
    }

    /// The successor list, nearest first, never containing ourselves.
    pub fn successors(&self) -> &[Contact] {
        self.successors.as_slice()
    }

    /// All 160 fingers with their starts.
    pub fn fingers(&self) -> impl Iterator<Item = Finger<'_>> + '_ {
        self.fingers.iter()
    }

    /// The driver dropped `n` forged links while decoding what another node sent.
    pub fn count_forged_links(&mut self, n: usize) {
        self.counters.forged_links += n as u64;
    }

    /// What the Chord core has done, for `p2psip status`.
    pub fn counters(&self) -> &ChordCounters {
        &self.counters
    }

    /// The hops and time of the user lookups that found their node, since start.
    pub fn lookup_measures(&self) -> &LookupMeasures {
        &self.measures
    }

    /// Whether request `id` still waits for its answer. Once its deadline has passed (or the
    /// core gave up on it otherwise) the caller may stop retransmitting it.
    pub fn is_pending(&self, id: RpcId) -> bool {
        self.pending.contains_key(&id)
    }

    /// What request `id`, still in flight, is for, by a short stable name: `stabilize`,
    /// `notify`, `check_predecessor`, `lookup` (a routing step of a user lookup),
    /// `confirmation` (asking the node named to answer for itself), `fix_fingers`, `own_place`,
    /// `join`, `leave`, `proof` (a ping before acting on a request, docs/security.md, H5) or `push` (telling
    /// the predecessor our successor list changed). For traffic
    /// accounting (the simulator's `traffic_by_kind`).
    pub fn rpc_kind(&self, id: RpcId) -> Option<&'static str> {
        Some(match &self.pending.get(&id)?.purpose {
            Purpose::Stabilize { .. } | Purpose::SuccessorCheck { .. } => "stabilize",
            Purpose::Notify => "notify",
            Purpose::CheckPredecessor { .. } => "check_predecessor",
            Purpose::Join => "join",
            Purpose::Leave => "leave",
            Purpose::Prove { .. } => "proof",
            Purpose::Push | Purpose::Handover => "push",
            Purpose::ClientRefresh { .. } => "client_refresh",
            Purpose::Lookup { lookup, asked } => match self.lookups.get(lookup) {
                Some(a) => match a.purpose {
                    LookupPurpose::User(_) if a.lookup.is_confirming(asked.id) => "confirmation",
                    LookupPurpose::User(_) => "lookup",
                    LookupPurpose::Finger(_) => "fix_fingers",
                    LookupPurpose::OwnPlace => "own_place",
                },
                None => "lookup",
            },
        })
    }

    /// The next request to send.
    pub fn poll_rpc(&mut self) -> Option<OutgoingRpc> {
        self.outbox.pop_front()
    }

    /// The next thing that happened.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Chord::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let rpc = self.deadlines.first().map(|(t, _)| *t);
        if self.state == NodeState::Left {
            return rpc;
        }
        let timers = [
            Some(self.stabilize_at),
            Some(self.check_predecessor_at),
            Some(self.fix_fingers_at),
            Some(self.own_place_at),
            self.join_retry_at,
            self.lookup_retries.first_key_value().map(|((t, _), _)| *t),
            self.push_due(),
            self.soft_deadlines.first().map(|(t, _)| *t),
            self.verdicts.first().map(|(t, _)| *t),
            self.client_refresh_at,
        ];
        timers.into_iter().chain([rpc]).flatten().min()
    }

    /// The answer to request `rpc`, or why there is none. Answers after the request's
    /// deadline, or to requests we never sent, are counted and ignored.
    pub fn handle_response(&mut self, now: Instant, rpc: RpcId, result: Result<Response, RpcFailure>) {
        let Some(pending) = self.pending.remove(&rpc) else {
            self.counters.late_responses += 1;
            return;
        };
        self.deadlines.remove(&(pending.deadline, rpc));
        let result = if now >= pending.deadline {
            // Our deadline passed before the driver told us; the node counts as failed.
            self.counters.late_responses += 1;
            Err(RpcFailure::Timeout)
        } else {
            if result.is_ok() {
                self.rtt.sample(now.saturating_duration_since(pending.sent));
            }
            result
        };
        if result.is_err() {
            self.counters.rpc_failures += 1;
        }
        self.note_answer(now, &pending.to, &result);
        self.learn_finger(now, &pending.to, &result);
        self.dispatch(now, rpc, pending.purpose, result);
        self.after_input(now);
    }

    /// Fires whatever is due: expired requests, then the periodic maintenance.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, rpc)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(pending) = self.pending.remove(&rpc) {
                self.counters.rpc_failures += 1;
                self.dispatch(now, rpc, pending.purpose, Err(RpcFailure::Timeout));
            }
        }
        self.hedge_due(now);
        self.recently_failed.retain(|_, until| *until > now);
        self.expire_proofs(now);
        if self.state == NodeState::Left {
            return;
        }
        if self.join_retry_at.is_some_and(|t| t <= now) {
            self.join_retry_at = None;
            self.start_join(now);
        }
        self.retry_due_lookups(now);
        self.client_refresh(now);
        if self.stabilize_at <= now {
            self.stabilize_at = now + self.jittered(self.stabilize_period);
            self.stabilize(now);
        }
        if self.check_predecessor_at <= now {
            self.check_predecessor_at = now + self.jittered(self.config.check_predecessor_interval);
            self.check_predecessor(now);
        }
        if self.fix_fingers_at <= now {
            self.fix_fingers_at = now + self.jittered(self.config.fix_fingers_interval);
            self.fix_fingers(now);
        }
        if self.own_place_at <= now {
            self.own_place_at = now + self.jittered(self.config.own_place_interval);
            let through = self.random_far_finger(now);
            self.check_own_place(now, through);
        }
        self.after_input(now);
    }

    fn dispatch(&mut self, now: Instant, rpc: RpcId, purpose: Purpose, result: Result<Response, RpcFailure>) {
        match purpose {
            Purpose::Stabilize { asked } => self.on_stabilize_answer(now, asked, result),
            Purpose::Notify => {
                // Nothing to do either way: the next stabilize notices a dead successor.
            }
            Purpose::SuccessorCheck { asked } => self.on_successor_check(now, asked, result),
            Purpose::CheckPredecessor { predecessor, candidate } => {
                self.on_check_predecessor_answer(now, predecessor, candidate, result)
            }
            Purpose::Lookup { lookup, asked } => self.on_lookup_answer(now, rpc, lookup, asked, result),
            Purpose::Join => self.on_join_answer(now, result),
            Purpose::Leave => self.on_leave_answer(),
            Purpose::Prove { candidate, then } => self.on_proof(now, candidate, then, result),
            Purpose::Push => self.pushing = false,
            Purpose::ClientRefresh { asked } => self.on_client_refresh(now, asked, result),
            Purpose::Handover => {}
        }
    }

    // ---- small shared helpers ----

    fn participating(&self) -> bool {
        matches!(self.state, NodeState::Alone | NodeState::Joined)
    }

    /// Whether lookups can start: on the ring, or a client through its peers.
    fn can_look_up(&self) -> bool {
        self.participating() || (self.state == NodeState::Client && !self.client_peers.is_empty())
    }

    fn send(&mut self, now: Instant, to: RpcTarget, request: Request, purpose: Purpose) -> RpcId {
        let id = RpcId(self.next_rpc);
        self.next_rpc += 1;
        let deadline = now + self.config.rpc_timeout;
        self.pending.insert(id, Pending { deadline, sent: now, purpose, to: to.clone() });
        self.deadlines.insert((deadline, id));
        self.outbox.push_back(OutgoingRpc { id, to, request });
        self.counters.rpcs_sent += 1;
        id
    }

    /// A node that answered a request of ours (not refused it) is proven at its address: it
    /// may take a finger it would improve. Lookups thus sharpen the table as they go.
    fn learn_finger(&mut self, now: Instant, to: &RpcTarget, result: &Result<Response, RpcFailure>) {
        let RpcTarget::Node(c) = to else { return };
        let answered = matches!(result, Ok(r) if !matches!(r, Response::Refused { .. }));
        if answered && self.participating() && !self.is_failed(now, c.id) && self.fingers.would_improve(c) {
            self.fingers.offer(c);
        }
    }

    fn jittered(&mut self, d: Duration) -> Duration {
        jittered(&mut self.rng, &self.config, d)
    }

    fn is_failed(&self, now: Instant, id: NodeId) -> bool {
        self.recently_failed.get(&id).is_some_and(|until| *until > now)
    }

    /// `id` did not answer (or refused, or said it is leaving): forget it in the finger table
    /// and ignore it for a while when others name it.
    fn mark_failed(&mut self, now: Instant, id: NodeId) {
        self.recently_failed.insert(id, now + self.config.failed_memory());
        self.fingers.remove(id);
        // Nodes are failing around us: no time for long stabilize periods.
        self.stabilize_changed(now);
    }

    fn set_predecessor(&mut self, now: Instant, predecessor: Option<Contact>) {
        let changed = self.predecessor.as_ref().map(|p| p.id) != predecessor.as_ref().map(|p| p.id);
        self.predecessor = predecessor;
        self.predecessor_heard_at = self.predecessor.as_ref().map(|_| now);
        if changed {
            self.stabilize_changed(now);
            tracing::debug!(node = ?self.me.id, predecessor = ?self.predecessor, "predecessor changed");
            self.events.push_back(Event::PredecessorChanged { predecessor: self.predecessor.clone() });
        }
    }

    /// Call after touching the successor list, with its first entry from before.
    fn successors_touched(&mut self, old_first: Option<NodeId>) {
        let new_first = self.successors.first().map(|c| c.id);
        if new_first != old_first {
            self.stabilize_period = self.config.stabilize_interval;
            let successor = self.successor().clone();
            tracing::debug!(node = ?self.me.id, successor = ?successor, "successor changed");
            self.events.push_back(Event::SuccessorChanged { successor });
        }
        if !self.successors.is_empty() && self.state == NodeState::Alone {
            self.state = NodeState::Joined;
        }
    }

    fn first_successor_id(&self) -> Option<NodeId> {
        self.successors.first().map(|c| c.id)
    }

    /// Drops the predecessor as a failed check does (`on_check_predecessor_answer`), for tests
    /// of what the layers above do in the gap before a new one is found.
    #[cfg(test)]
    pub(crate) fn drop_predecessor_for_tests(&mut self, now: Instant) {
        self.set_predecessor(now, None);
    }
}

fn jittered(rng: &mut ChaCha8Rng, config: &ChordConfig, d: Duration) -> Duration {
    let percent = u64::from(config.jitter_percent.min(100));
    // Capped so that `2 * span` below cannot overflow; nobody configures 146-year intervals.
    let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).min(u64::MAX / 4);
    let span = nanos / 100 * percent;
    if span == 0 {
        return d;
    }
    let offset = rng.random_range(0..=2 * span);
    Duration::from_nanos(nanos - span + offset)
}

#[cfg(test)]
mod tests;
