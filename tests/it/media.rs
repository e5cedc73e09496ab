//! Calls between real phones through real NATs (issue 14): each node anchors its own phone's
//! media and carries it to the other node over ICE, encrypted. Network namespaces with
//! nftables routers, built and removed by the test (`common::netns`); baresip phones
//! (headless, `ausine` source) and a Linphone (`linphone-daemon`) on each home's own
//! loopback, registered with their own node;
//! coturn on the "Internet" as the STUN server every node asks.
//!
//! Checked for each call: RTP both ways at both phones (baresip's packet counters), the call
//! in both nodes' `/status` with packets both ways and the path type chosen, and, after the
//! hang-up, no call left and every socket of it closed.
// Tests measure with the real clock.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::common::baresip::Phone;
use crate::common::linphone::Linphone;
use crate::common::netns::{NatKind, NsNode, Topology};
use crate::common::softphone::Softphone;
use crate::common::{add_account, ca, wait_for};

/// Fast keep-alives (1 s) and stabilize, as in `nat.rs`.
const CONFIG: &str = "domain = \"p2p.test\"\n[chord]\nstabilize_max_interval_ms = 500\n[nat]\nkeepalive_secs = 1\n";
const WAIT: Duration = Duration::from_secs(20);

/// A node at `ip` in namespace `home` on data directory `dir`, joining through `join`: a
/// client, behind the router of its home.
fn client_node(
    t: &Topology,
    home: &str,
    ip: std::net::IpAddr,
    dir: &std::path::Path,
    config: &str,
    join: &str,
) -> NsNode {
    NsNode::start_with_data(t, home, SocketAddr::new(ip, 5070), 5060, Some(dir), &["--config", config, "--join", join])
}

/// The contacts of `aor`'s registration record, as `p2psip lookup` on `asker` reads it.
fn registered_contacts(t: &Topology, asker: &NsNode, aor: &str) -> Option<Vec<String>> {
    let dir = tempfile::TempDir::new().ok()?;
    let out = t
        .p2psip(&asker.short(), dir.path())
        .args(["lookup", aor, "--json", "--http", &asker.http.to_string()])
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    crate::common::record_contacts(&out.stdout)
}

/// The call `node` anchors now once it has packets both ways.
fn call_with_media(t: &Topology, node: &NsNode, what: &str) -> Value {
    let found = wait_for(WAIT, || {
        let calls = node.status(t)?["calls"].clone();
        calls.get(0).cloned().filter(|c| c["packets_in"].as_u64() > Some(0) && c["packets_out"].as_u64() > Some(0))
    });
    found.unwrap_or_else(|| {
        panic!("{what}: no call with media both ways: {}\n{}", node.status(t).unwrap_or_default()["calls"], node.log())
    })
}

/// Sockets a node's anchor keeps open with no call: two spare legs and four spare relay
/// pairs (`AnchorConfig`'s defaults).
const SPARE_SOCKETS: u64 = 2 + 4 * 2;

/// Waits until `node` anchors no call and holds only its spare sockets again: every socket of
/// the call closed.
fn all_freed(t: &Topology, node: &NsNode, what: &str) -> Value {
    let idle = |s: &Value| {
        s["calls"].as_array().is_some_and(Vec::is_empty) && s["media_sockets"].as_u64() == Some(SPARE_SOCKETS)
    };
    let s = wait_for(WAIT, || node.status(t).filter(idle));
    s.unwrap_or_else(|| {
        let s = node.status(t).unwrap_or_default();
        panic!("{what}: the call stayed: {} (media sockets {})", s["calls"], s["media_sockets"])
    })
}

/// How a test call goes on once its media flows.
#[derive(Clone, Copy)]
struct Plan {
    /// The caller holds the call and resumes it before the hang-up.
    hold: bool,
    /// The callee hangs up (else the caller).
    callee_hangs_up: bool,
}

/// Packets relayed so far for the call `node` anchors, (in, out).
fn relayed(t: &Topology, node: &NsNode) -> (u64, u64) {
    let calls = node.status(t).unwrap_or_default()["calls"].clone();
    let c = calls.get(0).cloned().unwrap_or_default();
    (c["packets_in"].as_u64().unwrap_or(0), c["packets_out"].as_u64().unwrap_or(0))
}

/// Hold by the caller, then resume: both nodes see the call held (the re-INVITE's SDP, anchored
/// like any other), then not, and media flows both ways again after the resume.
fn hold_and_resume(t: &Topology, caller: &mut dyn Softphone, callee: &mut dyn Softphone, nodes: [&NsNode; 2]) {
    let held = |n: &NsNode, want: bool, phone: &dyn Softphone| {
        let ok = wait_for(WAIT, || n.status(t).filter(|s| s["calls"][0]["held"] == want));
        let calls = n.status(t).unwrap_or_default()["calls"].clone();
        assert!(ok.is_some(), "held is never {want}: {calls}\n{}", phone.describe());
    };
    let t0 = std::time::Instant::now();
    caller.hold();
    for n in nodes {
        held(n, true, caller);
    }
    println!("held at both nodes {} ms after the hold", t0.elapsed().as_millis());
    let t0 = std::time::Instant::now();
    caller.resume();
    for n in nodes {
        held(n, false, caller);
    }
    println!("resumed at both nodes {} ms after the resume", t0.elapsed().as_millis());
    // A phone whose audio was a player started for the call starts it again.
    caller.start_audio();
    callee.start_audio();
    let after = nodes.map(|n| relayed(t, n));
    for (n, (i0, o0)) in nodes.into_iter().zip(after) {
        let grew = wait_for(WAIT, || {
            let (i, o) = relayed(t, n);
            (i > i0 + 5 && o > o0 + 5).then_some(())
        });
        assert!(grew.is_some(), "no media both ways after the resume: {:?}", relayed(t, n));
    }
}

/// One call from `caller` to `callee`'s AoR: established, RTP both ways at both phones, each
/// node reporting the call on `path`; held and resumed if `plan` says so; hung up by the side
/// `plan` says; both nodes free again. Returns the two nodes' call entries.
fn call(
    t: &Topology,
    (caller, caller_node): (&mut dyn Softphone, &NsNode),
    (callee, callee_node): (&mut dyn Softphone, &NsNode),
    callee_aor: &str,
    path: &str,
    plan: Plan,
) -> (Value, Value) {
    let (n_caller, n_callee) = (caller.established(), callee.established());
    let before = (caller.rtp_totals(), callee.rtp_totals());
    let dialled = std::time::Instant::now();
    caller.dial(callee_aor);
    let up = wait_for(WAIT, || (caller.established() > n_caller && callee.established() > n_callee).then_some(()));
    assert!(up.is_some(), "call to {callee_aor} not established:\n{}\n{}", caller.describe(), caller_node.log());
    println!("{callee_aor}: established {} ms after the dial", dialled.elapsed().as_millis());
    caller.start_audio();
    callee.start_audio();
    let a = call_with_media(t, caller_node, "caller's node");
    let b = call_with_media(t, callee_node, "callee's node");
    println!("{callee_aor}: media both ways at both nodes {} ms after the dial", dialled.elapsed().as_millis());
    for c in [&a, &b] {
        assert_eq!(c["state"], "active", "{c}");
        assert_eq!(c["path"], path, "{c}");
    }
    if plan.hold {
        hold_and_resume(t, caller, callee, [caller_node, callee_node]);
    }
    let (hanger, other): (&mut dyn Softphone, &mut dyn Softphone) =
        if plan.callee_hangs_up { (&mut *callee, &mut *caller) } else { (&mut *caller, &mut *callee) };
    let closed = other.closed();
    hanger.hang_up();
    let gone = wait_for(WAIT, || (other.closed() > closed).then_some(()));
    assert!(
        gone.is_some(),
        "the hang-up did not reach the other phone:\n{}\ncaller's node:\n{}\ncallee's node:\n{}",
        other.describe(),
        caller_node.log(),
        callee_node.log()
    );
    // RTP both ways at both phones, by their own counters: what they reported since the dial.
    for (p, (r0, s0, x0)) in [(&*caller, before.0), (&*callee, before.1)] {
        let counted = wait_for(WAIT, || Some(p.rtp_totals()).filter(|(r, _, _)| *r > r0));
        let (_, tx, rx) =
            counted.unwrap_or_else(|| panic!("{}: no packet counts for the call:\n{}", p.name(), p.describe()));
        assert!(tx > s0 && rx > x0, "{} sent {} RTP packets, received {}", p.name(), tx - s0, rx - x0);
    }
    for node in [caller_node, callee_node] {
        let s = all_freed(t, node, "after the hang-up");
        assert!(s["counters"]["media_packets_in"].as_u64() > Some(0), "{}", s["counters"]);
    }
    (a, b)
}

#[test]
fn calls_through_cone_nats_and_to_a_public_peer_carry_media_both_ways() {
    let base = tempfile::TempDir::new().expect("temp dir");
    let base = base.path();
    let users = ["sip:pat@p2p.test", "sip:alice@p2p.test", "sip:bob@p2p.test", "sip:peer-b@p2p.test"];
    let dirs = ca::enrolled_overlay(base, "127.0.0.97", &users);
    for (i, (user, pw)) in [(users[0], "pat-pw"), (users[1], "alice-pw"), (users[2], "bob-pw")].into_iter().enumerate()
    {
        add_account(base, &dirs[i], user, pw, &[]);
    }
    let mut t = Topology::new("m");
    let (stun, _coturn) = t.stun_server(base);
    let config = base.join("node.toml");
    // TURN too: with a relayed candidate on offer, the hole punch must still win.
    let turn = format!("turn = [{{ uri = \"turn:{stun}\", username = \"test\", password = \"test\" }}]\n");
    std::fs::write(&config, format!("{CONFIG}stun = [\"stun:{stun}\"]\n{turn}")).expect("config");
    let config = config.to_str().expect("utf-8").to_owned();

    // Two public peers (pat's node carries a phone); alice and bob behind cone NATs, clients.
    let (p1, p2) = (t.public_host(20), t.public_host(21));
    let pat_node =
        NsNode::start_with_data(&t, "inet", SocketAddr::new(p1, 5070), 5060, Some(&dirs[0]), &["--config", &config]);
    let join = pat_node.listen.to_string();
    let peer_b = NsNode::start_with_data(
        &t,
        "inet",
        SocketAddr::new(p2, 5070),
        5080,
        Some(&dirs[3]),
        &["--config", &config, "--join", &join],
    );
    peer_b.wait_status(&t, "peer b joins", |s| s["overlay"]["state"] == "joined");
    let (_, cone1) = t.router(1, NatKind::Cone, &[None]);
    let (_, cone2) = t.router(2, NatKind::Cone, &[None]);
    let client = |home: &str, ip, dir| client_node(&t, home, ip, dir, &config, &join);
    let alice_node = client(&t.home(1, 0), cone1[0], &dirs[1]);
    let bob_node = client(&t.home(2, 0), cone2[0], &dirs[2]);
    for n in [&alice_node, &bob_node] {
        n.wait_status(&t, "a client bound at an edge", |s| s["role"] == "client" && s["edge"]["addr"].is_string());
    }

    let proxy: SocketAddr = "127.0.0.1:5060".parse().expect("address");
    let listen: SocketAddr = "127.0.0.1:5062".parse().expect("address");
    // pat's phone is a Linphone: the second kind of phone, with its own SDP (more codecs,
    // telephone-event, its own ports).
    let mut pat = Linphone::start_in(Some(&pat_node.ns), "pat", "pat-pw", proxy, listen, 7078);
    let mut alice = Phone::start_in(Some(&alice_node.ns), "alice", "alice-pw", proxy, listen, &[]);
    let mut bob = Phone::start_in(Some(&bob_node.ns), "bob", "bob-pw", proxy, listen, &[]);
    for (p, aor) in [(&alice, "alice"), (&bob, "bob")] {
        p.expect(&format!("{aor}@p2p.test: {{0/UDP/v4}} 200 OK () [1 binding]"));
    }
    // Each user's record must name a contact before anyone calls them.
    for aor in &users[..3] {
        let found = wait_for(WAIT, || registered_contacts(&t, &peer_b, aor).filter(|c| !c.is_empty()));
        assert!(found.is_some(), "{aor}'s record has no contact");
    }

    // Cone to cone: both nodes behind NATs that map every destination alike, so the
    // server-reflexive candidates meet (hole punching).
    // The caller holds the call and resumes it (re-INVITEs with a=sendonly, then sendrecv).
    let hold = Plan { hold: true, callee_hangs_up: false };
    call(&t, (&mut alice, &alice_node), (&mut bob, &bob_node), users[2], "srflx", hold);
    // A client behind a cone NAT calls a user whose node is a public peer, which hangs up.
    let by_callee = Plan { hold: false, callee_hangs_up: true };
    call(&t, (&mut alice, &alice_node), (&mut pat, &pat_node), users[0], "srflx", by_callee);
    // And back: the public peer's user calls the client behind its NAT.
    // Linphone holds and resumes too.
    call(&t, (&mut pat, &pat_node), (&mut bob, &bob_node), users[2], "srflx", hold);
}

#[test]
fn calls_between_symmetric_nats_go_through_turn_and_release_the_allocation() {
    let base = tempfile::TempDir::new().expect("temp dir");
    let base = base.path();
    let users = ["sip:peer-a@p2p.test", "sip:carol@p2p.test", "sip:dave@p2p.test"];
    let dirs = ca::enrolled_overlay(base, "127.0.0.98", &users);
    add_account(base, &dirs[1], users[1], "carol-pw", &[]);
    add_account(base, &dirs[2], users[2], "dave-pw", &[]);
    let mut t = Topology::new("t");
    let (stun, _coturn) = t.stun_server(base);
    let config = base.join("node.toml");
    let turn = format!("turn = [{{ uri = \"turn:{stun}\", username = \"test\", password = \"test\" }}]\n");
    std::fs::write(&config, format!("{CONFIG}stun = [\"stun:{stun}\"]\n{turn}")).expect("config");
    let config = config.to_str().expect("utf-8").to_owned();

    let p1 = t.public_host(20);
    let peer =
        NsNode::start_with_data(&t, "inet", SocketAddr::new(p1, 5070), 5060, Some(&dirs[0]), &["--config", &config]);
    let join = peer.listen.to_string();
    // Both behind NATs that give each destination its own mapping: no direct path exists.
    let (_, sym1) = t.router(1, NatKind::Symmetric, &[None]);
    let (_, sym2) = t.router(2, NatKind::Symmetric, &[None]);
    let client = |home: &str, ip, dir| client_node(&t, home, ip, dir, &config, &join);
    let carol_node = client(&t.home(1, 0), sym1[0], &dirs[1]);
    let dave_node = client(&t.home(2, 0), sym2[0], &dirs[2]);
    // Each keeps its spare legs' relays allocated ahead of calls.
    let spares = |s: &Value| s["role"] == "client" && s["edge"]["addr"].is_string() && s["media_relays"] == 2;
    for n in [&carol_node, &dave_node] {
        n.wait_status(&t, "a client bound, its spare relays allocated", spares);
    }
    let proxy: SocketAddr = "127.0.0.1:5060".parse().expect("address");
    let listen: SocketAddr = "127.0.0.1:5062".parse().expect("address");
    let mut carol = Phone::start_in(Some(&carol_node.ns), "carol", "carol-pw", proxy, listen, &[]);
    let mut dave = Phone::start_in(Some(&dave_node.ns), "dave", "dave-pw", proxy, listen, &[]);
    carol.expect("carol@p2p.test: {0/UDP/v4} 200 OK () [1 binding]");
    dave.expect("dave@p2p.test: {0/UDP/v4} 200 OK () [1 binding]");
    for aor in &users[1..] {
        let found = wait_for(WAIT, || registered_contacts(&t, &peer, aor).filter(|c| !c.is_empty()));
        assert!(found.is_some(), "{aor}'s record has no contact");
    }

    let plan = Plan { hold: true, callee_hangs_up: true };
    call(&t, (&mut carol, &carol_node), (&mut dave, &dave_node), users[2], "relay", plan);
    // The call's allocation was released and the spares are allocated again: two each.
    for n in [&carol_node, &dave_node] {
        n.wait_status(&t, "the call's relay released, the spares' kept", |s| s["media_relays"] == 2);
    }
}

/// Issue 14 item 6, a benchmark rather than a test (run it with `--ignored --nocapture`): for
/// each path type — host (two public peers), srflx (two clients behind cone NATs) and relay
/// (two clients behind symmetric NATs, through coturn) — `ROUNDS` calls between baresip
/// phones, reading from the nodes' `/status`: ICE connect time at the caller's node (the
/// controlling agent: checks' start to the path selected) and at the callee's, dial to ringing
/// at the caller's node, and the INVITE to the first media datagram handed to each phone.
/// `docs/performance.md` (B10, B11) keeps the figures.
#[test]
#[ignore = "benchmark: cargo test --test it measure_media_paths -- --ignored --nocapture"]
fn measure_media_paths() {
    const ROUNDS: usize = 5;
    // P2PSIP_BENCH_ICE=is measures str0m's agent instead of rtc-ice (`[media] ice`).
    let agent = std::env::var("P2PSIP_BENCH_ICE").unwrap_or_else(|_| "rtc-ice".into());
    println!("ICE agent: {agent}");
    let base = tempfile::TempDir::new().expect("temp dir");
    let base = base.path();
    let users = [
        "sip:h1@p2p.test",
        "sip:h2@p2p.test",
        "sip:c1@p2p.test",
        "sip:c2@p2p.test",
        "sip:s1@p2p.test",
        "sip:s2@p2p.test",
    ];
    let dirs = ca::enrolled_overlay(base, "127.0.0.99", &users);
    for (i, u) in users.iter().enumerate() {
        add_account(base, &dirs[i], u, "pw", &[]);
    }
    let mut t = Topology::new("x");
    let (stun, _coturn) = t.stun_server(base);
    let config = base.join("node.toml");
    let turn = format!("turn = [{{ uri = \"turn:{stun}\", username = \"test\", password = \"test\" }}]\n");
    let media = format!("[media]\nice = \"{agent}\"\n");
    std::fs::write(&config, format!("{CONFIG}stun = [\"stun:{stun}\"]\n{turn}{media}")).expect("config");
    let config = config.to_str().expect("utf-8").to_owned();
    let (p1, p2) = (t.public_host(20), t.public_host(21));
    // Each public peer in a namespace of its own, so that its phone has its own loopback.
    t.host("pub1", p1);
    t.host("pub2", p2);
    let h1 =
        NsNode::start_with_data(&t, "pub1", SocketAddr::new(p1, 5070), 5060, Some(&dirs[0]), &["--config", &config]);
    let join = h1.listen.to_string();
    let flags = ["--config", config.as_str(), "--join", join.as_str()];
    let h2 = NsNode::start_with_data(&t, "pub2", SocketAddr::new(p2, 5070), 5060, Some(&dirs[1]), &flags);
    let (_, cone1) = t.router(1, NatKind::Cone, &[None]);
    let (_, cone2) = t.router(2, NatKind::Cone, &[None]);
    let (_, sym3) = t.router(3, NatKind::Symmetric, &[None]);
    let (_, sym4) = t.router(4, NatKind::Symmetric, &[None]);
    let start =
        |home: String, ip, dir| NsNode::start_with_data(&t, &home, SocketAddr::new(ip, 5070), 5060, Some(dir), &flags);
    let c1 = start(t.home(1, 0), cone1[0], &dirs[2]);
    let c2 = start(t.home(2, 0), cone2[0], &dirs[3]);
    let s1 = start(t.home(3, 0), sym3[0], &dirs[4]);
    let s2 = start(t.home(4, 0), sym4[0], &dirs[5]);
    for n in [&c1, &c2, &s1, &s2] {
        n.wait_status(&t, "a client bound, its spares ready", |s| {
            s["edge"]["addr"].is_string() && s["media_relays"] == 2
        });
    }
    let proxy: SocketAddr = "127.0.0.1:5060".parse().expect("address");
    let listen: SocketAddr = "127.0.0.1:5062".parse().expect("address");
    let names = ["h1", "h2", "c1", "c2", "s1", "s2"];
    let nodes = [&h1, &h2, &c1, &c2, &s1, &s2];
    let mut phones: Vec<Phone> =
        names.iter().zip(nodes).map(|(n, node)| Phone::start_in(Some(&node.ns), n, "pw", proxy, listen, &[])).collect();
    for (p, n) in phones.iter().zip(names) {
        p.expect(&format!("{n}@p2p.test: {{0/UDP/v4}} 200 OK () [1 binding]"));
    }
    for aor in &users {
        let found = wait_for(WAIT, || registered_contacts(&t, &h1, aor).filter(|c| !c.is_empty()));
        assert!(found.is_some(), "{aor}'s record has no contact");
    }
    println!("| path | ICE at the caller's node, ms (p50 / max) | at the callee's | dial → ringing at the caller's node | INVITE → first media to the callee's phone | … to the caller's phone |");
    println!("|---|---|---|---|---|---|");
    for (path, a, b) in [("host", 0, 1), ("srflx", 2, 3), ("relay", 4, 5)] {
        let mut rows: Vec<[u64; 5]> = Vec::new();
        for _ in 0..ROUNDS {
            let (left, right) = phones.split_at_mut(b);
            let (pa, pb) = (&mut left[a], &mut right[0]);
            let (n_a, n_b) = (pa.established(), pb.established());
            pa.dial(users[b]);
            let up = wait_for(WAIT, || (pa.established() > n_a && pb.established() > n_b).then_some(()));
            assert!(up.is_some(), "{path}: call not established");
            let ca = call_with_media(&t, nodes[a], "caller's node");
            let cb = call_with_media(&t, nodes[b], "callee's node");
            assert_eq!((ca["path"].as_str(), cb["path"].as_str()), (Some(path), Some(path)));
            let ms = |c: &Value, k: &str| c[k].as_u64().unwrap_or(u64::MAX);
            rows.push([
                ms(&ca, "ice_ms"),
                ms(&cb, "ice_ms"),
                ms(&ca, "ringing_ms"),
                ms(&cb, "first_media_ms"),
                ms(&ca, "first_media_ms"),
            ]);
            let closed = pb.closed();
            pa.hang_up();
            assert!(wait_for(WAIT, || (pb.closed() > closed).then_some(())).is_some());
            for n in [nodes[a], nodes[b]] {
                all_freed(&t, n, "after the hang-up");
            }
        }
        let stat = |i: usize| {
            let mut v: Vec<u64> = rows.iter().map(|r| r[i]).collect();
            v.sort_unstable();
            format!("{} / {}", v[v.len() / 2], v[v.len() - 1])
        };
        println!("| {path} | {} | {} | {} | {} | {} |", stat(0), stat(1), stat(2), stat(3), stat(4));
    }
}
