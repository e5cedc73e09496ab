//! The proxy's side of the media anchor (`crate::media::anchor`, issue 14): the proxy hands
//! the anchor every message that crosses between a local phone and the overlay, in both
//! directions, so the anchor can add or take out its ICE part and rewrite or learn the SDP;
//! and it ends a call whose media path never formed with a final response the caller's phone
//! can show (RFC 3261 §16.7 step 6 style: its branches cancelled, then 503 with the reason).

use std::time::Instant;

use crate::media::anchor::{Anchor, AnchorEvent, AnchorIdentity, MediaInput, MediaOutput};
use crate::sip::transaction::TransactionLayer;
use crate::sip::validate::Rejection;
use crate::sip::{Message, Method};
use crate::transport::{Endpoint, Listener};

use super::Proxy;

impl Proxy {
    /// Turns the media anchor on (`[media]`); off, SDP passes untouched as before.
    pub fn set_anchor(&mut self, anchor: Anchor) {
        self.anchor = Some(anchor);
    }

    /// The anchor, when on.
    pub fn anchor(&self) -> Option<&Anchor> {
        self.anchor.as_ref()
    }

    /// The node's enrolled identity, which proves its user's calls to the far node.
    pub fn set_anchor_identity(&mut self, identity: AnchorIdentity) {
        if let Some(a) = self.anchor.as_mut() {
            a.set_identity(identity);
        }
    }

    /// Where spare legs ask for their server-reflexive address.
    pub fn set_media_reflectors(&mut self, reflectors: Vec<std::net::SocketAddr>) {
        if let Some(a) = self.anchor.as_mut() {
            a.set_reflectors(reflectors);
        }
    }

    /// What the daemon reports about the anchor's sockets.
    pub fn media_input(&mut self, now: Instant, tl: &mut TransactionLayer<Endpoint>, input: MediaInput) {
        if let Some(a) = self.anchor.as_mut() {
            a.handle_input(now, input);
        }
        self.anchor_events(now, tl);
    }

    /// The next thing the anchor asks of the daemon.
    pub fn poll_media(&mut self) -> Option<MediaOutput> {
        self.anchor.as_mut()?.poll_output()
    }

    /// The anchor's timers, from [`Proxy::handle_timeout`].
    pub(super) fn anchor_timeout(&mut self, now: Instant, tl: &mut TransactionLayer<Endpoint>) {
        if let Some(a) = self.anchor.as_mut() {
            if a.poll_timeout().is_some_and(|at| at <= now) {
                a.handle_timeout(now);
            }
        }
        self.anchor_events(now, tl);
    }

    /// A call whose path never formed before it was answered: the caller's phone gets 503
    /// with the reason, and the ringing phones a CANCEL.
    fn anchor_events(&mut self, now: Instant, tl: &mut TransactionLayer<Endpoint>) {
        while let Some(AnchorEvent::PathFailed { call_id }) = self.anchor.as_mut().and_then(Anchor::poll_event) {
            let sid = self
                .contexts
                .iter()
                .find(|(_, c)| {
                    c.from_listener == Listener::Proxy
                        && !c.final_sent
                        && c.request.method() == Some(&Method::Invite)
                        && c.request.call_id().ok() == Some(call_id.as_str())
                })
                .map(|(sid, _)| *sid);
            let Some(sid) = sid else { continue };
            self.cancel_branches(now, tl, sid, None);
            self.answer_with(now, tl, sid, 503, "Service Unavailable (no media path to the other node)");
        }
    }

    /// A copy leaving our phone's side for another node.
    pub(super) fn anchor_toward_overlay(&mut self, now: Instant, from: Listener, to: Listener, msg: &mut Message) {
        if from == Listener::Proxy && to == Listener::Overlay {
            if let Some(a) = self.anchor.as_mut() {
                a.toward_overlay(now, msg);
            }
        }
    }

    /// A message from another node on its way to our phone.
    pub(super) fn anchor_toward_phone(
        &mut self,
        now: Instant,
        from: Listener,
        to: Listener,
        msg: &mut Message,
    ) -> Result<(), Rejection> {
        if from == Listener::Overlay && to == Listener::Proxy {
            if let Some(a) = self.anchor.as_mut() {
                return a.toward_phone(now, msg);
            }
        }
        Ok(())
    }
}
