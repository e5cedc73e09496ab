//! `p2psip messages`: its flags, and the human-readable form of a node's `/messages` answer.

use std::fmt::Write;
use std::net::SocketAddr;

use clap::Args;
use serde_json::Value;

/// List the offline messages for this node's user: those waiting in the overlay for a phone
/// to register, and those already delivered (when, and to which phone).
///
/// A MESSAGE sent to a user whose phones are all offline is sealed to that user's encryption
/// key and kept in their mailbox in the overlay for up to a week; the user's node hands it to
/// their phone as soon as one registers, then deletes it. Asks the node's local HTTP API
/// (GET /messages). Exits 1 with a message when no node answers.
#[derive(Debug, Clone, Args)]
#[command(verbatim_doc_comment)]
pub struct MessagesArgs {
    /// The node's HTTP status API address (its `--http`)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5090")]
    pub http: SocketAddr,

    /// Print the JSON answer instead: `aor`, `waiting` (id, from, display, date, content_type,
    /// body, expires_at) and `delivered` (id, device, from, display, date, body, delivered_at,
    /// expires_at)
    #[arg(long)]
    pub json: bool,
}

/// One block per message: waiting first, then delivered, newest first.
pub fn summary(answer: &Value) -> String {
    let mut out = String::new();
    let Some(aor) = answer["aor"].as_str() else {
        return "this node has no enrolled user: no mailbox (p2psip enroll)\n".to_owned();
    };
    let empty = Vec::new();
    let waiting = answer["waiting"].as_array().unwrap_or(&empty);
    let delivered = answer["delivered"].as_array().unwrap_or(&empty);
    let _ = writeln!(out, "mailbox of {aor}: {} waiting, {} delivered", waiting.len(), delivered.len());
    let from = |m: &Value| match (m["display"].as_str().filter(|d| !d.is_empty()), m["from"].as_str()) {
        (Some(d), Some(f)) => format!("\"{d}\" <{f}>"),
        (None, Some(f)) => f.to_owned(),
        _ => "?".to_owned(),
    };
    for m in waiting {
        let _ = writeln!(out, "\nwaiting    from {}, sent {}", from(m), m["date"].as_str().unwrap_or("?"));
        let _ = writeln!(out, "           {}", m["body"].as_str().unwrap_or("").replace('\n', "\n           "));
    }
    for m in delivered {
        let when = m["delivered_at"].as_u64().map(crate::identity::caller::http_date).unwrap_or_else(|| "?".into());
        let _ = writeln!(out, "\ndelivered  {when} to {}", m["device"].as_str().unwrap_or("?"));
        let _ = writeln!(out, "           from {}, sent {}", from(m), m["date"].as_str().unwrap_or("?"));
        let _ = writeln!(out, "           {}", m["body"].as_str().unwrap_or("").replace('\n', "\n           "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_and_delivered_messages_are_listed() {
        let answer = serde_json::json!({
            "aor": "sip:bob@p2p.test",
            "waiting": [{"id": "aa", "from": "sip:alice@p2p.test", "display": "Alice", "date": "Mon, 07 Dec 2026 10:00:00 GMT",
                         "content_type": "text/plain", "body": "are you there?", "expires_at": 1}],
            "delivered": [{"id": "bb", "device": "<urn:uuid:1>", "from": "sip:carol@p2p.test", "display": "",
                           "date": "Mon, 07 Dec 2026 09:00:00 GMT", "body": "hi", "delivered_at": 1_796_000_000u64, "expires_at": 1}]
        });
        let text = summary(&answer);
        assert!(text.starts_with("mailbox of sip:bob@p2p.test: 1 waiting, 1 delivered"), "{text}");
        assert!(text.contains("from \"Alice\" <sip:alice@p2p.test>"), "{text}");
        assert!(text.contains("are you there?") && text.contains("to <urn:uuid:1>"), "{text}");
        assert!(summary(&serde_json::json!({"aor": null})).contains("no enrolled user"));
    }
}
