//! [`IceSession`] over `is` (str0m's ICE agent), the runner-up the research named: kept behind
//! the same trait so the two can be measured against each other on the same calls (`[media]
//! ice = "is"`; docs/dependencies.md, "ICE"). `is` nominates continuously: the controlling
//! side nominates the best pair that has succeeded at once and may switch to a better one
//! later, so it needs no wait before a relayed pair at all.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use is::stun::{StunMessage, StunPacket};
use is::{Candidate, CandidateKind as IsKind, IceAgent, IceAgentEvent, IceConnectionState, IceCreds, Protocol};
use rand::Rng;

use super::{
    fresh_credentials, usable_remote, CandidateKind, IceError, IceEvent, IceSession, IceTimers, IceTransmit,
    LocalCandidate, PathKind,
};

/// [`IceSession`] over `is`'s `IceAgent`.
pub struct IsIce {
    agent: IceAgent,
    ufrag: String,
    pwd: String,
    own_ip: Option<IpAddr>,
    /// Our candidates: (kind, address, base), to name the path's kind.
    locals: Vec<(CandidateKind, SocketAddr, SocketAddr)>,
    /// The far side's candidates: address and kind.
    remotes: Vec<(SocketAddr, IsKind)>,
    /// Where frames go now, and where they may come from.
    nominated: Option<(SocketAddr, SocketAddr)>,
    receive_from: Vec<SocketAddr>,
    connect_by: Option<Instant>,
    connect_timeout: Duration,
    closed: bool,
    events: std::collections::VecDeque<IceEvent>,
}

impl std::fmt::Debug for IsIce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IsIce").field("ufrag", &self.ufrag).field("state", &self.agent.state()).finish()
    }
}

impl IsIce {
    /// A session with fresh credentials drawn from `seed`.
    pub fn new(seed: u64, timers: &IceTimers) -> IsIce {
        let (mut rng, ufrag, pwd) = fresh_credentials(seed);
        let mut agent = IceAgent::new(IceCreds { ufrag: ufrag.clone(), pass: pwd.clone() });
        agent.set_timing_advance(timers.check_interval);
        agent.set_control_tie_breaker(rng.random());
        IsIce {
            agent,
            ufrag,
            pwd,
            own_ip: None,
            locals: Vec::new(),
            remotes: Vec::new(),
            nominated: None,
            receive_from: Vec::new(),
            connect_by: None,
            connect_timeout: timers.connect_timeout,
            closed: false,
            events: Default::default(),
        }
    }

    fn path_kind(&self, local: SocketAddr, remote: SocketAddr) -> PathKind {
        let local_kind = self.locals.iter().find(|(_, _, base)| *base == local).map(|(k, _, _)| *k);
        let remote_kind = self.remotes.iter().find(|(a, _)| *a == remote).map(|(_, k)| *k);
        if local_kind == Some(CandidateKind::Relay) || remote_kind == Some(IsKind::Relayed) {
            PathKind::Relay
        } else if matches!(remote_kind, Some(IsKind::ServerReflexive | IsKind::PeerReflexive) | None)
            || self.locals.iter().any(|(k, a, b)| *k == CandidateKind::Srflx && *b == local && a != b)
        {
            PathKind::Srflx
        } else {
            PathKind::Host
        }
    }

    fn drain(&mut self) {
        while let Some(ev) = self.agent.poll_event() {
            match ev {
                IceAgentEvent::NominatedSend { source, destination, .. }
                    if self.nominated != Some((source, destination)) =>
                {
                    self.nominated = Some((source, destination));
                    let path = self.path_kind(source, destination);
                    self.events.push_back(IceEvent::Selected { local: source, remote: destination, path });
                }
                IceAgentEvent::DiscoveredRecv { source, .. } => self.receive_from.push(source),
                IceAgentEvent::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                    self.events.push_back(IceEvent::Disconnected)
                }
                _ => {}
            }
        }
    }
}

impl IceSession for IsIce {
    fn credentials(&self) -> (String, String) {
        (self.ufrag.clone(), self.pwd.clone())
    }

    fn add_local(&mut self, c: LocalCandidate) -> Result<(), IceError> {
        let candidate = match c.kind {
            CandidateKind::Host => {
                self.own_ip.get_or_insert(c.addr.ip());
                Candidate::host(c.addr, "udp")
            }
            CandidateKind::Srflx => Candidate::server_reflexive(c.addr, c.base, "udp"),
            CandidateKind::Relay => Candidate::relayed(c.addr, c.base, "udp"),
        }
        .map_err(|e| IceError::Agent(e.to_string()))?;
        self.locals.push((c.kind, c.addr, c.base));
        // A server-reflexive candidate is only signalled: checks go from its base.
        if c.kind == CandidateKind::Srflx {
            return Ok(());
        }
        self.agent.add_local_candidate(candidate).map(drop).ok_or_else(|| IceError::Agent("candidate refused".into()))
    }

    fn local_candidates(&self) -> Vec<String> {
        let mut out: Vec<String> = self.agent.local_candidates().map(|c| strip_prefix(&c.to_sdp_string())).collect();
        for (kind, addr, base) in &self.locals {
            if *kind == CandidateKind::Srflx {
                if let Ok(c) = Candidate::server_reflexive(*addr, *base, "udp") {
                    out.push(strip_prefix(&c.to_sdp_string()));
                }
            }
        }
        out
    }

    fn start(
        &mut self,
        now: Instant,
        controlling: bool,
        ufrag: &str,
        pwd: &str,
        candidates: &[String],
    ) -> Result<(), IceError> {
        self.agent.set_controlling(controlling);
        self.agent.set_remote_credentials(IceCreds { ufrag: ufrag.into(), pass: pwd.into() });
        self.connect_by = Some(now + self.connect_timeout);
        for line in candidates {
            let c = Candidate::from_sdp_string(&format!("candidate:{line}"))
                .map_err(|e| IceError::Candidate(format!("{line}: {e}")))?;
            if !usable_remote(c.addr(), self.own_ip) {
                continue;
            }
            self.remotes.push((c.addr(), c.kind()));
            self.agent.add_remote_candidate(c);
        }
        self.agent.handle_timeout(now);
        self.drain();
        Ok(())
    }

    fn handle_stun(&mut self, now: Instant, local: SocketAddr, from: SocketAddr, datagram: &[u8]) {
        if self.closed {
            return;
        }
        let Ok(message) = StunMessage::parse(datagram) else { return };
        let packet = StunPacket { proto: Protocol::Udp, source: from, destination: local, message };
        if self.agent.accepts_message(&packet.message) {
            self.agent.handle_packet(now, packet);
        }
        self.drain();
    }

    fn accepts(&mut self, _now: Instant, local: SocketAddr, from: SocketAddr) -> bool {
        !self.closed
            && (self.nominated.is_some_and(|(l, r)| l == local && r == from) || self.receive_from.contains(&from))
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        self.agent.handle_timeout(now);
        self.drain();
        if self.nominated.is_none() && self.connect_by.is_some_and(|by| now >= by) {
            self.events.push_back(IceEvent::Failed);
            self.close();
        }
    }

    fn poll_transmit(&mut self) -> Option<IceTransmit> {
        let t = self.agent.poll_transmit()?;
        Some(IceTransmit { local: t.source, to: t.destination, bytes: t.contents.to_vec() })
    }

    fn poll_event(&mut self) -> Option<IceEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let deadline = self.connect_by.filter(|_| self.nominated.is_none());
        [self.agent.poll_timeout(), deadline].into_iter().flatten().min()
    }

    fn close(&mut self) {
        self.closed = true;
    }
}

/// `is` writes `candidate:…` (or `a=candidate:…`); our ICE part carries what follows.
fn strip_prefix(sdp: &str) -> String {
    sdp.trim().trim_start_matches("a=").trim_start_matches("candidate:").to_string()
}
