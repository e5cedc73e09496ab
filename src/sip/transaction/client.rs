//! Client transactions: the INVITE state machine (RFC 3261 §17.1.1, with the Accepted state of
//! RFC 6026 §7.2) and the non-INVITE one (§17.1.2).
//!
//! A client transaction sends the request, retransmits it over unreliable transports (timers A
//! and E), gives up after 64·T1 (timers B and F), hands each new response to the TU and absorbs
//! retransmitted finals. For a 3xx–6xx final to an INVITE it builds and sends the ACK itself
//! (§17.1.1.3); the ACK for a 2xx belongs to the TU (§13.2.2.4).
//!
//! It does not know dialogs, does not pick destinations (the TU passes one) and does not report
//! transport errors (there is no transport here).

use std::time::Duration;

use bytes::Bytes;

use super::key::ClientKey;
use super::timers::{Armed, Slot, TimerName, TxRef};
use super::{ClientTxId, Ctx, Event};
use crate::sip::header::HeaderName;
use crate::sip::message::{Header, Message};
use crate::sip::method::Method;

/// Where a client transaction is (§17.1.1.2 Figure 5, §17.1.2.2 Figure 6, RFC 6026 §7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE sent, no response yet.
    Calling,
    /// Non-INVITE request sent, no response yet.
    Trying,
    /// A provisional response arrived.
    Proceeding,
    /// A final response arrived (non-2xx for INVITE); absorbing its retransmissions.
    Completed,
    /// A 2xx to an INVITE arrived; further 2xx still go to the TU (RFC 6026 §7.2).
    Accepted,
    /// Done; the layer removes it at once.
    Terminated,
}

pub(super) struct ClientTransaction<A> {
    id: ClientTxId,
    /// `None` when the request had no Via branch: nothing can match it.
    pub(super) key: Option<ClientKey>,
    invite: bool,
    pub(super) state: ClientState,
    /// Kept to build the ACK (§17.1.1.3) or a CANCEL (§9.1).
    pub(super) request: Message,
    bytes: Bytes,
    to: A,
    reliable: bool,
    /// The current retransmission interval (timer A or E).
    interval: Duration,
    ack: Option<Bytes>,
    pub(super) armed: Armed,
}

impl<A: Clone> ClientTransaction<A> {
    /// Sends the request and arms the timers of the initial state.
    pub(super) fn start(
        id: ClientTxId,
        key: Option<ClientKey>,
        request: Message,
        to: A,
        reliable: bool,
        ctx: &mut Ctx<'_, A>,
    ) -> Self {
        let invite = request.method() == Some(&Method::Invite);
        let bytes = request.encode();
        ctx.transmits.push_back((to.clone(), bytes.clone()));
        let mut tx = ClientTransaction {
            id,
            key,
            invite,
            state: if invite { ClientState::Calling } else { ClientState::Trying },
            request,
            bytes,
            to,
            reliable,
            interval: ctx.timers.t1,
            ack: None,
            armed: Armed::default(),
        };
        if invite {
            // §17.1.1.2: timer A only over unreliable transports; timer B always.
            if !reliable {
                tx.arm(ctx, TimerName::A, ctx.timers.timer_a());
            }
            tx.arm(ctx, TimerName::B, ctx.timers.timer_b());
        } else {
            // §17.1.2.2: timer E only over unreliable transports; timer F always.
            if !reliable {
                tx.arm(ctx, TimerName::E, ctx.timers.timer_e());
            }
            tx.arm(ctx, TimerName::F, ctx.timers.timer_f());
        }
        tx
    }

    fn arm(&mut self, ctx: &mut Ctx<'_, A>, name: TimerName, after: Duration) {
        ctx.queue.arm(&mut self.armed, TxRef::Client(self.id), name, ctx.now, after);
    }

    fn cancel(&mut self, ctx: &mut Ctx<'_, A>, slot: Slot) {
        ctx.queue.cancel(&mut self.armed, slot);
    }

    /// Enters a lingering state, or Terminated at once when the linger time is zero
    /// (reliable transports, §17.1.1.2 timer D, §17.1.2.2 timer K).
    fn linger(&mut self, ctx: &mut Ctx<'_, A>, state: ClientState, name: TimerName, after: Duration) {
        self.cancel(ctx, Slot::Retransmit);
        self.cancel(ctx, Slot::Timeout);
        if after.is_zero() {
            self.state = ClientState::Terminated;
        } else {
            self.state = state;
            self.arm(ctx, name, after);
        }
    }

    /// A response matched this transaction. Returns it when the TU should see it.
    pub(super) fn handle_response(&mut self, response: Message, ctx: &mut Ctx<'_, A>) -> Option<Message> {
        let code = response.status()?;
        if self.invite {
            self.handle_invite_response(code, response, ctx)
        } else {
            self.handle_non_invite_response(code, response, ctx)
        }
    }

    fn handle_invite_response(&mut self, code: u16, response: Message, ctx: &mut Ctx<'_, A>) -> Option<Message> {
        use ClientState::*;
        match (self.state, code) {
            // §17.1.1.2: a provisional stops retransmission; Timer B only guards Calling
            // (Figure 5), after which the TU decides how long to wait (§16.8 timer C, CANCEL).
            (Calling, 100..=199) => {
                self.cancel(ctx, Slot::Retransmit);
                self.cancel(ctx, Slot::Timeout);
                self.state = Proceeding;
                Some(response)
            }
            (Proceeding, 100..=199) => Some(response),
            // RFC 6026 §7.2: a 2xx moves to Accepted; the TU sends the ACK.
            (Calling | Proceeding, 200..=299) => {
                self.cancel(ctx, Slot::Retransmit);
                self.cancel(ctx, Slot::Timeout);
                self.state = Accepted;
                self.arm(ctx, TimerName::M, ctx.timers.timer_m());
                Some(response)
            }
            // RFC 6026 §7.2: 2xx retransmissions (and other forks' 2xx) still reach the TU.
            (Accepted, 200..=299) => Some(response),
            // §17.1.1.2: a 3xx–6xx is acknowledged here and passed up once.
            (Calling | Proceeding, 300..=699) => {
                self.ack = build_ack(&self.request, &response).map(|ack| ack.encode());
                if let Some(ack) = &self.ack {
                    ctx.transmits.push_back((self.to.clone(), ack.clone()));
                }
                self.linger(ctx, Completed, TimerName::D, ctx.timers.timer_d(self.reliable));
                Some(response)
            }
            // §17.1.1.2: each retransmitted final gets the ACK again, and is absorbed.
            (Completed, 300..=699) => {
                if let Some(ack) = &self.ack {
                    ctx.transmits.push_back((self.to.clone(), ack.clone()));
                }
                None
            }
            _ => None,
        }
    }

    fn handle_non_invite_response(&mut self, code: u16, response: Message, ctx: &mut Ctx<'_, A>) -> Option<Message> {
        use ClientState::*;
        match (self.state, code) {
            (Trying | Proceeding, 100..=199) => {
                self.state = Proceeding;
                Some(response)
            }
            // §17.1.2.2: a final moves to Completed, where timer K absorbs retransmissions.
            (Trying | Proceeding, 200..=699) => {
                self.linger(ctx, Completed, TimerName::K, ctx.timers.timer_k(self.reliable));
                Some(response)
            }
            _ => None,
        }
    }

    pub(super) fn handle_timer(&mut self, name: TimerName, ctx: &mut Ctx<'_, A>) {
        use ClientState::*;
        match (name, self.state) {
            // §17.1.1.2: retransmit and double, with no cap, until timer B.
            (TimerName::A, Calling) => {
                self.retransmit(ctx);
                self.interval = self.interval.saturating_mul(2);
                self.arm(ctx, TimerName::A, self.interval);
            }
            // §17.1.2.2: doubling up to T2 while Trying; every T2 once Proceeding.
            (TimerName::E, Trying) => {
                self.retransmit(ctx);
                self.interval = ctx.timers.backoff_capped(self.interval);
                self.arm(ctx, TimerName::E, self.interval);
            }
            (TimerName::E, Proceeding) => {
                self.retransmit(ctx);
                self.interval = ctx.timers.t2;
                self.arm(ctx, TimerName::E, self.interval);
            }
            // §17.1.1.2, §17.1.2.2: report a timeout (the TU treats it as 408, §8.1.3.1).
            (TimerName::B, Calling) | (TimerName::F, Trying | Proceeding) => {
                ctx.events.push_back(Event::ClientTimeout { id: self.id });
                self.state = Terminated;
            }
            (TimerName::D, Completed) | (TimerName::K, Completed) | (TimerName::M, Accepted) => {
                self.state = Terminated;
            }
            _ => {}
        }
    }

    fn retransmit(&self, ctx: &mut Ctx<'_, A>) {
        ctx.transmits.push_back((self.to.clone(), self.bytes.clone()));
    }

    pub(super) fn is_invite(&self) -> bool {
        self.invite
    }
}

/// A request that shares the transaction's identity, built per §17.1.1.3 (ACK) and §9.1
/// (CANCEL): the original Request-URI, Call-ID, From and CSeq number; only the top Via (same
/// branch); the original Route set; the given To header.
fn derived_request(request: &Message, method: Method, to: Option<&Header>) -> Option<Message> {
    let mut out = Message::request(method.clone(), request.request_uri()?.clone());
    if let Some(top) = request.headers.get(&HeaderName::Via).and_then(|h| h.elements()).and_then(|e| e.first().copied())
    {
        out.headers.push(Header::new(HeaderName::Via, String::from_utf8_lossy(top)));
    }
    out.headers.push(Header::new(HeaderName::MaxForwards, 70));
    for name in [HeaderName::From, HeaderName::CallId] {
        if let Some(h) = request.headers.get(&name) {
            out.headers.push(h.clone());
        }
    }
    if let Some(to) = to {
        out.headers.push(to.clone());
    }
    let seq = request.cseq().map(|c| c.seq).unwrap_or_default();
    out.headers.push(Header::new(HeaderName::CSeq, format!("{seq} {method}")));
    for route in request.headers.get_all(&HeaderName::Route) {
        out.headers.push(route.clone());
    }
    Some(out)
}

/// The ACK for a non-2xx final response (§17.1.1.3): To comes from the response, so it carries
/// the tag of the element that answered.
pub(super) fn build_ack(request: &Message, response: &Message) -> Option<Message> {
    derived_request(request, Method::Ack, response.headers.get(&HeaderName::To))
}

/// A CANCEL for an INVITE (§9.1): To comes from the request.
pub(super) fn build_cancel(request: &Message) -> Option<Message> {
    derived_request(request, Method::Cancel, request.headers.get(&HeaderName::To))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse;

    fn msg(s: &str) -> Message {
        parse(Bytes::from(s.replace('\n', "\r\n"))).unwrap()
    }

    const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\n\
        Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9, SIP/2.0/UDP a.example.com;branch=z9hG4bKold\n\
        Max-Forwards: 69\n\
        Route: <sip:p1.example.com;lr>\n\
        Route: <sip:p2.example.com;lr>\n\
        From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\n\
        To: Bob <sip:bob@biloxi.example.com>\n\
        Call-ID: 3848276298220188511@atlanta.example.com\n\
        CSeq: 2 INVITE\n\
        Contact: <sip:alice@client.atlanta.example.com>\n\
        Content-Length: 0\n\n";

    #[test]
    fn ack_per_17_1_1_3() {
        let invite = msg(INVITE);
        let resp = invite.make_response(486, "Busy Here", Some("8321234356"));
        let ack = build_ack(&invite, &resp).unwrap();
        let ack = parse(ack.encode()).unwrap();
        assert_eq!(ack.method(), Some(&Method::Ack));
        assert_eq!(ack.request_uri(), invite.request_uri());
        let vias = ack.vias().unwrap();
        assert_eq!(vias.len(), 1);
        assert_eq!(vias[0].branch(), Some("z9hG4bK74bf9"));
        assert_eq!(ack.call_id().unwrap(), invite.call_id().unwrap());
        assert_eq!(ack.from().unwrap(), invite.from().unwrap());
        assert_eq!(ack.to().unwrap().tag(), Some("8321234356"));
        let cseq = ack.cseq().unwrap();
        assert_eq!((cseq.seq, cseq.method), (2, Method::Ack));
        assert_eq!(ack.routes().unwrap(), invite.routes().unwrap());
        assert!(ack.headers.get(&HeaderName::Contact).is_none());
        assert_eq!(ack.max_forwards().unwrap(), Some(70));
    }

    #[test]
    fn cancel_per_9_1() {
        let invite = msg(INVITE);
        let cancel = parse(build_cancel(&invite).unwrap().encode()).unwrap();
        assert_eq!(cancel.method(), Some(&Method::Cancel));
        assert_eq!(cancel.top_via().unwrap().branch(), Some("z9hG4bK74bf9"));
        assert_eq!(cancel.to().unwrap(), invite.to().unwrap());
        assert_eq!(cancel.cseq().unwrap().to_string(), "2 CANCEL");
        assert_eq!(cancel.routes().unwrap().len(), 2);
    }
}
