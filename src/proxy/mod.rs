//! The softphone-facing side of a node: a registrar (RFC 3261 §10.3) with digest
//! authentication, and a stateful proxy (§16) that forwards phones' requests to the phones
//! registered for the target AoR, forking in parallel. Sans-IO, like the rest: the [`Proxy`]
//! is driven by [`crate::peer::Peer`] with `now`, the messages it received, and the peer's
//! transaction layer, through which it sends.
//!
//! # Layout
//! - [`digest`]: digest credentials (MD5, SHA-256, `qop=auth`) and challenges.
//! - [`auth`]: who may use the registrar and the proxy: source-bound nonces, the replay
//!   window, the failure back-off, 401 and 407.
//! - [`accounts`]: who may register here, with HA1 values; the accounts file's text format.
//! - [`registrar`]: bindings, expiry, `Contact: *`, queries, CSeq ordering, flows.
//! - [`directory`]: where a target AoR is: local bindings, or the overlay.
//! - `forward`: the proxy core: targets, forking, best response, CANCEL, ACK, pings.
//!
//! # What it does not do (yet)
//! The proxy itself does not reach the overlay: a request for an AoR nobody here serves is
//! parked ([`Proxy::poll_lookup`]) while the peer fetches and verifies the AoR's registration
//! record, and resumed with its contacts ([`Proxy::overlay_resolved`]); `docs/proxy.md`, "The
//! overlay path". No DNS (RFC 3263): only IP-literal next hops are reached, and
//! a request for a domain other than the overlay's is refused with 404 "Not an overlay domain".
//! The proxy listener forwards nothing for a stranger (issue 11): an out-of-dialog request
//! comes over a registered phone's flow or carries `Proxy-Authorization` (else 407), and an
//! in-dialog one carries our Route; node Routes and address Request-URIs are followed only
//! where we Record-Routed the dialog ourselves.

pub mod accounts;
pub mod auth;
pub mod digest;
pub mod directory;
mod forward;
pub mod identity;
pub mod registrar;

pub use forward::{Proxy, ProxyConfig, ProxyStatus, DEFAULT_TIMER_C};

#[cfg(test)]
mod tests;
