//! `p2psip demo`: it starts, prints the softphone credentials, its three nodes on
//! 127.0.0.1/2/3 answer /health, two headless baresip phones configured with exactly what it
//! printed register and call each other across nodes, and SIGINT ends it with exit 0 and none
//! of its child processes left. Ports are picked free on all three addresses.
// Tests measure with the real clock.
#![allow(clippy::disallowed_methods)]

use std::fs::File;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::baresip::Phone;
use crate::common::{free_addrs, free_ports, http_get, ip, p2psip, run_p2psip, wait_for, ChildGuard};

const PATIENCE: Duration = Duration::from_secs(90);

/// Four ports free for UDP and TCP on 127.0.0.1, .2 and .3.
fn ports_free_everywhere() -> Vec<u16> {
    wait_for(Duration::from_secs(10), || {
        let ports = free_ports(ip("127.0.0.1"), 4);
        let free = ports.iter().all(|p| {
            ["127.0.0.1", "127.0.0.2", "127.0.0.3"].iter().all(|a| {
                let addr = SocketAddr::new(ip(a), *p);
                TcpListener::bind(addr).is_ok() && UdpSocket::bind(addr).is_ok()
            })
        });
        free.then_some(ports)
    })
    .expect("free ports")
}

/// `user: proxy/registrar sip:ADDR user USER domain D password PW` → (ADDR, PW).
fn credentials(out: &str, user: &str) -> (SocketAddr, String) {
    let line = out.lines().find(|l| l.trim_start().starts_with(&format!("{user}:"))).expect("credentials line");
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |w: &str| words[words.iter().position(|x| *x == w).expect(w) + 1];
    let proxy = after("proxy/registrar").trim_start_matches("sip:").parse().expect("proxy address");
    assert_eq!(after("user"), user, "{line}");
    assert_eq!(after("domain"), "p2p.test", "{line}");
    (proxy, after("password").to_owned())
}

#[test]
fn demo_starts_three_nodes_phones_call_and_sigint_stops_everything() {
    let work = tempfile::TempDir::new().expect("temp dir");
    let [overlay, proxy, http, ca] = ports_free_everywhere().try_into().expect("four ports");
    let out_path = work.path().join("demo.out");
    let child = p2psip(work.path())
        .args(["demo", "--dir"])
        .arg(work.path().join("demo"))
        .args(["--overlay-port", &overlay.to_string(), "--proxy-port", &proxy.to_string()])
        .args(["--http-port", &http.to_string(), "--ca-port", &ca.to_string()])
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("out"))
        .stderr(File::create(work.path().join("demo.err")).expect("err"))
        .spawn()
        .expect("spawn p2psip demo");
    // Should an assertion fail, the demo still stops its nodes (SIGTERM before SIGKILL).
    let mut demo = ChildGuard::graceful(child);
    let read = |name: &str| std::fs::read_to_string(work.path().join(name)).unwrap_or_default();
    let out = wait_for(PATIENCE, || {
        if let Some(status) = demo.try_exit() {
            panic!("demo exited ({status}):\n{}\n{}", read("demo.out"), read("demo.err"));
        }
        Some(read("demo.out")).filter(|o| o.contains("Ctrl-C stops everything"))
    })
    .unwrap_or_else(|| panic!("demo never ready:\n{}", read("demo.err")));
    println!("{out}");

    // The three nodes answer on their addresses.
    for n in 1..=3 {
        let addr = SocketAddr::new(ip(&format!("127.0.0.{n}")), http);
        assert_eq!(http_get(addr, "/health").map(|(c, _)| c), Some(200), "node {n}");
    }
    let pids: Vec<u32> =
        out.lines().filter_map(|l| l.rsplit_once(", pid ").and_then(|(_, p)| p.trim().parse().ok())).collect();
    assert_eq!(pids.len(), 3, "{out}");

    // Two phones with what the demo printed: alice on node 1 calls bob on node 2.
    let (alice_proxy, alice_pw) = credentials(&out, "alice");
    let (bob_proxy, bob_pw) = credentials(&out, "bob");
    assert_eq!(alice_proxy, SocketAddr::new(ip("127.0.0.1"), proxy));
    assert_eq!(bob_proxy, SocketAddr::new(ip("127.0.0.2"), proxy));
    let alice_at = free_addrs(ip("127.0.0.1"), 1)[0];
    let bob_at = free_addrs(ip("127.0.0.2"), 1)[0];
    let mut alice = Phone::start("alice", &alice_pw, alice_proxy, alice_at, &["sip:bob@p2p.test"]);
    let bob = Phone::start("bob", &bob_pw, bob_proxy, bob_at, &[]);
    alice.expect("alice@p2p.test: {0/UDP/v4} 200 OK () [1 binding]");
    bob.expect("bob@p2p.test: {0/UDP/v4} 200 OK () [1 binding]");
    // Once node 2 has published bob's record (with its contact), the call goes through.
    let node1_http = SocketAddr::new(ip("127.0.0.1"), http).to_string();
    let published = wait_for(PATIENCE, || {
        let l = run_p2psip(&["lookup", "sip:bob@p2p.test", "--json", "--http", &node1_http], PATIENCE);
        let v: serde_json::Value = serde_json::from_str(&l.stdout).ok()?;
        (v["registration"]["contacts"].as_array().is_some_and(|c| !c.is_empty())).then_some(())
    });
    assert!(published.is_some(), "bob's record never published:\n{}", read("demo/node2.log"));
    alice.command("/dial sip:bob@p2p.test");
    alice.expect("Call established: sip:bob@p2p.test");
    bob.expect("Call established: sip:alice@p2p.test");
    alice.command("/hangup");
    bob.expect("session closed");

    // SIGINT to the demo alone: it stops its nodes and exits 0.
    let sent = Command::new("kill").args(["-INT", &demo.pid().to_string()]).status().expect("run kill");
    assert!(sent.success());
    let status = demo.wait_exit(Duration::from_secs(20)).expect("demo exits after SIGINT");
    assert!(status.success(), "demo exit {status}:\n{}", read("demo.err"));
    assert!(read("demo.out").contains("p2psip demo: stopped"));
    for pid in pids {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "node pid {pid} still there");
    }
    for n in 1..=3 {
        let addr = SocketAddr::new(ip(&format!("127.0.0.{n}")), http);
        assert!(http_get(addr, "/health").is_none(), "node {n} still answers");
    }
}
