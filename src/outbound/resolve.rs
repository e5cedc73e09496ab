//! RFC 3263 §4: which transport, address and port a SIP URI of another domain is reached at,
//! sans-IO. [`Resolution`] asks for DNS records one query at a time ([`Resolution::next_query`])
//! and is handed each answer ([`Resolution::answer`]); the driver (the daemon, with
//! hickory-resolver) does the asking. The result is the ordered list of targets to try
//! (§4.3: the next one when a target does not answer or answers 503).
//!
//! Only UDP and TCP are offered: a `sips:` URI, or a domain that offers SIP only over TLS, has
//! no target here.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::Target;
use crate::sip::uri::{Host, SipUri};
use crate::transport::Transport;

/// SIP's default port (RFC 3261 §19.1.2).
pub const SIP_PORT: u16 = 5060;
/// Queries one resolution may make: NAPTR, an SRV per transport, and addresses for a few SRV
/// targets. A hostile zone with hundreds of SRV targets costs no more than this.
const MAX_QUERIES: usize = 12;
/// Targets one resolution returns at most.
const MAX_TARGETS: usize = 8;

/// A DNS question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// NAPTR records of the domain (§4.1).
    Naptr(String),
    /// SRV records of `_sip._udp.<domain>` or the name a NAPTR record gave (§4.1, §4.2).
    Srv(String),
    /// A and AAAA records of a host (§4.2).
    Address(String),
}

/// One NAPTR record, as much of it as SIP uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naptr {
    /// Order: lower first; only the lowest order with a usable record counts.
    pub order: u16,
    /// Preference among records of one order: lower first.
    pub preference: u16,
    /// Flags; SIP's records carry `s` (an SRV name follows).
    pub flags: String,
    /// The service: `SIP+D2U`, `SIP+D2T`, `SIPS+D2T` (RFC 3263 §4.1).
    pub services: String,
    /// The SRV name to ask next.
    pub replacement: String,
}

/// One SRV record (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    /// Lower first.
    pub priority: u16,
    /// Share among records of one priority.
    pub weight: u16,
    /// The port.
    pub port: u16,
    /// The host; `.` means the service is not offered there.
    pub target: String,
}

/// What a query found (an empty list for none, or a failed query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// For [`Query::Naptr`].
    Naptr(Vec<Naptr>),
    /// For [`Query::Srv`].
    Srv(Vec<Srv>),
    /// For [`Query::Address`].
    Address(Vec<IpAddr>),
}

/// Why a URI has no target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// `sips:` asks for TLS, which this node does not speak toward other domains.
    #[error("sips: needs TLS, which p2psip does not offer toward other domains")]
    NeedsTls,
    /// A `transport` parameter other than UDP or TCP.
    #[error("transport {0} is not offered")]
    Transport(String),
    /// DNS named no address for the domain.
    #[error("no SIP server found for {0} in DNS")]
    NotFound(String),
}

/// What a pending query is for.
#[derive(Debug, Clone)]
enum Pending {
    Naptr,
    /// SRV records for this transport.
    Srv(Transport),
    /// Addresses of a host, used with this port and transport.
    Address(u16, Transport),
}

/// One URI's resolution in progress.
#[derive(Debug)]
pub struct Resolution {
    domain: String,
    queue: VecDeque<(Query, Pending)>,
    /// The query handed out and not yet answered.
    asked: Option<(Query, Pending)>,
    /// When nothing else names a server: the domain's own addresses with this transport, port
    /// 5060 (§4.2, the last paragraph).
    fallback: Option<Transport>,
    queries: usize,
    targets: Vec<Target>,
    rng: ChaCha8Rng,
    error: Option<ResolveError>,
}

impl Resolution {
    /// The resolution of `uri` (its `maddr`, else its host); `seed` orders SRV records of
    /// equal priority by weight (RFC 2782).
    pub fn new(uri: &SipUri, seed: u64) -> Resolution {
        let mut r = Resolution {
            domain: String::new(),
            queue: VecDeque::new(),
            asked: None,
            fallback: None,
            queries: 0,
            targets: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            error: None,
        };
        if uri.secure {
            r.error = Some(ResolveError::NeedsTls);
            return r;
        }
        let transport = match uri.transport().as_deref() {
            None => None,
            Some("udp") => Some(Transport::Udp),
            Some("tcp") => Some(Transport::Tcp),
            Some(other) => {
                r.error = Some(ResolveError::Transport(other.to_owned()));
                return r;
            }
        };
        let maddr = uri
            .param("maddr")
            .and_then(|p| p.value.as_deref())
            .map(|m| m.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase());
        let host = match (&maddr, &uri.host) {
            (Some(m), _) => m.clone(),
            (None, Host::Domain(d)) => d.trim_end_matches('.').to_ascii_lowercase(),
            (None, Host::Ipv4(ip)) => ip.to_string(),
            (None, Host::Ipv6(ip)) => ip.to_string(),
        };
        r.domain = host.clone();
        // §4.1: a numeric host or an explicit port: UDP unless the URI says; §4.2: no SRV then.
        if let Ok(ip) = host.parse::<IpAddr>() {
            let transport = transport.unwrap_or(Transport::Udp);
            r.targets.push(Target { transport, addr: SocketAddr::new(ip, uri.port.unwrap_or(SIP_PORT)) });
            return r;
        }
        match (uri.port, transport) {
            (Some(port), t) => r.push(Query::Address(host), Pending::Address(port, t.unwrap_or(Transport::Udp))),
            (None, Some(t)) => {
                r.push(Query::Srv(srv_name(t, &host)), Pending::Srv(t));
                r.fallback = Some(t);
            }
            (None, None) => r.push(Query::Naptr(host), Pending::Naptr),
        }
        r
    }

    fn push(&mut self, query: Query, pending: Pending) {
        self.queue.push_back((query, pending));
    }

    /// The next DNS question, or `None` when the resolution is over ([`Resolution::result`]).
    pub fn next_query(&mut self) -> Option<Query> {
        if self.asked.is_some() || self.error.is_some() || self.targets.len() >= MAX_TARGETS {
            return None;
        }
        if self.queue.is_empty() && self.targets.is_empty() {
            if let Some(t) = self.fallback.take() {
                let host = self.domain.clone();
                self.push(Query::Address(host), Pending::Address(SIP_PORT, t));
            }
        }
        if self.queries >= MAX_QUERIES {
            return None;
        }
        let (query, pending) = self.queue.pop_front()?;
        self.queries += 1;
        self.asked = Some((query.clone(), pending));
        Some(query)
    }

    /// The answer to the question [`Resolution::next_query`] gave last. An answer to any
    /// other question, or of the wrong kind, counts as finding nothing.
    pub fn answer(&mut self, query: &Query, answer: Answer) {
        let Some((asked, pending)) = self.asked.take() else { return };
        if asked != *query {
            return;
        }
        match (pending, answer) {
            (Pending::Naptr, Answer::Naptr(records)) => self.on_naptr(records),
            (Pending::Naptr, _) => self.on_naptr(Vec::new()),
            (Pending::Srv(t), Answer::Srv(records)) => self.on_srv(t, records),
            (Pending::Srv(_), _) => {}
            (Pending::Address(port, t), Answer::Address(ips)) => {
                for ip in ips {
                    let target = Target { transport: t, addr: SocketAddr::new(ip, port) };
                    if !self.targets.contains(&target) && self.targets.len() < MAX_TARGETS {
                        self.targets.push(target);
                    }
                }
            }
            (Pending::Address(..), _) => {}
        }
    }

    /// §4.1: the lowest order's SIP services we speak, by preference; without any, SRV for
    /// each transport we speak, UDP first, and then the domain's addresses.
    fn on_naptr(&mut self, mut records: Vec<Naptr>) {
        records.retain(|r| r.flags.eq_ignore_ascii_case("s") && service_transport(&r.services).is_some());
        records.sort_by_key(|r| (r.order, r.preference));
        if let Some(first) = records.first().map(|r| r.order) {
            for r in records.iter().filter(|r| r.order == first) {
                let t = service_transport(&r.services).unwrap_or(Transport::Udp);
                let name = r.replacement.trim_end_matches('.').to_ascii_lowercase();
                self.push(Query::Srv(name), Pending::Srv(t));
            }
            return;
        }
        for t in [Transport::Udp, Transport::Tcp] {
            let name = srv_name(t, &self.domain);
            self.push(Query::Srv(name), Pending::Srv(t));
        }
        self.fallback = Some(Transport::Udp);
    }

    /// RFC 2782: by priority, and within one priority a weighted random order.
    fn on_srv(&mut self, transport: Transport, mut records: Vec<Srv>) {
        // A lone "." says the service is decidedly not offered here.
        records.retain(|r| !r.target.trim_end_matches('.').is_empty());
        records.sort_by_key(|r| r.priority);
        let mut ordered = Vec::with_capacity(records.len());
        while !records.is_empty() {
            let priority = records[0].priority;
            let end = records.iter().position(|r| r.priority != priority).unwrap_or(records.len());
            let mut group: Vec<Srv> = records.drain(..end).collect();
            while !group.is_empty() {
                let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
                let pick = if total == 0 {
                    0
                } else {
                    let mut point = self.rng.random_range(0..=total);
                    group
                        .iter()
                        .position(|r| {
                            let w = u32::from(r.weight);
                            if point <= w {
                                true
                            } else {
                                point -= w;
                                false
                            }
                        })
                        .unwrap_or(0)
                };
                ordered.push(group.remove(pick));
            }
        }
        for r in ordered {
            let host = r.target.trim_end_matches('.').to_ascii_lowercase();
            self.push(Query::Address(host), Pending::Address(r.port, transport));
        }
    }

    /// The targets to try, in order, once [`Resolution::next_query`] has returned `None`.
    pub fn result(self) -> Result<Vec<Target>, ResolveError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.targets.is_empty() {
            return Err(ResolveError::NotFound(self.domain));
        }
        Ok(self.targets)
    }
}

/// `_sip._udp.<domain>` or `_sip._tcp.<domain>`.
fn srv_name(t: Transport, domain: &str) -> String {
    format!("_sip._{}.{domain}", t.as_str())
}

/// The transport of a NAPTR service we speak (§4.1: `SIP+D2U`, `SIP+D2T`).
fn service_transport(services: &str) -> Option<Transport> {
    match services.to_ascii_uppercase().as_str() {
        "SIP+D2U" => Some(Transport::Udp),
        "SIP+D2T" => Some(Transport::Tcp),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::uri::Uri;

    fn sip(text: &str) -> SipUri {
        match Uri::parse(text) {
            Some(Uri::Sip(s)) => s,
            other => panic!("{text}: {other:?}"),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Runs a resolution against a table of answers; questions not in it find nothing.
    fn run(uri: &str, zone: &[(Query, Answer)]) -> (Vec<Query>, Result<Vec<Target>, ResolveError>) {
        let mut r = Resolution::new(&sip(uri), 7);
        let mut asked = Vec::new();
        while let Some(q) = r.next_query() {
            let answer = zone.iter().find(|(k, _)| *k == q).map(|(_, a)| a.clone()).unwrap_or(match &q {
                Query::Naptr(_) => Answer::Naptr(Vec::new()),
                Query::Srv(_) => Answer::Srv(Vec::new()),
                Query::Address(_) => Answer::Address(Vec::new()),
            });
            r.answer(&q, answer);
            asked.push(q);
        }
        (asked, r.result())
    }

    fn target(t: Transport, addr: &str) -> Target {
        Target { transport: t, addr: addr.parse().unwrap() }
    }

    #[test]
    fn naptr_then_srv_then_addresses_in_order() {
        let zone = [
            (
                Query::Naptr("example.test".into()),
                Answer::Naptr(vec![
                    Naptr {
                        order: 10,
                        preference: 20,
                        flags: "S".into(),
                        services: "SIP+D2U".into(),
                        replacement: "_sip._udp.example.test.".into(),
                    },
                    Naptr {
                        order: 10,
                        preference: 10,
                        flags: "s".into(),
                        services: "SIP+D2T".into(),
                        replacement: "_sip._tcp.example.test.".into(),
                    },
                    Naptr {
                        order: 5,
                        preference: 0,
                        flags: "s".into(),
                        services: "SIPS+D2T".into(),
                        replacement: "_sips._tcp.example.test.".into(),
                    },
                ]),
            ),
            (
                Query::Srv("_sip._tcp.example.test".into()),
                Answer::Srv(vec![Srv { priority: 0, weight: 0, port: 5070, target: "b.example.test.".into() }]),
            ),
            (
                Query::Srv("_sip._udp.example.test".into()),
                Answer::Srv(vec![
                    Srv { priority: 20, weight: 0, port: 5060, target: "c.example.test".into() },
                    Srv { priority: 10, weight: 0, port: 5062, target: "a.example.test".into() },
                ]),
            ),
            (Query::Address("a.example.test".into()), Answer::Address(vec![ip("192.0.2.1")])),
            (Query::Address("b.example.test".into()), Answer::Address(vec![ip("192.0.2.2"), ip("2001:db8::2")])),
            (Query::Address("c.example.test".into()), Answer::Address(vec![ip("192.0.2.3")])),
        ];
        let (asked, result) = run("sip:carol@example.test", &zone);
        assert_eq!(asked[0], Query::Naptr("example.test".into()));
        // The TLS-only record has the lowest order but is not ours: the next order's records,
        // TCP preferred.
        assert_eq!(asked[1], Query::Srv("_sip._tcp.example.test".into()));
        assert_eq!(
            result.unwrap(),
            vec![
                target(Transport::Tcp, "192.0.2.2:5070"),
                target(Transport::Tcp, "[2001:db8::2]:5070"),
                target(Transport::Udp, "192.0.2.1:5062"),
                target(Transport::Udp, "192.0.2.3:5060"),
            ]
        );
    }

    #[test]
    fn without_naptr_srv_per_transport_then_the_domain_itself() {
        let zone = [
            (
                Query::Srv("_sip._tcp.example.test".into()),
                Answer::Srv(vec![Srv { priority: 0, weight: 5, port: 5080, target: "pbx.example.test".into() }]),
            ),
            (Query::Address("pbx.example.test".into()), Answer::Address(vec![ip("192.0.2.9")])),
        ];
        let (asked, result) = run("sip:carol@Example.Test", &zone);
        assert_eq!(
            asked[1..3],
            [Query::Srv("_sip._udp.example.test".into()), Query::Srv("_sip._tcp.example.test".into())]
        );
        assert_eq!(result.unwrap(), vec![target(Transport::Tcp, "192.0.2.9:5080")]);
        // No NAPTR, no SRV: the domain's own address, UDP, 5060.
        let zone = [(Query::Address("example.test".into()), Answer::Address(vec![ip("192.0.2.7")]))];
        let (_, result) = run("sip:carol@example.test", &zone);
        assert_eq!(result.unwrap(), vec![target(Transport::Udp, "192.0.2.7:5060")]);
    }

    #[test]
    fn port_transport_maddr_and_numeric_hosts_skip_what_they_settle() {
        let zone = [(Query::Address("example.test".into()), Answer::Address(vec![ip("192.0.2.7")]))];
        let (asked, result) = run("sip:carol@example.test:5099", &zone);
        assert_eq!(asked, vec![Query::Address("example.test".into())]);
        assert_eq!(result.unwrap(), vec![target(Transport::Udp, "192.0.2.7:5099")]);
        let (asked, _) = run("sip:carol@example.test;transport=tcp", &zone);
        assert_eq!(asked, vec![Query::Srv("_sip._tcp.example.test".into()), Query::Address("example.test".into())]);
        let (asked, result) = run("sip:carol@192.0.2.4;transport=TCP", &[]);
        assert!(asked.is_empty());
        assert_eq!(result.unwrap(), vec![target(Transport::Tcp, "192.0.2.4:5060")]);
        let (_, result) = run("sip:carol@example.test;maddr=192.0.2.5", &[]);
        assert_eq!(result.unwrap(), vec![target(Transport::Udp, "192.0.2.5:5060")]);
        assert_eq!(run("sips:carol@example.test", &[]).1, Err(ResolveError::NeedsTls));
        assert_eq!(run("sip:carol@example.test;transport=sctp", &[]).1, Err(ResolveError::Transport("sctp".into())));
        assert_eq!(run("sip:carol@nowhere.test", &[]).1, Err(ResolveError::NotFound("nowhere.test".into())));
    }

    #[test]
    fn a_hostile_zone_costs_a_bounded_number_of_queries() {
        let many: Vec<Srv> = (0..500)
            .map(|i| Srv { priority: 0, weight: 1, port: 5060, target: format!("h{i}.example.test") })
            .collect();
        let zone = [(Query::Srv("_sip._udp.example.test".into()), Answer::Srv(many))];
        let (asked, _) = run("sip:carol@example.test", &zone);
        assert!(asked.len() <= MAX_QUERIES, "{}", asked.len());
    }

    #[test]
    fn srv_weights_order_records_of_one_priority_at_random_but_all_appear() {
        let records: Vec<Srv> =
            (0..4).map(|i| Srv { priority: 1, weight: 10 * i, port: 5060, target: format!("h{i}.test") }).collect();
        let mut r = Resolution::new(&sip("sip:x@example.test;transport=udp"), 3);
        let q = r.next_query().unwrap();
        r.answer(&q, Answer::Srv(records));
        let mut hosts = Vec::new();
        while let Some(Query::Address(h)) = r.next_query() {
            hosts.push(h.clone());
            r.answer(&Query::Address(h), Answer::Address(Vec::new()));
        }
        hosts.sort();
        assert_eq!(hosts, vec!["example.test", "h0.test", "h1.test", "h2.test", "h3.test"]);
    }
}
