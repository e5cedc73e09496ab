//! Transaction timers: the base values T1, T2 and T4, the derived timers A–M (RFC 3261 §17,
//! Table 4 in Appendix A; L and M from RFC 6026 §7), and the deadline queue the layer drains.
//!
//! The queue is a `BTreeMap` keyed by `(deadline, sequence)`, so timers due at the same instant
//! fire in the order they were armed and [`TimerQueue::next_deadline`] is the first key. Each
//! transaction remembers the keys it armed (one per [`Slot`]), so cancelling is exact and a
//! removed transaction leaves nothing behind.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{ClientTxId, ServerTxId};

/// The longest a single timer may run; keeps `now + duration` from overflowing with absurd
/// configured values.
const MAX_TIMER: Duration = Duration::from_secs(365 * 24 * 3600);

/// The base timer values (RFC 3261 §17.1.1.1, Table 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate; retransmissions start at T1.
    pub t1: Duration,
    /// The longest interval between retransmissions of non-INVITE requests and INVITE
    /// responses.
    pub t2: Duration,
    /// How long a message may stay in the network.
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers { t1: Duration::from_millis(500), t2: Duration::from_secs(4), t4: Duration::from_secs(5) }
    }
}

/// Reliable transports (TCP, TLS, SCTP) need no absorbing wait: the timer is zero.
fn unless_reliable(reliable: bool, d: Duration) -> Duration {
    if reliable {
        Duration::ZERO
    } else {
        d
    }
}

impl Timers {
    fn t1_x64(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// Timer A: the first INVITE retransmission interval, T1, doubled each time (§17.1.1.2).
    pub fn timer_a(&self) -> Duration {
        self.t1
    }

    /// Timer B: INVITE transaction timeout, 64·T1 (§17.1.1.2).
    pub fn timer_b(&self) -> Duration {
        self.t1_x64()
    }

    /// Timer D: wait for response retransmissions, at least 32 s over UDP and zero over a
    /// reliable transport (§17.1.1.2). Scales with T1 when T1 is raised.
    pub fn timer_d(&self, reliable: bool) -> Duration {
        unless_reliable(reliable, self.t1_x64().max(Duration::from_secs(32)))
    }

    /// Timer E: the first non-INVITE retransmission interval, T1 (§17.1.2.2).
    pub fn timer_e(&self) -> Duration {
        self.t1
    }

    /// Timer F: non-INVITE transaction timeout, 64·T1 (§17.1.2.2).
    pub fn timer_f(&self) -> Duration {
        self.t1_x64()
    }

    /// Timer G: the first INVITE response retransmission interval, T1 (§17.2.1).
    pub fn timer_g(&self) -> Duration {
        self.t1
    }

    /// Timer H: wait for the ACK, 64·T1 (§17.2.1).
    pub fn timer_h(&self) -> Duration {
        self.t1_x64()
    }

    /// Timer I: wait for ACK retransmissions, T4 over UDP, zero otherwise (§17.2.1).
    pub fn timer_i(&self, reliable: bool) -> Duration {
        unless_reliable(reliable, self.t4)
    }

    /// Timer J: wait for non-INVITE request retransmissions, 64·T1 over UDP, zero otherwise
    /// (§17.2.2).
    pub fn timer_j(&self, reliable: bool) -> Duration {
        unless_reliable(reliable, self.t1_x64())
    }

    /// Timer K: wait for response retransmissions, T4 over UDP, zero otherwise (§17.1.2.2).
    pub fn timer_k(&self, reliable: bool) -> Duration {
        unless_reliable(reliable, self.t4)
    }

    /// Timer L: how long an INVITE server transaction stays Accepted after a 2xx, 64·T1
    /// (RFC 6026 §7.1).
    pub fn timer_l(&self) -> Duration {
        self.t1_x64()
    }

    /// Timer M: how long an INVITE client transaction stays Accepted after a 2xx, 64·T1
    /// (RFC 6026 §7.2).
    pub fn timer_m(&self) -> Duration {
        self.t1_x64()
    }

    /// The interval after `interval` for timers E and G: doubled, capped at T2
    /// (§17.1.2.2, §17.2.1).
    pub(super) fn backoff_capped(&self, interval: Duration) -> Duration {
        interval.saturating_mul(2).min(self.t2.max(self.t1))
    }
}

/// The RFC's name of a timer, which says what it does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerName {
    A,
    B,
    D,
    E,
    F,
    G,
    H,
    I,
    J,
    K,
    L,
    M,
}

/// A transaction runs at most one timer of each kind at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    /// A, E, G: retransmit.
    Retransmit = 0,
    /// B, F, H: give up.
    Timeout = 1,
    /// D, I, J, K, L, M: linger to absorb retransmissions, then terminate.
    Linger = 2,
}

impl TimerName {
    fn slot(self) -> Slot {
        match self {
            TimerName::A | TimerName::E | TimerName::G => Slot::Retransmit,
            TimerName::B | TimerName::F | TimerName::H => Slot::Timeout,
            TimerName::D | TimerName::I | TimerName::J | TimerName::K | TimerName::L | TimerName::M => Slot::Linger,
        }
    }
}

/// Which transaction a timer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TxRef {
    Client(ClientTxId),
    Server(ServerTxId),
}

pub(super) type TimerKey = (Instant, u64);

#[derive(Clone, Copy, Debug)]
pub(super) struct TimerEntry {
    pub tx: TxRef,
    pub name: TimerName,
}

/// The timers one transaction has armed, by slot.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Armed([Option<TimerKey>; 3]);

impl Armed {
    /// Called when `key` was popped from the queue: true (and the slot cleared) when it is
    /// still the live timer of its slot, false when it was cancelled or re-armed meanwhile.
    pub(super) fn fired(&mut self, name: TimerName, key: TimerKey) -> bool {
        let slot = &mut self.0[name.slot() as usize];
        if *slot == Some(key) {
            *slot = None;
            true
        } else {
            false
        }
    }
}

/// All armed timers of a layer, earliest first.
#[derive(Debug, Default)]
pub(super) struct TimerQueue {
    entries: BTreeMap<TimerKey, TimerEntry>,
    next_seq: u64,
}

impl TimerQueue {
    /// Arms `name` to fire `after` from `now`, replacing whatever ran in its slot.
    pub(super) fn arm(&mut self, armed: &mut Armed, tx: TxRef, name: TimerName, now: Instant, after: Duration) {
        let slot = name.slot() as usize;
        if let Some(old) = armed.0[slot].take() {
            self.entries.remove(&old);
        }
        let at = now.checked_add(after.min(MAX_TIMER)).unwrap_or(now);
        let key = (at, self.next_seq);
        self.next_seq = self.next_seq.wrapping_add(1);
        self.entries.insert(key, TimerEntry { tx, name });
        armed.0[slot] = Some(key);
    }

    pub(super) fn cancel(&mut self, armed: &mut Armed, slot: Slot) {
        if let Some(old) = armed.0[slot as usize].take() {
            self.entries.remove(&old);
        }
    }

    pub(super) fn cancel_all(&mut self, armed: &mut Armed) {
        for slot in [Slot::Retransmit, Slot::Timeout, Slot::Linger] {
            self.cancel(armed, slot);
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.entries.first_key_value().map(|((at, _), _)| *at)
    }

    /// The sequence number the next armed timer will get: timers armed from here on are
    /// "new" for [`TimerQueue::pop_due`].
    pub(super) fn watermark(&self) -> u64 {
        self.next_seq
    }

    /// Removes and returns the earliest timer due at `now` that was armed before `watermark`.
    /// Timers armed while firing others wait for the next call, so a zero interval cannot
    /// loop forever.
    pub(super) fn pop_due(&mut self, now: Instant, watermark: u64) -> Option<(TimerKey, TimerEntry)> {
        let (&key, _) = self.entries.first_key_value()?;
        if key.0 > now || key.1 >= watermark {
            return None;
        }
        self.entries.remove(&key).map(|e| (key, e))
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real reading as the virtual clock's epoch
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn table_4_defaults() {
        let t = Timers::default();
        assert_eq!((t.t1, t.t2, t.t4), (ms(500), ms(4000), ms(5000)));
        assert_eq!(t.timer_a(), ms(500));
        assert_eq!(t.timer_b(), ms(32_000));
        assert_eq!(t.timer_d(false), ms(32_000));
        assert_eq!(t.timer_d(true), Duration::ZERO);
        assert_eq!(t.timer_e(), ms(500));
        assert_eq!(t.timer_f(), ms(32_000));
        assert_eq!(t.timer_g(), ms(500));
        assert_eq!(t.timer_h(), ms(32_000));
        assert_eq!(t.timer_i(false), ms(5000));
        assert_eq!(t.timer_i(true), Duration::ZERO);
        assert_eq!(t.timer_j(false), ms(32_000));
        assert_eq!(t.timer_j(true), Duration::ZERO);
        assert_eq!(t.timer_k(false), ms(5000));
        assert_eq!(t.timer_k(true), Duration::ZERO);
        assert_eq!(t.timer_l(), ms(32_000));
        assert_eq!(t.timer_m(), ms(32_000));
    }

    #[test]
    fn timer_d_is_at_least_32_seconds() {
        let fast = Timers { t1: ms(100), ..Timers::default() };
        assert_eq!(fast.timer_d(false), ms(32_000));
        let slow = Timers { t1: ms(1000), ..Timers::default() };
        assert_eq!(slow.timer_d(false), ms(64_000));
    }

    #[test]
    fn backoff_doubles_up_to_t2() {
        let t = Timers::default();
        let mut i = t.timer_e();
        let mut seen = vec![i];
        for _ in 0..5 {
            i = t.backoff_capped(i);
            seen.push(i);
        }
        assert_eq!(seen, vec![ms(500), ms(1000), ms(2000), ms(4000), ms(4000), ms(4000)]);
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let t = Timers { t1: Duration::MAX, t2: Duration::MAX, t4: Duration::MAX };
        assert_eq!(t.timer_b(), Duration::MAX);
        assert_eq!(t.backoff_capped(Duration::MAX), Duration::MAX);
        let mut q = TimerQueue::default();
        let mut armed = Armed::default();
        let now = Instant::now();
        q.arm(&mut armed, TxRef::Client(ClientTxId(0)), TimerName::B, now, t.timer_b());
        assert!(q.next_deadline().is_some_and(|d| d > now));
    }

    #[test]
    fn queue_orders_rearms_and_cancels() {
        let now = Instant::now();
        let mut q = TimerQueue::default();
        let (mut a, mut b) = (Armed::default(), Armed::default());
        let ta = TxRef::Client(ClientTxId(1));
        let tb = TxRef::Server(ServerTxId(2));
        q.arm(&mut a, ta, TimerName::E, now, ms(500));
        q.arm(&mut a, ta, TimerName::F, now, ms(32_000));
        q.arm(&mut b, tb, TimerName::G, now, ms(500));
        assert_eq!(q.len(), 3);
        // Re-arming a slot replaces its timer.
        q.arm(&mut a, ta, TimerName::E, now, ms(1000));
        assert_eq!(q.len(), 3);
        assert_eq!(q.next_deadline(), Some(now + ms(500)));
        let wm = q.watermark();
        let (key, e) = q.pop_due(now + ms(500), wm).unwrap();
        assert_eq!((e.tx, e.name), (tb, TimerName::G));
        assert!(b.fired(TimerName::G, key));
        assert!(!b.fired(TimerName::G, key));
        assert!(q.pop_due(now + ms(500), wm).is_none());
        q.cancel_all(&mut a);
        assert_eq!(q.len(), 0);
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn timers_armed_while_firing_wait_for_the_next_call() {
        let now = Instant::now();
        let mut q = TimerQueue::default();
        let mut a = Armed::default();
        let t = TxRef::Client(ClientTxId(1));
        q.arm(&mut a, t, TimerName::E, now, Duration::ZERO);
        let wm = q.watermark();
        assert!(q.pop_due(now, wm).is_some());
        q.arm(&mut a, t, TimerName::E, now, Duration::ZERO);
        assert!(q.pop_due(now, wm).is_none());
        assert!(q.pop_due(now, q.watermark()).is_some());
    }
}
