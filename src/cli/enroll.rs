//! `p2psip enroll`: get a certificate for an address of record from the overlay's CA.

use std::path::PathBuf;

use clap::Args;

/// Get a certificate for an address of record from the overlay's CA (once, before `node`).
///
/// Makes a key, gets a certificate for AOR and the overlay configuration document from the CA,
/// and stores them in the data directory for `p2psip node`. Writes DATA_DIR/identity/key.pk8 (mode 0600; an existing key is reused, so enrolling again
/// renews the same name with the same key), identity/chain.pem, identity/root.pem and
/// overlay-config.json. The CA's root must be pinned, with --ca-cert or --ca-fingerprint (the
/// fingerprint `p2psip ca serve` prints): the TLS connection, the returned chain and the
/// document's signature are all checked against it. After this the CA is never contacted.
///
/// If the CA checks ownership by e-mail it mails a token to user@domain and this command
/// exits 0 saying so; run it again with --token and the same data directory. Exits 1 when
/// the CA refuses (for example: the name is already enrolled with another key).
#[derive(Debug, Clone, Args)]
#[command(verbatim_doc_comment)]
pub struct EnrollArgs {
    /// The address of record to enroll, sip:user@domain
    #[arg(value_name = "AOR")]
    pub aor: String,

    /// The CA's URL, https://host:port
    #[arg(long, value_name = "URL")]
    pub ca: String,

    /// Directory for the node's state [default: $XDG_DATA_HOME/p2psip]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// The CA's root certificate (PEM) to pin
    #[arg(long, value_name = "FILE", conflicts_with = "ca_fingerprint")]
    pub ca_cert: Option<PathBuf>,

    /// SHA-256 fingerprint of the CA's root certificate to pin (hex, colons optional)
    #[arg(long, value_name = "SHA256")]
    pub ca_fingerprint: Option<String>,

    /// The token from the CA's verification mail
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
}
