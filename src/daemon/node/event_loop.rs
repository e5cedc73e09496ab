//! The node's one event loop. It owns the [`Peer`] and waits on everything that can feed it:
//! datagrams on both UDP sockets, new TCP connections on both listeners, frames and closes
//! from connection tasks, the peer's next deadline, status queries, and shutdown. After each
//! input it does what [`Peer::poll_output`] asks: transmits onto the right socket or
//! connection, reports to whoever waits on them, and the next deadline.
//!
//! TCP sending follows RFC 3261 §18.2.2: on the connection named in the transmit if it is
//! still open, else on any open connection to the same remote, else on a new one.
//!
//! The peer's events are drained after every turn; a `LookupDone` answers the HTTP lookup
//! that started it. On shutdown the node leaves the overlay and keeps serving overlay
//! datagrams until its neighbours have answered or [`LEAVE_TIMEOUT`] has passed.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, trace, warn};

use super::connection::{self, CloseReason, ConnEvent, OUTGOING_QUEUE};
use super::listeners::Listeners;
use super::media::MediaSockets;
use crate::daemon::http::query::{LookupAnswer, Query};
use crate::daemon::http::status::{self, NodeInfo, Status, Transactions};
use crate::daemon::DaemonError;
use crate::identity::Aor;
use crate::media::anchor::MediaOutput;
use crate::overlay::{Event, LookupId, NodeId, NodeState};
use crate::peer::{
    ConnectionId, Endpoint, Input, InputBacklog, Listener, Output, Peer, PeerEvent, RoleEvent, StorageEvent,
    StorageOpId, Transmit, Transport,
};
use crate::sip::framing::Frame;
use crate::store::RecordKind;

/// The largest UDP payload; the peer applies the configured (smaller) limit and counts drops.
const UDP_BUFFER: usize = 65_535;
/// Connection events waiting for the loop; connection tasks pause reading when it is full.
const EVENT_QUEUE: usize = 1024;
/// Datagrams read from one UDP socket in a row once it is readable, before the loop looks at
/// its other inputs and timers again. Reading until the socket would block saves a trip
/// through the reactor per datagram under load; the bound keeps timers and the other socket
/// served.
const UDP_BURST: usize = 64;
/// How long a leaving node waits for its neighbours to acknowledge (dSIP §6.5).
pub(crate) const LEAVE_TIMEOUT: Duration = Duration::from_secs(1);
/// TCP connections one listener holds at once; beyond it new ones are closed at accept
/// (docs/security.md, H3). Well below a default descriptor limit of 1024 per listener
/// pair, with room for redb, the sockets and outbound connections.
pub(crate) const MAX_CONNECTIONS_PER_LISTENER: usize = 400;
/// TCP connections from one IPv4 address or IPv6 /64 on one listener (a NAT may hide a few
/// phones or nodes behind one address, not hundreds).
pub(crate) const MAX_CONNECTIONS_PER_SOURCE: usize = 32;
/// After a failed accept (out of descriptors) that listener is not polled for this long,
/// so the loop does not spin on a socket that stays readable.
const ACCEPT_PAUSE: Duration = Duration::from_millis(250);
/// At most one warning per this interval for each kind of TCP refusal.
const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// Where an HTTP lookup's answer goes; the HTTP handler may have given up waiting.
type Reply = oneshot::Sender<Result<LookupAnswer, String>>;

/// TCP refusals, for `/status` (`tcp` in the JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TcpCounters {
    /// Connections open or opening now.
    pub open: usize,
    /// Accepted connections closed at once: the listener's cap was reached.
    pub refused_listener_cap: u64,
    /// Accepted connections closed at once: their source address had too many already.
    pub refused_source_cap: u64,
    /// `accept()` failures (usually no descriptors left); each pauses that listener.
    pub accept_errors: u64,
    /// Connections closed on a deadline: no first message, a message left unfinished, idle,
    /// or a remote that does not read.
    pub timed_out: u64,
}

/// An open (or opening) TCP connection, as the loop sees it.
struct Connection {
    listener: Listener,
    remote: SocketAddr,
    /// Bytes to write; dropping it tells the connection task to close.
    outgoing: mpsc::Sender<Bytes>,
}

pub(crate) struct EventLoop {
    peer: Peer,
    listeners: Listeners,
    info: NodeInfo,
    started: Instant,
    connections: BTreeMap<ConnectionId, Connection>,
    next_connection: u64,
    events_tx: mpsc::Sender<ConnEvent>,
    events: mpsc::Receiver<ConnEvent>,
    queries: mpsc::Receiver<Query>,
    /// HTTP lookups waiting for their `LookupDone`.
    lookups: BTreeMap<LookupId, (Instant, Reply)>,
    /// HTTP lookups of an AoR waiting for their fetch.
    fetches: BTreeMap<StorageOpId, (Instant, String, Reply)>,
    tcp: TcpCounters,
    /// Until when each listener's accept is paused (overlay, proxy).
    accept_paused: [Option<Instant>; 2],
    /// When each kind of TCP warning was last logged.
    warned: BTreeMap<&'static str, Instant>,
    /// What stopped the node, when something the user asked for cannot be (`--role peer`
    /// behind a NAT): [`EventLoop::run`] returns it.
    fatal: Option<DaemonError>,
    /// The media anchor's sockets.
    media: MediaSockets,
    /// DNS for requests to other SIP domains (`None`: it could not start; they get 404).
    dns: Option<Arc<hickory_resolver::TokioResolver>>,
    resolved_tx: mpsc::Sender<super::dns::Resolved>,
    resolved: mpsc::Receiver<super::dns::Resolved>,
    /// The node's mDNS announcement and what it hears on the LAN.
    lan: Option<super::mdns::Lan>,
    /// Started without `--join`: whether to join nodes heard on the LAN or start the ring.
    lan_join: Option<crate::discovery::LanJoin>,
}

impl EventLoop {
    pub(crate) fn new(
        peer: Peer,
        listeners: Listeners,
        info: NodeInfo,
        queries: mpsc::Receiver<Query>,
        media_first_port: u16,
        dns: Option<Arc<hickory_resolver::TokioResolver>>,
    ) -> EventLoop {
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (resolved_tx, resolved) = mpsc::channel(EVENT_QUEUE);
        EventLoop {
            peer,
            listeners,
            info,
            started: Instant::now(),
            connections: BTreeMap::new(),
            next_connection: 0,
            events_tx,
            events,
            queries,
            lookups: BTreeMap::new(),
            fetches: BTreeMap::new(),
            tcp: TcpCounters::default(),
            accept_paused: [None, None],
            warned: BTreeMap::new(),
            fatal: None,
            media: MediaSockets::new(media_first_port),
            dns,
            resolved_tx,
            resolved,
            lan: None,
            lan_join: None,
        }
    }

    /// Announces the node on the LAN; with `deciding`, a node started without `--join`, it
    /// first listens there for nodes of its overlay (`crate::discovery`).
    pub(crate) fn with_lan(mut self, lan: super::mdns::Lan, deciding: Option<crate::discovery::LanJoin>) -> EventLoop {
        self.lan = Some(lan);
        self.lan_join = deciding;
        self
    }

    /// Acts on the LAN decision once it is taken: join the nodes heard, or be the ring.
    /// Returns when to decide again, and whether it acted (the peer has output to drive).
    fn lan_step(&mut self) -> (Option<Instant>, bool) {
        let Some(join) = self.lan_join.as_mut() else { return (None, false) };
        // A node listening is a ring of one meanwhile: others that found it may have joined
        // it already, and then it is their ring and joins nobody.
        let chord = self.peer.chord();
        if chord.state() != NodeState::Alone || !chord.successors().is_empty() {
            info!("nodes joined this one while it listened on the local network: it stays on their ring");
            if let Some(lan) = self.lan.as_mut() {
                lan.set_on_ring();
            }
            self.lan_join = None;
            return (None, false);
        }
        match join.decide(Instant::now()) {
            crate::discovery::Decision::Wait(at) => return (Some(at), false),
            crate::discovery::Decision::Join(nodes) => {
                info!(join = ?nodes, "joining the overlay through nodes found on the local network (mDNS)");
                self.peer.join(Instant::now(), nodes);
            }
            crate::discovery::Decision::StartRing => {
                info!("no node of this overlay on the local network (mDNS): this node starts the ring");
                if let Some(lan) = self.lan.as_mut() {
                    lan.set_on_ring();
                }
            }
        }
        self.lan_join = None;
        (None, true)
    }

    fn accepting(&self, listener: Listener) -> bool {
        self.accept_paused[listener.index()].is_none_or(|until| Instant::now() >= until)
    }

    /// Logs `message` at most once per [`WARN_INTERVAL`] for `kind`.
    fn warn_sometimes(&mut self, kind: &'static str, message: impl FnOnce()) {
        let now = Instant::now();
        if self.warned.get(kind).is_none_or(|t| now.saturating_duration_since(*t) >= WARN_INTERVAL) {
            self.warned.insert(kind, now);
            message();
        }
    }

    /// Runs until `shutdown` completes, then leaves the overlay. Returning drops the listeners
    /// and every connection's queue, which closes the sockets.
    pub(crate) async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
        let mut overlay_buf = vec![0u8; UDP_BUFFER];
        let mut proxy_buf = vec![0u8; UDP_BUFFER];
        // Re-armed to the peer's deadline on every turn; only polled when there is one.
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        tokio::pin!(shutdown);
        // What the peer queued before the loop started (the join) goes out now, not at its
        // first retransmission.
        let mut wake = self.drive().await;
        loop {
            // A paused accept wakes the loop when the pause ends.
            let resume = self.accept_paused.iter().flatten().min().copied();
            let (decide, acted) = self.lan_step();
            if acted {
                // The join it started (or nothing, for a ring of its own) goes out now.
                wake = self.drive().await;
            }
            let deadline = [wake, resume, decide].into_iter().flatten().min();
            if let Some(at) = deadline {
                sleep.as_mut().reset(at.into());
            }
            // Each branch notes when its work started: the admission control's load signal
            // (`Input::LoopTurn`) is the share of time the loop works or has input waiting.
            // It also notes what the turn saw of its input queue: with the busy share, a queue
            // that never empties tells overload from a loop near capacity.
            let (started, backlog) = tokio::select! {
                () = &mut shutdown => break,
                r = self.listeners.overlay.udp.recv_from(&mut overlay_buf) => {
                    let t = Instant::now();
                    self.on_datagram(Listener::Overlay, r, &overlay_buf);
                    (t, self.udp_burst(Listener::Overlay, &mut overlay_buf).await)
                }
                r = self.listeners.proxy.udp.recv_from(&mut proxy_buf) => {
                    let t = Instant::now();
                    self.on_datagram(Listener::Proxy, r, &proxy_buf);
                    (t, self.udp_burst(Listener::Proxy, &mut proxy_buf).await)
                }
                r = self.listeners.overlay.tcp.accept(), if self.accepting(Listener::Overlay) => {
                    (timed(|| self.on_accept(Listener::Overlay, r)), InputBacklog::NotRead)
                }
                r = self.listeners.proxy.tcp.accept(), if self.accepting(Listener::Proxy) => {
                    (timed(|| self.on_accept(Listener::Proxy, r)), InputBacklog::NotRead)
                }
                Some(event) = self.events.recv() => {
                    let t = timed(|| self.on_conn_event(event));
                    // Frames from TCP connections wait in the event queue.
                    let backlog = match self.events.len() {
                        0 => InputBacklog::Emptied,
                        n if n >= UDP_BURST => InputBacklog::Left,
                        _ => InputBacklog::NotRead,
                    };
                    (t, backlog)
                }
                Some(d) = self.media.rx.recv() => {
                    let t = Instant::now();
                    self.peer.handle_input(t, Input::Media(d.into()));
                    (t, self.media_burst().await)
                }
                Some(query) = self.queries.recv() => (timed(|| self.on_query(query)), InputBacklog::NotRead),
                Some(event) = next_lan(&mut self.lan) => (timed(|| self.on_lan(event)), InputBacklog::NotRead),
                Some((sid, result)) = self.resolved.recv() => {
                    (timed(|| self.peer.handle_input(Instant::now(), Input::Resolved { sid, result })), InputBacklog::NotRead)
                }
                () = &mut sleep, if deadline.is_some() => {
                    (timed(|| self.peer.handle_input(Instant::now(), Input::Timeout)), InputBacklog::NotRead)
                }
            };
            self.drive().await;
            self.peer.handle_input(Instant::now(), Input::LoopTurn { started, backlog });
            wake = self.drive().await;
            if self.fatal.is_some() {
                break;
            }
        }
        self.leave(&mut overlay_buf).await;
        if let Some(lan) = self.lan.take() {
            lan.stop();
        }
        self.fatal.take().map_or(Ok(()), Err)
    }

    /// Tells the neighbours we go, and serves overlay datagrams until they have answered
    /// (the core reports `Left`) or [`LEAVE_TIMEOUT`] passes.
    async fn leave(&mut self, buf: &mut [u8]) {
        let started = Instant::now();
        self.peer.leave(started);
        let mut wake = self.drive().await;
        let give_up = tokio::time::sleep(LEAVE_TIMEOUT);
        tokio::pin!(give_up);
        while self.peer.chord().state() != NodeState::Left {
            let deadline = wake.unwrap_or(started + LEAVE_TIMEOUT);
            tokio::select! {
                () = &mut give_up => break,
                r = self.listeners.overlay.udp.recv_from(buf) => self.on_datagram(Listener::Overlay, r, buf),
                () = tokio::time::sleep_until(deadline.into()) => self.peer.handle_input(Instant::now(), Input::Timeout),
            }
            wake = self.drive().await;
        }
        info!(state = status::state_name(self.peer.chord().state()), elapsed = ?started.elapsed(), "left the overlay");
    }

    fn on_query(&mut self, query: Query) {
        match query {
            // The HTTP handler may have given up waiting; nothing to do then.
            Query::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Query::Messages(reply) => {
                let _ = reply.send(self.peer.messages());
            }
            Query::Lookup { key, reply } => {
                // An AoR on a node that stores records: fetch its registration from every
                // replica place.
                if let (Ok(aor), Some(_)) = (Aor::parse(&key), self.peer.replicas()) {
                    if let Some(op) = self.peer.fetch(Instant::now(), RecordKind::Registration, aor.as_str()) {
                        debug!(%aor, op = op.0, "record lookup requested over HTTP");
                        self.fetches.insert(op, (Instant::now(), aor.to_string(), reply));
                        return;
                    }
                }
                let key = NodeId::from_user_key(&key, self.peer.chord().config().id_hash);
                let id = self.peer.lookup(Instant::now(), key);
                debug!(%key, lookup = id.0, "lookup requested over HTTP");
                self.lookups.insert(id, (Instant::now(), reply));
            }
        }
    }

    /// Does what the peer asks, in order: sends each transmit (over UDP, or on the TCP
    /// connection it names or one to its address), answers whoever waits on a report, until
    /// the peer has nothing more; returns when it next wants [`Input::Timeout`].
    async fn drive(&mut self) -> Option<Instant> {
        loop {
            match self.peer.poll_output() {
                Output::Transmit(t) => self.send(t).await,
                Output::Event(PeerEvent::Storage(event)) => self.on_storage_event(event),
                Output::Event(PeerEvent::Overlay(event)) => self.on_overlay_event(event),
                Output::Event(PeerEvent::Role(event)) => self.on_role_event(event),
                Output::Event(PeerEvent::Delivered(entry)) => {
                    // Kept durably: after a restart, the listing that may still show the message
                    // (its tombstone not yet everywhere) delivers nothing twice.
                    if let Err(e) = crate::daemon::files::mailbox::append_delivered(&self.info.data_dir, &entry) {
                        warn!(error = %e, "could not keep the delivery log; a restart may deliver this message again");
                    }
                }
                Output::Event(PeerEvent::Resolve(request)) => self.on_resolve(request),
                Output::Media(m) => self.on_media(m),
                Output::Timeout(at) => return at,
            }
        }
    }

    /// Does what the media anchor asks: opens (and reports back), sends, closes.
    fn on_media(&mut self, m: MediaOutput) {
        match m {
            MediaOutput::Open { socket, kind, ip, range } => {
                let opened = self.media.open(socket, kind, ip, range);
                self.peer.handle_input(Instant::now(), Input::Media(opened));
            }
            MediaOutput::Send(s) => self.media.send(s.socket, s.index, s.to, &s.bytes),
            MediaOutput::Close { socket } => self.media.close(socket),
        }
    }

    /// After one media datagram: the others already queued, up to [`UDP_BURST`], before the
    /// loop looks at its other inputs.
    async fn media_burst(&mut self) -> InputBacklog {
        for _ in 0..UDP_BURST {
            self.drive().await;
            match self.media.rx.try_recv() {
                Ok(d) => self.peer.handle_input(Instant::now(), Input::Media(d.into())),
                Err(_) => return InputBacklog::Emptied,
            }
        }
        InputBacklog::Left
    }

    fn on_role_event(&mut self, event: RoleEvent) {
        match event {
            RoleEvent::Decided { role, public } => {
                info!(role = role.as_str(), public = ?public, node_id = %self.peer.node_id(), "role decided");
            }
            // `--role peer` and no dial-back: a clear error, and the node stops.
            RoleEvent::PeerRefused { mapped, asked } => {
                let port = self.peer.config().overlay_addr.port();
                self.fatal = Some(DaemonError::NotReachable { mapped, asked, port });
            }
        }
    }

    fn on_overlay_event(&mut self, event: Event) {
        match event {
            Event::LookupDone { id, key, result, path, confirmations } => {
                debug!(%key, lookup = id.0, ?result, hops = path.len(), confirmations, "lookup done");
                if let Some((asked, reply)) = self.lookups.remove(&id) {
                    let answer = result
                        .map(|node| LookupAnswer::new(key, &node, &path, confirmations).timed(asked))
                        .map_err(|e| format!("lookup of {key} failed: {e}"));
                    let _ = reply.send(answer);
                }
            }
            Event::Joined { .. } => {
                if let Some(lan) = self.lan.as_mut() {
                    lan.set_on_ring();
                }
                debug!(event = ?event, "overlay event");
            }
            other => debug!(event = ?other, "overlay event"),
        }
    }

    /// What mDNS heard: counted toward the LAN decision while it is open.
    fn on_lan(&mut self, event: super::mdns::LanEvent) {
        let Some(join) = self.lan_join.as_mut() else { return };
        match event {
            super::mdns::LanEvent::Heard(h) => {
                debug!(addr = %h.addr, on_ring = h.on_ring, "node of this overlay heard on the LAN");
                join.heard(h);
            }
            super::mdns::LanEvent::Gone(id) => join.gone(id),
        }
    }

    fn on_storage_event(&mut self, event: StorageEvent) {
        match event {
            StorageEvent::Fetched { op, newest, places, .. } => {
                if let Some((asked, aor, reply)) = self.fetches.remove(&op) {
                    let answer = LookupAnswer::for_record(&aor, newest.as_ref(), &places);
                    let _ = reply.send(answer.map(|a| a.timed(asked)));
                }
            }
            StorageEvent::Stored { kind, key, places, .. } => {
                let stored = places.iter().filter(|p| p.valid).count();
                info!(?kind, %key, stored, places = places.len(), "record stored");
            }
            StorageEvent::Listed { key, records, .. } => debug!(%key, records = records.len(), "mailbox listed"),
        }
    }

    fn on_datagram(&mut self, listener: Listener, r: io::Result<(usize, SocketAddr)>, buf: &[u8]) {
        match r {
            Ok((n, remote)) => {
                let from = Endpoint { listener, transport: Transport::Udp, remote, conn: None };
                self.peer.handle_input(Instant::now(), Input::receive(from, Bytes::copy_from_slice(&buf[..n])));
            }
            // E.g. ICMP port unreachable from an earlier send, reported on this socket.
            Err(e) => debug!(?listener, error = %e, "UDP receive error"),
        }
    }

    /// After one datagram from `listener`'s socket: answers it, then reads and answers whatever
    /// else is already queued on that socket (up to [`UDP_BURST`] datagrams) without going back
    /// to the reactor. A read that would block clears the socket's readiness, so the next
    /// `recv_from` waits for new data. Reports whether the burst read the socket empty.
    async fn udp_burst(&mut self, listener: Listener, buf: &mut [u8]) -> InputBacklog {
        for _ in 0..UDP_BURST {
            self.drive().await;
            let r = self.listeners.face(listener).udp.try_recv_from(buf);
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return InputBacklog::Emptied,
                r => self.on_datagram(listener, r, buf),
            }
        }
        InputBacklog::Left
    }

    fn on_accept(&mut self, listener: Listener, r: io::Result<(TcpStream, SocketAddr)>) {
        self.accept_paused[listener.index()] = None;
        match r {
            Ok((stream, remote)) => {
                let on_listener = self.connections.values().filter(|c| c.listener == listener);
                let group = crate::addr::source_group(remote.ip());
                let (mut total, mut same_source) = (0, 0);
                for c in on_listener {
                    total += 1;
                    same_source += usize::from(crate::addr::source_group(c.remote.ip()) == group);
                }
                if total >= MAX_CONNECTIONS_PER_LISTENER {
                    self.tcp.refused_listener_cap += 1;
                    self.warn_sometimes("listener cap", || {
                        warn!(
                            ?listener,
                            cap = MAX_CONNECTIONS_PER_LISTENER,
                            "TCP connection limit reached; closing new ones"
                        )
                    });
                    return; // dropping the stream closes it
                }
                if same_source >= MAX_CONNECTIONS_PER_SOURCE {
                    self.tcp.refused_source_cap += 1;
                    self.warn_sometimes("source cap", || {
                        warn!(?listener, %remote, cap = MAX_CONNECTIONS_PER_SOURCE, "too many TCP connections from one source")
                    });
                    return;
                }
                let (id, rx) = self.add_connection(listener, remote);
                debug!(?listener, %remote, conn = id.0, "TCP connection accepted");
                tokio::spawn(connection::serve(id, stream, rx, self.events_tx.clone()));
            }
            // Usually out of file descriptors: the socket stays readable, so pause this
            // listener instead of spinning, and say so once a minute, not once a turn.
            Err(e) => {
                self.tcp.accept_errors += 1;
                self.accept_paused[listener.index()] = Some(Instant::now() + ACCEPT_PAUSE);
                self.warn_sometimes("accept", || warn!(?listener, error = %e, "TCP accept failed; pausing accepts"));
            }
        }
    }

    fn on_conn_event(&mut self, event: ConnEvent) {
        let now = Instant::now();
        match event {
            ConnEvent::Frame { id, frame } => {
                // Frames still in flight from a connection the loop already dropped are stale.
                let Some(c) = self.connections.get(&id) else { return };
                let from = endpoint(id, c);
                match frame {
                    Frame::Message(data) => self.peer.handle_input(now, Input::Receive { from, data }),
                    Frame::Ping => self.peer.handle_input(now, Input::Ping { from }),
                    Frame::Pong => self.peer.handle_input(now, Input::Pong { from }),
                }
            }
            ConnEvent::Closed { id, reason } => {
                let Some(c) = self.connections.remove(&id) else { return };
                let from = endpoint(id, &c);
                self.peer.handle_input(now, Input::StreamClosed { from });
                match reason {
                    CloseReason::Framing(error) => self.peer.handle_input(now, Input::FramingError { from, error }),
                    CloseReason::Eof | CloseReason::Local => {
                        debug!(remote = %c.remote, conn = id.0, "TCP connection closed")
                    }
                    CloseReason::Io(e) => debug!(remote = %c.remote, conn = id.0, error = %e, "TCP connection failed"),
                    CloseReason::ConnectFailed(e) => {
                        debug!(remote = %c.remote, conn = id.0, error = %e, "TCP connect failed; messages dropped")
                    }
                    CloseReason::TimedOut(why) => {
                        self.tcp.timed_out += 1;
                        debug!(remote = %c.remote, conn = id.0, why, "TCP connection closed on a deadline")
                    }
                }
            }
        }
    }

    async fn send(&mut self, t: Transmit) {
        match t.to.transport {
            Transport::Udp if t.to.listener == Listener::OneShot => {
                let family = self.listeners.overlay.addr;
                if let Err(e) = send_one_shot(family, &t.data, t.to.remote) {
                    debug!(to = %t.to.remote, error = %e, "one-shot UDP send failed");
                }
            }
            Transport::Udp => {
                let socket = &self.listeners.face(t.to.listener).udp;
                // Straight to the socket; only a full send buffer waits for the reactor.
                let sent = match socket.try_send_to(&t.data, t.to.remote) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => socket.send_to(&t.data, t.to.remote).await,
                    r => r,
                };
                if let Err(e) = sent {
                    debug!(to = %t.to.remote, error = %e, "UDP send failed");
                }
            }
            Transport::Tcp => self.send_tcp(t),
        }
    }

    fn send_tcp(&mut self, t: Transmit) {
        let Transmit { to, data } = t;
        let id = to
            .conn
            .filter(|id| self.connections.contains_key(id))
            .or_else(|| self.open_connection_to(to.listener, to.remote))
            .unwrap_or_else(|| self.connect(to.listener, to.remote));
        let Some(c) = self.connections.get(&id) else { return };
        match c.outgoing.try_send(data) {
            Ok(()) => trace!(to = %to.remote, conn = id.0, "queued on TCP connection"),
            Err(TrySendError::Full(_)) => {
                // The remote is not reading; dropping the queue closes the connection.
                debug!(to = %to.remote, conn = id.0, "TCP connection too slow; closing it");
                self.connections.remove(&id);
            }
            Err(TrySendError::Closed(data)) => {
                // The task ended and its Closed event is still queued: use a fresh connection.
                self.connections.remove(&id);
                let id = self.connect(to.listener, to.remote);
                if let Some(c) = self.connections.get(&id) {
                    let _ = c.outgoing.try_send(data);
                }
            }
        }
    }

    fn open_connection_to(&self, listener: Listener, remote: SocketAddr) -> Option<ConnectionId> {
        // A linear scan: a node holds few connections, and this runs only when the peer
        // did not name one.
        self.connections.iter().find(|(_, c)| c.listener == listener && c.remote == remote).map(|(id, _)| *id)
    }

    /// Starts an outbound connection; messages queue on it while it opens.
    fn connect(&mut self, listener: Listener, remote: SocketAddr) -> ConnectionId {
        let (id, rx) = self.add_connection(listener, remote);
        let local_ip = self.listeners.face(listener).addr.ip();
        debug!(?listener, %remote, conn = id.0, "opening TCP connection");
        tokio::spawn(connection::connect_and_serve(id, local_ip, remote, rx, self.events_tx.clone()));
        id
    }

    fn add_connection(&mut self, listener: Listener, remote: SocketAddr) -> (ConnectionId, mpsc::Receiver<Bytes>) {
        let id = ConnectionId(self.next_connection);
        self.next_connection += 1;
        let (outgoing, rx) = mpsc::channel(OUTGOING_QUEUE);
        self.connections.insert(id, Connection { listener, remote, outgoing });
        (id, rx)
    }

    /// A phone's request for another SIP domain: DNS is asked on a task of its own, and the
    /// targets come back through `resolved`.
    fn on_resolve(&mut self, request: crate::proxy::outbound::ResolveRequest) {
        let Some(resolver) = self.dns.clone() else {
            let result = Err(crate::outbound::ResolveError::NotFound(request.uri.host.to_string()));
            self.peer.handle_input(Instant::now(), Input::Resolved { sid: request.sid, result });
            return;
        };
        // A seed for the SRV order, not a secret: 0 in the unheard-of case the OS has none.
        let seed = super::random_seed().unwrap_or_default();
        tokio::spawn(super::dns::resolve(resolver, request, seed, self.resolved_tx.clone()));
    }

    fn status(&self) -> Status {
        let chord = self.peer.chord();
        Status {
            node_id: self.peer.node_id().to_string(),
            version: env!("CARGO_PKG_VERSION"),
            node: self.info.clone(),
            uptime_secs: self.started.elapsed().as_secs(),
            counters: status::StatusCounters {
                peer: self.peer.counters().clone(),
                media: self.peer.proxy().anchor().map(|a| a.totals()).unwrap_or_default(),
            },
            transactions: Transactions::of(&self.peer),
            load: status::Load::of(&self.peer),
            predecessor: chord.predecessor().map(Into::into),
            successors: chord.successors().iter().map(Into::into).collect(),
            fingers: status::distinct_fingers(chord),
            overlay: status::OverlayStatus::of(&self.peer.config().overlay_name, chord),
            phones: self.peer.phones(Instant::now()),
            registrar: self.peer.proxy_status(),
            storage: self.peer.storage_counters().cloned(),
            mailbox: self.peer.mailbox_status(),
            presence: self.peer.presence_status(),
            nat: self.peer.nat_status(),
            role: self.peer.role().as_str(),
            edge: self.peer.edge().map(|addr| status::Node {
                node_id: NodeId::from_addr(addr.ip(), addr.port(), self.peer.chord().config().id_hash).to_string(),
                addr,
            }),
            clients: self.peer.proxy_status().clients,
            tcp_connections: self.connections.len(),
            tcp: TcpCounters { open: self.connections.len(), ..self.tcp.clone() },
            mdns: self.lan.as_ref().map(|lan| status::MdnsStatus {
                deciding: self.lan_join.is_some(),
                heard: self.lan_join.as_ref().map_or(0, crate::discovery::LanJoin::heard_count),
                on_ring: lan.on_ring(),
            }),
            calls: self.peer.proxy().anchor().map(|a| a.calls()).unwrap_or_default(),
            media_sockets: self.peer.proxy().anchor().map(|_| self.media.count()),
            media_relays: self.peer.proxy().anchor().map(crate::media::anchor::Anchor::relays_held),
        }
    }
}

/// The next LAN event, or never when mDNS is off.
async fn next_lan(lan: &mut Option<super::mdns::Lan>) -> Option<super::mdns::LanEvent> {
    match lan {
        Some(l) => l.events.recv().await,
        None => std::future::pending().await,
    }
}

/// Runs `f`, returning when it started.
fn timed(f: impl FnOnce()) -> Instant {
    let t = Instant::now();
    f();
    t
}

fn endpoint(id: ConnectionId, c: &Connection) -> Endpoint {
    Endpoint { listener: c.listener, transport: Transport::Tcp, remote: c.remote, conn: Some(id) }
}

/// Sends `data` to `to` from a new UDP socket on `overlay`'s IP address (an OS-chosen port),
/// then closes it: a dial-back from an address and port the asker has not sent to.
fn send_one_shot(overlay: SocketAddr, data: &[u8], to: SocketAddr) -> io::Result<()> {
    let socket = std::net::UdpSocket::bind(SocketAddr::new(overlay.ip(), 0))?;
    socket.send_to(data, to).map(|_| ())
}
