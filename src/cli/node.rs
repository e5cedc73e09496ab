//! `p2psip node`: its flags, and how they override the config file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::daemon::Overrides;

/// Run a p2psip node in the foreground until Ctrl-C or SIGTERM.
///
/// The node listens for SIP over UDP and TCP on two addresses: the overlay address (--listen),
/// where other nodes reach it, and the proxy address (--proxy), where local softphones register
/// and send calls. A local HTTP API (--http) reports its status (`p2psip status`).
///
/// With --join the node joins a Chord overlay through those nodes; without it, it starts a
/// new overlay that others can join. Its Node ID derives from its overlay address (--listen,
/// or --advertise when listening on a wildcard address). On Ctrl-C or SIGTERM it leaves the
/// overlay, telling its neighbours (waiting at most 1 s), and exits.
///
/// Settings come from the defaults, then the TOML file given with --config (keys: listen,
/// proxy, http, join, domain, overlay, advertise, max_datagram_size, data_dir, a `[chord]`
/// table of timers in milliseconds and a `[registrar]` table: ping_interval_ms,
/// ping_timeout_ms, timer_c_ms, min_expires, max_expires, max_server_transactions, overload_busy_percent), then these flags, each later one winning. Exits 0 after
/// a clean shutdown, 1 if it cannot start (address in use, bad config).
///
/// If the data directory holds an enrolled identity (from `p2psip enroll`), the node loads it
/// and verifies it again: the certificate chain against the stored root, the key against the
/// certificate, and the overlay configuration document's signature against the root (a
/// document that does not verify stops the node). The document's overlay name, domain, Chord
/// timers and bootstrap peers (when no join is set) replace the config file's; these flags
/// still win. `p2psip status --json` shows the identity under "identity" (null if none).
///
/// Phones register on --proxy with the accounts of `p2psip account` (read at start: restart
/// the node after changing them) and call each other's AoRs (sip:bob@DOMAIN) through it.
#[derive(Debug, Clone, Args)]
#[command(verbatim_doc_comment)]
pub struct NodeArgs {
    /// TOML settings file. Unknown keys are an error.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory for the node's state, created if missing [default: $XDG_DATA_HOME/p2psip]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Overlay address: node-to-node SIP over UDP and TCP [default: 0.0.0.0:5070]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Proxy address that local softphones use, UDP and TCP [default: 127.0.0.1:5060]
    #[arg(long, value_name = "ADDR")]
    pub proxy: Option<SocketAddr>,

    /// HTTP status API address (GET /status, GET /health) [default: 127.0.0.1:5090]
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,

    /// A node (its overlay address) to join the overlay through; repeat for several. Without
    /// any, the node first looks for nodes of its overlay on the local network (mDNS,
    /// _p2psip._udp.local) and joins them, or starts a ring of its own if it hears none
    #[arg(long, value_name = "ADDR")]
    pub join: Vec<SocketAddr>,

    /// Neither announce this node on the local network nor look for others there (mDNS);
    /// without --join, it then starts a ring of its own at once
    #[arg(long)]
    pub no_mdns: bool,

    /// The overlay address other nodes reach this one at, from which its Node ID derives.
    /// Only needed when --listen is a wildcard (0.0.0.0): then it defaults to the local IP
    /// that routes toward the first --join node, else 127.0.0.1
    #[arg(long, value_name = "ADDR")]
    pub advertise: Option<SocketAddr>,

    /// Name of the overlay to form or join; nodes of other overlays are refused [default: p2p.test]
    #[arg(long, value_name = "NAME")]
    pub overlay: Option<String>,

    /// SIP domain that local phones register in [default: p2p.test]
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,

    /// A STUN server to learn this node's public address from: stun:HOST:PORT, or stun:HOST for
    /// port 3478; repeat for several (two tell the NAT's mapping behaviour apart). Replaces the
    /// stun list of the config file's nat table
    #[arg(long, value_name = "URI")]
    pub stun: Vec<String>,

    /// A TURN server for calls' media: turn:HOST:PORT, optionally ?transport=tcp; repeat for
    /// several. Replaces the turn list of the config file's nat table (where credentials are
    /// better kept: the command line shows in ps)
    #[arg(long, value_name = "URI")]
    pub turn: Vec<String>,

    /// auto: a peer on the ring if another node's dial-back reaches this one, else a client
    /// (no ring position; reached through an edge peer). peer: a peer, or an error if the
    /// dial-back does not arrive. client: a client. A node with nothing to join starts a ring
    /// and is a peer [default: auto]
    #[arg(long, value_name = "ROLE", value_parser = ["auto", "peer", "client"])]
    pub role: Option<String>,

    /// The username for the --turn servers
    #[arg(long, value_name = "USER", requires = "turn")]
    pub turn_user: Option<String>,

    /// The password for the --turn servers
    #[arg(long, value_name = "PASSWORD", requires = "turn")]
    pub turn_pass: Option<String>,
}

impl NodeArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen,
            proxy: self.proxy,
            http: self.http,
            join: self.join.clone(),
            domain: self.domain.clone(),
            data_dir: self.data_dir.clone(),
            overlay: self.overlay.clone(),
            advertise: self.advertise,
            stun: self.stun.clone(),
            role: self.role.as_deref().and_then(|r| r.parse().ok()),
            no_mdns: self.no_mdns,
            turn: self
                .turn
                .iter()
                .map(|uri| crate::nat::turn::TurnServer {
                    uri: uri.clone(),
                    username: self.turn_user.clone(),
                    password: self.turn_pass.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use crate::cli::Cli;
    use crate::daemon::node::config::{Config, DEFAULT_DOMAIN, DEFAULT_OVERLAY};

    /// The help text states defaults by hand (flags must not override the file with them).
    #[test]
    fn help_states_the_real_defaults() {
        let mut cmd = Cli::command();
        let help = cmd.find_subcommand_mut("node").expect("node command").render_long_help().to_string();
        let d = Config::default();
        for value in [
            d.listen.to_string(),
            d.proxy.to_string(),
            d.http.to_string(),
            DEFAULT_DOMAIN.to_string(),
            DEFAULT_OVERLAY.to_string(),
        ] {
            assert!(help.contains(&format!("[default: {value}]")), "{value} missing from:\n{help}");
        }
    }
}
