//! Digest credentials and challenges (RFC 3261 §22.4, RFC 8760 for SHA-256, RFC 7616 §3.4 for
//! the `qop=auth` response): parsing `Authorization`, checking a response against an HA1,
//! and writing `WWW-Authenticate` / `Proxy-Authenticate` values.
//!
//! Nonces, the replay window and the failure back-off are [`super::auth`]'s. What it does not
//! do: no `auth-int`, no `-sess` algorithms.

use md5::Digest as _;

use crate::sip::header::AuthParams;

/// The hash algorithms an account's credentials are kept for (RFC 8760 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Algorithm {
    /// MD5 (RFC 2617), what most phones send.
    Md5,
    /// SHA-256 (RFC 7616, RFC 8760).
    Sha256,
}

impl Algorithm {
    /// Every algorithm, in the order RFC 8760 §2.4 would offer them (preferred first).
    pub const ALL: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Md5];

    /// What a challenge offers unless configured otherwise: MD5 alone. Deployed clients break
    /// on more: baresip 1.0 (libre) fails the whole 401 when any challenge is not MD5, and
    /// sipp 3.6 answers only the first one. Credentials computed with SHA-256 are accepted
    /// whichever was offered; `[registrar] digest_algorithms` offers SHA-256 too.
    pub const DEFAULT_OFFER: [Algorithm; 1] = [Algorithm::Md5];

    /// The `algorithm` parameter's value.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// The `algorithm` parameter's value; absent means MD5 (RFC 3261 §20.27).
    pub fn from_param(v: Option<&str>) -> Option<Algorithm> {
        match v {
            None => Some(Algorithm::Md5),
            Some(v) if v.eq_ignore_ascii_case("MD5") => Some(Algorithm::Md5),
            Some(v) if v.eq_ignore_ascii_case("SHA-256") => Some(Algorithm::Sha256),
            Some(_) => None,
        }
    }

    /// The lower-case hex digest of `data`.
    pub fn hash(self, data: &str) -> String {
        match self {
            Algorithm::Md5 => hex(&md5::Md5::digest(data.as_bytes())),
            Algorithm::Sha256 => hex(ring::digest::digest(&ring::digest::SHA256, data.as_bytes()).as_ref()),
        }
    }
}

pub(crate) use crate::encoding::hex;

/// Equality whose time does not depend on where the inputs first differ.
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `H(username ":" realm ":" password)`: what an account keeps instead of the password
/// (RFC 7616 §3.4.2).
pub fn ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    algorithm.hash(&format!("{username}:{realm}:{password}"))
}

/// What checking a nonce found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Ours and within its lifetime.
    Fresh,
    /// Ours, but older than the lifetime.
    Stale,
    /// Not made by this node (or made before it restarted).
    Forged,
}

/// The `WWW-Authenticate` values of a challenge: one per offered algorithm, in that order,
/// each with `qop="auth"`.
pub fn challenges(offer: &[Algorithm], realm: &str, nonce: &str, stale: bool) -> Vec<String> {
    offer
        .iter()
        .map(|a| {
            let stale = if stale { ", stale=true" } else { "" };
            format!("Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{stale}", a.name())
        })
        .collect()
}

/// Why a set of credentials was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Missing parameter ….
    #[error("missing parameter {0}")]
    Missing(&'static str),
    /// Unsupported algorithm.
    #[error("unsupported algorithm")]
    Algorithm,
    /// Unsupported qop.
    #[error("unsupported qop")]
    Qop,
    /// Wrong realm.
    #[error("wrong realm")]
    Realm,
    /// Wrong response.
    #[error("wrong response")]
    Response,
}

/// The fields of `Authorization: Digest …` that the check needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The `username` parameter.
    pub username: String,
    /// The `realm` parameter.
    pub realm: String,
    /// The `nonce` parameter.
    pub nonce: String,
    /// The `uri` parameter (must be the Request-URI).
    pub uri: String,
    /// The `response` parameter.
    pub response: String,
    /// The algorithm named (MD5 when absent).
    pub algorithm: Algorithm,
    /// `(qop, nc, cnonce)` when the client used `qop=auth`.
    pub qop: Option<(String, String, String)>,
}

impl Credentials {
    /// Reads credentials from an Authorization or Proxy-Authorization value.
    pub fn from_params(p: &AuthParams) -> Result<Credentials, DigestError> {
        let get = |n: &'static str| p.get(n).map(str::to_owned).ok_or(DigestError::Missing(n));
        let algorithm = Algorithm::from_param(p.get("algorithm")).ok_or(DigestError::Algorithm)?;
        let qop = match p.get("qop") {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => Some((q.to_owned(), get("nc")?, get("cnonce")?)),
            Some(_) => return Err(DigestError::Qop),
        };
        Ok(Credentials {
            username: get("username")?,
            realm: get("realm")?,
            nonce: get("nonce")?,
            uri: get("uri")?,
            response: get("response")?,
            algorithm,
            qop,
        })
    }

    /// Checks `response` against the stored `ha1` for `method` (RFC 7616 §3.4.1; without qop,
    /// RFC 2069's form that RFC 3261 §22.4 keeps for old clients).
    pub fn verify(&self, method: &str, realm: &str, ha1: &str) -> Result<(), DigestError> {
        if self.realm != realm {
            return Err(DigestError::Realm);
        }
        let h = self.algorithm;
        let ha2 = h.hash(&format!("{method}:{}", self.uri));
        let expected = match &self.qop {
            Some((qop, nc, cnonce)) => h.hash(&format!("{ha1}:{}:{nc}:{cnonce}:{qop}:{ha2}", self.nonce)),
            None => h.hash(&format!("{ha1}:{}:{ha2}", self.nonce)),
        };
        let given = self.response.to_ascii_lowercase();
        if !same_bytes(expected.as_bytes(), given.as_bytes()) {
            return Err(DigestError::Response);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7616 §3.9.1's example (an HTTP exchange; the computation is the same for SIP).
    #[test]
    fn rfc7616_example_md5_and_sha256() {
        let p = |algorithm: &str, response: &str| {
            AuthParams::parse(
                format!(
                    "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", uri=\"/dir/index.html\", \
                     algorithm={algorithm}, nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", nc=00000001, \
                     cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\", qop=auth, response=\"{response}\""
                )
                .as_bytes(),
            )
            .unwrap()
        };
        let realm = "http-auth@example.org";
        let md5 = Credentials::from_params(&p("MD5", "8ca523f5e9506fed4657c9700eebdbec")).unwrap();
        md5.verify("GET", realm, &ha1(Algorithm::Md5, "Mufasa", realm, "Circle of Life")).unwrap();
        let sha =
            Credentials::from_params(&p("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"))
                .unwrap();
        sha.verify("GET", realm, &ha1(Algorithm::Sha256, "Mufasa", realm, "Circle of Life")).unwrap();
        assert_eq!(
            sha.verify("GET", realm, &ha1(Algorithm::Sha256, "Mufasa", realm, "wrong")),
            Err(DigestError::Response)
        );
        assert_eq!(md5.verify("GET", "other", "x"), Err(DigestError::Realm));
    }

    #[test]
    fn unknown_algorithm_and_qop_are_refused() {
        let p = AuthParams::parse(
            b"Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"sip:r\", response=\"x\", algorithm=SHA-512-256",
        )
        .unwrap();
        assert_eq!(Credentials::from_params(&p), Err(DigestError::Algorithm));
        let p = AuthParams::parse(b"Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"sip:r\", response=\"x\", qop=auth-int, nc=1, cnonce=c").unwrap();
        assert_eq!(Credentials::from_params(&p), Err(DigestError::Qop));
        let p = AuthParams::parse(b"Digest username=\"a\", realm=\"r\"").unwrap();
        assert_eq!(Credentials::from_params(&p), Err(DigestError::Missing("nonce")));
    }
}
