//! The per-call key agreement between the two nodes of a call (`docs/media-security.md`):
//! each node makes a fresh P-256 ECDH share and signs it with its enrolled AoR key, so a node
//! that cannot prove the identity the signalling claimed gets no media (MIKEY-DHSIGN's idea,
//! RFC 3830 §3; the signed transcript also covers the other side's share, as in TLS 1.3's
//! CertificateVerify).
//!
//! What is signed (each field prefixed with its length as 4 bytes, big-endian):
//! - offer, by the caller's node: `"p2psip-media-v1 offer"`, Call-ID, caller AoR, callee AoR,
//!   the caller's ufrag, pwd and share;
//! - answer, by the callee's node: `"p2psip-media-v1 answer"`, the same call fields, the
//!   caller's ufrag, pwd and share, then its own ufrag, pwd and share. Binding the answer to
//!   the offer's fresh share is the replay protection: an old answer names an old share.
//!
//! Sans-IO: randomness (the ephemeral key, ECDSA nonces) comes from the `SecureRandom` the
//! driver hands in, like the rest of `identity`.

use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, ECDH_P256};
use ring::rand::SecureRandom;

use super::tunnel::{encode_fields, Direction, KeyContext, Tunnel};
use crate::identity::{KeyPair, PublicKey};

/// One side's ICE credentials and key share, as its sdpfrag carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// ICE username fragment (RFC 8445 §5.3).
    pub ufrag: String,
    /// ICE password.
    pub pwd: String,
    /// The uncompressed P-256 point (65 bytes).
    pub public: Vec<u8>,
}

/// Why a share or answer is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The randomness source failed, or a key could not be made.
    #[error("could not make an ephemeral key")]
    Generate,
    /// The signature does not verify with the key of the certificate that was proven.
    #[error("the media key's signature does not verify")]
    Signature,
    /// The other share is not a P-256 point, or agreement failed.
    #[error("the media key share is not usable")]
    BadShare,
}

/// Who the call is between and what identifies it: the fields both signatures cover.
#[derive(Debug, Clone, Copy)]
pub struct CallNames<'a> {
    /// Call-ID.
    pub call_id: &'a str,
    /// The caller's AoR.
    pub caller: &'a str,
    /// The callee's AoR.
    pub callee: &'a str,
}

const OFFER_LABEL: &[u8] = b"p2psip-media-v1 offer";
const ANSWER_LABEL: &[u8] = b"p2psip-media-v1 answer";

/// The call's fields and the offer's share: what both signatures cover.
fn call_fields<'a>(label: &'a [u8], names: &CallNames<'a>, offer: &'a Share) -> Vec<&'a [u8]> {
    vec![
        label,
        names.call_id.as_bytes(),
        names.caller.as_bytes(),
        names.callee.as_bytes(),
        offer.ufrag.as_bytes(),
        offer.pwd.as_bytes(),
        &offer.public,
    ]
}

fn offer_transcript(names: &CallNames<'_>, offer: &Share) -> Vec<u8> {
    encode_fields(&call_fields(OFFER_LABEL, names, offer))
}

fn answer_transcript(names: &CallNames<'_>, offer: &Share, answer: &Share) -> Vec<u8> {
    let mut fields = call_fields(ANSWER_LABEL, names, offer);
    fields.extend([answer.ufrag.as_bytes(), answer.pwd.as_bytes(), answer.public.as_slice()]);
    encode_fields(&fields)
}

/// This node's ephemeral ECDH key for one call: used once, then dropped (forward secrecy).
pub struct KeyShare {
    private: EphemeralPrivateKey,
    public: Vec<u8>,
}

impl std::fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyShare").finish_non_exhaustive()
    }
}

impl KeyShare {
    /// A fresh share from `rng`.
    pub fn generate(rng: &dyn SecureRandom) -> Result<KeyShare, KeyError> {
        let private = EphemeralPrivateKey::generate(&ECDH_P256, rng).map_err(|_| KeyError::Generate)?;
        let public = private.compute_public_key().map_err(|_| KeyError::Generate)?.as_ref().to_vec();
        Ok(KeyShare { private, public })
    }

    /// The public point, for the sdpfrag.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// Agrees with the far node's share and derives the call's tunnel, for the node on side
    /// `we_send` (its frames go that way).
    pub fn agree(self, theirs: &[u8], ctx: &KeyContext<'_>, we_send: Direction) -> Result<Tunnel, KeyError> {
        let peer = UnparsedPublicKey::new(&ECDH_P256, theirs);
        agreement::agree_ephemeral(self.private, &peer, |secret| Tunnel::from_secret(secret, ctx, we_send))
            .map_err(|_| KeyError::BadShare)?
            .ok_or(KeyError::BadShare)
    }
}

/// The caller's node signs its offer share.
pub fn sign_offer(
    key: &KeyPair,
    rng: &dyn SecureRandom,
    names: &CallNames<'_>,
    offer: &Share,
) -> Result<Vec<u8>, KeyError> {
    key.sign(&offer_transcript(names, offer), rng).map_err(|_| KeyError::Generate)
}

/// The callee's node checks the offer's signature with the caller's proven key.
pub fn verify_offer(caller_key: &PublicKey, names: &CallNames<'_>, offer: &Share, sig: &[u8]) -> Result<(), KeyError> {
    caller_key.verify(&offer_transcript(names, offer), sig).then_some(()).ok_or(KeyError::Signature)
}

/// The callee's node signs its answer share, over the offer's too.
pub fn sign_answer(
    key: &KeyPair,
    rng: &dyn SecureRandom,
    names: &CallNames<'_>,
    offer: &Share,
    answer: &Share,
) -> Result<Vec<u8>, KeyError> {
    key.sign(&answer_transcript(names, offer, answer), rng).map_err(|_| KeyError::Generate)
}

/// The caller's node checks the answer's signature with the callee's proven key.
pub fn verify_answer(
    callee_key: &PublicKey,
    names: &CallNames<'_>,
    offer: &Share,
    answer: &Share,
    sig: &[u8],
) -> Result<(), KeyError> {
    callee_key.verify(&answer_transcript(names, offer, answer), sig).then_some(()).ok_or(KeyError::Signature)
}

#[cfg(test)]
// Tests draw keys from the OS: nothing they check depends on the bytes.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::media::tunnel::Channel;
    use ring::rand::SystemRandom;

    fn names() -> CallNames<'static> {
        CallNames { call_id: "call-1", caller: "sip:alice@p2p.test", callee: "sip:bob@p2p.test" }
    }

    #[test]
    fn signed_shares_give_both_nodes_one_tunnel() {
        let rng = SystemRandom::new();
        let alice = KeyPair::generate(&rng).unwrap();
        let bob = KeyPair::generate(&rng).unwrap();
        let a = KeyShare::generate(&rng).unwrap();
        let b = KeyShare::generate(&rng).unwrap();
        let offer = Share { ufrag: "ua".into(), pwd: "pa".into(), public: a.public().to_vec() };
        let answer = Share { ufrag: "ub".into(), pwd: "pb".into(), public: b.public().to_vec() };
        let so = sign_offer(&alice, &rng, &names(), &offer).unwrap();
        verify_offer(&alice.public_key(), &names(), &offer, &so).unwrap();
        assert_eq!(verify_offer(&bob.public_key(), &names(), &offer, &so), Err(KeyError::Signature));
        let sa = sign_answer(&bob, &rng, &names(), &offer, &answer).unwrap();
        verify_answer(&bob.public_key(), &names(), &offer, &answer, &sa).unwrap();

        // An answer replayed against a new offer (new share) does not verify.
        let a2 = KeyShare::generate(&rng).unwrap();
        let offer2 = Share { public: a2.public().to_vec(), ..offer.clone() };
        assert_eq!(verify_answer(&bob.public_key(), &names(), &offer2, &answer, &sa), Err(KeyError::Signature));
        // Nor for another callee name.
        let other = CallNames { callee: "sip:mallory@p2p.test", ..names() };
        assert_eq!(verify_answer(&bob.public_key(), &other, &offer, &answer, &sa), Err(KeyError::Signature));

        let ctx = KeyContext {
            call_id: "call-1",
            caller: names().caller,
            callee: names().callee,
            caller_ufrag: "ua",
            callee_ufrag: "ub",
        };
        let mut ta = a.agree(&answer.public, &ctx, Direction::FromCaller).unwrap();
        let mut tb = b.agree(&offer.public, &ctx, Direction::FromCallee).unwrap();
        let ch = Channel { stream: 0, rtcp: false };
        assert_eq!(tb.open(&ta.seal(ch, b"rtp")).unwrap().1, b"rtp");
        assert_eq!(ta.open(&tb.seal(ch, b"back")).unwrap().1, b"back");
    }

    #[test]
    fn a_bad_share_is_refused() {
        let rng = SystemRandom::new();
        let a = KeyShare::generate(&rng).unwrap();
        let ctx = KeyContext { call_id: "c", caller: "a", callee: "b", caller_ufrag: "x", callee_ufrag: "y" };
        assert_eq!(a.agree(&[4u8; 65], &ctx, Direction::FromCaller).unwrap_err(), KeyError::BadShare);
    }
}
