//! Where a request for an AoR goes: the seam between the proxy and the overlay.
//!
//! The local half is the phones registered on this node. [`Resolution::AskOverlay`] is where
//! the proxy parks a request while the peer fetches the AoR's signed registration record
//! (stored at H(AoR‖i)); the peer then calls back with the remote node's overlay contact, and
//! the request is forwarded there with Record-Route (RFC 3261 §16.5–16.6).

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
    /// Nobody here serves the AoR: the overlay's registration record decides (a request that
    /// came from the overlay gets 404 instead: never relayed).
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
