//! The registrar and proxy through a whole [`Peer`], on a virtual clock: SIP bytes in, SIP
//! bytes out, as phones would see them.
#![allow(clippy::disallowed_methods)] // one real reading as the virtual clock's epoch

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::accounts::{Account, Accounts};
use super::digest::{ha1, Algorithm};
use crate::peer::tests::drain;
use crate::peer::{Endpoint, Input, Listener, Peer, PeerConfig, TransactionCounts, Transport};
use crate::sip::{parse, HeaderName, Message};

const PROXY: &str = "127.0.0.1:5060";

/// [`crate::peer::tests::peer`] with accounts for alice, bob and carol.
fn peer() -> (Peer, Instant) {
    let (mut p, now) = crate::peer::tests::peer();
    let mut accounts = Accounts::default();
    accounts.insert(Account::new("sip:alice@p2p.test", "alice-pw").unwrap());
    accounts.insert(Account::new("sip:bob@p2p.test", "bob-pw").unwrap());
    accounts.insert(Account::new("sip:carol@p2p.test", "carol-pw").unwrap());
    p.set_accounts(accounts);
    (p, now)
}

fn phone(port: u16) -> Endpoint {
    Endpoint {
        listener: Listener::Proxy,
        transport: Transport::Udp,
        remote: format!("127.0.0.9:{port}").parse().unwrap(),
        conn: None,
    }
}

/// [`send`], keeping the peer's events too.
fn send_collecting(
    p: &mut Peer,
    now: Instant,
    from: Endpoint,
    text: String,
) -> (Vec<(Endpoint, Message)>, Vec<crate::peer::PeerEvent>) {
    p.handle_input(now, Input::receive(from, Bytes::from(text)));
    let (mut sent, mut events) = (Vec::new(), Vec::new());
    p.drain(|t| sent.push((t.to, parse(t.data).unwrap())), |e| events.push(e));
    (sent, events)
}

fn send(p: &mut Peer, now: Instant, from: Endpoint, text: String) -> Vec<(Endpoint, Message)> {
    p.handle_input(now, Input::receive(from, Bytes::from(text)));
    drain(p)
}

fn register_text(user: &str, port: u16, cseq: u32, auth: &str) -> String {
    format!(
        "REGISTER sip:p2p.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:{port};branch=z9hG4bKreg{user}{cseq};rport\r\n\
         From: <sip:{user}@p2p.test>;tag=r{port}\r\nTo: <sip:{user}@p2p.test>\r\nCall-ID: reg-{user}-{port}\r\n\
         CSeq: {cseq} REGISTER\r\nContact: <sip:{user}@127.0.0.9:{port}>\r\nExpires: 600\r\nMax-Forwards: 70\r\n\
         {auth}Content-Length: 0\r\n\r\n"
    )
}

/// The Authorization line answering `challenge` (qop=auth) for `user` with `password`.
fn authorization(challenge: &Message, algorithm: Algorithm, user: &str, password: &str) -> String {
    let c = &challenge.auth(&HeaderName::WwwAuthenticate).unwrap()[0];
    let (realm, nonce) = (c.get("realm").unwrap(), c.get("nonce").unwrap());
    let h = ha1(algorithm, user, realm, password);
    let ha2 = algorithm.hash("REGISTER:sip:p2p.test");
    let response = algorithm.hash(&format!("{h}:{nonce}:00000001:cn0:auth:{ha2}"));
    format!(
        "Authorization: Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"sip:p2p.test\", \
         algorithm={}, qop=auth, nc=00000001, cnonce=\"cn0\", response=\"{response}\"\r\n",
        algorithm.name()
    )
}

/// Registers `user` from 127.0.0.9:`port`; returns the final status.
fn register(p: &mut Peer, now: Instant, user: &str, port: u16, password: &str, algorithm: Algorithm) -> u16 {
    let out = send(p, now, phone(port), register_text(user, port, 1, ""));
    assert_eq!(out[0].1.status(), Some(401));
    let auth = authorization(&out[0].1, algorithm, user, password);
    let out = send(p, now, phone(port), register_text(user, port, 2, &auth));
    out.last().unwrap().1.status().unwrap()
}

/// Alice's phone registers from 127.0.0.9:6000, where `request_text` sends from: the proxy
/// forwards a phone's requests only over a registered flow or with credentials (docs/security.md, M3).
fn caller_registered(p: &mut Peer, now: Instant) {
    assert_eq!(register(p, now, "alice", 6000, "alice-pw", Algorithm::Md5), 200);
}

/// `text`, a request from alice's phone, with `Proxy-Authorization` (RFC 3261 §22.3) for the
/// nonce in `challenge` (any 401 or 407 the node sent that phone's address), nc `nc`.
fn with_proxy_auth(text: &str, challenge: &Message, nc: u32) -> String {
    let name =
        if challenge.status() == Some(407) { HeaderName::ProxyAuthenticate } else { HeaderName::WwwAuthenticate };
    let c = &challenge.auth(&name).unwrap()[0];
    let (realm, nonce) = (c.get("realm").unwrap(), c.get("nonce").unwrap());
    let req = parse(Bytes::from(text.to_owned())).unwrap();
    let (method, uri) = (req.method().unwrap().as_str().to_owned(), req.request_uri().unwrap().to_string());
    let algorithm = Algorithm::Md5;
    let ha2 = algorithm.hash(&format!("{method}:{uri}"));
    let nc = format!("{nc:08x}");
    let response =
        algorithm.hash(&format!("{}:{nonce}:{nc}:cn1:auth:{ha2}", ha1(algorithm, "alice", realm, "alice-pw")));
    let line = format!(
        "Proxy-Authorization: Digest username=\"alice\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         algorithm=MD5, qop=auth, nc={nc}, cnonce=\"cn1\", response=\"{response}\"\r\n"
    );
    text.replacen("Max-Forwards", &format!("{line}Max-Forwards"), 1)
}

/// `text` from alice's phone at `from` with credentials on a nonce the node gives that source
/// (its challenge to a bare REGISTER, which binds nothing).
fn authed(p: &mut Peer, now: Instant, from: Endpoint, text: &str) -> String {
    let out = send(p, now, from, register_text("alice", from.remote.port(), 1, ""));
    with_proxy_auth(text, &out[0].1, 1)
}

fn request_text(method: &str, to_user: &str, branch: &str, from_port: u16) -> String {
    format!(
        "{method} sip:{to_user}@p2p.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:{from_port};branch={branch};rport\r\n\
         From: <sip:alice@p2p.test>;tag=al1\r\nTo: <sip:{to_user}@p2p.test>\r\nCall-ID: call-{branch}\r\n\
         CSeq: 1 {method}\r\nContact: <sip:alice@127.0.0.9:{from_port}>\r\nMax-Forwards: 70\r\n\
         Content-Type: application/sdp\r\nContent-Length: 10\r\n\r\nv=0\r\nx=y\r\n"
    )
}

/// A phone's answer to a request the proxy forwarded to it.
fn answer(req: &Message, code: u16, reason: &str, tag: &str) -> String {
    let mut resp = req.make_response(code, reason, Some(tag));
    resp.headers.push(crate::sip::Header::new(HeaderName::Contact, "<sip:bob@127.0.0.9:6001>"));
    String::from_utf8(resp.encode().to_vec()).unwrap()
}

#[test]
fn register_with_md5_and_sha256_and_refuse_wrong_passwords() {
    let (mut p, now) = peer();
    assert_eq!(register(&mut p, now, "alice", 6000, "alice-pw", Algorithm::Md5), 200);
    assert_eq!(register(&mut p, now, "bob", 6001, "bob-pw", Algorithm::Sha256), 200);
    assert_eq!(register(&mut p, now, "carol", 6002, "wrong", Algorithm::Md5), 403);
    // Alice's credentials cannot register Bob (RFC 3261 §10.3 step 4).
    let out = send(&mut p, now, phone(6003), register_text("bob", 6003, 1, ""));
    let auth = authorization(&out[0].1, Algorithm::Md5, "alice", "alice-pw");
    let out = send(&mut p, now, phone(6003), register_text("bob", 6003, 2, &auth));
    assert_eq!(out[0].1.status(), Some(403));
    assert_eq!(p.proxy_status().bindings, 2);
    assert_eq!(p.proxy_status().registers_refused, 2);
}

#[test]
fn register_holds_no_transaction_and_a_retransmission_gets_the_same_200() {
    let (mut p, now) = peer();
    let out = send(&mut p, now, phone(6000), register_text("alice", 6000, 1, ""));
    let auth = authorization(&out[0].1, Algorithm::Md5, "alice", "alice-pw");
    let req = register_text("alice", 6000, 2, &auth);
    let first = send(&mut p, now, phone(6000), req.clone());
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].1.status(), Some(200));
    assert_eq!(p.transaction_counts(), TransactionCounts::default(), "the REGISTER was answered without a transaction");
    // Its 200 was lost; the phone retransmits it (RFC 3261 §17.1.2.2, Timer E) 500 ms later.
    let again = send(&mut p, now + Duration::from_millis(500), phone(6000), req);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1.status(), Some(200), "{}", again[0].1.summary());
    assert_eq!(again[0].1.headers.count(&HeaderName::Contact), 1);
    assert_eq!(p.proxy_status().bindings, 1);
    assert_eq!(p.proxy_status().registers_accepted, 2);
}

#[test]
fn an_in_dialog_request_for_a_user_without_our_route_gets_481_and_reaches_no_phone() {
    let (mut p, now) = peer();
    register(&mut p, now, "bob", 6001, "bob-pw", Algorithm::Md5);
    let bye = request_text("BYE", "bob", "z9hG4bKstray", 6000)
        .replace("To: <sip:bob@p2p.test>", "To: <sip:bob@p2p.test>;tag=x");
    let out = send(&mut p, now, phone(6000), bye);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, phone(6000));
    assert_eq!(out[0].1.status(), Some(481));
    assert_eq!(out[0].1.to().unwrap().tag(), Some("x"));
    assert_eq!(p.transaction_counts(), TransactionCounts::default());
    // The same BYE with our Route (from a dialog we Record-Routed) goes to bob's phone.
    let routed = request_text("BYE", "bob", "z9hG4bKrouted", 6000)
        .replace("To: <sip:bob@p2p.test>", "To: <sip:bob@p2p.test>;tag=x")
        .replace("Max-Forwards", &format!("Route: <sip:{PROXY};lr>\r\nMax-Forwards"));
    let out = send(&mut p, now, phone(6000), routed);
    assert!(out.iter().any(|(to, m)| *to == phone(6001) && m.method().is_some()), "{out:?}");
    // An ACK shaped like that (for a non-2xx answer) is not answered.
    let ack = request_text("ACK", "bob", "z9hG4bKack", 6000)
        .replace("To: <sip:bob@p2p.test>", "To: <sip:bob@p2p.test>;tag=x");
    assert!(send(&mut p, now, phone(6000), ack).iter().all(|(_, m)| m.status().is_none()));
}

#[test]
fn stale_nonce_is_rechallenged_with_stale_true() {
    let (mut p, now) = peer();
    let out = send(&mut p, now, phone(6000), register_text("alice", 6000, 1, ""));
    assert_eq!(p.transaction_counts(), TransactionCounts::default(), "a challenge holds no transaction");
    let auth = authorization(&out[0].1, Algorithm::Md5, "alice", "alice-pw");
    let later = now + Duration::from_secs(301);
    let out = send(&mut p, later, phone(6000), register_text("alice", 6000, 2, &auth));
    let (_, resp) = out.last().unwrap();
    assert_eq!(resp.status(), Some(401));
    assert_eq!(resp.auth(&HeaderName::WwwAuthenticate).unwrap()[0].get("stale"), Some("true"));
    assert_eq!(p.proxy_status().bindings, 0);
}

#[test]
fn invite_forks_to_every_phone_and_the_answer_cancels_the_rest() {
    let (mut p, now) = peer();
    caller_registered(&mut p, now);
    register(&mut p, now, "bob", 6001, "bob-pw", Algorithm::Md5);
    register(&mut p, now, "bob", 6002, "bob-pw", Algorithm::Md5);
    let out = send(&mut p, now, phone(6000), request_text("INVITE", "bob", "z9hG4bKinv1", 6000));
    // 100 Trying to Alice, one INVITE to each of Bob's phones, through their flows.
    assert_eq!(out[0].1.status(), Some(100));
    let invites: Vec<_> = out.iter().filter(|(_, m)| m.method().is_some()).collect();
    let mut ports: Vec<u16> = invites.iter().map(|(to, _)| to.remote.port()).collect();
    ports.sort();
    assert_eq!(ports, [6001, 6002]);
    for (_, inv) in &invites {
        assert_eq!(inv.vias().unwrap().len(), 2, "our Via on top of Alice's");
        assert_eq!(inv.max_forwards().unwrap(), Some(69));
        let rr = inv.record_routes().unwrap();
        assert_eq!(rr[0].uri.to_string(), format!("sip:{PROXY};lr"));
        assert_eq!(&inv.body[..], b"v=0\r\nx=y\r\n", "SDP passes unchanged");
    }
    let (to1, inv1) = invites[0].clone();
    let (to2, inv2) = invites[1].clone();
    // Both ring; the rings reach Alice.
    let out = send(&mut p, now, to1, answer(&inv1, 180, "Ringing", "b1"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0.remote.port(), 6000);
    assert_eq!(out[0].1.vias().unwrap().len(), 1, "our Via removed");
    send(&mut p, now, to2, answer(&inv2, 180, "Ringing", "b2"));
    // The first phone answers: the 200 goes to Alice and the other phone gets a CANCEL.
    let out = send(&mut p, now, to1, answer(&inv1, 200, "OK", "b1"));
    let ok = out.iter().find(|(_, m)| m.status() == Some(200)).expect("200 forwarded");
    assert_eq!(ok.0.remote.port(), 6000);
    let cancel = out.iter().find(|(_, m)| m.method() == Some(&crate::sip::Method::Cancel)).expect("CANCEL");
    assert_eq!(cancel.0.remote.port(), to2.remote.port());
    // The cancelled phone's 487 does not reach Alice.
    let out = send(&mut p, now, to2, answer(&inv2, 487, "Request Terminated", "b2"));
    assert!(out.iter().all(|(to, _)| to.remote.port() != 6000), "{out:?}");
}

#[test]
fn statuses_for_unknown_offline_foreign_and_overlay_side() {
    let (mut p, now) = peer();
    caller_registered(&mut p, now);
    let status = |p: &mut Peer, from: Endpoint, text: String| {
        send(p, now, from, text).into_iter().filter_map(|(_, m)| m.status()).find(|s| *s >= 200)
    };
    assert_eq!(status(&mut p, phone(6000), request_text("MESSAGE", "nobody", "z9hG4bKm1", 6000)), Some(404));
    // Carol has an account but no phone registered: temporarily unavailable.
    assert_eq!(status(&mut p, phone(6000), request_text("MESSAGE", "carol", "z9hG4bKm2", 6000)), Some(480));
    // Another domain is asked of DNS (`outbound`); one DNS knows nothing of is 404.
    let foreign = request_text("MESSAGE", "bob", "z9hG4bKm3", 6000).replace("bob@p2p.test SIP", "bob@example.com SIP");
    let (out, resolve) = send_collecting(&mut p, now, phone(6000), foreign);
    assert!(out.iter().all(|(_, m)| m.status().is_none_or(|s| s < 200)), "{out:?}");
    let [crate::peer::PeerEvent::Resolve(r)] = resolve.as_slice() else { panic!("{resolve:?}") };
    assert_eq!(r.uri.host.to_string(), "example.com");
    let result = Err(crate::outbound::ResolveError::NotFound("example.com".into()));
    p.handle_input(now, Input::Resolved { sid: r.sid, result });
    let out = drain(&mut p);
    assert_eq!(out[0].1.status(), Some(404));
    assert!(
        matches!(&out[0].1.start, crate::sip::StartLine::Response(s) if s.reason.contains("no SIP server found")),
        "{:?}",
        out[0].1.start
    );
    // From the overlay side, a request for a phone's address that is not registered here
    // is refused, never relayed.
    let overlay = Endpoint { listener: Listener::Overlay, ..phone(7000) };
    let to_addr = request_text("MESSAGE", "bob", "z9hG4bKm4", 7000)
        .replace("MESSAGE sip:bob@p2p.test", "MESSAGE sip:bob@127.0.0.9:6001");
    assert_eq!(status(&mut p, overlay, to_addr), Some(403));
}

#[test]
fn dead_phone_unregistered_by_ping_and_timed_out_branch_gives_480() {
    let (mut p, now) = peer();
    register(&mut p, now, "bob", 6001, "bob-pw", Algorithm::Md5);
    // A MESSAGE to a phone that never answers: Timer F, then 480.
    let message = authed(&mut p, now, phone(6000), &request_text("MESSAGE", "bob", "z9hG4bKm9", 6000));
    let out = send(&mut p, now, phone(6000), message);
    assert!(out.iter().any(|(to, m)| to.remote.port() == 6001 && m.method().is_some()));
    let mut t = now;
    let mut final_status = None;
    while t < now + Duration::from_secs(40) && final_status.is_none() {
        t = p.poll_timeout().unwrap();
        p.handle_input(t, Input::Timeout);
        final_status = drain(&mut p).into_iter().find(|(to, _)| to.remote.port() == 6000).and_then(|(_, m)| m.status());
    }
    assert_eq!(final_status, Some(480));
    // The OPTIONS pings went unanswered too: the phone is gone.
    while t < now + Duration::from_secs(120) && p.proxy_status().bindings > 0 {
        t = p.poll_timeout().unwrap();
        p.handle_input(t, Input::Timeout);
        drain(&mut p);
    }
    assert_eq!(p.proxy_status().bindings, 0);
    assert_eq!(p.proxy_status().pings_failed, 1);
}

#[test]
fn pinged_phone_that_answers_stays() {
    let (mut p, now) = peer();
    register(&mut p, now, "bob", 6001, "bob-pw", Algorithm::Md5);
    for _ in 0..200 {
        let t = p.poll_timeout().unwrap();
        if t > now + Duration::from_secs(100) {
            break;
        }
        p.handle_input(t, Input::Timeout);
        for (to, m) in drain(&mut p) {
            if m.method() == Some(&crate::sip::Method::Options) {
                let ok = m.make_response(200, "OK", Some("ph"));
                p.handle_input(t, Input::receive(to, ok.encode()));
            }
        }
    }
    assert_eq!(p.proxy_status().bindings, 1);
    assert_eq!(p.proxy_status().pings_failed, 0);
}

#[test]
fn overload_answers_503_with_retry_after() {
    let now = Instant::now();
    let mut config = PeerConfig::new("127.0.0.1:5070".parse().unwrap(), PROXY.parse().unwrap());
    config.max_server_transactions = 2;
    let mut p = Peer::new(config, now);
    let mut accounts = Accounts::default();
    accounts.insert(Account::new("sip:alice@p2p.test", "alice-pw").unwrap());
    accounts.insert(Account::new("sip:bob@p2p.test", "bob-pw").unwrap());
    p.set_accounts(accounts);
    caller_registered(&mut p, now);
    register(&mut p, now, "bob", 6001, "bob-pw", Algorithm::Md5);
    // Answered requests hold no slot: a hundred MESSAGEs to nobody get their 404 each.
    for i in 0..100 {
        let out = send(&mut p, now, phone(6000), request_text("MESSAGE", "nobody", &format!("z9hG4bKn{i}"), 6000));
        assert_eq!(out[0].1.status(), Some(404));
    }
    // Bob's phone does not answer: each MESSAGE to him waits, and holds a slot.
    let firsts: Vec<_> = (0..3)
        .map(|i| send(&mut p, now, phone(6000), request_text("MESSAGE", "bob", &format!("z9hG4bKo{i}"), 6000)))
        .collect();
    assert!(firsts[0].iter().all(|(to, m)| to.remote.port() == 6001 && m.is_request()), "{:?}", firsts[0]);
    let refused = &firsts[2][0].1;
    assert_eq!(refused.status(), Some(503));
    assert!(refused.headers.get(&HeaderName::other("Retry-After")).is_some());
    assert_eq!(p.counters().overload_rejected, 1);
}

#[test]
fn caller_cancel_gets_200_and_487_and_cancels_the_ringing_phone() {
    let (mut p, now) = peer();
    caller_registered(&mut p, now);
    register(&mut p, now, "bob", 6001, "bob-pw", Algorithm::Md5);
    let invite = request_text("INVITE", "bob", "z9hG4bKinv7", 6000);
    let out = send(&mut p, now, phone(6000), invite.clone());
    let (to_bob, inv) = out.iter().find(|(_, m)| m.method().is_some()).cloned().expect("INVITE to bob");
    send(&mut p, now, to_bob, answer(&inv, 180, "Ringing", "b7"));
    // RFC 3261 §9.1: the CANCEL copies the INVITE's Via, Call-ID, From, To and CSeq number.
    let cancel = invite
        .split("Content-Type")
        .next()
        .unwrap()
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
        + "Content-Length: 0\r\n\r\n";
    let out = send(&mut p, now, phone(6000), cancel);
    let to_alice: Vec<_> = out.iter().filter(|(to, _)| to.remote.port() == 6000).map(|(_, m)| m.clone()).collect();
    assert!(to_alice.iter().any(|m| m.status() == Some(200) && m.cseq().unwrap().method == crate::sip::Method::Cancel));
    assert!(to_alice.iter().any(|m| m.status() == Some(487) && m.cseq().unwrap().method == crate::sip::Method::Invite));
    assert!(
        out.iter().any(|(to, m)| *to == to_bob && m.method() == Some(&crate::sip::Method::Cancel)),
        "bob's phone gets a CANCEL: {out:?}"
    );
}

/// The proxy alone with its own transaction layer, for the overlay path: a request for an AoR
/// nobody here serves, as it arrives from `from`.
fn parked(
    from: Endpoint,
    to_user: &str,
) -> (super::Proxy, crate::sip::transaction::TransactionLayer<Endpoint>, crate::sip::transaction::ServerTxId, Instant) {
    parked_at("127.0.0.1", from, to_user)
}

/// [`parked`] on a node whose overlay address is `ip`:5070.
fn parked_at(
    ip: &str,
    from: Endpoint,
    to_user: &str,
) -> (super::Proxy, crate::sip::transaction::TransactionLayer<Endpoint>, crate::sip::transaction::ServerTxId, Instant) {
    use crate::sip::transaction::{Received, Timers, TransactionLayer};
    let now = Instant::now();
    let mut config = super::ProxyConfig::new("p2p.test", PROXY.parse().unwrap());
    config.other_addrs = vec![format!("{ip}:5070").parse().unwrap()];
    let mut accounts = Accounts::default();
    accounts.insert(Account::new("sip:alice@p2p.test", "alice-pw").unwrap());
    let mut proxy = super::Proxy::new(config, accounts, 7, now);
    let mut tl = TransactionLayer::new(Timers::default());
    let bare = parse(Bytes::from(register_text("alice", 6000, 1, ""))).unwrap();
    let challenge = proxy.register_stateless(now, from, &bare);
    let invite = with_proxy_auth(&request_text("INVITE", to_user, "z9hG4bKovl1", 6000), &challenge, 1);
    let msg = parse(Bytes::from(invite)).unwrap();
    let Received::Request { id, request, cancels } = tl.handle_message(now, msg, from, false) else {
        panic!("not a new request")
    };
    proxy.handle_request(now, &mut tl, id, from, from, request, cancels);
    (proxy, tl, id, now)
}

fn sent(tl: &mut crate::sip::transaction::TransactionLayer<Endpoint>) -> Vec<(Endpoint, Message)> {
    std::iter::from_fn(|| tl.poll_transmit()).map(|(to, data)| (to, parse(data).unwrap())).collect()
}

#[test]
fn a_remote_user_is_fetched_then_forwarded_to_the_node_in_the_record() {
    let (mut proxy, mut tl, id, now) = parked(phone(6000), "dave");
    // Parked: the peer is asked to fetch dave's record; nothing goes out but 100 Trying.
    assert_eq!(proxy.poll_lookup(), Some((id, "sip:dave@p2p.test".to_owned())));
    assert!(sent(&mut tl).iter().all(|(_, m)| m.status() == Some(100)));
    proxy.overlay_resolved(now, &mut tl, id, Some(vec!["sip:dave@127.0.0.7:5070".into()]));
    let out = sent(&mut tl);
    let (to, invite) = out.iter().find(|(_, m)| m.is_request()).expect("the INVITE goes on");
    assert_eq!(to.listener, Listener::Overlay);
    assert_eq!(to.remote, "127.0.0.7:5070".parse().unwrap());
    assert_eq!(invite.request_uri().unwrap().to_string(), "sip:dave@127.0.0.7:5070");
    // Our Via names the overlay listener; Max-Forwards went down by one.
    let via = invite.top_via().unwrap();
    assert_eq!((via.host.to_string(), via.port), ("127.0.0.1".to_owned(), Some(5070)));
    assert_eq!(invite.max_forwards().unwrap(), Some(69));
    // RFC 5658: two Record-Routes, the overlay leg's on top and marked as a node's.
    let rr: Vec<String> =
        invite.headers.get_all(&HeaderName::RecordRoute).filter_map(|h| h.value_str().map(String::from)).collect();
    let rr = rr.join(",");
    assert!(rr.contains("127.0.0.1:5070;lr;p2psip-node") && rr.contains("127.0.0.1:5060;lr"), "{rr}");
    assert!(rr.find("5070").unwrap() < rr.find("5060").unwrap(), "{rr}");
}

#[test]
fn no_record_is_404_and_a_record_without_contacts_is_480() {
    for (contacts, code) in [(None, 404), (Some(Vec::new()), 480)] {
        let (mut proxy, mut tl, id, now) = parked(phone(6000), "dave");
        assert!(proxy.poll_lookup().is_some());
        proxy.overlay_resolved(now, &mut tl, id, contacts);
        let finals: Vec<u16> = sent(&mut tl).iter().filter_map(|(_, m)| m.status()).filter(|c| *c >= 200).collect();
        assert_eq!(finals, vec![code]);
    }
}

#[test]
fn a_record_naming_loopback_link_local_or_ourselves_is_not_a_next_hop() {
    // docs/security.md, M8: a signed record is its owner's word, not a licence to reach the services
    // on our machine. A node on a public address refuses such contacts; one on loopback (a
    // test ring) reaches other loopback nodes, never itself.
    for (node_ip, contact, reached) in [
        ("192.0.2.1", "sip:dave@127.0.0.1:6379;transport=tcp", false),
        ("192.0.2.1", "sip:dave@169.254.0.1:5070", false),
        ("192.0.2.1", "sip:dave@192.0.2.1:5070", false),
        ("192.0.2.1", "sip:dave@198.51.100.4:5070", true),
        ("127.0.0.1", "sip:dave@127.0.0.7:5070", true),
        ("127.0.0.1", "sip:dave@127.0.0.1:5070", false),
    ] {
        let (mut proxy, mut tl, id, now) = parked_at(node_ip, phone(6000), "dave");
        assert!(proxy.poll_lookup().is_some());
        sent(&mut tl);
        proxy.overlay_resolved(now, &mut tl, id, Some(vec![contact.into()]));
        let out = sent(&mut tl);
        let forwarded = out.iter().any(|(_, m)| m.is_request());
        assert_eq!(forwarded, reached, "{node_ip} given {contact}: {out:?}");
        if !reached {
            let finals: Vec<u16> = out.iter().filter_map(|(_, m)| m.status()).collect();
            assert_eq!(finals, vec![480], "{contact}");
        }
    }
}

#[test]
fn a_request_from_the_overlay_for_a_user_not_served_here_is_refused_not_relayed() {
    let from = Endpoint { listener: Listener::Overlay, ..phone(6000) };
    let (mut proxy, mut tl, _, _) = parked(from, "dave");
    assert_eq!(proxy.poll_lookup(), None, "never looked up and relayed");
    let finals: Vec<u16> = sent(&mut tl).iter().filter_map(|(_, m)| m.status()).filter(|c| *c >= 200).collect();
    assert_eq!(finals, vec![404]);
}

#[test]
fn a_record_naming_a_node_that_does_not_answer_gives_480() {
    use crate::sip::transaction::Event;
    let (mut proxy, mut tl, id, now) = parked(phone(6000), "dave");
    assert!(proxy.poll_lookup().is_some());
    proxy.overlay_resolved(now, &mut tl, id, Some(vec!["sip:dave@127.0.0.7:5070".into()]));
    sent(&mut tl);
    // Nobody answers: Timer B (64·T1) ends the branch.
    let later = now + Duration::from_secs(40);
    tl.handle_timeout(later);
    while let Some(event) = tl.poll_event() {
        if let Event::ClientTimeout { id } = event {
            proxy.handle_client_timeout(later, &mut tl, id);
        }
    }
    let finals: Vec<u16> = sent(&mut tl).iter().filter_map(|(_, m)| m.status()).filter(|c| *c >= 200).collect();
    assert_eq!(finals, vec![480]);
}

#[test]
fn a_cancel_while_the_record_is_fetched_ends_the_invite_and_nothing_is_forwarded() {
    use crate::sip::transaction::Received;
    let (mut proxy, mut tl, id, now) = parked(phone(6000), "dave");
    assert!(proxy.poll_lookup().is_some());
    sent(&mut tl);
    let cancel = request_text("INVITE", "dave", "z9hG4bKovl1", 6000)
        .split("Content-Type")
        .next()
        .unwrap()
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
        + "Content-Length: 0\r\n\r\n";
    let msg = parse(Bytes::from(cancel)).unwrap();
    let Received::Request { id: cid, request, cancels } = tl.handle_message(now, msg, phone(6000), false) else {
        panic!("not a new request")
    };
    assert_eq!(cancels, Some(id), "the CANCEL matches the parked INVITE (§9.2)");
    proxy.handle_request(now, &mut tl, cid, phone(6000), phone(6000), request, cancels);
    let codes: Vec<u16> = sent(&mut tl).iter().filter_map(|(_, m)| m.status()).collect();
    assert!(codes.contains(&200) && codes.contains(&487), "{codes:?}");
    // The fetch ends afterwards: nothing goes to the node it names.
    proxy.overlay_resolved(now, &mut tl, id, Some(vec!["sip:dave@127.0.0.7:5070".into()]));
    assert!(sent(&mut tl).iter().all(|(_, m)| !m.is_request()));
}

/// A peer like [`peer`]'s with Timer C set to `timer_c`.
fn peer_with_timer_c(timer_c: Duration) -> (Peer, Instant) {
    let now = Instant::now();
    let mut config = PeerConfig::new("127.0.0.1:5070".parse().unwrap(), PROXY.parse().unwrap());
    config.proxy.timer_c = timer_c;
    let mut p = Peer::new(config, now);
    let mut accounts = Accounts::default();
    accounts.insert(Account::new("sip:alice@p2p.test", "alice-pw").unwrap());
    accounts.insert(Account::new("sip:bob@p2p.test", "bob-pw").unwrap());
    p.set_accounts(accounts);
    (p, now)
}

/// Runs the peer's timers up to `until` (virtual time), answering OPTIONS pings as a live
/// phone would; returns every other message sent, with the time it was sent.
fn run_until(p: &mut Peer, from: Instant, until: Instant) -> Vec<(Instant, Endpoint, Message)> {
    let mut out = Vec::new();
    let mut t = from;
    while let Some(next) = p.poll_timeout().filter(|n| *n <= until) {
        t = next.max(t);
        p.handle_input(t, Input::Timeout);
        for (to, m) in drain(p) {
            if m.method() == Some(&crate::sip::Method::Options) {
                p.handle_input(t, Input::receive(to, m.make_response(200, "OK", Some("ph")).encode()));
                drain(p);
            } else {
                out.push((t, to, m));
            }
        }
    }
    out
}

fn is_cancel(m: &Message) -> bool {
    m.method() == Some(&crate::sip::Method::Cancel)
}

#[test]
fn timer_c_cancels_a_ringing_branch_and_each_provisional_restarts_it() {
    let c = crate::proxy::DEFAULT_TIMER_C;
    assert!(c > Duration::from_secs(180), "RFC 3261 §16.6 step 11: more than 3 minutes");
    let (mut p, t0) = peer_with_timer_c(c);
    caller_registered(&mut p, t0);
    register(&mut p, t0, "bob", 6001, "bob-pw", Algorithm::Md5);
    let out = send(&mut p, t0, phone(6000), request_text("INVITE", "bob", "z9hG4bKtc1", 6000));
    let (to_bob, inv) = out.iter().find(|(_, m)| m.method().is_some()).cloned().expect("INVITE to bob");
    send(&mut p, t0, to_bob, answer(&inv, 180, "Ringing", "btc"));
    // 100 s later the phone rings again (a 183): Timer C starts over from there.
    let t1 = t0 + Duration::from_secs(100);
    assert!(run_until(&mut p, t0, t1).iter().all(|(_, _, m)| !is_cancel(m)));
    let out = send(&mut p, t1, to_bob, answer(&inv, 183, "Session Progress", "btc"));
    assert!(out.iter().any(|(to, m)| to.remote.port() == 6000 && m.status() == Some(183)));
    let early = run_until(&mut p, t1, t1 + c - Duration::from_secs(1));
    assert!(early.iter().all(|(_, _, m)| !is_cancel(m)), "no CANCEL before Timer C: {early:?}");
    assert_eq!(p.proxy_status().timer_c_fired, 0);
    let out = run_until(&mut p, t1 + c - Duration::from_secs(1), t1 + c + Duration::from_secs(1));
    let (at, to, cancel) = out.iter().find(|(_, _, m)| is_cancel(m)).cloned().expect("Timer C sends a CANCEL");
    assert_eq!((at, to), (t1 + c, to_bob), "on the ringing branch, when Timer C fires");
    assert_eq!(cancel.cseq().unwrap().seq, inv.cseq().unwrap().seq, "RFC 3261 §9.1: the INVITE's CSeq number");
    assert_eq!(p.proxy_status().timer_c_fired, 1);
    // The phone answers the CANCEL and ends its INVITE with 487, which reaches Alice.
    let t2 = t1 + c + Duration::from_secs(1);
    send(&mut p, t2, to_bob, answer(&cancel, 200, "OK", "btc"));
    let out = send(&mut p, t2, to_bob, answer(&inv, 487, "Request Terminated", "btc"));
    assert!(out.iter().any(|(to, m)| to.remote.port() == 6000 && m.status() == Some(487)), "{out:?}");
}

#[test]
fn timer_c_without_a_provisional_or_an_unanswered_cancel_counts_as_408() {
    // Timer C shorter than Timer B, so it is what ends a branch that never answered: 408 for
    // the branch (§16.8), and 480 to the caller as for any branch that timed out; no CANCEL.
    let (mut p, t0) = peer_with_timer_c(Duration::from_secs(10));
    caller_registered(&mut p, t0);
    register(&mut p, t0, "bob", 6001, "bob-pw", Algorithm::Md5);
    send(&mut p, t0, phone(6000), request_text("INVITE", "bob", "z9hG4bKtc2", 6000));
    let out = run_until(&mut p, t0, t0 + Duration::from_secs(20));
    assert!(out.iter().all(|(_, _, m)| !is_cancel(m)), "no CANCEL without a provisional response (§9.1)");
    let (at, _, _) = out.iter().find(|(_, to, m)| to.remote.port() == 6000 && m.status() == Some(480)).expect("480");
    assert_eq!(*at, t0 + Duration::from_secs(10));
    assert_eq!(p.proxy_status().timer_c_fired, 1);

    // A ringing phone that ignores the CANCEL Timer C sends: 64·T1 later the branch is a 408.
    let (mut p, t0) = peer_with_timer_c(Duration::from_secs(10));
    caller_registered(&mut p, t0);
    register(&mut p, t0, "bob", 6001, "bob-pw", Algorithm::Md5);
    let out = send(&mut p, t0, phone(6000), request_text("INVITE", "bob", "z9hG4bKtc3", 6000));
    let (to_bob, inv) = out.iter().find(|(_, m)| m.method().is_some()).cloned().expect("INVITE to bob");
    send(&mut p, t0, to_bob, answer(&inv, 180, "Ringing", "btc"));
    let out = run_until(&mut p, t0, t0 + Duration::from_secs(60));
    let cancel_at = out.iter().find(|(_, _, m)| is_cancel(m)).map(|(at, _, _)| *at).expect("CANCEL");
    assert_eq!(cancel_at, t0 + Duration::from_secs(10));
    let (at, _, _) = out.iter().find(|(_, to, m)| to.remote.port() == 6000 && m.status() == Some(480)).expect("480");
    assert_eq!(*at, cancel_at + Duration::from_secs(32));
    assert_eq!(p.proxy_status().timer_c_fired, 1);
}

#[test]
fn bindings_registered_over_a_tcp_connection_go_when_it_closes() {
    let (mut p, now) = peer();
    let tcp = |port: u16, conn: u64| Endpoint {
        transport: Transport::Tcp,
        conn: Some(crate::peer::ConnectionId(conn)),
        ..phone(port)
    };
    // bob over connection 1, alice over connection 2 (REGISTERs on a stream: same text).
    for (user, port, conn, pw) in [("bob", 6001, 1, "bob-pw"), ("alice", 6002, 2, "alice-pw")] {
        let out = send(&mut p, now, tcp(port, conn), register_text(user, port, 1, ""));
        let auth = authorization(&out[0].1, Algorithm::Md5, user, pw);
        let out = send(&mut p, now, tcp(port, conn), register_text(user, port, 2, &auth));
        assert_eq!(out.last().unwrap().1.status(), Some(200));
    }
    assert_eq!(p.proxy_status().bindings, 2);
    // A UDP "close" or another connection's close changes nothing.
    p.handle_input(now, Input::StreamClosed { from: phone(6001) });
    p.handle_input(now, Input::StreamClosed { from: tcp(6001, 7) });
    assert_eq!(p.proxy_status().bindings, 2);
    p.handle_input(now, Input::StreamClosed { from: tcp(6001, 1) });
    assert_eq!(p.proxy_status().bindings, 1);
    assert_eq!(p.proxy_status().unregistered_on_close, 1);
    // bob is gone: a call to him gets 480; alice stays reachable.
    let message = authed(&mut p, now, phone(6000), &request_text("MESSAGE", "bob", "z9hG4bKtcp1", 6000));
    let out = send(&mut p, now, phone(6000), message);
    assert_eq!(out.iter().filter_map(|(_, m)| m.status()).find(|s| *s >= 200), Some(480));
    let message = authed(&mut p, now, phone(6000), &request_text("MESSAGE", "alice", "z9hG4bKtcp2", 6000));
    let out = send(&mut p, now, phone(6000), message);
    assert!(out.iter().any(|(to, m)| to.conn == Some(crate::peer::ConnectionId(2)) && m.is_request()), "{out:?}");
}

#[test]
fn a_saturated_loop_sheds_new_requests_with_503_and_retry_after_but_not_dialogs_or_the_overlay() {
    let (mut p, t0) = peer();
    caller_registered(&mut p, t0);
    // The driver reports back-to-back turns for a second, each leaving input queued.
    let mut t = t0;
    while t < t0 + Duration::from_millis(1050) {
        let turn = Input::LoopTurn { started: t + Duration::from_micros(2), backlog: crate::peer::InputBacklog::Left };
        p.handle_input(t + Duration::from_micros(42), turn);
        t += Duration::from_micros(42);
    }
    let share = p.load().shed;
    assert!(share > 0.3, "{:?}", p.load());
    let statuses: Vec<Message> = (0..20)
        .map(|i| send(&mut p, t, phone(6000), request_text("MESSAGE", "nobody", &format!("z9hG4bKsh{i}"), 6000)))
        .map(|out| out[0].1.clone())
        .collect();
    let shed: Vec<&Message> = statuses.iter().filter(|m| m.status() == Some(503)).collect();
    let expected = share * 20.0;
    assert!((shed.len() as f64 - expected).abs() <= 1.0, "{} refused, {expected} expected", shed.len());
    assert!(shed.iter().all(|m| m.headers.get(&HeaderName::other("Retry-After")).is_some()));
    assert!(statuses.iter().filter(|m| m.status() != Some(503)).all(|m| m.status() == Some(404)));
    assert_eq!(p.counters().load_shed, shed.len() as u64);
    // Requests in a dialog through us (To tag, and our Route) are never shed, nor anything
    // on the overlay listener.
    for i in 0..20 {
        let bye = request_text("BYE", "nobody", &format!("z9hG4bKby{i}"), 6000)
            .replace("To: <sip:nobody@p2p.test>", "To: <sip:nobody@p2p.test>;tag=x")
            .replace("Max-Forwards", &format!("Route: <sip:{PROXY};lr>\r\nMax-Forwards"));
        let out = send(&mut p, t, phone(6000), bye);
        assert_ne!(out[0].1.status(), Some(503));
        let overlay = Endpoint { listener: Listener::Overlay, ..phone(7000) };
        let out = send(&mut p, t, overlay, request_text("MESSAGE", "nobody", &format!("z9hG4bKov{i}"), 7000));
        assert_ne!(out[0].1.status(), Some(503));
    }
    assert_eq!(p.counters().load_shed, shed.len() as u64);
}

#[test]
fn a_call_from_the_overlay_must_prove_its_caller() {
    // docs/security.md, M5: bob's node checks the Identity of every INVITE or MESSAGE another node
    // sends for bob: missing or forged, 403 and nothing reaches bob's phone; genuine, the
    // phone gets the request without the header.
    use crate::identity::caller;
    use crate::identity::tests::{Fixture, T0};
    use crate::sip::transaction::{Received, Timers, TransactionLayer};
    let mut fx = Fixture::new("p2p.test");
    let (alice_key, alice_cert) = fx.enroll("sip:alice@p2p.test");
    let now = Instant::now();
    let mut config = super::ProxyConfig::new("p2p.test", PROXY.parse().unwrap());
    config.other_addrs = vec!["127.0.0.1:5070".parse().unwrap()];
    let mut accounts = Accounts::default();
    accounts.insert(Account::new("sip:bob@p2p.test", "bob-pw").unwrap());
    let mut proxy = super::Proxy::new(config, accounts, 9, now);
    proxy.set_callers(super::identity::Callers::new(fx.anchor(), None, T0, now));
    let mut tl = TransactionLayer::new(Timers::default());
    // Bob's phone registers at 127.0.0.9:6001.
    let bare = parse(Bytes::from(register_text("bob", 6001, 1, ""))).unwrap();
    let challenge = proxy.register_stateless(now, phone(6001), &bare);
    let auth = authorization(&challenge, Algorithm::Md5, "bob", "bob-pw");
    let ok =
        proxy.register_stateless(now, phone(6001), &parse(Bytes::from(register_text("bob", 6001, 2, &auth))).unwrap());
    assert_eq!(ok.status(), Some(200));
    let node = Endpoint { listener: Listener::Overlay, ..phone(5070) };
    let mut deliver = |msg: Message| {
        let Received::Request { id, request, cancels } = tl.handle_message(now, msg, node, false) else {
            panic!("new")
        };
        proxy.handle_request(now, &mut tl, id, node, node, request, cancels);
        sent(&mut tl)
    };
    let message = |from: &str, branch: &str| {
        let text = request_text("MESSAGE", "bob", branch, 5070)
            .replace("From: <sip:alice@p2p.test>", &format!("From: <{from}>"));
        parse(Bytes::from(text)).unwrap()
    };
    let signed = |mut m: Message| {
        caller::sign(&mut m, &alice_key, &alice_cert, T0, &fx.rng).unwrap();
        parse(m.encode()).unwrap()
    };
    let refused = |out: &[(Endpoint, Message)]| {
        assert!(out.iter().all(|(to, m)| !(to.remote.port() == 6001 && m.is_request())), "reached the phone: {out:?}");
        out.iter().find_map(|(_, m)| m.status().filter(|s| *s >= 200).map(|s| (s, m.summary())))
    };
    // No Identity at all.
    let (status, why) = refused(&deliver(message("sip:alice@p2p.test", "z9hG4bKid1"))).expect("an answer");
    assert_eq!(status, 403, "{why}");
    assert!(why.contains("no Identity"), "{why}");
    // Alice's node claims to be carol: a forged From.
    let (status, why) = refused(&deliver(signed(message("sip:carol@p2p.test", "z9hG4bKid2")))).expect("an answer");
    assert_eq!(status, 403, "{why}");
    // Genuine: to bob's phone, without the header.
    let out = deliver(signed(message("sip:alice@p2p.test", "z9hG4bKid3")));
    let (_, to_phone) = out.iter().find(|(to, m)| to.remote.port() == 6001 && m.is_request()).expect("bob's phone");
    assert!(to_phone.headers.get(&HeaderName::other("Identity")).is_none(), "the phone never sees it");
    assert_eq!((proxy.status().callers_refused, proxy.status().callers_verified), (2, 1));
}

#[test]
fn a_buddys_cached_node_that_stays_silent_or_refuses_falls_back_to_a_lookup_unseen_by_the_phone() {
    // Silent: no answer at all within the cache's wait.
    let (mut proxy, mut tl, id, now) = parked(phone(6000), "dave");
    assert!(proxy.poll_lookup().is_some());
    sent(&mut tl);
    proxy.overlay_resolved_cached(now, &mut tl, id, "sip:dave@p2p.test", vec!["sip:dave@127.0.0.7:5070".into()]);
    assert!(sent(&mut tl).iter().any(|(to, m)| m.is_request() && to.remote.port() == 5070), "sent on the cache");
    let deadline = proxy.poll_timeout().expect("the cache's wait");
    assert!(deadline <= now + Duration::from_secs(2));
    proxy.handle_timeout(deadline, &mut tl);
    assert_eq!(proxy.poll_lookup(), Some((id, "sip:dave@p2p.test".to_owned())), "looked up after all");
    assert_eq!(proxy.poll_cache_miss().as_deref(), Some("sip:dave@p2p.test"));
    assert!(sent(&mut tl).iter().all(|(_, m)| m.status().is_none_or(|s| s < 200)), "the phone heard nothing final");
    proxy.overlay_resolved(deadline, &mut tl, id, Some(vec!["sip:dave@127.0.0.8:5070".into()]));
    assert!(sent(&mut tl).iter().any(|(to, m)| m.is_request() && to.remote.ip().to_string() == "127.0.0.8"));
    assert_eq!(proxy.status().cache_fallbacks, 1);

    // Refused before anything rang (the node no longer serves dave): looked up too.
    let (mut proxy, mut tl, id, now) = parked(phone(6000), "dave");
    assert!(proxy.poll_lookup().is_some());
    sent(&mut tl);
    proxy.overlay_resolved_cached(now, &mut tl, id, "sip:dave@p2p.test", vec!["sip:dave@127.0.0.7:5070".into()]);
    let out = sent(&mut tl);
    let (to, invite) = out.iter().find(|(_, m)| m.is_request()).expect("sent on the cache");
    let refusal = invite.make_response(404, "Not Found", Some("x"));
    let from = Endpoint { listener: Listener::Overlay, ..*to };
    let crate::sip::transaction::Received::Response { id: client, response } =
        tl.handle_message(now, refusal, from, false)
    else {
        panic!("the branch's answer")
    };
    proxy.handle_response(now, &mut tl, client, response);
    assert_eq!(proxy.poll_lookup(), Some((id, "sip:dave@p2p.test".to_owned())));
    let finals: Vec<u16> = sent(&mut tl).iter().filter_map(|(_, m)| m.status()).filter(|c| *c >= 200).collect();
    assert!(finals.is_empty(), "the phone heard nothing final: {finals:?}");
}

/// A phone's INVITE to another domain (`outbound`): the targets DNS gave are tried in order
/// from the overlay listener, the first's 503 sends it to the second (RFC 3263 §4.3), with our
/// two Record-Routes and neither the media anchor's part nor our signature; the phone sees
/// only the 200.
#[test]
fn another_domain_s_targets_are_tried_in_order_with_our_record_routes() {
    use crate::outbound::Target;
    let far = |remote| Endpoint { listener: Listener::Overlay, transport: Transport::Udp, remote, conn: None };
    let (mut p, now) = peer();
    caller_registered(&mut p, now);
    let invite = request_text("INVITE", "carol", "z9hG4bKx1", 6000).replace("carol@p2p.test", "carol@example.com");
    let (_, events) = send_collecting(&mut p, now, phone(6000), invite);
    let [crate::peer::PeerEvent::Resolve(r)] = events.as_slice() else { panic!("{events:?}") };
    let first: std::net::SocketAddr = "192.0.2.10:5060".parse().unwrap();
    let second: std::net::SocketAddr = "192.0.2.11:5070".parse().unwrap();
    let result =
        Ok(vec![Target { transport: Transport::Udp, addr: first }, Target { transport: Transport::Udp, addr: second }]);
    p.handle_input(now, Input::Resolved { sid: r.sid, result });
    let out = drain(&mut p);
    let sent: Vec<_> = out.iter().filter(|(_, m)| m.method().is_some()).collect();
    assert_eq!(sent.len(), 1, "{out:?}");
    let (to, copy) = sent[0];
    assert_eq!((to.listener, to.remote), (Listener::Overlay, first));
    assert_eq!(copy.headers.get_all(&HeaderName::RecordRoute).count(), 2, "both faces Record-Routed");
    assert!(copy.headers.get(&HeaderName::other("Identity")).is_none(), "no node signature for another domain");
    assert!(!String::from_utf8_lossy(&copy.body).contains("trickle-ice"), "no ICE part for another domain");
    let copy = copy.clone();
    let out = send(&mut p, now, far(first), answer(&copy, 503, "Busy Here", "s1"));
    let retried: Vec<_> = out.iter().filter(|(_, m)| m.method() == Some(&crate::sip::Method::Invite)).collect();
    assert_eq!(retried.len(), 1, "{out:?}");
    assert_eq!(retried[0].0.remote, second);
    assert!(out.iter().all(|(to, m)| !(to.listener == Listener::Proxy && m.status() == Some(500))), "{out:?}");
    let copy = retried[0].1.clone();
    let out = send(&mut p, now, far(second), answer(&copy, 200, "OK", "s2"));
    let to_phone: Vec<_> = out.iter().filter(|(to, _)| to.listener == Listener::Proxy).collect();
    assert_eq!(to_phone.iter().filter_map(|(_, m)| m.status()).collect::<Vec<_>>(), vec![200]);
    assert_eq!(p.proxy_status().external_failovers, 1);
}
