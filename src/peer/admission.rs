//! Load-based admission for the proxy listener (RFC 6357 §5.1 overload control): when the node is offered more
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
//! - **Load signal: a standing queue on a busy loop.** The driver reports every turn of its
//!   loop ([`Admission::turn`]): when the turn's work started and ended, and what it saw of
//!   its input queue ([`InputBacklog`]): it read a whole burst of datagrams and more were waiting,
//!   or it read the socket empty. A node near its capacity is busy most of the time and
//!   bursts of input queue up, but it still empties its queue now and then; an overloaded one
//!   never does (a standing queue, as in CoDel, RFC 8289 §2). So a window of [`WINDOW`] counts
//!   as overloaded only when the loop was busy above the target (`busy_target`, default 90%;
//!   a gap before a turn shorter than [`BACKLOG_GAP`] counts as busy), more than half of its
//!   time was spent in turns that left a queue behind, *and* no turn in it found the queue
//!   empty. Busy share alone refused load from 16,000 REGISTERs/s on a node that served
//!   28,000 (docs/performance.md, "Overload").
//! - **Control.** In an overloaded window the refused share of new requests rises by
//!   [`STEP`], up to [`MAX_REJECT`]; only once it is at the cap and the queue still stands does
//!   the refused share of requests with credentials rise, and only while they are at least a
//!   quarter of the sheddable requests (refresh storms: phones re-register with credentials). Once the queue is gone (less than a
//!   tenth of the time) the shares fall by [`STEP`] per window elapsed, credentials first; once
//!   the loop is no longer busy, four times as fast, so a load that goes away is forgotten
//!   within a second.
//! - **What may be refused.** Only new out-of-dialog requests, never ACK or CANCEL, nor
//!   requests within a dialog routed through us (a To tag and a Route: a BYE of a call already
//!   set up). A request carrying credentials (the second REGISTER of a challenge round, whose
//!   first half we already paid for) is refused only when refusing nearly all new requests is
//!   not enough ([`Class::Continuation`]).
//! - **Spacing.** Refusals are spread evenly (an accumulator, no randomness), so the decision
//!   is deterministic for given inputs.
//!
//! Sans-IO: the caller passes the times; nothing here reads a clock.

use std::time::{Duration, Instant};

/// The busy share is measured over windows this long.
pub(super) const WINDOW: Duration = Duration::from_millis(100);
/// A turn starting within this of the previous one's end found its input already waiting.
/// Small, because the driver drains its UDP sockets within a turn (up to a burst of
/// datagrams, until a read would block): a gap between turns is then time spent waiting for
/// input, however short, unless it is only the reactor's own overhead. With 50 µs here, a
/// node receiving 24,000 datagrams/s (one every ~41 µs) counted as 100% busy while using 65%
/// of a core, and shed load at half its real capacity (docs/performance.md, "Overload").
pub(super) const BACKLOG_GAP: Duration = Duration::from_micros(5);
/// How much the refused share moves per window.
pub(super) const STEP: f64 = 0.05;
/// Never refuse everything: some requests keep getting through to measure with.
pub(super) const MAX_REJECT: f64 = 0.95;
/// A window with input left queued for more than this share of its time is overloaded (if
/// the loop is also busy)...
const QUEUED_OVERLOAD: f64 = 0.5;
/// ...and one with input queued for less than this share of its time is not.
const QUEUED_CLEAR: f64 = 0.1;

/// What a turn of the loop saw of its input queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputBacklog {
    /// It stopped reading with input still waiting (a whole burst read).
    Left,
    /// It read its input until none was left.
    Emptied,
    /// It read no queue (a timer, a query).
    NotRead,
}

/// What kind of request asks to be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// ACK, CANCEL, requests in a dialog routed through us: always admitted.
    Exempt,
    /// Out of dialog, with credentials (a challenge answered): refused last.
    Continuation,
    /// Out of dialog, new work: refused first.
    New,
}

/// The admission controller.
#[derive(Debug, Clone)]
pub(super) struct Admission {
    /// Target busy share in (0, 1]; `None` turns admission control off.
    busy_target: Option<f64>,
    window_start: Option<Instant>,
    last_end: Option<Instant>,
    idle: Duration,
    /// Time this window spent in turns that ended with input still queued.
    queued: Duration,
    /// Whether a turn in this window found its input queue empty.
    emptied: bool,
    /// The share of [`Class::New`] requests refused now.
    reject: f64,
    /// The share of [`Class::Continuation`] requests refused now.
    reject_cont: f64,
    /// Sheddable requests that asked to be admitted this window: new ones, and ones with
    /// credentials.
    asked_new: u64,
    asked_cont: u64,
    credit_new: f64,
    credit_cont: f64,
    /// The last window's busy share, for the status API.
    last_busy: f64,
    /// The last window's share of time with input left queued, for the status API.
    last_queued: f64,
    /// The busy share smoothed over windows (half the last window, half the past), so a
    /// burst of a single window does not start the shedding.
    smoothed: f64,
}

impl Admission {
    /// `busy_percent` 0 turns it off.
    pub(super) fn new(busy_percent: u8) -> Admission {
        let busy_target = (busy_percent > 0).then(|| f64::from(busy_percent.min(100)) / 100.0);
        Admission {
            busy_target,
            window_start: None,
            last_end: None,
            idle: Duration::ZERO,
            queued: Duration::ZERO,
            emptied: false,
            reject: 0.0,
            reject_cont: 0.0,
            asked_new: 0,
            asked_cont: 0,
            credit_new: 0.0,
            credit_cont: 0.0,
            last_busy: 0.0,
            last_queued: 0.0,
            smoothed: 0.0,
        }
    }

    /// One turn of the driver's loop did work from `started` to `ended`, and saw `queue`.
    pub(super) fn turn(&mut self, started: Instant, ended: Instant, queue: InputBacklog) {
        let Some(target) = self.busy_target else { return };
        let window_start = *self.window_start.get_or_insert(started);
        if let Some(last) = self.last_end {
            let gap = started.saturating_duration_since(last);
            if gap > BACKLOG_GAP {
                self.idle += gap;
            }
        }
        match queue {
            InputBacklog::Left => self.queued += ended.saturating_duration_since(started),
            InputBacklog::Emptied => self.emptied = true,
            InputBacklog::NotRead => {}
        }
        self.last_end = Some(ended);
        let elapsed = ended.saturating_duration_since(window_start);
        if elapsed < WINDOW {
            return;
        }
        let busy = 1.0 - (self.idle.as_secs_f64() / elapsed.as_secs_f64()).min(1.0);
        let queued = (self.queued.as_secs_f64() / elapsed.as_secs_f64()).min(1.0);
        self.last_busy = busy;
        self.last_queued = queued;
        self.smoothed = (self.smoothed + busy) / 2.0;
        if self.smoothed > target && queued > QUEUED_OVERLOAD && !self.emptied {
            if self.reject < MAX_REJECT {
                self.reject = (self.reject + STEP).min(MAX_REJECT);
            } else {
                // Only if they are a real part of the load: otherwise refusing them saves
                // little and throws away the challenges already paid for. (In the 2x run a
                // flood of new requests at 95% refused pushed this up and the accepted
                // REGISTERs fell to 200/s.)
                if self.asked_cont * 4 >= self.asked_new + self.asked_cont {
                    self.reject_cont = (self.reject_cont + STEP).min(MAX_REJECT);
                }
            }
        } else if self.smoothed < target - 0.1 || queued < QUEUED_CLEAR {
            // Gently while the loop is still busy (the refusals may be what keeps the queue
            // down), fast once it is not.
            let speed = if self.smoothed < target - 0.1 { 4.0 } else { 1.0 };
            let mut fall = speed * STEP * elapsed.as_secs_f64() / WINDOW.as_secs_f64();
            let cont = fall.min(self.reject_cont);
            self.reject_cont -= cont;
            fall -= cont;
            self.reject = (self.reject - fall).max(0.0);
        }
        self.window_start = Some(ended);
        self.idle = Duration::ZERO;
        self.queued = Duration::ZERO;
        self.emptied = false;
        self.asked_new = 0;
        self.asked_cont = 0;
    }

    /// Whether a request of `class` is admitted; `false` means answer it 503 now.
    pub(super) fn admit(&mut self, class: Class) -> bool {
        let (share, credit) = match class {
            Class::Exempt => return true,
            Class::New => {
                self.asked_new += 1;
                (self.reject, &mut self.credit_new)
            }
            Class::Continuation => {
                self.asked_cont += 1;
                (self.reject_cont, &mut self.credit_cont)
            }
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
    pub(super) fn reject_share(&self) -> f64 {
        self.reject
    }

    /// The busy share measured over the last window.
    pub(super) fn busy_share(&self) -> f64 {
        self.last_busy
    }

    /// The share of the last window with input left queued.
    pub(super) fn queued_share(&self) -> f64 {
        self.last_queued
    }
}

/// A request's head seen as raw lines: just enough to classify it and to refuse it without
/// parsing it, since rejecting must cost much less than serving (RFC 6357 §4, §5.1). `None`
/// for anything unusual (a response, folded lines, missing headers): the full parser decides.
#[derive(Debug)]
pub(super) struct RawRequest<'a> {
    pub class: Class,
    /// The To header already carries a tag (the 503 keeps it, RFC 3261 §8.2.6.2).
    to_tagged: bool,
    vias: Vec<&'a [u8]>,
    from: &'a [u8],
    to: &'a [u8],
    call_id: &'a [u8],
    cseq: &'a [u8],
}

impl<'a> RawRequest<'a> {
    pub(super) fn scan(data: &'a [u8]) -> Option<RawRequest<'a>> {
        let end = data.windows(4).position(|w| w == b"\r\n\r\n")?;
        let mut lines = data[..end].split(|b| *b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let first = lines.next()?;
        let method = &first[..first.iter().position(|b| *b == b' ')?];
        if method.is_empty() || !method.iter().all(u8::is_ascii_uppercase) || !first.ends_with(b" SIP/2.0") {
            return None;
        }
        let exempt_method = method == b"ACK" || method == b"CANCEL";
        let (mut to_tag, mut to_tagged, mut routed, mut credentials) = (false, false, false, false);
        let (mut vias, mut from, mut to, mut call_id, mut cseq) = (Vec::new(), None, None, None, None);
        for line in lines {
            if line.first().is_none_or(|b| *b == b' ' || *b == b'\t') {
                return None;
            }
            let colon = line.iter().position(|b| *b == b':')?;
            let name = line[..colon].trim_ascii().to_ascii_lowercase();
            match name.as_slice() {
                b"via" | b"v" => vias.push(line),
                b"from" | b"f" => from = Some(line),
                b"to" | b"t" => {
                    // A stray "tag" elsewhere in the value errs on admitting.
                    let value: Vec<u8> = line[colon + 1..]
                        .iter()
                        .filter(|b| !b.is_ascii_whitespace())
                        .map(u8::to_ascii_lowercase)
                        .collect();
                    to_tag = value.windows(3).any(|w| w == b"tag");
                    to_tagged = value.windows(5).any(|w| w == b";tag=");
                    to = Some(line);
                }
                b"route" => routed = true,
                b"call-id" | b"i" => call_id = Some(line),
                b"cseq" => cseq = Some(line),
                b"authorization" | b"proxy-authorization" => credentials = true,
                _ => {}
            }
        }
        if vias.is_empty() {
            return None;
        }
        // In a dialog through us: a To tag and the Route our Record-Route put there (RFC 3261
        // §12.2.1.1). A To tag without a Route names no dialog of ours (sipp, for one, sends
        // such a BYE for every call it aborts): new work like any other.
        let class = if exempt_method || (to_tag && routed) {
            Class::Exempt
        } else if credentials {
            Class::Continuation
        } else {
            Class::New
        };
        Some(RawRequest { class, to_tagged, vias, from: from?, to: to?, call_id: call_id?, cseq: cseq? })
    }

    /// `503 Service Unavailable` with `Retry-After` (RFC 3261 §21.5.4), built from the
    /// request's own lines (§8.2.6.2: Via, From, To with our `tag`, Call-ID, CSeq copied).
    pub(super) fn service_unavailable(&self, tag: &str, retry_after: u32, server: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(b"SIP/2.0 503 Service Unavailable\r\n");
        for line in self.vias.iter().chain([&self.from]) {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(self.to.trim_ascii_end());
        if !self.to_tagged {
            out.extend_from_slice(format!(";tag={tag}").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        for line in [self.call_id, self.cseq] {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(
            format!("Retry-After: {retry_after}\r\nServer: {server}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
        );
        out
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real reading as the virtual clock's epoch
mod tests {
    use super::*;

    /// Feeds turns of `work` each, `gap` apart, for `total`; returns the end time. With a
    /// `gap` under [`BACKLOG_GAP`] the turns also leave input queued (an overloaded socket).
    fn run(a: &mut Admission, from: Instant, work: Duration, gap: Duration, total: Duration) -> Instant {
        let queued = gap <= BACKLOG_GAP;
        run_queued(a, from, work, gap, total, queued)
    }

    fn run_queued(
        a: &mut Admission,
        from: Instant,
        work: Duration,
        gap: Duration,
        total: Duration,
        queued: bool,
    ) -> Instant {
        let mut t = from;
        while t < from + total {
            let start = t + gap;
            a.turn(start, start + work, if queued { InputBacklog::Left } else { InputBacklog::Emptied });
            t = start + work;
        }
        t
    }

    /// `n` back-to-back turns of 40 µs (2 µs apart) from `from`; before turn `i`, `each`
    /// asks admission for that turn's requests and says what the turn saw of its queue.
    fn saturated_turns(
        a: &mut Admission,
        from: Instant,
        n: u32,
        mut each: impl FnMut(&mut Admission, u32) -> InputBacklog,
    ) {
        let mut t = from;
        for i in 0..n {
            let queue = each(a, i);
            a.turn(t + Duration::from_micros(2), t + Duration::from_micros(42), queue);
            t += Duration::from_micros(42);
        }
    }

    #[test]
    fn a_busy_loop_that_empties_its_queue_is_not_overloaded() {
        // Near capacity: input arrives as fast as it is served, the loop never idles, but
        // every turn reads the socket empty. Busy share alone would shed here.
        let mut a = Admission::new(90);
        let t0 = Instant::now();
        run_queued(&mut a, t0, Duration::from_micros(40), Duration::from_micros(2), Duration::from_secs(2), false);
        assert!(a.busy_share() > 0.9, "{}", a.busy_share());
        assert_eq!(a.queued_share(), 0.0);
        assert_eq!(a.reject_share(), 0.0);
        // Bursts: the loop never idles and most turns leave input queued, but every 50th
        // reads the socket empty. Near capacity, not over it.
        let mut c = Admission::new(90);
        saturated_turns(
            &mut c,
            t0,
            50_000,
            |_, i| if i % 50 == 49 { InputBacklog::Emptied } else { InputBacklog::Left },
        );
        assert!(c.queued_share() > 0.9, "{}", c.queued_share());
        assert_eq!(c.reject_share(), 0.0);
        // A queue that stands on a loop with idle time is a burst, not overload.
        let mut b = Admission::new(90);
        run_queued(&mut b, t0, Duration::from_micros(40), Duration::from_micros(40), Duration::from_secs(2), true);
        assert_eq!(b.reject_share(), 0.0);
    }

    #[test]
    fn a_high_arrival_rate_below_capacity_is_not_taken_for_overload() {
        // 24,000 datagrams/s answered in 27 µs each: turns ~14 µs apart, the loop 65% busy.
        // Short waits between turns are still waits (the driver drains its socket within a
        // turn); counting them as backlog shed load at half the node's capacity.
        let mut a = Admission::new(90);
        let t0 = Instant::now();
        run(&mut a, t0, Duration::from_micros(27), Duration::from_micros(14), Duration::from_secs(2));
        assert!(a.busy_share() < 0.7, "{}", a.busy_share());
        assert_eq!(a.reject_share(), 0.0);
    }

    #[test]
    fn credentials_are_refused_only_when_they_are_a_real_part_of_the_load() {
        // Saturated for 3 s; each turn asks admission for `new` new requests and `cont` with
        // credentials.
        let saturate = |new: usize, cont: usize| {
            let mut a = Admission::new(90);
            saturated_turns(&mut a, Instant::now(), 75_000, |a, _| {
                for _ in 0..new {
                    a.admit(Class::New);
                }
                for _ in 0..cont {
                    a.admit(Class::Continuation);
                }
                InputBacklog::Left
            });
            a
        };
        // A flood of new requests (sipp's, at 2x the knee): only they are refused.
        let flood = saturate(10, 1);
        assert_eq!(flood.reject_share(), MAX_REJECT);
        assert_eq!(flood.reject_cont, 0.0);
        // A refresh storm (phones re-registering with credentials): those are refused too.
        let storm = saturate(1, 10);
        assert_eq!(storm.reject_share(), MAX_REJECT);
        assert!(storm.reject_cont >= 0.2, "{}", storm.reject_cont);
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
        // Ten windows fully busy: the smoothed share passes 90% at the fourth, so 7 steps.
        assert!((a.reject_share() - 7.0 * STEP).abs() < 1e-9, "{}", a.reject_share());
        let refused = (0..1000).filter(|_| !a.admit(Class::New)).count();
        assert!((349..=350).contains(&refused), "refusals spread evenly at the current share: {refused}");
        assert!((0..1000).all(|_| a.admit(Class::Continuation)), "credentials pass while new requests can be refused");
        assert!((0..1000).all(|_| a.admit(Class::Exempt)));
        // Saturation long enough for the cap: only then do requests with credentials go too.
        let t2 = run(&mut a, t1, Duration::from_micros(40), Duration::from_micros(2), Duration::from_millis(500));
        assert!(a.reject_share() > 7.0 * STEP && a.reject_share() < MAX_REJECT, "{}", a.reject_share());
        assert!((0..1000).all(|_| a.admit(Class::Continuation)));
        let t2 = run(&mut a, t2, Duration::from_micros(40), Duration::from_micros(2), Duration::from_secs(3));
        assert_eq!(a.reject_share(), MAX_REJECT);
        let share = a.reject_cont;
        assert!(share > 0.5, "{share}");
        let refused = (0..1000).filter(|_| !a.admit(Class::Continuation)).count();
        assert!(refused.abs_diff((share * 1000.0) as usize) <= 1, "{refused} at {share}");
        // The load drops to 20%: both shares fall back to 0 within a few seconds.
        run(&mut a, t2, Duration::from_micros(40), Duration::from_micros(160), Duration::from_secs(3));
        assert_eq!(a.reject_share(), 0.0);
        assert_eq!(a.reject_cont, 0.0);
        // After a silence, one window's look is enough.
        let mut b = Admission::new(90);
        let t3 = run(&mut b, t0, Duration::from_micros(40), Duration::from_micros(2), Duration::from_secs(3));
        b.turn(
            t3 + Duration::from_secs(30),
            t3 + Duration::from_secs(30) + Duration::from_micros(40),
            InputBacklog::NotRead,
        );
        assert_eq!(b.reject_share(), 0.0);
    }

    #[test]
    fn raw_requests_are_classified_and_refused_without_the_parser() {
        let register = b"REGISTER sip:p2p.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKa;rport\r\n\
            v: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKb\r\nf: <sip:a@p2p.test>;tag=1\r\nTo: <sip:a@p2p.test> \r\n\
            Call-ID: c1\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";
        let raw = RawRequest::scan(register).expect("scanned");
        assert_eq!(raw.class, Class::New);
        let resp = crate::sip::parse(bytes::Bytes::from(raw.service_unavailable("t9", 5, "p2psip"))).expect("parses");
        assert_eq!(resp.status(), Some(503));
        assert_eq!(resp.vias().unwrap().len(), 2);
        assert_eq!(resp.to().unwrap().tag(), Some("t9"));
        assert_eq!(resp.call_id().unwrap(), "c1");
        assert_eq!(
            resp.headers.get(&crate::sip::HeaderName::other("Retry-After")).and_then(|h| h.value_str()),
            Some("5")
        );
        let text = String::from_utf8_lossy(register);
        let with_auth = text.replace("Content-Length", "Authorization: Digest username=\"a\"\r\nContent-Length");
        assert_eq!(RawRequest::scan(with_auth.as_bytes()).unwrap().class, Class::Continuation);
        let in_dialog = text.replace("To: <sip:a@p2p.test> ", "To: <sip:a@p2p.test>;tag=2");
        let stray = RawRequest::scan(in_dialog.as_bytes()).unwrap();
        assert_eq!(stray.class, Class::New, "a To tag but no Route");
        let resp = crate::sip::parse(bytes::Bytes::from(stray.service_unavailable("t9", 5, "p2psip"))).unwrap();
        assert_eq!(resp.to().unwrap().tag(), Some("2"), "the request's To tag, not a second one");
        let routed = in_dialog.replace("Call-ID", "Route: <sip:127.0.0.1:5060;lr>\r\nCall-ID");
        assert_eq!(RawRequest::scan(routed.as_bytes()).unwrap().class, Class::Exempt);
        let ack = text.replacen("REGISTER sip", "ACK sip", 1);
        assert_eq!(RawRequest::scan(ack.as_bytes()).unwrap().class, Class::Exempt);
        // Anything unusual is left to the parser.
        for odd in [
            text.replace("Call-ID: c1\r\n", ""),
            text.replace("f: <sip:a@p2p.test>;tag=1\r\n", "f: <sip:a@p2p.test>\r\n ;tag=1\r\n"),
            "SIP/2.0 200 OK\r\n\r\n".into(),
            text.replace("\r\n\r\n", "\r\n"),
            "register sip:x SIP/2.0\r\n\r\n".into(),
            String::new(),
        ] {
            assert!(RawRequest::scan(odd.as_bytes()).is_none(), "{odd:?}");
        }
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
