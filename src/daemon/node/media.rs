//! The media anchor's sockets (`crate::media::anchor`): the loop opens what the anchor asks
//! for (a leg on the node's address, any port; a relay pair on the phone-facing address, an
//! even port and the next from the configured range, RFC 3550 §11), one task per socket reads
//! datagrams into one queue the loop serves, sends go out without waiting (a full socket
//! buffer drops the datagram, as the network would), and a closed socket's task ends.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::media::anchor::MediaInput;
use crate::media::pool::{SocketId, SocketKind};

/// Datagrams waiting for the loop; reader tasks wait when it is full.
const QUEUE: usize = 4096;
/// The largest datagram read (RTP over UDP stays far below).
const BUFFER: usize = 2048;

/// One datagram from a media socket.
pub(crate) struct Datagram {
    pub socket: SocketId,
    pub index: u8,
    pub from: SocketAddr,
    pub data: Bytes,
}

impl From<Datagram> for MediaInput {
    fn from(d: Datagram) -> MediaInput {
        MediaInput::Datagram { socket: d.socket, index: d.index, from: d.from, data: d.data }
    }
}

struct Open {
    /// For sending: the plain non-blocking sockets. (tokio's `try_send_to` answers
    /// WouldBlock until the reactor has seen the socket writable, which drops the first
    /// datagrams of a fresh socket: a leg's STUN and TURN requests.)
    senders: Vec<std::net::UdpSocket>,
    readers: Vec<JoinHandle<()>>,
}

/// Every socket the anchor holds, and the queue their datagrams arrive on.
pub(crate) struct MediaSockets {
    open: BTreeMap<SocketId, Open>,
    tx: mpsc::Sender<Datagram>,
    pub rx: mpsc::Receiver<Datagram>,
    /// Where the next pair search starts in the range (pairs spread over it, so a port just
    /// closed is not the next one handed out while a late packet may still arrive).
    next_pair: u16,
}

impl MediaSockets {
    pub(crate) fn new(first_port: u16) -> MediaSockets {
        let (tx, rx) = mpsc::channel(QUEUE);
        MediaSockets { open: BTreeMap::new(), tx, rx, next_pair: first_port }
    }

    /// Opens a socket the anchor asked for; the addresses, or why not.
    pub(crate) fn open(&mut self, socket: SocketId, kind: SocketKind, ip: IpAddr, range: (u16, u16)) -> MediaInput {
        let opened = match kind {
            SocketKind::Leg => bind(SocketAddr::new(ip, 0)).map(|s| vec![s]),
            SocketKind::Pair => self.bind_pair(ip, range),
        };
        let made = opened.and_then(|sockets| {
            let addrs = sockets.iter().map(std::net::UdpSocket::local_addr).collect::<io::Result<Vec<_>>>()?;
            let mut receivers = Vec::new();
            for s in &sockets {
                receivers.push(UdpSocket::from_std(s.try_clone()?)?);
            }
            Ok((sockets, receivers, addrs))
        });
        match made {
            Ok((senders, receivers, addrs)) => {
                let readers = receivers
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| tokio::spawn(read(socket, i as u8, Arc::new(s), self.tx.clone())))
                    .collect();
                self.open.insert(socket, Open { senders, readers });
                MediaInput::Opened { socket, addrs }
            }
            Err(e) => MediaInput::OpenFailed { socket, error: e.to_string() },
        }
    }

    /// An even port and the next one, both free, searched from where the last search ended.
    fn bind_pair(&mut self, ip: IpAddr, (low, high): (u16, u16)) -> io::Result<Vec<std::net::UdpSocket>> {
        let low = low + low % 2;
        let pairs = (high.saturating_sub(low) / 2).max(1);
        for _ in 0..pairs {
            let mut p = self.next_pair.max(low);
            p += p % 2;
            if p >= high {
                p = low;
            }
            self.next_pair = p + 2;
            let Ok(rtp) = bind(SocketAddr::new(ip, p)) else { continue };
            let Ok(rtcp) = bind(SocketAddr::new(ip, p + 1)) else { continue };
            return Ok(vec![rtp, rtcp]);
        }
        Err(io::Error::new(io::ErrorKind::AddrInUse, format!("no free port pair in {low}-{high}")))
    }

    /// Sends `data` from socket `index` of `socket` to `to`, now or never.
    pub(crate) fn send(&self, socket: SocketId, index: u8, to: SocketAddr, data: &[u8]) {
        let Some(s) = self.open.get(&socket).and_then(|o| o.senders.get(index as usize)) else { return };
        if let Err(e) = s.send_to(data, to) {
            debug!(%socket, %to, error = %e, "media datagram not sent");
        }
    }

    /// Closes a socket: its readers stop, the port is free.
    pub(crate) fn close(&mut self, socket: SocketId) {
        if let Some(o) = self.open.remove(&socket) {
            for r in o.readers {
                r.abort();
            }
        }
    }

    /// How many sockets are open.
    pub(crate) fn count(&self) -> usize {
        self.open.values().map(|o| o.senders.len()).sum()
    }
}

fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = std::net::UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

async fn read(socket: SocketId, index: u8, udp: Arc<UdpSocket>, tx: mpsc::Sender<Datagram>) {
    let mut buf = vec![0u8; BUFFER];
    loop {
        match udp.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let d = Datagram { socket, index, from, data: Bytes::copy_from_slice(&buf[..n]) };
                if tx.send(d).await.is_err() {
                    return;
                }
            }
            // ICMP errors from earlier sends are reported here; the socket lives on.
            Err(e) => debug!(%socket, error = %e, "media receive error"),
        }
    }
}
