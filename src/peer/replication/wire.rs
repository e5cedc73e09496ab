//! The one place where "this storage operation is that SIP request": storing a signed record
//! at a replica position, and fetching what a node holds there. `docs/storage-over-sip.md` is
//! the same table in prose; keep the two side by side.
//!
//! In the manner of dSIP's resource registration and search (draft-bryan-p2psip-dsip-00 §§6.6,
//! 6.7): both are `REGISTER`s sent straight to the node responsible for the replica key, the
//! key's ID in the Request-URI's user part, the resource's AoR in `To`:
//!
//! | operation | SIP request                                                             | answers |
//! |-----------|-------------------------------------------------------------------------|---------|
//! | store     | `REGISTER sip:<replica-key>@<holder>`, `DHT-Resource`, body `application/p2psip-record` | `200`; `302` + `Contact` (not responsible); `4xx` refusal |
//! | fetch     | `REGISTER sip:<replica-key>@<holder>`, `DHT-Resource`, no body (a query, RFC 3261 §10.2.3) | `200` + the record; `404 No Such Record`; `302` |
//!
//! `DHT-Resource: <sip:alice@example.org>;kind=registration;replica=2` names the resource, its
//! record kind and which of the R+1 replica numbers the Request-URI's key is; it is what tells a
//! storage request from the overlay's own REGISTERs ([`crate::peer::overlay::wire`]). A store that a
//! place's holder passes on to its successor as a backup copy adds `;backup=1` (the successor
//! after that, `;backup=2`, …).

use std::net::SocketAddr;

use bytes::Bytes;

use crate::overlay::{Contact, NodeId};
use crate::peer::overlay::wire::{self as overlay_wire, node_uri, OverlayInfo, OPTION_TAG};
use crate::sip::header::{MediaType, NameAddr};
use crate::sip::uri::{Host, SipUri};
use crate::sip::{Contacts, Header, HeaderName, Message, Method, Uri};
use crate::store::{Record, RecordKind};

/// The header naming the resource a storage request is about.
pub const RESOURCE_HEADER: &str = "DHT-Resource";
/// The body type of a record (the wire encoding of [`Record::encode`]).
pub const RECORD_TYPE: (&str, &str) = ("application", "p2psip-record");
/// The body type of a mailbox listing: `count u16 | (record_len u32 | record)*`.
pub const RECORDS_TYPE: (&str, &str) = ("application", "p2psip-records");

/// A mailbox listing's body ([`RECORDS_TYPE`]).
pub fn encode_records(records: &[Record]) -> Vec<u8> {
    let encoded: Vec<Vec<u8>> = records.iter().filter_map(|r| r.encode().ok()).take(usize::from(u16::MAX)).collect();
    let mut out = (encoded.len() as u16).to_be_bytes().to_vec();
    for bytes in encoded {
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

/// Reads [`encode_records`]'s form; `None` unless the whole body is that many records.
pub fn decode_records(body: &[u8]) -> Option<Vec<Record>> {
    let count = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let mut rest = body.get(2..)?;
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let end = len.checked_add(4)?;
        out.push(Record::decode(rest.get(4..end)?).ok()?);
        rest = &rest[end..];
    }
    rest.is_empty().then_some(out)
}

fn resource_header_name() -> HeaderName {
    HeaderName::from_bytes(RESOURCE_HEADER.as_bytes())
}

/// The `kind=` token of each record kind.
pub fn kind_token(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::CertificateChain => "certificate",
        RecordKind::Registration => "registration",
        RecordKind::Presence => "presence",
        RecordKind::OfflineMessage => "offline-message",
        RecordKind::EncryptionKey => "encryption-key",
    }
}

fn kind_from_token(token: &str) -> Option<RecordKind> {
    RecordKind::ALL.into_iter().find(|k| kind_token(*k).eq_ignore_ascii_case(token))
}

/// What a storage request asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageRequest {
    /// `backup` is 0 for a place's holder; n ≥ 1 asks the holder's n-th successor to keep a
    /// backup copy (`replication::backup`), sent by the copy's previous keeper, its predecessor.
    Store {
        /// The replica number i of the place (0: the primary).
        replica: u8,
        /// H(K‖i): the key the storing node must be responsible for.
        replica_key: NodeId,
        /// The signed record.
        record: Record,
        /// 0 for the place's holder; n for its n-th backup keeper.
        backup: u8,
    },
    /// Read a record at one of its places.
    Fetch {
        /// The replica number i of the place.
        replica: u8,
        /// H(K‖i).
        replica_key: NodeId,
        /// The record's kind.
        kind: RecordKind,
        /// Its resource name.
        key: String,
    },
}

impl StorageRequest {
    /// The replica key the request is for.
    pub fn replica_key(&self) -> NodeId {
        match self {
            StorageRequest::Store { replica_key, .. } | StorageRequest::Fetch { replica_key, .. } => *replica_key,
        }
    }
}

/// Why a storage request could not be read, with the status it gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageDecodeError {
    /// No `DHT-Resource`, or one that does not parse.
    #[error("malformed DHT-Resource")]
    Resource,
    /// The Request-URI is not the overlay's.
    #[error("malformed Request-URI for a storage request")]
    RequestUri,
    /// The body is not a record.
    #[error("body is not a p2psip record")]
    Body,
    /// The record is not the one `DHT-Resource` names.
    #[error("the record does not match DHT-Resource")]
    Mismatch,
    /// The overlay headers are wrong (see [`overlay_wire::DecodeError`]).
    #[error(transparent)]
    Overlay(#[from] overlay_wire::DecodeError),
}

impl StorageDecodeError {
    /// The SIP status and reason phrase a request that fails to decode gets.
    pub fn status(&self) -> (u16, String) {
        match self {
            StorageDecodeError::Overlay(e) => e.status(),
            StorageDecodeError::Body => (415, "Unsupported Media Type".into()),
            e => (400, capitalised(&e.to_string())),
        }
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// True for overlay requests that carry `DHT-Resource`: stores and fetches.
pub fn is_storage_request(msg: &Message) -> bool {
    msg.method() == Some(&Method::Register)
        && msg.headers.get(&resource_header_name()).is_some()
        && overlay_wire::is_overlay_request(msg)
}

/// The pieces of an outgoing request the transaction user chooses.
pub struct RequestIds<'a> {
    /// The request's Call-ID.
    pub call_id: &'a str,
    /// Its From tag.
    pub from_tag: &'a str,
    /// Its CSeq number.
    pub cseq: u32,
}

/// The SIP request for `request`, to the node `to`. The caller adds the Via.
pub fn encode_request(
    request: &StorageRequest,
    to: SocketAddr,
    me: &Contact,
    overlay: &OverlayInfo,
    ids: RequestIds<'_>,
) -> Message {
    let (replica, kind, key, backup) = match request {
        StorageRequest::Store { replica, record, backup, .. } => (*replica, record.kind, record.key.as_str(), *backup),
        StorageRequest::Fetch { replica, kind, key, .. } => (*replica, *kind, key.as_str(), 0),
    };
    let mut ruri = SipUri::new(Host::from(to.ip()), Some(to.port()));
    ruri.user = Some(request.replica_key().to_string());
    let mut msg = Message::request(Method::Register, Uri::Sip(ruri));
    let mut from = NameAddr::new(Uri::Sip(SipUri::new(Host::from(me.addr.ip()), Some(me.addr.port()))));
    from.set_param("tag", Some(ids.from_tag.to_owned()));
    // dSIP resource registration: To names the resource, not the node.
    let to_header = match Uri::parse(key) {
        Some(uri) => NameAddr::new(uri),
        None => NameAddr::new(Uri::Sip(SipUri::new(Host::from(to.ip()), Some(to.port())))),
    };
    let h = &mut msg.headers;
    h.push(Header::new(HeaderName::MaxForwards, 70));
    h.push(Header::new(HeaderName::From, from));
    h.push(Header::new(HeaderName::To, to_header));
    h.push(Header::new(HeaderName::CallId, ids.call_id));
    h.push(Header::new(HeaderName::CSeq, format!("{} REGISTER", ids.cseq)));
    h.push(Header::new(HeaderName::Require, OPTION_TAG));
    h.push(Header::new(HeaderName::DhtPeerId, peer_id_value(me, overlay)));
    h.push(Header::new(resource_header_name(), resource_value(key, kind, replica, backup)));
    match request {
        StorageRequest::Store { record, .. } => {
            // Records that cannot be encoded are refused when signed; an empty body here
            // would be answered 415 rather than stored.
            let body = record.encode().unwrap_or_default();
            msg.set_body(Bytes::from(body), Some(&MediaType::new(RECORD_TYPE.0, RECORD_TYPE.1)));
        }
        StorageRequest::Fetch { .. } => msg.set_body(Bytes::new(), None),
    }
    msg
}

fn peer_id_value(me: &Contact, overlay: &OverlayInfo) -> String {
    let mut na = NameAddr::new(Uri::Sip(node_uri(&me.id, me.addr)));
    na.params = overlay_wire::peer_id_params(overlay);
    na.to_string()
}

fn resource_value(key: &str, kind: RecordKind, replica: u8, backup: u8) -> String {
    // The key is an AoR for every kind defined so far (USER-MATCH); quote-free `<…>` form.
    let kind = kind_token(kind);
    match backup {
        0 => format!("<{key}>;kind={kind};replica={replica}"),
        n => format!("<{key}>;kind={kind};replica={replica};backup={n}"),
    }
}

/// Reads a storage request ([`is_storage_request`]): the sender's ID is checked against
/// the source address as for any overlay request.
pub fn decode_request(
    msg: &Message,
    observed: SocketAddr,
    reliable: bool,
    overlay: &OverlayInfo,
) -> Result<(Contact, StorageRequest), StorageDecodeError> {
    let sender = overlay_wire::sender(msg, observed, reliable, overlay)?;
    let replica_key = match msg.request_uri() {
        Some(Uri::Sip(u)) => {
            NodeId::from_hex(u.user.as_deref().unwrap_or_default()).map_err(|_| StorageDecodeError::RequestUri)?
        }
        _ => return Err(StorageDecodeError::RequestUri),
    };
    let header = msg.headers.get(&resource_header_name()).ok_or(StorageDecodeError::Resource)?;
    let na = NameAddr::parse(header.value()).ok_or(StorageDecodeError::Resource)?;
    // The key exactly as the sender wrote it between the angle brackets: it is compared byte
    // for byte with the record's resource name.
    let text = header.value_str().ok_or(StorageDecodeError::Resource)?;
    let key = text
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(key, _)| key.to_owned())
        .ok_or(StorageDecodeError::Resource)?;
    let kind = na
        .param("kind")
        .and_then(|p| p.value.as_deref())
        .and_then(kind_from_token)
        .ok_or(StorageDecodeError::Resource)?;
    let replica: u8 =
        na.param("replica").and_then(|p| p.value.as_deref()?.parse().ok()).ok_or(StorageDecodeError::Resource)?;
    // Absent on a place's own copy; unreadable is malformed rather than silently a place.
    let backup: u8 = match na.param("backup") {
        None => 0,
        Some(p) => p.value.as_deref().and_then(|v| v.parse().ok()).ok_or(StorageDecodeError::Resource)?,
    };
    if msg.body.is_empty() {
        return Ok((sender, StorageRequest::Fetch { replica, replica_key, kind, key }));
    }
    let is_record =
        msg.content_type().ok().flatten().is_some_and(|t| t.ty == RECORD_TYPE.0 && t.subtype == RECORD_TYPE.1);
    if !is_record {
        return Err(StorageDecodeError::Body);
    }
    let record = Record::decode(&msg.body).map_err(|_| StorageDecodeError::Body)?;
    if record.kind != kind || record.key != key {
        return Err(StorageDecodeError::Mismatch);
    }
    Ok((sender, StorageRequest::Store { replica, replica_key, record, backup }))
}

/// How a storing or serving node answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageAnswer {
    /// Stored (a store), or nothing to say.
    Stored,
    /// The record held for the key (a fetch).
    Found(Record),
    /// Every record of a mailbox held here, messages and tombstones (a fetch of an
    /// `OfflineMessage` resource named by the recipient's AoR alone).
    Listed(Vec<Record>),
    /// A fetch for a key this node holds nothing under.
    NotFound,
    /// The replica key is not ours: try `node`.
    NotResponsible {
        /// The node the answerer believes is responsible.
        node: Contact,
    },
    /// Ask `node` (the answerer itself) again over TCP: the answer is too large to send over
    /// UDP to an address that has not proved it is the sender's (docs/security.md, M1: no
    /// amplification). A 302 whose Contact says `transport=tcp`.
    UseTcp {
        /// The answerer.
        node: Contact,
    },
    /// Refused, with the status and reason phrase (a refused store, an invalid request).
    Refused {
        /// The SIP status code.
        status: u16,
        /// The reason phrase.
        reason: String,
    },
}

/// The response carrying `answer` to `request`.
pub fn encode_response(request: &Message, answer: &StorageAnswer, to_tag: &str) -> Message {
    let (code, reason) = match answer {
        StorageAnswer::Stored | StorageAnswer::Found(_) | StorageAnswer::Listed(_) => (200, "OK".to_owned()),
        StorageAnswer::NotFound => (404, "No Such Record".to_owned()),
        StorageAnswer::NotResponsible { .. } | StorageAnswer::UseTcp { .. } => (302, "Moved Temporarily".to_owned()),
        StorageAnswer::Refused { status, reason } => (*status, reason.clone()),
    };
    let mut resp = request.make_response(code, &reason, Some(to_tag));
    resp.headers.push(Header::new(HeaderName::Supported, OPTION_TAG));
    match answer {
        StorageAnswer::Found(record) => {
            let body = record.encode().unwrap_or_default();
            resp.set_body(Bytes::from(body), Some(&MediaType::new(RECORD_TYPE.0, RECORD_TYPE.1)));
        }
        StorageAnswer::Listed(records) => {
            let body = encode_records(records);
            resp.set_body(Bytes::from(body), Some(&MediaType::new(RECORDS_TYPE.0, RECORDS_TYPE.1)));
        }
        StorageAnswer::NotResponsible { node } => {
            resp.headers.push(Header::new(HeaderName::Contact, NameAddr::new(Uri::Sip(node_uri(&node.id, node.addr)))));
        }
        StorageAnswer::UseTcp { node } => {
            let mut uri = node_uri(&node.id, node.addr);
            uri.params.push(crate::sip::syntax::Param::new("transport", Some("tcp")));
            resp.headers.push(Header::new(HeaderName::Contact, NameAddr::new(Uri::Sip(uri))));
        }
        _ => {}
    }
    resp
}

/// Reads the answer to a storage request we sent. Unreadable answers are `Refused` with
/// the status they carried.
pub fn decode_response(msg: &Message) -> StorageAnswer {
    let code = msg.status().unwrap_or(500);
    let reason = match &msg.start {
        crate::sip::StartLine::Response(s) => s.reason.clone(),
        _ => String::new(),
    };
    match code {
        200 if msg.body.is_empty() => StorageAnswer::Stored,
        200 if msg.content_type().ok().flatten().is_some_and(|t| t.subtype.eq_ignore_ascii_case(RECORDS_TYPE.1)) => {
            match decode_records(&msg.body) {
                Some(records) => StorageAnswer::Listed(records),
                None => StorageAnswer::Refused { status: 200, reason: "undecodable mailbox listing".into() },
            }
        }
        200 => match Record::decode(&msg.body) {
            Ok(record) => StorageAnswer::Found(record),
            Err(e) => StorageAnswer::Refused { status: 200, reason: format!("undecodable record: {e}") },
        },
        404 => StorageAnswer::NotFound,
        302 => {
            let node = match msg.contacts() {
                Ok(Contacts::List(list)) => list.first().and_then(|na| {
                    let sip = na.uri.as_sip()?;
                    let id = NodeId::from_hex(sip.user.as_deref()?).ok()?;
                    let tcp = sip.transport().is_some_and(|t| t.eq_ignore_ascii_case("tcp"));
                    Some((Contact::new(id, SocketAddr::new(sip.host.ip()?, sip.port?)), tcp))
                }),
                _ => None,
            };
            match node {
                Some((node, true)) => StorageAnswer::UseTcp { node },
                Some((node, false)) => StorageAnswer::NotResponsible { node },
                None => StorageAnswer::Refused { status: 302, reason: "redirect without a node".into() },
            }
        }
        status => StorageAnswer::Refused { status, reason },
    }
}

#[cfg(test)]
mod tests;
