//! Addresses of record: the name a certificate binds and a registration is stored under.
//!
//! An [`Aor`] is always `sip:user@domain` (RFC 3261 §10.2.1's address of record) in one
//! canonical spelling: the scheme and the domain are lower-cased (RFC 3261 §19.1.4 compares
//! them case-insensitively), the user part is kept as written (it compares case-sensitively).
//! Parameters, headers, ports and `sips:` are refused: an AoR is a name, not a contact.
//!
//! This module does not check that a domain exists or that the user may claim it: that is the
//! enrollment CA's policy ([`crate::enrollment::ca`]).

use std::fmt;

use super::IdentityError;

/// A canonical address of record, `sip:user@domain`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Aor(String);

impl Aor {
    /// Parses and canonicalises `sip:user@domain` (or bare `user@domain`).
    pub fn parse(text: &str) -> Result<Aor, IdentityError> {
        let bad = |why: &'static str| IdentityError::BadAor { aor: text.to_owned(), why };
        let rest = match text.get(..4) {
            Some(scheme) if scheme.eq_ignore_ascii_case("sip:") => &text[4..],
            _ if text.contains(':') => return Err(bad("only the sip: scheme names an AoR")),
            _ => text,
        };
        let (user, domain) = rest.split_once('@').ok_or_else(|| bad("no user@domain"))?;
        if user.is_empty() {
            return Err(bad("empty user part"));
        }
        if domain.is_empty() {
            return Err(bad("empty domain"));
        }
        // RFC 3261 §25.1 `user` characters (unreserved, escaped, user-unreserved), minus ':' and
        // ';' which would start a password or parameters.
        let user_ok = user.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()%&=+$,?/".contains(&b));
        if !user_ok {
            return Err(bad("user part has a character outside RFC 3261 `user`"));
        }
        let domain_ok = domain.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !domain_ok || domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
            return Err(bad("domain is not a host name"));
        }
        Ok(Aor(format!("sip:{user}@{}", domain.to_ascii_lowercase())))
    }

    /// The canonical text, `sip:user@domain`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The user part.
    pub fn user(&self) -> &str {
        let rest = &self.0[4..];
        rest.split_once('@').map_or(rest, |(user, _)| user)
    }

    /// The domain part, lower case.
    pub fn domain(&self) -> &str {
        self.0.split_once('@').map_or("", |(_, domain)| domain)
    }
}

impl fmt::Display for Aor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Aor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Aor({})", self.0)
    }
}

impl std::str::FromStr for Aor {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Aor, IdentityError> {
        Aor::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_spelling() {
        let aor = Aor::parse("SIP:Alice@Example.COM").unwrap();
        assert_eq!(aor.as_str(), "sip:Alice@example.com");
        assert_eq!(aor.user(), "Alice");
        assert_eq!(aor.domain(), "example.com");
        assert_eq!(Aor::parse("bob@example.com").unwrap().as_str(), "sip:bob@example.com");
    }

    #[test]
    fn refuses_what_is_not_a_name() {
        for text in [
            "sips:alice@example.com",
            "sip:alice@example.com;transport=tcp",
            "sip:alice@example.com:5060",
            "sip:@example.com",
            "sip:alice@",
            "sip:alice",
            "sip:al ice@example.com",
            "tel:+1234",
            "sip:alice@exa..mple.com",
        ] {
            assert!(Aor::parse(text).is_err(), "{text}");
        }
    }
}
