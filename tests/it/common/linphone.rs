//! Headless Linphone phones (liblinphone's `linphone-daemon`, Debian package `linphone-cli`),
//! the second kind of real phone the media tests use (`tests/it/media.rs`).
//!
//! How it is driven, and why:
//! - `linphonec` in Debian 12 never sends anything when its stdin is not a terminal; the
//!   daemon reads commands from stdin and prints events (`Event: LinphoneCallConnected`…) on
//!   stdout, which goes to a file the test reads.
//! - liblinphone needs a writable home (its database), so each phone gets `HOME` in its own
//!   temporary directory.
//! - There is no sound card: a call's audio comes from `incall-player-start` playing a
//!   generated 440 Hz WAV into the call ([`Linphone::play`]); without it Linphone sends no RTP.
//! - Its RTP counters are read from liblinphone's own log, which prints an "AUDIO SESSION'S RTP
//!   STATISTICS" block (sent / received packets) when a call's stream ends or pauses
//!   (`call-stats` crashes the daemon of Debian 12).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ChildStdin, Stdio};

use super::baresip::WAIT;
use super::{wait_for, ChildGuard};

/// One headless Linphone, driven through its stdin.
pub(crate) struct Linphone {
    pub name: &'static str,
    pub process: ChildGuard,
    stdin: ChildStdin,
    events: PathBuf,
    log: PathBuf,
    wav: PathBuf,
    _dir: tempfile::TempDir,
}

/// Ten seconds of a 440 Hz tone, 8 kHz mono 16-bit PCM, as a WAV file.
fn tone_wav() -> Vec<u8> {
    let rate = 8000u32;
    let samples: Vec<u8> = (0..rate * 10)
        .flat_map(|i| {
            let v = (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / f64::from(rate)).sin()) as i16;
            v.to_le_bytes()
        })
        .collect();
    let mut w = Vec::with_capacity(44 + samples.len());
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + samples.len() as u32).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    for (v, n) in [(16u32, 4), (1, 2), (1, 2), (rate, 4), (rate * 2, 4), (2, 2), (16, 2)] {
        w.extend_from_slice(&v.to_le_bytes()[..n]);
    }
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(samples.len() as u32).to_le_bytes());
    w.extend_from_slice(&samples);
    w
}

impl Linphone {
    /// Linphone registered as `name` (password `password`) through `proxy`, SIP on `listen`,
    /// RTP from `rtp_port`, auto-answering, inside namespace `ns` when given.
    pub(crate) fn start_in(
        ns: Option<&str>,
        name: &'static str,
        password: &str,
        proxy: SocketAddr,
        listen: SocketAddr,
        rtp_port: u16,
    ) -> Linphone {
        Linphone::launch(ns, name, &account_section(name, password, proxy), listen, rtp_port, &[])
    }

    /// Linphone inside namespace `ns` with `account` as the account part of its configuration
    /// (the tutorial's `[auth_info_0]` and `[proxy_0]`, exactly as a user writes them).
    pub(crate) fn start_with_account(
        ns: Option<&str>,
        name: &'static str,
        account: &str,
        listen: SocketAddr,
        rtp_port: u16,
    ) -> Linphone {
        Linphone::launch(ns, name, account, listen, rtp_port, &[])
    }

    /// [`Linphone::start_in`] on the host with `friends` in its address book, each subscribed
    /// to for presence (liblinphone reads `[friend_N]` from its configuration file at start).
    pub(crate) fn start_watching(
        name: &'static str,
        password: &str,
        proxy: SocketAddr,
        listen: SocketAddr,
        rtp_port: u16,
        friends: &[&str],
    ) -> Linphone {
        Linphone::launch(None, name, &account_section(name, password, proxy), listen, rtp_port, friends)
    }

    fn launch(
        ns: Option<&str>,
        name: &'static str,
        account: &str,
        listen: SocketAddr,
        rtp_port: u16,
        friends: &[&str],
    ) -> Linphone {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".local/share/linphone")).expect("linphone home");
        let config = dir.path().join("linphonerc");
        std::fs::write(
            &config,
            format!(
                "[sip]\nsip_port={port}\nsip_tcp_port=-1\nsip_tls_port=-1\nbind_address={ip}\ndefault_proxy=0\n\
                 [rtp]\naudio_rtp_port={rtp_port}\n[sound]\nechocancellation=0\n{account}\n{friends}",
                port = listen.port(),
                ip = listen.ip(),
                friends = friends
                    .iter()
                    .enumerate()
                    .map(|(i, f)| format!("[friend_{i}]\nurl=<{f}>\npol=accept\nsubscribe=1\n"))
                    .collect::<String>(),
            ),
        )
        .expect("write linphonerc");
        let wav = dir.path().join("tone.wav");
        std::fs::write(&wav, tone_wav()).expect("write tone");
        let events = dir.path().join("events");
        let log = dir.path().join("log");
        let out = std::fs::File::create(&events).expect("events file");
        let mut cmd = super::command_in(ns, "linphone-daemon");
        let child = cmd
            .arg("--config")
            .arg(&config)
            .arg("--log")
            .arg(&log)
            .arg("--auto-answer")
            .env("HOME", &home)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .expect("linphone-daemon is not installed (apt-get install -y linphone-cli); this test needs it");
        let mut process = ChildGuard::new(child);
        let stdin = process.take_stdin().expect("linphone-daemon's stdin");
        let mut phone = Linphone { name, process, stdin, events, log, wav, _dir: dir };
        // Registered once the daemon says so.
        let ok = wait_for(WAIT, || {
            phone.command("register-status ALL");
            std::thread::sleep(std::time::Duration::from_millis(100));
            phone.events().contains("LinphoneRegistrationOk").then_some(())
        });
        assert!(ok.is_some(), "{name}: Linphone did not register:\n{}", phone.events());
        phone
    }

    /// What the daemon printed: command answers and events.
    pub(crate) fn events(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.events).unwrap_or_default()).into_owned()
    }

    /// liblinphone's log.
    pub(crate) fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    pub(crate) fn command(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").expect("write to linphone-daemon");
        self.stdin.flush().expect("flush");
    }

    /// The id of the call the last call event was about (`Id:` follows each event).
    pub(crate) fn last_call_id(&self) -> Option<String> {
        let events = self.events();
        let last = events.rsplit("Event: LinphoneCall").next()?;
        let id = last.lines().find_map(|l| l.strip_prefix("Id: "))?;
        Some(id.trim().to_owned())
    }

    /// Plays the tone into the call in progress: its RTP. The player starts only once the
    /// call's streams run (a call just connected, or just resumed, may not be there yet), so
    /// the command is repeated until the daemon answers it with `Status: Ok`.
    pub(crate) fn play(&mut self) {
        let cmd = format!("incall-player-start {}", self.wav.display());
        let started = wait_for(WAIT, || {
            let before = self.events().len();
            self.command(&cmd);
            let answer = wait_for(std::time::Duration::from_secs(2), || {
                let events = self.events();
                let after = events.get(before..).unwrap_or_default();
                after.lines().find_map(|l| l.strip_prefix("Status: ").map(str::to_owned))
            });
            if answer.as_deref() == Some("Ok") {
                Some(())
            } else {
                std::thread::sleep(std::time::Duration::from_millis(50));
                None
            }
        });
        assert!(started.is_some(), "{}: the tone never started:\n{}", self.name, self.events());
    }

    /// Calls answered or placed and connected so far.
    pub(crate) fn established(&self) -> usize {
        self.events().matches("Event: LinphoneCallConnected").count()
    }

    /// Calls ended so far.
    pub(crate) fn closed(&self) -> usize {
        self.events().matches("Event: LinphoneCallEnd").count()
    }

    /// RTP statistics blocks in the log so far, and their sent and received packets summed.
    pub(crate) fn rtp_totals(&self) -> (u64, u64, u64) {
        let log = self.log();
        let count = |block: &str, label: &str| -> u64 {
            let line = block.lines().find(|l| l.split("ortp-message-").nth(1).is_some_and(|m| m.starts_with(label)));
            line.and_then(|l| l.split_whitespace().rev().nth(1)?.parse().ok()).unwrap_or(0)
        };
        log.split("AUDIO SESSION'S RTP STATISTICS")
            .skip(1)
            .fold((0, 0, 0), |(r, s, x), block| (r + 1, s + count(block, "sent  "), x + count(block, "received  ")))
    }
}

/// The account part of a Linphone configuration: `name` registering with `proxy` in `p2p.test`.
fn account_section(name: &str, password: &str, proxy: SocketAddr) -> String {
    format!(
        "[auth_info_0]\nusername={name}\npasswd={password}\nrealm=p2p.test\ndomain=p2p.test\n\
         [proxy_0]\nreg_proxy=<sip:{proxy}>\nreg_route=<sip:{proxy};lr>\nreg_identity=<sip:{name}@p2p.test>\n\
         reg_expires=600\nreg_sendregister=1\npublish=0\n"
    )
}
