//! PEM (RFC 7468) for the certificate files a data directory keeps and the enrollment
//! endpoint returns: `CERTIFICATE` blocks, each the DER of one certificate.

use super::IdentityError;

const CERTIFICATE: &str = "CERTIFICATE";

/// Encodes DER certificates as consecutive `CERTIFICATE` blocks, in order.
pub fn certificates_to_pem(ders: &[Vec<u8>]) -> String {
    let blocks: Vec<::pem::Pem> = ders.iter().map(|der| ::pem::Pem::new(CERTIFICATE, der.clone())).collect();
    ::pem::encode_many(&blocks)
}

/// Decodes every `CERTIFICATE` block, in order. Text between blocks is ignored; a block of
/// another type, an undecodable block or no block at all is an error.
pub fn certificates_from_pem(text: &[u8]) -> Result<Vec<Vec<u8>>, IdentityError> {
    let blocks = ::pem::parse_many(text).map_err(|e| IdentityError::BadCertificate(format!("PEM: {e}")))?;
    if blocks.is_empty() {
        return Err(IdentityError::BadCertificate("no PEM CERTIFICATE block".into()));
    }
    blocks
        .into_iter()
        .map(|b| match b.tag() {
            CERTIFICATE => Ok(b.into_contents()),
            other => Err(IdentityError::BadCertificate(format!("PEM block {other:?} is not a CERTIFICATE"))),
        })
        .collect()
}

/// The SHA-256 fingerprint of a DER certificate, as colon-separated upper-case hex (the form
/// `openssl x509 -fingerprint -sha256` prints).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// Parses a SHA-256 fingerprint written with or without colons, any case, into its 32 bytes.
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let ders = vec![vec![1u8, 2, 3], vec![4u8; 100]];
        let text = certificates_to_pem(&ders);
        assert_eq!(certificates_from_pem(text.as_bytes()).unwrap(), ders);
        assert!(certificates_from_pem(b"").is_err());
        assert!(certificates_from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").is_err());
    }

    #[test]
    fn fingerprints_parse_back() {
        let fp = fingerprint(b"root");
        assert_eq!(fp.len(), 32 * 3 - 1);
        let bytes = parse_fingerprint(&fp).unwrap();
        assert_eq!(&bytes[..], ring::digest::digest(&ring::digest::SHA256, b"root").as_ref());
        assert_eq!(parse_fingerprint(&fp.replace(':', "").to_lowercase()), Some(bytes));
        assert_eq!(parse_fingerprint("AB:CD"), None);
        assert_eq!(parse_fingerprint(&"zz".repeat(32)), None);
    }
}
