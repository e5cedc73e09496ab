//! The SIP message model (RFC 3261 §7): a start line, an ordered list of header fields and a
//! body.
//!
//! Header fields are kept as the raw lines they arrived as (shared with the receive buffer, no
//! copy), so a proxy forwards headers it does not understand byte for byte. Typed access parses
//! on demand; [`crate::sip::validate`] checks once, on receipt, that the headers every element
//! needs are well-formed.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use super::header::{AuthParams, CSeq, HeaderName, MediaType, NameAddr, Via};
use super::method::Method;
use super::syntax::{first_top_level, is_token, parse_u32, split_top_level, trim};
use super::uri::Uri;

/// `SIP/x.y`. Only 2.0 is spoken; others are kept so the element can answer 505.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// The major version (2).
    pub major: u16,
    /// The minor version (0).
    pub minor: u16,
}

impl Version {
    /// `SIP/2.0`, the only version this crate speaks.
    pub const SIP_2_0: Version = Version { major: 2, minor: 0 };

    pub(crate) fn parse(s: &[u8]) -> Option<Version> {
        let rest = s.get(..4).filter(|p| p.eq_ignore_ascii_case(b"SIP/")).map(|_| &s[4..])?;
        let dot = rest.iter().position(|&b| b == b'.')?;
        let major = u16::try_from(parse_u32(&rest[..dot])?).ok()?;
        let minor = u16::try_from(parse_u32(&rest[dot + 1..])?).ok()?;
        Some(Version { major, minor })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/{}.{}", self.major, self.minor)
    }
}

/// `Method Request-URI SIP-Version` (RFC 3261 §7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLine {
    /// The method.
    pub method: Method,
    /// The Request-URI.
    pub uri: Uri,
    /// The version.
    pub version: Version,
}

/// `SIP-Version Status-Code Reason-Phrase` (RFC 3261 §7.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    /// The version.
    pub version: Version,
    /// 100..=699 (RFC 3261 §7.2); the parser refuses anything else.
    pub code: u16,
    /// The reason phrase.
    pub reason: String,
}

/// A message's first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// A request.
    Request(RequestLine),
    /// A response.
    Response(StatusLine),
}

/// One header field line.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    name: HeaderName,
    /// The whole field line as received or built, without the final CRLF; may contain folded
    /// continuation lines.
    line: Bytes,
    /// Where the value starts within `line` (after the colon and any white space).
    value_start: usize,
}

impl Header {
    /// Builds `Name: value` with the canonical long name.
    pub fn new(name: HeaderName, value: impl fmt::Display) -> Header {
        use fmt::Write as _;
        let value_start = name.as_str().len() + 2;
        // Room for a typical Via, To or Contact line, so printing the value does not grow the
        // string several times over (`format!` starts from a guess that is too small here).
        let mut line = String::with_capacity(value_start + 96);
        line.push_str(name.as_str());
        line.push_str(": ");
        let _ = write!(line, "{value}");
        Header { name, line: Bytes::from(line), value_start }
    }

    /// A header as the parser found it. `value_start <= line.len()` must hold.
    pub(crate) fn from_raw(name: HeaderName, line: Bytes, value_start: usize) -> Header {
        debug_assert!(value_start <= line.len());
        Header { name, line, value_start }
    }

    /// The header's name.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// The raw value, trimmed of surrounding white space; folding inside is kept.
    pub fn value(&self) -> &[u8] {
        trim(self.line.get(self.value_start..).unwrap_or_default())
    }

    /// The value as text when it is UTF-8.
    pub fn value_str(&self) -> Option<&str> {
        std::str::from_utf8(self.value()).ok()
    }

    /// The whole line as it will be printed.
    pub fn raw_line(&self) -> &[u8] {
        &self.line
    }

    /// The comma-separated elements of the value (RFC 3261 §7.3.1), or `None` if a quoted
    /// string or `<` is left open.
    pub fn elements(&self) -> Option<Vec<&[u8]>> {
        let v = self.value();
        if v.is_empty() {
            return Some(Vec::new());
        }
        Some(split_top_level(v, b',')?.into_iter().map(trim).collect())
    }
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.line))
    }
}

/// Why a header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Missing … header.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// Malformed … header.
    #[error("malformed {0} header")]
    Malformed(&'static str),
    /// More than one … header.
    #[error("more than one {0} header")]
    Multiple(&'static str),
}

/// The header fields of a message, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

impl Headers {
    /// Every header, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }

    /// How many header lines there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first header named `name`.
    pub fn get(&self, name: &HeaderName) -> Option<&Header> {
        self.0.iter().find(|h| &h.name == name)
    }

    /// Every header named `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a Header> + 'a {
        self.0.iter().filter(move |h| &h.name == name)
    }

    /// How many headers are named `name`.
    pub fn count(&self, name: &HeaderName) -> usize {
        self.get_all(name).count()
    }

    /// Appends a header at the end.
    pub fn push(&mut self, h: Header) {
        self.0.push(h);
    }

    /// Inserts a header before all others of the same name, or first of all if there are none
    /// (how an element adds its Via or a proxy its Record-Route, RFC 3261 §8.1.1.7, §16.6).
    pub fn push_front_of(&mut self, h: Header) {
        let i = self.0.iter().position(|x| x.name == h.name).unwrap_or(0);
        self.0.insert(i, h);
    }

    /// Replaces every header of that name with one new header, keeping the position of the
    /// first.
    pub fn set(&mut self, h: Header) {
        match self.0.iter().position(|x| x.name == h.name) {
            Some(i) => {
                self.0[i] = h;
                let name = self.0[i].name.clone();
                let mut seen = 0usize;
                self.0.retain(|x| {
                    if x.name == name {
                        seen += 1;
                        seen == 1
                    } else {
                        true
                    }
                });
            }
            None => self.0.push(h),
        }
    }

    /// Removes all headers of that name; returns how many were removed.
    pub fn remove_all(&mut self, name: &HeaderName) -> usize {
        let before = self.0.len();
        self.0.retain(|h| &h.name != name);
        before - self.0.len()
    }

    /// Replaces the first header of `h`'s name with `h` where it stands, when that header's
    /// value holds a single list element (no comma at all); returns false, changing nothing,
    /// otherwise (then [`Self::remove_first_element`] handles the list).
    pub fn replace_single_element(&mut self, h: Header) -> bool {
        let Some(i) = self.0.iter().position(|x| x.name == h.name) else { return false };
        if self.0[i].value().contains(&b',') {
            return false;
        }
        self.0[i] = h;
        true
    }

    /// Removes the first list element of a list header (a Via or Route entry): the element is
    /// dropped from its line, and the line goes when it was the only element.
    pub fn remove_first_element(&mut self, name: &HeaderName) -> Option<Vec<u8>> {
        let i = self.0.iter().position(|h| &h.name == name)?;
        let elements: Vec<Vec<u8>> = self.0[i].elements()?.into_iter().map(<[u8]>::to_vec).collect();
        let mut it = elements.into_iter();
        let first = it.next()?;
        let rest: Vec<Vec<u8>> = it.collect();
        if rest.is_empty() {
            self.0.remove(i);
        } else {
            let joined = rest.iter().map(|e| String::from_utf8_lossy(e).into_owned()).collect::<Vec<_>>().join(", ");
            self.0[i] = Header::new(name.clone(), joined);
        }
        Some(first)
    }

    /// Every list element of every header of that name, in order; `None` when a value leaves
    /// a quote or bracket open.
    pub fn elements<'a>(&'a self, name: &'a HeaderName) -> Option<Vec<&'a [u8]>> {
        let mut out = Vec::new();
        for h in self.get_all(name) {
            out.extend(h.elements()?);
        }
        Some(out)
    }
}

impl FromIterator<Header> for Headers {
    fn from_iter<I: IntoIterator<Item = Header>>(iter: I) -> Self {
        Headers(iter.into_iter().collect())
    }
}

impl Extend<Header> for Headers {
    fn extend<I: IntoIterator<Item = Header>>(&mut self, iter: I) {
        self.0.extend(iter)
    }
}

/// The value of a Contact header: either `*` (only in a REGISTER removing all bindings,
/// RFC 3261 §10.2.2) or a list of addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contacts {
    /// `Contact: *`.
    Star,
    /// The addresses, in order.
    List(Vec<NameAddr>),
}

/// A SIP request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The request or status line.
    pub start: StartLine,
    /// The header lines.
    pub headers: Headers,
    /// The body.
    pub body: Bytes,
}

/// Header name strings for error messages, so the errors stay `'static`.
fn label(name: &HeaderName) -> &'static str {
    match name {
        HeaderName::Via => "Via",
        HeaderName::From => "From",
        HeaderName::To => "To",
        HeaderName::CallId => "Call-ID",
        HeaderName::CSeq => "CSeq",
        HeaderName::Contact => "Contact",
        HeaderName::MaxForwards => "Max-Forwards",
        HeaderName::Route => "Route",
        HeaderName::RecordRoute => "Record-Route",
        HeaderName::Expires => "Expires",
        HeaderName::ContentLength => "Content-Length",
        HeaderName::ContentType => "Content-Type",
        HeaderName::Require => "Require",
        HeaderName::ProxyRequire => "Proxy-Require",
        HeaderName::Supported => "Supported",
        HeaderName::Accept => "Accept",
        HeaderName::Authorization => "Authorization",
        HeaderName::WwwAuthenticate => "WWW-Authenticate",
        HeaderName::ProxyAuthorization => "Proxy-Authorization",
        HeaderName::ProxyAuthenticate => "Proxy-Authenticate",
        HeaderName::DhtPeerId => "DHT-PeerID",
        HeaderName::DhtLink => "DHT-Link",
        _ => "header",
    }
}

impl Message {
    /// A request with no headers yet.
    pub fn request(method: Method, uri: Uri) -> Message {
        Message {
            start: StartLine::Request(RequestLine { method, uri, version: Version::SIP_2_0 }),
            headers: Headers::default(),
            body: Bytes::new(),
        }
    }

    /// A response with no headers yet.
    pub fn response(code: u16, reason: impl Into<String>) -> Message {
        Message {
            start: StartLine::Response(StatusLine { version: Version::SIP_2_0, code, reason: reason.into() }),
            headers: Headers::default(),
            body: Bytes::new(),
        }
    }

    /// Whether it is a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request(_))
    }

    /// A request's method.
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request(r) => Some(&r.method),
            StartLine::Response(_) => None,
        }
    }

    /// A request's Request-URI.
    pub fn request_uri(&self) -> Option<&Uri> {
        match &self.start {
            StartLine::Request(r) => Some(&r.uri),
            StartLine::Response(_) => None,
        }
    }

    /// A response's status code.
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response(s) => Some(s.code),
            StartLine::Request(_) => None,
        }
    }

    /// The SIP version of the start line.
    pub fn version(&self) -> Version {
        match &self.start {
            StartLine::Request(r) => r.version,
            StartLine::Response(s) => s.version,
        }
    }

    /// The value of the one header of that name; an error if it is missing or repeated.
    fn single<'a>(&'a self, name: &'a HeaderName) -> Result<&'a Header, HeaderError> {
        let mut it = self.headers.get_all(name);
        let first = it.next().ok_or(HeaderError::Missing(label(name)))?;
        if it.next().is_some() {
            return Err(HeaderError::Multiple(label(name)));
        }
        Ok(first)
    }

    fn optional_single<'a>(&'a self, name: &'a HeaderName) -> Result<Option<&'a Header>, HeaderError> {
        match self.single(name) {
            Ok(h) => Ok(Some(h)),
            Err(HeaderError::Missing(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list<T>(&self, name: &HeaderName, parse: impl Fn(&[u8]) -> Option<T>) -> Result<Vec<T>, HeaderError> {
        let elements = self.headers.elements(name).ok_or(HeaderError::Malformed(label(name)))?;
        elements.into_iter().map(|e| parse(e).ok_or(HeaderError::Malformed(label(name)))).collect()
    }

    /// All Via entries, topmost first.
    pub fn vias(&self) -> Result<Vec<Via>, HeaderError> {
        let v = self.list(&HeaderName::Via, Via::parse)?;
        if v.is_empty() {
            return Err(HeaderError::Missing("Via"));
        }
        Ok(v)
    }

    /// The topmost Via, which names the previous hop (RFC 3261 §18.2.2).
    pub fn top_via(&self) -> Result<Via, HeaderError> {
        let h = self.headers.get(&HeaderName::Via).ok_or(HeaderError::Missing("Via"))?;
        // Only the first element is parsed; the rest of the line is still checked for open
        // quotes and brackets, as `elements` would.
        let v = h.value();
        let first = if v.is_empty() { None } else { first_top_level(v, b',').map(trim) };
        let first = first.ok_or(HeaderError::Malformed("Via"))?;
        Via::parse(first).ok_or(HeaderError::Malformed("Via"))
    }

    /// The From header, parsed.
    pub fn from(&self) -> Result<NameAddr, HeaderError> {
        NameAddr::parse(self.single(&HeaderName::From)?.value()).ok_or(HeaderError::Malformed("From"))
    }

    /// The To header, parsed.
    pub fn to(&self) -> Result<NameAddr, HeaderError> {
        NameAddr::parse(self.single(&HeaderName::To)?.value()).ok_or(HeaderError::Malformed("To"))
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Result<&str, HeaderError> {
        let v = self.single(&HeaderName::CallId)?.value();
        // callid = word [ "@" word ]: no white space, not empty.
        if v.is_empty() || v.iter().any(|b| b.is_ascii_whitespace() || *b < 0x21) {
            return Err(HeaderError::Malformed("Call-ID"));
        }
        std::str::from_utf8(v).map_err(|_| HeaderError::Malformed("Call-ID"))
    }

    /// The CSeq header, parsed.
    pub fn cseq(&self) -> Result<CSeq, HeaderError> {
        CSeq::parse(self.single(&HeaderName::CSeq)?.value()).ok_or(HeaderError::Malformed("CSeq"))
    }

    /// Max-Forwards, if present (RFC 2543 requests may lack it). Values above 255 are malformed.
    pub fn max_forwards(&self) -> Result<Option<u8>, HeaderError> {
        self.optional_single(&HeaderName::MaxForwards)?
            .map(|h| {
                parse_u32(h.value()).and_then(|v| u8::try_from(v).ok()).ok_or(HeaderError::Malformed("Max-Forwards"))
            })
            .transpose()
    }

    /// Expires as delta-seconds.
    pub fn expires(&self) -> Result<Option<u32>, HeaderError> {
        self.optional_single(&HeaderName::Expires)?
            .map(|h| parse_u32(h.value()).ok_or(HeaderError::Malformed("Expires")))
            .transpose()
    }

    /// The Content-Length, if present.
    pub fn content_length(&self) -> Result<Option<u32>, HeaderError> {
        self.optional_single(&HeaderName::ContentLength)?
            .map(|h| parse_u32(h.value()).ok_or(HeaderError::Malformed("Content-Length")))
            .transpose()
    }

    /// The Content-Type, if present.
    pub fn content_type(&self) -> Result<Option<MediaType>, HeaderError> {
        self.optional_single(&HeaderName::ContentType)?
            .map(|h| MediaType::parse(h.value()).ok_or(HeaderError::Malformed("Content-Type")))
            .transpose()
    }

    /// Every Contact, or `*`.
    pub fn contacts(&self) -> Result<Contacts, HeaderError> {
        let elements = self.headers.elements(&HeaderName::Contact).ok_or(HeaderError::Malformed("Contact"))?;
        if elements.len() == 1 && elements[0] == b"*" {
            return Ok(Contacts::Star);
        }
        elements
            .into_iter()
            .map(|e| NameAddr::parse(e).ok_or(HeaderError::Malformed("Contact")))
            .collect::<Result<_, _>>()
            .map(Contacts::List)
    }

    /// The Route set, in order.
    pub fn routes(&self) -> Result<Vec<NameAddr>, HeaderError> {
        self.list(&HeaderName::Route, NameAddr::parse)
    }

    /// The Record-Route set, in order.
    pub fn record_routes(&self) -> Result<Vec<NameAddr>, HeaderError> {
        self.list(&HeaderName::RecordRoute, NameAddr::parse)
    }

    /// The option tags of a Require, Proxy-Require, Supported or Unsupported header.
    pub fn option_tags(&self, name: &HeaderName) -> Result<Vec<String>, HeaderError> {
        self.list(name, |e| is_token(e).then(|| String::from_utf8_lossy(e).into_owned()))
    }

    /// Accept media ranges (without q-values ordering).
    pub fn accept(&self) -> Result<Vec<MediaType>, HeaderError> {
        self.list(&HeaderName::Accept, MediaType::parse)
    }

    /// Credentials or challenges of an auth header (one per header line: their values contain
    /// commas, so they are not split as lists).
    pub fn auth(&self, name: &HeaderName) -> Result<Vec<AuthParams>, HeaderError> {
        self.headers
            .get_all(name)
            .map(|h| AuthParams::parse(h.value()).ok_or(HeaderError::Malformed(label(name))))
            .collect()
    }

    /// Replaces the body; sets Content-Type (when given) and Content-Length to match.
    pub fn set_body(&mut self, body: Bytes, content_type: Option<&MediaType>) {
        self.headers.remove_all(&HeaderName::ContentType);
        if let Some(ct) = content_type {
            self.headers.push(Header::new(HeaderName::ContentType, ct));
        }
        self.headers.set(Header::new(HeaderName::ContentLength, body.len()));
        self.body = body;
    }

    /// Prints the message. Content-Length is written from the body's real length (replacing
    /// any header that says otherwise), since TCP framing depends on it (RFC 3261 §18.3).
    pub fn encode_into(&self, out: &mut BytesMut) {
        match &self.start {
            StartLine::Request(r) => {
                out.put_slice(r.method.as_str().as_bytes());
                out.put_u8(b' ');
                out.put_slice(r.uri.to_string().as_bytes());
                out.put_u8(b' ');
                out.put_slice(r.version.to_string().as_bytes());
            }
            StartLine::Response(s) => {
                out.put_slice(s.version.to_string().as_bytes());
                out.put_slice(format!(" {} ", s.code).as_bytes());
                out.put_slice(s.reason.as_bytes());
            }
        }
        out.put_slice(b"\r\n");
        let mut wrote_length = false;
        for h in self.headers.iter() {
            if h.name == HeaderName::ContentLength {
                if wrote_length {
                    continue;
                }
                wrote_length = true;
                if parse_u32(h.value()) != u32::try_from(self.body.len()).ok() {
                    out.put_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
                    continue;
                }
            }
            out.put_slice(&h.line);
            out.put_slice(b"\r\n");
        }
        if !wrote_length {
            out.put_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        out.put_slice(b"\r\n");
        out.put_slice(&self.body);
    }

    /// The message as bytes on the wire.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(512 + self.body.len());
        self.encode_into(&mut out);
        out.freeze()
    }

    /// A response to this request as RFC 3261 §8.2.6.2 builds it: Via (all of them), From,
    /// To, Call-ID and CSeq copied; a To tag added when the response is not 100 and the
    /// request had none (the caller passes the tag it keeps for this dialog or transaction).
    pub fn make_response(&self, code: u16, reason: &str, to_tag: Option<&str>) -> Message {
        let mut resp = Message::response(code, reason);
        for h in self.headers.iter() {
            match h.name {
                HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                    resp.headers.push(h.clone())
                }
                HeaderName::To => {
                    // Parsed only when a tag may have to be added.
                    let tagged = match to_tag {
                        Some(tag) if code != 100 => self.to().ok().filter(|t| t.tag().is_none()).map(|mut to| {
                            to.set_param("tag", Some(tag.to_owned()));
                            Header::new(HeaderName::To, to)
                        }),
                        _ => None,
                    };
                    resp.headers.push(tagged.unwrap_or_else(|| h.clone()));
                }
                _ => {}
            }
        }
        resp
    }

    /// The transaction's Call-ID, CSeq and top Via branch in one call, for logs.
    pub fn summary(&self) -> String {
        let first = match &self.start {
            StartLine::Request(r) => format!("{} {}", r.method, r.uri),
            StartLine::Response(s) => format!("{} {}", s.code, s.reason),
        };
        let cseq = self.cseq().map(|c| c.to_string()).unwrap_or_default();
        format!("{first} (cseq {cseq}, call-id {})", self.call_id().unwrap_or("?"))
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.encode()))
    }
}
