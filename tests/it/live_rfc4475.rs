//! All 49 RFC 4475 torture messages, sent byte for byte over UDP to a running `p2psip node`'s
//! proxy port; each must get what the RFC expects, and the node must still answer OPTIONS at
//! the end.
//!
//! Responses go where RFC 3261 §18.2.2 says: the datagram's source IP with the Via's sent-by
//! port (5060 unless the Via names one). So the test sends from 127.0.0.77:5060 and also
//! listens on 127.0.0.77 at every other sent-by port the corpus names. After each message it
//! sends an OPTIONS probe from the same socket: the node handles datagrams in order, so once the
//! probe's 200 is back, every answer to the message has arrived, and a message the RFC wants
//! dropped is known to have been dropped without waiting on a clock.
//!
//! The corpus reuses branches: cparam02 and regescrt carry cparam01's branch, sent-by and
//! method, novelsc carries unkscm's. RFC 3261 §17.2.3 makes such a request a retransmission of
//! the earlier one while its transaction lives, so a stateful node answers it with the earlier
//! message's response again. The test expects exactly that, except for what the node answers
//! without a transaction: REGISTERs without credentials (cparam01/02, regescrt), which the
//! registrar challenges statelessly (`proxy::Proxy::register_stateless`), and OPTIONS to the
//! node itself (unkscm, novelsc; RFC 3261 §8.2.7; docs/security.md, H4), so each gets its own answer.

#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};

use crate::common::{options_request, status_code, udp_options, Node};
use crate::rfc4475_table::{load, Expect, TABLE};
use p2psip::sip::{parse, HeaderName, Message};

const SENDER_IP: &str = "127.0.0.77";

/// The port the node must answer a message on: RFC 3581 rport → our source port; otherwise
/// the top Via's sent-by port or 5060; with no readable Via, the source port.
fn reply_port(request: Option<&Message>) -> u16 {
    match request.and_then(|m| m.top_via().ok()) {
        Some(v) if v.rport().is_some() => 5060,
        Some(v) => v.port.unwrap_or(5060),
        None => 5060,
    }
}

/// Sends an OPTIONS probe from `sock` and reads until its final response, keeping every other
/// datagram that arrives meanwhile. Retransmits from T1 doubling to T2, gives up at 64·T1
/// (RFC 3261 §17.1.2.2).
fn probe(sock: &UdpSocket, target: SocketAddr, call_id: &str, others: &mut Vec<Vec<u8>>) -> Option<u16> {
    use std::time::{Duration, Instant};
    let request = options_request(target, sock.local_addr().unwrap(), "UDP", call_id);
    let give_up = Instant::now() + Duration::from_secs(32);
    let mut interval = Duration::from_millis(500);
    let mut buf = vec![0u8; 65_535];
    while Instant::now() < give_up {
        sock.send_to(request.as_bytes(), target).unwrap();
        let resend_at = Instant::now() + interval;
        while let Some(wait) = resend_at.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            sock.set_read_timeout(Some(wait)).unwrap();
            let Ok(n) = sock.recv(&mut buf) else { break };
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.contains(&format!("Call-ID: {call_id}\r\n")) {
                match status_code(&text) {
                    Some(code) if code >= 200 => return Some(code),
                    _ => continue,
                }
            }
            others.push(buf[..n].to_vec());
        }
        interval = (interval * 2).min(Duration::from_secs(4));
    }
    None
}

/// The RFC 3261 §17.2.3 server transaction key: branch, sent-by and method (ACK as INVITE),
/// for requests with a magic-cookie branch that passed validation.
fn transaction_key(m: &Message) -> Option<(String, String, String)> {
    if p2psip::sip::validate::check_request(m).is_err() {
        return None;
    }
    let via = m.top_via().ok().filter(|v| v.has_rfc3261_branch())?;
    let method = match m.method()?.as_str() {
        "ACK" => "INVITE".to_owned(),
        other => other.to_owned(),
    };
    Some((via.branch()?.to_owned(), via.sent_by().to_ascii_lowercase(), method))
}

fn raw(m: &Message, h: HeaderName) -> Option<Vec<u8>> {
    m.headers.get(&h).map(|x| x.value().to_vec())
}

#[test]
fn all_torture_messages_get_what_the_rfc_expects_from_a_live_node() {
    let node = Node::start("127.0.0.50");
    let target = node.proxy;

    // One socket per port the node may answer on; the first is the sender.
    let mut sockets: BTreeMap<u16, UdpSocket> = BTreeMap::new();
    for (name, _, _) in TABLE {
        let port = reply_port(parse(load(name)).ok().as_ref());
        if let std::collections::btree_map::Entry::Vacant(e) = sockets.entry(port) {
            let addr: SocketAddr = format!("{SENDER_IP}:{port}").parse().unwrap();
            let sock = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr} (needed as a Via sent-by): {e}"));
            e.insert(sock);
        }
    }
    let sender = sockets.get(&5060).expect("the sender socket").try_clone().unwrap();

    let mut wrong = Vec::new();
    let mut buf = vec![0u8; 65_535];
    // Transaction key → the message that opened that transaction (and so whose answer a
    // retransmission gets).
    let mut opened: BTreeMap<(String, String, String), (&str, Expect, Message)> = BTreeMap::new();
    let mut retransmissions = 0;
    for (i, (name, section, expect)) in TABLE.iter().enumerate() {
        let data = load(name);
        let mut request = parse(data.clone()).ok();
        let mut expect = *expect;
        let mut answered_as = *name;
        let stateless = request.as_ref().is_some_and(|r| {
            let to_node = !matches!(r.request_uri(), Some(p2psip::sip::Uri::Sip(u)) if u.user.is_some());
            (r.method() == Some(&p2psip::sip::Method::Register) && r.headers.get(&HeaderName::Authorization).is_none())
                || (r.method() == Some(&p2psip::sip::Method::Options) && to_node)
        });
        if let Some(key) = request.as_ref().filter(|_| !stateless).and_then(transaction_key) {
            match opened.get(&key) {
                Some((first, first_expect, first_request)) => {
                    (answered_as, expect, request) = (first, *first_expect, Some(first_request.clone()));
                    retransmissions += 1;
                }
                None => {
                    opened.insert(key, (name, expect, request.clone().expect("parsed")));
                }
            }
        }
        sender.send_to(&data, target).expect("send");
        // The probe: once its 200 is back, everything the node sent for `name` has arrived.
        let mut received = Vec::new();
        let probe_id = format!("probe-{i}-{name}");
        assert_eq!(probe(&sender, target, &probe_id, &mut received), Some(200), "{name}: node stopped answering");
        for sock in sockets.values() {
            sock.set_nonblocking(true).unwrap();
            while let Ok(n) = sock.recv(&mut buf) {
                received.push(buf[..n].to_vec());
            }
            sock.set_nonblocking(false).unwrap();
        }

        let mut finals: Vec<u16> = Vec::new();
        for datagram in received {
            let Ok(resp) = parse(bytes::Bytes::from(datagram)) else { continue };
            let Some(code) = resp.status() else { continue };
            // Answers to this message carry its Call-ID (or none, like it); earlier INVITEs'
            // retransmitted finals carry theirs.
            let same_call = match &request {
                Some(req) => raw(&resp, HeaderName::CallId) == raw(req, HeaderName::CallId),
                None => {
                    let text = String::from_utf8_lossy(&data);
                    raw(&resp, HeaderName::CallId).is_some_and(|c| text.contains(&*String::from_utf8_lossy(&c)))
                }
            };
            if same_call && code >= 200 && !finals.contains(&code) {
                finals.push(code);
            }
        }
        let ok = match expect {
            Expect::Status(codes) => finals.len() == 1 && codes.contains(&finals[0]),
            Expect::Dropped => finals.is_empty(),
        };
        if !ok {
            wrong.push(format!(
                "{name} (RFC 4475 §{section}, answered as {answered_as}): expected {expect:?}, got {finals:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{} of 49 wrong:\n{}\nnode log:\n{}", wrong.len(), wrong.join("\n"), node.log());

    // Every reused branch belongs to a request answered without a transaction.
    assert_eq!(retransmissions, 0);

    // Still up and answering on both listeners; the garbage was counted.
    assert_eq!(udp_options(&sender, target, "after-the-torture"), Some(200));
    assert_eq!(udp_options(&sender, node.listen, "after-the-torture-overlay"), Some(200));
    assert!(node.counter("parse_errors") >= 5, "parse errors counted");
    assert!(node.counter("requests_rejected") >= 20);
}
