//! The relay probes of docs/security.md (C1, M3, M8). Each feeds what an
//! attacker would send and asserts that nothing leaves for the address it names.

use super::*;
use crate::proxy::accounts::{Account, Accounts};
use crate::proxy::digest::{ha1, Algorithm};

/// Every transmit `p` has queued.
fn transmits(p: &mut Peer) -> Vec<Transmit> {
    let mut sent = Vec::new();
    p.drain(|t| sent.push(t), |_| {});
    sent
}

fn stray_response(vias: &str, cseq: &str) -> Bytes {
    Bytes::from(format!(
        "SIP/2.0 200 OK\r\n{vias}From: <sip:a@p2p.test>;tag=1\r\nTo: <sip:b@p2p.test>;tag=2\r\n\
         Call-ID: relay@x\r\nCSeq: {cseq}\r\nContent-Length: 10\r\n\r\nFLUSHALL\r\n"
    ))
}

#[test]
fn a_stray_response_is_never_relayed_from_either_listener() {
    let (mut p, now) = peer();
    let probes = [
        // The review's C1: our proxy address on top, then a TCP service on loopback.
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKc1\r\nVia: SIP/2.0/TCP 127.0.0.1:6379;branch=z9hG4bKx\r\n",
        // Our overlay address on top, a UDP service next, with received/rport of its choice.
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKc2\r\nVia: SIP/2.0/UDP 10.0.0.1;received=127.0.0.1;rport=514;branch=z9hG4bKy\r\n",
        // Vias that bounce between two nodes, then ourselves again.
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKc3\r\nVia: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bKa\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKb\r\nVia: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bKc\r\n",
    ];
    for listener in [Listener::Overlay, Listener::Proxy] {
        for transport in [Transport::Udp, Transport::Tcp] {
            let attacker = Endpoint { listener, transport, remote: "203.0.113.9:5060".parse().unwrap(), conn: None };
            for vias in probes {
                // A 2xx to INVITE too: the one kind RFC 3261 once had proxies relay.
                for cseq in ["1 INVITE", "1 OPTIONS"] {
                    p.handle_input(now, Input::receive(attacker, stray_response(vias, cseq)));
                    let out = transmits(&mut p);
                    assert!(out.is_empty(), "{listener:?}/{transport:?} {cseq}: {out:?}");
                }
            }
        }
    }
    assert_eq!(p.counters().stray_responses, 2 * 2 * 3 * 2);
}

const STRANGER: &str = "127.0.0.9:40000";

fn stranger() -> Endpoint {
    Endpoint { listener: Listener::Proxy, transport: Transport::Udp, remote: STRANGER.parse().unwrap(), conn: None }
}

/// An INVITE on the proxy listener: `to_tag` makes it in-dialog, `routes` are Route lines.
fn invite(ruri: &str, branch: &str, to_tag: Option<&str>, routes: &str) -> String {
    let tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {STRANGER};branch={branch};rport\r\n{routes}\
         From: <sip:alice@p2p.test>;tag=a1\r\nTo: <{ruri}>{tag}\r\nCall-ID: {branch}@x\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:alice@{STRANGER}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// What `p` sent anywhere but back to `back_to`, and the final status it answered with.
fn outcome(p: &mut Peer, back_to: SocketAddr) -> (Vec<Transmit>, Option<u16>) {
    let out = transmits(p);
    let status = out
        .iter()
        .filter(|t| t.to.remote == back_to)
        .filter_map(|t| parse(t.data.clone()).ok()?.status())
        .find(|s| *s >= 200);
    (out.into_iter().filter(|t| t.to.remote != back_to).collect(), status)
}

#[test]
fn the_proxy_listener_relays_nothing_for_a_stranger() {
    let (mut p, now) = peer();
    let cases = [
        // In-dialog (a made-up To tag) to an address: 403, nothing to 192.0.2.9.
        (invite("sip:x@192.0.2.9:5060", "z9hG4bKm1", Some("t"), ""), 403),
        // A node Route out of dialog: a stranger is challenged first.
        (invite("sip:x@192.0.2.9:5060", "z9hG4bKm2", None, "Route: <sip:192.0.2.9:5070;lr;p2psip-node>\r\n"), 407),
        // A TCP service on loopback as the Request-URI.
        (invite("sip:x@127.0.0.1:6379;transport=tcp", "z9hG4bKm3", None, ""), 407),
        // A user of our domain: still a stranger.
        (invite("sip:bob@p2p.test", "z9hG4bKm4", None, ""), 407),
    ];
    for (text, status) in cases {
        p.handle_input(now, Input::receive(stranger(), Bytes::from(text.clone())));
        let (elsewhere, answered) = outcome(&mut p, STRANGER.parse().unwrap());
        assert!(elsewhere.is_empty(), "{text}\nsent: {elsewhere:?}");
        assert_eq!(answered, Some(status), "{text}");
    }
    assert_eq!(p.proxy_status().requests_unauthenticated, 4);
}

/// A peer whose phone alice has registered from [`STRANGER`]'s address (so it is no longer a
/// stranger there).
fn peer_with_alice() -> (Peer, Instant) {
    let (mut p, now) = peer();
    let mut accounts = Accounts::default();
    accounts.insert(Account::new("sip:alice@p2p.test", "pw").unwrap());
    p.set_accounts(accounts);
    let register = |auth: &str, cseq: u32| {
        Bytes::from(format!(
            "REGISTER sip:p2p.test SIP/2.0\r\nVia: SIP/2.0/UDP {STRANGER};branch=z9hG4bKr{cseq};rport\r\n\
             From: <sip:alice@p2p.test>;tag=r\r\nTo: <sip:alice@p2p.test>\r\nCall-ID: reg@x\r\n\
             CSeq: {cseq} REGISTER\r\nContact: <sip:alice@{STRANGER}>\r\nMax-Forwards: 70\r\n{auth}\
             Content-Length: 0\r\n\r\n"
        ))
    };
    p.handle_input(now, Input::receive(stranger(), register("", 1)));
    let challenge = parse(transmits(&mut p).remove(0).data).unwrap();
    let c = &challenge.auth(&HeaderName::WwwAuthenticate).unwrap()[0];
    let nonce = c.get("nonce").unwrap();
    let ha2 = Algorithm::Md5.hash("REGISTER:sip:p2p.test");
    let response = Algorithm::Md5
        .hash(&format!("{}:{nonce}:00000001:c:auth:{ha2}", ha1(Algorithm::Md5, "alice", "p2p.test", "pw")));
    let auth = format!(
        "Authorization: Digest username=\"alice\", realm=\"p2p.test\", nonce=\"{nonce}\", uri=\"sip:p2p.test\", \
         algorithm=MD5, qop=auth, nc=00000001, cnonce=\"c\", response=\"{response}\"\r\n"
    );
    p.handle_input(now, Input::receive(stranger(), register(&auth, 2)));
    assert_eq!(parse(transmits(&mut p).remove(0).data).unwrap().status(), Some(200));
    (p, now)
}

#[test]
fn a_registered_phone_reaches_only_nodes_its_dialogs_were_routed_to() {
    let (mut p, now) = peer_with_alice();
    let own = "Route: <sip:127.0.0.1:5060;lr>\r\nRoute: <sip:127.0.0.1:5070;lr;p2psip-node>\r\n";
    let cases = [
        // Out of dialog, a preloaded node Route: no token of ours names it.
        (invite("sip:x@192.0.2.9:5060", "z9hG4bKa1", None, "Route: <sip:192.0.2.9:5070;lr;p2psip-node>\r\n"), 404),
        // In a "dialog" with our Routes but a node Route we never Record-Routed toward.
        (invite("sip:x@192.0.2.9:5060", "z9hG4bKa2", Some("t"), &format!("{own}Route: <sip:192.0.2.9:5070;lr;p2psip-node>\r\n")), 404),
        // The same with a token copied from nowhere.
        (
            invite(
                "sip:x@192.0.2.9:5060",
                "z9hG4bKa3",
                Some("t"),
                "Route: <sip:127.0.0.1:5060;lr;p2psip-rt=0011223344556677>\r\nRoute: <sip:192.0.2.9:5070;lr;p2psip-node>\r\n",
            ),
            404,
        ),
        // In-dialog, our Route, an address Request-URI that is no registered phone.
        (invite("sip:x@192.0.2.9:5060", "z9hG4bKa4", Some("t"), "Route: <sip:127.0.0.1:5060;lr>\r\n"), 404),
        // A loopback TCP service the same way.
        (invite("sip:x@127.0.0.1:6379;transport=tcp", "z9hG4bKa5", Some("t"), "Route: <sip:127.0.0.1:5060;lr>\r\n"), 404),
    ];
    for (text, status) in cases {
        p.handle_input(now, Input::receive(stranger(), Bytes::from(text.clone())));
        let (elsewhere, answered) = outcome(&mut p, STRANGER.parse().unwrap());
        assert!(elsewhere.is_empty(), "{text}\nsent: {elsewhere:?}");
        assert_eq!(answered, Some(status), "{text}");
    }
    assert_eq!(p.proxy_status().next_hops_refused, 5);
    assert_eq!(p.proxy_status().requests_unauthenticated, 0);
}
