//! The anchor: every call of this node's phones that crosses the overlay. The proxy hands it
//! each message that crosses between a phone and the overlay ([`Anchor::toward_overlay`],
//! [`Anchor::toward_phone`]); the anchor adds or takes out the ICE part, checks the far node's
//! proof, rewrites the SDP its own phone receives toward its relay ports, learns where its
//! phone wants media from the SDP the phone sends, and relays datagrams.
//!
//! The rules, in one place:
//! - **Which calls are anchored.** A call between two phones of this node never crosses the
//!   overlay and keeps its direct path. A call across the overlay is anchored when both nodes
//!   say so: the caller's node adds its ICE part to the INVITE, the callee's node answers with
//!   its own; a far node that sends none (an older node, or one with the anchor turned off)
//!   leaves the call unanchored, its SDP untouched (`path: "direct"`). Two nodes on one LAN
//!   still anchor: their host candidates give the direct LAN path, and the media stays
//!   encrypted between them.
//! - **The ICE part** travels in the initial INVITE and in every 18x and 2xx to it, and is taken
//!   out of every message before a phone sees it.
//! - **Any SDP on its way to our phone** is rewritten toward our relay ports (`crate::sdp`);
//!   **any SDP from our phone** (offer, answer, late offer's ACK, re-INVITE, UPDATE) says where
//!   it wants media.
//! - **A call ends** on BYE or CANCEL crossing either way, on a final failure of its INVITE
//!   before any 2xx, or when no datagram went either way for [`AnchorConfig::idle_timeout`]
//!   ([`AnchorConfig::held_idle_timeout`] while a phone holds it: a held call may be silent)
//!   (a phone that vanished): its sockets close. A path that never formed before the call was
//!   answered is reported ([`AnchorEvent::PathFailed`]) so the proxy can end the call cleanly.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tracing::{debug, info};

use super::body::{sdp_of, Body};
use super::call::{Call, CallCounters, CallState, Role, Send};
use super::ice::IceTimers;
use super::phone::PhoneStream;
use super::pool::{Pool, SocketId, SocketKind};
pub use super::status::{AnchorTotals, CallStatus};
use crate::identity::{Aor, KeyPair, SharedRandom, VerifiedCache};
use crate::sdp::{RelayPorts, Sdp};
use crate::sip::header::MediaType;
use crate::sip::{Message, SipUri};

/// The anchor's settings (`[media]` in the node's config).
#[derive(Debug, Clone)]
pub struct AnchorConfig {
    /// The phone-facing address relay pairs are bound on (the proxy listener's).
    pub phone_ip: IpAddr,
    /// The node's own address, where legs are bound (their host candidate).
    pub leg_ip: IpAddr,
    /// The port range relay pairs come from (inclusive).
    pub port_range: (u16, u16),
    /// Calls anchored at once; beyond, a new call across the overlay gets 503.
    pub max_calls: usize,
    /// Legs kept open and gathered ahead of calls.
    pub spare_legs: usize,
    /// Relay pairs kept open ahead of calls.
    pub spare_pairs: usize,
    /// No datagram either way for this long ends a call's relay (60 s, rtpengine's default).
    pub idle_timeout: Duration,
    /// The same while a phone holds the call (3600 s, rtpengine's for muted streams).
    pub held_idle_timeout: Duration,
    /// The ICE sessions' timers.
    pub ice: IceTimers,
    /// Which ICE agent the sessions use.
    pub agent: super::ice::AgentKind,
    /// TURN servers (the first is used): each leg allocates a relayed address there ahead of
    /// its call.
    pub turn: Vec<super::turn::TurnConfig>,
}

impl AnchorConfig {
    /// The defaults for a node whose phones use `phone_ip` and whose own address is `leg_ip`.
    pub fn new(phone_ip: IpAddr, leg_ip: IpAddr) -> AnchorConfig {
        AnchorConfig {
            phone_ip,
            leg_ip,
            port_range: (20000, 29999),
            max_calls: 32,
            spare_legs: 2,
            spare_pairs: 4,
            idle_timeout: Duration::from_secs(60),
            held_idle_timeout: Duration::from_secs(3600),
            ice: IceTimers::default(),
            agent: super::ice::AgentKind::default(),
            turn: Vec::new(),
        }
    }

    /// Sockets the anchor may hold: a leg and two streams' pairs per call, and the spares.
    fn max_sockets(&self) -> usize {
        self.max_calls * 3 + self.spare_legs + self.spare_pairs
    }
}

/// What the anchor needs to prove this node's user and check the far one.
pub struct AnchorIdentity {
    /// The enrolled key.
    pub key: KeyPair,
    /// Its leaf certificate, DER.
    pub cert: Vec<u8>,
    /// The AoR it proves.
    pub aor: Aor,
    /// Randomness for ephemeral keys and signatures.
    pub rng: SharedRandom,
    /// Chains checked to the overlay's root.
    pub ids: VerifiedCache,
    /// Unix time at `started`.
    pub unix_at_start: u64,
    /// The peer's start.
    pub started: Instant,
}

impl std::fmt::Debug for AnchorIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnchorIdentity").field("aor", &self.aor).finish_non_exhaustive()
    }
}

/// What the daemon reports about the anchor's sockets.
#[derive(Debug)]
pub enum MediaInput {
    /// A socket opened at these addresses (one for a leg, RTP and RTCP for a pair).
    Opened {
        /// Which.
        socket: SocketId,
        /// Where.
        addrs: Vec<SocketAddr>,
    },
    /// A socket could not be opened (the range is used up, say).
    OpenFailed {
        /// Which.
        socket: SocketId,
        /// Why, for the log.
        error: String,
    },
    /// A datagram arrived on one.
    Datagram {
        /// On which socket.
        socket: SocketId,
        /// Which of a pair (0 RTP, 1 RTCP); 0 for a leg.
        index: u8,
        /// From where.
        from: SocketAddr,
        /// Its bytes.
        data: Bytes,
    },
}

/// What the anchor asks the daemon to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaOutput {
    /// Open a socket: a leg on `ip` (any port), or a pair on `ip` from `range`.
    Open {
        /// Its id.
        socket: SocketId,
        /// Which kind.
        kind: SocketKind,
        /// On which address.
        ip: IpAddr,
        /// For a pair: the port range.
        range: (u16, u16),
    },
    /// Send a datagram.
    Send(Send),
    /// Close a socket (both of a pair).
    Close {
        /// Which.
        socket: SocketId,
    },
}

/// Something the proxy acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnchorEvent {
    /// No media path formed for a call that is not answered yet: the caller's phone should get
    /// a final response, and the call is gone from the anchor.
    PathFailed {
        /// Its Call-ID.
        call_id: String,
    },
}

/// Where a socket belongs.
#[derive(Debug, Clone)]
enum Owner {
    /// A call's leg.
    Leg(String),
    /// A call's stream.
    Stream(String, usize),
}

/// Every anchored call of this node.
#[derive(Debug)]
pub struct Anchor {
    config: AnchorConfig,
    identity: Option<AnchorIdentity>,
    calls: BTreeMap<String, Call>,
    owners: BTreeMap<SocketId, Owner>,
    pool: Pool,
    outputs: VecDeque<MediaOutput>,
    sends: VecDeque<Send>,
    events: VecDeque<AnchorEvent>,
    rng: ChaCha8Rng,
    reflectors: Vec<SocketAddr>,
    totals: AnchorTotals,
    /// Counters of ended calls, so the totals include them.
    ended: CallCounters,
    next_wake: Option<Instant>,
}

fn aor_of(uri: &crate::sip::Uri) -> Option<String> {
    uri.as_sip().map(SipUri::aor)
}

impl Anchor {
    /// An anchor with `config`; `seed` draws ICE credentials and boundaries.
    pub fn new(config: AnchorConfig, seed: u64) -> Anchor {
        let mut a = Anchor {
            config,
            identity: None,
            calls: BTreeMap::new(),
            owners: BTreeMap::new(),
            pool: Pool::default(),
            outputs: VecDeque::new(),
            sends: VecDeque::new(),
            events: VecDeque::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            reflectors: Vec::new(),
            totals: AnchorTotals::default(),
            ended: CallCounters::default(),
            next_wake: None,
        };
        a.refill();
        a
    }

    /// This node's enrolled identity: without one, no call is anchored (nothing could prove
    /// it).
    pub fn set_identity(&mut self, identity: AnchorIdentity) {
        self.identity = Some(identity);
    }

    /// Where spare legs ask for their server-reflexive address: STUN servers, or peers.
    pub fn set_reflectors(&mut self, reflectors: Vec<SocketAddr>) {
        self.reflectors = reflectors;
    }

    /// The settings.
    pub fn config(&self) -> &AnchorConfig {
        &self.config
    }

    fn refill(&mut self) {
        let c = &self.config;
        for (socket, kind) in self.pool.refill(c.spare_legs, c.spare_pairs, c.max_sockets()) {
            let ip = match kind {
                SocketKind::Leg => c.leg_ip,
                SocketKind::Pair => c.phone_ip,
            };
            self.outputs.push_back(MediaOutput::Open { socket, kind, ip, range: c.port_range });
        }
    }

    fn unix(&self, now: Instant) -> u64 {
        self.identity.as_ref().map_or(0, |i| i.unix_at_start + now.saturating_duration_since(i.started).as_secs())
    }

    fn adopt(&mut self, call: Call) {
        self.totals.calls_anchored += 1;
        self.owners.insert(call.leg.id, Owner::Leg(call.call_id.clone()));
        let relay = call.leg.turn.as_ref().and_then(super::turn::TurnLeg::relayed);
        info!(
            call_id = %call.call_id,
            role = ?call.role,
            leg = %call.leg.addr,
            srflx = ?call.leg.srflx,
            relay = ?relay,
            "media: call anchored"
        );
        self.calls.insert(call.call_id.clone(), call);
    }

    fn end(&mut self, now: Instant, call_id: &str, why: &str) {
        let Some(call) = self.calls.remove(call_id) else { return };
        info!(
            call_id,
            why,
            packets_in = call.counters.packets_in,
            packets_out = call.counters.packets_out,
            "media: call ended"
        );
        if call.state == CallState::Failed {
            self.totals.calls_failed += 1;
        }
        let c = call.counters;
        self.ended.packets_in += c.packets_in;
        self.ended.packets_out += c.packets_out;
        self.ended.bytes_in += c.bytes_in;
        self.ended.bytes_out += c.bytes_out;
        self.ended.frames_dropped += c.frames_dropped;
        let mut call = call;
        call.close(now, &mut self.sends);
        self.flush();
        for socket in call.sockets().collect::<Vec<_>>() {
            self.owners.remove(&socket);
            self.pool.released();
            self.outputs.push_back(MediaOutput::Close { socket });
        }
    }

    // ---- datagrams and time ----

    /// What the daemon reports.
    pub fn handle_input(&mut self, now: Instant, input: MediaInput) {
        match input {
            MediaInput::Opened { socket, addrs } => {
                if self.pool.opened(socket, &addrs) == Some(SocketKind::Leg) {
                    // A spare leg allocates its relay now, so a call finds it ready.
                    if let (Some(server), Some(addr)) = (self.config.turn.first(), addrs.first()) {
                        let seed = self.rng.random();
                        if let Some(leg) = self.pool.leg_mut(socket) {
                            leg.turn = super::turn::TurnLeg::allocate(now, *addr, server, seed);
                        }
                    }
                }
                self.ask_reflectors(now);
                self.drive_spares(now);
            }
            MediaInput::OpenFailed { socket, error } => {
                info!(%socket, %error, "media: could not open a socket");
                self.pool.open_failed(socket);
            }
            MediaInput::Datagram { socket, index, from, data } => {
                if let Some(at) = self.datagram(now, socket, index, from, &data) {
                    // Only that call's deadline moved: no scan of every call per datagram
                    // (a later deadline leaves `next_wake` early, which costs one wake-up).
                    self.next_wake = [self.next_wake, at].into_iter().flatten().min();
                    self.flush();
                    return;
                }
            }
        }
        self.flush();
        self.rewake();
    }

    /// A datagram on one of our sockets. When a call took it, that call's next deadline.
    fn datagram(
        &mut self,
        now: Instant,
        socket: SocketId,
        index: u8,
        from: SocketAddr,
        data: &[u8],
    ) -> Option<Option<Instant>> {
        tracing::trace!(%socket, index, %from, len = data.len(), owner = ?self.owners.get(&socket), "media datagram");
        let (idle, held_idle) = (self.config.idle_timeout, self.config.held_idle_timeout);
        let deadline = |c: &mut Call| c.poll_timeout(if c.held() { held_idle } else { idle });
        // Per packet: the owner is looked up, not cloned.
        match self.owners.get(&socket) {
            Some(Owner::Leg(call_id)) => {
                let call = self.calls.get_mut(call_id)?;
                call.handle_leg(now, from, data, &mut self.sends);
                Some(deadline(call))
            }
            Some(Owner::Stream(call_id, i)) => {
                let call = self.calls.get_mut(call_id)?;
                call.handle_phone(now, *i, index, from, data, &mut self.sends);
                Some(deadline(call))
            }
            None if self.pool.is_spare_leg(socket) => {
                // The answer to our Binding request (the reflector may be the TURN server
                // itself), else the TURN client's.
                if let Some(crate::nat::stun::StunMessage::BindingSuccess { id, mapped, .. }) =
                    crate::nat::stun::parse(data)
                {
                    if self.pool.stun_answer(socket, from, id, mapped) {
                        debug!(%socket, %mapped, "media: a spare leg learned its server-reflexive address");
                        return None;
                    }
                }
                if let Some(turn) = self.pool.leg_mut(socket).and_then(|l| l.turn.as_mut()) {
                    if turn.server() == from {
                        turn.handle_datagram(now, data);
                        self.drive_spares(now);
                    }
                }
                None
            }
            None => None,
        }
    }

    /// The spare legs' TURN clients: retransmissions and refreshes go out.
    fn drive_spares(&mut self, now: Instant) {
        for (socket, to, bytes) in self.pool.handle_timeout(now) {
            self.sends.push_back(Send { socket, index: 0, to, bytes });
        }
    }

    fn ask_reflectors(&mut self, now: Instant) {
        let rng = &mut self.rng;
        for (socket, to, id) in self.pool.poll_stun(now, &self.reflectors, || rng.random()) {
            let bytes = crate::nat::stun::binding_request(id);
            self.sends.push_back(Send { socket, index: 0, to, bytes });
        }
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.ask_reflectors(now);
        self.drive_spares(now);
        let (idle, held_idle) = (self.config.idle_timeout, self.config.held_idle_timeout);
        let mut gone = Vec::new();
        for (id, call) in &mut self.calls {
            call.handle_timeout(now, &mut self.sends);
            if call.state == CallState::Failed && !call.answered && !call.reported {
                call.reported = true;
                self.events.push_back(AnchorEvent::PathFailed { call_id: id.clone() });
                gone.push((id.clone(), "no media path"));
            } else if call.is_idle(now, if call.held() { held_idle } else { idle }) {
                gone.push((id.clone(), "no media either way for the idle timeout"));
            }
        }
        for (id, why) in gone {
            self.end(now, &id, why);
        }
        self.refill();
        self.flush();
        self.rewake();
    }

    fn flush(&mut self) {
        while let Some(s) = self.sends.pop_front() {
            self.outputs.push_back(MediaOutput::Send(s));
        }
    }

    /// The next thing for the daemon to do.
    pub fn poll_output(&mut self) -> Option<MediaOutput> {
        self.flush();
        self.outputs.pop_front()
    }

    /// What the proxy acts on.
    pub fn poll_event(&mut self) -> Option<AnchorEvent> {
        self.events.pop_front()
    }

    /// When the anchor next needs [`handle_timeout`](Self::handle_timeout).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_wake
    }

    /// Works out [`poll_timeout`](Self::poll_timeout) after a change (the ICE sessions'
    /// deadlines are only read through `&mut`).
    fn rewake(&mut self) {
        let (idle, held_idle) = (self.config.idle_timeout, self.config.held_idle_timeout);
        let calls =
            self.calls.values_mut().filter_map(|c| c.poll_timeout(if c.held() { held_idle } else { idle })).min();
        self.next_wake = [calls, self.pool.poll_timeout()].into_iter().flatten().min();
    }

    // ---- status ----

    /// The calls anchored now.
    pub fn calls(&self) -> Vec<CallStatus> {
        self.calls
            .values()
            .map(|c| CallStatus {
                call_id: c.call_id.clone(),
                peer_aor: match c.role {
                    Role::Caller => c.callee.clone(),
                    Role::Callee => c.caller.clone(),
                },
                state: c.state,
                path: c.path.map(|p| p.2),
                held: c.held(),
                packets_in: c.counters.packets_in,
                packets_out: c.counters.packets_out,
                bytes_in: c.counters.bytes_in,
                bytes_out: c.counters.bytes_out,
                started_at: c.started_unix,
                ice_ms: c.ice_ms,
                ringing_ms: c.ringing_ms,
                first_media_ms: c.first_media_ms,
            })
            .collect()
    }

    /// Counts since start, ended calls included.
    pub fn totals(&self) -> AnchorTotals {
        let mut t = self.totals;
        let live = self.calls.values().map(|c| c.counters);
        let sum = live.fold(self.ended, |mut a, c| {
            a.packets_in += c.packets_in;
            a.packets_out += c.packets_out;
            a.bytes_in += c.bytes_in;
            a.bytes_out += c.bytes_out;
            a.frames_dropped += c.frames_dropped;
            a
        });
        t.media_packets_in = sum.packets_in;
        t.media_packets_out = sum.packets_out;
        t.media_bytes_in = sum.bytes_in;
        t.media_bytes_out = sum.bytes_out;
        t.media_frames_dropped = sum.frames_dropped;
        t.calls_failed += self.calls.values().filter(|c| c.state == CallState::Failed).count() as u64;
        t
    }

    /// Sockets open or opening.
    pub fn sockets_held(&self) -> usize {
        self.pool.held()
    }

    /// TURN allocations held (spare legs' and calls'), not counting refused ones.
    pub fn relays_held(&self) -> usize {
        let live = |c: &&Call| c.leg.turn.as_ref().is_some_and(super::turn::TurnLeg::is_live);
        self.pool.relays() + self.calls.values().filter(live).count()
    }
}

/// Stream `i` of `call`, made (with a pair from the pool) if it does not exist yet; `None`
/// when the pool has no pair.
fn ensure_stream<'a>(
    call: &'a mut Call,
    pool: &mut Pool,
    owners: &mut BTreeMap<SocketId, Owner>,
    i: usize,
) -> Option<&'a mut PhoneStream> {
    while call.streams.len() <= i {
        let (pair, ports) = pool.take_pair()?;
        owners.insert(pair, Owner::Stream(call.call_id.clone(), call.streams.len()));
        call.streams.push(PhoneStream::new(pair, ports));
    }
    call.streams.get_mut(i)
}

/// Our phone's SDP: where it wants each stream.
fn learn(call: &mut Call, pool: &mut Pool, owners: &mut BTreeMap<SocketId, Owner>, sdp: &Sdp) {
    for (i, stream) in sdp.streams().into_iter().enumerate() {
        if let Some(s) = ensure_stream(call, pool, owners, i) {
            s.learn(stream);
        }
    }
}

/// The far phone's SDP, rewritten toward our relay ports before our phone sees it.
fn rewrite(
    call: &mut Call,
    pool: &mut Pool,
    owners: &mut BTreeMap<SocketId, Owner>,
    phone_ip: IpAddr,
    msg: &mut Message,
    body: &Body,
) {
    let Some(mut sdp) = sdp_of(body) else { return };
    let streams = sdp.streams();
    let relay: Vec<Option<RelayPorts>> = streams
        .into_iter()
        .enumerate()
        .map(|(i, far)| {
            ensure_stream(call, pool, owners, i).map(|s| {
                s.far_said(far);
                s.ports
            })
        })
        .collect();
    sdp.anchor(phone_ip, &relay);
    tracing::trace!(?relay, "SDP toward our phone rewritten");
    let ty = body.phone.as_ref().and_then(|(t, _)| t.clone()).unwrap_or_else(|| MediaType::new("application", "sdp"));
    msg.set_body(sdp.encode(), Some(&ty));
}

mod signalling;
#[cfg(test)]
mod tests;
