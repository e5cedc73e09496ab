//! Phones on different nodes call and message each other through the overlay.
//!
//! A real CA (`p2psip ca init`, `ca serve` on 127.0.0.81) enrolls alice, bob and a plain node,
//! and is stopped before any node starts. Three nodes on 127.0.0.82–84 form a ring; alice has
//! an account on node A (127.0.0.82), bob on node B (127.0.0.83). Two headless baresip phones
//! register to their own node's proxy; bob's node then publishes bob's registration record
//! (bob → node B's overlay contact). alice calls bob: node A fetches the record, verifies it
//! and forwards to node B, which rings bob's phone; bob answers automatically, RTP flows both
//! ways (baresip's counters), alice hangs up. alice sends bob a MESSAGE; an unknown user gets
//! 404; once bob's phone is killed (node B's ping unregisters it), calling bob gets 480.
//! The addresses 127.0.0.81–84 belong to this file.
// Tests measure with the real clock.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use crate::common::baresip::{Phone, WAIT};
use crate::common::sip_client::{answer_pings, register_over_tcp};
use crate::common::{ca, free_addrs, ip, run_p2psip, wait_for, Node};

const PATIENCE: Duration = Duration::from_secs(60);
/// Fast pings, so bob's dead phone is noticed within seconds.
/// A fixed stabilize period (the document's 500 ms; it does not carry the longest period).
const CONFIG: &str = "domain = \"p2p.test\"\n[registrar]\nping_interval_ms = 1000\nping_timeout_ms = 2000\n\
    [chord]\nstabilize_max_interval_ms = 500\n";

/// The contacts of `aor`'s registration record as `asker` reads it from the overlay.
fn registered_contacts(asker: &Node, aor: &str) -> Option<Vec<String>> {
    let out = run_p2psip(&["lookup", aor, "--json", "--http", &asker.http.to_string()], PATIENCE);
    crate::common::record_contacts(out.stdout.as_bytes())
}

#[test]
fn phones_on_two_nodes_call_and_message_through_the_overlay() {
    let base = tempfile::TempDir::new().expect("temp dir");
    let base = base.path();
    let users = ["sip:alice@p2p.test", "sip:bob@p2p.test", "sip:carol@p2p.test"];
    let dirs = ca::enrolled_overlay(base, "127.0.0.81", &users);
    let config = base.join("node.toml");
    std::fs::write(&config, CONFIG).expect("config");

    // No --without-certificate: each node's enrolled certificate names its account's AoR.
    let a =
        Node::builder("127.0.0.82").data_dir(&dirs[0]).config(&config).enrolled_account(users[0], "alice-pw").start();
    let b = Node::builder("127.0.0.83")
        .data_dir(&dirs[1])
        .config(&config)
        .enrolled_account(users[1], "bob-pw")
        .join(a.listen)
        .start();
    let c = Node::builder("127.0.0.84").data_dir(&dirs[2]).config(&config).join(a.listen).start();
    let joined = wait_for(PATIENCE, || {
        [&a, &b, &c].iter().all(|d| d.status().unwrap_or_default()["overlay"]["state"] == "joined").then_some(())
    });
    assert!(joined.is_some(), "ring not formed:\n{}", a.log());

    let [pa, pb] = free_addrs(ip("127.0.0.82"), 1)
        .into_iter()
        .chain(free_addrs(ip("127.0.0.83"), 1))
        .collect::<Vec<_>>()
        .try_into()
        .expect("two addresses");
    let mut alice = Phone::start("alice", "alice-pw", a.proxy, pa, &["sip:bob@p2p.test"]);
    let bob = Phone::start("bob", "bob-pw", b.proxy, pb, &[]);
    alice.expect("alice@p2p.test: {0/UDP/v4} 200 OK () [1 binding]");
    bob.expect("bob@p2p.test: {0/UDP/v4} 200 OK () [1 binding]");

    // bob's node publishes bob → its own overlay address (never the phone's address).
    let bob_contact = format!("sip:bob@{}", b.listen);
    let published =
        wait_for(PATIENCE, || registered_contacts(&c, users[1]).filter(|cs| cs == std::slice::from_ref(&bob_contact)));
    assert!(published.is_some(), "bob's record never named {bob_contact}:\n{}", b.log());

    // alice calls bob across the overlay; bob answers by himself; media flows both ways.
    let dialled = std::time::Instant::now();
    alice.command("/dial sip:bob@p2p.test");
    alice.expect("Call established: sip:bob@p2p.test");
    // Polled every 20 ms: an upper bound on the set-up time, fetch of bob's record included.
    println!("call set-up through the overlay: {} ms", dialled.elapsed().as_millis());
    bob.expect("Call established: sip:alice@p2p.test");
    alice.expect("incoming rtp for 'audio' established");
    bob.expect("incoming rtp for 'audio' established");
    // The media went through both nodes' anchors (issue 14): each shows the call, on the host
    // path between them (both on loopback), with packets relayed both ways.
    for (node, peer) in [(&a, users[1]), (&b, users[0])] {
        let call = wait_for(WAIT, || {
            let calls = node.status().unwrap_or_default()["calls"].clone();
            let c = calls
                .get(0)
                .cloned()
                .filter(|c| c["packets_in"].as_u64() > Some(0) && c["packets_out"].as_u64() > Some(0));
            c
        })
        .unwrap_or_else(|| panic!("no call with media both ways in {}", node.status().unwrap_or_default()["calls"]));
        assert_eq!(call["peer_aor"], peer, "{call}");
        assert_eq!(call["state"], "active", "{call}");
        assert_eq!(call["path"], "host", "{call}");
    }
    alice.command("/hangup");
    // The BYE followed the route set through both nodes to bob's phone.
    bob.expect("session closed");
    crate::common::baresip::assert_rtp_both_ways(&alice, &bob);
    // Hung up: every socket of the call is closed at both nodes, the totals stay.
    for node in [&a, &b] {
        let gone = wait_for(WAIT, || node.status().filter(|s| s["calls"].as_array().is_some_and(Vec::is_empty)));
        let s = gone.unwrap_or_else(|| panic!("the call stayed: {}", node.status().unwrap_or_default()["calls"]));
        assert_eq!(s["counters"]["calls_anchored"], 1, "{}", s["counters"]);
        assert!(s["counters"]["media_packets_in"].as_u64() >= Some(1), "{}", s["counters"]);
        assert!(s["counters"]["media_packets_out"].as_u64() >= Some(1), "{}", s["counters"]);
    }

    // A MESSAGE outside any call: bob's phone shows the text.
    alice.command("/contact_next");
    alice.expect("Current contact:");
    alice.command("/message hello-bob-across-the-overlay");
    bob.expect("\"hello-bob-across-the-overlay\"");

    // A second call, hung up by bob this time: his BYE follows the route set the other way.
    alice.command("/dial sip:bob@p2p.test");
    bob.expect("Call established: sip:alice@p2p.test");
    let established = |p: &Phone| p.log().matches("Call established").count();
    assert!(wait_for(WAIT, || (established(&alice) == 2 && established(&bob) == 2).then_some(())).is_some());
    // baresip prints "session closed" on the side that did not hang up.
    let closed = |p: &Phone| p.log().matches("session closed").count();
    let before = closed(&alice);
    let mut bob = bob;
    bob.command("/hangup");
    let reached = wait_for(WAIT, || (closed(&alice) == before + 1).then_some(()));
    assert!(reached.is_some(), "bob's BYE did not reach alice:\n{}", alice.log());
    // Each INVITE and the MESSAGE proved alice as the caller to bob's node (docs/security.md, M5).
    let registrar = b.status().unwrap_or_default()["registrar"].clone();
    assert!(registrar["callers_verified"].as_u64() >= Some(3), "{registrar}");
    assert_eq!(registrar["callers_refused"], 0, "{registrar}");

    // Nobody has a record for this user: 404.
    alice.command("/dial sip:nobody@p2p.test");
    alice.expect("session closed: 404");

    // bob's phone dies without unregistering: node B's ping notices, and calling bob gets 480.
    bob.process.kill();
    let gone = wait_for(WAIT, || (b.status().unwrap_or_default()["registrar"]["bindings"] == 0).then_some(()));
    assert!(gone.is_some(), "bob still registered: {}", b.status().unwrap_or_default()["registrar"]);
    alice.command("/dial sip:bob@p2p.test");
    alice.expect("session closed: 480");
    // And the record follows: no contact once the last phone is gone.
    let emptied = wait_for(PATIENCE, || registered_contacts(&c, users[1]).filter(|cs| cs.is_empty()));
    assert!(emptied.is_some(), "bob's record still names a contact:\n{}", b.log());

    // bob registers again, over TCP this time, and his connection closes: the binding goes
    // with it (no ping needed: they are answered), and so does the record's contact.
    let (conn, ok) = register_over_tcp(b.proxy, "bob", "bob-pw");
    assert!(ok.starts_with("SIP/2.0 200"), "REGISTER over TCP: {ok}");
    let ponger = answer_pings(conn.try_clone().expect("clone"));
    let republished =
        wait_for(PATIENCE, || registered_contacts(&c, users[1]).filter(|cs| cs == std::slice::from_ref(&bob_contact)));
    assert!(republished.is_some(), "bob's record not re-published:\n{}", b.log());
    let failed_pings = b.status().unwrap_or_default()["registrar"]["pings_failed"].clone();
    conn.shutdown(std::net::Shutdown::Both).expect("close");
    ponger.join().expect("ponger");
    let closed = wait_for(WAIT, || {
        let r = b.status().unwrap_or_default()["registrar"].clone();
        (r["bindings"] == 0 && r["unregistered_on_close"] == 1).then_some(())
    });
    assert!(closed.is_some(), "binding kept after the close: {}", b.status().unwrap_or_default()["registrar"]);
    assert_eq!(
        b.status().unwrap_or_default()["registrar"]["pings_failed"],
        failed_pings,
        "removed by the close, not a ping"
    );
    let emptied = wait_for(PATIENCE, || registered_contacts(&c, users[1]).filter(|cs| cs.is_empty()));
    assert!(emptied.is_some(), "bob's record still names a contact after the close:\n{}", b.log());
}
