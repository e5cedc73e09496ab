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
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

mod b8;
use b8::{load_corpora, Parser};

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
            let accepted = corpus.accepted_by(parser);
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
