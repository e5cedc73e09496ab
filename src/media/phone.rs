//! The phone side of a call at one node: for each stream (m-line) a pair of relay ports on the
//! phone-facing address, where the phone is told to send (the rewritten SDP, `crate::sdp`), and
//! where the node sends what the far phone said.
//!
//! Rules (the research's, from rtpengine and rtpproxy):
//! - **Where the phone wants media** comes from the SDP it sent (its offer or answer):
//!   `c=`, the `m=` port, `a=rtcp` (RFC 3605), `a=rtcp-mux` (RFC 5761).
//! - **Latching** (symmetric RTP, RFC 4961): a packet counts only from the phone's address
//!   (its SDP's, any loopback address for a phone on loopback, or any while the SDP says none);
//!   its source becomes where the node sends, so a phone whose SDP names another port or
//!   loopback address than it sends from is still reached.
//! - **RTCP** arrives on the RTCP port, or on the RTP port muxed: RFC 5761 §4 tells them apart
//!   by the second byte (payload types 64–95 with the marker bit are RTCP's 192–223). It goes to
//!   the phone's RTCP port, or its RTP port when its SDP asked for mux.

use std::net::{IpAddr, SocketAddr};

use super::pool::SocketId;
use crate::sdp::{RelayPorts, Stream};

/// One stream's relay: its socket pair and what is known of the phone's end.
#[derive(Debug, Clone)]
pub struct PhoneStream {
    /// The pair of sockets (index 0 RTP, 1 RTCP) on the phone-facing address.
    pub pair: SocketId,
    /// Their ports.
    pub ports: RelayPorts,
    /// The phone's end, from its SDP; `None` until it sent one (or a rejected stream).
    phone: Option<Stream>,
    /// Where RTP from the phone came from last (latched).
    latched_rtp: Option<SocketAddr>,
    /// Where RTCP from the phone came from last (latched).
    latched_rtcp: Option<SocketAddr>,
    /// What the far phone's SDP last said of the stream (direction, rejected or not).
    far: Option<Stream>,
}

/// RFC 5761 §4: an RTCP packet's second byte is its packet type, 192–223.
pub fn looks_like_rtcp(datagram: &[u8]) -> bool {
    datagram.get(1).is_some_and(|pt| (192..=223).contains(pt))
}

impl PhoneStream {
    /// A stream relayed on `pair`, whose sockets have `ports`.
    pub fn new(pair: SocketId, ports: RelayPorts) -> PhoneStream {
        PhoneStream { pair, ports, phone: None, latched_rtp: None, latched_rtcp: None, far: None }
    }

    /// The phone's SDP said this of the stream (an offer, an answer, a re-INVITE).
    pub fn learn(&mut self, stream: Stream) {
        // A new address or port: latch again.
        if self.phone.as_ref().is_none_or(|old| old.addr != stream.addr || old.port != stream.port) {
            self.latched_rtp = None;
            self.latched_rtcp = None;
        }
        self.phone = Some(stream);
    }

    /// The far phone's SDP said this of the stream.
    pub fn far_said(&mut self, stream: Stream) {
        self.far = Some(stream);
    }

    /// Whether either phone holds the stream (RFC 3264 §8.4: `sendonly`, `recvonly` or
    /// `inactive`, or the old `c=0.0.0.0`) or it is rejected.
    pub fn held(&self) -> bool {
        [&self.phone, &self.far]
            .into_iter()
            .flatten()
            .any(|s| s.direction != crate::sdp::Direction::SendRecv || s.is_off())
    }

    fn phone_ip(&self) -> Option<IpAddr> {
        self.phone.as_ref().and_then(|s| s.addr).filter(|a| !a.is_unspecified())
    }

    /// A datagram arrived on socket `index` (0 RTP, 1 RTCP) from `from`: `Some(rtcp)` when it
    /// is the phone's, to be relayed.
    pub fn from_phone(&mut self, index: u8, from: SocketAddr, datagram: &[u8]) -> Option<bool> {
        // A phone on this machine may name one loopback address and send from another (a
        // socket bound to the wildcard address sends from 127.0.0.1): loopback is one host.
        let same_host = |ip: IpAddr| ip == from.ip() || (ip.is_loopback() && from.ip().is_loopback());
        if self.phone_ip().is_some_and(|ip| !same_host(ip)) {
            return None;
        }
        let rtcp = index == 1 || looks_like_rtcp(datagram);
        if rtcp {
            self.latched_rtcp = Some(from);
        } else {
            self.latched_rtp = Some(from);
        }
        Some(rtcp)
    }

    /// Where a datagram from the far phone goes: the socket index to send from and the
    /// phone's address. `None` while the phone has said nothing and sent nothing, or the
    /// stream is off.
    pub fn to_phone(&self, rtcp: bool) -> Option<(u8, SocketAddr)> {
        let stream = self.phone.as_ref();
        if stream.is_some_and(Stream::is_off) {
            return None;
        }
        let mux = stream.is_some_and(|s| s.rtcp_mux);
        let ip = self.phone_ip();
        if rtcp && !mux {
            let to = self.latched_rtcp.or_else(|| Some(SocketAddr::new(ip?, stream?.rtcp_port)))?;
            Some((1, to))
        } else {
            let to = self.latched_rtp.or_else(|| Some(SocketAddr::new(ip?, stream?.port)))?;
            Some((0, to))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::Direction;

    fn stream(port: u16, mux: bool) -> Stream {
        Stream {
            media: "audio".into(),
            port,
            rtcp_port: if mux { port } else { port + 1 },
            rtcp_mux: mux,
            addr: Some("127.0.0.1".parse().unwrap()),
            direction: Direction::SendRecv,
        }
    }

    fn rtp() -> Vec<u8> {
        vec![0x80, 0x00, 0, 1]
    }

    fn rtcp() -> Vec<u8> {
        vec![0x81, 200, 0, 6]
    }

    #[test]
    fn sends_to_the_sdp_until_the_phone_sends_then_latches() {
        let mut s = PhoneStream::new(SocketId(1), RelayPorts { rtp: 30000, rtcp: 30001 });
        assert_eq!(s.to_phone(false), None);
        s.learn(stream(4000, false));
        assert_eq!(s.to_phone(false), Some((0, "127.0.0.1:4000".parse().unwrap())));
        assert_eq!(s.to_phone(true), Some((1, "127.0.0.1:4001".parse().unwrap())));
        assert_eq!(s.from_phone(0, "127.0.0.1:5000".parse().unwrap(), &rtp()), Some(false));
        assert_eq!(s.to_phone(false), Some((0, "127.0.0.1:5000".parse().unwrap())));
        // Not the phone's address: ignored; another loopback address is the same machine.
        assert_eq!(s.from_phone(0, "10.0.0.2:5000".parse().unwrap(), &rtp()), None);
        assert_eq!(s.from_phone(0, "127.0.0.2:5000".parse().unwrap(), &rtp()), Some(false));
        assert_eq!(s.from_phone(0, "127.0.0.1:5000".parse().unwrap(), &rtp()), Some(false));
        // RTCP muxed onto the RTP port is told apart and latched as RTCP.
        assert_eq!(s.from_phone(0, "127.0.0.1:5001".parse().unwrap(), &rtcp()), Some(true));
        assert_eq!(s.to_phone(true), Some((1, "127.0.0.1:5001".parse().unwrap())));
        // A new SDP port unlatches.
        s.learn(stream(6000, false));
        assert_eq!(s.to_phone(false), Some((0, "127.0.0.1:6000".parse().unwrap())));
    }

    #[test]
    fn held_when_either_side_says_so() {
        let mut s = PhoneStream::new(SocketId(1), RelayPorts { rtp: 30000, rtcp: 30001 });
        s.learn(stream(4000, false));
        s.far_said(stream(6000, false));
        assert!(!s.held());
        s.far_said(Stream { direction: Direction::SendOnly, ..stream(6000, false) });
        assert!(s.held());
        s.far_said(stream(6000, false));
        s.learn(Stream { direction: Direction::Inactive, ..stream(4000, false) });
        assert!(s.held());
    }

    #[test]
    fn mux_and_off_streams() {
        let mut s = PhoneStream::new(SocketId(1), RelayPorts { rtp: 30000, rtcp: 30001 });
        s.learn(stream(4000, true));
        assert_eq!(s.to_phone(true), Some((0, "127.0.0.1:4000".parse().unwrap())));
        s.learn(Stream { port: 0, ..stream(0, false) });
        assert_eq!(s.to_phone(false), None);
    }
}
