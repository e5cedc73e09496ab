//! Random input: mutated and header-less messages, API calls in any order, any timing. The
//! layer must never panic, and once the TU has answered everything and the clock has run on,
//! every transaction and timer must be gone, each with exactly one Terminated event.

use std::collections::BTreeSet;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::sip::transaction::{ClientState, ClientTxId, ServerTxId};
use crate::sip::{Method, Uri};

fn corpus() -> Vec<Message> {
    let invite = request("INVITE", "z9hG4bKf1");
    let options = request("OPTIONS", "z9hG4bKf2");
    let cancel = with_method(&invite, "CANCEL");
    let old = request("INVITE", "f2543");
    let uri = Uri::parse("sip:x@example.com").expect("uri");
    vec![
        invite.clone(),
        with_method(&invite, "ACK"),
        ack_for(&invite, "b1"),
        cancel.clone(),
        options.clone(),
        request("BYE", "z9hG4bKf3"),
        old.clone(),
        ack_for(&old, "b1"),
        response(&invite, 100),
        response(&invite, 180),
        response(&invite, 200),
        response(&invite, 486),
        response(&options, 200),
        response(&cancel, 200),
        response(&old, 486),
        // Unvalidated shapes: no Via, no CSeq, nothing.
        Message::request(Method::Invite, uri.clone()),
        Message::request(Method::Ack, uri.clone()),
        Message::request(Method::Cancel, uri),
        Message::response(200, "OK"),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Feed { msg: usize, flips: Vec<(usize, u8)>, reliable: bool },
    Send { msg: usize, reliable: bool },
    Respond { tx: usize, code: u16 },
    RespondWith { tx: usize, msg: usize },
    Advance { ms: u64 },
    TerminateClient { tx: usize },
    TerminateServer { tx: usize },
    Cancel { tx: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<usize>(), prop::collection::vec((any::<usize>(), any::<u8>()), 0..4), any::<bool>())
            .prop_map(|(msg, flips, reliable)| Op::Feed { msg, flips, reliable }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(msg, reliable)| Op::Send { msg, reliable }),
        2 => (any::<usize>(), 0u16..800).prop_map(|(tx, code)| Op::Respond { tx, code }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(tx, msg)| Op::RespondWith { tx, msg }),
        3 => (0u64..40_000).prop_map(|ms| Op::Advance { ms }),
        1 => any::<usize>().prop_map(|tx| Op::TerminateClient { tx }),
        1 => any::<usize>().prop_map(|tx| Op::TerminateServer { tx }),
        1 => any::<usize>().prop_map(|tx| Op::Cancel { tx }),
    ]
}

struct World {
    corpus: Vec<Message>,
    now: Instant,
    l: TransactionLayer<Addr>,
    servers: Vec<(ServerTxId, Message)>,
    clients: Vec<ClientTxId>,
    events: Vec<Event>,
}

impl World {
    fn new() -> World {
        World {
            corpus: corpus(),
            now: epoch(),
            l: layer(),
            servers: Vec::new(),
            clients: Vec::new(),
            events: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while self.l.poll_transmit().is_some() {}
        self.events.extend(std::iter::from_fn(|| self.l.poll_event()));
    }

    fn feed(&mut self, m: Message, reliable: bool) {
        if let Received::Request { id, request, .. } = self.l.handle_message(self.now, m, "peer", reliable) {
            self.servers.push((id, request));
        }
    }

    fn apply(&mut self, op: Op) {
        let n = self.corpus.len();
        match op {
            Op::Feed { msg, flips, reliable } => {
                let mut bytes = self.corpus[msg % n].encode().to_vec();
                for (pos, b) in flips {
                    let len = bytes.len();
                    bytes[pos % len] = b;
                }
                if let Ok(m) = parse(Bytes::from(bytes)) {
                    self.feed(m, reliable);
                }
            }
            Op::Send { msg, reliable } => {
                let id = self.l.send_request(self.now, self.corpus[msg % n].clone(), "peer", reliable);
                if self.l.client_state(id).is_some() {
                    self.clients.push(id);
                }
            }
            Op::Respond { tx, code } => {
                if let Some((id, req)) = self.servers.get(tx % self.servers.len().max(1)).cloned() {
                    let _ = self.l.respond(self.now, id, req.make_response(code, "R", Some("t")));
                }
            }
            Op::RespondWith { tx, msg } => {
                if let Some((id, _)) = self.servers.get(tx % self.servers.len().max(1)).cloned() {
                    let _ = self.l.respond(self.now, id, self.corpus[msg % n].clone());
                }
            }
            Op::Advance { ms: d } => {
                let until = self.now + ms(d);
                while let Some(at) = self.l.poll_timeout().filter(|at| *at <= until) {
                    self.now = self.now.max(at);
                    self.l.handle_timeout(self.now);
                }
                self.now = until;
                self.l.handle_timeout(self.now);
            }
            Op::TerminateClient { tx } => {
                if let Some(id) = self.clients.get(tx % self.clients.len().max(1)) {
                    let _ = self.l.terminate_client(*id);
                }
            }
            Op::TerminateServer { tx } => {
                if let Some((id, _)) = self.servers.get(tx % self.servers.len().max(1)) {
                    let _ = self.l.terminate_server(*id);
                }
            }
            Op::Cancel { tx } => {
                if let Some(id) = self.clients.get(tx % self.clients.len().max(1)) {
                    if let Ok(cancel) = self.l.make_cancel(*id) {
                        let cid = self.l.send_request(self.now, cancel, "peer", false);
                        self.clients.push(cid);
                    }
                }
            }
        }
        self.drain();
    }

    /// The TU answers everything, gives up INVITEs still Proceeding, and time runs out.
    fn settle(&mut self) {
        for (id, req) in self.servers.clone() {
            let _ = self.l.respond(self.now, id, req.make_response(500, "Server Internal Error", Some("t")));
        }
        for _ in 0..2 {
            for id in self.clients.clone() {
                if self.l.client_state(id) == Some(ClientState::Proceeding) {
                    let _ = self.l.terminate_client(id);
                }
            }
            let mut steps = 0;
            while let Some(at) = self.l.poll_timeout() {
                self.now = self.now.max(at);
                self.l.handle_timeout(self.now);
                self.drain();
                steps += 1;
                assert!(steps < 100_000, "timers never settle");
            }
        }
        self.drain();
    }

    fn check_bounded(&self) {
        assert_eq!(self.l.server_count(), 0, "server transactions left: {:?}", self.l);
        assert_eq!(self.l.client_count(), 0, "client transactions left: {:?}", self.l);
        assert_eq!(self.l.timer_count(), 0);
        let mut servers = BTreeSet::new();
        let mut clients = BTreeSet::new();
        for e in &self.events {
            match e {
                Event::ServerTerminated { id } => assert!(servers.insert(*id), "{id} terminated twice"),
                Event::ClientTerminated { id } => assert!(clients.insert(*id), "{id} terminated twice"),
                _ => {}
            }
        }
        assert_eq!(servers.len(), self.servers.len());
        assert_eq!(clients.len(), self.clients.len());
    }
}

proptest! {
    #[test]
    fn random_operations_never_panic_and_leave_nothing_behind(ops in prop::collection::vec(op(), 0..60)) {
        let mut w = World::new();
        for op in ops {
            w.apply(op);
        }
        w.settle();
        w.check_bounded();
    }
}

/// Heavier mutation than the proptest: many seeded byte flips, insertions and truncations.
#[test]
fn seeded_mutations_never_panic() {
    for seed in 0..300u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut w = World::new();
        for _ in 0..50 {
            let n = w.corpus.len();
            let mut bytes = w.corpus[rng.random_range(0..n)].encode().to_vec();
            for _ in 0..rng.random_range(0..8) {
                let i = rng.random_range(0..bytes.len());
                match rng.random_range(0..3) {
                    0 => bytes[i] = rng.random(),
                    1 => bytes.insert(i, *b";:,<>\" \r\nz9hG4bK=".get(rng.random_range(0..17)).unwrap_or(&b'x')),
                    _ => bytes.truncate(i.max(1)),
                }
            }
            if let Ok(m) = parse(Bytes::from(bytes)) {
                w.feed(m, rng.random_bool(0.3));
            }
            if rng.random_bool(0.3) && !w.servers.is_empty() {
                let (id, req) = w.servers[rng.random_range(0..w.servers.len())].clone();
                let _ = w.l.respond(w.now, id, req.make_response(rng.random_range(100..700), "R", Some("t")));
            }
            w.now += ms(rng.random_range(0..5000));
            w.l.handle_timeout(w.now);
            w.drain();
        }
        w.settle();
        w.check_bounded();
    }
}
