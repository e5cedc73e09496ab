//! The command line (clap derive): `p2psip node` runs a node, `p2psip status` asks one how it
//! is doing, `p2psip lookup` asks one which node is responsible for a key, `p2psip messages` lists
//! the offline messages for its user, `p2psip sim`
//! simulates a ring of them, `p2psip ca` runs the enrollment CA, `p2psip enroll` gets a
//! certificate from it, `p2psip account` manages the accounts phones register with and
//! `p2psip demo` starts a CA, three nodes and two accounts on loopback; `p2psip service`
//! installs the node as a systemd service, `p2psip completions` and `p2psip man` print shell
//! completions and the manual page.
//! Parsing and formatting only; `main` runs the commands through [`crate::daemon`] and
//! [`crate::sim`].
// clap takes each command's help from its attributes; doc comments on these items
// would change `--help`.
#![allow(missing_docs)]

pub mod account;
pub mod ca;
pub mod demo;
pub mod doctor;
pub mod enroll;
pub mod lookup;
pub mod messages;
pub mod node;
pub mod service;
pub mod sim;
pub mod status;
pub mod web;

use clap::{ArgAction, Parser, Subcommand};

pub use account::{AccountArgs, AccountCommand};
pub use ca::{CaArgs, CaCommand};
pub use demo::DemoArgs;
pub use doctor::DoctorArgs;
pub use enroll::EnrollArgs;
pub use lookup::LookupArgs;
pub use messages::MessagesArgs;
pub use node::NodeArgs;
pub use service::{CompletionsArgs, ManArgs, ServiceArgs, ServiceCommand};
pub use sim::SimArgs;
pub use status::StatusArgs;
pub use web::WebArgs;

#[derive(Debug, Parser)]
#[command(
    name = "p2psip",
    version,
    about = "A peer-to-peer SIP softphone daemon",
    long_about = "A peer-to-peer SIP softphone daemon.\n\n\
        Run `p2psip node` on your machine and point an ordinary SIP softphone at its proxy \
        address (default 127.0.0.1:5060). Nodes will find each other through a Chord overlay \
        carried in SIP, with no SIP server anywhere; today nodes form the overlay (--join), \
        register local phones (`p2psip account`) and route their calls and messages, find the \
        node responsible for a key (`p2psip lookup`) and report their state on a local HTTP \
        status API. `p2psip ca` runs the overlay's enrollment CA and `p2psip enroll` gets a \
        user's certificate from it, once.",
    propagate_version = true
)]
pub struct Cli {
    /// More log output: -v for debug, -vv for trace (p2psip's own modules). Logs go to
    /// stderr; RUST_LOG (e.g. RUST_LOG=p2psip=debug) sets the filter, default info.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Node(Box<NodeArgs>),
    Status(StatusArgs),
    Doctor(DoctorArgs),
    Lookup(LookupArgs),
    Messages(MessagesArgs),
    Web(WebArgs),
    Sim(SimArgs),
    Ca(CaArgs),
    Enroll(EnrollArgs),
    Account(AccountArgs),
    Demo(DemoArgs),
    Service(ServiceArgs),
    Completions(CompletionsArgs),
    Man(ManArgs),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
