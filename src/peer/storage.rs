//! The peer's storage face: signed records kept at replica positions around the ring
//! (SOSIMPLE; `docs/identity-and-store.md`), driven over the overlay.
//!
//! - **Stores** ([`Peer::put`]): for each replica number i ∈ 0..=R, look up the node
//!   responsible for H(K‖i) ([`replica_keys`]) and send it the record ([`super::store_sip`]).
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
//! - **Publishing**: a node with a [`LocalIdentity`] publishes its certificate-chain record and
//!   a registration (AoR → `sip:user@ip:port` of this node) once it has joined.
//!
//! Unix time is `StorageConfig::unix_at_start` plus the time since the peer was created, so the
//! driver injects the wall clock once. Signing uses ring's `SystemRandom` (ECDSA needs fresh
//! randomness, and ring's random trait is sealed); the simulator stores pre-signed records.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use rand::Rng;
use ring::rand::SystemRandom;
use serde::Serialize;
use tracing::{debug, info};

use super::store_sip::{self, StorageAnswer, StorageRequest};
use super::{new_branch, Endpoint, Listener, Peer, Transport};
use crate::identity::{LocalIdentity, VerifiedCache};
use crate::overlay::{Contact, Event, LookupId, NodeId, NodeState};
use crate::sip::transaction::ClientTxId;
use crate::sip::{Header, HeaderName, Message};
use crate::store::{
    encode_chain, replica_keys_numbered, with_spares, Record, RecordKind, Registration, Store, StorePolicy, Unsigned,
};

/// How a node stores and publishes.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// R: copies beyond the primary (replica numbers 1..=R).
    pub replicas: u8,
    /// b: how many successors of each place's holder keep a backup copy (`backup`).
    pub backups: u8,
    pub policy: StorePolicy,
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
    pub stores_accepted: u64,
    /// Stores refused by the checks (signature, chain, owner, expiry, replay, size, quota).
    pub stores_refused: u64,
    /// Stores and fetches for a replica key this node is not responsible for (answered 302).
    pub not_responsible: u64,
    /// Answers too big for UDP to an address that had not answered us, sent back as a 302
    /// to TCP (issue 11, M1).
    pub sent_to_tcp: u64,
    /// Storage requests that could not be read.
    pub malformed: u64,
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
    pub error: Option<String>,
}

/// What the storage face reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageEvent {
    /// A [`Peer::put`] has heard from every place.
    Stored { op: StorageOpId, kind: RecordKind, key: String, places: Vec<Place> },
    /// A [`Peer::fetch`] has heard from every place; `newest` is the newest valid copy.
    Fetched { op: StorageOpId, kind: RecordKind, key: String, newest: Option<Record>, places: Vec<Place> },
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
}

struct PendingRequest {
    op: Option<StorageOpId>,
    place: usize,
    request: StorageRequest,
    /// A 302 is followed once.
    redirected: bool,
    /// Chord's RPC deadline: a place that has not answered by then counts as failed (the
    /// transaction's own Timer F, 32 s, is far too long for a read).
    deadline: Instant,
}

/// Storage state the peer keeps beside the overlay.
pub(super) struct StorageFace {
    /// Stores accepted lately per owner (issue 11, M2): at most [`STORES_PER_OWNER_BURST`]
    /// at once, refilled at [`STORES_PER_OWNER_PER_SEC`].
    owner_budget: std::collections::BTreeMap<crate::identity::Aor, (f64, Instant)>,
    config: StorageConfig,
    store: Box<dyn Store + Send>,
    ids: VerifiedCache,
    identity: Option<LocalIdentity>,
    system_rng: SystemRandom,
    /// The contacts of our registration (`publish_registration`).
    contacts: Vec<String>,
    /// Our records' last sequence number.
    last_seq: u64,
    refresh_at: Option<Instant>,
    /// Publications in a row that did not reach every place (`finish_op`'s back-off).
    incomplete_puts: u32,
    expire_at: Instant,
    ops: BTreeMap<StorageOpId, Op>,
    lookups: BTreeMap<LookupId, (StorageOpId, usize)>,
    pending: BTreeMap<ClientTxId, PendingRequest>,
    next_op: u64,
    next_cseq: u32,
    /// Overlay events for storage, handled after the overlay drains.
    pub inbox: VecDeque<Event>,
    busy: bool,
    /// The predecessor at the last responsibility check.
    last_predecessor: Option<NodeId>,
    /// The last predecessor we had, kept while we have none: where our arc began before a
    /// failure, so a predecessor found after one is compared with it, not with nothing.
    arc_start: Option<NodeId>,
    reput: membership::Reput,
    backups: backup::Backups,
    /// The replica numbers, R of them then the spares (index i is replica i + 1).
    numbers: Vec<u64>,
    pub counters: StorageCounters,
}

impl StorageFace {
    /// Counts the records held again (`StorageCounters::records_held`), after the store changed.
    fn recount(&mut self) {
        self.counters.records_held = self.store.iter().count() as u64;
    }

    pub fn new(
        config: StorageConfig,
        store: Box<dyn Store + Send>,
        ids: VerifiedCache,
        identity: Option<LocalIdentity>,
        now: Instant,
    ) -> StorageFace {
        let records_held = store.iter().count() as u64;
        let refresh_at = identity.is_some().then(|| now + FIRST_PUBLISH_DELAY);
        let r = config.replicas;
        let base = config.replica_numbers.clone().unwrap_or_else(|| (1..=u64::from(r)).collect());
        let numbers = with_spares(&base, usize::from(last_replica_number(r) - r));
        StorageFace {
            config,
            store,
            ids,
            identity,
            system_rng: SystemRandom::new(),
            contacts: Vec::new(),
            last_seq: 0,
            refresh_at,
            incomplete_puts: 0,
            expire_at: now + EXPIRE_INTERVAL,
            ops: BTreeMap::new(),
            lookups: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_op: 0,
            next_cseq: 0,
            inbox: VecDeque::new(),
            busy: false,
            last_predecessor: None,
            arc_start: None,
            reput: membership::Reput::default(),
            backups: backup::Backups::default(),
            owner_budget: Default::default(),
            numbers,
            counters: StorageCounters { records_held, ..StorageCounters::default() },
        }
    }

    pub fn poll_timeout(&self) -> Instant {
        let first_deadline = self.pending.values().map(|p| p.deadline).min();
        let first_report = self.ops.values().filter(|o| !o.reported).filter_map(|o| o.report_at).min();
        [self.refresh_at, first_deadline, self.reput.next_at, self.backups.sync_at, first_report]
            .into_iter()
            .flatten()
            .fold(self.expire_at, Instant::min)
    }

    /// Whether a lookup's answer belongs to a storage operation.
    pub fn wants(&self, event: &Event) -> bool {
        match event {
            Event::LookupDone { id, .. } => self.lookups.contains_key(id),
            Event::Joined { .. } | Event::PredecessorChanged { .. } | Event::SuccessorChanged { .. } => true,
            _ => false,
        }
    }
}

impl Peer {
    /// Turns storage on: records are checked against `ids`' root; `identity`, when given,
    /// publishes this node's records once it has joined.
    pub fn enable_storage(
        &mut self,
        now: Instant,
        config: StorageConfig,
        store: Box<dyn Store + Send>,
        ids: VerifiedCache,
        identity: Option<LocalIdentity>,
    ) {
        let contacts = identity.as_ref().map(|i| vec![default_contact(i, self.config.node_addr())]);
        // The same enrollment proves who calls (issue 11 item 4).
        let callers = crate::proxy::identity::Callers::new(
            ids.root().clone(),
            identity.as_ref(),
            config.unix_at_start,
            self.started,
        );
        self.proxy.set_callers(callers);
        let mut face = StorageFace::new(config, store, ids, identity, now);
        face.contacts = contacts.unwrap_or_default();
        self.storage = Some(face);
    }

    /// The node's store, for tests that plant or remove records behind the protocol's back.
    #[cfg(test)]
    pub(crate) fn storage_for_tests(&mut self) -> &mut dyn Store {
        self.storage.as_mut().map(|s| s.store.as_mut()).expect("storage is on")
    }

    /// The storage counters, when storage is on.
    pub fn storage_counters(&self) -> Option<&StorageCounters> {
        self.storage.as_ref().map(|s| &s.counters)
    }

    /// The replica count R, when storage is on.
    pub fn replicas(&self) -> Option<u8> {
        self.storage.as_ref().map(|s| s.config.replicas)
    }

    /// The records this node holds for the overlay.
    pub fn held_records(&self) -> Vec<Record> {
        self.storage.as_ref().map(|s| s.store.iter().cloned().collect()).unwrap_or_default()
    }

    /// Our AoR, when enrolled.
    pub fn aor(&self) -> Option<&crate::identity::Aor> {
        self.storage.as_ref()?.identity.as_ref().map(|i| &i.aor)
    }

    /// Unix seconds at `now`.
    pub fn unix_now(&self, now: Instant) -> u64 {
        let base = self.storage.as_ref().map_or(0, |s| s.config.unix_at_start);
        base + now.saturating_duration_since(self.started).as_secs()
    }

    /// Stores `record` at its R+1 places; reported with [`StorageEvent::Stored`].
    pub fn put(&mut self, now: Instant, record: Record) -> Option<StorageOpId> {
        let op = self.start_op(now, Purpose::Put, record.kind, record.key.clone(), Some(record), None)?;
        self.run_storage(now);
        Some(op)
    }

    /// Fetches `(kind, key)` from its R+1 places; reported with [`StorageEvent::Fetched`].
    pub fn fetch(&mut self, now: Instant, kind: RecordKind, key: &str) -> Option<StorageOpId> {
        let op = self.start_op(now, Purpose::Fetch, kind, key.to_owned(), None, None)?;
        self.run_storage(now);
        Some(op)
    }

    /// Replaces our registration's contacts and publishes it (the node's own overlay contact is
    /// the default; `Peer::sync_registration` makes it follow the phones registered here).
    pub fn publish_registration(&mut self, now: Instant, contacts: Vec<String>) -> Option<StorageOpId> {
        let storage = self.storage.as_mut()?;
        storage.contacts = contacts;
        let record = self.sign_own(now, RecordKind::Registration)?;
        self.put(now, record)
    }

    /// Issue 5, publishing: when this node has a local account for its own AoR, the
    /// registration record follows the phones registered for it: this node's overlay contact
    /// while at least one is (never a phone's own address), no contact once the last is gone
    /// (a record with no contacts: the user exists but is offline, so callers get 480). A node
    /// without such an account keeps publishing its overlay contact, as before. Only our own
    /// AoR: the record must be signed by its key (USER-MATCH).
    pub(super) fn sync_registration(&mut self, now: Instant) {
        let node_addr = self.config.node_addr();
        let Some(storage) = self.storage.as_ref() else { return };
        let Some(identity) = storage.identity.as_ref() else { return };
        let aor = identity.aor.to_string();
        let has_account = self.proxy.has_account(&aor);
        let phones = !self.proxy.registrar().lookup(&aor, now).is_empty();
        let wanted = if phones || !has_account { vec![default_contact(identity, node_addr)] } else { Vec::new() };
        if wanted == storage.contacts {
            return;
        }
        let joined = matches!(self.overlay.chord.state(), NodeState::Joined | NodeState::Alone);
        let first_publish_pending = storage.refresh_at.is_some() && storage.last_seq == 0;
        info!(%aor, phones, "our registration record changes");
        if joined && !first_publish_pending {
            let _ = self.publish_registration(now, wanted);
        } else if let Some(storage) = self.storage.as_mut() {
            // Not on the ring yet: the first publication carries them.
            storage.contacts = wanted;
        }
    }

    /// Signs and stores our certificate chain and registration, and schedules the next refresh.
    fn publish_own(&mut self, now: Instant) {
        let Some(storage) = self.storage.as_mut() else { return };
        if storage.identity.is_none() {
            storage.refresh_at = None;
            return;
        }
        storage.refresh_at = Some(now + storage.config.refresh_interval);
        for kind in [RecordKind::CertificateChain, RecordKind::Registration] {
            if let Some(record) = self.sign_own(now, kind) {
                info!(kind = ?kind, key = %record.key, seq = record.seq, "publishing our record");
                let _ = self.start_op(now, Purpose::Put, record.kind, record.key.clone(), Some(record), None);
            }
        }
    }

    /// One of our records, freshly signed with the next sequence number.
    fn sign_own(&mut self, now: Instant, kind: RecordKind) -> Option<Record> {
        let unix_now = self.unix_now(now);
        let storage = self.storage.as_mut()?;
        let identity = storage.identity.as_ref()?;
        let expires_at = (unix_now + storage.config.record_lifetime.as_secs()).min(identity.not_after);
        let payload = match kind {
            RecordKind::CertificateChain => encode_chain(&identity.chain).ok()?,
            RecordKind::Registration => Registration {
                contacts: storage
                    .contacts
                    .iter()
                    .map(|uri| crate::store::Contact { uri: uri.clone(), expires_at })
                    .collect(),
            }
            .to_payload(),
            RecordKind::Presence | RecordKind::OfflineMessage => return None,
        };
        // Sequence numbers grow with the wall clock (milliseconds' worth of room per second),
        // so a restarted node does not replay numbers it used before.
        let seq = storage.last_seq.saturating_add(1).max(unix_now.saturating_mul(1000));
        storage.last_seq = seq;
        let unsigned =
            Unsigned { kind, key: identity.aor.to_string(), owner: identity.aor.clone(), seq, expires_at, payload };
        match unsigned.sign(&identity.key, identity.chain.clone(), &storage.system_rng) {
            Ok(record) => Some(record),
            Err(e) => {
                debug!(error = %e, "could not sign our record");
                None
            }
        }
    }

    /// Starts one operation: a lookup per place (or only `only`'s places).
    fn start_op(
        &mut self,
        now: Instant,
        purpose: Purpose,
        kind: RecordKind,
        key: String,
        record: Option<Record>,
        only: Option<Vec<u8>>,
    ) -> Option<StorageOpId> {
        let storage = self.storage.as_mut()?;
        let hash = self.overlay.chord.config().id_hash;
        let keys = replica_keys_numbered(key.as_bytes(), &storage.numbers, hash);
        let id = StorageOpId(storage.next_op);
        storage.next_op += 1;
        let replicas: Vec<u8> = only.unwrap_or_else(|| (0..=storage.config.replicas).collect());
        let places: Vec<Place> = replicas
            .iter()
            .filter_map(|&i| {
                Some(Place {
                    replica: i,
                    replica_key: *keys.get(usize::from(i))?,
                    node: None,
                    path: Vec::new(),
                    confirmations: 0,
                    valid: false,
                    seq: None,
                    current: false,
                    error: None,
                })
            })
            .collect();
        let n = places.len();
        let next_spare = storage.config.replicas.saturating_add(1);
        let op = Op {
            purpose,
            kind,
            key,
            record,
            places: places.clone(),
            copies: vec![None; n],
            sent: vec![false; n],
            remaining: n,
            resolving: n,
            next_spare,
            keys,
            started: now,
            report_at: None,
            reported: false,
        };
        storage.ops.insert(id, op);
        for (ix, place) in places.iter().enumerate() {
            let lookup = self.overlay.chord.lookup(now, place.replica_key);
            if let Some(storage) = self.storage.as_mut() {
                storage.lookups.insert(lookup, (id, ix));
            }
        }
        Some(id)
    }

    /// Handles the overlay events queued for storage until none are left. Re-entrant calls
    /// (a lookup answered at once from our own tables) only queue.
    pub(super) fn run_storage(&mut self, now: Instant) {
        match self.storage.as_mut() {
            Some(s) if !s.busy => s.busy = true,
            _ => return,
        }
        loop {
            self.drain_overlay(now);
            let Some(event) = self.storage.as_mut().and_then(|s| s.inbox.pop_front()) else { break };
            match event {
                Event::LookupDone { id, result, path, confirmations, .. } => {
                    let Some((op, place)) = self.storage.as_mut().and_then(|s| s.lookups.remove(&id)) else {
                        continue;
                    };
                    match result {
                        Ok(node) => {
                            if let Some(p) = self.place_mut(op, place) {
                                p.node = Some(node);
                                p.path = path;
                                p.confirmations = confirmations;
                            }
                            self.ask_early(now, op, place);
                        }
                        Err(e) => self.place_done(now, op, place, Err(format!("lookup failed: {e}"))),
                    }
                    self.place_resolved(now, op);
                }
                Event::Joined { successor } => {
                    if let Some(s) = self.storage.as_mut() {
                        s.reput.last_successor = Some(successor);
                    }
                    self.publish_own(now);
                }
                Event::SuccessorChanged { .. } => self.successor_changed(now),
                Event::PredecessorChanged { .. } => self.recheck_responsibility(now),
                _ => {}
            }
        }
        if let Some(s) = self.storage.as_mut() {
            s.busy = false;
        }
    }

    /// One of an op's lookups has finished. Once all have, places that landed on an address
    /// already holding another place move to the next spare replica number (so nodes sharing
    /// an address, whose IDs are contiguous, never hold two copies of one record); when no
    /// place needs to move, the requests go out.
    fn place_resolved(&mut self, now: Instant, op: StorageOpId) {
        let Some(storage) = self.storage.as_mut() else { return };
        let Some(o) = storage.ops.get_mut(&op) else { return };
        o.resolving = o.resolving.saturating_sub(1);
        if o.resolving > 0 {
            return;
        }
        let mut moves = Vec::new();
        let mut unplaceable = Vec::new();
        let mut recalled = Vec::new();
        if !matches!(o.purpose, Purpose::Handoff { .. }) {
            let mut used = std::collections::BTreeSet::new();
            for (ix, p) in o.places.iter_mut().enumerate() {
                let Some(node) = &p.node else { continue };
                if used.insert(node.addr.ip()) {
                    continue;
                }
                if o.sent[ix] {
                    // A read asked this place early, before a place with a lower number
                    // landed on the same address: the rule moves this one, so its answer
                    // no longer counts (a valid copy it brought was still a valid copy).
                    o.sent[ix] = false;
                    if p.valid || p.error.is_some() {
                        o.remaining += 1;
                    }
                    p.valid = false;
                    p.error = None;
                    p.seq = None;
                    o.copies[ix] = None;
                    recalled.push(ix);
                }
                let Some(&spare_key) = o.keys.get(usize::from(o.next_spare)) else {
                    // Out of spare numbers: no copy here rather than two on one address.
                    p.node = None;
                    unplaceable.push(ix);
                    continue;
                };
                p.replica = o.next_spare;
                p.replica_key = spare_key;
                p.node = None;
                p.path.clear();
                o.next_spare += 1;
                moves.push((ix, spare_key));
            }
        }
        if !recalled.is_empty() && !o.places.iter().any(|p| p.valid) {
            // The copy that started the read's grace no longer counts: wait for the next.
            o.report_at = None;
        }
        for ix in recalled {
            self.recall(op, ix);
        }
        let Some(o) = self.storage.as_mut().and_then(|s| s.ops.get_mut(&op)) else { return };
        if !moves.is_empty() {
            o.resolving = moves.len();
            for ix in unplaceable {
                self.place_done(now, op, ix, Err("no spare replica number on a distinct address".into()));
            }
            for (ix, key) in moves {
                let lookup = self.overlay.chord.lookup(now, key);
                if let Some(storage) = self.storage.as_mut() {
                    storage.lookups.insert(lookup, (op, ix));
                }
            }
            return;
        }
        let targets: Vec<(usize, Contact)> = o
            .places
            .iter()
            .enumerate()
            .filter(|(ix, _)| !o.sent[*ix])
            .filter_map(|(ix, p)| Some((ix, p.node.clone()?)))
            .collect();
        for (ix, node) in targets {
            self.send_to_place(now, op, ix, node, false);
        }
        for ix in unplaceable {
            self.place_done(now, op, ix, Err("no spare replica number on a distinct address".into()));
        }
    }

    /// A read's place whose lookup just ended is asked at once, unless another place already
    /// found lies on the same address (then the rule of `place_resolved` decides, once every
    /// lookup has ended). Waiting for all of them made a read as slow as its slowest lookup:
    /// right after half of 256 daemons were killed, one lookup of four going round until its
    /// retry held reads for 11-16 s (docs/performance.md, B4).
    fn ask_early(&mut self, now: Instant, op: StorageOpId, place: usize) {
        let Some(o) = self.storage.as_mut().and_then(|s| s.ops.get_mut(&op)) else { return };
        if !matches!(o.purpose, Purpose::Fetch) || o.sent.get(place) != Some(&false) {
            return;
        }
        let Some(node) = o.places.get(place).and_then(|p| p.node.clone()) else { return };
        let shared = o
            .places
            .iter()
            .enumerate()
            .any(|(ix, p)| ix != place && p.node.as_ref().is_some_and(|n| n.addr.ip() == node.addr.ip()));
        if shared {
            return;
        }
        o.sent[place] = true;
        self.send_to_place(now, op, place, node, false);
    }

    /// Forgets the request in flight for `place` of `op` (its transaction ends here).
    fn recall(&mut self, op: StorageOpId, place: usize) {
        let Some(storage) = self.storage.as_mut() else { return };
        let stale: Vec<ClientTxId> =
            storage.pending.iter().filter(|(_, r)| r.op == Some(op) && r.place == place).map(|(id, _)| *id).collect();
        for id in stale {
            storage.pending.remove(&id);
            let _ = self.transactions.terminate_client(id);
        }
    }

    fn place_mut(&mut self, op: StorageOpId, place: usize) -> Option<&mut Place> {
        self.storage.as_mut()?.ops.get_mut(&op)?.places.get_mut(place)
    }

    /// Sends the place's request to `node`, or answers it here when `node` is us.
    fn send_to_place(&mut self, now: Instant, op: StorageOpId, place: usize, node: Contact, redirected: bool) {
        let Some(storage) = self.storage.as_ref() else { return };
        let Some(o) = storage.ops.get(&op) else { return };
        let Some(p) = o.places.get(place) else { return };
        let request = match &o.record {
            Some(record) => StorageRequest::Store {
                replica: p.replica,
                replica_key: p.replica_key,
                record: record.clone(),
                backup: 0,
            },
            None => StorageRequest::Fetch {
                replica: p.replica,
                replica_key: p.replica_key,
                kind: o.kind,
                key: o.key.clone(),
            },
        };
        self.send_storage_request(now, Some(op), place, node, request, redirected, Transport::Udp);
    }

    /// Sends `request` to `node` over `transport` (UDP first; TCP when a holder asks, M1).
    #[allow(clippy::too_many_arguments)]
    fn send_storage_request(
        &mut self,
        now: Instant,
        op: Option<StorageOpId>,
        place: usize,
        node: Contact,
        request: StorageRequest,
        redirected: bool,
        transport: Transport,
    ) {
        let me = self.overlay.chord.me().clone();
        if node.id == me.id {
            let answer = self.serve_storage(now, &me, request.clone());
            self.storage_answer(now, op, place, request, answer, redirected);
            return;
        }
        let call_id = format!("{:016x}@{}", self.rng.random::<u64>(), me.addr.ip());
        let from_tag = self.new_tag();
        let Some(storage) = self.storage.as_mut() else { return };
        storage.next_cseq = storage.next_cseq.wrapping_add(1) % (1 << 31);
        let ids = store_sip::RequestIds { call_id: &call_id, from_tag: &from_tag, cseq: storage.next_cseq };
        let mut msg = store_sip::encode_request(&request, node.addr, &me, &self.overlay.info, ids);
        let branch = new_branch(&mut self.rng);
        let via = format!(
            "SIP/2.0/{} {};branch={branch};rport",
            transport.via_name(),
            super::sent_by(self.config.overlay_addr)
        );
        msg.headers.push_front_of(Header::new(HeaderName::Via, via));
        let to = Endpoint { listener: Listener::Overlay, transport, remote: node.addr, conn: None };
        let tx = self.transactions.send_request(now, msg, to, transport.is_reliable());
        self.counters.client_transactions += 1;
        let deadline = now + self.overlay.chord.config().rpc_timeout;
        if let Some(storage) = self.storage.as_mut() {
            storage.pending.insert(tx, PendingRequest { op, place, request, redirected, deadline });
        }
        self.drain_transactions_only();
    }

    /// Whether a client transaction is one of ours.
    pub(super) fn is_storage_transaction(&self, id: &ClientTxId) -> bool {
        self.storage.as_ref().is_some_and(|s| s.pending.contains_key(id))
    }

    /// A final answer to one of our storage requests.
    pub(super) fn handle_storage_response(&mut self, now: Instant, id: ClientTxId, response: &Message) {
        if response.status().is_none_or(|c| c < 200) {
            return;
        }
        let Some(pending) = self.storage.as_mut().and_then(|s| s.pending.remove(&id)) else { return };
        let answer = store_sip::decode_response(response);
        self.storage_answer(now, pending.op, pending.place, pending.request, answer, pending.redirected);
        self.run_storage(now);
    }

    /// The transaction behind a storage request timed out.
    pub(super) fn storage_transaction_failed(&mut self, now: Instant, id: ClientTxId) {
        let Some(pending) = self.storage.as_mut().and_then(|s| s.pending.remove(&id)) else { return };
        match pending.op {
            Some(op) => self.place_done(now, op, pending.place, Err("no answer (timeout)".into())),
            None => self.backup_failed(&pending.request),
        }
        self.run_storage(now);
    }

    fn storage_answer(
        &mut self,
        now: Instant,
        op: Option<StorageOpId>,
        place: usize,
        request: StorageRequest,
        answer: StorageAnswer,
        redirected: bool,
    ) {
        if let StorageAnswer::UseTcp { node } = &answer {
            // Its answer is too big for UDP to an address it has not seen answer (issue 11,
            // M1): the same request again over TCP, whose handshake proves our address.
            let me = self.overlay.chord.me().clone();
            let plausible = super::overlay_sip::link_verifies(node, self.overlay.info.hash)
                && crate::addr::next_hop_allowed(node.addr.ip(), me.addr.ip());
            if plausible && !redirected && node.id != me.id {
                self.send_storage_request(now, op, place, node.clone(), request, true, Transport::Tcp);
                return;
            }
        }
        if let StorageAnswer::NotResponsible { node } = &answer {
            // Issue 11 (H1, M8): a redirect is followed only to a node whose ID is its
            // address's, and never to loopback (unless we are on it), link-local or ourselves.
            let me = self.overlay.chord.me().clone();
            let plausible = super::overlay_sip::link_verifies(node, self.overlay.info.hash)
                && crate::addr::next_hop_allowed(node.addr.ip(), me.addr.ip())
                && node.addr != me.addr;
            if !plausible {
                self.overlay.chord.count_forged_links(1);
            }
            if plausible && !redirected && node.id != me.id {
                if let Some(p) = op.and_then(|op| self.place_mut(op, place)) {
                    p.node = Some(node.clone());
                }
                self.send_storage_request(now, op, place, node.clone(), request, true, Transport::Udp);
                return;
            }
        }
        let Some(op) = op else {
            let newer_held = matches!(&answer, StorageAnswer::Refused { status: 403, reason }
                if reason == crate::store::StoreRefusal::STALE_SEQUENCE);
            if !matches!(answer, StorageAnswer::Stored) && !newer_held {
                self.backup_failed(&request);
            }
            return;
        };
        let result = match answer {
            StorageAnswer::Stored => Ok(None),
            StorageAnswer::Found(record) => Ok(Some(record)),
            StorageAnswer::NotFound => Err("no record".to_owned()),
            StorageAnswer::NotResponsible { node } => Err(format!("not responsible; redirected to {}", node.addr)),
            StorageAnswer::UseTcp { node } => Err(format!("{} asked for TCP twice", node.addr)),
            StorageAnswer::Refused { status, reason } => Err(format!("{status} {reason}")),
        };
        match result {
            Ok(copy) => {
                if let Some(s) = self.storage.as_mut() {
                    if let Some(o) = s.ops.get_mut(&op) {
                        if let Some(slot) = o.copies.get_mut(place) {
                            *slot = copy;
                        }
                    }
                }
                self.place_done(now, op, place, Ok(()));
            }
            Err(e) => self.place_done(now, op, place, Err(e)),
        }
    }

    /// One place has its answer; the op finishes when every place has.
    fn place_done(&mut self, now: Instant, op: StorageOpId, place: usize, result: Result<(), String>) {
        let Some(storage) = self.storage.as_mut() else { return };
        let Some(o) = storage.ops.get_mut(&op) else { return };
        let Some(p) = o.places.get_mut(place) else { return };
        match result {
            Ok(()) => p.valid = true,
            Err(e) => p.error = Some(e),
        }
        o.remaining = o.remaining.saturating_sub(1);
        let remaining = o.remaining;
        if matches!(o.purpose, Purpose::Fetch) {
            self.copy_arrived(now, op, place);
        }
        if remaining == 0 {
            self.finish_op(now, op);
        }
    }

    fn finish_op(&mut self, now: Instant, op: StorageOpId) {
        let Some(storage) = self.storage.as_mut() else { return };
        let Some(o) = storage.ops.remove(&op) else { return };
        match o.purpose {
            Purpose::Reput => {}
            Purpose::Put => {
                // If not every place took our own record (the ring was still forming, places
                // failed, or there are fewer than R+1 nodes), it is published again soon,
                // backing off (1 s, 2 s, 4 s … up to the refresh interval). In B4 a record
                // published while 128 nodes were joining reached one place of four and was
                // later found at none (docs/performance.md); the owner can put it right.
                if o.places.iter().all(|p| p.valid) {
                    storage.incomplete_puts = 0;
                } else if storage.identity.is_some() {
                    let wait = FIRST_PUBLISH_DELAY
                        .saturating_mul(1 << storage.incomplete_puts.min(16))
                        .min(storage.config.refresh_interval.max(FIRST_PUBLISH_DELAY));
                    storage.incomplete_puts += 1;
                    let soon = now + wait;
                    storage.refresh_at = Some(storage.refresh_at.map_or(soon, |t| t.min(soon)));
                }
                let event = StorageEvent::Stored { op, kind: o.kind, key: o.key, places: o.places };
                self.events.push_back(super::PeerEvent::Storage(event));
            }
            Purpose::Handoff { drop_after } => {
                if drop_after && o.places.iter().any(|p| p.valid) {
                    if let Some(record) = &o.record {
                        let still_ours =
                            storage.store.get(record.kind, &record.key).is_some_and(|r| r.seq == record.seq);
                        if still_ours {
                            storage.store.remove(record.kind, &record.key);
                            storage.recount();
                        }
                    }
                }
            }
            Purpose::Fetch => self.finish_read(now, op, o),
        }
    }

    /// The storage timers: re-publishing our records, dropping expired ones.
    pub(super) fn storage_timeout(&mut self, now: Instant) {
        let unix_now = self.unix_now(now);
        let Some(storage) = self.storage.as_mut() else { return };
        let late: Vec<ClientTxId> =
            storage.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(id, _)| *id).collect();
        for id in late {
            // A late answer then matches nothing and is ignored. The transaction ends here
            // too, as the overlay's do (`abandon_overlay_transactions`): over UDP it would go
            // on retransmitting to a most likely dead node until Timer F, 32 s (RFC 3261
            // §17.1.2.2). Right after half of 256 daemons were killed, those copies of stores
            // and backup copies crowded out the lookups (docs/performance.md, B4).
            self.storage_transaction_failed(now, id);
            let _ = self.transactions.terminate_client(id);
        }
        let Some(storage) = self.storage.as_mut() else { return };
        if now >= storage.expire_at {
            storage.expire_at = now + EXPIRE_INTERVAL;
            let gone = storage.store.expire(unix_now);
            if !gone.is_empty() {
                debug!(count = gone.len(), "expired records dropped");
            }
            storage.recount();
            self.prune_backups();
            self.sync_backups(now, None);
        }
        self.backup_timeout(now);
        self.read_timeout(now);
        let Some(storage) = self.storage.as_mut() else { return };
        if storage.reput.next_at.is_some_and(|at| now >= at) {
            self.reput_timeout(now);
        }
        let Some(storage) = self.storage.as_mut() else { return };
        let refresh_due = storage.refresh_at.is_some_and(|at| now >= at);
        let joined = matches!(self.overlay.chord.state(), NodeState::Joined | NodeState::Alone);
        if refresh_due && !joined {
            // Publishing waits for the ring; try again shortly.
            storage.refresh_at = Some(now + FIRST_PUBLISH_DELAY);
        } else if refresh_due {
            self.publish_own(now);
            self.run_storage(now);
        }
    }
}

/// `sip:user@ip:port`: the user's contact at this node's overlay address.
fn default_contact(identity: &LocalIdentity, addr: std::net::SocketAddr) -> String {
    format!("sip:{}@{}", identity.aor.user(), crate::sip::uri::host_port(&addr.ip().into(), Some(addr.port())))
}

mod backup;
mod membership;
mod read;
mod serve;

#[cfg(test)]
mod tests;
