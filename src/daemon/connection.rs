//! One task per TCP connection: it reads the stream into a [`StreamFramer`], passes whole
//! frames to the event loop, and writes what the event loop queues for it (RFC 3261 §18.3).
//!
//! A framing error ends only this connection: the stream can no longer be cut into messages,
//! so the task reports it and drops the socket. The task never interprets SIP itself.

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
}

/// Serves an accepted connection until it closes.
pub(crate) async fn serve(
    id: ConnectionId,
    stream: TcpStream,
    outgoing: mpsc::Receiver<Bytes>,
    events: mpsc::Sender<ConnEvent>,
) {
    let reason = pump(id, stream, outgoing, &events).await;
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
        Ok(stream) => serve(id, stream, outgoing, events).await,
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

async fn pump(
    id: ConnectionId,
    stream: TcpStream,
    mut outgoing: mpsc::Receiver<Bytes>,
    events: &mpsc::Sender<ConnEvent>,
) -> CloseReason {
    // SIP messages are small and latency matters more than packet count.
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut framer = StreamFramer::default();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        tokio::select! {
            read = rd.read(&mut buf) => match read {
                Ok(0) => return CloseReason::Eof,
                Ok(n) => {
                    framer.push(&buf[..n]);
                    loop {
                        match framer.next_frame() {
                            Ok(Some(frame)) => {
                                if events.send(ConnEvent::Frame { id, frame }).await.is_err() {
                                    return CloseReason::Local;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => return CloseReason::Framing(e),
                        }
                    }
                }
                Err(e) => return CloseReason::Io(e),
            },
            out = outgoing.recv() => match out {
                Some(data) => {
                    if let Err(e) = wr.write_all(&data).await {
                        return CloseReason::Io(e);
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
