//! What a node keeps in its data directory, read and written: the enrolled identity and the
//! overlay's configuration document, the key files, local accounts, and the records it
//! stores for others.

pub mod accounts;
pub mod data_dir;
pub mod identity;
pub mod mailbox;
pub mod record_store;
pub mod token;

/// File names inside a node's data directory (`--data-dir`).
pub mod layout {
    /// The private key, PKCS#8 DER, file mode 0600.
    pub const KEY: &str = "identity/key.pk8";
    /// The certificate chain, PEM, leaf first (the root may be left out).
    pub const CHAIN: &str = "identity/chain.pem";
    /// The overlay's root certificate, PEM: the trust anchor every record is checked against.
    pub const ROOT: &str = "identity/root.pem";
    /// The signed overlay configuration document, as the CA served it.
    pub const CONFIG_DOC: &str = "overlay-config.json";
    /// The embedded database of records this node stores for the overlay.
    pub const RECORDS: &str = "records.redb";
    /// Our user's X25519 encryption key (offline messages are sealed to it), 32 raw bytes,
    /// file mode 0600.
    pub const ENCRYPTION_KEY: &str = "identity/encryption.key";
    /// The mailbox's delivery log: JSON lines, file mode 0600.
    pub const DELIVERED: &str = "mailbox/delivered.jsonl";
    /// The web page's and API's token for requests that change the node's state (stop it),
    /// hex, file mode 0600: only the local user can read it.
    pub const HTTP_TOKEN: &str = "http-token";
    /// Secret replica mode only: the salt the CA gave at enrollment, hex, file mode 0600.
    pub const REPLICA_SECRET: &str = "identity/replica-secret";
}

/// Opens `path` for writing with mode 0600 from the start (an existing file gets 0600 again),
/// appending or truncating.
pub(crate) fn open_private(path: &std::path::Path, append: bool) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true);
    if append {
        options.append(true);
    } else {
        options.write(true).truncate(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(file)
}
