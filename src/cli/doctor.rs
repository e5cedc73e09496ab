//! `p2psip doctor`: what a user needs to know when something does not work, each line with a
//! one-line hint: the node running, its public address and NAT, the STUN and TURN servers
//! answering, the ring, and the phones registered at the proxy.

use std::fmt::Write;
use std::net::SocketAddr;

use clap::Args;
use serde_json::Value;

use crate::daemon::client::doctor::ServerProbe;

/// Check a running node and the servers it uses, and say what to do about what is wrong.
///
/// Reads the node's local HTTP API (GET /status), then asks each configured STUN and TURN
/// server itself. Exits 1 when no node answers.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// The node's HTTP status API address (its `--http`)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5090")]
    pub http: SocketAddr,
}

/// One finding: what, what was found, and what to do about it (empty when all is well).
struct Line {
    what: &'static str,
    found: String,
    hint: String,
}

/// The report: one line per finding, a hint under each that needs one.
pub fn report(status: &Value, stun: &[ServerProbe], turn: &[ServerProbe]) -> String {
    let mut lines = Vec::new();
    let proxy = status["proxy"].as_str().unwrap_or("?");
    let domain = status["domain"].as_str().unwrap_or("?");
    lines.push(Line {
        what: "node",
        found: format!(
            "running, version {}, up {} s",
            status["version"].as_str().unwrap_or("?"),
            status["uptime_secs"].as_u64().unwrap_or(0)
        ),
        hint: String::new(),
    });
    let state = status["overlay"]["state"].as_str().unwrap_or("?");
    let alone = state == "alone" && status["join"].as_array().is_none_or(Vec::is_empty);
    lines.push(Line {
        what: "ring",
        found: format!("{} ({state})", status["overlay"]["name"].as_str().unwrap_or("?")),
        hint: match state {
            "joined" => String::new(),
            "alone" if alone => "a ring of one: start other nodes with --join pointing at this one".into(),
            "joining" => "still joining: check that the --join address answers (UDP and TCP)".into(),
            _ => "not on the ring: see the node's log".into(),
        },
    });
    let nat = &status["nat"];
    let (public, nat_line) = if nat.is_object() {
        let mapped = nat["mapped"].as_str().map_or_else(|| "not learned".to_owned(), str::to_owned);
        let hint = match nat["mapping"].as_str().unwrap_or("unknown") {
            "none" => String::new(),
            "endpoint-independent" => {
                "behind a NAT that keeps one mapping: a port forward of the overlay port makes the node reachable"
                    .into()
            }
            "address-dependent" => {
                "behind a NAT that maps each destination apart: others cannot reach this node".into()
            }
            _ if nat["mapped"].is_null() => "no STUN server answered: see the servers below".into(),
            _ => "one STUN server answered: give two (--stun twice) to learn the NAT's behaviour".into(),
        };
        (mapped, Line { what: "NAT", found: nat["mapping"].as_str().unwrap_or("unknown").to_owned(), hint })
    } else {
        (
            "not checked".to_owned(),
            Line {
                what: "NAT",
                found: "not checked".into(),
                hint: "no STUN server: give one with --stun stun:HOST or [nat] stun in the config file".into(),
            },
        )
    };
    lines.push(Line { what: "public addr", found: public, hint: String::new() });
    lines.push(nat_line);
    let listen_port = status["listen"].as_str().and_then(|l| l.rsplit(':').next()).unwrap_or("5070").to_owned();
    lines.push(match nat["reachable"].as_bool() {
        Some(true) => Line { what: "reachable", found: "yes (another node's dial-back arrived)".into(), hint: String::new() },
        Some(false) => Line {
            what: "reachable",
            found: "no (no dial-back arrived: a NAT or firewall filters)".into(),
            hint: format!(
                "to be a peer, forward UDP and TCP port {listen_port} to this machine on the router; as a client it works without"
            ),
        },
        None => Line {
            what: "reachable",
            found: "not tested".into(),
            hint: if alone { String::new() } else { "the dial-back has not finished: ask again in a few seconds".into() },
        },
    });
    let role = status["role"].as_str().unwrap_or("?");
    lines.push(Line {
        what: "role",
        found: match role {
            "peer" => format!("peer, serving {} client(s)", status["clients"].as_u64().unwrap_or(0)),
            "client" => "client (no ring position; reached through its edge peer)".into(),
            other => other.to_owned(),
        },
        hint: String::new(),
    });
    if role == "client" {
        let edge = &status["edge"];
        lines.push(match edge["addr"].as_str() {
            Some(addr) => Line { what: "edge", found: format!("bound at {addr}"), hint: String::new() },
            None => Line {
                what: "edge",
                found: "none".into(),
                hint: "no peer has taken this client yet: check the --join address, or the node's log".into(),
            },
        });
    }
    for (kind, probes) in [("STUN", stun), ("TURN", turn)] {
        if probes.is_empty() {
            let hint = if kind == "STUN" { "" } else { "none configured: calls across NATs will need one (--turn)" };
            lines.push(Line { what: kind_label(kind), found: "none configured".into(), hint: hint.into() });
        }
        for p in probes {
            let (found, hint) = match &p.answer {
                Ok(Some(mapped)) => (format!("{} answers (sees this machine at {mapped})", p.uri), String::new()),
                Ok(None) => (format!("{} answers", p.uri), String::new()),
                Err(why) => (format!("{}: {why}", p.uri), "check the address and that UDP to it is allowed".into()),
            };
            lines.push(Line { what: kind_label(kind), found, hint });
        }
    }
    let bindings = status["registrar"]["bindings"].as_u64().unwrap_or(0);
    lines.push(Line {
        what: "phones",
        found: format!("{bindings} registered at the proxy {proxy} (domain {domain})"),
        hint: if bindings == 0 {
            format!("point the phone at {proxy} as its outbound proxy, user@{domain}, with an account from p2psip account add")
        } else {
            String::new()
        },
    });
    let mut out = String::new();
    for l in lines {
        let _ = writeln!(out, "{:<12} {}", l.what, l.found);
        if !l.hint.is_empty() {
            let _ = writeln!(out, "{:<12} -> {}", "", l.hint);
        }
    }
    out
}

fn kind_label(kind: &str) -> &'static str {
    if kind == "STUN" {
        "STUN server"
    } else {
        "TURN server"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_problem_comes_with_a_hint() {
        let status = serde_json::json!({
            "version": "0.1.0", "uptime_secs": 5, "proxy": "127.0.0.1:5060", "domain": "p2p.test",
            "overlay": {"name": "p2p.test", "state": "alone"}, "join": [],
            "nat": {"local": "10.0.0.5:5070", "mapped": "203.0.113.9:40000", "mapping": "address-dependent"},
            "registrar": {"bindings": 0},
        });
        let stun =
            [ServerProbe { uri: "stun:192.0.2.1".into(), answer: Ok(Some("203.0.113.9:40000".parse().unwrap())) }];
        let turn = [ServerProbe { uri: "turn:192.0.2.2".into(), answer: Err("no answer from 192.0.2.2:3478".into()) }];
        let r = report(&status, &stun, &turn);
        assert!(r.contains("public addr  203.0.113.9:40000"), "{r}");
        assert!(
            r.contains("NAT          address-dependent\n             -> behind a NAT that maps each destination apart"),
            "{r}"
        );
        assert!(r.contains("ring         p2p.test (alone)\n             -> a ring of one"), "{r}");
        assert!(r.contains("STUN server  stun:192.0.2.1 answers (sees this machine at 203.0.113.9:40000)\n"), "{r}");
        assert!(r.contains("TURN server  turn:192.0.2.2: no answer from 192.0.2.2:3478\n             -> check"), "{r}");
        assert!(r.contains("phones       0 registered at the proxy 127.0.0.1:5060 (domain p2p.test)\n             -> point the phone at 127.0.0.1:5060"), "{r}");
        let quiet =
            report(&serde_json::json!({"overlay": {"state": "joined"}, "registrar": {"bindings": 1}}), &[], &[]);
        assert!(quiet.contains("NAT          not checked\n             -> no STUN server"), "{quiet}");
        let client = report(
            &serde_json::json!({"listen": "192.168.1.2:5070", "role": "client", "edge": null,
                "nat": {"mapped": "203.0.113.11:5070", "mapping": "unknown", "reachable": false},
                "overlay": {"state": "client"}, "registrar": {"bindings": 1}}),
            &[],
            &[],
        );
        assert!(client.contains("reachable    no (no dial-back arrived"), "{client}");
        assert!(client.contains("-> to be a peer, forward UDP and TCP port 5070"), "{client}");
        assert!(client.contains("role         client (no ring position"), "{client}");
        assert!(client.contains("edge         none\n             -> no peer has taken this client"), "{client}");
    }
}
