//! Another node's multipart body and the ICE part in it, as the media anchor reads them; see
//! `p2psip::media::fuzzing::fuzz_media_part`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| p2psip::media::fuzzing::fuzz_media_part(data));
