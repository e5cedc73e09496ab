//! CANCEL (RFC 3261 §9.2, §16.10) and Timer C (§16.6 step 11, §16.8): a CANCEL from a phone
//! ends the INVITE it matches with 487 and cancels every pending branch; a branch that goes
//! too long without a provisional response is cancelled, or ends as a 408.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::Rng;
use tracing::debug;

use super::forward::better;
use super::Proxy;
use crate::sip::transaction::{ClientTxId, ServerTxId, TransactionLayer};
use crate::sip::validate::Rejection;
use crate::sip::Message;
use crate::transport::Endpoint;

/// After a CANCEL sent because Timer C fired, how long the branch may still take to end
/// with a final response before it counts as a 408: 64·T1, as a UAC waits for the final
/// response after its CANCEL (RFC 3261 §9.1).
const CANCEL_GRACE: Duration = Duration::from_secs(32);

#[derive(Debug, Default)]
pub(super) struct Deadlines {
    by_id: BTreeMap<ClientTxId, Instant>,
    queue: BTreeSet<(Instant, ClientTxId)>,
}

impl Deadlines {
    /// Starts or restarts the timer of `id`.
    pub(super) fn arm(&mut self, id: ClientTxId, at: Instant) {
        if let Some(old) = self.by_id.insert(id, at) {
            self.queue.remove(&(old, id));
        }
        self.queue.insert((at, id));
    }

    pub(super) fn disarm(&mut self, id: ClientTxId) {
        if let Some(old) = self.by_id.remove(&id) {
            self.queue.remove(&(old, id));
        }
    }

    pub(super) fn next(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// Removes and returns the first timer due at `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<ClientTxId> {
        let &(at, id) = self.queue.first().filter(|(at, _)| *at <= now)?;
        self.queue.remove(&(at, id));
        self.by_id.remove(&id);
        Some(id)
    }
}

impl Proxy {
    /// §16.10: a CANCEL for an INVITE we are forwarding gets 200, the INVITE 487, and every
    /// branch still pending a CANCEL of its own.
    pub(super) fn cancel(
        &mut self,
        now: Instant,
        tl: &mut TransactionLayer<Endpoint>,
        id: ServerTxId,
        req: &Message,
        invite: Option<ServerTxId>,
    ) {
        let Some(invite) = invite.filter(|i| self.contexts.contains_key(i)) else {
            // §16.10: nothing to cancel here.
            return self.reject(now, tl, id, req, Rejection::new(481, "Call/Transaction Does Not Exist"));
        };
        let tag = self.tag();
        self.respond(now, tl, id, req.make_response(200, "OK", Some(&tag)));
        let Some(ctx) = self.contexts.get_mut(&invite) else { return };
        if !ctx.final_sent {
            ctx.final_sent = true;
            let resp = ctx.request.make_response(487, "Request Terminated", Some(&tag));
            self.respond(now, tl, invite, resp);
        }
        self.cancel_branches(now, tl, invite, None);
    }

    /// Sends CANCEL on every pending branch of `sid` except `keep` (§16.7 step 10, §16.10).
    pub(super) fn cancel_branches(
        &mut self,
        now: Instant,
        tl: &mut TransactionLayer<Endpoint>,
        sid: ServerTxId,
        keep: Option<ClientTxId>,
    ) {
        let Some(ctx) = self.contexts.get_mut(&sid) else { return };
        let mut to_send = Vec::new();
        for b in ctx.branches.iter_mut() {
            if Some(b.client) == keep || b.final_code.is_some() || b.cancelled {
                continue;
            }
            if b.provisional {
                b.cancelled = true;
                to_send.push((b.client, b.to));
            } else {
                b.cancel_pending = true;
            }
        }
        for (client, to) in to_send {
            self.send_cancel(now, tl, client, to);
        }
    }

    pub(super) fn send_cancel(
        &mut self,
        now: Instant,
        tl: &mut TransactionLayer<Endpoint>,
        client: ClientTxId,
        to: Endpoint,
    ) {
        if let Ok(cancel) = tl.make_cancel(client) {
            let id = tl.send_request(now, cancel, to, to.transport.is_reliable());
            self.cancels.insert(id);
        }
    }

    /// RFC 3261 §16.8: Timer C of an INVITE branch fired. After a provisional response the
    /// branch is cancelled (§9.1) and gets [`CANCEL_GRACE`] to end with its 487; without one
    /// (or when that grace runs out too) the branch ends as if it had received a 408, and the
    /// best response may go upstream (§16.7 step 6).
    pub(super) fn timer_c_fired(&mut self, now: Instant, tl: &mut TransactionLayer<Endpoint>, client: ClientTxId) {
        let Some(&sid) = self.branches.get(&client) else { return };
        let Some(ctx) = self.contexts.get_mut(&sid) else { return };
        let Some(b) = ctx.branches.iter_mut().find(|b| b.client == client && b.final_code.is_none()) else {
            return;
        };
        if b.provisional && !b.cancelled {
            debug!(%client, "Timer C fired after a provisional response; cancelling the branch");
            self.status.timer_c_fired += 1;
            b.cancelled = true;
            let to = b.to;
            self.timer_c.arm(client, now + CANCEL_GRACE);
            self.send_cancel(now, tl, client, to);
            return;
        }
        if !b.cancelled {
            self.status.timer_c_fired += 1;
        }
        debug!(%client, "Timer C fired; the branch counts as 408");
        b.final_code = Some(408);
        let tag = format!("{:016x}", self.rng.random::<u64>());
        let timeout = ctx.request.make_response(408, "Request Timeout", Some(&tag));
        if better(&timeout, ctx.best.as_ref()) {
            ctx.best = Some(timeout);
        }
        // The client transaction is ours to end: nothing it could still receive matters.
        let _ = tl.terminate_client(client);
        self.maybe_send_best(now, tl, sid);
    }
}
