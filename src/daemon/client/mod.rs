//! One-shot clients of other programs: `p2psip enroll` talks to the CA once, `p2psip status`
//! asks a running node's HTTP API.

pub mod doctor;
pub mod enroll;
pub mod status;
