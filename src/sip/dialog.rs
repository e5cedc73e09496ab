//! Dialogs (RFC 3261 §12): the state two user agents keep between a dialog-creating request and
//! the requests inside it. Subscriptions (RFC 6665 §4.1.2, §4.2.2) are the node's first
//! dialogs of its own: a presence agent answering a SUBSCRIBE (the UAS side) and a watcher
//! subscribing for its phones (the UAC side). Pure data: building requests and checking
//! sequence numbers; sending is the caller's.

use crate::sip::header::NameAddr;
use crate::sip::{Header, HeaderName, Message, Method, Uri};

/// What names a dialog from this side: Call-ID, our tag, their tag (§12).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DialogId {
    /// The Call-ID.
    pub call_id: String,
    /// Our tag.
    pub local_tag: String,
    /// Theirs.
    pub remote_tag: String,
}

impl DialogId {
    /// The ID of the dialog `req` belongs to, seen from the side that receives it (its To tag
    /// is ours). `None` outside a dialog.
    pub fn of_request(req: &Message) -> Option<DialogId> {
        Some(DialogId {
            call_id: req.call_id().ok()?.to_owned(),
            local_tag: req.to().ok()?.tag()?.to_owned(),
            remote_tag: req.from().ok()?.tag()?.to_owned(),
        })
    }
}

/// One dialog's state (§12.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    /// Call-ID and tags.
    pub id: DialogId,
    /// Our URI (From of what we send), without tag.
    pub local_uri: Uri,
    /// Theirs (To of what we send).
    pub remote_uri: Uri,
    /// Where requests in the dialog go: their Contact (§12.1.1, §12.1.2).
    pub remote_target: Uri,
    /// The route set, in the order our requests carry it.
    pub route_set: Vec<NameAddr>,
    /// Our last CSeq number.
    pub local_seq: u32,
    /// Theirs; `None` until they send a request in the dialog.
    pub remote_seq: Option<u32>,
}

fn contact_uri(msg: &Message) -> Option<Uri> {
    match msg.contacts().ok()? {
        crate::sip::Contacts::List(list) => list.into_iter().next().map(|na| na.uri),
        crate::sip::Contacts::Star => None,
    }
}

impl Dialog {
    /// §12.1.1: the UAS side, from the request that creates the dialog and the tag we put in
    /// our answer's To. The route set is the request's Record-Route in order; the remote
    /// target its Contact.
    pub fn as_uas(req: &Message, local_tag: &str) -> Option<Dialog> {
        let from = req.from().ok()?;
        Some(Dialog {
            id: DialogId {
                call_id: req.call_id().ok()?.to_owned(),
                local_tag: local_tag.to_owned(),
                remote_tag: from.tag()?.to_owned(),
            },
            local_uri: req.to().ok()?.uri,
            remote_uri: from.uri,
            remote_target: contact_uri(req)?,
            route_set: req.record_routes().ok()?,
            local_seq: 0,
            remote_seq: Some(req.cseq().ok()?.seq),
        })
    }

    /// §12.1.2: the UAC side, from the request we sent and the message that made the dialog
    /// on the other side (its 2xx, or for a subscription possibly its first NOTIFY, RFC 6665
    /// §4.1.2.4). The route set is that message's Record-Route reversed for a response, in
    /// order for a NOTIFY (a request from them).
    pub fn as_uac(req: &Message, answer: &Message) -> Option<Dialog> {
        let from = req.from().ok()?;
        let (remote_tag, route_set, remote_seq) = if answer.is_request() {
            (answer.from().ok()?.tag()?.to_owned(), answer.record_routes().ok()?, Some(answer.cseq().ok()?.seq))
        } else {
            let mut routes = answer.record_routes().ok()?;
            routes.reverse();
            (answer.to().ok()?.tag()?.to_owned(), routes, None)
        };
        Some(Dialog {
            id: DialogId { call_id: req.call_id().ok()?.to_owned(), local_tag: from.tag()?.to_owned(), remote_tag },
            local_uri: from.uri,
            remote_uri: req.to().ok()?.uri,
            remote_target: contact_uri(answer)?,
            route_set,
            local_seq: req.cseq().ok()?.seq,
            remote_seq,
        })
    }

    /// §12.2.2: whether a request's CSeq may be taken (higher than the last one, or the
    /// first); it then becomes the last.
    pub fn accept_remote_seq(&mut self, seq: u32) -> bool {
        if self.remote_seq.is_some_and(|last| seq <= last) {
            return false;
        }
        self.remote_seq = Some(seq);
        true
    }

    /// A request of theirs inside the dialog (§12.2.2): taken when its CSeq is in order, and
    /// then a target refresh (its Contact, if any, replaces the remote target).
    pub fn accept_request(&mut self, req: &Message) -> bool {
        let Ok(cseq) = req.cseq() else { return false };
        if !self.accept_remote_seq(cseq.seq) {
            return false;
        }
        self.refresh_target(req);
        true
    }

    /// A target refresh (§12.2.2): a new Contact in their request replaces the remote target.
    pub fn refresh_target(&mut self, req: &Message) {
        if let Some(uri) = contact_uri(req) {
            self.remote_target = uri;
        }
    }

    /// §12.2.1.1: a new request in the dialog, with the next CSeq, without Via. The route set
    /// is loose (every route we build or accept has `lr`): the Request-URI is the remote target
    /// and the routes go in Route headers. `contact` is our Contact.
    pub fn request(&mut self, method: Method, contact: &NameAddr) -> Message {
        self.local_seq = self.local_seq.wrapping_add(1).max(1);
        let mut msg = Message::request(method.clone(), self.remote_target.clone());
        let mut from = NameAddr::new(self.local_uri.clone());
        from.set_param("tag", Some(self.id.local_tag.clone()));
        let mut to = NameAddr::new(self.remote_uri.clone());
        to.set_param("tag", Some(self.id.remote_tag.clone()));
        let h = &mut msg.headers;
        for route in &self.route_set {
            h.push(Header::new(HeaderName::Route, route.to_string()));
        }
        h.push(Header::new(HeaderName::MaxForwards, 70));
        h.push(Header::new(HeaderName::From, from));
        h.push(Header::new(HeaderName::To, to));
        h.push(Header::new(HeaderName::CallId, self.id.call_id.clone()));
        h.push(Header::new(HeaderName::CSeq, format!("{} {method}", self.local_seq)));
        h.push(Header::new(HeaderName::Contact, contact.to_string()));
        msg
    }

    /// Where the next request goes first: the top route, else the remote target.
    pub fn next_hop(&self) -> &Uri {
        self.route_set.first().map_or(&self.remote_target, |r| &r.uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Message {
        crate::sip::parse(bytes::Bytes::from(text.replace('\n', "\r\n"))).unwrap()
    }

    const SUBSCRIBE: &str = "SUBSCRIBE sip:bob@p2p.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKs1
Record-Route: <sip:192.0.2.9;lr>
Max-Forwards: 70
From: <sip:alice@p2p.test>;tag=a1
To: <sip:bob@p2p.test>
Call-ID: sub1
CSeq: 7 SUBSCRIBE
Contact: <sip:alice@192.0.2.1:5070>
Event: presence
Content-Length: 0

";

    #[test]
    fn both_sides_agree_and_requests_follow_the_route_set() {
        let req = parse(SUBSCRIBE);
        let mut uas = Dialog::as_uas(&req, "b1").unwrap();
        assert_eq!(uas.id, DialogId { call_id: "sub1".into(), local_tag: "b1".into(), remote_tag: "a1".into() });
        assert_eq!(uas.remote_target.to_string(), "sip:alice@192.0.2.1:5070");
        assert_eq!(uas.next_hop().to_string(), "sip:192.0.2.9;lr");
        let me = NameAddr::new(Uri::parse("sip:bob@192.0.2.2:5070").unwrap());
        let notify = uas.request(Method::Notify, &me);
        assert_eq!(notify.from().unwrap().tag(), Some("b1"));
        assert_eq!(notify.to().unwrap().tag(), Some("a1"));
        assert_eq!(notify.cseq().unwrap().seq, 1);
        assert_eq!(notify.routes().unwrap().len(), 1);
        // The watcher takes the NOTIFY as the message that made the dialog on its side.
        let mut with_contact = notify.clone();
        with_contact.headers.push(Header::new(HeaderName::Via, "SIP/2.0/UDP 192.0.2.2:5070;branch=z9hG4bKn1"));
        let uac = Dialog::as_uac(&req, &with_contact).unwrap();
        assert_eq!(uac.id, DialogId { call_id: "sub1".into(), local_tag: "a1".into(), remote_tag: "b1".into() });
        assert_eq!(uac.remote_target.to_string(), "sip:bob@192.0.2.2:5070");
        assert_eq!(DialogId::of_request(&notify).unwrap().local_tag, "a1", "the receiver's view");
        // §12.2.2: an old CSeq is refused, a newer one taken.
        assert!(!uas.accept_remote_seq(7));
        assert!(uas.accept_remote_seq(8));
    }
}
