//! A real enrollment CA for integration tests: `p2psip ca serve` as a child process, and the
//! `p2psip` commands (`ca init`, `enroll`) run to completion in a work directory.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::{free_addrs, ip, p2psip, wait_for, ChildGuard, Finished};

pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);

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
