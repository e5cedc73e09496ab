//! Parse arbitrary bytes as one SIP message; see `p2psip::sip::fuzzing::fuzz_parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| p2psip::sip::fuzzing::fuzz_parse(data));
