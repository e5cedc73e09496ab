//! Presence between buddies with real phones and daemons (issue 15, item 3).
//!
//! A real CA enrolls alice, bob, carol and dave and is stopped. Four nodes form a ring: A
//! (alice's, 127.0.0.112), B (bob's, .113), C (carol's, .114) and D (.115, which only stores).
//! baresip phones with the `presence` module: alice's and carol's watch bob; bob's watches
//! alice (so alice is bob's buddy, carol is not) and publishes its own state.
//!
//! - alice sees bob online, on her baresip and on her second phone, a Linphone (one
//!   subscription across the overlay serves both); bob's node counts her as a watcher and
//!   carol as pending, and carol's phone learns nothing.
//! - alice calls bob: her node sends the INVITE on bob's cached contact, skipping the lookup.
//! - bob sets himself offline (his phone PUBLISHes `closed`), then online: alice's phone
//!   follows.
//! - bob's phone quits: alice's phones show him offline, and her subscription stays up.
//! - bob's node leaves the overlay: still offline for alice, her subscription still up; bob's
//!   node and phone come back, and alice sees him online again.
//!
//! The addresses 127.0.0.111–119 belong to this file.
// Tests measure with the real clock.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use crate::common::baresip::{Phone, WAIT};
use crate::common::linphone::Linphone;
use crate::common::{ca, free_addrs, ip, wait_for, Node};

const PATIENCE: Duration = Duration::from_secs(60);
/// Fast pings (a phone that quits is noticed in seconds) and a short retry for buddies whose
/// node is away.
const CONFIG: &str = "domain = \"p2p.test\"\n[registrar]\nping_interval_ms = 1000\nping_timeout_ms = 2000\n\
    [chord]\nstabilize_max_interval_ms = 500\n[presence]\nretry_min_secs = 1\nretry_max_secs = 2\n";
const ALICE: &str = "sip:alice@p2p.test";
const BOB: &str = "sip:bob@p2p.test";
const CAROL: &str = "sip:carol@p2p.test";

/// What `node` tells its phones of `buddy`.
fn buddy_state(node: &Node, buddy: &str) -> String {
    node.status().unwrap_or_default()["presence"]["buddies"][buddy].as_str().unwrap_or("").to_owned()
}

fn wait_buddy(node: &Node, buddy: &str, want: &str) {
    let seen = wait_for(PATIENCE, || (buddy_state(node, buddy) == want).then_some(()));
    assert!(seen.is_some(), "{buddy} never {want}: {}\n{}", node.status_json()["presence"], node.log());
}

/// The presence state `phone`'s `/contacts` shows for its only contact.
fn shown(phone: &mut Phone, want: &str) -> bool {
    let before = phone.log().len();
    phone.command("/contacts");
    let listed = wait_for(Duration::from_secs(2), || {
        let log = phone.log();
        let after = log.get(before..).unwrap_or_default().to_owned();
        after.contains("sip:").then_some(after)
    });
    listed.is_some_and(|l| l.contains(want))
}

fn wait_shown(phone: &mut Phone, want: &str) {
    let seen = wait_for(PATIENCE, || shown(phone, want).then_some(()));
    assert!(seen.is_some(), "{} never showed {want}:\n{}", phone.name, phone.log());
}

#[test]
fn buddies_see_each_other_online_away_and_offline_across_the_overlay() {
    let base = tempfile::TempDir::new().expect("temp dir");
    let base = base.path();
    let users = [ALICE, BOB, CAROL, "sip:dave@p2p.test"];
    let dirs = ca::enrolled_overlay(base, "127.0.0.111", &users);
    let config = base.join("node.toml");
    std::fs::write(&config, CONFIG).expect("config");

    let a = Node::builder("127.0.0.112").data_dir(&dirs[0]).config(&config).enrolled_account(ALICE, "alice-pw").start();
    let start = |ip: &str, i: usize, account: Option<(&str, &str)>| {
        let mut b = Node::builder(ip).data_dir(&dirs[i]).config(&config).join(a.listen);
        if let Some((aor, pw)) = account {
            b = b.enrolled_account(aor, pw);
        }
        b.start()
    };
    let mut b = start("127.0.0.113", 1, Some((BOB, "bob-pw")));
    let c = start("127.0.0.114", 2, Some((CAROL, "carol-pw")));
    let d = start("127.0.0.115", 3, None);
    let joined = wait_for(PATIENCE, || {
        [&a, &b, &c, &d].iter().all(|n| n.status().unwrap_or_default()["overlay"]["state"] == "joined").then_some(())
    });
    assert!(joined.is_some(), "ring not formed:\n{}", a.log());

    let mut bob = Phone::start_presence("bob", "bob-pw", b.proxy, free_addrs(ip("127.0.0.113"), 1)[0], &[ALICE]);
    bob.expect("bob@p2p.test: {0/UDP/v4} 200 OK () [1 binding]");
    let mut alice = Phone::start_presence("alice", "alice-pw", a.proxy, free_addrs(ip("127.0.0.112"), 1)[0], &[BOB]);
    alice.expect("alice@p2p.test: {0/UDP/v4} 200 OK () [1 binding]");
    let mut carol = Phone::start_presence("carol", "carol-pw", c.proxy, free_addrs(ip("127.0.0.114"), 1)[0], &[BOB]);
    carol.expect("carol@p2p.test: {0/UDP/v4} 200 OK () [1 binding]");

    // alice (bob's buddy) sees him online; carol (not his buddy) waits, and sees nothing.
    wait_buddy(&a, BOB, "open");
    wait_shown(&mut alice, "Online");
    // alice's second phone, a Linphone, watches bob too: it is told he is online.
    let lp_addr = free_addrs(ip("127.0.0.112"), 1)[0];
    let linphone = Linphone::start_watching(
        "alice",
        "alice-pw",
        a.proxy,
        lp_addr,
        free_addrs(ip("127.0.0.112"), 1)[0].port(),
        &[BOB],
    );
    let told = |l: &Linphone, state: &str| l.log().contains(&format!("<sip:bob@p2p.test>] has presence [{state}]"));
    let open = wait_for(PATIENCE, || told(&linphone, "open").then_some(()));
    assert!(open.is_some(), "Linphone never heard bob is online:\n{}", linphone.log());
    assert_eq!(a.status_json()["presence"]["phone_subscriptions"], 2, "one subscription per phone");
    assert_eq!(a.status_json()["presence"]["subscriptions"], 1, "one across the overlay for both");
    // alice calls her buddy bob: her node sends the INVITE on bob's cached contact, with no
    // lookup (buddy-first routing).
    alice.command("/dial sip:bob@p2p.test");
    alice.expect("Call established: sip:bob@p2p.test");
    bob.expect("Call established: sip:alice@p2p.test");
    let routing = a.status_json()["presence"].clone();
    assert_eq!(
        (routing["lookups_saved"].as_u64(), routing["cache_fallbacks"].as_u64()),
        (Some(1), Some(0)),
        "{routing}"
    );
    alice.command("/hangup");
    bob.expect("session closed");
    wait_buddy(&c, BOB, "pending");
    let watchers = wait_for(PATIENCE, || {
        let p = b.status_json()["presence"].clone();
        (p["watchers"].as_u64() >= Some(1) && p["pending"].as_u64() >= Some(1)).then_some(p)
    });
    assert!(watchers.is_some(), "bob's node: {}", b.status_json()["presence"]);
    assert!(shown(&mut carol, "Unknown"), "carol learned something:\n{}", carol.log());
    // (baresip may publish twice at start, each a publication of its own until one expires.)
    let publications = b.status_json()["presence"]["publications"].as_u64();
    assert!(publications >= Some(1), "bob's phone publishes: {publications:?}");

    // bob sets himself offline (his phone PUBLISHes `closed`) and back online.
    bob.command("/presence_offline");
    alice.expect("changed status from Online to Offline");
    wait_buddy(&a, BOB, "closed");
    bob.command("/presence_online");
    alice.expect("changed status from Offline to Online");

    // bob's phone quits: offline for alice, whose subscription stays.
    let transitions = |p: &Phone| p.log().matches("changed status from Online to Offline").count();
    bob.command("/quit");
    assert!(bob.process.wait_exit(WAIT).is_some(), "bob's phone did not quit");
    let offline = wait_for(PATIENCE, || (transitions(&alice) == 2).then_some(()));
    assert!(offline.is_some(), "alice never saw bob go:\n{}", alice.log());
    wait_buddy(&a, BOB, "closed");
    assert!(!alice.log().contains("subscriber closed"), "alice's subscription was ended:\n{}", alice.log());
    let closed = wait_for(PATIENCE, || told(&linphone, "closed").then_some(()));
    assert!(closed.is_some(), "Linphone never heard bob went:\n{}", linphone.log());

    // bob's node leaves: still closed for alice, her subscription still up. It comes back, and
    // so does bob's phone: alice sees him online.
    b.process.terminate();
    assert!(b.process.wait_exit(PATIENCE).is_some(), "bob's node did not stop");
    wait_buddy(&a, BOB, "closed");
    assert_eq!(a.status_json()["presence"]["phone_subscriptions"], 2, "{}", a.status_json()["presence"]);
    let b2 = Node::builder("127.0.0.113")
        .addrs([b.listen, b.proxy, b.http])
        .data_dir(&dirs[1])
        .config(&config)
        .join(a.listen)
        .start();
    let bob = Phone::start_presence("bob", "bob-pw", b2.proxy, free_addrs(ip("127.0.0.113"), 1)[0], &[ALICE]);
    bob.expect("bob@p2p.test: {0/UDP/v4} 200 OK () [1 binding]");
    // (bob's node may answer `pending` until his phone has subscribed to alice again: then
    // alice's phone shows him Unknown for a moment, and baresip prints no change from Unknown.)
    wait_buddy(&a, BOB, "open");
    wait_shown(&mut alice, "Online");
    assert!(!alice.log().contains("subscriber closed"), "alice's subscription was ended:\n{}", alice.log());
    drop(bob);
}

/// B13 (`docs/performance.md`): a MESSAGE's round trip from a phone to a buddy, routed by a
/// registration lookup and by the buddy cache. Eight nodes on loopback; the sending "phone" is
/// a plain SIP client on alice's node, so the time is measured to the microsecond.
/// `cargo test --release --test it -- --ignored measure_buddy_first_routing --nocapture`
#[test]
#[ignore = "a benchmark, run by hand (docs/performance.md, B13)"]
fn measure_buddy_first_routing() {
    use crate::common::sip_client::{call_over_tcp, message_over_tcp, register_over_tcp};
    let base = tempfile::TempDir::new().expect("temp dir");
    let base = base.path();
    let storers: Vec<String> = (0..6).map(|i| format!("sip:store{i}@p2p.test")).collect();
    let mut users = vec![ALICE, BOB];
    users.extend(storers.iter().map(String::as_str));
    let dirs = ca::enrolled_overlay(base, "127.0.0.116", &users);
    let config = base.join("node.toml");
    // The registrar's own pings (every 30 s): a phone busy showing messages is not dropped.
    // alice may watch bob by configuration, so bob's phone need not watch her. It registers over
    // UDP: over TCP, baresip's answers wait for our delayed ACK (about 40 ms on every call), which
    // hides what routing costs; over UDP a slow answer now and then costs a 500 ms
    // retransmission instead, which shows in the p90 only.
    let settings = "domain = \"p2p.test\"\n[chord]\nstabilize_max_interval_ms = 500\n\
        [presence]\nallow = [\"sip:alice@p2p.test\"]\n";
    std::fs::write(&config, settings).expect("config");
    let a = Node::builder("127.0.0.117").data_dir(&dirs[0]).config(&config).enrolled_account(ALICE, "alice-pw").start();
    let b = Node::builder("127.0.0.118")
        .data_dir(&dirs[1])
        .config(&config)
        .enrolled_account(BOB, "bob-pw")
        .join(a.listen)
        .start();
    // Six more nodes that only store, on one address (side by side on the ring).
    let others: Vec<Node> = dirs[2..]
        .iter()
        .map(|d| Node::builder("127.0.0.119").data_dir(d).config(&config).join(a.listen).start())
        .collect();
    let mut all: Vec<&Node> = vec![&a, &b];
    all.extend(others.iter());
    let joined = wait_for(PATIENCE, || {
        all.iter().all(|n| n.status().unwrap_or_default()["overlay"]["state"] == "joined").then_some(())
    });
    assert!(joined.is_some(), "ring not formed");
    let bob = Phone::start("bob", "bob-pw", b.proxy, free_addrs(ip("127.0.0.118"), 1)[0], &[]);
    bob.expect("bob@p2p.test: {0/UDP/v4} 200 OK () [1 binding]");
    let (mut flow, ok) = register_over_tcp(a.proxy, "alice", "alice-pw");
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    let mut cseq = 10;
    let mut round = |label: &str| {
        let mut calls = Vec::new();
        for _ in 0..20 {
            cseq += 1;
            calls.push(call_over_tcp(&mut flow, "alice", BOB, cseq).as_secs_f64() * 1000.0);
        }
        calls.sort_by(f64::total_cmp);
        println!(
            "{label}: call setup (INVITE to 200 OK) p50 {:.2} ms, p90 {:.2} ms, min {:.2} ms over {} calls",
            calls[10],
            calls[18],
            calls[0],
            calls.len()
        );
        let mut times = Vec::new();
        for _ in 0..60 {
            cseq += 1;
            let began = std::time::Instant::now();
            let answer = message_over_tcp(&mut flow, "alice", BOB, &format!("{label}-{cseq}"), cseq);
            times.push(began.elapsed().as_secs_f64() * 1000.0);
            assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{label}: p50 {:.2} ms, p90 {:.2} ms, min {:.2} ms over {} MESSAGEs",
            times[15],
            times[27],
            times[0],
            times.len()
        );
    };
    round("lookup");
    // alice's phone watches bob: from now on her node has his contact.
    let _alice = Phone::start_presence("alice", "alice-pw", a.proxy, free_addrs(ip("127.0.0.117"), 1)[0], &[BOB]);
    wait_buddy(&a, BOB, "open");
    round("buddy cache");
    println!("presence: {}", a.status_json()["presence"]);
}
