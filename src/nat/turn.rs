//! TURN servers (RFC 8656) as the node is configured with them, for the relayed media paths of
//! calls: their URIs (RFC 7065) and the credentials that go with them. Nothing allocates yet;
//! the daemon only reads, checks and shows them.

use serde::{Deserialize, Serialize};

/// One TURN server and its long-term credentials (RFC 8656 §9.2).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnServer {
    /// `turn:HOST[:PORT][?transport=udp|tcp]`.
    pub uri: String,
    /// The username, when the server asks for one.
    #[serde(default)]
    pub username: Option<String>,
    /// Its password (never shown in status or logs).
    #[serde(default)]
    pub password: Option<String>,
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("TurnServer").field("uri", &self.uri).field("username", &self.username).finish()
    }
}

/// The transport a TURN URI asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnTransport {
    /// UDP to the server (the default of `turn:`).
    Udp,
    /// TCP to the server.
    Tcp,
}

/// The host, port and transport of a `turn:` URI (RFC 7065 §3: `turn:host[:port]
/// [?transport=udp|tcp]`, port 3478 by default; an IPv6 host in brackets). `turns:` (TURN
/// over TLS) is refused: not supported.
pub fn parse_uri(uri: &str) -> Result<(String, u16, TurnTransport), String> {
    let rest = match uri.split_once(':') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("turn") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("turns") => {
            return Err(format!("{uri}: turns: (TURN over TLS) is not supported; use turn:"))
        }
        _ => return Err(format!("{uri}: not a turn: URI (turn:HOST[:PORT][?transport=udp|tcp])")),
    };
    let (hostport, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest, None),
    };
    let transport = match query.map(|q| q.to_ascii_lowercase()) {
        None => TurnTransport::Udp,
        Some(q) if q == "transport=udp" => TurnTransport::Udp,
        Some(q) if q == "transport=tcp" => TurnTransport::Tcp,
        Some(q) => return Err(format!("{uri}: unknown parameter {q:?} (transport=udp or transport=tcp)")),
    };
    let (host, port) =
        super::stun::parse_uri(&format!("stun:{hostport}")).map_err(|e| e.replacen("stun:", "turn:", 1))?;
    Ok((host, port, transport))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_uris_name_a_host_a_port_and_a_transport() {
        assert_eq!(parse_uri("turn:turn.example.net"), Ok(("turn.example.net".into(), 3478, TurnTransport::Udp)));
        assert_eq!(parse_uri("turn:192.0.2.1:3479?transport=tcp"), Ok(("192.0.2.1".into(), 3479, TurnTransport::Tcp)));
        assert_eq!(parse_uri("TURN:[2001:db8::1]"), Ok(("2001:db8::1".into(), 3478, TurnTransport::Udp)));
        for bad in ["turns:x.example", "stun:x.example", "turn:", "turn:x?transport=sctp", "turn:x:0"] {
            assert!(parse_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_password_is_never_printed() {
        let s = TurnServer { uri: "turn:x".into(), username: Some("u".into()), password: Some("hunter2".into()) };
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
