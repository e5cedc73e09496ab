//! The peer on a virtual clock: what it answers, where, and how often.
#![allow(clippy::disallowed_methods)] // one real reading as the virtual clock's epoch

use std::time::{Duration, Instant};

use super::*;

const PHONE: &str = "127.0.0.9:40000";

fn peer() -> (Peer, Instant) {
    let now = Instant::now();
    (Peer::new(PeerConfig::new("127.0.0.1:5070".parse().unwrap(), "127.0.0.1:5060".parse().unwrap()), now), now)
}

fn from(transport: Transport) -> Endpoint {
    Endpoint { listener: Listener::Proxy, transport, remote: PHONE.parse().unwrap(), conn: None }
}

fn request(method: &str, uri: &str, branch: &str, extra: &str) -> Bytes {
    Bytes::from(format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5062;branch={branch};rport\r\n\
         From: <sip:alice@p2p.test>;tag=a1\r\nTo: <{uri}>\r\nCall-ID: c1@10.0.0.9\r\n\
         CSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
    ))
}

fn drain(p: &mut Peer) -> Vec<(Endpoint, Message)> {
    std::iter::from_fn(|| p.poll_transmit()).map(|t| (t.to, parse(t.data).unwrap())).collect()
}

#[test]
fn options_to_the_node_gets_200_with_capabilities() {
    let (mut p, now) = peer();
    p.handle_input(now, from(Transport::Udp), request("OPTIONS", "sip:127.0.0.1:5060", "z9hG4bKo1", ""));
    let out = drain(&mut p);
    assert_eq!(out.len(), 1);
    let (to, resp) = &out[0];
    assert_eq!(resp.status(), Some(200));
    assert!(resp.headers.get(&HeaderName::Allow).unwrap().value_str().unwrap().contains("OPTIONS"));
    assert!(resp.headers.get(&HeaderName::Supported).is_some());
    // RFC 3581: rport asked for, so the answer goes to the source port and says what we saw.
    assert_eq!(to.remote, PHONE.parse().unwrap());
    let via = resp.top_via().unwrap();
    assert_eq!(via.received(), Some("127.0.0.9"));
    assert_eq!(via.rport(), Some(Some(40000)));
}

#[test]
fn retransmitted_request_is_absorbed_and_answer_resent() {
    let (mut p, now) = peer();
    let req = request("OPTIONS", "sip:127.0.0.1:5060", "z9hG4bKo2", "");
    p.handle_input(now, from(Transport::Udp), req.clone());
    let first = drain(&mut p);
    p.handle_input(now + Duration::from_millis(500), from(Transport::Udp), req);
    let again = drain(&mut p);
    assert_eq!(first.len(), 1);
    assert_eq!(again.len(), 1);
    assert_eq!(first[0].1, again[0].1, "the same response, byte for byte");
    assert_eq!(p.counters().retransmissions_absorbed, 1);
    assert_eq!(p.counters().server_transactions, 1);
}

#[test]
fn invite_to_unknown_user_retransmits_404_until_ack() {
    let (mut p, mut now) = peer();
    p.handle_input(now, from(Transport::Udp), request("INVITE", "sip:bob@p2p.test", "z9hG4bKi1", ""));
    let out = drain(&mut p);
    let codes: Vec<_> = out.iter().map(|(_, m)| m.status().unwrap()).collect();
    assert_eq!(codes, [100, 404]);
    // Timer G: the 404 goes again after T1, then 2·T1 …
    now += Duration::from_millis(500);
    p.handle_timeout(now);
    assert_eq!(drain(&mut p).len(), 1);
    let to_tag = out[1].1.to().unwrap().tag().unwrap().to_owned();
    let ack = format!(
        "ACK sip:bob@p2p.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5062;branch=z9hG4bKi1;rport\r\n\
         From: <sip:alice@p2p.test>;tag=a1\r\nTo: <sip:bob@p2p.test>;tag={to_tag}\r\nCall-ID: c1@10.0.0.9\r\n\
         CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    p.handle_input(now, from(Transport::Udp), Bytes::from(ack));
    assert!(drain(&mut p).is_empty(), "an ACK is never answered");
    // …and no more after the ACK.
    while let Some(t) = p.poll_timeout() {
        now = t;
        p.handle_timeout(now);
        assert!(drain(&mut p).is_empty());
    }
    assert_eq!(p.transaction_counts(), (0, 0));
}

#[test]
fn over_tcp_nothing_is_retransmitted() {
    let (mut p, mut now) = peer();
    let tcp = Endpoint { conn: Some(ConnectionId(3)), ..from(Transport::Tcp) };
    p.handle_input(now, tcp, request("MESSAGE", "sip:bob@p2p.test", "z9hG4bKm1", ""));
    let out = drain(&mut p);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, tcp, "back on the same connection");
    while let Some(t) = p.poll_timeout() {
        now = t;
        p.handle_timeout(now);
        assert!(drain(&mut p).is_empty());
    }
}

#[test]
fn cancel_without_invite_gets_481_and_unknown_method_501() {
    let (mut p, now) = peer();
    p.handle_input(now, from(Transport::Udp), request("CANCEL", "sip:bob@p2p.test", "z9hG4bKc1", ""));
    assert_eq!(drain(&mut p)[0].1.status(), Some(481));
    p.handle_input(now, from(Transport::Udp), request("FROB", "sip:127.0.0.1:5060", "z9hG4bKf1", ""));
    let out = drain(&mut p);
    assert_eq!(out[0].1.status(), Some(501));
    assert!(out[0].1.headers.get(&HeaderName::Allow).is_some());
}

#[test]
fn register_is_challenged_then_refused() {
    let (mut p, now) = peer();
    p.handle_input(
        now,
        from(Transport::Udp),
        request("REGISTER", "sip:p2p.test", "z9hG4bKr1", "Contact: <sip:alice@10.0.0.9:5062>\r\n"),
    );
    let out = drain(&mut p);
    let challenge = out[0].1.auth(&HeaderName::WwwAuthenticate).unwrap();
    assert_eq!(out[0].1.status(), Some(401));
    assert_eq!(challenge[0].get("realm"), Some("p2p.test"));
    let auth = "Authorization: Digest username=\"alice\", realm=\"p2p.test\", nonce=\"x\", uri=\"sip:p2p.test\", response=\"00\"\r\n";
    p.handle_input(now, from(Transport::Udp), request("REGISTER", "sip:p2p.test", "z9hG4bKr2", auth));
    assert_eq!(drain(&mut p)[0].1.status(), Some(403));
    // On the overlay listener, phones are told where to go.
    let overlay = Endpoint { listener: Listener::Overlay, ..from(Transport::Udp) };
    p.handle_input(now, overlay, request("REGISTER", "sip:p2p.test", "z9hG4bKr3", ""));
    assert_eq!(drain(&mut p)[0].1.status(), Some(403));
}

#[test]
fn garbage_is_counted_and_dropped_and_oversize_refused() {
    let (mut p, now) = peer();
    p.handle_input(now, from(Transport::Udp), Bytes::from_static(b"\x00\x01garbage\r\n\r\n"));
    p.handle_input(now, from(Transport::Udp), Bytes::from(vec![b'A'; 20_000]));
    p.handle_input(now, from(Transport::Udp), Bytes::from_static(b"\r\n\r\n"));
    assert!(drain(&mut p).is_empty());
    let c = p.counters();
    assert_eq!((c.parse_errors, c.oversized_datagrams, c.keepalives), (1, 1, 1));
}

#[test]
fn loop_through_ourselves_is_482() {
    let (mut p, now) = peer();
    let extra = "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKus\r\n";
    let mut req = String::from_utf8(request("MESSAGE", "sip:bob@p2p.test", "z9hG4bKl1", "").to_vec()).unwrap();
    req = req.replacen("From:", &format!("{extra}From:"), 1);
    p.handle_input(now, from(Transport::Udp), Bytes::from(req));
    assert_eq!(drain(&mut p)[0].1.status(), Some(482));
}
