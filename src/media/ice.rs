//! ICE between the two nodes of a call (RFC 8445), behind a small trait of ours so the agent
//! underneath can be swapped: [`IceSession`]. The one implementation, [`RtcIce`], wraps
//! rtc-ice (webrtc-rs/rtc, sans-IO; `docs/dependencies.md` says why).
//!
//! Sans-IO like the rest: the session takes `now`, the STUN datagrams that arrived and the
//! remote description, and gives back datagrams to send (from which local address, to which
//! remote one), events and its next deadline. The daemon owns the one UDP socket per call that
//! carries the checks and, afterwards, the tunnel's frames.
//!
//! Timers (RFC 8445 §14): checks paced every [`IceTimers::check_interval`] (Ta; §14.2 asks for
//! no less than 5 ms across all agents of a host); the controlling side nominates the best
//! direct pair (host, server- or peer-reflexive) as soon as it succeeds, so such a path on
//! sub-millisecond links is chosen within a few Ta. A relayed pair succeeds first when the
//! nodes sit behind two NATs (the direct pair needs a second round to punch through), so the
//! controlling agent nominates it only after [`relay_wait`]: two check rounds and four round
//! trips to the far node, as the signalling measured them (our INVITE to its answer), at most
//! 400 ms. That is the one wait, and it follows the path rather than a fixed time per
//! candidate type (rtc-ice's defaults hold a server-reflexive pair 500 ms and a relayed one
//! 2 s whatever the path). Consent (RFC 7675 §5.1): a Binding request
//! on the selected pair every [`IceTimers::consent_interval`]; the path counts as disconnected
//! after [`IceTimers::disconnected_timeout`] without an answer or an authenticated frame, and
//! failed after [`IceTimers::failed_timeout`] more (the caller reports frames through
//! [`IceSession::accepts`] only once they authenticated, which is why forged packets do not
//! keep a path alive). A path that never forms fails at [`IceTimers::connect_timeout`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rtc_ice::candidate::candidate_host::CandidateHostConfig;
use rtc_ice::candidate::candidate_relay::CandidateRelayConfig;
use rtc_ice::candidate::candidate_server_reflexive::CandidateServerReflexiveConfig;
use rtc_ice::candidate::{unmarshal_candidate, CandidateConfig, CandidateType};
use rtc_ice::crypto::{CryptoError, RTCCrypto, RTCCryptoProvider, RTCRandom};
use rtc_ice::mdns::MulticastDnsMode;
use rtc_ice::network_type::NetworkType;
use rtc_ice::state::ConnectionState;
use rtc_ice::{Agent, AgentConfig, Event};
use rtc_shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use sansio::Protocol as _;

/// Which way the path between the two nodes goes: the `path` of a call in `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    /// Host to host: the nodes reach each other's own addresses (one LAN, or public hosts).
    Host,
    /// Through at least one NAT's mapping, learned by STUN (or from the checks themselves).
    Srflx,
    /// Through a TURN relay (RFC 8656).
    Relay,
}

/// What kind of local candidate (RFC 8445 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateKind {
    /// The socket's own address.
    Host,
    /// The address a STUN server saw; sent from `base`.
    Srflx,
    /// A TURN allocation's relayed address; sent through the TURN server.
    Relay,
}

/// A candidate this node offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalCandidate {
    /// Its kind.
    pub kind: CandidateKind,
    /// The address the far node sends to.
    pub addr: SocketAddr,
    /// The local socket it is sent from (for a relay: the relayed address itself, which the
    /// daemon's TURN glue maps to its socket).
    pub base: SocketAddr,
}

/// Datagrams the session asks to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceTransmit {
    /// The local candidate's base: the socket, or a relayed address (through TURN).
    pub local: SocketAddr,
    /// Where to.
    pub to: SocketAddr,
    /// The STUN message.
    pub bytes: Vec<u8>,
}

/// What happened to the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IceEvent {
    /// A pair was selected (or a better one replaced it): frames go from `local` to `remote`.
    Selected {
        /// Our side of the pair (its base).
        local: SocketAddr,
        /// The far side.
        remote: SocketAddr,
        /// Which kind of path.
        path: PathKind,
    },
    /// Consent was lost for a while (RFC 7675 §5.1); frames may not arrive.
    Disconnected,
    /// No pair works (checks exhausted, or consent expired).
    Failed,
}

/// Why a description was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IceError {
    /// The agent refused it (its words).
    #[error("ICE: {0}")]
    Agent(String),
    /// A remote candidate line does not parse, or names an address we never send to.
    #[error("ICE candidate refused: {0}")]
    Candidate(String),
}

/// Check rounds the direct pairs get before a relayed pair may be nominated when the round
/// trip to the far node is not known. A hole punch between two NATs needs two (each side's
/// first check opens its own NAT for the other's second); five leave room for a lost check.
/// At Ta = 20 ms that is 100 ms, within the 500 ms a relayed path may take, and a path that
/// needs no relay is never held up by it.
pub const RELAY_ROUNDS: u32 = 5;

/// The wait before a relayed pair may be nominated by the controlling agent, from the round
/// trip the signalling measured: two check rounds and four round trips (a hole punch takes a
/// round and two round trips; the rest is margin), at most 400 ms so a relayed path stays
/// within its 500 ms target. With the round trip unknown, [`RELAY_ROUNDS`] rounds.
pub fn relay_wait(check_interval: Duration, rtt: Option<Duration>) -> Duration {
    match rtt {
        Some(rtt) => (check_interval * 2 + rtt * 4).min(Duration::from_millis(400)),
        None => check_interval * RELAY_ROUNDS,
    }
}

/// The timers of the ICE sessions, with why each default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IceTimers {
    /// Ta (RFC 8445 §14.2): how often a check round goes out while connecting. 20 ms keeps a
    /// sub-millisecond path under the 200 ms target with many rounds to spare, and stays well
    /// above the 5 ms floor for the few calls one laptop has.
    pub check_interval: Duration,
    /// Binding requests per pair before it is given up (at Ta apart, and doubled after…
    /// rtc-ice sends one per round): 25 rounds of 20 ms is half a second, the relay target.
    pub max_binding_requests: u16,
    /// RFC 7675 §5.1: consent checks on the selected pair (the RFC's 5 s ± 1 s is an upper
    /// figure; 2 s notices a vanished node sooner at ~150 B/s).
    pub consent_interval: Duration,
    /// No answer or authenticated frame for this long: `Disconnected`.
    pub disconnected_timeout: Duration,
    /// …and for this long more: `Failed` (RFC 7675 §5.1: 30 s in all).
    pub failed_timeout: Duration,
    /// No pair selected this long after the checks began: `Failed`. rtc-ice can stay in
    /// Checking after every pair failed, so the session keeps its own deadline.
    pub connect_timeout: Duration,
}

impl Default for IceTimers {
    fn default() -> IceTimers {
        IceTimers {
            check_interval: Duration::from_millis(20),
            max_binding_requests: 25,
            consent_interval: Duration::from_secs(2),
            disconnected_timeout: Duration::from_secs(5),
            failed_timeout: Duration::from_secs(25),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// One ICE session between this node and the far node of a call.
pub trait IceSession: std::fmt::Debug + Send {
    /// Our ufrag and password (RFC 8445 §5.3).
    fn credentials(&self) -> (String, String);
    /// Offers a candidate (host, server-reflexive, relayed).
    fn add_local(&mut self, candidate: LocalCandidate) -> Result<(), IceError>;
    /// Our candidates as `a=candidate` values (RFC 8839 §5.1).
    fn local_candidates(&self) -> Vec<String>;
    /// The round trip to the far node as the signalling measured it (our INVITE to its
    /// answer), known before the checks start: what the wait before a relayed pair is
    /// derived from. Agents without such a wait ignore it.
    fn set_round_trip(&mut self, _rtt: Duration) {}
    /// The far node's description arrived: checks begin. The INVITE's sender controls
    /// (RFC 8445 §6.1.1).
    fn start(
        &mut self,
        now: Instant,
        controlling: bool,
        ufrag: &str,
        pwd: &str,
        candidates: &[String],
    ) -> Result<(), IceError>;
    /// A STUN datagram that arrived on `local` (the socket, or a relayed address) from `from`.
    fn handle_stun(&mut self, now: Instant, local: SocketAddr, from: SocketAddr, datagram: &[u8]);
    /// Whether a non-STUN datagram from `from` on `local` is on the selected pair; call it only
    /// for a frame that authenticated: it refreshes consent.
    fn accepts(&mut self, now: Instant, local: SocketAddr, from: SocketAddr) -> bool;
    /// Time passed.
    fn handle_timeout(&mut self, now: Instant);
    /// The next datagram to send.
    fn poll_transmit(&mut self) -> Option<IceTransmit>;
    /// What happened.
    fn poll_event(&mut self) -> Option<IceEvent>;
    /// When to call [`handle_timeout`](Self::handle_timeout).
    fn poll_timeout(&mut self) -> Option<Instant>;
    /// Ends the session: no more checks or consent.
    fn close(&mut self);
}

/// rtc-ice's randomness (tie-breaker, candidate ids, restart credentials) from the session's
/// own seeded generator rather than the operating system's.
struct SeededRandom(std::sync::Mutex<ChaCha8Rng>);

impl RTCRandom for SeededRandom {
    fn fill(&self, output: &mut [u8]) -> Result<(), CryptoError> {
        let mut rng = self.0.lock().map_err(|_| CryptoError::RandomnessFailed)?;
        rng.fill_bytes(output);
        Ok(())
    }
}

/// ring for the crypto (HMAC-SHA1 of the checks, CRC32 fingerprints), our generator for
/// randomness.
struct Provider {
    crypto: rtc_ice::crypto::providers::RingCrypto,
    random: SeededRandom,
}

impl RTCCryptoProvider for Provider {
    fn name(&self) -> &'static str {
        "p2psip-ring-seeded"
    }

    fn crypto(&self) -> &dyn RTCCrypto {
        &self.crypto
    }

    fn random(&self) -> &dyn RTCRandom {
        &self.random
    }
}

/// The rtc crates' crypto on ring, with randomness from a generator seeded by `seed`.
pub(super) fn seeded_provider(seed: u64) -> Arc<dyn RTCCryptoProvider> {
    let random = SeededRandom(std::sync::Mutex::new(ChaCha8Rng::seed_from_u64(seed)));
    Arc::new(Provider { crypto: Default::default(), random })
}

/// rtc-ice's agent with our credentials and timers; a direct pair nominated as soon as it
/// succeeds, a relayed one after `relay_wait` (see the module's doc).
fn build_agent(
    now: Instant,
    ufrag: &str,
    pwd: &str,
    timers: &IceTimers,
    relay_wait: Duration,
    seed: u64,
) -> Result<Agent, IceError> {
    let config = AgentConfig {
        local_ufrag: ufrag.to_owned(),
        local_pwd: pwd.to_owned(),
        multicast_dns_mode: MulticastDnsMode::Disabled,
        multicast_dns_local_name: "p2psip.local".into(),
        candidate_types: vec![CandidateType::Host, CandidateType::ServerReflexive, CandidateType::Relay],
        network_types: vec![NetworkType::Udp4, NetworkType::Udp6],
        check_interval: timers.check_interval,
        max_binding_requests: Some(timers.max_binding_requests),
        keepalive_interval: Some(timers.consent_interval),
        disconnected_timeout: Some(timers.disconnected_timeout),
        failed_timeout: Some(timers.failed_timeout),
        host_acceptance_min_wait: Some(Duration::ZERO),
        srflx_acceptance_min_wait: Some(Duration::ZERO),
        prflx_acceptance_min_wait: Some(Duration::ZERO),
        relay_acceptance_min_wait: Some(relay_wait),
        ..AgentConfig::default()
    };
    Agent::new(now, Arc::new(config), seeded_provider(seed)).map_err(|e| IceError::Agent(e.to_string()))
}

/// [`IceSession`] over rtc-ice's `Agent`.
pub struct RtcIce {
    agent: Agent,
    ufrag: String,
    pwd: String,
    rng: ChaCha8Rng,
    timers: IceTimers,
    /// Our candidates as added (kind, address, base, id), to build the agent again with the
    /// relay wait the round trip gives.
    locals: Vec<(LocalCandidate, String)>,
    rtt: Option<Duration>,
    /// Our first host candidate's address: what remote candidates are judged against.
    own_ip: Option<IpAddr>,
    /// Our server-reflexive candidates: (base, mapped address).
    srflx: Vec<(SocketAddr, SocketAddr)>,
    /// When checks began, and the deadline for a pair to be selected.
    connect_by: Option<Instant>,
    connect_timeout: Duration,
    selected: bool,
    closed: bool,
    events: std::collections::VecDeque<IceEvent>,
}

impl std::fmt::Debug for RtcIce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtcIce").field("ufrag", &self.ufrag).field("state", &self.agent.state()).finish()
    }
}

const ICE_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn ice_string(rng: &mut ChaCha8Rng, len: usize) -> String {
    (0..len).map(|_| ICE_CHARS[rng.random_range(0..ICE_CHARS.len())] as char).collect()
}

/// Fresh credentials from `seed`: an 8-character ufrag and a 24-character password (48 and
/// 144 bits, above RFC 8445 §5.3's 24 and 128), and the generator, for what else the session
/// draws.
fn fresh_credentials(seed: u64) -> (ChaCha8Rng, String, String) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ufrag = ice_string(&mut rng, 8);
    let pwd = ice_string(&mut rng, 24);
    (rng, ufrag, pwd)
}

impl RtcIce {
    /// A session with fresh credentials drawn from `seed`: an 8-character ufrag and a
    /// 24-character password (48 and 144 bits, above RFC 8445 §5.3's 24 and 128).
    pub fn new(now: Instant, seed: u64, timers: &IceTimers) -> Result<RtcIce, IceError> {
        let (mut rng, ufrag, pwd) = fresh_credentials(seed);
        let agent = build_agent(now, &ufrag, &pwd, timers, relay_wait(timers.check_interval, None), rng.random())?;
        Ok(RtcIce {
            agent,
            ufrag,
            pwd,
            rng,
            timers: *timers,
            locals: Vec::new(),
            rtt: None,
            own_ip: None,
            srflx: Vec::new(),
            connect_by: None,
            connect_timeout: timers.connect_timeout,
            selected: false,
            closed: false,
            events: Default::default(),
        })
    }

    /// What kind of path a pair is. A check is sent from its base, so a node behind a NAT sees
    /// its own side as host; the path still crosses the NAT when one of our server-reflexive
    /// candidates has that base and the far address is not on a private network.
    fn path_kind(&self, local: &rtc_ice::candidate::Candidate, remote: &rtc_ice::candidate::Candidate) -> PathKind {
        use CandidateType::{PeerReflexive, Relay, ServerReflexive};
        let (l, r) = (local.candidate_type(), remote.candidate_type());
        if l == Relay || r == Relay {
            PathKind::Relay
        } else if matches!(l, ServerReflexive | PeerReflexive)
            || matches!(r, ServerReflexive | PeerReflexive)
            || (self.srflx.iter().any(|(base, mapped)| *base == local.base_addr() && mapped != base)
                && !is_private(remote.addr().ip()))
        {
            PathKind::Srflx
        } else {
            PathKind::Host
        }
    }

    fn fail(&mut self) {
        self.events.push_back(IceEvent::Failed);
        self.close();
    }

    fn drain_agent_events(&mut self) {
        while let Some(ev) = self.agent.poll_event() {
            match ev.event {
                Event::SelectedCandidatePairChange(local, remote) => {
                    let path = self.path_kind(&local, &remote);
                    self.selected = true;
                    self.events.push_back(IceEvent::Selected { local: local.base_addr(), remote: remote.addr(), path });
                }
                Event::ConnectionStateChange(ConnectionState::Disconnected) => {
                    self.events.push_back(IceEvent::Disconnected)
                }
                Event::ConnectionStateChange(ConnectionState::Failed) => self.events.push_back(IceEvent::Failed),
                _ => {}
            }
        }
    }
}

/// rtc-ice's candidate for ours, with candidate id `id`.
fn rtc_candidate(c: &LocalCandidate, id: &str) -> Result<rtc_ice::candidate::Candidate, IceError> {
    let base_config = CandidateConfig {
        candidate_id: id.to_owned(),
        network: "udp".into(),
        address: c.addr.ip().to_string(),
        port: c.addr.port(),
        component: 1,
        ..CandidateConfig::default()
    };
    match c.kind {
        CandidateKind::Host => CandidateHostConfig { base_config, ..Default::default() }.new_candidate_host(),
        CandidateKind::Srflx => CandidateServerReflexiveConfig {
            base_config,
            rel_addr: c.base.ip().to_string(),
            rel_port: c.base.port(),
            url: None,
        }
        .new_candidate_server_reflexive(),
        CandidateKind::Relay => {
            CandidateRelayConfig { base_config, rel_addr: c.base.ip().to_string(), rel_port: c.base.port(), url: None }
                .new_candidate_relay()
        }
    }
    .map_err(|e| IceError::Agent(e.to_string()))
}

/// Addresses a NAT does not hand out as public ones: RFC 1918, shared (RFC 6598), loopback,
/// link-local, unique-local IPv6.
fn is_private(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || (v4.octets()[0] == 100 && v4.octets()[1] & 0xc0 == 64)
        }
        IpAddr::V6(v6) => {
            v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00 || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

fn context(local: SocketAddr, peer: SocketAddr) -> TransportContext {
    TransportContext { local_addr: local, peer_addr: peer, transport_protocol: TransportProtocol::UDP, ecn: None }
}

/// Remote candidates we check: never port 0, and only addresses a next hop learned from the
/// network may have (docs/security.md, M8: no unspecified, multicast, broadcast or link-local
/// address; loopback only when our own candidate is on loopback), so a forged description
/// cannot turn our checks on services of our own machine or a broadcast.
fn usable_remote(addr: SocketAddr, own: Option<IpAddr>) -> bool {
    addr.port() != 0 && own.is_some_and(|own| crate::addr::next_hop_allowed(addr.ip(), own))
}

impl IceSession for RtcIce {
    fn credentials(&self) -> (String, String) {
        (self.ufrag.clone(), self.pwd.clone())
    }

    fn add_local(&mut self, c: LocalCandidate) -> Result<(), IceError> {
        match c.kind {
            CandidateKind::Host => {
                self.own_ip.get_or_insert(c.addr.ip());
            }
            CandidateKind::Srflx => self.srflx.push((c.base, c.addr)),
            CandidateKind::Relay => {}
        }
        let id = ice_string(&mut self.rng, 16);
        self.agent
            .add_local_candidate(rtc_candidate(&c, &id)?)
            .map(drop)
            .map_err(|e| IceError::Agent(e.to_string()))?;
        self.locals.push((c, id));
        Ok(())
    }

    fn set_round_trip(&mut self, rtt: Duration) {
        self.rtt = Some(rtt);
    }

    fn local_candidates(&self) -> Vec<String> {
        self.agent.get_local_candidates().iter().map(|c| c.marshal()).collect()
    }

    fn start(
        &mut self,
        now: Instant,
        controlling: bool,
        ufrag: &str,
        pwd: &str,
        candidates: &[String],
    ) -> Result<(), IceError> {
        // Only the controlling agent nominates: its relay wait follows the measured round trip.
        if controlling && self.rtt.is_some() {
            let wait = relay_wait(self.timers.check_interval, self.rtt);
            let mut agent = build_agent(now, &self.ufrag, &self.pwd, &self.timers, wait, self.rng.random())?;
            for (c, id) in &self.locals {
                agent.add_local_candidate(rtc_candidate(c, id)?).map_err(|e| IceError::Agent(e.to_string()))?;
            }
            self.agent = agent;
        }
        self.agent
            .start_connectivity_checks(now, controlling, ufrag.to_string(), pwd.to_string())
            .map_err(|e| IceError::Agent(e.to_string()))?;
        self.connect_by = Some(now + self.connect_timeout);
        for line in candidates {
            let c = unmarshal_candidate(line).map_err(|e| IceError::Candidate(format!("{line}: {e}")))?;
            if c.network_type() != NetworkType::Udp4 && c.network_type() != NetworkType::Udp6 {
                continue;
            }
            if !usable_remote(c.addr(), self.own_ip) {
                tracing::debug!(candidate = %line, "remote candidate not checked: not an address to send media to");
                continue;
            }
            self.agent.add_remote_candidate(c).map_err(|e| IceError::Candidate(e.to_string()))?;
        }
        self.agent.handle_timeout(now).map_err(|e| IceError::Agent(e.to_string()))?;
        self.drain_agent_events();
        Ok(())
    }

    fn handle_stun(&mut self, now: Instant, local: SocketAddr, from: SocketAddr, datagram: &[u8]) {
        if self.closed {
            return;
        }
        let msg = TaggedBytesMut { now, transport: context(local, from), message: BytesMut::from(datagram) };
        // A check that fails to parse or authenticate is the sender's problem, not ours.
        let _ = self.agent.handle_read(msg);
        self.drain_agent_events();
    }

    fn accepts(&mut self, now: Instant, local: SocketAddr, from: SocketAddr) -> bool {
        !self.closed && self.agent.is_valid_non_stun_traffic(now, context(local, from))
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        let _ = self.agent.handle_timeout(now);
        self.drain_agent_events();
        if !self.selected && self.connect_by.is_some_and(|by| now >= by) {
            self.fail();
        }
    }

    fn poll_transmit(&mut self) -> Option<IceTransmit> {
        let out = self.agent.poll_write()?;
        Some(IceTransmit { local: out.transport.local_addr, to: out.transport.peer_addr, bytes: out.message.to_vec() })
    }

    fn poll_event(&mut self) -> Option<IceEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let deadline = self.connect_by.filter(|_| !self.selected);
        [self.agent.poll_timeout(), deadline].into_iter().flatten().min()
    }

    fn close(&mut self) {
        self.closed = true;
        let _ = self.agent.close();
    }
}

mod str0m_is;
pub use str0m_is::IsIce;

/// Which agent the sessions use (`[media] ice`): rtc-ice (the default) or `is`, kept so that
/// the two can be measured against each other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentKind {
    /// webrtc-rs's rtc-ice.
    #[default]
    RtcIce,
    /// str0m's `is`.
    Is,
}

/// A new session of `kind` with credentials from `seed`.
pub fn new_session(
    kind: AgentKind,
    now: Instant,
    seed: u64,
    timers: &IceTimers,
) -> Result<Box<dyn IceSession>, IceError> {
    Ok(match kind {
        AgentKind::RtcIce => Box::new(RtcIce::new(now, seed, timers)?),
        AgentKind::Is => Box::new(IsIce::new(seed, timers)),
    })
}

#[cfg(test)]
mod tests;
