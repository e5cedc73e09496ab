//! The bodies of the fuzz targets for the decoders the overlay port feeds (docs/security.md),
//! kept in the library beside [`crate::sip::fuzzing`] so the committed corpus also replays
//! as an ordinary test (`tests/it/fuzz_corpus.rs`). Each takes arbitrary bytes and panics only
//! when an invariant breaks. Not part of the API.

use std::net::SocketAddr;

use bytes::Bytes;

use super::admission::RawRequest;
use super::overlay::wire::{self as overlay_wire, OverlayInfo};
use super::replication::wire as storage_wire;
use crate::overlay::{Contact, IdHash, NodeId, Request, RpcTarget};
use crate::sip::parse;
use crate::store::Record;

fn overlay() -> OverlayInfo {
    OverlayInfo { name: "p2p.test".into(), hash: IdHash::Sha1, client: false }
}

/// `admission`: the raw scan of a datagram the load shedder runs before the parser never
/// panics, and the 503 it builds from what it found is a response the parser reads, with the
/// Retry-After asked for.
pub fn fuzz_admission(data: &[u8]) {
    let Some(raw) = RawRequest::scan(data) else { return };
    let resp = raw.service_unavailable("f00d", 5, "p2psip");
    if let Ok(msg) = parse(Bytes::from(resp)) {
        assert_eq!(msg.status(), Some(503), "the refusal is a 503");
        assert!(msg.headers.get(&crate::sip::HeaderName::other("Retry-After")).is_some());
    }
}

/// `overlay_decode`: a message on the overlay port read as Chord's RPCs, over UDP and TCP, as
/// a request and as the answer to every kind of request; nothing panics, and every contact a
/// decoded request or answer carries has the ID its address derives.
pub fn fuzz_overlay_decode(data: &[u8]) {
    // STUN shares the overlay port (RFC 7983): its decoder sees the same bytes first.
    if crate::nat::stun::is_stun(data) {
        let _ = crate::nat::stun::parse(data);
    }
    let Ok(msg) = parse(Bytes::copy_from_slice(data)) else { return };
    let overlay = overlay();
    let observed: SocketAddr = "127.0.0.7:5070".parse().expect("an address");
    let me = NodeId::from_addr(observed.ip(), 5071, IdHash::Sha1);
    let verified = |c: &Contact| overlay_wire::link_verifies(c, IdHash::Sha1);
    if msg.is_request() {
        for reliable in [false, true] {
            if let Ok((sender, request, _)) = overlay_wire::decode_request(&msg, observed, reliable, &me, &overlay) {
                assert!(verified(&sender), "a sender whose claim fails was let through");
                if let Request::Leave { predecessor, successors } = &request {
                    assert!(predecessor.iter().chain(successors).all(verified), "a forged hand-off");
                }
            }
        }
        return;
    }
    let asked = Contact::new(NodeId::from_addr(observed.ip(), observed.port(), IdHash::Sha1), observed);
    let sent = [
        Request::FindSuccessor { key: me },
        Request::GetNeighbours { digest: None, notify: true },
        Request::GetNeighbours { digest: Some(7), notify: false },
        Request::Ping,
        Request::Changed { digest: 7 },
        Request::Join { joiner: asked.clone() },
    ];
    for request in &sent {
        for target in [RpcTarget::Node(asked.clone()), RpcTarget::Address(observed)] {
            let (answer, _) = overlay_wire::decode_response(request, &target, &msg, IdHash::Sha1);
            let contacts: Vec<Contact> = match answer {
                Some(crate::overlay::Response::Successor { node, backups }) => {
                    std::iter::once(node).chain(backups).collect()
                }
                Some(crate::overlay::Response::Closer { nodes }) => nodes,
                Some(crate::overlay::Response::Neighbours { predecessor, successors }) => {
                    predecessor.into_iter().chain(successors).collect()
                }
                Some(crate::overlay::Response::Joined { predecessor, successors, fingers }) => {
                    predecessor.into_iter().chain(successors).chain(fingers).collect()
                }
                _ => Vec::new(),
            };
            assert!(contacts.iter().all(verified), "an answer named a forged contact");
        }
    }
    let _ = overlay_wire::is_busy(&msg);
}

/// `storage_decode`: a message read as a store or fetch (`REGISTER` + `DHT-Resource`) and as
/// the answer to one; nothing panics.
pub fn fuzz_storage_decode(data: &[u8]) {
    let Ok(msg) = parse(Bytes::copy_from_slice(data)) else { return };
    let observed: SocketAddr = "127.0.0.7:5070".parse().expect("an address");
    if msg.is_request() {
        let _ = storage_wire::is_storage_request(&msg);
        for reliable in [false, true] {
            let _ = storage_wire::decode_request(&msg, observed, reliable, &overlay());
        }
    } else {
        let _ = storage_wire::decode_response(&msg);
    }
    // A mailbox listing's body, as any answer may carry one.
    if let Some(records) = storage_wire::decode_records(data) {
        let again = storage_wire::decode_records(&storage_wire::encode_records(&records));
        assert_eq!(again.as_ref(), Some(&records), "a listing survives its encoding");
    }
}

/// `record_decode`: a record's wire form; decoding never panics, and a record that decodes
/// encodes to bytes that decode to the same record.
pub fn fuzz_record(data: &[u8]) {
    let Ok(record) = Record::decode(data) else { return };
    let Ok(bytes) = record.encode() else { return };
    assert_eq!(Record::decode(&bytes).ok().as_ref(), Some(&record), "a record does not survive its own encoding");
}
