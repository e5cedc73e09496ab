//! What the HTTP handlers ask the event loop, which alone owns the peer: a status snapshot,
//! or a lookup (`GET /lookup?key=…`) answered when the peer reports its `LookupDone`.

use serde::Serialize;
use tokio::sync::oneshot;

use super::status::{Node, Status};
use crate::overlay::{Contact, NodeId};

pub(crate) enum Query {
    Status(oneshot::Sender<Status>),
    /// `key` as the user gave it ([`NodeId::from_user_key`]); a failure is one line of text.
    Lookup {
        key: String,
        reply: oneshot::Sender<Result<LookupAnswer, String>>,
    },
}

/// The JSON body of a successful `GET /lookup`. Field names are a contract with
/// `p2psip lookup --json`.
#[derive(Debug, Clone, Serialize)]
pub struct LookupAnswer {
    /// The key's ID, 40 hex digits.
    pub key: String,
    /// The node responsible for the key: the first node at or after it on the ring.
    pub node: Node,
    /// The nodes asked, in order.
    pub path: Vec<Node>,
    /// `path`'s length.
    pub hops: usize,
    /// How many of the last nodes on `path` were asked to confirm the answer rather than to
    /// route (the node responsible answers for itself): Chord's routing hops are
    /// `hops - confirmations`.
    pub confirmations: usize,
}

impl LookupAnswer {
    pub fn new(key: NodeId, node: &Contact, path: &[Contact], confirmations: u32) -> LookupAnswer {
        LookupAnswer {
            key: key.to_string(),
            node: node.into(),
            path: path.iter().map(Node::from).collect(),
            hops: path.len(),
            confirmations: confirmations as usize,
        }
    }
}
