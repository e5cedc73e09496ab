//! The B8 corpora and the three parsers behind one interface, shared by `benches/parse.rs`
//! (criterion timings) and `examples/parse_instructions.rs` (instruction counts).
use std::hint::black_box;
use std::path::Path;

use bytes::Bytes;

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

const RFC4475_DIR: &str = "tests/data/rfc4475";

pub(crate) struct Corpus {
    pub name: &'static str,
    pub messages: Vec<(String, Bytes)>,
}

pub(crate) fn load_corpora() -> Vec<Corpus> {
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
pub(crate) enum Parser {
    P2psip,
    Rsip,
    Rsipstack,
}

impl Parser {
    pub(crate) const ALL: [Parser; 3] = [Parser::P2psip, Parser::Rsip, Parser::Rsipstack];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Parser::P2psip => "p2psip",
            Parser::Rsip => "rsip",
            Parser::Rsipstack => "rsipstack",
        }
    }

    pub(crate) fn accepts(self, msg: &Bytes) -> bool {
        match self {
            Parser::P2psip => p2psip::sip::parse(msg.clone()).is_ok(),
            Parser::Rsip => rsip::SipMessage::try_from(&msg[..]).is_ok(),
            Parser::Rsipstack => rsipstack::sip::parser::parse_message(msg).is_ok(),
        }
    }

    /// Parses and drops the message.
    pub(crate) fn parse(self, msg: &Bytes) {
        match self {
            Parser::P2psip => drop(black_box(p2psip::sip::parse(black_box(msg.clone())))),
            Parser::Rsip => drop(black_box(rsip::SipMessage::try_from(black_box(&msg[..])))),
            Parser::Rsipstack => drop(black_box(rsipstack::sip::parser::parse_message(black_box(msg)))),
        }
    }

    /// Parses, then reads what a transaction layer needs from every message. A header that
    /// does not read is simply skipped (its error is the result).
    pub(crate) fn parse_read(self, msg: &Bytes) {
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

impl Corpus {
    /// The messages `parser` accepts: the ones it is timed on.
    pub(crate) fn accepted_by(&self, parser: Parser) -> Vec<Bytes> {
        self.messages.iter().filter(|(_, m)| parser.accepts(m)).map(|(_, m)| m.clone()).collect()
    }
}
