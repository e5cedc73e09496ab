//! Signed records in a real overlay: twelve daemons on 127.0.0.51–62, two of them
//! enrolled as alice and bob. Both publish; `p2psip lookup` from a third node returns each
//! registration with all R+1 copies valid and held by the nodes responsible for H(K‖i);
//! after `kill -9` of alice's primary holder the lookup still returns her record; the killed
//! node, restarted on its old address and data directory, serves what it stored before.
//!
//! Every node's user enrolls through a real CA (`p2psip ca init`, `ca serve` on 127.0.0.50,
//! `p2psip enroll`), which is stopped before any node starts: the overlay works without it.
//! The addresses 127.0.0.50–62 belong to this file.
// Tests measure with the real clock.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::ring::{self, id_of, successor_of};
use crate::common::{ca, free_addrs, ip, run_p2psip, wait_for, Node};
use p2psip::overlay::{IdHash, NodeId};
use p2psip::store::replica_keys;
use serde_json::Value;

const DOMAIN: &str = "p2p.test";
const REPLICAS: u8 = 3;
/// The owners do not refresh during the test (sequence numbers stay put).
const CONFIG: &str = "domain = \"p2p.test\"\n\
    [storage]\n\
    replicas = 3\n\
    record_lifetime_secs = 3600\n\
    refresh_interval_secs = 3000\n\
    [chord]\n\
    stabilize_max_interval_ms = 500\n";
const PATIENCE: Duration = Duration::from_secs(60);

/// The overlay's Chord timers, short for the test; the configuration document carries them.
const SETTINGS: &str = r#"{"chord": {"stabilize_interval_ms": 500, "check_predecessor_interval_ms": 500,
    "fix_fingers_interval_ms": 1000, "rpc_timeout_ms": 500, "join_retry_interval_ms": 1000,
    "successor_list_len": 8}}"#;

/// Enrolls every node's user through a real CA (`ca init`, `ca serve`, `enroll`), then stops the
/// CA: `enrolled` names the AoRs of some nodes, the others are `sip:nodeI@DOMAIN`.
fn enroll_data_dirs(base: &Path, n: usize, enrolled: &BTreeMap<usize, &str>) -> Vec<PathBuf> {
    let ca_dir = base.join("ca");
    let settings = base.join("settings.json");
    std::fs::write(&settings, SETTINGS).expect("settings");
    let replicas = REPLICAS.to_string();
    let init = ca::run(
        base,
        &["ca", "init", "--dir", ca_dir.to_str().expect("utf-8"), "--domain", DOMAIN, "--replicas", &replicas]
            .into_iter()
            .chain(["--settings", settings.to_str().expect("utf-8")])
            .collect::<Vec<_>>(),
    );
    assert!(init.status.success(), "ca init: {}", init.stderr);
    // Twelve enrollments from one address in a second: above the default rate limit.
    let mut authority = ca::Ca::serve(base, &ca_dir, "127.0.0.50", &["--rate-limit", "100/min"]);
    let dirs = (0..n)
        .map(|i| {
            let dir = base.join(format!("node{i}"));
            let aor = enrolled.get(&i).map_or_else(|| format!("sip:node{i}@{DOMAIN}"), |a| a.to_string());
            let done = ca::enroll(base, &aor, &authority, &dir, &[]);
            assert!(done.status.success(), "enroll {aor}: {}\n{}", done.stderr, authority.log());
            dir
        })
        .collect();
    authority.process.kill();
    dirs
}

fn wait_for_ring(nodes: &[&Node], what: &str) {
    ring::wait_for_ring(nodes, what, PATIENCE);
}

fn lookup(asker: &Node, aor: &str) -> Option<Value> {
    let out = run_p2psip(&["lookup", aor, "--json", "--http", &asker.http.to_string()], PATIENCE);
    serde_json::from_str(&out.stdout).ok()
}

/// What is wrong with a record lookup's answer, given the live nodes' IDs.
fn record_errors(answer: &Value, aor: &str, ids: &[NodeId]) -> Option<String> {
    let mut errors = Vec::new();
    if answer["registration"].is_null() {
        errors.push("no registration".to_owned());
    }
    if answer["certificate"]["subject"] != aor {
        errors.push(format!("certificate subject {}", answer["certificate"]["subject"]));
    }
    // Replica numbers R+1… are spares for places that would share an address with another.
    let keys = replica_keys(aor.as_bytes(), 4 * REPLICAS + 3, IdHash::Sha1);
    let places = answer["replicas"].as_array().cloned().unwrap_or_default();
    if places.len() != usize::from(REPLICAS) + 1 {
        errors.push(format!("{} places", places.len()));
    }
    let mut holders = std::collections::BTreeSet::new();
    for place in &places {
        let Some(key) = place["replica"].as_u64().and_then(|i| keys.get(i as usize)) else {
            errors.push(format!("bad replica number {}", place["replica"]));
            continue;
        };
        let want = successor_of(*key, ids);
        if !holders.insert(want) {
            errors.push(format!("{want} holds two places"));
        }
        if place["replica_key"] != key.to_string() || id_of(&place["node"]) != Some(want) {
            errors.push(format!("place {} held by {} not {want}", place["replica"], place["node"]));
        }
        if place["valid"] != true || place["current"] != true {
            errors.push(format!("place {}: {}", place["replica"], place["error"]));
        }
    }
    (!errors.is_empty()).then(|| errors.join("; "))
}

/// Polls the lookup until every place is right; panics with the last answer otherwise.
fn wait_for_record(asker: &Node, aor: &str, ids: &[NodeId]) -> Value {
    let mut last = String::new();
    wait_for(PATIENCE, || {
        let answer = lookup(asker, aor)?;
        match record_errors(&answer, aor, ids) {
            None => Some(answer),
            Some(e) => {
                last = format!("{e}\n{answer:#}");
                None
            }
        }
    })
    .unwrap_or_else(|| panic!("lookup of {aor} never complete: {last}"))
}

#[test]
fn twelve_daemons_store_records_at_replica_keys_survive_kill_and_restart() {
    let base = tempfile::TempDir::new().expect("temp dir");
    let config = base.path().join("storage.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let alice = "sip:alice@p2p.test";
    let bob = "sip:bob@p2p.test";
    // Nodes 10 and 11 are alice's and bob's; they start once the others have a ring.
    let enrolled = BTreeMap::from([(10, alice), (11, bob)]);
    let dirs = enroll_data_dirs(base.path(), 12, &enrolled);
    let addrs: Vec<[SocketAddr; 3]> = (0..12)
        .map(|i| free_addrs(ip(&format!("127.0.0.{}", 51 + i)), 3).try_into().expect("three addresses"))
        .collect();
    let start = |i: usize, join: Option<SocketAddr>| {
        let node = Node::builder("127.0.0.51").addrs(addrs[i]).data_dir(&dirs[i]).config(&config);
        match join {
            Some(j) => node.join(j).start(),
            None => node.start(),
        }
    };

    let mut nodes = vec![start(0, None)];
    let boot = nodes[0].listen;
    for i in 1..10 {
        nodes.push(start(i, Some(boot)));
    }
    wait_for_ring(&nodes.iter().collect::<Vec<_>>(), "ten plain nodes");
    nodes.push(start(10, Some(boot)));
    nodes.push(start(11, Some(boot)));
    let everyone: Vec<&Node> = nodes.iter().collect();
    wait_for_ring(&everyone, "twelve nodes");
    let ids: Vec<NodeId> = nodes.iter().map(Node::id).collect();

    // Both publish; a third node reads each back from all four places.
    let asker = &nodes[3];
    let answer = wait_for_record(asker, alice, &ids);
    let contacts = answer["registration"]["contacts"].as_array().expect("contacts");
    assert_eq!(contacts[0]["uri"], format!("sip:alice@{}", nodes[10].listen), "{answer:#}");
    assert!(answer["registration"]["seq"].as_u64().is_some_and(|s| s > 0));
    assert!(answer["certificate"]["issuer"].as_str().is_some_and(|s| s.contains(DOMAIN)), "{answer:#}");
    assert_eq!(answer["key"], NodeId::for_key(alice.as_bytes(), IdHash::Sha1).to_string());
    wait_for_record(asker, bob, &ids);
    let human = run_p2psip(&["lookup", alice, "--http", &asker.http.to_string()], PATIENCE);
    assert!(human.status.success() && human.stdout.contains("valid, current"), "{}", human.stdout);

    // kill -9 of alice's primary holder (if that is the asker or alice's node, another place's).
    let victim_id = answer["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .filter_map(|p| id_of(&p["node"]))
        .find(|id| *id != nodes[3].id() && *id != nodes[10].id() && *id != nodes[0].id())
        .expect("a holder to kill");
    let victim = nodes.iter().position(|n| n.id() == victim_id).expect("victim");
    // Once its storage is quiet: backup copies (passed on a second after a ring change) may
    // still be arriving, and what is counted must be what is on disk at the kill.
    let held_before = storage_quiet(&nodes[victim]).expect("the victim's storage goes quiet");
    assert!(held_before >= 1);
    nodes[victim].process.kill();
    let answer = wait_for(PATIENCE, || {
        let a = lookup(&nodes[3], alice)?;
        (!a["registration"].is_null()).then_some(a)
    })
    .expect("alice's record is still found after kill -9 of a holder");
    println!("after kill -9 of {}: {}", nodes[victim].listen, answer["replicas"]);
    assert_eq!(answer["certificate"]["subject"], alice);

    // The killed node restarts on its address and data directory and serves what it stored.
    nodes[victim] = start(victim, Some(boot));
    let held_after = nodes[victim].status().expect("status")["storage"]["records_held"].as_u64();
    assert_eq!(held_after, Some(held_before), "records loaded from records.redb");
    let everyone: Vec<&Node> = nodes.iter().collect();
    wait_for_ring(&everyone, "after the restart");
    let answer = wait_for_record(&nodes[3], alice, &ids);
    let served = answer["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .any(|p| id_of(&p["node"]) == Some(victim_id) && p["valid"] == true);
    assert!(served, "the restarted node serves its copy: {answer:#}");
    for n in &nodes {
        assert!(n.status().is_some(), "a node died; log:\n{}", n.log());
    }
}

/// The node's `records_held` once its storage counters have not moved for two seconds.
fn storage_quiet(node: &Node) -> Option<u64> {
    let mut last: Option<(Value, Instant)> = None;
    wait_for(PATIENCE, || {
        let storage = node.status()?["storage"].clone();
        match &last {
            Some((seen, since)) if *seen == storage => {
                (since.elapsed() >= Duration::from_secs(2)).then(|| storage["records_held"].as_u64()).flatten()
            }
            _ => {
                last = Some((storage, Instant::now()));
                None
            }
        }
    })
}
