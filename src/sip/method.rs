//! SIP request methods (RFC 3261 §7.1 and the extensions p2psip routes).

use std::fmt;

use super::syntax::is_token;

/// A request method. Extension methods are kept by name (methods are case-sensitive,
/// RFC 3261 §7.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// Starts a session (RFC 3261 §13).
    Invite,
    /// Confirms a final answer to an INVITE (§13.2.2.4, §17.1.1.3).
    Ack,
    /// Ends a session (§15).
    Bye,
    /// Cancels a pending request (§9).
    Cancel,
    /// Binds an AoR to contacts (§10).
    Register,
    /// Asks for capabilities (§11).
    Options,
    /// Mid-session information (RFC 6086).
    Info,
    /// Changes session parameters before the answer (RFC 3311).
    Update,
    /// Acknowledges a reliable provisional response (RFC 3262).
    Prack,
    /// Subscribes to an event package (RFC 6665).
    Subscribe,
    /// Reports an event to a subscriber (RFC 6665).
    Notify,
    /// Publishes event state (RFC 3903).
    Publish,
    /// An instant message (RFC 3428).
    Message,
    /// Asks to contact a third party (RFC 3515).
    Refer,
    /// Any other method, as written (case-sensitive, §7.1).
    Other(String),
}

impl Method {
    /// Parses a method token; `None` when it is not an RFC 3261 `token`.
    pub fn from_bytes(b: &[u8]) -> Option<Method> {
        Some(match b {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"REGISTER" => Method::Register,
            b"OPTIONS" => Method::Options,
            b"INFO" => Method::Info,
            b"UPDATE" => Method::Update,
            b"PRACK" => Method::Prack,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"PUBLISH" => Method::Publish,
            b"MESSAGE" => Method::Message,
            b"REFER" => Method::Refer,
            other if is_token(other) => Method::Other(String::from_utf8(other.to_vec()).ok()?),
            _ => return None,
        })
    }

    /// The method's name as written in a request line.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Publish => "PUBLISH",
            Method::Message => "MESSAGE",
            Method::Refer => "REFER",
            Method::Other(s) => s,
        }
    }

    /// True for the methods this crate knows by name.
    pub fn is_known(&self) -> bool {
        !matches!(self, Method::Other(_))
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
