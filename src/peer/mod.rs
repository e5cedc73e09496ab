//! The node as one sans-IO state machine: bytes and timeouts in, bytes and deadlines out.
//!
//! The daemon (or the simulator) feeds every datagram and stream frame that reaches either
//! listener to [`Peer::handle_input`], calls [`Peer::handle_timeout`] at [`Peer::poll_timeout`],
//! and sends what [`Peer::poll_transmit`] returns. Nothing here reads a clock, opens a socket or
//! touches a file; randomness comes from a ChaCha8 generator seeded by the config.
//!
//! What the peer does with a request (RFC 3261 §16.3, §8.2, §10.3) is decided in [`policy`];
//! where responses go in [`endpoint`].

pub mod counters;
pub mod endpoint;
pub mod overlay_sip;
pub mod policy;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tracing::{debug, trace, warn};

pub use counters::Counters;
pub use endpoint::{reply_endpoint, ConnectionId, Endpoint, Listener, Transmit, Transport};

use crate::sip::header::Via;
use crate::sip::validate::{self, Rejection};
use crate::sip::{parse, Header, HeaderName, Headers, Message, Method, RequestLine, StartLine, Uri, Version};

/// What the peer needs to know about itself.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The overlay (node-to-node) listening address.
    pub overlay_addr: SocketAddr,
    /// The softphone-facing proxy address.
    pub proxy_addr: SocketAddr,
    /// The SIP domain local phones register in; the registrar's digest realm.
    pub domain: String,
    /// Datagrams larger than this are dropped unread (with a warning), bounding the work a
    /// single packet can cause. RFC 3261 §18.1.1 keeps requests we send well below 1300 bytes
    /// over UDP; what we accept may be larger, up to the 65,507 an IPv4 datagram can carry.
    pub max_datagram_size: usize,
    /// Seeds the generator for tags, branches and nonce keys.
    pub seed: u64,
    /// `Server` / `User-Agent` value.
    pub server: String,
}

impl PeerConfig {
    pub fn new(overlay_addr: SocketAddr, proxy_addr: SocketAddr) -> PeerConfig {
        PeerConfig {
            overlay_addr,
            proxy_addr,
            domain: "p2p.test".into(),
            max_datagram_size: 16 * 1024,
            seed: 0,
            server: format!("p2psip/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// A p2psip node's protocol core.
pub struct Peer {
    config: PeerConfig,
    rng: ChaCha8Rng,
    /// Key for the HMAC that makes digest nonces verifiable without state.
    nonce_key: ring::hmac::Key,
    started: Instant,
    outbox: VecDeque<Transmit>,
    counters: Counters,
    /// `host:port` of our listeners, for loop detection (RFC 3261 §16.3 step 4).
    own_sent_by: Vec<String>,
}

impl Peer {
    pub fn new(config: PeerConfig, now: Instant) -> Peer {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let key_bytes: [u8; 32] = rng.random();
        let own_sent_by = [config.overlay_addr, config.proxy_addr].iter().map(|a| sent_by(*a)).collect();
        Peer {
            nonce_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key_bytes),
            config,
            rng,
            started: now,
            outbox: VecDeque::new(),
            counters: Counters::default(),
            own_sent_by,
        }
    }

    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// One datagram, or one frame cut from a stream, arrived from `from`.
    pub fn handle_input(&mut self, now: Instant, from: Endpoint, data: Bytes) {
        self.counters.messages_in += 1;
        self.counters.bytes_in += data.len() as u64;
        if from.transport == Transport::Udp && data.len() > self.config.max_datagram_size {
            self.counters.oversized_datagrams += 1;
            warn!(
                from = %from.remote,
                size = data.len(),
                limit = self.config.max_datagram_size,
                "dropped a UDP datagram larger than max_datagram_size"
            );
            return;
        }
        // Keep-alives: CRLFs alone on a datagram are ignored (RFC 5626 uses STUN on UDP).
        if data.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            self.counters.keepalives += 1;
            return;
        }
        match parse(data) {
            Ok(msg) if msg.is_request() => self.handle_request(now, from, msg),
            Ok(msg) => self.handle_response(now, from, msg),
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
                        self.reject(now, from, &stub, Rejection::new(400, reason));
                    }
                    None => self.counters.messages_dropped += 1,
                }
            }
        }
    }

    /// A CRLF CRLF ping arrived on a stream: answer with a CRLF pong (RFC 5626 §4.4.1).
    pub fn handle_ping(&mut self, _now: Instant, from: Endpoint) {
        self.counters.keepalives += 1;
        self.transmit(Transmit { to: from, data: Bytes::from_static(b"\r\n") });
    }

    pub fn handle_timeout(&mut self, _now: Instant) {}

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn transmit(&mut self, t: Transmit) {
        self.counters.messages_out += 1;
        self.counters.bytes_out += t.data.len() as u64;
        trace!(to = %t.to.remote, len = t.data.len(), "transmit");
        self.outbox.push_back(t);
    }

    fn handle_request(&mut self, now: Instant, from: Endpoint, mut msg: Message) {
        if let Err(rejection) = validate::check_request(&msg) {
            debug!(from = %from.remote, status = rejection.status, reason = %rejection.reason, "request refused");
            self.reject(now, from, &msg, rejection);
            return;
        }
        stamp_received(&mut msg, &from);
        let answer = self.route(now, &from, &msg);
        match answer {
            Answer::Respond(resp) => self.send_response(&from, &msg, resp),
            Answer::Reject(rejection) => self.reject(now, from, &msg, rejection),
            Answer::Nothing => {}
        }
    }

    /// Decides what a valid request gets, by listener and role.
    fn route(&mut self, now: Instant, from: &Endpoint, msg: &Message) -> Answer {
        let Some(method) = msg.method().cloned() else { return Answer::Nothing };
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
                let tag = self.new_tag();
                Answer::Respond(policy::options_ok(msg, &tag, &self.config.server))
            }
            Method::Register if from.listener == Listener::Proxy => {
                let nonce = self.new_nonce(now);
                Answer::Reject(policy::register_answer(msg, &self.config.domain, &nonce))
            }
            Method::Register => Answer::Reject(Rejection::new(403, "Forbidden (phones register on the proxy port)")),
            Method::Ack => Answer::Nothing,
            Method::Bye | Method::Cancel => Answer::Reject(Rejection::new(481, "Call/Transaction Does Not Exist")),
            _ => Answer::Reject(Rejection::new(404, "Not Found")),
        }
    }

    fn handle_response(&mut self, _now: Instant, from: Endpoint, msg: Message) {
        if let Err(why) = validate::check_response(&msg) {
            debug!(from = %from.remote, why, "dropped malformed response");
        } else {
            debug!(from = %from.remote, msg = %msg.summary(), "dropped response matching no transaction");
        }
        self.counters.messages_dropped += 1;
    }

    fn reject(&mut self, _now: Instant, from: Endpoint, request: &Message, rejection: Rejection) {
        // RFC 3261 §17.1.1.3: an ACK is never answered.
        if request.method() == Some(&Method::Ack) || !validate::can_answer(request) {
            self.counters.messages_dropped += 1;
            return;
        }
        self.counters.requests_rejected += 1;
        let tag = self.new_tag();
        let mut resp = rejection.to_response(request, Some(&tag));
        resp.headers.push(Header::new(HeaderName::Server, &self.config.server));
        self.send_response(&from, request, resp);
    }

    fn send_response(&mut self, from: &Endpoint, request: &Message, resp: Message) {
        let to = reply_endpoint(from, request.top_via().ok().as_ref());
        self.transmit(Transmit { to, data: resp.encode() });
    }

    fn new_tag(&mut self) -> String {
        format!("{:016x}", self.rng.random::<u64>())
    }

    /// A nonce that the node can later check without keeping state: its age in seconds and an
    /// HMAC over it (RFC 7616 §3.3 suggests time-stamp plus keyed hash).
    fn new_nonce(&mut self, now: Instant) -> String {
        let age = now.saturating_duration_since(self.started).as_secs();
        let tag = ring::hmac::sign(&self.nonce_key, &age.to_be_bytes());
        let mac: String = tag.as_ref()[..12].iter().map(|b| format!("{b:02x}")).collect();
        format!("{age:x}.{mac}")
    }
}

enum Answer {
    Respond(Message),
    Reject(Rejection),
    Nothing,
}

fn sent_by(a: SocketAddr) -> String {
    crate::sip::uri::host_port(&a.ip().into(), Some(a.port()))
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// RFC 3261 §18.2.1 and RFC 3581 §4: record on the top Via where the request really came from,
/// so responses (which copy the Via) carry it and can be routed back.
fn stamp_received(msg: &mut Message, from: &Endpoint) {
    let Ok(mut via) = msg.top_via() else { return };
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
}

/// Rewrites the first element of the first Via header, leaving the rest as they were.
fn replace_top_via(headers: &mut Headers, via: &Via) {
    if headers.remove_first_element(&HeaderName::Via).is_some() {
        headers.push_front_of(Header::new(HeaderName::Via, via));
        // push_front_of put it before the remaining Vias; if the first line had several
        // elements, they are now on their own line right after ours, which keeps the order.
    }
}

/// A random `z9hG4bK` branch.
pub fn new_branch(rng: &mut impl Rng) -> String {
    format!("{}{:016x}", crate::sip::header::BRANCH_MAGIC_COOKIE, rng.random::<u64>())
}
