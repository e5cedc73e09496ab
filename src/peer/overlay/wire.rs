//! The one place where "this Chord message is that SIP request": the overlay's vocabulary
//! ([`crate::overlay::rpc`]) to SIP and back. `docs/overlay-over-sip.md` is the same table in
//! prose; keep the two side by side.
//!
//! In the manner of dSIP (draft-bryan-p2psip-dsip-00, draft-zangrilli-p2psip-dsip-dhtchord-00):
//!
//! | Chord (Stoica et al.)           | SIP request                                              | answer |
//! |---------------------------------|----------------------------------------------------------|--------|
//! | `find_successor(k)`, one step   | `REGISTER sip:<k>@<hop>`, no Contact (a query, RFC 3261 §10.2.3) | `200` + `DHT-Link: …;link=R` (+ backups `link=S2…Sr` when R is not the answerer), or `302` + `Contact`s of closer peers |
//! | `stabilize`: successor's neighbours (and implicit `notify`) | `REGISTER sip:<succ-id>@<succ>`, no Contact; `DHT-PeerID;nh=<digest>` of the last answer | `200` + `link=R` (itself), `link=P1`, `link=S1…Sr`; or `200` + `DHT-PeerID;nh=<same digest>` and no links when unchanged |
//! | `notify` (only to make the receiver check a failed predecessor) | `REGISTER sip:<succ-id>@<succ>`, `Contact` = sender's address | `200` |
//! | join (dSIP §6.3)                | `REGISTER sip:<own-id>@<hop>`, `Contact` = joiner's address | `200` + `P1`, `S1…Sr`, `F1…Fk`, or `302` |
//! | graceful leave (dSIP §6.5)      | `REGISTER sip:<recv-id>@<recv>`, `Expires: 0`, `DHT-Link` hand-off `P1`, `S1…` | `200` |
//! | `check_predecessor` ping        | `OPTIONS sip:<pred-id>@<pred>`                           | `200` |
//!
//! Every overlay request carries `Require: dht` (so a SIP element without the extension
//! answers 420, RFC 3261 §8.2.2.3) and the sender's `DHT-PeerID`:
//! `<sip:<40 hex>@<ip>:<port>>;version=2;overlay=<name>` (`algorithm=` only when the ID hash
//! is not SHA-1, and no `dht=`: version 2 means Chord).
//! Refusals map to SIP statuses in [`refusal_status`].
//!
//! Maintenance traffic is most of what a node sends, so messages are kept small: the compact
//! header forms of RFC 3261 §7.3.3 (`v`, `f`, `t`, `i`, `m`, `l`, `k`), short tags and
//! Call-IDs, and conditional stabilize answers. Any SIP parser reads them.

use std::net::SocketAddr;

use crate::overlay::{Contact, IdHash, NodeId, OutgoingRpc, RefuseReason, Request, Response, RpcTarget};
use crate::sip::header::NameAddr;
use crate::sip::syntax::Param;
use crate::sip::uri::{Host, SipUri};
use crate::sip::{Contacts, Header, HeaderName, Message, Method, Uri};

/// The option tag of the overlay extension (RFC 3261 §19.2).
pub const OPTION_TAG: &str = "dht";
/// The version of p2psip's overlay protocol, carried in `DHT-PeerID;version=`. A node answers
/// requests of another major version with `420 Bad Extension` and `Unsupported: dht`.
///
/// Version 2 (version 1 nodes cannot read it all): an "unchanged" stabilize answer no longer
/// carries `link=R` (version 1 requires it to recognise the answer), notify and join Contacts
/// name the sender's address only and carry no `Expires`, and `DHT-PeerID` drops the default
/// `algorithm=sha1` and `dht=Chord`.
pub const PROTOCOL_VERSION: u32 = 2;
/// The DHT name, as dSIP's `dht=` parameter.
pub const DHT_NAME: &str = "Chord";

/// The `DHT-PeerID` parameter carrying a [`crate::overlay::neighbours_digest`]: in a
/// stabilize query, of the answer the querier holds; in the answer, "still the same".
pub const DIGEST_PARAM: &str = "nh";
/// The `DHT-PeerID` parameter of a push ([`Request::Changed`]): the digest of the sender's
/// neighbours as they are now.
pub const CHANGED_PARAM: &str = "changed";

/// A header in its compact form (RFC 3261 §7.3.3), e.g. `v: …` for Via. `letter` must be the
/// compact form of `name`.
pub fn compact(name: HeaderName, letter: &str, value: impl std::fmt::Display) -> Header {
    let line = format!("{letter}: {value}");
    Header::from_raw(name, bytes::Bytes::from(line), letter.len() + 2)
}

/// What the overlay says about itself on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayInfo {
    /// The overlay's name (`DHT-PeerID`'s `overlay` parameter).
    pub name: String,
    /// How Node IDs are hashed from addresses in this overlay.
    pub hash: IdHash,
    /// Whether we are a client (no ring position): our `DHT-PeerID` then says `client`, and
    /// peers take our ID from the address they see rather than checking the one we claim.
    pub client: bool,
}

/// Why a received overlay request cannot be handed to Chord, and the status it gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No `DHT-PeerID`, or one that does not parse.
    #[error("missing or malformed DHT-PeerID")]
    PeerId,
    /// A `DHT-Link` that does not parse.
    #[error("malformed DHT-Link")]
    Link,
    /// The Request-URI is not the one the method needs.
    #[error("malformed Request-URI for an overlay request")]
    RequestUri,
    /// A protocol version we do not speak.
    #[error("unsupported overlay protocol version {0}")]
    Version(String),
    /// A request for another overlay.
    #[error("overlay {0} is not this overlay")]
    Overlay(String),
    /// The sender's ID is not the one its address derives.
    #[error("DHT-PeerID does not match the address the request came from")]
    IdMismatch,
    /// A method the overlay does not use.
    #[error("not an overlay method")]
    Method,
}

impl DecodeError {
    /// The SIP status and reason phrase for the refusal.
    pub fn status(&self) -> (u16, String) {
        match self {
            DecodeError::Version(_) => (420, "Bad Extension".into()),
            DecodeError::IdMismatch => (403, "Peer-ID does not match source address".into()),
            DecodeError::Overlay(_) => (404, "Not in this overlay".into()),
            DecodeError::Method => (405, "Method Not Allowed".into()),
            e => (400, capitalised(&e.to_string())),
        }
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// True for requests that use the overlay extension (`Require: dht`).
pub fn is_overlay_request(msg: &Message) -> bool {
    msg.option_tags(&HeaderName::Require).is_ok_and(|tags| tags.iter().any(|t| t.eq_ignore_ascii_case(OPTION_TAG)))
}

/// `sip:<id>@<ip>:<port>`, how nodes are named in DHT-PeerID, DHT-Link and Contact.
pub fn node_uri(id: &NodeId, addr: SocketAddr) -> SipUri {
    let mut uri = SipUri::new(Host::from(addr.ip()), Some(addr.port()));
    uri.user = Some(id.to_string());
    uri
}

fn contact_from_uri(uri: &Uri) -> Option<Contact> {
    let sip = uri.as_sip()?;
    let id = NodeId::from_hex(sip.user.as_deref()?).ok()?;
    let addr = SocketAddr::new(sip.host.ip()?, sip.port?);
    Some(Contact::new(id, addr))
}

/// Whether a contact someone told us about names the ID its address derives (port-suffixed
/// Node IDs): the check every learned link passes before it is used (docs/security.md, H1).
pub fn link_verifies(c: &Contact, hash: IdHash) -> bool {
    NodeId::verify_claim(c.id, c.addr.ip(), c.addr.port(), hash)
}

/// A node's contact as another node named it: `None` when unreadable; `Some(Err)` when its
/// ID is not the one its address derives (a forged link).
fn learned_contact(uri: &Uri, hash: IdHash) -> Option<Result<Contact, Contact>> {
    let c = contact_from_uri(uri)?;
    Some(if link_verifies(&c, hash) { Ok(c) } else { Err(c) })
}

/// The links of a message, forged ones dropped and counted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Links {
    /// `(link type, contact)` in order, every contact verified.
    pub list: Vec<(String, Contact)>,
    /// Links whose ID did not match their address, dropped.
    pub forged: usize,
}

/// The parameters of a `DHT-PeerID`: the protocol version and the overlay name, and the ID
/// hash only when it is not the default SHA-1 (every byte of maintenance traffic counts; the
/// DHT is always Chord, which `version` implies).
pub fn peer_id_params(overlay: &OverlayInfo) -> Vec<Param> {
    let mut params = Vec::with_capacity(3);
    if overlay.hash != IdHash::Sha1 {
        params.push(Param::new("algorithm", Some(overlay.hash.name())));
    }
    params.push(Param::new("version", Some(PROTOCOL_VERSION.to_string())));
    params.push(Param::new("overlay", Some(overlay.name.as_str())));
    if overlay.client {
        params.push(Param::new(CLIENT_PARAM, None::<String>));
    }
    params
}

/// The `DHT-PeerID` parameter that marks a client (RFC 6940 §3.2.1: no ring position).
pub const CLIENT_PARAM: &str = "client";

/// Whether `msg` comes from a client: its `DHT-PeerID` carries [`CLIENT_PARAM`].
pub fn is_client(msg: &Message) -> bool {
    msg.headers
        .get(&HeaderName::DhtPeerId)
        .and_then(|h| NameAddr::parse(h.value()))
        .is_some_and(|na| na.param(CLIENT_PARAM).is_some())
}

/// Who sent an overlay request: a node, whose claimed ID must be the one its address derives
/// (port-suffixed Node IDs) and, over UDP, whose claimed port must be the one we saw; or a
/// client, which has no place to claim and is named by the address we saw (its ID is that
/// address's, so it can never pass for a peer at another address).
pub fn sender(
    msg: &Message,
    observed: SocketAddr,
    reliable: bool,
    overlay: &OverlayInfo,
) -> Result<Contact, DecodeError> {
    let sender = peer_id(msg, overlay)?;
    if is_client(msg) {
        return Ok(Contact::new(NodeId::from_addr(observed.ip(), observed.port(), overlay.hash), observed));
    }
    let claim_ok = sender.addr.ip() == observed.ip()
        && (reliable || sender.addr.port() == observed.port())
        && NodeId::verify_claim(sender.id, sender.addr.ip(), sender.addr.port(), overlay.hash);
    if !claim_ok {
        return Err(DecodeError::IdMismatch);
    }
    Ok(sender)
}

fn peer_id_header(me: &Contact, overlay: &OverlayInfo, digest: Option<u64>) -> Header {
    match digest {
        Some(d) => peer_id_header_with(me, overlay, DIGEST_PARAM, d),
        None => {
            let mut na = NameAddr::new(Uri::Sip(node_uri(&me.id, me.addr)));
            na.params = peer_id_params(overlay);
            Header::new(HeaderName::DhtPeerId, na)
        }
    }
}

/// Our `DHT-PeerID` with one 64-bit hex parameter (`nh` or `changed`).
fn peer_id_header_with(me: &Contact, overlay: &OverlayInfo, name: &str, value: u64) -> Header {
    let mut na = NameAddr::new(Uri::Sip(node_uri(&me.id, me.addr)));
    na.params = peer_id_params(overlay);
    na.params.push(Param::new(name, Some(format!("{value:016x}"))));
    Header::new(HeaderName::DhtPeerId, na)
}

/// The `nh` digest of a message's `DHT-PeerID`, if it has a well-formed one.
fn digest_of(msg: &Message) -> Option<u64> {
    digest_param(msg, DIGEST_PARAM)
}

/// A 64-bit hex parameter (`nh`, `changed`) of a message's `DHT-PeerID`, if well-formed.
fn digest_param(msg: &Message, name: &str) -> Option<u64> {
    let h = msg.headers.get(&HeaderName::DhtPeerId)?;
    let na = NameAddr::parse(h.value())?;
    let v = na.param(name)?.value.clone()?;
    (v.len() == 16).then(|| u64::from_str_radix(&v, 16).ok()).flatten()
}

fn link_header(c: &Contact, link: &str) -> Header {
    let mut na = NameAddr::new(Uri::Sip(node_uri(&c.id, c.addr)));
    na.params = vec![Param::new("link", Some(link))];
    Header::new(HeaderName::DhtLink, na)
}

/// Appends `DHT-Link`s: the predecessor as `P1`, successors `S1…`, fingers `F1…`.
fn push_links(msg: &mut Message, predecessor: Option<&Contact>, successors: &[Contact], fingers: &[Contact]) {
    if let Some(p) = predecessor {
        msg.headers.push(link_header(p, "P1"));
    }
    for (prefix, list) in [("S", successors), ("F", fingers)] {
        push_numbered(msg, prefix, 1, list);
    }
}

/// Appends `DHT-Link`s `<prefix><first>`, `<prefix><first + 1>`, … for `list`.
fn push_numbered(msg: &mut Message, prefix: &str, first: usize, list: &[Contact]) {
    for (i, c) in list.iter().enumerate() {
        msg.headers.push(link_header(c, &format!("{prefix}{}", i + first)));
    }
}

/// The sender's `DHT-PeerID`, checked for version and overlay name.
pub fn peer_id(msg: &Message, overlay: &OverlayInfo) -> Result<Contact, DecodeError> {
    let h = msg.headers.get(&HeaderName::DhtPeerId).ok_or(DecodeError::PeerId)?;
    let na = NameAddr::parse(h.value()).ok_or(DecodeError::PeerId)?;
    let version = na.param("version").and_then(|p| p.value.clone()).unwrap_or_default();
    if version.split('.').next() != Some(&PROTOCOL_VERSION.to_string()) {
        return Err(DecodeError::Version(version));
    }
    if let Some(name) = na.param("overlay").and_then(|p| p.unquoted_value()) {
        if name != overlay.name {
            return Err(DecodeError::Overlay(name));
        }
    }
    contact_from_uri(&na.uri).ok_or(DecodeError::PeerId)
}

/// Every `DHT-Link`, as `(link type, contact)` in order; a link whose ID is not its
/// address's is dropped and counted in [`Links::forged`].
pub fn links(msg: &Message, hash: IdHash) -> Result<Links, DecodeError> {
    let elements = msg.headers.elements(&HeaderName::DhtLink).ok_or(DecodeError::Link)?;
    let mut links = Links::default();
    for e in elements {
        let na = NameAddr::parse(e).ok_or(DecodeError::Link)?;
        let link = na.param("link").and_then(|p| p.value.clone()).ok_or(DecodeError::Link)?;
        match learned_contact(&na.uri, hash).ok_or(DecodeError::Link)? {
            Ok(c) => links.list.push((link.to_ascii_uppercase(), c)),
            Err(_) => links.forged += 1,
        }
    }
    Ok(links)
}

/// Links of one type family (`P`, `S`, `F`), ordered by their depth number.
fn family(links: &[(String, Contact)], prefix: char) -> Vec<Contact> {
    let mut v: Vec<(u32, Contact)> = links
        .iter()
        .filter_map(|(t, c)| {
            let rest = t.strip_prefix(prefix)?;
            Some((rest.parse().ok()?, c.clone()))
        })
        .collect();
    v.sort_by_key(|(depth, _)| *depth);
    v.into_iter().map(|(_, c)| c).collect()
}

/// The pieces of an outgoing overlay request that the transaction user chooses.
pub struct RequestIds<'a> {
    /// The request's Call-ID.
    pub call_id: &'a str,
    /// Its From tag.
    pub from_tag: &'a str,
    /// Its CSeq number.
    pub cseq: u32,
}

/// The SIP request for an outgoing RPC. The caller adds the Via (with its branch), sends it
/// from the overlay listener, and maps the answer back with [`decode_response`].
pub fn encode_request(rpc: &OutgoingRpc, me: &Contact, overlay: &OverlayInfo, ids: RequestIds<'_>) -> Message {
    let target_addr = rpc.to.addr();
    let target_id = rpc.to.id();
    // The Request-URI's user part names what the request is about: the key, or the receiver.
    let about = match &rpc.request {
        Request::FindSuccessor { key } => Some(*key),
        Request::Join { joiner } => Some(joiner.id),
        _ => target_id,
    };
    let mut ruri = SipUri::new(Host::from(target_addr.ip()), Some(target_addr.port()));
    ruri.user = about.map(|id| id.to_string());
    let _ = target_id;
    let method = if matches!(rpc.request, Request::Ping) { Method::Options } else { Method::Register };
    let mut msg = Message::request(method.clone(), Uri::Sip(ruri.clone()));
    // The Contact of a notify, join or leave names the sender by address: its ID is in
    // DHT-PeerID, and the receiver reads only whether there is a Contact.
    let me_uri = SipUri::new(Host::from(me.addr.ip()), Some(me.addr.port()));
    // From and To name the two nodes by address only: the IDs travel in DHT-PeerID and the
    // Request-URI, and every byte counts in maintenance traffic.
    let mut from = NameAddr::new(Uri::Sip(SipUri::new(Host::from(me.addr.ip()), Some(me.addr.port()))));
    from.set_param("tag", Some(ids.from_tag.to_owned()));
    let to = NameAddr::new(Uri::Sip(SipUri::new(Host::from(target_addr.ip()), Some(target_addr.port()))));
    let digest = match &rpc.request {
        Request::GetNeighbours { digest, .. } => *digest,
        _ => None,
    };
    let changed = match &rpc.request {
        Request::Changed { digest } => Some(*digest),
        _ => None,
    };
    let h = &mut msg.headers;
    h.push(Header::new(HeaderName::MaxForwards, 70));
    h.push(compact(HeaderName::From, "f", from));
    h.push(compact(HeaderName::To, "t", to));
    h.push(compact(HeaderName::CallId, "i", ids.call_id));
    h.push(Header::new(HeaderName::CSeq, format!("{} {}", ids.cseq, method)));
    h.push(Header::new(HeaderName::Require, OPTION_TAG));
    // The push is a REGISTER about the receiver without Contact (so not a notify), whose
    // DHT-PeerID says what the sender's neighbours hash to now.
    h.push(match changed {
        Some(d) => peer_id_header_with(me, overlay, CHANGED_PARAM, d),
        None => peer_id_header(me, overlay, digest),
    });
    match &rpc.request {
        Request::Notify | Request::Join { .. } | Request::GetNeighbours { notify: true, .. } => {
            // No Expires: the registrar's default applies (RFC 3261 §10.2.1.1); nothing
            // expires on it, stabilize refreshes the relationship every few seconds.
            h.push(compact(HeaderName::Contact, "m", NameAddr::new(Uri::Sip(me_uri))));
        }
        Request::Leave { predecessor, successors } => {
            h.push(compact(HeaderName::Contact, "m", NameAddr::new(Uri::Sip(me_uri))));
            h.push(Header::new(HeaderName::Expires, 0));
            push_links(&mut msg, predecessor.as_ref(), successors, &[]);
        }
        Request::FindSuccessor { .. }
        | Request::GetNeighbours { notify: false, .. }
        | Request::Ping
        | Request::Changed { .. } => {}
    }
    msg.headers.push(compact(HeaderName::ContentLength, "l", 0));
    msg
}

/// Reads a received overlay request (one for which [`is_overlay_request`] holds): who sent it
/// and what it asks. `observed` is the address the packet came from; `reliable` says whether it
/// came over a stream, whose source port is ephemeral. The sender's claimed ID must be the one
/// its address derives (port-suffixed Node IDs), and over UDP the claimed port must be the one
/// we saw.
pub fn decode_request(
    msg: &Message,
    observed: SocketAddr,
    reliable: bool,
    me: &NodeId,
    overlay: &OverlayInfo,
) -> Result<(Contact, Request, usize), DecodeError> {
    let sender = sender(msg, observed, reliable, overlay)?;
    let about = match msg.request_uri() {
        Some(Uri::Sip(u)) => match u.user.as_deref() {
            None => None,
            Some(user) => Some(NodeId::from_hex(user).map_err(|_| DecodeError::RequestUri)?),
        },
        _ => return Err(DecodeError::RequestUri),
    };
    let mut forged = 0;
    let request = match msg.method() {
        Some(Method::Options) => Request::Ping,
        Some(Method::Register) => {
            let has_contact = matches!(msg.contacts(), Ok(Contacts::List(ref l)) if !l.is_empty());
            let expires = msg.expires().ok().flatten();
            if expires == Some(0) {
                let links = links(msg, overlay.hash)?;
                forged = links.forged;
                let links = links.list;
                Request::Leave { predecessor: family(&links, 'P').into_iter().next(), successors: family(&links, 'S') }
            } else if has_contact && about == Some(sender.id) {
                Request::Join { joiner: sender.clone() }
            } else if has_contact {
                // A notify is a registration of the sender with us, and also asks for our
                // neighbours (stabilize); `Request::Notify` is the same message.
                Request::GetNeighbours { digest: digest_of(msg), notify: true }
            } else if let Some(digest) = digest_param(msg, CHANGED_PARAM) {
                Request::Changed { digest }
            } else {
                match about {
                    Some(key) if key != *me => Request::FindSuccessor { key },
                    _ => Request::GetNeighbours { digest: digest_of(msg), notify: false },
                }
            }
        }
        _ => return Err(DecodeError::Method),
    };
    Ok((sender, request, forged))
}

/// The SIP status for a refusal by the Chord core.
pub fn refusal_status(reason: RefuseReason) -> (u16, &'static str) {
    match reason {
        RefuseReason::IdMismatch => (403, "Peer-ID does not match source address"),
        RefuseReason::IdInUse => (409, "Peer-ID in use"),
        RefuseReason::Malformed => (400, "Malformed DHT-PeerID"),
        RefuseReason::NotJoined => (480, "Not joined to the overlay"),
        RefuseReason::Leaving => (503, "Leaving the overlay"),
    }
}

/// The SIP response carrying Chord's answer to `request`. For a query REGISTER about our own
/// ID (stabilize's question), `neighbours` adds our predecessor and successor list, and `me`
/// is named responsible (`link=R`), so the one answer serves `find_successor` and `stabilize`.
pub fn encode_response(
    request: &Message,
    response: &Response,
    me: &Contact,
    overlay: &OverlayInfo,
    to_tag: &str,
) -> Message {
    let (code, reason) = match response {
        Response::Closer { .. } => (302, "Moved Temporarily"),
        Response::Refused { reason } => refusal_status(*reason),
        _ => (200, "OK"),
    };
    let mut resp = request.make_response(code, reason, Some(to_tag));
    // make_response writes the tagged To in its long form; keep it compact like the rest.
    if let Some(to) = resp.headers.get(&HeaderName::To).and_then(|h| h.value_str().map(str::to_owned)) {
        resp.headers.set(compact(HeaderName::To, "t", to));
    }
    // "Unchanged" echoes the querier's digest; nothing else needs one.
    let digest = match response {
        Response::NeighboursUnchanged => digest_of(request),
        _ => None,
    };
    resp.headers.push(peer_id_header(me, overlay, digest));
    resp.headers.push(compact(HeaderName::Supported, "k", OPTION_TAG));
    match response {
        Response::Successor { node, backups } => {
            // R is the answerer's first successor (S1) unless it is the answerer; the rest of
            // its list follows as S2…, the backups.
            resp.headers.push(link_header(node, "R"));
            push_numbered(&mut resp, "S", 2, backups);
        }
        Response::Closer { nodes } => {
            // RFC 3261 §20.10: q orders the alternatives, best first.
            let n = nodes.len().max(1) as f32;
            for (i, c) in nodes.iter().enumerate() {
                let mut na = NameAddr::new(Uri::Sip(node_uri(&c.id, c.addr)));
                na.set_param("q", Some(format!("{:.2}", 1.0 - i as f32 / n)));
                resp.headers.push(compact(HeaderName::Contact, "m", na));
            }
        }
        Response::Neighbours { predecessor, successors } => {
            resp.headers.push(link_header(me, "R"));
            push_links(&mut resp, predecessor.as_ref(), successors, &[]);
        }
        // The echoed digest alone says "unchanged"; the answerer is who we asked.
        Response::NeighboursUnchanged => {}
        Response::Joined { predecessor, successors, fingers } => {
            push_links(&mut resp, predecessor.as_ref(), successors, fingers);
        }
        Response::Ok | Response::Refused { .. } => {}
    }
    resp.headers.push(compact(HeaderName::ContentLength, "l", 0));
    resp
}

/// Reads the answer to an overlay request we sent to `asked`: what Chord should hear, and how
/// many links in it were forged (dropped). `None` when the answer is not a valid one for that
/// request (the caller reports `RpcFailure::Malformed`), which includes an answerer whose
/// `DHT-PeerID` is not the node we asked: the ID that the address we sent to derives, or the
/// one we named (docs/security.md, H1). Every contact it names must verify against its address.
pub fn decode_response(sent: &Request, asked: &RpcTarget, msg: &Message, hash: IdHash) -> (Option<Response>, usize) {
    let Some(code) = msg.status() else { return (None, 0) };
    if let Some(reason) = refusal_for(code) {
        return (Some(Response::Refused { reason }), 0);
    }
    let answerer = msg
        .headers
        .get(&HeaderName::DhtPeerId)
        .and_then(|h| NameAddr::parse(h.value()))
        .and_then(|na| contact_from_uri(&na.uri));
    // A bootstrap address may reach a node that advertises another: its claim must at least
    // be its own address's ID.
    let answerer_ok = answerer.is_some_and(|a| match asked {
        RpcTarget::Node(c) => a.id == c.id,
        RpcTarget::Address(_) => link_verifies(&a, hash),
    });
    if !answerer_ok {
        return (None, 1);
    }
    let Ok(Links { list: links, mut forged }) = links(msg, hash) else { return (None, 0) };
    let response = match (sent, code) {
        (Request::FindSuccessor { .. } | Request::Join { .. }, 302) => {
            let Ok(Contacts::List(list)) = msg.contacts() else { return (None, forged) };
            let mut nodes: Vec<(f32, Contact)> = Vec::new();
            for na in &list {
                let q = na.param("q").and_then(|p| p.value.as_deref()?.parse().ok()).unwrap_or(1.0);
                match learned_contact(&na.uri, hash) {
                    Some(Ok(c)) => nodes.push((q, c)),
                    Some(Err(_)) => forged += 1,
                    None => {}
                }
            }
            // Best first; a stable sort keeps the sender's order among equal q.
            nodes.sort_by(|a, b| b.0.total_cmp(&a.0));
            (!nodes.is_empty()).then(|| Response::Closer { nodes: nodes.into_iter().map(|(_, c)| c).collect() })
        }
        (Request::FindSuccessor { .. }, 200) => links
            .iter()
            .find(|(t, _)| t == "R")
            .map(|(_, c)| Response::Successor { node: c.clone(), backups: family(&links, 'S') }),
        (Request::GetNeighbours { digest, .. }, 200) => {
            let unchanged = digest.is_some() && digest_of(msg) == *digest;
            if unchanged && !links.iter().any(|(t, _)| t.starts_with('P') || t.starts_with('S')) {
                Some(Response::NeighboursUnchanged)
            } else {
                let successors = family(&links, 'S');
                Some(Response::Neighbours { predecessor: family(&links, 'P').into_iter().next(), successors })
            }
        }
        (Request::Join { .. }, 200) => Some(Response::Joined {
            predecessor: family(&links, 'P').into_iter().next(),
            successors: family(&links, 'S'),
            fingers: family(&links, 'F'),
        }),
        (Request::Notify | Request::Ping | Request::Leave { .. } | Request::Changed { .. }, 200) => Some(Response::Ok),
        _ => None,
    };
    (response, forged)
}

/// A 503 that is not the overlay's own "leaving" refusal (which carries the answerer's
/// `DHT-PeerID`): an overloaded node or its load shedding, alive and to be asked again later.
pub fn is_busy(msg: &Message) -> bool {
    msg.status() == Some(503) && msg.headers.get(&HeaderName::DhtPeerId).is_none()
}

fn refusal_for(code: u16) -> Option<RefuseReason> {
    Some(match code {
        403 => RefuseReason::IdMismatch,
        409 => RefuseReason::IdInUse,
        400 => RefuseReason::Malformed,
        480 => RefuseReason::NotJoined,
        503 => RefuseReason::Leaving,
        _ => return None,
    })
}

/// The node named by an RPC target, for logs.
pub fn target_label(t: &RpcTarget) -> String {
    match t {
        RpcTarget::Node(c) => format!("{c:?}"),
        RpcTarget::Address(a) => a.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::RpcId;
    use crate::sip::parse;

    fn contact(port: u16) -> Contact {
        let ip = "127.0.0.7".parse().unwrap();
        Contact::new(NodeId::from_addr(ip, port, IdHash::Sha1), SocketAddr::new(ip, port))
    }

    fn overlay() -> OverlayInfo {
        OverlayInfo { name: "test.p2p".into(), hash: IdHash::Sha1, client: false }
    }

    /// Encodes, prints, parses and decodes a request, as the wire would.
    fn over_the_wire(request: Request, to: RpcTarget) -> (Contact, Request) {
        let me = contact(5070);
        let rpc = OutgoingRpc { id: RpcId(1), to: to.clone(), request };
        let msg = encode_request(&rpc, &me, &overlay(), RequestIds { call_id: "c1", from_tag: "t1", cseq: 1 });
        let mut msg = parse(msg.encode()).unwrap();
        msg.headers.push_front_of(Header::new(HeaderName::Via, "SIP/2.0/UDP 127.0.0.7:5070;branch=z9hG4bKx"));
        assert!(is_overlay_request(&msg));
        let receiver = to.id().unwrap_or(contact(5071).id);
        let (sender, request, forged) = decode_request(&msg, me.addr, false, &receiver, &overlay()).unwrap();
        assert_eq!(forged, 0);
        (sender, request)
    }

    /// The GetNeighbours that 5070 sends `to`, as encoded (no Via yet).
    fn neighbours_request(to: &Contact) -> Message {
        let rpc = OutgoingRpc {
            id: RpcId(1),
            to: RpcTarget::Node(to.clone()),
            request: Request::GetNeighbours { digest: None, notify: false },
        };
        encode_request(&rpc, &contact(5070), &overlay(), RequestIds { call_id: "c", from_tag: "t", cseq: 1 })
    }

    /// The answer as Chord would hear it, from `asked`, no link forged.
    fn heard(sent: &Request, asked: &Contact, resp: &Message) -> Option<Response> {
        let (answer, forged) = decode_response(sent, &RpcTarget::Node(asked.clone()), resp, IdHash::Sha1);
        assert_eq!(forged, 0);
        answer
    }

    #[test]
    fn every_request_round_trips() {
        let target = RpcTarget::Node(contact(5071));
        let key = contact(9999).id;
        let cases = [
            Request::FindSuccessor { key },
            Request::GetNeighbours { digest: None, notify: false },
            Request::GetNeighbours { digest: None, notify: true },
            Request::GetNeighbours { digest: Some(0x0123_4567_89ab_cdef), notify: true },
            Request::Ping,
            Request::Changed { digest: 0xfedc_ba98_7654_3210 },
            Request::Join { joiner: contact(5070) },
            Request::Leave { predecessor: Some(contact(5060)), successors: vec![contact(5071), contact(5072)] },
            Request::Leave { predecessor: None, successors: vec![] },
        ];
        for req in cases {
            let (sender, got) = over_the_wire(req.clone(), target.clone());
            assert_eq!(sender, contact(5070));
            assert_eq!(got, req);
        }
        // A join through a bootstrap address we know no ID for.
        let (_, got) = over_the_wire(Request::Join { joiner: contact(5070) }, RpcTarget::Address(contact(5071).addr));
        assert_eq!(got, Request::Join { joiner: contact(5070) });
    }

    #[test]
    fn every_response_round_trips() {
        let me = contact(5071);
        let req_msg = {
            let rpc = OutgoingRpc {
                id: RpcId(1),
                to: RpcTarget::Node(me.clone()),
                request: Request::GetNeighbours { digest: None, notify: false },
            };
            let mut m =
                encode_request(&rpc, &contact(5070), &overlay(), RequestIds { call_id: "c", from_tag: "t", cseq: 1 });
            m.headers.push_front_of(Header::new(HeaderName::Via, "SIP/2.0/UDP 127.0.0.7:5070;branch=z9hG4bKx"));
            m
        };
        let cases = [
            (
                Request::FindSuccessor { key: contact(1).id },
                Response::Successor { node: contact(5072), backups: vec![] },
            ),
            (
                Request::FindSuccessor { key: contact(1).id },
                Response::Successor { node: contact(5072), backups: vec![contact(5073), contact(5074)] },
            ),
            (
                Request::FindSuccessor { key: contact(1).id },
                Response::Closer { nodes: vec![contact(5073), contact(5074)] },
            ),
            (
                Request::GetNeighbours { digest: None, notify: false },
                Response::Neighbours {
                    predecessor: Some(contact(5069)),
                    successors: vec![contact(5072), contact(5073)],
                },
            ),
            (
                Request::GetNeighbours { digest: None, notify: false },
                Response::Neighbours { predecessor: None, successors: vec![contact(5072)] },
            ),
            (
                Request::Join { joiner: contact(5070) },
                Response::Joined {
                    predecessor: Some(contact(5069)),
                    successors: vec![contact(5071)],
                    fingers: vec![contact(5080), contact(5090)],
                },
            ),
            (Request::Ping, Response::Ok),
            (Request::Notify, Response::Refused { reason: RefuseReason::IdMismatch }),
            (Request::Notify, Response::Ok),
            (Request::Changed { digest: 1 }, Response::Ok),
            (Request::Ping, Response::Refused { reason: RefuseReason::NotJoined }),
        ];
        for (sent, answer) in cases {
            let resp = encode_response(&req_msg, &answer, &me, &overlay(), "tt");
            let resp = parse(resp.encode()).unwrap();
            assert_eq!(heard(&sent, &me, &resp), Some(answer));
        }
    }

    #[test]
    fn an_unchanged_neighbour_list_is_answered_by_its_digest() {
        let me = contact(5071);
        let (pred, succ) = (Some(contact(5069)), vec![contact(5072), contact(5073)]);
        let digest = crate::overlay::neighbours_digest(pred.as_ref(), &succ);
        let sent = Request::GetNeighbours { digest: Some(digest), notify: true };
        let rpc = OutgoingRpc { id: RpcId(1), to: RpcTarget::Node(me.clone()), request: sent.clone() };
        let mut req =
            encode_request(&rpc, &contact(5070), &overlay(), RequestIds { call_id: "c", from_tag: "t", cseq: 1 });
        req.headers.push_front_of(Header::new(HeaderName::Via, "SIP/2.0/UDP 127.0.0.7:5070;branch=z9hG4bKx"));
        let (_, got, _) =
            decode_request(&parse(req.encode()).unwrap(), contact(5070).addr, false, &me.id, &overlay()).unwrap();
        assert_eq!(got, sent);
        let unchanged = encode_response(&req, &Response::NeighboursUnchanged, &me, &overlay(), "tt");
        let wire = parse(unchanged.encode()).unwrap();
        assert!(!String::from_utf8_lossy(&wire.encode()).contains("link=S1"));
        assert_eq!(heard(&sent, &me, &wire), Some(Response::NeighboursUnchanged));
        // An "unchanged" echoing another digest is not taken for one (it carries no list
        // either, so it reads as an empty neighbourhood, which stabilize then checks).
        let other = Request::GetNeighbours { digest: Some(digest ^ 1), notify: true };
        assert_ne!(heard(&other, &me, &wire), Some(Response::NeighboursUnchanged));
        // A full answer to a conditional question is a full answer.
        let full = Response::Neighbours { predecessor: pred, successors: succ };
        let wire = parse(encode_response(&req, &full, &me, &overlay(), "tt").encode()).unwrap();
        assert_eq!(heard(&sent, &me, &wire), Some(full));
    }

    #[test]
    fn messages_use_compact_header_forms() {
        let rpc = OutgoingRpc { id: RpcId(1), to: RpcTarget::Node(contact(5071)), request: Request::Notify };
        let msg = encode_request(&rpc, &contact(5070), &overlay(), RequestIds { call_id: "c", from_tag: "t", cseq: 1 });
        let text = String::from_utf8(msg.encode().to_vec()).unwrap();
        for line in ["\r\nf: ", "\r\nt: ", "\r\ni: c\r\n", "\r\nm: ", "\r\nl: 0\r\n"] {
            assert!(text.contains(line), "{line:?} in {text}");
        }
        // And they read back as the long forms.
        let parsed = parse(msg.encode()).unwrap();
        assert_eq!(parsed.headers.get(&HeaderName::CallId).map(|h| h.value().to_vec()), Some(b"c".to_vec()));
    }

    #[test]
    fn stabilize_answer_also_answers_find_successor_of_own_id() {
        let me = contact(5071);
        let req = neighbours_request(&me);
        let answer = Response::Neighbours { predecessor: None, successors: vec![contact(5072)] };
        let resp = parse(encode_response(&req, &answer, &me, &overlay(), "t").encode()).unwrap();
        assert_eq!(
            heard(&Request::FindSuccessor { key: me.id }, &me, &resp),
            Some(Response::Successor { node: me, backups: vec![contact(5072)] })
        );
    }

    #[test]
    fn forged_links_are_dropped_and_a_stranger_answering_is_refused() {
        // docs/security.md, H1: an ID that is not its address's is never adopted, wherever it appears.
        let me = contact(5071);
        let req = neighbours_request(&me);
        let forged = Contact::new(me.id.wrapping_add(NodeId::pow2(0)), "192.0.2.66:5070".parse().unwrap());
        let sent = Request::GetNeighbours { digest: None, notify: false };
        let answer = Response::Neighbours { predecessor: None, successors: vec![forged.clone(), contact(5072)] };
        let resp = parse(encode_response(&req, &answer, &me, &overlay(), "t").encode()).unwrap();
        let (got, dropped) = decode_response(&sent, &RpcTarget::Node(me.clone()), &resp, IdHash::Sha1);
        assert_eq!(got, Some(Response::Neighbours { predecessor: None, successors: vec![contact(5072)] }));
        assert_eq!(dropped, 1);
        // A redirect naming it.
        let closer = Response::Closer { nodes: vec![forged.clone(), contact(5073)] };
        let resp = parse(encode_response(&req, &closer, &me, &overlay(), "t").encode()).unwrap();
        let find = Request::FindSuccessor { key: contact(1).id };
        let (got, dropped) = decode_response(&find, &RpcTarget::Node(me.clone()), &resp, IdHash::Sha1);
        assert_eq!((got, dropped), (Some(Response::Closer { nodes: vec![contact(5073)] }), 1));
        // The answer must come from the node we asked.
        let (got, dropped) = decode_response(&find, &RpcTarget::Node(contact(5090)), &resp, IdHash::Sha1);
        assert_eq!((got, dropped), (None, 1));
        // A leave hand-off naming it.
        let rpc = OutgoingRpc {
            id: RpcId(2),
            to: RpcTarget::Node(me.clone()),
            request: Request::Leave { predecessor: Some(forged), successors: vec![contact(5072)] },
        };
        let mut leave =
            encode_request(&rpc, &contact(5070), &overlay(), RequestIds { call_id: "l", from_tag: "t", cseq: 1 });
        leave.headers.push_front_of(Header::new(HeaderName::Via, "SIP/2.0/UDP 127.0.0.7:5070;branch=z9hG4bKl"));
        let leave = parse(leave.encode()).unwrap();
        let (_, got, dropped) = decode_request(&leave, contact(5070).addr, false, &me.id, &overlay()).unwrap();
        assert_eq!(got, Request::Leave { predecessor: None, successors: vec![contact(5072)] });
        assert_eq!(dropped, 1);
    }

    #[test]
    fn claims_are_checked_against_the_source() {
        let me = contact(5070);
        let rpc = OutgoingRpc { id: RpcId(1), to: RpcTarget::Node(contact(5071)), request: Request::Ping };
        let msg = encode_request(&rpc, &me, &overlay(), RequestIds { call_id: "c", from_tag: "t", cseq: 1 });
        let other_ip: SocketAddr = "127.0.0.8:5070".parse().unwrap();
        let other_port: SocketAddr = "127.0.0.7:6000".parse().unwrap();
        let id = contact(5071).id;
        assert_eq!(decode_request(&msg, other_ip, false, &id, &overlay()), Err(DecodeError::IdMismatch));
        assert_eq!(decode_request(&msg, other_port, false, &id, &overlay()), Err(DecodeError::IdMismatch));
        // Over TCP the source port is ephemeral: the address must still match.
        assert!(decode_request(&msg, other_port, true, &id, &overlay()).is_ok());
        // A forged ID for a genuine address.
        let mut forged = msg.clone();
        let fake = Contact::new(contact(5099).id, me.addr);
        forged.headers.set(peer_id_header(&fake, &overlay(), None));
        assert_eq!(decode_request(&forged, me.addr, false, &id, &overlay()), Err(DecodeError::IdMismatch));
    }

    #[test]
    fn version_and_overlay_name_are_checked() {
        let me = contact(5070);
        let rpc = OutgoingRpc { id: RpcId(1), to: RpcTarget::Node(contact(5071)), request: Request::Ping };
        let msg = encode_request(&rpc, &me, &overlay(), RequestIds { call_id: "c", from_tag: "t", cseq: 1 });
        let other = OverlayInfo { name: "other".into(), hash: IdHash::Sha1, client: false };
        assert!(matches!(decode_request(&msg, me.addr, false, &me.id, &other), Err(DecodeError::Overlay(_))));
        assert!(decode_request(&msg, me.addr, false, &me.id, &overlay()).is_ok());
        for other in ["version=1", "version=3", "version=x"] {
            let text = String::from_utf8(msg.encode().to_vec()).unwrap().replace("version=2", other);
            let old = parse(bytes::Bytes::from(text)).unwrap();
            let err = decode_request(&old, me.addr, false, &me.id, &overlay()).unwrap_err();
            assert_eq!(err, DecodeError::Version(other["version=".len()..].to_owned()));
            assert_eq!(err.status().0, 420);
        }
    }

    #[test]
    fn malformed_headers_are_errors_not_panics() {
        let base = "REGISTER sip:127.0.0.7:5071 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.7:5070;branch=z9hG4bK1\r\n\
                    From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\nRequire: dht\r\n";
        for extra in [
            "",
            "DHT-PeerID: garbage\r\n",
            "DHT-PeerID: <sip:zz@127.0.0.7:5070>;version=2\r\n",
            "DHT-PeerID: <sip:127.0.0.7:5070>;version=2\r\n",
            "DHT-PeerID: <sip:0000000000000000000000000000000000000000@example.com:5070>;version=2\r\n",
        ] {
            let msg = parse(bytes::Bytes::from(format!("{base}{extra}\r\n"))).unwrap();
            let me = contact(5071);
            assert!(decode_request(&msg, contact(5070).addr, false, &me.id, &overlay()).is_err(), "{extra}");
        }
        let resp = parse(bytes::Bytes::from_static(
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nDHT-Link: <sip:nothex@1.2.3.4:5>;link=R\r\n\r\n",
        ))
        .unwrap();
        let asked = RpcTarget::Node(contact(5071));
        assert_eq!(decode_response(&Request::FindSuccessor { key: NodeId::ZERO }, &asked, &resp, IdHash::Sha1).0, None);
    }
}
