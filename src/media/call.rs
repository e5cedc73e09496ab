//! One call at one node: its leg toward the far node (ICE, then tunnel frames), its key
//! agreement, and its phone-side streams. The [`super::anchor::Anchor`] makes calls from the
//! signalling; a call relays datagrams between its phone side and its leg.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::ice::{IceEvent, IceSession, PathKind};
use super::keys::{KeyShare, Share};
use super::phone::PhoneStream;
use super::pool::{Leg, SocketId};
use super::tunnel::{self, Channel, Tunnel};

/// Which end of the call this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Our phone sent the INVITE: we control ICE (RFC 8445 §6.1.1).
    Caller,
    /// Our phone was called.
    Callee,
}

/// Where a call is, as `/status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallState {
    /// Waiting for the far node's description, its proof, or a path.
    Connecting,
    /// A path is up and the keys agreed: media flows.
    Active,
    /// The far node did not prove the identity the signalling claimed: no media, ever.
    Refused,
    /// No path formed, or consent was lost.
    Failed,
}

/// Datagram counters of one call (`/status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CallCounters {
    /// Datagrams from the far node delivered to our phone.
    pub packets_in: u64,
    /// Datagrams from our phone sent to the far node.
    pub packets_out: u64,
    /// Their payload bytes (phone datagrams, without the frame).
    pub bytes_in: u64,
    /// Their payload bytes.
    pub bytes_out: u64,
    /// Frames dropped: forged, replayed, or not on the selected pair.
    pub frames_dropped: u64,
}

/// What a call asks the daemon to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    /// From which socket.
    pub socket: SocketId,
    /// Which of its sockets (a pair's 0 RTP, 1 RTCP; a leg's 0).
    pub index: u8,
    /// To where.
    pub to: SocketAddr,
    /// The datagram.
    pub bytes: Vec<u8>,
}

/// One call's media at this node.
#[derive(Debug)]
pub struct Call {
    /// The Call-ID.
    pub call_id: String,
    /// Our end.
    pub role: Role,
    /// The caller's AoR (From of the INVITE).
    pub caller: String,
    /// The callee's AoR (To).
    pub callee: String,
    /// The socket toward the far node.
    pub leg: Leg,
    pub(super) ice: Box<dyn IceSession>,
    /// Our ephemeral key until the far share arrives.
    pub(super) key: Option<KeyShare>,
    /// Our credentials and share.
    pub(super) ours: Share,
    /// The ICE part we send (the same in every message of the call).
    pub(super) frag: Vec<u8>,
    /// The offer's share (the caller's), for checking the answer against.
    pub(super) offer: Option<Share>,
    pub(super) tunnel: Option<Tunnel>,
    /// The selected pair: our base, the far address, its kind.
    pub path: Option<(SocketAddr, SocketAddr, PathKind)>,
    /// The phone side, by m-line index.
    pub streams: Vec<PhoneStream>,
    /// Where it is.
    pub state: CallState,
    /// Unix time it began.
    pub started_unix: u64,
    /// When a datagram last went either way (or the call began).
    pub(super) last_packet: Instant,
    /// Counters.
    pub counters: CallCounters,
    /// A 2xx to the INVITE passed: the call is up for the phones.
    pub(super) answered: bool,
    /// A failed path was reported to the proxy.
    pub(super) reported: bool,
    /// When the anchor made the call (the INVITE crossed).
    pub(super) created: Instant,
    /// When the ICE checks began (the far description arrived).
    pub(super) checks_started: Option<Instant>,
    /// Milliseconds from the checks' start to the first selected pair.
    pub ice_ms: Option<u64>,
    /// Milliseconds from the call's making to the first 18x or 2xx our phone was handed
    /// (the caller's node: dial to ringing).
    pub ringing_ms: Option<u64>,
    /// Milliseconds from the call's making to the first datagram handed to our phone.
    pub first_media_ms: Option<u64>,
}

fn ms_since(then: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(then).as_millis()).unwrap_or(u64::MAX)
}

impl Call {
    /// Whether this call can relay now.
    fn ready(&self) -> bool {
        self.state == CallState::Active && self.tunnel.is_some() && self.path.is_some()
    }

    fn update_state(&mut self) {
        if self.state == CallState::Connecting && self.tunnel.is_some() && self.path.is_some() {
            self.state = CallState::Active;
        }
    }

    /// Sends `bytes` to `to` from `local`: the leg itself for host and server-reflexive pairs
    /// (RFC 8445 §6.1.2: from the base), or through the TURN server for the relayed address.
    fn send_from(&mut self, now: Instant, local: SocketAddr, to: SocketAddr, bytes: Vec<u8>, out: &mut VecDeque<Send>) {
        if local == self.leg.addr {
            out.push_back(Send { socket: self.leg.id, index: 0, to, bytes });
        } else if let Some(turn) = self.leg.turn.as_mut().filter(|t| t.relayed() == Some(local)) {
            turn.send(now, to, &bytes);
        }
    }

    /// What the TURN client has for its server goes out on the leg.
    fn drain_turn(&mut self, out: &mut VecDeque<Send>) {
        if let Some(turn) = self.leg.turn.as_mut() {
            while let Some(bytes) = turn.poll_transmit() {
                out.push_back(Send { socket: self.leg.id, index: 0, to: turn.server(), bytes });
            }
        }
    }

    /// Moves the ICE session's transmits and events out; the leg sends.
    pub(super) fn drive(&mut self, now: Instant, out: &mut VecDeque<Send>) {
        while let Some(t) = self.ice.poll_transmit() {
            self.send_from(now, t.local, t.to, t.bytes, out);
        }
        self.drain_turn(out);
        while let Some(ev) = self.ice.poll_event() {
            match ev {
                IceEvent::Selected { local, remote, path } => {
                    if self.ice_ms.is_none() {
                        self.ice_ms = self.checks_started.map(|t| ms_since(t, now));
                    }
                    self.path = Some((local, remote, path));
                    self.update_state();
                }
                IceEvent::Disconnected => {}
                IceEvent::Failed => {
                    if self.state != CallState::Refused {
                        self.state = CallState::Failed;
                    }
                }
            }
        }
    }

    /// The ICE part we send: our share and candidates, `signature` over the share, and our
    /// certificate.
    pub(super) fn our_frag(&self, signature: Vec<u8>, cert: Vec<u8>) -> Vec<u8> {
        super::frag::Frag { share: self.ours.clone(), candidates: self.ice.local_candidates(), signature, cert }
            .encode()
    }

    /// The ICE checks begin now.
    pub(super) fn checks_began(&mut self, now: Instant) {
        self.checks_started.get_or_insert(now);
    }

    /// A provisional or final answer went to our phone now.
    pub(super) fn answered_phone(&mut self, now: Instant) {
        if self.ringing_ms.is_none() {
            self.ringing_ms = Some(ms_since(self.created, now));
        }
    }

    /// Agrees the call's keys with the far node's share (already proven) and sets the tunnel:
    /// the context names the caller's and callee's ufrags by this node's role.
    pub(super) fn agree(&mut self, far: &super::keys::Share) -> Result<(), super::keys::KeyError> {
        let key = self.key.take().ok_or(super::keys::KeyError::BadShare)?;
        let (caller_ufrag, callee_ufrag, we_send) = match self.role {
            Role::Caller => (&self.ours.ufrag, &far.ufrag, tunnel::Direction::FromCaller),
            Role::Callee => (&far.ufrag, &self.ours.ufrag, tunnel::Direction::FromCallee),
        };
        let ctx = tunnel::KeyContext {
            call_id: &self.call_id,
            caller: &self.caller,
            callee: &self.callee,
            caller_ufrag,
            callee_ufrag,
        };
        let t = key.agree(&far.public, &ctx, we_send)?;
        self.set_tunnel(t);
        Ok(())
    }

    /// The tunnel is agreed.
    pub(super) fn set_tunnel(&mut self, tunnel: Tunnel) {
        self.tunnel = Some(tunnel);
        self.update_state();
    }

    /// A datagram on the leg from `from`: from the TURN server (its answers, or what it
    /// relays from the far node to our relayed address), or straight from the far node.
    pub(super) fn handle_leg(&mut self, now: Instant, from: SocketAddr, datagram: &[u8], out: &mut VecDeque<Send>) {
        let relayed = match self.leg.turn.as_mut() {
            Some(turn) if turn.server() == from => Some((turn.relayed(), turn.handle_datagram(now, datagram))),
            _ => None,
        };
        match relayed {
            Some((Some(local), data)) => {
                for r in data {
                    self.arrived(now, local, r.peer, &r.data, out);
                }
            }
            Some((None, _)) => {}
            None => self.arrived(now, self.leg.addr, from, datagram, out),
        }
        self.drive(now, out);
    }

    /// A datagram from the far node arrived at our `local` candidate (the leg, or the relay).
    fn arrived(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut VecDeque<Send>,
    ) {
        if crate::nat::stun::is_stun(datagram) {
            self.ice.handle_stun(now, local, from, datagram);
            return;
        }
        if !tunnel::is_frame(datagram) || self.state == CallState::Refused {
            return;
        }
        let Some(t) = self.tunnel.as_mut() else { return };
        let (channel, payload) = match t.open(datagram) {
            Ok(opened) => opened,
            Err(_) => {
                self.counters.frames_dropped += 1;
                return;
            }
        };
        // Authenticated: it refreshes consent only if it came over the selected pair.
        if !self.ice.accepts(now, local, from) {
            self.counters.frames_dropped += 1;
            return;
        }
        self.last_packet = now;
        let Some(stream) = self.streams.get(channel.stream as usize) else { return };
        let Some((index, to)) = stream.to_phone(channel.rtcp) else { return };
        self.counters.packets_in += 1;
        self.counters.bytes_in += payload.len() as u64;
        if self.first_media_ms.is_none() {
            self.first_media_ms = Some(ms_since(self.created, now));
        }
        out.push_back(Send { socket: stream.pair, index, to, bytes: payload });
    }

    /// A datagram on stream `stream`'s socket `index` from `from` (our phone, perhaps).
    pub(super) fn handle_phone(
        &mut self,
        now: Instant,
        stream: usize,
        index: u8,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut VecDeque<Send>,
    ) {
        let Some(s) = self.streams.get_mut(stream) else { return };
        let Some(rtcp) = s.from_phone(index, from, datagram) else { return };
        if !self.ready() || stream >= tunnel::MAX_STREAMS {
            return;
        }
        let (Some(t), Some((local, remote, _))) = (self.tunnel.as_mut(), self.path) else { return };
        let frame = t.seal(Channel { stream: stream as u8, rtcp }, datagram);
        self.last_packet = now;
        self.counters.packets_out += 1;
        self.counters.bytes_out += datagram.len() as u64;
        self.send_from(now, local, remote, frame, out);
        self.drain_turn(out);
    }

    /// When the call next needs time: its ICE session's or TURN client's deadline, or the
    /// idle limit.
    pub(super) fn poll_timeout(&mut self, idle: Duration) -> Option<Instant> {
        let turn = self.leg.turn.as_mut().and_then(|t| t.poll_timeout());
        [self.ice.poll_timeout(), turn, Some(self.last_packet + idle)].into_iter().flatten().min()
    }

    /// Time passed.
    pub(super) fn handle_timeout(&mut self, now: Instant, out: &mut VecDeque<Send>) {
        self.ice.handle_timeout(now);
        if let Some(t) = self.leg.turn.as_mut() {
            if t.poll_timeout().is_some_and(|at| at <= now) {
                t.handle_timeout(now);
            }
        }
        self.drive(now, out);
    }

    /// The call ends: ICE stops, the TURN allocation is released (its last words go out).
    pub(super) fn close(&mut self, now: Instant, out: &mut VecDeque<Send>) {
        self.ice.close();
        if let Some(t) = self.leg.turn.as_mut() {
            t.close(now);
        }
        self.drain_turn(out);
    }

    /// Whether a phone holds the call.
    pub fn held(&self) -> bool {
        self.streams.iter().any(PhoneStream::held)
    }

    /// Whether no datagram went either way for `idle` (a phone that vanished).
    pub(super) fn is_idle(&self, now: Instant, idle: Duration) -> bool {
        now >= self.last_packet + idle
    }

    /// Every socket the call holds: the leg and the pairs.
    pub(super) fn sockets(&self) -> impl Iterator<Item = SocketId> + '_ {
        std::iter::once(self.leg.id).chain(self.streams.iter().map(|s| s.pair))
    }
}

#[cfg(test)]
impl Call {
    /// The first stream's pair, for tests.
    pub(crate) fn clone_pair(&self) -> SocketId {
        self.streams[0].pair
    }
}
