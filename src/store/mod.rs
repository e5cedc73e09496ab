//! Signed storage: records every node can verify without asking anyone, placed at replica
//! positions around the ring (SOSIMPLE; RFC 6940 §§6.3.4, 7.3 for signing and USER-MATCH).
//!
//! # Layout
//! - [`record`]: [`Record`], [`RecordKind`], the versioned signed encoding.
//! - [`payload`]: [`Registration`] (AoR → contacts with expiry), [`EncryptionKey`] (the
//!   owner's X25519 key offline messages are sealed to).
//! - [`mailbox`]: a user's offline messages: their names, placement, tombstones, quotas.
//! - [`check`]: [`check_store`]: signature, chain, USER-MATCH, expiry, replay, size, quota.
//! - [`replica`]: [`replica_keys`], H(K), H(K‖1) … H(K‖R).
//! - [`memory`]: the [`Store`] trait and [`MemoryStore`].
//!
//! # Sans-IO
//! Unix times are arguments; nothing reads a clock or a file. Not here: sending stores and
//! fetches over the overlay, hand-off on membership changes, refreshing, persistence.

pub mod check;
pub mod mailbox;
pub mod memory;
pub mod payload;
pub mod record;
pub mod replica;

pub use check::{check_store, IdentitySource, OwnerUsage, StorePolicy, StoreRefusal, MAX_CHAIN};
pub use memory::{put_checked, MemoryStore, Store};
pub use payload::{Contact, EncryptionKey, Registration};
pub use record::{decode_chain, encode_chain, DecodeError, Record, RecordKind, SignError, Unsigned};
pub use replica::{replica_keys, replica_keys_numbered, with_spares};

#[cfg(test)]
mod tests;
