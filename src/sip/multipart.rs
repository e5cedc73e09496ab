//! `multipart/mixed` bodies (RFC 2046 §5.1, RFC 5621 for SIP): several bodies in one message,
//! each with its own `Content-Type`. The media anchor puts its ICE part beside a phone's SDP
//! this way, and takes it out again before the far phone sees the message.
//!
//! Parsing is strict where it matters and never panics (the bytes come from the network): a
//! part is the text between two delimiter lines, its headers end at the first empty line,
//! and the body ends at the CRLF before the next delimiter (§5.1.1).

use super::header::MediaType;

/// One body part: its media type and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The part's `Content-Type` (RFC 2046 §5.1: `text/plain` when absent).
    pub content_type: MediaType,
    /// The part's body.
    pub body: Vec<u8>,
}

/// Builds a `multipart/mixed` body; returns the `Content-Type` value and the body.
pub fn encode(parts: &[Part], boundary: &str) -> (MediaType, Vec<u8>) {
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(b"--");
        body.extend_from_slice(boundary.as_bytes());
        body.extend_from_slice(b"\r\nContent-Type: ");
        body.extend_from_slice(p.content_type.to_string().as_bytes());
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(&p.body);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--");
    body.extend_from_slice(boundary.as_bytes());
    body.extend_from_slice(b"--\r\n");
    let mut ty = MediaType::new("multipart", "mixed");
    ty.params.push(crate::sip::syntax::Param { name: "boundary".into(), value: Some(boundary.into()) });
    (ty, body)
}

/// The parts of a `multipart/*` body whose `Content-Type` is `ty`; `None` when the type is
/// not multipart, has no boundary, or the body is not made of parts.
pub fn decode(ty: &MediaType, body: &[u8]) -> Option<Vec<Part>> {
    if !ty.ty.eq_ignore_ascii_case("multipart") {
        return None;
    }
    let boundary = ty.params.iter().find(|p| p.name.eq_ignore_ascii_case("boundary"))?.value.as_deref()?;
    let boundary = boundary.trim_matches('"');
    // RFC 2046 §5.1.1: 1 to 70 characters.
    if boundary.is_empty() || boundary.len() > 70 {
        return None;
    }
    let delimiter = format!("--{boundary}");
    let d = delimiter.as_bytes();
    let mut parts = Vec::new();
    // The first delimiter may open the body or follow a preamble's CRLF.
    let mut pos = if body.starts_with(d) { 0 } else { find(body, &[b"\r\n", d].concat())? + 2 };
    loop {
        let after = pos + d.len();
        let rest = body.get(after..)?;
        if rest.starts_with(b"--") {
            return Some(parts);
        }
        // Transport padding, then CRLF.
        let line_end = find(rest, b"\r\n")?;
        if rest[..line_end].iter().any(|&b| b != b' ' && b != b'\t') {
            return None;
        }
        let start = after + line_end + 2;
        let next = start + find(&body[start..], &[b"\r\n", d].concat())?;
        parts.push(part(&body[start..next])?);
        pos = next + 2;
    }
}

fn part(text: &[u8]) -> Option<Part> {
    // Headers, an empty line, the body; a part with no headers starts with the empty line.
    let (headers, body) = if let Some(b) = text.strip_prefix(b"\r\n") {
        (&[][..], b)
    } else {
        let end = find(text, b"\r\n\r\n")?;
        (&text[..end], &text[end + 4..])
    };
    let mut content_type = MediaType::new("text", "plain");
    for line in headers.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let colon = line.iter().position(|&b| b == b':')?;
        let name = std::str::from_utf8(&line[..colon]).ok()?.trim();
        if name.eq_ignore_ascii_case("content-type") || name.eq_ignore_ascii_case("c") {
            content_type = MediaType::parse(&line[colon + 1..])?;
        }
    }
    Some(Part { content_type, body: body.to_vec() })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdp() -> Part {
        Part { content_type: MediaType::new("application", "sdp"), body: b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n".to_vec() }
    }

    fn frag() -> Part {
        Part {
            content_type: MediaType::new("application", "trickle-ice-sdpfrag"),
            body: b"a=ice-ufrag:x\r\na=ice-pwd:y\r\n".to_vec(),
        }
    }

    #[test]
    fn round_trip() {
        let (ty, body) = encode(&[sdp(), frag()], "p2psip-b1");
        assert_eq!(ty.to_string(), "multipart/mixed;boundary=p2psip-b1");
        assert_eq!(decode(&ty, &body).unwrap(), vec![sdp(), frag()]);
        let (ty, body) = encode(&[frag()], "b");
        assert_eq!(decode(&ty, &body).unwrap(), vec![frag()]);
    }

    #[test]
    fn preamble_padding_quoted_boundary_and_default_type() {
        let ty = MediaType::parse(b"multipart/mixed; boundary=\"zz\"").unwrap();
        let body = b"preamble\r\n--zz  \r\n\r\nplain\r\n--zz\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n\r\n--zz--\r\nepilogue";
        let parts = decode(&ty, body).unwrap();
        assert_eq!(parts.len(), 2);
        assert!(parts[0].content_type.is("text", "plain"));
        assert_eq!(parts[0].body, b"plain");
        assert_eq!(parts[1].body, b"v=0\r\n");
    }

    #[test]
    fn broken_bodies_are_refused_not_panicked_on() {
        let ty = MediaType::parse(b"multipart/mixed;boundary=zz").unwrap();
        for body in [
            &b""[..],
            b"--zz",
            b"--zz\r\n",
            b"--zz\r\nContent-Type: application/sdp\r\n\r\nv=0",
            b"--zzx\r\n\r\nbody\r\n--zz--",
            b"--zz\r\nno colon here\r\n\r\nbody\r\n--zz--",
        ] {
            assert_eq!(decode(&ty, body), None, "{:?}", String::from_utf8_lossy(body));
        }
        assert_eq!(decode(&MediaType::new("application", "sdp"), b"--zz--"), None);
        assert_eq!(decode(&MediaType::new("multipart", "mixed"), b"--zz--"), None);
        // Fuzz-like: every prefix of a good body.
        let (ty, body) = encode(&[sdp(), frag()], "b");
        for i in 0..body.len() {
            let _ = decode(&ty, &body[..i]);
        }
    }
}
