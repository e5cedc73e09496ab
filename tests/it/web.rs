//! The local web page, `/metrics` and the token that stops a node (issue 16, items 1 and 2),
//! with a real browser and real phones.
//!
//! A real CA enrolls alice, bob and carol; three nodes form a ring: A (alice's, 127.0.0.122),
//! B (bob's, .123) and C (carol's, .124). alice's and bob's baresip phones watch each other.
//! Headless Chromium (Debian's) loads A's page:
//!
//! - the ring has one mark per node A knows (itself, predecessor, successors, fingers), each
//!   at its Node ID, and the ticks of the places of alice's records;
//! - alice's phone shows as registered, bob as online;
//! - during a call from alice to bob, the call shows with its media path;
//! - a screenshot is kept as a test artifact (`target/tmp/web-page.png`).
//!
//! `/metrics` is read as Prometheus would and checked against the same node's `/status`; a
//! stop without the token is refused, and one with it makes the node leave and exit.
//!
//! The addresses 127.0.0.121–129 belong to this file.
// Tests measure with the real clock.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::baresip::Phone;
use crate::common::{browser, ca, free_addrs, http_request, ip, wait_for, Node};

const PATIENCE: Duration = Duration::from_secs(60);
const CONFIG: &str = "domain = \"p2p.test\"\n[chord]\nstabilize_max_interval_ms = 500\n";
const ALICE: &str = "sip:alice@p2p.test";
const BOB: &str = "sip:bob@p2p.test";

/// Every value of attribute `name` in `html`, in order.
fn attribute_values(html: &str, name: &str) -> Vec<String> {
    let needle = format!("{name}=\"");
    html.match_indices(&needle)
        .filter_map(|(at, _)| {
            let rest = &html[at + needle.len()..];
            rest.find('"').map(|end| rest[..end].to_owned())
        })
        .collect()
}

/// The Node IDs `/status` says the node knows: itself, predecessor, successors, fingers.
fn known_ids(status: &serde_json::Value) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut add = |v: &serde_json::Value| {
        if let Some(id) = v["node_id"].as_str() {
            ids.insert(id.to_owned());
        }
    };
    add(status);
    add(&status["predecessor"]);
    for list in ["successors", "fingers"] {
        status[list].as_array().into_iter().flatten().for_each(&mut add);
    }
    ids
}

/// A sample's value in OpenMetrics text: the line `name value` (no labels).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn the_page_shows_the_ring_phones_buddies_and_calls_in_a_real_browser() {
    if !browser::available() {
        panic!("chromium is not installed (apt-get install chromium; .ci/run does)");
    }
    let base = tempfile::TempDir::new().expect("temp dir");
    let base = base.path();
    let dirs = ca::enrolled_overlay(base, "127.0.0.121", &[ALICE, BOB, "sip:carol@p2p.test"]);
    let config = base.join("node.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let mut a =
        Node::builder("127.0.0.122").data_dir(&dirs[0]).config(&config).enrolled_account(ALICE, "alice-pw").start();
    let b = Node::builder("127.0.0.123")
        .data_dir(&dirs[1])
        .config(&config)
        .join(a.listen)
        .enrolled_account(BOB, "bob-pw")
        .start();
    let c = Node::builder("127.0.0.124").data_dir(&dirs[2]).config(&config).join(a.listen).start();
    let joined = wait_for(PATIENCE, || {
        [&a, &b, &c].iter().all(|n| n.status().unwrap_or_default()["overlay"]["state"] == "joined").then_some(())
    });
    assert!(joined.is_some(), "ring not formed:\n{}", a.log());
    let bob = Phone::start_presence("bob", "bob-pw", b.proxy, free_addrs(ip("127.0.0.123"), 1)[0], &[ALICE]);
    bob.expect("bob@p2p.test: {0/UDP/v4} 200 OK () [1 binding]");
    let mut alice = Phone::start_presence("alice", "alice-pw", a.proxy, free_addrs(ip("127.0.0.122"), 1)[0], &[BOB]);
    alice.expect("alice@p2p.test: {0/UDP/v4} 200 OK () [1 binding]");
    let online = wait_for(PATIENCE, || (a.status_json()["presence"]["buddies"][BOB] == "open").then_some(()));
    assert!(online.is_some(), "bob never online at A: {}", a.status_json()["presence"]);

    // The page in a real browser: one mark per known node, alice's phone, bob online, and
    // the places of alice's records (its own lookup, once its first refresh has run).
    let profile = tempfile::TempDir::new().expect("browser profile");
    let url = format!("http://{}/", a.http);
    let mut last = String::new();
    let rendered = wait_for(PATIENCE, || {
        last = browser::dom(profile.path(), &url)?;
        let marks: BTreeSet<String> = attribute_values(&last, "data-node-id").into_iter().collect();
        let known = known_ids(&a.status_json());
        let ready = last.contains("data-ready=\"1\"")
            && marks == known
            && last.matches("class=\"node ").count() == known.len()
            && !attribute_values(&last, "data-replica").is_empty();
        ready.then_some(known)
    });
    let known = rendered.unwrap_or_else(|| panic!("the page never showed the ring A knows:\n{last}"));
    assert!(known.len() >= 3, "A knows B and C: {known:?}");
    assert_eq!(attribute_values(&last, "data-replica").len(), 3, "R+1 = 3 places of alice's records");
    assert!(last.contains("class=\"phone registered\" data-aor=\"sip:alice@p2p.test\""), "{last}");
    assert!(
        last.contains("data-aor=\"sip:bob@p2p.test\"><td>sip:bob@p2p.test</td><td><span class=\"open\">"),
        "{last}"
    );

    // A call shows with its media path while it lasts.
    alice.command("/dial sip:bob@p2p.test");
    alice.expect("Call established: sip:bob@p2p.test");
    let in_call = wait_for(PATIENCE, || {
        let dom = browser::dom(profile.path(), &url)?;
        let calls = attribute_values(&dom, "data-call-id");
        (!calls.is_empty() && dom.contains("<td>host</td>")).then_some(dom)
    });
    assert!(in_call.is_some(), "the call never showed with its path:\n{}", a.status_json()["calls"]);
    let artifact = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-page.png");
    assert!(browser::screenshot(profile.path(), &url, &artifact), "no screenshot");
    eprintln!("screenshot of the page during a call: {}", artifact.display());

    // /metrics, as Prometheus scrapes it, agrees with /status.
    let (code, text, head) = http_request(a.http, "GET", "/metrics", &a.http.to_string(), "").expect("GET /metrics");
    assert_eq!(code, 200, "{text}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/openmetrics-text"), "{head}");
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("p2psip_"), "every metric is p2psip_: {line}");
    }
    let families: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    let unique: BTreeSet<&str> = families.iter().copied().collect();
    assert_eq!(unique.len(), families.len(), "each metric family once: {families:?}");
    assert!(families.len() > 100, "the status's counters are all there: {}", families.len());
    assert_eq!(sample(&text, "p2psip_phones"), Some(1.0));
    assert_eq!(sample(&text, "p2psip_calls"), Some(1.0));
    assert_eq!(sample(&text, "p2psip_presence_buddies"), Some(1.0));
    assert!(sample(&text, "p2psip_lookup_hops_count") >= Some(1.0), "the page's lookup is measured");
    assert!(text.contains("p2psip_lookup_duration_seconds_bucket{le=\"+Inf\"}"), "{text}");
    assert!(sample(&text, "p2psip_server_transactions_total") >= Some(1.0));
    assert!(sample(&text, "p2psip_transactions_server").is_some());
    let packets = wait_for(PATIENCE, || {
        let (_, text, _) = http_request(a.http, "GET", "/metrics", &a.http.to_string(), "")?;
        sample(&text, "p2psip_media_packets_in_total").filter(|p| *p > 0.0)
    });
    assert!(packets.is_some(), "media packets counted");
    let status = a.status_json();
    assert_eq!(sample(&text, "p2psip_successors"), status["successors"].as_array().map(|s| s.len() as f64));
    alice.command("/hangup");
    bob.expect("session closed");

    // Stopping needs the data directory's token; with it the node leaves and exits.
    let host = a.http.to_string();
    let post = |extra: &str| http_request(a.http, "POST", "/shutdown", &host, extra).map(|(code, _, _)| code);
    assert_eq!(post(""), Some(401));
    assert_eq!(post("Authorization: Bearer 00\r\n"), Some(403));
    let token = std::fs::read_to_string(a.data_dir().join("http-token")).expect("token file");
    let cross = format!("Authorization: Bearer {}\r\nOrigin: http://evil.example\r\n", token.trim());
    assert_eq!(post(&cross), Some(403), "a cross-site page cannot stop the node");
    let printed = crate::common::run_p2psip(&["web", "--http", &host], Duration::from_secs(10));
    assert!(printed.stdout.contains(&format!("http://{host}/#token={}", token.trim())), "{}", printed.stdout);
    assert_eq!(post(&format!("Authorization: Bearer {}\r\n", token.trim())), Some(200));
    let exited = a.process.wait_exit(PATIENCE);
    assert!(exited.is_some_and(|s| s.success()), "A did not exit:\n{}", a.log());
    assert!(a.log().contains("left the overlay"), "{}", a.log());
}
