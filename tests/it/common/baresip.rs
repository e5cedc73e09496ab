//! Headless baresip phones driven from Rust (`tests/it/proxy_baresip.rs`, `tests/it/proxy_overlay.rs`).
//!
//! baresip comes from the Debian package `baresip`; without it these tests fail (CI installs
//! it). The phones have no sound card: audio goes to ALSA's `null` device and comes from
//! baresip's `ausine` tone generator.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Stdio};
use std::time::Duration;

use super::{wait_for, ChildGuard};

pub(crate) const WAIT: Duration = Duration::from_secs(15);

/// How a phone is set up beyond its account.
#[derive(Default)]
struct Setup {
    /// Its outbound proxy URI.
    outbound: String,
    /// The presence module, publishing and watching its contacts.
    presence: bool,
    /// Its domain, when not the overlay's `p2p.test`.
    domain: Option<&'static str>,
    /// The accounts file as given (the tutorial's), instead of one made from the arguments.
    accounts: Option<String>,
    /// The contacts file as given, instead of one made from the peers.
    contacts: Option<String>,
}

/// One headless baresip, driven through its stdin, logging to a file.
pub(crate) struct Phone {
    pub name: &'static str,
    pub process: ChildGuard,
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
    pub(crate) fn start(
        name: &'static str,
        password: &str,
        proxy: SocketAddr,
        listen: SocketAddr,
        peers: &[&str],
    ) -> Phone {
        Phone::start_in(None, name, password, proxy, listen, peers)
    }

    /// [`Phone::start`] registered over TCP: requests to it are never retransmitted (RFC 3261
    /// §17.1.2.2). baresip answers each MESSAGE statelessly, so over UDP a retransmission that
    /// crosses a slow answer is shown twice; tests that count messages use TCP.
    pub(crate) fn start_tcp(
        name: &'static str,
        password: &str,
        proxy: SocketAddr,
        listen: SocketAddr,
        peers: &[&str],
    ) -> Phone {
        let setup = Setup { outbound: format!("sip:{proxy};transport=tcp"), ..Setup::default() };
        Phone::launch(None, name, password, &setup, listen, peers)
    }

    /// [`Phone::start`] with baresip's `presence` module: it PUBLISHes its own state every 60 s
    /// (`pubint`, and at once on `/presence_online` and `/presence_offline`) and SUBSCRIBEs to
    /// each of `buddies` (contacts marked `;presence=p2p`), whose state `/contacts` shows.
    pub(crate) fn start_presence(
        name: &'static str,
        password: &str,
        proxy: SocketAddr,
        listen: SocketAddr,
        buddies: &[&str],
    ) -> Phone {
        let setup = Setup { outbound: format!("sip:{proxy}"), presence: true, ..Setup::default() };
        Phone::launch(None, name, password, &setup, listen, buddies)
    }

    /// [`Phone::start`] as a user of another SIP `domain`, registered with that domain's own
    /// server at `proxy` (not a p2psip node).
    pub(crate) fn start_in_domain(
        name: &'static str,
        password: &str,
        domain: &'static str,
        proxy: SocketAddr,
        listen: SocketAddr,
    ) -> Phone {
        let setup = Setup { outbound: format!("sip:{proxy}"), domain: Some(domain), ..Setup::default() };
        Phone::launch(None, name, password, &setup, listen, &[])
    }

    /// baresip inside namespace `ns` with the `accounts` and `contacts` files as given, SIP
    /// on `listen` (the tutorial's settings, exactly as a user writes them).
    pub(crate) fn start_with_files(
        ns: Option<&str>,
        name: &'static str,
        accounts: &str,
        contacts: &str,
        listen: SocketAddr,
    ) -> Phone {
        let setup =
            Setup { accounts: Some(accounts.to_owned()), contacts: Some(contacts.to_owned()), ..Setup::default() };
        Phone::launch(ns, name, "", &setup, listen, &[])
    }

    /// [`Phone::start`] inside network namespace `ns` (`ip netns exec` execs baresip: the PID
    /// is the phone's own).
    pub(crate) fn start_in(
        ns: Option<&str>,
        name: &'static str,
        password: &str,
        proxy: SocketAddr,
        listen: SocketAddr,
        peers: &[&str],
    ) -> Phone {
        let setup = Setup { outbound: format!("sip:{proxy}"), ..Setup::default() };
        Phone::launch(ns, name, password, &setup, listen, peers)
    }

    fn launch(
        ns: Option<&str>,
        name: &'static str,
        password: &str,
        setup: &Setup,
        listen: SocketAddr,
        peers: &[&str],
    ) -> Phone {
        let outbound = &setup.outbound;
        let (presence_module, pubint, marker) = match setup.presence {
            true => ("module_app presence.so\n", ";pubint=60", ";presence=p2p"),
            false => ("", "", ""),
        };
        let dir = tempfile::TempDir::new().expect("temp dir");
        let config = format!(
            "poll_method epoll\nsip_listen {listen}\nnet_interface {ip}\ncall_local_timeout 120\n\
             audio_player alsa,null\naudio_alert alsa,null\naudio_source ausine,440\nausrc_srate 48000\n\
             ausrc_channels 2\naudio_level no\nrtp_stats yes\nmodule_path {modules}\nmodule stdio.so\n\
             module g711.so\nmodule alsa.so\nmodule ausine.so\nmodule_tmp uuid.so\nmodule_tmp account.so\n\
             module_app contact.so\nmodule_app menu.so\n{presence_module}",
            ip = listen.ip(),
            modules = module_path(),
        );
        std::fs::write(dir.path().join("config"), config).expect("write config");
        let domain = setup.domain.unwrap_or("p2p.test");
        let account = format!(
            "<sip:{name}@{domain}>;regint=600;answermode=auto;audio_codecs=pcmu;outbound=\"{outbound}\";\
             auth_user={name};auth_pass={password}{pubint}\n"
        );
        let account = setup.accounts.clone().unwrap_or(account);
        std::fs::write(dir.path().join("accounts"), account).expect("write accounts");
        let contacts: String = match &setup.contacts {
            Some(c) => c.clone(),
            None => peers.iter().map(|p| format!("\"{p}\" <{p}>{marker}\n")).collect(),
        };
        std::fs::write(dir.path().join("contacts"), contacts).expect("write contacts");
        let log = dir.path().join("log");
        // Command output goes to stderr, events to stdout: one file for both, as a terminal.
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file handle");
        let mut cmd = super::command_in(ns, "baresip");
        let child = cmd
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
    pub(crate) fn log(&self) -> String {
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
    pub(crate) fn wait(&self, needle: &str) -> Option<String> {
        wait_for(WAIT, || Some(self.log()).filter(|l| l.contains(needle)))
    }

    pub(crate) fn expect(&self, needle: &str) -> String {
        self.wait(needle).unwrap_or_else(|| panic!("{}: no {needle:?} in its log:\n{}", self.name, self.log()))
    }

    pub(crate) fn command(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").expect("write to baresip");
        self.stdin.flush().expect("flush");
    }

    /// The (transmitted, received) RTP packet counts baresip printed at the end of a call.
    pub(crate) fn packets(&self) -> Option<(u64, u64)> {
        let log = self.log();
        let line = log.lines().rev().find(|l| l.trim_start().starts_with("packets:"))?;
        let mut n = line.split_whitespace().skip(1).map(|x| x.parse::<u64>().ok());
        Some((n.next()??, n.next()??))
    }
}

/// Each phone's RTP counters, printed at the end of a call, show packets sent and received:
/// media flowed both ways (checked, not assumed).
pub(crate) fn assert_rtp_both_ways(a: &Phone, b: &Phone) {
    for p in [a, b] {
        let (tx, rx) =
            wait_for(WAIT, || p.packets()).unwrap_or_else(|| panic!("{}: no packet counts:\n{}", p.name, p.log()));
        assert!(tx > 0 && rx > 0, "{} sent {tx} RTP packets, received {rx}", p.name);
    }
}

fn process_stdin(p: &mut ChildGuard) -> ChildStdin {
    p.take_stdin().expect("baresip's stdin")
}
