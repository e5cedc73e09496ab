//! `p2psip status`: its flags, and the human-readable summary of a node's `/status` JSON.

use std::fmt::Write;
use std::net::SocketAddr;

use clap::Args;
use serde_json::Value;

/// Show a running node's status: its ID, ring neighbours, addresses, uptime and counters.
///
/// Asks the node's local HTTP API (GET /status). Exits 1 with a message when no node answers.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The node's HTTP status API address (its `--http`)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5090")]
    pub http: SocketAddr,

    /// Print the raw JSON instead of a summary
    #[arg(long)]
    pub json: bool,
}

/// A few aligned lines. Counters are printed generically, so new ones appear without a change
/// here; missing fields print as `?` rather than failing.
pub fn summary(status: &Value) -> String {
    let text = |key: &str| match &status[key] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let node_id = match &status["node_id"] {
        Value::String(s) => s.clone(),
        _ => "?".into(),
    };
    let neighbour = |v: &Value| match (v["node_id"].as_str(), v["addr"].as_str()) {
        (Some(id), Some(addr)) => format!("{id} at {addr}"),
        _ => "-".into(),
    };
    let overlay = &status["overlay"];
    let successor = status["successors"].as_array().and_then(|s| s.first()).map(neighbour).unwrap_or("-".into());
    let fingers = status["fingers"].as_array().map(|f| f.len().to_string()).unwrap_or("?".into());
    let uptime = status["uptime_secs"].as_u64().map(format_duration).unwrap_or_else(|| "?".into());
    let tx = &status["transactions"];
    let rows = [
        ("node id", node_id),
        ("ring", format!("{} ({})", overlay["name"].as_str().unwrap_or("?"), overlay["state"].as_str().unwrap_or("?"))),
        ("predecessor", neighbour(&status["predecessor"])),
        ("successor", successor),
        ("fingers", format!("{fingers} distinct")),
        ("version", text("version")),
        ("uptime", uptime),
        ("overlay", format!("{} (UDP, TCP)", text("listen"))),
        ("proxy", format!("{} (UDP, TCP)", text("proxy"))),
        ("http", format!("{} (web page: p2psip web)", text("http"))),
        ("domain", text("domain")),
        ("transactions", format!("{} server, {} client in progress", tx["server"], tx["client"])),
    ];
    for (name, value) in rows {
        let _ = writeln!(out, "{name:<14}{value}");
    }
    if let Some(aor) = status["identity"]["aor"].as_str() {
        let issuer = status["identity"]["issuer"].as_str().unwrap_or("?");
        let _ = writeln!(out, "{:<14}{aor} (issued by {issuer})", "identity");
    }
    let nat = &status["nat"];
    if nat.is_object() {
        let mapped = nat["mapped"].as_str().unwrap_or("not learned yet");
        let mapping = match nat["mapping"].as_str().unwrap_or("unknown") {
            "none" => "no NAT: the address is the node's own".to_owned(),
            "endpoint-independent" => {
                "behind a NAT that maps every destination alike (endpoint-independent)".to_owned()
            }
            "address-dependent" => "behind a NAT that maps each destination apart (address-dependent)".to_owned(),
            "unknown" => "NAT behaviour not known yet (it takes two STUN servers)".to_owned(),
            other => other.to_owned(),
        };
        let _ = writeln!(out, "{:<14}{mapped}, {mapping}", "public addr");
    } else {
        let _ = writeln!(out, "{:<14}not checked (no STUN server: --stun or [nat] stun)", "public addr");
    }
    let role = match (status["role"].as_str(), nat["reachable"].as_bool()) {
        (Some("peer"), Some(true)) => "peer on the ring (a dial-back from another node reached this one)".to_owned(),
        (Some("peer"), _) => "peer on the ring".to_owned(),
        (Some("client"), Some(false)) => {
            "client, off the ring: no dial-back reached this node (a NAT or firewall filters)".to_owned()
        }
        (Some("client"), _) => "client, off the ring (--role client)".to_owned(),
        (Some("deciding"), _) => "deciding (asking another node for a dial-back)".to_owned(),
        (Some(other), _) => other.to_owned(),
        (None, _) => "?".to_owned(),
    };
    let _ = writeln!(out, "{:<14}{role}", "role");
    match (status["role"].as_str(), status["edge"]["addr"].as_str()) {
        (Some("client"), Some(addr)) => {
            let _ = writeln!(out, "{:<14}{addr} (requests for our user come through it)", "edge");
        }
        (Some("client"), None) => {
            let _ = writeln!(out, "{:<14}none yet", "edge");
        }
        (Some("peer"), _) => {
            let _ = writeln!(out, "{:<14}{} served as their edge", "clients", status["clients"].as_u64().unwrap_or(0));
        }
        _ => {}
    }
    // The phones registered here, one line each.
    if let Some(phones) = status["phones"].as_array() {
        let _ = writeln!(out, "{:<14}{} registered", "phones", phones.len());
        for p in phones {
            let _ = writeln!(
                out,
                "  {} at {} ({} from {}, {} s left)",
                p["aor"].as_str().unwrap_or("?"),
                p["contact"].as_str().unwrap_or("?"),
                p["transport"].as_str().unwrap_or("?"),
                p["source"].as_str().unwrap_or("?"),
                p["expires_in_secs"],
            );
        }
    }
    let mdns = &status["mdns"];
    if mdns.is_object() {
        let state = if mdns["deciding"] == true {
            format!("listening for nodes of this overlay before joining ({} heard)", mdns["heard"])
        } else if mdns["on_ring"] == true {
            "announced on the local network (mDNS), on a ring".to_owned()
        } else {
            "announced on the local network (mDNS), joining".to_owned()
        };
        let _ = writeln!(out, "{:<14}{state}", "lan");
    }
    // Calls in progress whose media this node anchors, one line each.
    if let Some(calls) = status["calls"].as_array().filter(|c| !c.is_empty()) {
        let _ = writeln!(out, "calls");
        for c in calls {
            let path = match c["path"].as_str() {
                Some("host") => "direct between the nodes",
                Some("srflx") => "through the NATs' mappings",
                Some("relay") => "through a TURN relay",
                Some(other) => other,
                None => "no path yet",
            };
            let _ = writeln!(
                out,
                "  {} ({}), {path}: {} packets in, {} out",
                c["peer_aor"].as_str().unwrap_or("?"),
                c["state"].as_str().unwrap_or("?"),
                c["packets_in"],
                c["packets_out"],
            );
        }
    }
    // Offline messages and buddies, in words.
    let mailbox = &status["mailbox"];
    if mailbox.is_object() {
        let _ = writeln!(
            out,
            "{:<14}{} waiting for us, {} delivered; {} held here for others",
            "messages",
            mailbox["waiting_for_me"].as_u64().unwrap_or(0),
            mailbox["delivered"].as_u64().unwrap_or(0),
            mailbox["held_for_others"].as_u64().unwrap_or(0),
        );
    }
    let presence = &status["presence"];
    if let Some(buddies) = presence["buddies"].as_object() {
        let _ = writeln!(
            out,
            "{:<14}we are {}; {} watching us, {} pending",
            "presence",
            presence["state"].as_str().unwrap_or("?"),
            presence["watchers"].as_u64().unwrap_or(0),
            presence["pending"].as_u64().unwrap_or(0),
        );
        for (aor, state) in buddies {
            let _ = writeln!(out, "  {aor} {}", state.as_str().unwrap_or("?"));
        }
    }
    if let Value::Object(counters) = &status["counters"] {
        let _ = writeln!(out, "counters");
        let width = counters.keys().map(String::len).max().unwrap_or(0);
        for (name, value) in counters {
            let _ = writeln!(out, "  {name:<width$}  {value}");
        }
    }
    match &status["storage"] {
        Value::Object(storage) => {
            let _ = writeln!(out, "storage");
            let width = storage.keys().map(String::len).max().unwrap_or(0);
            for (name, value) in storage {
                let _ = writeln!(out, "  {name:<width$}  {value}");
            }
        }
        _ => {
            let _ = writeln!(out, "storage       off (no identity/root.pem in the data directory)");
        }
    }
    out
}

fn format_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m {s}s"),
        _ => format!("{d}d {h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_shows_the_ring() {
        let status = serde_json::json!({
            "node_id": "aa", "predecessor": {"node_id": "99", "addr": "127.0.0.2:5070"},
            "successors": [{"node_id": "bb", "addr": "127.0.0.3:5070"}], "fingers": [{}, {}],
            "overlay": {"name": "p2p.test", "state": "joined"},
        });
        let s = summary(&status);
        assert!(s.contains("predecessor   99 at 127.0.0.2:5070"), "{s}");
        assert!(s.contains("successor     bb at 127.0.0.3:5070"), "{s}");
        assert!(s.contains("fingers       2 distinct"), "{s}");
        assert!(s.contains("ring          p2p.test (joined)"), "{s}");
    }

    #[test]
    fn summary_lists_addresses_and_counters() {
        let status = serde_json::json!({
            "node_id": "ab", "version": "0.1.0", "listen": "127.0.0.1:5070", "proxy": "127.0.0.1:5060",
            "http": "127.0.0.1:5090", "uptime_secs": 3725, "domain": "p2p.test",
            "counters": {"messages_in": 3, "parse_errors": 1},
            "transactions": {"server": 2, "client": 0},
        });
        let s = summary(&status);
        assert!(s.contains("overlay       127.0.0.1:5070 (UDP, TCP)"), "{s}");
        assert!(s.contains("uptime        1h 2m 5s"), "{s}");
        assert!(s.contains("  parse_errors  1"), "{s}");
        assert!(s.contains("2 server, 0 client in progress"), "{s}");
        assert!(s.contains("node id       ab"), "{s}");
        // Thirteen rows, the public address that no STUN server checked, and the role.
        assert_eq!(summary(&Value::Null).lines().count(), 15, "missing fields do not fail");
        assert!(s.contains("public addr   not checked"), "{s}");
        assert!(s.contains("storage       off"), "{s}");
        let mut with_storage = status.clone();
        with_storage["storage"] = serde_json::json!({"records_held": 2, "stores_refused": 1});
        let s = summary(&with_storage);
        assert!(s.contains("storage\n") && s.contains("  stores_refused  1"), "{s}");
        let mut client = status.clone();
        client["role"] = "client".into();
        client["nat"] = serde_json::json!({"mapped": "203.0.113.11:40000", "mapping": "unknown", "reachable": false});
        let s = summary(&client);
        assert!(s.contains("role          client, off the ring: no dial-back reached"), "{s}");
        assert!(s.contains("edge          none yet"), "{s}");
        assert!(s.contains("public addr   203.0.113.11:40000"), "{s}");
        let mut lan = status.clone();
        lan["phones"] = serde_json::json!([{"aor": "sip:alice@p2p.test", "contact": "sip:alice@127.0.0.1:5062",
            "transport": "udp", "source": "127.0.0.1:5062", "expires_in_secs": 590}]);
        lan["mdns"] = serde_json::json!({"deciding": true, "heard": 2, "on_ring": false});
        let s = summary(&lan);
        assert!(s.contains("phones        1 registered\n  sip:alice@p2p.test at sip:alice@127.0.0.1:5062 (udp"), "{s}");
        assert!(s.contains("lan           listening for nodes of this overlay before joining (2 heard)"), "{s}");
        let mut calling = status.clone();
        calling["calls"] = serde_json::json!([{"call_id": "c1", "peer_aor": "sip:bob@p2p.test", "state": "active",
            "path": "srflx", "packets_in": 40, "packets_out": 41, "bytes_in": 6880, "bytes_out": 7052, "started_at": 1}]);
        let s = summary(&calling);
        assert!(
            s.contains("calls\n  sip:bob@p2p.test (active), through the NATs' mappings: 40 packets in, 41 out"),
            "{s}"
        );
        let mut social = status.clone();
        social["mailbox"] = serde_json::json!({"held_for_others": 3, "waiting_for_me": 1, "delivered": 2});
        social["presence"] = serde_json::json!({"state": "open", "watchers": 1, "pending": 2,
            "buddies": {"sip:bob@p2p.test": "closed"}});
        let s = summary(&social);
        assert!(s.contains("messages      1 waiting for us, 2 delivered; 3 held here for others"), "{s}");
        assert!(s.contains("presence      we are open; 1 watching us, 2 pending\n  sip:bob@p2p.test closed"), "{s}");
    }
}
