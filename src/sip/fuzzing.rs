//! The bodies of the fuzz targets in `fuzz/`, kept in the library so that the committed fuzz
//! corpus also replays as an ordinary test (`tests/it/fuzz_corpus.rs`).
//!
//! Each function takes arbitrary bytes and panics only when an invariant of the SIP layer is
//! broken: that is what the fuzzer reports as a crash. Not part of the API.

use bytes::Bytes;

use super::framing::{Frame, StreamFramer, DEFAULT_MAX_MESSAGE};
use super::header::{CSeq, NameAddr, Via};
use super::message::{Contacts, HeaderError, Message, StartLine};
use super::{parse, validate, HeaderName};

/// `parse_message`: whatever the bytes, parsing does not panic; a message that parses is
/// validated and read through every typed accessor without panicking, and printing it gives
/// bytes that parse again to the same start line, typed essentials and body.
pub fn fuzz_parse(data: &[u8]) {
    if let Ok(msg) = parse(Bytes::copy_from_slice(data)) {
        check_message(&msg);
    }
}

/// `stream_framer`: the first byte says how many of the following bytes are chunk lengths;
/// the rest is a TCP stream pushed in those chunks (cycling). Frames are drained after every
/// push and each message frame goes through [`fuzz_parse`]'s checks. The frames (and the
/// framing error, if any) must not depend on how the stream was cut.
pub fn fuzz_framer(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else { return };
    let n = usize::from(n % 8).min(rest.len());
    let (lengths, stream) = rest.split_at(n);
    let lengths: Vec<usize> = lengths.iter().map(|&b| usize::from(b) + 1).collect();

    let mut cut = Drained::default();
    let mut framer = StreamFramer::default();
    let mut pos = 0;
    let mut i = 0;
    while pos < stream.len() && cut.error.is_none() {
        let len = lengths.get(i % lengths.len().max(1)).copied().unwrap_or(stream.len());
        let end = (pos + len).min(stream.len());
        framer.push(&stream[pos..end]);
        cut.drain(&mut framer);
        pos = end;
        i += 1;
    }

    let mut whole = Drained::default();
    let mut framer = StreamFramer::default();
    framer.push(stream);
    whole.drain(&mut framer);
    assert_eq!(cut.frames, whole.frames, "frames depend on how the stream was cut");
    assert_eq!(cut.error, whole.error, "framing error depends on how the stream was cut");

    for frame in &cut.frames {
        if let Frame::Message(bytes) = frame {
            assert!(bytes.len() <= DEFAULT_MAX_MESSAGE);
            if let Ok(msg) = parse(bytes.clone()) {
                check_message(&msg);
                // Framer and parser agree on where the body starts.
                let skip = bytes.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
                let head_end = skip + super::parse::header_end(&bytes[skip..]).expect("a frame has a header end");
                assert_eq!(&msg.body[..], &bytes[head_end..], "framer and parser disagree on the body");
            }
        }
    }
}

/// What one framer produced from a stream.
#[derive(Default)]
struct Drained {
    frames: Vec<Frame>,
    error: Option<super::framing::FramingError>,
}

impl Drained {
    fn drain(&mut self, framer: &mut StreamFramer) {
        loop {
            match framer.next_frame() {
                Ok(Some(frame)) => self.frames.push(frame),
                Ok(None) => return,
                Err(e) => {
                    // The daemon closes the connection here: nothing more is read from it.
                    self.error = Some(e);
                    return;
                }
            }
        }
    }
}

/// The values every element reads from a message, compared before and after a round trip.
#[derive(Debug, PartialEq, Eq)]
struct Essentials<'a> {
    start: StartLine,
    top_via: Result<Via, HeaderError>,
    vias: Result<Vec<Via>, HeaderError>,
    from: Result<NameAddr, HeaderError>,
    to: Result<NameAddr, HeaderError>,
    call_id: Result<&'a str, HeaderError>,
    cseq: Result<CSeq, HeaderError>,
    contacts: Result<Contacts, HeaderError>,
    body: Bytes,
}

fn essentials(msg: &Message) -> Essentials<'_> {
    Essentials {
        start: msg.start.clone(),
        top_via: msg.top_via(),
        vias: msg.vias(),
        from: msg.from(),
        to: msg.to(),
        call_id: msg.call_id(),
        cseq: msg.cseq(),
        contacts: msg.contacts(),
        body: msg.body.clone(),
    }
}

fn check_message(msg: &Message) {
    // Validation and every accessor must cope with whatever the parser let through.
    if msg.is_request() {
        let _ = validate::check_request(msg);
        let _ = validate::can_answer(msg);
        let _ = msg.make_response(200, "OK", Some("fuzz")).encode();
    } else {
        let _ = validate::check_response(msg);
    }
    let _ = (msg.max_forwards(), msg.expires(), msg.content_length(), msg.content_type());
    let _ = (msg.routes(), msg.record_routes(), msg.accept(), msg.summary());
    for name in [HeaderName::Require, HeaderName::ProxyRequire, HeaderName::Supported] {
        let _ = msg.option_tags(&name);
    }
    for name in [HeaderName::Authorization, HeaderName::ProxyAuthorization, HeaderName::WwwAuthenticate] {
        let _ = msg.auth(&name);
    }
    if let Ok(Contacts::List(contacts)) = msg.contacts() {
        for c in contacts {
            if let Some(sip) = c.uri.as_sip() {
                let _ = (sip.aor(), sip.user_unescaped(), sip.transport());
            }
        }
    }

    let encoded = msg.encode();
    let again = match parse(encoded.clone()) {
        Ok(m) => m,
        Err(e) => panic!("printed message does not parse again ({e}):\n{:?}", String::from_utf8_lossy(&encoded)),
    };
    assert_eq!(essentials(msg), essentials(&again), "round trip changed the message:\n{encoded:?}");
    // Printing is a fixed point after one round: the second print gives the same bytes.
    assert_eq!(encoded, again.encode(), "printing is not stable");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_accept_anything() {
        for data in [&b""[..], b"\r\n\r\n", b"\x03\x01\x02\x05INVITE sip:a@b SIP/2.0\r\nl: 1\r\n\r\nxy"] {
            fuzz_parse(data);
            fuzz_framer(data);
        }
    }
}
