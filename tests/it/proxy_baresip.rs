//! Real softphones through one node: two headless baresip phones, alice and bob,
//! register with digest authentication; alice calls bob, bob answers automatically, RTP flows
//! both ways (baresip's own packet counters, read from its log); alice hangs up; alice sends
//! bob a MESSAGE; a wrong password is refused; an unknown user is 404; once bob's phone is
//! killed, the node's OPTIONS ping unregisters it and calling bob gets 480.
//!
//! baresip comes from the Debian package `baresip`; without it this test fails (CI installs
//! it). The phones have no sound card: audio goes to ALSA's `null` device and comes from
//! baresip's `ausine` tone generator.

use crate::common::baresip::{Phone, WAIT};
use crate::common::{free_addrs, ip, wait_for, Node};

#[test]
fn two_baresip_phones_register_call_and_message_through_one_node() {
    let accounts = [("sip:alice@p2p.test", "alice-pw"), ("sip:bob@p2p.test", "bob-pw"), ("sip:eve@p2p.test", "eve-pw")];
    let config_dir = tempfile::TempDir::new().expect("temp dir");
    let config = config_dir.path().join("node.toml");
    // Fast pings, so the dead phone is noticed within seconds.
    std::fs::write(&config, "[registrar]\nping_interval_ms = 1000\nping_timeout_ms = 2000\n").expect("config");
    let node = Node::builder("127.0.0.61").accounts(&accounts).config(&config).start();
    let [a, b, e] = free_addrs(ip("127.0.0.61"), 3).try_into().expect("three addresses");
    let mut alice = Phone::start("alice", "alice-pw", node.proxy, a, &["sip:bob@p2p.test"]);
    let bob = Phone::start("bob", "bob-pw", node.proxy, b, &[]);
    let eve = Phone::start("eve", "not-eves-password", node.proxy, e, &[]);
    // baresip prints the registrar's answer and how many bindings it reported.
    alice.expect("alice@p2p.test: {0/UDP/v4} 200 OK () [1 binding]");
    bob.expect("bob@p2p.test: {0/UDP/v4} 200 OK () [1 binding]");
    // A wrong password is refused.
    let log = eve.expect("reg: sip:eve@p2p.test: 40");
    assert!(log.contains(": 403 Forbidden") || log.contains(": 401 Unauthorized"), "{log}");
    assert!(!log.contains("200 OK"), "{log}");

    // alice calls bob; bob answers by himself; media flows both ways.
    alice.command("/dial sip:bob@p2p.test");
    alice.expect("Call established: sip:bob@p2p.test");
    bob.expect("Call established: sip:alice@p2p.test");
    alice.expect("incoming rtp for 'audio' established");
    bob.expect("incoming rtp for 'audio' established");
    // While the call is up, a MESSAGE: bob's phone shows the text. baresip 1.0 sends
    // MESSAGE to its "current contact": select bob (the only one).
    alice.command("/contact_next");
    alice.expect("Current contact:");
    alice.command("/message hello-bob-from-alice");
    bob.expect("\"hello-bob-from-alice\"");
    alice.command("/hangup");
    bob.expect("session closed");
    crate::common::baresip::assert_rtp_both_ways(&alice, &bob);

    // An unknown user.
    alice.command("/dial sip:nobody@p2p.test");
    alice.expect("session closed: 404");

    // bob's phone dies without unregistering: the node's OPTIONS ping notices, and a call
    // to bob gets 480.
    let mut bob = bob;
    bob.process.kill();
    let gone = wait_for(WAIT, || (node.status_json()["registrar"]["bindings"] == 1).then_some(()));
    assert!(gone.is_some(), "bob still registered: {}", node.status_json()["registrar"]);
    assert_eq!(node.status_json()["registrar"]["pings_failed"], 1);
    alice.command("/dial sip:bob@p2p.test");
    alice.expect("session closed: 480");
}
