//! The `p2psip` binary: parses the command line, sets up logging, runs the command, and turns
//! any error into one `p2psip: error: …` line on stderr with exit code 1 (clap's own usage
//! errors exit 2).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use p2psip::cli::{self, Cli, Command, LookupArgs, NodeArgs, SimArgs, StatusArgs};
use p2psip::daemon::{self, Config};

/// How long `p2psip status` waits for a node.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `p2psip lookup` waits; the node gives up on a lookup after 30 s itself.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(35);

fn main() -> ExitCode {
    let args = Cli::parse();
    // The simulator runs thousands of nodes in one process: only their warnings by default.
    let quiet = matches!(args.command, Command::Sim(_));
    init_logging(args.verbose, quiet);
    let result = match args.command {
        Command::Node(a) => node(a),
        Command::Status(a) => status(a),
        Command::Lookup(a) => lookup(a),
        Command::Sim(a) => sim(a),
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
    if let Some(aor) = cli::lookup::record_missing(&answer) {
        anyhow::bail!("no valid copy of {aor}'s registration at any of its replica places");
    }
    Ok(())
}

/// Runs the simulator. Main owns the real clock: one reading as the virtual clock's epoch, and
/// the wall time and peak memory the report carries.
#[allow(clippy::disallowed_methods)]
fn sim(args: SimArgs) -> anyhow::Result<()> {
    let began = std::time::Instant::now();
    // Records are signed once, before the run, and the time it takes is reported.
    let records = (args.records > 0)
        .then(|| p2psip::sim::records::RecordSet::new(args.records))
        .transpose()
        .context("cannot sign the simulated records")?;
    let signing_s = records.as_ref().map(|_| began.elapsed().as_secs_f64());
    let mut report = p2psip::sim::scenario::run_with_records(began, &args.params(), records.as_ref())
        .map_err(|e| anyhow::anyhow!("{e}; replay with --seed {}", e.seed))?;
    report.signing_s = signing_s;
    report.wall_time_s = began.elapsed().as_secs_f64();
    report.peak_rss_kib = peak_rss_kib();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", cli::sim::summary(&report));
    }
    Ok(())
}

/// The process's peak resident set (`VmHWM` in /proc/self/status), where Linux reports it.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Logs to stderr. RUST_LOG sets the filter (default `info`, `warn` for `sim`); each -v raises p2psip's own
/// level on top of it (debug, then trace).
fn init_logging(verbose: u8, quiet: bool) {
    let default = if quiet { tracing::Level::WARN } else { tracing::Level::INFO };
    let mut filter = EnvFilter::builder().with_default_directive(default.into()).from_env_lossy();
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
