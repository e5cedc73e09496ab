//! A node survives hostile input: a flood of garbage datagrams does not stop it answering,
//! and a TCP stream with broken framing (RFC 3261 §18.3) closes that connection only.

// The flood is paced with the real clock.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{options_request, read_tcp_response, udp_options, wait_for, Node};

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
