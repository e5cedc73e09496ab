//! Two sessions on a virtual network: host to host, and through a port-restricted cone NAT,
//! measuring how long the path takes in virtual time.
#![allow(clippy::disallowed_methods)] // one real reading as the virtual clock's epoch

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;

/// One-way latency of every link (sub-millisecond, as in the namespaces).
const LATENCY: Duration = Duration::from_micros(300);

struct Side {
    ice: Box<dyn IceSession>,
    /// The socket's address (the base).
    base: SocketAddr,
    /// The NAT in front of it: its public address, and the remotes it has sent to (a
    /// port-restricted cone: endpoint-independent mapping, address-and-port-dependent filtering).
    nat: Option<(SocketAddr, BTreeSet<SocketAddr>)>,
    selected: Option<(SocketAddr, SocketAddr, PathKind)>,
}

impl Side {
    fn new(now: Instant, seed: u64, base: &str, nat: Option<&str>) -> Side {
        Side::with(AgentKind::RtcIce, now, seed, base, nat)
    }

    fn with(kind: AgentKind, now: Instant, seed: u64, base: &str, nat: Option<&str>) -> Side {
        let base: SocketAddr = base.parse().unwrap();
        let mut ice = new_session(kind, now, seed, &IceTimers::default()).unwrap();
        ice.add_local(LocalCandidate { kind: CandidateKind::Host, addr: base, base }).unwrap();
        let nat = nat.map(|n| (n.parse::<SocketAddr>().unwrap(), BTreeSet::new()));
        if let Some((public, _)) = &nat {
            ice.add_local(LocalCandidate { kind: CandidateKind::Srflx, addr: *public, base }).unwrap();
        }
        Side { ice, base, nat, selected: None }
    }

    /// The address a packet from this side shows to the world.
    fn outside(&mut self, to: SocketAddr) -> SocketAddr {
        match &mut self.nat {
            Some((public, sent)) => {
                sent.insert(to);
                *public
            }
            None => self.base,
        }
    }

    /// Whether a packet from `from` to `to` gets in.
    fn admits(&self, from: SocketAddr, to: SocketAddr) -> bool {
        match &self.nat {
            Some((public, sent)) => to == *public && sent.contains(&from),
            None => to == self.base,
        }
    }
}

/// Runs both sides until both selected a pair or `limit` passed; returns when A selected.
fn connect(a: &mut Side, b: &mut Side, start: Instant, limit: Duration) -> Option<Duration> {
    let (ua, pa) = a.ice.credentials();
    let (ub, pb) = b.ice.credentials();
    let ca = a.ice.local_candidates();
    let cb = b.ice.local_candidates();
    a.ice.start(start, true, &ub, &pb, &cb).unwrap();
    b.ice.start(start, false, &ua, &pa, &ca).unwrap();
    let mut now = start;
    let mut wire: VecDeque<(Instant, bool, SocketAddr, SocketAddr, Vec<u8>)> = VecDeque::new();
    let mut a_at = None;
    while now - start < limit {
        for (to_b, side) in [(true, &mut *a), (false, &mut *b)] {
            while let Some(t) = side.ice.poll_transmit() {
                assert_eq!(t.local, side.base, "sent from the base");
                let from = side.outside(t.to);
                wire.push_back((now + LATENCY, to_b, from, t.to, t.bytes));
            }
            while let Some(ev) = side.ice.poll_event() {
                if let IceEvent::Selected { local, remote, path } = ev {
                    side.selected = Some((local, remote, path));
                }
            }
        }
        if a.selected.is_some() && a_at.is_none() {
            a_at = Some(now - start);
        }
        if a.selected.is_some() && b.selected.is_some() {
            return a_at;
        }
        let next_packet = wire.iter().map(|w| w.0).min();
        let next_timer = [a.ice.poll_timeout(), b.ice.poll_timeout()].into_iter().flatten().min();
        now = [next_packet, next_timer].into_iter().flatten().min().unwrap_or(now + Duration::from_millis(1)).max(now);
        let (due, later): (Vec<_>, Vec<_>) = wire.drain(..).partition(|w| w.0 <= now);
        wire.extend(later);
        for (_, to_b, from, to, bytes) in due {
            let side = if to_b { &mut *b } else { &mut *a };
            if side.admits(from, to) {
                let base = side.base;
                side.ice.handle_stun(now, base, from, &bytes);
            }
        }
        a.ice.handle_timeout(now);
        b.ice.handle_timeout(now);
    }
    None
}

#[test]
fn host_to_host_connects_within_a_few_check_intervals() {
    let t0 = Instant::now();
    let mut a = Side::new(t0, 1, "192.0.2.1:40000", None);
    let mut b = Side::new(t0, 2, "192.0.2.2:40000", None);
    let took = connect(&mut a, &mut b, t0, Duration::from_secs(2)).expect("connected");
    assert_eq!(a.selected.unwrap().2, PathKind::Host);
    assert_eq!(a.selected.unwrap().1, b.base);
    assert_eq!(b.selected.unwrap().1, a.base);
    assert!(took < Duration::from_millis(200), "{took:?}");
}

#[test]
fn behind_a_port_restricted_nat_the_srflx_path_forms() {
    let t0 = Instant::now();
    let mut a = Side::new(t0, 3, "10.0.0.2:40000", Some("203.0.113.7:40000"));
    let mut b = Side::new(t0, 4, "198.51.100.9:41000", None);
    let took = connect(&mut a, &mut b, t0, Duration::from_secs(2)).expect("connected");
    let (_, remote, path) = a.selected.unwrap();
    assert_eq!(remote, b.base);
    assert_eq!(path, PathKind::Srflx);
    // B sees A at its NAT's address (the srflx candidate, or a peer-reflexive one).
    assert_eq!(b.selected.unwrap().1, "203.0.113.7:40000".parse().unwrap());
    assert!(took < Duration::from_millis(200), "{took:?}");
}

#[test]
fn no_path_fails_and_stops_asking_for_time() {
    let t0 = Instant::now();
    let mut a = Side::new(t0, 5, "10.0.0.2:40000", Some("203.0.113.7:40000"));
    let mut b = Side::new(t0, 6, "10.1.0.2:40000", Some("203.0.113.8:40000"));
    // Both behind filtering NATs whose filters never open for the other (the "outside" of
    // each is reached only by what the test routes, and it routes nothing).
    a.nat.as_mut().unwrap().0 = "203.0.113.7:1".parse().unwrap();
    b.nat.as_mut().unwrap().0 = "203.0.113.8:1".parse().unwrap();
    assert_eq!(connect(&mut a, &mut b, t0, Duration::from_secs(3)), None);
    let mut failed = false;
    let mut now = t0 + Duration::from_secs(3);
    for _ in 0..2000 {
        a.ice.handle_timeout(now);
        while let Some(ev) = a.ice.poll_event() {
            failed |= ev == IceEvent::Failed;
        }
        match a.ice.poll_timeout() {
            Some(t) => now = t.max(now + Duration::from_millis(1)),
            None => break,
        }
    }
    assert!(failed, "no pair by the connect deadline: Failed");
    assert!(now - t0 >= IceTimers::default().connect_timeout);
    assert_eq!(a.ice.poll_timeout(), None, "a failed session asks for no more time");
    assert_eq!(a.ice.poll_transmit(), None);
}

#[test]
fn the_is_agent_connects_host_to_host_and_through_a_nat_too() {
    let t0 = Instant::now();
    let mut a = Side::with(AgentKind::Is, t0, 1, "192.0.2.1:40000", None);
    let mut b = Side::with(AgentKind::Is, t0, 2, "192.0.2.2:40000", None);
    let took = connect(&mut a, &mut b, t0, Duration::from_secs(2)).expect("connected");
    assert_eq!(a.selected.unwrap().2, PathKind::Host);
    assert!(took < Duration::from_millis(200), "{took:?}");
    let mut a = Side::with(AgentKind::Is, t0, 3, "10.0.0.2:40000", Some("203.0.113.7:40000"));
    let mut b = Side::with(AgentKind::Is, t0, 4, "198.51.100.9:41000", None);
    let took = connect(&mut a, &mut b, t0, Duration::from_secs(2)).expect("connected");
    assert_eq!(a.selected.unwrap().1, b.base);
    assert_eq!(b.selected.unwrap().1, "203.0.113.7:40000".parse().unwrap());
    assert!(took < Duration::from_millis(200), "{took:?}");
}

#[test]
fn the_relay_wait_follows_the_round_trip_within_bounds() {
    let ta = Duration::from_millis(20);
    assert_eq!(relay_wait(ta, None), ta * RELAY_ROUNDS);
    assert_eq!(relay_wait(ta, Some(Duration::from_millis(1))), Duration::from_millis(44));
    assert_eq!(relay_wait(ta, Some(Duration::from_millis(50))), Duration::from_millis(240));
    assert_eq!(relay_wait(ta, Some(Duration::from_secs(2))), Duration::from_millis(400), "capped");
}
