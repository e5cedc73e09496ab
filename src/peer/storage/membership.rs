//! Records moving with the ring: hand-off to a newcomer that took over some of our replica
//! keys (a join), and to our successor when we leave (dSIP §6.5); and re-put after a
//! neighbour is detected dead ([`Reput`]): every record we hold is stored again at its R+1
//! places, so the places that were on the dead node come back at the nodes now responsible.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use tracing::{debug, info};

use super::{Purpose, RecordName};
use crate::overlay::{Contact, NodeId};
use crate::peer::store_sip::StorageRequest;
use crate::peer::Peer;
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

impl Peer {
    /// A neighbour was detected dead: queue every held record for re-put.
    pub(in crate::peer) fn neighbour_failed(&mut self, now: Instant, who: NodeId) {
        let delay = self.overlay.chord.config().stabilize_interval;
        let Some(storage) = self.storage.as_mut() else { return };
        let queued: std::collections::BTreeSet<_> = storage.reput.queue.iter().cloned().collect();
        let mut added = 0;
        for record in storage.store.iter() {
            let id = (record.kind, record.key.clone());
            if !queued.contains(&id) {
                storage.reput.queue.push_back(id);
                added += 1;
            }
        }
        storage.counters.reputs_queued = storage.reput.queue.len() as u64;
        info!(dead = ?who, records = added, "a neighbour failed; re-putting the records we hold");
        if storage.reput.next_at.is_none() && !storage.reput.queue.is_empty() {
            storage.reput.next_at = Some(now + delay);
        }
    }

    /// Our first successor changed: if the old one lies between us and the new one, it was
    /// dropped from the ring (dead, or left).
    /// The backup copies are checked too (`backup`).
    pub(in crate::peer) fn successor_changed(&mut self, now: Instant) {
        let me = self.node_id();
        let new = self.overlay.chord.successor().clone();
        let Some(storage) = self.storage.as_mut() else { return };
        storage.backups.ring_changed(now);
        let old = storage.reput.last_successor.replace(new.clone());
        if let Some(old) = old {
            if old.id != new.id && new.id != me && old.id.in_open(me, new.id) {
                self.neighbour_failed(now, old.id);
            }
        }
    }

    /// Starts the next batch of re-puts when due.
    pub(in crate::peer) fn reput_timeout(&mut self, now: Instant) {
        let unix_now = self.unix_now(now);
        let gap = self.overlay.chord.config().stabilize_interval;
        let Some(storage) = self.storage.as_mut() else { return };
        if storage.reput.next_at.is_none_or(|at| now < at) {
            return;
        }
        storage.reput.last.retain(|_, at| now.saturating_duration_since(*at) < gap);
        let mut batch = Vec::new();
        while batch.len() < REPUT_BATCH {
            let Some(storage) = self.storage.as_mut() else { return };
            let Some(id) = storage.reput.queue.pop_front() else { break };
            if storage.reput.last.contains_key(&id) {
                continue;
            }
            let Some(record) = storage.store.get(id.0, &id.1).filter(|r| r.expires_at > unix_now).cloned() else {
                continue;
            };
            // A backup copy is re-put by its place's holder, not by each of its keepers.
            if !self.holds_place_of(&record) {
                continue;
            }
            batch.push(record);
            if let Some(storage) = self.storage.as_mut() {
                storage.reput.last.insert(id, now);
            }
        }
        let Some(storage) = self.storage.as_mut() else { return };
        storage.counters.reputs_queued = storage.reput.queue.len() as u64;
        storage.reput.next_at = (!storage.reput.queue.is_empty()).then_some(now + REPUT_SPACING);
        storage.counters.re_puts += batch.len() as u64;
        for record in batch {
            debug!(key = %record.key, seq = record.seq, "re-put after a failure");
            let _ = self.start_op(now, Purpose::Reput, record.kind, record.key.clone(), Some(record), None);
        }
        self.run_storage(now);
    }

    /// Our predecessor changed. If a node joined between the old predecessor and us, the
    /// replica keys in (old, new] are now its: those records go to it (hand-off on join), and a
    /// record none of whose keys is still ours is dropped once a new place has accepted it.
    /// With no earlier predecessor (a restart, a first join) every key no longer ours is
    /// handed on. A predecessor that failed only widens our share: nothing moves; the owners'
    /// refresh and read repair restore the copies the failed node held.
    pub(in crate::peer) fn recheck_responsibility(&mut self, now: Instant) {
        let me = self.node_id();
        let new = self.overlay.chord.predecessor().map(|p| p.id);
        let Some(storage) = self.storage.as_mut() else { return };
        storage.backups.ring_changed(now);
        let old = std::mem::replace(&mut storage.last_predecessor, new);
        // Dropped (it failed a check), or replaced by a node further back: it is gone.
        let gone = match (old, new) {
            (Some(o), None) => Some(o),
            (Some(o), Some(n)) if o != n && o.in_open(n, me) => Some(o),
            _ => None,
        };
        if let Some(dead) = gone {
            self.neighbour_failed(now, dead);
        }
        let Some(storage) = self.storage.as_mut() else { return };
        let Some(new) = new else { return };
        // Compared with where our arc began, even when the predecessor was dropped in between:
        // a failure followed by a new predecessor further back moves nothing. Only a node that
        // never had a predecessor hands on every key that is not its own.
        let old = storage.arc_start.replace(new);
        let moved = |k: NodeId| match old {
            Some(old) if new.in_open(old, me) => k.in_left_open(old, new),
            Some(_) => false,
            None => !k.in_left_open(new, me),
        };
        let hash = self.overlay.chord.config().id_hash;
        let numbers = &storage.numbers;
        let backups = storage.config.backups;
        let r = u8::try_from(numbers.len()).unwrap_or(u8::MAX);
        let mut handoffs = Vec::new();
        for record in storage.store.iter() {
            let keys = replica_keys_numbered(record.key.as_bytes(), numbers, hash);
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
            self.newcomer_before_us(&names);
        }
        for (record, places, drop_after) in handoffs {
            debug!(key = %record.key, ?places, "handing a record to its new place");
            if let Some(s) = self.storage.as_mut() {
                s.counters.handed_off += 1;
            }
            let _ = self.start_op(
                now,
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
    pub(in crate::peer) fn is_responsible(&self, key: NodeId) -> bool {
        match self.overlay.chord.predecessor() {
            Some(p) => key.in_left_open(p.id, self.node_id()),
            None => true,
        }
    }

    /// A leaving node gives every record it holds to its successor (dSIP §6.5's hand-off),
    /// which becomes responsible for our share of the ring.
    pub(in crate::peer) fn storage_leave(&mut self, now: Instant) {
        let Some(storage) = self.storage.as_ref() else { return };
        let successor = self.overlay.chord.successor().clone();
        if successor.id == self.node_id() {
            return;
        }
        let hash = self.overlay.chord.config().id_hash;
        let numbers = &storage.numbers;
        let records: Vec<(Record, u8, NodeId)> = storage
            .store
            .iter()
            .filter_map(|rec| {
                let keys = replica_keys_numbered(rec.key.as_bytes(), numbers, hash);
                let (i, k) = keys.iter().enumerate().find(|(_, k)| self.is_responsible(**k))?;
                Some((rec.clone(), u8::try_from(i).ok()?, *k))
            })
            .collect();
        for (record, replica, replica_key) in records {
            if let Some(s) = self.storage.as_mut() {
                s.counters.handed_off += 1;
            }
            let request = StorageRequest::Store { replica, replica_key, record, backup: 0 };
            self.send_storage_request(now, None, 0, successor.clone(), request, false, crate::peer::Transport::Udp);
        }
    }
}
