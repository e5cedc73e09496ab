//! Fuzz target bodies for what the mailbox reads from other nodes, shared by `fuzz/` and the
//! corpus replay test.

use super::Letter;
use crate::store::mailbox::parse_message_key;
use crate::store::EncryptionKey;

/// `mailbox_decode`: the input read as a sealed letter's plaintext, an encryption-key payload
/// and a message name (listings are `storage_decode`'s); decoding never panics, and what decodes encodes back
/// to the same.
pub fn fuzz_mailbox(data: &[u8]) {
    if let Ok(letter) = Letter::decode(data) {
        let bytes = letter.encode().expect("a decoded letter encodes");
        assert_eq!(Letter::decode(&bytes).ok().as_ref(), Some(&letter), "a letter survives its encoding");
    }
    if let Some(key) = EncryptionKey::from_payload(data) {
        assert_eq!(EncryptionKey::from_payload(&key.to_payload()), Some(key), "a key survives its encoding");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some((aor, id)) = parse_message_key(text) {
            assert_eq!(crate::store::mailbox::message_key(&aor, &id), text, "one spelling per name");
        }
    }
}
