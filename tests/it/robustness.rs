//! A node survives hostile input: a flood of garbage datagrams does not stop it answering,
//! a TCP stream with broken framing (RFC 3261 §18.3) closes that connection only, a stray
//! response relays nothing, and the status API answers no other site.

// The flood is paced with the real clock.
#![allow(clippy::disallowed_methods)]

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{http_get_with_host, options_request, read_tcp_response, udp_options, wait_for, Node};

const GARBAGE_DATAGRAMS: usize = 20_000;
const OPTIONS_DURING_FLOOD: usize = 10;
/// The flood goes out in bursts, about two seconds in all, so the OPTIONS are spread over it.
const BURST: usize = 200;
const BURST_INTERVAL: Duration = Duration::from_millis(20);

/// Deterministic junk: random bytes, and now and then something that starts like SIP.
fn garbage(i: usize, state: &mut u64, buf: &mut Vec<u8>) {
    let mut next = || {
        // xorshift64: no RNG crate needed for junk.
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    };
    buf.clear();
    if i.is_multiple_of(10) {
        buf.extend_from_slice(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP \x01\x02;;\r\nContent-Length: 99999\r\n\r\n");
    }
    let len = 1 + (next() % 1200) as usize;
    buf.extend((0..len).map(|_| next() as u8));
}

#[test]
fn garbage_flood_does_not_stop_options() {
    let node = Node::start("127.0.0.31");
    let target = node.proxy;
    let sent = Arc::new(AtomicUsize::new(0));
    let flood = {
        let sent = Arc::clone(&sent);
        std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.31:0").expect("bind flood socket");
            let (mut state, mut buf) = (0x9e37_79b9_7f4a_7c15u64, Vec::new());
            for i in 0..GARBAGE_DATAGRAMS {
                garbage(i, &mut state, &mut buf);
                // A full socket buffer on loopback is not a test failure; the datagram is lost.
                let _ = sock.send_to(&buf, target);
                sent.store(i + 1, Ordering::Relaxed);
                if (i + 1) % BURST == 0 {
                    std::thread::sleep(BURST_INTERVAL);
                }
            }
        })
    };
    let client = UdpSocket::bind("127.0.0.31:0").expect("bind client socket");
    let mut sent_at_first_ask = 0;
    for i in 0..OPTIONS_DURING_FLOOD {
        // Spread the requests over the flood, one per eleventh of it.
        let due = (i + 1) * GARBAGE_DATAGRAMS / (OPTIONS_DURING_FLOOD + 1);
        let now = wait_for(Duration::from_secs(30), || Some(sent.load(Ordering::Relaxed)).filter(|n| *n >= due));
        let now = now.expect("the flood is making progress");
        if i == 0 {
            sent_at_first_ask = now;
        }
        let code = udp_options(&client, target, &format!("flood-{i}"));
        assert_eq!(code, Some(200), "OPTIONS #{i} during the flood; log tail:\n{}", tail(&node.log()));
    }
    let sent_at_last_answer = sent.load(Ordering::Relaxed);
    flood.join().expect("flood thread");
    let parse_errors = wait_for(Duration::from_secs(10), || Some(node.counter("parse_errors")).filter(|n| *n > 0));
    assert!(parse_errors.is_some(), "parse_errors did not grow: {}", node.status_json());
    eprintln!(
        "garbage datagrams sent: {sent_at_first_ask} at the first OPTIONS, {sent_at_last_answer} at the last \
         answer (of {GARBAGE_DATAGRAMS}); counters: {}",
        node.status_json()["counters"]
    );
    // Still alive and answering after the flood.
    assert_eq!(udp_options(&client, target, "after-flood"), Some(200));
}

#[test]
fn tcp_framing_error_closes_only_that_connection() {
    let node = Node::start("127.0.0.32");
    let target = node.proxy;
    let mut good = TcpStream::connect(target).expect("connect good");
    let mut bad = TcpStream::connect(target).expect("connect bad");
    let timeout = Duration::from_secs(5);

    let local = good.local_addr().expect("local address");
    good.write_all(options_request(target, local, "TCP", "good-1").as_bytes()).expect("write");
    assert_eq!(read_tcp_response(&mut good, timeout), Some(200));

    let local = bad.local_addr().expect("local address");
    let broken = options_request(target, local, "TCP", "bad-1").replace("Content-Length: 0", "Content-Length: -5");
    bad.write_all(broken.as_bytes()).expect("write");
    bad.set_read_timeout(Some(timeout)).expect("set timeout");
    let mut buf = [0u8; 1024];
    match bad.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected the broken connection to be closed, got {other:?}"),
    }

    let local = good.local_addr().expect("local address");
    good.write_all(options_request(target, local, "TCP", "good-2").as_bytes()).expect("write");
    assert_eq!(read_tcp_response(&mut good, timeout), Some(200), "the other connection still works");
    let mut fresh = TcpStream::connect(target).expect("connect fresh");
    let local = fresh.local_addr().expect("local address");
    fresh.write_all(options_request(target, local, "TCP", "fresh-1").as_bytes()).expect("write");
    assert_eq!(read_tcp_response(&mut fresh, timeout), Some(200), "new connections still work");
    assert!(node.counter("parse_errors") >= 1, "the framing error is counted");
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// docs/security.md, C1, against a running node. One UDP
/// datagram, a `200 OK` whose top Via names the node's own proxy address and whose next Via
/// names a TCP service on loopback, used to make the node connect there and write the
/// attacker's body. Now nothing leaves: the stand-in service sees no connection and the node
/// opens none. No clock decides the outcome: the node opens a connection (which `/status`
/// counts at once) in the same turn as the datagram that asks for it, so once `/status` reports
/// the probe as a dropped stray, everything the probe could cause has happened.
#[test]
fn a_stray_response_to_the_overlay_port_reaches_no_local_service() {
    let node = Node::start("127.0.0.61");
    // The stand-in for Redis: a TCP listener on loopback that the probe names.
    let service = TcpListener::bind("127.0.0.61:0").expect("bind the stand-in service");
    service.set_nonblocking(true).unwrap();
    let target = service.local_addr().unwrap();
    let attacker = UdpSocket::bind("127.0.0.62:0").unwrap();
    for (listener, face) in [(node.listen, "overlay"), (node.proxy, "proxy")] {
        let before = node.counter("stray_responses");
        let probe = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {proxy};branch=z9hG4bK{face}\r\n\
             Via: SIP/2.0/TCP {target};branch=z9hG4bKx\r\nFrom: <sip:a@p2p.test>;tag=1\r\n\
             To: <sip:b@p2p.test>;tag=2\r\nCall-ID: relay-{face}\r\nCSeq: 1 INVITE\r\n\
             Content-Length: 10\r\n\r\nFLUSHALL\r\n",
            proxy = node.proxy
        );
        attacker.send_to(probe.as_bytes(), listener).unwrap();
        let dropped = wait_for(Duration::from_secs(10), || (node.counter("stray_responses") > before).then_some(()));
        assert!(dropped.is_some(), "the probe to the {face} port was not seen");
        assert_eq!(node.status_json()["tcp_connections"], 0, "the node opened a connection");
        assert!(service.accept().is_err(), "the stand-in service was reached from the {face} port");
    }
    // Still answering.
    assert_eq!(udp_options(&attacker, node.listen, "after-the-probes"), Some(200));
}

/// docs/security.md, M4: a page that rebinds its name to 127.0.0.1 sends its own
/// name as `Host`, and a cross-site page is marked by the browser; both get 403, and no answer
/// carries a CORS header.
#[test]
fn the_status_api_answers_only_requests_for_this_machine() {
    let node = Node::start("127.0.0.63");
    let ok = http_get_with_host(node.http, "/status", &node.http.to_string(), "").expect("an answer");
    assert_eq!(ok.0, 200, "{}", ok.1);
    assert!(!ok.2.to_ascii_lowercase().contains("access-control-allow"), "{}", ok.2);
    let local = http_get_with_host(node.http, "/health", &format!("localhost:{}", node.http.port()), "").unwrap();
    assert_eq!(local.0, 200);
    for (host, extra) in [
        ("evil.example", ""),
        ("evil.example:5090", ""),
        ("192.0.2.1", ""),
        (&*node.http.to_string(), "Sec-Fetch-Site: cross-site\r\n"),
        (&*node.http.to_string(), "Origin: http://evil.example\r\n"),
    ] {
        for path in ["/status", "/lookup?key=sip:bob@p2p.test"] {
            let (code, body, _) = http_get_with_host(node.http, path, host, extra).expect("an answer");
            assert_eq!(code, 403, "Host {host} {extra:?} {path}: {body}");
        }
    }
}

/// docs/security.md, H3: a TCP connection that never sends a message is closed,
/// and one source cannot hold more than its share of connections; the node keeps answering.
#[test]
fn tcp_connections_are_capped_per_source_and_silent_ones_closed() {
    let node = Node::start("127.0.0.64");
    // Silent: closed by the node (EOF) once the first-message deadline passes.
    let mut silent = TcpStream::connect(node.listen).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(silent.read(&mut byte).ok(), Some(0), "the node should close a connection that says nothing");
    // Forty from one address: the ones past the per-source cap are closed at once.
    let held: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(node.listen).unwrap()).collect();
    let refused = wait_for(Duration::from_secs(10), || {
        let tcp = &node.status_json()["tcp"];
        (tcp["refused_source_cap"].as_u64()? >= 8).then(|| tcp.clone())
    });
    assert!(refused.is_some(), "no connection was refused: {}", node.status_json()["tcp"]);
    assert!(node.status_json()["tcp"]["timed_out"].as_u64().unwrap() >= 1);
    let udp = UdpSocket::bind("127.0.0.65:0").unwrap();
    assert_eq!(udp_options(&udp, node.listen, "during-the-tcp-flood"), Some(200));
    drop(held);
}

/// docs/security.md, H3: at the descriptor limit, `accept()` fails with EMFILE
/// and leaves the socket readable. The node pauses that listener instead of spinning on it,
/// warns about it once (not once per turn), and keeps answering over UDP.
#[test]
fn out_of_descriptors_the_node_pauses_accepting_and_keeps_answering() {
    let node = Node::start("127.0.0.66");
    let pid = node.process.pid().to_string();
    let limited = std::process::Command::new("prlimit").args(["--pid", &pid, "--nofile=40:40"]).status();
    assert!(limited.is_ok_and(|s| s.success()), "prlimit (util-linux) could not lower the node's limit");
    // More connections than descriptors, from three addresses (under the per-source cap).
    let mut held = Vec::new();
    for i in 0..60 {
        let local = std::net::SocketAddr::new(crate::common::ip(&format!("127.0.0.{}", 67 + i % 3)), 0);
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&local.into()).unwrap();
        if socket.connect(&node.listen.into()).is_ok() {
            held.push(socket);
        }
    }
    // (The status API cannot accept either: the log tells.)
    let warned = wait_for(Duration::from_secs(10), || node.log().contains("TCP accept failed").then_some(()));
    assert!(warned.is_some(), "no accept failed:\n{}", node.log());
    let udp = UdpSocket::bind("127.0.0.70:0").unwrap();
    assert_eq!(udp_options(&udp, node.listen, "at-the-descriptor-limit"), Some(200));
    // Descriptors back: paused, not spinning, and one warning in all.
    drop(held);
    let tcp = wait_for(Duration::from_secs(10), || Some(crate::common::http_get(node.http, "/status")?.1))
        .map(|body| serde_json::from_str::<serde_json::Value>(&body).unwrap()["tcp"].clone())
        .expect("the status API answers again");
    let errors = tcp["accept_errors"].as_u64().unwrap();
    assert!((1..100).contains(&errors), "the accept loop spun: {tcp}");
    assert_eq!(node.log().matches("TCP accept failed").count(), 1, "{}", node.log());
}
