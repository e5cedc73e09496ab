//! The registrar's front door (RFC 3261 §10.3 steps 1–5): the REGISTER of a local phone is
//! authenticated with digest and authorised for its own AoR, then handed to the [`Registrar`](super::registrar::Registrar)
//! (steps 6–8); answered without a server transaction.

use std::time::Instant;

use super::auth::{AuthFailure, Realm};
use super::Proxy;
use crate::sip::validate::Rejection;
use crate::sip::{Message, SipUri, Uri};
use crate::transport::Endpoint;

impl Proxy {
    /// The answer to a phone's REGISTER, sent without a server transaction (RFC 3261 §8.2.7
    /// lets a UAS answer statelessly; Kamailio's registrar does the same): the 401 challenge,
    /// the 200 with the bindings, or the refusal. A REGISTER changes nothing but bindings, and
    /// a retransmission (same Call-ID and CSeq, its answer lost) is answered again with the
    /// bindings as the first copy left them ([`Registrar::register`](super::registrar::Registrar::register)), so there is nothing
    /// for a transaction to absorb. Without this every REGISTER would hold a server
    /// transaction for Timer J (64·T1 = 32 s over UDP, §17.2.2): at 10,000 REGISTERs/s that
    /// is 320,000 transactions and most of the node's memory.
    pub fn register_stateless(&mut self, now: Instant, from: Endpoint, msg: &Message) -> Message {
        match self.register(now, from, msg) {
            Ok(resp) => resp,
            Err(r) => self.refusal(msg, r),
        }
    }

    /// RFC 3261 §10.3: steps 1–5 here (domain, authentication, authorisation), 6–8 in the
    /// [`Registrar`].
    pub(super) fn register(&mut self, now: Instant, from: Endpoint, msg: &Message) -> Result<Message, Rejection> {
        // Step 1 (the Request-URI names this registrar's domain) is checked once the sender
        // has authenticated: a stranger learns nothing but the challenge (RFC 4475 §3.3.7).
        let Some(Uri::Sip(ruri)) = msg.request_uri() else { return Err(Rejection::new(416, "Unsupported URI Scheme")) };
        let our_domain = self.is_our_domain(ruri);
        let to_aor = msg.to().ok().and_then(|t| t.uri.as_sip().map(SipUri::aor));
        let clock = self.clock(now);
        let names_us = self.names_us();
        let account_aor =
            match self.auth.authenticate(&self.accounts, msg, Realm::Registrar, clock, from.remote, names_us) {
                Ok(aor) => aor,
                Err(AuthFailure::Challenge(r)) => return Err(r),
                Err(AuthFailure::Refused(r)) => {
                    self.status.registers_refused += 1;
                    return Err(r);
                }
            };
        if !our_domain {
            return Err(Rejection::new(404, "Not Found (not this registrar's domain)"));
        }
        let Some(aor) = to_aor else { return Err(Rejection::new(416, "Unsupported URI Scheme in To")) };
        // Step 4: these credentials may change only their own AoR's bindings.
        if account_aor != aor {
            self.status.registers_refused += 1;
            return Err(Rejection::new(403, "Forbidden (credentials are for another AoR)"));
        }
        let tag = self.tag();
        let resp = self.registrar.register(now, &aor, msg, from, &tag)?;
        self.status.registers_accepted += 1;
        Ok(resp)
    }
}
