//! Cutting a byte stream (TCP, later TLS) into SIP messages by Content-Length (RFC 3261 §18.3),
//! and recognising RFC 5626 §4.4.1 CRLF keep-alives between messages.
//!
//! Sans-IO: the connection task pushes what it read and pulls frames ("parse what is
//! buffered, else read more"). A framing error means the stream can no longer be trusted, so the
//! caller closes that connection; other connections are unaffected.

use bytes::{Buf, Bytes, BytesMut};

use super::parse::header_end;
use super::syntax::{parse_u32, trim};

/// What the framer found at the front of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A whole message: start line, headers and exactly Content-Length octets of body.
    Message(Bytes),
    /// A double-CRLF "ping" (RFC 5626 §3.5.1): answer with a single CRLF "pong".
    Ping,
    /// A single CRLF "pong", on a stream we opened ([`StreamFramer::with_pongs`]): the far end
    /// answered our ping.
    Pong,
}

/// Why a stream could not be cut into messages; the connection is closed (RFC 3261 §18.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// No end of the header section within the limit (the limit given).
    #[error("header section longer than {0} bytes")]
    HeadersTooLong(usize),
    /// A message over the size limit (the limit given).
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
    /// No Content-Length, a malformed one, or two (a stream needs exactly one).
    #[error("missing, malformed or repeated Content-Length")]
    ContentLength,
}

/// Limits: 16 KiB of headers and 64 KiB per message are far beyond what phones send.
pub const DEFAULT_MAX_HEADERS: usize = 16 * 1024;
/// See [`DEFAULT_MAX_HEADERS`].
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024;

/// Cuts one stream into messages by Content-Length, and skips CRLF keep-alives.
#[derive(Debug)]
pub struct StreamFramer {
    buf: BytesMut,
    max_headers: usize,
    max_message: usize,
    /// A lone CRLF between messages is a pong (RFC 5626 §4.4.1), on a stream whose far end
    /// never pings: one we opened as a client's flow.
    pongs: bool,
}

impl Default for StreamFramer {
    fn default() -> Self {
        StreamFramer::new(DEFAULT_MAX_HEADERS, DEFAULT_MAX_MESSAGE)
    }
}

impl StreamFramer {
    /// A framer with these limits, in bytes.
    pub fn new(max_headers: usize, max_message: usize) -> StreamFramer {
        StreamFramer { buf: BytesMut::new(), max_headers, max_message, pongs: false }
    }

    /// The same framer reporting lone CRLFs as [`Frame::Pong`]: for a stream we opened, whose
    /// far end answers our pings and never pings us.
    pub fn with_pongs(mut self) -> StreamFramer {
        self.pongs = true;
        self
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        // Between messages only CRLFs may appear (RFC 3261 §7.5). A CRLF pair followed by
        // another is a keep-alive ping; a lone CRLF is a pong or padding.
        loop {
            if self.buf.starts_with(b"\r\n\r\n") && !self.pongs {
                self.buf.advance(4);
                return Ok(Some(Frame::Ping));
            }
            if self.pongs && self.buf.starts_with(b"\r\n") {
                self.buf.advance(2);
                return Ok(Some(Frame::Pong));
            }
            if self.buf.starts_with(b"\r\n") && self.buf.len() >= 4 {
                self.buf.advance(2);
                continue;
            }
            if self.buf.starts_with(b"\n") {
                self.buf.advance(1);
                continue;
            }
            if self.buf.starts_with(b"\r\n") || self.buf.as_ref() == b"\r" {
                // Could be the start of a ping: wait for more.
                return Ok(None);
            }
            break;
        }
        // The parser's own rule for where headers end (bare LF tolerated), so that the frame we
        // cut is the message the parser reads.
        let head_end = match header_end(&self.buf) {
            Some(end) => end,
            None => {
                if self.buf.len() > self.max_headers {
                    return Err(FramingError::HeadersTooLong(self.max_headers));
                }
                return Ok(None);
            }
        };
        if head_end > self.max_headers {
            return Err(FramingError::HeadersTooLong(self.max_headers));
        }
        let body_len = content_length(&self.buf[..head_end])?;
        let total = head_end + body_len;
        if total > self.max_message {
            return Err(FramingError::TooLarge(self.max_message));
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        Ok(Some(Frame::Message(self.buf.split_to(total).freeze())))
    }
}

/// Finds the one Content-Length (or `l`) header in a header section. A stream message must
/// carry it (RFC 3261 §20.14); one without it is taken to have no body, as most stacks do.
fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    let mut found = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_none_or(|b| *b == b' ' || *b == b'\t') {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let name = trim(&line[..colon]);
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            if found.is_some() {
                return Err(FramingError::ContentLength);
            }
            let n = parse_u32(trim(&line[colon + 1..])).ok_or(FramingError::ContentLength)?;
            found = Some(n as usize);
        }
    }
    Ok(found.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_anywhere() {
        let msg = b"MESSAGE sip:a@b SIP/2.0\r\nl: 5\r\n\r\nhelloOPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n";
        for cut in 0..msg.len() {
            let mut f = StreamFramer::default();
            let mut frames = Vec::new();
            for part in [&msg[..cut], &msg[cut..]] {
                f.push(part);
                while let Some(fr) = f.next_frame().unwrap() {
                    frames.push(fr);
                }
            }
            assert_eq!(frames.len(), 2, "cut at {cut}");
            assert_eq!(frames[0], Frame::Message(Bytes::from_static(&msg[..38])));
        }
    }

    #[test]
    fn a_stream_we_opened_reports_pongs() {
        let mut f = StreamFramer::default().with_pongs();
        f.push(b"\r\n");
        assert_eq!(f.next_frame(), Ok(Some(Frame::Pong)));
        assert_eq!(f.next_frame(), Ok(None));
        f.push(b"\r\n\r\nOPTIONS sip:a SIP/2.0\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(f.next_frame(), Ok(Some(Frame::Pong)));
        assert_eq!(f.next_frame(), Ok(Some(Frame::Pong)));
        assert!(matches!(f.next_frame(), Ok(Some(Frame::Message(_)))));
        // A stream the far end opened: a lone CRLF is padding, never a pong.
        let mut g = StreamFramer::default();
        g.push(b"\r\n");
        assert_eq!(g.next_frame(), Ok(None));
    }

    #[test]
    fn keepalive_and_errors() {
        let mut f = StreamFramer::default();
        f.push(b"\r\n\r\n");
        assert_eq!(f.next_frame(), Ok(Some(Frame::Ping)));
        f.push(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: -999\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FramingError::ContentLength));
        let mut f = StreamFramer::new(64, 128);
        f.push(&[b'a'; 100]);
        assert_eq!(f.next_frame(), Err(FramingError::HeadersTooLong(64)));
        let mut f = StreamFramer::new(64, 128);
        f.push(b"A sip:a SIP/2.0\r\nl: 1000\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FramingError::TooLarge(128)));
    }
}
