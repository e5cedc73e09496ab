//! B8: SIP parse time per message, p2psip against rsip 0.4 and rsipstack's `sip` parser, on the
//! same corpora in the same run (docs/performance.md, "B8 SIP parse time").
//!
//! Corpora: a typical REGISTER, an INVITE with SDP (`benches/messages/`), and the RFC 4475
//! messages that must parse (`tests/data/rfc4475`). Each parser is timed only on
//! the messages it accepts; the rejected ones are counted and printed before the run. The
//! `rfc4475_common` group holds the messages all three accept, so its ratios compare equal work.
//!
//! Two ways to use a parser: `parse` (bytes to message, dropped) and `parse_read` (parse, then
//! read the top Via branch, From tag, To, Call-ID and CSeq as typed values). All three parsers
//! split header lines eagerly but parse header values on demand, so `parse_read` is the fair
//! comparison for what a transaction layer does with every message.
//!
//! Each benchmark runs twice: with wall time (criterion's default) and with the thread's CPU
//! time, which leaves out the time other processes on the shared machine took.
//!
//! Run: `cargo bench --bench parse`; `python3 benches/parse_report.py` prints the table.
//! For counts that do not move with load, see `benches/parse_instructions.sh`.
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

mod corpora;
use corpora::{load_corpora, Parser};

/// Per-thread CPU time (`CLOCK_THREAD_CPUTIME_ID`): unlike wall time, it does not count the
/// time this thread waits while other builds on the shared 2-core machine run.
struct ThreadCpuTime;

fn thread_cpu_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec.unsigned_abs(), t.tv_nsec.unsigned_abs() as u32)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_now()
    }
    fn end(&self, start: Duration) -> Duration {
        thread_cpu_now().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, d: &Duration) -> f64 {
        d.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &Nanoseconds
    }
}

/// Shows values in ns and throughput in messages per second.
struct Nanoseconds;

impl ValueFormatter for Nanoseconds {
    fn scale_values(&self, _typical: f64, _values: &mut [f64]) -> &'static str {
        "ns"
    }
    fn scale_throughputs(&self, _typical: f64, throughput: &Throughput, values: &mut [f64]) -> &'static str {
        let n = match *throughput {
            Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) | Throughput::Bits(n) => n,
        };
        for v in values {
            *v = n as f64 * 1e9 / *v;
        }
        "msg/s"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn bench_wall(c: &mut Criterion) {
    bench_parse(c, "wall");
}

fn bench_cpu(c: &mut Criterion<ThreadCpuTime>) {
    bench_parse(c, "cpu");
}

/// Times every parser on every corpus; `clock` names the measurement in the group id.
fn bench_parse<M: Measurement>(c: &mut Criterion<M>, clock: &str) {
    let corpora = load_corpora();
    if clock == "wall" {
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
    }

    for corpus in &corpora {
        let mut group = c.benchmark_group(format!("{}/{clock}", corpus.name));
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

fn config<M: Measurement>(c: Criterion<M>) -> Criterion<M> {
    // Short runs: the machine is 2 shared cores; medians of 50 samples, several runs.
    c.sample_size(50).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2))
}

// criterion_group! makes public functions without docs.
#[allow(missing_docs)]
mod groups {
    use super::*;

    criterion_group! {
        name = wall;
        config = config(Criterion::default());
        targets = bench_wall
    }
    criterion_group! {
        name = cpu;
        config = config(Criterion::default().with_measurement(ThreadCpuTime));
        targets = bench_cpu
    }
}
criterion_main!(groups::wall, groups::cpu);
