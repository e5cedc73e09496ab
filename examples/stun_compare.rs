//! Which STUN crate: rtc-stun (chosen), stun_codec and librice's stun-types, timed on what the
//! node does with STUN: building a Binding success response (XOR-MAPPED-ADDRESS, FINGERPRINT)
//! and reading the mapped address back from one. Prints nanoseconds per message, the median of
//! five rounds of 200,000; docs/dependencies.md, "STUN", keeps the figures.
//!
//! `cargo run --release --example stun_compare`
// A measurement with the real clock.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

const ROUNDS: usize = 5;
const PER_ROUND: u32 = 200_000;

fn median_ns<T>(mut f: impl FnMut() -> T) -> f64 {
    for _ in 0..10_000 {
        black_box(f());
    }
    let mut rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..PER_ROUND {
                black_box(f());
            }
            t.elapsed().as_nanos() as f64 / f64::from(PER_ROUND)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

fn main() {
    let addr: SocketAddr = "203.0.113.7:40123".parse().expect("address");
    let id = [7u8; 12];
    let reference = p2psip::nat::stun::binding_success(id, addr, true);
    let rtc_encode = median_ns(|| p2psip::nat::stun::binding_success(id, addr, true));
    let rtc_decode = median_ns(|| p2psip::nat::stun::parse(&reference));
    let codec_encode = median_ns(|| {
        use bytecodec::EncodeExt;
        use stun_codec::rfc5389::{attributes::*, methods::BINDING, Attribute};
        use stun_codec::{Message, MessageClass, MessageEncoder, TransactionId};
        let mut m = Message::<Attribute>::new(MessageClass::SuccessResponse, BINDING, TransactionId::new(id));
        m.add_attribute(Attribute::XorMappedAddress(XorMappedAddress::new(addr)));
        m.add_attribute(Attribute::Fingerprint(Fingerprint::new(&m).expect("fingerprint")));
        MessageEncoder::new().encode_into_bytes(m).expect("encode")
    });
    let codec_decode = median_ns(|| {
        use bytecodec::DecodeExt;
        use stun_codec::rfc5389::{attributes::XorMappedAddress, Attribute};
        use stun_codec::MessageDecoder;
        let m = MessageDecoder::<Attribute>::new().decode_from_bytes(&reference).expect("decode").expect("message");
        m.get_attribute::<XorMappedAddress>().map(|x| x.address())
    });
    let types_decode = median_ns(|| {
        use stun_types::attribute::XorMappedAddress;
        use stun_types::message::Message;
        let m = Message::from_bytes(&reference).expect("decode");
        m.attribute::<XorMappedAddress>().map(|x| x.addr(m.transaction_id()))
    });
    println!("| crate | build a Binding success | read its mapped address |");
    println!("|---|---|---|");
    println!("| rtc-stun 0.21.1 (p2psip::nat::stun) | {rtc_encode:.0} ns | {rtc_decode:.0} ns |");
    println!("| stun_codec 0.4.0 | {codec_encode:.0} ns | {codec_decode:.0} ns |");
    println!("| stun-types 2.0.4 | (not timed) | {types_decode:.0} ns |");
}
