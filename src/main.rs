//! The `p2psip` binary: parses the command line, sets up logging, runs the command, and turns
//! any error into one `p2psip: error: …` line on stderr with exit code 1 (clap's own usage
//! errors exit 2).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use p2psip::cli::{
    self, AccountArgs, AccountCommand, CaArgs, CaCommand, Cli, Command, DemoArgs, DoctorArgs, EnrollArgs, LookupArgs,
    MessagesArgs, NodeArgs, SimArgs, StatusArgs,
};
use p2psip::daemon::{self, Config};

/// mimalloc instead of the system allocator: a SIP message is parsed into many small
/// allocations, and glibc's malloc and free took 13% of the node's CPU at 18,000
/// REGISTERs/s (docs/performance.md, "B6 REGISTER/s through the proxy").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        Command::Node(a) => node(*a),
        Command::Status(a) => status(a),
        Command::Doctor(a) => doctor(a),
        Command::Lookup(a) => lookup(a),
        Command::Messages(a) => messages(a),
        Command::Web(a) => web(a),
        Command::Sim(a) => sim(a),
        Command::Ca(a) => ca(a),
        Command::Enroll(a) => enroll(a),
        Command::Account(a) => account(a),
        Command::Demo(a) => demo(a),
        Command::Service(a) => service(a),
        Command::Completions(a) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(a.shell, &mut command, "p2psip", &mut std::io::stdout());
            Ok(())
        }
        Command::Man(_) => {
            let page = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            page.render(&mut std::io::stdout()).context("cannot write the manual page")
        }
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
    let overrides = args.overrides();
    // The enrolled identity and signed document in the data directory the file and flags
    // name; the document's settings go between the file's and the flags'.
    let mut named = config.clone();
    named.apply(overrides.clone());
    let enrolled = daemon::files::data_dir::load(&named.data_dir()?, daemon::unix_now(), &daemon::os_random())?;
    if let Some(enrolled) = &enrolled {
        config.apply_document(&enrolled.config);
    }
    config.apply(overrides);
    // One thread: the event loop owns the whole peer, so more threads add nothing but a
    // cross-thread wakeup (reactor on a worker, loop on this thread) for every datagram.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start tokio")?;
    let result = runtime.block_on(daemon::run(config, enrolled));
    // Connection tasks still reading are cut here rather than waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(result?)
}

fn ca(args: CaArgs) -> anyhow::Result<()> {
    match args.command {
        CaCommand::Init(a) => {
            let opts = a.options();
            let made = daemon::ca::files::init(&opts, daemon::unix_now(), &daemon::os_random())?;
            println!(
                "created the enrollment CA for {} (overlay {}) in {}",
                made.config.domain,
                made.config.overlay,
                opts.dir.display()
            );
            println!("root SHA-256 fingerprint {}", made.root_fingerprint);
            Ok(())
        }
        CaCommand::Reissue(a) => {
            let doc = daemon::ca::files::reissue(&a.options(), daemon::unix_now(), &daemon::os_random())?;
            println!("signed the configuration document for {}, sequence {}", doc.overlay, doc.sequence);
            Ok(())
        }
        CaCommand::Serve(a) => {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start tokio")?;
            runtime.block_on(async {
                let server = daemon::ca::server::CaServer::bind(&a.options()).await?;
                let verify = match server.verify {
                    p2psip::enrollment::desk::VerifyMode::None => "none",
                    p2psip::enrollment::desk::VerifyMode::Email => "email",
                };
                println!(
                    "p2psip ca: serving https://{} for {} (verify {verify}, {} names issued); root SHA-256 fingerprint {}",
                    server.addr, server.domain, server.issued, server.root_fingerprint
                );
                server.run_until_signal().await
            })?;
            runtime.shutdown_timeout(Duration::from_secs(1));
            Ok(())
        }
    }
}

fn enroll(args: EnrollArgs) -> anyhow::Result<()> {
    use daemon::client::enroll::{EnrollOptions, EnrollResult};
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => Config::default().data_dir()?,
    };
    let opts = EnrollOptions {
        aor: args.aor,
        ca_url: args.ca,
        data_dir: data_dir.clone(),
        ca_cert: args.ca_cert,
        ca_fingerprint: args.ca_fingerprint,
        token: args.token,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start tokio")?;
    match runtime.block_on(daemon::client::enroll::enroll(&opts, daemon::unix_now()))? {
        EnrollResult::Enrolled { aor, renewal, not_after, new_key } => {
            let how = if renewal { "renewed" } else { "enrolled" };
            let key = if new_key { "new key" } else { "existing key" };
            let until = i64::try_from(not_after)
                .ok()
                .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                .unwrap_or_else(|| format!("{not_after} (Unix time)"));
            println!("{how} {aor} ({key}); certificate valid until {until}; stored in {}", data_dir.display());
        }
        EnrollResult::Pending { aor, mailed_to } => {
            println!(
                "verification pending: the CA mailed a token for {aor} to {mailed_to}; run this command again with --token TOKEN"
            );
        }
    }
    Ok(())
}

fn demo(args: DemoArgs) -> anyhow::Result<()> {
    daemon::demo::run(args.options())
}

fn account(args: AccountArgs) -> anyhow::Result<()> {
    let config = Config { data_dir: args.data_dir.clone(), ..Config::default() };
    let dir = config.data_dir()?;
    match args.command {
        AccountCommand::Add { aor, password_stdin, without_certificate } => {
            // Refuse before asking for a password that could not be used.
            if !without_certificate {
                daemon::files::accounts::check_certificate(&dir, &aor)?;
            }
            let password = read_password(password_stdin)?;
            let aor = daemon::files::accounts::add(&dir, &aor, &password, without_certificate)?;
            println!("account {aor} saved in {}", daemon::files::accounts::accounts_path(&dir).display());
        }
        AccountCommand::List => {
            for a in daemon::files::accounts::load(&dir)?.iter() {
                println!("{}", a.aor);
            }
        }
        AccountCommand::Remove { aor } => {
            let aor = daemon::files::accounts::remove(&dir, &aor)?;
            println!("account {aor} removed");
        }
    }
    Ok(())
}

/// The password: stdin's first line, or typed at a terminal (echoed: p2psip has no
/// terminal-control dependency; prefer --password-stdin in scripts and shared screens).
fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    use std::io::BufRead;
    if !from_stdin {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!("no password: pass --password-stdin and pipe it in, or run at a terminal");
        }
        eprint!("password for the account: ");
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("cannot read the password")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        anyhow::bail!("the password is empty");
    }
    Ok(password)
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

fn doctor(args: DoctorArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start tokio")?;
    let status = runtime.block_on(daemon::fetch_status(args.http, STATUS_TIMEOUT))?;
    let strings = |key: &str| -> Vec<String> {
        status[key]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    let stun = daemon::client::doctor::probe_stun(&strings("stun_servers"));
    let turn = daemon::client::doctor::probe_turn(&strings("turn_servers"));
    print!("{}", cli::doctor::report(&status, &stun, &turn));
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

fn messages(args: MessagesArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start tokio")?;
    let answer = runtime.block_on(daemon::fetch_json(args.http, "/messages", STATUS_TIMEOUT))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", cli::messages::summary(&answer));
    }
    Ok(())
}

fn web(args: cli::WebArgs) -> anyhow::Result<()> {
    let token = if args.no_token {
        None
    } else {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start tokio")?;
        let status = runtime.block_on(daemon::fetch_json(args.http, "/status", STATUS_TIMEOUT))?;
        let dir = status["data_dir"].as_str().context("the node did not say where its data directory is")?;
        let token = p2psip::daemon::files::token::read(std::path::Path::new(dir)).with_context(|| {
            format!(
                "cannot read {}: run this as the user who runs the node",
                p2psip::daemon::files::token::path(dir.as_ref()).display()
            )
        })?;
        Some(token)
    };
    println!("{}", cli::web::page_url(args.http, token.as_deref()));
    Ok(())
}

fn service(args: cli::ServiceArgs) -> anyhow::Result<()> {
    use p2psip::daemon::service::{install, uninstall, unit_dir, Unit};
    match args.command {
        cli::ServiceCommand::Install { system, config, unit_dir: dir, .. } => {
            let binary = std::env::current_exe().context("cannot tell where this p2psip binary is")?;
            let config = config.map(|c| std::path::absolute(&c).unwrap_or(c));
            let unit = Unit { binary, config, system };
            let path = install(&unit, &unit_dir(dir.as_deref(), system)?)?;
            let ctl = if system { "systemctl" } else { "systemctl --user" };
            println!("wrote {}", path.display());
            println!("start it now and with every session:  {ctl} daemon-reload && {ctl} enable --now p2psip");
            println!("its log:  journalctl {}-u p2psip -f", if system { "" } else { "--user " });
        }
        cli::ServiceCommand::Uninstall { system, unit_dir: dir, .. } => {
            let dir = unit_dir(dir.as_deref(), system)?;
            if uninstall(&dir)? {
                println!("removed {}", dir.join(p2psip::daemon::service::UNIT_NAME).display());
            } else {
                println!("no p2psip unit in {}", dir.display());
            }
        }
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

/// A log line for the journal: the syslog priority of its level (`<3>` error, `<4>` warning,
/// `<6>` info, `<7>` debug and trace), then the usual line without its timestamp and level.
struct JournalFormat {
    inner: tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Full, ()>,
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JournalFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.inner.format_event(ctx, writer, event)
    }
}

/// Logs to stderr. RUST_LOG sets the filter (default `info`, `warn` for `sim`); each -v raises p2psip's own
/// level on top of it (debug, then trace). Without RUST_LOG, the ICE and TURN crates say only
/// their errors: their warnings are about the far side's packets (a check answered late, an
/// unknown transaction), which an attacker can provoke at will.
fn init_logging(verbose: u8, quiet: bool) {
    let default = if quiet { tracing::Level::WARN } else { tracing::Level::INFO };
    let mut filter = EnvFilter::builder().with_default_directive(default.into()).from_env_lossy();
    if std::env::var_os("RUST_LOG").is_none() {
        for quiet_crate in ["rtc_ice=error", "rtc_turn=error", "rtc_stun=error", "is=error"] {
            if let Ok(d) = quiet_crate.parse() {
                filter = filter.add_directive(d);
            }
        }
    }
    let level = match verbose {
        0 => None,
        1 => Some("p2psip=debug"),
        _ => Some("p2psip=trace"),
    };
    if let Some(directive) = level.and_then(|d| d.parse().ok()) {
        filter = filter.add_directive(directive);
    }
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // Under systemd (`p2psip service`) stderr is the journal (JOURNAL_STREAM, systemd.exec(5)):
    // each line starts with its syslog priority (sd-daemon(3)'s `<6>`), and carries neither a
    // timestamp (the journal stamps it) nor colour codes.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        let inner = tracing_subscriber::fmt::format().without_time().with_level(false).with_ansi(false);
        logs.with_ansi(false).event_format(JournalFormat { inner }).init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
}
