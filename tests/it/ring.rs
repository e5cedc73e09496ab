//! Real daemons forming a Chord ring over loopback: 16 nodes on
//! 127.0.0.1–16 and 4 sharing 127.0.0.20 join through the first; the ring must be correct
//! within a few stabilize rounds, heal after `kill -9` of five nodes, take a restarted node
//! back at its old place, answer `p2psip lookup` for an AoR, and refuse a forged `DHT-PeerID`.
//!
//! Timings are measured from `/status` polls and printed (`--nocapture` shows them). The
//! addresses 127.0.0.1–20 belong to this file.
// Tests measure with the real clock.
#![allow(clippy::disallowed_methods)]

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::ring::{self, id_of, successor_of};
use crate::common::{ip, run_p2psip, status_code, wait_for, Node};
use p2psip::overlay::{IdHash, NodeId};

/// One stabilize round at its longest: the configured 500 ms plus the core's 20% jitter.
const ROUND: Duration = Duration::from_millis(600);
const RPC_TIMEOUT: Duration = Duration::from_millis(500);
/// A fixed stabilize period (no adaptive stretching): this test is about real daemons forming
/// and healing a ring; the default adaptive timers are measured in the simulator
/// (`docs/performance.md`).
const CONFIG: &str = "[chord]\n\
    stabilize_interval_ms = 500\n\
    stabilize_max_interval_ms = 500\n\
    check_predecessor_interval_ms = 500\n\
    fix_fingers_interval_ms = 1000\n\
    rpc_timeout_ms = 500\n\
    join_retry_interval_ms = 1000\n";
/// Upper bound for anything to happen at all; assertions on timing are made separately.
const PATIENCE: Duration = Duration::from_secs(60);

fn write_config(dir: &Path) -> String {
    let path = dir.join("ring.toml");
    std::fs::write(&path, CONFIG).expect("write config");
    path.to_str().expect("utf-8 path").to_string()
}

/// Polls until the ring of `nodes` is correct; returns when (the poll's start) it first was.
fn wait_for_ring(nodes: &[&Node], what: &str) -> Instant {
    ring::wait_for_ring(nodes, what, PATIENCE)
}

fn all_joined(nodes: &[&Node]) -> bool {
    nodes.iter().all(|n| n.status().is_some_and(|s| s["overlay"]["state"] == "joined"))
}

#[test]
fn twenty_daemons_form_a_ring_heal_and_answer_lookups() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let config = write_config(dir.path());
    let bootstrap = Node::start_with("127.0.0.1", &["--config", &config]);
    let join = bootstrap.listen.to_string();
    let flags = ["--config", config.as_str(), "--join", join.as_str()];
    let mut nodes = vec![bootstrap];
    for i in 2..=16 {
        nodes.push(Node::start_with(&format!("127.0.0.{i}"), &flags));
    }
    for _ in 0..4 {
        nodes.push(Node::start_with("127.0.0.20", &flags));
    }
    let started = Instant::now();

    // Convergence, measured from the first poll at which every node reports `joined`.
    let everyone: Vec<&Node> = nodes.iter().collect();
    let joined_at = wait_for(PATIENCE, || {
        let at = Instant::now();
        all_joined(&everyone).then_some(at)
    })
    .expect("every node joins");
    let correct_at = wait_for_ring(&everyone, "after the joins");
    let converge = correct_at.saturating_duration_since(joined_at);
    println!(
        "ring of 20: all joined {:?} after the last start, correct {converge:?} later",
        joined_at.duration_since(started)
    );
    assert!(converge <= 3 * ROUND, "ring took {converge:?} after the last join (3 stabilize rounds: {:?})", 3 * ROUND);

    // The four nodes sharing 127.0.0.20 sit next to each other, in port order.
    let mut sorted: Vec<(NodeId, SocketAddr)> = nodes.iter().map(|n| (n.id(), n.listen)).collect();
    sorted.sort();
    let shared: Vec<usize> =
        sorted.iter().enumerate().filter(|(_, (_, a))| a.ip() == ip("127.0.0.20")).map(|(i, _)| i).collect();
    let contiguous = (0..sorted.len()).any(|start| (0..4).all(|k| shared.contains(&((start + k) % sorted.len()))));
    assert!(contiguous, "shared-address nodes at sorted positions {shared:?}");

    // Every joiner proved itself reachable by a dial-back before it took its place; the first
    // node started the ring, a peer without one.
    for n in &nodes[1..] {
        let s = n.status_json();
        assert_eq!((s["role"].as_str(), s["nat"]["reachable"].as_bool()), (Some("peer"), Some(true)), "{s}");
    }
    assert_eq!(nodes[0].status_json()["role"], "peer");

    // `p2psip lookup` for an AoR.
    let aor = "sip:alice@p2p.test";
    let key = NodeId::for_key(aor.as_bytes(), IdHash::Sha1);
    let ids: Vec<NodeId> = nodes.iter().map(Node::id).collect();
    let responsible = successor_of(key, &ids);
    // Half the ring away from the key, so the asker's successor list (8 of 20) does not
    // already name the responsible node and the lookup must ask others.
    let far = sorted[(sorted.iter().position(|(id, _)| *id == responsible).expect("sorted") + 10) % sorted.len()].1;
    let asker = nodes.iter().find(|n| n.listen == far).expect("asker");
    let out = run_p2psip(&["lookup", aor, "--json", "--http", &asker.http.to_string()], PATIENCE);
    assert!(out.status.success(), "lookup failed: {}", out.stderr);
    let answer: serde_json::Value = serde_json::from_str(&out.stdout).expect("lookup --json prints JSON");
    assert_eq!(answer["key"], key.to_string());
    assert_eq!(id_of(&answer["node"]), Some(responsible), "{answer}");
    let path = answer["path"].as_array().expect("path");
    assert!(!path.is_empty() && answer["hops"] == path.len(), "{answer}");
    // The node's own time, a share of what the client waited.
    assert!(answer["elapsed_ms"].as_f64().is_some_and(|ms| ms > 0.0 && ms < PATIENCE.as_secs_f64() * 1e3), "{answer}");
    assert!(path.iter().all(|hop| id_of(hop).is_some_and(|id| ids.contains(&id))), "{answer}");
    println!("lookup of {aor} from {}: {} hops", asker.listen, path.len());
    let out = run_p2psip(&["lookup", aor, "--http", &asker.http.to_string()], PATIENCE);
    assert!(out.status.success() && out.stdout.contains(&responsible.to_string()), "{}", out.stdout);

    // A forged DHT-PeerID: another node's ID and address, sent from a test socket.
    let target = &nodes[1];
    let victim = &nodes[2];
    let refused_before = target.counter("overlay_refused");
    let sock = UdpSocket::bind((ip("127.0.0.17"), 0)).expect("bind test socket");
    let code = forged_register(&sock, target.listen, victim.id(), victim.listen);
    assert_eq!(code, Some(403), "a forged DHT-PeerID is refused");
    assert_eq!(target.counter("overlay_refused"), refused_before + 1);

    // kill -9 five nodes (never the bootstrap): two on their own addresses, next to each other
    // in ID order, one elsewhere, and two of the shared-address group.
    let position = |listen: SocketAddr| sorted.iter().position(|(_, a)| *a == listen).expect("sorted");
    let own: Vec<usize> = (1..16).collect();
    let adjacent = own
        .iter()
        .copied()
        .find(|&i| {
            let p = position(nodes[i].listen);
            own.iter().any(|&j| j != i && position(nodes[j].listen) == (p + 1) % sorted.len())
        })
        .expect("two adjacent single-address nodes");
    let next = own
        .iter()
        .copied()
        .find(|&j| position(nodes[j].listen) == (position(nodes[adjacent].listen) + 1) % sorted.len());
    let mut victims = vec![adjacent, next.expect("neighbour")];
    let third = own.iter().copied().find(|i| !victims.contains(i) && *i != 1 && *i != 2).expect("a third victim");
    victims.push(third);
    victims.extend([16, 17]);
    let killed_at = Instant::now();
    for &v in &victims {
        nodes[v].process.kill();
    }
    let survivors: Vec<&Node> =
        nodes.iter().enumerate().filter(|(i, _)| !victims.contains(i)).map(|(_, n)| n).collect();
    let healed = wait_for_ring(&survivors, "after kill -9 of five").saturating_duration_since(killed_at);
    // A failure is detectable once an RPC to the dead node times out; then 3 rounds.
    let bound = RPC_TIMEOUT + 3 * ROUND;
    println!("kill -9 of 5 of 20: ring correct again after {healed:?} (bound {bound:?})");
    assert!(healed <= bound, "healing took {healed:?}, more than rpc_timeout + 3 stabilize rounds ({bound:?})");

    // Lookups route around the dead.
    let live: Vec<NodeId> = survivors.iter().map(|n| n.id()).collect();
    let out = run_p2psip(&["lookup", aor, "--json", "--http", &survivors[1].http.to_string()], PATIENCE);
    assert!(out.status.success(), "lookup after failures: {}", out.stderr);
    let answer: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(id_of(&answer["node"]), Some(successor_of(key, &live)), "{answer}");

    // A node restarted at a dead node's address takes its place again.
    let back = nodes[victims[0]].listen;
    let restarted_at = Instant::now();
    let restarted = Node::builder(&back.ip().to_string()).listen(back).args(&flags).start();
    assert_eq!(restarted.status().and_then(|s| id_of(&s)), Some(nodes[victims[0]].id()), "same ID");
    let mut ring: Vec<&Node> = survivors.clone();
    ring.push(&restarted);
    let rejoined = wait_for_ring(&ring, "after the restart").saturating_duration_since(restarted_at);
    println!("restart at {back}: ring correct again {rejoined:?} after the process started");
}

/// Sends a REGISTER claiming to be `claimed_id` at `claimed` from `sock`; returns the final
/// status code (retransmitting like a UDP client transaction), `None` if nothing answers.
fn forged_register(sock: &UdpSocket, target: SocketAddr, claimed_id: NodeId, claimed: SocketAddr) -> Option<u16> {
    let local = sock.local_addr().expect("local address");
    let request = format!(
        "REGISTER sip:{target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bKforged1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{claimed_id}@{claimed}>;tag=forged1\r\n\
         To: <sip:{target}>\r\n\
         Call-ID: forged1@{local}\r\n\
         CSeq: 1 REGISTER\r\n\
         Require: dht\r\n\
         DHT-PeerID: <sip:{claimed_id}@{claimed}>;version=2;overlay=p2p.test\r\n\
         Content-Length: 0\r\n\r\n"
    );
    sock.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    let mut buf = vec![0u8; 65_535];
    for _ in 0..6 {
        sock.send_to(request.as_bytes(), target).expect("send REGISTER");
        while let Ok(n) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            match status_code(&text) {
                Some(code) if code >= 200 && text.contains("forged1@") => return Some(code),
                _ => {}
            }
        }
    }
    None
}

#[test]
fn sigterm_leaves_the_ring_and_exits_zero() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let config = write_config(dir.path());
    let first = Node::start_with("127.0.0.18", &["--config", &config]);
    let join = first.listen.to_string();
    let mut second = Node::start_with("127.0.0.18", &["--config", &config, "--join", &join]);
    wait_for_ring(&[&first, &second], "two nodes");

    let sent = Instant::now();
    second.process.terminate();
    let exit = second.process.wait_exit(Duration::from_secs(10)).expect("the node exits after SIGTERM");
    assert!(exit.success(), "exit status {exit}; log:\n{}", second.log());
    let exited = sent.elapsed();
    assert!(second.log().contains("left the overlay"), "{}", second.log());
    // Told, not timed out: the survivor is alone again before any failure could be detected.
    let alone = wait_for(PATIENCE, || {
        first
            .status()
            .filter(|s| s["overlay"]["state"] == "alone" && s["predecessor"].is_null())
            .map(|_| sent.elapsed())
    })
    .expect("the first node is alone again");
    println!("SIGTERM: exited after {exited:?}, the other node alone after {alone:?}");
    assert!(exited < Duration::from_secs(3), "leaving is bounded: {exited:?}");
}

#[test]
fn lookup_failure_is_one_line_and_nonzero() {
    // 192.0.2.1 (TEST-NET-1) never answers: the node stays `joining` and cannot route.
    let node = Node::start_with("127.0.0.19", &["--join", "192.0.2.1:5070"]);
    let out = run_p2psip(&["lookup", "sip:bob@p2p.test", "--http", &node.http.to_string()], PATIENCE);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(lines[0].contains("lookup of") && lines[0].contains("not part of a ring"), "{}", lines[0]);
}
