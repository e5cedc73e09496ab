//! The `p2psip` command-line contract: help, usage errors, startup errors as one line with a
//! non-zero exit, `status` against a running node and against nothing, config file and flag
//! precedence, and a clean exit 0 on SIGTERM.

use std::net::{TcpListener, UdpSocket};
use std::time::Duration;

use crate::common::{free_addrs, ip, run_p2psip, wait_for, Finished, Node};

const QUICK: Duration = Duration::from_secs(20);

/// The error is exactly one non-empty line on stderr.
fn one_error_line(out: &Finished) -> String {
    let lines: Vec<&str> = out.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got:\n{}", out.stderr);
    assert!(!out.stderr.contains("panicked") && !out.stderr.contains("backtrace"), "{}", out.stderr);
    lines[0].to_string()
}

#[test]
fn help_explains_node_and_status() {
    let out = run_p2psip(&["node", "--help"], QUICK);
    assert!(out.status.success(), "{}", out.stderr);
    for flag in [
        "--config",
        "--data-dir",
        "--listen",
        "--proxy",
        "--http",
        "--join",
        "--advertise",
        "--overlay",
        "--domain",
        "0.0.0.0:5070",
    ] {
        assert!(out.stdout.contains(flag), "node --help lacks {flag}:\n{}", out.stdout);
    }
    let out = run_p2psip(&["status", "--help"], QUICK);
    assert!(out.status.success(), "{}", out.stderr);
    for flag in ["--http", "--json", "127.0.0.1:5090"] {
        assert!(out.stdout.contains(flag), "status --help lacks {flag}:\n{}", out.stdout);
    }
    let out = run_p2psip(&["--help"], QUICK);
    assert!(out.status.success() && out.stdout.contains("node") && out.stdout.contains("status"));
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = run_p2psip(&["node", "--no-such-flag"], QUICK);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--no-such-flag"), "{}", out.stderr);
    let out = run_p2psip(&["node", "--listen", "not-an-address"], QUICK);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
}

#[test]
fn address_in_use_is_one_line_naming_it() {
    let ip41 = ip("127.0.0.41");
    let dir = tempfile::TempDir::new().expect("temp dir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    let node = |l: &str, p: &str, h: &str| {
        run_p2psip(&["node", "--listen", l, "--proxy", p, "--http", h, "--data-dir", data], QUICK)
    };

    // The occupied address is held by this test from the moment it is chosen (port 0: the
    // kernel's pick), so no other process can take it or free it before the node tries it.
    let busy = UdpSocket::bind((ip41, 0)).expect("occupy an overlay address");
    let l = busy.local_addr().expect("local address").to_string();
    let [proxy, http] = free_addrs(ip41, 2).try_into().expect("two addresses");
    let out = node(&l, &proxy.to_string(), &http.to_string());
    assert!(!out.status.success());
    let line = one_error_line(&out);
    assert!(line.contains(&l) && line.contains("in use"), "{line}");
    drop(busy);

    let busy = TcpListener::bind((ip41, 0)).expect("occupy an HTTP address");
    let h = busy.local_addr().expect("local address").to_string();
    let [listen, proxy] = free_addrs(ip41, 2).try_into().expect("two addresses");
    let out = node(&listen.to_string(), &proxy.to_string(), &h);
    assert!(!out.status.success());
    let line = one_error_line(&out);
    assert!(line.contains(&h) && line.contains("HTTP"), "{line}");
    drop(busy);
}

#[test]
fn bad_config_is_one_line() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let cases = [
        ("unknown-key.toml", "listen = \"127.0.0.1:5070\"\nlisen = \"x\"\n", "lisen"),
        ("bad-syntax.toml", "listen = [\n", "line"),
        ("bad-address.toml", "proxy = \"localhost\"\n", "line 1"),
        ("bad-value.toml", "max_datagram_size = 0\n", "max_datagram_size"),
    ];
    for (name, text, expect) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write config");
        let out = run_p2psip(&["node", "--config", path.to_str().expect("utf-8 path")], QUICK);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", out.stderr);
        let line = one_error_line(&out);
        assert!(line.contains(expect), "{name}: {line}");
    }
    let missing = dir.path().join("missing.toml");
    let out = run_p2psip(&["node", "--config", missing.to_str().expect("utf-8 path")], QUICK);
    assert_eq!(out.status.code(), Some(1));
    assert!(one_error_line(&out).contains("missing.toml"));
}

#[test]
fn status_without_a_node_fails_clearly() {
    let [http] = free_addrs(ip("127.0.0.42"), 1).try_into().expect("one address");
    let out = run_p2psip(&["status", "--http", &http.to_string()], QUICK);
    assert_eq!(out.status.code(), Some(1));
    let line = one_error_line(&out);
    assert!(line.contains(&http.to_string()) && line.contains("no node"), "{line}");
}

#[test]
fn status_command_and_api_report_the_node() {
    let node = Node::start_with("127.0.0.43", &["--join", "192.0.2.1:5070", "--domain", "example.test"]);
    let status = node.status_json();
    let node_id = status["node_id"].as_str().expect("node_id");
    assert!(node_id.len() == 40 && node_id.bytes().all(|b| b.is_ascii_hexdigit()), "{status}");
    assert_eq!(status["overlay"]["name"], "p2p.test");
    assert_eq!(status["overlay"]["state"], "joining", "192.0.2.1 never answers: {status}");
    assert!(status["overlay"]["counters"]["rpcs_sent"].is_u64(), "{status}");
    assert!(status["predecessor"].is_null() && status["successors"].is_array() && status["fingers"].is_array());
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["listen"], node.listen.to_string());
    assert_eq!(status["proxy"], node.proxy.to_string());
    assert_eq!(status["http"], node.http.to_string());
    assert_eq!(status["domain"], "example.test");
    assert_eq!(status["join"][0], "192.0.2.1:5070");
    assert!(status["uptime_secs"].is_u64());
    for counter in ["messages_in", "messages_out", "parse_errors"] {
        assert!(status["counters"][counter].is_u64(), "{counter} missing: {status}");
    }
    assert!(status["transactions"]["server"].is_u64() && status["transactions"]["client"].is_u64());
    assert!(node.data_dir().is_dir(), "the data directory is created");
    assert!(node.log().contains("joining the overlay"), "--join is logged");

    let http = node.http.to_string();
    let out = run_p2psip(&["status", "--http", &http, "--json"], QUICK);
    assert!(out.status.success(), "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("status --json prints JSON");
    assert_eq!(json["listen"], node.listen.to_string());

    let out = run_p2psip(&["status", "--http", &http], QUICK);
    assert!(out.status.success(), "{}", out.stderr);
    for text in [node.listen.to_string(), node.proxy.to_string(), "uptime".into(), "parse_errors".into()] {
        assert!(out.stdout.contains(&text), "summary lacks {text}:\n{}", out.stdout);
    }
}

#[test]
fn flags_override_the_config_file() {
    let ip44 = ip("127.0.0.44");
    let [file_listen, file_http, flag_http] = free_addrs(ip44, 3).try_into().expect("three addresses");
    let dir = tempfile::TempDir::new().expect("temp dir");
    let config = dir.path().join("p2psip.toml");
    let [proxy] = free_addrs(ip44, 1).try_into().expect("one address");
    std::fs::write(
        &config,
        format!("listen = \"{file_listen}\"\nproxy = \"{proxy}\"\nhttp = \"{file_http}\"\ndomain = \"file.test\"\n"),
    )
    .expect("write config");
    let node = Node::builder(&flag_http.ip().to_string()).addrs_from_config(flag_http).config(&config).start();
    let status = node.status_json();
    assert_eq!(status["listen"], file_listen.to_string(), "from the file");
    assert_eq!(status["domain"], "file.test", "from the file");
    assert_eq!(status["http"], flag_http.to_string(), "the flag wins");
}

#[test]
fn sigterm_exits_zero() {
    let mut node = Node::start("127.0.0.45");
    // An open connection must not hold up shutdown.
    let _conn = std::net::TcpStream::connect(node.proxy).expect("connect");
    node.process.terminate();
    let status = node.process.wait_exit(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "exit after SIGTERM; log:\n{}", node.log());
    assert!(node.log().contains("shutting down"), "{}", node.log());
    // The addresses are free again.
    let rebind = wait_for(Duration::from_secs(5), || UdpSocket::bind(node.listen).ok());
    assert!(rebind.is_some());
}

#[test]
fn account_needs_a_certificate_or_the_explicit_flag_and_lists_what_was_added() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    let refused = run_p2psip(&["account", "add", "sip:alice@p2p.test", "--data-dir", data], Duration::from_secs(10));
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        refused.stderr.contains("holds no certificate") && refused.stderr.contains("--without-certificate"),
        "{}",
        refused.stderr
    );
    let node = Node::builder("127.0.0.71").accounts(&[("sip:bob@p2p.test", "pw")]).start();
    let node_data = node.data_dir();
    let listed =
        run_p2psip(&["account", "list", "--data-dir", node_data.to_str().expect("path")], Duration::from_secs(10));
    assert!(listed.status.success(), "{}", listed.stderr);
    assert_eq!(listed.stdout, "sip:bob@p2p.test\n");
    assert_eq!(node.status_json()["registrar"]["accounts"], 1);
}

#[test]
fn the_service_unit_passes_systemd_analyze_and_comes_off_again() {
    // systemd's own checker, offline (Debian package `systemd`): unit syntax, the binary.
    let dir = tempfile::TempDir::new().expect("temp dir");
    let units = dir.path().join("units");
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "domain = \"p2p.test\"\n").expect("config");
    let (units_s, config_s) = (units.to_str().expect("utf-8"), config.to_str().expect("utf-8"));
    let out = run_p2psip(&["service", "install", "--unit-dir", units_s, "--config", config_s], QUICK);
    assert!(out.status.success(), "{}", out.stderr);
    let unit = units.join("p2psip.service");
    let text = std::fs::read_to_string(&unit).expect("the unit");
    assert!(text.contains(&format!(" node --config {config_s}\n")) && text.contains("Restart=on-failure"), "{text}");
    assert!(
        out.stdout.contains("systemctl --user daemon-reload && systemctl --user enable --now p2psip"),
        "{}",
        out.stdout
    );
    let verify = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze is not installed (apt-get install -y systemd); this test needs it");
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && complaints.trim().is_empty(), "systemd-analyze: {complaints}");
    let out = run_p2psip(&["service", "uninstall", "--unit-dir", units_s], QUICK);
    assert!(out.status.success() && !unit.exists(), "{}", out.stderr);
}

#[test]
fn completions_and_the_manual_page_come_from_the_command_line_itself() {
    let bash = run_p2psip(&["completions", "bash"], QUICK);
    assert!(
        bash.status.success() && bash.stdout.contains("_p2psip()") && bash.stdout.contains("messages"),
        "{}",
        bash.stderr
    );
    let zsh = run_p2psip(&["completions", "zsh"], QUICK);
    assert!(zsh.stdout.starts_with("#compdef p2psip"), "{}", zsh.stdout);
    let man = run_p2psip(&["man"], QUICK);
    assert!(
        man.status.success() && man.stdout.contains(".TH p2psip 1") && man.stdout.contains("service"),
        "{}",
        man.stderr
    );
}

#[test]
fn under_systemd_log_lines_carry_their_priority_for_the_journal() {
    // systemd sets JOURNAL_STREAM when stderr is the journal (systemd.exec(5)).
    let dir = tempfile::TempDir::new().expect("temp dir");
    let [listen, proxy, http] = free_addrs(ip("127.0.0.1"), 3).try_into().expect("three addresses");
    let log = dir.path().join("stderr");
    let child = crate::common::p2psip(dir.path())
        .args(["node", "--listen", &listen.to_string(), "--proxy", &proxy.to_string(), "--http", &http.to_string()])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("JOURNAL_STREAM", "8:8")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn p2psip node");
    let _node = crate::common::ChildGuard::new(child);
    let line = wait_for(QUICK, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().find(|l| l.contains("p2psip node listening")).map(str::to_owned)
    })
    .expect("the node's first line");
    assert!(line.starts_with("<6>"), "syslog priority first: {line}");
    assert!(!line.contains("INFO") && !line.contains("\u{1b}["), "no level word, no colour: {line}");
    assert!(!line[3..].trim_start().starts_with(char::is_numeric), "no timestamp: {line}");
}
