//! The proxy's door to the mailbox (`crate::mailbox`): a MESSAGE from one of our phones that
//! finds nobody (the overlay has no live registration for its user, or every branch timed out
//! or came back 404/480/503) is not refused but handed to the peer, which seals it into the
//! user's mailbox and answers it here, `202 Accepted` or a final error (RFC 3428 §7). The
//! server transaction stays ours meanwhile, parked as for a registration fetch.

use std::time::Instant;

use super::{Context, Proxy};
use crate::sip::transaction::{ServerTxId, TransactionLayer};
use crate::sip::{Message, Method, Uri};
use crate::transport::{Endpoint, Listener};

/// Marks a context parked for the mailbox rather than for a registration fetch.
const MAILBOX_PARK: &str = "mailbox";

/// A phone's MESSAGE on its way to a mailbox.
#[derive(Debug, Clone)]
pub struct OfflineRequest {
    /// Its server transaction, answered with [`Proxy::offline_answer`].
    pub sid: ServerTxId,
    /// The recipient's AoR.
    pub aor: String,
    /// The MESSAGE as the phone sent it.
    pub request: Message,
}

impl Proxy {
    /// Turns store-and-forward on: this node can seal and store messages.
    pub fn set_offline_delivery(&mut self, on: bool) {
        self.offline_on = on;
    }

    /// Whether a phone's request outside a dialog may use this node (a registered flow, or
    /// digest credentials), as for any request it forwards; the refusal says why not.
    pub fn admit_phone(
        &mut self,
        now: Instant,
        from: Endpoint,
        req: &Message,
    ) -> Result<(), crate::sip::validate::Rejection> {
        self.admit_phone_request(now, from, req)
    }

    /// Who another node's request proves its sender to be (its `Identity`, docs/security.md
    /// M5); a refusal when it proves nobody.
    pub fn check_caller(
        &mut self,
        now: Instant,
        req: &Message,
    ) -> Result<crate::identity::Aor, crate::sip::validate::Rejection> {
        match self.callers.as_mut() {
            Some(c) => c.check(now, req),
            None => Err(super::identity::cannot_check()),
        }
    }

    /// A Via for a request of ours to a phone (a delivery from the mailbox).
    pub fn phone_via(&mut self, transport: crate::transport::Transport) -> crate::sip::header::Via {
        self.via(transport)
    }

    /// The next MESSAGE handed to the mailbox.
    pub fn poll_offline(&mut self) -> Option<OfflineRequest> {
        self.offline.pop_front()
    }

    /// Whether the request of `ctx`, which found nobody, goes to its recipient's mailbox: a
    /// MESSAGE from one of our phones to a user of our domain. If so it is parked and queued
    /// for [`Proxy::poll_offline`].
    pub(super) fn divert_to_mailbox(&mut self, sid: ServerTxId, ctx: &mut Context) -> bool {
        if !self.offline_on || ctx.from_listener != Listener::Proxy || ctx.request.method() != Some(&Method::Message) {
            return false;
        }
        let Some(Uri::Sip(sip)) = ctx.request.request_uri() else { return false };
        let Some(user) = sip.user_unescaped().and_then(|u| String::from_utf8(u).ok()) else { return false };
        if !self.is_our_domain(sip) {
            return false;
        }
        let aor = format!("sip:{user}@{}", self.config.domain);
        ctx.parked = Some(MAILBOX_PARK.to_owned());
        self.status.sent_to_mailbox += 1;
        self.offline.push_back(OfflineRequest { sid, aor, request: ctx.request.clone() });
        true
    }

    /// The mailbox's answer to a MESSAGE it took.
    pub fn offline_answer(
        &mut self,
        now: Instant,
        tl: &mut TransactionLayer<Endpoint>,
        sid: ServerTxId,
        status: u16,
        reason: &str,
    ) {
        let Some(ctx) = self.contexts.get_mut(&sid) else { return };
        if ctx.final_sent || ctx.parked.as_deref() != Some(MAILBOX_PARK) {
            return;
        }
        ctx.parked = None;
        self.answer_with(now, tl, sid, status, reason);
    }
}
