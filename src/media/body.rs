//! The message bodies the anchor reads and writes: a phone's body and our ICE part, apart or
//! together (`multipart/mixed`, RFC 5621), and the phone's SDP in it.

use bytes::Bytes;

use super::frag;
use crate::sdp::Sdp;
use crate::sip::header::MediaType;
use crate::sip::multipart::{self, Part};
use crate::sip::Message;

/// How a message's body splits: the phone's part (its type and bytes) and our ICE part.
pub(super) struct Body {
    /// The phone's body: its type and bytes.
    pub phone: Option<(Option<MediaType>, Bytes)>,
    /// Our ICE part.
    pub frag: Option<Vec<u8>>,
}

pub(super) fn split_body(msg: &Message) -> Body {
    let ty = msg.content_type().ok().flatten();
    if msg.body.is_empty() {
        return Body { phone: None, frag: None };
    }
    if let Some(parts) = ty.as_ref().and_then(|t| multipart::decode(t, &msg.body)) {
        let (ours, theirs): (Vec<Part>, Vec<Part>) =
            parts.into_iter().partition(|p| p.content_type.is("application", frag::SUBTYPE));
        let frag = ours.into_iter().next().map(|p| p.body);
        let phone = match theirs.len() {
            0 => None,
            1 => theirs.into_iter().next().map(|p| (Some(p.content_type), Bytes::from(p.body))),
            // Several parts of the phone's own: they stay a multipart body, less ours.
            _ => {
                let (t, b) = multipart::encode(&theirs, "p2psip-phone");
                Some((Some(t), Bytes::from(b)))
            }
        };
        return Body { phone, frag };
    }
    Body { phone: Some((ty, msg.body.clone())), frag: None }
}

/// The SDP of a phone's part, when it is one.
pub(super) fn sdp_of(body: &Body) -> Option<Sdp> {
    let (ty, bytes) = body.phone.as_ref()?;
    if ty.as_ref().is_some_and(|t| !t.is("application", "sdp")) {
        return None;
    }
    Sdp::parse(bytes).ok()
}

/// Takes our ICE part out: the phone gets its own body back.
pub(super) fn strip_frag(msg: &mut Message, body: &Body) {
    if body.frag.is_none() {
        return;
    }
    match &body.phone {
        Some((ty, bytes)) => msg.set_body(bytes.clone(), ty.as_ref()),
        None => msg.set_body(Bytes::new(), None),
    }
}

/// Puts our ICE part beside the phone's body (`multipart/mixed` with `boundary`).
pub(super) fn attach_frag(msg: &mut Message, body: &Body, frag: Vec<u8>, boundary: &str) {
    let mut parts = Vec::new();
    if let Some((ty, bytes)) = &body.phone {
        let content_type = ty.clone().unwrap_or_else(|| MediaType::new("application", "sdp"));
        parts.push(Part { content_type, body: bytes.to_vec() });
    }
    parts.push(Part { content_type: MediaType::new("application", frag::SUBTYPE), body: frag });
    let (ty, bytes) = multipart::encode(&parts, boundary);
    msg.set_body(Bytes::from(bytes), Some(&ty));
}
