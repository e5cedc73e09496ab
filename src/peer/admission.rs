//! Load-based admission for the proxy listener (issue 5 item 8): when the node is offered more
//! requests than its event loop can process, it refuses a share of the new ones at once with
//! `503 Service Unavailable` and `Retry-After` (RFC 3261 §21.5.4), so the requests it does
//! accept still complete instead of every request timing out.
//!
//! This is local overload control in the sense of RFC 6357 §5.1 (the server protects itself;
//! no feedback to upstream servers, as our clients are phones), with the rejection ratio of
//! RFC 7339's "loss" algorithm (§5.10.1: refuse a percentage of the requests that may be
//! refused, and adjust it from a load signal) and RFC 6357 §4's advice that rejecting must
//! cost much less than serving and that requests of established work come first:
//!
//! - **Load signal: how busy the loop is.** The driver reports every turn of its loop
//!   ([`Admission::turn`]: when the turn's work started and ended). A gap before a turn
//!   shorter than [`BACKLOG_GAP`] means the input was already waiting (the socket has a
//!   backlog: queueing delay), so it counts as busy; longer gaps are idle time. Over each
//!   [`WINDOW`] the busy share is compared with the target (`busy_target`, default 90%).
//! - **Control.** Above the target the refused share of sheddable requests rises by
//!   [`STEP`] per window, up to [`MAX_REJECT`]; below `busy_target − 10%` it falls by
//!   [`STEP`] per window elapsed (so it drops to 0 quickly when the load goes away).
//! - **What may be refused.** Only new out-of-dialog requests (no To tag), never ACK or
//!   CANCEL, nor requests within a dialog (a BYE of a call already set up). A request carrying
//!   credentials (the second REGISTER of a challenge round, whose first half we already paid
//!   for) is refused only once more than half of the others are ([`Class::Continuation`]).
//! - **Spacing.** Refusals are spread evenly (an accumulator, no randomness), so the decision
//!   is deterministic for given inputs.
//!
//! Sans-IO: the caller passes the times; nothing here reads a clock.

use std::time::{Duration, Instant};

/// The busy share is measured over windows this long.
pub const WINDOW: Duration = Duration::from_millis(100);
/// A turn starting within this of the previous one's end found its input already waiting.
pub const BACKLOG_GAP: Duration = Duration::from_micros(50);
/// How much the refused share moves per window.
pub const STEP: f64 = 0.05;
/// Never refuse everything: some requests keep getting through to measure with.
pub const MAX_REJECT: f64 = 0.95;

/// What kind of request asks to be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// ACK, CANCEL, in-dialog requests: always admitted.
    Exempt,
    /// Out of dialog, with credentials (a challenge answered): refused last.
    Continuation,
    /// Out of dialog, new work: refused first.
    New,
}

/// The admission controller.
#[derive(Debug, Clone)]
pub struct Admission {
    /// Target busy share in (0, 1]; `None` turns admission control off.
    busy_target: Option<f64>,
    window_start: Option<Instant>,
    last_end: Option<Instant>,
    idle: Duration,
    /// The share of [`Class::New`] requests refused now.
    reject: f64,
    credit_new: f64,
    credit_cont: f64,
    /// The last window's busy share, for the status API.
    last_busy: f64,
}

impl Admission {
    /// `busy_percent` 0 turns it off.
    pub fn new(busy_percent: u8) -> Admission {
        let busy_target = (busy_percent > 0).then(|| f64::from(busy_percent.min(100)) / 100.0);
        Admission {
            busy_target,
            window_start: None,
            last_end: None,
            idle: Duration::ZERO,
            reject: 0.0,
            credit_new: 0.0,
            credit_cont: 0.0,
            last_busy: 0.0,
        }
    }

    /// One turn of the driver's loop did work from `started` to `ended`.
    pub fn turn(&mut self, started: Instant, ended: Instant) {
        let Some(target) = self.busy_target else { return };
        let window_start = *self.window_start.get_or_insert(started);
        if let Some(last) = self.last_end {
            let gap = started.saturating_duration_since(last);
            if gap > BACKLOG_GAP {
                self.idle += gap;
            }
        }
        self.last_end = Some(ended);
        let elapsed = ended.saturating_duration_since(window_start);
        if elapsed < WINDOW {
            return;
        }
        let busy = 1.0 - (self.idle.as_secs_f64() / elapsed.as_secs_f64()).min(1.0);
        self.last_busy = busy;
        if busy > target {
            self.reject = (self.reject + STEP).min(MAX_REJECT);
        } else if busy < target - 0.1 {
            let windows = elapsed.as_secs_f64() / WINDOW.as_secs_f64();
            self.reject = (self.reject - STEP * windows).max(0.0);
        }
        self.window_start = Some(ended);
        self.idle = Duration::ZERO;
    }

    /// Whether a request of `class` is admitted; `false` means answer it 503 now.
    pub fn admit(&mut self, class: Class) -> bool {
        let (share, credit) = match class {
            Class::Exempt => return true,
            Class::New => (self.reject, &mut self.credit_new),
            Class::Continuation => ((2.0 * self.reject - 1.0).max(0.0), &mut self.credit_cont),
        };
        if share <= 0.0 {
            *credit = 0.0;
            return true;
        }
        *credit += share;
        if *credit >= 1.0 {
            *credit -= 1.0;
            false
        } else {
            true
        }
    }

    /// The share of new requests refused now, in [0, [`MAX_REJECT`]].
    pub fn reject_share(&self) -> f64 {
        self.reject
    }

    /// The busy share measured over the last window.
    pub fn busy_share(&self) -> f64 {
        self.last_busy
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real reading as the virtual clock's epoch
mod tests {
    use super::*;

    /// Feeds turns of `work` each, `gap` apart, for `total`; returns the end time.
    fn run(a: &mut Admission, from: Instant, work: Duration, gap: Duration, total: Duration) -> Instant {
        let mut t = from;
        while t < from + total {
            let start = t + gap;
            a.turn(start, start + work);
            t = start + work;
        }
        t
    }

    #[test]
    fn an_idle_or_lightly_loaded_loop_admits_everything() {
        let mut a = Admission::new(90);
        let t0 = Instant::now();
        // 40 µs of work every 200 µs: 20% busy.
        run(&mut a, t0, Duration::from_micros(40), Duration::from_micros(160), Duration::from_secs(2));
        assert!(a.busy_share() < 0.3, "{}", a.busy_share());
        assert_eq!(a.reject_share(), 0.0);
        assert!((0..1000).all(|_| a.admit(Class::New)));
    }

    #[test]
    fn a_saturated_loop_sheds_new_requests_first_and_recovers_when_the_load_drops() {
        let mut a = Admission::new(90);
        let t0 = Instant::now();
        // Back-to-back turns (input always waiting): saturated.
        let t1 = run(&mut a, t0, Duration::from_micros(40), Duration::from_micros(2), Duration::from_millis(1050));
        assert!(a.busy_share() > 0.9);
        // Ten windows over the target: 10 steps.
        assert!((a.reject_share() - 10.0 * STEP).abs() < 1e-9, "{}", a.reject_share());
        let refused = (0..1000).filter(|_| !a.admit(Class::New)).count();
        assert!((499..=500).contains(&refused), "refusals spread evenly at the current share: {refused}");
        assert!((0..1000).all(|_| a.admit(Class::Continuation)), "credentials pass while half or less is refused");
        assert!((0..1000).all(|_| a.admit(Class::Exempt)));
        // Long enough saturation reaches the cap, and then some requests with credentials go too.
        let t2 = run(&mut a, t1, Duration::from_micros(40), Duration::from_micros(2), Duration::from_secs(3));
        assert_eq!(a.reject_share(), MAX_REJECT);
        let refused = (0..1000).filter(|_| !a.admit(Class::Continuation)).count();
        assert!((899..=900).contains(&refused), "{refused}");
        // The load drops to 20%: the share falls back to 0 within a couple of seconds.
        run(&mut a, t2, Duration::from_micros(40), Duration::from_micros(160), Duration::from_secs(2));
        assert_eq!(a.reject_share(), 0.0);
        // After a silence, one window's look is enough.
        let mut b = Admission::new(90);
        let t3 = run(&mut b, t0, Duration::from_micros(40), Duration::from_micros(2), Duration::from_secs(3));
        b.turn(t3 + Duration::from_secs(30), t3 + Duration::from_secs(30) + Duration::from_micros(40));
        assert_eq!(b.reject_share(), 0.0);
    }

    #[test]
    fn off_means_always_admitted() {
        let mut a = Admission::new(0);
        let t0 = Instant::now();
        run(&mut a, t0, Duration::from_micros(40), Duration::ZERO, Duration::from_secs(2));
        assert_eq!(a.reject_share(), 0.0);
        assert!((0..100).all(|_| a.admit(Class::New)));
    }
}
