//! One task per TCP connection: it reads the stream into a [`StreamFramer`], passes whole
//! frames to the event loop, and writes what the event loop queues for it (RFC 3261 §18.3).
//!
//! A framing error ends only this connection: the stream can no longer be cut into messages,
//! so the task reports it and drops the socket. The task never interprets SIP itself.
//!
//! docs/security.md, H3: no connection holds its descriptor for free. An accepted one
//! must bring its first whole message within [`FIRST_FRAME_TIMEOUT`]; a message begun must be
//! finished within [`PARTIAL_TIMEOUT`] (no slow drip); a connection with no traffic either way
//! for [`IDLE_TIMEOUT`] closes (longer than a phone's longest registration, so a registered
//! phone's flow stays while it refreshes); and a write that the remote does not read within
//! [`WRITE_TIMEOUT`] ends the connection.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

use crate::peer::ConnectionId;
use crate::sip::framing::{Frame, FramingError, StreamFramer};

/// Messages queued for one connection before the event loop gives up on it as too slow.
pub(crate) const OUTGOING_QUEUE: usize = 256;
/// How long an outbound connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an accepted connection may take to send its first whole message.
pub(crate) const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the rest of a message may take once its first bytes are in.
pub(crate) const PARTIAL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection may carry nothing at all (CRLF keep-alives count, RFC 5626 §4.4.1).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(3900);
/// How long one write may wait for the remote to read.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const READ_CHUNK: usize = 16 * 1024;

/// What a connection task tells the event loop, in the order it happened.
#[derive(Debug)]
pub(crate) enum ConnEvent {
    Frame { id: ConnectionId, frame: Frame },
    Closed { id: ConnectionId, reason: CloseReason },
}

#[derive(Debug)]
pub(crate) enum CloseReason {
    /// The remote closed its end.
    Eof,
    /// The event loop dropped the connection's queue (shutdown, or a peer too slow to read).
    Local,
    Framing(FramingError),
    Io(io::Error),
    ConnectFailed(io::Error),
    /// A deadline above passed: which one.
    TimedOut(&'static str),
}

/// Serves an accepted connection until it closes.
pub(crate) async fn serve(
    id: ConnectionId,
    stream: TcpStream,
    outgoing: mpsc::Receiver<Bytes>,
    events: mpsc::Sender<ConnEvent>,
) {
    let reason = pump(id, stream, outgoing, &events, true).await;
    // Fails only when the event loop has stopped, and then nobody needs to know.
    let _ = events.send(ConnEvent::Closed { id, reason }).await;
}

/// Opens a connection to `remote` (from `local_ip` when the listener has a specific address,
/// so the remote sees the node's own IP), then serves it. Messages queued meanwhile wait.
pub(crate) async fn connect_and_serve(
    id: ConnectionId,
    local_ip: IpAddr,
    remote: SocketAddr,
    outgoing: mpsc::Receiver<Bytes>,
    events: mpsc::Sender<ConnEvent>,
) {
    let connected = match tokio::time::timeout(CONNECT_TIMEOUT, connect(local_ip, remote)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    };
    match connected {
        Ok(stream) => {
            let reason = pump(id, stream, outgoing, &events, false).await;
            let _ = events.send(ConnEvent::Closed { id, reason }).await;
        }
        Err(e) => {
            let _ = events.send(ConnEvent::Closed { id, reason: CloseReason::ConnectFailed(e) }).await;
        }
    }
}

async fn connect(local_ip: IpAddr, remote: SocketAddr) -> io::Result<TcpStream> {
    let socket = if remote.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if !local_ip.is_unspecified() && local_ip.is_ipv4() == remote.is_ipv4() {
        socket.bind(SocketAddr::new(local_ip, 0))?;
    }
    socket.connect(remote).await
}

/// `accepted`: the remote opened it, so it owes us a first message soon.
async fn pump(
    id: ConnectionId,
    stream: TcpStream,
    mut outgoing: mpsc::Receiver<Bytes>,
    events: &mpsc::Sender<ConnEvent>,
    accepted: bool,
) -> CloseReason {
    // SIP messages are small and latency matters more than packet count.
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    // On a stream we opened (a client's flow to its edge) a lone CRLF is the pong to our ping.
    let mut framer = if accepted { StreamFramer::default() } else { StreamFramer::default().with_pongs() };
    let mut buf = vec![0u8; READ_CHUNK];
    let opened = tokio::time::Instant::now();
    let mut framed_once = !accepted;
    let mut last_traffic = opened;
    // When the bytes now buffered began to arrive (None: nothing partial is buffered).
    let mut partial_since: Option<tokio::time::Instant> = None;
    loop {
        let (deadline, which) = match (framed_once, partial_since) {
            (false, _) => (opened + FIRST_FRAME_TIMEOUT, "no first message"),
            (true, Some(t)) => (t + PARTIAL_TIMEOUT, "a message left unfinished"),
            (true, None) => (last_traffic + IDLE_TIMEOUT, "idle"),
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return CloseReason::TimedOut(which),
            read = rd.read(&mut buf) => match read {
                Ok(0) => return CloseReason::Eof,
                Ok(n) => {
                    last_traffic = tokio::time::Instant::now();
                    framer.push(&buf[..n]);
                    loop {
                        match framer.next_frame() {
                            Ok(Some(frame)) => {
                                framed_once = true;
                                if events.send(ConnEvent::Frame { id, frame }).await.is_err() {
                                    return CloseReason::Local;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => return CloseReason::Framing(e),
                        }
                    }
                    partial_since = match (framer.buffered(), partial_since) {
                        (0, _) => None,
                        (_, Some(t)) => Some(t),
                        (_, None) => Some(last_traffic),
                    };
                }
                Err(e) => return CloseReason::Io(e),
            },
            out = outgoing.recv() => match out {
                Some(data) => {
                    match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&data)).await {
                        Ok(Ok(())) => last_traffic = tokio::time::Instant::now(),
                        Ok(Err(e)) => return CloseReason::Io(e),
                        Err(_) => return CloseReason::TimedOut("the remote does not read"),
                    }
                }
                None => {
                    let _ = wr.shutdown().await;
                    return CloseReason::Local;
                }
            },
        }
    }
}
