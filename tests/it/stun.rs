//! The overlay port answers STUN Binding requests (RFC 8489) itself, as clients' keep-alives
//! and nodes learning their public address need: a real STUN client (coturn's
//! `turnutils_stunclient`, Debian package `coturn`) learns its own address from a node. The
//! addresses 127.0.0.91–92 belong to this file.

use std::process::Command;

use crate::common::Node;

#[test]
fn a_real_stun_client_learns_its_address_from_the_overlay_port() {
    let node = Node::start("127.0.0.91");
    // coturn's client binds 127.0.0.92 and asks the overlay port; `timeout` bounds it should
    // no answer come (it retransmits, then gives up).
    let out = Command::new("timeout")
        .args(["20", "turnutils_stunclient", "-L", "127.0.0.92", "-p", &node.listen.port().to_string()])
        .arg(node.listen.ip().to_string())
        .output()
        .expect("run turnutils_stunclient (Debian package coturn)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "turnutils_stunclient: {}\n{}", text, String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("UDP reflexive addr: 127.0.0.92:"), "{text}");
    assert!(node.counter("stun_answered") >= 1, "{}", node.log());
}
