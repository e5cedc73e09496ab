//! `p2psip account`: the local accounts phones register with on this node's proxy.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// Manage the accounts that phones use to register on this node's proxy (digest
/// authentication, RFC 3261 §22 with MD5 and SHA-256).
///
/// Accounts live in the data directory's `accounts` file (mode 0600), which keeps one
/// H(user:realm:password) per algorithm, never the password. The realm is the AoR's domain,
/// which must be the node's --domain for phones to register. A running node reads the file at
/// start: restart it after a change.
#[derive(Debug, Clone, Args)]
pub struct AccountArgs {
    #[command(subcommand)]
    pub command: AccountCommand,

    /// The node's data directory [default: $XDG_DATA_HOME/p2psip]
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum AccountCommand {
    /// Add an account, or set a new password for an existing one.
    ///
    /// The password is read from standard input (--password-stdin: the first line) or asked
    /// for on the terminal. Only an AoR this node holds a certificate for (identity/chain.pem,
    /// from `p2psip enroll`) may get an account, unless --without-certificate is given.
    Add {
        /// The address of record, e.g. sip:alice@p2p.test
        aor: String,
        /// Read the password from the first line of standard input
        #[arg(long)]
        password_stdin: bool,
        /// Allow an AoR this node has no certificate for (tests, or before enrollment exists)
        #[arg(long)]
        without_certificate: bool,
    },
    /// List the accounts' AoRs, one a line.
    List,
    /// Remove an account.
    Remove {
        /// The address of record, e.g. sip:alice@p2p.test
        aor: String,
    },
}
