//! Addresses as the node sees them: which of its listeners a message used, over which
//! transport, from whom; and where responses go (RFC 3261 §18.2.2, RFC 3581 §4). Below both
//! the peer and the proxy, which pass these between them; only `daemon` owns the sockets.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::sip::header::Via;

/// The node's two faces: node-to-node SIP, and the proxy that local softphones use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Listener {
    /// The address other nodes use.
    Overlay,
    /// The address local phones use.
    Proxy,
    /// A socket of its own on the overlay's address, opened for one datagram and closed: the
    /// dial-back of a peer with no other peer to ask (`crate::nat::reachability`). Only for
    /// sending; nothing arrives on it.
    OneShot,
}

/// The transport a message goes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP: datagrams, retransmitted by the transaction layer.
    Udp,
    /// TCP: a stream, reliable.
    Tcp,
}

impl Listener {
    /// 0 for the overlay, 1 for the proxy: for per-listener arrays and budgets.
    pub fn index(self) -> usize {
        match self {
            Listener::Overlay | Listener::OneShot => 0,
            Listener::Proxy => 1,
        }
    }
}

impl Transport {
    /// `udp` or `tcp`, as `/status` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }

    /// Whether the transport is reliable (no retransmissions, §17.1.1.2).
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp)
    }

    /// The name in a Via header (`UDP`, `TCP`).
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
}

/// A stream connection, numbered by the driver that owns the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(pub u64);

/// One end of a message's journey: our listener, the transport, the remote address, and for
/// streams the connection it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// The listener it concerns.
    pub listener: Listener,
    /// The transport.
    pub transport: Transport,
    /// The far end's address.
    pub remote: SocketAddr,
    /// For TCP: the connection a message arrived on, or the one to send on. `None` asks the
    /// driver to use any open connection to `remote`, or to open one.
    pub conn: Option<ConnectionId>,
}

/// Bytes for the driver to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where the bytes go.
    pub to: Endpoint,
    /// The bytes.
    pub data: Bytes,
}

/// Where the response to a request received from `from` goes.
///
/// - Over a stream: back on the same connection (RFC 3261 §18.2.2); the driver opens a new one
///   to the same address if it has closed.
/// - Over UDP: to the source IP (the `received` address, §18.2.1) and, when the top Via asks
///   for `rport`, the source port (RFC 3581 §4); otherwise the sent-by port or 5060.
///   `maddr` is ignored: honouring it would let anyone aim our responses at a third party.
/// - With no readable Via, the source address: the only one we know.
pub fn reply_endpoint(from: &Endpoint, top_via: Option<&Via>) -> Endpoint {
    if from.transport.is_reliable() {
        return *from;
    }
    let port = match top_via {
        None => from.remote.port(),
        Some(via) if via.rport().is_some() => from.remote.port(),
        Some(via) => via.port.unwrap_or(5060),
    };
    Endpoint { remote: SocketAddr::new(from.remote.ip(), port), ..*from }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(transport: Transport) -> Endpoint {
        Endpoint { listener: Listener::Proxy, transport, remote: "127.0.0.9:40000".parse().unwrap(), conn: None }
    }

    #[test]
    fn udp_replies_follow_via() {
        let via = Via::parse(b"SIP/2.0/UDP phone.example.com:5062;branch=z9hG4bK1").unwrap();
        assert_eq!(reply_endpoint(&ep(Transport::Udp), Some(&via)).remote, "127.0.0.9:5062".parse().unwrap());
        let via = Via::parse(b"SIP/2.0/UDP phone.example.com;branch=z9hG4bK1").unwrap();
        assert_eq!(reply_endpoint(&ep(Transport::Udp), Some(&via)).remote, "127.0.0.9:5060".parse().unwrap());
        let via = Via::parse(b"SIP/2.0/UDP phone.example.com:5062;branch=z9hG4bK1;rport").unwrap();
        assert_eq!(reply_endpoint(&ep(Transport::Udp), Some(&via)).remote, "127.0.0.9:40000".parse().unwrap());
        assert_eq!(reply_endpoint(&ep(Transport::Udp), None).remote, "127.0.0.9:40000".parse().unwrap());
    }

    #[test]
    fn tcp_replies_on_the_connection() {
        let from = Endpoint { conn: Some(ConnectionId(7)), ..ep(Transport::Tcp) };
        let via = Via::parse(b"SIP/2.0/TCP phone.example.com:5062;branch=z9hG4bK1").unwrap();
        assert_eq!(reply_endpoint(&from, Some(&via)), from);
    }
}
