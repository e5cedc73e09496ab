//! Nodes in real NATs (issue 13): network namespaces with nftables routers, built and removed
//! by the test (`common::netns`). Peers on public addresses; a node behind a cone NAT and one
//! behind a symmetric NAT, which the dial-back makes clients; `--role peer` behind a NAT,
//! refused with a clear error; and two peers behind one router with port forwards, whose
//! Node IDs derive from the public address and sit side by side on the ring.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use p2psip::overlay::{IdHash, NodeId};
use serde_json::Value;

use crate::common::netns::{NatKind, NsNode, Topology};
use crate::common::ChildGuard;

fn role_is(s: &Value, role: &str, reachable: bool) -> bool {
    s["role"] == role && s["nat"]["reachable"].as_bool() == Some(reachable)
}

fn ids_of(peers: &[&Value]) -> Vec<String> {
    peers.iter().map(|s| s["node_id"].as_str().expect("node_id").to_owned()).collect()
}

/// Every peer's successor and predecessor are its neighbours in ID order.
fn ring_correct(peers: &[&Value]) -> bool {
    let mut ids = ids_of(peers);
    ids.sort();
    peers.iter().all(|s| {
        let me = s["node_id"].as_str().unwrap_or_default();
        let Some(i) = ids.iter().position(|x| x == me) else { return false };
        s["successors"][0]["node_id"] == ids[(i + 1) % ids.len()].as_str()
            && s["predecessor"]["node_id"] == ids[(i + ids.len() - 1) % ids.len()].as_str()
    })
}

#[test]
fn peers_clients_and_port_forwards_in_real_nats() {
    let mut t = Topology::new("a");
    let (p1, p2) = (t.public_host(20), t.public_host(21));
    let (cone_wan, cone) = t.router(1, NatKind::Cone, &[None, None]);
    let (sym_wan, sym) = t.router(2, NatKind::Symmetric, &[None]);
    let (fwd_wan, fwd) = t.router(3, NatKind::Forwarded, &[Some(5070), Some(5071)]);

    // Two public peers: the first starts the ring; the second is dialled back from the
    // first's one-shot socket.
    let a = NsNode::start(&t, "inet", SocketAddr::new(p1, 5070), 5060, &[]);
    let join = a.listen.to_string();
    let b = NsNode::start(&t, "inet", SocketAddr::new(p2, 5070), 5080, &["--join", &join]);
    let sb =
        b.wait_status(&t, "b is a reachable peer", |s| role_is(s, "peer", true) && s["overlay"]["state"] == "joined");
    assert_eq!(sb["nat"]["mapped"], "203.0.113.21:5070", "{sb}");

    // Behind a cone NAT and a symmetric one: the dial-back from b never passes the filter.
    let c = NsNode::start(&t, &t.home(1, 0), SocketAddr::new(cone[0], 5070), 5060, &["--join", &join]);
    let d = NsNode::start(&t, &t.home(2, 0), SocketAddr::new(sym[0], 5070), 5060, &["--join", &join]);
    let sc = c.wait_status(&t, "c is a client", |s| role_is(s, "client", false));
    let sd = d.wait_status(&t, "d is a client", |s| role_is(s, "client", false));
    assert_eq!(sc["nat"]["mapped"], format!("{cone_wan}:5070"), "a cone NAT keeps the port: {sc}");
    let d_mapped: SocketAddr = sd["nat"]["mapped"].as_str().and_then(|m| m.parse().ok()).expect("mapped");
    assert_eq!(d_mapped.ip(), sym_wan, "{sd}");
    assert_ne!(sc["overlay"]["state"], "joined", "a client takes no ring position: {sc}");

    // `--role peer` behind the cone NAT: a clear error, exit 1.
    let dir = tempfile::TempDir::new().expect("temp dir");
    let log = dir.path().join("refused.log");
    let child = t
        .p2psip(&t.home(1, 1), dir.path())
        .args(["node", "--listen", &format!("{}:5070", cone[1]), "--proxy", "127.0.0.1:5060"])
        .args(["--http", "127.0.0.1:5061", "--role", "peer", "--join", &join, "--data-dir"])
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let mut refused = ChildGuard::new(child);
    let status = refused.wait_exit(Duration::from_secs(20)).expect("--role peer behind a NAT stops");
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    assert!(last.contains("--role peer") && last.contains("port 5070") && last.contains("--role auto"), "{stderr}");

    // Two peers behind one router with port forwards: dialled back through the forward,
    // their IDs derive from the router's public address, so they sit side by side.
    let f1 = NsNode::start(&t, &t.home(3, 0), SocketAddr::new(fwd[0], 5070), 5060, &["--join", &join]);
    let f2 = NsNode::start(&t, &t.home(3, 1), SocketAddr::new(fwd[1], 5071), 5060, &["--join", &join]);
    for (f, port) in [(&f1, 5070), (&f2, 5071)] {
        let s = f.wait_status(&t, "a port-forwarded node is a reachable peer", |s| {
            role_is(s, "peer", true) && s["overlay"]["state"] == "joined"
        });
        let public = SocketAddr::new(fwd_wan, port);
        assert_eq!(s["node_id"], NodeId::from_addr(fwd_wan, port, IdHash::Sha1).to_string(), "{s}");
        assert_eq!(s["nat"]["mapped"], public.to_string(), "{s}");
    }

    // The ring of the four peers converges; the clients are nobody's neighbour or finger.
    let peers = [&a, &b, &f1, &f2];
    let statuses = crate::common::wait_for(Duration::from_secs(30), || {
        let all: Vec<Value> = peers.iter().map(|p| p.status(&t)).collect::<Option<_>>()?;
        ring_correct(&all.iter().collect::<Vec<_>>()).then_some(all)
    })
    .unwrap_or_else(|| {
        let brief: Vec<String> = peers
            .iter()
            .filter_map(|p| p.status(&t))
            .map(|s| format!("{} pred {} succ {}", s["node_id"], s["predecessor"], s["successors"]))
            .collect();
        panic!("the ring of four peers never converged:\n{}\nf1 log:\n{}", brief.join("\n"), f1.log())
    });
    let id_f1 = NodeId::from_addr(fwd_wan, 5070, IdHash::Sha1).to_string();
    let id_f2 = NodeId::from_addr(fwd_wan, 5071, IdHash::Sha1).to_string();
    assert_eq!(statuses[2]["successors"][0]["node_id"], id_f2, "port-suffixed IDs are contiguous: {}", statuses[2]);
    assert_eq!(statuses[3]["predecessor"]["node_id"], id_f1);
    let clients = [sc["node_id"].clone(), sd["node_id"].clone()];
    for s in &statuses {
        let known = s["successors"].as_array().into_iter().flatten().chain([&s["predecessor"]]);
        let fingers = s["fingers"].as_array().into_iter().flatten();
        for n in known.chain(fingers) {
            assert!(!clients.contains(&n["node_id"]), "a client on the ring: {s}");
        }
    }
}
