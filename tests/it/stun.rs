//! The overlay port answers STUN Binding requests (RFC 8489) itself, as clients' keep-alives
//! and nodes learning their public address need: a real STUN client (coturn's
//! `turnutils_stunclient`, Debian package `coturn`) learns its own address from a node; and a
//! node learns its own from a real STUN server (coturn's `turnserver`), and `p2psip doctor`
//! finds its STUN and TURN servers answering. The addresses
//! 127.0.0.91–95 belong to this file.
// Tests poll with the real clock.
#![allow(clippy::disallowed_methods)]

use std::process::Command;
use std::time::Duration;

use crate::common::{wait_for, Node};

const PATIENCE: Duration = Duration::from_secs(30);

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

/// Asks the STUN server at `server` once with coturn's client; true when it answered.
fn answers(server: std::net::SocketAddr) -> bool {
    Command::new("timeout")
        .args(["5", "turnutils_stunclient", "-p", &server.port().to_string(), &server.ip().to_string()])
        .output()
        .is_ok_and(|out| out.status.success() && String::from_utf8_lossy(&out.stdout).contains("reflexive addr"))
}

#[test]
fn a_node_learns_its_address_from_a_real_stun_server() {
    // coturn's turnserver on 127.0.0.93, with 127.0.0.95 and the next port as its other
    // address for RFC 5780's tests: STUN for anyone, TURN for alice (long-term credentials,
    // RFC 8656 §9.2).
    let dir = tempfile::TempDir::new().expect("temp dir");
    let port = crate::common::free_port_run(crate::common::ip("127.0.0.93"), 2);
    let server = std::net::SocketAddr::new(crate::common::ip("127.0.0.93"), port);
    let child = Command::new("turnserver")
        .args([
            "-n",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--listening-ip",
            "127.0.0.93",
            "--listening-ip",
            "127.0.0.95",
        ])
        .args(["--lt-cred-mech", "--user", "alice:secret-pass", "--realm", "p2p.test"])
        .args(["--listening-port", &port.to_string(), "--log-file", "stdout"])
        .arg("--pidfile")
        .arg(dir.path().join("turnserver.pid"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn turnserver (Debian package coturn)");
    let _stun = crate::common::ChildGuard::new(child);
    assert!(wait_for(PATIENCE, || answers(server).then_some(())).is_some(), "turnserver does not answer STUN");

    let uri = format!("stun:{server}");
    // A TURN server configured for later (calls' media): shown by URI, its password never.
    let turn = format!("turn:{server}");
    let node = Node::builder("127.0.0.94")
        .args(&["--stun", &uri, "--turn", &turn, "--turn-user", "alice", "--turn-pass", "secret-pass"])
        .start();
    let nat = wait_for(PATIENCE, || {
        let nat = node.status()?["nat"].clone();
        nat["checked_at"].is_u64().then_some(nat)
    })
    .unwrap_or_else(|| panic!("no address check; log:\n{}", node.log()));
    assert_eq!(nat["mapped"], node.listen.to_string(), "{nat}");
    assert_eq!(nat["local"], node.listen.to_string(), "{nat}");
    assert_eq!(nat["mapping"], "none", "loopback has no NAT: {nat}");
    // RFC 5780's filtering test: answers from the other address and port came through.
    assert_eq!(nat["filtering"], "none", "{nat}");
    let status = node.status_json();
    assert_eq!(status["stun_servers"][0], uri);
    assert_eq!(status["turn_servers"][0], turn);
    assert!(!status.to_string().contains("secret-pass"), "{status}");

    // `p2psip doctor` asks both servers itself and says what it found.
    let doctor = crate::common::run_p2psip(&["doctor", "--http", &node.http.to_string()], PATIENCE);
    assert!(doctor.status.success(), "{}", doctor.stderr);
    let found = &doctor.stdout;
    assert!(found.contains(&format!("STUN server  {uri} answers (sees this machine at 127.0.0.")), "{found}");
    assert!(found.contains(&format!("TURN server  {turn} answers")), "{found}");
    assert!(found.contains("NAT          none"), "{found}");
    let out = crate::common::run_p2psip(&["status", "--http", &node.http.to_string()], PATIENCE);
    assert!(out.stdout.contains(&format!("public addr   {}, no NAT", node.listen)), "{}", out.stdout);
}
