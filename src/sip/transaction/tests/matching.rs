//! Matching requests to server transactions (RFC 3261 §17.2.3, §9.2), including the RFC 2543
//! fallback for branches without the magic cookie.

use super::*;
use crate::sip::transaction::ServerState;
use crate::sip::{Header, HeaderName, StartLine, Uri};

fn rfc2543(method: &str) -> Message {
    // "7a3b" has no z9hG4bK cookie: RFC 2543 rules apply.
    request(method, "7a3b")
}

#[test]
fn rfc2543_retransmission_absorbed() {
    let t0 = epoch();
    let mut l = layer();
    let invite = rfc2543("INVITE");
    assert!(is_request_id(&l.handle_message(t0, invite.clone(), "client", false)).is_some());
    assert_eq!(sent_codes(&mut l), [100]);
    assert_eq!(l.handle_message(t0 + ms(500), invite, "client", false), Received::Absorbed);
    assert_eq!(sent_codes(&mut l), [100]);
    assert_eq!(l.server_count(), 1);

    let options = rfc2543("OPTIONS");
    assert!(is_request_id(&l.handle_message(t0, options.clone(), "client", false)).is_some());
    assert_eq!(l.handle_message(t0 + ms(500), options, "client", false), Received::Absorbed);
    assert_eq!(l.server_count(), 2);
}

#[test]
fn rfc2543_request_without_any_branch_is_matched() {
    let t0 = epoch();
    let mut l = layer();
    let mut req = request("OPTIONS", "unused");
    req.headers.set(Header::new(HeaderName::Via, "SIP/2.0/UDP old.example.com:5060"));
    let id = is_request_id(&l.handle_message(t0, req.clone(), "client", false)).unwrap();
    l.respond(t0, id, response(&req, 200)).unwrap();
    sent(&mut l);
    assert_eq!(l.handle_message(t0 + ms(500), req, "client", false), Received::Absorbed);
    assert_eq!(sent_codes(&mut l), [200]);
}

#[test]
fn rfc2543_fields_must_all_match() {
    let t0 = epoch();
    let mut l = layer();
    let invite = rfc2543("INVITE");
    l.handle_message(t0, invite.clone(), "client", false);
    let variants: [(HeaderName, &str); 5] = [
        (HeaderName::To, "Bob <sip:bob@example.com>;tag=x"),
        (HeaderName::CallId, "other-call"),
        (HeaderName::CSeq, "2 INVITE"),
        (HeaderName::From, "Alice <sip:alice@example.com>;tag=zz"),
        (HeaderName::Via, "SIP/2.0/UDP elsewhere.example.com;branch=7a3b"),
    ];
    for (name, value) in variants {
        let mut m = invite.clone();
        m.headers.set(Header::new(name.clone(), value));
        let r = l.handle_message(t0, m, "client", false);
        assert!(is_request_id(&r).is_some(), "{name:?} changed but the request matched");
    }
    let mut m = invite.clone();
    if let StartLine::Request(line) = &mut m.start {
        line.uri = Uri::parse("sip:carol@example.com").unwrap();
    }
    assert!(is_request_id(&l.handle_message(t0, m, "client", false)).is_some(), "Request-URI changed");
    assert_eq!(l.handle_message(t0, invite, "client", false), Received::Absorbed);
}

#[test]
fn rfc2543_ack_matches_by_the_response_to_tag() {
    let t0 = epoch();
    let mut l = layer();
    let invite = rfc2543("INVITE");
    let id = is_request_id(&l.handle_message(t0, invite.clone(), "client", false)).unwrap();
    l.respond(t0, id, invite.make_response(486, "Busy Here", Some("srv7"))).unwrap();
    // An ACK with some other tag acknowledges something else.
    let wrong = ack_for(&invite, "nope");
    assert!(matches!(l.handle_message(t0 + ms(10), wrong, "client", false), Received::Ack { .. }));
    assert_eq!(l.server_state(id), Some(ServerState::Completed));
    let ack = ack_for(&invite, "srv7");
    assert_eq!(l.handle_message(t0 + ms(20), ack, "client", false), Received::Absorbed);
    assert_eq!(l.server_state(id), Some(ServerState::Confirmed));
}

#[test]
fn rfc2543_reinvite_ack_matches_with_its_dialog_tag() {
    let t0 = epoch();
    let mut l = layer();
    let mut reinvite = rfc2543("INVITE");
    reinvite.headers.set(Header::new(HeaderName::To, "Bob <sip:bob@example.com>;tag=dlg"));
    let id = is_request_id(&l.handle_message(t0, reinvite.clone(), "client", false)).unwrap();
    l.respond(t0, id, reinvite.make_response(488, "Not Acceptable Here", None)).unwrap();
    assert_eq!(l.handle_message(t0, ack_for(&reinvite, "dlg"), "client", false), Received::Absorbed);
    assert_eq!(l.server_state(id), Some(ServerState::Confirmed));
}

#[test]
fn rfc2543_cancel_finds_its_invite() {
    let t0 = epoch();
    let mut l = layer();
    let invite = rfc2543("INVITE");
    let iid = is_request_id(&l.handle_message(t0, invite.clone(), "client", false)).unwrap();
    let r = l.handle_message(t0, with_method(&invite, "CANCEL"), "client", false);
    assert!(matches!(r, Received::Request { cancels: Some(c), .. } if c == iid));
}

#[test]
fn rfc3261_same_branch_other_sent_by_or_method_is_another_transaction() {
    let t0 = epoch();
    let mut l = layer();
    let invite = request("INVITE", "z9hG4bKm1");
    l.handle_message(t0, invite.clone(), "client", false);
    let mut other_host = invite.clone();
    other_host.headers.set(Header::new(HeaderName::Via, "SIP/2.0/UDP evil.example.com:5060;branch=z9hG4bKm1"));
    assert!(is_request_id(&l.handle_message(t0, other_host, "evil", false)).is_some());
    assert!(is_request_id(&l.handle_message(t0, with_method(&invite, "BYE"), "client", false)).is_some());
    assert_eq!(l.server_count(), 3);
}

#[test]
fn requests_and_responses_with_one_branch_stay_apart() {
    // A node that is both client and server for a branch (a looped request) keeps the two
    // sides apart: requests only match server transactions, responses client ones.
    let t0 = epoch();
    let mut l = layer();
    let req = request("OPTIONS", "z9hG4bKloop");
    let cid = l.send_request(t0, req.clone(), "self", false);
    let sid = is_request_id(&l.handle_message(t0, req.clone(), "self", false)).unwrap();
    l.respond(t0, sid, response(&req, 200)).unwrap();
    let r = l.handle_message(t0, response(&req, 200), "self", false);
    assert!(matches!(r, Received::Response { id, .. } if id == cid));
}
