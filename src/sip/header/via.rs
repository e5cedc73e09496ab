//! `Via` (RFC 3261 §20.42, §18.2.1, RFC 3581 rport).

use std::borrow::Cow;
use std::fmt;

use crate::sip::syntax::{find_param, fmt_params, is_token, parse_params, trim, Param};
use crate::sip::uri::{host_port, parse_host_port, Host};

/// The RFC 3261 §8.1.1.7 magic cookie that marks a branch as globally unique.
pub const BRANCH_MAGIC_COOKIE: &str = "z9hG4bK";

/// A random branch with the RFC 3261 magic cookie (§8.1.1.7): unique per transaction.
pub fn new_branch(rng: &mut impl rand::Rng) -> String {
    format!("{BRANCH_MAGIC_COOKIE}{:016x}", rng.random::<u64>())
}

/// One Via entry (a header line may carry several, comma separated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Protocol name and version, normally `SIP/2.0`.
    pub protocol: String,
    /// Transport in upper case: `UDP`, `TCP`, `TLS`, `SCTP`, `WS` or an extension token.
    pub transport: String,
    /// The sent-by host.
    pub host: Host,
    /// The sent-by port, if given.
    pub port: Option<u16>,
    /// The Via parameters (`branch`, `received`, `rport`…).
    pub params: Vec<Param>,
}

impl Via {
    /// A Via for `transport` from `host:port` with `branch`.
    pub fn new(transport: &str, host: Host, port: Option<u16>, branch: &str) -> Via {
        Via {
            protocol: "SIP/2.0".into(),
            transport: transport.to_ascii_uppercase(),
            host,
            port,
            params: vec![Param::new("branch", Some(branch))],
        }
    }

    /// Parses one via-parm: `sent-protocol LWS sent-by *( SEMI via-params )`, where LWS may
    /// surround the slashes (RFC 4475 §3.1.1.1).
    pub fn parse(s: &[u8]) -> Option<Via> {
        let s = std::str::from_utf8(trim(s)).ok()?;
        let mut parts = s.splitn(3, '/');
        let name = parts.next()?.trim();
        let version = parts.next()?.trim();
        let rest = parts.next()?.trim_start();
        // transport token, then LWS, then sent-by.
        let t_end = rest.find(|c: char| c.is_ascii_whitespace())?;
        let transport = &rest[..t_end];
        let rest = rest[t_end..].trim_start();
        if !is_token(name.as_bytes()) || !is_token(version.as_bytes()) || !is_token(transport.as_bytes()) {
            return None;
        }
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (rest[..i].trim(), parse_params(&rest.as_bytes()[i + 1..])?),
            None => (rest.trim(), Vec::new()),
        };
        // LWS is allowed around the colon of sent-by only in odd old stacks; strip it.
        let sent_by: Cow<'_, str> = if sent_by.contains(|c: char| c.is_ascii_whitespace()) {
            Cow::Owned(sent_by.chars().filter(|c| !c.is_ascii_whitespace()).collect())
        } else {
            Cow::Borrowed(sent_by)
        };
        let (host, port) = parse_host_port(&sent_by)?;
        // Built by hand: `format!` costs more than the rest of this line's parsing.
        let mut protocol = name.to_ascii_uppercase();
        protocol.push('/');
        protocol.push_str(version);
        Some(Via { protocol, transport: transport.to_ascii_uppercase(), host, port, params })
    }

    /// The parameter `name`, if present.
    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    /// The `branch` parameter (the transaction's ID, §17.2.3).
    pub fn branch(&self) -> Option<&str> {
        self.param("branch").and_then(|p| p.value.as_deref())
    }

    /// True when the branch starts with the RFC 3261 magic cookie and has something after it,
    /// so transactions can be matched by branch (§17.2.3). Otherwise RFC 2543 matching applies.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| b.len() > BRANCH_MAGIC_COOKIE.len() && b.starts_with(BRANCH_MAGIC_COOKIE))
    }

    /// The `received` parameter (§18.2.1).
    pub fn received(&self) -> Option<&str> {
        self.param("received").and_then(|p| p.value.as_deref())
    }

    /// RFC 3581: `Some(None)` for a bare `rport`, `Some(Some(port))` once filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        let p = self.param("rport")?;
        Some(p.value.as_deref().and_then(|v| v.parse().ok()))
    }

    /// Sets or replaces a parameter's value.
    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        match self.params.iter_mut().find(|p| p.name.eq_ignore_ascii_case(name)) {
            Some(p) => p.value = value,
            None => self.params.push(Param { name: name.into(), value }),
        }
    }

    /// `host[:port]`, the sent-by.
    pub fn sent_by(&self) -> String {
        host_port(&self.host, self.port)
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.protocol)?;
        f.write_str("/")?;
        f.write_str(&self.transport)?;
        f.write_str(" ")?;
        fmt::Display::fmt(&self.host, f)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        fmt_params(f, &self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_with_lws_and_rport() {
        let v = Via::parse(b"SIP  /   2.0  /  UDP\r\n  192.0.2.2:5060;branch=z9hG4bK390skdjuw;rport").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.rport(), Some(None));
        assert!(v.has_rfc3261_branch());
        let v = Via::parse(b"SIP/2.0/TCP [2001:db8::9:1]:5061;branch=z9hG4bKas3-111").unwrap();
        assert_eq!(v.host, Host::Ipv6("2001:db8::9:1".parse().unwrap()));
        assert_eq!(v.to_string(), "SIP/2.0/TCP [2001:db8::9:1]:5061;branch=z9hG4bKas3-111");
    }

    #[test]
    fn reject_broken() {
        assert!(Via::parse(b"SIP/2.0/UDP 192.0.2.15;;,;,,").is_none());
        assert!(Via::parse(b"SIP/2.0/UDP").is_none());
        assert!(Via::parse(b"SIP/2.0 192.0.2.1").is_none());
        assert!(!Via::parse(b"SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK").unwrap().has_rfc3261_branch());
    }
}
