//! The accounts file in the data directory (`accounts`, mode 0600): read at node start, read
//! and rewritten by `p2psip account`. The format is [`crate::proxy::accounts`]'.
//!
//! A plain text file rather than a redb database: it holds a handful of lines, is read once
//! at start, and an operator should be able to audit it with `cat`. It is replaced atomically
//! (write a temporary file, then rename), so a crash never leaves half an account.
//!
//! Only AoRs this node holds a certificate for may get accounts. When the enrolled
//! chain (`identity/chain.pem`, written by `p2psip enroll`) exists, the AoR must be the one
//! its leaf certificate names; without it, `account add` refuses unless told
//! `--without-certificate` (for tests and for nodes not enrolled yet).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::layout;
use crate::proxy::accounts::{canonical_aor, Account, AccountError, Accounts};

/// The accounts file's name inside the data directory.
pub const ACCOUNTS_FILE: &str = "accounts";

/// Why the accounts file could not be read, written or changed.
// Each variant's `#[error]` message says what it means, naming its fields.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum AccountsFileError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: AccountError,
    },
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error(
        "this node holds no certificate ({}); enroll first (`p2psip enroll`) or pass --without-certificate",
        path.display()
    )]
    NoCertificate { path: PathBuf },
    #[error("this node's certificate ({}) is for {cert}, not {aor}", path.display())]
    OtherCertificate { path: PathBuf, cert: String, aor: String },
    #[error("cannot read the certificate {}: {why}", path.display())]
    BadCertificate { path: PathBuf, why: String },
    #[error("no account for {0}")]
    NoSuchAccount(String),
}

/// The accounts file of a data directory.
pub fn accounts_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ACCOUNTS_FILE)
}

/// The accounts in `data_dir`; none when the file does not exist.
pub fn load(data_dir: &Path) -> Result<Accounts, AccountsFileError> {
    let path = accounts_path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Accounts::default()),
        Err(source) => return Err(AccountsFileError::Read { path, source }),
    };
    Accounts::parse(&text).map_err(|source| AccountsFileError::Invalid { path, source })
}

/// Writes `accounts` to `data_dir` with mode 0600, replacing the file atomically.
pub fn save(data_dir: &Path, accounts: &Accounts) -> Result<(), AccountsFileError> {
    let path = accounts_path(data_dir);
    let tmp = data_dir.join(format!(".{ACCOUNTS_FILE}.tmp"));
    let write = |p: &Path| -> std::io::Result<()> {
        std::fs::create_dir_all(data_dir)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(p)?;
        // A file left over with looser bits keeps them through `open`: set them again.
        #[cfg(unix)]
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        f.write_all(accounts.encode().as_bytes())?;
        f.sync_all()
    };
    write(&tmp).and_then(|()| std::fs::rename(&tmp, &path)).map_err(|source| AccountsFileError::Write { path, source })
}

/// The AoR the node's enrolled certificate names, or `None` when it has none.
pub fn certificate_aor(data_dir: &Path) -> Result<Option<String>, AccountsFileError> {
    let path = data_dir.join(layout::CHAIN);
    let pem = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(AccountsFileError::Read { path, source }),
    };
    let bad = |why: String| AccountsFileError::BadCertificate { path: path.clone(), why };
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).map_err(|e| bad(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
    let san = cert.subject_alternative_name().map_err(|e| bad(e.to_string()))?;
    let uri = san
        .and_then(|ext| {
            ext.value.general_names.iter().find_map(|n| match n {
                x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
                _ => None,
            })
        })
        .ok_or_else(|| bad("no URI subjectAltName".into()))?;
    let (aor, _, _) = canonical_aor(&uri).map_err(|e| bad(e.to_string()))?;
    Ok(Some(aor))
}

/// Checks that the node's enrolled certificate names `aor` (accounts only for AoRs
/// this node holds a certificate for).
pub fn check_certificate(data_dir: &Path, aor: &str) -> Result<(), AccountsFileError> {
    let (aor, _, _) = canonical_aor(aor)?;
    let path = data_dir.join(layout::CHAIN);
    match certificate_aor(data_dir)? {
        None => Err(AccountsFileError::NoCertificate { path }),
        Some(cert) if cert != aor => Err(AccountsFileError::OtherCertificate { path, cert, aor }),
        Some(_) => Ok(()),
    }
}

/// `p2psip account add`: checks the certificate (unless `without_certificate`), then adds or
/// replaces the account. Returns the canonical AoR.
pub fn add(data_dir: &Path, aor: &str, password: &str, without_certificate: bool) -> Result<String, AccountsFileError> {
    let account = Account::new(aor, password)?;
    if !without_certificate {
        check_certificate(data_dir, &account.aor)?;
    }
    let mut accounts = load(data_dir)?;
    let aor = account.aor.clone();
    accounts.insert(account);
    save(data_dir, &accounts)?;
    Ok(aor)
}

/// `p2psip account remove`.
pub fn remove(data_dir: &Path, aor: &str) -> Result<String, AccountsFileError> {
    let mut accounts = load(data_dir)?;
    let removed = accounts.remove(aor).ok_or_else(|| AccountsFileError::NoSuchAccount(aor.to_owned()))?;
    save(data_dir, &accounts)?;
    Ok(removed.aor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_list_remove_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let err = add(dir.path(), "sip:alice@p2p.test", "pw", false).unwrap_err();
        assert!(matches!(err, AccountsFileError::NoCertificate { .. }), "{err}");
        assert_eq!(add(dir.path(), "sip:alice@P2P.test", "pw", true).unwrap(), "sip:alice@p2p.test");
        add(dir.path(), "sip:bob@p2p.test", "pw2", true).unwrap();
        let accounts = load(dir.path()).unwrap();
        assert_eq!(accounts.len(), 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(accounts_path(dir.path())).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let text = std::fs::read_to_string(accounts_path(dir.path())).unwrap();
        assert!(!text.contains("pw2"));
        remove(dir.path(), "sip:alice@p2p.test").unwrap();
        assert!(matches!(remove(dir.path(), "sip:alice@p2p.test"), Err(AccountsFileError::NoSuchAccount(_))));
        assert_eq!(load(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn certificate_names_the_aor() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::URI("sip:alice@p2p.test".try_into().unwrap())];
        let cert = params.self_signed(&key).unwrap();
        std::fs::create_dir_all(dir.path().join("identity")).unwrap();
        std::fs::write(dir.path().join(layout::CHAIN), cert.pem()).unwrap();
        assert_eq!(certificate_aor(dir.path()).unwrap().as_deref(), Some("sip:alice@p2p.test"));
        add(dir.path(), "sip:alice@p2p.test", "pw", false).unwrap();
        let err = add(dir.path(), "sip:bob@p2p.test", "pw", false).unwrap_err();
        assert!(err.to_string().contains("is for sip:alice@p2p.test, not sip:bob@p2p.test"), "{err}");
    }
}
