//! Calls and messages from an overlay phone to an ordinary SIP domain (issue 16, item 5):
//! RFC 3263 against a real DNS server, a real Kamailio and a real phone of that domain.
//!
//! - dnsmasq (127.0.0.131) serves `example.test`: a NAPTR record to `_sip._udp.example.test`,
//!   whose SRV records name first `busy.example.test` (a sipp server answering 503, .133) and
//!   then `sip.example.test` (Kamailio, .132); and `other.test`, with no NAPTR and one SRV
//!   record to Kamailio.
//! - Kamailio is the registrar and Record-Routing proxy of both domains; carol's baresip
//!   (.134) registers there as `carol@example.test`.
//! - alice's baresip registers with her p2psip node (.135), whose `[dns]` names dnsmasq.
//!
//! alice calls `sip:carol@example.test`: her node asks NAPTR, SRV and A, tries the busy
//! server, takes its 503 as a reason to try the next target (§4.3), and reaches carol through
//! Kamailio; carol hangs up, and the BYE comes back through Kamailio and alice's node. alice
//! then messages `sip:carol@other.test` (SRV without NAPTR). A node asked by someone else's
//! request for another domain refuses it (no relaying).
//!
//! The addresses 127.0.0.131–139 belong to this file.
// Tests measure with the real clock.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::baresip::Phone;
use crate::common::{free_addrs, free_ports, ip, status_code, ChildGuard, Node};

const PATIENCE: Duration = Duration::from_secs(30);

/// dnsmasq serving the test's zone on `addr` (UDP and TCP), answering nothing else.
fn dnsmasq(dir: &Path, addr: std::net::SocketAddr, records: &[String]) -> ChildGuard {
    let log = dir.join("dnsmasq.log");
    let child = Command::new("dnsmasq")
        .args(["--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--bind-interfaces"])
        .arg(format!("--listen-address={}", addr.ip()))
        .arg(format!("--port={}", addr.port()))
        .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
        .arg("--log-queries")
        .arg(format!("--log-facility={}", log.display()))
        .args(records)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq is not installed (apt-get install dnsmasq-base; .ci/run does)");
    ChildGuard::new(child)
}

/// Kamailio on `addr`: registrar (any user, password `secret`) and Record-Routing proxy for
/// `example.test` and `other.test`.
fn kamailio(dir: &Path, addr: std::net::SocketAddr) -> ChildGuard {
    let modules = ["/usr/lib/x86_64-linux-gnu/kamailio/modules", "/usr/lib/kamailio/modules"]
        .into_iter()
        .find(|d| Path::new(d).join("tm.so").exists())
        .expect("kamailio is not installed (apt-get install kamailio; .ci/run does)");
    let config = format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
children=2
disable_tcp=yes
listen=udp:{addr}
alias=example.test
alias=other.test
mpath="{modules}/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "auth.so"
modparam("usrloc", "db_mode", 0)
request_route {{
  if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
  if (has_totag()) {{
    if (loose_route()) {{ t_relay(); exit; }}
    if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    sl_send_reply("404", "Not Here"); exit;
  }}
  if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
  t_check_trans();
  if (is_method("REGISTER")) {{
    if (!pv_www_authenticate("$td", "secret", "0")) {{ www_challenge("$td", "1"); exit; }}
    save("location"); exit;
  }}
  if (is_method("INVITE|SUBSCRIBE")) {{ record_route(); }}
  if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); exit; }}
  t_relay();
}}
"#
    );
    let cfg = dir.join("kamailio.cfg");
    std::fs::write(&cfg, config).expect("kamailio.cfg");
    let check = Command::new("kamailio").arg("-c").arg("-f").arg(&cfg).output().expect("run kamailio -c");
    assert!(check.status.success(), "kamailio -c: {}", String::from_utf8_lossy(&check.stderr));
    let log = std::fs::File::create(dir.join("kamailio.log")).expect("kamailio log");
    let child = Command::new("kamailio")
        .args(["-m", "64", "-M", "8", "-DD", "-E"])
        .arg("-Y")
        .arg(dir)
        .arg("-P")
        .arg(dir.join("kamailio.pid"))
        .arg("-f")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start kamailio");
    ChildGuard::new(child)
}

/// sipp answering one INVITE with 503 on `addr`.
fn busy_server(dir: &Path, addr: std::net::SocketAddr) -> ChildGuard {
    let scenario = format!("{}/tests/sipp/busy_503.xml", env!("CARGO_MANIFEST_DIR"));
    let media = free_ports(addr.ip(), 1)[0];
    let child = Command::new("sipp")
        .args(["-nostdin", "-timeout", "60", "-timeout_error", "-m", "1", "-trace_err", "-sf", &scenario])
        .args(["-i", &addr.ip().to_string(), "-p", &addr.port().to_string(), "-mp", &media.to_string()])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp is not installed (apt-get install sip-tester)");
    ChildGuard::new(child)
}

#[test]
fn a_phone_calls_and_messages_an_ordinary_sip_domain_found_by_dns() {
    let work = tempfile::TempDir::new().expect("temp dir");
    let work = work.path();
    let dns = free_addrs(ip("127.0.0.131"), 1)[0];
    let kam = free_addrs(ip("127.0.0.132"), 1)[0];
    let busy = free_addrs(ip("127.0.0.133"), 1)[0];
    let records = [
        "--naptr-record=example.test,10,10,S,SIP+D2U,,_sip._udp.example.test".to_owned(),
        format!("--srv-host=_sip._udp.example.test,busy.example.test,{},0,10", busy.port()),
        format!("--srv-host=_sip._udp.example.test,sip.example.test,{},10,10", kam.port()),
        format!("--srv-host=_sip._udp.other.test,sip.example.test,{},0,0", kam.port()),
        format!("--host-record=busy.example.test,{}", busy.ip()),
        format!("--host-record=sip.example.test,{}", kam.ip()),
    ];
    let _dns = dnsmasq(work, dns, &records);
    let _kamailio = kamailio(work, kam);
    let mut busy_sipp = busy_server(work, busy);

    let mut carol = Phone::start_in_domain("carol", "secret", "example.test", kam, free_addrs(ip("127.0.0.134"), 1)[0]);
    carol.expect("carol@example.test: {0/UDP/v4} 200 OK");

    let config = work.join("node.toml");
    std::fs::write(&config, format!("domain = \"p2p.test\"\n[dns]\nservers = [\"{dns}\"]\n")).expect("config");
    let a = Node::builder("127.0.0.135").config(&config).accounts(&[("sip:alice@p2p.test", "alice-pw")]).start();
    let mut alice =
        Phone::start("alice", "alice-pw", a.proxy, free_addrs(ip("127.0.0.135"), 1)[0], &["sip:carol@other.test"]);
    alice.expect("alice@p2p.test: {0/UDP/v4} 200 OK");

    // The call: NAPTR, SRV, A; the busy server's 503; Kamailio; carol answers.
    alice.command("/dial sip:carol@example.test");
    alice.expect("Call established: sip:carol@example.test");
    carol.expect("Call established: sip:alice@p2p.test");
    let registrar = a.status_json()["registrar"].clone();
    assert_eq!(registrar["external_requests"], 1, "{registrar}");
    assert_eq!(registrar["external_failovers"], 1, "the 503 sent it to the next target: {registrar}");
    let refused = busy_sipp.wait_exit(PATIENCE);
    assert!(refused.is_some_and(|s| s.success()), "the busy server saw INVITE, 503, ACK");
    let asked = std::fs::read_to_string(work.join("dnsmasq.log")).unwrap_or_default();
    for question in ["query[NAPTR] example.test", "query[SRV] _sip._udp.example.test", "query[A] sip.example.test"] {
        assert!(asked.contains(question), "DNS never asked {question}:\n{asked}");
    }
    // carol hangs up: her BYE comes through Kamailio and alice's node (their Record-Routes).
    carol.command("/hangup");
    alice.expect("session closed");

    // A MESSAGE to a domain with SRV records and no NAPTR.
    alice.command("/message hello-carol-from-the-overlay");
    carol.expect("hello-carol-from-the-overlay");
    let forwarded = a.status_json()["registrar"]["external_requests"].as_u64();
    assert_eq!(forwarded, Some(2));

    // A domain DNS knows nothing of: 404 for the phone, counted.
    let (mut flow, _) = crate::common::sip_client::register_over_tcp(a.proxy, "alice", "alice-pw");
    let answer = crate::common::sip_client::message_over_tcp(&mut flow, "alice", "sip:nobody@nowhere.test", "hi", 3);
    assert_eq!(status_code(&answer), Some(404), "{answer}");
    assert_eq!(a.status_json()["registrar"]["dns_failures"], 1);

    // Another node's request for another domain is refused: no node relays for others.
    let sock = std::net::UdpSocket::bind(free_addrs(ip("127.0.0.136"), 1)[0]).expect("bind");
    let local = sock.local_addr().expect("local address");
    let relay = format!(
        "MESSAGE sip:carol@example.test SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKrelay1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:mallory@p2p.test>;tag=r1\r\nTo: <sip:carol@example.test>\r\n\
         Call-ID: relay-1\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
    );
    sock.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    sock.send_to(relay.as_bytes(), a.listen).expect("send");
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("an answer");
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(matches!(status_code(&answer), Some(403 | 404)), "{answer}");
    assert_eq!(a.status_json()["registrar"]["external_requests"], 2, "nothing relayed");
}
