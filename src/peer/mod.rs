//! The node as one sans-IO state machine: bytes and timeouts in, bytes and deadlines out.
//!
//! One input and one output (`boundary`): the daemon (or the simulator) feeds every datagram,
//! stream frame and deadline to [`Peer::handle_input`] as an [`Input`], and does what
//! [`Peer::poll_output`] returns: an [`Output`] to send, a report, or when to wake the peer
//! next. Commands (join, lookup, put, fetch, leave) are methods. Nothing here reads a clock,
//! opens a socket or touches a file; randomness comes from a ChaCha8 generator seeded by the
//! config.
//!
//! Inside, the peer routes between self-contained services: the transaction layer, [`Chord`]
//! (`overlay`), the [`Proxy`], and [`Replication`] (`replication`, driven from `records`).
//!
//! What the peer does with a request (RFC 3261 §16.3, §8.2) is decided in [`policy`]; requests
//! for users and REGISTERs from phones go to the [`Proxy`] (§10.3, §16); where responses go is
//! in [`crate::transport`].

mod admission;
mod boundary;
mod client;
pub mod counters;
#[doc(hidden)]
pub mod fuzzing;
mod nat;
mod offline;
pub mod overlay;
pub mod policy;
mod presence;
mod records;
pub mod replication;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tracing::{debug, trace, warn};

pub use crate::sip::header::new_branch;
pub use crate::transport::{reply_endpoint, ConnectionId, Endpoint, Listener, Transmit, Transport};
pub use admission::InputBacklog;
pub use boundary::{Input, Output};
pub use counters::Counters;
pub use nat::{RoleEvent, DIAL_BACKS_PER_SECOND};
pub use overlay::PeerEvent;
pub use replication::{
    Place, Replication, StorageConfig, StorageCounters, StorageEvent, StorageOpId, DEFAULT_REPLICAS,
};

use crate::overlay::{Chord, ChordConfig, Contact, NodeId};
use crate::proxy::accounts::Accounts;
use crate::proxy::{Proxy, ProxyConfig, ProxyStatus};
use crate::sip::framing::FramingError;
use crate::sip::header::Via;
use crate::sip::transaction::{Event, Received, ServerTxId, Timers, TransactionLayer};
use crate::sip::validate::{self, Rejection};
use crate::sip::{parse, Header, HeaderName, Headers, Message, Method, RequestLine, StartLine, Uri, Version};
use overlay::wire as overlay_wire;
use replication::wire as storage_wire;

/// What the peer needs to know about itself.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The overlay (node-to-node) listening address.
    pub overlay_addr: SocketAddr,
    /// The registrar and proxy for local phones: the proxy listener's address (`addr`), the
    /// domain they register in (the digest realm), `Server`, expiry limits, pings, Timer C,
    /// digest algorithms. Its `other_addrs` are filled in by [`Peer::new`].
    pub proxy: ProxyConfig,
    /// Datagrams larger than this are dropped unread (with a warning), bounding the work a
    /// single packet can cause. RFC 3261 §18.1.1 keeps requests we send well below 1300 bytes
    /// over UDP; what we accept may be larger, up to the 65,507 an IPv4 datagram can carry.
    pub max_datagram_size: usize,
    /// Seeds the generator for tags, branches and nonce keys.
    pub seed: u64,
    /// T1, T2, T4 (RFC 3261 §17.1.1.1).
    pub timers: Timers,
    /// The overlay's name, carried in every `DHT-PeerID`; requests naming another are refused.
    pub overlay_name: String,
    /// The Chord core's tunables (its seed is derived from `seed`).
    pub chord: ChordConfig,
    /// The overlay address other nodes reach us at, from which the Node ID derives. Defaults to
    /// `overlay_addr`; a node listening on a wildcard address must say which one it is.
    pub advertised_addr: Option<SocketAddr>,
    /// Server transactions waiting for their final response, per listener (the phones' and
    /// the overlay's budgets are separate, so neither can starve the other); a new request
    /// beyond this gets 503 with Retry-After (RFC 6357 §5.1 overload control), so memory stays bounded under
    /// overload. Answered transactions do not count (see `max_completed_transactions`).
    pub max_server_transactions: usize,
    /// Answered server transactions kept to absorb retransmissions (Timer J, 32 s over UDP);
    /// beyond this the oldest is forgotten (docs/security.md, H4).
    pub max_completed_transactions: usize,
    /// The Retry-After of that 503, in seconds.
    pub overload_retry_after: u32,
    /// Load-based admission on the proxy listener: above this busy share (percent) of the
    /// driver's loop, a growing share of new requests gets 503 with Retry-After
    /// (the `admission` module). 0 turns it off.
    pub overload_busy_percent: u8,
    /// STUN servers to learn our public address from (`nat::discovery`); none: no checks.
    pub stun_servers: Vec<SocketAddr>,
    /// How often the STUN servers are asked again (laptops move between networks).
    pub nat_recheck_interval: Duration,
    /// The role asked for (`--role`).
    pub role: crate::nat::reachability::RoleChoice,
    /// A client's STUN keep-alive interval toward its edge (RFC 5626 §4.4.2); zero: 25 s.
    pub client_keepalive: Duration,
    /// Whether a client's flow to its edge runs over TCP (CRLF keep-alives, §4.4.1) rather
    /// than UDP: where UDP is blocked.
    pub client_flow_tcp: bool,
    /// Whether joining starts with a dial-back that decides the role and confirms the public
    /// address (`crate::nat::reachability`). The daemon always asks for one; off by default,
    /// so the simulator's and unit tests' nodes, all reachable, join at once as peers.
    pub dial_back: bool,
    /// The media anchor's settings (`crate::media::anchor`); `None`: SDP passes untouched.
    /// Only a driver that opens the anchor's sockets ([`Output::Media`]) turns it on: the
    /// daemon does; the simulator and the unit tests' harnesses do not.
    pub media: Option<crate::media::anchor::AnchorConfig>,
}

impl PeerConfig {
    /// The defaults, with the overlay listener on `overlay_addr` and the proxy on `proxy_addr`.
    pub fn new(overlay_addr: SocketAddr, proxy_addr: SocketAddr) -> PeerConfig {
        PeerConfig {
            overlay_addr,
            proxy: ProxyConfig::new("p2p.test", proxy_addr),
            max_datagram_size: 16 * 1024,
            seed: 0,
            timers: Timers::default(),
            overlay_name: "p2p.test".into(),
            chord: ChordConfig::default(),
            advertised_addr: None,
            max_server_transactions: 20_000,
            max_completed_transactions: 50_000,
            overload_retry_after: 5,
            overload_busy_percent: 90,
            stun_servers: Vec::new(),
            nat_recheck_interval: Duration::from_secs(300),
            role: crate::nat::reachability::RoleChoice::Auto,
            client_keepalive: Duration::ZERO,
            client_flow_tcp: false,
            dial_back: false,
            media: None,
        }
    }

    /// The address the Node ID derives from.
    pub fn node_addr(&self) -> SocketAddr {
        self.advertised_addr.unwrap_or(self.overlay_addr)
    }
}

/// A p2psip node's protocol core.
pub struct Peer {
    config: PeerConfig,
    rng: ChaCha8Rng,
    transactions: TransactionLayer<Endpoint>,
    outbox: VecDeque<Transmit>,
    counters: Counters,
    /// `host:port` of our listeners, for loop detection (RFC 3261 §16.3 step 4).
    own_sent_by: Vec<String>,
    overlay: overlay::OverlayDriver,
    events: VecDeque<PeerEvent>,
    /// The registrar and proxy for local phones.
    proxy: Proxy,
    /// Signed records at replica positions; off until [`Peer::enable_storage`].
    storage: Option<Replication>,
    /// Overlay events storage follows, waiting for [`Peer::run_storage`].
    storage_work: VecDeque<crate::overlay::Event>,
    /// When this peer was created: storage turns `now` into Unix time from it.
    started: Instant,
    /// Load-based admission of new requests on the proxy listener.
    admission: admission::Admission,
    /// Registration fetches the proxy is waiting for: the requests parked on each.
    proxy_fetches: std::collections::BTreeMap<StorageOpId, ServerTxId>,
    /// ...and those that ended: the newest registration record found, if any.
    proxy_resolved: VecDeque<(ServerTxId, Option<crate::store::Record>)>,
    /// Keys [`Peer::tag_for`].
    tag_key: ring::hmac::Key,
    /// When an oversized datagram was last logged.
    oversize_warned: Option<Instant>,
    /// Our public address as STUN servers see it; `None` without STUN servers.
    nat: Option<crate::nat::discovery::Discovery>,
    /// Peer or client: the dial-back that decides, and the dial-backs we serve.
    reach: nat::Reach,
    /// A client's flow to its edge peer.
    client: client::ClientSide,
    /// Offline messages to and from our user; off until [`Peer::enable_mailbox`].
    mailbox: Option<crate::mailbox::Mailbox>,
    /// Storage operations the mailbox asked for, and whose ticket each is.
    mailbox_ops: std::collections::BTreeMap<StorageOpId, crate::mailbox::Ticket>,
    /// ...and their reports, waiting for [`Peer::run_mailbox`].
    mailbox_reports: VecDeque<(crate::mailbox::Ticket, StorageEvent)>,
    /// Presence between buddies; off until [`Peer::enable_presence`].
    presence: Option<crate::presence::Presence>,
    /// Registration fetches for the buddies presence watches...
    presence_fetches: std::collections::BTreeMap<StorageOpId, crate::identity::Aor>,
    /// ...and their answers, waiting for [`Peer::run_presence`].
    presence_resolved: VecDeque<(crate::identity::Aor, Option<crate::store::Record>)>,
}

/// Live transactions (RFC 3261 §17), by side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransactionCounts {
    /// Server transactions (requests we received).
    pub server: usize,
    /// Client transactions (requests we sent).
    pub client: usize,
}

/// The admission control's view of the driver's loop over the last window (shares, 0 to 1).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Load {
    /// The share of time the loop worked.
    pub busy: f64,
    /// The share of time it had input left queued.
    pub queued: f64,
    /// The share of new requests on the proxy listener refused now.
    pub shed: f64,
}

/// Log lines about what attackers can cause come at most once per this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(60);

impl Peer {
    /// A node that has not joined anything yet; `now` starts its clock.
    pub fn new(config: PeerConfig, now: Instant) -> Peer {
        let admission = admission::Admission::new(config.overload_busy_percent);
        let reach = nat::Reach::new(config.role, now);
        // From the seed, not a draw: the generator's sequence stays what the simulator's
        // figures were measured with.
        let flow_call_id = format!("{:016x}", config.seed.rotate_left(17) ^ 0x6f75_7462_6f75_6e64);
        let client_side = client::ClientSide::new(config.client_keepalive, flow_call_id, config.client_flow_tcp);
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let own_sent_by = [config.overlay_addr, config.proxy.addr].iter().map(|a| sent_by(*a)).collect();
        let node_addr = config.node_addr();
        let id = NodeId::from_addr(node_addr.ip(), node_addr.port(), config.chord.id_hash);
        let chord_config = ChordConfig { seed: rng.random(), ..config.chord.clone() };
        let overlay = overlay::OverlayDriver {
            chord: Chord::new(Contact::new(id, node_addr), chord_config, now),
            info: overlay_wire::OverlayInfo {
                name: config.overlay_name.clone(),
                hash: config.chord.id_hash,
                client: false,
            },
            pending: Default::default(),
            next_cseq: 0,
            rpc_kinds: None,
        };
        let proxy_config = ProxyConfig {
            // The advertised overlay address first: our Via and Record-Route toward other
            // nodes name it (a wildcard listen address would reach nobody).
            other_addrs: vec![config.node_addr(), config.overlay_addr],
            ..config.proxy.clone()
        };
        let mut proxy = Proxy::new(proxy_config, Accounts::default(), rng.random(), now);
        if let Some(media) = config.media.clone() {
            // From the seed, not a draw: the simulator's sequence stays as it was measured.
            let mut anchor = crate::media::anchor::Anchor::new(media, config.seed ^ 0x6d65_6469_615f_616e);
            anchor.set_reflectors(config.stun_servers.clone());
            proxy.set_anchor(anchor);
        }
        let tag_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &rng.random::<[u8; 32]>());
        let nat = (!config.stun_servers.is_empty()).then(|| {
            let servers = config.stun_servers.clone();
            crate::nat::discovery::Discovery::new(servers, config.node_addr(), now, config.nat_recheck_interval)
        });
        Peer {
            overlay,
            events: VecDeque::new(),
            proxy,
            storage: None,
            storage_work: VecDeque::new(),
            proxy_resolved: VecDeque::new(),
            rng,
            transactions: {
                let mut tl = TransactionLayer::new(config.timers);
                tl.set_max_completed(config.max_completed_transactions);
                tl
            },
            outbox: VecDeque::new(),
            counters: Counters::default(),
            own_sent_by,
            config,
            started: now,
            proxy_fetches: Default::default(),
            tag_key,
            oversize_warned: None,
            nat,
            reach,
            client: client_side,
            admission,
            mailbox: None,
            mailbox_ops: Default::default(),
            mailbox_reports: VecDeque::new(),
            presence: None,
            presence_fetches: Default::default(),
            presence_resolved: VecDeque::new(),
        }
    }

    /// The settings it was made with.
    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    /// What `p2psip status` counts.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The local accounts phones may register with (`p2psip account`), replacing any before.
    pub fn set_accounts(&mut self, accounts: Accounts) {
        self.proxy.set_accounts(accounts);
    }

    /// The registrar and proxy for local phones.
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// What `p2psip status` shows of the proxy.
    pub fn proxy_status(&self) -> ProxyStatus {
        self.proxy.status()
    }

    /// The phones registered with our proxy now.
    pub fn phones(&self, now: Instant) -> Vec<crate::proxy::PhoneStatus> {
        self.proxy.phones(now)
    }

    /// Live server and client transactions.
    pub fn transaction_counts(&self) -> TransactionCounts {
        TransactionCounts { server: self.transactions.server_count(), client: self.transactions.client_count() }
    }

    /// One datagram, or one frame cut from a stream, arrived from `from`.
    fn receive(&mut self, now: Instant, from: Endpoint, data: Bytes) {
        self.counters.messages_in += 1;
        self.counters.bytes_in += data.len() as u64;
        if from.transport == Transport::Udp && data.len() > self.config.max_datagram_size {
            self.counters.oversized_datagrams += 1;
            // Counted always, logged once a minute: an attacker must not fill the log.
            if self.oversize_warned.is_none_or(|t| now.saturating_duration_since(t) >= WARN_INTERVAL) {
                self.oversize_warned = Some(now);
                warn!(
                    from = %from.remote,
                    size = data.len(),
                    limit = self.config.max_datagram_size,
                    dropped = self.counters.oversized_datagrams,
                    "dropped a UDP datagram larger than max_datagram_size (counted in oversized_datagrams)"
                );
            }
            return;
        }
        // STUN shares the port with SIP (RFC 7983 §7): answered before any SIP parsing.
        if from.transport == Transport::Udp && crate::nat::stun::is_stun(&data) {
            self.stun(now, from, &data);
            return;
        }
        // Keep-alives: CRLFs alone on a datagram are ignored (RFC 5626 uses STUN on UDP).
        if data.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            self.counters.keepalives += 1;
            return;
        }
        if from.listener == Listener::Proxy && self.shed(from, &data) {
            return;
        }
        match parse(data) {
            Ok(msg) if msg.is_request() => {
                self.handle_request(now, from, msg);
                self.proxy_overlay(now);
            }
            Ok(msg) => {
                self.handle_response(now, from, msg);
                self.proxy_overlay(now);
            }
            Err(e) => {
                self.counters.parse_errors += 1;
                debug!(from = %from.remote, error = %e, "unparseable message");
                match e.request_headers {
                    // RFC 3261 §8.2 / RFC 4475 §3.1.2: a request we can still address gets 400.
                    Some(headers) => {
                        let stub = Message {
                            start: StartLine::Request(RequestLine {
                                method: Method::Options,
                                uri: Uri::Other { scheme: "x".into(), rest: "x".into() },
                                version: Version::SIP_2_0,
                            }),
                            headers,
                            body: Bytes::new(),
                        };
                        let reason = capitalise(&e.kind.to_string());
                        self.reject_stateless(from, &stub, Rejection::new(400, reason));
                    }
                    None => self.counters.messages_dropped += 1,
                }
            }
        }
    }

    /// One turn of the driver's loop worked from `started` to `ended` and saw `queue` of its
    /// input (the load signal of the admission control, the `admission` module).
    fn loop_turn(&mut self, started: Instant, ended: Instant, backlog: InputBacklog) {
        self.admission.turn(started, ended, backlog);
    }

    /// The admission control's view of the loop's load.
    pub fn load(&self) -> Load {
        Load {
            busy: self.admission.busy_share(),
            queued: self.admission.queued_share(),
            shed: self.admission.reject_share(),
        }
    }

    /// Overload control (RFC 6357 §5.1): while the loop is saturated, a share of the new requests on the proxy
    /// listener is refused at once with 503 and Retry-After (RFC 6357 §5.1, RFC 7339
    /// §5.10.1), from the raw bytes, before the parser, the digest or a transaction run, so
    /// the accepted requests still complete. True when `data` was refused.
    fn shed(&mut self, from: Endpoint, data: &[u8]) -> bool {
        if self.admission.reject_share() <= 0.0 {
            return false;
        }
        let Some(raw) = admission::RawRequest::scan(data) else { return false };
        if self.admission.admit(raw.class) {
            return false;
        }
        self.counters.overload_rejected += 1;
        self.counters.load_shed += 1;
        self.counters.requests_rejected += 1;
        let tag = self.new_tag();
        let resp = raw.service_unavailable(&tag, self.config.overload_retry_after, &self.config.proxy.server);
        // Back where it came from: the connection, or the source address and port (RFC 3581
        // §4 behaviour without reading the Via).
        self.transmit(Transmit { to: from, data: Bytes::from(resp) });
        true
    }

    /// A CRLF CRLF ping arrived on a stream: answer with a CRLF pong (RFC 5626 §4.4.1).
    fn ping(&mut self, now: Instant, from: Endpoint) {
        self.counters.keepalives += 1;
        if from.listener == Listener::Overlay {
            // Perhaps a client's keep-alive over TCP: its flow lives on.
            self.proxy.client_keepalive(now, from.remote);
        }
        self.transmit(Transmit { to: from, data: Bytes::from_static(b"\r\n") });
    }

    /// A stream's framing broke (RFC 3261 §18.3: bad or missing Content-Length, oversize
    /// message). The driver closes that connection; the peer only counts and logs it.
    fn framing_error(&mut self, from: Endpoint, error: &FramingError) {
        self.counters.parse_errors += 1;
        debug!(from = %from.remote, %error, "stream framing error; connection closed");
    }

    /// A stream connection closed (either side, or a framing error). Phones registered over
    /// it are unregistered, and our registration record follows (RFC 5626 §5.2 in spirit).
    fn stream_closed(&mut self, now: Instant, from: Endpoint) {
        // A client's TCP flow to its edge (we are that client): the flow has failed.
        self.client_stream_closed(now, from);
        // Phones over the proxy listener, and clients over the overlay one (we are their edge).
        let (Listener::Proxy | Listener::Overlay, Transport::Tcp, Some(conn)) =
            (from.listener, from.transport, from.conn)
        else {
            return;
        };
        self.proxy.connection_closed(&mut self.transactions, conn);
        self.drain_transactions(now);
        self.proxy_overlay(now);
    }

    /// The media anchor's sockets reported something.
    fn media(&mut self, now: Instant, input: crate::media::anchor::MediaInput) {
        self.proxy.media_input(now, &mut self.transactions, input);
        self.drain_transactions(now);
    }

    /// DNS answered for a phone's request to another domain (`crate::outbound`).
    fn resolved(
        &mut self,
        now: Instant,
        sid: crate::sip::transaction::ServerTxId,
        result: Result<Vec<crate::outbound::Target>, crate::outbound::ResolveError>,
    ) {
        self.proxy.external_resolved(now, &mut self.transactions, sid, result);
        self.drain_transactions(now);
    }

    /// The deadline of [`Peer::poll_timeout`] has come.
    fn timeout(&mut self, now: Instant) {
        self.transactions.handle_timeout(now);
        self.drain_transactions(now);
        self.proxy.handle_timeout(now, &mut self.transactions);
        self.drain_transactions(now);
        self.overlay.chord.handle_timeout(now);
        self.drain_overlay(now);
        self.storage_timeout(now);
        self.mailbox_timeout(now);
        self.presence_timeout(now);
        self.proxy_overlay(now);
        self.nat_timeout(now);
    }

    /// The proxy's overlay half: keeps our registration record in step with the phones
    /// registered for our AoR, starts the registration fetches parked requests wait for, and
    /// hands finished fetches back to the proxy (RFC 3261 §16.5).
    fn proxy_overlay(&mut self, now: Instant) {
        self.sync_registration(now);
        self.sync_our_phones(now);
        self.cache_misses();
        while let Some((sid, aor)) = self.proxy.poll_lookup() {
            // Buddy-first routing: a buddy's cached contacts, no lookup.
            if self.route_by_cache(now, sid, &aor) {
                self.cache_misses();
                continue;
            }
            if !self.fetch_for_proxy(now, sid, &aor) {
                // No storage on this node: nobody outside it can be found.
                self.proxy.overlay_resolved(now, &mut self.transactions, sid, None);
            }
        }
        let unix_now = self.unix_now(now);
        while let Some((sid, newest)) = self.proxy_resolved.pop_front() {
            if let Some(record) = &newest {
                self.note_fetched_registration(now, record);
            }
            let contacts = newest.map(|record| {
                crate::store::Registration::from_payload(&record.payload)
                    .map(|r| r.live_contacts(unix_now).map(|c| c.uri.clone()).collect())
                    .unwrap_or_default()
            });
            self.proxy.overlay_resolved(now, &mut self.transactions, sid, contacts);
        }
        self.run_mailbox(now);
        self.run_presence(now);
        self.drain_transactions(now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.outbox.pop_front()?;
        self.counters.messages_out += 1;
        self.counters.bytes_out += t.data.len() as u64;
        trace!(to = %t.to.remote, len = t.data.len(), "transmit");
        Some(t)
    }

    /// When the peer next needs [`Input::Timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        let storage = self.storage.as_ref().map(|s| s.poll_timeout());
        let nat = self.nat.as_ref().and_then(crate::nat::discovery::Discovery::poll_timeout);
        let reach = self.reach.poll_timeout();
        let flow = self.client.flow.poll_timeout();
        let mailbox = self.mailbox.as_ref().and_then(crate::mailbox::Mailbox::poll_timeout);
        let presence = self.presence.as_ref().and_then(crate::presence::Presence::poll_timeout);
        [
            self.transactions.poll_timeout(),
            self.overlay.chord.poll_timeout(),
            self.proxy.poll_timeout(),
            storage,
            nat,
            flow,
            reach,
            mailbox,
            presence,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Queues bytes sent outside any transaction (stateless answers, keep-alive pongs).
    fn transmit(&mut self, t: Transmit) {
        self.outbox.push_back(t);
    }

    /// Moves what the transaction layer wants sent into the outbox.
    fn drain_transactions_only(&mut self) {
        while let Some((to, data)) = self.transactions.poll_transmit() {
            self.outbox.push_back(Transmit { to, data });
        }
    }

    /// Moves what the transaction layer wants sent into the outbox and handles its events.
    fn drain_transactions(&mut self, now: Instant) {
        self.drain_transactions_only();
        while let Some(event) = self.transactions.poll_event() {
            match event {
                Event::ServerAckTimeout { id } => debug!(%id, "no ACK for our final response (Timer H)"),
                Event::ClientTimeout { id } if self.proxy.owns_client(id) => {
                    self.proxy.handle_client_timeout(now, &mut self.transactions, id);
                }
                Event::ClientTerminated { id } if self.proxy.owns_client(id) => {
                    self.proxy.handle_client_terminated(id);
                }
                Event::ClientTimeout { id } | Event::ClientTerminated { id } if self.is_delivery(id) => {
                    self.delivery_failed(now, id);
                }
                Event::ClientTimeout { id } | Event::ClientTerminated { id } if self.is_presence_transaction(id) => {
                    self.presence_failed(now, id);
                }
                Event::ClientTimeout { id } | Event::ClientTerminated { id } => {
                    self.overlay_transaction_failed(now, id);
                    self.storage_transaction_failed(now, id);
                    self.client_register_failed(now, id);
                }
                Event::ServerTerminated { id } => self.proxy.handle_server_terminated(id),
            }
            self.drain_transactions_only();
        }
    }

    fn handle_request(&mut self, now: Instant, from: Endpoint, mut msg: Message) {
        if let Err(rejection) = validate::check_request(&msg) {
            // Too malformed to be trusted with a transaction: answer once, statelessly.
            debug!(from = %from.remote, status = rejection.status, reason = %rejection.reason, "request refused");
            self.reject_stateless(from, &msg, rejection);
            return;
        }
        let top_via = stamp_received(&mut msg, &from);
        let reply_to = reply_endpoint(&from, top_via.as_ref());
        if let Some(answer) = self.register_stateless(now, from, &msg) {
            if answer.status().is_some_and(|s| s >= 300) {
                self.counters.requests_rejected += 1;
            }
            self.transmit(Transmit { to: reply_to, data: answer.encode() });
            return;
        }
        if from.listener == Listener::Proxy && self.proxy.names_no_dialog(&msg) {
            debug!(from = %from.remote, msg = %msg.summary(), "in-dialog request for a user, without our Route");
            self.reject_stateless(from, &msg, Rejection::new(481, "Call/Transaction Does Not Exist"));
            return;
        }
        if self.overloaded(from.listener, &msg) {
            // Overload control (RFC 6357 §5.1): refuse statelessly rather than grow without bound.
            self.counters.overload_rejected += 1;
            let retry = Header::new(HeaderName::other("Retry-After"), self.config.overload_retry_after);
            self.reject_stateless(from, &msg, Rejection::new(503, "Service Unavailable").with_header(retry));
            return;
        }
        if self.answers_statelessly(&from, &msg) {
            return self.answer_stateless(now, from, reply_to, &msg);
        }
        let budget = from.listener.index();
        let received = self.transactions.handle_message_in(now, msg, reply_to, from.transport.is_reliable(), budget);
        match received {
            Received::Request { id, request, cancels } if cancels.is_none() && self.presence_wants(&from, &request) => {
                self.counters.server_transactions += 1;
                self.presence_request(now, id, from, &request);
                self.drain_transactions(now);
            }
            Received::Request { id, request, cancels } => {
                self.counters.server_transactions += 1;
                let for_proxy = match cancels {
                    Some(invite) => self.proxy.owns_server(invite),
                    None => self.proxy_wants(&from, &request),
                };
                if for_proxy {
                    self.proxy_request(now, id, from, reply_to, request, cancels);
                    self.drain_transactions(now);
                    return;
                }
                let answer = match cancels {
                    // RFC 3261 §9.2: a CANCEL matching a transaction gets 200; the INVITE gets
                    // 487 if it is still unanswered (ours never are for long: answers are
                    // immediate, so `respond` reports AlreadyFinal and nothing more is sent).
                    Some(invite) => {
                        self.answer_invite(now, invite, &request, 487, "Request Terminated");
                        let tag = self.new_tag();
                        Answer::Respond(request.make_response(200, "OK", Some(&tag)))
                    }
                    None => self.route(now, &from, &request),
                };
                self.answer(now, id, &request, answer);
            }
            Received::Absorbed => self.counters.retransmissions_absorbed += 1,
            // An ACK for a 2xx: the proxy forwards it along the route set (RFC 3261 §16.12).
            Received::Ack { request } if self.proxy_wants(&from, &request) => {
                if policy::proxy_checks(&request, &self.own_sent_by).is_ok() {
                    self.proxy.handle_ack(now, &mut self.transactions, from, request);
                }
            }
            Received::Ack { request } => debug!(msg = %request.summary(), "ACK matching no transaction"),
            Received::Response { .. } | Received::Stray { .. } => {}
        }
        self.drain_transactions(now);
    }

    fn answer(&mut self, now: Instant, id: ServerTxId, request: &Message, answer: Answer) {
        let response = match answer {
            Answer::Respond(resp) => resp,
            Answer::Reject(rejection) => self.rejection_response(request, &rejection),
            Answer::Nothing => return,
        };
        if let Err(e) = self.transactions.respond(now, id, response) {
            debug!(%id, error = %e, "could not answer");
        }
    }

    fn answer_invite(&mut self, now: Instant, invite: ServerTxId, cancel: &Message, code: u16, reason: &str) {
        let tag = self.new_tag();
        let resp = cancel.make_response(code, reason, Some(&tag));
        // The 487 goes with the INVITE's CSeq method: rebuild CSeq from the CANCEL's number.
        let mut resp = resp;
        if let Ok(cseq) = cancel.cseq() {
            resp.headers.set(Header::new(HeaderName::CSeq, format!("{} INVITE", cseq.seq)));
        }
        if self.transactions.respond(now, invite, resp).is_ok() {
            debug!(%invite, "INVITE cancelled");
        }
    }

    /// Decides what a valid request gets, by listener and role.
    fn route(&mut self, now: Instant, from: &Endpoint, msg: &Message) -> Answer {
        let Some(method) = msg.method().cloned() else { return Answer::Nothing };
        if Peer::is_dial_back_request(from, msg) {
            self.serve_dial_back(now, from, msg);
            return Answer::Nothing;
        }
        if from.listener == Listener::Overlay && storage_wire::is_storage_request(msg) {
            return self.handle_storage_request(now, from, msg);
        }
        if from.listener == Listener::Overlay && overlay_wire::is_overlay_request(msg) {
            return self.handle_overlay_request(now, from, msg);
        }
        if let Err(r) = policy::check_scheme(msg) {
            return Answer::Reject(r);
        }
        let to_node = msg.request_uri().is_some_and(policy::addressed_to_node);
        if !to_node {
            // A request for a user: we are its proxy (RFC 3261 §16).
            if let Err(r) = policy::proxy_checks(msg, &self.own_sent_by) {
                return Answer::Reject(r);
            }
            return match method {
                // An ACK for a 2xx travels end to end; with no target there is nothing to do.
                Method::Ack => Answer::Nothing,
                Method::Cancel => Answer::Reject(Rejection::new(481, "Call/Transaction Does Not Exist")),
                // No user is reachable through this node yet: the overlay lookup and the
                // local registrar's bindings come with later parts of p2psip.
                _ => Answer::Reject(Rejection::new(404, "Not Found")),
            };
        }
        // Addressed to the node itself: we are the UAS (RFC 3261 §8.2).
        if !method.is_known() {
            // §8.2.1 / §21.5.2.
            return Answer::Reject(
                Rejection::new(501, "Not Implemented").with_header(Header::new(HeaderName::Allow, policy::ALLOW)),
            );
        }
        if let Err(r) = policy::uas_checks(msg) {
            return Answer::Reject(r);
        }
        match method {
            Method::Options => {
                let tag = self.tag_for(msg);
                // The overlay extension is spoken on the overlay listener only.
                let supported: &[&str] = match from.listener {
                    Listener::Overlay | Listener::OneShot => &[overlay_wire::OPTION_TAG],
                    Listener::Proxy => policy::SUPPORTED,
                };
                Answer::Respond(policy::options_ok(msg, &tag, &self.config.proxy.server, supported))
            }
            Method::Register => Answer::Reject(Rejection::new(403, "Forbidden (phones register on the proxy port)")),
            Method::Ack => Answer::Nothing,
            Method::Bye | Method::Cancel => Answer::Reject(Rejection::new(481, "Call/Transaction Does Not Exist")),
            _ => Answer::Reject(Rejection::new(404, "Not Found")),
        }
    }

    fn handle_response(&mut self, now: Instant, from: Endpoint, msg: Message) {
        if let Err(why) = validate::check_response(&msg) {
            debug!(from = %from.remote, why, "dropped malformed response");
            self.counters.messages_dropped += 1;
            return;
        }
        match self.transactions.handle_message(now, msg, from, from.transport.is_reliable()) {
            Received::Stray { response } => {
                // RFC 6026 (its update of RFC 3261 §16.7 and §18.1.2): a response
                // that matches no client transaction is dropped, never relayed. The 2xx
                // retransmissions that rule once served are matched by the INVITE client
                // transaction's Accepted state (RFC 6026 §7.2) for 64·T1, and reach the
                // caller through the proxy's context. Relaying strays let one datagram make
                // the node write attacker bytes to any Via it named (docs/security.md, C1).
                debug!(from = %from.remote, msg = %response.summary(), "response matching no transaction; dropped");
                self.counters.messages_dropped += 1;
                self.counters.stray_responses += 1;
            }
            Received::Response { id, response } if self.proxy.owns_client(id) => {
                self.proxy.handle_response(now, &mut self.transactions, id, response);
            }
            Received::Response { id, response } if self.is_delivery(id) => {
                self.delivery_answered(now, id, &response);
            }
            Received::Response { id, response } if self.is_presence_transaction(id) => {
                self.presence_answered(now, id, &response);
            }
            Received::Response { id, response } if self.owns_client_register(id) => {
                self.client_register_answered(now, id, &response);
            }
            Received::Response { id, response } if self.is_storage_transaction(&id) => {
                self.handle_storage_response(now, id, &response)
            }
            Received::Response { id, response } => self.handle_overlay_response(now, id, &response),
            _ => {}
        }
        self.drain_transactions(now);
    }

    /// Answers a request once, outside any transaction: for requests too malformed to match
    /// one (RFC 4475 §3.1.2). An ACK is never answered (RFC 3261 §17.1.1.3); a request
    /// without a Via cannot be.
    fn reject_stateless(&mut self, from: Endpoint, request: &Message, rejection: Rejection) {
        if request.method() == Some(&Method::Ack) || !validate::can_answer(request) {
            self.counters.messages_dropped += 1;
            return;
        }
        let resp = self.rejection_response(request, &rejection);
        let to = reply_endpoint(&from, request.top_via().ok().as_ref());
        self.transmit(Transmit { to, data: resp.encode() });
    }

    /// The response carrying a refusal, with a fresh To tag and our Server header; counted.
    fn rejection_response(&mut self, request: &Message, rejection: &Rejection) -> Message {
        self.counters.requests_rejected += 1;
        let tag = self.tag_for(request);
        let mut resp = rejection.to_response(request, Some(&tag));
        resp.headers.push(Header::new(HeaderName::Server, &self.config.proxy.server));
        resp
    }

    fn new_tag(&mut self) -> String {
        format!("{:016x}", self.rng.random::<u64>())
    }

    /// The To tag of our answer to `request`, the same for every copy of it: RFC 3261 §8.2.7
    /// asks a stateless UAS for exactly that, so a retransmission answered without a
    /// transaction gets the response its first copy got.
    pub(crate) fn tag_for(&self, request: &Message) -> String {
        let branch = request.top_via().ok().and_then(|v| v.branch().map(str::to_owned)).unwrap_or_default();
        let from_tag = request.from().ok().and_then(|f| f.tag().map(str::to_owned)).unwrap_or_default();
        let data = format!("{}\n{from_tag}\n{branch}", request.call_id().unwrap_or_default());
        let mac = ring::hmac::sign(&self.tag_key, data.as_bytes());
        crate::encoding::hex(&mac.as_ref()[..8])
    }

    /// Whether a request goes to the proxy: a REGISTER on the proxy listener, or a request
    /// for a user or another host (not an overlay RPC).
    fn proxy_wants(&self, from: &Endpoint, msg: &Message) -> bool {
        if from.listener == Listener::Overlay && overlay_wire::is_overlay_request(msg) {
            return false;
        }
        self.proxy.wants(from.listener, msg)
    }

    /// The role checks (RFC 3261 §16.3 for a proxy, §8.2 for the registrar), then the proxy.
    fn proxy_request(
        &mut self,
        now: Instant,
        id: ServerTxId,
        from: Endpoint,
        reply_to: Endpoint,
        request: Message,
        cancels: Option<ServerTxId>,
    ) {
        let checks = policy::check_scheme(&request).and_then(|()| match request.method() {
            Some(Method::Register) => policy::uas_checks(&request),
            _ => policy::proxy_checks(&request, &self.own_sent_by),
        });
        if let Err(rejection) = checks {
            return self.answer(now, id, &request, Answer::Reject(rejection));
        }
        self.proxy.handle_request(now, &mut self.transactions, id, from, reply_to, request, cancels);
    }

    /// A phone's REGISTER, answered without a server transaction (see
    /// [`Proxy::register_stateless`]) once the registrar's role checks pass; `None` for any
    /// other request, or a REGISTER the checks refuse (it is refused through a transaction).
    /// It needs no transaction, so the transaction bound does not apply to it.
    fn register_stateless(&mut self, now: Instant, from: Endpoint, msg: &Message) -> Option<Message> {
        if Proxy::is_client_register(from.listener, msg) {
            // A client binding its user at us, its edge (`proxy::clients`).
            policy::check_scheme(msg).and_then(|()| policy::uas_checks(msg)).ok()?;
            let serving = self.role() == crate::nat::reachability::Role::Peer;
            return Some(self.proxy.register_client(now, from, msg, serving));
        }
        if from.listener != Listener::Proxy || msg.method() != Some(&Method::Register) {
            return None;
        }
        policy::check_scheme(msg).and_then(|()| policy::uas_checks(msg)).ok()?;
        Some(self.proxy.register_stateless(now, from, msg))
    }

    /// True when a new request from `listener` would pass that listener's bound on
    /// unanswered server transactions. ACK (no transaction) and CANCEL (it ends one) always
    /// pass.
    fn overloaded(&self, listener: Listener, msg: &Message) -> bool {
        !matches!(msg.method(), Some(Method::Ack | Method::Cancel) | None)
            && self.transactions.server_unanswered(listener.index()) >= self.config.max_server_transactions
    }

    /// Requests the node answers itself at once and that are safe to process twice: Chord's
    /// RPCs on the overlay listener (idempotent: a retransmission gets the same answer) and
    /// OPTIONS to the node. They are answered without a server transaction (RFC 3261 §8.2.7),
    /// so a flood of them holds no state at all (docs/security.md, H4).
    fn answers_statelessly(&self, from: &Endpoint, msg: &Message) -> bool {
        if from.listener == Listener::Overlay && overlay_wire::is_overlay_request(msg) {
            return !storage_wire::is_storage_request(msg);
        }
        msg.method() == Some(&Method::Options) && !self.proxy_wants(from, msg)
    }

    fn answer_stateless(&mut self, now: Instant, from: Endpoint, reply_to: Endpoint, msg: &Message) {
        let response = match self.route(now, &from, msg) {
            Answer::Respond(resp) => resp,
            Answer::Reject(rejection) => self.rejection_response(msg, &rejection),
            Answer::Nothing => return,
        };
        self.transmit(Transmit { to: reply_to, data: response.encode() });
        self.drain_transactions(now);
    }
}

enum Answer {
    Respond(Message),
    Reject(Rejection),
    Nothing,
}

impl Peer {
    /// A Via for a request of ours from the overlay listener over `transport` (a fresh branch,
    /// `rport` asked, RFC 3581).
    fn overlay_via(&mut self, transport: Transport) -> String {
        let branch = new_branch(&mut self.rng);
        format!("SIP/2.0/{} {};branch={branch};rport", transport.via_name(), sent_by(self.config.overlay_addr))
    }
}

fn sent_by(a: SocketAddr) -> String {
    crate::sip::uri::host_port(&a.ip().into(), Some(a.port()))
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// RFC 3261 §18.2.1 and RFC 3581 §4: record on the top Via where the request really came from,
/// so responses (which copy the Via) carry it and can be routed back. Returns the top Via as
/// it now stands, so the caller need not parse it again.
fn stamp_received(msg: &mut Message, from: &Endpoint) -> Option<Via> {
    let Ok(mut via) = msg.top_via() else { return None };
    let source_ip = from.remote.ip();
    let mut changed = false;
    if via.host.ip() != Some(source_ip) {
        via.set_param("received", Some(source_ip.to_string()));
        changed = true;
    }
    if via.rport().is_some() {
        via.set_param("rport", Some(from.remote.port().to_string()));
        if via.received().is_none() {
            via.set_param("received", Some(source_ip.to_string()));
        }
        changed = true;
    }
    if changed {
        replace_top_via(&mut msg.headers, &via);
    }
    Some(via)
}

/// Rewrites the first element of the first Via header, leaving the rest as they were.
fn replace_top_via(headers: &mut Headers, via: &Via) {
    // The usual case, one Via per line: the line is replaced where it stands.
    if headers.replace_single_element(Header::new(HeaderName::Via, via)) {
        return;
    }
    if headers.remove_first_element(&HeaderName::Via).is_some() {
        headers.push_front_of(Header::new(HeaderName::Via, via));
        // push_front_of put it before the remaining Vias; if the first line had several
        // elements, they are now on their own line right after ours, which keeps the order.
    }
}

/// docs/security.md, M1: whether answering `request` with `response` over UDP would send more than
/// three times the bytes it received, the most a source that has not proved its address gets.
pub(crate) fn amplifies(request: &Message, response: &Message) -> bool {
    response.encode().len() > AMPLIFICATION_FACTOR * request.encode().len()
}

/// See [`amplifies`].
pub(crate) const AMPLIFICATION_FACTOR: usize = 3;

#[cfg(test)]
pub(crate) mod tests;
