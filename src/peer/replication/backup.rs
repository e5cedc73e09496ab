//! Backup copies on the successors: a place's holder keeps its copy of a record also at its
//! next `StorageConfig::backups` successors, so the place outlives its holder.
//!
//! This is Chord's successor-list replication (DHash; RFC 6940 §10.7 replicates on the next
//! two successors), kept beside p2psip's replica numbers: a record lives at R+1 places
//! H(K‖i), and each place at its holder and that holder's next b successors. When a holder
//! fails, its successor becomes responsible for the holder's keys (Chord's arc rule) and
//! already has the copies; it answers fetches for them at once, even before it has noticed
//! the failure, instead of redirecting to its dead predecessor. After half of 256 daemons
//! were killed at once, 1/16 of all records had lost every one of their four places
//! (docs/performance.md, B4); with b backups that takes 4(b+1) dead nodes.
//!
//! The chain is carried one hop at a time, always to the first successor on another address
//! (nodes sharing an address sit side by side and fail together), from its predecessor or a
//! node sharing its predecessor's address, which is how the receiver knows the copy is its to
//! keep (`serve_storage`): the holder sends `backup=1` to that successor, which keeps the copy
//! and, when b > 1, sends it on with `backup=2`, and so on. A
//! node keeps what it last sent to its successor (successor, position, sequence number) and
//! sends again only what changed: a new successor, a new position (its predecessor failed and
//! it became a holder), a new version of the record. A new version is passed on at once; ring
//! changes are acted on once the ring around us has been quiet for [`SYNC_DELAY`] (at most
//! [`SYNC_MAX_DELAY`] after the first), since a ring that is forming or repairing changes a
//! node's successor many times a second and each change would send it every copy again. The
//! whole set is checked again every [`super::EXPIRE_INTERVAL`], so a send that was lost is
//! retried. A newcomer just before us moves every backup copy we keep one place further from
//! its holder, and a copy past the last position is dropped.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tracing::debug;

use super::{RecordName, Replication, Ring};
use crate::addr::source_group;
use crate::overlay::NodeId;
use crate::peer::replication::wire::StorageRequest;
use crate::peer::Transport;
use crate::store::{replica_keys_numbered, Record};

/// How quiet the ring around us must have been before the copies its changes call for are
/// sent...
pub(super) const SYNC_DELAY: Duration = Duration::from_secs(1);
/// ...but no later than this after the first change.
pub(super) const SYNC_MAX_DELAY: Duration = Duration::from_secs(5);

/// What this node knows of the backup chain.
#[derive(Default)]
pub(in crate::peer) struct Backups {
    /// Per held record: the successor it was last sent to, as which position, and its version.
    sent: BTreeMap<RecordName, (NodeId, u8, u64)>,
    /// Per backup copy held: the position it arrived as (1 = the holder's first successor).
    position: BTreeMap<RecordName, u8>,
    /// When the gathered ring changes are acted on.
    pub sync_at: Option<Instant>,
    /// When the first of them came.
    first_change: Option<Instant>,
}

impl Backups {
    /// A backup copy arrived from our predecessor as `position`.
    pub(in crate::peer) fn note_position(&mut self, record: &Record, position: u8) {
        self.position.insert((record.kind, record.key.clone()), position);
    }

    /// The ring around us changed: check the copies once it has been quiet for
    /// [`SYNC_DELAY`], or [`SYNC_MAX_DELAY`] after the first change.
    pub(in crate::peer) fn ring_changed(&mut self, now: Instant) {
        let first = *self.first_change.get_or_insert(now);
        self.sync_at = Some((now + SYNC_DELAY).min(first + SYNC_MAX_DELAY));
    }
}

impl Replication {
    /// Whether we hold `record` as one of its places (not as a backup copy).
    pub(in crate::peer) fn holds_place_of(&self, ring: Ring<'_>, record: &Record) -> bool {
        self.chain_position(ring, record).is_some_and(|(position, _, _)| position == 0)
    }

    /// Where we stand in the chain of `record`: 0 when one of its replica keys is in our arc
    /// (we hold a place), else the position its copy arrived as (b when unknown: a copy held
    /// from before a restart, kept but not passed on). Also the replica number and key to name
    /// in a backup store: the record's key nearest before us.
    fn chain_position(&self, ring: Ring<'_>, record: &Record) -> Option<(u8, u8, NodeId)> {
        let me = ring.chord.me().id;
        let keys = replica_keys_numbered(record.placement_key().as_bytes(), &self.numbers, ring.chord.config().id_hash);
        // Clockwise distance from the key to us: the nearest key is the one we hold it for.
        let (replica, key) = keys.iter().enumerate().min_by_key(|(_, k)| k.distance(me))?;
        let replica = u8::try_from(replica).ok()?;
        if keys.iter().any(|k| Self::is_responsible(ring, *k)) {
            return Some((0, replica, *key));
        }
        let name = (record.kind, record.key.clone());
        let position = self.backups.position.get(&name).copied().unwrap_or(self.config.backups);
        Some((position, replica, *key))
    }

    /// Sends our successor the copies it should keep and has not been sent in this form:
    /// every held record, or only `only`.
    pub(super) fn sync_backups(&mut self, now: Instant, ring: Ring<'_>, only: Option<&RecordName>) {
        let depth = self.config.backups;
        if depth == 0 {
            return;
        }
        // The first successor on another address: nodes sharing ours sit right after us
        // (port-suffixed IDs) and fail with us, so a copy there is no backup.
        let me = ring.chord.me();
        let group = source_group(me.addr.ip());
        let Some(successor) =
            ring.chord.successors().iter().find(|s| s.id != me.id && source_group(s.addr.ip()) != group)
        else {
            return;
        };
        let held: Box<dyn Iterator<Item = &Record>> = match only {
            Some((kind, key)) => Box::new(self.store.get(*kind, key).into_iter()),
            None => self.store.iter(),
        };
        // Only what must go is cloned: a ring change usually leaves most copies as they were.
        let sends: Vec<StorageRequest> = held
            .filter_map(|record| {
                let (position, replica, replica_key) = self.chain_position(ring, record)?;
                let want = (successor.id, position + 1, record.seq);
                let name = (record.kind, record.key.clone());
                (position < depth && self.backups.sent.get(&name) != Some(&want)).then(|| StorageRequest::Store {
                    replica,
                    replica_key,
                    record: record.clone(),
                    backup: position + 1,
                })
            })
            .collect();
        let successor = successor.clone();
        for request in &sends {
            if let StorageRequest::Store { record, backup, .. } = request {
                self.backups.sent.insert((record.kind, record.key.clone()), (successor.id, *backup, record.seq));
            }
        }
        self.counters.backups_sent += sends.len() as u64;
        if !sends.is_empty() {
            debug!(successor = %successor.addr, count = sends.len(), "backup copies to our successor");
        }
        for request in sends {
            self.send_request(now, ring, None, 0, successor.clone(), request, false, Transport::Udp);
        }
    }

    /// The gathered ring changes are due.
    pub(super) fn backup_timeout(&mut self, now: Instant, ring: Ring<'_>) {
        if self.backups.sync_at.is_some_and(|at| now >= at) {
            self.backups.sync_at = None;
            self.backups.first_change = None;
            self.sync_backups(now, ring, None);
        }
    }

    /// A newcomer joined just before us: every backup copy we keep is one place further from
    /// its holder, and the records handed to the newcomer (`to_newcomer`) are now backups at
    /// position 1. A copy past the last position is dropped.
    pub(super) fn newcomer_before_us(&mut self, ring: Ring<'_>, to_newcomer: &[RecordName]) {
        let depth = self.config.backups;
        let moves: Vec<(RecordName, u8)> = self
            .store
            .iter()
            .filter_map(|record| {
                let (position, _, _) = self.chain_position(ring, record)?;
                let name = (record.kind, record.key.clone());
                let handed = to_newcomer.contains(&name);
                // Without backups, the hand-off drops what it handed once the newcomer took it.
                if position == 0 || (handed && depth == 0) {
                    return None;
                }
                Some((name, if handed { 1 } else { position.saturating_add(1) }))
            })
            .collect();
        let mut dropped = 0;
        for ((kind, key), next) in moves {
            if next > depth {
                self.store.remove(kind, &key);
                dropped += 1;
            } else {
                self.backups.position.insert((kind, key), next);
            }
        }
        if dropped > 0 {
            debug!(count = dropped, "backup copies past the last position dropped");
            self.recount();
        }
    }

    /// A backup store went unanswered or was refused: forget that it was sent, so the next
    /// check sends it again. (A copy refused as older than the one held was not lost.)
    pub(super) fn backup_failed(&mut self, request: &StorageRequest) {
        if let StorageRequest::Store { record, backup: 1.., .. } = request {
            self.backups.sent.remove(&(record.kind, record.key.clone()));
        }
    }

    /// Drops what we remember of records no longer held.
    pub(super) fn prune_backups(&mut self) {
        let store = &self.store;
        self.backups.sent.retain(|(kind, key), _| store.get(*kind, key).is_some());
        self.backups.position.retain(|(kind, key), _| store.get(*kind, key).is_some());
    }
}
