//! Address discovery (RFC 8489 §6.2, RFC 5780 §4.3 in part): the node asks each configured
//! STUN server, from its overlay socket, which address its requests come from, and compares
//! the answers with its own address and with each other.
//!
//! - The same address as the local one: no NAT (`none`).
//! - The same mapped address from every server: `endpoint-independent` mapping, the kind a
//!   dial-back can then show to be reachable.
//! - Different mapped addresses from servers on different addresses: the mapping depends at
//!   least on the destination address (`address-dependent`). Telling it from
//!   `address-and-port-dependent` takes RFC 5780's test with the server's other port.
//! - One answer only: `unknown`.
//!
//! When a server names its other address (RFC 5780's OTHER-ADDRESS), the behaviour tests of
//! RFC 5780 §4.3 and §4.4 follow, from the same socket: first filtering (test II: answer from
//! the other address and port; test III: from the other port only), then mapping (test II: ask
//! the other address; test III: its other port), in that order because asking the other
//! address first would open the NAT's filter to it. That tells `address-dependent` from
//! `address-and-port-dependent`, and gives the filtering.
//!
//! Requests are retransmitted as RFC 8489 §6.2.1 says for UDP, from an RTO of 500 ms doubling,
//! with fewer tries than its seven (a check repeats anyway). Every server is asked again every
//! `recheck_interval`, since laptops move between networks. Sans-IO: the caller sends what
//! [`Discovery::poll_transmit`] returns from the overlay socket and hands back the answers.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::stun::{binding_request, binding_request_changing, StunTransactionId};

/// The first retransmission timeout (RFC 8489 §6.2.1's recommended RTO).
const RTO: Duration = Duration::from_millis(500);
/// Requests per check and server: 0, 0.5, 1.5 and 3.5 s, answered by 7.5 s or given up.
const TRIES: u32 = 4;

/// How the node's address looks from outside, as `/status` shows it (`"nat"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NatStatus {
    /// The overlay socket's own address.
    pub local: SocketAddr,
    /// The address STUN servers saw, once one answered.
    pub mapped: Option<SocketAddr>,
    /// `none`, `endpoint-independent`, `address-dependent`, `address-and-port-dependent` or
    /// `unknown`.
    pub mapping: &'static str,
    /// The NAT's filtering (RFC 5780 §4.4): `unknown` until it is tested.
    pub filtering: &'static str,
    /// Whether a dial-back reached the node: `null` until one was tried.
    pub reachable: Option<bool>,
    /// When the last check finished, in seconds since the node started (its uptime then).
    pub checked_at: Option<u64>,
}

/// What a request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Test {
    /// Test I: our address, as the server sees it.
    Plain,
    /// Filtering test II: answered from the other address and port.
    FilterOther,
    /// Filtering test III: answered from the other port.
    FilterPort,
    /// Mapping test II: asked at the other address (primary port).
    MapOtherAddress,
    /// Mapping test III: asked at the other address and port.
    MapOtherBoth,
}

/// One request in flight.
#[derive(Debug, Clone)]
struct Probe {
    /// Where it goes.
    server: SocketAddr,
    /// Where its answer must come from.
    answer_from: SocketAddr,
    test: Test,
    /// The request's bytes, resent as they are.
    bytes: Vec<u8>,
    tries: u32,
    next_at: Instant,
}

/// RFC 5780's tests with one server that has another address, in the current check.
#[derive(Debug, Clone)]
struct Behaviour {
    primary: SocketAddr,
    other: SocketAddr,
    /// Test I's mapped address.
    x1: SocketAddr,
    filter_other: Option<bool>,
    filter_port: Option<bool>,
    x2: Option<SocketAddr>,
    x3: Option<SocketAddr>,
    /// The mapping tests were sent (after the filtering tests ended).
    mapping_sent: bool,
}

/// The address discovery of one node.
#[derive(Debug)]
pub struct Discovery {
    servers: Vec<SocketAddr>,
    local: SocketAddr,
    started: Instant,
    recheck_interval: Duration,
    next_check_at: Instant,
    probes: BTreeMap<StunTransactionId, Probe>,
    /// A check is running: its verdict comes when its last request is answered or given up.
    checking: bool,
    /// The answer of each server in the current check.
    answers: BTreeMap<SocketAddr, SocketAddr>,
    /// RFC 5780's tests in the current check, once a server named its other address.
    behaviour: Option<Behaviour>,
    /// The verdict of the last finished check.
    status: NatStatus,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
}

impl Discovery {
    /// Checks through `servers` from the overlay address `local`: first at `now`, then every
    /// `recheck_interval`.
    pub fn new(servers: Vec<SocketAddr>, local: SocketAddr, now: Instant, recheck_interval: Duration) -> Discovery {
        Discovery {
            servers,
            local,
            started: now,
            recheck_interval,
            next_check_at: now,
            probes: BTreeMap::new(),
            checking: false,
            answers: BTreeMap::new(),
            behaviour: None,
            status: NatStatus {
                local,
                mapped: None,
                mapping: "unknown",
                filtering: "unknown",
                reachable: None,
                checked_at: None,
            },
            out: VecDeque::new(),
        }
    }

    /// What the last finished check found.
    pub fn status(&self) -> &NatStatus {
        &self.status
    }

    /// Whether `id` is one of our requests.
    pub fn owns(&self, id: &StunTransactionId) -> bool {
        self.probes.contains_key(id)
    }

    /// Starts a check when one is due, and retransmits or gives up the requests in flight.
    /// `new_id` draws a fresh transaction ID (from the node's seeded generator).
    pub fn handle_timeout(&mut self, now: Instant, mut new_id: impl FnMut() -> StunTransactionId) {
        if now >= self.next_check_at && !self.checking && !self.servers.is_empty() {
            self.next_check_at = now + self.recheck_interval;
            self.checking = true;
            self.answers.clear();
            self.behaviour = None;
            for server in self.servers.clone() {
                let id = new_id();
                self.send(now, id, server, server, Test::Plain, binding_request(id));
            }
        }
        let due: Vec<StunTransactionId> =
            self.probes.iter().filter(|(_, p)| p.next_at <= now).map(|(id, _)| *id).collect();
        for id in due {
            let Some(probe) = self.probes.get_mut(&id) else { continue };
            if probe.tries >= TRIES {
                let test = probe.test;
                self.probes.remove(&id);
                if let Some(b) = self.behaviour.as_mut() {
                    // No answer to a filtering test is its result: the NAT filtered it.
                    match test {
                        Test::FilterOther => b.filter_other = Some(false),
                        Test::FilterPort => b.filter_port = Some(false),
                        _ => {}
                    }
                }
                continue;
            }
            probe.tries += 1;
            probe.next_at = now + RTO * (1 << (probe.tries - 1));
            self.out.push_back((probe.server, probe.bytes.clone()));
        }
        self.next_tests(now, &mut new_id);
        if self.checking && self.probes.is_empty() {
            self.conclude(now);
        }
    }

    fn send(
        &mut self,
        now: Instant,
        id: StunTransactionId,
        server: SocketAddr,
        answer_from: SocketAddr,
        test: Test,
        bytes: Vec<u8>,
    ) {
        self.out.push_back((server, bytes.clone()));
        self.probes.insert(id, Probe { server, answer_from, test, bytes, tries: 1, next_at: now + RTO });
    }

    /// RFC 5780's next tests, when their turn has come: the mapping tests once both filtering
    /// tests have ended.
    fn next_tests(&mut self, now: Instant, new_id: &mut impl FnMut() -> StunTransactionId) {
        let Some(b) = self.behaviour.as_mut() else { return };
        if b.mapping_sent || b.filter_other.is_none() || b.filter_port.is_none() {
            return;
        }
        b.mapping_sent = true;
        let (other_address, other_both) = (SocketAddr::new(b.other.ip(), b.primary.port()), b.other);
        let id = new_id();
        self.send(now, id, other_address, other_address, Test::MapOtherAddress, binding_request(id));
        let id = new_id();
        self.send(now, id, other_both, other_both, Test::MapOtherBoth, binding_request(id));
    }

    /// An answer to request `id` from `from`: the server saw us at `mapped`, and names its
    /// other address `other` if it has one. `new_id` draws IDs for the tests it starts.
    pub fn handle_answer(
        &mut self,
        now: Instant,
        id: StunTransactionId,
        from: SocketAddr,
        answer: (SocketAddr, Option<SocketAddr>),
        mut new_id: impl FnMut() -> StunTransactionId,
    ) {
        let (mapped, other) = answer;
        let Some(probe) = self.probes.get(&id) else { return };
        // Only the address asked for may answer (RFC 8489 §6.3.3 matches by transaction ID;
        // the source check keeps a spoofed answer from steering the verdict, and is what the
        // filtering tests test).
        if probe.answer_from != from {
            return;
        }
        let (test, server) = (probe.test, probe.server);
        self.probes.remove(&id);
        match (test, self.behaviour.as_mut()) {
            (Test::Plain, _) => {
                self.answers.insert(server, mapped);
                if let (None, Some(other)) = (&self.behaviour, other.filter(|o| o.ip() != server.ip())) {
                    self.behaviour = Some(Behaviour {
                        primary: server,
                        other,
                        x1: mapped,
                        filter_other: None,
                        filter_port: None,
                        x2: None,
                        x3: None,
                        mapping_sent: false,
                    });
                    let id = new_id();
                    let request = binding_request_changing(id, true, true);
                    self.send(now, id, server, other, Test::FilterOther, request);
                    let id = new_id();
                    let request = binding_request_changing(id, false, true);
                    self.send(now, id, server, SocketAddr::new(server.ip(), other.port()), Test::FilterPort, request);
                }
            }
            (Test::FilterOther, Some(b)) => b.filter_other = Some(true),
            (Test::FilterPort, Some(b)) => b.filter_port = Some(true),
            (Test::MapOtherAddress, Some(b)) => b.x2 = Some(mapped),
            (Test::MapOtherBoth, Some(b)) => b.x3 = Some(mapped),
            (_, None) => {}
        }
        self.next_tests(now, &mut new_id);
        if self.checking && self.probes.is_empty() {
            self.conclude(now);
        }
    }

    /// The verdict from this check's answers (no answer at all: nothing is known).
    fn conclude(&mut self, now: Instant) {
        self.checking = false;
        self.status.checked_at = Some(now.saturating_duration_since(self.started).as_secs());
        let mapped: Vec<SocketAddr> = std::mem::take(&mut self.answers).into_values().collect();
        let Some(&first) = mapped.first() else {
            self.status.mapped = None;
            self.status.mapping = "unknown";
            return;
        };
        self.status.mapped = Some(first);
        self.status.mapping = if mapped.iter().all(|m| *m == self.local) {
            "none"
        } else if mapped.len() < 2 {
            "unknown"
        } else if mapped.iter().all(|m| *m == first) {
            "endpoint-independent"
        } else {
            "address-dependent"
        };
        self.status.filtering = "unknown";
        if let Some(b) = self.behaviour.take() {
            // RFC 5780 §4.3: the mapping seen from the other address, and from its other port.
            self.status.mapping = match (b.x2, b.x3) {
                _ if b.x1 == self.local => "none",
                (Some(x2), _) if x2 == b.x1 => "endpoint-independent",
                (Some(x2), Some(x3)) if x3 == x2 => "address-dependent",
                (Some(_), Some(_)) => "address-and-port-dependent",
                _ => self.status.mapping,
            };
            // §4.4: which answers from elsewhere the NAT let through.
            self.status.filtering = match (b.filter_other, b.filter_port) {
                (Some(true), _) if b.x1 == self.local => "none",
                (Some(true), _) => "endpoint-independent",
                (Some(false), Some(true)) => "address-dependent",
                (Some(false), Some(false)) => "address-and-port-dependent",
                _ => "unknown",
            };
        }
    }

    /// The next request to send from the overlay socket, and to which server.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.out.pop_front()
    }

    /// When [`Discovery::handle_timeout`] is next needed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retransmit = self.probes.values().map(|p| p.next_at).min();
        let check = (!self.servers.is_empty() && !self.checking).then_some(self.next_check_at);
        [retransmit, check].into_iter().flatten().min()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // one real reading as the virtual clock's epoch

    use super::*;
    use crate::nat::stun::{parse, StunMessage};

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Runs one check: every request sent is answered by its server with `mapped_by(server)`.
    fn check(d: &mut Discovery, now: Instant, mapped_by: impl Fn(SocketAddr) -> Option<SocketAddr>) {
        let mut n = 0u8;
        d.handle_timeout(now, || {
            n += 1;
            [n; 12]
        });
        while let Some((server, bytes)) = d.poll_transmit() {
            let Some(StunMessage::BindingRequest { id, .. }) = parse(&bytes) else { panic!("a Binding request") };
            if let Some(mapped) = mapped_by(server) {
                d.handle_answer(now, id, server, (mapped, None), || [0xaa; 12]);
            }
        }
    }

    #[test]
    fn answers_tell_no_nat_a_cone_and_a_symmetric_mapping_apart() {
        let now = Instant::now();
        let (s1, s2) = (addr("198.51.100.1:3478"), addr("198.51.100.2:3478"));
        let local = addr("10.0.0.5:5070");
        let cases: [(&str, SocketAddr, SocketAddr); 3] = [
            ("none", local, local),
            ("endpoint-independent", addr("203.0.113.9:40000"), addr("203.0.113.9:40000")),
            ("address-dependent", addr("203.0.113.9:40000"), addr("203.0.113.9:40001")),
        ];
        for (want, m1, m2) in cases {
            let mut d = Discovery::new(vec![s1, s2], local, now, Duration::from_secs(300));
            check(&mut d, now, |s| Some(if s == s1 { m1 } else { m2 }));
            assert_eq!(d.status().mapping, want);
            assert_eq!(d.status().mapped, Some(m1));
            assert_eq!(d.status().checked_at, Some(0));
        }
    }

    #[test]
    fn a_silent_server_is_retried_then_given_up_and_one_answer_is_not_a_verdict() {
        let t0 = Instant::now();
        let (s1, s2) = (addr("198.51.100.1:3478"), addr("198.51.100.2:3478"));
        let mut d = Discovery::new(vec![s1, s2], addr("10.0.0.5:5070"), t0, Duration::from_secs(300));
        check(&mut d, t0, |s| (s == s1).then(|| addr("203.0.113.9:40000")));
        let mut sent = 0;
        let mut now = t0;
        while let Some(at) = d.poll_timeout().filter(|at| *at < t0 + Duration::from_secs(60)) {
            now = at;
            d.handle_timeout(now, || [0xee; 12]);
            while d.poll_transmit().is_some() {
                sent += 1;
            }
        }
        assert_eq!(sent, TRIES - 1, "retransmissions to the silent server");
        assert_eq!(d.status().mapping, "unknown");
        assert_eq!(d.status().mapped, Some(addr("203.0.113.9:40000")));
        assert!(now - t0 < Duration::from_secs(8), "given up after {:?}", now - t0);
        // The next check comes after the recheck interval.
        assert_eq!(d.poll_timeout(), Some(t0 + Duration::from_secs(300)));
    }

    #[test]
    fn an_answer_from_elsewhere_is_ignored() {
        let now = Instant::now();
        let s1 = addr("198.51.100.1:3478");
        let mut d = Discovery::new(vec![s1], addr("10.0.0.5:5070"), now, Duration::from_secs(300));
        d.handle_timeout(now, || [1; 12]);
        d.poll_transmit();
        d.handle_answer(now, [1; 12], addr("192.0.2.66:3478"), (addr("192.0.2.66:1"), None), || [2; 12]);
        assert!(d.owns(&[1; 12]));
        assert_eq!(d.status().mapped, None);
    }

    /// How a modelled NAT maps and filters: by nothing, by the remote address, or by address
    /// and port.
    #[derive(Clone, Copy)]
    enum Dep {
        None,
        Address,
        AddressAndPort,
    }

    /// Runs whole checks against one RFC 5780 server (primary 198.51.100.1:3478, other
    /// 198.51.100.2:3479) behind a NAT that maps by `mapping` and filters by `filtering`.
    fn behind(mapping: Dep, filtering: Dep) -> NatStatus {
        let t0 = Instant::now();
        let (primary, other) = (addr("198.51.100.1:3478"), addr("198.51.100.2:3479"));
        let mut d = Discovery::new(vec![primary], addr("10.0.0.5:5070"), t0, Duration::from_secs(300));
        let mapped_toward = |dst: SocketAddr| -> SocketAddr {
            let port = match mapping {
                Dep::None => 40000,
                Dep::Address => 40000 + u16::from(dst.ip() != primary.ip()),
                Dep::AddressAndPort => 40000 + u16::from(dst.ip() != primary.ip()) * 2 + u16::from(dst.port() != 3478),
            };
            SocketAddr::new("203.0.113.9".parse().unwrap(), port)
        };
        let mut sent_to = std::collections::BTreeSet::new();
        let mut n = 0u8;
        let mut now = t0;
        d.handle_timeout(now, || {
            n += 1;
            [n; 12]
        });
        loop {
            while let Some((dst, bytes)) = d.poll_transmit() {
                sent_to.insert(dst);
                let Some(StunMessage::BindingRequest { id, change, .. }) = parse(&bytes) else { panic!("a request") };
                // CHANGE-REQUEST's flags sit in the one attribute before FINGERPRINT.
                let flags = if change { bytes[27] } else { 0 };
                let source = match (flags & 4 != 0, flags & 2 != 0) {
                    (true, true) => other,
                    (false, true) => SocketAddr::new(dst.ip(), other.port()),
                    _ => dst,
                };
                let let_through = match filtering {
                    Dep::None => true,
                    Dep::Address => sent_to.iter().any(|s| s.ip() == source.ip()),
                    Dep::AddressAndPort => sent_to.contains(&source),
                };
                if let_through {
                    let answer = (mapped_toward(dst), Some(other));
                    d.handle_answer(now, id, source, answer, || {
                        n += 1;
                        [n; 12]
                    });
                }
            }
            match d.poll_timeout().filter(|at| *at < t0 + Duration::from_secs(60)) {
                Some(at) => {
                    now = at;
                    d.handle_timeout(now, || {
                        n += 1;
                        [n; 12]
                    });
                }
                None => return d.status().clone(),
            }
        }
    }

    #[test]
    fn rfc_5780_tests_tell_mapping_and_filtering_apart() {
        let cases = [
            (Dep::None, Dep::None, "endpoint-independent", "endpoint-independent"),
            (Dep::None, Dep::Address, "endpoint-independent", "address-dependent"),
            (Dep::None, Dep::AddressAndPort, "endpoint-independent", "address-and-port-dependent"),
            (Dep::Address, Dep::AddressAndPort, "address-dependent", "address-and-port-dependent"),
            (Dep::AddressAndPort, Dep::AddressAndPort, "address-and-port-dependent", "address-and-port-dependent"),
        ];
        for (mapping, filtering, want_mapping, want_filtering) in cases {
            let status = behind(mapping, filtering);
            assert_eq!((status.mapping, status.filtering), (want_mapping, want_filtering));
            assert_eq!(status.mapped, Some(addr("203.0.113.9:40000")));
        }
    }
}
