//! Return routability (docs/security.md, H5): a request changes who our predecessor,
//! successor or fingers are only once the node it names has shown that it receives what we
//! send to its address. Over UDP the source of a request is whatever the sender wrote, so a
//! notify, join or leave "from" a node proves nothing by itself.
//!
//! A node is *proven* while it has answered one of our requests (sent to its address, matched
//! by a branch only it could have read) within [`PROVEN_FOR`]. A notify from a node not
//! proven sends it a `Ping` first and takes effect on the answer; so does a finger. A join
//! takes effect at once, as dSIP §6.3 has the admitting node update its links (the records the
//! joiner publishes right away must find it), and is undone when the joiner does not answer
//! the ping that follows: a forged join lives at most one RPC timeout, during which lookups
//! that name the joiner fail their confirmation with it rather than return it. A leave is the other way
//! round: it takes effect only if the leaving node does not answer, or answers that it is
//! leaving; a node that answers a ping normally has not left, and the leave was forged.

use std::time::{Duration, Instant};

use tracing::debug;

use super::{Chord, Purpose};
use crate::overlay::rpc::{Contact, RefuseReason, Request, Response, RpcFailure, RpcTarget};

/// How long an answer proves a node's address.
pub(crate) const PROVEN_FOR: Duration = Duration::from_secs(120);
/// Proofs in flight at once; further unproven requests are ignored until some end (a flood of
/// spoofed notifies must not grow our state or our traffic without bound).
const MAX_PROVING: usize = 64;

/// What a request asked for, done once its sender is proven (or, for a leave, disproven).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Then {
    /// `notify`: it may be our predecessor.
    Notify,
    /// `join`: it may be our new first successor.
    Successor,
    /// `leave`, with its hand-off.
    Leave { predecessor: Option<Contact>, successors: Vec<Contact> },
    /// Any request from a node that would be a better finger.
    Finger,
}

impl Then {
    /// Which kind of request waits: one proof of each kind per node at a time.
    pub(super) fn kind(&self) -> u8 {
        match self {
            Then::Notify => 0,
            Then::Successor => 1,
            Then::Leave { .. } => 2,
            Then::Finger => 3,
        }
    }
}

impl Chord {
    /// Whether `c` has answered one of our requests at its address lately: a source that has
    /// proved it receives what is sent to it (for the driver's amplification limit).
    pub fn has_answered(&self, now: Instant, c: &Contact) -> bool {
        self.is_proven(now, c)
    }

    /// Whether `c` answered one of our requests, at that address, within [`PROVEN_FOR`].
    pub(super) fn is_proven(&self, now: Instant, c: &Contact) -> bool {
        self.proven
            .get(&c.id)
            .is_some_and(|(addr, at)| *addr == c.addr && now.saturating_duration_since(*at) < PROVEN_FOR)
    }

    /// An answer came from `to`: its address is proven now. Refusals count too: only the node
    /// at that address could have read our request's branch.
    pub(super) fn note_answer(&mut self, now: Instant, to: &RpcTarget, result: &Result<Response, RpcFailure>) {
        if let (RpcTarget::Node(c), Ok(_) | Err(RpcFailure::Busy)) = (to, result) {
            self.proven.insert(c.id, (c.addr, now));
        }
    }

    /// Forgets proofs older than [`PROVEN_FOR`].
    pub(super) fn expire_proofs(&mut self, now: Instant) {
        self.proven.retain(|_, (_, at)| now.saturating_duration_since(*at) < PROVEN_FOR);
    }

    /// Pings `candidate` and does `then` on its answer, unless the same proof is under way.
    pub(super) fn prove(&mut self, now: Instant, candidate: Contact, then: Then) {
        let key = (candidate.id, then.kind());
        if self.proving.contains(&key) {
            return;
        }
        if self.proving.len() >= MAX_PROVING {
            self.counters.proofs_dropped += 1;
            return;
        }
        self.proving.insert(key);
        debug!(node = ?self.me.id, ?candidate, ?then, "proving a node's address before acting on its request");
        self.send(now, RpcTarget::Node(candidate.clone()), Request::Ping, Purpose::Prove { candidate, then });
    }

    pub(super) fn on_proof(
        &mut self,
        now: Instant,
        candidate: Contact,
        then: Then,
        result: Result<Response, RpcFailure>,
    ) {
        self.proving.remove(&(candidate.id, then.kind()));
        let answered = matches!(result, Ok(Response::Ok));
        match then {
            Then::Notify if answered => self.notify(now, candidate),
            Then::Finger if answered => {
                if self.participating() {
                    self.fingers.offer(&candidate);
                }
            }
            Then::Finger => {}
            Then::Successor if answered => {}
            Then::Successor => {
                // Admitted on its word, and it does not answer at its address: undone.
                self.counters.proofs_failed += 1;
                self.mark_failed(now, candidate.id);
                let old_first = self.first_successor_id();
                if self.successors.remove(candidate.id) {
                    self.successors_touched(old_first);
                }
            }
            Then::Leave { predecessor, successors } => {
                let leaving = matches!(
                    result,
                    Ok(Response::Refused { reason: RefuseReason::Leaving })
                        | Err(RpcFailure::Timeout | RpcFailure::Unreachable)
                );
                if leaving {
                    self.on_leave_confirmed(now, candidate, predecessor, &successors);
                } else {
                    // It answers as a live node: someone else sent that leave.
                    self.counters.leaves_ignored += 1;
                }
            }
            Then::Notify => self.counters.proofs_failed += 1,
        }
    }
}
