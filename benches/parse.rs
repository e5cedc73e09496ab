//! B8: SIP parse time per message, p2psip against rsip 0.4 and rsipstack's `sip` parser, on the
//! same corpora in the same run (docs/performance.md, "B8 SIP parse time").
//!
//! Corpora: a typical REGISTER, an INVITE with SDP (`benches/messages/`), and the RFC 4475
//! messages that must parse (`../shared/conformance/rfc4475`). Each parser is timed only on
//! the messages it accepts; the rejected ones are counted and printed before the run. The
//! `rfc4475_common` group holds the messages all three accept, so its ratios compare equal work.
//!
//! Two ways to use a parser: `parse` (bytes to message, dropped) and `parse_read` (parse, then
//! read the top Via branch, From tag, To, Call-ID and CSeq as typed values). All three parsers
//! split header lines eagerly but parse header values on demand, so `parse_read` is the fair
//! comparison for what a transaction layer does with every message.
//!
//! Run: `cargo bench --bench parse`; `python3 benches/parse_report.py` prints the table.
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// RFC 4475 §3.1.1 (valid) and §3.3 (semantically wrong but well-formed): all must parse.
const RFC4475_VALID: &[&str] = &[
    "wsinv",
    "intmeth",
    "esc01",
    "escnull",
    "esc02",
    "lwsdisp",
    "longreq",
    "dblreq",
    "semiuri",
    "transports",
    "mpart01",
    "unreason",
    "noreason",
    // §3.3
    "insuf",
    "unkscm",
    "novelsc",
    "unksm2",
    "bext01",
    "invut",
    "regaut01",
    "multi01",
    "mcl01",
    "bcast",
    "zeromf",
    "cparam01",
    "cparam02",
    "regescrt",
    "sdp01",
];

const RFC4475_DIR: &str = "../shared/conformance/rfc4475";

struct Corpus {
    name: &'static str,
    messages: Vec<(String, Bytes)>,
}

fn load_corpora() -> Vec<Corpus> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = |p: &Path| Bytes::from(std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
    let rfc: Vec<(String, Bytes)> =
        RFC4475_VALID.iter().map(|n| (n.to_string(), file(&root.join(RFC4475_DIR).join(format!("{n}.dat"))))).collect();
    let common = rfc.iter().filter(|(_, m)| Parser::ALL.iter().all(|p| p.accepts(m))).cloned().collect();
    vec![
        Corpus {
            name: "register",
            messages: vec![("register".into(), file(&root.join("benches/messages/register.sip")))],
        },
        Corpus {
            name: "invite_sdp",
            messages: vec![("invite-sdp".into(), file(&root.join("benches/messages/invite-sdp.sip")))],
        },
        Corpus { name: "rfc4475_valid", messages: rfc },
        Corpus { name: "rfc4475_common", messages: common },
    ]
}

#[derive(Clone, Copy)]
enum Parser {
    P2psip,
    Rsip,
    Rsipstack,
}

impl Parser {
    const ALL: [Parser; 3] = [Parser::P2psip, Parser::Rsip, Parser::Rsipstack];

    fn name(self) -> &'static str {
        match self {
            Parser::P2psip => "p2psip",
            Parser::Rsip => "rsip",
            Parser::Rsipstack => "rsipstack",
        }
    }

    fn accepts(self, msg: &Bytes) -> bool {
        match self {
            Parser::P2psip => p2psip::sip::parse(msg.clone()).is_ok(),
            Parser::Rsip => rsip::SipMessage::try_from(&msg[..]).is_ok(),
            Parser::Rsipstack => rsipstack::sip::parser::parse_message(msg).is_ok(),
        }
    }

    /// Parses and drops the message.
    fn parse(self, msg: &Bytes) {
        match self {
            Parser::P2psip => drop(black_box(p2psip::sip::parse(black_box(msg.clone())))),
            Parser::Rsip => drop(black_box(rsip::SipMessage::try_from(black_box(&msg[..])))),
            Parser::Rsipstack => drop(black_box(rsipstack::sip::parser::parse_message(black_box(msg)))),
        }
    }

    /// Parses, then reads what a transaction layer needs from every message. A header that
    /// does not read is simply skipped (its error is the result).
    fn parse_read(self, msg: &Bytes) {
        match self {
            Parser::P2psip => {
                let Ok(m) = p2psip::sip::parse(black_box(msg.clone())) else { return };
                black_box(m.top_via().map(|v| v.branch().map(str::len)).ok());
                black_box(m.from().map(|f| f.tag().map(str::len)).ok());
                black_box(m.to().ok());
                black_box(m.call_id().ok());
                black_box(m.cseq().ok());
            }
            Parser::Rsip => {
                use rsip::prelude::*;
                let Ok(m) = rsip::SipMessage::try_from(black_box(&msg[..])) else { return };
                black_box(m.via_header().and_then(|v| v.typed()).map(|v| v.branch().cloned()).ok());
                black_box(m.from_header().and_then(|f| f.typed()).map(|f| f.tag().cloned()).ok());
                black_box(m.to_header().and_then(|t| t.typed()).ok());
                black_box(m.call_id_header().map(|c| c.value().len()).ok());
                black_box(m.cseq_header().and_then(|c| c.typed()).ok());
            }
            Parser::Rsipstack => {
                use rsipstack::sip::prelude::*;
                let Ok(m) = rsipstack::sip::parser::parse_message(black_box(msg)) else { return };
                black_box(m.top_via_header().and_then(|v| v.typed()).map(|v| v.branch().cloned()).ok());
                black_box(m.from_header().and_then(|f| f.typed()).map(|f| f.tag().cloned()).ok());
                black_box(m.to_header().and_then(|t| t.typed()).ok());
                black_box(m.call_id_header().map(|c| c.value().len()).ok());
                black_box(m.cseq_header().and_then(|c| c.typed()).ok());
            }
        }
    }
}

fn bench_parse(c: &mut Criterion) {
    let corpora = load_corpora();
    eprintln!("B8 corpora (a parser is timed only on the messages it accepts):");
    for corpus in &corpora {
        for parser in Parser::ALL {
            let rejected: Vec<&str> =
                corpus.messages.iter().filter(|(_, m)| !parser.accepts(m)).map(|(n, _)| n.as_str()).collect();
            eprintln!(
                "  {:15} {:10} accepts {:2}/{:2}; rejects {:?}",
                corpus.name,
                parser.name(),
                corpus.messages.len() - rejected.len(),
                corpus.messages.len(),
                rejected
            );
        }
    }

    for corpus in &corpora {
        let mut group = c.benchmark_group(corpus.name);
        for parser in Parser::ALL {
            let accepted: Vec<Bytes> =
                corpus.messages.iter().filter(|(_, m)| parser.accepts(m)).map(|(_, m)| m.clone()).collect();
            if accepted.is_empty() {
                continue;
            }
            // One iteration parses every accepted message once: time per element is per message.
            group.throughput(Throughput::Elements(accepted.len() as u64));
            group.bench_function(format!("{}/parse", parser.name()), |b| {
                b.iter(|| accepted.iter().for_each(|m| parser.parse(m)))
            });
            group.bench_function(format!("{}/parse_read", parser.name()), |b| {
                b.iter(|| accepted.iter().for_each(|m| parser.parse_read(m)))
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    // Short runs: the machine is 2 shared cores. Medians of 50 samples are stable enough.
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_parse
}
criterion_main!(benches);
