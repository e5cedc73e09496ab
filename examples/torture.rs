//! Prints what the parser and validator make of each RFC 4475 torture message:
//! `cargo run --example torture -- tests/data/rfc4475`.
use bytes::Bytes;
use p2psip::sip::{parse, validate};

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "tests/data/rfc4475".into());
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "dat"))
        .collect();
    names.sort();
    for path in names {
        let data = std::fs::read(&path).expect("read");
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        match parse(Bytes::from(data)) {
            Err(e) => println!("{name:12} parse error: {e} (headers kept: {})", e.request_headers.is_some()),
            Ok(m) if m.is_request() => match validate::check_request(&m) {
                Ok(()) => println!("{name:12} request ok: {}", m.summary()),
                Err(r) => println!("{name:12} request rejected {} {}", r.status, r.reason),
            },
            Ok(m) => println!("{name:12} response {:?}", validate::check_response(&m)),
        }
    }
}
