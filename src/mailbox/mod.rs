//! Offline messages, sans-IO (issue 15; `docs/storage-over-sip.md`, "Mailboxes").
//!
//! A MESSAGE (RFC 3428) from one of our phones to a user with no live registration is sealed
//! by this node to that user's encryption key, signed as our user and stored in the user's
//! mailbox in the overlay; the phone gets `202 Accepted` once a place holds a copy (`send`).
//! The other way round, this node lists its own user's mailbox when a phone of the user
//! registers (and every few minutes while one is), opens each message, hands it to every
//! phone of the user as an ordinary MESSAGE with the original From, Date and body, and once
//! a phone has answered 2xx deletes it with a tombstone only our user can sign (`receive`).
//! Delivery is at least once; a log of what reached which phone (`log`) suppresses
//! duplicates, and survives restart because the driver writes each entry to the data
//! directory.
//!
//! [`Mailbox`] never touches the store or the network itself: it asks the peer for storage
//! operations ([`Output::FetchKey`], [`Output::Put`], [`Output::List`]) and for SIP
//! ([`Output::Answer`] to a phone's MESSAGE, [`Output::Deliver`] to a phone), and hears back
//! through its methods. Time and randomness come in as arguments: `now`, Unix seconds, and the
//! driver's [`SharedRandom`] for message IDs and HPKE's ephemeral keys.

pub mod fuzzing;
pub mod letter;
pub mod log;
mod receive;
mod send;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::identity::hpke::EncryptionKeyPair;
use crate::identity::{Aor, KeyPair, SharedRandom};
use crate::sip::transaction::{ClientTxId, ServerTxId};
use crate::sip::{Message, Uri};
use crate::store::mailbox::MessageId;
use crate::store::{Record, Unsigned};

use crate::transport::Endpoint;

pub use letter::Letter;
pub use log::Delivered;

/// What the mailbox signs and opens with: the node's enrolled user and its encryption key.
pub struct MailboxIdentity {
    /// Our user.
    pub aor: Aor,
    /// The certified signing key.
    pub key: KeyPair,
    /// Its chain, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The leaf's notAfter, Unix seconds: nothing we sign outlives it.
    pub not_after: u64,
    /// The X25519 key pair messages to our user are sealed to.
    pub encryption: EncryptionKeyPair,
    /// Randomness for signatures, message IDs and HPKE.
    pub rng: SharedRandom,
}

/// How the mailbox behaves.
#[derive(Debug, Clone)]
pub struct MailboxConfig {
    /// How long a stored message waits for its recipient, seconds (the storing nodes' longest
    /// record lifetime, less an hour for clock skew).
    pub lifetime_secs: u64,
    /// How often our mailbox is listed again while we have it in mind: a message stored while
    /// our registration record still said we were offline is found this late at most.
    pub recheck_interval: Duration,
}

impl Default for MailboxConfig {
    fn default() -> MailboxConfig {
        MailboxConfig { lifetime_secs: 7 * 86_400 - 3600, recheck_interval: Duration::from_secs(300) }
    }
}

/// Names one storage operation the mailbox asked for; the peer maps its own op IDs to these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(pub u64);

/// One phone of our user, as the registrar has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// What tells one device from another: its `+sip.instance`, else its contact URI.
    pub id: String,
    /// The contact URI (the Request-URI of what we send it).
    pub uri: Uri,
    /// Where requests for it go.
    pub flow: Endpoint,
}

/// How a put ended, place by place, as the peer saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutResult {
    /// Places that accepted the record.
    pub stored: usize,
    /// Each failed place's reason (a refusal's reason phrase, or why it did not answer).
    pub failures: Vec<String>,
}

/// What the mailbox asks of the peer.
#[derive(Debug)]
pub enum Output {
    /// Fetch the encryption-key record of `aor`; answer with [`Mailbox::key_fetched`].
    FetchKey {
        /// The operation.
        ticket: Ticket,
        /// Whose key.
        aor: String,
    },
    /// Store `record` at its places; answer with [`Mailbox::put_done`].
    Put {
        /// The operation.
        ticket: Ticket,
        /// A sealed message or a tombstone.
        record: Record,
    },
    /// List our mailbox; answer with [`Mailbox::listed`].
    List {
        /// The operation.
        ticket: Ticket,
        /// Our AoR.
        aor: String,
    },
    /// Answer a phone's MESSAGE (`202` once stored, or a final error).
    Answer {
        /// Its server transaction.
        sid: ServerTxId,
        /// The status.
        status: u16,
        /// The reason phrase.
        reason: String,
    },
    /// Send `request` (no Via yet) to a phone of our user; tell [`Mailbox::delivery_sent`]
    /// which client transaction carries it.
    Deliver {
        /// The message.
        id: MessageId,
        /// The phone.
        device: Device,
        /// The MESSAGE request.
        request: Box<Message>,
    },
    /// A message reached a phone: the driver keeps this entry (the delivery log).
    Delivered(Delivered),
}

/// What `/status` shows of the mailbox, and `p2psip messages`' source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MailboxCounters {
    /// Messages to others that our phones sent and a place stored (answered 202).
    pub sent_stored: u64,
    /// ...that could not be stored (answered with an error).
    pub sent_refused: u64,
    /// Messages to our user delivered to a phone (entries in the delivery log, all time).
    pub delivered: u64,
    /// Messages removed from our mailbox after delivery.
    pub deleted: u64,
    /// Messages in our mailbox this node could not open (sealed to another key, or altered).
    pub unreadable: u64,
    /// Copies of messages suppressed because the phone had it already.
    pub duplicates_suppressed: u64,
}

/// `"mailbox"` in `/status`. Field names are a contract with scripts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MailboxStatus {
    /// Messages this node stores for other users' mailboxes (tombstones not counted).
    pub held_for_others: u64,
    /// Messages in our user's mailbox not yet delivered to any phone, as last listed.
    pub waiting_for_me: u64,
    /// Messages delivered to our user's phones (the delivery log's, all kept).
    pub delivered: u64,
    /// What the mailbox has done (zero on a node with no enrolled user).
    #[serde(flatten)]
    pub counters: MailboxCounters,
}

/// The JSON of `GET /messages` and `p2psip messages --json`: what waits for our user and what
/// was delivered when. Field names are a contract with scripts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Messages {
    /// Our user, `null` when the node is not enrolled.
    pub aor: Option<String>,
    /// Waiting in the overlay, not yet on any phone.
    pub waiting: Vec<Waiting>,
    /// Delivered, newest first, one entry per message and phone.
    pub delivered: Vec<Delivered>,
}

/// A message in our mailbox, opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Waiting {
    /// Its ID (hex).
    pub id: String,
    /// The sender's AoR, as its certificate proves.
    pub from: String,
    /// The original From's display name.
    pub display: String,
    /// The original Date.
    pub date: String,
    /// The body's type.
    pub content_type: String,
    /// The body, as text.
    pub body: String,
    /// Unix seconds after which the overlay forgets it.
    pub expires_at: u64,
}

/// Why a ticket was issued: what its answer goes on with.
#[derive(Debug)]
enum Purpose {
    /// A send's key fetch or message put.
    Send(u64),
    /// A tombstone for one of our messages.
    Delete(MessageId),
    /// A listing of our mailbox.
    List,
}

/// Offline messages to and from this node's user (see the module documentation).
pub struct Mailbox {
    identity: MailboxIdentity,
    config: MailboxConfig,
    /// Tags and Call-IDs of what we send phones (not secrets).
    ids: ChaCha8Rng,
    tickets: BTreeMap<Ticket, Purpose>,
    next_ticket: u64,
    /// Sends in progress (`send`).
    sends: BTreeMap<u64, send::Job>,
    next_job: u64,
    /// Our user's phones now.
    devices: Vec<Device>,
    /// Our mailbox as last listed, opened: what waits to be delivered or deleted.
    waiting: BTreeMap<MessageId, receive::Held>,
    /// Deliveries in flight: the phone each is for.
    deliveries: BTreeMap<ClientTxId, (MessageId, String)>,
    /// Deliveries asked of the peer and not yet sent ([`Mailbox::delivery_sent`]).
    pending_to: Vec<(MessageId, String)>,
    /// Tombstones being stored.
    deleting: BTreeSet<MessageId>,
    /// (message, phone) pairs that failed since the last listing: not tried again before it.
    failed: BTreeSet<(MessageId, String)>,
    /// Messages of our mailbox that did not open (counted once each).
    unreadable: BTreeSet<MessageId>,
    /// What reached which phone (`log`).
    log: log::DeliveryLog,
    /// Storage reaches the ring (`set_on_ring`).
    on_ring: bool,
    /// A listing in flight; another is wanted after it.
    listing: Option<Ticket>,
    list_again: bool,
    next_listing: Instant,
    counters: MailboxCounters,
    out: VecDeque<Output>,
}

impl Mailbox {
    /// The mailbox of `identity`'s user; `delivered` is the delivery log the driver kept.
    pub fn new(
        identity: MailboxIdentity,
        config: MailboxConfig,
        delivered: Vec<Delivered>,
        seed: u64,
        now: Instant,
    ) -> Mailbox {
        let log = log::DeliveryLog::new(delivered);
        let counters = MailboxCounters { delivered: log.messages() as u64, ..MailboxCounters::default() };
        Mailbox {
            identity,
            // The first listing comes when storage reaches the ring (`set_on_ring`).
            next_listing: now + config.recheck_interval,
            config,
            ids: ChaCha8Rng::seed_from_u64(seed),
            tickets: BTreeMap::new(),
            next_ticket: 0,
            sends: BTreeMap::new(),
            next_job: 0,
            devices: Vec::new(),
            waiting: BTreeMap::new(),
            deliveries: BTreeMap::new(),
            pending_to: Vec::new(),
            deleting: BTreeSet::new(),
            failed: BTreeSet::new(),
            unreadable: BTreeSet::new(),
            log,
            on_ring: false,
            listing: None,
            list_again: false,
            counters,
            out: VecDeque::new(),
        }
    }

    /// Our user.
    pub fn aor(&self) -> &Aor {
        &self.identity.aor
    }

    /// The public half of our encryption key (for our `EncryptionKey` record).
    pub fn encryption_public(&self) -> Vec<u8> {
        self.identity.encryption.public_bytes()
    }

    /// What the mailbox has done.
    pub fn counters(&self) -> &MailboxCounters {
        &self.counters
    }

    /// Messages in our mailbox not yet delivered to any phone.
    pub fn waiting(&self) -> Vec<Waiting> {
        self.waiting.values().filter(|h| !self.log.reached_any(&h.id)).map(receive::Held::summary).collect()
    }

    /// What was delivered, newest first.
    pub fn delivered(&self) -> Vec<Delivered> {
        self.log.entries()
    }

    /// The next thing the mailbox asks of the peer.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Whether `ticket` is one of ours still waiting for its answer.
    pub fn owns(&self, ticket: Ticket) -> bool {
        self.tickets.contains_key(&ticket)
    }

    /// Whether a client transaction is one of our deliveries.
    pub fn owns_delivery(&self, tx: ClientTxId) -> bool {
        self.deliveries.contains_key(&tx)
    }

    /// When the mailbox next needs [`Mailbox::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_listing)
    }

    /// The periodic listing of our mailbox.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_listing {
            self.next_listing = now + self.config.recheck_interval;
            self.list(now);
        }
    }

    /// The peer has no storage to run `ticket`'s operation on: it fails as if no place
    /// answered.
    pub fn storage_unavailable(&mut self, ticket: Ticket) {
        match self.tickets.get(&ticket) {
            Some(Purpose::List) => {
                self.tickets.remove(&ticket);
                self.listing = None;
            }
            // A send's key fetch or put ends it with an error; a deletion is tried again.
            _ => self.put_done(ticket, PutResult::default()),
        }
    }

    fn ticket(&mut self, purpose: Purpose) -> Ticket {
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        self.tickets.insert(ticket, purpose);
        ticket
    }

    /// N fresh random bytes from the driver's generator.
    fn random<const N: usize>(&self) -> Option<[u8; N]> {
        let mut out = [0u8; N];
        self.identity.rng.fill(&mut out).ok()?;
        Some(out)
    }

    /// Signs `unsigned` as our user.
    fn sign(&self, unsigned: Unsigned) -> Option<Record> {
        unsigned.sign(&self.identity.key, self.identity.chain.clone(), &*self.identity.rng).ok()
    }
}

#[cfg(test)]
mod tests;
