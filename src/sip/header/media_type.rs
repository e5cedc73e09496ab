//! `Content-Type` / `Accept` media types (RFC 3261 §20.15, §20.1).

use std::fmt;

use crate::sip::syntax::{is_token, parse_params, trim, Param};

/// A media type (RFC 3261 §20.15): `type/subtype;params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// Lower-cased type and subtype.
    pub ty: String,
    /// The subtype, lowercase.
    pub subtype: String,
    /// The parameters.
    pub params: Vec<Param>,
}

impl MediaType {
    /// `type/subtype` with no parameters.
    pub fn new(ty: &str, subtype: &str) -> MediaType {
        MediaType { ty: ty.to_ascii_lowercase(), subtype: subtype.to_ascii_lowercase(), params: Vec::new() }
    }

    /// Parses a Content-Type value.
    pub fn parse(s: &[u8]) -> Option<MediaType> {
        let s = trim(s);
        let (main, params) = match s.iter().position(|&b| b == b';') {
            Some(i) => (trim(&s[..i]), parse_params(&s[i + 1..])?),
            None => (s, Vec::new()),
        };
        let slash = main.iter().position(|&b| b == b'/')?;
        let (ty, subtype) = (trim(&main[..slash]), trim(&main[slash + 1..]));
        if !is_token(ty) || !is_token(subtype) {
            return None;
        }
        Some(MediaType {
            ty: String::from_utf8(ty.to_ascii_lowercase()).ok()?,
            subtype: String::from_utf8(subtype.to_ascii_lowercase()).ok()?,
            params,
        })
    }

    /// `type/subtype` matches, with `*` wildcards on either side (Accept ranges).
    pub fn matches(&self, other: &MediaType) -> bool {
        let part = |a: &str, b: &str| a == "*" || b == "*" || a == b;
        part(&self.ty, &other.ty) && part(&self.subtype, &other.subtype)
    }

    /// Whether this is `ty/subtype` (case-insensitive).
    pub fn is(&self, ty: &str, subtype: &str) -> bool {
        self.ty.eq_ignore_ascii_case(ty) && self.subtype.eq_ignore_ascii_case(subtype)
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ty, self.subtype)?;
        for p in &self.params {
            match &p.value {
                Some(v) => write!(f, ";{}={v}", p.name)?,
                None => write!(f, ";{}", p.name)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let m = MediaType::parse(b"multipart/mixed;boundary=7a9cbec02ceef655").unwrap();
        assert!(m.is("multipart", "MIXED"));
        assert!(MediaType::new("application", "*").matches(&MediaType::new("application", "sdp")));
        assert!(MediaType::parse(b"application").is_none());
    }
}
