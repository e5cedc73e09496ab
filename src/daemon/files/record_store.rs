//! The records a node stores for the overlay, kept in an embedded redb database
//! (`records.redb` in the data directory) so that a restarted node serves what it held.
//!
//! [`RedbStore`] implements the sans-IO [`Store`] trait: every record lives in a
//! [`MemoryStore`] (which answers reads and keeps per-owner usage), and every change is queued
//! to a writer thread that owns the database and commits, durably, whatever has queued since
//! its last commit in one transaction (docs/security.md, M2: the event loop never waits for a disk
//! sync, and a burst of stores costs one). At open, the database is read back into memory; a
//! row that no longer decodes is dropped with a warning. Dropping the store waits for the
//! writer to finish. The trait's methods cannot fail, so a failed write is logged and the
//! memory copy still serves until restart.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tracing::warn;

use crate::identity::Aor;
use crate::store::{MemoryStore, OwnerUsage, Record, RecordKind, Store};

/// kind code byte ‖ resource name → the record's wire encoding.
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");

/// Why the database could not be opened or read.
#[derive(Debug, thiserror::Error)]
#[error("record database {path}: {message}")]
pub struct RecordStoreError {
    /// The database file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// One change for the writer: a row to set, or (`None`) to remove.
type Change = (Vec<u8>, Option<Vec<u8>>);

/// A [`Store`] that survives restart.
pub struct RedbStore {
    memory: MemoryStore,
    writer: Option<(mpsc::Sender<Change>, JoinHandle<()>)>,
}

fn row_key(kind: RecordKind, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(kind.code());
    k.extend_from_slice(key.as_bytes());
    k
}

/// The writer thread: blocks for a change, takes every other one already queued, commits them
/// in one durable transaction; ends when the store is dropped.
fn write_changes(db: Database, changes: mpsc::Receiver<Change>) {
    while let Ok(first) = changes.recv() {
        let batch: Vec<Change> = std::iter::once(first).chain(changes.try_iter()).collect();
        let result = (|| -> Result<(), Box<dyn std::error::Error>> {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(RECORDS)?;
                for (k, v) in &batch {
                    match v {
                        Some(v) => table.insert(k.as_slice(), v.as_slice()).map(|_| ())?,
                        None => table.remove(k.as_slice()).map(|_| ())?,
                    }
                }
            }
            txn.commit()?;
            Ok(())
        })();
        if let Err(e) = result {
            warn!(error = %e, changes = batch.len(), "could not write the record database; the changes are kept in memory only");
        }
    }
}

impl RedbStore {
    /// Opens (or creates) the database at `path` and loads what it holds.
    pub fn open(path: &Path) -> Result<RedbStore, RecordStoreError> {
        let err =
            |e: &dyn std::fmt::Display| RecordStoreError { path: path.display().to_string(), message: e.to_string() };
        let db = Database::create(path).map_err(|e| err(&e))?;
        // Create the table so that a fresh database reads as empty.
        let txn = db.begin_write().map_err(|e| err(&e))?;
        txn.open_table(RECORDS).map_err(|e| err(&e))?;
        txn.commit().map_err(|e| err(&e))?;

        let mut memory = MemoryStore::new();
        {
            let txn = db.begin_read().map_err(|e| err(&e))?;
            let table = txn.open_table(RECORDS).map_err(|e| err(&e))?;
            for row in table.iter().map_err(|e| err(&e))? {
                let (_, value) = row.map_err(|e| err(&e))?;
                match Record::decode(value.value()) {
                    Ok(record) => {
                        memory.put(record);
                    }
                    Err(e) => warn!(error = %e, "dropping an unreadable stored record"),
                }
            }
        }
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("p2psip-records".into())
            .spawn(move || write_changes(db, rx))
            .map_err(|e| err(&e))?;
        Ok(RedbStore { memory, writer: Some((tx, handle)) })
    }

    fn write(&self, change: Change) {
        if let Some((tx, _)) = &self.writer {
            if tx.send(change).is_err() {
                warn!("the record database writer has stopped; the change is kept in memory only");
            }
        }
    }
}

impl Drop for RedbStore {
    /// Waits until everything queued is written.
    fn drop(&mut self) {
        if let Some((tx, handle)) = self.writer.take() {
            drop(tx);
            let _ = handle.join();
        }
    }
}

impl Store for RedbStore {
    fn get(&self, kind: RecordKind, key: &str) -> Option<&Record> {
        self.memory.get(kind, key)
    }

    fn put(&mut self, record: Record) -> Option<Record> {
        match record.encode() {
            Ok(bytes) => self.write((row_key(record.kind, &record.key), Some(bytes))),
            Err(e) => warn!(error = %e, "a record that does not encode is kept in memory only"),
        }
        self.memory.put(record)
    }

    fn remove(&mut self, kind: RecordKind, key: &str) -> Option<Record> {
        self.write((row_key(kind, key), None));
        self.memory.remove(kind, key)
    }

    fn iter(&self) -> Box<dyn Iterator<Item = &Record> + '_> {
        self.memory.iter()
    }

    fn with_prefix(&self, kind: RecordKind, prefix: &str) -> Box<dyn Iterator<Item = &Record> + '_> {
        self.memory.with_prefix(kind, prefix)
    }

    fn expire(&mut self, unix_now: u64) -> Vec<Record> {
        let gone = self.memory.expire(unix_now);
        for r in &gone {
            self.write((row_key(r.kind, &r.key), None));
        }
        gone
    }

    fn usage(&self, owner: &Aor) -> OwnerUsage {
        self.memory.usage(owner)
    }

    fn total(&self) -> OwnerUsage {
        self.memory.total()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tests::{Fixture, DAY, T0};
    use crate::store::{Registration, Unsigned};

    fn record(fx: &mut Fixture, user: &str, seq: u64) -> Record {
        let (key, cert) = fx.enroll(user);
        let owner = Aor::parse(user).unwrap();
        Unsigned {
            kind: RecordKind::Registration,
            key: owner.to_string(),
            owner,
            seq,
            expires_at: T0 + 2 * DAY,
            payload: Registration::default().to_payload(),
        }
        .sign(&key, vec![cert], &fx.rng)
        .unwrap()
    }

    #[test]
    fn records_survive_reopening_and_removals_stick() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.redb");
        let mut fx = Fixture::new("example.com");
        let alice = record(&mut fx, "sip:alice@example.com", 1);
        let bob = record(&mut fx, "sip:bob@example.com", 1);
        {
            let mut store = RedbStore::open(&path).unwrap();
            store.put(alice.clone());
            store.put(bob.clone());
            store.remove(RecordKind::Registration, "sip:bob@example.com");
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.get(RecordKind::Registration, "sip:alice@example.com"), Some(&alice));
        assert_eq!(store.get(RecordKind::Registration, "sip:bob@example.com"), None);
        assert_eq!(store.usage(&alice.owner).records, 1);
    }

    #[test]
    fn expiry_is_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.redb");
        let mut fx = Fixture::new("example.com");
        let alice = record(&mut fx, "sip:alice@example.com", 1);
        {
            let mut store = RedbStore::open(&path).unwrap();
            store.put(alice.clone());
            assert_eq!(store.expire(alice.expires_at).len(), 1);
        }
        assert_eq!(RedbStore::open(&path).unwrap().iter().count(), 0);
    }
}
