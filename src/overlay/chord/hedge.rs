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
//! successor list), and takes the first that comes back as its answer.
//!
//! Only routing steps are hedged (`FindSuccessor` to a candidate, `GetNeighbours` for a
//! successor list). A confirmation keeps the full deadline: the named node is the one that
//! must say it is responsible, and a backup that answers while the named node is merely slow
//! would give a wrong answer.

use std::time::{Duration, Instant};

use super::{Chord, Purpose};
use crate::overlay::lookup::LookupId;
use crate::overlay::rpc::{Contact, Response, RpcFailure};

/// The shortest soft deadline, whatever the measured round trips: a few scheduler ticks of a
/// loaded machine, and above SIP's first retransmission on a lossless path.
pub(super) const SOFT_MIN: Duration = Duration::from_millis(200);

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

    /// Gives up on the routing steps whose soft deadline has passed and whose lookup still
    /// waits on them: the lookup goes on with its next candidate.
    pub(super) fn hedge_due(&mut self, now: Instant) {
        while let Some(&(at, rpc)) = self.soft_deadlines.first() {
            if at > now {
                break;
            }
            self.soft_deadlines.pop_first();
            let Some(Purpose::Lookup { lookup, asked }) = self.pending.get(&rpc).map(|p| p.purpose.clone()) else {
                continue;
            };
            let Some(active) = self.lookups.get_mut(&lookup) else { continue };
            if active.waiting != Some(rpc) {
                continue;
            }
            // Not `Lookup::failed`: that would let a successor list's next entry stand in for
            // a node that may only be slow. Asked already, it is not asked again.
            let _ = asked;
            active.waiting = None;
            active.stragglers += 1;
            self.counters.hops_hedged += 1;
            self.lookup_step(now, lookup);
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
