//! What the mailbox reads: sealed letters' plaintext, encryption-key payloads, message names; see `p2psip::mailbox::fuzzing::fuzz_mailbox`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| p2psip::mailbox::fuzzing::fuzz_mailbox(data));
