//! LAN discovery (issue 16, item 4): nodes on one bridge find each other with mDNS/DNS-SD
//! (`_p2psip._udp.local`) and form one ring with no `--join`; a node of another overlay, and a
//! node started with `--no-mdns`, keep to themselves.
//!
//! Four hosts in network namespaces on one bridge (the LAN, built and removed by the test;
//! needs root, as the NAT tests do): A and B of overlay `p2p.test`, C of `other.test`, D of
//! `p2p.test` with `--no-mdns`. A, started first, hears nobody and starts the ring; B, started
//! next, hears A on a ring and joins it; C hears them but not its overlay and starts its own;
//! D announces nothing and stays alone. Three more nodes switched on together make one ring
//! around the lowest Node ID.

use std::net::SocketAddr;

use crate::common::netns::{NsNode, Topology, INET};

#[test]
fn nodes_on_one_lan_find_each_other_by_mdns_and_form_one_ring() {
    let mut t = Topology::new("l");
    // A plain switch: multicast to every port (no IGMP querier on this LAN to snoop).
    t.exec("inet", &["ip", "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"]);
    let addr = |last: u8| -> SocketAddr { format!("{INET}.{last}:5070").parse().expect("address") };
    for (name, last) in [("lan1", 31), ("lan2", 32), ("lan3", 33), ("lan4", 34)] {
        t.host(name, addr(last).ip());
    }

    let a = NsNode::start(&t, "lan1", addr(31), 5060, &[]);
    a.wait_status(&t, "A starts the ring after hearing nobody", |s| {
        s["mdns"]["deciding"] == false && s["mdns"]["on_ring"] == true && s["overlay"]["state"] == "alone"
    });
    assert!(a.log().contains("this node starts the ring"), "{}", a.log());

    let b = NsNode::start(&t, "lan2", addr(32), 5060, &[]);
    let joined = b.wait_status(&t, "B joins A, heard on the LAN", |s| s["overlay"]["state"] == "joined");
    assert!(b.log().contains("found on the local network"), "{}", b.log());
    assert_eq!(joined["successors"][0]["addr"], addr(31).to_string(), "{joined}");
    a.wait_status(&t, "A has B as its successor", |s| s["successors"][0]["addr"] == addr(32).to_string());

    // Another overlay on the same LAN: heard, not joined.
    let c = NsNode::start(&t, "lan3", addr(33), 5060, &["--overlay", "other.test"]);
    c.wait_status(&t, "C starts a ring of its own", |s| {
        s["mdns"]["deciding"] == false && s["overlay"]["state"] == "alone"
    });
    assert!(c.log().contains("this node starts the ring"), "{}", c.log());

    // --no-mdns: alone at once, nothing announced or asked.
    let d = NsNode::start(&t, "lan4", addr(34), 5060, &["--no-mdns"]);
    let status = d.status(&t).expect("D's status");
    assert_eq!(status["overlay"]["state"], "alone");
    assert!(status["mdns"].is_null(), "{status}");
    assert!(!d.log().contains("mDNS"), "{}", d.log());

    // Neither C nor D ever reached A's ring.
    let ring = a.status(&t).expect("A's status");
    let known: Vec<&str> =
        ring["successors"].as_array().into_iter().flatten().filter_map(|n| n["addr"].as_str()).collect();
    assert_eq!(known, vec![addr(32).to_string().as_str()], "{ring}");
    drop((a, b, c, d));
}

/// Three nodes switched on together, none on a ring yet: the lowest Node ID starts the ring
/// and the other two join it, so the LAN has one ring, not three.
#[test]
fn nodes_switched_on_together_make_one_ring() {
    let mut t = Topology::new("s");
    t.exec("inet", &["ip", "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"]);
    let addr = |last: u8| -> SocketAddr { format!("{INET}.{last}:5070").parse().expect("address") };
    let names = [("sw1", 41), ("sw2", 42), ("sw3", 43)];
    for (name, last) in names {
        t.host(name, addr(last).ip());
    }
    // Started at once, from three threads: all three listen within each other's 3-second window.
    let t = &t;
    let nodes: Vec<NsNode> = std::thread::scope(|scope| {
        let starting: Vec<_> = names
            .iter()
            .map(|(name, last)| scope.spawn(move || NsNode::start(t, name, addr(*last), 5060, &[])))
            .collect();
        starting.into_iter().map(|h| h.join().expect("node started")).collect()
    });
    for n in &nodes {
        n.wait_status(t, "on one ring of three", |s| {
            s["overlay"]["state"] == "joined" && s["successors"].as_array().is_some_and(|l| l.len() == 2)
        });
    }
    let lowest = names
        .iter()
        .map(|(_, last)| addr(*last))
        .min_by_key(|a| p2psip::overlay::NodeId::from_addr(a.ip(), a.port(), p2psip::overlay::IdHash::Sha1))
        .expect("three nodes");
    let started: Vec<String> =
        nodes.iter().filter(|n| n.log().contains("this node starts the ring")).map(|n| n.listen.to_string()).collect();
    assert_eq!(started, vec![lowest.to_string()], "only the lowest ID starts the ring");
}
