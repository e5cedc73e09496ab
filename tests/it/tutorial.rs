//! `docs/tutorial.md`, run as written (issue 16, item 6): the tutorial's code blocks are read
//! from the file and each runs on its machine, so the tutorial cannot drift from what works.
//!
//! The machines are network namespaces (`common::netns`; root, as the NAT tests): the server
//! is a public host on the Internet's bridge at 203.0.113.2; alice's and bob's laptops are
//! home hosts behind two nftables routers (cone NATs, as home routers translate), at
//! 192.168.1.2 and 192.168.2.2. Each machine has a home directory of its own, where the
//! commands run with `p2psip` (this build) on the `PATH`; `$FP` is the fingerprint `ca init`
//! printed. A line ending in `&` is started in the background, by PID; every other line must
//! succeed.
//!
//! Then the phones get the tutorial's settings verbatim (alice's baresip accounts and contacts
//! files, bob's Linphone account section), the `check` block runs on both laptops (and the web
//! page it names is loaded in headless Chromium on alice's), alice calls bob with the
//! tutorial's baresip command, media flows both ways through both NATs, and the two message
//! each other with the tutorial's commands.
// Tests measure with the real clock.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::baresip::Phone;
use crate::common::linphone::Linphone;
use crate::common::netns::{NatKind, Topology};
use crate::common::{wait_for, ChildGuard, BIN};

const WAIT: Duration = Duration::from_secs(60);

/// The tutorial's tagged code blocks: ```` ```LANG tutorial=NAME ```` … ```` ``` ````.
fn blocks() -> BTreeMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/tutorial.md");
    let text = std::fs::read_to_string(&path).expect("docs/tutorial.md");
    let mut blocks = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        match &mut current {
            None => {
                if let Some(name) = line.strip_prefix("```").and_then(|l| l.split_once(" tutorial=")).map(|(_, n)| n) {
                    current = Some((name.trim().to_owned(), String::new()));
                }
            }
            Some((name, body)) => {
                if line.starts_with("```") {
                    blocks.insert(std::mem::take(name), std::mem::take(body));
                    current = None;
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    blocks
}

/// The commands of a shell block: one per line, a here-document kept with its line.
fn commands(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = block.lines();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        let mut command = line.to_owned();
        if let Some((_, tag)) = line.split_once("<<'") {
            let end = tag.trim_end_matches('\'').to_owned();
            for more in lines.by_ref() {
                command.push('\n');
                command.push_str(more);
                if more == end {
                    break;
                }
            }
        }
        out.push(command);
    }
    out
}

/// One of the tutorial's machines: a namespace and a home directory.
struct Machine<'t> {
    t: &'t Topology,
    name: String,
    home: PathBuf,
    fp: String,
    background: Vec<(String, ChildGuard, PathBuf)>,
}

impl<'t> Machine<'t> {
    fn new(t: &'t Topology, name: &str, base: &Path) -> Machine<'t> {
        let home = base.join(name);
        std::fs::create_dir_all(&home).expect("home");
        Machine { t, name: name.to_owned(), home, fp: String::new(), background: Vec::new() }
    }

    /// `sh -c COMMAND` in the machine's namespace and home, with this build's `p2psip` first
    /// on the `PATH`.
    fn shell(&self, command: &str) -> Command {
        let bin_dir = Path::new(BIN).parent().expect("binary directory");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.t.ns(&self.name), "sh", "-c", command])
            .env_clear()
            .env("PATH", format!("{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", bin_dir.display()))
            .env("HOME", &self.home)
            .env("XDG_DATA_HOME", self.home.join(".local/share"))
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("FP", &self.fp)
            .current_dir(&self.home)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a shell block of the tutorial; returns what the commands printed, in order.
    fn run(&mut self, block: &str) -> Vec<String> {
        let mut printed = Vec::new();
        for command in commands(block) {
            if let Some(job) = command.strip_suffix('&') {
                // In the background, by its own PID (`exec`): a terminal of its own.
                let log = self.home.join(format!("job-{}.log", self.background.len()));
                let out = std::fs::File::create(&log).expect("job log");
                let err = out.try_clone().expect("job log");
                let child = self.shell(&format!("exec {}", job.trim())).stdout(out).stderr(err).spawn().expect("spawn");
                let mut guard = ChildGuard::new(child);
                // As in a terminal, the next command is typed once this one has said it is up
                // (its first line: `ca serve`'s address, the node's "listening").
                let up = wait_for(WAIT, || {
                    if let Some(status) = guard.try_exit() {
                        panic!(
                            "{}: `{command}` exited ({status}):\n{}",
                            self.name,
                            std::fs::read_to_string(&log).unwrap_or_default()
                        );
                    }
                    std::fs::metadata(&log).ok().filter(|m| m.len() > 0)
                });
                assert!(up.is_some(), "{}: `{command}` printed nothing", self.name);
                self.background.push((command.clone(), guard, log));
                continue;
            }
            let errors = self.home.join("stderr");
            let err = std::fs::File::create(&errors).expect("stderr file");
            let child = self.shell(&command).stdout(Stdio::piped()).stderr(err).spawn().expect("spawn sh");
            let mut guard = ChildGuard::new(child);
            let mut out = guard.take_stdout().expect("stdout");
            let reader = std::thread::spawn(move || {
                let mut s = String::new();
                let _ = std::io::Read::read_to_string(&mut out, &mut s);
                s
            });
            let status = guard.wait_exit(WAIT).unwrap_or_else(|| panic!("{}: `{command}` did not finish", self.name));
            let stdout = reader.join().unwrap_or_default();
            let stderr = std::fs::read_to_string(&errors).unwrap_or_default();
            assert!(
                status.success(),
                "{}: `{command}` failed ({status}):\n{stdout}\n{stderr}\n{}",
                self.name,
                self.logs()
            );
            printed.push(stdout);
        }
        printed
    }

    /// The background jobs' logs, for failure messages.
    fn logs(&self) -> String {
        self.background
            .iter()
            .map(|(c, _, log)| format!("--- {c}\n{}", std::fs::read_to_string(log).unwrap_or_default()))
            .collect()
    }

    /// `p2psip status --json` on the machine, once it answers.
    fn status(&self) -> Option<serde_json::Value> {
        let out = self.shell("p2psip status --json").stderr(Stdio::null()).output().ok()?;
        out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
    }

    fn wait_status(&self, what: &str, cond: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let found = wait_for(WAIT, || self.status().filter(|s| cond(s)));
        found.unwrap_or_else(|| panic!("{}: {what}: never; {:?}\n{}", self.name, self.status(), self.logs()))
    }
}

#[test]
fn the_tutorial_runs_as_written_two_laptops_behind_nats_call_and_message() {
    let blocks = blocks();
    for tag in [
        "server",
        "alice",
        "bob",
        "check",
        "alice-baresip-account",
        "alice-baresip-contacts",
        "bob-linphone",
        "alice-baresip-call",
        "alice-baresip-message",
        "bob-linphone-message",
    ] {
        assert!(blocks.contains_key(tag), "docs/tutorial.md has no block tutorial={tag}");
    }
    let base = tempfile::TempDir::new().expect("temp dir");
    let mut t = Topology::new("t");
    assert_eq!(t.public_host(2).to_string(), "203.0.113.2");
    let (_, alice_ip) = t.router(1, NatKind::Cone, &[None]);
    let (_, bob_ip) = t.router(2, NatKind::Cone, &[None]);
    assert_eq!((alice_ip[0].to_string(), bob_ip[0].to_string()), ("192.168.1.2".into(), "192.168.2.2".into()));

    // 2. The server.
    let mut server = Machine::new(&t, "inet", base.path());
    let printed = server.run(&blocks["server"]);
    let fp = printed.iter().find_map(|p| p.split("fingerprint ").nth(1)).map(|f| f.trim().to_owned());
    let fp = fp.expect("ca init printed the root's fingerprint");
    server.wait_status("the server's node starts the ring", |s| {
        s["overlay"]["state"] == "alone" && s["mdns"]["deciding"] != true
    });

    // 3. The laptops.
    let mut laptops = Vec::new();
    for (who, home) in [("alice", t.home(1, 0)), ("bob", t.home(2, 0))] {
        let mut m = Machine::new(&t, &home, base.path());
        m.fp = fp.clone();
        m.run(&blocks[who]);
        m.wait_status("a client of the server's node", |s| {
            s["role"] == "client" && s["edge"]["addr"] == "203.0.113.2:5070"
        });
        laptops.push(m);
    }
    let [alice_laptop, bob_laptop] = <[Machine; 2]>::try_from(laptops).ok().expect("two laptops");

    // 4. The phones, with the tutorial's settings.
    let listen: SocketAddr = "127.0.0.1:5062".parse().expect("address");
    let mut alice = Phone::start_with_files(
        Some(&t.ns(&alice_laptop.name)),
        "alice",
        &blocks["alice-baresip-account"],
        &blocks["alice-baresip-contacts"],
        listen,
    );
    alice.expect("alice@p2p.example: {0/UDP/v4} 200 OK () [1 binding]");
    let mut bob =
        Linphone::start_with_account(Some(&t.ns(&bob_laptop.name)), "bob", &blocks["bob-linphone"], listen, 7078);

    // 5. The checks, on both laptops; the web page in a real browser on alice's.
    for m in [&alice_laptop, &bob_laptop] {
        m.wait_status("its phone registered", |s| s["phones"].as_array().is_some_and(|p| p.len() == 1));
    }
    let mut alice_laptop = alice_laptop;
    let printed = alice_laptop.run(&blocks["check"]);
    assert!(printed[0].contains("client"), "status: {}", printed[0]);
    assert!(printed[1].contains("1 registered at the proxy"), "doctor: {}", printed[1]);
    let url = printed[2].trim().to_owned();
    assert!(url.starts_with("http://127.0.0.1:5090/#token="), "{url}");
    let mut bob_laptop = bob_laptop;
    bob_laptop.run(&blocks["check"]);
    let dom = wait_for(WAIT, || {
        let profile = alice_laptop.home.join("browser");
        let out = alice_laptop
            .shell(&format!(
                "chromium --headless --no-sandbox --disable-gpu --no-first-run --user-data-dir={} \
                 --virtual-time-budget=4000 --dump-dom '{url}'",
                profile.display()
            ))
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let dom = String::from_utf8_lossy(&out.stdout).into_owned();
        dom.contains("class=\"phone registered\" data-aor=\"sip:alice@p2p.example\"").then_some(dom)
    });
    assert!(dom.is_some(), "the web page never showed alice's phone (is chromium installed?)");

    // 6. The call, with the tutorial's command; media both ways through both NATs.
    alice.command(blocks["alice-baresip-call"].trim());
    alice.expect("Call established: sip:bob@p2p.example");
    let up = wait_for(WAIT, || (bob.established() > 0).then_some(()));
    assert!(up.is_some(), "bob's Linphone never connected:\n{}", bob.events());
    for (m, who) in [(&alice_laptop, "alice"), (&bob_laptop, "bob")] {
        m.wait_status(&format!("{who}'s node relays media both ways"), |s| {
            s["calls"][0]["packets_in"].as_u64() > Some(10) && s["calls"][0]["packets_out"].as_u64() > Some(10)
        });
    }
    alice.command("/hangup");
    let ended = wait_for(WAIT, || (bob.closed() > 0).then_some(()));
    assert!(ended.is_some(), "bob's call never ended:\n{}", bob.events());

    // The messages, with the tutorial's commands.
    alice.command(blocks["alice-baresip-message"].trim());
    let got = wait_for(WAIT, || bob.events().contains("message-received").then_some(()));
    assert!(got.is_some(), "bob's Linphone never received alice's message:\n{}", bob.events());
    bob.command(blocks["bob-linphone-message"].trim());
    alice.expect("Hello Alice");
    drop(server);
}
