//! SDP (RFC 8866) as the media anchor needs it: what a phone's offer or answer says about where
//! it wants media ([`Sdp::streams`]), and the rewrite of the SDP the node hands its own phone,
//! toward the anchor's relay ports ([`Sdp::anchor`]). Pure: no peer types, no sockets.
//!
//! The rewrite follows the rules the research drew from rtpengine (`ICE=remove`, c=/m= always
//! rewritten, hold passed through):
//! - session and media `c=` → the anchor's address, except `0.0.0.0` (RFC 3264 §8.4's old hold,
//!   passed through as it is);
//! - each `m=` port → its relay RTP port; port 0 stays 0 (a rejected stream, RFC 3264 §6);
//! - `a=rtcp:` → the relay RTCP port (RFC 3605), written only where the phone's SDP had one;
//! - ICE lines removed (`a=candidate`, `ice-ufrag`, `ice-pwd`, `ice-options`, `ice-lite`,
//!   `ice-mismatch`, `remote-candidates`, `end-of-candidates`): the daemons do ICE between
//!   themselves, the phone never sees it;
//! - everything else untouched: codecs, `ptime`, directions, `a=crypto` and fingerprints
//!   (a phone's own end-to-end SRTP passes through as payload), unknown attributes, `o=`.
//!
//! Parsing and writing go through `sdp-types` (`docs/dependencies.md` says why): it keeps
//! attributes in their order with their exact values, and is lax about line order on input.

use std::net::IpAddr;

use bytes::Bytes;

#[doc(hidden)]
pub mod fuzzing;

/// Attributes that carry ICE (RFC 8839 §5) and never reach a phone.
const ICE_ATTRIBUTES: &[&str] = &[
    "candidate",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "ice-mismatch",
    "remote-candidates",
    "end-of-candidates",
];

/// Why a body is not SDP we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The parser refused it (the message says where).
    #[error("malformed SDP: {0}")]
    Malformed(String),
}

/// A session description, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp {
    session: sdp_types::Session,
}

/// How a stream flows (RFC 3264 §5.1), from its attributes or the session's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both ways (the default).
    SendRecv,
    /// The writer only sends: it holds the other side.
    SendOnly,
    /// The writer only receives.
    RecvOnly,
    /// Neither.
    Inactive,
}

/// What one `m=` line says about where its writer wants media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// `audio`, `video`, …
    pub media: String,
    /// The RTP port; 0 for a rejected or disabled stream.
    pub port: u16,
    /// Where RTCP goes: `a=rtcp` (RFC 3605), else the next port (RFC 3550 §11).
    pub rtcp_port: u16,
    /// `a=rtcp-mux` (RFC 5761): RTCP on the RTP port.
    pub rtcp_mux: bool,
    /// The connection address (media `c=`, else the session's); `None` if there is none.
    pub addr: Option<IpAddr>,
    /// The stream's direction.
    pub direction: Direction,
}

impl Stream {
    /// Whether the stream carries nothing (rejected, or held with the old `c=0.0.0.0`).
    pub fn is_off(&self) -> bool {
        self.port == 0 || self.addr.is_some_and(|a| a.is_unspecified())
    }
}

/// The relay ports the anchor gives one stream, on its phone-facing address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayPorts {
    /// RTP.
    pub rtp: u16,
    /// RTCP (the RTP port itself when muxed).
    pub rtcp: u16,
}

impl Sdp {
    /// Parses a body (CRLF or LF line ends).
    pub fn parse(body: &[u8]) -> Result<Sdp, SdpError> {
        let session = sdp_types::Session::parse(body).map_err(|e| SdpError::Malformed(e.to_string()))?;
        Ok(Sdp { session })
    }

    /// The body, CRLF line ends (RFC 8866 §5).
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(512);
        // Writing to a Vec cannot fail.
        let _ = self.session.write(&mut out);
        Bytes::from(out)
    }

    /// Each `m=` line's stream, in order.
    pub fn streams(&self) -> Vec<Stream> {
        let session_addr = self.session.connection.as_ref().and_then(|c| c.try_address().ok().map(|a| a.ip));
        let session_direction = direction_of(&self.session.attributes);
        self.session
            .medias
            .iter()
            .map(|m| {
                let addr = m.connections.first().and_then(|c| c.try_address().ok().map(|a| a.ip)).or(session_addr);
                let rtcp_mux = m.attributes.iter().any(|a| a.attribute == "rtcp-mux");
                let rtcp_attr = m
                    .attributes
                    .iter()
                    .find(|a| a.attribute == "rtcp")
                    .and_then(|a| a.value.as_deref()?.split_whitespace().next()?.parse().ok());
                let rtcp_port = match (rtcp_mux, rtcp_attr) {
                    (true, _) => m.port,
                    (false, Some(p)) => p,
                    (false, None) => m.port.saturating_add(1),
                };
                Stream {
                    media: m.media.clone(),
                    port: m.port,
                    rtcp_port: if m.port == 0 { 0 } else { rtcp_port },
                    rtcp_mux,
                    addr,
                    direction: direction_of(&m.attributes).or(session_direction).unwrap_or(Direction::SendRecv),
                }
            })
            .collect()
    }

    /// Rewrites the description toward the anchor at `addr`: stream `i` gets `relay[i]`'s
    /// ports (a stream with no relay, or port 0, keeps port 0), and ICE lines go. The rules
    /// are the module's.
    pub fn anchor(&mut self, addr: IpAddr, relay: &[Option<RelayPorts>]) {
        let anchor_connection = |c: &mut sdp_types::Connection| {
            let held = c.try_address().is_ok_and(|a| a.ip.is_unspecified());
            if !held {
                *c = sdp_types::Connection::from_ip_addr(addr);
            }
        };
        if let Some(c) = self.session.connection.as_mut() {
            anchor_connection(c);
        }
        strip_ice(&mut self.session.attributes);
        for (i, m) in self.session.medias.iter_mut().enumerate() {
            strip_ice(&mut m.attributes);
            for c in &mut m.connections {
                anchor_connection(c);
            }
            let ports = relay.get(i).copied().flatten().filter(|_| m.port != 0);
            match ports {
                Some(p) => {
                    m.port = p.rtp;
                    for a in m.attributes.iter_mut().filter(|a| a.attribute == "rtcp") {
                        // RFC 3605: `a=rtcp:PORT [nettype addrtype address]`.
                        a.value = Some(match a.value.as_deref().map(|v| v.split_whitespace().count() > 1) {
                            Some(true) => {
                                format!("{} IN {} {addr}", p.rtcp, if addr.is_ipv4() { "IP4" } else { "IP6" })
                            }
                            _ => p.rtcp.to_string(),
                        });
                    }
                }
                None => m.port = 0,
            }
        }
    }
}

fn strip_ice(attributes: &mut Vec<sdp_types::Attribute>) {
    attributes.retain(|a| !ICE_ATTRIBUTES.iter().any(|n| a.attribute.eq_ignore_ascii_case(n)));
}

fn direction_of(attributes: &[sdp_types::Attribute]) -> Option<Direction> {
    attributes.iter().rev().find_map(|a| match a.attribute.as_str() {
        "sendrecv" => Some(Direction::SendRecv),
        "sendonly" => Some(Direction::SendOnly),
        "recvonly" => Some(Direction::RecvOnly),
        "inactive" => Some(Direction::Inactive),
        _ => None,
    })
}

#[cfg(test)]
mod tests;
