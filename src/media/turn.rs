//! A leg's TURN allocation (RFC 8656), for the calls no direct path carries (both nodes
//! behind NATs that map each destination apart): through rtc-turn's sans-IO client, over the
//! leg's own socket, so the allocation's relayed address is one more ICE candidate of the call.
//!
//! - Allocated ahead of the call with the spare leg (the warm case), with the long-term
//!   credentials of `[nat] turn`.
//! - Refreshed every 25 s at most (rtc-turn refreshes at half the lifetime otherwise): an idle
//!   allocation keeps its NAT mapping toward the server (the research's rtc-turn #162).
//! - A permission (§9) is asked for each far address the agent sends to, the first time it
//!   does; what the agent sends before the permission stands is dropped (its checks are
//!   retransmitted every Ta anyway).
//! - Released (a Refresh with lifetime 0, §7.2) when the call ends, so the server frees its
//!   port at once rather than at the lifetime's end.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc_shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc_turn::client::{Client, ClientConfig, Event};
use sansio::Protocol as _;
use tracing::{debug, info};

/// A TURN server, its address resolved, and the credentials for it.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnConfig {
    /// The server's address (UDP).
    pub server: SocketAddr,
    /// Long-term credential username (RFC 8489 §9.2).
    pub username: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("TurnConfig").field("server", &self.server).field("username", &self.username).finish()
    }
}

/// How often an allocation is refreshed at most.
const REFRESH_CAP: Duration = Duration::from_secs(25);

/// Where the allocation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnState {
    /// The Allocate is under way.
    Allocating,
    /// The server relays for us at this address.
    Allocated(SocketAddr),
    /// The server refused, or never answered.
    Failed,
    /// Released.
    Closed,
}

/// What the server relayed to us: from which far address, and the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed {
    /// The far address (the peer's, as the server saw it).
    pub peer: SocketAddr,
    /// The datagram.
    pub data: Vec<u8>,
}

/// One leg's allocation.
pub struct TurnLeg {
    client: Client,
    server: SocketAddr,
    local: SocketAddr,
    state: TurnState,
    /// Far addresses a permission was asked for.
    permitted: BTreeSet<SocketAddr>,
}

impl std::fmt::Debug for TurnLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnLeg").field("server", &self.server).field("state", &self.state).finish()
    }
}

impl TurnLeg {
    /// Starts allocating at `config`'s server from the leg at `local`; `seed` draws what the
    /// client's randomness needs.
    pub fn allocate(now: Instant, local: SocketAddr, config: &TurnConfig, seed: u64) -> Option<TurnLeg> {
        let client_config = ClientConfig {
            turn_serv_addr: config.server.to_string(),
            local_addr: local,
            transport_protocol: TransportProtocol::UDP,
            username: config.username.clone(),
            password: config.password.clone(),
            software: format!("p2psip/{}", env!("CARGO_PKG_VERSION")),
            rto_in_ms: 200,
            allocation_refresh_interval_cap: Some(REFRESH_CAP),
            ..ClientConfig::default()
        };
        let mut client = match Client::new(client_config, super::ice::seeded_provider(seed)) {
            Ok(c) => c,
            Err(e) => {
                debug!(error = %e, "TURN client not made");
                return None;
            }
        };
        if let Err(e) = client.allocate(now) {
            debug!(error = %e, "TURN Allocate not sent");
            return None;
        }
        Some(TurnLeg { client, server: config.server, local, state: TurnState::Allocating, permitted: BTreeSet::new() })
    }

    /// The server's address: datagrams from it are the client's.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Where it stands.
    pub fn state(&self) -> TurnState {
        self.state
    }

    /// Whether the allocation is being made or stands (not refused, not released).
    pub fn is_live(&self) -> bool {
        matches!(self.state, TurnState::Allocating | TurnState::Allocated(_))
    }

    /// The relayed address, once allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        match self.state {
            TurnState::Allocated(a) => Some(a),
            _ => None,
        }
    }

    /// A datagram from the server: answers to our requests, or what it relays to us.
    pub fn handle_datagram(&mut self, now: Instant, data: &[u8]) -> Vec<Relayed> {
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: self.server,
                transport_protocol: TransportProtocol::UDP,
                ecn: None,
            },
            message: BytesMut::from(data),
        };
        if let Err(e) = self.client.handle_read(msg) {
            debug!(error = %e, "TURN datagram not understood");
        }
        self.events()
    }

    fn events(&mut self) -> Vec<Relayed> {
        let mut out = Vec::new();
        while let Some(ev) = self.client.poll_event() {
            match ev {
                Event::AllocateResponse(_, relayed) => {
                    info!(server = %self.server, %relayed, "TURN allocation made");
                    self.state = TurnState::Allocated(relayed);
                }
                Event::AllocateError(_, e) => {
                    info!(server = %self.server, error = %e, "TURN allocation refused");
                    self.state = TurnState::Failed;
                }
                Event::TransactionTimeout(_) if self.state == TurnState::Allocating => {
                    info!(server = %self.server, "TURN server did not answer");
                    self.state = TurnState::Failed;
                }
                Event::DataIndicationOrChannelData(_, peer, data) => out.push(Relayed { peer, data: data.to_vec() }),
                _ => {}
            }
        }
        out
    }

    /// Sends `data` to `peer` through the relay: at once if a permission for it stands, else
    /// a permission is asked for and this datagram dropped.
    pub fn send(&mut self, now: Instant, peer: SocketAddr, data: &[u8]) {
        let Some(relayed) = self.relayed() else { return };
        let Ok(mut relay) = self.client.relay(relayed) else { return };
        if self.permitted.insert(peer) {
            if let Err(e) = relay.create_permission(now, peer) {
                debug!(%peer, error = %e, "TURN permission not asked");
            }
            return;
        }
        if let Err(e) = relay.send_to(now, data, peer) {
            debug!(%peer, error = %e, "not relayed yet");
        }
    }

    /// Time passed: refreshes and retransmissions.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = self.client.handle_timeout(now);
        self.events();
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        if matches!(self.state, TurnState::Failed | TurnState::Closed) {
            return None;
        }
        self.client.poll_timeout()
    }

    /// What to send to the server.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.client.poll_write().map(|m| m.message.to_vec())
    }

    /// Releases the allocation (a Refresh with lifetime 0, RFC 8656 §7.2).
    pub fn close(&mut self, now: Instant) {
        if let Some(relayed) = self.relayed() {
            if let Ok(mut relay) = self.client.relay(relayed) {
                let _ = relay.close(now);
            }
        }
        self.state = TurnState::Closed;
    }
}
