//! Enrollment and chain verification, end to end on fixed Unix times.
// Tests sign with the OS's randomness: nothing they check depends on its bytes.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;

use ring::rand::SystemRandom;

use super::*;
use crate::enrollment::{build_csr, Enrollment, EnrollmentCa, Issued};

/// 2026-01-01T00:00:00Z.
pub(crate) const T0: u64 = 1_767_225_600;
pub(crate) const DAY: u64 = 86_400;

/// A root CA with helpers that enroll users under it; the OS's randomness signs (tests may use
/// it: what they check does not depend on the signatures' random bytes).
pub(crate) struct Fixture {
    pub rng: SystemRandom,
    pub ca: EnrollmentCa,
    pub names: BTreeMap<Aor, PublicKey>,
}

impl Fixture {
    pub(crate) fn new(domain: &str) -> Fixture {
        let rng = SystemRandom::new();
        let root_key = KeyPair::generate(&rng).unwrap();
        let ca = EnrollmentCa::create(domain, root_key, T0, T0 + 3650 * DAY, &rng).unwrap();
        Fixture { rng, ca, names: BTreeMap::new() }
    }

    /// The OS's randomness, shared, for a [`super::Signer`].
    pub(crate) fn shared_rng(&self) -> super::SharedRandom {
        std::sync::Arc::new(SystemRandom::new())
    }

    /// Enrolls `aor` with a fresh key, certificate valid for a year from T0.
    pub(crate) fn enroll(&mut self, aor: &str) -> (KeyPair, Vec<u8>) {
        let key = KeyPair::generate(&self.rng).unwrap();
        let cert = self.enroll_key(aor, &key, T0, T0 + 365 * DAY).unwrap().certificate_der;
        (key, cert)
    }

    pub(crate) fn enroll_key(&mut self, aor: &str, key: &KeyPair, nb: u64, na: u64) -> Result<Issued, IdentityError> {
        let aor = Aor::parse(aor).unwrap();
        let csr = build_csr(&aor, key, &self.rng).unwrap();
        self.ca.issue(&mut self.names, &csr, &aor, nb, na, &self.rng)
    }

    pub(crate) fn anchor(&self) -> TrustAnchor {
        self.ca.trust_anchor().unwrap()
    }
}

#[test]
fn issued_certificate_verifies_to_the_root() {
    let mut fx = Fixture::new("example.com");
    let (key, cert) = fx.enroll("sip:alice@Example.com");
    let id = verify_chain(&cert, &[], &fx.anchor(), T0 + DAY).unwrap();
    assert_eq!(id.aor.as_str(), "sip:alice@example.com");
    assert_eq!(id.public_key, key.public_key());
    assert_eq!(id.not_after, T0 + 365 * DAY);
    // The root may also be passed along in the chain.
    verify_chain(&cert, &[fx.ca.root_der().to_vec()], &fx.anchor(), T0 + DAY).unwrap();
}

#[test]
fn same_key_renews_other_key_is_refused_with_a_clear_message() {
    let mut fx = Fixture::new("example.com");
    let key = KeyPair::generate(&fx.rng).unwrap();
    let first = fx.enroll_key("sip:alice@example.com", &key, T0, T0 + DAY).unwrap();
    assert_eq!(first.enrollment, Enrollment::New);
    let renewed = fx.enroll_key("sip:alice@example.com", &key, T0 + DAY, T0 + 2 * DAY).unwrap();
    assert_eq!(renewed.enrollment, Enrollment::Renewal);
    assert_ne!(first.certificate_der, renewed.certificate_der);

    let other = KeyPair::generate(&fx.rng).unwrap();
    let err = fx.enroll_key("sip:alice@example.com", &other, T0, T0 + DAY).unwrap_err();
    assert_eq!(err, IdentityError::NameTaken(Aor::parse("sip:alice@example.com").unwrap()));
    assert_eq!(
        err.to_string(),
        "sip:alice@example.com is already enrolled with another key; only its holder may renew it"
    );
    assert_eq!(fx.names.len(), 1, "the refused key was not recorded");
}

#[test]
fn ca_refuses_other_domains_and_mismatched_requests() {
    let mut fx = Fixture::new("example.com");
    let key = KeyPair::generate(&fx.rng).unwrap();
    assert!(matches!(
        fx.enroll_key("sip:alice@example.org", &key, T0, T0 + DAY),
        Err(IdentityError::WrongDomain { .. })
    ));
    let csr = build_csr(&Aor::parse("sip:mallory@example.com").unwrap(), &key, &fx.rng).unwrap();
    let alice = Aor::parse("sip:alice@example.com").unwrap();
    assert!(matches!(
        fx.ca.issue(&mut fx.names, &csr, &alice, T0, T0 + DAY, &fx.rng),
        Err(IdentityError::RequestNamesOther { .. })
    ));
    let mut tampered = csr.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(fx.ca.issue(&mut fx.names, &tampered, &alice, T0, T0 + DAY, &fx.rng).is_err());
    assert!(matches!(
        fx.enroll_key("sip:alice@example.com", &key, T0 + DAY, T0),
        Err(IdentityError::BadValidity { .. })
    ));
    assert!(fx.names.is_empty());
}

#[test]
fn expired_and_not_yet_valid_certificates_are_refused() {
    let mut fx = Fixture::new("example.com");
    let (_, cert) = fx.enroll("sip:alice@example.com");
    let anchor = fx.anchor();
    assert!(matches!(
        verify_chain(&cert, &[], &anchor, T0 + 366 * DAY),
        Err(IdentityError::NotValidAt { depth: 0, .. })
    ));
    assert!(matches!(verify_chain(&cert, &[], &anchor, T0 - 1), Err(IdentityError::NotValidAt { .. })));
}

#[test]
fn certificate_from_another_ca_is_refused() {
    let mut ours = Fixture::new("example.com");
    let mut theirs = Fixture::new("example.com");
    let (_, cert) = theirs.enroll("sip:alice@example.com");
    let err = verify_chain(&cert, &[], &ours.anchor(), T0 + DAY).unwrap_err();
    // Same subject name on both roots, so the issuer-name check passes and the signature fails.
    assert_eq!(err, IdentityError::BadSignature { depth: 0 });
    let (_, good) = ours.enroll("sip:bob@example.com");
    assert!(verify_chain(&good, &[], &theirs.anchor(), T0 + DAY).is_err());
}

#[test]
fn a_leaf_cannot_act_as_an_issuer() {
    let mut fx = Fixture::new("example.com");
    let (_, cert) = fx.enroll("sip:alice@example.com");
    // A leaf passed as an intermediate is not a CA, and does not name itself as issuer.
    let (_, other) = fx.enroll("sip:bob@example.com");
    assert!(matches!(
        verify_chain(&cert, &[other], &fx.anchor(), T0 + DAY),
        Err(IdentityError::UntrustedIssuer { depth: 0 })
    ));
    // The root itself is not an identity: a CA certificate names no AoR.
    assert_eq!(verify_chain(fx.ca.root_der(), &[], &fx.anchor(), T0 + DAY).unwrap_err(), IdentityError::NoAor);
}

#[test]
fn garbage_never_panics() {
    let fx = Fixture::new("example.com");
    for bytes in [&b""[..], b"\x30", b"\x30\x82\xff\xff", b"not DER at all"] {
        assert!(verify_chain(bytes, &[], &fx.anchor(), T0).is_err());
        assert!(TrustAnchor::new(bytes.to_vec()).is_err());
    }
}

#[test]
fn cache_remembers_success_and_rechecks_time() {
    let mut fx = Fixture::new("example.com");
    let (_, cert) = fx.enroll("sip:alice@example.com");
    let mut cache = VerifiedCache::new(fx.anchor(), 2);
    cache.verify(&cert, &[], T0 + DAY).unwrap();
    cache.verify(&cert, &[], T0 + 2 * DAY).unwrap();
    assert_eq!(cache.len(), 1);
    assert!(cache.verify(&cert, &[], T0 + 400 * DAY).is_err());
}

#[test]
fn ca_reassembles_from_parts() {
    let fx = Fixture::new("example.com");
    let key = KeyPair::from_pkcs8(fx.ca.key().pkcs8_der(), &fx.rng).unwrap();
    let again = EnrollmentCa::from_parts("example.com", key, fx.ca.root_der().to_vec()).unwrap();
    assert_eq!(again.root_der(), fx.ca.root_der());
    let stranger = KeyPair::generate(&fx.rng).unwrap();
    assert!(EnrollmentCa::from_parts("example.com", stranger, fx.ca.root_der().to_vec()).is_err());
}

/// A root with no path length limit, an intermediate under it, and a leaf for `aor` under that.
fn chain_with_intermediate(rng: &SystemRandom, root_path_len: Option<u8>, aor: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    use super::key::RcgenSigner;
    let ca_params = |cn: &str, path_len: Option<u8>| {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.is_ca = rcgen::IsCa::Ca(match path_len {
            Some(n) => rcgen::BasicConstraints::Constrained(n),
            None => rcgen::BasicConstraints::Unconstrained,
        });
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        p.not_before = time::OffsetDateTime::from_unix_timestamp(T0 as i64).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp((T0 + 3650 * DAY) as i64).unwrap();
        p
    };
    let root_key = KeyPair::generate(rng).unwrap();
    let root_params = ca_params("test root", root_path_len);
    let root = root_params.self_signed(&RcgenSigner { key: &root_key, rng }).unwrap();
    let root_issuer = rcgen::Issuer::new(root_params, RcgenSigner { key: &root_key, rng });

    let mid_key = KeyPair::generate(rng).unwrap();
    let mid_params = ca_params("test intermediate", None);
    let mid = mid_params.signed_by(&RcgenSigner { key: &mid_key, rng }, &root_issuer).unwrap();
    let mid_issuer = rcgen::Issuer::new(mid_params, RcgenSigner { key: &mid_key, rng });

    let leaf_key = KeyPair::generate(rng).unwrap();
    let mut leaf_params = ca_params(aor, None);
    leaf_params.is_ca = rcgen::IsCa::ExplicitNoCa;
    leaf_params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    leaf_params.subject_alt_names = vec![rcgen::SanType::URI(aor.try_into().unwrap())];
    let leaf = leaf_params.signed_by(&RcgenSigner { key: &leaf_key, rng }, &mid_issuer).unwrap();
    (root.der().to_vec(), mid.der().to_vec(), leaf.der().to_vec())
}

#[test]
fn chains_through_an_intermediate_within_the_path_length() {
    let rng = SystemRandom::new();
    let (root, mid, leaf) = chain_with_intermediate(&rng, None, "sip:carol@example.com");
    let anchor = TrustAnchor::new(root.clone()).unwrap();
    let id = verify_chain(&leaf, std::slice::from_ref(&mid), &anchor, T0 + DAY).unwrap();
    assert_eq!(id.aor.as_str(), "sip:carol@example.com");
    verify_chain(&leaf, &[mid, root], &anchor, T0 + DAY).unwrap();
    // Without the intermediate the leaf's issuer is not the root.
    assert_eq!(verify_chain(&leaf, &[], &anchor, T0 + DAY).unwrap_err(), IdentityError::UntrustedIssuer { depth: 0 });
}

#[test]
fn a_root_with_path_length_zero_refuses_intermediates() {
    // The enrollment CA's own root is pathLen 0: it signs leaves only.
    let rng = SystemRandom::new();
    let (root, mid, leaf) = chain_with_intermediate(&rng, Some(0), "sip:carol@example.com");
    let anchor = TrustAnchor::new(root).unwrap();
    assert_eq!(
        verify_chain(&leaf, &[mid], &anchor, T0 + DAY).unwrap_err(),
        IdentityError::UntrustedIssuer { depth: 1 }
    );
}

#[test]
fn local_identity_checks_the_chain_and_the_key() {
    let mut fx = Fixture::new("example.com");
    let (key, cert) = fx.enroll("sip:alice@example.com");
    let id = LocalIdentity::new(key, vec![cert.clone()], fx.anchor(), T0 + DAY).unwrap();
    assert_eq!(id.aor.as_str(), "sip:alice@example.com");
    assert_eq!(id.not_after, T0 + 365 * DAY);

    let other = KeyPair::generate(&fx.rng).unwrap();
    let err = LocalIdentity::new(other, vec![cert.clone()], fx.anchor(), T0 + DAY).unwrap_err();
    assert!(matches!(err, IdentityError::BadKey(_)), "{err}");
    let (key, _) = fx.enroll("sip:bob@example.com");
    assert!(LocalIdentity::new(key, vec![], fx.anchor(), T0 + DAY).is_err());
}
