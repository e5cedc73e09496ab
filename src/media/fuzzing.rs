//! The body of the `media_part` fuzz target in `fuzz/`, kept in the library so that its
//! committed corpus also replays as an ordinary test (`tests/it/fuzz_corpus.rs`). What a node's
//! anchor reads of another node's message: a `multipart/mixed` body and the ICE part in it;
//! every byte may be an attacker's. Not part of the API.

use super::frag::Frag;
use crate::sip::header::MediaType;
use crate::sip::multipart;

/// `media_part`: the first line is the `Content-Type`, the rest the body. Whatever the bytes,
/// the multipart body and each part read as an ICE part never panic, and an ICE part that
/// reads is written and reads back equal.
pub fn fuzz_media_part(data: &[u8]) {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (ty, body) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let parts = match MediaType::parse(ty).and_then(|t| multipart::decode(&t, body)) {
        Some(parts) => parts.into_iter().map(|p| p.body).collect(),
        None => vec![body.to_vec()],
    };
    for part in parts {
        if let Ok(frag) = Frag::parse(&part) {
            let again = Frag::parse(&frag.encode());
            assert_eq!(again.as_ref(), Ok(&frag), "an ICE part that reads is written and reads back equal");
        }
    }
}
