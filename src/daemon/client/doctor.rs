//! `p2psip doctor`'s own checks of the servers a node is configured with: does each STUN
//! server answer a Binding request (and with which address), does each TURN server answer an
//! Allocate (a 401 challenge is an answer: the server is there). From an ephemeral UDP socket,
//! two tries a second apart: a check for a person, not a measurement.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use ring::rand::SecureRandom;

use crate::nat::stun::{self, StunMessage, StunTransactionId};

/// How long one try waits for an answer.
const WAIT: Duration = Duration::from_secs(1);
/// Tries per server.
const TRIES: u32 = 2;

/// What asking one server found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerProbe {
    /// The server's URI, as configured.
    pub uri: String,
    /// The address it saw us at (STUN), or `None` for a TURN server that answered; why not.
    pub answer: Result<Option<SocketAddr>, String>,
}

/// Asks each `stun:` URI for our address.
pub fn probe_stun(uris: &[String]) -> Vec<ServerProbe> {
    uris.iter()
        .map(|uri| {
            let answer = stun::parse_uri(uri).and_then(|(host, port)| {
                let id = new_id()?;
                ask(&host, port, &stun::binding_request(id), id).map(|m| match m {
                    StunMessage::BindingSuccess { mapped, .. } => Some(mapped),
                    _ => None,
                })
            });
            ServerProbe { uri: uri.clone(), answer }
        })
        .collect()
}

/// Asks each `turn:` URI (over UDP) whether it is there: an Allocate without credentials,
/// which a TURN server answers, usually with 401 (RFC 8656 §7.2).
pub fn probe_turn(uris: &[String]) -> Vec<ServerProbe> {
    uris.iter()
        .map(|uri| {
            let answer = crate::nat::turn::parse_uri(uri).and_then(|(host, port, transport)| {
                if transport == crate::nat::turn::TurnTransport::Tcp {
                    return Err("TCP: not checked by doctor".to_owned());
                }
                let id = new_id()?;
                ask(&host, port, &allocate(id), id).map(|_| None)
            });
            ServerProbe { uri: uri.clone(), answer }
        })
        .collect()
}

/// A TURN Allocate request (method 0x003) asking for a UDP relay, without credentials.
fn allocate(id: StunTransactionId) -> Vec<u8> {
    // Header: type, length (8), magic cookie, transaction ID; then REQUESTED-TRANSPORT (0x0019)
    // with protocol 17 (UDP), RFC 8656 §18.11.
    let mut m = vec![0x00, 0x03, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42];
    m.extend_from_slice(&id);
    m.extend_from_slice(&[0x00, 0x19, 0x00, 0x04, 17, 0, 0, 0]);
    m
}

fn new_id() -> Result<StunTransactionId, String> {
    let mut id = [0u8; 12];
    crate::daemon::os_random().fill(&mut id).map_err(|_| "the system random number generator failed".to_owned())?;
    Ok(id)
}

/// Sends `request` to `host:port` and waits for a STUN message with transaction ID `id`.
fn ask(host: &str, port: u16, request: &[u8], id: StunTransactionId) -> Result<StunMessage, String> {
    let host_port = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let server = host_port
        .to_socket_addrs()
        .map_err(|e| format!("does not resolve: {e}"))?
        .next()
        .ok_or_else(|| "has no address".to_owned())?;
    let any: SocketAddr = if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { "[::]:0".parse().expect("address") };
    let socket = UdpSocket::bind(any).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    socket.set_read_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 1500];
    for _ in 0..TRIES {
        socket.send_to(request, server).map_err(|e| format!("cannot send to {server}: {e}"))?;
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if from != server || !stun::is_stun(&buf[..n]) || buf[8..20] != id {
                continue;
            }
            return Ok(stun::parse(&buf[..n]).unwrap_or(StunMessage::Other));
        }
    }
    Err(format!("no answer from {server}"))
}
