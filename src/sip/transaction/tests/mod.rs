//! Tests of the transaction layer on a virtual clock: per-state unit tests for each side
//! ([`client`], [`server`]), matching rules ([`matching`]), a lock-step lossy network
//! ([`sim`]) and random input ([`fuzz`]).

mod client;
mod fuzz;
mod matching;
mod server;
mod sim;

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Event, Received, Timers, TransactionLayer};
use crate::sip::{parse, Message};

/// Where the test layers send: only a label.
pub(super) type Addr = &'static str;

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The epoch of a test's virtual clock. `Instant` has no constructor, so one real reading is
/// taken; everything after it is offsets.
#[allow(clippy::disallowed_methods)]
pub(super) fn epoch() -> Instant {
    Instant::now()
}

pub(super) fn msg(s: &str) -> Message {
    match parse(Bytes::from(s.replace('\n', "\r\n"))) {
        Ok(m) => m,
        Err(e) => panic!("test message does not parse: {e}\n{s}"),
    }
}

/// A request from `client.example.com` with the given top Via branch; the Call-ID follows the
/// branch so different branches are different calls.
pub(super) fn request(method: &str, branch: &str) -> Message {
    msg(&format!(
        "{method} sip:bob@example.com SIP/2.0\n\
         Via: SIP/2.0/UDP client.example.com:5060;branch={branch}\n\
         Max-Forwards: 70\n\
         To: Bob <sip:bob@example.com>\n\
         From: Alice <sip:alice@example.com>;tag=a1\n\
         Call-ID: call-{branch}\n\
         CSeq: 1 {method}\n\
         Content-Length: 0\n\n"
    ))
}

/// A request as [`request`] builds it, with another method in the request line and CSeq.
pub(super) fn with_method(req: &Message, method: &str) -> Message {
    let text = String::from_utf8_lossy(&req.encode()).into_owned();
    let old = req.method().map(|m| m.as_str().to_owned()).unwrap_or_default();
    let text = text
        .replacen(&format!("{old} sip:"), &format!("{method} sip:"), 1)
        .replace(&format!("CSeq: 1 {old}"), &format!("CSeq: 1 {method}"));
    msg(&text.replace("\r\n", "\n"))
}

/// The ACK a client transaction sends for a non-2xx final to `req` whose To tag was `tag`.
pub(super) fn ack_for(req: &Message, tag: &str) -> Message {
    let mut ack = with_method(req, "ACK");
    let mut to = req.to().expect("request has a To");
    to.set_param("tag", Some(tag.to_owned()));
    ack.headers.set(crate::sip::Header::new(crate::sip::HeaderName::To, to));
    ack
}

pub(super) fn response(req: &Message, code: u16) -> Message {
    req.make_response(code, "Reason", Some("b1"))
}

pub(super) fn layer() -> TransactionLayer<Addr> {
    TransactionLayer::new(Timers::default())
}

/// Everything queued for sending, parsed back.
pub(super) fn sent(l: &mut TransactionLayer<Addr>) -> Vec<(Addr, Message)> {
    let mut out = Vec::new();
    while let Some((to, bytes)) = l.poll_transmit() {
        out.push((to, parse(bytes).expect("the layer sent something unparseable")));
    }
    out
}

/// Status codes (or 0 for requests) of everything queued, in order.
pub(super) fn sent_codes(l: &mut TransactionLayer<Addr>) -> Vec<u16> {
    sent(l).into_iter().map(|(_, m)| m.status().unwrap_or(0)).collect()
}

pub(super) fn events(l: &mut TransactionLayer<Addr>) -> Vec<Event> {
    std::iter::from_fn(|| l.poll_event()).collect()
}

/// Runs every timer up to `until`, stepping to each deadline; returns the offsets from `t0` at
/// which something was sent, and what.
pub(super) fn run_until(l: &mut TransactionLayer<Addr>, t0: Instant, until: Duration) -> Vec<(Duration, Message)> {
    let mut out = Vec::new();
    while let Some(at) = l.poll_timeout() {
        if at > t0 + until {
            break;
        }
        l.handle_timeout(at);
        for (_, m) in sent(l) {
            out.push((at - t0, m));
        }
    }
    out
}

pub(super) fn gaps(times: &[Duration]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

pub(super) fn is_request_id(r: &Received) -> Option<super::ServerTxId> {
    match r {
        Received::Request { id, .. } => Some(*id),
        _ => None,
    }
}
