use bytes::Bytes;

use super::*;
use crate::identity::tests::{Fixture, DAY, T0};
use crate::sip::parse;

fn message(from: &str, body: &str) -> Message {
    let text = format!(
        "MESSAGE sip:bob@p2p.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKm\r\n\
         From: <{from}>;tag=a\r\nTo: <sip:bob@p2p.test>\r\nCall-ID: id1\r\nCSeq: 3 MESSAGE\r\n\
         Max-Forwards: 70\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    parse(Bytes::from(text)).unwrap()
}

/// A signed message, as it travels (printed and parsed again).
fn signed(fx: &Fixture, key: &KeyPair, cert: &[u8], from: &str, body: &str, at: u64) -> Message {
    let mut msg = message(from, body);
    sign(&mut msg, key, cert, at, &fx.rng).unwrap();
    parse(msg.encode()).unwrap()
}

#[test]
fn a_signed_request_verifies_and_names_its_caller() {
    let mut fx = Fixture::new("p2p.test");
    let (key, cert) = fx.enroll("sip:alice@p2p.test");
    let mut ids = VerifiedCache::new(fx.anchor(), 16);
    let now = T0 + DAY;
    let msg = signed(&fx, &key, &cert, "sip:alice@p2p.test", "hello", now);
    assert!(msg.headers.get(&HeaderName::Date).is_some(), "Date is added");
    assert_eq!(verify(&msg, &mut ids, now + 30).unwrap().as_str(), "sip:alice@p2p.test");
}

#[test]
fn forged_tampered_stale_and_missing_identities_are_refused() {
    let mut fx = Fixture::new("p2p.test");
    let (key, cert) = fx.enroll("sip:alice@p2p.test");
    let mut ids = VerifiedCache::new(fx.anchor(), 16);
    let now = T0 + DAY;
    // Alice's node signs a From of bob's: the certificate names another AoR.
    let forged = signed(&fx, &key, &cert, "sip:bob@p2p.test", "hi", now);
    assert!(matches!(verify(&forged, &mut ids, now), Err(CallerError::WrongCaller { .. })));
    // A body changed on the way.
    let msg = signed(&fx, &key, &cert, "sip:alice@p2p.test", "hello", now);
    let text = String::from_utf8(msg.encode().to_vec()).unwrap().replace("hello", "HELLO");
    let tampered = parse(Bytes::from(text)).unwrap();
    assert_eq!(verify(&tampered, &mut ids, now), Err(CallerError::Signature));
    // From rewritten to another user: the certificate no longer matches.
    let text = String::from_utf8(msg.encode().to_vec()).unwrap().replace("From: <sip:alice", "From: <sip:mallory");
    assert!(matches!(verify(&parse(Bytes::from(text)).unwrap(), &mut ids, now), Err(CallerError::WrongCaller { .. })));
    // Replayed much later.
    assert_eq!(verify(&msg, &mut ids, now + MAX_AGE + 1), Err(CallerError::Stale));
    // No header at all.
    assert_eq!(verify(&message("sip:alice@p2p.test", "x"), &mut ids, now), Err(CallerError::Missing));
    // A certificate from another overlay's CA.
    let mut other = Fixture::new("p2p.test");
    let (k2, c2) = other.enroll("sip:alice@p2p.test");
    let foreign = signed(&other, &k2, &c2, "sip:alice@p2p.test", "x", now);
    assert!(matches!(verify(&foreign, &mut ids, now), Err(CallerError::Certificate(_))));
}

#[test]
fn dates_round_trip() {
    assert_eq!(http_date(T0), "Thu, 01 Jan 2026 00:00:00 GMT");
    assert_eq!(parse_http_date(&http_date(T0 + 12_345)), Some(T0 + 12_345));
    assert_eq!(parse_http_date("yesterday"), None);
}
