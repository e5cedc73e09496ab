//! Certificate chain verification against the overlay's configured root (RFC 5280 §6, the
//! subset an overlay with one enrollment CA needs): each certificate's signature by the next,
//! names chaining issuer → subject, every certificate valid at the caller's Unix time, issuers
//! marked as CAs within their path length constraint, and the AoR taken from the leaf's subjectAltName URI (RFC 6940 §11.2.2).
//!
//! Time is an argument (`unix_now`, seconds): a node checks validity against the clock its
//! driver reads, and tests move it freely. Not here: revocation, name constraints, policies.

use std::collections::BTreeMap;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::key::p256_key;
use super::{Aor, IdentityError, PublicKey};

/// What a verified chain vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    /// The AoR the certificate binds.
    pub aor: Aor,
    /// Its public key.
    pub public_key: PublicKey,
    /// The leaf certificate's notAfter, Unix seconds (the earliest in the chain).
    pub not_after: u64,
}

/// The configured root certificate (DER), as the overlay configuration document names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustAnchor {
    der: Vec<u8>,
}

impl TrustAnchor {
    /// Wraps a root certificate; refuses one that does not parse or is not self-signed.
    pub fn new(der: Vec<u8>) -> Result<TrustAnchor, IdentityError> {
        let cert = parse(&der)?;
        cert.verify_signature(None).map_err(|_| IdentityError::BadSignature { depth: 0 })?;
        drop(cert);
        Ok(TrustAnchor { der })
    }

    /// The root certificate, DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The root's public key.
    pub fn public_key(&self) -> Result<PublicKey, IdentityError> {
        p256_key(parse(&self.der)?.public_key())
    }
}

/// Verifies `cert_der` through the intermediates in `chain` (leaf's issuer first; the root
/// itself may be included last or left out) up to `root`, at `unix_now`.
pub fn verify_chain(
    cert_der: &[u8],
    chain: &[Vec<u8>],
    root: &TrustAnchor,
    unix_now: u64,
) -> Result<VerifiedIdentity, IdentityError> {
    let leaf = parse(cert_der)?;
    let root_cert = parse(&root.der)?;
    let mut intermediates = Vec::with_capacity(chain.len());
    for der in chain {
        if der.as_slice() != root.der.as_slice() {
            intermediates.push(parse(der)?);
        }
    }

    let mut not_after = u64::MAX;
    let mut current = &leaf;
    for (depth, issuer) in intermediates.iter().chain(std::iter::once(&root_cert)).enumerate() {
        not_after = not_after.min(check_time(current, depth, unix_now)?);
        if current.issuer() != issuer.subject() || !issuer.is_ca() {
            return Err(IdentityError::UntrustedIssuer { depth });
        }
        // RFC 5280 §4.2.1.9: pathLenConstraint caps the intermediate CAs below this issuer;
        // `depth` of them sit between it and the leaf.
        let path_len = issuer
            .basic_constraints()
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?
            .and_then(|bc| bc.value.path_len_constraint);
        if path_len.is_some_and(|max| depth > max as usize) {
            return Err(IdentityError::UntrustedIssuer { depth });
        }
        current.verify_signature(Some(issuer.public_key())).map_err(|_| IdentityError::BadSignature { depth })?;
        current = issuer;
    }
    check_time(&root_cert, intermediates.len() + 1, unix_now)?;

    if leaf.is_ca() {
        return Err(IdentityError::NoAor);
    }
    let aor = leaf_aor(&leaf)?;
    let public_key = p256_key(leaf.public_key())?;
    Ok(VerifiedIdentity { aor, public_key, not_after })
}

/// Remembers chains already verified, keyed by SHA-256 of the leaf and chain, so a node
/// checking many records from one owner parses and verifies the chain once. Entries are kept
/// until the leaf's notAfter (validity is re-checked against `unix_now` on every hit) and at
/// most `capacity` of them; when full, the entry that expires first is dropped.
#[derive(Debug)]
pub struct VerifiedCache {
    root: TrustAnchor,
    capacity: usize,
    entries: BTreeMap<[u8; 32], (VerifiedIdentity, u64)>,
}

impl VerifiedCache {
    /// A cache of at most `capacity` verified chains under `root`.
    pub fn new(root: TrustAnchor, capacity: usize) -> VerifiedCache {
        VerifiedCache { root, capacity, entries: BTreeMap::new() }
    }

    /// The configured root.
    pub fn root(&self) -> &TrustAnchor {
        &self.root
    }

    /// [`verify_chain`], remembering a success.
    pub fn verify(
        &mut self,
        cert_der: &[u8],
        chain: &[Vec<u8>],
        unix_now: u64,
    ) -> Result<VerifiedIdentity, IdentityError> {
        let key = chain_hash(cert_der, chain);
        if let Some((identity, not_before)) = self.entries.get(&key) {
            if *not_before <= unix_now && unix_now <= identity.not_after {
                return Ok(identity.clone());
            }
        }
        let identity = verify_chain(cert_der, chain, &self.root, unix_now)?;
        if self.capacity > 0 {
            if self.entries.len() >= self.capacity {
                let soonest = self.entries.iter().min_by_key(|(_, (id, _))| id.not_after).map(|(k, _)| *k);
                if let Some(k) = soonest {
                    self.entries.remove(&k);
                }
            }
            // The chain was valid at unix_now, so it is valid from at least then.
            self.entries.insert(key, (identity.clone(), unix_now));
        }
        Ok(identity)
    }

    /// How many chains are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What a certificate says about itself, for display (no verification).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSummary {
    /// The subject's common name.
    pub subject: String,
    /// The issuer's common name.
    pub issuer: String,
    /// Validity, Unix seconds.
    pub not_before: u64,
    /// The end of its validity, Unix seconds.
    pub not_after: u64,
}

impl CertificateSummary {
    /// Reads a DER certificate's names and validity.
    pub fn of(der: &[u8]) -> Result<CertificateSummary, IdentityError> {
        let cert = parse(der)?;
        let validity = cert.validity();
        let secs = |t: i64| u64::try_from(t).unwrap_or(0);
        Ok(CertificateSummary {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_before: secs(validity.not_before.timestamp()),
            not_after: secs(validity.not_after.timestamp()),
        })
    }
}

fn chain_hash(cert_der: &[u8], chain: &[Vec<u8>]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    // Length-prefix every part so distinct chains never hash the same bytes.
    for part in std::iter::once(cert_der).chain(chain.iter().map(Vec::as_slice)) {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, IdentityError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(IdentityError::BadCertificate("trailing bytes after the certificate".into())),
        Err(e) => Err(IdentityError::BadCertificate(e.to_string())),
    }
}

/// Checks `unix_now` is inside the certificate's validity; returns its notAfter.
fn check_time(cert: &X509Certificate<'_>, depth: usize, unix_now: u64) -> Result<u64, IdentityError> {
    let validity = cert.validity();
    let not_before = validity.not_before.timestamp();
    let not_after = validity.not_after.timestamp();
    let now = i128::from(unix_now);
    if now < i128::from(not_before) || now > i128::from(not_after) {
        return Err(IdentityError::NotValidAt { depth, unix_now, not_before, not_after });
    }
    Ok(u64::try_from(not_after).unwrap_or(0))
}

/// The one `sip:` URI in the leaf's subjectAltName.
fn leaf_aor(leaf: &X509Certificate<'_>) -> Result<Aor, IdentityError> {
    let san = leaf
        .subject_alternative_name()
        .map_err(|e| IdentityError::BadCertificate(e.to_string()))?
        .ok_or(IdentityError::NoAor)?;
    let mut aors = san.value.general_names.iter().filter_map(|g| match g {
        GeneralName::URI(uri) => Some(*uri),
        _ => None,
    });
    let first = aors.next().ok_or(IdentityError::NoAor)?;
    if aors.next().is_some() {
        // One certificate, one name: a chain vouching for two AoRs is ambiguous.
        return Err(IdentityError::NoAor);
    }
    Aor::parse(first)
}
