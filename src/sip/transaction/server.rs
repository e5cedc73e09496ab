//! Server transactions: the INVITE state machine (RFC 3261 §17.2.1, with the Accepted state of
//! RFC 6026 §7.1) and the non-INVITE one (§17.2.2).
//!
//! A server transaction absorbs retransmitted requests (answering each with the last response
//! sent), retransmits a non-2xx final to an INVITE over unreliable transports until the ACK
//! comes (timers G and H), absorbs that ACK, and lingers long enough to absorb late
//! retransmissions (timers I, J, L) before it is removed.
//!
//! It does not build responses other than 100 Trying (the TU does), and does not retransmit
//! 2xx responses to INVITE: that is the TU's job (§13.3.1.4), passed through [`respond`] while
//! the transaction is Accepted.
//!
//! [`respond`]: super::TransactionLayer::respond

use std::time::Duration;

use bytes::Bytes;

use super::key::ServerKey;
use super::timers::{Armed, Slot, TimerName, TxRef};
use super::{Ctx, Event, ServerTxId, TransactionError};
use crate::sip::header::HeaderName;
use crate::sip::message::Message;
use crate::sip::method::Method;

/// Where a server transaction is (§17.2.1 Figure 7, §17.2.2 Figure 8, RFC 6026 §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE request received, nothing sent yet.
    Trying,
    /// A provisional response was sent (for INVITE, possibly only the automatic 100).
    Proceeding,
    /// A final response was sent (non-2xx for INVITE); waiting for the ACK or for request
    /// retransmissions to stop.
    Completed,
    /// The ACK for a non-2xx final arrived; absorbing ACK retransmissions.
    Confirmed,
    /// A 2xx to an INVITE was sent; INVITE retransmissions are absorbed (RFC 6026 §7.1).
    Accepted,
    /// Done; the layer removes it at once.
    Terminated,
}

/// What became of an ACK that matched an INVITE server transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AckOutcome {
    /// The ACK for our non-2xx final, or a retransmission of it.
    Absorbed,
    /// An ACK in the Accepted state: it acknowledges a 2xx, so it is the TU's (RFC 6026 §7.1).
    ToTu,
}

pub(super) struct ServerTransaction<A> {
    id: ServerTxId,
    invite: bool,
    pub(super) state: ServerState,
    pub(super) key: ServerKey,
    reply_to: A,
    reliable: bool,
    /// The most recent response sent, resent for request retransmissions.
    last_response: Option<Bytes>,
    /// The To tag of the final response sent: an RFC 2543 ACK must carry it (§17.2.3).
    pub(super) response_to_tag: Option<String>,
    /// The current timer G interval.
    interval: Duration,
    pub(super) armed: Armed,
}

impl<A: Clone> ServerTransaction<A> {
    /// A transaction for a new request. An INVITE starts in Proceeding and, when `send_trying`
    /// is set, answers 100 Trying at once (§17.2.1; a proxy always does, §16.2).
    pub(super) fn start(
        id: ServerTxId,
        key: ServerKey,
        request: &Message,
        reply_to: A,
        reliable: bool,
        send_trying: bool,
        ctx: &mut Ctx<'_, A>,
    ) -> Self {
        let invite = request.method() == Some(&Method::Invite);
        let mut tx = ServerTransaction {
            id,
            invite,
            state: if invite { ServerState::Proceeding } else { ServerState::Trying },
            key,
            reply_to,
            reliable,
            last_response: None,
            response_to_tag: None,
            interval: ctx.timers.t1,
            armed: Armed::default(),
        };
        if invite && send_trying {
            tx.send(ctx, trying(request).encode());
        }
        tx
    }

    fn send(&mut self, ctx: &mut Ctx<'_, A>, bytes: Bytes) {
        ctx.transmits.push_back((self.reply_to.clone(), bytes.clone()));
        self.last_response = Some(bytes);
    }

    fn resend_last(&self, ctx: &mut Ctx<'_, A>) {
        if let Some(bytes) = &self.last_response {
            ctx.transmits.push_back((self.reply_to.clone(), bytes.clone()));
        }
    }

    fn arm(&mut self, ctx: &mut Ctx<'_, A>, name: TimerName, after: Duration) {
        ctx.queue.arm(&mut self.armed, TxRef::Server(self.id), name, ctx.now, after);
    }

    /// Enters a lingering state, or Terminated at once when the linger time is zero
    /// (reliable transports: timers I and J, §17.2.1, §17.2.2).
    fn linger(&mut self, ctx: &mut Ctx<'_, A>, state: ServerState, name: TimerName, after: Duration) {
        ctx.queue.cancel(&mut self.armed, Slot::Retransmit);
        ctx.queue.cancel(&mut self.armed, Slot::Timeout);
        if after.is_zero() {
            self.state = ServerState::Terminated;
        } else {
            self.state = state;
            self.arm(ctx, name, after);
        }
    }

    /// The request that created the transaction arrived again.
    pub(super) fn handle_retransmission(&mut self, ctx: &mut Ctx<'_, A>) {
        match self.state {
            // §17.2.1, §17.2.2: resend the most recent provisional, or the final.
            ServerState::Proceeding | ServerState::Completed => self.resend_last(ctx),
            // §17.2.2: discarded while Trying. RFC 6026 §7.1: absorbed while Accepted, the
            // TU retransmits its 2xx on its own schedule.
            ServerState::Trying | ServerState::Confirmed | ServerState::Accepted | ServerState::Terminated => {}
        }
    }

    /// An ACK matched this (INVITE) transaction.
    pub(super) fn handle_ack(&mut self, ctx: &mut Ctx<'_, A>) -> AckOutcome {
        match self.state {
            // §17.2.1: the ACK stops timers G and H; timer I absorbs its retransmissions.
            ServerState::Completed => {
                self.linger(ctx, ServerState::Confirmed, TimerName::I, ctx.timers.timer_i(self.reliable));
                AckOutcome::Absorbed
            }
            ServerState::Accepted => AckOutcome::ToTu,
            // Retransmitted ACKs, or an ACK for a final we never sent: nothing to do.
            _ => AckOutcome::Absorbed,
        }
    }

    /// The TU sends a response on this transaction.
    pub(super) fn respond(&mut self, response: &Message, ctx: &mut Ctx<'_, A>) -> Result<(), TransactionError> {
        let code = response.status().ok_or(TransactionError::NotAResponse)?;
        if !(100..=699).contains(&code) {
            return Err(TransactionError::InvalidStatus(code));
        }
        let final_response = code >= 200;
        if self.invite {
            self.respond_invite(code, response, ctx)?;
        } else {
            self.respond_non_invite(final_response, response, ctx)?;
        }
        if final_response {
            self.response_to_tag = response.to().ok().and_then(|t| t.tag().map(str::to_owned));
        }
        Ok(())
    }

    fn respond_invite(&mut self, code: u16, response: &Message, ctx: &mut Ctx<'_, A>) -> Result<(), TransactionError> {
        match (self.state, code) {
            (ServerState::Proceeding, 100..=199) => self.send(ctx, response.encode()),
            // RFC 6026 §7.1: a 2xx moves to Accepted for timer L; the TU owns its
            // retransmission and may send it again through the transaction.
            (ServerState::Proceeding, 200..=299) => {
                self.send(ctx, response.encode());
                self.state = ServerState::Accepted;
                self.arm(ctx, TimerName::L, ctx.timers.timer_l());
            }
            (ServerState::Accepted, 200..=299) => self.send(ctx, response.encode()),
            // §17.2.1: timer G retransmits over unreliable transports, timer H waits for
            // the ACK.
            (ServerState::Proceeding, _) => {
                self.send(ctx, response.encode());
                self.state = ServerState::Completed;
                if !self.reliable {
                    self.interval = ctx.timers.timer_g();
                    self.arm(ctx, TimerName::G, self.interval);
                }
                self.arm(ctx, TimerName::H, ctx.timers.timer_h());
            }
            _ => return Err(TransactionError::AlreadyFinal),
        }
        Ok(())
    }

    fn respond_non_invite(
        &mut self,
        final_response: bool,
        response: &Message,
        ctx: &mut Ctx<'_, A>,
    ) -> Result<(), TransactionError> {
        if !matches!(self.state, ServerState::Trying | ServerState::Proceeding) {
            return Err(TransactionError::AlreadyFinal);
        }
        self.send(ctx, response.encode());
        if final_response {
            // §17.2.2: timer J absorbs request retransmissions.
            self.linger(ctx, ServerState::Completed, TimerName::J, ctx.timers.timer_j(self.reliable));
        } else {
            self.state = ServerState::Proceeding;
        }
        Ok(())
    }

    pub(super) fn handle_timer(&mut self, name: TimerName, ctx: &mut Ctx<'_, A>) {
        match (name, self.state) {
            // §17.2.1: resend the final, doubling up to T2.
            (TimerName::G, ServerState::Completed) => {
                self.resend_last(ctx);
                self.interval = ctx.timers.backoff_capped(self.interval);
                self.arm(ctx, TimerName::G, self.interval);
            }
            // §17.2.1: the ACK never came.
            (TimerName::H, ServerState::Completed) => {
                ctx.events.push_back(Event::ServerAckTimeout { id: self.id });
                ctx.queue.cancel(&mut self.armed, Slot::Retransmit);
                self.state = ServerState::Terminated;
            }
            (TimerName::I, ServerState::Confirmed)
            | (TimerName::J, ServerState::Completed)
            | (TimerName::L, ServerState::Accepted) => self.state = ServerState::Terminated,
            _ => {}
        }
    }

    pub(super) fn is_invite(&self) -> bool {
        self.invite
    }
}

/// 100 Trying for a request (§8.2.6.1: no To tag added, Timestamp copied).
fn trying(request: &Message) -> Message {
    let mut resp = request.make_response(100, "Trying", None);
    let timestamp = HeaderName::other("Timestamp");
    for h in request.headers.get_all(&timestamp) {
        resp.headers.push(h.clone());
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse;

    #[test]
    fn trying_copies_timestamp_and_adds_no_tag() {
        let req = parse(Bytes::from(
            "INVITE sip:b@example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\n\
             To: <sip:b@example.com>\r\nFrom: <sip:a@example.com>;tag=1\r\n\
             Call-ID: c1\r\nCSeq: 1 INVITE\r\nTimestamp: 54\r\nContent-Length: 0\r\n\r\n",
        ))
        .unwrap();
        let t = parse(trying(&req).encode()).unwrap();
        assert_eq!(t.status(), Some(100));
        assert_eq!(t.to().unwrap().tag(), None);
        let ts = HeaderName::other("Timestamp");
        assert_eq!(t.headers.get(&ts).map(|h| h.value()), Some(&b"54"[..]));
    }
}
