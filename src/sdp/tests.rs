use std::net::IpAddr;

use super::*;

/// What baresip offers (G.711 and DTMF, attributes a parser may not know).
const BARESIP: &str = "v=0\r\no=- 1184711525 3461553262 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
    t=0 0\r\nm=audio 10000 RTP/AVP 0 101\r\nb=AS:64\r\na=rtpmap:0 PCMU/8000\r\n\
    a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n\
    a=label:1\r\na=rtcp-rsize\r\na=ssrc:1207391405 cname:a5e1a3b4\r\n";

/// A Linphone-like offer: LF line ends, `a=rtcp`, a session attribute, a rejected video stream.
const LINPHONE: &str = "v=0\no=bob 3200 1233 IN IP4 192.168.2.2\ns=Talk\nc=IN IP4 192.168.2.2\nt=0 0\n\
    a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\n\
    m=audio 7078 RTP/AVP 96 0 8 101\na=rtpmap:96 opus/48000/2\na=fmtp:96 useinbandfec=1\n\
    a=rtpmap:101 telephone-event/8000\na=rtcp:7079\na=rtcp-fb:* trr-int 1000\nm=video 0 RTP/AVP 96\n";

/// A phone doing its own ICE and SDES-SRTP, holding the call (`a=sendonly`).
const WITH_ICE: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nt=0 0\r\na=ice-lite\r\n\
    m=audio 40000 RTP/SAVP 0\r\nc=IN IP4 10.0.0.5\r\na=ice-ufrag:abcd\r\n\
    a=ice-pwd:aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\na=candidate:1 1 UDP 2130706431 10.0.0.5 40000 typ host\r\n\
    a=candidate:2 1 UDP 1694498815 203.0.113.5 40000 typ srflx raddr 10.0.0.5 rport 40000\r\n\
    a=end-of-candidates\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n\
    a=rtcp:40001 IN IP4 10.0.0.5\r\na=sendonly\r\n";

/// The old hold (RFC 3264 §8.4): `c=0.0.0.0`.
const OLD_HOLD: &str = "v=0\r\no=- 2 3 IN IP4 192.168.1.2\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
    m=audio 10000 RTP/AVP 0\r\na=rtcp-mux\r\n";

/// IPv6, with the session's direction.
const IPV6: &str = "v=0\r\no=- 5 5 IN IP6 2001:db8::5\r\ns=-\r\nc=IN IP6 2001:db8::5\r\nt=0 0\r\n\
    a=recvonly\r\nm=audio 5004 RTP/AVP 8\r\n";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn text(sdp: &Sdp) -> String {
    String::from_utf8(sdp.encode().to_vec()).unwrap()
}

#[test]
fn streams_say_where_each_writer_wants_media() {
    let s = Sdp::parse(BARESIP.as_bytes()).unwrap().streams();
    assert_eq!(
        s,
        [Stream {
            media: "audio".into(),
            port: 10000,
            rtcp_port: 10001,
            rtcp_mux: false,
            addr: Some(ip("127.0.0.1")),
            direction: Direction::SendRecv,
        }]
    );
    let s = Sdp::parse(LINPHONE.as_bytes()).unwrap().streams();
    assert_eq!((s[0].port, s[0].rtcp_port, s[0].addr), (7078, 7079, Some(ip("192.168.2.2"))));
    assert!(s[1].is_off() && s[1].port == 0 && s[1].rtcp_port == 0, "the rejected video: {:?}", s[1]);
    let s = Sdp::parse(WITH_ICE.as_bytes()).unwrap().streams();
    assert_eq!((s[0].rtcp_port, s[0].direction), (40001, Direction::SendOnly));
    let s = Sdp::parse(OLD_HOLD.as_bytes()).unwrap().streams();
    assert!(s[0].rtcp_mux && s[0].rtcp_port == 10000 && s[0].is_off(), "{s:?}");
    let s = Sdp::parse(IPV6.as_bytes()).unwrap().streams();
    assert_eq!((s[0].addr, s[0].direction), (Some(ip("2001:db8::5")), Direction::RecvOnly));
}

#[test]
fn the_phone_is_pointed_at_the_relay_and_everything_else_passes_through() {
    let mut sdp = Sdp::parse(BARESIP.as_bytes()).unwrap();
    sdp.anchor(ip("127.0.0.1"), &[Some(RelayPorts { rtp: 30000, rtcp: 30001 })]);
    let out = text(&sdp);
    assert!(out.contains("\r\nc=IN IP4 127.0.0.1\r\n"), "{out}");
    assert!(out.contains("\r\nm=audio 30000 RTP/AVP 0 101\r\n"), "{out}");
    // Unknown attributes, codecs and their order stay.
    let attrs: Vec<&str> = out.lines().filter(|l| l.starts_with("a=")).collect();
    assert_eq!(
        attrs,
        [
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-15",
            "a=ptime:20",
            "a=sendrecv",
            "a=label:1",
            "a=rtcp-rsize",
            "a=ssrc:1207391405 cname:a5e1a3b4"
        ]
    );
    assert!(out.contains("\r\nb=AS:64\r\n") && out.contains("o=- 1184711525 3461553262 IN IP4 127.0.0.1"), "{out}");
    // What it writes, it reads back the same.
    assert_eq!(Sdp::parse(out.as_bytes()).unwrap(), sdp);
}

#[test]
fn ice_lines_go_rtcp_follows_the_relay_and_a_rejected_stream_stays_rejected() {
    let mut sdp = Sdp::parse(WITH_ICE.as_bytes()).unwrap();
    sdp.anchor(ip("127.0.0.1"), &[Some(RelayPorts { rtp: 30002, rtcp: 30003 })]);
    let out = text(&sdp);
    for gone in ["ice-lite", "ice-ufrag", "ice-pwd", "candidate", "end-of-candidates"] {
        assert!(!out.contains(&format!("a={gone}")), "{gone} left in:\n{out}");
    }
    assert!(out.contains("\r\nc=IN IP4 127.0.0.1\r\n") && out.contains("m=audio 30002 RTP/SAVP 0"), "{out}");
    assert!(out.contains("a=rtcp:30003 IN IP4 127.0.0.1\r\n"), "{out}");
    assert!(out.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"), "the phone's SRTP key passes: {out}");
    assert!(out.contains("a=sendonly"), "{out}");

    let mut sdp = Sdp::parse(LINPHONE.as_bytes()).unwrap();
    let relay = [Some(RelayPorts { rtp: 30004, rtcp: 30005 }), Some(RelayPorts { rtp: 30006, rtcp: 30007 })];
    sdp.anchor(ip("127.0.0.1"), &relay);
    let out = text(&sdp);
    assert!(out.contains("m=audio 30004 RTP/AVP 96 0 8 101\r\n") && out.contains("a=rtcp:30005\r\n"), "{out}");
    assert!(out.contains("m=video 0 RTP/AVP 96\r\n"), "port 0 stays 0: {out}");
    assert!(out.contains("a=rtcp-xr:rcvr-rtt=all:10000"), "{out}");
    // No relay for a stream: it is turned off rather than left pointing at a private address.
    let mut sdp = Sdp::parse(BARESIP.as_bytes()).unwrap();
    sdp.anchor(ip("127.0.0.1"), &[]);
    assert!(text(&sdp).contains("m=audio 0 RTP/AVP 0 101"));
}

#[test]
fn the_old_hold_passes_through_and_ipv6_is_rewritten_in_kind() {
    let mut sdp = Sdp::parse(OLD_HOLD.as_bytes()).unwrap();
    sdp.anchor(ip("127.0.0.1"), &[Some(RelayPorts { rtp: 30008, rtcp: 30008 })]);
    let out = text(&sdp);
    assert!(out.contains("c=IN IP4 0.0.0.0") && out.contains("m=audio 30008 RTP/AVP 0"), "{out}");
    let mut sdp = Sdp::parse(IPV6.as_bytes()).unwrap();
    sdp.anchor(ip("::1"), &[Some(RelayPorts { rtp: 30010, rtcp: 30011 })]);
    let out = text(&sdp);
    assert!(out.contains("c=IN IP6 ::1") && out.contains("a=recvonly"), "{out}");
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for bad in [&b""[..], b"hello", b"v=0\r\nm=audio x RTP/AVP 0\r\n", &[0xff; 64], b"v=0\r\nc=IN IP4\r\n"] {
        if let Ok(sdp) = Sdp::parse(bad) {
            // Whatever parses must survive every operation.
            let _ = sdp.streams();
            let mut sdp = sdp;
            sdp.anchor(ip("127.0.0.1"), &[Some(RelayPorts { rtp: 1, rtcp: 2 })]);
            let _ = sdp.encode();
        }
    }
    assert!(matches!(Sdp::parse(b"v=0\r\nm=audio x RTP/AVP 0\r\n"), Err(SdpError::Malformed(_))));
}
