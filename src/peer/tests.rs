//! The peer on a virtual clock: what it answers, where, and how often.
#![allow(clippy::disallowed_methods)] // one real reading as the virtual clock's epoch

use std::time::{Duration, Instant};

use super::*;

const PHONE: &str = "127.0.0.9:40000";

/// A peer on 127.0.0.1 (overlay 5070, proxy 5060), and the virtual clock's start.
pub(crate) fn peer() -> (Peer, Instant) {
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

/// Every message `p` has queued, parsed, with where it goes (its events are dropped).
pub(crate) fn drain(p: &mut Peer) -> Vec<(Endpoint, Message)> {
    let mut sent = Vec::new();
    p.drain(|t| sent.push((t.to, parse(t.data).unwrap())), |_| {});
    sent
}

#[test]
fn a_stun_binding_request_is_answered_with_the_address_it_came_from() {
    use crate::nat::stun::{binding_request, parse, StunMessage};
    let (mut p, now) = peer();
    for listener in [Listener::Overlay, Listener::Proxy] {
        let from = Endpoint { listener, ..from(Transport::Udp) };
        p.handle_input(now, Input::receive(from, binding_request([5; 12])));
        let mut sent = Vec::new();
        p.drain(|t| sent.push(t), |_| {});
        assert_eq!(sent.len(), 1, "{listener:?}");
        assert_eq!(sent[0].to, from);
        let mapped: std::net::SocketAddr = PHONE.parse().unwrap();
        assert_eq!(parse(&sent[0].data), Some(StunMessage::BindingSuccess { id: [5; 12], mapped, other: None }));
    }
    assert_eq!(p.counters().stun_answered, 2);
    // A STUN answer nobody asked for, and a corrupt request, get nothing.
    let stray = crate::nat::stun::binding_success([6; 12], PHONE.parse().unwrap(), false);
    p.handle_input(now, Input::receive(from(Transport::Udp), stray));
    let mut corrupt = binding_request([7; 12]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    p.handle_input(now, Input::receive(from(Transport::Udp), corrupt));
    assert!(drain(&mut p).is_empty());
    assert_eq!(p.counters().stun_dropped, 2);
}

#[test]
fn the_node_learns_its_mapped_address_from_its_stun_server() {
    use crate::nat::stun::{binding_success, parse, StunMessage};
    let now = Instant::now();
    let server: std::net::SocketAddr = "198.51.100.1:3478".parse().unwrap();
    let config = PeerConfig {
        stun_servers: vec![server],
        ..PeerConfig::new("127.0.0.1:5070".parse().unwrap(), "127.0.0.1:5060".parse().unwrap())
    };
    let mut p = Peer::new(config, now);
    assert_eq!(p.nat_status().unwrap().mapping, "unknown");
    p.handle_input(now, Input::Timeout);
    let mut sent = Vec::new();
    p.drain(|t| sent.push(t), |_| {});
    let request = sent.iter().find(|t| t.to.remote == server).expect("a Binding request to the server");
    assert_eq!((request.to.listener, request.to.transport), (Listener::Overlay, Transport::Udp));
    let Some(StunMessage::BindingRequest { id, .. }) = parse(&request.data) else { panic!("a Binding request") };
    let mapped: std::net::SocketAddr = "203.0.113.9:40000".parse().unwrap();
    // An answer on the proxy listener is not ours; the one from the server's address is.
    let proxy = Endpoint { listener: Listener::Proxy, transport: Transport::Udp, remote: server, conn: None };
    p.handle_input(now, Input::receive(proxy, binding_success(id, mapped, true)));
    assert_eq!(p.nat_status().unwrap().mapped, None);
    let overlay = Endpoint { listener: Listener::Overlay, ..proxy };
    p.handle_input(now, Input::receive(overlay, binding_success(id, mapped, true)));
    let status = p.nat_status().unwrap();
    assert_eq!((status.mapped, status.mapping), (Some(mapped), "unknown"), "one server: no verdict on the mapping");
}

#[test]
fn options_to_the_node_gets_200_with_capabilities() {
    let (mut p, now) = peer();
    p.handle_input(
        now,
        Input::receive(from(Transport::Udp), request("OPTIONS", "sip:127.0.0.1:5060", "z9hG4bKo1", "")),
    );
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
fn received_and_rport_are_stamped_on_the_top_via_only() {
    // RFC 3261 §18.2.1 / RFC 3581 §4, whether the top Via has a line of its own (replaced in
    // place) or shares it with the next hop's (split onto its own line, order kept).
    let (mut p, now) = peer();
    let own_line =
        "Via: SIP/2.0/UDP 10.0.0.9:5062;branch=z9hG4bKv1;rport\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx\r\n";
    let shared = "Via: SIP/2.0/UDP 10.0.0.9:5062;branch=z9hG4bKv2;rport, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx\r\n";
    for (branch, vias) in [("z9hG4bKv1", own_line), ("z9hG4bKv2", shared)] {
        let req = format!(
            "OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\n{vias}From: <sip:alice@p2p.test>;tag=a1\r\n\
             To: <sip:127.0.0.1:5060>\r\nCall-ID: {branch}@10.0.0.9\r\nCSeq: 1 OPTIONS\r\n\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        p.handle_input(now, Input::receive(from(Transport::Udp), Bytes::from(req)));
        let out = drain(&mut p);
        assert_eq!(out.len(), 1, "{branch}");
        let vias = out[0].1.vias().unwrap();
        assert_eq!(vias.len(), 2, "{branch}");
        assert_eq!(vias[0].branch(), Some(branch));
        assert_eq!(vias[0].received(), Some("127.0.0.9"));
        assert_eq!(vias[0].rport(), Some(Some(40000)));
        assert_eq!(vias[1].branch(), Some("z9hG4bKx"));
        assert_eq!(vias[1].received(), None, "only the top Via is ours to stamp");
    }
}

#[test]
fn retransmitted_request_is_absorbed_and_answer_resent() {
    let (mut p, now) = peer();
    // A MESSAGE from another node for a user not served here: 404 through a transaction.
    let overlay = Endpoint { listener: Listener::Overlay, ..from(Transport::Udp) };
    let req = request("MESSAGE", "sip:bob@p2p.test", "z9hG4bKo2", "");
    p.handle_input(now, Input::receive(overlay, req.clone()));
    let first = drain(&mut p);
    p.handle_input(now + Duration::from_millis(500), Input::receive(overlay, req));
    let again = drain(&mut p);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].1.status(), Some(404));
    assert_eq!(again.len(), 1);
    assert_eq!(first[0].1, again[0].1, "the same response, byte for byte");
    assert_eq!(p.counters().retransmissions_absorbed, 1);
    assert_eq!(p.counters().server_transactions, 1);
}

#[test]
fn options_to_the_node_hold_no_transaction_and_a_retransmission_gets_the_same_answer() {
    // RFC 3261 §8.2.7: answered statelessly, with a To tag derived from the request.
    let (mut p, now) = peer();
    let req = request("OPTIONS", "sip:127.0.0.1:5060", "z9hG4bKo3", "");
    p.handle_input(now, Input::receive(from(Transport::Udp), req.clone()));
    let first = drain(&mut p);
    assert_eq!(p.transaction_counts(), TransactionCounts::default());
    p.handle_input(now + Duration::from_millis(500), Input::receive(from(Transport::Udp), req));
    let again = drain(&mut p);
    assert_eq!((first.len(), again.len()), (1, 1));
    assert_eq!(first[0].1, again[0].1, "the same response, byte for byte");
    assert_eq!(p.counters().server_transactions, 0);
}

#[test]
fn a_strangers_invite_retransmits_its_407_until_ack() {
    let (mut p, mut now) = peer();
    p.handle_input(now, Input::receive(from(Transport::Udp), request("INVITE", "sip:bob@p2p.test", "z9hG4bKi1", "")));
    let out = drain(&mut p);
    let codes: Vec<_> = out.iter().map(|(_, m)| m.status().unwrap()).collect();
    // A stranger's INVITE is challenged before any routing (RFC 3261 §16.3 step 6; docs/security.md, M3).
    assert_eq!(codes, [100, 407]);
    // Timer G: the 407 goes again after T1, then 2·T1 …
    now += Duration::from_millis(500);
    p.handle_input(now, Input::Timeout);
    assert_eq!(drain(&mut p).len(), 1);
    let to_tag = out[1].1.to().unwrap().tag().unwrap().to_owned();
    let ack = format!(
        "ACK sip:bob@p2p.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5062;branch=z9hG4bKi1;rport\r\n\
         From: <sip:alice@p2p.test>;tag=a1\r\nTo: <sip:bob@p2p.test>;tag={to_tag}\r\nCall-ID: c1@10.0.0.9\r\n\
         CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    p.handle_input(now, Input::receive(from(Transport::Udp), Bytes::from(ack)));
    assert!(drain(&mut p).is_empty(), "an ACK is never answered");
    // …and no more after the ACK.
    // Until every transaction is over (the peer's Chord timers run forever, so not "until no
    // deadline"); a lone node has no one to send overlay requests to.
    while p.transaction_counts() != TransactionCounts::default() {
        now = p.poll_timeout().expect("a transaction has a timer");
        p.handle_input(now, Input::Timeout);
        assert!(drain(&mut p).is_empty());
    }
    assert_eq!(p.transaction_counts(), TransactionCounts::default());
}

#[test]
fn over_tcp_nothing_is_retransmitted() {
    let (mut p, mut now) = peer();
    let tcp = Endpoint { conn: Some(ConnectionId(3)), ..from(Transport::Tcp) };
    p.handle_input(now, Input::receive(tcp, request("MESSAGE", "sip:bob@p2p.test", "z9hG4bKm1", "")));
    let out = drain(&mut p);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, tcp, "back on the same connection");
    // Until every transaction is over (the peer's Chord timers run forever, so not "until no
    // deadline"); a lone node has no one to send overlay requests to.
    while p.transaction_counts() != TransactionCounts::default() {
        now = p.poll_timeout().expect("a transaction has a timer");
        p.handle_input(now, Input::Timeout);
        assert!(drain(&mut p).is_empty());
    }
}

#[test]
fn cancel_without_invite_gets_481_and_unknown_method_501() {
    let (mut p, now) = peer();
    p.handle_input(now, Input::receive(from(Transport::Udp), request("CANCEL", "sip:bob@p2p.test", "z9hG4bKc1", "")));
    assert_eq!(drain(&mut p)[0].1.status(), Some(481));
    p.handle_input(now, Input::receive(from(Transport::Udp), request("FROB", "sip:127.0.0.1:5060", "z9hG4bKf1", "")));
    let out = drain(&mut p);
    assert_eq!(out[0].1.status(), Some(501));
    assert!(out[0].1.headers.get(&HeaderName::Allow).is_some());
}

#[test]
fn register_is_challenged_then_refused() {
    let (mut p, now) = peer();
    p.handle_input(
        now,
        Input::receive(
            from(Transport::Udp),
            request("REGISTER", "sip:p2p.test", "z9hG4bKr1", "Contact: <sip:alice@10.0.0.9:5062>\r\n"),
        ),
    );
    let out = drain(&mut p);
    let challenge = out[0].1.auth(&HeaderName::WwwAuthenticate).unwrap();
    assert_eq!(out[0].1.status(), Some(401));
    assert_eq!(challenge[0].get("realm"), Some("p2p.test"));
    // A nonce this node never made is challenged again; a real one with no such account, 403.
    let nonce = challenge[0].get("nonce").unwrap();
    let auth = format!(
        "Authorization: Digest username=\"alice\", realm=\"p2p.test\", nonce=\"{nonce}\", uri=\"sip:p2p.test\", response=\"00\"\r\n"
    );
    p.handle_input(now, Input::receive(from(Transport::Udp), request("REGISTER", "sip:p2p.test", "z9hG4bKr2", &auth)));
    assert_eq!(drain(&mut p)[0].1.status(), Some(403));
    // On the overlay listener, phones are told where to go.
    let overlay = Endpoint { listener: Listener::Overlay, ..from(Transport::Udp) };
    p.handle_input(now, Input::receive(overlay, request("REGISTER", "sip:p2p.test", "z9hG4bKr3", "")));
    assert_eq!(drain(&mut p)[0].1.status(), Some(403));
}

#[test]
fn garbage_is_counted_and_dropped_and_oversize_refused() {
    let (mut p, now) = peer();
    p.handle_input(now, Input::receive(from(Transport::Udp), Bytes::from_static(b"\x00\x01garbage\r\n\r\n")));
    p.handle_input(now, Input::receive(from(Transport::Udp), Bytes::from(vec![b'A'; 20_000])));
    p.handle_input(now, Input::receive(from(Transport::Udp), Bytes::from_static(b"\r\n\r\n")));
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
    p.handle_input(now, Input::receive(from(Transport::Udp), Bytes::from(req)));
    assert_eq!(drain(&mut p)[0].1.status(), Some(482));
}

/// Peers exchanging real SIP bytes over a lossless virtual network, in lock-step.
mod ring {
    use std::net::SocketAddr;

    use super::*;
    use crate::nat::reachability::{Role, RoleChoice};
    use crate::sim::lockstep::LockStep;

    struct Net {
        lock: LockStep,
    }

    impl Net {
        fn new(addrs: &[&str]) -> Net {
            let mut lock = LockStep::new(Instant::now());
            for (i, a) in addrs.iter().enumerate() {
                let overlay: SocketAddr = a.parse().unwrap();
                let proxy = SocketAddr::new(overlay.ip(), 5060);
                let config = PeerConfig { seed: i as u64, ..PeerConfig::new(overlay, proxy) };
                lock.insert(overlay, Peer::new(config, lock.now()));
            }
            Net { lock }
        }

        fn run_for(&mut self, d: Duration) {
            self.lock.run_for(d, |_, _| {});
        }

        fn ring_ok(&self) -> bool {
            let mut ids: Vec<NodeId> = self.lock.peers().map(|(_, p)| p).map(Peer::node_id).collect();
            ids.sort();
            self.lock.peers().map(|(_, p)| p).all(|p| {
                let me = p.node_id();
                let i = ids.iter().position(|x| *x == me).unwrap();
                p.chord().successor().id == ids[(i + 1) % ids.len()]
                    && p.chord().predecessor().map(|c| c.id) == Some(ids[(i + ids.len() - 1) % ids.len()])
            })
        }
    }

    /// A node that asks for a dial-back (as every daemon does), at `addr` as the network sees
    /// it, listening on `local` (its own address behind a port forward, or `addr` itself).
    fn probing_peer(net: &Net, local: &str, seed: u64, role: RoleChoice) -> Peer {
        let overlay: SocketAddr = local.parse().unwrap();
        let proxy = SocketAddr::new(overlay.ip(), 5060);
        let config = PeerConfig { seed, dial_back: true, role, ..PeerConfig::new(overlay, proxy) };
        Peer::new(config, net.lock.now())
    }

    fn roles(net: &mut Net, d: Duration) -> Vec<(SocketAddr, RoleEvent)> {
        let mut events = Vec::new();
        net.lock.run_for(d, |at, e| {
            if let PeerEvent::Role(r) = e {
                events.push((at, r));
            }
        });
        events
    }

    #[test]
    fn a_dial_back_decides_peer_or_client_from_a_fresh_socket_or_another_peer() {
        let addr = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let (a, b, c, d) =
            (addr("127.0.0.1:5070"), addr("127.0.0.2:5070"), addr("127.0.0.3:5070"), addr("127.0.0.4:5070"));
        let mut net = Net::new(&["127.0.0.1:5070"]);
        let now = net.lock.now();
        net.lock.peer(a).join(now, vec![]);
        // b: a is alone, so a answers from a fresh socket of its own.
        let p = probing_peer(&net, "127.0.0.2:5070", 2, RoleChoice::Auto);
        net.lock.insert(b, p);
        net.lock.peer(b).join(now, vec![a]);
        let events = roles(&mut net, Duration::from_secs(10));
        let first = (a, RoleEvent::Decided { role: Role::Peer, public: None });
        assert_eq!(events, [first, (b, RoleEvent::Decided { role: Role::Peer, public: Some(b) })]);
        assert_eq!(net.lock.at(a).counters().dial_backs_sent, 1, "from a's one-shot socket");
        assert_eq!(net.lock.at(b).nat_status().and_then(|s| s.reachable), Some(true));
        assert!(net.ring_ok());
        // c: now a asks b, on another IP address, to send the dial-back.
        let p = probing_peer(&net, "127.0.0.3:5070", 3, RoleChoice::Auto);
        net.lock.insert(c, p);
        let now = net.lock.now();
        net.lock.peer(c).join(now, vec![a]);
        let events = roles(&mut net, Duration::from_secs(10));
        assert_eq!(events, [(c, RoleEvent::Decided { role: Role::Peer, public: Some(c) })]);
        assert_eq!(net.lock.at(a).counters().dial_backs_asked, 2);
        assert_eq!(net.lock.at(a).counters().dial_backs_sent, 1, "not from a's own socket this time");
        assert_eq!(net.lock.at(b).counters().dial_backs_sent, 1);
        assert!(net.ring_ok());
        // d, behind a filtering NAT: the dial-back never arrives; d is a client, off the ring.
        let p = probing_peer(&net, "127.0.0.4:5070", 4, RoleChoice::Auto);
        net.lock.insert(d, p);
        net.lock.filter_unsolicited(d);
        let now = net.lock.now();
        net.lock.peer(d).join(now, vec![a]);
        let events = roles(&mut net, Duration::from_secs(10));
        assert_eq!(events, [(d, RoleEvent::Decided { role: Role::Client, public: Some(d) })]);
        assert_eq!(net.lock.at(d).nat_status().and_then(|s| s.reachable), Some(false));
        assert_eq!(net.lock.at(d).chord().state(), crate::overlay::NodeState::Client, "d took no ring position");
        // A client looks up like anyone, from its edge: every key's answer is the peer
        // responsible, though no peer knows the client.
        let mut ids: Vec<NodeId> = [a, b, c].iter().map(|x| net.lock.at(*x).node_id()).collect();
        ids.sort();
        for i in 0..8u8 {
            let key = NodeId::for_key(&[i], crate::overlay::IdHash::Sha1);
            let responsible = *ids.iter().find(|id| **id >= key).unwrap_or(&ids[0]);
            let now = net.lock.now();
            let asked = net.lock.peer(d).lookup(now, key);
            let mut found = None;
            net.lock.run_for(Duration::from_secs(5), |at, e| {
                if let PeerEvent::Overlay(crate::overlay::Event::LookupDone { id, result, .. }) = e {
                    if at == d && id == asked {
                        found = Some(result.map(|c| c.id));
                    }
                }
            });
            assert_eq!(found, Some(Ok(responsible)), "key {key}");
        }
        for x in [a, b, c] {
            let p = net.lock.at(x);
            let known: Vec<SocketAddr> =
                p.chord().successors().iter().chain(p.chord().predecessor()).map(|c| c.addr).collect();
            assert!(!known.contains(&d), "{x} knows the client as a ring member: {known:?}");
        }
    }

    #[test]
    fn role_peer_behind_a_filter_is_refused_and_role_client_asks_nothing() {
        let addr = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let (a, e, f) = (addr("127.0.0.1:5070"), addr("127.0.0.5:5070"), addr("127.0.0.6:5070"));
        let mut net = Net::new(&["127.0.0.1:5070"]);
        let p = probing_peer(&net, "127.0.0.5:5070", 5, RoleChoice::Peer);
        net.lock.insert(e, p);
        net.lock.filter_unsolicited(e);
        let p = probing_peer(&net, "127.0.0.6:5070", 6, RoleChoice::Client);
        net.lock.insert(f, p);
        let now = net.lock.now();
        net.lock.peer(e).join(now, vec![a]);
        net.lock.peer(f).join(now, vec![a]);
        let mut events = roles(&mut net, Duration::from_secs(10));
        events.sort_by_key(|(at, _)| *at);
        assert_eq!(
            events,
            [
                (e, RoleEvent::PeerRefused { mapped: e, asked: a }),
                (f, RoleEvent::Decided { role: Role::Client, public: None }),
            ]
        );
        let asks = u64::from(crate::nat::reachability::DIAL_BACK_TRIES);
        assert_eq!(net.lock.at(a).counters().dial_backs_asked, asks, "e asked, every try; f never did");
    }

    #[test]
    fn a_port_forwarded_node_takes_its_id_from_the_public_address_the_dial_back_confirmed() {
        // Two nodes behind one NAT at 198.51.100.7, each with a port forwarded: the network
        // sees them at the public address; they listen on private ones.
        let addr = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let a = addr("127.0.0.1:5070");
        let mut net = Net::new(&["127.0.0.1:5070"]);
        let now = net.lock.now();
        net.lock.peer(a).join(now, vec![]);
        let publics = [addr("198.51.100.7:5070"), addr("198.51.100.7:5071")];
        for (i, (public, local)) in publics.iter().zip(["192.168.1.2:5070", "192.168.1.3:5071"]).enumerate() {
            let p = probing_peer(&net, local, 10 + i as u64, RoleChoice::Auto);
            net.lock.insert(*public, p);
            let now = net.lock.now();
            net.lock.peer(*public).join(now, vec![a]);
            net.run_for(Duration::from_secs(10));
        }
        let ids: Vec<NodeId> = publics.iter().map(|p| net.lock.at(*p).node_id()).collect();
        for (id, public) in ids.iter().zip(publics) {
            assert_eq!(*id, NodeId::from_addr(public.ip(), public.port(), Default::default()));
        }
        assert_ne!(ids[0], ids[1]);
        // Port-suffixed IDs: the same IP address, so the same prefix, side by side on the ring.
        assert_eq!(net.lock.at(publics[0]).chord().successor().id, ids[1]);
        assert!(net.ring_ok());
    }

    #[test]
    fn a_flood_of_answered_requests_takes_no_budget_and_the_ring_holds() {
        // docs/security.md, H4: 30,000 OPTIONS and 30,000 MESSAGEs from one
        // source, each answered at once, more than the 20,000-transaction budget; none is
        // refused, and the neighbours keep the node.
        let mut net = Net::new(&["127.0.0.1:5070", "127.0.0.2:5070"]);
        let (a, b): (SocketAddr, SocketAddr) = ("127.0.0.1:5070".parse().unwrap(), "127.0.0.2:5070".parse().unwrap());
        let now = net.lock.now();
        net.lock.peer(b).join(now, vec![a]);
        net.run_for(Duration::from_secs(10));
        assert!(net.ring_ok());
        let attacker = Endpoint {
            listener: Listener::Overlay,
            transport: Transport::Udp,
            remote: "203.0.113.5:5062".parse().unwrap(),
            conn: None,
        };
        let now = net.lock.now();
        let node = net.lock.peer(a);
        let mut answered = 0;
        for i in 0..30_000 {
            for (method, uri) in [("OPTIONS", "sip:127.0.0.1:5070"), ("MESSAGE", "sip:nobody@p2p.test")] {
                node.handle_input(
                    now,
                    Input::receive(attacker, request(method, uri, &format!("z9hG4bKf{method}{i}"), "")),
                );
                node.drain(
                    |t| {
                        let status = parse(t.data).unwrap().status();
                        assert_ne!(status, Some(503), "{method} {i} refused");
                        answered += 1;
                    },
                    |_| {},
                );
            }
        }
        assert_eq!(answered, 60_000);
        assert_eq!(node.counters().overload_rejected, 0);
        assert_eq!(node.transactions.server_unanswered(Listener::Overlay.index()), 0);
        net.run_for(Duration::from_secs(30));
        assert!(net.ring_ok(), "the ring lost a node to the flood");
    }

    #[test]
    fn answers_to_an_unproven_address_are_at_most_three_times_the_request() {
        // docs/security.md, M1: a spoofed Join or GetNeighbours (the claim computed for the victim's
        // address) gets an answer no more than 3x its size, so the node is no amplifier.
        let addrs: Vec<String> = (1..=12).map(|i| format!("127.0.0.{i}:5070")).collect();
        let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        let mut net = Net::new(&refs);
        let boot: SocketAddr = "127.0.0.1:5070".parse().unwrap();
        let now = net.lock.now();
        for (a, p) in net.lock.peers_mut() {
            if a != boot {
                p.join(now, vec![boot]);
            }
        }
        net.run_for(Duration::from_secs(120));
        assert!(net.ring_ok());
        let victim: SocketAddr = "127.0.0.200:5070".parse().unwrap();
        let me = crate::overlay::Contact::new(
            NodeId::from_addr(victim.ip(), victim.port(), crate::overlay::IdHash::Sha1),
            victim,
        );
        let info =
            overlay_wire::OverlayInfo { name: "p2p.test".into(), hash: crate::overlay::IdHash::Sha1, client: false };
        let now = net.lock.now();
        let node = net.lock.peer(boot);
        let target = crate::overlay::RpcTarget::Node(node.chord().me().clone());
        for (i, request) in [
            crate::overlay::Request::Join { joiner: me.clone() },
            crate::overlay::Request::GetNeighbours { digest: None, notify: false },
            crate::overlay::Request::FindSuccessor {
                key: NodeId::from_addr(victim.ip(), 1, crate::overlay::IdHash::Sha1),
            },
        ]
        .into_iter()
        .enumerate()
        {
            let rpc = crate::overlay::OutgoingRpc { id: crate::overlay::RpcId(i as u64), to: target.clone(), request };
            let call_id = format!("amp{i}");
            let ids = overlay_wire::RequestIds { call_id: &call_id, from_tag: "t", cseq: 1 };
            let mut msg = overlay_wire::encode_request(&rpc, &me, &info, ids);
            let via = format!("SIP/2.0/UDP {victim};branch=z9hG4bKamp{i}");
            msg.headers.push_front_of(Header::new(HeaderName::Via, via));
            let data = msg.encode();
            let from = Endpoint { listener: Listener::Overlay, transport: Transport::Udp, remote: victim, conn: None };
            node.handle_input(now, Input::receive(from, data.clone()));
            let mut answers: Vec<Transmit> = Vec::new();
            node.drain(|t| answers.extend((t.to.remote == victim).then_some(t)), |_| {});
            let answer =
                answers.iter().find(|t| parse(t.data.clone()).is_ok_and(|m| m.status().is_some())).expect("answered");
            assert!(
                answer.data.len() <= 3 * data.len(),
                "{:?}: {} bytes for {}",
                rpc.request,
                answer.data.len(),
                data.len()
            );
        }
        assert!(node.counters().answers_trimmed > 0, "the Join's lists were long enough to need cutting");
    }

    #[test]
    fn three_peers_form_a_ring_over_sip() {
        let mut net = Net::new(&["127.0.0.1:5070", "127.0.0.2:5070", "127.0.0.3:5070", "127.0.0.3:5072"]);
        let boot: SocketAddr = "127.0.0.1:5070".parse().unwrap();
        let now = net.lock.now();
        for (a, p) in net.lock.peers_mut() {
            if a != boot {
                p.join(now, vec![boot]);
            }
        }
        net.run_for(Duration::from_secs(30));
        assert!(net.ring_ok(), "ring not correct after 30 s");
        let overlay: u64 = net.lock.peers().map(|(_, p)| p).map(|p| p.counters().overlay_requests).sum();
        assert!(overlay > 0);
        // Every refusal was Chord's own (a node asked before its join completed), none the SIP
        // mapping's: every DHT-PeerID matched the address it came from.
        for p in net.lock.peers().map(|(_, p)| p) {
            assert_eq!(p.counters().overlay_refused, p.chord().counters().requests_refused);
        }
    }

    #[test]
    fn a_request_of_another_protocol_version_gets_420_and_is_counted() {
        let mut net = Net::new(&["127.0.0.1:5070", "127.0.0.2:5070"]);
        let now = net.lock.now();
        let sender: SocketAddr = "127.0.0.2:5070".parse().unwrap();
        let id = NodeId::from_addr(sender.ip(), sender.port(), crate::overlay::IdHash::Sha1);
        let request = |version: &str, call: &str| {
            format!(
                "REGISTER sip:127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP {sender};branch=z9hG4bK{call}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:{sender}>;tag=1\r\nTo: <sip:127.0.0.1:5070>\r\n\
                 Call-ID: {call}\r\nCSeq: 1 REGISTER\r\nRequire: dht\r\n\
                 DHT-PeerID: <sip:{id}@{sender}>;version={version}\r\nContent-Length: 0\r\n\r\n"
            )
        };
        let from = Endpoint { listener: Listener::Overlay, transport: Transport::Udp, remote: sender, conn: None };
        let p = net.lock.peer("127.0.0.1:5070".parse().unwrap());
        // A version 1 node (before the wire format changed) is told which extension failed.
        p.handle_input(now, Input::receive(from, Bytes::from(request("1", "v1"))));
        let out = drain(p);
        assert_eq!(out[0].1.status(), Some(420));
        assert_eq!(out[0].1.option_tags(&HeaderName::Unsupported).unwrap(), ["dht"]);
        assert_eq!(p.counters().overlay_refused, 1);
        // The same request at our version is answered.
        p.handle_input(
            now,
            Input::receive(from, Bytes::from(request(&overlay_wire::PROTOCOL_VERSION.to_string(), "v2"))),
        );
        let out = drain(p);
        // (Before it, maybe, the ping that proves the sender's address: docs/security.md, H5.)
        let answer = out.iter().find(|(_, m)| m.status().is_some()).expect("an answer");
        assert_eq!(answer.1.status(), Some(200));
        assert_eq!(p.counters().overlay_refused, 1);
    }

    #[test]
    fn a_forged_peer_id_is_refused() {
        let mut net = Net::new(&["127.0.0.1:5070", "127.0.0.2:5070"]);
        let now = net.lock.now();
        // A join whose DHT-PeerID claims 127.0.0.9 but comes from 127.0.0.2.
        let text = "REGISTER sip:0000000000000000000000000000000000000001@127.0.0.1:5070 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bKforged\r\nFrom: <sip:x@127.0.0.2>;tag=1\r\n\
             To: <sip:x@127.0.0.1>\r\nCall-ID: forged\r\nCSeq: 1 REGISTER\r\nRequire: dht\r\n\
             DHT-PeerID: <sip:0000000000000000000000000000000000000001@127.0.0.9:5070>;version=2\r\n\
             Contact: <sip:0000000000000000000000000000000000000001@127.0.0.9:5070>\r\nExpires: 600\r\n\r\n";
        let from = Endpoint {
            listener: Listener::Overlay,
            transport: Transport::Udp,
            remote: "127.0.0.2:5070".parse().unwrap(),
            conn: None,
        };
        let p = net.lock.peer("127.0.0.1:5070".parse().unwrap());
        p.handle_input(now, Input::receive(from, Bytes::from_static(text.as_bytes())));
        let out = drain(p);
        assert_eq!(out[0].1.status(), Some(403));
        assert_eq!(p.counters().overlay_refused, 1);
        // The extension is not spoken on the proxy listener: a UAS there refuses it (§8.2.2.3).
        let proxy = Endpoint { listener: Listener::Proxy, ..from };
        let to_node = text
            .replace("forged", "forged2")
            .replace("0000000000000000000000000000000000000001@127.0.0.1:5070 SIP", "127.0.0.1:5060 SIP");
        p.handle_input(now, Input::receive(proxy, Bytes::from(to_node)));
        let out = drain(p);
        assert_eq!(out[0].1.status(), Some(420));
        assert_eq!(out[0].1.option_tags(&HeaderName::Unsupported).unwrap(), ["dht"]);
        net.run_for(Duration::from_secs(1));
    }
}

mod relay;
