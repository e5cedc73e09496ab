//! Turning bytes into a [`Message`] (RFC 3261 §7, §18.3; RFC 4475).
//!
//! The parser checks structure: the start line, that every header line is `token: value`
//! (folded continuation lines joined), and body framing by Content-Length. It does not
//! interpret header values; [`crate::sip::validate`] does that for the headers that matter. It
//! never copies header bytes: each header is a slice of the input buffer.
//!
//! Liberal where RFC 4475 allows it: leading CRLFs, bare LF line ends, runs of SP in the
//! request line and trailing SP. Strict where it asks for rejection: broken request lines,
//! URIs, status codes, negative or conflicting Content-Length, a body shorter than announced.

use bytes::Bytes;
use memchr::memchr;

use super::header::HeaderName;
use super::message::{Header, Headers, Message, RequestLine, StartLine, StatusLine, Version};
use super::method::Method;
use super::syntax::{is_lws, is_token, parse_u32, trim};
use super::uri::Uri;

/// What was wrong with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// Empty message.
    #[error("empty message")]
    Empty,
    /// Malformed start line.
    #[error("malformed start line")]
    StartLine,
    /// Malformed Request-URI.
    #[error("malformed Request-URI")]
    RequestUri,
    /// Malformed status code.
    #[error("malformed status code")]
    StatusCode,
    /// Malformed header line.
    #[error("malformed header line")]
    HeaderLine,
    /// No empty line after the headers.
    #[error("no empty line after the headers")]
    Unterminated,
    /// Malformed Content-Length.
    #[error("malformed Content-Length")]
    ContentLength,
    /// More than one Content-Length.
    #[error("more than one Content-Length")]
    MultipleContentLength,
    /// Body shorter than Content-Length.
    #[error("body shorter than Content-Length")]
    BodyTruncated,
}

/// A parse failure, with the byte offset where it was found. For a request whose header
/// lines could be split, the headers found are kept so the element can still answer 400
/// (RFC 3261 §8.2.6.2 needs Via, From, To, Call-ID and CSeq to build a response).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at byte {offset}")]
pub struct ParseError {
    /// What was wrong.
    pub kind: ParseErrorKind,
    /// The byte offset where it was found.
    pub offset: usize,
    /// `Some` when the start line looked like a request.
    pub request_headers: Option<Headers>,
}

impl ParseError {
    fn new(kind: ParseErrorKind, offset: usize) -> ParseError {
        ParseError { kind, offset, request_headers: None }
    }
}

/// Parses one whole message (a UDP datagram, or a frame cut by [`crate::sip::framing`]).
pub fn parse(buf: Bytes) -> Result<Message, ParseError> {
    let mut pos = 0;
    // RFC 3261 §7.5: ignore CRLFs before the start line.
    while pos < buf.len() && matches!(buf[pos], b'\r' | b'\n') {
        pos += 1;
    }
    if pos == buf.len() {
        return Err(ParseError::new(ParseErrorKind::Empty, pos));
    }
    let (line, next) = next_line(&buf, pos).ok_or(ParseError::new(ParseErrorKind::Unterminated, buf.len()))?;
    let start = parse_start_line(line).map_err(|kind| ParseError::new(kind, pos))?;
    let is_request = !matches!(start, StartLineOrUri::Response(_));
    let with_headers =
        |kind, offset, headers: Headers| ParseError { kind, offset, request_headers: is_request.then_some(headers) };

    let (headers, body_start) = match parse_headers(&buf, next) {
        Ok(h) => h,
        Err((kind, offset, headers)) => return Err(with_headers(kind, offset, headers)),
    };
    let start = match start {
        StartLineOrUri::Request(r) => StartLine::Request(r),
        StartLineOrUri::Response(s) => StartLine::Response(s),
        StartLineOrUri::BadUri => return Err(with_headers(ParseErrorKind::RequestUri, pos, headers)),
    };

    // RFC 3261 §18.3 / §20.14: frame the body by Content-Length; without one (UDP) the body
    // runs to the end of the datagram.
    let available = buf.len() - body_start;
    let framing = {
        let mut lengths = headers.get_all(&HeaderName::ContentLength);
        match (lengths.next(), lengths.next()) {
            (None, _) => Ok(available),
            (Some(_), Some(_)) => Err((ParseErrorKind::MultipleContentLength, body_start)),
            (Some(h), None) => match parse_u32(h.value()) {
                Some(n) if (n as usize) <= available => Ok(n as usize),
                Some(_) => Err((ParseErrorKind::BodyTruncated, buf.len())),
                None => Err((ParseErrorKind::ContentLength, body_start)),
            },
        }
    };
    let body_len = match framing {
        Ok(n) => n,
        Err((kind, offset)) => return Err(with_headers(kind, offset, headers)),
    };
    let body = buf.slice(body_start..body_start + body_len);
    Ok(Message { start, headers, body })
}

enum StartLineOrUri {
    Request(RequestLine),
    Response(StatusLine),
    /// The request line was well-formed but for its URI: still a request, answered with 400.
    BadUri,
}

/// Where the header section that starts at `buf[0]` (the start line) ends: the index just past
/// the first empty line. Lines end with LF, optionally preceded by CR (bare LF is tolerated, as
/// for datagrams). The stream framer uses this same rule, so a frame and its parse agree on
/// where the body starts.
pub fn header_end(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        let (line, next) = next_line(buf, pos)?;
        if line.is_empty() && pos > 0 {
            return Some(next);
        }
        pos = next;
    }
}

/// Returns the line starting at `pos` (without CR LF) and the position after its end.
fn next_line(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let nl = pos + memchr(b'\n', &buf[pos..])?;
    let end = if nl > pos && buf[nl - 1] == b'\r' { nl - 1 } else { nl };
    Some((&buf[pos..end], nl + 1))
}

/// Splits off the next SP-separated word: returns it and the rest after it.
fn word(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let start = s.iter().position(|&b| b != b' ')?;
    let s = &s[start..];
    let end = memchr(b' ', s).unwrap_or(s.len());
    Some((&s[..end], &s[end..]))
}

fn parse_start_line(line: &[u8]) -> Result<StartLineOrUri, ParseErrorKind> {
    // RFC 4475 §3.1.2.9–10: tolerate runs of SP between elements and trailing SP.
    let (first, rest) = word(line).ok_or(ParseErrorKind::StartLine)?;
    if first.len() >= 4 && first[..4].eq_ignore_ascii_case(b"SIP/") {
        let version = Version::parse(first).ok_or(ParseErrorKind::StartLine)?;
        let (code, rest) = word(rest).ok_or(ParseErrorKind::StatusCode)?;
        // Status-Code = 3DIGIT, 100..=699 (RFC 3261 §7.2, §21).
        let code = match code {
            [a @ b'1'..=b'6', b, c] if b.is_ascii_digit() && c.is_ascii_digit() => {
                u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
            }
            _ => return Err(ParseErrorKind::StatusCode),
        };
        // The reason phrase is the rest of the line, possibly empty (RFC 4475 §3.1.1.13).
        let reason = String::from_utf8_lossy(trim(rest)).into_owned();
        return Ok(StartLineOrUri::Response(StatusLine { version, code, reason }));
    }
    let method = Method::from_bytes(first).ok_or(ParseErrorKind::StartLine)?;
    let (uri, rest) = word(rest).ok_or(ParseErrorKind::StartLine)?;
    let (version, rest) = word(rest).ok_or(ParseErrorKind::StartLine)?;
    if word(rest).is_some() {
        // More than three elements: LWS inside the URI (RFC 4475 §3.1.2.8). Still a request.
        return Ok(StartLineOrUri::BadUri);
    }
    let version = Version::parse(version).ok_or(ParseErrorKind::StartLine)?;
    match std::str::from_utf8(uri).ok().and_then(Uri::parse) {
        Some(uri) => Ok(StartLineOrUri::Request(RequestLine { method, uri, version })),
        None => Ok(StartLineOrUri::BadUri),
    }
}

type HeaderFailure = (ParseErrorKind, usize, Headers);

/// Splits the header section starting at `pos`; returns the headers and where the body starts.
fn parse_headers(buf: &Bytes, mut pos: usize) -> Result<(Headers, usize), HeaderFailure> {
    let mut headers: Vec<Header> = Vec::with_capacity(16);
    // The header being assembled: (line start, colon position, line end).
    let mut current: Option<(usize, usize, usize)> = None;
    let finish = |cur: (usize, usize, usize), headers: &mut Vec<Header>| {
        let (start, colon, end) = cur;
        let name = trim(&buf[start..colon]);
        let name = HeaderName::from_shared(buf.slice_ref(name));
        let mut value_start = colon + 1;
        while value_start < end && matches!(buf[value_start], b' ' | b'\t') {
            value_start += 1;
        }
        headers.push(Header::from_raw(name, buf.slice(start..end), value_start - start));
    };
    loop {
        let Some((line, next)) = next_line(buf, pos) else {
            if let Some(cur) = current.take() {
                finish(cur, &mut headers);
            }
            if pos == buf.len() {
                // The datagram ends right after a header line, without the empty line
                // (RFC 4475 §3.1.2.15's message does this): take it as a message with no body.
                return Ok((headers.into_iter().collect(), pos));
            }
            return Err((ParseErrorKind::Unterminated, buf.len(), headers.into_iter().collect()));
        };
        let line_end = pos + line.len();
        if line.is_empty() {
            if let Some(cur) = current.take() {
                finish(cur, &mut headers);
            }
            return Ok((headers.into_iter().collect(), next));
        }
        if matches!(line[0], b' ' | b'\t') {
            // RFC 3261 §7.3.1: a line starting with white space continues the previous header.
            match current.as_mut() {
                Some(cur) => cur.2 = line_end,
                None => return Err((ParseErrorKind::HeaderLine, pos, Headers::default())),
            }
        } else {
            if let Some(cur) = current.take() {
                finish(cur, &mut headers);
            }
            let colon = match memchr(b':', line) {
                Some(c) if is_token(trim(&line[..c])) && !line[..c].ends_with(b"\r") => c,
                _ => {
                    let found: Headers = headers.into_iter().collect();
                    return Err((ParseErrorKind::HeaderLine, pos, found));
                }
            };
            // HCOLON allows SP/HT before the colon, but not inside the name. The name is a
            // token (checked above), so only white space trimmed from its front can be found
            // among the first name.len() bytes of the line; the line rarely has any.
            let name_len = trim(&line[..colon]).len();
            let lead = line[..colon].iter().position(|&b| !is_lws(b)).unwrap_or(colon);
            if line[..lead.min(name_len)].iter().any(|&b| b == b' ' || b == b'\t') {
                return Err((ParseErrorKind::HeaderLine, pos, headers.into_iter().collect()));
            }
            current = Some((pos, pos + colon, line_end));
        }
        pos = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Message, ParseError> {
        parse(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn request_with_folding_and_compact_forms() {
        let m = p("\r\nOPTIONS sip:bob@example.com SIP/2.0\r\nv: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\nSubject: a\r\n  b\r\nl: 0\r\n\r\n").unwrap();
        assert_eq!(m.method(), Some(&Method::Options));
        assert_eq!(m.headers.len(), 3);
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK1"));
        let subject = m.headers.get(&HeaderName::Subject).unwrap();
        assert_eq!(subject.value(), b"a\r\n  b");
        assert_eq!(m.content_length(), Ok(Some(0)));
    }

    #[test]
    fn body_framing() {
        let m = p("MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 5\r\n\r\nhello world").unwrap();
        assert_eq!(&m.body[..], b"hello");
        let m = p("MESSAGE sip:a@b SIP/2.0\r\n\r\nhello world").unwrap();
        assert_eq!(&m.body[..], b"hello world");
        let e = p("MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 50\r\n\r\nhello").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::BodyTruncated);
        assert!(e.request_headers.is_some());
        let e = p("MESSAGE sip:a@b SIP/2.0\r\nContent-Length: -5\r\n\r\nhello").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::ContentLength);
        let e = p("MESSAGE sip:a@b SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\nhello").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::MultipleContentLength);
    }

    #[test]
    fn responses() {
        let m = p("SIP/2.0 200 OK\r\nl: 0\r\n\r\n").unwrap();
        assert_eq!(m.status(), Some(200));
        let m = p("SIP/2.0 100 \r\n\r\n").unwrap();
        assert_eq!(m.status(), Some(100));
        let m = p("SIP/2.0 180 Ringing now 200\r\n\r\n").unwrap();
        match &m.start {
            StartLine::Response(s) => assert_eq!(s.reason, "Ringing now 200"),
            _ => unreachable!(),
        }
        assert_eq!(p("SIP/2.0 4294967301 no\r\n\r\n").unwrap_err().kind, ParseErrorKind::StatusCode);
        assert_eq!(p("SIP/2.0 099 no\r\n\r\n").unwrap_err().kind, ParseErrorKind::StatusCode);
    }

    #[test]
    fn bad_lines() {
        assert_eq!(p("").unwrap_err().kind, ParseErrorKind::Empty);
        assert_eq!(p("\r\n\r\n").unwrap_err().kind, ParseErrorKind::Empty);
        assert_eq!(p("INVITE sip:a@b SIP/2.0\r\nNoColon\r\n\r\n").unwrap_err().kind, ParseErrorKind::HeaderLine);
        assert_eq!(p("INVITE sip:a@b SIP/2.0\r\nVia: x").unwrap_err().kind, ParseErrorKind::Unterminated);
        assert!(p("INVITE sip:a@b SIP/2.0\r\nVia: x\r\n").unwrap().body.is_empty());
        assert_eq!(p("INVITE <sip:a@b> SIP/2.0\r\n\r\n").unwrap_err().kind, ParseErrorKind::RequestUri);
        assert_eq!(p("INVITE sip:a@b; lr SIP/2.0\r\n\r\n").unwrap_err().kind, ParseErrorKind::RequestUri);
        assert_eq!(p("INVITE sip:a@b HTTP/1.1\r\n\r\n").unwrap_err().kind, ParseErrorKind::StartLine);
        let m = p("INVITE  sip:a@b   SIP/7.0  \r\n\r\n").unwrap();
        assert_eq!(m.version(), Version { major: 7, minor: 0 });
    }

    #[test]
    fn round_trip_keeps_unknown_headers() {
        let text = "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK7\r\nX-Odd :   keep  me \r\n\tfolded\r\nContent-Length: 3\r\n\r\nabc";
        let m = p(text).unwrap();
        assert_eq!(&m.encode()[..], text.as_bytes());
    }
}
