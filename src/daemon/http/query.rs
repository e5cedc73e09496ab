//! What the HTTP handlers ask the event loop, which alone owns the peer: a status snapshot,
//! or a lookup (`GET /lookup?key=…`) answered when the peer reports its `LookupDone`.

use serde::Serialize;
use tokio::sync::oneshot;

use super::status::{Node, Status};
use crate::overlay::{Contact, NodeId};
use crate::peer::Place;
use crate::store::{Contact as RegisteredContact, Record, Registration};

pub(crate) enum Query {
    Status(oneshot::Sender<Status>),
    Messages(oneshot::Sender<crate::mailbox::Messages>),
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
    /// Milliseconds from the node taking the request to the answer being ready: the overlay's
    /// share of the request's time, without the HTTP client's.
    pub elapsed_ms: f64,
    /// For an AoR on a node with storage: the record and its replicas (flattened into the
    /// top level of the JSON: `aor`, `registration`, `certificate`, `replicas`).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordAnswer>,
}

impl LookupAnswer {
    /// Sets `elapsed_ms` to the time since `asked`.
    pub fn timed(mut self, asked: std::time::Instant) -> LookupAnswer {
        self.elapsed_ms = (asked.elapsed().as_secs_f64() * 1e3 * 1e3).round() / 1e3;
        self
    }

    /// The answer for a plain lookup of `key` that found `node` over `path`.
    pub fn new(key: NodeId, node: &Contact, path: &[Contact], confirmations: u32) -> LookupAnswer {
        LookupAnswer {
            key: key.to_string(),
            node: node.into(),
            path: path.iter().map(Node::from).collect(),
            hops: path.len(),
            confirmations: confirmations as usize,
            elapsed_ms: 0.0,
            record: None,
        }
    }
}

/// What a lookup of an AoR adds: the registration found, its signer, and each replica place.
#[derive(Debug, Clone, Serialize)]
pub struct RecordAnswer {
    /// The AoR looked up.
    pub aor: String,
    /// The newest valid registration, `null` when no place held a valid copy.
    pub registration: Option<RegistrationAnswer>,
    /// The signer's certificate, from the newest valid copy.
    pub certificate: Option<CertificateAnswer>,
    /// The R+1 places, replica 0 (the primary) first.
    pub replicas: Vec<ReplicaAnswer>,
}

/// `"registration"`: the newest valid registration record found.
#[derive(Debug, Clone, Serialize)]
pub struct RegistrationAnswer {
    /// Where the user can be reached.
    pub contacts: Vec<RegisteredContact>,
    /// The record's expiry, Unix seconds.
    pub expires_at: u64,
    /// The record's sequence number.
    pub seq: u64,
}

/// `"certificate"`: who signed the record.
#[derive(Debug, Clone, Serialize)]
pub struct CertificateAnswer {
    /// The AoR the certificate binds (its subjectAltName).
    pub subject: String,
    /// The issuer's distinguished name.
    pub issuer: String,
}

/// One of `"replicas"`: a place of the record and what it held.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaAnswer {
    /// The replica number i.
    pub replica: u8,
    /// H(K) for 0, H(K‖i) otherwise, 40 hex digits.
    pub replica_key: String,
    /// The node that answered for the place, if the lookup found one.
    pub node: Option<Node>,
    /// The copy it returned verified.
    pub valid: bool,
    /// The copy is valid and as new as the newest found.
    pub current: bool,
    /// The copy's sequence number, if there was one.
    pub seq: Option<u64>,
    /// Why the place failed, if it did.
    pub error: Option<String>,
}

impl LookupAnswer {
    /// The answer to a lookup of `aor`: the plain fields from the first place whose lookup
    /// found a node (the primary's, unless it failed or a read was reported without it).
    pub fn for_record(aor: &str, newest: Option<&Record>, places: &[Place]) -> Result<LookupAnswer, String> {
        let first = places.first().ok_or_else(|| format!("lookup of {aor}: no replica places"))?;
        let primary = places.iter().find(|p| p.node.is_some()).unwrap_or(first);
        let node = primary.node.as_ref().ok_or_else(|| {
            format!("lookup of {aor} failed: {}", primary.error.as_deref().unwrap_or("no node answered"))
        })?;
        let mut answer = LookupAnswer::new(primary.replica_key, node, &primary.path, primary.confirmations);
        let registration = newest.and_then(|r| {
            let reg = Registration::from_payload(&r.payload).ok()?;
            Some(RegistrationAnswer { contacts: reg.contacts, expires_at: r.expires_at, seq: r.seq })
        });
        let certificate = newest.and_then(|r| {
            let leaf = r.signer_chain.first()?;
            let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
            Some(CertificateAnswer { subject: r.owner.to_string(), issuer: cert.issuer().to_string() })
        });
        let replicas = places
            .iter()
            .map(|p| ReplicaAnswer {
                replica: p.replica,
                replica_key: p.replica_key.to_string(),
                node: p.node.as_ref().map(Node::from),
                valid: p.valid,
                current: p.current,
                seq: p.seq,
                error: p.error.clone(),
            })
            .collect();
        answer.record = Some(RecordAnswer { aor: aor.to_owned(), registration, certificate, replicas });
        Ok(answer)
    }
}
