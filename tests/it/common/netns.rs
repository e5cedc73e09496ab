//! Network namespaces with nftables NATs, made and removed by the test that uses them (the
//! layout of the project's earlier NAT testbed, rebuilt here so a fresh clone needs nothing
//! beside the repository): a public "Internet" (a bridge in namespace `inet`,
//! where public hosts live as addresses on the bridge), and routers (`nat*`) with a home
//! network (`home*`) behind each. Nothing touches the host's own network: every link is a
//! veth pair created directly inside the namespaces, and every namespace name carries the
//! test process's PID, so parallel runs do not meet.
//!
//! NAT kinds (RFC 4787):
//! - [`NatKind::Cone`]: nft `masquerade`: endpoint-independent mapping (Linux keeps the source
//!   port when it can), address-and-port-dependent filtering (conntrack), the common home
//!   router.
//! - [`NatKind::Symmetric`]: `masquerade fully-random`: a new public port per destination.
//! - [`NatKind::Forwarded`]: cone, plus static port forwards to the home hosts (a home
//!   router's "port forwarding" page), hairpinned (RFC 4787 REQ-9: a home host reaching the
//!   public address sees the other through the forward, from the public address).
//!
//! Like a home router, unsolicited UDP to the router's WAN address is dropped before
//! conntrack confirms it, unless a forward takes it.

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::{wait_for, ChildGuard, BIN};

/// The public network's prefix (TEST-NET-3, RFC 5737).
pub(crate) const INET: &str = "203.0.113";

/// How a router translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NatKind {
    Cone,
    Symmetric,
    /// Cone, with each `(public port → home host:port)` forwarded, UDP and TCP.
    Forwarded,
}

/// The namespaces of one test, deleted (with anything still running in them) on drop.
pub(crate) struct Topology {
    prefix: String,
    namespaces: Vec<String>,
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).stdin(Stdio::null()).output().expect("spawn");
    assert!(
        out.status.success(),
        "{} failed ({}): {}\n(the NAT tests need root, iproute2 and nftables: .ci/run installs them)",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Topology {
    /// An empty Internet: namespace `inet` with bridge `br0`. `tag` tells tests apart.
    pub(crate) fn new(tag: &str) -> Topology {
        let prefix = format!("p2p{}{tag}-", std::process::id());
        let mut t = Topology { prefix, namespaces: Vec::new() };
        t.namespace("inet");
        t.exec("inet", &["ip", "link", "add", "br0", "type", "bridge"]);
        t.exec("inet", &["ip", "link", "set", "br0", "up"]);
        t
    }

    /// The full name of namespace `name`.
    pub(crate) fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn namespace(&mut self, name: &str) {
        let ns = self.ns(name);
        run(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns);
        self.exec(name, &["ip", "link", "set", "lo", "up"]);
        // IPv4 only: the addresses the nodes see stay few and predictable.
        self.exec(name, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
    }

    /// Runs `args` inside namespace `name`; it must succeed.
    pub(crate) fn exec(&self, name: &str, args: &[&str]) -> Output {
        let ns = self.ns(name);
        let mut full = vec!["ip", "netns", "exec", ns.as_str()];
        full.extend_from_slice(args);
        run(&full)
    }

    /// A veth pair between `a` (interface `ia`) and `b` (`ib`), created in place, both up.
    fn veth(&self, a: &str, ia: &str, b: &str, ib: &str) {
        let (na, nb) = (self.ns(a), self.ns(b));
        run(&["ip", "link", "add", ia, "netns", &na, "type", "veth", "peer", "name", ib, "netns", &nb]);
        self.exec(a, &["ip", "link", "set", ia, "up"]);
        self.exec(b, &["ip", "link", "set", ib, "up"]);
    }

    /// A public host address on the Internet's bridge (for nodes run in `inet` itself).
    pub(crate) fn public_host(&self, last: u8) -> IpAddr {
        let addr = format!("{INET}.{last}");
        self.exec("inet", &["ip", "addr", "add", &format!("{addr}/24"), "dev", "br0"]);
        addr.parse().expect("address")
    }

    /// coturn (Debian's `turnserver`) on the Internet at 203.0.113.2 and .3 (two addresses:
    /// RFC 5780's tests), port 3478, STUN for anyone and TURN for `test`/`test`, relaying to
    /// no private address (as a real one is set up). Killed by PID when the guard drops.
    pub(crate) fn stun_server(&mut self, dir: &std::path::Path) -> (SocketAddr, ChildGuard) {
        for last in [2, 3] {
            self.public_host(last);
        }
        let ns = self.ns("inet");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, "turnserver", "-n", "--no-cli", "--no-tls", "--no-dtls"])
            .args(["--listening-ip", &format!("{INET}.2"), "--listening-ip", &format!("{INET}.3")])
            .args(["--relay-ip", &format!("{INET}.2"), "--listening-port", "3478"])
            .args(["--lt-cred-mech", "--user", "test:test", "--realm", "p2p.test"])
            .args(["--denied-peer-ip", "10.0.0.0-10.255.255.255", "--denied-peer-ip", "172.16.0.0-172.31.255.255"])
            .args(["--denied-peer-ip", "192.168.0.0-192.168.255.255", "--log-file", "stdout"])
            .arg("--pidfile")
            .arg(dir.join("turnserver.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn turnserver (Debian package coturn)");
        let guard = ChildGuard::new(child);
        let server: SocketAddr = format!("{INET}.2:3478").parse().expect("address");
        let listening = wait_for(Duration::from_secs(15), || {
            let out = self.exec("inet", &["ss", "-lun"]);
            String::from_utf8_lossy(&out.stdout).contains(&format!("{INET}.3:3478")).then_some(())
        });
        assert!(listening.is_some(), "turnserver did not start in the namespace");
        (server, guard)
    }

    /// A host of its own on the Internet (a laptop on a public network): namespace `name`,
    /// `eth0` on the bridge at `addr`.
    pub(crate) fn host(&mut self, name: &str, addr: IpAddr) {
        self.namespace(name);
        self.veth("inet", &format!("p-{name}"), name, "eth0");
        self.exec("inet", &["ip", "link", "set", &format!("p-{name}"), "master", "br0"]);
        self.exec(name, &["ip", "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
    }

    /// Host `name` moves from `old` to `new` (its network gave it another address).
    pub(crate) fn readdress(&self, name: &str, old: IpAddr, new: IpAddr) {
        self.exec(name, &["ip", "addr", "del", &format!("{old}/24"), "dev", "eth0"]);
        self.exec(name, &["ip", "addr", "add", &format!("{new}/24"), "dev", "eth0"]);
    }

    /// Router `nat{n}` at `203.0.113.{10+n}` with one home host per entry of `forwards`
    /// (`home{n}{i}` at `192.168.{n}.{2+i}`; a `Some(port)` forwards that public port to
    /// the same port of the host). Returns the router's public address and the hosts'.
    pub(crate) fn router(&mut self, n: u8, kind: NatKind, forwards: &[Option<u16>]) -> (IpAddr, Vec<IpAddr>) {
        let router = format!("nat{n}");
        let wan: IpAddr = format!("{INET}.{}", 10 + n).parse().expect("address");
        self.namespace(&router);
        self.veth("inet", &format!("p-nat{n}"), &router, "wan0");
        self.exec("inet", &["ip", "link", "set", &format!("p-nat{n}"), "master", "br0"]);
        self.exec(&router, &["ip", "addr", "add", &format!("{wan}/24"), "dev", "wan0"]);
        self.exec(&router, &["ip", "link", "add", "lan0", "type", "bridge"]);
        self.exec(&router, &["ip", "link", "set", "lan0", "up"]);
        self.exec(&router, &["ip", "addr", "add", &format!("192.168.{n}.1/24"), "dev", "lan0"]);
        self.exec(&router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let mut hosts = Vec::new();
        let mut dnat = String::new();
        for (i, forward) in forwards.iter().enumerate() {
            let home = format!("home{n}{i}");
            let addr: IpAddr = format!("192.168.{n}.{}", 2 + i).parse().expect("address");
            self.namespace(&home);
            self.veth(&router, &format!("l{i}"), &home, "eth0");
            self.exec(&router, &["ip", "link", "set", &format!("l{i}"), "master", "lan0"]);
            self.exec(&home, &["ip", "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
            self.exec(&home, &["ip", "route", "add", "default", "via", &format!("192.168.{n}.1")]);
            if let Some(port) = forward {
                assert_eq!(kind, NatKind::Forwarded, "forwards need NatKind::Forwarded");
                // From the WAN, and hairpinned from the LAN (RFC 4787 REQ-9): two hosts behind
                // this router reach each other at the public address, as routers' "NAT
                // loopback" does.
                dnat.push_str(&format!(
                    "ip daddr {wan} meta l4proto {{ udp, tcp }} th dport {port} dnat to {addr}:{port}\n"
                ));
            }
            hosts.push(addr);
        }
        let masquerade = if kind == NatKind::Symmetric { "masquerade fully-random" } else { "masquerade" };
        let rules = format!(
            "table ip p2pnat {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    {dnat}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname \"wan0\" {masquerade}
    ip saddr 192.168.{n}.0/24 ip daddr 192.168.{n}.0/24 ct status dnat snat to {wan}
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname \"wan0\" meta l4proto udp ct state new drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname \"lan0\" oifname \"wan0\" accept
    ct status dnat accept
  }}
}}
"
        );
        let path = std::env::temp_dir().join(format!("{}{router}.nft", self.prefix));
        std::fs::write(&path, rules).expect("write nft rules");
        self.exec(&router, &["nft", "-f", path.to_str().expect("utf-8 path")]);
        let _ = std::fs::remove_file(&path);
        (wan, hosts)
    }

    /// The namespace of home host `i` behind router `n`.
    pub(crate) fn home(&self, n: u8, i: usize) -> String {
        format!("home{n}{i}")
    }

    /// A `p2psip` command run inside namespace `name` (`ip netns exec` execs it: the PID is
    /// the node's own).
    pub(crate) fn p2psip(&self, name: &str, dir: &std::path::Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(name), BIN]);
        cmd.env_remove("RUST_LOG").env("XDG_DATA_HOME", dir.join("xdg-data")).current_dir(dir);
        cmd
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Anything still inside (a node whose guard has not run): by its own PID, then the
        // namespace, which takes its interfaces with it.
        for ns in self.namespaces.iter().rev() {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A node running inside a namespace, with its HTTP API on the namespace's own loopback.
pub(crate) struct NsNode {
    pub process: ChildGuard,
    /// The namespace's full name (for `ip netns exec`).
    pub ns: String,
    /// Its name in the topology.
    short: String,
    pub listen: SocketAddr,
    pub http: SocketAddr,
    dir: tempfile::TempDir,
}

impl NsNode {
    /// Starts `p2psip node --listen LISTEN --proxy 127.0.0.1:PROXY --http 127.0.0.1:HTTP
    /// EXTRA…` in namespace `name` and waits until `/status` answers there.
    pub(crate) fn start(t: &Topology, name: &str, listen: SocketAddr, port_base: u16, extra: &[&str]) -> NsNode {
        NsNode::start_with_data(t, name, listen, port_base, None, extra)
    }

    /// [`NsNode::start`] on data directory `data` (enrolled, with accounts) when given.
    pub(crate) fn start_with_data(
        t: &Topology,
        name: &str,
        listen: SocketAddr,
        port_base: u16,
        data: Option<&std::path::Path>,
        extra: &[&str],
    ) -> NsNode {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let data = data.map_or_else(|| dir.path().join("data"), std::path::Path::to_owned);
        let http: SocketAddr = format!("127.0.0.1:{}", port_base + 1).parse().expect("address");
        let proxy = format!("127.0.0.1:{port_base}");
        let log = std::fs::File::create(dir.path().join("node.log")).expect("log file");
        let mut cmd = t.p2psip(name, dir.path());
        // P2PSIP_TEST_LOG=debug (say) gives the nodes of a failing test a fuller log.
        if let Some(level) = std::env::var_os("P2PSIP_TEST_LOG") {
            cmd.env("RUST_LOG", level);
        }
        let child = cmd
            .args(["node", "--listen", &listen.to_string(), "--proxy", &proxy, "--http", &http.to_string()])
            .args(extra)
            .arg("--data-dir")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn p2psip node in a namespace");
        let mut node =
            NsNode { process: ChildGuard::new(child), ns: t.ns(name), short: name.to_owned(), listen, http, dir };
        let ready = wait_for(Duration::from_secs(15), || {
            if let Some(status) = node.process.try_exit() {
                panic!("node in {name} exited during startup ({status}); log:\n{}", node.log());
            }
            node.status(t)
        });
        assert!(ready.is_some(), "node in {name} not ready; log:\n{}", node.log());
        node
    }

    /// `/status`, asked from inside the namespace (`p2psip status --json`).
    pub(crate) fn status(&self, t: &Topology) -> Option<serde_json::Value> {
        let out = t
            .p2psip(&self.short, self.dir.path())
            .args(["status", "--json", "--http", &self.http.to_string()])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
    }

    /// Waits until `/status` satisfies `cond`; panics with the last status and the log.
    pub(crate) fn wait_status(
        &self,
        t: &Topology,
        what: &str,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        let found = wait_for(Duration::from_secs(30), || {
            let s = self.status(t)?;
            let ok = cond(&s);
            last = s.clone();
            ok.then_some(s)
        });
        found.unwrap_or_else(|| panic!("{what}: never; last status {last}\nlog:\n{}", self.log()))
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    /// Its namespace's name in the topology.
    pub(crate) fn short(&self) -> String {
        self.short.clone()
    }
}
