//! Where a request for an AoR goes: the seam between the proxy and the overlay.
//!
//! Today only the local half exists: phones registered on this node. When registration
//! records (issue 4: signed records stored at H(AoR)) are merged, [`Resolution::AskOverlay`]
//! is where the proxy parks a request while the peer runs the overlay lookup; the peer then
//! calls back with the remote node's overlay contact, and the request is forwarded there with
//! Record-Route. Until then the proxy answers such requests 404.

use std::time::Instant;

use super::accounts::Accounts;
use super::registrar::{Binding, Registrar};

/// What the proxy knows about a target AoR.
#[derive(Debug)]
pub enum Resolution<'a> {
    /// Phones registered here: fork to all of them (RFC 3261 §16.6).
    Local(Vec<&'a Binding>),
    /// The AoR has an account here but no phone is registered: 480 (§21.4.18).
    Offline,
    /// Nobody here serves the AoR: the overlay must be asked (pending until issue 4's records
    /// exist; the proxy answers 404 for now).
    AskOverlay,
}

/// Resolves an AoR against the local registrar and accounts.
pub fn resolve<'a>(aor: &str, registrar: &'a Registrar, accounts: &Accounts, now: Instant) -> Resolution<'a> {
    let bindings = registrar.lookup(aor, now);
    if !bindings.is_empty() {
        return Resolution::Local(bindings);
    }
    if accounts.get(aor).is_some() {
        return Resolution::Offline;
    }
    Resolution::AskOverlay
}
