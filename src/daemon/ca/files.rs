//! The enrollment CA's directory (`p2psip ca init --dir DIR`): what `ca init` writes, what
//! `ca serve` reads, the database of issued names, and the outbox of verification mails.
//!
//! ```text
//! DIR/root-key.pk8          the root's private key, PKCS#8 DER, mode 0600
//! DIR/root.pem              the self-signed root certificate
//! DIR/overlay-config.json   the signed overlay configuration document (enrollment::config_doc)
//! DIR/replica-secret        secret replica mode only: 32 bytes as hex, mode 0600
//! DIR/ca.json               the CA's own settings: domain, verify mode, certificate lifetime
//! DIR/issued.redb           who holds each issued name (redb), survives restart
//! DIR/outbox/               one file per verification mail (--verify email)
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use crate::encoding::{hex, unhex};
use crate::enrollment::config_doc::{ConfigDoc, ConfigDocError, IdHashName, ReplicaPlacement, SECRET_LEN};
use crate::enrollment::desk::{Mail, VerifyMode};
use crate::enrollment::{EnrollmentCa, IssuedNames};
use crate::identity::pem::{certificates_from_pem, certificates_to_pem, fingerprint};
use crate::identity::{Aor, CertificateSummary, IdentityError, KeyPair, PublicKey};

/// The root's private key, PKCS#8 DER, mode 0600.
pub const ROOT_KEY: &str = "root-key.pk8";
/// The root certificate, PEM: what every node trusts.
pub const ROOT: &str = "root.pem";
/// The signed overlay configuration document.
pub const CONFIG_DOC: &str = "overlay-config.json";
/// Secret replica mode: the salt members get at enrollment, mode 0600.
pub const REPLICA_SECRET: &str = "replica-secret";
/// [`CaSettings`].
pub const SETTINGS: &str = "ca.json";
/// Which key holds each name (one name, one holder).
pub const ISSUED_DB: &str = "issued.redb";
/// Verification mails waiting to be sent, mode 0700.
pub const OUTBOX: &str = "outbox";

/// AoR (canonical text) → the holder's public key (raw point).
const ISSUED: TableDefinition<&str, &[u8]> = TableDefinition::new("issued_names");

/// Why a CA command failed.
// Each variant's `#[error]` message says what it means, naming its fields.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot {doing} {}", path.display())]
    Io {
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} already holds a CA ({ROOT_KEY}); refusing to overwrite it", .0.display())]
    Exists(PathBuf),
    #[error("{} is not a CA directory (no {file}); run `p2psip ca init --dir {}` first", dir.display(), dir.display())]
    NotACa { dir: PathBuf, file: &'static str },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("{0}")]
    Options(String),
    #[error("issued-names database {}: {message}", path.display())]
    Db { path: PathBuf, message: String },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    ConfigDoc(#[from] ConfigDocError),
    #[error("the system random number generator failed")]
    Random,
}

/// `ca.json`: what `ca serve` needs besides the keys and the document.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaSettings {
    /// The overlay's SIP domain: every AoR it certifies is in it.
    pub domain: String,
    /// How enrollment requests are verified.
    pub verify: VerifyMode,
    /// Lifetime of issued certificates, days (capped at the root's notAfter).
    pub cert_lifetime_days: u64,
}

/// What `ca init` is asked to create.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The CA's directory (created).
    pub dir: PathBuf,
    /// The overlay's SIP domain.
    pub domain: String,
    /// The overlay's name; the domain when not given.
    pub overlay: Option<String>,
    /// How enrollment requests are verified.
    pub verify: VerifyMode,
    /// R, the replica count every node uses.
    pub replicas: u8,
    /// Whether the replica numbers are derived from a secret only members get.
    pub secret_replicas: bool,
    /// How Node IDs are hashed.
    pub id_hash: IdHashName,
    /// Nodes to join through, named in the document.
    pub bootstrap: Vec<SocketAddr>,
    /// Validity of the root and of the document, days.
    pub valid_days: u64,
    /// Lifetime of issued certificates, days.
    pub cert_lifetime_days: u64,
    /// A JSON file with `chord` and/or `store` objects (the document's own fields, complete)
    /// replacing the defaults.
    pub settings: Option<PathBuf>,
}

/// `ca init --settings FILE`: the document's timers and limits, when not the defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentSettings {
    chord: Option<crate::enrollment::config_doc::ChordTimers>,
    store: Option<crate::enrollment::config_doc::StoreLimits>,
    stun_servers: Option<Vec<String>>,
    turn_servers: Option<Vec<String>>,
}

/// What `ca init` made.
#[derive(Debug)]
pub struct Initialized {
    /// The root certificate's SHA-256 fingerprint, for `p2psip enroll --root-fingerprint`.
    pub root_fingerprint: String,
    /// The document it signed.
    pub config: ConfigDoc,
}

/// Creates the CA directory: root key and certificate, settings, the signed document.
pub fn init(opts: &InitOptions, unix_now: u64, rng: &dyn SecureRandom) -> Result<Initialized, CaError> {
    let dir = &opts.dir;
    if dir.join(ROOT_KEY).exists() {
        return Err(CaError::Exists(dir.clone()));
    }
    if opts.valid_days == 0 || opts.cert_lifetime_days == 0 {
        return Err(CaError::Options("validity must be at least one day".into()));
    }
    let domain = opts.domain.to_ascii_lowercase();
    // The domain must make valid AoRs.
    Aor::parse(&format!("sip:check@{domain}"))?;
    create_dir(dir)?;
    let not_after = unix_now.saturating_add(opts.valid_days.saturating_mul(86_400));
    let key = KeyPair::generate(rng)?;
    let ca = EnrollmentCa::create(&domain, key, unix_now.saturating_sub(300), not_after, rng)?;

    let mut doc = ConfigDoc::new(&domain, ca.root_der(), unix_now.saturating_sub(300), not_after);
    if let Some(overlay) = &opts.overlay {
        doc.overlay = overlay.clone();
    }
    doc.id_hash = opts.id_hash;
    if let Some(path) = &opts.settings {
        apply_settings(&mut doc, path)?;
    }
    doc.bootstrap = opts.bootstrap.clone();
    let secret = if opts.secret_replicas {
        let mut secret = [0u8; SECRET_LEN];
        rng.fill(&mut secret).map_err(|_| CaError::Random)?;
        doc.replicas = ReplicaPlacement::secret(opts.replicas, &secret);
        Some(secret)
    } else {
        doc.replicas = ReplicaPlacement::public(opts.replicas);
        None
    };
    let signed = doc.sign(ca.key(), rng)?;

    let settings = CaSettings { domain, verify: opts.verify, cert_lifetime_days: opts.cert_lifetime_days };
    let settings_json = serde_json::to_vec_pretty(&settings).map_err(|e| CaError::Options(e.to_string()))?;
    write_file(&dir.join(SETTINGS), &settings_json)?;
    write_file(&dir.join(ROOT), certificates_to_pem(&[ca.root_der().to_vec()]).as_bytes())?;
    write_file(&dir.join(CONFIG_DOC), &signed)?;
    if let Some(secret) = secret {
        write_private(&dir.join(REPLICA_SECRET), hex(&secret).as_bytes())?;
    }
    // The key last: its presence is what marks the directory as an initialised CA.
    write_private(&dir.join(ROOT_KEY), ca.key().pkcs8_der())?;
    Ok(Initialized { root_fingerprint: fingerprint(ca.root_der()), config: doc })
}

/// What `ca reissue` changes; `None` / empty keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct ReissueOptions {
    /// The CA's directory.
    pub dir: PathBuf,
    /// New bootstrap nodes (empty keeps the current ones).
    pub bootstrap: Vec<SocketAddr>,
    /// A JSON file with new `chord` and/or `store` objects.
    pub settings: Option<PathBuf>,
    /// New validity from now, days (capped at the root's notAfter).
    pub valid_days: Option<u64>,
}

/// Signs a new version of the configuration document: the current one with `opts` applied
/// and its sequence number one higher. A running `ca serve` serves the new one after a restart.
pub fn reissue(opts: &ReissueOptions, unix_now: u64, rng: &dyn SecureRandom) -> Result<ConfigDoc, CaError> {
    let loaded = load(&opts.dir, unix_now, rng)?;
    let mut doc = ConfigDoc::verify(&loaded.config_doc, &loaded.ca.trust_anchor()?, unix_now)?;
    doc.sequence = doc.sequence.saturating_add(1);
    if !opts.bootstrap.is_empty() {
        doc.bootstrap = opts.bootstrap.clone();
    }
    if let Some(path) = &opts.settings {
        apply_settings(&mut doc, path)?;
    }
    if let Some(days) = opts.valid_days {
        doc.not_before = unix_now.saturating_sub(300);
        doc.not_after = unix_now.saturating_add(days.saturating_mul(86_400)).min(loaded.root_not_after);
    }
    let signed = doc.sign(loaded.ca.key(), rng)?;
    // Written beside and renamed over, so a reader never sees half a document.
    let path = opts.dir.join(CONFIG_DOC);
    let tmp = opts.dir.join(format!("{CONFIG_DOC}.new"));
    write_file(&tmp, &signed)?;
    std::fs::rename(&tmp, &path).map_err(|source| CaError::Io { doing: "replace", path, source })?;
    Ok(doc)
}

fn apply_settings(doc: &mut ConfigDoc, path: &Path) -> Result<(), CaError> {
    let settings: DocumentSettings = serde_json::from_slice(&read_file(path)?)
        .map_err(|e| CaError::Invalid { path: path.to_owned(), message: e.to_string() })?;
    if let Some(chord) = settings.chord {
        doc.chord = chord;
    }
    if let Some(store) = settings.store {
        doc.store = store;
    }
    if let Some(stun) = settings.stun_servers {
        doc.stun_servers = stun;
    }
    if let Some(turn) = settings.turn_servers {
        doc.turn_servers = turn;
    }
    Ok(())
}

/// Everything `ca serve` loads from the directory.
#[derive(Debug)]
pub struct LoadedCa {
    /// The root key and certificate.
    pub ca: EnrollmentCa,
    /// `ca.json`.
    pub settings: CaSettings,
    /// The signed document, as served.
    pub config_doc: Vec<u8>,
    /// Secret replica mode: the salt members get.
    pub replica_secret: Option<Vec<u8>>,
    /// When the root certificate expires, Unix seconds.
    pub root_not_after: u64,
}

/// Reads a CA directory and checks its parts fit together (the document verifies against the
/// root, the key is the root's).
pub fn load(dir: &Path, unix_now: u64, rng: &dyn SecureRandom) -> Result<LoadedCa, CaError> {
    if !dir.join(ROOT_KEY).exists() {
        return Err(CaError::NotACa { dir: dir.to_owned(), file: ROOT_KEY });
    }
    let invalid = |file: &str, message: String| CaError::Invalid { path: dir.join(file), message };
    let settings: CaSettings =
        serde_json::from_slice(&read_file(&dir.join(SETTINGS))?).map_err(|e| invalid(SETTINGS, e.to_string()))?;
    let key = KeyPair::from_pkcs8(&read_file(&dir.join(ROOT_KEY))?, rng)?;
    let mut roots = certificates_from_pem(&read_file(&dir.join(ROOT))?)?;
    let root_der = roots.pop().ok_or_else(|| invalid(ROOT, "no certificate".into()))?;
    let root_not_after = CertificateSummary::of(&root_der)?.not_after;
    let ca = EnrollmentCa::from_parts(&settings.domain, key, root_der)?;
    let config_doc = read_file(&dir.join(CONFIG_DOC))?;
    let doc = ConfigDoc::verify(&config_doc, &ca.trust_anchor()?, unix_now)
        .map_err(|e| invalid(CONFIG_DOC, e.to_string()))?;
    let secret_path = dir.join(REPLICA_SECRET);
    let replica_secret = if secret_path.exists() {
        let text = String::from_utf8_lossy(&read_file(&secret_path)?).trim().to_owned();
        Some(unhex(&text).ok_or_else(|| invalid(REPLICA_SECRET, "not hex".into()))?)
    } else {
        None
    };
    // A secret-mode document without its secret (or the wrong one) could enroll nobody usefully.
    doc.replicas.numbers(replica_secret.as_deref()).map_err(|e| invalid(REPLICA_SECRET, e.to_string()))?;
    Ok(LoadedCa { ca, settings, config_doc, replica_secret, root_not_after })
}

/// The issued-names registry, kept in redb: read whole at start (one small row per user),
/// written through on every bind. `EnrollmentCa::issue` binds in memory; the server then
/// calls [`IssuedDb::commit`] before answering, and [`IssuedDb::rollback`] if that fails.
pub struct IssuedDb {
    path: PathBuf,
    db: redb::Database,
    names: BTreeMap<Aor, PublicKey>,
    unsaved: Vec<(Aor, Option<PublicKey>)>,
}

impl IssuedDb {
    /// Opens (or creates) the issued-names database.
    pub fn open(path: &Path) -> Result<IssuedDb, CaError> {
        let err = |e: &dyn std::fmt::Display| CaError::Db { path: path.to_owned(), message: e.to_string() };
        let db = redb::Database::create(path).map_err(|e| err(&e))?;
        // Creates the table on first use, so a read transaction can open it.
        let tx = db.begin_write().map_err(|e| err(&e))?;
        tx.open_table(ISSUED).map_err(|e| err(&e))?;
        tx.commit().map_err(|e| err(&e))?;
        let mut names = BTreeMap::new();
        let read = db.begin_read().map_err(|e| err(&e))?;
        let table = read.open_table(ISSUED).map_err(|e| err(&e))?;
        for row in table.iter().map_err(|e| err(&e))? {
            let (aor, key) = row.map_err(|e| err(&e))?;
            let aor = Aor::parse(aor.value()).map_err(|e| err(&e))?;
            names.insert(aor, PublicKey::from_bytes(key.value()));
        }
        Ok(IssuedDb { path: path.to_owned(), db, names, unsaved: Vec::new() })
    }

    /// How many names are held.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no name has been issued.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Writes the binds made since the last commit, in one transaction.
    pub fn commit(&mut self) -> Result<(), CaError> {
        let err = |e: &dyn std::fmt::Display| CaError::Db { path: self.path.clone(), message: e.to_string() };
        let tx = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut table = tx.open_table(ISSUED).map_err(|e| err(&e))?;
            for (aor, _) in &self.unsaved {
                if let Some(key) = self.names.get(aor) {
                    table.insert(aor.as_str(), key.as_bytes()).map_err(|e| err(&e))?;
                }
            }
        }
        tx.commit().map_err(|e| err(&e))?;
        self.unsaved.clear();
        Ok(())
    }

    /// Undoes the binds made since the last commit, in memory.
    pub fn rollback(&mut self) {
        for (aor, previous) in self.unsaved.drain(..).rev() {
            match previous {
                Some(key) => self.names.insert(aor, key),
                None => self.names.remove(&aor),
            };
        }
    }
}

impl IssuedNames for IssuedDb {
    fn holder(&self, aor: &Aor) -> Option<&PublicKey> {
        self.names.get(aor)
    }

    fn bind(&mut self, aor: Aor, key: PublicKey) {
        let previous = self.names.insert(aor.clone(), key);
        self.unsaved.push((aor, previous));
    }
}

/// Writes one mail into `DIR/outbox/` as an RFC 5322 message; returns its path.
pub fn write_mail(outbox: &Path, mail: &Mail, unix_now: u64, sequence: u64) -> Result<PathBuf, CaError> {
    create_dir(outbox)?;
    // Mails hold live tokens: the outbox is the CA operator's alone (docs/security.md, M7).
    #[cfg(unix)]
    std::fs::set_permissions(outbox, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|source| CaError::Io { doing: "restrict", path: outbox.to_owned(), source })?;
    let queued = std::fs::read_dir(outbox).map(|d| d.count()).unwrap_or(0);
    if queued >= MAX_OUTBOX {
        return Err(CaError::Io {
            doing: "queue a mail in",
            path: outbox.to_owned(),
            source: std::io::Error::other(format!("the outbox holds {queued} mails already")),
        });
    }
    let path = outbox.join(format!("{unix_now}-{sequence}-{}.eml", mail.to.replace(['/', '\\'], "_")));
    let text = format!(
        "To: {}\r\nSubject: {}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}",
        mail.to, mail.subject, mail.body
    );
    write_private(&path, text.as_bytes())?;
    Ok(path)
}

/// Mails the outbox may hold before new verifications are refused (a relay that is down, or a
/// flood of requests, must not fill the disk).
pub const MAX_OUTBOX: usize = 10_000;

pub(crate) fn create_dir(dir: &Path) -> Result<(), CaError> {
    std::fs::create_dir_all(dir).map_err(|source| CaError::Io {
        doing: "create directory",
        path: dir.to_owned(),
        source,
    })
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, CaError> {
    std::fs::read(path).map_err(|source| CaError::Io { doing: "read", path: path.to_owned(), source })
}

pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), CaError> {
    std::fs::write(path, bytes).map_err(|source| CaError::Io { doing: "write", path: path.to_owned(), source })
}

/// Writes a secret: created with mode 0600 from the start (never readable by others, not even
/// briefly), replacing any earlier file.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CaError> {
    use std::io::Write;
    let io = |source| CaError::Io { doing: "write", path: path.to_owned(), source };
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;

    use super::*;

    #[test]
    fn issued_names_survive_reopening_and_rollback_forgets() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join(ISSUED_DB);
        let rng = SystemRandom::new();
        let (a, b) = (KeyPair::generate(&rng).unwrap().public_key(), KeyPair::generate(&rng).unwrap().public_key());
        let alice = Aor::parse("sip:alice@example.com").unwrap();
        let bob = Aor::parse("sip:bob@example.com").unwrap();
        {
            let mut db = IssuedDb::open(&path).unwrap();
            db.bind(alice.clone(), a.clone());
            db.commit().unwrap();
            db.bind(bob.clone(), b.clone());
            db.rollback();
            assert_eq!(db.holder(&bob), None);
        }
        let db = IssuedDb::open(&path).unwrap();
        assert_eq!(db.holder(&alice), Some(&a));
        assert_eq!(db.len(), 1);
    }

    #[test]
    fn the_document_carries_the_stun_servers_of_the_settings_and_refuses_bad_ones() {
        let dir = tempfile::TempDir::new().unwrap();
        let rng = SystemRandom::new();
        let settings = dir.path().join("settings.json");
        let opts = |name: &str| InitOptions {
            dir: dir.path().join(name),
            domain: "example.com".into(),
            overlay: None,
            verify: VerifyMode::None,
            replicas: 2,
            secret_replicas: false,
            id_hash: IdHashName::Sha1,
            bootstrap: vec![],
            valid_days: 10,
            cert_lifetime_days: 1,
            settings: Some(settings.clone()),
        };
        std::fs::write(&settings, r#"{"stun_servers": ["stun:192.0.2.1", "stun:stun.example.net:3479"]}"#).unwrap();
        let made = init(&opts("ca1"), 1_800_000_000, &rng).unwrap();
        assert_eq!(made.config.stun_servers, ["stun:192.0.2.1", "stun:stun.example.net:3479"]);
        std::fs::write(&settings, r#"{"stun_servers": ["turn:192.0.2.1"]}"#).unwrap();
        assert!(init(&opts("ca2"), 1_800_000_000, &rng).is_err(), "not a stun: URI");
    }

    #[test]
    fn init_then_load_and_refuse_to_overwrite() {
        let dir = tempfile::TempDir::new().unwrap();
        let rng = SystemRandom::new();
        let opts = InitOptions {
            dir: dir.path().join("ca"),
            domain: "Example.COM".into(),
            overlay: None,
            verify: VerifyMode::None,
            replicas: 2,
            secret_replicas: true,
            id_hash: IdHashName::Sha256,
            bootstrap: vec![],
            valid_days: 10,
            cert_lifetime_days: 1,
            settings: Some(dir.path().join("settings.json")),
        };
        let chord = crate::enrollment::config_doc::ChordTimers { stabilize_interval_ms: 500, ..Default::default() };
        let settings = serde_json::json!({ "chord": chord });
        std::fs::write(dir.path().join("settings.json"), settings.to_string()).unwrap();
        let made = init(&opts, 1_800_000_000, &rng).unwrap();
        assert_eq!(made.config.domain, "example.com");
        assert_eq!(made.config.chord.stabilize_interval_ms, 500, "from --settings");
        assert_eq!(made.config.store, crate::enrollment::config_doc::StoreLimits::default());
        let loaded = load(&opts.dir, 1_800_000_000, &rng).unwrap();
        assert_eq!(fingerprint(loaded.ca.root_der()), made.root_fingerprint);
        assert_eq!(loaded.replica_secret.as_ref().map(Vec::len), Some(SECRET_LEN));
        #[cfg(unix)]
        for file in [ROOT_KEY, REPLICA_SECRET] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(opts.dir.join(file)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        assert!(matches!(init(&opts, 1_800_000_000, &rng), Err(CaError::Exists(_))));
        let bootstrap = vec!["192.0.2.7:5070".parse().unwrap()];
        let reissue_opts = ReissueOptions { dir: opts.dir.clone(), bootstrap: bootstrap.clone(), ..Default::default() };
        let next = reissue(&reissue_opts, 1_800_000_100, &rng).unwrap();
        assert_eq!((next.sequence, &next.bootstrap), (2, &bootstrap));
        assert_eq!(next.chord.stabilize_interval_ms, 500, "what is not asked for is kept");
        let reloaded = load(&opts.dir, 1_800_000_100, &rng).unwrap();
        let served = ConfigDoc::verify(&reloaded.config_doc, &reloaded.ca.trust_anchor().unwrap(), 1_800_000_100);
        assert_eq!(served.unwrap().sequence, 2);
        assert!(matches!(load(dir.path(), 1_800_000_000, &rng), Err(CaError::NotACa { .. })));
    }
}
