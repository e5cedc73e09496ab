//! `Authorization`, `Proxy-Authorization`, `WWW-Authenticate`, `Proxy-Authenticate`
//! (RFC 3261 §20.7, §20.44, §25.1 `credentials` / `challenge`; RFC 7616 / RFC 8760 parameters).

use std::fmt;

use crate::sip::syntax::{is_token, split_top_level, trim, unquote};

/// An auth scheme with its comma-separated `name=value` parameters. The same shape serves
/// credentials and challenges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthParams {
    /// The scheme (`Digest`).
    pub scheme: String,
    /// Parameter names as sent; values unquoted.
    pub params: Vec<(String, String)>,
}

impl AuthParams {
    /// Parses a challenge or credentials header value.
    pub fn parse(s: &[u8]) -> Option<AuthParams> {
        let s = trim(s);
        let sp = s.iter().position(|b| b.is_ascii_whitespace()).unwrap_or(s.len());
        let scheme = &s[..sp];
        if !is_token(scheme) {
            return None;
        }
        // Digest credentials carry up to ten parameters (RFC 7616 §3.4).
        let mut params = Vec::with_capacity(10);
        let rest = trim(&s[sp..]);
        if !rest.is_empty() {
            for p in split_top_level(rest, b',')? {
                let p = trim(p);
                let eq = p.iter().position(|&b| b == b'=')?;
                let name = trim(&p[..eq]);
                let value = trim(&p[eq + 1..]);
                if !is_token(name) {
                    return None;
                }
                let value = match value {
                    // A quoted string without quoted-pairs is its inside, as is.
                    [b'"', inner @ .., b'"'] if !inner.iter().any(|&b| b == b'\\' || b == b'"') => inner.to_vec(),
                    [b'"', ..] => unquote(value)?,
                    _ => value.to_vec(),
                };
                params.push((String::from_utf8(name.to_vec()).ok()?, String::from_utf8(value).ok()?));
            }
        }
        Some(AuthParams { scheme: String::from_utf8(scheme.to_vec()).ok()?, params })
    }

    /// The value of parameter `name` (case-insensitive), unquoted.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Whether the scheme is `Digest`.
    pub fn is_digest(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("Digest")
    }
}

/// Parameters that RFC 7616 §3.3–3.4 sends as tokens, not quoted strings.
const UNQUOTED: &[&str] = &["algorithm", "stale", "nc", "qop"];

impl fmt::Display for AuthParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.scheme)?;
        for (i, (name, value)) in self.params.iter().enumerate() {
            f.write_str(if i == 0 { " " } else { ", " })?;
            // In a challenge, qop is a quoted list; in credentials a token. Quote it only when
            // it is a list.
            let bare = UNQUOTED.iter().any(|u| u.eq_ignore_ascii_case(name)) && !value.contains(',');
            if bare {
                write!(f, "{name}={value}")?;
            } else {
                write!(f, "{name}=\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trip() {
        let a = AuthParams::parse(
            br#"Digest username="bob", realm="atlanta.example.com", nonce="ea9c8e88df84f1cec4341ae6cbe5a359", uri="sips:ss2.biloxi.example.com", response="dfe56131d1958046689d83306477ecc", algorithm=MD5, qop=auth, nc=00000001, cnonce="0a4f113b""#,
        )
        .unwrap();
        assert!(a.is_digest());
        assert_eq!(a.get("USERNAME"), Some("bob"));
        assert_eq!(a.get("nc"), Some("00000001"));
        let again = AuthParams::parse(a.to_string().as_bytes()).unwrap();
        assert_eq!(a, again);
        let odd = AuthParams::parse(b"NoOneKnowsThisScheme opaque-data=here").unwrap();
        assert!(!odd.is_digest());
    }
}
