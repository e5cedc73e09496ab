//! URIs: SIP and SIPS URIs parsed into parts (RFC 3261 §19.1), any other scheme kept as an
//! opaque absolute URI (RFC 3261 §25.1 `absoluteURI`, RFC 3986 scheme syntax).
//!
//! The user part is kept as written (escaped); [`SipUri::user_unescaped`] gives the octets it
//! encodes, which is what comparisons use (RFC 3261 §19.1.4, RFC 4475 §3.1.1.3–4).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::syntax::{find_param, fmt_params, parse_params, Param};

/// A host as written in a URI or Via sent-by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    /// A host name, as written.
    Domain(String),
    /// An IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv6 reference (written in brackets).
    Ipv6(Ipv6Addr),
}

impl Host {
    /// Parses `hostname`, `IPv4address` or `[IPv6address]` (RFC 3261 §25.1 `host`).
    pub fn parse(s: &str) -> Option<Host> {
        if let Some(inner) = s.strip_prefix('[') {
            return inner.strip_suffix(']')?.parse().ok().map(Host::Ipv6);
        }
        if s.is_empty() {
            return None;
        }
        if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            if let Ok(v4) = s.parse() {
                return Some(Host::Ipv4(v4));
            }
        }
        // hostname = *( domainlabel "." ) toplabel [ "." ]; be liberal about label shape but
        // allow only the characters a hostname may hold.
        if s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') && !s.starts_with('.') {
            return Some(Host::Domain(s.to_owned()));
        }
        None
    }

    /// The IP address, when the host is one.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Host::Domain(_) => None,
            Host::Ipv4(a) => Some((*a).into()),
            Host::Ipv6(a) => Some((*a).into()),
        }
    }
}

impl From<std::net::IpAddr> for Host {
    fn from(ip: std::net::IpAddr) -> Self {
        match ip {
            std::net::IpAddr::V4(a) => Host::Ipv4(a),
            std::net::IpAddr::V6(a) => Host::Ipv6(a),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::Ipv4(a) => write!(f, "{a}"),
            Host::Ipv6(a) => write!(f, "[{a}]"),
        }
    }
}

/// Splits `host[:port]` where host may be a bracketed IPv6 reference. Returns `None` when the
/// port is not a number in 0..=65535 or the host is malformed.
pub fn parse_host_port(s: &str) -> Option<(Host, Option<u16>)> {
    let (host, port) = if s.starts_with('[') {
        let close = s.find(']')?;
        let rest = &s[close + 1..];
        let port = match rest {
            "" => None,
            r => Some(r.strip_prefix(':')?),
        };
        (&s[..=close], port)
    } else {
        match s.rfind(':') {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(super::syntax::parse_u32(p.as_bytes()).and_then(|v| u16::try_from(v).ok())?),
    };
    Some((Host::parse(host)?, port))
}

/// Formats `host[:port]`.
pub fn host_port(host: &Host, port: Option<u16>) -> String {
    match port {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// A `sip:` or `sips:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `sips:` rather than `sip:`.
    pub secure: bool,
    /// The user part as written, escapes included.
    pub user: Option<String>,
    /// The password after the user, as written (RFC 3261 §19.1.1 advises against it).
    pub password: Option<String>,
    /// The host.
    pub host: Host,
    /// The port, if written.
    pub port: Option<u16>,
    /// The URI parameters (`;transport=tcp`, `;lr`…).
    pub params: Vec<Param>,
    /// The `?h1=v1&h2=v2` part as written, without the `?`.
    pub headers: Option<String>,
}

impl SipUri {
    /// A URI for `host[:port]` with no user part.
    pub fn new(host: Host, port: Option<u16>) -> SipUri {
        SipUri { secure: false, user: None, password: None, host, port, params: Vec::new(), headers: None }
    }

    /// Parses the part after `sip:` / `sips:`.
    fn parse_rest(secure: bool, rest: &str) -> Option<SipUri> {
        // userinfo cannot hold an unescaped '@' and neither can params or headers, so the first
        // '@' ends the userinfo (RFC 3261 §25.1).
        let (userinfo, hostpart) = match rest.find('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                // The user part may itself hold ':' only escaped, but the password follows the
                // first ':' of the userinfo.
                let (user, pw) = match u.find(':') {
                    Some(c) => (&u[..c], Some(u[c + 1..].to_owned())),
                    None => (u, None),
                };
                if user.is_empty() || !user.bytes().all(is_user_char) {
                    return None;
                }
                (Some(user.to_owned()), pw)
            }
        };
        let (before_headers, headers) = match hostpart.find('?') {
            Some(q) => (&hostpart[..q], Some(hostpart[q + 1..].to_owned())),
            None => (hostpart, None),
        };
        let (hp, params) = match before_headers.find(';') {
            Some(sc) => (&before_headers[..sc], parse_params(&before_headers.as_bytes()[sc + 1..])?),
            None => (before_headers, Vec::new()),
        };
        let (host, port) = parse_host_port(hp)?;
        if let Some(h) = &headers {
            if h.bytes().any(|b| b.is_ascii_whitespace() || b == b'<' || b == b'>' || b == b'"') {
                return None;
            }
        }
        Some(SipUri { secure, user, password, host, port, params, headers })
    }

    /// The user part with `%HH` escapes decoded; `None` when there is no user part or an escape
    /// is malformed.
    pub fn user_unescaped(&self) -> Option<Vec<u8>> {
        percent_decode(self.user.as_deref()?)
    }

    /// The URI parameter `name`, if present (case-insensitive).
    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    /// The `transport` URI parameter, lower-cased.
    pub fn transport(&self) -> Option<String> {
        self.param("transport").and_then(|p| p.value.as_deref()).map(str::to_ascii_lowercase)
    }

    /// `user@host` without port or parameters: the address-of-record form (RFC 3261 §10.3
    /// step 5 canonicalisation, user part unescaped where it is valid UTF-8).
    pub fn aor(&self) -> String {
        let host = match &self.host {
            Host::Domain(d) => d.to_ascii_lowercase(),
            h => h.to_string(),
        };
        match self.user_unescaped().and_then(|u| String::from_utf8(u).ok()) {
            Some(u) => format!("{}:{u}@{host}", if self.secure { "sips" } else { "sip" }),
            None => format!("{}:{host}", if self.secure { "sips" } else { "sip" }),
        }
    }
}

/// RFC 3261 §25.1 `user` characters: unreserved, escaped, user-unreserved.
fn is_user_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_'
                | b'.'
                | b'!'
                | b'~'
                | b'*'
                | b'\''
                | b'('
                | b')'
                | b'%'
                | b'&'
                | b'='
                | b'+'
                | b'$'
                | b','
                | b';'
                | b'?'
                | b'/'
        )
}

/// Decodes `%HH` escapes.
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(u) = &self.user {
            f.write_str(u)?;
            if let Some(p) = &self.password {
                write!(f, ":{p}")?;
            }
            f.write_str("@")?;
        }
        fmt::Display::fmt(&self.host, f)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        fmt_params(f, &self.params)?;
        if let Some(h) = &self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}

/// Any URI: SIP/SIPS parsed, anything else (tel:, soap.beep:, …) opaque.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    /// A `sip:` or `sips:` URI, parsed.
    Sip(SipUri),
    /// `scheme:rest`, with the scheme lower-cased.
    Other {
        /// The scheme, lower-cased.
        scheme: String,
        /// Everything after the colon, as written.
        rest: String,
    },
}

impl Uri {
    /// Parses an absolute URI. A `sip`/`sips` URI that does not follow RFC 3261 §19.1 is an
    /// error; other schemes only need RFC 3986's scheme syntax and no white space or brackets.
    pub fn parse(s: &str) -> Option<Uri> {
        let colon = s.find(':')?;
        let scheme = &s[..colon];
        let rest = &s[colon + 1..];
        let first = scheme.bytes().next()?;
        if !first.is_ascii_alphabetic()
            || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            return None;
        }
        if scheme.eq_ignore_ascii_case("sip") {
            return SipUri::parse_rest(false, rest).map(Uri::Sip);
        }
        if scheme.eq_ignore_ascii_case("sips") {
            return SipUri::parse_rest(true, rest).map(Uri::Sip);
        }
        if rest.is_empty() || rest.bytes().any(|b| b.is_ascii_whitespace() || b == b'<' || b == b'>' || b == b'"') {
            return None;
        }
        Some(Uri::Other { scheme: scheme.to_ascii_lowercase(), rest: rest.to_owned() })
    }

    /// The SIP URI, if it is one.
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            Uri::Other { .. } => None,
        }
    }

    /// The scheme, lower-case.
    pub fn scheme(&self) -> &str {
        match self {
            Uri::Sip(u) if u.secure => "sips",
            Uri::Sip(_) => "sip",
            Uri::Other { scheme, .. } => scheme,
        }
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => fmt::Display::fmt(u, f),
            Uri::Other { scheme, rest } => write!(f, "{scheme}:{rest}"),
        }
    }
}

impl From<SipUri> for Uri {
    fn from(u: SipUri) -> Self {
        Uri::Sip(u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri {
        Uri::parse(s).and_then(|u| u.as_sip().cloned()).unwrap_or_else(|| panic!("{s}"))
    }

    #[test]
    fn full_sip_uri() {
        let u = sip("sips:alice:pw@[2001:db8::10]:5061;transport=tcp;lr?subject=x");
        assert!(u.secure);
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("pw"));
        assert_eq!(u.host, Host::Ipv6("2001:db8::10".parse().unwrap()));
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.transport().as_deref(), Some("tcp"));
        assert!(u.param("LR").is_some());
        assert_eq!(u.headers.as_deref(), Some("subject=x"));
        assert_eq!(u.to_string(), "sips:alice:pw@[2001:db8::10]:5061;transport=tcp;lr?subject=x");
    }

    #[test]
    fn escapes_and_semicolons_in_user() {
        let u = sip("sip:sip%3Auser%40example.com@example.net;ttl=1");
        assert_eq!(u.user_unescaped().unwrap(), b"sip:user@example.com");
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user.as_deref(), Some("user;par=u%40example.net"));
        let u = sip("sip:null-%00-null@example.com");
        assert_eq!(u.user_unescaped().unwrap().len(), 11);
    }

    #[test]
    fn bad_uris() {
        for s in ["sip:", "sip:user@", "sip:host:99999", "<sip:a@b>", "sip:a@b c", "sip:[::1", "1abc:x"] {
            assert!(Uri::parse(s).is_none(), "{s}");
        }
        assert_eq!(Uri::parse("soap.beep://192.0.2.103:3002").unwrap().scheme(), "soap.beep");
        assert_eq!(Uri::parse("tel:+1-201-555-0123").unwrap().scheme(), "tel");
    }

    #[test]
    fn aor_is_canonical() {
        assert_eq!(sip("sip:%61lice@EXAMPLE.com:5060;transport=udp").aor(), "sip:alice@example.com");
    }
}
