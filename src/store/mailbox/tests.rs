//! The mailbox's storage rules: who may write and delete, what a tombstone replaces and what
//! replaces it, and each quota, every refusal leaving the store as it was.

use super::*;
use crate::identity::tests::{Fixture, DAY, T0};
use crate::identity::KeyPair;
use crate::store::{put_checked, EncryptionKey, MemoryStore, StorePolicy, StoreRefusal, Unsigned};

const NOW: u64 = T0 + DAY;

struct Users {
    fx: Fixture,
    keys: Vec<(Aor, KeyPair, Vec<u8>)>,
}

impl Users {
    fn new() -> Users {
        Users { fx: Fixture::new("example.com"), keys: Vec::new() }
    }

    fn user(&mut self, aor: &str) -> usize {
        let (key, cert) = self.fx.enroll(aor);
        self.keys.push((Aor::parse(aor).unwrap(), key, cert));
        self.keys.len() - 1
    }

    fn sign(&self, who: usize, kind: RecordKind, key: String, payload: Vec<u8>) -> Record {
        let (owner, k, cert) = &self.keys[who];
        let unsigned = Unsigned { kind, key, owner: owner.clone(), seq: 1, expires_at: NOW + DAY, payload };
        unsigned.sign(k, vec![cert.clone()], &self.fx.rng).unwrap()
    }

    fn aor(&self, who: usize) -> &Aor {
        &self.keys[who].0
    }

    /// A message from `from` to `to` with ID byte `n` and a payload of `size` bytes.
    fn message(&self, from: usize, to: usize, n: u8, size: usize) -> Record {
        let key = message_key(self.aor(to), &MessageId([n; 16]));
        self.sign(from, RecordKind::OfflineMessage, key, vec![0xAB; size])
    }

    fn tombstone(&self, by: usize, of: &Record) -> Record {
        self.sign(by, RecordKind::OfflineMessage, of.key.clone(), Vec::new())
    }

    fn key_record(&self, who: usize) -> Record {
        let payload = EncryptionKey::x25519(vec![9; 32]).to_payload();
        self.sign(who, RecordKind::EncryptionKey, self.aor(who).to_string(), payload)
    }

    fn put(&self, store: &mut MemoryStore, record: Record) -> Result<(), StoreRefusal> {
        put_checked(store, record, &StorePolicy::default(), NOW, &mut self.fx.anchor()).map(|_| ())
    }
}

#[test]
fn names_parse_back_and_place_at_the_recipient() {
    let bob = Aor::parse("sip:bob@example.com").unwrap();
    let id = MessageId([0x5a; 16]);
    let key = message_key(&bob, &id);
    assert_eq!(key, format!("sip:bob@example.com;msg={}", "5a".repeat(16)));
    assert_eq!(parse_message_key(&key), Some((bob.clone(), id)));
    assert_eq!(placement_key(RecordKind::OfflineMessage, &key), "sip:bob@example.com");
    assert_eq!(placement_key(RecordKind::Registration, &key), key, "other kinds are placed by their own name");
    for bad in [
        "sip:bob@example.com",
        "sip:bob@example.com;msg=5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A",
        "sip:bob@example.com;msg=5a5a",
        "sip:Bob@EXAMPLE.com;msg=5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
        "sip:bob@example.com;msg=5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a;x",
    ] {
        assert_eq!(parse_message_key(bad), None, "{bad}");
    }
}

#[test]
fn anyone_enrolled_writes_only_the_recipient_deletes_and_nothing_replaces_a_deletion() {
    let mut u = Users::new();
    let (alice, bob, mallory) =
        (u.user("sip:alice@example.com"), u.user("sip:bob@example.com"), u.user("sip:mallory@example.com"));
    let mut store = MemoryStore::new();
    let message = u.message(alice, bob, 1, 100);
    u.put(&mut store, message.clone()).unwrap();

    // Mallory cannot delete Bob's message, nor overwrite Alice's.
    let forged = u.tombstone(mallory, &message);
    let err = u.put(&mut store, forged).unwrap_err();
    assert!(matches!(err, StoreRefusal::NotMailboxOwner { .. }), "{err}");
    let mut overwrite = u.message(mallory, bob, 1, 100);
    overwrite.seq = 99;
    let overwrite = u.sign(mallory, RecordKind::OfflineMessage, overwrite.key, overwrite.payload);
    assert!(matches!(u.put(&mut store, overwrite).unwrap_err(), StoreRefusal::HeldByOther { .. }));
    assert_eq!(store.get(RecordKind::OfflineMessage, &message.key), Some(&message));

    // Bob's tombstone replaces it whatever the numbers, and does not count against his quota.
    let tombstone = u.tombstone(bob, &message);
    u.put(&mut store, tombstone.clone()).unwrap();
    assert!(store.get(RecordKind::OfflineMessage, &message.key).unwrap().is_tombstone());
    assert_eq!(store.usage(u.aor(bob)).records, 0);
    assert_eq!(store.usage(u.aor(alice)).records, 0, "the message's bytes are freed");

    // The message handed on again later does not come back; neither does a second deletion.
    assert_eq!(u.put(&mut store, message).unwrap_err(), StoreRefusal::MessageDeleted);
    assert_eq!(u.put(&mut store, u.tombstone(bob, &tombstone)).unwrap_err(), StoreRefusal::MessageDeleted);
    assert_eq!(StoreRefusal::MessageDeleted.reason_phrase(), StoreRefusal::MESSAGE_DELETED);
}

#[test]
fn a_message_under_another_name_or_a_malformed_one_is_refused() {
    let mut u = Users::new();
    let (alice, bob) = (u.user("sip:alice@example.com"), u.user("sip:bob@example.com"));
    let mut store = MemoryStore::new();
    let plain = u.sign(alice, RecordKind::OfflineMessage, u.aor(bob).to_string(), vec![1; 10]);
    assert!(matches!(u.put(&mut store, plain).unwrap_err(), StoreRefusal::NotUserMatch { .. }));
    assert!(store.is_empty());
}

#[test]
fn quotas_per_mailbox_per_sender_size_and_enrollment() {
    let mut u = Users::new();
    let (alice, bob, carol) =
        (u.user("sip:alice@example.com"), u.user("sip:bob@example.com"), u.user("sip:carol@example.com"));
    let limits = MailboxLimits { max_messages: 5, max_per_sender: 3, max_bytes: 64 * 1024, ..MailboxLimits::default() };
    let mut store = MemoryStore::new();

    // No key record for Bob here: not enrolled, as far as this node knows (direct stores only).
    let first = u.message(alice, bob, 0, 100);
    assert_eq!(check_mailbox(&first, &store, &limits, NOW, true), Err(MailboxRefusal::NotEnrolled));
    assert_eq!(check_mailbox(&first, &store, &limits, NOW, false), Ok(()), "a handed-on copy skips it");
    u.put(&mut store, u.key_record(bob)).unwrap();

    for n in 0..3 {
        let m = u.message(alice, bob, n, 100);
        check_mailbox(&m, &store, &limits, NOW, true).unwrap();
        u.put(&mut store, m).unwrap();
    }
    let fourth = u.message(alice, bob, 3, 100);
    assert_eq!(check_mailbox(&fourth, &store, &limits, NOW, true), Err(MailboxRefusal::SenderQuota));
    for n in 10..12 {
        let m = u.message(carol, bob, n, 100);
        check_mailbox(&m, &store, &limits, NOW, true).unwrap();
        u.put(&mut store, m).unwrap();
    }
    let sixth = u.message(carol, bob, 12, 100);
    assert_eq!(check_mailbox(&sixth, &store, &limits, NOW, true), Err(MailboxRefusal::MailboxFull));

    // A deletion frees room: tombstones do not count.
    let held = store.get(RecordKind::OfflineMessage, &message_key(u.aor(bob), &MessageId([10; 16]))).unwrap().clone();
    u.put(&mut store, u.tombstone(bob, &held)).unwrap();
    assert_eq!(check_mailbox(&sixth, &store, &limits, NOW, true), Ok(()));

    let big = u.message(carol, bob, 20, limits.max_record_bytes);
    assert_eq!(check_mailbox(&big, &store, &limits, NOW, true), Err(MailboxRefusal::TooLarge));
    let small_node = MailboxLimits { max_node_bytes: 1000, ..limits.clone() };
    assert_eq!(check_mailbox(&sixth, &store, &small_node, NOW, true), Err(MailboxRefusal::NodeFull));

    for r in MailboxRefusal::ALL {
        assert_eq!(MailboxRefusal::from_reason(r.reason_phrase()), Some(r.clone()));
    }
}
