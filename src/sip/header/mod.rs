//! Typed header values. Each type parses from the raw value bytes of one list element and
//! prints back in canonical form; the message keeps the raw bytes, so parsing here is on demand.

mod auth;
mod cseq;
mod media_type;
mod name;
mod name_addr;
mod via;

pub use auth::AuthParams;
pub use cseq::CSeq;
pub use media_type::MediaType;
pub use name::HeaderName;
pub use name_addr::NameAddr;
pub use via::{new_branch, Via, BRANCH_MAGIC_COOKIE};
