//! Cut arbitrary bytes as a TCP stream, in chunks the input chooses, and parse each frame;
//! see `p2psip::sip::fuzzing::fuzz_framer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| p2psip::sip::fuzzing::fuzz_framer(data));
