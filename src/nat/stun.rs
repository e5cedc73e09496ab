//! STUN Binding (RFC 8489) on the wire, through `rtc-stun` (`docs/dependencies.md` says why):
//! telling a STUN message from SIP on a shared port (RFC 7983 §7: the first byte is 0–3 and
//! the magic cookie sits at bytes 4–7), answering a Binding request with the address it came
//! from (§14.2 XOR-MAPPED-ADDRESS), and building and reading our own requests and their answers.
//!
//! Transaction IDs always come from the caller (drawn from the node's seeded generator):
//! `rtc-stun`'s own `TransactionId::new` reads the OS's randomness, which the sans-IO rule
//! forbids (`clippy.toml` bans it).

use std::net::SocketAddr;

use rtc_stun::addr::OtherAddress;
use rtc_stun::attributes::{ATTR_CHANGE_REQUEST, ATTR_OTHER_ADDRESS};
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::message::{
    Getter, Message, MessageType, Setter, TransactionId, BINDING_REQUEST, BINDING_SUCCESS, CLASS_REQUEST,
    CLASS_SUCCESS_RESPONSE, METHOD_BINDING,
};
use rtc_stun::xoraddr::XorMappedAddress;

/// A STUN transaction ID: 96 bits (RFC 8489 §5).
pub type StunTransactionId = [u8; 12];

/// Transaction IDs 1, 2, 3… (each byte the count): for tests that follow requests by ID.
#[cfg(test)]
pub(crate) fn counting_ids() -> impl FnMut() -> StunTransactionId {
    let mut n = 0u8;
    move || {
        n = n.wrapping_add(1);
        [n; 12]
    }
}

/// What a datagram that looks like STUN turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StunMessage {
    /// A Binding request: answer it with [`binding_success`].
    BindingRequest {
        /// Its transaction ID, echoed in the answer.
        id: StunTransactionId,
        /// Whether it carried a FINGERPRINT (the answer then carries one too, §14.7).
        fingerprint: bool,
        /// Whether it asked to be answered from another address or port (RFC 5780 §7.2,
        /// CHANGE-REQUEST), which a node with one address cannot do.
        change: bool,
    },
    /// A Binding success response to one of our requests.
    BindingSuccess {
        /// The transaction ID of the request it answers.
        id: StunTransactionId,
        /// The address the server saw our request come from.
        mapped: SocketAddr,
        /// The server's other address (RFC 5780 §7.4, OTHER-ADDRESS), when it has one: what
        /// the behaviour tests ask next.
        other: Option<SocketAddr>,
    },
    /// Any other STUN message (an indication, an error response, another method): ignored.
    Other,
}

/// Whether `data` is a STUN message rather than SIP (RFC 7983 §7, RFC 8489 §5): the first
/// byte is 0–3 (SIP starts with a letter) and the magic cookie follows the length.
pub fn is_stun(data: &[u8]) -> bool {
    data.first().is_some_and(|b| *b < 4) && rtc_stun::message::is_stun_message(data)
}

/// Reads a datagram [`is_stun`] accepted; `None` when it does not decode (or a FINGERPRINT is
/// present and wrong).
pub fn parse(data: &[u8]) -> Option<StunMessage> {
    let mut m = Message::new();
    m.unmarshal_binary(data).ok()?;
    let fingerprint = m.contains(rtc_stun::attributes::ATTR_FINGERPRINT);
    if fingerprint && FINGERPRINT.check(&m).is_err() {
        return None;
    }
    if m.typ.method != METHOD_BINDING {
        return Some(StunMessage::Other);
    }
    let id = m.transaction_id.0;
    match m.typ.class {
        CLASS_REQUEST => {
            let change = m.contains(ATTR_CHANGE_REQUEST);
            Some(StunMessage::BindingRequest { id, fingerprint, change })
        }
        CLASS_SUCCESS_RESPONSE => {
            let mut x = XorMappedAddress::default();
            x.get_from(&m).ok()?;
            let mut o = OtherAddress::default();
            let other = o.get_from_as(&m, ATTR_OTHER_ADDRESS).ok().map(|()| SocketAddr::new(o.ip, o.port));
            Some(StunMessage::BindingSuccess { id, mapped: SocketAddr::new(x.ip, x.port), other })
        }
        _ => Some(StunMessage::Other),
    }
}

/// The answer to Binding request `id`: the address it came from as XOR-MAPPED-ADDRESS, and a
/// FINGERPRINT when the request had one. No SOFTWARE: the answer to an unauthenticated source
/// stays small (under twice the request).
pub fn binding_success(id: StunTransactionId, from: SocketAddr, fingerprint: bool) -> Vec<u8> {
    let mapped = XorMappedAddress { ip: from.ip(), port: from.port() };
    build(BINDING_SUCCESS, id, mapped, fingerprint)
}

/// A Binding request with transaction ID `id`, with a FINGERPRINT (RFC 5626 §4.4.2 asks it of
/// keep-alives; servers accept it everywhere).
pub fn binding_request(id: StunTransactionId) -> Vec<u8> {
    let mut m = Message::new();
    let setters: [Box<dyn Setter>; 3] = [Box::new(BINDING_REQUEST), Box::new(TransactionId(id)), Box::new(FINGERPRINT)];
    match m.build(&setters) {
        Ok(()) => m.raw,
        // Building from these three setters cannot fail; an empty datagram is dropped anyway.
        Err(_) => Vec::new(),
    }
}

/// A Binding request asking the server to answer from its other address (`change_ip`) and/or
/// its other port (`change_port`): RFC 5780 §7.2's CHANGE-REQUEST, for the filtering tests.
pub fn binding_request_changing(id: StunTransactionId, change_ip: bool, change_port: bool) -> Vec<u8> {
    let mut m = Message::new();
    let setters: [Box<dyn Setter>; 2] = [Box::new(BINDING_REQUEST), Box::new(TransactionId(id))];
    if m.build(&setters).is_err() {
        return Vec::new();
    }
    let flags = (u8::from(change_ip) << 2) | (u8::from(change_port) << 1);
    m.add(ATTR_CHANGE_REQUEST, &[0, 0, 0, flags]);
    match FINGERPRINT.add_to(&mut m) {
        Ok(()) => m.raw,
        Err(_) => Vec::new(),
    }
}

/// The host and port of a `stun:` URI (RFC 7064 §3.1: `stun:host[:port]`, port 3478 by
/// default; an IPv6 host in brackets). `stuns:` (STUN over TLS) is refused: not supported.
pub fn parse_uri(uri: &str) -> Result<(String, u16), String> {
    let rest = match uri.split_once(':') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("stun") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("stuns") => {
            return Err(format!("{uri}: stuns: (STUN over TLS) is not supported; use stun:"))
        }
        _ => return Err(format!("{uri}: not a stun: URI (stun:HOST[:PORT])")),
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| format!("{uri}: unclosed [ in the host"))?;
        (host, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("{uri}: bad port {p:?}"))?,
        None => 3478,
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
        return Err(format!("{uri}: bad host {host:?}"));
    }
    Ok((host.to_owned(), port))
}

fn build(typ: MessageType, id: StunTransactionId, mapped: XorMappedAddress, fingerprint: bool) -> Vec<u8> {
    let mut m = Message::new();
    let mut setters: Vec<Box<dyn Setter + '_>> = vec![Box::new(typ), Box::new(TransactionId(id)), Box::new(mapped)];
    if fingerprint {
        setters.push(Box::new(FINGERPRINT));
    }
    match m.build(&setters) {
        Ok(()) => m.raw,
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binding_request_is_answered_with_the_address_it_came_from() {
        let id = [9; 12];
        let request = binding_request(id);
        assert!(is_stun(&request));
        assert_eq!(parse(&request), Some(StunMessage::BindingRequest { id, fingerprint: true, change: false }));
        let changing = binding_request_changing(id, true, false);
        assert_eq!(parse(&changing), Some(StunMessage::BindingRequest { id, fingerprint: true, change: true }));
        for from in ["203.0.113.7:40123", "[2001:db8::7]:5070"] {
            let from: SocketAddr = from.parse().unwrap();
            let answer = binding_success(id, from, true);
            assert_eq!(parse(&answer), Some(StunMessage::BindingSuccess { id, mapped: from, other: None }));
            assert!(answer.len() < 2 * request.len() + 8, "{} bytes for {}", answer.len(), request.len());
        }
    }

    #[test]
    fn stun_uris_name_a_host_and_a_port() {
        assert_eq!(parse_uri("stun:stun.example.net"), Ok(("stun.example.net".into(), 3478)));
        assert_eq!(parse_uri("stun:192.0.2.1:19302"), Ok(("192.0.2.1".into(), 19302)));
        assert_eq!(parse_uri("STUN:[2001:db8::1]:3479"), Ok(("2001:db8::1".into(), 3479)));
        assert_eq!(parse_uri("stun:[2001:db8::1]"), Ok(("2001:db8::1".into(), 3478)));
        for bad in
            ["stuns:x.example", "turn:x.example", "x.example:3478", "stun:", "stun:x:0", "stun:x:99999", "stun:[::1"]
        {
            assert!(parse_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sip_and_garbage_are_not_stun_and_a_bad_fingerprint_is_refused() {
        assert!(!is_stun(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n"));
        assert!(!is_stun(b"\r\n\r\n"));
        assert!(!is_stun(&[0, 1, 0, 0]));
        let mut request = binding_request([1; 12]);
        let last = request.len() - 1;
        request[last] ^= 0xff;
        assert!(is_stun(&request));
        assert_eq!(parse(&request), None);
        // A header announcing more attributes than the datagram holds.
        let mut short = binding_request([2; 12]);
        short.truncate(22);
        assert_eq!(parse(&short), None);
    }

    proptest::proptest! {
        /// Whatever follows a STUN header, reading it never panics (the overlay port is public).
        #[test]
        fn parsing_never_panics(method in 0u16..0x4000, body in proptest::collection::vec(proptest::num::u8::ANY, 0..120)) {
            let mut data = method.to_be_bytes().to_vec();
            data.extend_from_slice(&(body.len() as u16).to_be_bytes());
            data.extend_from_slice(&rtc_stun::message::MAGIC_COOKIE.to_be_bytes());
            data.extend_from_slice(&[3; 12]);
            data.extend_from_slice(&body);
            let _ = parse(&data);
            let mut attribute = vec![0x00, 0x20, 0x00, body.len().min(8) as u8];
            attribute.extend_from_slice(&body);
            let mut with_xor = data[..20].to_vec();
            with_xor[0..2].copy_from_slice(&[0x01, 0x01]);
            with_xor[2..4].copy_from_slice(&(attribute.len() as u16).to_be_bytes());
            with_xor.extend_from_slice(&attribute);
            let _ = parse(&with_xor);
        }
    }
}
