//! What a node keeps in its data directory, read and written: the enrolled identity and the
//! overlay's configuration document, the key files, local accounts, and the records it
//! stores for others.

pub mod accounts;
pub mod data_dir;
pub mod identity;
pub mod record_store;
