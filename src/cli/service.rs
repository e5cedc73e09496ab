//! `p2psip service`, `p2psip completions` and `p2psip man`: running the node in the background
//! and fitting the command into the user's shell and manual.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// Run the node as a background service of systemd: `install` writes a unit that starts
/// `p2psip node` with the session (a user unit, the default) or at boot (`--system`) and
/// restarts it when it fails; `uninstall` removes it. Logs go to the journal
/// (`journalctl --user -u p2psip`).
#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    #[command(subcommand)]
    pub command: ServiceCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ServiceCommand {
    /// Write the unit (then start it with the `systemctl` commands printed)
    Install {
        /// A user unit (the default: no root needed, runs while you are logged in)
        #[arg(long, conflicts_with = "system")]
        user: bool,
        /// A system unit in /etc/systemd/system (needs root)
        #[arg(long)]
        system: bool,
        /// The node's settings file, passed as `--config` (default: none, the defaults)
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Where to write the unit instead of systemd's user or system directory
        #[arg(long, value_name = "DIR")]
        unit_dir: Option<PathBuf>,
    },
    /// Remove the unit (stop it first with `systemctl --user disable --now p2psip`)
    Uninstall {
        /// A user unit (the default)
        #[arg(long, conflicts_with = "system")]
        user: bool,
        /// The system unit
        #[arg(long)]
        system: bool,
        /// Where the unit was written, if not systemd's directory
        #[arg(long, value_name = "DIR")]
        unit_dir: Option<PathBuf>,
    },
}

/// Print shell completions for p2psip (e.g. `p2psip completions bash >
/// ~/.local/share/bash-completion/completions/p2psip`)
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Print the manual page, in roff (e.g. `p2psip man > ~/.local/share/man/man1/p2psip.1`)
#[derive(Debug, Clone, Args)]
pub struct ManArgs {}
