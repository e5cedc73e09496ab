//! sipp against a node's registrar and proxy: REGISTER with digest authentication
//! (right and wrong password, UDP and TCP), and a call INVITE/180/200/ACK/BYE from a sipp UAC to a sipp UAS
//! registered as bob, through the proxy, over UDP.
//!
//! sipp comes from the Debian package `sip-tester`; without it these tests fail (CI installs it).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{free_port_run, free_ports, ip, wait_for, ChildGuard, Node};

fn scenario(name: &str) -> String {
    format!("{}/tests/sipp/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Starts sipp with `args` on `local_ip:port` (media on a free port), logging into `cwd`.
fn sipp(cwd: &Path, local_ip: &str, port: u16, args: &[&str], target: Option<SocketAddr>) -> ChildGuard {
    let media = free_port_run(ip(local_ip), 4);
    let mut cmd = Command::new("sipp");
    cmd.args(["-nostdin", "-timeout", "20", "-timeout_error", "-m", "1", "-trace_err", "-trace_msg"])
        .args(["-i", local_ip, "-p", &port.to_string(), "-mp", &media.to_string()])
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(t) = target {
        cmd.arg(t.to_string());
    }
    match cmd.spawn() {
        Ok(c) => ChildGuard::new(c),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("sipp is not installed (apt-get install -y sip-tester); these tests need it")
        }
        Err(e) => panic!("cannot run sipp: {e}"),
    }
}

/// sipp's exit status once it ends (within 30 s), with its logs for failure messages.
fn finish(mut p: ChildGuard, cwd: &Path) -> (bool, String) {
    let status = p.wait_exit(Duration::from_secs(30));
    (status.is_some_and(|s| s.success()), logs(cwd))
}

fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        out += &format!("--- {}\n{text}\n", entry.file_name().to_string_lossy());
    }
    out
}

fn register(node: &Node, user: &str, password: &str, port: u16) -> (bool, String) {
    register_over(node, user, password, port, "u1")
}

/// sipp's `-t`: `u1` for UDP, `t1` for TCP.
fn register_over(node: &Node, user: &str, password: &str, port: u16, transport: &str) -> (bool, String) {
    let cwd = tempfile::TempDir::new().expect("temp dir");
    let local = node.proxy.ip().to_string();
    let args = [
        "-sf",
        &scenario("register.xml"),
        "-s",
        user,
        "-key",
        "domain",
        "p2p.test",
        "-au",
        user,
        "-ap",
        password,
        "-t",
        transport,
    ];
    let p = sipp(cwd.path(), &local, port, &args, Some(node.proxy));
    finish(p, cwd.path())
}

const ACCOUNTS: &[(&str, &str)] = &[("sip:alice@p2p.test", "alice-secret"), ("sip:bob@p2p.test", "bob-secret")];

#[test]
fn register_with_digest_and_refuse_a_wrong_password() {
    let node = Node::builder("127.0.0.51").accounts(ACCOUNTS).start();
    let [p1, p2] = free_ports(node.proxy.ip(), 2).try_into().expect("two ports");
    let (ok, logs) = register(&node, "alice", "wrong", p1);
    assert!(!ok, "a wrong password must not register; sipp logs:\n{logs}");
    assert!(logs.contains("SIP/2.0 403"), "refused with 403; sipp logs:\n{logs}");
    let (ok, logs) = register(&node, "alice", "alice-secret", p2);
    assert!(ok, "REGISTER with the right password failed; sipp logs:\n{logs}\nnode log:\n{}", node.log());
    let proxy = &node.status_json()["registrar"];
    assert_eq!(proxy["bindings"], 1, "{proxy}");
    assert_eq!(proxy["registers_accepted"], 1, "{proxy}");
    assert_eq!(proxy["registers_refused"], 1, "{proxy}");
}

/// sipp registers over TCP, then exits, which closes its connection: the binding, tied to
/// that connection (RFC 5626 §5.2 in spirit), goes with it, well before the first OPTIONS ping (30 s).
#[test]
fn register_over_tcp_and_unregister_when_the_connection_closes() {
    let node = Node::builder("127.0.0.53").accounts(ACCOUNTS).start();
    let [port] = free_ports(node.proxy.ip(), 1).try_into().expect("a port");
    let (ok, logs) = register_over(&node, "bob", "bob-secret", port, "t1");
    assert!(ok, "REGISTER over TCP failed; sipp logs:\n{logs}\nnode log:\n{}", node.log());
    // The 200 listed the binding: it existed.
    assert!(logs.contains(";transport=TCP>;expires=600"), "no binding in the 200; sipp logs:\n{logs}");
    assert_eq!(node.status_json()["registrar"]["registers_accepted"], 1);
    let gone = wait_for(Duration::from_secs(10), || {
        let r = node.status_json()["registrar"].clone();
        (r["bindings"] == 0 && r["unregistered_on_close"] == 1).then_some(())
    });
    assert!(gone.is_some(), "binding still there after sipp closed: {}", node.status_json()["registrar"]);
    assert_eq!(node.status_json()["registrar"]["pings_failed"], 0, "removed by the close, not by a ping");
}

#[test]
fn call_through_the_proxy_invite_ack_bye() {
    let node = Node::builder("127.0.0.52").accounts(ACCOUNTS).start();
    let local = node.proxy.ip().to_string();
    let [uas_port, uac_port] = free_ports(node.proxy.ip(), 2).try_into().expect("two ports");
    // Bob's "phone" registers from the port it will answer on.
    let (ok, logs) = register(&node, "bob", "bob-secret", uas_port);
    assert!(ok, "bob's REGISTER failed; sipp logs:\n{logs}");
    let uas_dir = tempfile::TempDir::new().expect("temp dir");
    let uas = sipp(uas_dir.path(), &local, uas_port, &["-sf", &scenario("uas.xml")], None);
    // The UAS is ready once its socket is bound: wait for the port to be taken.
    let bound = wait_for(Duration::from_secs(10), || {
        std::net::UdpSocket::bind((node.proxy.ip(), uas_port)).is_err().then_some(())
    });
    assert!(bound.is_some(), "sipp UAS did not bind its port");
    // Alice's phone registers from the port it calls from: the proxy forwards a phone's
    // requests only over a registered flow or with credentials (docs/security.md, M3).
    let (ok, logs) = register(&node, "alice", "alice-secret", uac_port);
    assert!(ok, "alice's REGISTER failed; sipp logs:\n{logs}");
    let uac_dir = tempfile::TempDir::new().expect("temp dir");
    let args = ["-sf", &scenario("uac.xml"), "-s", "bob", "-key", "domain", "p2p.test"];
    let uac = sipp(uac_dir.path(), &local, uac_port, &args, Some(node.proxy));
    let (uac_ok, uac_logs) = finish(uac, uac_dir.path());
    let (uas_ok, uas_logs) = finish(uas, uas_dir.path());
    assert!(uac_ok, "caller failed; sipp logs:\n{uac_logs}\nnode log:\n{}", node.log());
    assert!(uas_ok, "callee failed; sipp logs:\n{uas_logs}");
    // The ACK and BYE reached bob through the proxy (its Record-Route), not directly.
    assert!(uas_logs.contains("Record-Route"), "{uas_logs}");
    assert_eq!(node.status_json()["registrar"]["requests_forwarded"], 2, "INVITE and BYE");
}
