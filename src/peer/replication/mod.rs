//! Replication: signed records kept at replica positions around the ring (SOSIMPLE;
//! `docs/identity-and-store.md`), as a sans-IO service of its own.
//!
//! [`Replication`] owns the records this node holds and the operations in flight. It reads
//! the ring (`Ring`: our node, predecessor, successors, settings) and never drives it: what
//! it needs done goes out as an `Output` (a lookup, a request to a place, a transaction to
//! end, a report), which the peer carries out in order (`peer/records.rs`), and the results
//! come back through `lookup_done`, `handle_answer`, `request_failed`, `handle_overlay_event`
//! and `handle_timeout`. The SIP form of its requests is [`wire`]'s.
//!
//! - **Stores** ([`Peer::put`], `ops`): for each replica number i ∈ 0..=R, look up the node
//!   responsible for H(K‖i) ([`crate::store::replica_keys`]) and send it the record ([`wire`]).
//! - **Serving**: a storing node checks that it is responsible for the replica key (else `302`
//!   to the node it believes is) and runs [`crate::store::put_checked`]; refusals are SIP errors
//!   with the refusal's reason phrase, counted in [`StorageCounters`] (`serve`).
//! - **Reads** ([`Peer::fetch`]): ask all R+1 places in parallel, verify every copy, take the
//!   newest valid one (reported once a copy is in hand and a grace has passed, without waiting
//!   for the slowest place: `read`), and rewrite places whose copy was missing, stale or
//!   invalid once all have answered (read repair).
//! - **Backups**: each place's holder keeps its copy also at its next b successors, so a place
//!   outlives its holder (`backup`).
//! - **Membership**: when our predecessor changes we re-check which records we are still
//!   responsible for and hand the others to their new places; a leaving node hands its records
//!   to its successor (`membership`); owners re-publish every `refresh_interval`, which
//!   restores copies lost with a failed node and keeps records from expiring.
//! - **Publishing** (`publish`): a node with a [`LocalIdentity`] publishes its certificate-chain record and
//!   a registration (AoR → `sip:user@ip:port` of this node) once it has joined.
//!
//! Unix time is `StorageConfig::unix_at_start` plus the time since the peer was created, so the
//! driver injects the wall clock once. Signing uses the randomness the driver hands in with
//! the identity ([`Signer`]: ECDSA needs fresh randomness, and ring's random trait is sealed);
//! the simulator stores pre-signed records.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::debug;

use super::overlay::wire::OverlayInfo;
use super::replication::wire::StorageRequest;
#[cfg(doc)]
use super::Peer;
use super::Transport;
use crate::identity::{LocalIdentity, SharedRandom, Signer, VerifiedCache};
use crate::overlay::{Chord, Contact, Event, LookupId, NodeId};
use crate::sip::transaction::ClientTxId;
use crate::store::mailbox::MailboxLimits;
use crate::store::{with_spares, Record, RecordKind, Store, StorePolicy};

/// How a node stores and publishes.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// R: copies beyond the primary (replica numbers 1..=R).
    pub replicas: u8,
    /// b: how many successors of each place's holder keep a backup copy (`backup`).
    pub backups: u8,
    /// The checks a storing node makes (sizes, quotas, lifetimes).
    pub policy: StorePolicy,
    /// What it keeps for mailboxes (`crate::store::mailbox`).
    pub mailbox: MailboxLimits,
    /// How long this node's own records live.
    pub record_lifetime: Duration,
    /// How often this node re-publishes its own records (well before they expire).
    pub refresh_interval: Duration,
    /// Unix seconds at the `now` the peer was created with.
    pub unix_at_start: u64,
    /// The R replica numbers when they are not 1…R (an overlay keeping them secret:
    /// `ReplicaPlacement::numbers`); spares follow [`crate::store::with_spares`].
    pub replica_numbers: Option<Vec<u64>>,
}

impl Default for StorageConfig {
    fn default() -> StorageConfig {
        StorageConfig {
            replicas: DEFAULT_REPLICAS,
            backups: DEFAULT_BACKUPS,
            policy: StorePolicy::default(),
            mailbox: MailboxLimits::default(),
            record_lifetime: Duration::from_secs(3600),
            refresh_interval: Duration::from_secs(1200),
            unix_at_start: 0,
            replica_numbers: None,
        }
    }
}

/// R when nothing says otherwise (see `docs/performance.md` for why).
pub const DEFAULT_REPLICAS: u8 = 3;
/// b when nothing says otherwise: with R = 3, a record is lost only when all twelve of its
/// keepers fail (1 in 4,096 records when half of the nodes fail at once), as RFC 6940's Chord
/// keeps two successor replicas.
pub const DEFAULT_BACKUPS: u8 = 2;
/// The highest replica number used: R, then 3(R+1) spares for places that must move off an
/// address already holding a copy (small rings and large same-address groups need several).
pub fn last_replica_number(replicas: u8) -> u8 {
    replicas.saturating_mul(4).saturating_add(3)
}

/// A node that is alone (no `Joined` to wait for) publishes this long after start.
const FIRST_PUBLISH_DELAY: Duration = Duration::from_secs(1);
/// How often held records are checked for expiry.
const EXPIRE_INTERVAL: Duration = Duration::from_secs(60);
/// Stores one owner may have accepted here at once (a refresh touches R+1 places, a hand-off
/// or a repair a few more).
pub(super) const STORES_PER_OWNER_BURST: f64 = 20.0;
/// ...and the rate the allowance comes back at.
pub(super) const STORES_PER_OWNER_PER_SEC: f64 = 2.0;

/// What the storage face has done, for `p2psip status` and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StorageCounters {
    /// Records held now.
    pub records_held: u64,
    /// Stores taken.
    pub stores_accepted: u64,
    /// Stores refused by the checks (signature, chain, owner, expiry, replay, size, quota).
    pub stores_refused: u64,
    /// Stores and fetches for a replica key this node is not responsible for (answered 302).
    pub not_responsible: u64,
    /// Answers too big for UDP to an address that had not answered us, sent back as a 302
    /// to TCP (docs/security.md, M1).
    pub sent_to_tcp: u64,
    /// Storage requests that could not be read.
    pub malformed: u64,
    /// Fetches answered.
    pub fetches_served: u64,
    /// Copies rewritten after a read found them missing, stale or invalid.
    pub read_repairs: u64,
    /// Records handed to another node after a membership change.
    pub handed_off: u64,
    /// Records stored again at all their places after a neighbour was detected dead.
    pub re_puts: u64,
    /// Records waiting to be re-put after a failure (a gauge).
    pub reputs_queued: u64,
    /// Backup copies sent to our successor (`backup`).
    pub backups_sent: u64,
}

/// A record's name in a store: its kind and resource name.
type RecordName = (RecordKind, String);

/// Names one [`Peer::put`] or [`Peer::fetch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorageOpId(pub u64);

/// One of a record's R+1 places, as an operation found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The replica number i (0 is the primary).
    pub replica: u8,
    /// H(K) or H(K‖i).
    pub replica_key: NodeId,
    /// The node that answered for it (the lookup's result).
    pub node: Option<Contact>,
    /// The nodes the lookup asked.
    pub path: Vec<Contact>,
    /// How many of the last nodes on `path` were asked to confirm the answer.
    pub confirmations: u32,
    /// A store: accepted. A fetch: a copy came back and verified.
    pub valid: bool,
    /// A fetch: the copy's sequence number, valid or not.
    pub seq: Option<u64>,
    /// A fetch: the copy is valid and the newest found.
    pub current: bool,
    /// Why the place failed, if it did.
    pub error: Option<String>,
}

/// What the storage face reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageEvent {
    /// A [`Peer::put`] has heard from every place.
    Stored {
        /// The put.
        op: StorageOpId,
        /// The record's kind.
        kind: RecordKind,
        /// Its resource name.
        key: String,
        /// Each place, as the put left it.
        places: Vec<Place>,
    },
    /// A [`Peer::fetch`] has its answer: every place has answered, or a valid copy has been in
    /// hand for a grace period (`read`).
    Fetched {
        /// The fetch.
        op: StorageOpId,
        /// The record's kind.
        kind: RecordKind,
        /// Its resource name.
        key: String,
        /// The newest valid copy found.
        newest: Option<Record>,
        /// Each place, as the read found it.
        places: Vec<Place>,
    },
    /// A [`Peer::list_mailbox`] has heard from every place.
    Listed {
        /// The listing.
        op: StorageOpId,
        /// The mailbox's AoR.
        key: String,
        /// Each message or tombstone of the mailbox, once, verified as a storing node would;
        /// a tombstone wins over the message it deletes.
        records: Vec<Record>,
        /// Each place, as the listing found it.
        places: Vec<Place>,
    },
}

enum Purpose {
    /// [`Peer::put`]: reported with `Stored`.
    Put,
    /// A membership hand-off; `drop_after` removes our copy once a place accepted it.
    Handoff { drop_after: bool },
    /// [`Peer::fetch`]: reported with `Fetched`.
    Fetch,
    /// A re-put after a failure ([`membership::Reput`]): placed like a put, not reported.
    Reput,
    /// [`Peer::list_mailbox`]: reported with `Listed` once every place has answered.
    List,
}

struct Op {
    purpose: Purpose,
    kind: RecordKind,
    key: String,
    /// The record stored (puts and hand-offs).
    record: Option<Record>,
    places: Vec<Place>,
    /// Copies fetched, per place.
    copies: Vec<Option<Record>>,
    /// Places still waiting for their answer.
    remaining: usize,
    /// Lookups still running before the requests go out.
    resolving: usize,
    /// Per place: its request is out. A read asks each place as soon as its lookup ends
    /// (`ask_early`); other ops once every lookup has.
    sent: Vec<bool>,
    /// The next replica number beyond R for a place that must move.
    next_spare: u8,
    /// H(K‖i) for every replica number, spares included.
    keys: Vec<NodeId>,
    /// When the op started (a read's grace is measured from it).
    started: Instant,
    /// A read: when it is reported without the places still waiting (`read`).
    report_at: Option<Instant>,
    /// A read: `Fetched` has been reported.
    reported: bool,
    /// A listing: every record the places sent, unverified.
    listed: Vec<Record>,
}

/// A request in flight to one place (or, with no `op`, a hand-off, backup or repair).
pub(in crate::peer) struct PendingRequest {
    op: Option<StorageOpId>,
    place: usize,
    pub(in crate::peer) request: StorageRequest,
    /// A 302 is followed once.
    redirected: bool,
    /// Chord's RPC deadline: a place that has not answered by then counts as failed (the
    /// transaction's own Timer F, 32 s, is far too long for a read).
    deadline: Instant,
}

/// What replication reads of the ring it lives on (it never drives Chord: lookups go out as
/// [`Output::Lookup`]).
#[derive(Clone, Copy)]
pub(in crate::peer) struct Ring<'a> {
    pub chord: &'a Chord,
    pub info: &'a OverlayInfo,
}

/// What replication asks of the peer.
pub(in crate::peer) enum Output {
    /// Find the node responsible for `key`, then tell [`Replication::lookup_started`] the
    /// lookup's ID; its end comes back as an overlay event.
    Lookup { op: StorageOpId, place: usize, key: NodeId },
    /// Send `pending.request` to `to` as a client transaction, then tell
    /// [`Replication::request_sent`] which.
    Request { to: Contact, transport: Transport, pending: PendingRequest },
    /// End a client transaction whose answer no longer matters.
    Abandon(ClientTxId),
    /// Links that failed verification (a redirect to a node whose ID is not its address's).
    ForgedLinks(usize),
    /// A put or fetch finished.
    Event(StorageEvent),
}

/// Signed records in the overlay, as a sans-IO service the peer routes to: the records this
/// node holds, the stores and fetches in flight, hand-off, backups, re-puts and read repair.
/// It reads the ring through `Ring` and never drives it: lookups, requests and reports go
/// out as `Output`s, and their results come back through its `handle_*` methods.
pub struct Replication {
    /// Stores accepted lately per owner (docs/security.md, M2): at most [`STORES_PER_OWNER_BURST`]
    /// at once, refilled at [`STORES_PER_OWNER_PER_SEC`]; records and mail (`true`) apart.
    owner_budget: std::collections::BTreeMap<(crate::identity::Aor, bool), (f64, Instant)>,
    config: StorageConfig,
    store: Box<dyn Store + Send>,
    ids: VerifiedCache,
    identity: Option<LocalIdentity>,
    /// Randomness for our signatures (with `identity`).
    rng: Option<SharedRandom>,
    /// The contacts of our registration (`publish_registration`).
    contacts: Vec<String>,
    /// Our X25519 public key, published as an `EncryptionKey` record once set.
    encryption_key: Option<Vec<u8>>,
    /// False while a client has no edge to name in its records: nothing is published then.
    contact_ready: bool,
    /// Our records' last sequence number.
    last_seq: u64,
    refresh_at: Option<Instant>,
    /// Publications in a row that did not reach every place (`finish_op`'s back-off).
    incomplete_puts: u32,
    expire_at: Instant,
    /// The `now` the peer was created with, when Unix time was `config.unix_at_start`.
    started: Instant,
    ops: BTreeMap<StorageOpId, Op>,
    lookups: BTreeMap<LookupId, (StorageOpId, usize)>,
    pending: BTreeMap<ClientTxId, PendingRequest>,
    next_op: u64,
    next_cseq: u32,
    /// The predecessor at the last responsibility check.
    last_predecessor: Option<NodeId>,
    /// The last predecessor we had, kept while we have none: where our arc began before a
    /// failure, so a predecessor found after one is compared with it, not with nothing.
    arc_start: Option<NodeId>,
    reput: membership::Reput,
    backups: backup::Backups,
    /// The replica numbers, R of them then the spares (index i is replica i + 1).
    numbers: Vec<u64>,
    counters: StorageCounters,
    /// What the peer is to do for us, in order.
    out: VecDeque<Output>,
}

impl Replication {
    /// Whether a client has an edge to name in its records yet (peers always do).
    pub(in crate::peer) fn set_contact_ready(&mut self, ready: bool) {
        self.contact_ready = ready;
    }

    /// Whether our records may go out now: on the ring, or a client bound at its edge.
    pub(in crate::peer) fn may_publish(&self, ring: &Ring<'_>) -> bool {
        match ring.chord.state() {
            crate::overlay::NodeState::Joined | crate::overlay::NodeState::Alone => true,
            crate::overlay::NodeState::Client => self.contact_ready,
            _ => false,
        }
    }

    /// The node's overlay address changed before it published anything (the dial-back
    /// confirmed a public address): the registration it will publish names the new one.
    pub(in crate::peer) fn readdress(&mut self, old: std::net::SocketAddr, new: std::net::SocketAddr) {
        let Some(identity) = self.identity.as_ref() else { return };
        if self.contacts == [publish::default_contact(identity, old)] {
            self.contacts = vec![publish::default_contact(identity, new)];
        }
    }

    /// When storage next needs [`Replication::handle_timeout`].
    pub(in crate::peer) fn poll_timeout(&self) -> Instant {
        let first_deadline = self.pending.values().map(|p| p.deadline).min();
        let first_report = self.ops.values().filter(|o| !o.reported).filter_map(|o| o.report_at).min();
        [self.refresh_at, first_deadline, self.reput.next_at, self.backups.sync_at, first_report]
            .into_iter()
            .flatten()
            .fold(self.expire_at, Instant::min)
    }

    /// Whether storage follows an overlay event (see [`Replication::handle_overlay_event`]).
    pub(in crate::peer) fn wants(&self, event: &Event) -> bool {
        match event {
            Event::LookupDone { id, .. } => self.lookups.contains_key(id),
            Event::Joined { .. } | Event::PredecessorChanged { .. } | Event::SuccessorChanged { .. } => true,
            _ => false,
        }
    }
}

impl Replication {
    /// Storage for a node: records are checked against `ids`' root; `signer`, when given,
    /// publishes this node's records once it has joined (its registration names `node_addr`).
    /// `started` is the `now` the peer was created with, when Unix time was
    /// `config.unix_at_start`.
    pub(in crate::peer) fn new(
        config: StorageConfig,
        store: Box<dyn Store + Send>,
        ids: VerifiedCache,
        signer: Option<Signer>,
        node_addr: std::net::SocketAddr,
        started: Instant,
        now: Instant,
    ) -> Replication {
        let records_held = store.iter().count() as u64;
        let (identity, rng) = signer.map(|s| (s.identity, s.rng)).unzip();
        let refresh_at = identity.is_some().then(|| now + FIRST_PUBLISH_DELAY);
        let contacts = identity.as_ref().map(|i| vec![publish::default_contact(i, node_addr)]).unwrap_or_default();
        let r = config.replicas;
        let base = config.replica_numbers.clone().unwrap_or_else(|| (1..=u64::from(r)).collect());
        let numbers = with_spares(&base, usize::from(last_replica_number(r) - r));
        Replication {
            config,
            store,
            ids,
            identity,
            rng,
            contacts,
            encryption_key: None,
            contact_ready: true,
            last_seq: 0,
            refresh_at,
            incomplete_puts: 0,
            expire_at: now + EXPIRE_INTERVAL,
            started,
            ops: BTreeMap::new(),
            lookups: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_op: 0,
            next_cseq: 0,
            last_predecessor: None,
            arc_start: None,
            reput: membership::Reput::default(),
            backups: backup::Backups::default(),
            owner_budget: Default::default(),
            numbers,
            counters: StorageCounters { records_held, ..StorageCounters::default() },
            out: VecDeque::new(),
        }
    }

    /// Counts the records held again (`StorageCounters::records_held`), after the store changed.
    fn recount(&mut self) {
        self.counters.records_held = self.store.iter().count() as u64;
    }

    /// What storage has done.
    pub fn counters(&self) -> &StorageCounters {
        &self.counters
    }

    /// R: copies beyond the primary.
    pub fn replicas(&self) -> u8 {
        self.config.replicas
    }

    /// The records this node holds for the overlay.
    pub fn held_records(&self) -> impl Iterator<Item = &Record> {
        self.store.iter()
    }

    /// The store, for tests that plant or remove records behind the protocol's back.
    #[cfg(test)]
    pub(crate) fn store_mut(&mut self) -> &mut dyn Store {
        self.store.as_mut()
    }

    /// Our AoR, when enrolled.
    pub fn aor(&self) -> Option<&crate::identity::Aor> {
        self.identity.as_ref().map(|i| &i.aor)
    }

    /// Unix seconds at `now`.
    pub fn unix_now(&self, now: Instant) -> u64 {
        self.config.unix_at_start + now.saturating_duration_since(self.started).as_secs()
    }

    /// The CSeq of our next request.
    pub(in crate::peer) fn next_cseq(&mut self) -> u32 {
        self.next_cseq = self.next_cseq.wrapping_add(1) % (1 << 31);
        self.next_cseq
    }

    /// Stores `record` at its R+1 places; reported with [`StorageEvent::Stored`].
    pub(in crate::peer) fn put(&mut self, now: Instant, ring: Ring<'_>, record: Record) -> StorageOpId {
        self.start_op(now, ring, Purpose::Put, record.kind, record.key.clone(), Some(record), None)
    }

    /// Lists the mailbox of `aor` at its R+1 places; reported with [`StorageEvent::Listed`].
    pub(in crate::peer) fn list_mailbox(&mut self, now: Instant, ring: Ring<'_>, aor: &str) -> StorageOpId {
        self.start_op(now, ring, Purpose::List, RecordKind::OfflineMessage, aor.to_owned(), None, None)
    }

    /// Fetches `(kind, key)` from its R+1 places; reported with [`StorageEvent::Fetched`].
    pub(in crate::peer) fn fetch(&mut self, now: Instant, ring: Ring<'_>, kind: RecordKind, key: &str) -> StorageOpId {
        self.start_op(now, ring, Purpose::Fetch, kind, key.to_owned(), None, None)
    }

    /// What the overlay reported that storage follows: our own lookups ending, joining, and
    /// our neighbours changing.
    pub(in crate::peer) fn handle_overlay_event(&mut self, now: Instant, ring: Ring<'_>, event: Event) {
        match event {
            Event::LookupDone { id, result, path, confirmations, .. } => {
                self.lookup_done(now, ring, id, result, path, confirmations);
            }
            Event::Joined { successor } => {
                self.reput.last_successor = Some(successor);
                self.publish_own(now, ring);
            }
            Event::SuccessorChanged { .. } => self.successor_changed(now, ring),
            Event::PredecessorChanged { .. } => self.recheck_responsibility(now, ring),
            _ => {}
        }
    }

    /// The next thing storage asks of the peer, in the order asked.
    pub(in crate::peer) fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The storage timers: requests past their deadline, expiry, backups, reads' grace,
    /// re-puts, re-publishing our records.
    pub(in crate::peer) fn handle_timeout(&mut self, now: Instant, ring: Ring<'_>) {
        let unix_now = self.unix_now(now);
        let late: Vec<ClientTxId> = self.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(id, _)| *id).collect();
        for id in late {
            // A late answer then matches nothing and is ignored. The transaction ends here
            // too, as the overlay's do (`abandon_overlay_transactions`): over UDP it would go
            // on retransmitting to a most likely dead node until Timer F, 32 s (RFC 3261
            // §17.1.2.2). Right after half of 256 daemons were killed, those copies of stores
            // and backup copies crowded out the lookups (docs/performance.md, B4).
            self.request_failed(now, ring, id);
            self.out.push_back(Output::Abandon(id));
        }
        if now >= self.expire_at {
            self.expire_at = now + EXPIRE_INTERVAL;
            let gone = self.store.expire(unix_now);
            if !gone.is_empty() {
                debug!(count = gone.len(), "expired records dropped");
            }
            self.recount();
            self.prune_backups();
            self.sync_backups(now, ring, None);
        }
        self.backup_timeout(now, ring);
        self.read_timeout(now);
        if self.reput.next_at.is_some_and(|at| now >= at) {
            self.reput_timeout(now, ring);
        }
        self.refresh_timeout(now, ring);
    }
}

mod backup;
mod membership;
mod ops;
mod publish;
mod read;
mod serve;
pub mod wire;

#[cfg(test)]
mod tests;
