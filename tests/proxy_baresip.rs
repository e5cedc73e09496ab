//! Real softphones through one node (issue 5): two headless baresip phones, alice and bob,
//! register with digest authentication; alice calls bob, bob answers automatically, RTP flows
//! both ways (baresip's own packet counters, read from its log); alice hangs up; alice sends
//! bob a MESSAGE; a wrong password is refused; an unknown user is 404; once bob's phone is
//! killed, the node's OPTIONS ping unregisters it and calling bob gets 480.
//!
//! baresip comes from the Debian package `baresip`; without it this test fails (CI installs
//! it). The phones have no sound card: audio goes to ALSA's `null` device and comes from
//! baresip's `ausine` tone generator.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::time::Duration;

use common::{free_addrs, ip, wait_for, ChildGuard, Node};

const WAIT: Duration = Duration::from_secs(15);

/// One headless baresip, driven through its stdin, logging to a file.
struct Phone {
    name: &'static str,
    process: ChildGuard,
    stdin: ChildStdin,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn module_path() -> &'static str {
    ["/usr/lib/baresip/modules", "/usr/local/lib/baresip/modules", "/usr/lib/x86_64-linux-gnu/baresip/modules"]
        .into_iter()
        .find(|d| Path::new(d).join("g711.so").exists())
        .expect("baresip is not installed (apt-get install -y baresip); this test needs it")
}

impl Phone {
    /// baresip registered as `user` (password `password`) through `proxy`, SIP on `listen`,
    /// auto-answering, with `peers` in its contact list (a MESSAGE goes to the current one).
    fn start(name: &'static str, password: &str, proxy: SocketAddr, listen: SocketAddr, peers: &[&str]) -> Phone {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let config = format!(
            "poll_method epoll\nsip_listen {listen}\nnet_interface {ip}\ncall_local_timeout 120\n\
             audio_player alsa,null\naudio_alert alsa,null\naudio_source ausine,440\nausrc_srate 48000\n\
             ausrc_channels 2\naudio_level no\nrtp_stats yes\nmodule_path {modules}\nmodule stdio.so\n\
             module g711.so\nmodule alsa.so\nmodule ausine.so\nmodule_tmp uuid.so\nmodule_tmp account.so\n\
             module_app contact.so\nmodule_app menu.so\n",
            ip = listen.ip(),
            modules = module_path(),
        );
        std::fs::write(dir.path().join("config"), config).expect("write config");
        let account = format!(
            "<sip:{name}@p2p.test>;regint=600;answermode=auto;audio_codecs=pcmu;outbound=\"sip:{proxy}\";\
             auth_user={name};auth_pass={password}\n"
        );
        std::fs::write(dir.path().join("accounts"), account).expect("write accounts");
        let contacts: String = peers.iter().map(|p| format!("\"{p}\" <{p}>\n")).collect();
        std::fs::write(dir.path().join("contacts"), contacts).expect("write contacts");
        let log = dir.path().join("log");
        // Command output goes to stderr, events to stdout: one file for both, as a terminal.
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file handle");
        let child = Command::new("baresip")
            .arg("-f")
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("baresip is not installed (apt-get install -y baresip); this test needs it");
        let mut process = ChildGuard::new(child);
        let stdin = process_stdin(&mut process);
        let phone = Phone { name, process, stdin, log, _dir: dir };
        phone.expect("baresip is ready");
        phone
    }

    /// The log with colour codes removed.
    fn log(&self) -> String {
        let raw = std::fs::read(&self.log).unwrap_or_default();
        let text = String::from_utf8_lossy(&raw);
        let mut out = String::with_capacity(text.len());
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // ESC [ … letter
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Waits until the log contains `needle`; returns the log.
    fn wait(&self, needle: &str) -> Option<String> {
        wait_for(WAIT, || Some(self.log()).filter(|l| l.contains(needle)))
    }

    fn expect(&self, needle: &str) -> String {
        self.wait(needle).unwrap_or_else(|| panic!("{}: no {needle:?} in its log:\n{}", self.name, self.log()))
    }

    fn command(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").expect("write to baresip");
        self.stdin.flush().expect("flush");
    }

    /// The (transmitted, received) RTP packet counts baresip printed at the end of a call.
    fn packets(&self) -> Option<(u64, u64)> {
        let log = self.log();
        let line = log.lines().rev().find(|l| l.trim_start().starts_with("packets:"))?;
        let mut n = line.split_whitespace().skip(1).map(|x| x.parse::<u64>().ok());
        Some((n.next()??, n.next()??))
    }
}

fn process_stdin(p: &mut ChildGuard) -> ChildStdin {
    p.take_stdin().expect("baresip's stdin")
}

#[test]
fn two_baresip_phones_register_call_and_message_through_one_node() {
    let accounts = [("sip:alice@p2p.test", "alice-pw"), ("sip:bob@p2p.test", "bob-pw"), ("sip:eve@p2p.test", "eve-pw")];
    let config_dir = tempfile::TempDir::new().expect("temp dir");
    let config = config_dir.path().join("node.toml");
    // Fast pings, so the dead phone is noticed within seconds.
    std::fs::write(&config, "[registrar]\nping_interval_ms = 1000\nping_timeout_ms = 2000\n").expect("config");
    let node = Node::start_with_accounts("127.0.0.61", &accounts, &["--config", config.to_str().expect("path")]);
    let [a, b, e] = free_addrs(ip("127.0.0.61"), 3).try_into().expect("three addresses");
    let mut alice = Phone::start("alice", "alice-pw", node.proxy, a, &["sip:bob@p2p.test"]);
    let bob = Phone::start("bob", "bob-pw", node.proxy, b, &[]);
    let eve = Phone::start("eve", "not-eves-password", node.proxy, e, &[]);
    // baresip prints the registrar's answer and how many bindings it reported.
    alice.expect("alice@p2p.test: {0/UDP/v4} 200 OK () [1 binding]");
    bob.expect("bob@p2p.test: {0/UDP/v4} 200 OK () [1 binding]");
    // A wrong password is refused.
    let log = eve.expect("reg: sip:eve@p2p.test: 40");
    assert!(log.contains(": 403 Forbidden") || log.contains(": 401 Unauthorized"), "{log}");
    assert!(!log.contains("200 OK"), "{log}");

    // alice calls bob; bob answers by himself; media flows both ways.
    alice.command("/dial sip:bob@p2p.test");
    alice.expect("Call established: sip:bob@p2p.test");
    bob.expect("Call established: sip:alice@p2p.test");
    alice.expect("incoming rtp for 'audio' established");
    bob.expect("incoming rtp for 'audio' established");
    // While the call is up, a MESSAGE: bob's phone shows the text. baresip 1.0 sends
    // MESSAGE to its "current contact": select bob (the only one).
    alice.command("/contact_next");
    alice.expect("Current contact:");
    alice.command("/message hello-bob-from-alice");
    bob.expect("\"hello-bob-from-alice\"");
    alice.command("/hangup");
    bob.expect("session closed");
    // Each side's RTP counters, printed at the end of the call: sent and received.
    let counts = |p: &Phone| {
        wait_for(WAIT, || p.packets()).unwrap_or_else(|| panic!("{}: no packet counts:\n{}", p.name, p.log()))
    };
    let (alice_tx, alice_rx) = counts(&alice);
    let (bob_tx, bob_rx) = counts(&bob);
    assert!(alice_tx > 0 && alice_rx > 0, "alice sent {alice_tx}, received {alice_rx}");
    assert!(bob_tx > 0 && bob_rx > 0, "bob sent {bob_tx}, received {bob_rx}");

    // An unknown user.
    alice.command("/dial sip:nobody@p2p.test");
    alice.expect("session closed: 404");

    // bob's phone dies without unregistering: the node's OPTIONS ping notices, and a call
    // to bob gets 480.
    let mut bob = bob;
    bob.process.kill();
    let gone = wait_for(WAIT, || (node.status_json()["registrar"]["bindings"] == 1).then_some(()));
    assert!(gone.is_some(), "bob still registered: {}", node.status_json()["registrar"]);
    assert_eq!(node.status_json()["registrar"]["pings_failed"], 1);
    alice.command("/dial sip:bob@p2p.test");
    alice.expect("session closed: 480");
}
