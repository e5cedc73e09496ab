//! Records moving with the ring: hand-off to a newcomer that took over some of our replica
//! keys (a join), and to our successor when we leave (dSIP §6.5); and re-put after a
//! neighbour is detected dead ([`Reput`]): every record we hold is stored again at its R+1
//! places, so the places that were on the dead node come back at the nodes now responsible.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use tracing::{debug, info};

use super::{Purpose, RecordName, Replication, Ring};
use crate::overlay::{Contact, NodeId};
use crate::peer::replication::wire::StorageRequest;
use crate::peer::Transport;
use crate::store::{replica_keys_numbered, Record};

/// How many re-puts start per [`REPUT_SPACING`]: a large failure spreads its re-puts over time
/// instead of bursting every held record's R+1 lookups at once.
pub(super) const REPUT_BATCH: usize = 4;
/// The pause between re-put batches.
pub(super) const REPUT_SPACING: Duration = Duration::from_millis(250);

/// Re-put after a failure. A neighbour counts as dead when our predecessor is dropped (it
/// failed the predecessor check or a stabilize) or replaced by a node further back, or when
/// our first successor is replaced by one further on (the old one was dropped). Every record we
/// hold is then queued to be stored again at all its places (the ordinary put path, spare
/// numbers included) by the nodes that hold one of its places (not by the backup keepers, whose
/// holder does it); the receivers accept an identical copy as already held. The first batch
/// waits one stabilize interval so the ring has absorbed the dead node's range, and a record is
/// re-put at most once per `min_gap` (a stabilize interval), however many failures follow.
#[derive(Default)]
pub(in crate::peer) struct Reput {
    /// Records waiting, in order.
    queue: VecDeque<RecordName>,
    /// When the next batch starts.
    pub next_at: Option<Instant>,
    /// When each record was last re-put (pruned once older than the gap).
    last: BTreeMap<RecordName, Instant>,
    /// The first successor at the last check.
    pub last_successor: Option<Contact>,
}

impl Replication {
    /// A neighbour was detected dead: queue every held record for re-put.
    fn neighbour_failed(&mut self, now: Instant, ring: Ring<'_>, who: NodeId) {
        let delay = ring.chord.config().stabilize_interval;
        let queued: std::collections::BTreeSet<_> = self.reput.queue.iter().cloned().collect();
        let mut added = 0;
        for record in self.store.iter() {
            let id = (record.kind, record.key.clone());
            if !queued.contains(&id) {
                self.reput.queue.push_back(id);
                added += 1;
            }
        }
        self.counters.reputs_queued = self.reput.queue.len() as u64;
        info!(dead = ?who, records = added, "a neighbour failed; re-putting the records we hold");
        if self.reput.next_at.is_none() && !self.reput.queue.is_empty() {
            self.reput.next_at = Some(now + delay);
        }
    }

    /// Our first successor changed: if the old one lies between us and the new one, it was
    /// dropped from the ring (dead, or left).
    /// The backup copies are checked too (`backup`).
    pub(super) fn successor_changed(&mut self, now: Instant, ring: Ring<'_>) {
        let me = ring.chord.me().id;
        let new = ring.chord.successor().clone();
        self.backups.ring_changed(now);
        let old = self.reput.last_successor.replace(new.clone());
        if let Some(old) = old {
            if old.id != new.id && new.id != me && old.id.in_open(me, new.id) {
                self.neighbour_failed(now, ring, old.id);
            }
        }
    }

    /// Starts the next batch of re-puts when due.
    pub(super) fn reput_timeout(&mut self, now: Instant, ring: Ring<'_>) {
        let unix_now = self.unix_now(now);
        let gap = ring.chord.config().stabilize_interval;
        if self.reput.next_at.is_none_or(|at| now < at) {
            return;
        }
        self.reput.last.retain(|_, at| now.saturating_duration_since(*at) < gap);
        let mut batch = Vec::new();
        while batch.len() < REPUT_BATCH {
            let Some(id) = self.reput.queue.pop_front() else { break };
            if self.reput.last.contains_key(&id) {
                continue;
            }
            let Some(record) = self.store.get(id.0, &id.1).filter(|r| r.expires_at > unix_now).cloned() else {
                continue;
            };
            // A backup copy is re-put by its place's holder, not by each of its keepers.
            if !self.holds_place_of(ring, &record) {
                continue;
            }
            batch.push(record);
            self.reput.last.insert(id, now);
        }
        self.counters.reputs_queued = self.reput.queue.len() as u64;
        self.reput.next_at = (!self.reput.queue.is_empty()).then_some(now + REPUT_SPACING);
        self.counters.re_puts += batch.len() as u64;
        for record in batch {
            debug!(key = %record.key, seq = record.seq, "re-put after a failure");
            let _ = self.start_op(now, ring, Purpose::Reput, record.kind, record.key.clone(), Some(record), None);
        }
    }

    /// Our predecessor changed. If a node joined between the old predecessor and us, the
    /// replica keys in (old, new] are now its: those records go to it (hand-off on join), and a
    /// record none of whose keys is still ours is dropped once a new place has accepted it.
    /// With no earlier predecessor (a restart, a first join) every key no longer ours is
    /// handed on. A predecessor that failed only widens our share: nothing moves; the owners'
    /// refresh and read repair restore the copies the failed node held.
    pub(super) fn recheck_responsibility(&mut self, now: Instant, ring: Ring<'_>) {
        let me = ring.chord.me().id;
        let new = ring.chord.predecessor().map(|p| p.id);
        self.backups.ring_changed(now);
        let old = std::mem::replace(&mut self.last_predecessor, new);
        // Dropped (it failed a check), or replaced by a node further back: it is gone.
        let gone = match (old, new) {
            (Some(o), None) => Some(o),
            (Some(o), Some(n)) if o != n && o.in_open(n, me) => Some(o),
            _ => None,
        };
        if let Some(dead) = gone {
            self.neighbour_failed(now, ring, dead);
        }
        let Some(new) = new else { return };
        // Compared with where our arc began, even when the predecessor was dropped in between:
        // a failure followed by a new predecessor further back moves nothing. Only a node that
        // never had a predecessor hands on every key that is not its own.
        let old = self.arc_start.replace(new);
        let moved = |k: NodeId| match old {
            Some(old) if new.in_open(old, me) => k.in_left_open(old, new),
            Some(_) => false,
            None => !k.in_left_open(new, me),
        };
        let hash = ring.chord.config().id_hash;
        let numbers = &self.numbers;
        let backups = self.config.backups;
        let r = u8::try_from(numbers.len()).unwrap_or(u8::MAX);
        let mut handoffs = Vec::new();
        for record in self.store.iter() {
            let keys = replica_keys_numbered(record.placement_key().as_bytes(), numbers, hash);
            let places: Vec<u8> = (0..=r).filter(|&i| keys.get(usize::from(i)).is_some_and(|k| moved(*k))).collect();
            if places.is_empty() {
                continue;
            }
            // Kept when we are to be one of the newcomer's backups (`backup`): its first
            // successor is us, and the newcomer's own backup store says so again.
            let keep = keys.iter().any(|k| k.in_left_open(new, me)) || backups > 0;
            handoffs.push((record.clone(), places, !keep));
        }
        if old.is_some_and(|old| new.in_open(old, me)) {
            let names: Vec<_> = handoffs.iter().map(|(r, _, _)| (r.kind, r.key.clone())).collect();
            self.newcomer_before_us(ring, &names);
        }
        for (record, places, drop_after) in handoffs {
            debug!(key = %record.key, ?places, "handing a record to its new place");
            self.counters.handed_off += 1;
            let _ = self.start_op(
                now,
                ring,
                Purpose::Handoff { drop_after },
                record.kind,
                record.key.clone(),
                Some(record),
                Some(places),
            );
        }
    }

    /// Whether we are the node responsible for `key`: it lies in (predecessor, us]. With no
    /// predecessor known (alone, or just after a failure) we take it.
    pub(super) fn is_responsible(ring: Ring<'_>, key: NodeId) -> bool {
        match ring.chord.predecessor() {
            Some(p) => key.in_left_open(p.id, ring.chord.me().id),
            None => true,
        }
    }

    /// A leaving node gives every record it holds to its successor (dSIP §6.5's hand-off),
    /// which becomes responsible for our share of the ring.
    pub(in crate::peer) fn leave(&mut self, now: Instant, ring: Ring<'_>) {
        let successor = ring.chord.successor().clone();
        if successor.id == ring.chord.me().id {
            return;
        }
        let hash = ring.chord.config().id_hash;
        let numbers = &self.numbers;
        let records: Vec<(Record, u8, NodeId)> = self
            .store
            .iter()
            .filter_map(|rec| {
                let keys = replica_keys_numbered(rec.placement_key().as_bytes(), numbers, hash);
                let (i, k) = keys.iter().enumerate().find(|(_, k)| Self::is_responsible(ring, **k))?;
                Some((rec.clone(), u8::try_from(i).ok()?, *k))
            })
            .collect();
        for (record, replica, replica_key) in records {
            self.counters.handed_off += 1;
            let request = StorageRequest::Store { replica, replica_key, record, backup: 0 };
            self.send_request(now, ring, None, 0, successor.clone(), request, false, Transport::Udp);
        }
    }
}
