//! Hedged lookup hops: a routing step that has not been answered within a few round trips is
//! given up on by the lookup, which goes on with the next candidate while the first request
//! stays outstanding.
//!
//! Without this, each dead node on a lookup's path costs the whole RPC deadline
//! (`ChordConfig::rpc_timeout`, 2 s) in series: right after half the ring fails, lookups took
//! p50 10 s (docs/performance.md, B2 and B4). The step's soft deadline comes from the round
//! trips this node has measured (RFC 6298 §2's smoothed RTT and variance, with §5's back-off
//! not needed since nothing is retransmitted here), clamped to [`SOFT_MIN`] and the RPC
//! deadline. Giving up on a hop is local to the lookup: the node is not marked failed unless
//! its request reaches the full deadline, so a slow node is only skipped, never declared dead.
//! An answer that arrives after its hop was given up on still adds what it says to the
//! lookup's candidates (a redirect's closer nodes), but does not start another branch: each
//! lookup waits on one request at a time. A lookup left with nobody to ask while such
//! requests are in flight waits for them instead of ending (or falling back on its own
//! successor list), and takes the first that comes back as its answer. A late answer in
//! which the asked node names itself responsible ends the lookup whatever it is doing: that
//! is the answer a lookup looks for.
//!
//! A confirmation (`FindSuccessor` to the node an answer named) is hedged too, but never
//! skipped: at its soft deadline the named node is asked again by a request of its own (a
//! lost datagram would otherwise be retransmitted only at SIP's T1, 500 ms) and the next
//! backup is asked alongside, while the named node stays awaited; the lookup decides in the
//! chain's order (`Lookup::resolve`), so a backup is taken only once every node before it
//! has failed, unless it names itself. A node is given up on by the lookup after
//! [`CONFIRM_RTOS`] soft deadlines, at least [`CONFIRM_MIN`]: that is a verdict rather than a
//! skip, since a backup taken while the named node is merely slow is a wrong answer; three
//! retransmission timeouts of RFC 6298 is where TCP, too, stops trusting a path. Right after
//! half the ring fails, half of all answers name a dead node, and its backups may be dead
//! too: waiting the full RPC deadline for each in turn made the p95 of such lookups 2-3 s.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::{Chord, Pending, Purpose};
use crate::overlay::lookup::LookupId;
use crate::overlay::rpc::{Contact, Request, Response, RpcFailure, RpcId, RpcTarget};

/// The shortest soft deadline, whatever the measured round trips: a few scheduler ticks of a
/// loaded machine. Skipping a hop that is merely slow costs one redundant request; on loopback
/// or a LAN, where measured round trips are far below this, every dead hop costs this much.
pub(super) const SOFT_MIN: Duration = Duration::from_millis(50);

/// How many soft deadlines a confirmation is given before the lookup gives its named node up.
pub(super) const CONFIRM_RTOS: u32 = 3;

/// The shortest time a confirmation is given, whatever the measured round trips: giving up on
/// a live node there gives a wrong answer, so it stays well above a loaded machine's
/// scheduling delays (tens of milliseconds), where skipping a routing hop only costs a request.
pub(super) const CONFIRM_MIN: Duration = Duration::from_millis(300);

/// RFC 6298 §2: smoothed round-trip time and its variation, from answered requests.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
}

impl RttEstimator {
    /// One measured round trip (§2.2, §2.3 with α = 1/8, β = 1/4).
    pub(super) fn sample(&mut self, r: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(s) => {
                let delta = s.abs_diff(r);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((s * 7 + r) / 8);
            }
        }
    }

    /// SRTT + 4·RTTVAR (§2.3), within [`SOFT_MIN`] and `max`; `max` before any sample.
    pub(super) fn soft_timeout(&self, max: Duration) -> Duration {
        match self.srtt {
            None => max,
            Some(s) => (s + self.rttvar * 4).clamp(SOFT_MIN, max.max(SOFT_MIN)),
        }
    }
}

impl Chord {
    /// The soft deadline of a routing step sent now.
    pub(super) fn soft_deadline(&self, now: Instant) -> Instant {
        now + self.rtt.soft_timeout(self.config.rpc_timeout)
    }

    /// When a confirmation sent now is given up on by its lookup.
    pub(super) fn confirm_deadline(&self, now: Instant) -> Instant {
        let soft = self.rtt.soft_timeout(self.config.rpc_timeout);
        now + (soft * CONFIRM_RTOS).clamp(CONFIRM_MIN, self.config.rpc_timeout.max(CONFIRM_MIN))
    }

    /// Gives up on the routing steps whose soft deadline has passed and whose lookup still
    /// waits on them: the lookup goes on with its next candidate, or, for a confirmation, asks
    /// the next backup while the first stays awaited. Then gives the confirmations whose
    /// verdict is due up on, for their lookups only.
    pub(super) fn hedge_due(&mut self, now: Instant) {
        while let Some((rpc, lookup, asked)) = pop_due(&mut self.soft_deadlines, &self.pending, now) {
            let Some(active) = self.lookups.get_mut(&lookup) else { continue };
            if active.waiting != Some(rpc) {
                continue;
            }
            if active.lookup.is_confirming(asked.id) {
                // Asked again, by a request of its own: a lost datagram (SIP over UDP would
                // retransmit only at T1, 500 ms, after the verdict) must not make a live node
                // look failed, which would hand its keys to a backup.
                let key = active.lookup.key();
                let backup = active.lookup.has_backup();
                active.stragglers += 1;
                let purpose = Purpose::Lookup { lookup, asked: asked.clone() };
                self.send(now, RpcTarget::Node(asked), Request::FindSuccessor { key }, purpose);
                if !backup {
                    // Nobody else to ask: the verdict decides.
                    continue;
                }
                self.counters.confirmations_hedged += 1;
            } else {
                // Not `Lookup::failed`: that would let a successor list's next entry stand in
                // for a node that may only be slow. Asked already, it is not asked again.
                self.counters.hops_hedged += 1;
            }
            let Some(active) = self.lookups.get_mut(&lookup) else { continue };
            active.waiting = None;
            active.stragglers += 1;
            self.lookup_step(now, lookup);
        }
        while let Some((rpc, lookup, asked)) = pop_due(&mut self.verdicts, &self.pending, now) {
            let Some(active) = self.lookups.get_mut(&lookup) else { continue };
            if !active.lookup.awaits(asked.id) {
                continue;
            }
            // The lookup's verdict, not the ring's: the node is marked failed only if the
            // request reaches its full deadline, and its answer until then is only news.
            if active.waiting == Some(rpc) {
                active.waiting = None;
                active.stragglers += 1;
            }
            active.lookup.failed(asked.id);
            self.resolve_confirmation(now, lookup, None);
        }
    }

    /// The answer to a routing step its lookup gave up on: what it teaches is kept, and the
    /// lookup, which has moved on, is not stepped again.
    pub(super) fn on_superseded_answer(
        &mut self,
        now: Instant,
        id: LookupId,
        asked: &Contact,
        result: &Result<Response, RpcFailure>,
    ) {
        match result {
            Ok(Response::Successor { node, .. }) if node.id == asked.id => {
                self.finish_lookup(now, id, Ok(asked.clone()));
            }
            Ok(Response::Closer { nodes }) => {
                if let Some(active) = self.lookups.get_mut(&id) {
                    active.lookup.add_closer(asked, nodes);
                    active.lookup.answered(asked);
                }
            }
            Ok(Response::Successor { .. } | Response::Neighbours { .. }) => {
                if let Some(active) = self.lookups.get_mut(&id) {
                    active.lookup.answered(asked);
                }
            }
            Err(e) if *e != RpcFailure::Busy => {
                self.mark_failed(now, asked.id);
                if let Some(active) = self.lookups.get_mut(&id) {
                    active.lookup.failed(asked.id);
                }
            }
            _ => {}
        }
    }
}

/// Takes the next entry of `due` whose time has come and that is a lookup's request still in
/// flight, skipping the others; `None` when nothing more is due.
fn pop_due(
    due: &mut BTreeSet<(Instant, RpcId)>,
    pending: &BTreeMap<RpcId, Pending>,
    now: Instant,
) -> Option<(RpcId, LookupId, Contact)> {
    while let Some(&(at, rpc)) = due.first() {
        if at > now {
            return None;
        }
        due.pop_first();
        if let Some(Purpose::Lookup { lookup, asked }) = pending.get(&rpc).map(|p| &p.purpose) {
            return Some((rpc, *lookup, asked.clone()));
        }
    }
    None
}
