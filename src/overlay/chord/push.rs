//! Pushing neighbour changes back along the ring, so a change reaches the `r` nodes whose
//! successor lists hold it within `r` short round trips instead of `r` stabilize periods.
//!
//! Chord learns a new or failed neighbour by polling: each node's list is its successor's
//! list shifted by one, copied at its next `stabilize` (Chord ToN §IV-E.3), so a change at
//! depth `k` of a list reaches the node `k` places back after `k` periods (a successor list
//! eight deep filled in about 40 s). Here a node whose predecessor or successor list changed
//! tells its predecessor at once with [`Request::Changed`], carrying only the digest of its
//! new neighbours. The predecessor compares it with the digest of the last answer it had from
//! its successor and, if they differ, stabilizes right away: its `GetNeighbours` is the same
//! conditional question as the periodic one, so what it adopts still comes from an answer to
//! its own question. The predecessor's list then changes, and it pushes in turn, until the
//! change has fallen off the end of the lists.
//!
//! A join is the one change the push along the list misses: a node that joins between `p` and
//! its successor `s` and is admitted by `s` (or notifies it) becomes `s`'s predecessor, and
//! `p`, whose successor it now is, would hear of it only at its next stabilize. So `s` tells
//! its former predecessor as well ([`Chord::tell_former_predecessor`]). And a node that
//! becomes our predecessor after our last push went to the one before it may hold an older
//! copy of our list (it took it from the node that admitted it): it is pushed ours too, unless
//! we have just answered it with our list as it is.
//!
//! A forged push (from an address we cannot tell from our successor's over UDP) costs its
//! target one `GetNeighbours` to its own, real, successor, no more than one per
//! [`HINT_GAP`]: no amplification and no change of state.

use std::time::{Duration, Instant};

use super::{Chord, NodeState, Purpose};
use crate::overlay::rpc::{neighbours_digest, Contact, Request, RpcTarget};

/// Pushes bring a stabilize round forward to no sooner than this after the last one started.
pub(super) const HINT_GAP: Duration = Duration::from_millis(20);

/// A change is pushed this long after it is first seen, so that the changes of one stabilize
/// round, or of a join and the proof that follows it, go out as one push.
pub(super) const PUSH_DELAY: Duration = Duration::from_millis(50);

impl Chord {
    /// What every input ends with: push our neighbours if they changed, and start the round a
    /// push asked for during the last one.
    pub(super) fn after_input(&mut self, now: Instant) {
        if self.stabilize_hinted && self.stabilize_steps.is_none() {
            self.stabilize_hinted = false;
            self.stabilize_soon(now);
        }
        self.push_changes(now);
    }

    /// A [`Request::Changed`] from `from`: only our first successor's counts, and only if it
    /// says something other than its last answer did.
    pub(super) fn on_changed(&mut self, now: Instant, from: &Contact, digest: u64) {
        if self.successors.first() != Some(from) {
            tracing::debug!(node = ?self.me.id, from = ?from.id, "a push from a node that is not our successor: ignored");
            return;
        }
        let known = self
            .neighbours_cache
            .as_ref()
            .filter(|c| c.from == *from)
            .map(|c| neighbours_digest(c.predecessor.as_ref(), &c.successors));
        if known != Some(digest) {
            tracing::debug!(node = ?self.me.id, from = ?from.id, "our successor's neighbours changed: stabilizing soon");
            self.counters.pushes_heeded += 1;
            self.stabilize_soon(now);
        }
    }

    /// Our successor's neighbours changed: stabilize soon (at once, unless a round is in
    /// flight or the last one started less than [`HINT_GAP`] ago).
    fn stabilize_soon(&mut self, now: Instant) {
        if !self.participating() {
            return;
        }
        if self.stabilize_steps.is_some() {
            self.stabilize_hinted = true;
            return;
        }
        let earliest = self.stabilize_started_at.map_or(now, |t| (t + HINT_GAP).max(now));
        self.stabilize_at = self.stabilize_at.min(earliest);
    }

    /// The digest of what our predecessor's list copies of ours: us and our first `r - 1`.
    fn copied_digest(&self) -> u64 {
        let copied = self.successors.capacity().saturating_sub(1);
        let list = self.successors.as_slice();
        neighbours_digest(None, &list[..list.len().min(copied)])
    }

    /// `to` was just given our list in an answer: if it becomes our predecessor, it has it.
    pub(super) fn note_answered(&mut self, to: &Contact) {
        self.answered = Some((to.id, self.copied_digest()));
    }

    /// Tells our predecessor that our successor list changed where its own list copies it:
    /// its list is us and then our first `r - 1`, so a change at depth `r` alone, or of our
    /// predecessor alone, is not pushed. One push in flight at a time; a change made meanwhile
    /// is pushed when it is answered.
    fn push_changes(&mut self, now: Instant) {
        let predecessor = self.predecessor.clone().filter(|_| self.state == NodeState::Joined);
        let Some(predecessor) = predecessor else {
            self.push_at = None;
            return;
        };
        let list = self.successors.as_slice();
        let trigger = self.copied_digest();
        if self.pushed_to.is_some_and(|p| p != predecessor.id) && self.answered == Some((predecessor.id, trigger)) {
            // The new predecessor's question or join was answered with our list as it is.
            self.pushed_to = Some(predecessor.id);
            self.pushed_digest = Some(trigger);
        }
        match self.pushed_digest {
            // Our first list, just taken from a join or a stabilize: the predecessor that
            // admitted us or stabilized with us has it already.
            None => {
                self.pushed_digest = Some(trigger);
                self.pushed_to = Some(predecessor.id);
            }
            // A new predecessor may hold an older copy of our list than the one we last
            // pushed, to the predecessor before it: a node that joined just before us took our
            // list from the node that admitted it, while our last push went to our former
            // predecessor (B4: a joiner missed a node at depth 7 for 5 s). It is pushed our
            // list too; if its copy is current, it ignores the push.
            Some(d) if d == trigger && self.pushed_to.is_none_or(|p| p == predecessor.id) => self.push_at = None,
            Some(_) => {
                let due = *self.push_at.get_or_insert(now + PUSH_DELAY);
                if now < due || self.pushing {
                    return;
                }
                self.push_at = None;
                self.pushed_digest = Some(trigger);
                self.pushed_to = Some(predecessor.id);
                if !self.is_failed(now, predecessor.id) && predecessor.id != self.me.id {
                    self.pushing = true;
                    // What the predecessor compares with its last answer from us: the digest
                    // of that whole answer as it would be now.
                    let digest = neighbours_digest(Some(&predecessor), list);
                    tracing::debug!(node = ?self.me.id, to = ?predecessor.id, "pushing our changed neighbours");
                    self.send(now, RpcTarget::Node(predecessor), Request::Changed { digest }, Purpose::Push);
                }
            }
        }
    }

    /// Our predecessor changed from `former` to a node between it and us: `former` has a new
    /// successor and is told at once, by the digest of the answer it would now get from us.
    /// Also a node that notified us from behind our live predecessor: it too has a closer
    /// successor than us (`on_check_predecessor_answer`).
    pub(super) fn tell_former_predecessor(&mut self, now: Instant, former: Contact) {
        let Some(predecessor) = self.predecessor.clone() else { return };
        if self.state != NodeState::Joined || former.id == self.me.id || self.is_failed(now, former.id) {
            return;
        }
        let digest = neighbours_digest(Some(&predecessor), self.successors.as_slice());
        self.send(now, RpcTarget::Node(former), Request::Changed { digest }, Purpose::Handover);
    }

    /// When a push is due, if one waits and none is in flight.
    pub(super) fn push_due(&self) -> Option<Instant> {
        self.push_at.filter(|_| !self.pushing)
    }
}
