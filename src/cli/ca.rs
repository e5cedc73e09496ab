//! `p2psip ca init` and `p2psip ca serve`: the overlay's enrollment CA.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use crate::daemon::ca::files::{InitOptions, ReissueOptions};
use crate::daemon::ca::server::ServeOptions;
use crate::enrollment::config_doc::{IdHashName, MAX_REPLICAS};
use crate::enrollment::desk::VerifyMode;

/// Run the overlay's enrollment CA: create it once (`init`), then serve enrollments (`serve`).
///
/// `reissue` signs a new version of the configuration document.
///
/// The CA binds each address of record (sip:user@domain) to one key, and signs the overlay
/// configuration document every node checks. Nodes contact it once, with `p2psip enroll`;
/// the overlay works with the CA stopped.
#[derive(Debug, Clone, Args)]
pub struct CaArgs {
    #[command(subcommand)]
    pub command: CaCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum CaCommand {
    Init(CaInitArgs),
    Serve(CaServeArgs),
    Reissue(CaReissueArgs),
}

/// Sign a new version of the overlay configuration document (sequence number + 1).
///
/// Keeps everything not asked for. `ca serve` serves the new document after a restart; nodes
/// pick it up when they enroll again (renewal).
#[derive(Debug, Clone, Args)]
pub struct CaReissueArgs {
    /// The CA's directory (from `p2psip ca init`)
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,

    /// Replace the bootstrap peers; repeat for several
    #[arg(long, value_name = "ADDR", num_args = 1..)]
    pub bootstrap: Vec<SocketAddr>,

    /// JSON file replacing Chord timers and/or store limits (as for `ca init --settings`)
    #[arg(long, value_name = "FILE")]
    pub settings: Option<PathBuf>,

    /// New validity from now, days (at most the root's)
    #[arg(long, value_name = "DAYS")]
    pub valid_days: Option<u64>,
}

impl CaReissueArgs {
    pub fn options(&self) -> ReissueOptions {
        ReissueOptions {
            dir: self.dir.clone(),
            bootstrap: self.bootstrap.clone(),
            settings: self.settings.clone(),
            valid_days: self.valid_days,
        }
    }
}

/// How a new name's ownership is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerifyArg {
    /// First come, first served (test overlays, demos)
    None,
    /// A token mailed to user@domain (written to DIR/outbox/, one file per mail)
    Email,
}

/// The hash of Node IDs and resource IDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IdHashArg {
    Sha1,
    /// SHA-256 truncated to 160 bits
    Sha256,
}

/// Create a CA: a root key (DIR/root-key.pk8, mode 0600), a self-signed root certificate
/// (DIR/root.pem) and the signed overlay configuration document (DIR/overlay-config.json).
///
/// The document names the overlay, its domain and root certificate, the ID hash, the replica
/// count and numbers, Chord's timers, bootstrap peers, record size limits and
/// per-owner quotas, a sequence number (1) and its validity. Refuses to overwrite an existing
/// CA. Prints the root's SHA-256 fingerprint, which enrolling users pin.
#[derive(Debug, Clone, Args)]
#[command(verbatim_doc_comment)]
pub struct CaInitArgs {
    /// The CA's directory, created if missing
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,

    /// The SIP domain users are enrolled in (sip:user@DOMAIN)
    #[arg(long, value_name = "DOMAIN")]
    pub domain: String,

    /// The overlay's name [default: the domain]
    #[arg(long, value_name = "NAME")]
    pub overlay: Option<String>,

    /// How a new name's ownership is checked
    #[arg(long, value_enum, default_value = "none")]
    pub verify: VerifyArg,

    /// R: copies of every record besides the primary, at H(K‖n) for each replica number n
    #[arg(long, value_name = "R", default_value_t = 3, value_parser = clap::value_parser!(u8).range(0..=MAX_REPLICAS as i64))]
    pub replicas: u8,

    /// Keep the replica numbers secret: they derive from a random salt that only enrolled
    /// members receive (the document holds its SHA-256), so outsiders cannot find the copies
    #[arg(long)]
    pub secret_replicas: bool,

    /// Hash for Node IDs and resource IDs
    #[arg(long, value_enum, default_value = "sha1")]
    pub id_hash: IdHashArg,

    /// Overlay address of a node to join through, named in the document; repeat for several
    #[arg(long, value_name = "ADDR", num_args = 1..)]
    pub bootstrap: Vec<SocketAddr>,

    /// Validity of the root certificate and of the document, days
    #[arg(long, value_name = "DAYS", default_value_t = 3650)]
    pub valid_days: u64,

    /// Validity of the certificates the CA issues, days
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    pub cert_days: u64,

    /// JSON file replacing the document's default Chord timers and store limits, e.g.
    /// {"chord": {"stabilize_interval_ms": 5000, "check_predecessor_interval_ms": 5000,
    /// "fix_fingers_interval_ms": 30000, "rpc_timeout_ms": 2000, "join_retry_interval_ms":
    /// 10000, "successor_list_len": 8}, "store": {"max_record_bytes": 16384,
    /// "max_records_per_owner": 64, "max_bytes_per_owner": 262144, "max_lifetime_secs": 604800}}
    /// (either object may be left out; each is given whole)
    #[arg(long, value_name = "FILE")]
    pub settings: Option<PathBuf>,
}

impl CaInitArgs {
    pub fn options(&self) -> InitOptions {
        InitOptions {
            dir: self.dir.clone(),
            domain: self.domain.clone(),
            overlay: self.overlay.clone(),
            verify: match self.verify {
                VerifyArg::None => VerifyMode::None,
                VerifyArg::Email => VerifyMode::Email,
            },
            replicas: self.replicas,
            secret_replicas: self.secret_replicas,
            id_hash: match self.id_hash {
                IdHashArg::Sha1 => IdHashName::Sha1,
                IdHashArg::Sha256 => IdHashName::Sha256,
            },
            bootstrap: self.bootstrap.clone(),
            valid_days: self.valid_days,
            cert_lifetime_days: self.cert_days,
            settings: self.settings.clone(),
        }
    }
}

/// Serve enrollments over HTTPS until Ctrl-C or SIGTERM.
///
/// POST /enroll?aor=sip:user@domain with a PKCS#10 request (DER or PEM) returns the
/// certificate chain; GET /overlay-config.json returns the signed configuration document.
/// One name, one holder: a request for an enrolled name with another key is refused (409),
/// the same key renews. Issued names are kept in DIR/issued.redb and survive restarts.
/// With `ca init --verify email`, a new name first gets a token mailed to user@domain
/// (written to DIR/outbox/, and with --smtp-relay also sent through that relay).
///
/// The TLS certificate is issued by the root at start for the listen address, localhost and
/// each --tls-name. The first line on stdout gives the URL and the root's SHA-256
/// fingerprint, for `p2psip enroll --ca URL --ca-fingerprint FP`.
#[derive(Debug, Clone, Args)]
#[command(verbatim_doc_comment)]
pub struct CaServeArgs {
    /// The CA's directory (from `p2psip ca init`)
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,

    /// Address to listen on for HTTPS
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,

    /// Enrollment requests each client address may make, as N/min (a burst of N, refilled
    /// at N per minute)
    #[arg(long, value_name = "N/min", default_value = "10/min", value_parser = parse_rate)]
    pub rate_limit: u32,

    /// Another host name or address for the TLS certificate; repeat for several
    #[arg(long, value_name = "NAME")]
    pub tls_name: Vec<String>,

    /// Also send verification mails through this SMTP relay (plain SMTP, no TLS or AUTH:
    /// use a local relay such as the host's MTA, e.g. 127.0.0.1:25). If the relay does not
    /// take a mail, the enrollment request is answered 502 (the outbox file is still written)
    #[arg(long, value_name = "HOST:PORT")]
    pub smtp_relay: Option<String>,

    /// Sender address of the mails sent through --smtp-relay (default: p2psip-ca@DOMAIN)
    #[arg(long, value_name = "ADDR", requires = "smtp_relay")]
    pub mail_from: Option<String>,
}

impl CaServeArgs {
    pub fn options(&self) -> ServeOptions {
        ServeOptions {
            dir: self.dir.clone(),
            listen: self.listen,
            rate_limit_per_minute: self.rate_limit,
            tls_names: self.tls_name.clone(),
            smtp_relay: self.smtp_relay.clone(),
            mail_from: self.mail_from.clone(),
        }
    }
}

/// `N/min` (or a bare `N`), N ≥ 1.
fn parse_rate(text: &str) -> Result<u32, String> {
    let n = text.strip_suffix("/min").unwrap_or(text);
    match n.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{text:?} is not a rate like 10/min")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("10/min"), Ok(10));
        assert_eq!(parse_rate("3"), Ok(3));
        assert!(parse_rate("0/min").is_err());
        assert!(parse_rate("ten/min").is_err());
    }
}
