//! The storage trait and its in-memory implementation (the simulator's, and the daemon's until
//! persistence lands). Plain and synchronous, like rust-libp2p kad's `RecordStore`: checks are
//! [`super::check_store`]'s job; [`put_checked`] composes the two.

use std::collections::BTreeMap;

use crate::identity::{Aor, VerifiedIdentity};

use super::check::{check_store, IdentitySource, OwnerUsage, StorePolicy, StoreRefusal};
use super::{Record, RecordKind};

/// Records by (kind, resource name).
pub trait Store {
    /// The record `(kind, key)`, if held.
    fn get(&self, kind: RecordKind, key: &str) -> Option<&Record>;
    /// Keeps `record`, returning what it replaced. Unchecked: use [`put_checked`] for records
    /// that came from a peer.
    fn put(&mut self, record: Record) -> Option<Record>;
    /// Removes the record `(kind, key)`; returns it if it was held.
    fn remove(&mut self, kind: RecordKind, key: &str) -> Option<Record>;
    /// Every record, in (kind, key) order.
    fn iter(&self) -> Box<dyn Iterator<Item = &Record> + '_>;
    /// The records of `kind` whose resource name starts with `prefix` (a mailbox's messages).
    fn with_prefix(&self, kind: RecordKind, prefix: &str) -> Box<dyn Iterator<Item = &Record> + '_> {
        let prefix = prefix.to_owned();
        Box::new(self.iter().filter(move |r| r.kind == kind && r.key.starts_with(&prefix)))
    }
    /// Drops every record with `expires_at <= unix_now`; returns them.
    fn expire(&mut self, unix_now: u64) -> Vec<Record>;
    /// What `owner` has stored here.
    fn usage(&self, owner: &Aor) -> OwnerUsage;
    /// What every owner together has stored here (the node-wide quota, docs/security.md, M2).
    fn total(&self) -> OwnerUsage;
}

/// Checks `record` against what `store` holds ([`check_store`]) and keeps it if allowed.
/// A refused record leaves the store untouched.
pub fn put_checked(
    store: &mut dyn Store,
    record: Record,
    policy: &StorePolicy,
    unix_now: u64,
    ids: &mut dyn IdentitySource,
) -> Result<VerifiedIdentity, StoreRefusal> {
    let existing = store.get(record.kind, &record.key);
    let identity = check_store(&record, existing, store.usage(&record.owner), policy, unix_now, ids)?;
    // The node-wide quota (docs/security.md, M2): with free identities, per-owner quotas alone would
    // let disk and memory grow with the number of owners.
    let total = store.total();
    let freed = existing.map_or(0, Record::encoded_len);
    let records = total.records + usize::from(existing.is_none());
    let bytes = (total.bytes + record.encoded_len()).saturating_sub(freed);
    if records > policy.max_total_records || bytes > policy.max_total_bytes {
        return Err(StoreRefusal::NodeFull);
    }
    store.put(record);
    Ok(identity)
}

/// A `BTreeMap` store with per-owner usage kept alongside.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: BTreeMap<(RecordKind, String), Record>,
    usage: BTreeMap<Aor, OwnerUsage>,
    total: OwnerUsage,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// How many records are held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn account(&mut self, record: &Record, add: bool) {
        let size = record.encoded_len();
        if add {
            self.total.records += 1;
            self.total.bytes = self.total.bytes.saturating_add(size);
        } else {
            self.total.records = self.total.records.saturating_sub(1);
            self.total.bytes = self.total.bytes.saturating_sub(size);
        }
        // A mailbox owner's deletions are bounded by the messages they delete, not by the
        // owner's quota (`super::mailbox`): they do not count against it.
        if record.is_tombstone() {
            return;
        }
        let usage = self.usage.entry(record.owner.clone()).or_default();
        if add {
            usage.records = usage.records.saturating_add(1);
            usage.bytes = usage.bytes.saturating_add(size);
        } else {
            usage.records = usage.records.saturating_sub(1);
            usage.bytes = usage.bytes.saturating_sub(size);
        }
        if usage.records == 0 {
            self.usage.remove(&record.owner);
        }
    }
}

impl Store for MemoryStore {
    fn get(&self, kind: RecordKind, key: &str) -> Option<&Record> {
        self.records.get(&(kind, key.to_owned()))
    }

    fn put(&mut self, record: Record) -> Option<Record> {
        self.account(&record, true);
        let old = self.records.insert((record.kind, record.key.clone()), record);
        if let Some(old) = &old {
            self.account(old, false);
        }
        old
    }

    fn remove(&mut self, kind: RecordKind, key: &str) -> Option<Record> {
        let old = self.records.remove(&(kind, key.to_owned()));
        if let Some(old) = &old {
            self.account(old, false);
        }
        old
    }

    fn iter(&self) -> Box<dyn Iterator<Item = &Record> + '_> {
        Box::new(self.records.values())
    }

    fn with_prefix(&self, kind: RecordKind, prefix: &str) -> Box<dyn Iterator<Item = &Record> + '_> {
        let prefix = prefix.to_owned();
        let range = self.records.range((kind, prefix.clone())..);
        Box::new(range.take_while(move |((k, key), _)| *k == kind && key.starts_with(&prefix)).map(|(_, r)| r))
    }

    fn expire(&mut self, unix_now: u64) -> Vec<Record> {
        let gone: Vec<(RecordKind, String)> =
            self.records.iter().filter(|(_, r)| r.expires_at <= unix_now).map(|(k, _)| k.clone()).collect();
        gone.into_iter().filter_map(|(kind, key)| self.remove(kind, &key)).collect()
    }

    fn usage(&self, owner: &Aor) -> OwnerUsage {
        self.usage.get(owner).copied().unwrap_or_default()
    }

    fn total(&self) -> OwnerUsage {
        self.total
    }
}
