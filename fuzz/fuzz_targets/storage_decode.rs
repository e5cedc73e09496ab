//! See `p2psip::peer::fuzzing::fuzz_storage_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| p2psip::peer::fuzzing::fuzz_storage_decode(data));
