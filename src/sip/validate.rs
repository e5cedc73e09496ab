//! Checks a received message once, before anything acts on it: the checks every SIP element
//! makes whatever its role (RFC 3261 §8.2.1–8.2.2 for requests, §8.1.3.3 and §18.1.2 for
//! responses), with the outcomes RFC 4475 asks for.
//!
//! Role-specific checks (416 for a URI scheme, 420 for an option tag, 483 at a proxy, 415
//! at a UAS) live with the element that plays the role.

use super::header::HeaderName;
use super::message::{Header, HeaderError, Message, Version};
use super::method::Method;
use super::uri::Uri;

/// Why a request is refused: the status, reason phrase and any headers the status calls for
/// (Unsupported with 420, Allow with 405/501, Accept with 415, a challenge with 401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// Headers the response carries beyond the copied ones (Allow, Unsupported…).
    pub headers: Vec<Header>,
}

impl Rejection {
    /// A refusal with `status` and `reason`.
    pub fn new(status: u16, reason: impl Into<String>) -> Rejection {
        Rejection { status, reason: reason.into(), headers: Vec::new() }
    }

    /// The same refusal with header `h` added.
    pub fn with_header(mut self, h: Header) -> Rejection {
        self.headers.push(h);
        self
    }

    /// The response to `request` that carries this rejection.
    pub fn to_response(&self, request: &Message, to_tag: Option<&str>) -> Message {
        let mut resp = request.make_response(self.status, &self.reason, to_tag);
        resp.headers.extend(self.headers.iter().cloned());
        resp
    }
}

impl From<HeaderError> for Rejection {
    fn from(e: HeaderError) -> Self {
        // RFC 3261 §21.4.1: the reason phrase should say what was wrong.
        let text = e.to_string();
        let mut reason = String::with_capacity(text.len());
        let mut chars = text.chars();
        if let Some(c) = chars.next() {
            reason.extend(c.to_uppercase());
            reason.push_str(chars.as_str());
        }
        Rejection::new(400, reason)
    }
}

/// Checks a request. `Err` carries the response to send; the caller still needs a parseable
/// top Via to send it (see [`can_answer`]).
pub fn check_request(msg: &Message) -> Result<(), Rejection> {
    let Some(method) = msg.method() else { return Ok(()) };
    // RFC 3261 §8.2.6 / §21.5.6: only SIP/2.0.
    if msg.version() != Version::SIP_2_0 {
        return Err(Rejection::new(505, "Version Not Supported"));
    }
    msg.vias()?;
    msg.from()?;
    msg.to()?;
    msg.call_id()?;
    let cseq = msg.cseq()?;
    if &cseq.method != method {
        // RFC 4475 §3.1.2.18: an unknown method whose CSeq disagrees is better answered 501.
        if !method.is_known() {
            return Err(Rejection::new(501, "Not Implemented"));
        }
        return Err(Rejection::new(400, "CSeq method does not match request method"));
    }
    msg.max_forwards()?;
    msg.expires()?;
    msg.content_type()?;
    msg.contacts()?;
    msg.routes()?;
    msg.record_routes()?;
    for name in [HeaderName::Require, HeaderName::ProxyRequire, HeaderName::Supported] {
        msg.option_tags(&name)?;
    }
    if msg.headers.get(&HeaderName::Accept).is_some() {
        msg.accept()?;
    }
    // RFC 4475 §3.1.2.11: escaped headers in a SIP Request-URI are refused, never forwarded.
    if let Some(Uri::Sip(uri)) = msg.request_uri() {
        if uri.headers.is_some() {
            return Err(Rejection::new(400, "Headers not allowed in Request-URI"));
        }
    }
    // RFC 3261 §9.1: a CANCEL has no body.
    if *method == Method::Cancel && !msg.body.is_empty() {
        return Err(Rejection::new(400, "CANCEL with a body"));
    }
    Ok(())
}

/// Why a response is dropped (responses are never answered, RFC 3261 §18.1.2).
pub fn check_response(msg: &Message) -> Result<(), &'static str> {
    if msg.version() != Version::SIP_2_0 {
        return Err("unsupported version");
    }
    let vias = msg.vias().map_err(|_| "bad Via")?;
    // RFC 4475 §3.3.10: a broadcast sent-by is never a place to send anything.
    for via in &vias {
        if via.host == super::uri::Host::Ipv4(std::net::Ipv4Addr::BROADCAST) {
            return Err("broadcast Via sent-by");
        }
    }
    msg.cseq().map_err(|_| "bad CSeq")?;
    msg.call_id().map_err(|_| "bad Call-ID")?;
    msg.from().map_err(|_| "bad From")?;
    msg.to().map_err(|_| "bad To")?;
    Ok(())
}

/// True when a response can be sent at all: it needs a top Via to be routed (RFC 3261
/// §18.2.2). Whatever of From, To, Call-ID and CSeq exists is copied raw; a request missing
/// them still deserves its 400 (RFC 4475 §3.3.1).
pub fn can_answer(msg: &Message) -> bool {
    msg.headers.get(&HeaderName::Via).is_some()
}
