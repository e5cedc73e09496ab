//! Records moving with the ring: hand-off to a newcomer that took over some of our replica
//! keys (a join), and to our successor when we leave (dSIP §6.5). A failed predecessor only
//! widens our range; owners' refreshes and read repair restore what it held.

use std::time::Instant;

use tracing::debug;

use super::{last_replica_number, Purpose};
use crate::overlay::NodeId;
use crate::peer::store_sip::StorageRequest;
use crate::peer::Peer;
use crate::store::{replica_keys, Record};

impl Peer {
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
        let old = std::mem::replace(&mut storage.last_predecessor, new);
        let Some(new) = new else { return };
        let moved = |k: NodeId| match old {
            Some(old) if new.in_open(old, me) => k.in_left_open(old, new),
            Some(_) => false,
            None => !k.in_left_open(new, me),
        };
        let hash = self.overlay.chord.config().id_hash;
        let r = last_replica_number(storage.config.replicas);
        let mut handoffs = Vec::new();
        for record in storage.store.iter() {
            let keys = replica_keys(record.key.as_bytes(), r, hash);
            let places: Vec<u8> = (0..=r).filter(|&i| keys.get(usize::from(i)).is_some_and(|k| moved(*k))).collect();
            if places.is_empty() {
                continue;
            }
            let still_ours = keys.iter().any(|k| k.in_left_open(new, me));
            handoffs.push((record.clone(), places, !still_ours));
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
        let r = last_replica_number(storage.config.replicas);
        let records: Vec<(Record, u8, NodeId)> = storage
            .store
            .iter()
            .filter_map(|rec| {
                let keys = replica_keys(rec.key.as_bytes(), r, hash);
                let (i, k) = keys.iter().enumerate().find(|(_, k)| self.is_responsible(**k))?;
                Some((rec.clone(), u8::try_from(i).ok()?, *k))
            })
            .collect();
        for (record, replica, replica_key) in records {
            if let Some(s) = self.storage.as_mut() {
                s.counters.handed_off += 1;
            }
            let request = StorageRequest::Store { replica, replica_key, record };
            self.send_storage_request(now, None, 0, successor.clone(), request, false);
        }
    }
}
