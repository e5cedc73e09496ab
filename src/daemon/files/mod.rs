//! What a node keeps in its data directory, read and written: the enrolled identity and the
//! overlay's configuration document, the key files, local accounts, and the records it
//! stores for others.

pub mod accounts;
pub mod data_dir;
pub mod identity;
pub mod mailbox;
pub mod record_store;

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
    /// Secret replica mode only: the salt the CA gave at enrollment, hex, file mode 0600.
    pub const REPLICA_SECRET: &str = "identity/replica-secret";
}
