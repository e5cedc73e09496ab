//! The enrollment CA as a program (`p2psip ca init`, `ca serve`): the CA's files and the HTTPS
//! endpoint nodes enroll at once. The rules it applies are `crate::enrollment`'s.

pub mod files;
pub mod server;
pub mod smtp;
