//! B8 by instruction count: runs one parser over one corpus a given number of times, for
//! `valgrind --tool=callgrind`, whose counts do not move with the load of a shared machine.
//! Instructions per message = (Ir at N rounds − Ir at 0 rounds) / (N × messages); the corpora
//! and parsers are the ones `benches/parse.rs` times (`benches/corpora/mod.rs`).
//!
//! `cargo build --release --example parse_instructions`, then for example
//! `valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/parse_instructions p2psip parse_read register 1000`
//! (`benches/parse_instructions.sh` runs the whole table).
#[path = "../benches/corpora/mod.rs"]
mod corpora;

use corpora::{load_corpora, Parser};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [parser, mode, corpus, rounds] = &args[..] else {
        eprintln!("usage: parse_instructions p2psip|rsip|rsipstack parse|parse_read CORPUS ROUNDS");
        std::process::exit(2);
    };
    let parser = Parser::ALL.into_iter().find(|p| p.name() == parser).expect("parser name");
    let rounds: usize = rounds.parse().expect("rounds");
    let corpora = load_corpora();
    let corpus = corpora.iter().find(|c| c.name == corpus).expect("corpus name");
    let messages = corpus.accepted_by(parser);
    for _ in 0..rounds {
        for m in &messages {
            match mode.as_str() {
                "parse" => parser.parse(m),
                _ => parser.parse_read(m),
            }
        }
    }
    println!("{}", messages.len());
}
