//! Storage requests and answers through the wire and back.

use super::*;
use crate::identity::tests::{Fixture, DAY, T0};
use crate::identity::Aor;
use crate::overlay::IdHash;
use crate::sip::parse;
use crate::store::{Registration, Unsigned};

fn contact(port: u16) -> Contact {
    let ip = "127.0.0.7".parse().unwrap();
    Contact::new(NodeId::from_addr(ip, port, IdHash::Sha1), SocketAddr::new(ip, port))
}

fn overlay() -> OverlayInfo {
    OverlayInfo { name: "test.p2p".into(), hash: IdHash::Sha1, client: false }
}

fn record() -> Record {
    let mut fx = Fixture::new("example.com");
    let (key, cert) = fx.enroll("sip:alice@example.com");
    let owner = Aor::parse("sip:alice@example.com").unwrap();
    Unsigned {
        kind: RecordKind::Registration,
        key: owner.to_string(),
        owner,
        seq: 7,
        expires_at: T0 + DAY,
        payload: Registration::default().to_payload(),
    }
    .sign(&key, vec![cert], &fx.rng)
    .unwrap()
}

fn over_the_wire(request: &StorageRequest) -> Result<(Contact, StorageRequest), StorageDecodeError> {
    let me = contact(5070);
    let ids = RequestIds { call_id: "c", from_tag: "t", cseq: 1 };
    let mut msg = encode_request(request, contact(5071).addr, &me, &overlay(), ids);
    msg.headers.push_front_of(Header::new(HeaderName::Via, "SIP/2.0/UDP 127.0.0.7:5070;branch=z9hG4bKx"));
    let msg = parse(msg.encode()).unwrap();
    assert!(is_storage_request(&msg));
    assert!(overlay_wire::is_overlay_request(&msg), "a storage request is also an overlay request");
    decode_request(&msg, me.addr, false, &overlay())
}

#[test]
fn store_and_fetch_round_trip() {
    let key = contact(9).id;
    let store = StorageRequest::Store { replica: 2, replica_key: key, record: record(), backup: 0 };
    assert_eq!(over_the_wire(&store).unwrap(), (contact(5070), store));
    let backup = StorageRequest::Store { replica: 2, replica_key: key, record: record(), backup: 2 };
    assert_eq!(over_the_wire(&backup).unwrap(), (contact(5070), backup));
    let fetch = StorageRequest::Fetch {
        replica: 0,
        replica_key: key,
        kind: RecordKind::Registration,
        key: "sip:bob@x.org".into(),
    };
    assert_eq!(over_the_wire(&fetch).unwrap().1, fetch);
}

#[test]
fn every_answer_round_trips() {
    let ids = RequestIds { call_id: "c", from_tag: "t", cseq: 1 };
    let fetch = StorageRequest::Fetch {
        replica: 0,
        replica_key: contact(9).id,
        kind: RecordKind::Registration,
        key: "sip:a@b.c".into(),
    };
    let mut req = encode_request(&fetch, contact(5071).addr, &contact(5070), &overlay(), ids);
    req.headers.push_front_of(Header::new(HeaderName::Via, "SIP/2.0/UDP 127.0.0.7:5070;branch=z9hG4bKx"));
    for answer in [
        StorageAnswer::Stored,
        StorageAnswer::Found(record()),
        StorageAnswer::NotFound,
        StorageAnswer::NotResponsible { node: contact(5072) },
        StorageAnswer::Refused { status: 403, reason: "Stale Sequence Number".into() },
        StorageAnswer::Refused { status: 413, reason: "Record Too Large".into() },
    ] {
        let resp = parse(encode_response(&req, &answer, "tt").encode()).unwrap();
        assert_eq!(decode_response(&resp), answer);
    }
}

#[test]
fn a_record_that_does_not_match_its_resource_header_is_refused() {
    let me = contact(5070);
    let store = StorageRequest::Store { replica: 0, replica_key: contact(9).id, record: record(), backup: 0 };
    let ids = RequestIds { call_id: "c", from_tag: "t", cseq: 1 };
    let mut msg = encode_request(&store, contact(5071).addr, &me, &overlay(), ids);
    let other = "<sip:mallory@example.com>;kind=registration;replica=0";
    msg.headers.set(Header::new(resource_header_name(), other));
    let msg = parse(msg.encode()).unwrap();
    assert_eq!(decode_request(&msg, me.addr, false, &overlay()), Err(StorageDecodeError::Mismatch));

    let mut msg = msg;
    msg.headers.set(Header::new(HeaderName::ContentType, "text/plain"));
    let msg = parse(msg.encode()).unwrap();
    let err = decode_request(&msg, me.addr, false, &overlay()).unwrap_err();
    assert_eq!(err.status().0, 415);

    // A forged DHT-PeerID is refused as for every overlay request.
    let other: SocketAddr = "127.0.0.8:5070".parse().unwrap();
    let fetch = StorageRequest::Fetch {
        replica: 0,
        replica_key: contact(9).id,
        kind: RecordKind::Registration,
        key: "sip:a@b.c".into(),
    };
    let msg = encode_request(
        &fetch,
        contact(5071).addr,
        &me,
        &overlay(),
        RequestIds { call_id: "c", from_tag: "t", cseq: 1 },
    );
    assert_eq!(decode_request(&msg, other, false, &overlay()).unwrap_err().status().0, 403);
}

#[test]
fn garbage_resource_headers_are_errors_not_panics() {
    let base = "REGISTER sip:0000000000000000000000000000000000000009@127.0.0.7:5071 SIP/2.0\r\n\
                Via: SIP/2.0/UDP 127.0.0.7:5070;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\n\
                Call-ID: x\r\nCSeq: 1 REGISTER\r\nRequire: dht\r\n";
    let me = contact(5070);
    let peer_id = format!("DHT-PeerID: <sip:{}@127.0.0.7:5070>;version={}\r\n", me.id, overlay_wire::PROTOCOL_VERSION);
    for extra in [
        "DHT-Resource: garbage\r\n",
        "DHT-Resource: <sip:a@b.c>;kind=nonsense;replica=1\r\n",
        "DHT-Resource: <sip:a@b.c>;kind=registration;replica=300\r\n",
        "DHT-Resource: <sip:a@b.c>;kind=registration\r\n",
    ] {
        let msg = parse(bytes::Bytes::from(format!("{base}{peer_id}{extra}\r\n"))).unwrap();
        assert!(decode_request(&msg, me.addr, false, &overlay()).is_err(), "{extra}");
    }
    let bad_uri = format!(
        "{}{peer_id}DHT-Resource: <sip:a@b.c>;kind=registration;replica=1\r\n\r\n",
        base.replace("0000000000000000000000000000000000000009@", "zz@")
    );
    let msg = parse(bytes::Bytes::from(bad_uri)).unwrap();
    assert_eq!(decode_request(&msg, me.addr, false, &overlay()), Err(StorageDecodeError::RequestUri));
}
