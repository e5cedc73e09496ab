//! The caller's identity on calls that cross the overlay (docs/security.md, M5):
//! what a local phone sends into the overlay as INVITE or MESSAGE is signed by this node for
//! its enrolled AoR ([`crate::identity::caller`]); what arrives from the overlay for a local
//! phone is checked before the phone rings, refused with 403 and the reason when the proof is
//! forged or missing, and the `Identity` header never reaches the phone.

use std::time::Instant;

use tracing::debug;

use crate::identity::caller::{self, CallerError};
use crate::identity::{Aor, KeyPair, SharedRandom, Signer, VerifiedCache};
use crate::sip::validate::Rejection;
use crate::sip::{HeaderName, Message, Method, SipUri};

/// Certificates remembered as verified.
const VERIFIED_CACHE: usize = 1024;

/// What this node needs to sign its user's calls and check other nodes' calls.
pub struct Callers {
    /// The node's enrolled key, its leaf certificate, the AoR it names, and the randomness
    /// its signatures need.
    signer: Option<(KeyPair, Vec<u8>, Aor, SharedRandom)>,
    ids: VerifiedCache,
    unix_at_start: u64,
    started: Instant,
    /// Requests from the overlay refused for their identity.
    pub refused: u64,
    /// Requests from the overlay whose caller was proven.
    pub verified: u64,
}

impl Callers {
    /// From the node's enrollment: `root` checks others, `signer` (when enrolled) signs.
    pub fn new(
        ids_root: crate::identity::TrustAnchor,
        signer: Option<&Signer>,
        unix_at_start: u64,
        started: Instant,
    ) -> Callers {
        let signer = signer.and_then(|s| {
            let key = KeyPair::from_pkcs8(s.identity.key.pkcs8_der(), &*s.rng).ok()?;
            Some((key, s.identity.chain.first()?.clone(), s.identity.aor.clone(), s.rng.clone()))
        });
        Callers {
            signer,
            ids: VerifiedCache::new(ids_root, VERIFIED_CACHE),
            unix_at_start,
            started,
            refused: 0,
            verified: 0,
        }
    }

    fn unix(&self, now: Instant) -> u64 {
        self.unix_at_start + now.saturating_duration_since(self.started).as_secs()
    }

    /// Signs `copy`, about to leave for another node, when it is from our user.
    pub fn sign(&self, now: Instant, copy: &mut Message) {
        let Some((key, cert, aor, rng)) = &self.signer else { return };
        let from = copy.from().ok().and_then(|f| f.uri.as_sip().map(SipUri::aor));
        if from.as_deref() != Some(aor.as_str()) {
            debug!(from = ?from, ours = %aor, "not our user's request: sent without an Identity");
            return;
        }
        if caller::sign(copy, key, cert, self.unix(now), &**rng).is_none() {
            debug!("could not sign a request");
        }
    }

    /// Checks a request from the overlay for one of our phones.
    pub fn check(&mut self, now: Instant, req: &Message) -> Result<Aor, Rejection> {
        let unix = self.unix(now);
        let checked = caller::verify(req, &mut self.ids, unix);
        match &checked {
            Ok(_) => self.verified += 1,
            Err(e) => debug!(error = %e, msg = %req.summary(), "caller not verified"),
        }
        checked.map_err(|e| {
            self.refused += 1;
            refusal(&e)
        })
    }
}

/// Whether `req` needs an identity: an INVITE or MESSAGE outside any dialog.
pub fn needs_identity(req: &Message) -> bool {
    matches!(req.method(), Some(Method::Invite | Method::Message)) && req.to().ok().is_some_and(|t| t.tag().is_none())
}

/// Removes the header before a request goes to a phone.
pub fn strip(copy: &mut Message) {
    copy.headers.remove_all(&HeaderName::other(caller::HEADER));
}

fn refusal(e: &CallerError) -> Rejection {
    Rejection::new(403, format!("Forbidden (caller not verified: {e})"))
}

/// The refusal when this node cannot check callers at all (it is not enrolled).
pub fn cannot_check() -> Rejection {
    Rejection::new(403, "Forbidden (caller not verified: this node has no trust anchor)")
}
