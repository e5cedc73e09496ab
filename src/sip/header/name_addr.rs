//! `name-addr` / `addr-spec` with header parameters: the value of From, To, Contact, Route,
//! Record-Route, Refer-To (RFC 3261 §20.10, §20.20, §20.39, §25.1).

use std::fmt;

use crate::sip::syntax::{
    find_param, fmt_params, is_lws, is_token_char, parse_params, quoted_string_end, trim, unquote, Param,
};
use crate::sip::uri::Uri;

/// A name-addr or addr-spec with header parameters (RFC 3261 §25.1): From, To, Contact, Route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name, unquoted.
    pub display: Option<String>,
    /// The URI.
    pub uri: Uri,
    /// Header parameters (after the `>` or, without brackets, after the URI).
    pub params: Vec<Param>,
}

impl NameAddr {
    /// `<uri>` with no display name or parameters.
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr { display: None, uri, params: Vec::new() }
    }

    /// Parses `[display-name] <URI> *(;param)` or `addr-spec *(;param)`.
    ///
    /// A display name is a quoted string or a run of tokens separated by LWS; anything else
    /// (such as an unquoted comma, RFC 4475 §3.1.2.15) is an error. Without brackets the URI
    /// may not contain `,`, `?` or `;` (RFC 3261 §20.10), so its parameters belong to the header.
    pub fn parse(s: &[u8]) -> Option<NameAddr> {
        let s = trim(s);
        let lt = find_unquoted(s, b'<');
        let (display, uri_bytes, rest) = match lt {
            Some(lt) => {
                let display = parse_display_name(trim(&s[..lt]))?;
                let gt = lt + s[lt..].iter().position(|&b| b == b'>')?;
                // RFC 4475 §3.1.2.14: tolerate LWS just inside the brackets.
                (display, trim(&s[lt + 1..gt]), &s[gt + 1..])
            }
            None => {
                let end = s.iter().position(|&b| b == b';').unwrap_or(s.len());
                let uri = trim(&s[..end]);
                if uri.iter().any(|&b| b == b'?' || b == b',' || is_lws(b)) {
                    return None;
                }
                (None, uri, &s[end..])
            }
        };
        let uri = Uri::parse(std::str::from_utf8(uri_bytes).ok()?)?;
        let rest = trim(rest);
        let params = match rest.first() {
            None => Vec::new(),
            Some(b';') => parse_params(&rest[1..])?,
            Some(_) => return None,
        };
        Some(NameAddr { display, uri, params })
    }

    /// The header parameter `name`, if present.
    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    /// The `tag` parameter (From and To, §19.3).
    pub fn tag(&self) -> Option<&str> {
        self.param("tag").and_then(|p| p.value.as_deref())
    }

    /// Sets parameter `name` (replacing it if present).
    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        match self.params.iter_mut().find(|p| p.name.eq_ignore_ascii_case(name)) {
            Some(p) => p.value = value,
            None => self.params.push(Param { name: name.into(), value }),
        }
    }
}

fn find_unquoted(s: &[u8], needle: u8) -> Option<usize> {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'"' => i += quoted_string_end(&s[i..])?,
            b if b == needle => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn parse_display_name(s: &[u8]) -> Option<Option<String>> {
    if s.is_empty() {
        return Some(None);
    }
    if s[0] == b'"' {
        if quoted_string_end(s)? != s.len() {
            return None;
        }
        return Some(Some(String::from_utf8_lossy(&unquote(s)?).into_owned()));
    }
    if !s.iter().all(|&b| is_token_char(b) || is_lws(b)) {
        return None;
    }
    Some(Some(String::from_utf8_lossy(s).into_owned()))
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write!(f, "\"{}\" ", d.replace('\\', "\\\\").replace('"', "\\\""))?;
        }
        f.write_str("<")?;
        fmt::Display::fmt(&self.uri, f)?;
        f.write_str(">")?;
        fmt_params(f, &self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let n = NameAddr::parse(br#""J Rosenberg \\\"" <sip:jdrosen@example.com>;tag=98asjd8"#).unwrap();
        assert_eq!(n.display.as_deref(), Some(r#"J Rosenberg \""#));
        assert_eq!(n.tag(), Some("98asjd8"));
        let n = NameAddr::parse(b"sip:caller@example.net;tag=134161461246").unwrap();
        assert_eq!(n.tag(), Some("134161461246"));
        assert!(n.uri.as_sip().unwrap().params.is_empty());
        let n = NameAddr::parse(b"caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display.as_deref(), Some("caller"));
        let n = NameAddr::parse(br#""Watson, Thomas" < sip:t.watson@example.org >"#).unwrap();
        assert_eq!(n.display.as_deref(), Some("Watson, Thomas"));
    }

    #[test]
    fn rejects() {
        assert!(NameAddr::parse(b"Bell, Alexander <sip:a.g.bell@example.com>;tag=43").is_none());
        assert!(NameAddr::parse(br#""Mr. J. User <sip:j.user@example.com>"#).is_none());
        assert!(NameAddr::parse(b"sip:user@example.com?Route=%3Csip:sip.example.com%3E").is_none());
        assert!(NameAddr::parse(br#""Joe" <sip:joe@example.org>;;;;"#).is_none());
    }
}
