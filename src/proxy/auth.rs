//! Who may use the proxy: digest authentication of phones (RFC 3261 §22, RFC 7616, RFC 8760)
//! for REGISTER (401, `Authorization`) and for the requests the proxy forwards (407,
//! `Proxy-Authorization`, §22.3), with what a public listener needs beyond the stateless
//! check (docs/security.md, M6):
//!
//! - **Nonces bound to the source.** A nonce is an HMAC over its time stamp and the address
//!   the challenge went to, so credentials captured on the wire do not work from anywhere else.
//! - **A replay window.** Per account, the highest `nc` accepted under each recent nonce; a
//!   request that reuses one is refused, except the exact retransmission of the request that
//!   used it (same Call-ID, CSeq and `cnonce`), which the registrar answers again.
//! - **The `uri` parameter** must be the Request-URI the request carries (RFC 7616 §3.4.6),
//!   or name this node itself (sipp, for one, puts the address it sent to there).
//! - **Back-off.** After [`FAILURES_BEFORE_BACKOFF`] failed attempts from one source address,
//!   further attempts from it are refused without a hash for a period that doubles with each
//!   further failure, up to [`MAX_BACKOFF`]. An unknown user name costs a hash like a wrong
//!   password, so the time of an answer does not tell names apart.
//!
//! Sans-IO: the caller passes `now` (as seconds on its clock) and the source address.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::accounts::Accounts;
use super::digest::{challenges, hex, same_bytes, Algorithm, Credentials, NonceCheck};
use crate::addr::source_group;
use crate::sip::header::AuthParams;
use crate::sip::validate::Rejection;
use crate::sip::{Header, HeaderName, Message};

/// Failed attempts from one address before it has to wait.
pub const FAILURES_BEFORE_BACKOFF: u32 = 5;
/// The first wait once an address is backed off; each further failure doubles it.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// The longest wait.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Recent nonces remembered per account (a phone needs one at a time; a few spare).
const NONCES_PER_ACCOUNT: usize = 8;
/// Source addresses with failures remembered at once; the oldest are forgotten first.
const TRACKED_SOURCES: usize = 4096;

/// Which of the two challenges: the registrar's or the proxy's (§22.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Realm {
    /// REGISTER: `Authorization`, 401 and `WWW-Authenticate`.
    Registrar,
    /// Requests the proxy forwards: `Proxy-Authorization`, 407 and `Proxy-Authenticate`.
    Proxy,
}

impl Realm {
    fn credentials_header(self) -> HeaderName {
        match self {
            Realm::Registrar => HeaderName::Authorization,
            Realm::Proxy => HeaderName::ProxyAuthorization,
        }
    }

    fn challenge(self) -> (u16, &'static str, HeaderName) {
        match self {
            Realm::Registrar => (401, "Unauthorized", HeaderName::WwwAuthenticate),
            Realm::Proxy => (407, "Proxy Authentication Required", HeaderName::ProxyAuthenticate),
        }
    }
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No usable credentials yet (none, a nonce not ours, a stale one): a challenge. The
    /// phone answers it without asking its user.
    Challenge(Rejection),
    /// Credentials that are wrong, malformed or replayed, or a source backed off.
    Refused(Rejection),
}

impl AuthFailure {
    /// The response the failure gets (401/407 with a challenge, or 403).
    pub fn into_rejection(self) -> Rejection {
        match self {
            AuthFailure::Challenge(r) | AuthFailure::Refused(r) => r,
        }
    }
}

/// One nonce an account used, and the highest `nc` accepted under it.
#[derive(Debug, Clone)]
struct Used {
    nonce: String,
    made: u64,
    nc: u32,
    /// Call-ID, CSeq and cnonce of the request that used `nc`: its retransmission passes.
    last: (String, u32, String),
}

#[derive(Debug, Clone, Copy, Default)]
struct Failures {
    count: u32,
    blocked_until: u64,
}

/// Digest state shared by the registrar and the proxy.
pub struct Authenticator {
    key: ring::hmac::Key,
    lifetime_secs: u64,
    offer: Vec<Algorithm>,
    realm: String,
    used: BTreeMap<String, VecDeque<Used>>,
    failures: BTreeMap<IpAddr, Failures>,
    /// Insertion order of `failures`, to forget the oldest source first.
    failure_order: VecDeque<IpAddr>,
    /// Attempts refused because their source was backed off (for status).
    pub backed_off: u64,
    /// The last nonce's serial number.
    serial: u64,
}

impl Authenticator {
    /// Nonces keyed by `key`, fresh for `lifetime`, in `realm`, offering `offer`.
    pub fn new(key: &[u8; 32], lifetime: Duration, realm: &str, offer: Vec<Algorithm>) -> Authenticator {
        Authenticator {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key),
            lifetime_secs: lifetime.as_secs(),
            offer,
            realm: realm.to_owned(),
            used: BTreeMap::new(),
            failures: BTreeMap::new(),
            failure_order: VecDeque::new(),
            backed_off: 0,
            serial: 0,
        }
    }

    fn mac(&self, made: u64, serial: u64, source: SocketAddr) -> String {
        let mut data = made.to_be_bytes().to_vec();
        data.extend_from_slice(&serial.to_be_bytes());
        data.extend_from_slice(source.to_string().as_bytes());
        hex(&ring::hmac::sign(&self.key, &data).as_ref()[..12])
    }

    /// A nonce for a challenge sent to `source` at `clock` seconds: `T.S.MAC`, with `S` a
    /// serial number so that no two challenges share a nonce (a phone may start its nonce
    /// count afresh with each one).
    pub fn make_nonce(&mut self, clock: u64, source: SocketAddr) -> String {
        self.serial += 1;
        format!("{clock:x}.{:x}.{}", self.serial, self.mac(clock, self.serial, source))
    }

    /// Whether `nonce` is one we made for `source`, and how old it is.
    pub fn check_nonce(&self, nonce: &str, clock: u64, source: SocketAddr) -> (NonceCheck, u64) {
        let mut parts = nonce.splitn(3, '.');
        let (Some(t), Some(serial), Some(mac)) = (parts.next(), parts.next(), parts.next()) else {
            return (NonceCheck::Forged, 0);
        };
        let (Ok(made), Ok(serial)) = (u64::from_str_radix(t, 16), u64::from_str_radix(serial, 16)) else {
            return (NonceCheck::Forged, 0);
        };
        // Constant time: a timing oracle would let anyone forge a nonce byte by byte.
        if !same_bytes(self.mac(made, serial, source).as_bytes(), mac.as_bytes()) {
            return (NonceCheck::Forged, made);
        }
        if made > clock || clock - made > self.lifetime_secs {
            return (NonceCheck::Stale, made);
        }
        (NonceCheck::Fresh, made)
    }

    fn challenge(&mut self, realm: Realm, clock: u64, source: SocketAddr, stale: bool) -> AuthFailure {
        let nonce = self.make_nonce(clock, source);
        let (code, reason, header) = realm.challenge();
        let r = challenges(&self.offer, &self.realm, &nonce, stale)
            .into_iter()
            .fold(Rejection::new(code, reason), |r, c| r.with_header(Header::new(header.clone(), c)));
        AuthFailure::Challenge(r)
    }

    /// The credentials of `msg` for our realm, if any.
    fn credentials(&self, msg: &Message, realm: Realm) -> Option<AuthParams> {
        msg.auth(&realm.credentials_header())
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.is_digest() && c.get("realm").is_some_and(|r| r.eq_ignore_ascii_case(&self.realm)))
    }

    /// Authenticates `msg`, sent from `source` at `clock` seconds, against `accounts`. Returns
    /// the canonical AoR of the account whose credentials it carries. `names_us` says whether
    /// a digest-uri other than the Request-URI names this node (its domain or an address).
    pub fn authenticate(
        &mut self,
        accounts: &Accounts,
        msg: &Message,
        realm: Realm,
        clock: u64,
        source: SocketAddr,
        names_us: impl Fn(&crate::sip::Uri) -> bool,
    ) -> Result<String, AuthFailure> {
        let Some(params) = self.credentials(msg, realm) else {
            return Err(self.challenge(realm, clock, source, false));
        };
        if self.is_backed_off(source.ip(), clock) {
            self.backed_off += 1;
            let retry =
                self.failures.get(&source_group(source.ip())).map_or(0, |f| f.blocked_until.saturating_sub(clock));
            return Err(AuthFailure::Refused(
                Rejection::new(403, "Forbidden (too many failed attempts)")
                    .with_header(Header::new(HeaderName::other("Retry-After"), retry.max(1))),
            ));
        }
        let creds = match Credentials::from_params(&params) {
            Ok(c) => c,
            Err(e) => {
                self.failed(source.ip(), clock);
                return Err(AuthFailure::Refused(Rejection::new(400, format!("Bad credentials ({e})"))));
            }
        };
        let (nonce, made) = self.check_nonce(&creds.nonce, clock, source);
        if nonce == NonceCheck::Forged {
            // Not ours, or made for another source: a captured REGISTER replayed from
            // elsewhere lands here. A fresh challenge, not stale (RFC 7616 §3.3).
            return Err(self.challenge(realm, clock, source, false));
        }
        // RFC 7616 §3.4.6: the digest-uri must name what the request is for.
        let ruri = msg.request_uri().map(ToString::to_string).unwrap_or_default();
        if creds.uri != ruri && !crate::sip::Uri::parse(&creds.uri).is_some_and(|u| names_us(&u)) {
            self.failed(source.ip(), clock);
            return Err(AuthFailure::Refused(Rejection::new(403, "Forbidden (credentials for another URI)")));
        }
        let method = msg.method().map(|m| m.as_str().to_owned()).unwrap_or_default();
        let account = accounts.by_user(&creds.username, &self.realm);
        // An unknown user costs the same hash as a wrong password.
        let ha1 = account.map_or_else(|| "0".repeat(64), |a| a.ha1(creds.algorithm).to_owned());
        let verified = creds.verify(&method, &self.realm, &ha1).is_ok();
        let Some(account) = account.filter(|_| verified) else {
            self.failed(source.ip(), clock);
            return Err(AuthFailure::Refused(Rejection::new(403, "Forbidden")));
        };
        if nonce == NonceCheck::Stale {
            // RFC 7616 §3.3: right password, old nonce: ask again without prompting the user.
            return Err(self.challenge(realm, clock, source, true));
        }
        let aor = account.aor.clone();
        if !self.accept_use(&aor, &creds, made, msg) {
            // A replay: ask for new credentials (stale, so a real phone just retries).
            return Err(self.challenge(realm, clock, source, true));
        }
        self.failures.remove(&source_group(source.ip()));
        Ok(aor)
    }

    /// Records one use of `creds` by `aor`; false when it replays an earlier one.
    fn accept_use(&mut self, aor: &str, creds: &Credentials, made: u64, msg: &Message) -> bool {
        let (nc, cnonce) = match &creds.qop {
            Some((_, nc, cnonce)) => (u32::from_str_radix(nc, 16).unwrap_or(0), cnonce.clone()),
            // RFC 2069 form: no nc; only one use of each nonce (and its retransmission).
            None => (1, String::new()),
        };
        let call_id = msg.call_id().unwrap_or_default().to_owned();
        let cseq = msg.cseq().map(|c| c.seq).unwrap_or(0);
        let this = (call_id, cseq, cnonce);
        let window = self.used.entry(aor.to_owned()).or_default();
        if let Some(u) = window.iter_mut().find(|u| u.nonce == creds.nonce) {
            if nc > u.nc {
                u.nc = nc;
                u.last = this;
                return true;
            }
            return nc == u.nc && u.last == this;
        }
        // A nonce older than every one still remembered may have been forgotten: refuse it.
        if window.len() >= NONCES_PER_ACCOUNT && window.iter().all(|u| u.made > made) {
            return false;
        }
        if window.len() >= NONCES_PER_ACCOUNT {
            if let Some(oldest) = window.iter().enumerate().min_by_key(|(_, u)| u.made).map(|(i, _)| i) {
                window.remove(oldest);
            }
        }
        window.push_back(Used { nonce: creds.nonce.clone(), made, nc, last: this });
        true
    }

    fn is_backed_off(&self, ip: IpAddr, clock: u64) -> bool {
        self.failures.get(&source_group(ip)).is_some_and(|f| f.blocked_until > clock)
    }

    fn failed(&mut self, ip: IpAddr, clock: u64) {
        let group = source_group(ip);
        if !self.failures.contains_key(&group) {
            if self.failure_order.len() >= TRACKED_SOURCES {
                if let Some(old) = self.failure_order.pop_front() {
                    self.failures.remove(&old);
                }
            }
            self.failure_order.push_back(group);
        }
        let f = self.failures.entry(group).or_default();
        f.count += 1;
        if f.count >= FAILURES_BEFORE_BACKOFF {
            let doublings = (f.count - FAILURES_BEFORE_BACKOFF).min(16);
            let wait = (FIRST_BACKOFF.as_secs() << doublings).min(MAX_BACKOFF.as_secs());
            f.blocked_until = clock + wait;
        }
    }
}

#[cfg(test)]
mod tests;
