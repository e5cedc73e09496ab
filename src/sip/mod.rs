//! The SIP layer: message model, parsing and printing, stream framing, validation and
//! transactions (RFC 3261 §7, §17, §18, §20, §25).
//!
//! # Layout
//! - [`message`]: [`Message`], [`Header`], typed accessors, response construction.
//! - [`mod@parse`]: bytes to [`Message`]; structure and Content-Length framing only.
//! - [`header`]: typed header values (Via, name-addr, CSeq, auth, media types).
//! - [`uri`]: SIP and other URIs, hosts.
//! - [`framing`]: cutting a TCP stream into messages; CRLF keep-alives.
//! - [`validate`]: the checks every element makes on receipt (RFC 4475's expectations).
//! - [`transaction`]: client and server transactions, timers A–M (§17, RFC 6026).
//!
//! Nothing here does I/O or reads a clock.

pub mod dialog;
pub mod framing;
#[doc(hidden)]
pub mod fuzzing;
pub mod header;
pub mod message;
pub mod method;
pub mod multipart;
pub mod parse;
pub mod syntax;
pub mod transaction;
pub mod uri;
pub mod validate;

pub use header::HeaderName;
pub use message::{Contacts, Header, HeaderError, Headers, Message, RequestLine, StartLine, StatusLine, Version};
pub use method::Method;
pub use parse::{parse, ParseError, ParseErrorKind};
pub use uri::{Host, SipUri, Uri};
