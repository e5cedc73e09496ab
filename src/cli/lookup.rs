//! `p2psip lookup`: its flags, and the human-readable form of a node's `/lookup` answer.

use std::fmt::Write;
use std::net::SocketAddr;

use clap::Args;
use serde_json::Value;

/// Ask a running node which overlay node is responsible for KEY, and how it found out.
///
/// KEY is either a Node ID (40 hex digits) or any other text, such as an AoR
/// (sip:alice@p2p.test): its ID is the SHA-1 of the text's UTF-8 bytes exactly as typed, so
/// `alice@p2p.test` and `sip:alice@p2p.test` are different keys. The node runs a Chord lookup
/// and reports the responsible node (the first node at or after the key on the ring) and the
/// nodes it asked on the way. Exits 1 with one line of explanation if the lookup fails.
#[derive(Debug, Clone, Args)]
#[command(verbatim_doc_comment)]
pub struct LookupArgs {
    /// A 40-hex Node ID, or text (e.g. an AoR) whose SHA-1 is the key
    pub key: String,

    /// The node's HTTP status API address (its `--http`)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5090")]
    pub http: SocketAddr,

    /// Print the JSON answer (`key`, `node`, `path`, `hops`, `confirmations`: how many of the
    /// last nodes on the path were asked to confirm the answer) instead of a summary
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
    out
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
    }
}
