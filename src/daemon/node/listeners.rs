//! Binding the node's four SIP listeners (UDP and TCP on the overlay and proxy addresses)
//! and its HTTP listener, before anything else starts, so that a busy address is one clear
//! error at startup rather than a half-running node.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};
use tracing::debug;

use crate::daemon::DaemonError;
use crate::peer::Listener;

/// One face of the node: a UDP socket and a TCP listener on the same address.
pub(crate) struct Face {
    pub udp: UdpSocket,
    pub tcp: TcpListener,
    /// The bound address (a requested port 0 resolved to the one the system chose).
    pub addr: SocketAddr,
}

pub(crate) struct Listeners {
    pub overlay: Face,
    pub proxy: Face,
}

impl Listeners {
    pub(crate) async fn bind(overlay: SocketAddr, proxy: SocketAddr) -> Result<Listeners, DaemonError> {
        Ok(Listeners {
            overlay: Face::bind(Listener::Overlay, overlay).await?,
            proxy: Face::bind(Listener::Proxy, proxy).await?,
        })
    }

    pub(crate) fn face(&self, listener: Listener) -> &Face {
        match listener {
            // A one-shot socket is opened by the sender; the overlay's is the family it copies.
            Listener::Overlay | Listener::OneShot => &self.overlay,
            Listener::Proxy => &self.proxy,
        }
    }
}

impl Face {
    async fn bind(listener: Listener, addr: SocketAddr) -> Result<Face, DaemonError> {
        let (udp_what, tcp_what) = match listener {
            Listener::Overlay | Listener::OneShot => ("overlay UDP socket", "overlay TCP listener"),
            Listener::Proxy => ("proxy UDP socket", "proxy TCP listener"),
        };
        let udp = udp_socket(addr).map_err(|source| DaemonError::Bind { what: udp_what, addr, source })?;
        let addr = udp.local_addr().map_err(|source| DaemonError::Io { doing: "read a socket address", source })?;
        // The same port for TCP, so one `host:port` names the node on both transports.
        let tcp = TcpListener::bind(addr).await.map_err(|source| DaemonError::Bind { what: tcp_what, addr, source })?;
        Ok(Face { udp, tcp, addr })
    }
}

/// The receive buffer asked for on each UDP socket. The default (208 KiB on Linux, some 200
/// SIP requests) overflows when a burst arrives while the loop is busy or descheduled, and a
/// dropped request costs the phone a retransmission (500 ms); a deeper queue is what the load
/// shedding (`peer::admission`) needs to see a standing queue before the kernel drops. Linux
/// grants at most `net.core.rmem_max` (and doubles it for its own bookkeeping); Kamailio
/// probes for the largest size the same way.
const UDP_RECV_BUFFER: usize = 4 << 20;

/// A non-blocking UDP socket bound to `addr`, with the receive buffer enlarged as far as the
/// system allows (a refusal only leaves the default, so it is not an error).
fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(UDP_RECV_BUFFER) {
        debug!(%addr, error = %e, "could not enlarge the UDP receive buffer");
    }
    debug!(%addr, recv_buffer = socket.recv_buffer_size().unwrap_or(0), "UDP socket");
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

pub(crate) async fn bind_http(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), DaemonError> {
    let l =
        TcpListener::bind(addr).await.map_err(|source| DaemonError::Bind { what: "HTTP status API", addr, source })?;
    let addr = l.local_addr().map_err(|source| DaemonError::Io { doing: "read a socket address", source })?;
    Ok((l, addr))
}
