//! An SDP body from the far phone, read and rewritten toward the anchor; see
//! `p2psip::sdp::fuzzing::fuzz_sdp`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| p2psip::sdp::fuzzing::fuzz_sdp(data));
