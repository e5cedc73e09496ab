//! The location service a registrar keeps (RFC 3261 §10.3): for each address of record, the
//! contacts its phones registered, until each expires. Sans-IO: callers pass `now`.
//!
//! Each binding also remembers the *flow* its REGISTER arrived on (listener, transport, source
//! address after `rport`, TCP connection): requests for the phone are sent there, not to the
//! Contact's host, so a phone behind a NAT is reached through the mapping it opened
//! (RFC 3581 §4 for the reply, RFC 5626's flow idea for later requests).
//!
//! Authentication (§10.3 step 3) is the caller's: [`Registrar::register`] runs steps 5–8 for an
//! AoR the caller has already authorised.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::sip::header::NameAddr;
use crate::sip::uri::Host;
use crate::sip::validate::Rejection;
use crate::sip::{Contacts, Header, HeaderName, Message, Uri};
use crate::transport::{ConnectionId, Endpoint, Transport};

/// The registrar's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// Shorter registrations get 423 Interval Too Brief (§10.3 step 7).
    pub min_expires: u32,
    /// Longer ones are cut to this.
    pub max_expires: u32,
    /// When neither the Contact nor the request says (§10.3 step 7).
    pub default_expires: u32,
    /// Contacts one AoR may have at once; more get 403. Bounds memory per account.
    pub max_contacts_per_aor: usize,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig { min_expires: 60, max_expires: 3600, default_expires: 3600, max_contacts_per_aor: 10 }
    }
}

/// One registered contact of an AoR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Contact as the phone sent it (URI and header parameters, `expires` removed).
    pub contact: NameAddr,
    /// Where the REGISTER came from: where requests for this phone go.
    pub flow: Endpoint,
    /// The Call-ID of the REGISTER that made it (§10.3 step 7).
    pub call_id: String,
    /// Its CSeq number.
    pub cseq: u32,
    /// When it expires.
    pub expires_at: Instant,
}

impl Binding {
    /// The contact's URI.
    pub fn uri(&self) -> &Uri {
        &self.contact.uri
    }
}

/// A binding that changed, for the caller (pings, logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingEvent {
    /// A phone registered a contact.
    Added {
        /// The AoR.
        aor: String,
        /// The contact bound to it.
        contact: Uri,
    },
    /// A contact went (unregistered, expired, ping failed, flow closed).
    Removed {
        /// The AoR.
        aor: String,
        /// The contact that went.
        contact: Uri,
    },
}

/// The location service (RFC 3261 §10): bindings per AoR, their expiry and flows.
#[derive(Debug, Default)]
pub struct Registrar {
    config: RegistrarConfig,
    bindings: BTreeMap<String, Vec<Binding>>,
    events: Vec<BindingEvent>,
}

/// RFC 3261 §19.1.4 compares URIs component by component; comparing the printed forms with
/// a case-insensitive host is what phones that re-register with the same Contact need.
fn same_uri(a: &Uri, b: &Uri) -> bool {
    match (a, b) {
        (Uri::Sip(x), Uri::Sip(y)) => {
            x.secure == y.secure
                && x.user == y.user
                && same_host(&x.host, &y.host)
                && x.port.unwrap_or(5060) == y.port.unwrap_or(5060)
                && x.transport() == y.transport()
        }
        _ => a == b,
    }
}

/// Hosts compare case-insensitively (RFC 3261 §19.1.4); addresses by value.
fn same_host(a: &Host, b: &Host) -> bool {
    match (a, b) {
        (Host::Domain(x), Host::Domain(y)) => x.eq_ignore_ascii_case(y),
        _ => a == b,
    }
}

impl Registrar {
    /// An empty location service.
    pub fn new(config: RegistrarConfig) -> Registrar {
        Registrar { config, bindings: BTreeMap::new(), events: Vec::new() }
    }

    /// Its settings.
    pub fn config(&self) -> &RegistrarConfig {
        &self.config
    }

    /// The live bindings of `aor` (canonical form), newest registration last.
    pub fn lookup(&self, aor: &str, now: Instant) -> Vec<&Binding> {
        self.bindings.get(aor).map(|v| v.iter().filter(|b| b.expires_at > now).collect()).unwrap_or_default()
    }

    /// The binding whose contact is `uri`, under any AoR: an in-dialog request aimed at a
    /// phone's contact goes through the flow that phone registered from.
    pub fn by_contact(&self, uri: &Uri, now: Instant) -> Option<(&str, &Binding)> {
        self.bindings.iter().find_map(|(aor, v)| {
            v.iter().find(|b| b.expires_at > now && same_uri(&b.contact.uri, uri)).map(|b| (aor.as_str(), b))
        })
    }

    /// A live binding of a phone at `addr`: its contact names that address, or it registered
    /// from there. A phone's Contact in a dialog (its remote target) may differ from the one
    /// it registered in all but the address.
    pub fn by_address(&self, addr: std::net::SocketAddr, now: Instant) -> Option<&Binding> {
        self.bindings.values().flatten().find(|b| {
            let contact = match b.uri() {
                Uri::Sip(s) => s.host.ip().map(|ip| std::net::SocketAddr::new(ip, s.port.unwrap_or(5060))),
                _ => None,
            };
            b.expires_at > now && (contact == Some(addr) || b.flow.remote == addr)
        })
    }

    /// The AoR with a live binding registered over `flow`: the same TCP connection, or over
    /// UDP the same source address and port, on the same listener. A request arriving that
    /// way comes from a phone that authenticated its REGISTER.
    pub fn by_flow(&self, flow: &Endpoint, now: Instant) -> Option<&str> {
        let same = |b: &Binding| {
            b.flow.listener == flow.listener
                && b.flow.transport == flow.transport
                && match flow.transport {
                    Transport::Tcp => flow.conn.is_some() && b.flow.conn == flow.conn,
                    Transport::Udp => b.flow.remote == flow.remote,
                }
        };
        self.bindings
            .iter()
            .find_map(|(aor, v)| v.iter().any(|b| b.expires_at > now && same(b)).then_some(aor.as_str()))
    }

    /// Number of live bindings, all AoRs.
    pub fn binding_count(&self) -> usize {
        self.bindings.values().map(Vec::len).sum()
    }

    /// Every AoR with its bindings.
    pub fn aors(&self) -> impl Iterator<Item = (&str, &[Binding])> {
        self.bindings.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Removes one binding (a phone that stopped answering pings).
    pub fn remove(&mut self, aor: &str, contact: &Uri) -> bool {
        let Some(v) = self.bindings.get_mut(aor) else { return false };
        let before = v.len();
        v.retain(|b| !same_uri(&b.contact.uri, contact));
        let removed = v.len() != before;
        if removed {
            self.events.push(BindingEvent::Removed { aor: aor.to_owned(), contact: contact.clone() });
        }
        if v.is_empty() {
            self.bindings.remove(aor);
        }
        removed
    }

    /// Removes every binding registered over the stream connection `conn`, which has closed,
    /// and returns them as (AoR, contact). A binding lives with the flow it was registered on
    /// (RFC 5626 §5.2, §7 in spirit, without `reg-id`/`+sip.instance`): requests could only
    /// reach the phone through that connection, and a phone that reconnects registers again.
    pub fn remove_flow(&mut self, conn: ConnectionId) -> Vec<(String, Uri)> {
        let mut removed = Vec::new();
        self.bindings.retain(|aor, v| {
            v.retain(|b| {
                let gone = b.flow.transport.is_reliable() && b.flow.conn == Some(conn);
                if gone {
                    removed.push((aor.clone(), b.contact.uri.clone()));
                }
                !gone
            });
            !v.is_empty()
        });
        self.events.extend(
            removed.iter().map(|(aor, contact)| BindingEvent::Removed { aor: aor.clone(), contact: contact.clone() }),
        );
        removed
    }

    /// Drops expired bindings.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut removed = Vec::new();
        self.bindings.retain(|aor, v| {
            v.retain(|b| {
                let live = b.expires_at > now;
                if !live {
                    removed.push(BindingEvent::Removed { aor: aor.clone(), contact: b.contact.uri.clone() });
                }
                live
            });
            !v.is_empty()
        });
        self.events.extend(removed);
    }

    /// The next expiry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.bindings.values().flatten().map(|b| b.expires_at).min()
    }

    /// The next binding that changed.
    pub fn poll_event(&mut self) -> Option<BindingEvent> {
        if self.events.is_empty() {
            None
        } else {
            Some(self.events.remove(0))
        }
    }

    /// RFC 3261 §10.3 steps 6–8 for a REGISTER already authorised for `aor`: applies its
    /// Contacts and returns the 200 (with every current binding) or the refusal. Nothing
    /// changes unless the whole request is accepted.
    pub fn register(
        &mut self,
        now: Instant,
        aor: &str,
        msg: &Message,
        flow: Endpoint,
        to_tag: &str,
    ) -> Result<Message, Rejection> {
        let call_id = msg.call_id()?.to_owned();
        let cseq = msg.cseq()?.seq;
        let header_expires = msg.expires()?;
        let mut current: Vec<Binding> = self
            .bindings
            .get(aor)
            .map(|v| v.iter().filter(|b| b.expires_at > now).cloned().collect())
            .unwrap_or_default();
        let contacts = if msg.headers.get(&HeaderName::Contact).is_none() {
            // §10.3 step 6 (a query): no Contact, nothing changes.
            None
        } else {
            Some(msg.contacts()?)
        };
        match contacts {
            None => {}
            Some(Contacts::Star) => {
                // §10.2.2 / step 6: `*` only with Expires: 0, and alone.
                if header_expires != Some(0) || msg.headers.count(&HeaderName::Contact) != 1 {
                    return Err(Rejection::new(400, "Contact: * needs Expires: 0 and no other Contact"));
                }
                for b in &current {
                    // Step 6: a binding from the same Call-ID with a higher CSeq stays.
                    if b.call_id == call_id && b.cseq > cseq {
                        return Err(Rejection::new(500, "Out of order REGISTER (CSeq)"));
                    }
                }
                current.clear();
            }
            Some(Contacts::List(list)) => {
                for mut contact in list {
                    if !matches!(contact.uri, Uri::Sip(_)) {
                        return Err(Rejection::new(416, "Unsupported URI Scheme in Contact"));
                    }
                    let expires = contact
                        .param("expires")
                        .and_then(|p| p.value.as_deref())
                        .map(|v| v.parse::<u32>().unwrap_or(self.config.default_expires))
                        .or(header_expires)
                        .unwrap_or(self.config.default_expires);
                    // Step 7: too brief → 423 with Min-Expires; too long → cut.
                    if expires != 0 && expires < self.config.min_expires {
                        return Err(Rejection::new(423, "Interval Too Brief")
                            .with_header(Header::new(HeaderName::other("Min-Expires"), self.config.min_expires)));
                    }
                    let expires = expires.min(self.config.max_expires);
                    contact.params.retain(|p| !p.name.eq_ignore_ascii_case("expires"));
                    let existing = current.iter().position(|b| same_uri(&b.contact.uri, &contact.uri));
                    if let Some(i) = existing {
                        if current[i].call_id == call_id {
                            // Step 7: the same Call-ID must come with a higher CSeq. The same
                            // CSeq is this very request again (§8.1.1.5: a UA gives each new
                            // request a higher one), a retransmission whose answer was lost:
                            // REGISTERs are answered without a server transaction (so a
                            // retransmission is not absorbed), and it must get the same 200,
                            // with the binding as the first copy left it.
                            if current[i].cseq == cseq {
                                continue;
                            }
                            if current[i].cseq > cseq {
                                return Err(Rejection::new(500, "Out of order REGISTER (CSeq)"));
                            }
                        }
                        current.remove(i);
                    }
                    if expires > 0 {
                        current.push(Binding {
                            contact,
                            flow,
                            call_id: call_id.clone(),
                            cseq,
                            expires_at: now + Duration::from_secs(expires.into()),
                        });
                    }
                }
                if current.len() > self.config.max_contacts_per_aor {
                    return Err(Rejection::new(403, "Too many contacts for this AoR"));
                }
            }
        }
        self.commit(aor, current);
        // Step 8: 200 with every current binding and its remaining time.
        let mut resp = msg.make_response(200, "OK", Some(to_tag));
        for b in self.lookup(aor, now) {
            let left = b.expires_at.saturating_duration_since(now).as_secs();
            let mut c = b.contact.clone();
            c.set_param("expires", Some(left.to_string()));
            resp.headers.push(Header::new(HeaderName::Contact, c));
        }
        Ok(resp)
    }

    fn commit(&mut self, aor: &str, new: Vec<Binding>) {
        let old = self.bindings.remove(aor).unwrap_or_default();
        for b in &old {
            if !new.iter().any(|n| same_uri(&n.contact.uri, &b.contact.uri)) {
                self.events.push(BindingEvent::Removed { aor: aor.to_owned(), contact: b.contact.uri.clone() });
            }
        }
        for n in &new {
            if !old.iter().any(|b| same_uri(&n.contact.uri, &b.contact.uri)) {
                self.events.push(BindingEvent::Added { aor: aor.to_owned(), contact: n.contact.uri.clone() });
            }
        }
        if !new.is_empty() {
            self.bindings.insert(aor.to_owned(), new);
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real reading as the virtual clock's epoch
mod tests {
    use super::*;
    use crate::sip::parse;
    use crate::transport::{Listener, Transport};

    fn flow(port: u16) -> Endpoint {
        Endpoint {
            listener: Listener::Proxy,
            transport: Transport::Udp,
            remote: format!("192.0.2.1:{port}").parse().unwrap(),
            conn: None,
        }
    }

    fn register(call_id: &str, cseq: u32, contacts: &[&str], expires: Option<u32>) -> Message {
        let mut s = format!(
            "REGISTER sip:p2p.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK{cseq}\r\n\
             From: <sip:alice@p2p.test>;tag=a\r\nTo: <sip:alice@p2p.test>\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n"
        );
        for c in contacts {
            s.push_str(&format!("Contact: {c}\r\n"));
        }
        if let Some(e) = expires {
            s.push_str(&format!("Expires: {e}\r\n"));
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        parse(bytes::Bytes::from(s)).unwrap()
    }

    const AOR: &str = "sip:alice@p2p.test";

    #[test]
    fn bindings_expire_and_several_phones_share_an_aor() {
        let t0 = Instant::now();
        let mut r = Registrar::new(RegistrarConfig::default());
        let ok =
            r.register(t0, AOR, &register("a", 1, &["<sip:alice@192.0.2.1:5062>"], Some(120)), flow(1), "t").unwrap();
        assert_eq!(ok.status(), Some(200));
        assert!(String::from_utf8_lossy(&ok.encode()).contains("expires=120"));
        r.register(t0, AOR, &register("b", 1, &["<sip:alice@192.0.2.2:5062>;expires=600"], None), flow(2), "t")
            .unwrap();
        assert_eq!(r.lookup(AOR, t0).len(), 2);
        assert_eq!(r.by_contact(&Uri::parse("sip:alice@192.0.2.2:5062").unwrap(), t0).unwrap().1.flow, flow(2));
        let later = t0 + Duration::from_secs(121);
        r.handle_timeout(later);
        assert_eq!(r.lookup(AOR, later).len(), 1);
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(600)));
        let events: Vec<_> = std::iter::from_fn(|| r.poll_event()).collect();
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(matches!(events[2], BindingEvent::Removed { .. }));
    }

    #[test]
    fn query_star_and_limits() {
        let t0 = Instant::now();
        let mut r = Registrar::new(RegistrarConfig::default());
        let err =
            r.register(t0, AOR, &register("a", 1, &["<sip:alice@192.0.2.1>"], Some(10)), flow(1), "t").unwrap_err();
        assert_eq!(err.status, 423);
        assert!(err.headers.iter().any(|h| h.value_str() == Some("60")));
        let ok = r.register(t0, AOR, &register("a", 2, &["<sip:alice@192.0.2.1>"], Some(99999)), flow(1), "t").unwrap();
        assert!(String::from_utf8_lossy(&ok.encode()).contains("expires=3600"), "capped at max_expires");
        // A query lists the bindings and changes nothing.
        let q = r.register(t0, AOR, &register("q", 1, &[], None), flow(9), "t").unwrap();
        assert_eq!(q.headers.count(&HeaderName::Contact), 1);
        // Same Call-ID, old CSeq: out of order.
        let err =
            r.register(t0, AOR, &register("a", 1, &["<sip:alice@192.0.2.1>"], Some(60)), flow(1), "t").unwrap_err();
        assert_eq!(err.status, 500);
        // `*` needs Expires: 0.
        assert_eq!(r.register(t0, AOR, &register("a", 3, &["*"], Some(60)), flow(1), "t").unwrap_err().status, 400);
        r.register(t0, AOR, &register("a", 3, &["*"], Some(0)), flow(1), "t").unwrap();
        assert!(r.lookup(AOR, t0).is_empty());
        assert_eq!(r.binding_count(), 0);
    }

    #[test]
    fn contacts_compare_hosts_case_insensitively() {
        // RFC 3261 §19.1.4: a refresh naming the host in another case is the same binding.
        let uri = |s: &str| Uri::parse(s).unwrap();
        assert!(same_uri(&uri("sip:alice@Phone.Example.COM:5062"), &uri("sip:alice@phone.example.com:5062")));
        assert!(same_uri(&uri("sip:alice@192.0.2.1"), &uri("sip:alice@192.0.2.1:5060")));
        assert!(!same_uri(&uri("sip:alice@192.0.2.1"), &uri("sip:alice@192.0.2.2")));
        assert!(!same_uri(&uri("sip:alice@phone.example.com"), &uri("sip:alice@phone.example.org")));
        let t0 = Instant::now();
        let mut r = Registrar::new(RegistrarConfig::default());
        r.register(t0, AOR, &register("a", 1, &["<sip:alice@Phone.Example.com>"], Some(60)), flow(1), "t").unwrap();
        r.register(t0, AOR, &register("a", 2, &["<sip:alice@phone.example.COM>"], Some(60)), flow(1), "t").unwrap();
        assert_eq!(r.lookup(AOR, t0).len(), 1);
    }

    #[test]
    fn expires_zero_removes_one_contact_and_contacts_are_bounded() {
        let t0 = Instant::now();
        let mut r = Registrar::new(RegistrarConfig { max_contacts_per_aor: 2, ..Default::default() });
        let c: Vec<String> = (1..=3).map(|i| format!("<sip:alice@192.0.2.{i}>")).collect();
        r.register(t0, AOR, &register("a", 1, &[&c[0], &c[1]], Some(60)), flow(1), "t").unwrap();
        let err = r.register(t0, AOR, &register("a", 2, &[&c[2]], Some(60)), flow(1), "t").unwrap_err();
        assert_eq!(err.status, 403);
        assert_eq!(r.lookup(AOR, t0).len(), 2, "a refused REGISTER changes nothing");
        r.register(t0, AOR, &register("a", 3, &[&format!("{};expires=0", c[0])], None), flow(1), "t").unwrap();
        assert_eq!(r.lookup(AOR, t0).len(), 1);
    }

    #[test]
    fn a_retransmitted_register_gets_the_same_answer_and_changes_nothing() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(30);
        let mut r = Registrar::new(RegistrarConfig::default());
        let req = register("a", 7, &["<sip:alice@192.0.2.1>"], Some(120));
        let first = r.register(t0, AOR, &req, flow(1), "t").unwrap();
        assert!(String::from_utf8_lossy(&first.encode()).contains("expires=120"));
        let _ = std::iter::from_fn(|| r.poll_event()).count();
        // The same request 30 s later (its 200 was lost): 200 again, the binding as the first
        // copy left it (not refreshed), and no binding event.
        let again = r.register(later, AOR, &req, flow(1), "t").unwrap();
        assert_eq!(again.status(), Some(200));
        assert!(
            String::from_utf8_lossy(&again.encode()).contains("expires=90"),
            "{}",
            String::from_utf8_lossy(&again.encode())
        );
        assert_eq!(r.poll_event(), None);
        // A later CSeq refreshes it.
        let next =
            r.register(later, AOR, &register("a", 8, &["<sip:alice@192.0.2.1>"], Some(120)), flow(1), "t").unwrap();
        assert!(String::from_utf8_lossy(&next.encode()).contains("expires=120"));
    }
}
