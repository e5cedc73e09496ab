//! SIP transactions (RFC 3261 §17, updated by RFC 6026), sans-IO.
//!
//! The contract, quinn-proto style:
//! - feed received messages with [`TransactionLayer::handle_message`]`(now, …)`;
//! - start requests with [`send_request`](TransactionLayer::send_request), answer with
//!   [`respond`](TransactionLayer::respond);
//! - call [`handle_timeout`](TransactionLayer::handle_timeout)`(now)` when
//!   [`poll_timeout`](TransactionLayer::poll_timeout) says so;
//! - drain [`poll_transmit`](TransactionLayer::poll_transmit) and
//!   [`poll_event`](TransactionLayer::poll_event) after each call.
//!
//! The layer matches messages to transactions (§17.1.3, §17.2.3), retransmits over unreliable
//! transports, absorbs retransmissions, sends the ACK for non-2xx finals and reports timeouts.
//! Every transaction is removed once Terminated, so state is bounded by the request rate times
//! 64·T1 (plus INVITE transactions the TU has not answered yet).
//!
//! # Layout
//! - `timers`: T1/T2/T4, timers A–M, the deadline queue.
//! - `key`: transaction keys and the matching rules, RFC 3261 and RFC 2543.
//! - `client`: INVITE and non-INVITE client transactions, the ACK and CANCEL builders.
//! - `server`: INVITE and non-INVITE server transactions.
//!
//! # What it does not do
//! No sockets, no clock, no randomness: the caller passes `now`, chooses where to send (`A` is
//! its address type, stored and handed back untouched), picks branches and tags, and validates
//! messages before feeding them. It knows nothing of dialogs, does not retransmit 2xx responses
//! to INVITE (the TU does, §13.3.1.4) and has no transport-error input.

mod client;
mod key;
mod server;
mod timers;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Instant;

use bytes::Bytes;

use self::client::ClientTransaction;
use self::key::{ClientKey, ServerKey};
use self::server::{AckOutcome, ServerTransaction};
use self::timers::{TimerQueue, TxRef};
use crate::sip::message::Message;
use crate::sip::method::Method;

pub use self::client::ClientState;
pub use self::server::ServerState;
pub use self::timers::Timers;

/// A server transaction, as the layer names it to the TU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerTxId(pub u64);

/// A client transaction, as the layer names it to the TU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientTxId(pub u64);

impl fmt::Display for ServerTxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "st{:x}", self.0)
    }
}

impl fmt::Display for ClientTxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ct{:x}", self.0)
    }
}

/// What a received message turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A request that starts a new server transaction; the TU must answer it with `respond`.
    /// For CANCEL, `cancels` names the INVITE server transaction it matches (RFC 3261 §9.2), if any.
    Request {
        /// The new server transaction.
        id: ServerTxId,
        /// The request.
        request: Message,
        /// For a CANCEL: the INVITE server transaction it matches.
        cancels: Option<ServerTxId>,
    },
    /// An ACK that matches no INVITE server transaction (ACK for a 2xx, §17.2.3/§13.3.1.4): goes
    /// to the TU / is proxied. Also an ACK matching an INVITE transaction in the Accepted state
    /// (RFC 6026 §7.1).
    Ack {
        /// The ACK.
        request: Message,
    },
    /// A retransmitted request (or ACK for a non-2xx) absorbed by an existing transaction; any
    /// resend was queued. Also a retransmitted response absorbed by a client transaction.
    Absorbed,
    /// A response for one of our client transactions (provisional or final; retransmitted finals
    /// are absorbed, not repeated here, except 2xx to INVITE, RFC 6026 §7.2).
    Response {
        /// Our client transaction.
        id: ClientTxId,
        /// The response.
        response: Message,
    },
    /// A response matching no client transaction (a proxy forwards 2xx statelessly, RFC 3261
    /// §16.7 / §18.1.2).
    Stray {
        /// The response.
        response: Message,
    },
}

/// Things that happened on a timer or as a consequence of input, drained by `poll_event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Timer B or F fired: treat as 408 (RFC 3261 §8.1.3.1).
    ClientTimeout {
        /// The transaction that timed out.
        id: ClientTxId,
    },
    /// Timer H fired: the ACK for our non-2xx final response never came (§17.2.1).
    ServerAckTimeout {
        /// The transaction whose ACK never came.
        id: ServerTxId,
    },
    /// A client transaction reached Terminated and was removed.
    ClientTerminated {
        /// The transaction.
        id: ClientTxId,
    },
    /// A server transaction reached Terminated and was removed.
    ServerTerminated {
        /// The transaction.
        id: ServerTxId,
    },
}

/// A call the TU made that the layer cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransactionError {
    /// The ID names no live transaction.
    #[error("no such transaction (never existed or already terminated)")]
    UnknownTransaction,
    /// A second final response.
    #[error("a final response was already sent on this transaction")]
    AlreadyFinal,
    /// A request given to `respond`.
    #[error("a request was given where a response was expected")]
    NotAResponse,
    /// A status code outside 100..=699.
    #[error("status code {0} is outside 100..=699")]
    InvalidStatus(u16),
    /// CANCEL asked for a transaction that is not an INVITE client transaction.
    #[error("only an INVITE client transaction can be cancelled")]
    NotInvite,
}

/// Borrowed outputs the state machines write to while the layer holds one transaction.
struct Ctx<'a, A> {
    now: Instant,
    timers: &'a Timers,
    queue: &'a mut TimerQueue,
    transmits: &'a mut VecDeque<(A, Bytes)>,
    events: &'a mut VecDeque<Event>,
}

/// Builds a [`Ctx`] from disjoint fields, so a transaction can be borrowed alongside it.
macro_rules! ctx {
    ($self:ident, $now:expr) => {
        Ctx {
            now: $now,
            timers: &$self.timers,
            queue: &mut $self.queue,
            transmits: &mut $self.transmits,
            events: &mut $self.events,
        }
    };
}

/// All client and server transactions of one SIP element.
///
/// `A` is the caller's opaque address type (where to send); the layer only stores and returns it.
pub struct TransactionLayer<A: Clone + fmt::Debug> {
    timers: Timers,
    send_trying: bool,
    next_id: u64,
    clients: BTreeMap<ClientTxId, ClientTransaction<A>>,
    client_index: BTreeMap<ClientKey, ClientTxId>,
    servers: BTreeMap<ServerTxId, ServerTransaction<A>>,
    server_index: BTreeMap<ServerKey, ServerTxId>,
    queue: TimerQueue,
    transmits: VecDeque<(A, Bytes)>,
    events: VecDeque<Event>,
    /// Server transactions that sent their final response and now only absorb
    /// retransmissions (Completed, Confirmed, Accepted), oldest first; ids already reaped may
    /// linger until they reach the front.
    completed_order: VecDeque<ServerTxId>,
    completed: std::collections::BTreeSet<ServerTxId>,
    max_completed: usize,
    /// Unanswered server transactions, by the budget the caller filed each under.
    unanswered: BTreeMap<ServerTxId, usize>,
    unanswered_counts: [usize; BUDGETS],
}

/// How many budgets [`TransactionLayer::handle_message_in`] can file requests under.
pub const BUDGETS: usize = 4;

impl<A: Clone + fmt::Debug> TransactionLayer<A> {
    /// A layer with no transactions, on `timers`.
    pub fn new(timers: Timers) -> Self {
        TransactionLayer {
            timers,
            send_trying: true,
            next_id: 0,
            clients: BTreeMap::new(),
            client_index: BTreeMap::new(),
            servers: BTreeMap::new(),
            server_index: BTreeMap::new(),
            queue: TimerQueue::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            completed_order: VecDeque::new(),
            completed: std::collections::BTreeSet::new(),
            max_completed: usize::MAX,
            unanswered: BTreeMap::new(),
            unanswered_counts: [0; BUDGETS],
        }
    }

    /// At most `n` answered server transactions are kept for absorbing retransmissions; past
    /// that the oldest ends early (docs/security.md, H4: an answered request costs a cached response in a
    /// bounded cache, never a slot that new requests wait for). A retransmission arriving after
    /// its transaction was evicted is taken as a new request, which is what a stateless
    /// element does anyway (RFC 3261 §8.2.7).
    pub fn set_max_completed(&mut self, n: usize) {
        self.max_completed = n.max(1);
    }

    /// Whether INVITE server transactions answer 100 Trying as soon as the INVITE arrives (on
    /// by default, as a proxy must, RFC 3261 §16.2). Turn it off when the TU always answers
    /// within 200 ms itself (§17.2.1).
    pub fn set_send_trying(&mut self, on: bool) {
        self.send_trying = on;
    }

    /// The timer values it runs with.
    pub fn timers(&self) -> &Timers {
        &self.timers
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// Feed a parsed, already validated message. For a request, `reply_to` is where responses go
    /// (the caller computes it per §18.2.2/RFC 3581); `reliable` says whether the transport is TCP
    /// (no retransmissions).
    pub fn handle_message(&mut self, now: Instant, msg: Message, reply_to: A, reliable: bool) -> Received {
        self.handle_message_in(now, msg, reply_to, reliable, 0)
    }

    /// [`handle_message`](Self::handle_message), filing a new server transaction under
    /// `budget` (below [`BUDGETS`]) until it is answered, so the caller can bound each kind of
    /// unanswered request on its own ([`server_unanswered`](Self::server_unanswered)).
    pub fn handle_message_in(
        &mut self,
        now: Instant,
        msg: Message,
        reply_to: A,
        reliable: bool,
        budget: usize,
    ) -> Received {
        match msg.method() {
            Some(Method::Ack) => self.handle_ack(now, msg),
            Some(_) => self.handle_request(now, msg, reply_to, reliable, budget.min(BUDGETS - 1)),
            None => self.handle_response(now, msg),
        }
    }

    /// Server transactions filed under `budget` that have not sent a final response yet.
    pub fn server_unanswered(&self, budget: usize) -> usize {
        self.unanswered_counts.get(budget).copied().unwrap_or(0)
    }

    fn answered(&mut self, id: ServerTxId) {
        if let Some(b) = self.unanswered.remove(&id) {
            self.unanswered_counts[b] -= 1;
        }
    }

    fn handle_request(
        &mut self,
        now: Instant,
        request: Message,
        reply_to: A,
        reliable: bool,
        budget: usize,
    ) -> Received {
        let key = ServerKey::for_request(&request);
        if let Some(&id) = self.server_index.get(&key) {
            if let Some(tx) = self.servers.get_mut(&id) {
                tracing::trace!(%id, "request retransmission absorbed");
                tx.handle_retransmission(&mut ctx!(self, now));
            }
            return Received::Absorbed;
        }
        // §9.2: a CANCEL names the INVITE with its key, method aside.
        let cancels = (request.method() == Some(&Method::Cancel))
            .then(|| self.server_index.get(&key.with_method(Method::Invite)).copied())
            .flatten();
        let id = ServerTxId(self.next_id());
        let tx = ServerTransaction::start(
            id,
            key.clone(),
            &request,
            reply_to,
            reliable,
            self.send_trying,
            &mut ctx!(self, now),
        );
        self.server_index.insert(key, id);
        self.servers.insert(id, tx);
        self.unanswered.insert(id, budget);
        self.unanswered_counts[budget] += 1;
        Received::Request { id, request, cancels }
    }

    fn handle_ack(&mut self, now: Instant, ack: Message) -> Received {
        let key = ServerKey::for_request(&ack);
        let ack_to_tag = ack.to().ok().and_then(|t| t.tag().map(str::to_owned));
        let found = key.ack_candidates().into_iter().find_map(|k| {
            let id = *self.server_index.get(&k)?;
            let tx = self.servers.get(&id)?;
            // §17.2.3: under RFC 2543 rules the ACK's To tag is that of our response.
            (tx.is_invite() && (!k.is_rfc2543() || tx.response_to_tag == ack_to_tag)).then_some(id)
        });
        let Some(id) = found else {
            return Received::Ack { request: ack };
        };
        let outcome = match self.servers.get_mut(&id) {
            Some(tx) => tx.handle_ack(&mut ctx!(self, now)),
            None => AckOutcome::ToTu,
        };
        self.reap_server(id);
        match outcome {
            AckOutcome::Absorbed => Received::Absorbed,
            AckOutcome::ToTu => Received::Ack { request: ack },
        }
    }

    fn handle_response(&mut self, now: Instant, response: Message) -> Received {
        let id = ClientKey::for_response(&response).and_then(|k| self.client_index.get(&k).copied());
        let Some((id, tx)) = id.and_then(|id| Some((id, self.clients.get_mut(&id)?))) else {
            tracing::debug!(response = %response.summary(), "stray response");
            return Received::Stray { response };
        };
        let delivered = tx.handle_response(response, &mut ctx!(self, now));
        self.reap_client(id);
        match delivered {
            Some(response) => Received::Response { id, response },
            None => Received::Absorbed,
        }
    }

    /// Send a response on a server transaction (queues the bytes; retransmission per Timer G for
    /// INVITE non-2xx over UDP).
    pub fn respond(&mut self, now: Instant, id: ServerTxId, response: Message) -> Result<(), TransactionError> {
        let tx = self.servers.get_mut(&id).ok_or(TransactionError::UnknownTransaction)?;
        let result = tx.respond(&response, &mut ctx!(self, now));
        let answered = !matches!(tx.state, ServerState::Trying | ServerState::Proceeding | ServerState::Terminated);
        if answered {
            self.answered(id);
        }
        self.reap_server(id);
        if answered && self.completed.insert(id) {
            self.completed_order.push_back(id);
            self.evict_completed();
        }
        result
    }

    /// Ends the oldest answered server transactions beyond [`set_max_completed`](Self::set_max_completed).
    fn evict_completed(&mut self) {
        while self.completed.len() > self.max_completed {
            let Some(old) = self.completed_order.pop_front() else { break };
            if self.completed.contains(&old) {
                if let Some(tx) = self.servers.get_mut(&old) {
                    tx.state = ServerState::Terminated;
                }
                self.reap_server(old);
            }
        }
        // Reaped ids left in the order queue are dropped once they outnumber the live ones.
        if self.completed_order.len() > 2 * self.completed.len() + 64 {
            let completed = &self.completed;
            self.completed_order.retain(|id| completed.contains(id));
        }
    }

    /// Start a client transaction (INVITE or non-INVITE by method). The caller has put a top Via
    /// with a unique z9hG4bK branch; the layer keys the transaction by it. Returns immediately;
    /// the first send is queued.
    ///
    /// An ACK is not a transaction (§17): it is sent once, and the id returned never appears
    /// again. Prefer [`send_stateless`](Self::send_stateless) for it.
    pub fn send_request(&mut self, now: Instant, request: Message, to: A, reliable: bool) -> ClientTxId {
        let id = ClientTxId(self.next_id());
        if request.method() == Some(&Method::Ack) {
            self.send_stateless(to, &request);
            return id;
        }
        let key = ClientKey::for_request(&request);
        if key.is_none() {
            tracing::debug!(%id, "request without a Via branch: responses to it cannot be matched");
        }
        let tx = ClientTransaction::start(id, key.clone(), request, to, reliable, &mut ctx!(self, now));
        if let Some(key) = key {
            // A reused branch takes over matching; the older transaction just runs out.
            self.client_index.insert(key, id);
        }
        self.clients.insert(id, tx);
        id
    }

    /// Queues a message outside any transaction: the ACK for a 2xx (§13.2.2.4), or a response a
    /// proxy forwards statelessly (§16.7 step 10 for [`Received::Stray`] 2xx).
    pub fn send_stateless(&mut self, to: A, message: &Message) {
        self.transmits.push_back((to, message.encode()));
    }

    /// A CANCEL for a pending INVITE client transaction (§9.1), for the TU to send with
    /// [`send_request`](Self::send_request) once a provisional response has arrived.
    pub fn make_cancel(&self, id: ClientTxId) -> Result<Message, TransactionError> {
        let tx = self.clients.get(&id).ok_or(TransactionError::UnknownTransaction)?;
        if !tx.is_invite() {
            return Err(TransactionError::NotInvite);
        }
        client::build_cancel(&tx.request).ok_or(TransactionError::NotInvite)
    }

    /// Drops a client transaction the TU has given up on (e.g. an INVITE still Proceeding when
    /// the proxy's timer C fires, §16.8). Emits [`Event::ClientTerminated`].
    pub fn terminate_client(&mut self, id: ClientTxId) -> Result<(), TransactionError> {
        let tx = self.clients.get_mut(&id).ok_or(TransactionError::UnknownTransaction)?;
        tx.state = ClientState::Terminated;
        self.reap_client(id);
        Ok(())
    }

    /// Drops a server transaction without answering it (e.g. on shutdown). Emits
    /// [`Event::ServerTerminated`].
    pub fn terminate_server(&mut self, id: ServerTxId) -> Result<(), TransactionError> {
        let tx = self.servers.get_mut(&id).ok_or(TransactionError::UnknownTransaction)?;
        tx.state = ServerState::Terminated;
        self.reap_server(id);
        Ok(())
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let watermark = self.queue.watermark();
        while let Some((key, entry)) = self.queue.pop_due(now, watermark) {
            match entry.tx {
                TxRef::Client(id) => {
                    let Some(tx) = self.clients.get_mut(&id) else { continue };
                    if tx.armed.fired(entry.name, key) {
                        tx.handle_timer(entry.name, &mut ctx!(self, now));
                        self.reap_client(id);
                    }
                }
                TxRef::Server(id) => {
                    let Some(tx) = self.servers.get_mut(&id) else { continue };
                    if tx.armed.fired(entry.name, key) {
                        tx.handle_timer(entry.name, &mut ctx!(self, now));
                        self.reap_server(id);
                    }
                }
            }
        }
    }

    /// Removes a client transaction if it reached Terminated.
    fn reap_client(&mut self, id: ClientTxId) {
        if self.clients.get(&id).is_none_or(|tx| tx.state != ClientState::Terminated) {
            return;
        }
        if let Some(mut tx) = self.clients.remove(&id) {
            self.queue.cancel_all(&mut tx.armed);
            if let Some(key) = &tx.key {
                if self.client_index.get(key) == Some(&id) {
                    self.client_index.remove(key);
                }
            }
            self.events.push_back(Event::ClientTerminated { id });
        }
    }

    /// Removes a server transaction if it reached Terminated.
    fn reap_server(&mut self, id: ServerTxId) {
        if self.servers.get(&id).is_none_or(|tx| tx.state != ServerState::Terminated) {
            return;
        }
        if let Some(mut tx) = self.servers.remove(&id) {
            self.completed.remove(&id);
            self.answered(id);
            self.queue.cancel_all(&mut tx.armed);
            if self.server_index.get(&tx.key) == Some(&id) {
                self.server_index.remove(&tx.key);
            }
            self.events.push_back(Event::ServerTerminated { id });
        }
    }

    /// The next message to send, and where.
    pub fn poll_transmit(&mut self) -> Option<(A, Bytes)> {
        self.transmits.pop_front()
    }

    /// The next thing that happened (timeouts, terminations).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest deadline at which [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.queue.next_deadline()
    }

    /// Live server transactions.
    pub fn server_count(&self) -> usize {
        self.servers.len()
    }

    /// Server transactions still waiting for their final response: what holds a TU's slot.
    pub fn server_pending_count(&self) -> usize {
        self.servers.len() - self.completed.len()
    }

    /// Live client transactions.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// The state of a client transaction, while it lives.
    pub fn client_state(&self, id: ClientTxId) -> Option<ClientState> {
        self.clients.get(&id).map(|tx| tx.state)
    }

    /// The state of a server transaction, while it lives.
    pub fn server_state(&self, id: ServerTxId) -> Option<ServerState> {
        self.servers.get(&id).map(|tx| tx.state)
    }

    /// How many timers are armed (for tests and status pages: bounded by transactions × 3).
    pub fn timer_count(&self) -> usize {
        self.queue.len()
    }
}

impl<A: Clone + fmt::Debug> fmt::Debug for TransactionLayer<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionLayer")
            .field("clients", &self.clients.len())
            .field("servers", &self.servers.len())
            .field("timers", &self.queue.len())
            .field("next_deadline", &self.queue.next_deadline())
            .finish()
    }
}
