//! Lock-step two-layer tests over a lossy virtual network (the shape of quinn-proto's
//! `tests/util.rs` `Pair`): a client layer and a server layer, each with a scripted TU, exchange
//! bytes through a seeded network that drops and delays packets; the clock jumps to the next
//! deadline. Each run is replayable from its seed.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::sip::transaction::{ClientTxId, ServerTxId};
use crate::sip::Method;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Client,
    Server,
}

/// A sans-IO network: loss and latency drawn from a seeded RNG, delivery ordered by time.
struct Network {
    rng: ChaCha8Rng,
    loss: f64,
    in_flight: BTreeMap<(Instant, u64), (Side, Bytes)>,
    seq: u64,
}

impl Network {
    fn send(&mut self, now: Instant, to: Side, bytes: Bytes) {
        if self.rng.random_bool(self.loss) {
            return;
        }
        // 10–60 ms one way; jitter may reorder.
        let at = now + ms(self.rng.random_range(10..=60));
        self.in_flight.insert((at, self.seq), (to, bytes));
        self.seq += 1;
    }

    fn next_delivery(&self) -> Option<Instant> {
        self.in_flight.first_key_value().map(|((at, _), _)| *at)
    }

    fn pop_due(&mut self, now: Instant) -> Option<(Side, Bytes)> {
        let (&key, _) = self.in_flight.first_key_value()?;
        if key.0 > now {
            return None;
        }
        self.in_flight.remove(&key)
    }
}

/// What the server's TU answers.
#[derive(Clone, Copy, Debug)]
struct Script {
    method: &'static str,
    /// Final status the server TU sends, after a 180 for INVITE.
    final_code: u16,
    /// How long the server TU takes before its final.
    answer_after: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Up,
    Absorbed,
    Stray,
}

#[derive(Default)]
struct ClientTu {
    /// Every response the layer passed up: (id, status, when).
    responses: Vec<(ClientTxId, u16, Instant)>,
    events: Vec<(Event, Instant)>,
    acks_for_2xx: usize,
}

#[derive(Default)]
struct ServerTu {
    requests: Vec<(ServerTxId, Message)>,
    acks: usize,
    events: Vec<Event>,
    /// When to send the final, and when to retransmit a 2xx (§13.3.1.4), for the one call.
    answer_at: Option<Instant>,
    retransmit_2xx: Option<(Instant, Duration, Instant)>,
}

struct Pair {
    start: Instant,
    now: Instant,
    reliable: bool,
    script: Script,
    client: TransactionLayer<Side>,
    server: TransactionLayer<Side>,
    net: Network,
    client_tu: ClientTu,
    server_tu: ServerTu,
    /// Each final that reached the client layer over the wire, and what the layer made of it.
    finals_at_client: Vec<(u16, Outcome)>,
    acks_sent_by_client: usize,
}

impl Pair {
    fn new(seed: u64, loss: f64, reliable: bool, script: Script) -> Pair {
        let start = epoch();
        Pair {
            start,
            now: start,
            reliable,
            script,
            client: TransactionLayer::new(Timers::default()),
            server: TransactionLayer::new(Timers::default()),
            net: Network { rng: ChaCha8Rng::seed_from_u64(seed), loss, in_flight: BTreeMap::new(), seq: 0 },
            client_tu: ClientTu::default(),
            server_tu: ServerTu::default(),
            finals_at_client: Vec::new(),
            acks_sent_by_client: 0,
        }
    }

    fn start_request(&mut self) -> ClientTxId {
        let req = request(self.script.method, "z9hG4bKsim1");
        self.client.send_request(self.now, req, Side::Server, self.reliable)
    }

    /// Moves queued output into the network and events into the TUs.
    fn flush(&mut self) {
        while let Some((to, bytes)) = self.client.poll_transmit() {
            if parse(bytes.clone()).is_ok_and(|m| m.method() == Some(&Method::Ack)) {
                self.acks_sent_by_client += 1;
            }
            self.net.send(self.now, to, bytes);
        }
        while let Some((to, bytes)) = self.server.poll_transmit() {
            self.net.send(self.now, to, bytes);
        }
        while let Some(e) = self.client.poll_event() {
            self.client_tu.events.push((e, self.now));
        }
        while let Some(e) = self.server.poll_event() {
            if matches!(e, Event::ServerTerminated { .. }) {
                self.server_tu.retransmit_2xx = None;
            }
            self.server_tu.events.push(e);
        }
    }

    fn deliver(&mut self, to: Side, bytes: Bytes) {
        let msg = parse(bytes).expect("layers only send parseable messages");
        let now = self.now;
        match to {
            Side::Server => match self.server.handle_message(now, msg, Side::Client, self.reliable) {
                Received::Request { id, request, .. } => {
                    if request.method() == Some(&Method::Invite) {
                        self.server.respond(now, id, response(&request, 180)).unwrap();
                    }
                    self.server_tu.answer_at = Some(now + self.script.answer_after);
                    self.server_tu.requests.push((id, request));
                }
                Received::Ack { .. } => {
                    self.server_tu.acks += 1;
                    self.server_tu.retransmit_2xx = None;
                }
                Received::Absorbed => {}
                other => panic!("server got {other:?}"),
            },
            Side::Client => {
                let code = msg.status().unwrap_or(0);
                let received = self.client.handle_message(now, msg, Side::Server, self.reliable);
                if code >= 200 {
                    let outcome = match received {
                        Received::Response { .. } => Outcome::Up,
                        Received::Absorbed => Outcome::Absorbed,
                        _ => Outcome::Stray,
                    };
                    self.finals_at_client.push((code, outcome));
                }
                match received {
                    Received::Response { id, response } => {
                        let code = response.status().unwrap_or(0);
                        self.client_tu.responses.push((id, code, now));
                        if (200..300).contains(&code) && self.script.method == "INVITE" {
                            // §13.2.2.4: the UAC core ACKs every 2xx, outside the transaction.
                            let mut ack = ack_for(&request("INVITE", "z9hG4bKsimack"), "b1");
                            ack.headers
                                .set(crate::sip::Header::new(crate::sip::HeaderName::CallId, "call-z9hG4bKsim1"));
                            self.client.send_stateless(Side::Server, &ack);
                            self.client_tu.acks_for_2xx += 1;
                        }
                    }
                    Received::Absorbed | Received::Stray { .. } => {}
                    other => panic!("client got {other:?}"),
                }
            }
        }
    }

    /// The server TU's own timers: answering, and retransmitting a 2xx until the ACK comes.
    fn server_tu_timers(&mut self) {
        let now = self.now;
        let Some((id, req)) = self.server_tu.requests.first().cloned() else { return };
        if self.server_tu.answer_at.is_some_and(|at| at <= now) {
            self.server_tu.answer_at = None;
            let code = self.script.final_code;
            self.server.respond(now, id, response(&req, code)).unwrap();
            if (200..300).contains(&code) && req.method() == Some(&Method::Invite) && !self.reliable {
                // §13.3.1.4: T1 doubling to T2, for 64·T1.
                self.server_tu.retransmit_2xx = Some((now + ms(500), ms(500), now + ms(32_000)));
            }
        }
        if let Some((at, interval, until)) = self.server_tu.retransmit_2xx {
            if at <= now {
                if now >= until {
                    self.server_tu.retransmit_2xx = None;
                } else {
                    // The transaction may be gone meanwhile (timer L); that is fine.
                    let _ = self.server.respond(now, id, response(&req, self.script.final_code));
                    let next = (interval * 2).min(ms(4000));
                    self.server_tu.retransmit_2xx = Some((now + next, next, until));
                }
            }
        }
    }

    fn next_wakeup(&self) -> Option<Instant> {
        [
            self.net.next_delivery(),
            self.client.poll_timeout(),
            self.server.poll_timeout(),
            self.server_tu.answer_at,
            self.server_tu.retransmit_2xx.map(|(at, _, _)| at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs until nothing is left to do, or `limit` after the start.
    fn drive(&mut self, limit: Duration) {
        loop {
            self.flush();
            while let Some((to, bytes)) = self.net.pop_due(self.now) {
                self.deliver(to, bytes);
                self.flush();
            }
            self.server_tu_timers();
            self.flush();
            let Some(next) = self.next_wakeup() else { break };
            if next > self.start + limit {
                break;
            }
            self.now = self.now.max(next);
            self.client.handle_timeout(self.now);
            self.server.handle_timeout(self.now);
        }
    }

    fn finals_to_client_tu(&self) -> Vec<u16> {
        self.client_tu.responses.iter().map(|(_, c, _)| *c).filter(|c| *c >= 200).collect()
    }

    /// How many finals reached the client layer and got the given treatment.
    fn finals(&self, outcome: Outcome) -> usize {
        self.finals_at_client.iter().filter(|(_, o)| *o == outcome).count()
    }

    fn client_timed_out(&self) -> Option<Instant> {
        self.client_tu.events.iter().find(|(e, _)| matches!(e, Event::ClientTimeout { .. })).map(|(_, t)| *t)
    }

    fn assert_all_gone(&self, seed: u64) {
        assert_eq!(self.client.client_count(), 0, "seed {seed}: client transaction left");
        assert_eq!(self.server.server_count(), 0, "seed {seed}: server transaction left");
        assert_eq!(self.client.timer_count() + self.server.timer_count(), 0, "seed {seed}: timers left");
    }
}

const SEEDS: u64 = 200;
const TEN_MINUTES: Duration = Duration::from_secs(600);

fn non_invite() -> Script {
    Script { method: "OPTIONS", final_code: 200, answer_after: ms(0) }
}

fn invite(final_code: u16) -> Script {
    Script { method: "INVITE", final_code, answer_after: ms(1500) }
}

#[test]
fn non_invite_completes_over_30_percent_loss() {
    let mut completed = 0;
    for seed in 0..SEEDS {
        let mut p = Pair::new(seed, 0.3, false, non_invite());
        p.start_request();
        p.drive(TEN_MINUTES);
        let finals = p.finals_to_client_tu();
        assert!(finals.len() <= 1, "seed {seed}: final delivered {} times", finals.len());
        match p.client_timed_out() {
            None => {
                assert_eq!(finals, [200], "seed {seed}");
                completed += 1;
            }
            Some(at) => {
                // Only legitimate when no final reached the transaction.
                assert_eq!(p.finals(Outcome::Up) + p.finals(Outcome::Absorbed), 0, "seed {seed}");
                assert_eq!(at - p.start, ms(32_000), "seed {seed}");
            }
        }
        assert!(p.server_tu.requests.len() <= 1, "seed {seed}: the server TU saw a retransmission");
        p.assert_all_gone(seed);
    }
    // P(11 round trips all fail) = 0.51^11 ≈ 6e-4 per run.
    assert!(completed >= SEEDS - 2, "only {completed}/{SEEDS} completed");
}

#[test]
fn invite_rejected_completes_over_30_percent_loss() {
    let mut confirmed = 0;
    for seed in 0..SEEDS {
        let mut p = Pair::new(seed, 0.3, false, invite(486));
        p.start_request();
        p.drive(TEN_MINUTES);
        let finals = p.finals_to_client_tu();
        assert!(finals.len() <= 1, "seed {seed}: final delivered {} times", finals.len());
        // §17.1.1.3: one ACK for each copy of the final that reached the transaction.
        assert_eq!(p.acks_sent_by_client, p.finals(Outcome::Up) + p.finals(Outcome::Absorbed), "seed {seed}");
        // The ACK for a non-2xx never reaches the server TU.
        assert_eq!(p.server_tu.acks, 0, "seed {seed}");
        assert!(p.server_tu.requests.len() <= 1, "seed {seed}");
        let ack_timeout = p.server_tu.events.iter().any(|e| matches!(e, Event::ServerAckTimeout { .. }));
        if finals == [486] && !ack_timeout {
            confirmed += 1;
        }
        p.assert_all_gone(seed);
    }
    assert!(confirmed >= SEEDS - 2, "only {confirmed}/{SEEDS} confirmed");
}

#[test]
fn invite_accepted_completes_over_30_percent_loss() {
    let mut acked = 0;
    for seed in 0..SEEDS {
        let mut p = Pair::new(seed, 0.3, false, invite(200));
        p.start_request();
        p.drive(TEN_MINUTES);
        let finals = p.finals_to_client_tu();
        // RFC 6026 §7.2: every 2xx that reaches the transaction goes up, none is swallowed.
        assert_eq!(p.finals(Outcome::Absorbed), 0, "seed {seed}");
        assert_eq!(finals.len(), p.finals(Outcome::Up), "seed {seed}");
        assert!(finals.iter().all(|c| *c == 200), "seed {seed}");
        assert!(p.server_tu.requests.len() <= 1, "seed {seed}");
        if !finals.is_empty() && p.server_tu.acks > 0 {
            acked += 1;
        }
        p.assert_all_gone(seed);
    }
    assert!(acked >= SEEDS - 2, "only {acked}/{SEEDS} acknowledged");
}

#[test]
fn lossless_tcp_sends_each_message_once() {
    for script in [non_invite(), invite(486), invite(200)] {
        let mut p = Pair::new(7, 0.0, true, script);
        p.start_request();
        p.drive(TEN_MINUTES);
        assert_eq!(p.finals_to_client_tu(), [script.final_code], "{script:?}");
        assert_eq!(p.finals_at_client, [(script.final_code, Outcome::Up)], "{script:?}");
        assert_eq!(p.net.seq, if script.method == "INVITE" { 5 } else { 2 }, "{script:?}");
        p.assert_all_gone(7);
    }
}

/// Sends, as offsets from the start, of everything the client put on the (dead) wire.
fn client_send_times(script: Script) -> (Vec<Duration>, Option<Duration>) {
    let mut p = Pair::new(1, 1.0, false, script);
    let mut sends = Vec::new();
    p.start_request();
    loop {
        while p.client.poll_transmit().is_some() {
            sends.push(p.now - p.start);
        }
        let Some(next) = p.client.poll_timeout() else { break };
        p.now = next;
        p.client.handle_timeout(next);
    }
    p.flush();
    (sends, p.client_timed_out().map(|t| t - p.start))
}

#[test]
fn total_loss_non_invite_retransmits_on_schedule_and_times_out_at_64_t1() {
    let (sends, timeout) = client_send_times(non_invite());
    assert_eq!(gaps(&sends), [500, 1000, 2000, 4000, 4000, 4000, 4000, 4000, 4000, 4000].map(ms));
    assert_eq!(timeout, Some(ms(32_000)));
}

#[test]
fn total_loss_invite_retransmits_doubling_and_times_out_at_64_t1() {
    let (sends, timeout) = client_send_times(invite(200));
    assert_eq!(gaps(&sends), [500, 1000, 2000, 4000, 8000, 16_000].map(ms));
    assert_eq!(timeout, Some(ms(32_000)));
}

#[test]
fn total_loss_through_the_pair_times_out_exactly_at_64_t1() {
    for script in [non_invite(), invite(486)] {
        let mut p = Pair::new(3, 1.0, false, script);
        let id = p.start_request();
        p.drive(TEN_MINUTES);
        assert_eq!(p.client_timed_out().map(|t| t - p.start), Some(ms(32_000)), "{script:?}");
        let evs: Vec<Event> = p.client_tu.events.iter().map(|(e, _)| *e).collect();
        assert_eq!(evs, [Event::ClientTimeout { id }, Event::ClientTerminated { id }]);
        assert!(p.server_tu.requests.is_empty());
        p.assert_all_gone(3);
    }
}
