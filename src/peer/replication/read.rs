//! Reads: a fetch asks each of the R+1 places as soon as its lookup has found the node
//! (`ask_early`), verifies each copy as it arrives, and reports
//! ([`StorageEvent::Fetched`]) the newest valid copy once every place has answered, or once a
//! valid copy has been in hand for a grace period, whichever comes first.
//!
//! Waiting for the slowest of R+1 places made every read as slow as its worst place: right
//! after half of 256 daemons were killed, reads of stored AoRs took p95 2.6-3.9 s while single
//! lookups took 0.76 s (docs/performance.md, B4). A phone's call waits on this read
//! (`Peer::proxy_fetches`). The grace is the time the first copy took, within
//! [`GRACE_MIN`, `GRACE_MAX`]: the places are asked together, so in a healthy ring their
//! answers arrive within a round trip of each other and are all compared, and a place that
//! is slower than that by far is one that is failing. Readers compare copies whatever
//! arrived; the op goes on until every place has answered, and only then are places whose
//! copy was missing, stale or invalid repaired, against the newest copy of all.

use std::time::{Duration, Instant};

use tracing::debug;

use super::{Op, Output, Replication, Ring, StorageEvent, StorageOpId};
use crate::peer::replication::wire::StorageRequest;
use crate::peer::Transport;
use crate::store::{check_store, OwnerUsage, Record, RecordKind};

/// The shortest grace after the first valid copy: a few scheduler ticks.
pub(super) const GRACE_MIN: Duration = Duration::from_millis(20);
/// The longest: a read is reported at most this long after its first valid copy.
pub(super) const GRACE_MAX: Duration = Duration::from_millis(250);

impl Replication {
    /// One of a read's places has its answer: verify the copy as a storing node would (chain,
    /// owner, signature, expiry), and start the grace at the first valid one.
    pub(super) fn copy_arrived(&mut self, now: Instant, op: StorageOpId, place: usize) {
        let unix_now = self.unix_now(now);
        let Some(o) = self.ops.get_mut(&op) else { return };
        let (kind, key) = (o.kind, o.key.clone());
        let (Some(p), Some(copy)) = (o.places.get_mut(place), o.copies.get(place)) else { return };
        let Some(record) = copy else {
            p.valid = false;
            return;
        };
        p.seq = Some(record.seq);
        let verdict = if record.kind != kind || record.key != key {
            Err("the copy is for another resource".to_owned())
        } else {
            check_store(record, None, OwnerUsage::default(), &self.config.policy, unix_now, &mut self.ids)
                .map(|_| ())
                .map_err(|e| format!("invalid copy: {e}"))
        };
        if let Err(e) = verdict {
            p.valid = false;
            p.error = Some(e);
        }
        if p.valid && o.report_at.is_none() {
            let took = now.saturating_duration_since(o.started);
            o.report_at = Some(now + took.clamp(GRACE_MIN, GRACE_MAX));
        }
    }

    /// Reports the reads whose grace has run out.
    pub(super) fn read_timeout(&mut self, now: Instant) {
        let due: Vec<StorageOpId> = self
            .ops
            .iter()
            .filter(|(_, o)| !o.reported && o.report_at.is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(o) = self.ops.get_mut(&id) {
                o.reported = true;
                let event = report(id, o);
                self.out.push_back(Output::Event(event));
            }
        }
    }

    /// Every place has answered: report the read if the grace has not, then repair.
    pub(super) fn finish_read(&mut self, now: Instant, ring: Ring<'_>, op: StorageOpId, mut o: Op) {
        if !o.reported {
            o.reported = true;
            let event = report(op, &mut o);
            self.out.push_back(Output::Event(event));
        }
        // Against the newest copy of all places, which may have come after the report.
        let newest = mark_current(&mut o);
        let mut repairs = Vec::new();
        for p in &o.places {
            if let (Some(newest), Some(node), false) = (&newest, &p.node, p.current) {
                repairs.push((p.replica, p.replica_key, node.clone(), newest.clone()));
            }
        }
        self.counters.read_repairs += repairs.len() as u64;
        for (replica, replica_key, node, record) in repairs {
            debug!(replica, node = %node.addr, "read repair");
            let request = StorageRequest::Store { replica, replica_key, record, backup: 0 };
            self.send_request(now, ring, None, 0, node, request, false, Transport::Udp);
        }
    }
}

impl Replication {
    /// Every place of a mailbox listing has answered: each record verified as a storing node
    /// would (chain, owner, the mailbox's access rule, signature, expiry), each name once, a
    /// tombstone before the message it deletes.
    pub(super) fn finish_listing(&mut self, now: Instant, op: StorageOpId, o: Op) {
        let unix_now = self.unix_now(now);
        let prefix = crate::store::mailbox::mailbox_prefix(&o.key);
        let mut by_name: std::collections::BTreeMap<String, Record> = std::collections::BTreeMap::new();
        for record in o.listed {
            if record.kind != RecordKind::OfflineMessage || !record.key.starts_with(&prefix) {
                continue;
            }
            let wins = match by_name.get(&record.key) {
                None => true,
                Some(held) => record.is_tombstone() && !held.is_tombstone(),
            };
            if !wins {
                continue;
            }
            let valid = check_store(&record, None, OwnerUsage::default(), &self.config.policy, unix_now, &mut self.ids);
            if valid.is_ok() {
                by_name.insert(record.key.clone(), record);
            }
        }
        let records = by_name.into_values().collect();
        self.out.push_back(Output::Event(StorageEvent::Listed { op, key: o.key, records, places: o.places }));
    }
}

/// Marks each place current or not against the newest valid copy so far, and returns it.
fn mark_current(o: &mut Op) -> Option<Record> {
    let newest =
        o.places.iter().zip(&o.copies).filter(|(p, _)| p.valid).filter_map(|(_, c)| c.clone()).max_by_key(|r| r.seq);
    for p in &mut o.places {
        p.current = p.valid && newest.as_ref().is_some_and(|n| p.seq == Some(n.seq));
    }
    newest
}

/// `Fetched` with what the read has now: each place current or not against the newest valid
/// copy, and the places still waiting marked so.
fn report(op: StorageOpId, o: &mut Op) -> StorageEvent {
    let newest = mark_current(o);
    let places = o
        .places
        .iter()
        .map(|p| {
            let waiting = !p.valid && p.error.is_none();
            let mut p = p.clone();
            if waiting {
                p.error = Some("no answer yet".to_owned());
            }
            p
        })
        .collect();
    StorageEvent::Fetched { op, kind: o.kind, key: o.key.clone(), newest, places }
}
