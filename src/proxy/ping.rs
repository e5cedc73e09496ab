//! OPTIONS pings to registered phones: each binding is pinged every `ping_interval`, and a
//! phone that has not answered within `ping_timeout` is unregistered (the keep-alive a
//! registrar needs when phones vanish without unregistering).

use std::collections::BTreeSet;
use std::time::Instant;

use rand::Rng;
use tracing::debug;

use super::{Ping, Proxy};
use crate::sip::transaction::TransactionLayer;
use crate::sip::{Header, HeaderName, Message, Method, Uri};
use crate::transport::Endpoint;

impl Proxy {
    /// One OPTIONS to every registered phone that has no ping outstanding.
    pub(super) fn send_pings(&mut self, now: Instant, tl: &mut TransactionLayer<Endpoint>) {
        let pending: BTreeSet<(String, String)> =
            self.pings.values().map(|p| (p.aor.clone(), p.contact.to_string())).collect();
        let targets: Vec<(String, Uri, Endpoint)> = self
            .registrar
            .aors()
            .flat_map(|(aor, bs)| bs.iter().map(move |b| (aor.to_owned(), b.contact.uri.clone(), b.flow)))
            // Phones only: a client node's flow has keep-alives of its own (RFC 5626).
            .filter(|(_, _, flow)| flow.listener == crate::transport::Listener::Proxy)
            .filter(|(aor, uri, _)| !pending.contains(&(aor.clone(), uri.to_string())))
            .collect();
        for (aor, uri, to) in targets {
            let mut req = Message::request(Method::Options, uri.clone());
            let via = self.via(to.transport);
            let tag = self.tag();
            let call_id = format!("{:016x}@{}", self.rng.random::<u64>(), self.config.addr.ip());
            req.headers.push(Header::new(HeaderName::Via, via));
            req.headers.push(Header::new(HeaderName::MaxForwards, 70));
            req.headers.push(Header::new(HeaderName::From, format!("<sip:{}>;tag={tag}", self.config.domain)));
            req.headers.push(Header::new(HeaderName::To, format!("<{uri}>")));
            req.headers.push(Header::new(HeaderName::CallId, call_id));
            req.headers.push(Header::new(HeaderName::CSeq, "1 OPTIONS"));
            req.headers.push(Header::new(HeaderName::UserAgent, &self.config.server));
            let id = tl.send_request(now, req, to, to.transport.is_reliable());
            self.pings.insert(id, Ping { aor, contact: uri, deadline: now + self.config.ping_timeout });
        }
    }

    pub(super) fn ping_failed(&mut self, ping: Ping) {
        if self.registrar.remove(&ping.aor, &ping.contact) {
            self.status.pings_failed += 1;
            debug!(aor = %ping.aor, contact = %ping.contact, "phone stopped answering OPTIONS; unregistered");
        }
    }
}
