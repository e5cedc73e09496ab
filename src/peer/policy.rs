//! The checks and answers of each role the node plays for a request, in the order the RFC
//! gives them: a proxy (RFC 3261 §16.3) for requests aimed at a user, a user agent server
//! (§8.2) for requests aimed at the node itself (and for REGISTER, before the registrar in
//! `crate::proxy` takes it).
//!
//! Pure functions of the request: no state.

use crate::sip::header::MediaType;
use crate::sip::validate::Rejection;
use crate::sip::{Header, HeaderName, Message, Method, Uri};

/// Methods the node handles in some role (RFC 3261 §20.5). Sent in Allow.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE, SUBSCRIBE, NOTIFY, INFO, UPDATE";

/// Option tags the node implements for phones (RFC 3261 §19.2). None yet. The overlay's `dht`
/// extension is spoken only on the overlay listener (`overlay_wire::OPTION_TAG`); a request that
/// requires it anywhere else gets 420.
pub const SUPPORTED: &[&str] = &[];

/// Body types the node's own UAS role understands (RFC 3261 §8.2.3).
pub const ACCEPT: &str = "application/sdp";

/// True when the Request-URI names the node itself rather than a user: a SIP URI without a
/// user part (`sip:127.0.0.1:5060`, `sip:p2p.test`).
pub fn addressed_to_node(uri: &Uri) -> bool {
    matches!(uri, Uri::Sip(u) if u.user.is_none())
}

/// RFC 3261 §8.2.2.1 / §16.3 step 2: only SIP and SIPS Request-URIs can be served.
pub fn check_scheme(msg: &Message) -> Result<(), Rejection> {
    match msg.request_uri() {
        Some(Uri::Sip(_)) | None => Ok(()),
        Some(Uri::Other { .. }) => Err(Rejection::new(416, "Unsupported URI Scheme")),
    }
}

/// Option tags in `name` that the node does not support.
fn unsupported(msg: &Message, name: &HeaderName) -> Vec<String> {
    msg.option_tags(name)
        .unwrap_or_default()
        .into_iter()
        .filter(|t| !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)))
        .collect()
}

fn bad_extension(tags: Vec<String>) -> Result<(), Rejection> {
    if tags.is_empty() {
        return Ok(());
    }
    Err(Rejection::new(420, "Bad Extension").with_header(Header::new(HeaderName::Unsupported, tags.join(", "))))
}

/// The proxy's checks, RFC 3261 §16.3 steps 3–5 (step 2 is [`check_scheme`]): Max-Forwards,
/// loops, Proxy-Require. `own_sent_by` are the `host:port` forms of the node's listeners.
pub fn proxy_checks(msg: &Message, own_sent_by: &[String]) -> Result<(), Rejection> {
    // Step 3. OPTIONS with Max-Forwards 0 may be answered as a UAS, but RFC 4475 §3.3.11 asks
    // a proxy to answer 483, which tells the sender the most.
    if msg.max_forwards().ok().flatten() == Some(0) {
        return Err(Rejection::new(483, "Too Many Hops"));
    }
    // Step 4: a Via that names us means the request has been here before. Without spiral
    // support (we never rewrite the Request-URI and send it back to ourselves) this is a loop.
    if let Ok(vias) = msg.vias() {
        if vias.iter().skip(1).any(|v| own_sent_by.iter().any(|o| o.eq_ignore_ascii_case(&v.sent_by()))) {
            return Err(Rejection::new(482, "Loop Detected"));
        }
    }
    // Step 5.
    bad_extension(unsupported(msg, &HeaderName::ProxyRequire))
}

/// The UAS checks of RFC 3261 §8.2.2.3 (Require) and §8.2.3 (Content-Type, Accept), for a
/// request addressed to the node itself.
pub fn uas_checks(msg: &Message) -> Result<(), Rejection> {
    let method = msg.method().cloned().unwrap_or(Method::Options);
    // §8.2.2.3: Require is not checked for ACK and CANCEL.
    if !matches!(method, Method::Ack | Method::Cancel) {
        bad_extension(unsupported(msg, &HeaderName::Require))?;
    }
    if !msg.body.is_empty() {
        if let Ok(Some(ct)) = msg.content_type() {
            if !ct.is("application", "sdp") {
                return Err(
                    Rejection::new(415, "Unsupported Media Type").with_header(Header::new(HeaderName::Accept, ACCEPT))
                );
            }
        }
    }
    // §8.2.3 / §21.4.7: an INVITE's answer would carry SDP; if Accept rules SDP out, 406.
    if method == Method::Invite && msg.headers.get(&HeaderName::Accept).is_some() {
        let sdp = MediaType::new("application", "sdp");
        if !msg.accept().unwrap_or_default().iter().any(|m| m.matches(&sdp)) {
            return Err(Rejection::new(406, "Not Acceptable"));
        }
    }
    Ok(())
}

/// The answer to OPTIONS addressed to the node (RFC 3261 §11.2): 200 with what it can do.
pub fn options_ok(msg: &Message, to_tag: &str, server: &str, supported: &[&str]) -> Message {
    let mut resp = msg.make_response(200, "OK", Some(to_tag));
    resp.headers.push(Header::new(HeaderName::Allow, ALLOW));
    resp.headers.push(Header::new(HeaderName::Supported, supported.join(", ")));
    resp.headers.push(Header::new(HeaderName::Accept, ACCEPT));
    resp.headers.push(Header::new(HeaderName::Server, server));
    resp
}
