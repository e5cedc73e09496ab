//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz target bodies,
//! so every input the fuzzer ever kept — including past crashes — is checked by `cargo test`.

use std::path::PathBuf;

use p2psip::peer::fuzzing::{fuzz_admission, fuzz_overlay_decode, fuzz_record, fuzz_storage_decode};
use p2psip::sip::fuzzing::{fuzz_framer, fuzz_parse};

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Shown by the test harness only when this input fails.
        eprintln!("replaying {}", path.display());
        run(&data);
    }
}

#[test]
fn parse_message_corpus() {
    replay("parse_message", fuzz_parse);
}

#[test]
fn stream_framer_corpus() {
    replay("stream_framer", fuzz_framer);
}

#[test]
fn admission_corpus() {
    replay("admission", fuzz_admission);
}

#[test]
fn sdp_corpus() {
    replay("sdp", p2psip::sdp::fuzzing::fuzz_sdp);
}

#[test]
fn media_part_corpus() {
    replay("media_part", p2psip::media::fuzzing::fuzz_media_part);
}

#[test]
fn overlay_decode_corpus() {
    replay("overlay_decode", fuzz_overlay_decode);
}

#[test]
fn storage_decode_corpus() {
    replay("storage_decode", fuzz_storage_decode);
}

#[test]
fn record_decode_corpus() {
    replay("record_decode", fuzz_record);
}

#[test]
fn presence_body_corpus() {
    replay("presence_body", p2psip::presence::fuzzing::fuzz_presence);
}

#[test]
fn mailbox_decode_corpus() {
    replay("mailbox_decode", p2psip::mailbox::fuzzing::fuzz_mailbox);
}
