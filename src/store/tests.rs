//! Store checks: the happy paths and one test per refusal. Every refusal test also asserts the
//! store kept nothing (no record, no usage).

use proptest::prelude::*;

use super::*;
use crate::identity::tests::{Fixture, DAY, T0};
use crate::identity::{Aor, KeyPair};
use crate::overlay::id::IdHash;

const NOW: u64 = T0 + DAY;

fn registration(owner: &str, seq: u64, expires_at: u64, contact: &str) -> Unsigned {
    let owner = Aor::parse(owner).unwrap();
    let payload = Registration { contacts: vec![Contact { uri: contact.into(), expires_at }] }.to_payload();
    Unsigned { kind: RecordKind::Registration, key: owner.to_string(), owner, seq, expires_at, payload }
}

fn signed(fx: &Fixture, unsigned: Unsigned, key: &KeyPair, cert: &[u8]) -> Record {
    unsigned.sign(key, vec![cert.to_vec()], &fx.rng).unwrap()
}

/// Offers `record` to an empty store; asserts it was refused and nothing was kept.
fn refused(fx: &Fixture, record: Record, policy: &StorePolicy, now: u64) -> StoreRefusal {
    let mut store = MemoryStore::new();
    let owner = record.owner.clone();
    let err = put_checked(&mut store, record, policy, now, &mut fx.anchor()).unwrap_err();
    assert!(store.is_empty(), "a refused record was kept");
    assert_eq!(store.usage(&owner), OwnerUsage::default());
    err
}

#[test]
fn sign_check_store_get_and_wire_round_trip() {
    let mut fx = Fixture::new("example.com");
    let (key, cert) = fx.enroll("sip:alice@example.com");
    let record =
        signed(&fx, registration("sip:alice@example.com", 1, NOW + 3600, "sip:alice@192.0.2.1:5070"), &key, &cert);

    let wire = record.encode().unwrap();
    let decoded = Record::decode(&wire).unwrap();
    assert_eq!(decoded, record);

    let mut store = MemoryStore::new();
    let id = put_checked(&mut store, decoded, &StorePolicy::default(), NOW, &mut fx.anchor()).unwrap();
    assert_eq!(id.aor.as_str(), "sip:alice@example.com");
    let got = store.get(RecordKind::Registration, "sip:alice@example.com").unwrap();
    let reg = Registration::from_payload(&got.payload).unwrap();
    assert_eq!(reg.contacts[0].uri, "sip:alice@192.0.2.1:5070");
    assert_eq!(reg.live_contacts(NOW).count(), 1);
    assert_eq!(store.usage(&id.aor), OwnerUsage { records: 1, bytes: wire.len() });
}

#[test]
fn newer_sequence_replaces_and_renewed_certificate_with_same_key_is_accepted() {
    let mut fx = Fixture::new("example.com");
    let key = KeyPair::generate(&fx.rng).unwrap();
    let cert1 = fx.enroll_key("sip:alice@example.com", &key, T0, T0 + 2 * DAY).unwrap().certificate_der;
    let mut store = MemoryStore::new();
    let policy = StorePolicy::default();
    let r1 = signed(&fx, registration("sip:alice@example.com", 1, NOW + 3600, "sip:a@192.0.2.1"), &key, &cert1);
    put_checked(&mut store, r1, &policy, NOW, &mut fx.anchor()).unwrap();

    // Renewal: same key, new validity; the first certificate has expired by now.
    let cert2 = fx.enroll_key("sip:alice@example.com", &key, T0 + DAY, T0 + 30 * DAY).unwrap().certificate_der;
    let later = T0 + 3 * DAY;
    let r2 = signed(&fx, registration("sip:alice@example.com", 2, later + 3600, "sip:a@192.0.2.2"), &key, &cert2);
    put_checked(&mut store, r2.clone(), &policy, later, &mut fx.anchor()).unwrap();
    assert_eq!(store.len(), 1);
    assert_eq!(store.get(RecordKind::Registration, "sip:alice@example.com"), Some(&r2));
    assert_eq!(store.usage(&r2.owner).records, 1, "a replacement does not count twice");
}

#[test]
fn second_enrollment_of_the_same_aor_with_another_key_is_refused() {
    let mut fx = Fixture::new("example.com");
    fx.enroll("sip:alice@example.com");
    let other = KeyPair::generate(&fx.rng).unwrap();
    let err = fx.enroll_key("sip:alice@example.com", &other, T0, T0 + DAY).unwrap_err();
    assert!(err.to_string().contains("already enrolled with another key"), "{err}");
}

#[test]
fn refused_wrong_key() {
    let mut fx = Fixture::new("example.com");
    let (_, alice_cert) = fx.enroll("sip:alice@example.com");
    let (mallory_key, _) = fx.enroll("sip:mallory@example.com");
    // Mallory signs a record claiming Alice, attaching Alice's (public) certificate.
    let record =
        signed(&fx, registration("sip:alice@example.com", 1, NOW + 60, "sip:m@203.0.113.9"), &mallory_key, &alice_cert);
    assert_eq!(refused(&fx, record, &StorePolicy::default(), NOW), StoreRefusal::BadSignature);
}

#[test]
fn refused_certificate_from_another_ca() {
    let fx = Fixture::new("example.com");
    let mut rogue = Fixture::new("example.com");
    let (key, cert) = rogue.enroll("sip:alice@example.com");
    let record = signed(&fx, registration("sip:alice@example.com", 1, NOW + 60, "sip:a@192.0.2.1"), &key, &cert);
    let err = refused(&fx, record, &StorePolicy::default(), NOW);
    assert!(matches!(err, StoreRefusal::UntrustedCertificate(_)), "{err:?}");
    assert_eq!(err.reason_phrase(), "Certificate Not Trusted");
}

#[test]
fn refused_expired_certificate() {
    let mut fx = Fixture::new("example.com");
    let (key, cert) = fx.enroll("sip:alice@example.com");
    let now = T0 + 400 * DAY;
    let record = signed(&fx, registration("sip:alice@example.com", 1, now + 60, "sip:a@192.0.2.1"), &key, &cert);
    let err = refused(&fx, record, &StorePolicy::default(), now);
    assert!(matches!(err, StoreRefusal::CertificateExpired { .. }), "{err:?}");
    assert_eq!((err.status_code(), err.reason_phrase()), (403, "Certificate Expired"));
}

#[test]
fn refused_aor_not_matching_the_certificate() {
    let mut fx = Fixture::new("example.com");
    let (key, cert) = fx.enroll("sip:alice@example.com");
    // Alice signs, with her own key and certificate, a record that claims to be Bob's.
    let record = signed(&fx, registration("sip:bob@example.com", 1, NOW + 60, "sip:a@192.0.2.1"), &key, &cert);
    let err = refused(&fx, record, &StorePolicy::default(), NOW);
    assert!(matches!(err, StoreRefusal::OwnerMismatch { .. }), "{err:?}");
    // Owner right, but stored under Bob's name: USER-MATCH.
    let mut unsigned = registration("sip:alice@example.com", 1, NOW + 60, "sip:a@192.0.2.1");
    unsigned.key = "sip:bob@example.com".into();
    let err = refused(&fx, signed(&fx, unsigned, &key, &cert), &StorePolicy::default(), NOW);
    assert!(matches!(err, StoreRefusal::NotUserMatch { .. }), "{err:?}");
}

#[test]
fn refused_replayed_older_sequence_number() {
    let mut fx = Fixture::new("example.com");
    let (key, cert) = fx.enroll("sip:alice@example.com");
    let policy = StorePolicy::default();
    let old = signed(&fx, registration("sip:alice@example.com", 4, NOW + 60, "sip:a@192.0.2.1"), &key, &cert);
    let current = signed(&fx, registration("sip:alice@example.com", 5, NOW + 60, "sip:a@192.0.2.2"), &key, &cert);
    let mut store = MemoryStore::new();
    put_checked(&mut store, current.clone(), &policy, NOW, &mut fx.anchor()).unwrap();
    for replay in [old, current.clone()] {
        let err = put_checked(&mut store, replay, &policy, NOW, &mut fx.anchor()).unwrap_err();
        assert!(matches!(err, StoreRefusal::StaleSequence { held: 5, .. }), "{err:?}");
        assert_eq!(store.get(RecordKind::Registration, "sip:alice@example.com"), Some(&current));
        assert_eq!(store.len(), 1);
    }
}

#[test]
fn refused_oversized_record() {
    let mut fx = Fixture::new("example.com");
    let (key, cert) = fx.enroll("sip:alice@example.com");
    let mut unsigned = registration("sip:alice@example.com", 1, NOW + 60, "sip:a@192.0.2.1");
    unsigned.payload = vec![b' '; 20_000];
    let err = refused(&fx, signed(&fx, unsigned, &key, &cert), &StorePolicy::default(), NOW);
    assert!(matches!(err, StoreRefusal::TooLarge { limit: 16384, .. }), "{err:?}");
    assert_eq!(err.status_code(), 413);
}

#[test]
fn refused_owner_over_quota() {
    let mut fx = Fixture::new("example.com");
    let (key, cert) = fx.enroll("sip:alice@example.com");
    let policy = StorePolicy { max_records_per_owner: 1, ..StorePolicy::default() };
    let mut store = MemoryStore::new();
    let reg = signed(&fx, registration("sip:alice@example.com", 1, NOW + 60, "sip:a@192.0.2.1"), &key, &cert);
    put_checked(&mut store, reg.clone(), &policy, NOW, &mut fx.anchor()).unwrap();
    let mut presence = registration("sip:alice@example.com", 1, NOW + 60, "sip:a@192.0.2.1");
    presence.kind = RecordKind::Presence;
    let presence = signed(&fx, presence, &key, &cert);
    let err = put_checked(&mut store, presence.clone(), &policy, NOW, &mut fx.anchor()).unwrap_err();
    assert!(matches!(err, StoreRefusal::OverQuota { records: 2, max_records: 1, .. }), "{err:?}");
    assert_eq!(store.len(), 1);
    assert_eq!(store.get(RecordKind::Presence, "sip:alice@example.com"), None);

    // The byte quota too, on an empty store.
    let tight = StorePolicy { max_bytes_per_owner: 100, ..StorePolicy::default() };
    let err = refused(&fx, presence, &tight, NOW);
    assert!(matches!(err, StoreRefusal::OverQuota { max_bytes: 100, .. }), "{err:?}");
    assert_eq!(err.reason_phrase(), "Owner Over Quota");
}

#[test]
fn refused_truncated_signature() {
    let mut fx = Fixture::new("example.com");
    let (key, cert) = fx.enroll("sip:alice@example.com");
    let mut record = signed(&fx, registration("sip:alice@example.com", 1, NOW + 60, "sip:a@192.0.2.1"), &key, &cert);
    let len = record.signature.len();
    record.signature.truncate(len - 5);
    assert_eq!(refused(&fx, record.clone(), &StorePolicy::default(), NOW), StoreRefusal::BadSignature);
    record.signature.clear();
    assert_eq!(refused(&fx, record, &StorePolicy::default(), NOW), StoreRefusal::BadSignature);
}

#[test]
fn refused_bit_flipped_signature_or_content() {
    let mut fx = Fixture::new("example.com");
    let (key, cert) = fx.enroll("sip:alice@example.com");
    let record = signed(&fx, registration("sip:alice@example.com", 1, NOW + 60, "sip:a@192.0.2.1"), &key, &cert);
    for i in [0, 7, record.signature.len() / 2, record.signature.len() - 1] {
        let mut flipped = record.clone();
        flipped.signature[i] ^= 0x01;
        assert_eq!(refused(&fx, flipped, &StorePolicy::default(), NOW), StoreRefusal::BadSignature, "byte {i}");
    }
    // Every field is covered by the signature.
    let mut payload = record.clone();
    payload.payload[3] ^= 0x20;
    let mut seq = record.clone();
    seq.seq += 1;
    let mut expiry = record.clone();
    expiry.expires_at += 1;
    let mut kind = record.clone();
    kind.kind = RecordKind::Presence;
    for tampered in [payload, seq, expiry, kind] {
        assert_eq!(refused(&fx, tampered, &StorePolicy::default(), NOW), StoreRefusal::BadSignature);
    }
}

#[test]
fn refused_expired_or_too_long_lived_record_and_missing_chain() {
    let mut fx = Fixture::new("example.com");
    let (key, cert) = fx.enroll("sip:alice@example.com");
    let policy = StorePolicy::default();
    let expired = signed(&fx, registration("sip:alice@example.com", 1, NOW, "sip:a@192.0.2.1"), &key, &cert);
    assert!(matches!(refused(&fx, expired, &policy, NOW), StoreRefusal::RecordExpired { .. }));
    let forever = signed(&fx, registration("sip:alice@example.com", 1, NOW + 30 * DAY, "sip:a@192.0.2.1"), &key, &cert);
    assert!(matches!(refused(&fx, forever, &policy, NOW), StoreRefusal::LifetimeTooLong { .. }));
    let mut bare = signed(&fx, registration("sip:alice@example.com", 1, NOW + 60, "sip:a@192.0.2.1"), &key, &cert);
    bare.signer_chain.clear();
    assert_eq!(refused(&fx, bare, &policy, NOW), StoreRefusal::NoCertificate);
}

#[test]
fn cache_as_identity_source() {
    let mut fx = Fixture::new("example.com");
    let (key, cert) = fx.enroll("sip:alice@example.com");
    let mut cache = crate::identity::VerifiedCache::new(fx.anchor(), 16);
    let mut store = MemoryStore::new();
    for seq in 1..=3 {
        let r = signed(&fx, registration("sip:alice@example.com", seq, NOW + 60, "sip:a@192.0.2.1"), &key, &cert);
        put_checked(&mut store, r, &StorePolicy::default(), NOW, &mut cache).unwrap();
    }
    assert_eq!(cache.len(), 1);
}

#[test]
fn expire_drops_due_records_and_their_usage() {
    let mut fx = Fixture::new("example.com");
    let (ka, ca) = fx.enroll("sip:alice@example.com");
    let (kb, cb) = fx.enroll("sip:bob@example.com");
    let mut store = MemoryStore::new();
    let policy = StorePolicy::default();
    let a = signed(&fx, registration("sip:alice@example.com", 1, NOW + 60, "sip:a@192.0.2.1"), &ka, &ca);
    let b = signed(&fx, registration("sip:bob@example.com", 1, NOW + 600, "sip:b@192.0.2.2"), &kb, &cb);
    put_checked(&mut store, a.clone(), &policy, NOW, &mut fx.anchor()).unwrap();
    put_checked(&mut store, b, &policy, NOW, &mut fx.anchor()).unwrap();
    assert!(store.expire(NOW + 59).is_empty());
    assert_eq!(store.expire(NOW + 60), vec![a.clone()]);
    assert_eq!(store.usage(&a.owner), OwnerUsage::default());
    assert_eq!(store.iter().count(), 1);
    assert!(store.remove(RecordKind::Registration, "sip:bob@example.com").is_some());
    assert!(store.is_empty());
}

#[test]
fn decode_reports_offsets_and_never_panics_on_truncation() {
    let mut fx = Fixture::new("example.com");
    let (key, cert) = fx.enroll("sip:alice@example.com");
    let record = signed(&fx, registration("sip:alice@example.com", 1, NOW + 60, "sip:a@192.0.2.1"), &key, &cert);
    let wire = record.encode().unwrap();
    for cut in 0..wire.len() {
        assert!(Record::decode(&wire[..cut]).is_err(), "cut at {cut}");
    }
    let mut trailing = wire.clone();
    trailing.push(0);
    assert!(matches!(Record::decode(&trailing), Err(DecodeError::Malformed { .. })));
    let mut version = wire.clone();
    version[4] = 2;
    assert_eq!(Record::decode(&version), Err(DecodeError::Malformed { offset: 4, what: "unknown record version" }));
    let chain = vec![cert.clone(), vec![1, 2, 3]];
    assert_eq!(decode_chain(&encode_chain(&chain).unwrap()).unwrap(), chain);
}

#[test]
fn replica_zero_is_the_plain_key_id() {
    let ids = replica_keys(b"sip:alice@example.com", 3, IdHash::Sha1);
    assert_eq!(ids.len(), 4);
    assert_eq!(ids[0], crate::overlay::id::NodeId::for_key(b"sip:alice@example.com", IdHash::Sha1));
    assert_eq!(ids[2], crate::overlay::id::NodeId::for_key(b"sip:alice@example.com\x002", IdHash::Sha1));
}

#[test]
fn replicas_spread_evenly_around_the_ring() {
    // 4,000 keys × 4 replicas into 16 arcs by the top 4 bits: each arc expects 1,000.
    let mut arcs = [0u32; 16];
    for k in 0..4000u32 {
        for id in replica_keys(format!("sip:user{k}@example.com").as_bytes(), 3, IdHash::Sha1) {
            arcs[usize::from(id.to_bytes()[0] >> 4)] += 1;
        }
    }
    for (arc, n) in arcs.iter().enumerate() {
        assert!((850..=1150).contains(n), "arc {arc} holds {n} of 16,000");
    }
}

proptest! {
    #[test]
    fn replica_keys_are_distinct(key in proptest::collection::vec(any::<u8>(), 0..64), r in 0u8..16) {
        for hash in [IdHash::Sha1, IdHash::Sha256Truncated] {
            let ids = replica_keys(&key, r, hash);
            prop_assert_eq!(ids.len(), usize::from(r) + 1);
            let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
            prop_assert_eq!(distinct.len(), ids.len());
        }
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Record::decode(&bytes);
        let _ = decode_chain(&bytes);
    }

    #[test]
    fn the_computed_size_is_the_encoded_size(
        key in "[a-z:@.;=0-9]{0,80}",
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        signature in proptest::collection::vec(any::<u8>(), 0..80),
        chain in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 0..4),
    ) {
        let owner = Aor::parse("sip:alice@example.com").unwrap();
        let record = Record { kind: RecordKind::OfflineMessage, key, owner, seq: 1, expires_at: 2, payload, signature, signer_chain: chain };
        prop_assert_eq!(record.encoded_len(), record.encode().unwrap().len());
    }
}

#[test]
fn refused_resource_held_by_another_owner() {
    // Only reachable when something bypassed the checks (an unchecked `put`, or a future kind
    // without USER-MATCH); the check still holds the line.
    let mut fx = Fixture::new("example.com");
    let (ka, ca) = fx.enroll("sip:alice@example.com");
    let (kb, cb) = fx.enroll("sip:bob@example.com");
    let mut squatter = signed(&fx, registration("sip:bob@example.com", 1, NOW + 60, "sip:b@192.0.2.2"), &kb, &cb);
    squatter.key = "sip:alice@example.com".into();
    let mut store = MemoryStore::new();
    store.put(squatter.clone());
    let alice = signed(&fx, registration("sip:alice@example.com", 9, NOW + 60, "sip:a@192.0.2.1"), &ka, &ca);
    let err = put_checked(&mut store, alice, &StorePolicy::default(), NOW, &mut fx.anchor()).unwrap_err();
    assert!(matches!(err, StoreRefusal::HeldByOther { .. }), "{err:?}");
    assert_eq!(store.get(RecordKind::Registration, "sip:alice@example.com"), Some(&squatter));
    assert_eq!(store.usage(&Aor::parse("sip:alice@example.com").unwrap()), OwnerUsage::default());
}

#[test]
fn a_long_forged_chain_is_refused_before_any_signature_is_checked() {
    // docs/security.md, M2: 45 certificates used to cost 45 P-256 verifications per packet.
    let mut fx = Fixture::new("example.com");
    let (key, cert) = fx.enroll("sip:alice@example.com");
    let mut record = signed(&fx, registration("sip:alice@example.com", 1, T0 + DAY, "sip:a@192.0.2.1"), &key, &cert);
    record.signer_chain = vec![cert.clone(); 45];
    let policy = StorePolicy { max_record_bytes: usize::MAX, ..StorePolicy::default() };
    assert_eq!(refused(&fx, record.clone(), &policy, T0), StoreRefusal::ChainTooLong { len: 45 });
    record.signer_chain.truncate(MAX_CHAIN + 1);
    assert_eq!(refused(&fx, record, &policy, T0), StoreRefusal::ChainTooLong { len: MAX_CHAIN + 1 });
}

#[test]
fn a_node_stores_no_more_than_its_total_quota_for_all_owners() {
    let mut fx = Fixture::new("example.com");
    let policy = StorePolicy { max_total_records: 3, ..StorePolicy::default() };
    let mut store = MemoryStore::new();
    let mut anchor = fx.anchor();
    for (i, user) in ["a", "b", "c", "d"].iter().enumerate() {
        let aor = format!("sip:{user}@example.com");
        let (key, cert) = fx.enroll(&aor);
        let record = signed(&fx, registration(&aor, 1, T0 + DAY, "sip:x@192.0.2.1"), &key, &cert);
        let r = put_checked(&mut store, record, &policy, T0, &mut anchor);
        if i < 3 {
            assert!(r.is_ok(), "{user}: {r:?}");
        } else {
            assert_eq!(r.unwrap_err(), StoreRefusal::NodeFull, "every owner under its own quota, the node full");
        }
    }
    assert_eq!(store.total().records, 3);
}

#[test]
fn a_record_that_cannot_be_encoded_counts_as_too_large_for_any_limit() {
    let owner = Aor::parse("sip:alice@example.com").unwrap();
    let record = Record {
        kind: RecordKind::Registration,
        key: "k".repeat(70_000),
        owner,
        seq: 1,
        expires_at: 2,
        payload: Vec::new(),
        signature: Vec::new(),
        signer_chain: Vec::new(),
    };
    assert!(record.encode().is_err());
    assert_eq!(record.encoded_len(), usize::MAX);
}
