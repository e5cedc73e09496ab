//! Reads the node's identity from its data directory, in the layout `p2psip enroll` writes
//! ([`crate::daemon::files::layout`]): the overlay's root (`identity/root.pem`), and, when
//! the node's user is enrolled, its key (`identity/key.pk8`) and chain (`identity/chain.pem`).
//!
//! A node with the root alone stores and serves records for others; with the key and chain
//! too it also publishes its own. Without a root, storage is off. (The `ca` branch brings the
//! full loader with the signed overlay configuration document; the two meet at merge.)

use std::path::Path;

use ring::rand::SystemRandom;

use super::layout;
use crate::identity::{KeyPair, LocalIdentity, TrustAnchor};

/// What the data directory holds.
pub struct IdentityFiles {
    /// The overlay's root.
    pub root: TrustAnchor,
    /// The node's own enrolled identity, when it has one.
    pub local: Option<LocalIdentity>,
}

/// Why the identity files could not be used: one line naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct IdentityFileError {
    /// The file.
    pub file: String,
    /// What is wrong with it.
    pub message: String,
}

fn read(dir: &Path, name: &str) -> Result<Option<Vec<u8>>, IdentityFileError> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(IdentityFileError { file: path.display().to_string(), message: e.to_string() }),
    }
}

/// Every `CERTIFICATE` block of a PEM file, in order.
fn certificates(dir: &Path, name: &str, pem_text: &[u8]) -> Result<Vec<Vec<u8>>, IdentityFileError> {
    let err = |message: String| IdentityFileError { file: dir.join(name).display().to_string(), message };
    let blocks = pem::parse_many(pem_text).map_err(|e| err(e.to_string()))?;
    let certs: Vec<Vec<u8>> =
        blocks.into_iter().filter(|b| b.tag() == "CERTIFICATE").map(|b| b.contents().to_vec()).collect();
    if certs.is_empty() {
        return Err(err("no CERTIFICATE in the file".into()));
    }
    Ok(certs)
}

/// Loads the identity files under `dir`, checking the chain at `unix_now`. `Ok(None)` when
/// there is no root (storage off).
pub fn load(dir: &Path, unix_now: u64) -> Result<Option<IdentityFiles>, IdentityFileError> {
    let Some(root_pem) = read(dir, layout::ROOT)? else { return Ok(None) };
    let root_der = certificates(dir, layout::ROOT, &root_pem)?.swap_remove(0);
    let root = TrustAnchor::new(root_der).map_err(|e| IdentityFileError {
        file: dir.join(layout::ROOT).display().to_string(),
        message: e.to_string(),
    })?;
    let (Some(key), Some(chain_pem)) = (read(dir, layout::KEY)?, read(dir, layout::CHAIN)?) else {
        return Ok(Some(IdentityFiles { root, local: None }));
    };
    let key_err = |message: String| IdentityFileError { file: dir.join(layout::KEY).display().to_string(), message };
    let key = KeyPair::from_pkcs8(&key, &SystemRandom::new()).map_err(|e| key_err(e.to_string()))?;
    let chain = certificates(dir, layout::CHAIN, &chain_pem)?;
    let local = LocalIdentity::new(key, chain, root.clone(), unix_now).map_err(|e| IdentityFileError {
        file: dir.join(layout::CHAIN).display().to_string(),
        message: e.to_string(),
    })?;
    Ok(Some(IdentityFiles { root, local: Some(local) }))
}

/// Writes the layout (for tests and tools that enroll through the library): the root, and
/// the key (mode 0600) and chain when given.
pub fn write(dir: &Path, root_der: &[u8], identity: Option<(&KeyPair, &[Vec<u8>])>) -> Result<(), IdentityFileError> {
    let io = |name: &str, e: std::io::Error| IdentityFileError {
        file: dir.join(name).display().to_string(),
        message: e.to_string(),
    };
    let pem_of = |der: &[u8]| pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()));
    std::fs::create_dir_all(dir.join("identity")).map_err(|e| io("identity", e))?;
    std::fs::write(dir.join(layout::ROOT), pem_of(root_der)).map_err(|e| io(layout::ROOT, e))?;
    if let Some((key, chain)) = identity {
        let chain_text: String = chain.iter().map(|c| pem_of(c)).collect();
        std::fs::write(dir.join(layout::CHAIN), chain_text).map_err(|e| io(layout::CHAIN, e))?;
        let key_path = dir.join(layout::KEY);
        std::fs::write(&key_path, key.pkcs8_der()).map_err(|e| io(layout::KEY, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| io(layout::KEY, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tests::{Fixture, T0};

    #[test]
    fn written_layout_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), T0).unwrap().is_none(), "no root: storage off");
        let mut fx = Fixture::new("example.com");
        let (key, cert) = fx.enroll("sip:alice@example.com");
        write(dir.path(), fx.ca.root_der(), Some((&key, &[cert]))).unwrap();
        let files = load(dir.path(), T0 + 10).unwrap().unwrap();
        assert_eq!(files.local.unwrap().aor.as_str(), "sip:alice@example.com");

        let other = tempfile::tempdir().unwrap();
        write(other.path(), fx.ca.root_der(), None).unwrap();
        assert!(load(other.path(), T0).unwrap().unwrap().local.is_none());
        std::fs::write(other.path().join(layout::ROOT), "garbage").unwrap();
        let err = load(other.path(), T0).err().unwrap().to_string();
        assert!(err.contains("root.pem"), "{err}");
    }
}
