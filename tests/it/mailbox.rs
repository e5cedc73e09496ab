//! Offline messages between real phones and real daemons (issue 15, item 2).
//!
//! A real CA enrolls alice, bob, carol, dave and erin, and is stopped before any node starts.
//! Five nodes form a ring: A (alice's, 127.0.0.105), C, D, E (carol's, dave's and erin's, which
//! only store), and B (bob's, 127.0.0.106), which has no phone registered: its registration
//! record says bob is offline. B stops. alice's baresip sends bob a MESSAGE: her node seals it
//! to bob's encryption key and stores it in bob's mailbox (`mailbox.sent_stored`); nineteen
//! more from a plain SIP client on alice's flow get `202 Accepted`, and the twenty-first
//! `480` (the per-sender quota). A forged deletion (a tombstone signed by carol) sent straight
//! to the mailbox's primary holder over the overlay is refused `403`, and the holder still
//! lists all twenty. The primary holder is killed with SIGKILL. bob's node comes back on
//! another address (127.0.0.107, the same data directory), bob's baresip registers there and
//! shows every message exactly once, with alice as the sender; they leave the overlay
//! (`/messages`, `p2psip messages`). A second phone of bob's registering later gets none.
//! Then, with bob offline again, one more message is stored, every node is killed with
//! SIGKILL and restarted on its data directory (redb), and bob's phone gets that message,
//! once. The addresses 127.0.0.101–109 belong to this file.
// Tests measure with the real clock.
#![allow(clippy::disallowed_methods)]

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use p2psip::identity::{Aor, KeyPair};
use p2psip::overlay::{Contact, IdHash, NodeId};
use p2psip::peer::overlay::wire::OverlayInfo;
use p2psip::peer::replication::wire::{self as storage_wire, StorageAnswer, StorageRequest};
use p2psip::store::{replica_keys, Record, RecordKind, Unsigned};

use crate::common::baresip::{Phone, WAIT};
use crate::common::sip_client::{message_over_tcp, register_over_tcp};
use crate::common::{ca, free_addrs, ip, read_tcp_bytes, run_p2psip, status_code, wait_for, Node};

const PATIENCE: Duration = Duration::from_secs(60);
/// Fast pings, so a phone that quits is noticed within seconds.
const CONFIG: &str = "domain = \"p2p.test\"\n[registrar]\nping_interval_ms = 1000\nping_timeout_ms = 2000\n\
    [chord]\nstabilize_max_interval_ms = 500\n";
const BOB: &str = "sip:bob@p2p.test";

fn all_joined(nodes: &[&Node]) -> bool {
    nodes.iter().all(|n| {
        let s = n.status().unwrap_or_default();
        s["overlay"]["state"] == "joined" || s["overlay"]["state"] == "alone" && nodes.len() == 1
    })
}

fn wait_joined(nodes: &[&Node]) {
    let joined = wait_for(PATIENCE, || all_joined(nodes).then_some(()));
    assert!(joined.is_some(), "ring not formed:\n{}", nodes[0].log());
}

/// bob's registration record as `asker` reads it: `Some(contacts)` once a valid copy is found.
fn bob_contacts(asker: &Node) -> Option<Vec<String>> {
    let out = run_p2psip(&["lookup", BOB, "--json", "--http", &asker.http.to_string()], PATIENCE);
    crate::common::record_contacts(out.stdout.as_bytes())
}

/// The overlay address of the node holding replica 0 of bob's records (his mailbox's primary).
fn primary_holder(asker: &Node) -> SocketAddr {
    let out = run_p2psip(&["lookup", BOB, "--json", "--http", &asker.http.to_string()], PATIENCE);
    let answer: serde_json::Value = serde_json::from_str(&out.stdout).expect("lookup JSON");
    let addr =
        answer["replicas"][0]["node"]["addr"].as_str().or(answer["record"]["replicas"][0]["node"]["addr"].as_str());
    addr.and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("no primary in {answer}"))
}

/// carol's signing key and chain, from her data directory.
fn carols_key(dir: &Path) -> (KeyPair, Vec<Vec<u8>>) {
    let rng = ring::rand::SystemRandom::new();
    let key = std::fs::read(dir.join("identity/key.pk8")).expect("key");
    let key = KeyPair::from_pkcs8(&key, &rng).expect("PKCS#8");
    let chain = pem::parse_many(std::fs::read(dir.join("identity/chain.pem")).expect("chain")).expect("PEM");
    (key, chain.into_iter().map(|b| b.contents().to_vec()).collect())
}

/// One storage request straight to `holder`'s overlay listener over TCP, as a client node
/// would send it; the answer as the node gave it.
fn ask_holder(holder: SocketAddr, overlay: &str, request: &StorageRequest, n: u32) -> (u16, StorageAnswer) {
    use std::io::Write;
    let mut s = TcpStream::connect(holder).expect("connect to the holder");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let local = s.local_addr().expect("local address");
    let me = Contact::new(NodeId::from_addr(local.ip(), local.port(), IdHash::Sha1), local);
    let info = OverlayInfo { name: overlay.to_owned(), hash: IdHash::Sha1, client: true };
    let (call_id, tag) = (format!("forged-{n}@test"), format!("t{n}"));
    let ids = storage_wire::RequestIds { call_id: &call_id, from_tag: &tag, cseq: n };
    let mut msg = storage_wire::encode_request(request, holder, &me, &info, ids);
    let via = format!("SIP/2.0/TCP {local};branch=z9hG4bKforged{n};rport");
    msg.headers.push_front_of(p2psip::sip::Header::new(p2psip::sip::HeaderName::Via, via));
    s.write_all(&msg.encode()).expect("send");
    let bytes = read_tcp_bytes(&mut s).expect("an answer from the holder");
    let code = status_code(&String::from_utf8_lossy(&bytes)).expect("a status");
    let response = p2psip::sip::parse(bytes::Bytes::from(bytes)).expect("a SIP response");
    (code, storage_wire::decode_response(&response))
}

/// bob's mailbox as `holder` lists it (replica 0's key).
fn listing(holder: SocketAddr, overlay: &str, n: u32) -> Vec<Record> {
    let replica_key = replica_keys(BOB.as_bytes(), 2, IdHash::Sha1)[0];
    let request =
        StorageRequest::Fetch { replica: 0, replica_key, kind: RecordKind::OfflineMessage, key: BOB.to_owned() };
    match ask_holder(holder, overlay, &request, n) {
        (200, StorageAnswer::Listed(records)) => records,
        other => panic!("listing refused: {other:?}"),
    }
}

/// How often `needle` appears in bob's phone's log.
fn shown(phone: &Phone, needle: &str) -> usize {
    phone.log().matches(needle).count()
}

#[test]
fn messages_to_an_offline_user_wait_in_the_overlay_and_reach_his_phone_once() {
    let base = tempfile::TempDir::new().expect("temp dir");
    let base = base.path();
    let users = ["sip:alice@p2p.test", BOB, "sip:carol@p2p.test", "sip:dave@p2p.test", "sip:erin@p2p.test"];
    let dirs = ca::enrolled_overlay(base, "127.0.0.101", &users);
    let config = base.join("node.toml");
    std::fs::write(&config, CONFIG).expect("config");

    let a =
        Node::builder("127.0.0.105").data_dir(&dirs[0]).config(&config).enrolled_account(users[0], "alice-pw").start();
    let mut storing_dirs: Vec<&Path> = vec![dirs[2].as_path(), dirs[3].as_path(), dirs[4].as_path()];
    let mut others: Vec<Node> = ["127.0.0.102", "127.0.0.103", "127.0.0.104"]
        .into_iter()
        .zip(&storing_dirs)
        .map(|(ip, dir)| Node::builder(ip).data_dir(dir).config(&config).join(a.listen).start())
        .collect();
    let mut b = Node::builder("127.0.0.106")
        .data_dir(&dirs[1])
        .config(&config)
        .enrolled_account(BOB, "bob-pw")
        .join(a.listen)
        .start();
    wait_joined(&[&a, &others[0], &others[1], &others[2], &b]);
    let overlay = a.status_json()["overlay"]["name"].as_str().expect("overlay name").to_owned();

    // bob has an account but no phone: his record says he exists and is offline. Then his
    // node stops.
    let offline = wait_for(PATIENCE, || bob_contacts(&others[0]).filter(Vec::is_empty));
    assert!(offline.is_some(), "bob's record never said offline:\n{}", b.log());
    b.process.terminate();
    assert!(b.process.wait_exit(PATIENCE).is_some(), "bob's node did not stop");

    // alice's baresip sends bob a MESSAGE: stored for him.
    let pa = free_addrs(ip("127.0.0.105"), 1)[0];
    let mut alice = Phone::start("alice", "alice-pw", a.proxy, pa, &[BOB]);
    alice.expect("alice@p2p.test: {0/UDP/v4} 200 OK () [1 binding]");
    alice.command("/contact_next");
    alice.expect("Current contact:");
    alice.command("/message hello-bob-while-you-were-away");
    let stored = wait_for(WAIT, || (a.status_json()["mailbox"]["sent_stored"] == 1).then_some(()));
    assert!(stored.is_some(), "not stored: {}\n{}", a.status_json()["mailbox"], a.log());

    // Nineteen more on alice's own flow: 202 each; the twenty-first is over her quota.
    let (mut flow, ok) = register_over_tcp(a.proxy, "alice", "alice-pw");
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    for n in 1..20 {
        let answer = message_over_tcp(&mut flow, "alice", BOB, &format!("quota-{n}-of-alice"), n + 1);
        assert!(answer.starts_with("SIP/2.0 202"), "message {n}: {answer}");
    }
    let over = message_over_tcp(&mut flow, "alice", BOB, "one-too-many", 40);
    assert!(over.starts_with("SIP/2.0 480") && over.contains("sender quota"), "{over}");
    // Nobody enrolled by that name: 404, not a mailbox.
    let unknown = message_over_tcp(&mut flow, "alice", "sip:nobody@p2p.test", "anyone?", 41);
    assert!(unknown.starts_with("SIP/2.0 404"), "{unknown}");

    // A forged deletion: carol signs a tombstone for one of bob's messages and sends it to
    // the mailbox's primary holder. Refused; every message is still there.
    let primary = primary_holder(&a);
    let held = listing(primary, &overlay, 1);
    assert_eq!(held.iter().filter(|r| !r.is_tombstone()).count(), 20, "{held:?}");
    assert!(held.iter().all(|r| r.owner.as_str() == users[0]), "all from alice");
    let (key, chain) = carols_key(&dirs[2]);
    let target = &held[0];
    let forged = Unsigned {
        kind: RecordKind::OfflineMessage,
        key: target.key.clone(),
        owner: Aor::parse(users[2]).expect("AoR"),
        seq: target.seq + 1,
        expires_at: target.expires_at,
        payload: Vec::new(),
    }
    .sign(&key, chain, &ring::rand::SystemRandom::new())
    .expect("sign");
    let replica_key = replica_keys(BOB.as_bytes(), 2, IdHash::Sha1)[0];
    let store = StorageRequest::Store { replica: 0, replica_key, record: forged, backup: 0 };
    let (code, answer) = ask_holder(primary, &overlay, &store, 2);
    assert_eq!(code, 403, "{answer:?}");
    assert!(
        matches!(&answer, StorageAnswer::Refused { reason, .. } if reason == "Not The Mailbox Owner"),
        "{answer:?}"
    );
    let after = listing(primary, &overlay, 3);
    assert_eq!(after.iter().filter(|r| !r.is_tombstone()).count(), 20, "the forged deletion changed nothing");

    // The primary holder dies: one of the nodes that only store (the addresses are chosen so:
    // bob's AoR falls to 127.0.0.102 while his own node is away).
    assert_ne!(primary, a.listen, "alice's node should not hold bob's mailbox here");
    let at = others.iter().position(|n| n.listen == primary).expect("the primary is a storing node");
    let mut dead = others.remove(at);
    let dead_dir = storing_dirs.remove(at);
    dead.process.kill();
    let (survivors, survivor_dirs) = (others, storing_dirs);
    let asker = &survivors[0];

    // bob comes back on another address, with his data directory: his phone gets all twenty,
    // once each, from alice.
    let b2 = Node::builder("127.0.0.107").data_dir(&dirs[1]).config(&config).join(asker.listen).start();
    let pb = free_addrs(ip("127.0.0.107"), 1)[0];
    let bob = Phone::start_tcp("bob", "bob-pw", b2.proxy, pb, &[]);
    bob.expect("bob@p2p.test: {0/TCP/v4} 200 OK () [1 binding]");
    bob.expect("hello-bob-while-you-were-away");
    let all = wait_for(PATIENCE, || (1..20).all(|n| shown(&bob, &format!("quota-{n}-of-alice\"")) == 1).then_some(()));
    assert!(all.is_some(), "bob's phone did not show every message:\n{}\n{}", bob.log(), b2.log());
    assert!(bob.log().contains("sip:alice@p2p.test"), "the sender is alice:\n{}", bob.log());
    let deleted = wait_for(PATIENCE, || (b2.status_json()["mailbox"]["deleted"] == 20).then_some(()));
    assert!(deleted.is_some(), "not all deleted: {}", b2.status_json()["mailbox"]);
    let mailbox = b2.status_json()["mailbox"].clone();
    assert_eq!((mailbox["delivered"].as_u64(), mailbox["waiting_for_me"].as_u64()), (Some(20), Some(0)), "{mailbox}");
    let listed = run_p2psip(&["messages", "--http", &b2.http.to_string()], PATIENCE);
    assert!(listed.stdout.starts_with("mailbox of sip:bob@p2p.test: 0 waiting, 20 delivered"), "{}", listed.stdout);

    // A second phone of bob's (another instance) registers: nothing is delivered twice.
    let pb2 = free_addrs(ip("127.0.0.107"), 1)[0];
    let mut second = Phone::start_tcp("bob", "bob-pw", b2.proxy, pb2, &[]);
    second.expect("bob@p2p.test: {0/TCP/v4} 200 OK () [2 bindings]");
    let relisted = wait_for(PATIENCE, || (b2.status_json()["mailbox"]["deleted"].as_u64() >= Some(20)).then_some(()));
    assert!(relisted.is_some());
    assert_eq!(shown(&second, "-of-alice"), 0, "{}", second.log());
    assert_eq!(shown(&bob, "hello-bob-while-you-were-away"), 1, "{}", bob.log());

    // bob is offline again (both phones quit, unregistering); one more message waits. Every
    // node is killed with SIGKILL and restarted on its data directory (redb): the message is
    // still there for bob's phone, and none of the twenty comes back.
    let mut bob = bob;
    for p in [&mut bob, &mut second] {
        p.command("/quit");
        assert!(p.process.wait_exit(WAIT).is_some(), "{} did not quit", p.name);
    }
    let offline = wait_for(PATIENCE, || bob_contacts(&survivors[0]).filter(Vec::is_empty));
    assert!(offline.is_some(), "bob's record never said offline again:\n{}", b2.log());
    let (mut flow, ok) = register_over_tcp(a.proxy, "alice", "alice-pw");
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    let answer = message_over_tcp(&mut flow, "alice", BOB, "survives-a-restart-of-everyone", 50);
    assert!(answer.starts_with("SIP/2.0 202"), "{answer}");
    drop(flow);
    drop(alice);

    let restart = |n: &Node, data: &Path, join: Option<SocketAddr>| {
        let mut builder =
            Node::builder(&n.listen.ip().to_string()).addrs([n.listen, n.proxy, n.http]).data_dir(data).config(&config);
        if let Some(j) = join {
            builder = builder.join(j);
        }
        builder
    };
    let mut everyone: Vec<(Node, &Path)> = vec![(a, dirs[0].as_path()), (b2, dirs[1].as_path()), (dead, dead_dir)];
    everyone.extend(survivors.into_iter().zip(survivor_dirs));
    for (n, _) in &mut everyone {
        n.process.kill();
    }
    let first = restart(&everyone[0].0, everyone[0].1, None).start();
    let mut restarted = vec![first];
    for (n, dir) in &everyone[1..] {
        restarted.push(restart(n, dir, Some(restarted[0].listen)).start());
    }
    let refs: Vec<&Node> = restarted.iter().collect();
    wait_joined(&refs);
    let b3 = &restarted[1];
    let bob = Phone::start_tcp("bob", "bob-pw", b3.proxy, free_addrs(ip("127.0.0.107"), 1)[0], &[]);
    bob.expect("survives-a-restart-of-everyone");
    let quiet = wait_for(PATIENCE, || (b3.status_json()["mailbox"]["deleted"].as_u64() >= Some(1)).then_some(()));
    assert!(quiet.is_some(), "{}", b3.status_json()["mailbox"]);
    assert_eq!(shown(&bob, "survives-a-restart-of-everyone"), 1);
    assert_eq!(shown(&bob, "-of-alice"), 0, "an old message came back:\n{}", bob.log());
    assert_eq!(shown(&bob, "hello-bob-while-you-were-away"), 0);
}
