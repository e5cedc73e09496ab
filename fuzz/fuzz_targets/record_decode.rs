//! See `p2psip::peer::fuzzing::fuzz_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| p2psip::peer::fuzzing::fuzz_record(data));
