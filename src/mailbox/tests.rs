//! The mailbox service on its own, its storage and phones played by the test: a message sealed,
//! stored and answered 202; opened, delivered once per phone, then deleted with a tombstone;
//! duplicates suppressed by the delivery log, also across a restart.
#![allow(clippy::disallowed_methods)] // one real reading as the virtual clock's epoch

use std::time::{Duration, Instant};

use super::*;
use crate::identity::tests::{Fixture, DAY, T0};
use crate::store::mailbox::parse_message_key;
use crate::store::{check_store, EncryptionKey, OwnerUsage, RecordKind, StorePolicy};
use crate::transport::{Listener, Transport};

const NOW: u64 = T0 + DAY;

fn identity(fx: &mut Fixture, aor: &str, seed: u8) -> MailboxIdentity {
    let (key, cert) = fx.enroll(aor);
    MailboxIdentity {
        aor: Aor::parse(aor).unwrap(),
        key,
        chain: vec![cert],
        not_after: NOW + 30 * DAY,
        encryption: EncryptionKeyPair::generate([seed; 32]),
        rng: fx.shared_rng(),
    }
}

/// The same user's identity again (a restart, or a new machine with `seed`'s encryption key).
fn same_user(fx: &Fixture, m: &Mailbox, seed: u8) -> MailboxIdentity {
    let id = &m.identity;
    MailboxIdentity {
        aor: id.aor.clone(),
        key: crate::identity::KeyPair::from_pkcs8(id.key.pkcs8_der(), &fx.rng).unwrap(),
        chain: id.chain.clone(),
        not_after: id.not_after,
        encryption: EncryptionKeyPair::generate([seed; 32]),
        rng: fx.shared_rng(),
    }
}

fn key_record(fx: &Fixture, m: &Mailbox) -> Record {
    let payload = EncryptionKey::x25519(m.encryption_public()).to_payload();
    let aor = m.aor().clone();
    let unsigned = Unsigned {
        kind: RecordKind::EncryptionKey,
        key: aor.to_string(),
        owner: aor,
        seq: 1,
        expires_at: NOW + DAY,
        payload,
    };
    m.sign(unsigned)
        .inspect(|r| {
            check_store(r, None, OwnerUsage::default(), &StorePolicy::default(), NOW, &mut fx.anchor()).unwrap();
        })
        .unwrap()
}

fn device(n: u16) -> Device {
    let remote = format!("127.0.0.1:{}", 6000 + n).parse().unwrap();
    Device {
        id: format!("<urn:uuid:{n}>"),
        uri: Uri::parse(&format!("sip:bob@127.0.0.1:{}", 6000 + n)).unwrap(),
        flow: Endpoint { listener: Listener::Proxy, transport: Transport::Udp, remote, conn: None },
    }
}

fn outputs(m: &mut Mailbox) -> Vec<Output> {
    std::iter::from_fn(|| m.poll_output()).collect()
}

fn phone_message(body: &str) -> Message {
    let text = format!(
        "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK1\r\n\
         From: \"Alice A.\" <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: m1\r\n\
         CSeq: 1 MESSAGE\r\nDate: Mon, 07 Dec 2026 10:00:00 GMT\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    crate::sip::parse(bytes::Bytes::from(text)).unwrap()
}

/// Alice's mailbox sends `body` to Bob; returns the stored record.
fn send(fx: &Fixture, alice: &mut Mailbox, bob: &Mailbox, body: &str) -> Record {
    let sid = ServerTxId(7);
    alice.send(sid, bob.aor().clone(), &phone_message(body), NOW);
    let Some(Output::FetchKey { ticket, aor }) = alice.poll_output() else { panic!("a key fetch first") };
    assert_eq!(aor, "sip:bob@example.com");
    alice.key_fetched(ticket, NOW, Some(key_record(fx, bob)), false);
    let Some(Output::Put { ticket, record }) = alice.poll_output() else { panic!("then a put") };
    alice.put_done(ticket, PutResult { stored: 2, failures: vec!["403 Mailbox Full".into()] });
    let out = outputs(alice);
    assert!(matches!(out.as_slice(), [Output::Answer { sid: s, status: 202, .. }] if *s == sid), "{out:?}");
    record
}

#[test]
fn a_message_is_sealed_stored_delivered_once_per_phone_then_deleted() {
    let mut fx = Fixture::new("example.com");
    let now = Instant::now();
    let mut alice =
        Mailbox::new(identity(&mut fx, "sip:alice@example.com", 1), MailboxConfig::default(), vec![], 1, now);
    let mut bob = Mailbox::new(identity(&mut fx, "sip:bob@example.com", 2), MailboxConfig::default(), vec![], 2, now);
    let record = send(&fx, &mut alice, &bob, "are you there?");
    assert_eq!(alice.counters().sent_stored, 1);
    // What a storing node sees: signed by Alice, under Bob's mailbox, opaque.
    assert_eq!(record.owner.as_str(), "sip:alice@example.com");
    assert_eq!(parse_message_key(&record.key).unwrap().0.as_str(), "sip:bob@example.com");
    assert!(!record.payload.windows(14).any(|w| w == b"are you there?"), "the body is sealed");
    check_store(&record, None, OwnerUsage::default(), &StorePolicy::default(), NOW, &mut fx.anchor()).unwrap();

    // Two phones of Bob's register: the mailbox is listed at once.
    bob.set_devices(now, vec![device(1), device(2)]);
    let Some(Output::List { ticket, .. }) = bob.poll_output() else { panic!("a listing") };
    bob.listed(now, NOW + 60, ticket, vec![record.clone()]);
    let out = outputs(&mut bob);
    let deliveries: Vec<(MessageId, Device, Box<Message>)> = out
        .into_iter()
        .map(|o| match o {
            Output::Deliver { id, device, request } => (id, device, request),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(deliveries.len(), 2, "one per phone");
    let request = &deliveries[0].2;
    let from = request.from().unwrap();
    assert_eq!(from.uri.to_string(), "sip:alice@example.com", "the sender as its certificate says");
    assert_eq!(from.display.as_deref(), Some("Alice A."));
    assert_eq!(
        request.headers.get(&crate::sip::HeaderName::Date).unwrap().value_str(),
        Some("Mon, 07 Dec 2026 10:00:00 GMT")
    );
    assert_eq!(&request.body[..], b"are you there?");
    assert_eq!(bob.waiting().len(), 1);

    for (n, (id, phone, _)) in deliveries.into_iter().enumerate() {
        bob.delivery_sent(ClientTxId(n as u64), id, phone.id);
    }
    bob.delivery_answered(NOW + 61, ClientTxId(0), 200);
    let out = outputs(&mut bob);
    assert!(
        matches!(out.as_slice(), [Output::Delivered(e)] if e.body == "are you there?"),
        "not deleted while a phone is still receiving: {out:?}"
    );
    bob.delivery_answered(NOW + 61, ClientTxId(1), 200);
    let out = outputs(&mut bob);
    let [Output::Delivered(_), Output::Put { ticket, record: tombstone }] = out.as_slice() else { panic!("{out:?}") };
    assert!(
        tombstone.is_tombstone() && tombstone.key == record.key && tombstone.owner.as_str() == "sip:bob@example.com"
    );
    assert_eq!(tombstone.expires_at, record.expires_at);
    bob.put_done(*ticket, PutResult { stored: 1, failures: vec![] });
    assert_eq!((bob.counters().delivered, bob.counters().deleted), (1, 1));
    assert!(bob.waiting().is_empty());

    // The tombstone reached one place; another place still lists the message: nobody gets it
    // twice, and the deletion is sent again.
    bob.handle_timeout(now + Duration::from_secs(301));
    let Some(Output::List { ticket, .. }) = bob.poll_output() else { panic!("the periodic listing") };
    bob.listed(now, NOW + 400, ticket, vec![record.clone()]);
    let out = outputs(&mut bob);
    assert!(matches!(out.as_slice(), [Output::Put { record, .. }] if record.is_tombstone()), "{out:?}");
    assert_eq!(bob.counters().duplicates_suppressed, 2);

    // After a restart with the kept log, the same.
    let log = bob.delivered();
    let mut again = Mailbox::new(same_user(&fx, &bob, 2), MailboxConfig::default(), log, 3, now);
    again.set_devices(now, vec![device(1)]);
    let Some(Output::List { ticket, .. }) = again.poll_output() else { panic!() };
    again.listed(now, NOW + 500, ticket, vec![record]);
    assert!(outputs(&mut again).iter().all(|o| matches!(o, Output::Put { .. })));
}

#[test]
fn a_phone_that_fails_keeps_the_message_and_a_stranger_cannot_open_it() {
    let mut fx = Fixture::new("example.com");
    let now = Instant::now();
    let mut alice =
        Mailbox::new(identity(&mut fx, "sip:alice@example.com", 1), MailboxConfig::default(), vec![], 1, now);
    let mut bob = Mailbox::new(identity(&mut fx, "sip:bob@example.com", 2), MailboxConfig::default(), vec![], 2, now);
    let record = send(&fx, &mut alice, &bob, "hello");

    bob.set_devices(now, vec![device(1)]);
    let Some(Output::List { ticket, .. }) = bob.poll_output() else { panic!() };
    bob.listed(now, NOW, ticket, vec![record.clone()]);
    let Some(Output::Deliver { id, device: phone, .. }) = bob.poll_output() else { panic!() };
    bob.delivery_sent(ClientTxId(1), id, phone.id);
    bob.delivery_failed(NOW, ClientTxId(1));
    assert!(outputs(&mut bob).is_empty(), "no retry storm, no deletion");
    assert_eq!(bob.waiting().len(), 1);

    // Bob's key on a new machine (another encryption key): the message does not open.
    let mut other = Mailbox::new(same_user(&fx, &bob, 9), MailboxConfig::default(), vec![], 4, now);
    other.set_devices(now, vec![device(1)]);
    let Some(Output::List { ticket, .. }) = other.poll_output() else { panic!() };
    other.listed(now, NOW, ticket, vec![record]);
    assert!(outputs(&mut other).is_empty());
    assert_eq!(other.counters().unreadable, 1);
}

#[test]
fn refusals_reach_the_phone_with_their_meaning() {
    let mut fx = Fixture::new("example.com");
    let now = Instant::now();
    let mut alice =
        Mailbox::new(identity(&mut fx, "sip:alice@example.com", 1), MailboxConfig::default(), vec![], 1, now);
    let bob = Mailbox::new(identity(&mut fx, "sip:bob@example.com", 2), MailboxConfig::default(), vec![], 2, now);
    let cases: [(Option<Vec<&str>>, bool, u16); 5] = [
        (None, true, 404),
        (None, false, 480),
        (Some(vec!["404 Recipient Not Enrolled"]), false, 404),
        (Some(vec!["403 Mailbox Full", "no answer (timeout)"]), false, 480),
        (Some(vec!["no answer (timeout)"]), false, 503),
    ];
    for (failures, nobody_has_it, status) in cases {
        alice.send(ServerTxId(1), bob.aor().clone(), &phone_message("x"), NOW);
        let Some(Output::FetchKey { ticket, .. }) = alice.poll_output() else { panic!() };
        let key = failures.is_some().then(|| key_record(&fx, &bob));
        alice.key_fetched(ticket, NOW, key, nobody_has_it);
        if let Some(failures) = failures {
            let Some(Output::Put { ticket, .. }) = alice.poll_output() else { panic!() };
            let failures = failures.into_iter().map(String::from).collect();
            alice.put_done(ticket, PutResult { stored: 0, failures });
        }
        let out = outputs(&mut alice);
        assert!(matches!(out.as_slice(), [Output::Answer { status: s, .. }] if *s == status), "{status}: {out:?}");
    }
    let big = "x".repeat(crate::store::mailbox::MAX_BODY_BYTES + 1);
    alice.send(ServerTxId(2), bob.aor().clone(), &phone_message(&big), NOW);
    assert!(matches!(alice.poll_output(), Some(Output::Answer { status: 413, .. })));
}
