//! LAN discovery, sans-IO: what a node announces on its local network with mDNS/DNS-SD
//! (RFC 6762, RFC 6763) and how a node started without `--join` decides, from the
//! announcements it hears, whether to join peers of its overlay there or to start a ring of
//! its own. The daemon does the multicast (`daemon::node::mdns`, mdns-sd).
//!
//! The service is `_p2psip._udp.local.`; its TXT record carries the overlay's name
//! (`overlay`), the Node ID (`id`) and whether the node is on a ring yet (`ring`: `1`, or `0`
//! while it is still deciding or joining). An announcement is only a hint: one whose Node ID is
//! not the one its address and port derive (port-suffixed IDs) is ignored, and a join learns
//! the real ring from the nodes it asks, verified as every link is.
//!
//! The decision ([`LanJoin`]): listen for `window`; join every node of our overlay already on
//! a ring as soon as one is heard; hearing none by the window's end, start a ring, unless
//! others are deciding too: then the lowest Node ID starts it and the others wait for it to
//! announce `ring=1` (at most `patience`), so nodes switched on together form one ring.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::overlay::{IdHash, NodeId};

/// The DNS-SD service type of p2psip nodes.
pub const SERVICE_TYPE: &str = "_p2psip._udp.local.";
/// How long a node listens before deciding.
pub const WINDOW: Duration = Duration::from_secs(3);
/// How long a node that is not the lowest of several deciding ones waits for the lowest to
/// start the ring before it joins it anyway.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The TXT record of a node's announcement, as key-value pairs.
pub fn txt(overlay: &str, id: NodeId, on_ring: bool) -> Vec<(String, String)> {
    vec![
        ("overlay".to_owned(), overlay.to_owned()),
        ("id".to_owned(), id.to_string()),
        ("ring".to_owned(), if on_ring { "1" } else { "0" }.to_owned()),
    ]
}

/// A node heard on the LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heard {
    /// Its overlay address.
    pub addr: SocketAddr,
    /// Its Node ID, checked against `addr`.
    pub id: NodeId,
    /// Whether it is on a ring.
    pub on_ring: bool,
}

impl Heard {
    /// An announcement of `addrs` and `port` with TXT `properties`, if it is a node of
    /// `overlay` whose ID its address derives (the first address that does).
    pub fn from_announcement(
        overlay: &str,
        id_hash: IdHash,
        addrs: impl IntoIterator<Item = std::net::IpAddr>,
        port: u16,
        property: impl Fn(&str) -> Option<String>,
    ) -> Option<Heard> {
        if property("overlay")? != overlay {
            return None;
        }
        let id: NodeId = property("id")?.parse().ok()?;
        let on_ring = property("ring").as_deref() == Some("1");
        let ip = addrs.into_iter().find(|ip| NodeId::verify_claim(id, *ip, port, id_hash))?;
        Some(Heard { addr: SocketAddr::new(ip, port), id, on_ring })
    }
}

/// What the node should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Keep listening; decide again at this instant at the latest.
    Wait(Instant),
    /// Join the overlay through these nodes.
    Join(Vec<SocketAddr>),
    /// Nobody to join: this node is the ring.
    StartRing,
}

/// One node's decision, from its start until it joins or starts the ring.
#[derive(Debug)]
pub struct LanJoin {
    me: NodeId,
    started: Instant,
    heard: BTreeMap<NodeId, Heard>,
    done: bool,
}

impl LanJoin {
    /// A node with ID `me` starting to listen at `now`.
    pub fn new(me: NodeId, now: Instant) -> LanJoin {
        LanJoin { me, started: now, heard: BTreeMap::new(), done: false }
    }

    /// An announcement was heard (a later one of the same node replaces it).
    pub fn heard(&mut self, node: Heard) {
        if node.id != self.me {
            self.heard.insert(node.id, node);
        }
    }

    /// A node's announcement went away.
    pub fn gone(&mut self, id: NodeId) {
        self.heard.remove(&id);
    }

    /// How many nodes of our overlay have been heard.
    pub fn heard_count(&self) -> usize {
        self.heard.len()
    }

    /// Whether the decision has been taken.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The decision at `now`; once it is [`Decision::Join`] or [`Decision::StartRing`], it
    /// is final and later calls return [`Decision::StartRing`] with nothing to do.
    pub fn decide(&mut self, now: Instant) -> Decision {
        if self.done {
            return Decision::StartRing;
        }
        let on_ring: Vec<SocketAddr> = self.heard.values().filter(|h| h.on_ring).map(|h| h.addr).collect();
        if !on_ring.is_empty() {
            self.done = true;
            return Decision::Join(on_ring);
        }
        let window_end = self.started + WINDOW;
        if now < window_end {
            return Decision::Wait(window_end);
        }
        let lowest = self.heard.keys().next().copied();
        match lowest {
            None => {
                self.done = true;
                Decision::StartRing
            }
            Some(low) if self.me < low => {
                self.done = true;
                Decision::StartRing
            }
            Some(low) => {
                let give_up = window_end + PATIENCE;
                if now < give_up {
                    return Decision::Wait(give_up);
                }
                self.done = true;
                Decision::Join(self.heard.get(&low).map(|h| vec![h.addr]).unwrap_or_default())
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real reading as the virtual clock's epoch
mod tests {
    use super::*;

    fn node(ip: &str, port: u16, on_ring: bool) -> Heard {
        let ip = ip.parse().unwrap();
        Heard { addr: SocketAddr::new(ip, port), id: NodeId::from_addr(ip, port, IdHash::Sha1), on_ring }
    }

    #[test]
    fn an_announcement_counts_only_for_our_overlay_and_an_id_its_address_derives() {
        let me = node("192.0.2.1", 5070, true);
        let props = |overlay: &'static str, id: String| {
            move |k: &str| match k {
                "overlay" => Some(overlay.to_owned()),
                "id" => Some(id.clone()),
                "ring" => Some("1".to_owned()),
                _ => None,
            }
        };
        let ok = Heard::from_announcement(
            "p2p.test",
            IdHash::Sha1,
            [me.addr.ip()],
            5070,
            props("p2p.test", me.id.to_string()),
        );
        assert_eq!(ok, Some(me.clone()));
        let other_overlay =
            Heard::from_announcement("p2p.test", IdHash::Sha1, [me.addr.ip()], 5070, props("else", me.id.to_string()));
        assert_eq!(other_overlay, None);
        let forged = node("192.0.2.9", 5070, true).id.to_string();
        assert_eq!(
            Heard::from_announcement("p2p.test", IdHash::Sha1, [me.addr.ip()], 5070, props("p2p.test", forged)),
            None
        );
        let wrong_port = Heard::from_announcement(
            "p2p.test",
            IdHash::Sha1,
            [me.addr.ip()],
            5071,
            props("p2p.test", me.id.to_string()),
        );
        assert_eq!(wrong_port, None);
    }

    #[test]
    fn a_ring_heard_is_joined_at_once_and_silence_starts_a_ring() {
        let now = Instant::now();
        let me = node("192.0.2.1", 5070, false);
        let mut lan = LanJoin::new(me.id, now);
        assert_eq!(lan.decide(now), Decision::Wait(now + WINDOW));
        let ring = node("192.0.2.2", 5070, true);
        lan.heard(ring.clone());
        assert_eq!(lan.decide(now + Duration::from_millis(10)), Decision::Join(vec![ring.addr]));
        assert!(lan.is_done());

        let mut alone = LanJoin::new(me.id, now);
        assert_eq!(alone.decide(now + WINDOW), Decision::StartRing);
    }

    #[test]
    fn nodes_deciding_together_make_one_ring_around_the_lowest_id() {
        let now = Instant::now();
        let mut nodes: Vec<Heard> = (1..=3).map(|i| node(&format!("192.0.2.{i}"), 5070, false)).collect();
        nodes.sort_by_key(|n| n.id);
        let (low, high) = (nodes[0].clone(), nodes[2].clone());
        let mut lowest = LanJoin::new(low.id, now);
        let mut other = LanJoin::new(high.id, now);
        for n in &nodes {
            lowest.heard(n.clone());
            other.heard(n.clone());
        }
        assert_eq!(lowest.decide(now + WINDOW), Decision::StartRing);
        assert_eq!(other.decide(now + WINDOW), Decision::Wait(now + WINDOW + PATIENCE));
        // The lowest now announces itself on the ring: the other joins it.
        other.heard(Heard { on_ring: true, ..low.clone() });
        assert_eq!(other.decide(now + WINDOW + Duration::from_secs(1)), Decision::Join(vec![low.addr]));
        // Had it never announced, the other would have joined it after its patience.
        let mut patient = LanJoin::new(high.id, now);
        patient.heard(low.clone());
        assert_eq!(patient.decide(now + WINDOW + PATIENCE), Decision::Join(vec![low.addr]));
    }
}
