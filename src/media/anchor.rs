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
//!   (a phone that vanished): its sockets close. A path that never formed before the call was
//!   answered is reported ([`AnchorEvent::PathFailed`]) so the proxy can end the call cleanly.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tracing::{debug, info};

use super::call::{Call, CallCounters, CallState, Role, Send};
use super::frag::{self, Frag};
use super::ice::{CandidateKind, IceSession, IceTimers, LocalCandidate, PathKind, RtcIce};
use super::keys::{self, CallNames, KeyShare, Share};
use super::phone::PhoneStream;
use super::pool::{Pool, SocketId, SocketKind};
use super::tunnel::{Direction, KeyContext};
use crate::identity::{Aor, KeyPair, SharedRandom, VerifiedCache};
use crate::sdp::{RelayPorts, Sdp};
use crate::sip::header::MediaType;
use crate::sip::multipart::{self, Part};
use crate::sip::validate::Rejection;
use crate::sip::{Message, Method, SipUri};

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
    /// The ICE sessions' timers.
    pub ice: IceTimers,
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
            ice: IceTimers::default(),
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

/// One call in `/status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CallStatus {
    /// The Call-ID.
    pub call_id: String,
    /// The other user's AoR.
    pub peer_aor: String,
    /// Where the call is.
    pub state: CallState,
    /// The path's kind, once one is selected.
    pub path: Option<PathKind>,
    /// Datagrams from the far phone delivered to ours.
    pub packets_in: u64,
    /// Datagrams from our phone sent on.
    pub packets_out: u64,
    /// Their bytes.
    pub bytes_in: u64,
    /// Their bytes.
    pub bytes_out: u64,
    /// Unix time it began.
    pub started_at: u64,
}

/// Counts since start (`/status`'s `counters`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AnchorTotals {
    /// Calls anchored.
    pub calls_anchored: u64,
    /// Calls whose far node did not prove its user (no media).
    pub calls_refused: u64,
    /// Calls whose path never formed, or was lost.
    pub calls_failed: u64,
    /// Datagrams relayed from far phones to ours (ended calls included).
    pub media_packets_in: u64,
    /// …from ours to far phones.
    pub media_packets_out: u64,
    /// Their bytes.
    pub media_bytes_in: u64,
    /// Their bytes.
    pub media_bytes_out: u64,
    /// Frames dropped (forged, replayed, off the selected pair).
    pub media_frames_dropped: u64,
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

/// How a message's body splits: the phone's part (its type and bytes) and our ICE part.
struct Body {
    phone: Option<(Option<MediaType>, Bytes)>,
    frag: Option<Vec<u8>>,
}

fn split_body(msg: &Message) -> Body {
    let ty = msg.content_type().ok().flatten();
    if msg.body.is_empty() {
        return Body { phone: None, frag: None };
    }
    if let Some(parts) = ty.as_ref().and_then(|t| multipart::decode(t, &msg.body)) {
        let (ours, theirs): (Vec<Part>, Vec<Part>) =
            parts.into_iter().partition(|p| p.content_type.is("application", frag::SUBTYPE));
        let frag = ours.into_iter().next().map(|p| p.body);
        let phone = match theirs.len() {
            0 => None,
            1 => theirs.into_iter().next().map(|p| (Some(p.content_type), Bytes::from(p.body))),
            // Several parts of the phone's own: they stay a multipart body, less ours.
            _ => {
                let (t, b) = multipart::encode(&theirs, "p2psip-phone");
                Some((Some(t), Bytes::from(b)))
            }
        };
        return Body { phone, frag };
    }
    Body { phone: Some((ty, msg.body.clone())), frag: None }
}

/// The SDP of a phone's part, when it is one.
fn sdp_of(body: &Body) -> Option<Sdp> {
    let (ty, bytes) = body.phone.as_ref()?;
    if ty.as_ref().is_some_and(|t| !t.is("application", "sdp")) {
        return None;
    }
    Sdp::parse(bytes).ok()
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

    // ---- signalling ----

    /// A message from our phone on its way to another node (the proxy's copy for one branch,
    /// or a response going upstream).
    pub fn toward_overlay(&mut self, now: Instant, msg: &mut Message) {
        self.phone_sent(now, msg);
        self.rewake();
    }

    /// A message from another node on its way to our phone. Refused (the request gets the
    /// rejection) when its ICE part does not prove the caller or no call can be anchored.
    pub fn toward_phone(&mut self, now: Instant, msg: &mut Message) -> Result<(), Rejection> {
        let r = self.for_phone(now, msg);
        self.rewake();
        r
    }

    fn phone_sent(&mut self, now: Instant, msg: &mut Message) {
        let Ok(call_id) = msg.call_id().map(str::to_owned) else { return };
        let initial = msg.to().ok().is_some_and(|t| t.tag().is_none());
        if let Some(method) = msg.method().cloned() {
            if method == Method::Invite && initial && !self.calls.contains_key(&call_id) {
                self.start_caller(now, &call_id, msg);
            }
            let Some(call) = self.calls.get_mut(&call_id) else { return };
            let body = split_body(msg);
            if let Some(sdp) = sdp_of(&body) {
                learn(call, &mut self.pool, &mut self.owners, &sdp);
            }
            if method == Method::Invite && initial {
                let frag = call.frag.clone();
                self.attach_frag(msg, &body, frag);
            }
            if matches!(method, Method::Bye | Method::Cancel) {
                self.end(now, &call_id, "hung up");
            }
            self.refill();
            return;
        }
        let (Some(status), Ok(cseq)) = (msg.status(), msg.cseq()) else { return };
        let Some(call) = self.calls.get_mut(&call_id) else { return };
        let body = split_body(msg);
        if (180..300).contains(&status) {
            if let Some(sdp) = sdp_of(&body) {
                learn(call, &mut self.pool, &mut self.owners, &sdp);
            }
            if cseq.method == Method::Invite && call.role == Role::Callee {
                let frag = call.frag.clone();
                self.attach_frag(msg, &body, frag);
            }
        }
        self.after_response(now, &call_id, &cseq.method, status);
        self.refill();
    }

    fn for_phone(&mut self, now: Instant, msg: &mut Message) -> Result<(), Rejection> {
        let Ok(call_id) = msg.call_id().map(str::to_owned) else { return Ok(()) };
        let initial = msg.to().ok().is_some_and(|t| t.tag().is_none());
        let body = split_body(msg);
        if let Some(method) = msg.method().cloned() {
            if method == Method::Invite && initial && !self.calls.contains_key(&call_id) {
                if let Some(frag) = &body.frag {
                    self.start_callee(now, &call_id, msg, frag)?;
                }
            }
            strip_frag(msg, &body);
            if let Some(call) = self.calls.get_mut(&call_id) {
                rewrite(call, &mut self.pool, &mut self.owners, self.config.phone_ip, msg, &body);
            }
            if matches!(method, Method::Bye | Method::Cancel) {
                self.end(now, &call_id, "hung up");
            }
            self.refill();
            return Ok(());
        }
        let (Some(status), Ok(cseq)) = (msg.status(), msg.cseq()) else { return Ok(()) };
        strip_frag(msg, &body);
        if let Some(frag) = &body.frag {
            if cseq.method == Method::Invite && (180..300).contains(&status) {
                self.answer_arrived(now, &call_id, frag);
            }
        }
        if let Some(call) = self.calls.get_mut(&call_id) {
            rewrite(call, &mut self.pool, &mut self.owners, self.config.phone_ip, msg, &body);
        }
        self.after_response(now, &call_id, &cseq.method, status);
        self.refill();
        Ok(())
    }

    fn after_response(&mut self, now: Instant, call_id: &str, method: &Method, status: u16) {
        let Some(call) = self.calls.get_mut(call_id) else { return };
        if *method != Method::Invite {
            return;
        }
        if (200..300).contains(&status) {
            call.answered = true;
        } else if status >= 300 && !call.answered {
            self.end(now, call_id, "not answered");
        }
    }

    fn attach_frag(&mut self, msg: &mut Message, body: &Body, frag: Vec<u8>) {
        let mut parts = Vec::new();
        if let Some((ty, bytes)) = &body.phone {
            let content_type = ty.clone().unwrap_or_else(|| MediaType::new("application", "sdp"));
            parts.push(Part { content_type, body: bytes.to_vec() });
        }
        parts.push(Part { content_type: MediaType::new("application", frag::SUBTYPE), body: frag });
        let boundary = format!("p2psip-{:016x}", self.rng.random::<u64>());
        let (ty, bytes) = multipart::encode(&parts, &boundary);
        msg.set_body(Bytes::from(bytes), Some(&ty));
    }

    fn start_caller(&mut self, now: Instant, call_id: &str, msg: &Message) {
        let Some(id) = &self.identity else { return };
        let (Some(caller), Some(callee)) =
            (msg.from().ok().and_then(|f| aor_of(&f.uri)), msg.to().ok().and_then(|t| aor_of(&t.uri)))
        else {
            return;
        };
        if caller != id.aor.as_str() {
            debug!(%caller, "a call not from our user: not anchored");
            return;
        }
        if self.calls.len() >= self.config.max_calls {
            info!(call_id, "media: too many calls to anchor another; it goes unanchored");
            return;
        }
        let Some(leg) = self.pool.take_leg() else {
            info!(call_id, "media: no spare leg socket; the call goes unanchored");
            return;
        };
        let Some(mut call) = self.new_call(now, call_id, Role::Caller, caller, callee, leg) else { return };
        let names = CallNames { call_id, caller: &call.caller, callee: &call.callee };
        let Some(id) = &self.identity else { return };
        let Ok(signature) = keys::sign_offer(&id.key, &*id.rng, &names, &call.ours) else { return };
        call.frag = Frag {
            share: call.ours.clone(),
            candidates: call.ice.local_candidates(),
            signature,
            cert: id.cert.clone(),
        }
        .encode();
        call.offer = Some(call.ours.clone());
        self.adopt(call);
    }

    fn start_callee(&mut self, now: Instant, call_id: &str, msg: &Message, frag: &[u8]) -> Result<(), Rejection> {
        let refuse = |why: String| Rejection::new(403, format!("Forbidden (media key not proven: {why})"));
        let frag = Frag::parse(frag).map_err(|e| refuse(e.to_string()))?;
        let unix = self.unix(now);
        let Some(id) = self.identity.as_mut() else {
            return Err(Rejection::new(403, "Forbidden (media key not proven: this node has no trust anchor)"));
        };
        let (Some(caller), Some(callee)) =
            (msg.from().ok().and_then(|f| aor_of(&f.uri)), msg.to().ok().and_then(|t| aor_of(&t.uri)))
        else {
            return Err(Rejection::new(400, "Bad Request (no From or To AoR)"));
        };
        let proven = id.ids.verify(&frag.cert, &[], unix).map_err(|e| refuse(e.to_string()))?;
        if proven.aor.as_str() != caller {
            self.totals.calls_refused += 1;
            return Err(refuse(format!("the certificate is for {}, not {caller}", proven.aor)));
        }
        let names = CallNames { call_id, caller: &caller, callee: &callee };
        if keys::verify_offer(&proven.public_key, &names, &frag.share, &frag.signature).is_err() {
            self.totals.calls_refused += 1;
            return Err(refuse("the signature does not verify".into()));
        }
        if self.calls.len() >= self.config.max_calls {
            return Err(Rejection::new(503, "Service Unavailable (too many calls for the media anchor)"));
        }
        let leg =
            self.pool.take_leg().ok_or_else(|| Rejection::new(503, "Service Unavailable (no media socket free)"))?;
        let mut call = self
            .new_call(now, call_id, Role::Callee, caller, callee, leg)
            .ok_or_else(|| Rejection::new(500, "Server Internal Error (media session)"))?;
        let id = self.identity.as_ref().ok_or_else(|| Rejection::new(500, "Server Internal Error"))?;
        let names = CallNames { call_id, caller: &call.caller, callee: &call.callee };
        let signature = keys::sign_answer(&id.key, &*id.rng, &names, &frag.share, &call.ours)
            .map_err(|_| Rejection::new(500, "Server Internal Error (signing)"))?;
        call.frag = Frag {
            share: call.ours.clone(),
            candidates: call.ice.local_candidates(),
            signature,
            cert: id.cert.clone(),
        }
        .encode();
        let ctx = KeyContext {
            call_id,
            caller: &call.caller,
            callee: &call.callee,
            caller_ufrag: &frag.share.ufrag,
            callee_ufrag: &call.ours.ufrag,
        };
        let key = call.key.take().ok_or_else(|| Rejection::new(500, "Server Internal Error"))?;
        let tunnel = key.agree(&frag.share.public, &ctx, Direction::FromCallee).map_err(|e| refuse(e.to_string()))?;
        call.set_tunnel(tunnel);
        // Checks start while the phone rings (RFC 8445 §6.1.1: the INVITE's sender controls).
        call.ice
            .start(now, false, &frag.share.ufrag, &frag.share.pwd, &frag.candidates)
            .map_err(|e| refuse(e.to_string()))?;
        call.offer = Some(frag.share);
        call.drive(now, &mut self.sends);
        self.adopt(call);
        Ok(())
    }

    fn answer_arrived(&mut self, now: Instant, call_id: &str, frag: &[u8]) {
        let unix = self.unix(now);
        let (Some(call), Some(id)) = (self.calls.get_mut(call_id), self.identity.as_mut()) else { return };
        if call.role != Role::Caller || call.key.is_none() || call.state != CallState::Connecting {
            return;
        }
        let checked = (|| {
            let frag = Frag::parse(frag).map_err(|e| e.to_string())?;
            let proven = id.ids.verify(&frag.cert, &[], unix).map_err(|e| e.to_string())?;
            if proven.aor.as_str() != call.callee {
                return Err(format!("the certificate is for {}, not {}", proven.aor, call.callee));
            }
            let names = CallNames { call_id, caller: &call.caller, callee: &call.callee };
            let offer = call.offer.as_ref().ok_or("no offer")?;
            keys::verify_answer(&proven.public_key, &names, offer, &frag.share, &frag.signature)
                .map_err(|e| e.to_string())?;
            Ok(frag)
        })();
        let frag = match checked {
            Ok(f) => f,
            Err(why) => {
                info!(call_id, %why, "media: the callee's node did not prove its user; no media for this call");
                call.state = CallState::Refused;
                self.totals.calls_refused += 1;
                return;
            }
        };
        let ctx = KeyContext {
            call_id,
            caller: &call.caller,
            callee: &call.callee,
            caller_ufrag: &call.ours.ufrag,
            callee_ufrag: &frag.share.ufrag,
        };
        let Some(key) = call.key.take() else { return };
        match key.agree(&frag.share.public, &ctx, Direction::FromCaller) {
            Ok(t) => call.set_tunnel(t),
            Err(_) => {
                call.state = CallState::Refused;
                self.totals.calls_refused += 1;
                return;
            }
        }
        if let Err(e) = call.ice.start(now, true, &frag.share.ufrag, &frag.share.pwd, &frag.candidates) {
            debug!(call_id, error = %e, "media: ICE could not start");
        }
        call.drive(now, &mut self.sends);
    }

    fn new_call(
        &mut self,
        now: Instant,
        call_id: &str,
        role: Role,
        caller: String,
        callee: String,
        leg: super::pool::Leg,
    ) -> Option<Call> {
        let id = self.identity.as_ref()?;
        let mut ice = match RtcIce::new(now, self.rng.random(), &self.config.ice) {
            Ok(ice) => ice,
            Err(e) => {
                debug!(error = %e, "media: no ICE session");
                return None;
            }
        };
        ice.add_local(LocalCandidate { kind: CandidateKind::Host, addr: leg.addr, base: leg.addr }).ok()?;
        if let Some(srflx) = leg.srflx.filter(|s| *s != leg.addr) {
            let _ = ice.add_local(LocalCandidate { kind: CandidateKind::Srflx, addr: srflx, base: leg.addr });
        }
        if let Some(relayed) = leg.turn.as_ref().and_then(super::turn::TurnLeg::relayed) {
            let _ = ice.add_local(LocalCandidate { kind: CandidateKind::Relay, addr: relayed, base: relayed });
        }
        let key = KeyShare::generate(&*id.rng).ok()?;
        let (ufrag, pwd) = ice.credentials();
        let ours = Share { ufrag, pwd, public: key.public().to_vec() };
        let started_unix = self.unix(now);
        Some(Call {
            call_id: call_id.to_owned(),
            role,
            caller,
            callee,
            leg,
            ice: Box::new(ice) as Box<dyn IceSession>,
            key: Some(key),
            ours,
            frag: Vec::new(),
            offer: None,
            tunnel: None,
            path: None,
            streams: Vec::new(),
            state: CallState::Connecting,
            started_unix,
            last_packet: now,
            counters: CallCounters::default(),
            answered: false,
            reported: false,
        })
    }

    fn adopt(&mut self, call: Call) {
        self.totals.calls_anchored += 1;
        self.owners.insert(call.leg.id, Owner::Leg(call.call_id.clone()));
        info!(call_id = %call.call_id, role = ?call.role, leg = %call.leg.addr, "media: call anchored");
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
            MediaInput::Datagram { socket, index, from, data } => self.datagram(now, socket, index, from, &data),
        }
        self.flush();
        self.rewake();
    }

    fn datagram(&mut self, now: Instant, socket: SocketId, index: u8, from: SocketAddr, data: &[u8]) {
        tracing::trace!(%socket, index, %from, len = data.len(), owner = ?self.owners.get(&socket), "media datagram");
        match self.owners.get(&socket).cloned() {
            Some(Owner::Leg(call_id)) => {
                if let Some(call) = self.calls.get_mut(&call_id) {
                    call.handle_leg(now, from, data, &mut self.sends);
                }
            }
            Some(Owner::Stream(call_id, i)) => {
                if let Some(call) = self.calls.get_mut(&call_id) {
                    call.handle_phone(now, i, index, from, data, &mut self.sends);
                }
            }
            None if self.pool.is_spare_leg(socket) => {
                if let Some(turn) = self.pool.leg_mut(socket).and_then(|l| l.turn.as_mut()) {
                    if turn.server() == from {
                        turn.handle_datagram(now, data);
                        self.drive_spares(now);
                        return;
                    }
                }
                if let Some(crate::nat::stun::StunMessage::BindingSuccess { id, mapped, .. }) =
                    crate::nat::stun::parse(data)
                {
                    if self.pool.stun_answer(socket, from, id, mapped) {
                        debug!(%socket, %mapped, "media: a spare leg learned its server-reflexive address");
                    }
                }
            }
            None => {}
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
        let idle = self.config.idle_timeout;
        let mut gone = Vec::new();
        for (id, call) in &mut self.calls {
            call.handle_timeout(now, &mut self.sends);
            if call.state == CallState::Failed && !call.answered && !call.reported {
                call.reported = true;
                self.events.push_back(AnchorEvent::PathFailed { call_id: id.clone() });
                gone.push((id.clone(), "no media path"));
            } else if call.is_idle(now, idle) {
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
        let idle = self.config.idle_timeout;
        let calls = self.calls.values_mut().filter_map(|c| c.poll_timeout(idle)).min();
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
                packets_in: c.counters.packets_in,
                packets_out: c.counters.packets_out,
                bytes_in: c.counters.bytes_in,
                bytes_out: c.counters.bytes_out,
                started_at: c.started_unix,
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
        let live = |l: &super::pool::Leg| {
            l.turn.as_ref().is_some_and(|t| {
                matches!(t.state(), super::turn::TurnState::Allocating | super::turn::TurnState::Allocated(_))
            })
        };
        self.pool.relays() + self.calls.values().filter(|c| live(&c.leg)).count()
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
    let relay: Vec<Option<RelayPorts>> =
        (0..streams.len()).map(|i| ensure_stream(call, pool, owners, i).map(|s| s.ports)).collect();
    sdp.anchor(phone_ip, &relay);
    tracing::trace!(?relay, "SDP toward our phone rewritten");
    let ty = body.phone.as_ref().and_then(|(t, _)| t.clone()).unwrap_or_else(|| MediaType::new("application", "sdp"));
    msg.set_body(sdp.encode(), Some(&ty));
}

/// Takes our ICE part out: the phone gets its own body back.
fn strip_frag(msg: &mut Message, body: &Body) {
    if body.frag.is_none() {
        return;
    }
    match &body.phone {
        Some((ty, bytes)) => msg.set_body(bytes.clone(), ty.as_ref()),
        None => msg.set_body(Bytes::new(), None),
    }
}

#[cfg(test)]
mod tests;
