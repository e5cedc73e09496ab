//! Issue 11 item 1 against a running node: the security review's relay probe (C1). One UDP
//! datagram to the overlay port, a `200 OK` whose top Via names the node's own proxy address
//! and whose next Via names a TCP service on loopback, used to make the node connect there and
//! write the attacker's body. Now nothing leaves: the stand-in service sees no connection, and
//! the node opens none.
//!
//! No clock decides the outcome: the node handles datagrams in order and opens a connection
//! (which `/status` counts at once) in the same turn as the datagram that asks for it, so once
//! `/status` reports the probe as a dropped stray, everything the probe could cause has been.

mod common;

use std::net::{TcpListener, UdpSocket};
use std::time::Duration;

use common::{udp_options, wait_for, Node};

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
