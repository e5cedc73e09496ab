//! The media anchor's per-packet cost (docs/performance.md, "Media relay"): two anchors,
//! alice's node and bob's, with a call set up between them in virtual time (the real ICE and
//! key agreement), then G.711 datagrams (172 bytes) relayed phone → alice's anchor (latch,
//! seal) → bob's anchor (open, replay check, consent) → bob's phone, through the sans-IO code
//! the daemon runs, without sockets.
//!
//! Prints, per relayed packet: the time through both anchors (p50 and p99 of single packets,
//! timed one by one), the mean CPU time per node, and what that makes one core able to relay:
//! datagrams per second and G.711 calls (each call is 50 packets a second each way; a node
//! handles every packet once, on its way in from its phone or out to it: 100 per call-second).
//! The socket work (one receive and one send per datagram) is not in these figures; see
//! docs/performance.md for what it adds.
//!
//! `cargo bench --bench media`
// A benchmark: the real clock and the OS's randomness are what it measures with.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use bytes::Bytes;
use p2psip::enrollment::{build_csr, EnrollmentCa};
use p2psip::identity::{Aor, KeyPair, SharedRandom, VerifiedCache};
use p2psip::media::anchor::{Anchor, AnchorConfig, AnchorIdentity, MediaInput, MediaOutput};
use p2psip::media::call::{CallState, Send};
use p2psip::media::pool::{SocketId, SocketKind};
use p2psip::sip::Message;
use ring::rand::SystemRandom;

const NOW_UNIX: u64 = 1_796_000_000;

struct Node {
    anchor: Anchor,
    sockets: BTreeMap<SocketId, Vec<SocketAddr>>,
    /// The real UDP sockets behind them, on loopback.
    udp: BTreeMap<SocketId, Vec<UdpSocket>>,
}

impl Node {
    fn outputs(&mut self, now: Instant) -> Vec<Send> {
        let mut sends = Vec::new();
        while let Some(o) = self.anchor.poll_output() {
            match o {
                MediaOutput::Open { socket, kind, ip, .. } => {
                    let n = if kind == SocketKind::Leg { 1 } else { 2 };
                    let udp: Vec<UdpSocket> =
                        (0..n).map(|_| UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind")).collect();
                    let addrs: Vec<SocketAddr> = udp.iter().map(|u| u.local_addr().expect("addr")).collect();
                    self.sockets.insert(socket, addrs.clone());
                    self.udp.insert(socket, udp);
                    self.anchor.handle_input(now, MediaInput::Opened { socket, addrs });
                }
                MediaOutput::Close { socket } => {
                    self.sockets.remove(&socket);
                    self.udp.remove(&socket);
                }
                MediaOutput::Send(s) => sends.push(s),
            }
        }
        sends
    }

    fn leg(&self, addr: SocketAddr) -> Option<SocketId> {
        self.sockets.iter().find(|(_, a)| a.len() == 1 && a[0] == addr).map(|(id, _)| *id)
    }

    fn local(&self, s: &Send) -> SocketAddr {
        self.sockets[&s.socket][s.index as usize]
    }
}

fn node(
    ca: &EnrollmentCa,
    names: &mut BTreeMap<Aor, p2psip::identity::PublicKey>,
    aor: &str,
    leg_ip: &str,
    t0: Instant,
) -> Node {
    let rng = SystemRandom::new();
    let key = KeyPair::generate(&rng).expect("key");
    let aor = Aor::parse(aor).expect("aor");
    let csr = build_csr(&aor, &key, &rng).expect("csr");
    let cert = ca.issue(names, &csr, &aor, NOW_UNIX - 86_400, NOW_UNIX + 86_400, &rng).expect("issued").certificate_der;
    let leg_ip: IpAddr = leg_ip.parse().expect("ip");
    let mut anchor = Anchor::new(AnchorConfig::new("127.0.0.1".parse().expect("ip"), leg_ip), 7);
    let shared: SharedRandom = std::sync::Arc::new(SystemRandom::new());
    anchor.set_identity(AnchorIdentity {
        key,
        cert,
        aor,
        rng: shared,
        ids: VerifiedCache::new(ca.trust_anchor().expect("root"), 16),
        unix_at_start: NOW_UNIX,
        started: t0,
    });
    let mut n = Node { anchor, sockets: BTreeMap::new(), udp: BTreeMap::new() };
    n.outputs(t0);
    n
}

fn msg(text: &str) -> Message {
    p2psip::sip::parse(Bytes::from(text.replace('\n', "\r\n"))).expect("parses")
}

fn with_sdp(head: &str, port: u16) -> Message {
    let sdp = format!("v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio {port} RTP/AVP 0\n");
    let len = sdp.replace('\n', "\r\n").len();
    msg(&format!("{head}Content-Type: application/sdp\nContent-Length: {len}\n\n{sdp}"))
}

fn port_of(m: &Message) -> u16 {
    p2psip::sdp::Sdp::parse(&m.body).expect("sdp").streams()[0].port
}

/// Delivers the legs' datagrams to each other until both calls are active.
fn connect(a: &mut Node, b: &mut Node, t0: Instant) -> Instant {
    let mut now = t0;
    for _ in 0..100_000 {
        let mut moved = false;
        for (from, to) in [(0, 1), (1, 0)] {
            let (src, dst) = if from == 0 { (&mut *a, &mut *b) } else { (&mut *b, &mut *a) };
            for s in src.outputs(now) {
                let origin = src.local(&s);
                if let Some(leg) = dst.leg(s.to) {
                    dst.anchor.handle_input(
                        now,
                        MediaInput::Datagram { socket: leg, index: 0, from: origin, data: Bytes::from(s.bytes) },
                    );
                    moved = true;
                }
            }
            let _ = to;
        }
        let active = |n: &Node| n.anchor.calls().first().is_some_and(|c| c.state == CallState::Active);
        if active(a) && active(b) {
            return now;
        }
        if !moved {
            now = [a.anchor.poll_timeout(), b.anchor.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now)
                .max(now + Duration::from_micros(100));
            a.anchor.handle_timeout(now);
            b.anchor.handle_timeout(now);
        }
    }
    panic!("the call never became active");
}

fn main() {
    let rng = SystemRandom::new();
    let ca = EnrollmentCa::create(
        "p2p.test",
        KeyPair::generate(&rng).expect("key"),
        NOW_UNIX - 86_400,
        NOW_UNIX + 86_400,
        &rng,
    )
    .expect("ca");
    let mut names = BTreeMap::new();
    let t0 = Instant::now();
    // Both nodes on loopback: real sockets carry the second measurement.
    let mut a = node(&ca, &mut names, "sip:alice@p2p.test", "127.0.0.1", t0);
    let mut b = node(&ca, &mut names, "sip:bob@p2p.test", "127.0.0.1", t0);
    let invite = "INVITE sip:bob@p2p.test SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1\nFrom: <sip:alice@p2p.test>;tag=a1\nTo: <sip:bob@p2p.test>\nCall-ID: bench-1\nCSeq: 1 INVITE\nMax-Forwards: 70\n";
    let ok = "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1\nFrom: <sip:alice@p2p.test>;tag=a1\nTo: <sip:bob@p2p.test>;tag=b1\nCall-ID: bench-1\nCSeq: 1 INVITE\n";
    let mut inv = with_sdp(invite, 7000);
    a.anchor.toward_overlay(t0, &mut inv);
    b.anchor.toward_phone(t0, &mut inv).expect("anchored");
    let b_port = port_of(&inv);
    let mut answer = with_sdp(ok, 8000);
    b.anchor.toward_overlay(t0, &mut answer);
    a.anchor.toward_phone(t0, &mut answer).expect("anchored");
    let a_port = port_of(&answer);
    let now = connect(&mut a, &mut b, t0);
    let a_pair = *a.sockets.iter().find(|(_, s)| s.len() == 2 && s[0].port() == a_port).expect("pair").0;
    let phone: SocketAddr = "127.0.0.1:7000".parse().expect("addr");

    // One G.711 packet: a 12-byte RTP header and 160 bytes of audio.
    let mut rtp = vec![0u8; 172];
    rtp[0] = 0x80;
    let packets = 300_000usize;
    let mut each = Vec::with_capacity(packets);
    let (mut time_a, mut time_b) = (Duration::ZERO, Duration::ZERO);
    let mut delivered = 0usize;
    for seq in 0..packets {
        rtp[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
        let data = Bytes::copy_from_slice(&rtp);
        let start = Instant::now();
        a.anchor.handle_input(now, MediaInput::Datagram { socket: a_pair, index: 0, from: phone, data });
        let Some(MediaOutput::Send(frame)) = a.anchor.poll_output() else { panic!("no frame") };
        let mid = Instant::now();
        let leg = b.leg(frame.to).expect("b's leg");
        let origin = a.local(&frame);
        b.anchor.handle_input(
            now,
            MediaInput::Datagram { socket: leg, index: 0, from: origin, data: Bytes::from(frame.bytes) },
        );
        let out = b.anchor.poll_output();
        let end = Instant::now();
        if matches!(out, Some(MediaOutput::Send(ref s)) if s.bytes.len() == rtp.len()) {
            delivered += 1;
        }
        time_a += mid - start;
        time_b += end - mid;
        each.push(end - start);
    }
    assert_eq!(delivered, packets, "every packet reached bob's phone");
    each.sort_unstable();
    let pct = |p: f64| each[((each.len() as f64 * p) as usize).min(each.len() - 1)];
    let per_node = (time_a + time_b) / (2 * packets as u32);
    let per_core = 1.0 / per_node.as_secs_f64();
    println!("media relay, {packets} G.711 datagrams (172 bytes) phone → alice's anchor → bob's anchor → phone");
    println!(
        "  through both anchors: p50 {:.2} µs, p99 {:.2} µs",
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6
    );
    println!(
        "  CPU per datagram: alice's anchor (seal) {:.2} µs, bob's (open) {:.2} µs, mean per node {:.2} µs",
        time_a.as_secs_f64() * 1e6 / packets as f64,
        time_b.as_secs_f64() * 1e6 / packets as f64,
        per_node.as_secs_f64() * 1e6
    );
    println!(
        "  one core: {:.0} datagrams/s, {:.0} G.711 calls (100 datagrams per call-second at a node)",
        per_core,
        per_core / 100.0
    );
    sockets(&mut a, &mut b, a_pair, b_port, &rtp);
}

/// The same path over real UDP sockets on loopback, one thread doing what both daemons' loops
/// do (receive, hand to the anchor, send): alice's phone → alice's relay port → alice's leg →
/// bob's leg → bob's relay port → bob's phone. Against the direct path (phone to phone, one
/// hop), this is what the anchors add per packet, and the CPU per datagram including the
/// socket calls.
fn sockets(a: &mut Node, b: &mut Node, a_pair: SocketId, b_port: u16, rtp: &[u8]) {
    let phone_a = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let phone_b = UdpSocket::bind("127.0.0.1:0").expect("bind");
    // A lost datagram fails the run instead of hanging it.
    for u in [&phone_a, &phone_b].into_iter().chain(a.udp.values().flatten()).chain(b.udp.values().flatten()) {
        u.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    }
    let relay_a = a.sockets[&a_pair][0];
    // Bob's phone's address: where bob's anchor sends (its SDP said 127.0.0.1:8000); latch it
    // on the real socket by sending one packet from it first.
    let b_pair = *b.sockets.iter().find(|(_, s)| s.len() == 2 && s[0].port() == b_port).expect("b's pair").0;
    phone_b.send_to(rtp, b.sockets[&b_pair][0]).expect("latch");
    let mut buf = [0u8; 2048];
    let (n, from) = b.udp[&b_pair][0].recv_from(&mut buf).expect("latch packet");
    let now = Instant::now();
    b.anchor.handle_input(
        now,
        MediaInput::Datagram { socket: b_pair, index: 0, from, data: Bytes::copy_from_slice(&buf[..n]) },
    );
    for s in b.outputs(now) {
        let _ = s; // bob's anchor sends the latch packet on to alice: not measured
    }
    let packets = 100_000usize;
    let mut each = Vec::with_capacity(packets);
    let mut direct = Vec::with_capacity(packets);
    let cpu = |f: &mut dyn FnMut()| {
        let before = cpu_time();
        f();
        cpu_time() - before
    };
    let mut relayed_cpu = Duration::ZERO;
    let mut delivered = 0;
    relayed_cpu += cpu(&mut || {
        for _ in 0..packets {
            let start = Instant::now();
            phone_a.send_to(rtp, relay_a).expect("send");
            let (n, from) = a.udp[&a_pair][0].recv_from(&mut buf).expect("recv at a");
            a.anchor.handle_input(
                start,
                MediaInput::Datagram { socket: a_pair, index: 0, from, data: Bytes::copy_from_slice(&buf[..n]) },
            );
            let Some(MediaOutput::Send(f)) = a.anchor.poll_output() else { panic!("no frame") };
            a.udp[&f.socket][f.index as usize].send_to(&f.bytes, f.to).expect("send frame");
            let leg = b.leg(f.to).expect("b's leg");
            let (n, from) = b.udp[&leg][0].recv_from(&mut buf).expect("recv at b");
            b.anchor.handle_input(
                start,
                MediaInput::Datagram { socket: leg, index: 0, from, data: Bytes::copy_from_slice(&buf[..n]) },
            );
            let Some(MediaOutput::Send(out)) = b.anchor.poll_output() else { panic!("not relayed") };
            b.udp[&out.socket][out.index as usize].send_to(&out.bytes, out.to).expect("send to phone");
            let (n, _) = phone_b.recv_from(&mut buf).expect("recv at phone");
            if n == rtp.len() {
                delivered += 1;
            }
            each.push(start.elapsed());
        }
    });
    assert_eq!(delivered, packets);
    // The direct path: alice's phone to bob's phone, one hop.
    let direct_cpu = cpu(&mut || {
        for _ in 0..packets {
            let start = Instant::now();
            phone_a.send_to(rtp, phone_b.local_addr().expect("addr")).expect("send");
            let _ = phone_b.recv_from(&mut buf).expect("recv");
            direct.push(start.elapsed());
        }
    });
    each.sort_unstable();
    direct.sort_unstable();
    let pct = |v: &[Duration], p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)].as_secs_f64() * 1e6;
    println!("over loopback sockets, {packets} datagrams, one thread doing both daemons' work:");
    println!(
        "  phone to phone through both anchors: p50 {:.1} µs, p99 {:.1} µs; direct: p50 {:.1} µs, p99 {:.1} µs; added: p50 {:.1} µs, p99 {:.1} µs",
        pct(&each, 0.5),
        pct(&each, 0.99),
        pct(&direct, 0.5),
        pct(&direct, 0.99),
        pct(&each, 0.5) - pct(&direct, 0.5),
        pct(&each, 0.99) - pct(&direct, 0.99)
    );
    let per_node = (relayed_cpu.saturating_sub(direct_cpu)).as_secs_f64() / (2.0 * packets as f64);
    println!(
        "  CPU per datagram per node, socket calls included (the anchored path's less the direct one's, halved): {:.2} µs; one core: {:.0} datagrams/s, {:.0} G.711 calls",
        per_node * 1e6,
        1.0 / per_node,
        1.0 / per_node / 100.0
    );
}

/// This thread's CPU time (user and system), from /proc.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat; after the ")" they are the 12th and 13th.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}
