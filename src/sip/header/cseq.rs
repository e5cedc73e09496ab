//! `CSeq` (RFC 3261 §20.16, §8.1.1.5).

use std::fmt;

use crate::sip::method::Method;
use crate::sip::syntax::{parse_u32, trim};

/// A CSeq header value (RFC 3261 §20.16): a sequence number and a method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// The sequence number.
    pub seq: u32,
    /// The method it numbers.
    pub method: Method,
}

impl CSeq {
    /// Parses `1*DIGIT LWS Method`. The number must be below 2^31 (RFC 3261 §8.1.1.5).
    pub fn parse(s: &[u8]) -> Option<CSeq> {
        let s = trim(s);
        let sp = s.iter().position(|b| b.is_ascii_whitespace())?;
        let seq = parse_u32(&s[..sp])?;
        if seq >= 1 << 31 {
            return None;
        }
        let method = Method::from_bytes(trim(&s[sp..]))?;
        Some(CSeq { seq, method })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cseq() {
        assert_eq!(CSeq::parse(b"0009  INVITE").unwrap(), CSeq { seq: 9, method: Method::Invite });
        assert!(CSeq::parse(b"36893488147419103232 REGISTER").is_none());
        assert!(CSeq::parse(b"2147483648 INVITE").is_none());
        assert!(CSeq::parse(b"INVITE").is_none());
    }
}
