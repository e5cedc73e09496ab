//! A node's enrolled identity in its data directory (`daemon::files::layout`): written once by
//! `p2psip enroll`, read by `p2psip node` at start. Everything read is verified again: the
//! chain against the stored root at the current time, the key against the certificate, and
//! the configuration document's signature against the root.

use std::path::{Path, PathBuf};

use ring::rand::SecureRandom;

use super::layout;
use crate::daemon::ca::files::{create_dir, read_file, write_file, write_private, CaError};
use crate::encoding::{hex, unhex};
use crate::enrollment::config_doc::{ConfigDoc, ConfigDocError};
use crate::identity::pem::{certificates_from_pem, certificates_to_pem};
use crate::identity::{CertificateSummary, IdentityError, KeyPair, LocalIdentity, TrustAnchor};

/// What a node keeps from enrollment, verified.
#[derive(Debug)]
pub struct Enrolled {
    /// The key, chain and root.
    pub identity: LocalIdentity,
    /// The overlay's signed configuration document.
    pub config: ConfigDoc,
    /// The secret-mode replica salt, when the overlay uses one.
    pub replica_secret: Option<Vec<u8>>,
}

impl Enrolled {
    /// The leaf certificate's issuer, as a distinguished name string.
    pub fn issuer(&self) -> String {
        self.identity
            .chain
            .first()
            .and_then(|leaf| CertificateSummary::of(leaf).ok())
            .map(|s| s.issuer)
            .unwrap_or_default()
    }
}

/// Why the data directory's enrollment could not be loaded or written.
// Each variant's `#[error]` message says what it means, naming its fields.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error(transparent)]
    Files(#[from] CaError),
    #[error("{}: {source}", path.display())]
    Identity { path: PathBuf, source: IdentityError },
    #[error("{}: {source}", path.display())]
    ConfigDoc { path: PathBuf, source: ConfigDocError },
}

/// Reads and verifies the enrolled identity in `dir` at `unix_now`. `Ok(None)` when the node
/// was never enrolled (no key file); an error when the files are there but do not verify.
pub fn load(dir: &Path, unix_now: u64, rng: &dyn SecureRandom) -> Result<Option<Enrolled>, DataDirError> {
    let key_path = dir.join(layout::KEY);
    if !key_path.exists() || !dir.join(layout::CHAIN).exists() {
        return Ok(None);
    }
    let identity_err = |file: &str| {
        let path = dir.join(file);
        move |source| DataDirError::Identity { path, source }
    };
    let key = KeyPair::from_pkcs8(&read_file(&key_path)?, rng).map_err(identity_err(layout::KEY))?;
    let chain = certificates_from_pem(&read_file(&dir.join(layout::CHAIN))?).map_err(identity_err(layout::CHAIN))?;
    let root = certificates_from_pem(&read_file(&dir.join(layout::ROOT))?)
        .and_then(|mut roots| roots.pop().ok_or(IdentityError::BadCertificate("no certificate".into())))
        .and_then(TrustAnchor::new)
        .map_err(identity_err(layout::ROOT))?;
    let doc_path = dir.join(layout::CONFIG_DOC);
    let config = ConfigDoc::verify(&read_file(&doc_path)?, &root, unix_now)
        .map_err(|source| DataDirError::ConfigDoc { path: doc_path.clone(), source })?;
    let identity = LocalIdentity::new(key, chain, root, unix_now).map_err(identity_err(layout::CHAIN))?;
    let secret_path = dir.join(layout::REPLICA_SECRET);
    let replica_secret = match secret_path.exists() {
        true => {
            let text = String::from_utf8_lossy(&read_file(&secret_path)?).trim().to_owned();
            let bad = || DataDirError::ConfigDoc { path: secret_path.clone(), source: ConfigDocError::WrongSecret };
            let secret = unhex(&text).ok_or_else(bad)?;
            config.replicas.numbers(Some(&secret)).map_err(|_| bad())?;
            Some(secret)
        }
        false => None,
    };
    Ok(Some(Enrolled { identity, config, replica_secret }))
}

/// The node's key: the one in `dir` if there is one (so enrolling again renews with the same
/// key), else a new one written with mode 0600. `true` when it was just made.
pub fn key_or_generate(dir: &Path, rng: &dyn SecureRandom) -> Result<(KeyPair, bool), DataDirError> {
    let path = dir.join(layout::KEY);
    if path.exists() {
        let key = KeyPair::from_pkcs8(&read_file(&path)?, rng)
            .map_err(|source| DataDirError::Identity { path: path.clone(), source })?;
        return Ok((key, false));
    }
    let key = KeyPair::generate(rng).map_err(|source| DataDirError::Identity { path: path.clone(), source })?;
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    write_private(&path, key.pkcs8_der())?;
    Ok((key, true))
}

/// Stores what enrollment returned (already verified by the caller through
/// [`LocalIdentity::new`] and [`ConfigDoc::verify`]).
pub fn save(
    dir: &Path,
    identity: &LocalIdentity,
    config_doc: &[u8],
    replica_secret: Option<&[u8]>,
) -> Result<(), DataDirError> {
    let chain_path = dir.join(layout::CHAIN);
    if let Some(parent) = chain_path.parent() {
        create_dir(parent)?;
    }
    write_file(&chain_path, certificates_to_pem(&identity.chain).as_bytes())?;
    write_file(&dir.join(layout::ROOT), certificates_to_pem(&[identity.root.der().to_vec()]).as_bytes())?;
    write_file(&dir.join(layout::CONFIG_DOC), config_doc)?;
    match replica_secret {
        Some(secret) => write_private(&dir.join(layout::REPLICA_SECRET), hex(secret).as_bytes())?,
        None => {
            let _ = std::fs::remove_file(dir.join(layout::REPLICA_SECRET));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ring::rand::SystemRandom;

    use super::*;
    use crate::enrollment::{build_csr, EnrollmentCa};
    use crate::identity::Aor;

    const NOW: u64 = 1_800_000_000;

    /// Enrolls alice into `dir` by hand (what `p2psip enroll` does over HTTPS).
    fn enroll_into(dir: &Path, rng: &SystemRandom) -> EnrollmentCa {
        let ca =
            EnrollmentCa::create("example.com", KeyPair::generate(rng).unwrap(), NOW - 10, NOW + 86_400, rng).unwrap();
        let (key, new) = key_or_generate(dir, rng).unwrap();
        assert!(new);
        let aor = Aor::parse("sip:alice@example.com").unwrap();
        let csr = build_csr(&aor, &key, rng).unwrap();
        let cert = ca.issue(&mut BTreeMap::new(), &csr, &aor, NOW - 10, NOW + 3600, rng).unwrap().certificate_der;
        let identity =
            LocalIdentity::new(key, vec![cert, ca.root_der().to_vec()], ca.trust_anchor().unwrap(), NOW).unwrap();
        let doc = ConfigDoc::new("example.com", ca.root_der(), NOW - 10, NOW + 3600).sign(ca.key(), rng).unwrap();
        save(dir, &identity, &doc, None).unwrap();
        ca
    }

    #[test]
    fn loads_what_enrollment_saved_and_nothing_when_not_enrolled() {
        let rng = SystemRandom::new();
        let dir = tempfile::TempDir::new().unwrap();
        assert!(load(dir.path(), NOW, &rng).unwrap().is_none());
        enroll_into(dir.path(), &rng);
        let enrolled = load(dir.path(), NOW, &rng).unwrap().unwrap();
        assert_eq!(enrolled.identity.aor.as_str(), "sip:alice@example.com");
        assert!(enrolled.issuer().contains("example.com"), "{}", enrolled.issuer());
        assert_eq!(enrolled.config.sequence, 1);
        let (again, new) = key_or_generate(dir.path(), &rng).unwrap();
        assert!(!new, "an existing key is reused");
        assert_eq!(again.public_key(), enrolled.identity.key.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(layout::KEY)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Expired by the time the node starts: refused.
        assert!(load(dir.path(), NOW + 3601, &rng).is_err());
    }

    #[test]
    fn refuses_a_tampered_document_or_another_root() {
        let rng = SystemRandom::new();
        let dir = tempfile::TempDir::new().unwrap();
        enroll_into(dir.path(), &rng);
        let doc_path = dir.path().join(layout::CONFIG_DOC);
        let original = std::fs::read(&doc_path).unwrap();
        let tampered = String::from_utf8(original.clone()).unwrap().replace("\\\"sequence\\\":1", "\\\"sequence\\\":2");
        assert_ne!(tampered.as_bytes(), &original[..]);
        std::fs::write(&doc_path, tampered).unwrap();
        let err = load(dir.path(), NOW, &rng).unwrap_err();
        assert!(matches!(err, DataDirError::ConfigDoc { source: ConfigDocError::BadSignature, .. }), "{err}");
        std::fs::write(&doc_path, &original).unwrap();
        assert!(load(dir.path(), NOW, &rng).is_ok());

        // A root from another CA: the stored chain and document no longer check.
        let other = tempfile::TempDir::new().unwrap();
        enroll_into(other.path(), &rng);
        std::fs::copy(other.path().join(layout::ROOT), dir.path().join(layout::ROOT)).unwrap();
        assert!(load(dir.path(), NOW, &rng).is_err());
    }
}
