//! Two anchors, alice's node and bob's, carrying a call end to end: the INVITE with its ICE
//! part, the proof checked, the SDP each phone receives rewritten, ICE over a virtual network,
//! and phone datagrams relayed both ways through the encrypted tunnel.
#![allow(clippy::disallowed_methods)] // the OS's randomness for keys; one real reading as the epoch

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::identity::tests::{Fixture, T0};
use crate::media::ice::PathKind;

const LATENCY: Duration = Duration::from_micros(300);

struct Node {
    anchor: Anchor,
    /// Sockets the daemon opened: id → addresses.
    sockets: BTreeMap<SocketId, Vec<SocketAddr>>,
    next_port: u16,
    closed: Vec<SocketId>,
}

impl Node {
    fn new(fx: &mut Fixture, aor: &str, leg_ip: &str, t0: Instant) -> Node {
        let (key, cert) = fx.enroll(aor);
        let leg_ip: IpAddr = leg_ip.parse().unwrap();
        let mut anchor = Anchor::new(AnchorConfig::new("127.0.0.1".parse().unwrap(), leg_ip), 7);
        anchor.set_identity(AnchorIdentity {
            key,
            cert,
            aor: Aor::parse(aor).unwrap(),
            rng: fx.shared_rng(),
            ids: VerifiedCache::new(fx.anchor(), 16),
            unix_at_start: T0 + 1000,
            started: t0,
        });
        let mut n = Node { anchor, sockets: BTreeMap::new(), next_port: 40000, closed: Vec::new() };
        n.open_all(t0);
        n
    }

    /// Plays the daemon for Open and Close; returns the sends.
    fn outputs(&mut self, now: Instant) -> Vec<Send> {
        let mut sends = Vec::new();
        while let Some(o) = self.anchor.poll_output() {
            match o {
                MediaOutput::Open { socket, kind, ip, .. } => {
                    let port = self.next_port;
                    self.next_port += 2;
                    let addrs = match kind {
                        SocketKind::Leg => vec![SocketAddr::new(ip, port)],
                        SocketKind::Pair => vec![SocketAddr::new(ip, port), SocketAddr::new(ip, port + 1)],
                    };
                    self.sockets.insert(socket, addrs.clone());
                    self.anchor.handle_input(now, MediaInput::Opened { socket, addrs });
                }
                MediaOutput::Close { socket } => {
                    self.sockets.remove(&socket);
                    self.closed.push(socket);
                }
                MediaOutput::Send(s) => sends.push(s),
            }
        }
        sends
    }

    fn open_all(&mut self, now: Instant) {
        let sends = self.outputs(now);
        assert!(sends.is_empty(), "no reflectors: nothing to send yet");
    }

    fn leg_socket(&self, addr: SocketAddr) -> Option<SocketId> {
        self.sockets.iter().find(|(_, a)| a.len() == 1 && a[0] == addr).map(|(id, _)| *id)
    }

    fn local(&self, s: &Send) -> SocketAddr {
        self.sockets[&s.socket][s.index as usize]
    }
}

fn msg(text: &str) -> Message {
    crate::sip::parse(Bytes::from(text.replace('\n', "\r\n"))).unwrap()
}

fn sdp(port: u16) -> String {
    format!("v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio {port} RTP/AVP 0\na=rtpmap:0 PCMU/8000\na=sendrecv\n")
}

fn with_body(head: &str, body: &str) -> Message {
    msg(&format!("{head}Content-Type: application/sdp\nContent-Length: {}\n\n{body}", body.replace('\n', "\r\n").len()))
}

const INVITE: &str = "INVITE sip:bob@p2p.test SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1\nFrom: <sip:alice@p2p.test>;tag=a1\nTo: <sip:bob@p2p.test>\nCall-ID: call-1\nCSeq: 1 INVITE\nMax-Forwards: 70\n";
const OK: &str = "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1\nFrom: <sip:alice@p2p.test>;tag=a1\nTo: <sip:bob@p2p.test>;tag=b1\nCall-ID: call-1\nCSeq: 1 INVITE\n";

fn body_text(m: &Message) -> String {
    String::from_utf8(m.body.to_vec()).unwrap()
}

fn relay_port(m: &Message) -> u16 {
    Sdp::parse(&m.body).unwrap().streams()[0].port
}

/// Delivers sends between the two nodes' legs over a virtual network until `done`.
fn run(
    a: &mut Node,
    b: &mut Node,
    mut now: Instant,
    limit: Duration,
    mut done: impl FnMut(&Node, &Node) -> bool,
) -> Instant {
    let start = now;
    let mut wire: Vec<(Instant, SocketAddr, SocketAddr, Vec<u8>)> = Vec::new();
    while now - start < limit {
        for node in [&mut *a, &mut *b] {
            for s in node.outputs(now) {
                let from = node.local(&s);
                wire.push((now + LATENCY, from, s.to, s.bytes));
            }
        }
        if done(a, b) {
            return now;
        }
        let next = [wire.iter().map(|w| w.0).min(), a.anchor.poll_timeout(), b.anchor.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + Duration::from_millis(1));
        now = next.max(now);
        let (due, later): (Vec<_>, Vec<_>) = wire.drain(..).partition(|w| w.0 <= now);
        wire = later;
        for (_, from, to, bytes) in due {
            for node in [&mut *a, &mut *b] {
                if let Some(socket) = node.leg_socket(to) {
                    node.anchor.handle_input(
                        now,
                        MediaInput::Datagram { socket, index: 0, from, data: Bytes::from(bytes.clone()) },
                    );
                }
            }
        }
        a.anchor.handle_timeout(now);
        b.anchor.handle_timeout(now);
    }
    panic!("not done within {limit:?}");
}

fn active(n: &Node) -> bool {
    n.anchor.calls().first().is_some_and(|c| c.state == CallState::Active)
}

#[test]
fn a_call_is_anchored_at_both_nodes_and_media_flows_both_ways_encrypted() {
    let t0 = Instant::now();
    let (mut a, mut b) = two_nodes(t0);

    // Alice's phone calls: her node adds its ICE part.
    let mut invite = with_body(INVITE, &sdp(7000));
    a.anchor.toward_overlay(t0, &mut invite);
    let ct = invite.content_type().unwrap().unwrap();
    assert!(ct.is("multipart", "mixed"), "{ct}");
    assert!(body_text(&invite).contains("a=p2psip-key:"));

    // Bob's node checks it and hands its phone the offer toward its own relay ports.
    b.anchor.toward_phone(t0, &mut invite).unwrap();
    assert!(invite.content_type().unwrap().unwrap().is("application", "sdp"));
    let text = body_text(&invite);
    assert!(!text.contains("p2psip") && !text.contains("candidate"), "{text}");
    let b_port = relay_port(&invite);
    assert_ne!(b_port, 7000);

    // Bob's phone answers; his node adds its part; alice's node checks it and starts ICE.
    let mut ok = with_body(OK, &sdp(8000));
    b.anchor.toward_overlay(t0, &mut ok);
    assert!(ok.content_type().unwrap().unwrap().is("multipart", "mixed"));
    a.anchor.toward_phone(t0, &mut ok).unwrap();
    let a_port = relay_port(&ok);
    assert_ne!(a_port, 8000);

    let t1 = run(&mut a, &mut b, t0, Duration::from_secs(2), |a, b| active(a) && active(b));
    assert!(t1 - t0 < Duration::from_millis(200), "path in {:?}", t1 - t0);
    // Both nodes time it: the checks' start to the path, well under the 200 ms target.
    for n in [&a, &b] {
        let ms = n.anchor.calls()[0].ice_ms.expect("ICE time recorded");
        assert!(ms < 200, "{ms} ms");
    }
    assert!(a.anchor.calls()[0].ringing_ms.is_some(), "the 200 reached alice's phone");
    assert_eq!(a.anchor.calls()[0].path, Some(PathKind::Host));
    assert_eq!(a.anchor.calls()[0].peer_aor, "sip:bob@p2p.test");
    assert_eq!(b.anchor.calls()[0].peer_aor, "sip:alice@p2p.test");

    // Alice's phone sends RTP to her relay port; it comes out at bob's phone, from his.
    let pair_of = |n: &Node, port: u16| *n.sockets.iter().find(|(_, a)| a.len() == 2 && a[0].port() == port).unwrap().0;
    let a_pair = pair_of(&a, a_port);
    let b_pair = pair_of(&b, b_port);
    let rtp = Bytes::from_static(&[0x80, 0, 0, 1, 0xde, 0xad]);
    a.anchor.handle_input(
        t1,
        MediaInput::Datagram { socket: a_pair, index: 0, from: "127.0.0.1:7000".parse().unwrap(), data: rtp.clone() },
    );
    let sent = a.outputs(t1);
    assert_eq!(sent.len(), 1);
    assert_ne!(&sent[0].bytes[..], &rtp[..], "encrypted on the leg");
    assert_eq!(sent[0].bytes.len(), rtp.len() + crate::media::tunnel::OVERHEAD);
    let b_leg = b.leg_socket(sent[0].to).unwrap();
    let from_a = a.local(&sent[0]);
    b.anchor.handle_input(
        t1,
        MediaInput::Datagram { socket: b_leg, index: 0, from: from_a, data: Bytes::from(sent[0].bytes.clone()) },
    );
    let out = b.outputs(t1);
    assert_eq!(
        out,
        vec![Send { socket: b_pair, index: 0, to: "127.0.0.1:8000".parse().unwrap(), bytes: rtp.to_vec() }]
    );
    // The same frame again is a replay: dropped.
    b.anchor.handle_input(
        t1,
        MediaInput::Datagram { socket: b_leg, index: 0, from: from_a, data: Bytes::from(sent[0].bytes.clone()) },
    );
    assert!(b.outputs(t1).is_empty());
    // A forged one too.
    let mut forged = sent[0].bytes.clone();
    *forged.last_mut().unwrap() ^= 1;
    b.anchor
        .handle_input(t1, MediaInput::Datagram { socket: b_leg, index: 0, from: from_a, data: Bytes::from(forged) });
    assert!(b.outputs(t1).is_empty());

    // Bob's phone sends RTCP on the RTCP port: it reaches alice's phone's RTCP port.
    let rtcp = Bytes::from_static(&[0x81, 200, 0, 1, 1, 2, 3, 4]);
    b.anchor.handle_input(
        t1,
        MediaInput::Datagram { socket: b_pair, index: 1, from: "127.0.0.1:8001".parse().unwrap(), data: rtcp.clone() },
    );
    let sent = b.outputs(t1);
    let a_leg = a.leg_socket(sent[0].to).unwrap();
    a.anchor.handle_input(
        t1,
        MediaInput::Datagram {
            socket: a_leg,
            index: 0,
            from: b.local(&sent[0]),
            data: Bytes::from(sent[0].bytes.clone()),
        },
    );
    assert_eq!(
        a.outputs(t1),
        vec![Send { socket: a_pair, index: 1, to: "127.0.0.1:7001".parse().unwrap(), bytes: rtcp.to_vec() }]
    );

    let (ca, cb) = (&a.anchor.calls()[0], &b.anchor.calls()[0]);
    assert_eq!((ca.packets_out, ca.packets_in, cb.packets_in, cb.packets_out), (1, 1, 1, 1));
    assert_eq!(b.anchor.totals().media_frames_dropped, 2);

    // Alice hangs up: every socket of the call closes at both nodes.
    let bye = "BYE sip:bob@p2p.test SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK9\nFrom: <sip:alice@p2p.test>;tag=a1\nTo: <sip:bob@p2p.test>;tag=b1\nCall-ID: call-1\nCSeq: 2 BYE\nContent-Length: 0\n\n";
    let (held_a, held_b) = (a.anchor.sockets_held(), b.anchor.sockets_held());
    a.anchor.toward_overlay(t1, &mut msg(bye));
    b.anchor.toward_phone(t1, &mut msg(bye)).unwrap();
    a.outputs(t1);
    b.outputs(t1);
    assert!(a.anchor.calls().is_empty() && b.anchor.calls().is_empty());
    assert_eq!(a.closed.len(), 2, "the leg and the pair");
    assert_eq!(b.closed.len(), 2);
    assert!(a.closed.contains(&a_pair) && b.closed.contains(&b_pair));
    // Freed, then refilled to the spares.
    assert!(a.anchor.sockets_held() <= held_a && b.anchor.sockets_held() <= held_b);
    assert_eq!(a.anchor.totals().media_packets_out, 1, "ended calls still count");
}

#[test]
fn an_answer_from_a_node_without_the_callees_key_gets_no_media() {
    let t0 = Instant::now();
    let mut fx = Fixture::new("p2p.test");
    let mut a = Node::new(&mut fx, "sip:alice@p2p.test", "192.0.2.1", t0);
    // Mallory's node answers alice's call to bob with mallory's own enrolled key.
    let mut m = Node::new(&mut fx, "sip:mallory@p2p.test", "192.0.2.3", t0);
    let mut invite = with_body(INVITE, &sdp(7000));
    a.anchor.toward_overlay(t0, &mut invite);
    // Mallory's node would refuse the INVITE for bob as callee? It checks the caller only,
    // so it anchors; its answer is signed as mallory.
    m.anchor.toward_phone(t0, &mut invite).unwrap();
    let mut ok = with_body(OK, &sdp(8000));
    m.anchor.toward_overlay(t0, &mut ok);
    a.anchor.toward_phone(t0, &mut ok).unwrap();
    assert_eq!(a.anchor.calls()[0].state, CallState::Refused);
    assert_eq!(a.anchor.totals().calls_refused, 1);
    assert!(!body_text(&ok).contains("p2psip-key"), "the part never reaches the phone");
    // No ICE starts, nothing is ever relayed.
    a.outputs(t0);
    let a_pair = a.anchor.calls.values().next().unwrap().clone_pair();
    a.anchor.handle_input(
        t0,
        MediaInput::Datagram {
            socket: a_pair,
            index: 0,
            from: "127.0.0.1:7000".parse().unwrap(),
            data: Bytes::from_static(&[0x80, 0, 0, 1]),
        },
    );
    assert!(a.outputs(t0).is_empty());
}

#[test]
fn an_offer_whose_certificate_is_not_the_callers_is_refused_with_403() {
    let t0 = Instant::now();
    let mut fx = Fixture::new("p2p.test");
    let mut mallory = Node::new(&mut fx, "sip:mallory@p2p.test", "192.0.2.3", t0);
    let mut b = Node::new(&mut fx, "sip:bob@p2p.test", "192.0.2.2", t0);
    // Mallory's node sends an INVITE claiming to be alice, with its own part.
    let forged = INVITE.replace("From: <sip:alice@p2p.test>", "From: <sip:mallory@p2p.test>");
    let mut invite = with_body(&forged, &sdp(7000));
    mallory.anchor.toward_overlay(t0, &mut invite);
    let body = invite.body.clone();
    let ct = invite.content_type().unwrap().unwrap();
    let mut as_alice = with_body(INVITE, &sdp(7000));
    as_alice.set_body(body, Some(&ct));
    let err = b.anchor.toward_phone(t0, &mut as_alice).unwrap_err();
    assert_eq!(err.status, 403);
    assert!(err.reason.contains("media key not proven"), "{}", err.reason);
    assert!(b.anchor.calls().is_empty());
    assert_eq!(b.anchor.totals().calls_refused, 1);
}

#[test]
fn a_node_without_an_ice_part_leaves_the_call_unanchored() {
    let t0 = Instant::now();
    let mut fx = Fixture::new("p2p.test");
    let mut b = Node::new(&mut fx, "sip:bob@p2p.test", "192.0.2.2", t0);
    let mut invite = with_body(INVITE, &sdp(7000));
    b.anchor.toward_phone(t0, &mut invite).unwrap();
    assert_eq!(relay_port(&invite), 7000, "untouched");
    assert!(b.anchor.calls().is_empty());
}

#[test]
fn a_path_that_never_forms_is_reported_and_frees_everything() {
    let t0 = Instant::now();
    let (mut a, mut b) = two_nodes(t0);
    let mut invite = with_body(INVITE, &sdp(7000));
    a.anchor.toward_overlay(t0, &mut invite);
    b.anchor.toward_phone(t0, &mut invite).unwrap();
    let mut ringing = msg(&OK.replace("200 OK", "180 Ringing"));
    b.anchor.toward_overlay(t0, &mut ringing);
    a.anchor.toward_phone(t0, &mut ringing).unwrap();
    assert!(ringing.body.is_empty(), "a 180 without SDP reaches the phone without a body");
    // Nothing is delivered between the legs: time passes to the connect deadline.
    let mut now = t0;
    let mut event = None;
    for _ in 0..100_000 {
        a.outputs(now);
        b.outputs(now);
        if let Some(e) = a.anchor.poll_event() {
            event = Some(e);
            break;
        }
        now = a.anchor.poll_timeout().unwrap_or(now + Duration::from_millis(10)).max(now + Duration::from_millis(1));
        a.anchor.handle_timeout(now);
    }
    assert_eq!(event, Some(AnchorEvent::PathFailed { call_id: "call-1".into() }));
    assert!(now - t0 >= IceTimers::default().connect_timeout);
    a.outputs(now);
    assert!(a.anchor.calls().is_empty());
    assert_eq!(a.closed.len(), 2);
    assert_eq!(a.anchor.totals().calls_failed, 1);
}

/// Relays one datagram from `from_node`'s phone (on stream `stream`, socket `index`) to the
/// other node and returns what the other node sends to its phone.
fn relay_one(
    from_node: &mut Node,
    to_node: &mut Node,
    now: Instant,
    port: u16,
    index: u8,
    from: &str,
    data: &[u8],
) -> Vec<Send> {
    let pair = *from_node.sockets.iter().find(|(_, a)| a.len() == 2 && a[0].port() == port).unwrap().0;
    from_node.anchor.handle_input(
        now,
        MediaInput::Datagram { socket: pair, index, from: from.parse().unwrap(), data: Bytes::copy_from_slice(data) },
    );
    let mut out = Vec::new();
    for s in from_node.outputs(now) {
        let leg = to_node.leg_socket(s.to).expect("sent to the far leg");
        let src = from_node.local(&s);
        to_node
            .anchor
            .handle_input(now, MediaInput::Datagram { socket: leg, index: 0, from: src, data: Bytes::from(s.bytes) });
        out.extend(to_node.outputs(now));
    }
    out
}

fn two_nodes(t0: Instant) -> (Node, Node) {
    let mut fx = Fixture::new("p2p.test");
    (Node::new(&mut fx, "sip:alice@p2p.test", "192.0.2.1", t0), Node::new(&mut fx, "sip:bob@p2p.test", "192.0.2.2", t0))
}

/// Alice's phone calls bob's with SDP (ports 7000 and 8000), bob's answers; the nodes run until
/// the path is up. Returns when.
fn answered_call(a: &mut Node, b: &mut Node, t0: Instant) -> Instant {
    let mut invite = with_body(INVITE, &sdp(7000));
    a.anchor.toward_overlay(t0, &mut invite);
    b.anchor.toward_phone(t0, &mut invite).unwrap();
    let mut ok = with_body(OK, &sdp(8000));
    b.anchor.toward_overlay(t0, &mut ok);
    a.anchor.toward_phone(t0, &mut ok).unwrap();
    run(a, b, t0, Duration::from_secs(2), |a, b| active(a) && active(b))
}

fn ack(body: Option<&str>) -> Message {
    let head = "ACK sip:bob@127.0.0.1:5062 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK3\nFrom: <sip:alice@p2p.test>;tag=a1\nTo: <sip:bob@p2p.test>;tag=b1\nCall-ID: call-1\nCSeq: 1 ACK\n";
    match body {
        Some(b) => with_body(head, b),
        None => msg(&format!("{head}Content-Length: 0\n\n")),
    }
}

#[test]
fn a_late_offer_is_anchored_from_the_200_and_the_acks_answer() {
    let t0 = Instant::now();
    let (mut a, mut b) = two_nodes(t0);
    // An INVITE without SDP (RFC 3261 §13.2.1): the ICE part travels alone.
    let mut invite = msg(&format!("{INVITE}Content-Length: 0\n\n"));
    a.anchor.toward_overlay(t0, &mut invite);
    assert!(invite.content_type().unwrap().unwrap().is("multipart", "mixed"));
    b.anchor.toward_phone(t0, &mut invite).unwrap();
    assert!(invite.body.is_empty() && invite.content_type().unwrap().is_none(), "bob's phone gets no body");
    // Bob's phone offers in its 200; alice's phone gets it toward alice's relay.
    let mut ok = with_body(OK, &sdp(8000));
    b.anchor.toward_overlay(t0, &mut ok);
    a.anchor.toward_phone(t0, &mut ok).unwrap();
    let a_port = relay_port(&ok);
    // Alice's phone answers in the ACK: her node learns it, bob's phone gets it anchored.
    let mut answer = ack(Some(&sdp(7000)));
    a.anchor.toward_overlay(t0, &mut answer);
    b.anchor.toward_phone(t0, &mut answer).unwrap();
    let b_port = relay_port(&answer);
    assert!(b_port != 7000 && a_port != 8000);
    let t1 = run(&mut a, &mut b, t0, Duration::from_secs(2), |a, b| active(a) && active(b));
    let out = relay_one(&mut a, &mut b, t1, a_port, 0, "127.0.0.1:7000", &[0x80, 0, 0, 1]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, "127.0.0.1:8000".parse().unwrap(), "to bob's phone, where its offer said");
    let out = relay_one(&mut b, &mut a, t1, b_port, 0, "127.0.0.1:8000", &[0x80, 0, 0, 2]);
    assert_eq!(out[0].to, "127.0.0.1:7000".parse().unwrap(), "to alice's phone, where the ACK said");
}

#[test]
fn early_media_on_183_flows_before_the_answer() {
    let t0 = Instant::now();
    let (mut a, mut b) = two_nodes(t0);
    let mut invite = with_body(INVITE, &sdp(7000));
    a.anchor.toward_overlay(t0, &mut invite);
    b.anchor.toward_phone(t0, &mut invite).unwrap();
    let b_port = relay_port(&invite);
    let mut progress = with_body(&OK.replace("200 OK", "183 Session Progress"), &sdp(8000));
    b.anchor.toward_overlay(t0, &mut progress);
    a.anchor.toward_phone(t0, &mut progress).unwrap();
    let a_port = relay_port(&progress);
    let t1 = run(&mut a, &mut b, t0, Duration::from_secs(2), |a, b| active(a) && active(b));
    // Bob's ringback reaches alice's phone before any 200.
    let out = relay_one(&mut b, &mut a, t1, b_port, 0, "127.0.0.1:8000", &[0x80, 8, 0, 1]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, "127.0.0.1:7000".parse().unwrap());
    let _ = a_port;
    // The call is not answered: a 486 ends it at both nodes, every socket closed.
    let mut busy = msg(&format!("{}Content-Length: 0\n\n", OK.replace("200 OK", "486 Busy Here")));
    b.anchor.toward_overlay(t1, &mut busy);
    a.anchor.toward_phone(t1, &mut busy).unwrap();
    a.outputs(t1);
    b.outputs(t1);
    assert!(a.anchor.calls().is_empty() && b.anchor.calls().is_empty());
    assert_eq!((a.closed.len(), b.closed.len()), (2, 2));
}

#[test]
fn several_streams_rtcp_mux_and_a_rejected_stream() {
    let t0 = Instant::now();
    let (mut a, mut b) = two_nodes(t0);
    // Audio with RTCP muxed, and video: bob rejects the video (port 0, RFC 3264 §6).
    let offer = "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 7000 RTP/AVP 0\na=rtcp-mux\nm=video 7002 RTP/AVP 96\na=rtpmap:96 H264/90000\n";
    let answer = "v=0\no=- 2 2 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 8000 RTP/AVP 0\na=rtcp-mux\nm=video 0 RTP/AVP 96\n";
    let mut invite = with_body(INVITE, offer);
    a.anchor.toward_overlay(t0, &mut invite);
    b.anchor.toward_phone(t0, &mut invite).unwrap();
    let streams = Sdp::parse(&invite.body).unwrap().streams();
    assert_eq!(streams.len(), 2);
    assert!(streams[0].rtcp_mux && streams[1].port != 0 && streams[1].port != 7002, "{streams:?}");
    let mut ok = with_body(OK, answer);
    b.anchor.toward_overlay(t0, &mut ok);
    a.anchor.toward_phone(t0, &mut ok).unwrap();
    let to_alice = Sdp::parse(&ok.body).unwrap().streams();
    assert_eq!(to_alice[1].port, 0, "a rejected stream stays rejected");
    let a_port = to_alice[0].port;
    let t1 = run(&mut a, &mut b, t0, Duration::from_secs(2), |a, b| active(a) && active(b));
    // RTCP that alice's phone muxes on its RTP port reaches bob's phone's RTP port (it muxes).
    let rtcp = [0x81, 200, 0, 1, 1, 2, 3, 4];
    let out = relay_one(&mut a, &mut b, t1, a_port, 0, "127.0.0.1:7000", &rtcp);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].index, out[0].to), (0, "127.0.0.1:8000".parse().unwrap()));
}

#[test]
fn forked_answers_carry_the_same_part_and_cancel_ends_the_call() {
    let t0 = Instant::now();
    let (mut a, mut b) = two_nodes(t0);
    let mut invite = with_body(INVITE, &sdp(7000));
    a.anchor.toward_overlay(t0, &mut invite);
    // Bob's node forks to two phones: the INVITE is anchored once, for both branches.
    b.anchor.toward_phone(t0, &mut invite).unwrap();
    let mut again = with_body(INVITE, &sdp(7000));
    a.anchor.toward_overlay(t0, &mut again);
    b.anchor.toward_phone(t0, &mut again).unwrap();
    assert_eq!(b.anchor.calls().len(), 1);
    assert_eq!(relay_port(&invite), relay_port(&again), "one relay for the call");
    // Two phones ring (two to-tags): each 180 carries bob's node's part, and alice's node
    // checks the first and ignores the repeat.
    for tag in ["b1", "b2"] {
        let mut ringing = msg(&format!(
            "{}Content-Length: 0\n\n",
            OK.replace("200 OK", "180 Ringing").replace("tag=b1", &format!("tag={tag}"))
        ));
        b.anchor.toward_overlay(t0, &mut ringing);
        assert!(body_text(&ringing).contains("a=p2psip-key:"));
        a.anchor.toward_phone(t0, &mut ringing).unwrap();
        assert!(ringing.body.is_empty());
    }
    assert_eq!(a.anchor.totals().calls_refused, 0);
    // Alice cancels: both nodes end the call when the CANCEL crosses.
    let cancel = "CANCEL sip:bob@p2p.test SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1\nFrom: <sip:alice@p2p.test>;tag=a1\nTo: <sip:bob@p2p.test>\nCall-ID: call-1\nCSeq: 1 CANCEL\nContent-Length: 0\n\n";
    a.anchor.toward_overlay(t0, &mut msg(cancel));
    b.anchor.toward_phone(t0, &mut msg(cancel)).unwrap();
    a.outputs(t0);
    b.outputs(t0);
    assert!(a.anchor.calls().is_empty() && b.anchor.calls().is_empty());
}

#[test]
fn a_phone_that_vanishes_ends_the_relay_at_the_idle_timeout_not_the_node() {
    let t0 = Instant::now();
    let (mut a, mut b) = two_nodes(t0);
    let t1 = answered_call(&mut a, &mut b, t0);
    // Nothing more from either phone: the nodes keep consent between them, but after the
    // idle timeout each ends its relay and closes the call's sockets.
    let idle = AnchorConfig::new("127.0.0.1".parse().unwrap(), "192.0.2.1".parse().unwrap()).idle_timeout;
    let end = run(&mut a, &mut b, t1, idle + Duration::from_secs(5), |a, b| {
        a.anchor.calls().is_empty() && b.anchor.calls().is_empty()
    });
    assert!(end - t0 >= idle, "ended only at the idle timeout: {:?}", end - t0);
    assert_eq!((a.closed.len(), b.closed.len()), (2, 2));
}

#[test]
fn a_held_call_may_stay_silent_longer() {
    let t0 = Instant::now();
    let (mut a, mut b) = two_nodes(t0);
    let t1 = answered_call(&mut a, &mut b, t0);
    // Alice's phone holds (a re-INVITE with a=sendonly, RFC 3264 §8.4); both nodes see it.
    let held = sdp(7000).replace("a=sendrecv", "a=sendonly");
    let mut reinvite = with_body(
        &INVITE.replace("To: <sip:bob@p2p.test>", "To: <sip:bob@p2p.test>;tag=b1").replace("CSeq: 1", "CSeq: 2"),
        &held,
    );
    a.anchor.toward_overlay(t1, &mut reinvite);
    b.anchor.toward_phone(t1, &mut reinvite).unwrap();
    assert!(body_text(&reinvite).contains("a=sendonly"), "the direction reaches bob's phone");
    assert!(a.anchor.calls()[0].held && b.anchor.calls()[0].held);
    // Silent for twice the idle timeout: the held call stays.
    let idle = AnchorConfig::new("127.0.0.1".parse().unwrap(), "192.0.2.1".parse().unwrap()).idle_timeout;
    let mut now = t1;
    while now < t1 + idle * 2 {
        now += Duration::from_secs(1);
        a.anchor.handle_timeout(now);
        b.anchor.handle_timeout(now);
        a.outputs(now);
        b.outputs(now);
    }
    assert_eq!((a.anchor.calls().len(), b.anchor.calls().len()), (1, 1), "still there after {:?}", now - t1);
}

#[test]
fn an_update_holds_and_resumes_like_a_re_invite() {
    let t0 = Instant::now();
    let (mut a, mut b) = two_nodes(t0);
    let t1 = answered_call(&mut a, &mut b, t0);
    // RFC 3311: bob's phone holds with an UPDATE; its 200 carries alice's phone's answer.
    let update_head = "UPDATE sip:alice@127.0.0.1:5062 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK7\nFrom: <sip:bob@p2p.test>;tag=b1\nTo: <sip:alice@p2p.test>;tag=a1\nCall-ID: call-1\nCSeq: 5 UPDATE\n";
    let mut update = with_body(update_head, &sdp(8000).replace("a=sendrecv", "a=sendonly"));
    b.anchor.toward_overlay(t1, &mut update);
    a.anchor.toward_phone(t1, &mut update).unwrap();
    assert!(body_text(&update).contains("a=sendonly") && relay_port(&update) != 8000, "anchored for alice's phone");
    let ok_head = "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK7\nFrom: <sip:bob@p2p.test>;tag=b1\nTo: <sip:alice@p2p.test>;tag=a1\nCall-ID: call-1\nCSeq: 5 UPDATE\n";
    let mut ok = with_body(ok_head, &sdp(7000).replace("a=sendrecv", "a=recvonly"));
    a.anchor.toward_overlay(t1, &mut ok);
    b.anchor.toward_phone(t1, &mut ok).unwrap();
    assert!(!body_text(&ok).contains("p2psip-key"), "no ICE part on an UPDATE's answer");
    assert!(a.anchor.calls()[0].held && b.anchor.calls()[0].held);
    // Resumed by another UPDATE.
    let mut resume = with_body(&update_head.replace("CSeq: 5", "CSeq: 6"), &sdp(8000));
    b.anchor.toward_overlay(t1, &mut resume);
    a.anchor.toward_phone(t1, &mut resume).unwrap();
    let mut ok = with_body(&ok_head.replace("CSeq: 5", "CSeq: 6"), &sdp(7000));
    a.anchor.toward_overlay(t1, &mut ok);
    b.anchor.toward_phone(t1, &mut ok).unwrap();
    assert!(!a.anchor.calls()[0].held && !b.anchor.calls()[0].held);
}
