//! Enrollment: what the overlay's enrollment CA makes, as pure functions (RFC 6940 §11: the
//! enrollment server, contacted once at first join). It sits above `identity` (keys, AoRs,
//! chain checks), `overlay` and `store` (the settings its document carries).
//!
//! # Layout
//! - [`ca`]: the CA's certificates: root, CSR, issuing with "one name, one holder".
//! - [`desk`]: what the CA answers an enrollment request (e-mail tokens), and its rate limit.
//! - [`config_doc`]: the overlay configuration document, signed by the root key (RFC 6940
//!   §11.1 in spirit): verify or refuse, the Chord and store settings, replica placement.
//!
//! # Sans-IO
//! Unix times and a `ring::rand::SecureRandom` are arguments. The HTTPS CA server, its files
//! and the enrollment client are the daemon's.

pub mod ca;
pub mod config_doc;
pub mod desk;

pub use ca::{build_csr, Enrollment, EnrollmentCa, Issued, IssuedNames};
