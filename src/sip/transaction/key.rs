//! Matching messages to transactions (RFC 3261 §17.1.3, §17.2.3, §9.2).
//!
//! A server transaction is found by the top Via `branch` and `sent-by` plus the method, with
//! ACK standing for the INVITE it acknowledges; a branch without the `z9hG4bK` magic cookie
//! falls back to the RFC 2543 rule: Request-URI, To tag, From tag, Call-ID, CSeq and the whole
//! top Via. A client transaction is found by the branch of the response's top Via plus the
//! CSeq method, so a CANCEL (same branch as its INVITE, §9.1) is a transaction of its own.
//!
//! Keys are plain ordered values: a missing or malformed header makes an empty field, never an
//! error, so any message yields a key (an unvalidated one simply matches nothing useful).

use crate::sip::header::NameAddr;
use crate::sip::message::Message;
use crate::sip::method::Method;

/// Key of a client transaction (§17.1.3).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ClientKey {
    /// Compared byte for byte, as the magic cookie itself is (§8.1.1.7).
    branch: String,
    method: Method,
}

impl ClientKey {
    /// The key of a request we send: its top Via branch and its method. `None` without a
    /// branch, in which case no response can be matched to it.
    pub(super) fn for_request(request: &Message) -> Option<ClientKey> {
        let via = request.top_via().ok()?;
        let branch = via.branch()?.to_owned();
        Some(ClientKey { branch, method: request.method()?.clone() })
    }

    /// The key a response selects: top Via branch and CSeq method (§17.1.3).
    pub(super) fn for_response(response: &Message) -> Option<ClientKey> {
        let via = response.top_via().ok()?;
        let branch = via.branch()?.to_owned();
        Some(ClientKey { branch, method: response.cseq().ok()?.method })
    }
}

/// Key of a server transaction (§17.2.3).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum ServerKey {
    /// RFC 3261: the branch is globally unique, qualified by sent-by and method.
    Branch { branch: String, sent_by: String, method: Method },
    /// RFC 2543 fallback. The To tag here is the request's; an ACK is matched with the tag of
    /// the response instead (see [`ServerKey::ack_candidates`]).
    Rfc2543 {
        request_uri: String,
        to_tag: Option<String>,
        from_tag: Option<String>,
        call_id: String,
        cseq: u32,
        method: Method,
        top_via: String,
    },
}

fn tag(addr: Result<NameAddr, impl Sized>) -> Option<String> {
    addr.ok().and_then(|a| a.tag().map(str::to_owned))
}

impl ServerKey {
    /// The key a request selects. An ACK selects its INVITE (§17.2.3); a CANCEL its own
    /// transaction.
    pub(super) fn for_request(request: &Message) -> ServerKey {
        let method = match request.method() {
            Some(Method::Ack) | None => Method::Invite,
            Some(m) => m.clone(),
        };
        let via = request.top_via().ok();
        if let Some(via) = via.as_ref().filter(|v| v.has_rfc3261_branch()) {
            return ServerKey::Branch {
                branch: via.branch().unwrap_or_default().to_owned(),
                // Host names compare case-insensitively (§19.1.4).
                sent_by: via.sent_by().to_ascii_lowercase(),
                method,
            };
        }
        ServerKey::Rfc2543 {
            request_uri: request.request_uri().map(ToString::to_string).unwrap_or_default(),
            to_tag: tag(request.to()),
            from_tag: tag(request.from()),
            call_id: request.call_id().unwrap_or_default().to_owned(),
            cseq: request.cseq().map(|c| c.seq).unwrap_or_default(),
            method,
            top_via: via.map(|v| v.to_string()).unwrap_or_default(),
        }
    }

    /// The same key with another method: a CANCEL's key turned into the key of the INVITE it
    /// cancels (§9.2: same branch and sent-by, or the same RFC 2543 fields).
    pub(super) fn with_method(&self, method: Method) -> ServerKey {
        let mut k = self.clone();
        match &mut k {
            ServerKey::Branch { method: m, .. } | ServerKey::Rfc2543 { method: m, .. } => *m = method,
        }
        k
    }

    /// Keys an ACK may have been created under. With a branch, the one key. Under RFC 2543 the
    /// ACK carries the To tag of our response, while the INVITE carried none (an initial
    /// INVITE) or the same one (a re-INVITE); the caller then checks the response's tag.
    pub(super) fn ack_candidates(&self) -> Vec<ServerKey> {
        match self {
            ServerKey::Branch { .. } => vec![self.clone()],
            ServerKey::Rfc2543 { to_tag, .. } => {
                let mut untagged = self.clone();
                if let ServerKey::Rfc2543 { to_tag: t, .. } = &mut untagged {
                    *t = None;
                }
                if to_tag.is_some() {
                    vec![self.clone(), untagged]
                } else {
                    vec![untagged]
                }
            }
        }
    }

    pub(super) fn is_rfc2543(&self) -> bool {
        matches!(self, ServerKey::Rfc2543 { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse;
    use bytes::Bytes;

    fn msg(s: &str) -> Message {
        parse(Bytes::from(s.replace('\n', "\r\n"))).unwrap()
    }

    const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\n\
        Via: SIP/2.0/UDP PC33.Example.com:5060;branch=z9hG4bK776asdhds\n\
        Max-Forwards: 70\n\
        To: Bob <sip:bob@example.com>\n\
        From: Alice <sip:alice@example.com>;tag=1928301774\n\
        Call-ID: a84b4c76e66710\n\
        CSeq: 314159 INVITE\n\
        Content-Length: 0\n\n";

    #[test]
    fn ack_and_cancel_against_invite() {
        let invite = msg(INVITE);
        let k = ServerKey::for_request(&invite);
        assert!(!k.is_rfc2543());
        let ack = msg(&INVITE.replace("INVITE sip", "ACK sip").replace("314159 INVITE", "314159 ACK"));
        assert_eq!(ServerKey::for_request(&ack), k);
        let cancel = msg(&INVITE.replace("INVITE sip", "CANCEL sip").replace("314159 INVITE", "314159 CANCEL"));
        let ck = ServerKey::for_request(&cancel);
        assert_ne!(ck, k);
        assert_eq!(ck.with_method(Method::Invite), k);
        // sent-by host compares case-insensitively; a different port is another sender.
        let other = msg(&INVITE.replace("PC33.Example.com", "pc33.example.COM"));
        assert_eq!(ServerKey::for_request(&other), k);
        let other = msg(&INVITE.replace(":5060;", ":5070;"));
        assert_ne!(ServerKey::for_request(&other), k);
    }

    #[test]
    fn rfc2543_fallback() {
        let old = INVITE.replace("branch=z9hG4bK776asdhds", "branch=776asdhds");
        let k = ServerKey::for_request(&msg(&old));
        assert!(k.is_rfc2543());
        let no_branch = INVITE.replace(";branch=z9hG4bK776asdhds", "");
        assert!(ServerKey::for_request(&msg(&no_branch)).is_rfc2543());
        // The ACK carries our response's To tag: it is looked up without it.
        let ack = old
            .replace("INVITE sip", "ACK sip")
            .replace("314159 INVITE", "314159 ACK")
            .replace("<sip:bob@example.com>\n", "<sip:bob@example.com>;tag=xyz\n");
        let cands = ServerKey::for_request(&msg(&ack)).ack_candidates();
        assert_eq!(cands.len(), 2);
        assert_eq!(cands[1], k);
    }

    #[test]
    fn client_key_uses_cseq_method() {
        let invite = msg(INVITE);
        let k = ClientKey::for_request(&invite).unwrap();
        let resp = invite.make_response(180, "Ringing", Some("t"));
        assert_eq!(ClientKey::for_response(&resp), Some(k.clone()));
        let mut cancel_resp = resp.clone();
        cancel_resp.headers.set(crate::sip::Header::new(crate::sip::HeaderName::CSeq, "314159 CANCEL"));
        assert_ne!(ClientKey::for_response(&cancel_resp), Some(k));
    }
}
