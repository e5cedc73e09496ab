//! The stream framer and the parser must agree on where a message's headers end, or a TCP
//! peer can make the framer cut frames that the parser reads differently: one message hides
//! the next, and the one after is read from the wrong offset.
//!
//! Found while building the `stream_framer` fuzz seeds: the parser accepted a bare-LF empty
//! line as the end of the headers while the framer looked for CRLF CRLF only. Both now use
//! `sip::parse::header_end`, and `fuzz_framer` checks that every parsed frame's body is what
//! follows that point.

use bytes::Bytes;
use p2psip::sip::framing::{Frame, StreamFramer};

/// Frames `stream` and returns the Call-ID and method of every frame that parses.
fn read_stream(stream: &[u8]) -> Vec<(String, String)> {
    let mut framer = StreamFramer::default();
    framer.push(stream);
    let mut out = Vec::new();
    while let Ok(Some(frame)) = framer.next_frame() {
        if let Frame::Message(bytes) = frame {
            if let Ok(m) = p2psip::sip::parse(Bytes::clone(&bytes)) {
                let method = m.method().map(|x| x.to_string()).unwrap_or_default();
                out.push((m.call_id().unwrap_or("?").to_owned(), method));
            }
        }
    }
    out
}

#[test]
fn bare_lf_message_does_not_swallow_the_next_one() {
    let stream = b"MESSAGE sip:a@b SIP/2.0\nCall-ID: one\nl: 3\n\nabc\
                   OPTIONS sip:a@b SIP/2.0\r\nCall-ID: two\r\n\r\n\
                   INFO sip:a@b SIP/2.0\r\nCall-ID: three\r\nl: 0\r\n\r\n";
    // Before the fix: [("one", "MESSAGE"), ("three", "O")] — OPTIONS lost inside the first
    // frame and the INFO read from its fourth byte as a request with method "O".
    let read = read_stream(stream);
    let want: Vec<(String, String)> = [("one", "MESSAGE"), ("two", "OPTIONS"), ("three", "INFO")]
        .iter()
        .map(|(c, m)| (c.to_string(), m.to_string()))
        .collect();
    assert_eq!(read, want);
}
