//! Shared helpers for the integration tests: real `p2psip` processes, free ports, and tiny
//! HTTP and SIP clients.
//!
//! Every process a test starts is owned by a guard that kills it by its own PID on drop, so a
//! failing assertion never leaves a node running. Tests wait for conditions by polling with a
//! deadline, never by sleeping a fixed time. Each test uses its own loopback address
//! (127.0.0.x) so tests in one binary can run in parallel.
// Not every test binary uses every helper; tests may poll with the real clock.
#![allow(dead_code, clippy::disallowed_methods)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub(crate) mod baresip;
pub(crate) mod browser;
pub(crate) mod ca;
pub(crate) mod linphone;
pub(crate) mod netns;
pub(crate) mod ring;
pub(crate) mod sip_client;
pub(crate) mod softphone;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_p2psip");

/// How long a node may take to start answering `/health`.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `cond` until it returns `Some` or `timeout` passes.
pub(crate) fn wait_for<T>(timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP address")
}

/// `n` distinct ports on `ip` that are free for both UDP and TCP right now. All candidates
/// are held until the last one is found, so the kernel cannot hand out one twice.
///
/// The ports come from below the kernel's ephemeral range: a port the kernel picked with
/// bind(0) is the next one it may give to any test's wildcard client socket, which would then
/// take the port between this call and the node's own bind (`EADDRINUSE`).
pub(crate) fn free_ports(ip: IpAddr, n: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = (10_000u32, ephemeral_low().min(32_768));
    let mut held = Vec::new();
    let mut tries = 0u32;
    while held.len() < n {
        tries += 1;
        let port = if high > low + 1_000 && tries < 10_000 {
            // Spread processes (pid) and calls (counter) over the range by a fixed stride.
            let k = NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(7_919);
            (low + (std::process::id().wrapping_mul(104_729).wrapping_add(k)) % (high - low)) as u16
        } else {
            0
        };
        let Ok(tcp) = TcpListener::bind((ip, port)) else { continue };
        let port = tcp.local_addr().expect("local address").port();
        if let Ok(udp) = UdpSocket::bind((ip, port)) {
            held.push((port, tcp, udp));
        }
    }
    held.into_iter().map(|(port, _, _)| port).collect()
}

/// The first of `len` consecutive ports on `ip` free for UDP right now (sipp's `-mp` takes
/// the audio port and binds the next ones for RTCP and video).
pub(crate) fn free_port_run(ip: IpAddr, len: u16) -> u16 {
    loop {
        let [first] = free_ports(ip, 1).try_into().expect("one port");
        let Some(last) = first.checked_add(len - 1) else { continue };
        let held: Vec<_> = (first..=last).map_while(|p| UdpSocket::bind((ip, p)).ok()).collect();
        if held.len() == usize::from(len) {
            return first;
        }
    }
}

/// The first port of the kernel's ephemeral range (Linux), 32768 if it cannot be read.
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32_768)
}

pub(crate) fn free_addrs(ip: IpAddr, n: usize) -> Vec<SocketAddr> {
    free_ports(ip, n).into_iter().map(|p| SocketAddr::new(ip, p)).collect()
}

/// A child process that is killed (by PID, through its handle) when the guard drops.
pub(crate) struct ChildGuard {
    child: Child,
    exit: Option<ExitStatus>,
    /// Dropped while still running: SIGTERM first, so a process with children of its own
    /// (`p2psip demo`) stops them, then SIGKILL after [`GRACE`].
    graceful: bool,
}

/// How long a graceful guard waits after SIGTERM.
const GRACE: Duration = Duration::from_secs(5);

impl ChildGuard {
    pub(crate) fn new(child: Child) -> ChildGuard {
        ChildGuard { child, exit: None, graceful: false }
    }

    /// A guard whose drop (say, on a failed assertion) asks the process to stop before it
    /// kills it: for processes that must end their own children.
    pub(crate) fn graceful(child: Child) -> ChildGuard {
        ChildGuard { child, exit: None, graceful: true }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's stdout, when it was spawned with `Stdio::piped()`.
    pub(crate) fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// The child's stdin, when it was spawned with `Stdio::piped()`.
    pub(crate) fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.child.stdin.take()
    }

    /// The exit status if the process has ended.
    pub(crate) fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait");
        }
        self.exit
    }

    /// Waits up to `timeout` for the process to end.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_for(timeout, || self.try_exit())
    }

    /// Kills this process only, at once (SIGKILL through its own handle), and reaps it.
    pub(crate) fn kill(&mut self) {
        if self.try_exit().is_none() {
            self.child.kill().expect("kill -9");
            self.exit = Some(self.child.wait().expect("wait"));
        }
    }

    /// Sends SIGTERM to this process only.
    pub(crate) fn terminate(&self) {
        let ok = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("run kill");
        assert!(ok.success(), "kill -TERM {} failed", self.pid());
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.graceful && self.try_exit().is_none() {
            let pid = self.pid().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            self.wait_exit(GRACE);
        }
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `program` run in network namespace `ns` when given (`ip netns exec` execs it: the PID is
/// the program's own), else here.
pub(crate) fn command_in(ns: Option<&str>, program: &str) -> Command {
    match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        None => Command::new(program),
    }
}

/// A `p2psip` command for tests: no RUST_LOG from the environment, and the XDG data home in
/// `dir` so nothing touches the real home directory.
pub(crate) fn p2psip(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("RUST_LOG").env("XDG_DATA_HOME", dir.join("xdg-data")).current_dir(dir);
    cmd
}

/// What a finished command printed.
pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `p2psip args…` to completion (killing it after `timeout`), capturing its output.
pub(crate) fn run_p2psip(args: &[&str], timeout: Duration) -> Finished {
    let dir = TempDir::new().expect("temp dir");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let child = p2psip(dir.path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn p2psip");
    let mut guard = ChildGuard::new(child);
    let status = guard.wait_exit(timeout);
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("p2psip {args:?} still running after {timeout:?}; stderr:\n{stderr}"));
    Finished { status, stdout, stderr }
}

/// `p2psip account add AOR --password-stdin --data-dir DATA EXTRA…`, run in `dir`, must succeed.
pub(crate) fn add_account(dir: &Path, data: &Path, aor: &str, password: &str, extra: &[&str]) {
    let mut child = p2psip(dir)
        .args(["account", "add", aor, "--password-stdin", "--data-dir"])
        .arg(data)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn p2psip account add");
    writeln!(child.stdin.take().expect("stdin"), "{password}").expect("write the password");
    let mut guard = ChildGuard::new(child);
    let status = guard.wait_exit(Duration::from_secs(10)).expect("account add finishes");
    assert!(status.success(), "p2psip account add {aor} failed");
}

/// A running node, with its data directory and log file; killed by PID when dropped.
/// Started with [`Node::builder`].
pub(crate) struct Node {
    pub process: ChildGuard,
    pub listen: SocketAddr,
    pub proxy: SocketAddr,
    pub http: SocketAddr,
    /// The temporary directory the node runs in, unless the test gave it a data directory.
    dir: Option<TempDir>,
    data: PathBuf,
    log: PathBuf,
}

/// How a [`Node`] starts: `Node::builder(ip).config(..).data_dir(..).join(..).start()`.
pub(crate) struct NodeBuilder {
    ip: IpAddr,
    listen: Option<SocketAddr>,
    addrs: Option<[SocketAddr; 3]>,
    http_only: Option<SocketAddr>,
    config: Option<PathBuf>,
    data: Option<PathBuf>,
    join: Option<SocketAddr>,
    accounts: Vec<(String, String, bool)>,
    args: Vec<String>,
}

impl NodeBuilder {
    /// The overlay address; the proxy and HTTP ports are free ones of the same IP.
    pub(crate) fn listen(mut self, listen: SocketAddr) -> NodeBuilder {
        self.listen = Some(listen);
        self
    }

    /// The overlay, proxy and HTTP addresses (a restart on the same ones).
    pub(crate) fn addrs(mut self, addrs: [SocketAddr; 3]) -> NodeBuilder {
        self.addrs = Some(addrs);
        self
    }

    /// Addresses from the config file alone: only `--http` is given, and the overlay and
    /// proxy addresses are read back from `/status`.
    pub(crate) fn addrs_from_config(mut self, http: SocketAddr) -> NodeBuilder {
        self.http_only = Some(http);
        self
    }

    /// `--config PATH`.
    pub(crate) fn config(mut self, path: impl AsRef<Path>) -> NodeBuilder {
        self.config = Some(path.as_ref().to_owned());
        self
    }

    /// A data directory the test owns (kept across restarts; the log goes beside it), instead
    /// of a fresh temporary one.
    pub(crate) fn data_dir(mut self, data: impl AsRef<Path>) -> NodeBuilder {
        self.data = Some(data.as_ref().to_owned());
        self
    }

    /// `--join ADDR`.
    pub(crate) fn join(mut self, bootstrap: SocketAddr) -> NodeBuilder {
        self.join = Some(bootstrap);
        self
    }

    /// Local accounts added before the node starts (`p2psip account add`, user → password),
    /// without a certificate for them.
    pub(crate) fn accounts(mut self, accounts: &[(&str, &str)]) -> NodeBuilder {
        self.accounts.extend(accounts.iter().map(|(a, p)| (a.to_string(), p.to_string(), false)));
        self
    }

    /// A local account for the AoR the node's enrolled certificate names.
    pub(crate) fn enrolled_account(mut self, aor: &str, password: &str) -> NodeBuilder {
        self.accounts.push((aor.into(), password.into(), true));
        self
    }

    /// More flags after the addresses.
    pub(crate) fn args(mut self, args: &[&str]) -> NodeBuilder {
        self.args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// Starts the node and waits until it answers `/health`.
    pub(crate) fn start(self) -> Node {
        let temp = self.data.is_none().then(|| TempDir::new().expect("temp dir"));
        let data = match (&self.data, &temp) {
            (Some(d), _) => d.clone(),
            (None, Some(t)) => t.path().join("data"),
            (None, None) => unreachable!("a temporary directory when none is given"),
        };
        let run_in = data.parent().expect("data directory's parent").to_owned();
        for (aor, password, enrolled) in &self.accounts {
            let extra: &[&str] = if *enrolled { &[] } else { &["--without-certificate"] };
            add_account(&run_in, &data, aor, password, extra);
        }
        let [listen, proxy, http] = match (self.addrs, self.listen, self.http_only) {
            (Some(addrs), _, _) => addrs,
            (None, Some(listen), _) => {
                // The listen port is free now too, so the kernel may offer it; skip it.
                let ports: Vec<SocketAddr> = free_addrs(listen.ip(), 3).into_iter().filter(|a| *a != listen).collect();
                [listen, ports[0], ports[1]]
            }
            (None, None, Some(http)) => [http, http, http],
            (None, None, None) => free_addrs(self.ip, 3).try_into().expect("three addresses"),
        };
        let mut cmd = p2psip(&run_in);
        cmd.arg("node");
        if self.http_only.is_none() {
            cmd.args(["--listen", &listen.to_string(), "--proxy", &proxy.to_string()]);
        }
        cmd.args(["--http", &http.to_string()]);
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        if let Some(join) = self.join {
            cmd.args(["--join", &join.to_string()]);
        }
        cmd.args(&self.args).arg("--data-dir").arg(&data);
        let log = match temp {
            Some(ref t) => t.path().join("node.log"),
            None => data.with_extension("log"),
        };
        // Appended to: a node restarted on its data directory keeps one log.
        let log_file = File::options().create(true).append(true).open(&log).expect("log file");
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log_file).spawn().expect("spawn p2psip node");
        let mut node = Node { process: ChildGuard::new(child), listen, proxy, http, dir: temp, data, log };
        node.wait_ready();
        if self.http_only.is_some() {
            let status = node.status_json();
            let addr = |key: &str| status[key].as_str().and_then(|s| s.parse().ok()).expect("address in /status");
            (node.listen, node.proxy) = (addr("listen"), addr("proxy"));
        }
        node
    }
}

impl Node {
    /// A node on free ports of `ip_text` (a loopback address the test owns).
    pub(crate) fn builder(ip_text: &str) -> NodeBuilder {
        NodeBuilder {
            ip: ip(ip_text),
            listen: None,
            addrs: None,
            http_only: None,
            config: None,
            data: None,
            join: None,
            accounts: Vec::new(),
            args: Vec::new(),
        }
    }

    /// Starts a node on `ip` with free ports and waits until it answers `/health`.
    pub(crate) fn start(ip: &str) -> Node {
        Node::builder(ip).start()
    }

    /// Starts a node on free ports of `ip_text`, with `extra` flags after the addresses.
    pub(crate) fn start_with(ip_text: &str, extra: &[&str]) -> Node {
        Node::builder(ip_text).args(extra).start()
    }

    pub(crate) fn wait_ready(&mut self) {
        let ready = wait_for(READY_TIMEOUT, || {
            if let Some(status) = self.process.try_exit() {
                panic!("node exited during startup ({status}); log:\n{}", self.log());
            }
            http_get(self.http, "/health").filter(|(code, body)| *code == 200 && body == "ok")
        });
        assert!(ready.is_some(), "node not ready after {READY_TIMEOUT:?}; log:\n{}", self.log());
    }

    /// The directory the node runs in (its data directory's parent).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.as_ref().map_or_else(|| self.data.parent().expect("parent"), TempDir::path)
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.data.clone()
    }

    /// Everything the node has logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The node's Node ID, from its overlay address (SHA-1, the default hash).
    pub(crate) fn id(&self) -> p2psip::overlay::NodeId {
        p2psip::overlay::NodeId::from_addr(self.listen.ip(), self.listen.port(), p2psip::overlay::IdHash::Sha1)
    }

    /// `/status`, or `None` while the node does not answer (dead or busy).
    pub(crate) fn status(&self) -> Option<serde_json::Value> {
        let (code, body) = http_get(self.http, "/status")?;
        (code == 200).then(|| serde_json::from_str(&body).ok()).flatten()
    }

    pub(crate) fn status_json(&self) -> serde_json::Value {
        let (code, body) = http_get(self.http, "/status").expect("GET /status");
        assert_eq!(code, 200, "GET /status: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("status JSON: {e}: {body}"))
    }

    pub(crate) fn counter(&self, name: &str) -> u64 {
        let status = self.status_json();
        status["counters"][name].as_u64().unwrap_or_else(|| panic!("no counter {name} in {status}"))
    }
}

/// The contacts of the registration record in `p2psip lookup AOR --json`'s output.
pub(crate) fn record_contacts(stdout: &[u8]) -> Option<Vec<String>> {
    let answer: serde_json::Value = serde_json::from_slice(stdout).ok()?;
    let contacts = answer["registration"]["contacts"].as_array()?;
    Some(contacts.iter().filter_map(|c| c["uri"].as_str().map(String::from)).collect())
}

/// A GET with the `Host` given and `extra` header lines: `(status, body, raw headers)`.
pub(crate) fn http_get_with_host(
    addr: SocketAddr,
    path: &str,
    host: &str,
    extra: &str,
) -> Option<(u16, String, String)> {
    http_request(addr, "GET", path, host, extra)
}

/// A request with no body, the `Host` given and `extra` header lines: `(status, body, raw
/// headers)`.
pub(crate) fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: &str,
    extra: &str,
) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let length = if method == "POST" { "Content-Length: 0\r\n" } else { "" };
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}{length}Connection: close\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, body.to_owned(), head.to_owned()))
}

/// A minimal HTTP/1.1 GET: `(status code, body)`, or `None` if nothing answered.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    http_get_with_host(addr, path, &addr.to_string(), "").map(|(code, body, _)| (code, body))
}

/// An OPTIONS request to the node itself (no user part), RFC 3261 §11.
pub(crate) fn options_request(target: SocketAddr, local: SocketAddr, transport: &str, call_id: &str) -> String {
    format!(
        "OPTIONS sip:{target} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {local};branch=z9hG4bK{call_id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:test@{local}>;tag={call_id}\r\n\
         To: <sip:{target}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// The status code of a SIP response, if `text` is one.
pub(crate) fn status_code(text: &str) -> Option<u16> {
    text.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// Sends an OPTIONS over UDP and waits for the final response with the same Call-ID,
/// retransmitting as a non-INVITE client transaction does (RFC 3261 §17.1.2.2: from T1,
/// doubling up to T2) until Timer F (64·T1) fires. Returns the status code, `None` on timeout.
pub(crate) fn udp_options(sock: &UdpSocket, target: SocketAddr, call_id: &str) -> Option<u16> {
    const T1: Duration = Duration::from_millis(500);
    const T2: Duration = Duration::from_secs(4);
    let request = options_request(target, sock.local_addr().expect("local address"), "UDP", call_id);
    let give_up = Instant::now() + 64 * T1;
    let mut interval = T1;
    let mut buf = vec![0u8; 65_535];
    while Instant::now() < give_up {
        sock.send_to(request.as_bytes(), target).expect("send OPTIONS");
        let resend_at = Instant::now() + interval;
        while let Some(wait) = resend_at.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            sock.set_read_timeout(Some(wait)).expect("set timeout");
            let Ok(n) = sock.recv(&mut buf) else { break };
            let text = String::from_utf8_lossy(&buf[..n]);
            let ours = text.lines().any(|l| l.eq_ignore_ascii_case(&format!("Call-ID: {call_id}")));
            match status_code(&text) {
                Some(code) if ours && code >= 200 => return Some(code),
                _ => {}
            }
        }
        interval = (interval * 2).min(T2);
    }
    None
}

/// Reads one SIP response from a stream (headers, then Content-Length body) and returns the
/// status code; `None` if the stream ends or stays silent for `timeout`.
pub(crate) fn read_tcp_response(s: &mut TcpStream, timeout: Duration) -> Option<u16> {
    s.set_read_timeout(Some(timeout)).ok()?;
    status_code(&read_tcp_message(s)?)
}

/// Reads one SIP message from a stream (headers, then the Content-Length body) with the
/// stream's own read timeout and returns its head as text; `None` if the stream ends or a
/// read times out.
pub(crate) fn read_tcp_message(s: &mut TcpStream) -> Option<String> {
    let whole = read_tcp_bytes(s)?;
    let end = whole.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some(String::from_utf8_lossy(&whole[..end]).into_owned())
}

/// Reads one whole SIP message from a stream (headers, then the Content-Length body) with the
/// stream's own read timeout; `None` if the stream ends or a read times out.
pub(crate) fn read_tcp_bytes(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| l.split_once(':').filter(|(n, _)| n.trim().eq_ignore_ascii_case("content-length")))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            while got.len() < end + 4 + len {
                let n = s.read(&mut buf).ok().filter(|n| *n > 0)?;
                got.extend_from_slice(&buf[..n]);
            }
            got.truncate(end + 4 + len);
            return Some(got);
        }
        let n = s.read(&mut buf).ok().filter(|n| *n > 0)?;
        got.extend_from_slice(&buf[..n]);
    }
}
