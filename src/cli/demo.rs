//! `p2psip demo`: a CA, three nodes and two accounts on loopback, for a first call.

use std::path::PathBuf;

use clap::Args;

use crate::daemon::demo::DemoOptions;

/// Start a whole overlay on loopback and print what to type into two softphones.
///
/// Creates an enrollment CA, enrolls alice, bob and carol, stops the CA, and starts three
/// nodes on 127.0.0.1, 127.0.0.2 and 127.0.0.3 (the same ports on each address), with an
/// account for alice on node 1 and bob on node 2 (generated passwords). Each node is a child
/// `p2psip node` process logging to DIR/nodeN.log. Ctrl-C (or SIGTERM) stops them all (each
/// leaves the ring) and exits 0.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Keep the CA's and nodes' directories here (reused next time) instead of a temporary
    /// directory removed at the end
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// The overlay's SIP domain
    #[arg(long, value_name = "DOMAIN", default_value = "p2p.test")]
    pub domain: String,

    /// Each node's overlay port
    #[arg(long, value_name = "PORT", default_value_t = 5070)]
    pub overlay_port: u16,

    /// Each node's softphone proxy port
    #[arg(long, value_name = "PORT", default_value_t = 5060)]
    pub proxy_port: u16,

    /// Each node's HTTP status port
    #[arg(long, value_name = "PORT", default_value_t = 5090)]
    pub http_port: u16,

    /// The CA's HTTPS port on 127.0.0.1 (used during set-up only)
    #[arg(long, value_name = "PORT", default_value_t = 5443)]
    pub ca_port: u16,
}

impl DemoArgs {
    pub fn options(&self) -> DemoOptions {
        DemoOptions {
            dir: self.dir.clone(),
            domain: self.domain.clone(),
            overlay_port: self.overlay_port,
            proxy_port: self.proxy_port,
            http_port: self.http_port,
            ca_port: self.ca_port,
        }
    }
}
