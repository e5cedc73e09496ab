//! A real enrollment CA for integration tests: `p2psip ca serve` as a child process, and the
//! `p2psip` commands (`ca init`, `enroll`) run to completion in a work directory.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::{free_addrs, ip, p2psip, wait_for, ChildGuard, Finished};

pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);

/// Short Chord timers for test rings, as `ca init --settings` puts them in the overlay's
/// configuration document.
pub(crate) const FAST_CHORD_SETTINGS: &str = r#"{"chord": {"stabilize_interval_ms": 500, "check_predecessor_interval_ms": 500,
    "fix_fingers_interval_ms": 1000, "rpc_timeout_ms": 500, "join_retry_interval_ms": 1000,
    "successor_list_len": 8}}"#;

/// Runs `p2psip ARGS` in `dir` to completion.
pub(crate) fn run(dir: &Path, args: &[&str]) -> Finished {
    let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    let (out_path, err_path) = (dir.join(format!("out-{n}")), dir.join(format!("err-{n}")));
    let child = p2psip(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn p2psip");
    let mut guard = ChildGuard::new(child);
    let status = guard.wait_exit(TIMEOUT).unwrap_or_else(|| panic!("p2psip {args:?} did not finish"));
    Finished {
        status,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// A running `p2psip ca serve`, its URL and the fingerprint it printed.
pub(crate) struct Ca {
    pub process: ChildGuard,
    pub url: String,
    pub fingerprint: String,
    pub log: PathBuf,
}

impl Ca {
    pub(crate) fn serve(work: &Path, ca_dir: &Path, ip_text: &str, extra: &[&str]) -> Ca {
        let listen: SocketAddr = free_addrs(ip(ip_text), 1)[0];
        let tag = listen.port();
        let (out, log) = (work.join(format!("ca-{tag}.out")), work.join(format!("ca-{tag}.log")));
        let child = p2psip(work)
            .args(["ca", "serve", "--dir", ca_dir.to_str().unwrap(), "--listen", &listen.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("spawn ca serve");
        let mut process = ChildGuard::new(child);
        let line = wait_for(TIMEOUT, || {
            if let Some(status) = process.try_exit() {
                panic!("ca serve exited ({status}): {}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            std::fs::read_to_string(&out).ok().filter(|s| s.ends_with('\n'))
        })
        .expect("ca serve printed its startup line");
        let url = line.split_whitespace().find(|w| w.starts_with("https://")).expect("URL in startup line").to_owned();
        let fingerprint = line.trim().rsplit(' ').next().unwrap().to_owned();
        assert_eq!(url, format!("https://{listen}"), "{line}");
        Ca { process, url, fingerprint, log }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub(crate) fn enroll(work: &Path, aor: &str, ca: &Ca, data_dir: &Path, extra: &[&str]) -> Finished {
    let mut args = vec![
        "enroll",
        aor,
        "--ca",
        &ca.url,
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--ca-fingerprint",
        &ca.fingerprint,
    ];
    args.extend_from_slice(extra);
    run(work, &args)
}

/// An overlay enrolled once and for all (RFC 6940 §11: the CA is contacted only at
/// enrollment): `ca init` in `base` with short Chord timers and two replicas, `ca serve` on
/// `ip`, one data directory per AoR in `users` (`base/node0`, `node1`, …), and the CA stopped
/// before any node starts.
pub(crate) fn enrolled_overlay(base: &Path, ip: &str, users: &[&str]) -> Vec<PathBuf> {
    let ca_dir = base.join("ca");
    let settings = base.join("settings.json");
    std::fs::write(&settings, FAST_CHORD_SETTINGS).expect("settings");
    let (dir, settings) = (ca_dir.to_str().expect("utf-8"), settings.to_str().expect("utf-8"));
    let init =
        run(base, &["ca", "init", "--dir", dir, "--domain", "p2p.test", "--replicas", "2", "--settings", settings]);
    assert!(init.status.success(), "ca init: {}", init.stderr);
    let mut authority = Ca::serve(base, &ca_dir, ip, &[]);
    let dirs = users
        .iter()
        .enumerate()
        .map(|(i, aor)| {
            let dir = base.join(format!("node{i}"));
            let done = enroll(base, aor, &authority, &dir, &[]);
            assert!(done.status.success(), "enroll {aor}: {}\n{}", done.stderr, authority.log());
            dir
        })
        .collect();
    authority.process.kill();
    dirs
}
