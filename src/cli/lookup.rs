//! `p2psip lookup`: its flags, and the human-readable form of a node's `/lookup` answer.

use std::fmt::Write;
use std::net::SocketAddr;

use clap::Args;
use serde_json::Value;

/// Ask a running node which overlay node is responsible for KEY, and how it found out; for an
/// AoR, also fetch its signed registration from every replica place.
///
/// KEY is either a Node ID (40 hex digits) or any other text, such as an AoR
/// (sip:alice@p2p.test): its ID is the SHA-1 of the text's UTF-8 bytes exactly as typed, so
/// `alice@p2p.test` and `sip:alice@p2p.test` are different keys. The node runs a Chord lookup
/// and reports the responsible node (the first node at or after the key on the ring) and the
/// nodes it asked on the way.
///
/// When KEY is an AoR and the node stores records (its data directory holds the overlay's
/// root), the node asks the R+1 places H(K), H(K‖1) … H(K‖R) in parallel, verifies every copy
/// and shows the newest valid registration (contacts, expiry, sequence number), the signer's
/// certificate (subject AoR and issuer), and for each place the node that answered and
/// whether its copy was valid and current. Exits 1 with one line of explanation if the lookup
/// fails or no place holds a valid copy.
#[derive(Debug, Clone, Args)]
#[command(verbatim_doc_comment)]
pub struct LookupArgs {
    /// A 40-hex Node ID, or text (e.g. an AoR) whose SHA-1 is the key
    pub key: String,

    /// The node's HTTP status API address (its `--http`)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5090")]
    pub http: SocketAddr,

    /// Print the JSON answer instead of a summary: `key`, `node`, `path`, `hops`, `confirmations`
    /// (how many of the last nodes on the path were asked to confirm the answer); for an AoR
    /// also `aor`, `registration`, `certificate` and `replicas`
    #[arg(long)]
    pub json: bool,
}

impl LookupArgs {
    /// The status API path, with the key percent-encoded.
    pub fn path(&self) -> String {
        let mut path = String::from("/lookup?key=");
        for b in self.key.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                path.push(char::from(b));
            } else {
                let _ = write!(path, "%{b:02X}");
            }
        }
        path
    }
}

/// The responsible node, then one line per hop.
pub fn summary(answer: &Value) -> String {
    let node = |v: &Value| format!("{} at {}", v["node_id"].as_str().unwrap_or("?"), v["addr"].as_str().unwrap_or("?"));
    let mut out = String::new();
    let _ = writeln!(out, "key           {}", answer["key"].as_str().unwrap_or("?"));
    let _ = writeln!(out, "responsible   {}", node(&answer["node"]));
    let _ = writeln!(out, "hops          {}", answer["hops"]);
    if let Some(c) = answer["confirmations"].as_u64().filter(|c| *c > 0) {
        let _ =
            writeln!(out, "  of which the last {c} confirmed the answer (the node responsible answering for itself)");
    }
    if let Value::Array(path) = &answer["path"] {
        for (i, hop) in path.iter().enumerate() {
            let _ = writeln!(out, "  {:>2}. {}", i + 1, node(hop));
        }
    }
    let Value::Array(replicas) = &answer["replicas"] else { return out };
    let _ = writeln!(out, "aor           {}", answer["aor"].as_str().unwrap_or("?"));
    match &answer["registration"] {
        Value::Object(reg) => {
            let _ = writeln!(out, "registration  seq {} expires at {} (Unix)", reg["seq"], reg["expires_at"]);
            if let Some(Value::Array(contacts)) = reg.get("contacts") {
                for c in contacts {
                    let _ = writeln!(
                        out,
                        "  contact     {} (expires at {})",
                        c["uri"].as_str().unwrap_or("?"),
                        c["expires_at"]
                    );
                }
            }
        }
        _ => {
            let _ = writeln!(out, "registration  none: no place holds a valid copy");
        }
    }
    if let Value::Object(cert) = &answer["certificate"] {
        let _ = writeln!(out, "certificate   {}", cert["subject"].as_str().unwrap_or("?"));
        let _ = writeln!(out, "  issuer      {}", cert["issuer"].as_str().unwrap_or("?"));
    }
    let _ = writeln!(out, "replicas      {}", replicas.len());
    for r in replicas {
        let holder = match &r["node"] {
            Value::Null => "no node".to_owned(),
            n => node(n),
        };
        let verdict = match (r["valid"].as_bool(), r["current"].as_bool()) {
            (Some(true), Some(true)) => "valid, current".to_owned(),
            (Some(true), _) => "valid, stale".to_owned(),
            _ => format!("invalid: {}", r["error"].as_str().unwrap_or("?")),
        };
        let _ =
            writeln!(out, "  {:>2}. {}  {holder}  {verdict}", r["replica"], r["replica_key"].as_str().unwrap_or("?"));
    }
    out
}

/// The AoR of a record lookup that found no valid copy, if this answer is one.
pub fn record_missing(answer: &Value) -> Option<&str> {
    let aor = answer["aor"].as_str()?;
    answer["registration"].is_null().then_some(aor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_encoded() {
        let args =
            LookupArgs { key: "sip:alice@p2p.test".into(), http: "127.0.0.1:5090".parse().unwrap(), json: false };
        assert_eq!(args.path(), "/lookup?key=sip%3Aalice%40p2p.test");
    }

    #[test]
    fn summary_names_the_node_and_each_hop() {
        let answer = serde_json::json!({
            "key": "ab", "node": {"node_id": "cd", "addr": "127.0.0.1:5070"},
            "path": [{"node_id": "ef", "addr": "127.0.0.2:5070"}, {"node_id": "cd", "addr": "127.0.0.1:5070"}],
            "hops": 2,
        });
        let s = summary(&answer);
        assert!(s.contains("responsible   cd at 127.0.0.1:5070"), "{s}");
        assert!(s.contains("   2. cd at 127.0.0.1:5070"), "{s}");
        assert!(s.contains("hops          2"), "{s}");
        assert!(!s.contains("replicas"), "{s}");
        assert_eq!(record_missing(&answer), None);
    }

    #[test]
    fn record_summary_shows_registration_certificate_and_places() {
        let answer = serde_json::json!({
            "key": "ab", "node": {"node_id": "cd", "addr": "127.0.0.1:5070"}, "path": [], "hops": 0,
            "aor": "sip:alice@p2p.test",
            "registration": {"contacts": [{"uri": "sip:alice@127.0.0.1:5070", "expires_at": 9}], "expires_at": 9, "seq": 3},
            "certificate": {"subject": "sip:alice@p2p.test", "issuer": "CN=p2p.test CA"},
            "replicas": [
                {"replica": 0, "replica_key": "ab", "node": {"node_id": "cd", "addr": "127.0.0.1:5070"},
                 "valid": true, "current": true, "seq": 3, "error": null},
                {"replica": 1, "replica_key": "ef", "node": null, "valid": false, "current": false, "seq": null,
                 "error": "no answer (timeout)"},
            ],
        });
        let s = summary(&answer);
        assert!(s.contains("registration  seq 3"), "{s}");
        assert!(s.contains("contact     sip:alice@127.0.0.1:5070"), "{s}");
        assert!(s.contains("issuer      CN=p2p.test CA"), "{s}");
        assert!(s.contains("0. ab  cd at 127.0.0.1:5070  valid, current"), "{s}");
        assert!(s.contains("1. ef  no node  invalid: no answer (timeout)"), "{s}");
        assert_eq!(record_missing(&answer), None);
        let mut missing = answer.clone();
        missing["registration"] = Value::Null;
        assert_eq!(record_missing(&missing), Some("sip:alice@p2p.test"));
    }
}
