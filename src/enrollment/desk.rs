//! The enrollment desk: what the CA answers to one enrollment request, and its per-address
//! rate limit. Sans-IO: the HTTPS server (`daemon::ca::server`) parses the request, passes the
//! Unix time, a random source and the registry of issued names, and turns the outcome into an
//! HTTP answer (and, for `--verify email`, a mail in the outbox).
//!
//! Policy ("minimal cost", SOSIMPLE):
//! - one name, one holder ([`EnrollmentCa::issue`]): another key for an enrolled AoR is refused
//!   (409), the holder's key renews without any further check;
//! - [`VerifyMode::None`]: first come, first served;
//! - [`VerifyMode::Email`]: a new name is issued only to a request that carries the token mailed
//!   to the AoR's `user@domain` mailbox, for the same key as the request that asked for it;
//!   tokens live [`TOKEN_LIFETIME`] seconds and are kept in memory only (a restarted CA sends
//!   a new one);
//! - [`RateLimiter`]: a token bucket per client IP address.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ring::rand::SecureRandom;

use super::ca::read_csr;
use super::ca::{Enrollment, EnrollmentCa, IssuedNames};
use crate::identity::{Aor, IdentityError, PublicKey};

/// How long an e-mailed token stays good, seconds.
pub const TOKEN_LIFETIME: u64 = 3600;
/// Most verifications waiting for their token at once; beyond it new ones are refused (the
/// rate limit bounds each address, this bounds them all).
pub const MAX_PENDING: usize = 10_000;
/// Keys that may wait for a token for one AoR at once. A request for another key never
/// replaces a waiting token (docs/security.md, M7: a second request used to take the first one over);
/// it waits beside it, and the one whose holder reads the mailbox wins.
pub const MAX_PENDING_PER_AOR: usize = 4;
/// Tolerated clock difference: certificates start this many seconds before the request.
const BACKDATE: u64 = 300;

/// How a new name's ownership is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// First come, first served (test overlays, the demo).
    None,
    /// A token mailed to the AoR's `user@domain`.
    Email,
}

/// One enrollment request, as the server received it.
#[derive(Debug, Clone)]
pub struct EnrollRequest<'a> {
    /// The AoR asked for, as written (`sip:alice@example.com`).
    pub aor: &'a str,
    /// The PKCS#10 request, DER.
    pub csr_der: &'a [u8],
    /// The e-mailed token, on the second request of an e-mail check.
    pub token: Option<&'a str>,
}

/// A mail the CA wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The recipient: the AoR's user at its domain.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// The text, with the token.
    pub body: String,
}

/// What the desk answers.
#[derive(Debug)]
pub enum EnrollOutcome {
    /// The certificate, with the chain up to the root (leaf first, root last).
    Issued {
        /// The AoR the certificate binds.
        aor: Aor,
        /// DER certificates, leaf first.
        chain: Vec<Vec<u8>>,
        /// A first enrollment or a renewal.
        enrollment: Enrollment,
    },
    /// A token was mailed; the client repeats the request with it (HTTP 202).
    VerificationSent {
        /// The AoR asked for.
        aor: Aor,
        /// The mail to send.
        mail: Mail,
    },
}

/// Why a request was refused; [`EnrollRefusal::status`] is the HTTP status to answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollRefusal {
    /// The request does not parse or names no valid AoR (400).
    #[error("{0}")]
    Invalid(IdentityError),
    /// The name has another holder (409).
    #[error("{0}")]
    NameTaken(IdentityError),
    /// The AoR is outside the CA's domain (403).
    #[error("{0}")]
    WrongDomain(IdentityError),
    /// The mailed token does not match.
    #[error("the token for {0} is wrong, expired, or was sent for another key; request a new one")]
    BadToken(Aor),
    /// Issuing failed on the CA's side (500).
    #[error("the CA failed to issue: {0}")]
    Internal(IdentityError),
    /// Too many tokens are pending overall.
    #[error("too many verifications are waiting for their token; try again later")]
    Busy,
    /// Too many keys are waiting for a token for this AoR.
    #[error("too many keys are waiting for a token for {0}; try again in an hour")]
    TooManyPending(Aor),
}

impl EnrollRefusal {
    /// HTTP status (RFC 9110 §15).
    pub fn status(&self) -> u16 {
        match self {
            EnrollRefusal::Invalid(_) => 400,
            EnrollRefusal::WrongDomain(_) | EnrollRefusal::BadToken(_) => 403,
            EnrollRefusal::NameTaken(_) => 409,
            EnrollRefusal::Internal(_) => 500,
            EnrollRefusal::Busy => 503,
            EnrollRefusal::TooManyPending(_) => 429,
        }
    }
}

#[derive(Debug)]
struct PendingToken {
    token_sha256: Vec<u8>,
    key: PublicKey,
    expires_at: u64,
}

/// The enrollment desk: a CA, its verification mode and the tokens it has mailed.
#[derive(Debug)]
pub struct EnrollmentDesk {
    ca: EnrollmentCa,
    mode: VerifyMode,
    /// Certificates are issued for this many seconds, capped at `max_not_after`.
    cert_lifetime: u64,
    max_not_after: u64,
    pending: BTreeMap<Aor, Vec<PendingToken>>,
}

impl EnrollmentDesk {
    /// `max_not_after` is the root's notAfter: no certificate outlives its issuer.
    pub fn new(ca: EnrollmentCa, mode: VerifyMode, cert_lifetime: u64, max_not_after: u64) -> EnrollmentDesk {
        EnrollmentDesk { ca, mode, cert_lifetime, max_not_after, pending: BTreeMap::new() }
    }

    /// The CA it issues with.
    pub fn ca(&self) -> &EnrollmentCa {
        &self.ca
    }

    /// How it verifies requests.
    pub fn mode(&self) -> VerifyMode {
        self.mode
    }

    /// Answers one request at `unix_now`. `ca_url` goes into a verification mail.
    pub fn handle(
        &mut self,
        registry: &mut impl IssuedNames,
        request: &EnrollRequest<'_>,
        unix_now: u64,
        ca_url: &str,
        rng: &dyn SecureRandom,
    ) -> Result<EnrollOutcome, EnrollRefusal> {
        self.pending.retain(|_, waiting| {
            waiting.retain(|p| p.expires_at > unix_now);
            !waiting.is_empty()
        });
        let aor = Aor::parse(request.aor).map_err(EnrollRefusal::Invalid)?;
        if aor.domain() != self.ca.domain() {
            let domain = self.ca.domain().to_owned();
            return Err(EnrollRefusal::WrongDomain(IdentityError::WrongDomain { aor, domain }));
        }
        let (key, _) = read_csr(request.csr_der).map_err(EnrollRefusal::Invalid)?;
        let renewal = match registry.holder(&aor) {
            Some(holder) if *holder != key => return Err(EnrollRefusal::NameTaken(IdentityError::NameTaken(aor))),
            Some(_) => true,
            None => false,
        };
        if self.mode == VerifyMode::Email && !renewal {
            match request.token {
                None => return self.mail_token(aor, key, unix_now, ca_url, rng),
                Some(token) => {
                    let good = self
                        .pending
                        .get(&aor)
                        .is_some_and(|w| w.iter().any(|p| p.key == key && p.token_sha256 == sha256(token)));
                    if !good {
                        return Err(EnrollRefusal::BadToken(aor));
                    }
                }
            }
        }
        let not_before = unix_now.saturating_sub(BACKDATE);
        let not_after = unix_now.saturating_add(self.cert_lifetime).min(self.max_not_after);
        let issued =
            self.ca.issue(registry, request.csr_der, &aor, not_before, not_after, rng).map_err(|e| match e {
                IdentityError::NameTaken(_) => EnrollRefusal::NameTaken(e),
                IdentityError::BadValidity { .. } | IdentityError::Signing | IdentityError::Certificate(_) => {
                    EnrollRefusal::Internal(e)
                }
                other => EnrollRefusal::Invalid(other),
            })?;
        self.pending.remove(&aor);
        let chain = vec![issued.certificate_der, self.ca.root_der().to_vec()];
        Ok(EnrollOutcome::Issued { aor, chain, enrollment: issued.enrollment })
    }

    fn mail_token(
        &mut self,
        aor: Aor,
        key: PublicKey,
        unix_now: u64,
        ca_url: &str,
        rng: &dyn SecureRandom,
    ) -> Result<EnrollOutcome, EnrollRefusal> {
        let waiting_total: usize = self.pending.values().map(Vec::len).sum();
        let waiting = self.pending.get(&aor).map_or(&[][..], Vec::as_slice);
        let renewing = waiting.iter().any(|p| p.key == key);
        if !renewing && waiting.len() >= MAX_PENDING_PER_AOR {
            return Err(EnrollRefusal::TooManyPending(aor));
        }
        if !renewing && waiting_total >= MAX_PENDING {
            return Err(EnrollRefusal::Busy);
        }
        let mut bytes = [0u8; 16];
        rng.fill(&mut bytes).map_err(|_| EnrollRefusal::Internal(IdentityError::KeyGeneration))?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        // Only the token's hash is kept; comparing hashes leaks nothing about the token.
        // The same key asking again gets a new token in place of its own; another key waits
        // beside it.
        let entry =
            PendingToken { token_sha256: sha256(&token), key, expires_at: unix_now.saturating_add(TOKEN_LIFETIME) };
        let waiting = self.pending.entry(aor.clone()).or_default();
        waiting.retain(|p| p.key != entry.key);
        waiting.push(entry);
        let to = format!("{}@{}", aor.user(), aor.domain());
        let mail = Mail {
            to,
            subject: format!("Your p2psip enrollment token for {aor}"),
            body: format!(
                "Someone asked the p2psip enrollment CA for {domain} to certify {aor}.\n\
                 If it was you, finish with the same data directory:\n\n\
                 \x20   p2psip enroll {aor} --ca {ca_url} --token {token}\n\n\
                 token: {token}\n\
                 The token is good for {minutes} minutes. If it was not you, ignore this mail.\n",
                domain = self.ca.domain(),
                minutes = TOKEN_LIFETIME / 60,
            ),
        };
        Ok(EnrollOutcome::VerificationSent { aor, mail })
    }
}

fn sha256(text: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref().to_vec()
}

/// A token bucket per client address: `per_minute` requests at once, refilled at
/// `per_minute` per minute. Full buckets are forgotten, so memory follows recent clients.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: BTreeMap<IpAddr, (f64, Instant)>,
}

impl RateLimiter {
    /// At most `per_minute` requests a minute from one source.
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter { per_minute, buckets: BTreeMap::new() }
    }

    /// Takes one request from `ip`'s bucket at `now`; `Err(wait)` says when one is next
    /// available.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(self.per_minute);
        let per_sec = capacity / 60.0;
        let refill = |(tokens, at): (f64, Instant)| {
            (tokens + now.saturating_duration_since(at).as_secs_f64() * per_sec).min(capacity)
        };
        if self.buckets.len() > 10_000 {
            self.buckets.retain(|_, b| refill(*b) < capacity);
        }
        let tokens = self.buckets.get(&ip).map_or(capacity, |b| refill(*b));
        if tokens >= 1.0 {
            self.buckets.insert(ip, (tokens - 1.0, now));
            Ok(())
        } else {
            self.buckets.insert(ip, (tokens, now));
            let wait = if per_sec > 0.0 { (1.0 - tokens) / per_sec } else { 60.0 };
            Err(Duration::from_secs_f64(wait.clamp(0.0, 3600.0)))
        }
    }
}

#[cfg(test)]
// Tests sign with the OS's randomness: nothing they check depends on its bytes.
#[allow(clippy::disallowed_methods)]
mod tests {
    use ring::rand::SystemRandom;

    use super::*;
    use crate::enrollment::build_csr;
    use crate::identity::{verify_chain, KeyPair, TrustAnchor};

    const NOW: u64 = 1_800_000_000;

    fn desk(mode: VerifyMode, rng: &SystemRandom) -> EnrollmentDesk {
        let ca = EnrollmentCa::create("example.com", KeyPair::generate(rng).unwrap(), NOW - 10, NOW + 86_400, rng);
        EnrollmentDesk::new(ca.unwrap(), mode, 365 * 86_400, NOW + 86_400)
    }

    fn csr(aor: &str, key: &KeyPair, rng: &SystemRandom) -> Vec<u8> {
        build_csr(&Aor::parse(aor).unwrap(), key, rng).unwrap()
    }

    #[test]
    fn first_come_first_served_one_name_one_holder() {
        let rng = SystemRandom::new();
        let mut desk = desk(VerifyMode::None, &rng);
        let mut names = BTreeMap::new();
        let (alice, mallory) = (KeyPair::generate(&rng).unwrap(), KeyPair::generate(&rng).unwrap());
        let aor = "sip:alice@example.com";
        let der = csr(aor, &alice, &rng);
        let EnrollOutcome::Issued { chain, enrollment, .. } =
            desk.handle(&mut names, &EnrollRequest { aor, csr_der: &der, token: None }, NOW, "u", &rng).unwrap()
        else {
            panic!("not issued")
        };
        assert_eq!(enrollment, Enrollment::New);
        let root = TrustAnchor::new(chain[1].clone()).unwrap();
        let id = verify_chain(&chain[0], &chain[1..], &root, NOW).unwrap();
        assert_eq!(id.not_after, NOW + 86_400, "capped at the root's notAfter");
        let other = csr(aor, &mallory, &rng);
        let refused =
            desk.handle(&mut names, &EnrollRequest { aor, csr_der: &other, token: None }, NOW, "u", &rng).unwrap_err();
        assert_eq!(refused.status(), 409);
        assert!(
            refused.to_string().contains("sip:alice@example.com is already enrolled with another key"),
            "{refused}"
        );
        let again =
            desk.handle(&mut names, &EnrollRequest { aor, csr_der: &der, token: None }, NOW + 5, "u", &rng).unwrap();
        assert!(matches!(again, EnrollOutcome::Issued { enrollment: Enrollment::Renewal, .. }));
        let wrong = EnrollRequest { aor: "sip:alice@other.org", csr_der: &der, token: None };
        assert_eq!(desk.handle(&mut names, &wrong, NOW, "u", &rng).unwrap_err().status(), 403);
        let garbage = EnrollRequest { aor, csr_der: b"nope", token: None };
        assert_eq!(desk.handle(&mut names, &garbage, NOW, "u", &rng).unwrap_err().status(), 400);
    }

    #[test]
    fn email_mode_needs_the_mailed_token_for_the_same_key() {
        let rng = SystemRandom::new();
        let mut desk = desk(VerifyMode::Email, &rng);
        let mut names = BTreeMap::new();
        let (bob, eve) = (KeyPair::generate(&rng).unwrap(), KeyPair::generate(&rng).unwrap());
        let aor = "sip:bob@example.com";
        let der = csr(aor, &bob, &rng);
        let first = EnrollRequest { aor, csr_der: &der, token: None };
        let EnrollOutcome::VerificationSent { mail, .. } =
            desk.handle(&mut names, &first, NOW, "https://ca", &rng).unwrap()
        else {
            panic!("no mail")
        };
        assert_eq!(mail.to, "bob@example.com");
        assert!(names.is_empty(), "nothing bound before the token comes back");
        let token = mail.body.lines().find_map(|l| l.strip_prefix("token: ")).unwrap().to_owned();
        let eve_der = csr(aor, &eve, &rng);
        let stolen = EnrollRequest { aor, csr_der: &eve_der, token: Some(&token) };
        assert!(matches!(desk.handle(&mut names, &stolen, NOW, "u", &rng), Err(EnrollRefusal::BadToken(_))));
        let wrong = EnrollRequest { aor, csr_der: &der, token: Some("00") };
        assert!(matches!(desk.handle(&mut names, &wrong, NOW, "u", &rng), Err(EnrollRefusal::BadToken(_))));
        let late = EnrollRequest { aor, csr_der: &der, token: Some(&token) };
        assert!(desk.handle(&mut names, &late, NOW + TOKEN_LIFETIME + 1, "u", &rng).is_err(), "expired token");
        // A fresh token, used in time.
        let EnrollOutcome::VerificationSent { mail, .. } = desk.handle(&mut names, &first, NOW, "u", &rng).unwrap()
        else {
            panic!("no mail")
        };
        let token = mail.body.lines().find_map(|l| l.strip_prefix("token: ")).unwrap().to_owned();
        let second = EnrollRequest { aor, csr_der: &der, token: Some(&token) };
        assert!(matches!(desk.handle(&mut names, &second, NOW + 1, "u", &rng), Ok(EnrollOutcome::Issued { .. })));
        // Renewal by the holder needs no new mail.
        assert!(matches!(desk.handle(&mut names, &first, NOW + 2, "u", &rng), Ok(EnrollOutcome::Issued { .. })));
    }

    #[test]
    fn a_second_request_for_the_name_does_not_take_the_first_token_over() {
        // docs/security.md, M7: eve asks for bob's name with her key after bob did; bob's token still
        // works, and eve's request waits beside it rather than replacing it.
        let rng = SystemRandom::new();
        let mut desk = desk(VerifyMode::Email, &rng);
        let mut names = BTreeMap::new();
        let (bob, eve) = (KeyPair::generate(&rng).unwrap(), KeyPair::generate(&rng).unwrap());
        let aor = "sip:bob@example.com";
        let (bob_der, eve_der) = (csr(aor, &bob, &rng), csr(aor, &eve, &rng));
        let token_of = |outcome: Result<EnrollOutcome, EnrollRefusal>| match outcome {
            Ok(EnrollOutcome::VerificationSent { mail, .. }) => {
                mail.body.lines().find_map(|l| l.strip_prefix("token: ")).unwrap().to_owned()
            }
            other => panic!("no mail: {other:?}"),
        };
        let bobs =
            token_of(desk.handle(&mut names, &EnrollRequest { aor, csr_der: &bob_der, token: None }, NOW, "u", &rng));
        let eves =
            token_of(desk.handle(&mut names, &EnrollRequest { aor, csr_der: &eve_der, token: None }, NOW, "u", &rng));
        assert_ne!(bobs, eves);
        let bob_back = EnrollRequest { aor, csr_der: &bob_der, token: Some(&bobs) };
        assert!(matches!(desk.handle(&mut names, &bob_back, NOW + 1, "u", &rng), Ok(EnrollOutcome::Issued { .. })));
        // The name is bob's now: eve's token is worth nothing.
        let eve_back = EnrollRequest { aor, csr_der: &eve_der, token: Some(&eves) };
        assert!(matches!(desk.handle(&mut names, &eve_back, NOW + 2, "u", &rng), Err(EnrollRefusal::NameTaken(_))));
        // No more than MAX_PENDING_PER_AOR keys wait for one name.
        let carol = "sip:carol@example.com";
        for i in 0..=MAX_PENDING_PER_AOR {
            let der = csr(carol, &KeyPair::generate(&rng).unwrap(), &rng);
            let r = desk.handle(&mut names, &EnrollRequest { aor: carol, csr_der: &der, token: None }, NOW, "u", &rng);
            if i < MAX_PENDING_PER_AOR {
                assert!(matches!(r, Ok(EnrollOutcome::VerificationSent { .. })), "{i}: {r:?}");
            } else {
                assert_eq!(r.unwrap_err().status(), 429);
            }
        }
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // any instant will do as the origin
    fn rate_limit_refills_over_time() {
        let mut limiter = RateLimiter::new(2);
        let t0 = Instant::now();
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        assert!(limiter.check(a, t0).is_ok());
        assert!(limiter.check(a, t0).is_ok());
        let wait = limiter.check(a, t0).unwrap_err();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30), "{wait:?}");
        assert!(limiter.check(b, t0).is_ok(), "per address");
        assert!(limiter.check(a, t0 + Duration::from_secs(31)).is_ok());
    }
}
