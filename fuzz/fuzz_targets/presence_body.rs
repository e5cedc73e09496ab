//! What presence reads: PIDF bodies and requests that set up subscription dialogs; see `p2psip::presence::fuzzing::fuzz_presence`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| p2psip::presence::fuzzing::fuzz_presence(data));
