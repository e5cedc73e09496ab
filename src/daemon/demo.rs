//! `p2psip demo`: a whole overlay on loopback, for a first call from two softphones.
//!
//! Structure: every part is a child `p2psip` process of this same binary
//! (`std::env::current_exe`), exactly the commands a user would type: `ca init`, `ca serve`,
//! `enroll` (one user per node), then the CA is stopped and three `node`s start on 127.0.0.1,
//! 127.0.0.2 and 127.0.0.3, the second and third joining the first. Accounts for alice (node 1)
//! and bob (node 2) get generated passwords (written with [`super::files::accounts::add`], as
//! `p2psip account add` does). The demo then waits for SIGINT/SIGTERM, or for a node to die,
//! and stops every child it started by its own PID: SIGTERM (a node leaves the ring and exits
//! 0), then SIGKILL after a grace period. Separate processes keep each node's sockets, logs and
//! shutdown exactly as in real use, and a crash in one is visible as an exit status.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// What `p2psip demo` was asked for.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the CA's and nodes' directories go; a fresh temporary directory (removed at the
    /// end) when `None`. An existing directory is reused: enrollments are kept.
    pub dir: Option<PathBuf>,
    /// The overlay's SIP domain.
    pub domain: String,
    /// Every node's overlay port (each node on its own 127.0.0.x).
    pub overlay_port: u16,
    /// Every node's proxy port.
    pub proxy_port: u16,
    /// Every node's HTTP port.
    pub http_port: u16,
    /// The CA's HTTPS port.
    pub ca_port: u16,
}

/// How long a node gets to leave the ring after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(3);
/// How long a node gets to answer `/health` after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The users: node i (1-based) enrolls `USERS[i-1]`; the first two get accounts.
const USERS: [&str; 3] = ["alice", "bob", "carol"];

/// The children started so far, stopped (by PID) when dropped.
struct Children(Vec<(String, Child)>);

impl Children {
    fn stop(&mut self) {
        for (_, child) in &mut self.0 {
            if matches!(child.try_wait(), Ok(None)) {
                // SIGTERM to this one process: a node leaves the ring cleanly.
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let deadline = Instant::now() + GRACE;
        for (_, child) in &mut self.0 {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        self.0.clear();
    }

    /// The first child that has exited, with its status.
    fn exited(&mut self) -> Option<(String, std::process::ExitStatus)> {
        self.0.iter_mut().find_map(|(name, c)| c.try_wait().ok().flatten().map(|s| (name.clone(), s)))
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs the demo until SIGINT or SIGTERM.
pub fn run(options: DemoOptions) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the p2psip executable")?;
    let (dir, temporary) = match &options.dir {
        Some(d) => (d.clone(), false),
        None => (std::env::temp_dir().join(format!("p2psip-demo-{}", std::process::id())), true),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start tokio")?;
    // Signal handlers first, so a Ctrl-C during set-up still stops everything cleanly.
    let signal = {
        let _guard = runtime.enter();
        super::signal::shutdown_signal()?
    };
    let mut children = Children(Vec::new());
    let result = set_up(&exe, &dir, &options, &mut children).and_then(|credentials| {
        print_summary(&dir, &options, &credentials, &children);
        runtime.block_on(wait(signal, &mut children))
    });
    children.stop();
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result?;
    println!("p2psip demo: stopped");
    Ok(())
}

fn ip(node: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, node as u8))
}

/// CA, enrollments, accounts, nodes; returns (user, password) for the accounts.
fn set_up(
    exe: &Path,
    dir: &Path,
    options: &DemoOptions,
    children: &mut Children,
) -> anyhow::Result<Vec<(String, String)>> {
    let ca_dir = dir.join("ca");
    let node_dir = |i: usize| dir.join(format!("node{i}"));
    let all_enrolled = (1..=USERS.len()).all(|i| node_dir(i).join("identity").join("chain.pem").exists());
    if !all_enrolled {
        if !ca_dir.exists() {
            let ca = ca_dir.to_str().context("the demo directory must be UTF-8")?;
            run_to_end(exe, dir, "ca-init", &["ca", "init", "--dir", ca, "--domain", &options.domain])?;
        }
        let listen = SocketAddr::new(ip(1), options.ca_port);
        let log = File::create(dir.join("ca.log"))?;
        let ca = Command::new(exe)
            .args(["ca", "serve", "--dir"])
            .arg(&ca_dir)
            .args(["--listen", &listen.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("cannot start the CA")?;
        children.0.push(("CA".into(), ca));
        let mut line = String::new();
        let out = children.0.last_mut().and_then(|(_, c)| c.stdout.take()).context("the CA's output")?;
        BufReader::new(out).read_line(&mut line)?;
        let url = line.split_whitespace().find(|w| w.starts_with("https://"));
        let (Some(url), Some(fingerprint)) = (url, line.split_whitespace().last()) else {
            bail!("the CA did not start (see {})", dir.join("ca.log").display());
        };
        for (i, user) in USERS.iter().enumerate().map(|(i, u)| (i + 1, u)) {
            if node_dir(i).join("identity").join("chain.pem").exists() {
                continue;
            }
            let aor = format!("sip:{user}@{}", options.domain);
            let data = node_dir(i);
            let data = data.to_str().context("the demo directory must be UTF-8")?;
            run_to_end(
                exe,
                dir,
                &format!("enroll-{user}"),
                &["enroll", &aor, "--ca", url, "--ca-fingerprint", fingerprint, "--data-dir", data],
            )?;
        }
        // The overlay runs without its CA.
        children.stop();
    }
    let mut credentials = Vec::new();
    for (i, user) in USERS.iter().take(2).enumerate().map(|(i, u)| (i + 1, u)) {
        let password = new_password()?;
        let aor = format!("sip:{user}@{}", options.domain);
        super::files::accounts::add(&node_dir(i), &aor, &password, false)?;
        credentials.push((user.to_string(), password));
    }
    let first = SocketAddr::new(ip(1), options.overlay_port);
    for i in 1..=USERS.len() {
        let at = |port| SocketAddr::new(ip(i), port).to_string();
        let log = File::create(dir.join(format!("node{i}.log")))?;
        let mut cmd = Command::new(exe);
        cmd.arg("node")
            .args(["--listen", &at(options.overlay_port), "--proxy", &at(options.proxy_port)])
            .args(["--http", &at(options.http_port), "--domain", &options.domain, "--data-dir"])
            .arg(node_dir(i));
        if i > 1 {
            cmd.args(["--join", &first.to_string()]);
        }
        let child =
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn().context("cannot start a node")?;
        children.0.push((format!("node {i}"), child));
        let http = SocketAddr::new(ip(i), options.http_port);
        let deadline = Instant::now() + START_TIMEOUT;
        while !healthy(http) {
            if let Some((name, status)) = children.exited() {
                bail!("{name} exited ({status}); see {}", dir.join(format!("node{i}.log")).display());
            }
            if Instant::now() > deadline {
                bail!("node {i} did not start; see {}", dir.join(format!("node{i}.log")).display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(credentials)
}

fn print_summary(dir: &Path, options: &DemoOptions, credentials: &[(String, String)], children: &Children) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "p2psip demo: a CA (stopped), three nodes and two accounts in {}", dir.display());
    for (i, (_, child)) in children.0.iter().enumerate() {
        let n = i + 1;
        let _ = writeln!(
            out,
            "  node {n}: overlay {}, proxy {}, status http://{}/status, log {}, pid {}",
            SocketAddr::new(ip(n), options.overlay_port),
            SocketAddr::new(ip(n), options.proxy_port),
            SocketAddr::new(ip(n), options.http_port),
            dir.join(format!("node{n}.log")).display(),
            child.id()
        );
    }
    let _ = writeln!(out, "Set up two softphones (SIP over UDP or TCP):");
    for (i, (user, password)) in credentials.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {user}: proxy/registrar sip:{} user {user} domain {} password {password}",
            SocketAddr::new(ip(i + 1), options.proxy_port),
            options.domain
        );
    }
    let _ = writeln!(out, "Then call sip:bob@{} from alice's phone. Ctrl-C stops everything.", options.domain);
    let _ = out.flush();
}

/// Until a signal (Ok) or a child's death (an error).
async fn wait(signal: impl std::future::Future<Output = ()>, children: &mut Children) -> anyhow::Result<()> {
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut signal => return Ok(()),
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                if let Some((name, status)) = children.exited() {
                    // A Ctrl-C at a terminal reaches the nodes too (one process group), and
                    // one may exit before our own handler has run: that is still a clean stop.
                    if tokio::time::timeout(Duration::from_secs(1), &mut signal).await.is_ok() {
                        return Ok(());
                    }
                    bail!("{name} exited ({status}); stopping the demo");
                }
            }
        }
    }
}

fn run_to_end(exe: &Path, dir: &Path, what: &str, args: &[&str]) -> anyhow::Result<()> {
    let log = dir.join(format!("{what}.log"));
    let status = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&log)?)
        .stderr(File::create(dir.join(format!("{what}.err")))?)
        .status()
        .with_context(|| format!("cannot run p2psip {what}"))?;
    if !status.success() {
        let err = std::fs::read_to_string(dir.join(format!("{what}.err"))).unwrap_or_default();
        bail!("p2psip {} failed: {}", args.join(" "), err.trim());
    }
    Ok(())
}

fn healthy(http: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&http, Duration::from_millis(300)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    // The API answers only requests that name it (the DNS-rebinding check).
    if s.write_all(format!("GET /health HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut first = String::new();
    BufReader::new(s).read_line(&mut first).is_ok() && first.contains(" 200 ")
}

/// Twelve characters from the OS's randomness, easy to type.
fn new_password() -> anyhow::Result<String> {
    use ring::rand::SecureRandom;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut bytes = [0u8; 12];
    ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| anyhow::anyhow!("no randomness"))?;
    Ok(bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect())
}
