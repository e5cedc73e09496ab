//! The `p2psip` binary: parses the command line, sets up logging, runs the command, and turns
//! any error into one `p2psip: error: …` line on stderr with exit code 1 (clap's own usage
//! errors exit 2).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use p2psip::cli::{self, Cli, Command, LookupArgs, NodeArgs, StatusArgs};
use p2psip::daemon::{self, Config};

/// How long `p2psip status` waits for a node.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `p2psip lookup` waits; the node gives up on a lookup after 30 s itself.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(35);

fn main() -> ExitCode {
    let args = Cli::parse();
    init_logging(args.verbose);
    let result = match args.command {
        Command::Node(a) => node(a),
        Command::Status(a) => status(a),
        Command::Lookup(a) => lookup(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("p2psip: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn node(args: NodeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    config.apply(args.overrides());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start tokio")?;
    let result = runtime.block_on(daemon::run(config));
    // Connection tasks still reading are cut here rather than waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(result?)
}

fn status(args: StatusArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start tokio")?;
    let status = runtime.block_on(daemon::fetch_status(args.http, STATUS_TIMEOUT))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", cli::status::summary(&status));
    }
    Ok(())
}

fn lookup(args: LookupArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start tokio")?;
    let answer = runtime.block_on(daemon::fetch_json(args.http, &args.path(), LOOKUP_TIMEOUT))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", cli::lookup::summary(&answer));
    }
    Ok(())
}

/// Logs to stderr. RUST_LOG sets the filter (default `info`); each -v raises p2psip's own
/// level on top of it (debug, then trace).
fn init_logging(verbose: u8) {
    let mut filter = EnvFilter::builder().with_default_directive(tracing::Level::INFO.into()).from_env_lossy();
    let level = match verbose {
        0 => None,
        1 => Some("p2psip=debug"),
        _ => Some("p2psip=trace"),
    };
    if let Some(directive) = level.and_then(|d| d.parse().ok()) {
        filter = filter.add_directive(directive);
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
