//! The enrollment CA's pure functions: a root for the overlay's domain, PKCS#10 requests
//! (RFC 2986) for an AoR, and certificates issued from them (RFC 5280 profile: the AoR as a
//! subjectAltName URI, as RFC 6940 §11.2.2 / RFC 5922 §7.1 put SIP identities).
//!
//! The CA is contacted once, at enrollment (SOSIMPLE): after that every node verifies chains up
//! to the root on its own ([`crate::identity::verify`]). "One name, one holder" is a function over an
//! [`IssuedNames`] registry the caller keeps: the same AoR for another key is refused, the same
//! key renews. Validity times are Unix seconds chosen by the caller; nothing here reads a clock
//! or the OS's random source.
//!
//! Not here: the HTTPS endpoint, rate limits, e-mail ownership checks, the registry's database.

use std::collections::BTreeMap;

use ring::rand::SecureRandom;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::identity::key::{p256_key, RcgenSigner};
use crate::identity::{Aor, IdentityError, KeyPair, PublicKey, TrustAnchor};

/// Who holds each issued name. A `BTreeMap` does for tests and the simulator; the CA server
/// will keep it in its database.
pub trait IssuedNames {
    /// The key the AoR was issued to, if any.
    fn holder(&self, aor: &Aor) -> Option<&PublicKey>;
    /// Records that `aor` is now held by `key`.
    fn bind(&mut self, aor: Aor, key: PublicKey);
}

impl IssuedNames for BTreeMap<Aor, PublicKey> {
    fn holder(&self, aor: &Aor) -> Option<&PublicKey> {
        self.get(aor)
    }
    fn bind(&mut self, aor: Aor, key: PublicKey) {
        self.insert(aor, key);
    }
}

/// Whether an issued certificate was a first enrollment or a renewal for the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enrollment {
    /// The name had no holder: a first enrollment.
    New,
    /// The name's holder asked again with its key: a renewal.
    Renewal,
}

/// A certificate the CA issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate issued, DER.
    pub certificate_der: Vec<u8>,
    /// Whether it was a first enrollment or a renewal.
    pub enrollment: Enrollment,
}

/// The enrollment CA: the overlay's domain, the root key and the self-signed root certificate.
#[derive(Debug)]
pub struct EnrollmentCa {
    domain: String,
    key: KeyPair,
    root_der: Vec<u8>,
}

impl EnrollmentCa {
    /// Creates the self-signed root certificate for `domain`, valid `[not_before, not_after]`
    /// (Unix seconds), with `key` as the root key.
    pub fn create(
        domain: &str,
        key: KeyPair,
        not_before: u64,
        not_after: u64,
        rng: &dyn SecureRandom,
    ) -> Result<EnrollmentCa, IdentityError> {
        let domain = domain.to_ascii_lowercase();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = name(&format!("p2psip enrollment CA for {domain}"));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, not_before, not_after)?;
        params.serial_number = Some(serial(&key.public_key(), not_before, not_after));
        let signer = RcgenSigner { key: &key, rng };
        let root = params.self_signed(&signer).map_err(rcgen_error)?;
        let root_der = root.der().to_vec();
        Ok(EnrollmentCa { domain, key, root_der })
    }

    /// Reassembles a CA from its stored parts (the root certificate must be for `key`).
    pub fn from_parts(domain: &str, key: KeyPair, root_der: Vec<u8>) -> Result<EnrollmentCa, IdentityError> {
        let anchor = TrustAnchor::new(root_der.clone())?;
        if anchor.public_key()? != key.public_key() {
            return Err(IdentityError::BadKey("the root certificate is not for this key".into()));
        }
        Ok(EnrollmentCa { domain: domain.to_ascii_lowercase(), key, root_der })
    }

    /// The overlay domain this CA names users in.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The root key (for storing it; it never leaves the CA).
    pub fn key(&self) -> &KeyPair {
        &self.key
    }

    /// The self-signed root certificate, DER.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// The root as the trust anchor nodes verify against.
    pub fn trust_anchor(&self) -> Result<TrustAnchor, IdentityError> {
        TrustAnchor::new(self.root_der.clone())
    }

    /// Issues a certificate binding `aor` to the key in `csr_der`, valid
    /// `[not_before, not_after]`. Refuses a request whose self-signature does not verify, whose
    /// subjectAltName names another AoR, an AoR outside this CA's domain, and an AoR already
    /// held by another key ([`IdentityError::NameTaken`]). The same key renews.
    pub fn issue(
        &self,
        registry: &mut impl IssuedNames,
        csr_der: &[u8],
        aor: &Aor,
        not_before: u64,
        not_after: u64,
        rng: &dyn SecureRandom,
    ) -> Result<Issued, IdentityError> {
        if aor.domain() != self.domain {
            return Err(IdentityError::WrongDomain { aor: aor.clone(), domain: self.domain.clone() });
        }
        let (subject_key, requested) = read_csr(csr_der)?;
        if let Some(requested) = requested {
            if &requested != aor {
                return Err(IdentityError::RequestNamesOther { requested, aor: aor.clone() });
            }
        }
        let enrollment = match registry.holder(aor) {
            None => Enrollment::New,
            Some(holder) if *holder == subject_key => Enrollment::Renewal,
            Some(_) => return Err(IdentityError::NameTaken(aor.clone())),
        };

        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = name(aor.as_str());
        params.subject_alt_names = vec![aor_san(aor)?];
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, not_before, not_after)?;
        params.serial_number = Some(serial(&subject_key, not_before, not_after));

        let signer = RcgenSigner { key: &self.key, rng };
        let issuer = rcgen::Issuer::from_ca_cert_der(&self.root_der.clone().into(), signer).map_err(rcgen_error)?;
        let subject = SubjectKey(subject_key.clone());
        let cert = params.signed_by(&subject, &issuer).map_err(rcgen_error)?;
        registry.bind(aor.clone(), subject_key);
        Ok(Issued { certificate_der: cert.der().to_vec(), enrollment })
    }
}

impl EnrollmentCa {
    /// Issues the CA's own TLS server certificate (RFC 5280 profile for TLS: serverAuth, the
    /// names as dNSName or iPAddress subjectAltNames), for `key`, valid
    /// `[not_before, not_after]`. Enrolling clients verify it against the pinned root.
    pub fn issue_tls_server(
        &self,
        key: &KeyPair,
        hosts: &[String],
        not_before: u64,
        not_after: u64,
        rng: &dyn SecureRandom,
    ) -> Result<Vec<u8>, IdentityError> {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = name(&format!("p2psip enrollment server for {}", self.domain));
        params.subject_alt_names = hosts
            .iter()
            .map(|h| match h.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(rcgen::SanType::IpAddress(ip)),
                Err(_) => h
                    .as_str()
                    .try_into()
                    .map(rcgen::SanType::DnsName)
                    .map_err(|_| IdentityError::Certificate(format!("{h:?} is not a host name"))),
            })
            .collect::<Result<_, _>>()?;
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, not_before, not_after)?;
        params.serial_number = Some(serial(&key.public_key(), not_before, not_after.wrapping_add(1)));
        let signer = RcgenSigner { key: &self.key, rng };
        let issuer = rcgen::Issuer::from_ca_cert_der(&self.root_der.clone().into(), signer).map_err(rcgen_error)?;
        let subject = SubjectKey(key.public_key());
        let cert = params.signed_by(&subject, &issuer).map_err(rcgen_error)?;
        Ok(cert.der().to_vec())
    }
}

/// The subjectAltName URI that binds a certificate or request to `aor`.
fn aor_san(aor: &Aor) -> Result<rcgen::SanType, IdentityError> {
    let uri = aor
        .as_str()
        .try_into()
        .map_err(|_| IdentityError::BadAor { aor: aor.to_string(), why: "not an IA5 string" })?;
    Ok(rcgen::SanType::URI(uri))
}

/// Builds a PKCS#10 request for `aor`, signed by `key` (subjectAltName URI = the AoR).
pub fn build_csr(aor: &Aor, key: &KeyPair, rng: &dyn SecureRandom) -> Result<Vec<u8>, IdentityError> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = name(aor.as_str());
    params.subject_alt_names = vec![aor_san(aor)?];
    let signer = RcgenSigner { key, rng };
    let csr = params.serialize_request(&signer).map_err(rcgen_error)?;
    Ok(csr.der().to_vec())
}

/// Parses and verifies a request: the subject's P-256 key and the AoR it asks for, if any.
pub(crate) fn read_csr(csr_der: &[u8]) -> Result<(PublicKey, Option<Aor>), IdentityError> {
    let (_, csr) = X509CertificationRequest::from_der(csr_der).map_err(|e| IdentityError::BadRequest(e.to_string()))?;
    csr.verify_signature()
        .map_err(|_| IdentityError::BadRequest("the request's self-signature does not verify".into()))?;
    let key = p256_key(&csr.certification_request_info.subject_pki)?;
    let mut requested = None;
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for general in &san.general_names {
                if let GeneralName::URI(uri) = general {
                    requested = Some(Aor::parse(uri)?);
                }
            }
        }
    }
    Ok((key, requested))
}

/// The subject's public key, for rcgen (which only needs the point and the algorithm).
struct SubjectKey(PublicKey);

impl rcgen::PublicKeyData for SubjectKey {
    fn der_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

fn name(common_name: &str) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, common_name);
    dn
}

fn set_validity(params: &mut rcgen::CertificateParams, not_before: u64, not_after: u64) -> Result<(), IdentityError> {
    if not_before >= not_after {
        return Err(IdentityError::BadValidity { not_before, not_after });
    }
    let at = |t: u64| {
        i64::try_from(t)
            .ok()
            .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
            .ok_or(IdentityError::BadValidity { not_before, not_after })
    };
    params.not_before = at(not_before)?;
    params.not_after = at(not_after)?;
    Ok(())
}

/// RFC 5280 §4.1.2.2: unique per CA, at most 20 octets, positive. Derived from the key and the
/// validity so a renewal gets a new serial without the CA needing randomness or a counter.
fn serial(key: &PublicKey, not_before: u64, not_after: u64) -> rcgen::SerialNumber {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(key.as_bytes());
    ctx.update(&not_before.to_be_bytes());
    ctx.update(&not_after.to_be_bytes());
    let digest = ctx.finish();
    let mut bytes = digest.as_ref()[..16].to_vec();
    if let Some(first) = bytes.first_mut() {
        *first &= 0x7f;
        *first |= 0x01 << 6; // non-zero leading octet keeps the DER length fixed
    }
    rcgen::SerialNumber::from_slice(&bytes)
}

fn rcgen_error(e: rcgen::Error) -> IdentityError {
    IdentityError::Certificate(e.to_string())
}
