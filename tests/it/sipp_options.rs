//! A real SIP client (sipp) sends OPTIONS to a real node and gets 200 OK, over UDP and TCP,
//! on both the overlay and the proxy address (RFC 3261 §11: OPTIONS to the node itself).
//!
//! sipp comes from the Debian package `sip-tester`; without it these tests fail (CI installs it).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{free_ports, ip, ChildGuard, Node};

const SCENARIO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/options.xml");

/// Runs tests/sipp/options.xml once against `target` from `local_ip`; panics with sipp's
/// output unless it exits 0 (a 200 was received).
fn sipp_options(local_ip: &str, target: SocketAddr, transport: &str) {
    let [sip_port, media_port] = free_ports(ip(local_ip), 2).try_into().expect("two ports");
    let cwd = tempfile::TempDir::new().expect("temp dir");
    let spawned = Command::new("sipp")
        .args(["-sf", SCENARIO, "-nostdin", "-timeout", "10", "-timeout_error", "-m", "1"])
        .args(["-t", transport, "-i", local_ip])
        .args(["-p", &sip_port.to_string(), "-mp", &media_port.to_string()])
        .args(["-trace_err", "-trace_msg"])
        .arg(target.to_string())
        .current_dir(cwd.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("sipp is not installed (apt-get install -y sip-tester); these tests need it")
        }
        Err(e) => panic!("cannot run sipp: {e}"),
    };
    let mut sipp = ChildGuard::new(child);
    let status = sipp.wait_exit(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "sipp OPTIONS over {transport} to {target} failed ({status:?}); sipp logs:\n{}",
        sipp_logs(cwd.path())
    );
}

/// Whatever sipp wrote to its working directory (`-trace_err`, `-trace_msg`).
fn sipp_logs(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        out += &format!("--- {}\n{text}\n", entry.file_name().to_string_lossy());
    }
    out
}

fn check(node_ip: &str, on_overlay: bool, transport: &str) {
    let node = Node::start(node_ip);
    let target = if on_overlay { node.listen } else { node.proxy };
    sipp_options(node_ip, target, transport);
    let status = node.status_json();
    assert!(status["counters"]["messages_in"].as_u64() >= Some(1), "{status}");
    assert!(status["counters"]["messages_out"].as_u64() >= Some(1), "{status}");
}

#[test]
fn options_over_udp_to_overlay_gets_200() {
    check("127.0.0.21", true, "u1");
}

#[test]
fn options_over_tcp_to_overlay_gets_200() {
    check("127.0.0.22", true, "t1");
}

#[test]
fn options_over_udp_to_proxy_gets_200() {
    check("127.0.0.23", false, "u1");
}

#[test]
fn options_over_tcp_to_proxy_gets_200() {
    check("127.0.0.24", false, "t1");
}
