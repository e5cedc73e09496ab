//! The RFC 4475 corpus and what the node must do with each message, shared by the sans-IO
//! conformance suite (`tests/it/rfc4475.rs`) and the live-daemon test (`tests/it/live_rfc4475.rs`).
#![allow(dead_code)] // each test binary uses its own part of this module

use std::path::PathBuf;

use bytes::Bytes;

pub(crate) fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc4475")
}

pub(crate) fn load(name: &str) -> Bytes {
    let path = corpus_dir().join(format!("{name}.dat"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// What the RFC expects of the node for each message, with the section.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Expect {
    /// Answered with one of these statuses.
    Status(&'static [u16]),
    /// Not answered at all.
    Dropped,
}
use Expect::{Dropped, Status};

/// Every file in the corpus, its RFC 4475 section, and what the node must do with it. For
/// well-formed requests the node answers as the role the Request-URI gives it: the proxy
/// challenges a sender that is no registered phone with 407 before it looks for any target
/// (RFC 3261 §16.3 step 6; docs/security.md, M3) and refuses a request in a dialog it did not Record-Route
/// with 403 (wsinv carries a To tag); the registrar answers 401 (no credentials).
pub(crate) const TABLE: &[(&str, &str, Expect)] = &[
    ("wsinv", "3.1.1.1", Status(&[403])),
    ("intmeth", "3.1.1.2", Status(&[407])),
    ("esc01", "3.1.1.3", Status(&[407])),
    ("escnull", "3.1.1.4", Status(&[401])),
    ("esc02", "3.1.1.5", Status(&[501])),
    ("lwsdisp", "3.1.1.6", Status(&[407])),
    ("longreq", "3.1.1.7", Status(&[407])),
    ("dblreq", "3.1.1.8", Status(&[401])),
    ("semiuri", "3.1.1.9", Status(&[407])),
    ("transports", "3.1.1.10", Status(&[407])),
    ("mpart01", "3.1.1.11", Status(&[407])),
    ("unreason", "3.1.1.12", Dropped),
    ("noreason", "3.1.1.13", Dropped),
    ("badinv01", "3.1.2.1", Status(&[400])),
    ("clerr", "3.1.2.2", Status(&[400])),
    ("ncl", "3.1.2.3", Status(&[400])),
    ("scalar02", "3.1.2.4", Status(&[400])),
    ("scalarlg", "3.1.2.5", Dropped),
    ("quotbal", "3.1.2.6", Status(&[400])),
    ("ltgtruri", "3.1.2.7", Status(&[400])),
    ("lwsruri", "3.1.2.8", Status(&[400])),
    // Tolerated: parsed as the request it is meant to be.
    ("lwsstart", "3.1.2.9", Status(&[407])),
    ("trws", "3.1.2.10", Status(&[407])),
    ("escruri", "3.1.2.11", Status(&[400])),
    // Date does not matter to the node, so the bad time zone is ignored.
    ("baddate", "3.1.2.12", Status(&[407])),
    ("regbadct", "3.1.2.13", Status(&[400])),
    // Tolerated: LWS inside the brackets is skipped.
    ("badaspec", "3.1.2.14", Status(&[407])),
    ("baddn", "3.1.2.15", Status(&[400])),
    ("badvers", "3.1.2.16", Status(&[505])),
    ("mismatch01", "3.1.2.17", Status(&[400])),
    ("mismatch02", "3.1.2.18", Status(&[501])),
    ("bigcode", "3.1.2.19", Dropped),
    ("badbranch", "3.2.1", Status(&[407])),
    ("insuf", "3.3.1", Status(&[400])),
    ("unkscm", "3.3.2", Status(&[416])),
    ("novelsc", "3.3.3", Status(&[416])),
    ("unksm2", "3.3.4", Status(&[401])),
    ("bext01", "3.3.5", Status(&[420])),
    ("invut", "3.3.6", Status(&[407])),
    ("regaut01", "3.3.7", Status(&[401])),
    ("multi01", "3.3.8", Status(&[400])),
    ("mcl01", "3.3.9", Status(&[400])),
    ("bcast", "3.3.10", Dropped),
    ("zeromf", "3.3.11", Status(&[483])),
    ("cparam01", "3.3.12", Status(&[401])),
    ("cparam02", "3.3.13", Status(&[401])),
    ("regescrt", "3.3.14", Status(&[401])),
    ("sdp01", "3.3.15", Status(&[407])),
    ("inv2543", "3.4.1", Status(&[407])),
];
