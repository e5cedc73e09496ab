//! Which SIP parser reads which message right: p2psip, rsip 0.4 and rsipstack's `sip` parser on
//! every RFC 4475 torture message and on focused cases (compact forms, folding, IPv6, framing,
//! lists on one line, unknown headers). Prints the Markdown table kept in docs/dependencies.md,
//! "SIP parser: decided by measurement".
//!
//! `cargo run --example parser_compare -- tests/data/rfc4475`
//!
//! Each parser is asked, through its own typed API, for the values a SIP element needs: the
//! Call-ID, CSeq, top Via branch and sent-by, the number of Via entries, the From tag, the
//! Contact addresses and the body. A cell says `ok` when every expected value came out right,
//! `rejected` when the parser refused the message, or which values were wrong.
use std::fmt::Write as _;
use std::path::Path;

use bytes::Bytes;

/// What one parser read from one message. `Err` is a value its API could not give.
#[derive(Debug, Default)]
struct Reading {
    /// Method, or status code for a response.
    first: String,
    call_id: Option<String>,
    cseq: Option<String>,
    top_branch: Option<Option<String>>,
    top_sent_by: Option<String>,
    vias: Option<usize>,
    from_tag: Option<Option<String>>,
    contacts: Option<Vec<String>>,
    body: Vec<u8>,
    encoded: Vec<u8>,
}

/// A value a case expects.
#[derive(Clone, Copy)]
enum Want {
    First(&'static str),
    CallId(&'static str),
    CSeq(&'static str),
    Branch(Option<&'static str>),
    SentBy(&'static str),
    Vias(usize),
    FromTag(&'static str),
    Contacts(&'static [&'static str]),
    Body(&'static [u8]),
    /// The printed message holds this header line byte for byte.
    KeepsLine(&'static [u8]),
}

impl Want {
    /// `None` when the reading matches, else a short note of what was read.
    fn mismatch(self, r: &Reading) -> Option<String> {
        fn show<T: std::fmt::Debug>(label: &str, got: &Option<T>) -> String {
            match got {
                Some(v) => format!("{label} {v:?}"),
                None => format!("{label} unreadable"),
            }
        }
        match self {
            Want::First(w) => (r.first != w).then(|| format!("start {:?}", r.first)),
            Want::CallId(w) => (r.call_id.as_deref() != Some(w)).then(|| show("Call-ID", &r.call_id)),
            Want::CSeq(w) => (r.cseq.as_deref() != Some(w)).then(|| show("CSeq", &r.cseq)),
            Want::Branch(w) => {
                (r.top_branch.as_ref().map(|b| b.as_deref()) != Some(w)).then(|| show("branch", &r.top_branch))
            }
            Want::SentBy(w) => (r.top_sent_by.as_deref() != Some(w)).then(|| show("sent-by", &r.top_sent_by)),
            Want::Vias(w) => (r.vias != Some(w)).then(|| show("Vias", &r.vias)),
            Want::FromTag(w) => {
                (r.from_tag.as_ref().map(|t| t.as_deref()) != Some(Some(w))).then(|| show("From tag", &r.from_tag))
            }
            Want::Contacts(w) => (r.contacts.as_ref().map(|c| c.iter().map(String::as_str).collect::<Vec<_>>())
                != Some(w.to_vec()))
            .then(|| show("Contacts", &r.contacts)),
            Want::Body(w) => (r.body != w).then(|| format!("body {} bytes", r.body.len())),
            Want::KeepsLine(w) => {
                (!r.encoded.windows(w.len()).any(|x| x == w)).then(|| "line not kept byte for byte".to_string())
            }
        }
    }
}

type Reader = fn(&[u8]) -> Result<Reading, String>;

fn read_p2psip(data: &[u8]) -> Result<Reading, String> {
    use p2psip::sip::{Contacts, Uri};
    let m = p2psip::sip::parse(Bytes::copy_from_slice(data)).map_err(|e| e.to_string())?;
    let first = match (m.method(), m.status()) {
        (Some(method), _) => method.to_string(),
        (None, code) => code.unwrap_or_default().to_string(),
    };
    let contacts = m.contacts().ok().map(|c| match c {
        Contacts::Star => vec!["*".to_string()],
        Contacts::List(list) => list
            .iter()
            .map(|na| match &na.uri {
                Uri::Sip(u) => p2psip::sip::uri::host_port(&u.host, u.port),
                other => other.to_string(),
            })
            .collect(),
    });
    Ok(Reading {
        first,
        call_id: m.call_id().ok().map(str::to_owned),
        cseq: m.cseq().ok().map(|c| c.to_string()),
        top_branch: m.top_via().ok().map(|v| v.branch().map(str::to_owned)),
        top_sent_by: m.top_via().ok().map(|v| v.sent_by()),
        vias: m.vias().ok().map(|v| v.len()),
        from_tag: m.from().ok().map(|f| f.tag().map(str::to_owned)),
        contacts,
        body: m.body.to_vec(),
        encoded: m.encode().to_vec(),
    })
}

fn read_rsip(data: &[u8]) -> Result<Reading, String> {
    use rsip::prelude::*;
    use rsip::Header;
    let m = rsip::SipMessage::try_from(data).map_err(|e| e.to_string())?;
    let first = match &m {
        rsip::SipMessage::Request(r) => r.method.to_string(),
        rsip::SipMessage::Response(r) => u16::from(r.status_code.clone()).to_string(),
    };
    let via = m.via_header().ok().and_then(|v| v.typed().ok());
    // rsip keeps one entry per header line: a comma list stays one Via.
    let vias = m.headers().iter().filter(|h| matches!(h, Header::Via(_))).count();
    let contacts: Option<Vec<String>> = m
        .headers()
        .iter()
        .filter_map(|h| match h {
            Header::Contact(c) => Some(c.typed().map(|c| c.uri.host_with_port.to_string()).ok()),
            _ => None,
        })
        .collect();
    Ok(Reading {
        first,
        call_id: m.call_id_header().ok().map(|c| c.value().to_owned()),
        cseq: m.cseq_header().ok().and_then(|c| c.typed().ok()).map(|c| format!("{} {}", c.seq, c.method)),
        top_branch: via.as_ref().map(|v| v.branch().map(|b| b.to_string())),
        top_sent_by: via.as_ref().map(|v| v.uri.host_with_port.to_string()),
        vias: Some(vias),
        from_tag: m.from_header().ok().and_then(|f| f.typed().ok()).map(|f| f.tag().map(|t| t.to_string())),
        contacts,
        body: m.body().clone(),
        encoded: m.to_string().into_bytes(),
    })
}

fn read_rsipstack(data: &[u8]) -> Result<Reading, String> {
    use rsipstack::sip::prelude::*;
    use rsipstack::sip::{Header, SipMessage};
    let m = rsipstack::sip::parser::parse_message(data).map_err(|e| e.to_string())?;
    let (first, body) = match &m {
        SipMessage::Request(r) => (r.method.to_string(), r.body.clone()),
        SipMessage::Response(r) => (u16::from(r.status_code.clone()).to_string(), r.body.clone()),
    };
    let via = m.top_via_header().ok().and_then(|v| v.typed().ok());
    // Like rsip, one entry per header line; `has_multiple_vias` is the only list-aware call.
    let vias = m.headers().iter().filter(|h| matches!(h, Header::Via(_))).count();
    let contacts =
        m.typed_contact_headers().ok().map(|cs| cs.iter().map(|c| c.uri.host_with_port.to_string()).collect());
    Ok(Reading {
        first,
        call_id: m.call_id_header().ok().map(|c| c.value().to_owned()),
        cseq: m.cseq_header().ok().and_then(|c| c.typed().ok()).map(|c| format!("{} {}", c.seq, c.method)),
        top_branch: via.as_ref().map(|v| v.branch().map(|b| b.to_string())),
        top_sent_by: via.as_ref().map(|v| v.uri.host_with_port.to_string()),
        vias: Some(vias),
        from_tag: m.from_header().ok().and_then(|f| f.typed().ok()).map(|f| f.tag().map(|t| t.to_string())),
        contacts,
        body,
        encoded: m.to_string().into_bytes(),
    })
}

struct Case {
    name: String,
    /// What the RFC (or common sense, for the focused cases) asks of a parser.
    expect: &'static str,
    data: Vec<u8>,
    wants: Vec<Want>,
}

/// RFC 4475 messages: (file, § and expectation, the values a parser must read).
fn rfc4475_wants(name: &str) -> (&'static str, Vec<Want>) {
    use Want::*;
    let w = |call: &'static str, cseq: &'static str, branch: Option<&'static str>, vias, tag: &'static str| {
        vec![CallId(call), CSeq(cseq), Branch(branch), Vias(vias), FromTag(tag)]
    };
    match name {
        "wsinv" => ("3.1.1.1 accept", {
            let mut v = w("wsinv.ndaksdj@192.0.2.1", "9 INVITE", Some("390skdjuw"), 3, "98asjd8");
            v.push(Body(b"v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.3\r\ns=-\r\nc=IN IP4 192.0.2.4\r\nt=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\nm=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n"));
            v
        }),
        "intmeth" => (
            "3.1.1.2 accept",
            w(
                "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
                "139122385 !interesting-Method0123456789_*+`.%indeed'~",
                Some("z9hG4bK-.!%66*_+`'~"),
                1,
                "_token~1'+`*%!-.",
            ),
        ),
        "esc01" => {
            ("3.1.1.3 accept", w("esc01.239409asdfakjkn23onasd0-3234", "234234 INVITE", Some("z9hG4bKkdjuw"), 1, "938"))
        }
        "escnull" => (
            "3.1.1.4 accept",
            w("escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd", "14398234 REGISTER", Some("z9hG4bKkdjuw"), 1, "839923423"),
        ),
        "esc02" => (
            "3.1.1.5 accept",
            w(
                "esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf",
                "29344 RE%47IST%45R",
                Some("z9hG4bK209%fzsnel234"),
                1,
                "f232jadfj23",
            ),
        ),
        "lwsdisp" => (
            "3.1.1.6 accept",
            w("lwsdisp.1234abcd@funky.example.com", "60 OPTIONS", Some("z9hG4bKkdjuw"), 1, "323"),
        ),
        "longreq" => (
            "3.1.1.7 accept",
            w(
                "longreq.onereallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallylongcallid",
                "3882340 INVITE",
                None,
                34,
                "12982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982424",
            ),
        ),
        "dblreq" => ("3.1.1.8 accept the REGISTER, ignore the rest", {
            let mut v = w("dblreq.0ha0isndaksdj99sdfafnl3lk233412", "8 REGISTER", Some("z9hG4bKkdjuw23492"), 1, "43251j3j324");
            v.push(Body(b""));
            v
        }),
        "semiuri" => ("3.1.1.9 accept", w("semiuri.0ha0isndaksdj", "8 OPTIONS", Some("z9hG4bKkdjuw"), 1, "33242")),
        "transports" => (
            "3.1.1.10 accept",
            w("transports.kijh4akdnaqjkwendsasfdj", "60 OPTIONS", Some("z9hG4bKkdjuw"), 5, "323"),
        ),
        "mpart01" => (
            "3.1.1.11 accept",
            w(
                "3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..",
                "1 MESSAGE",
                Some("z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-"),
                1,
                "2fb0dcc9",
            ),
        ),
        "unreason" => ("3.1.1.12 accept", {
            let mut v = w("unreason.1234ksdfak3j2erwedfsASdf", "35 INVITE", Some("z9hG4bK1324923"), 1, "11141343");
            v.push(First("200"));
            v
        }),
        "noreason" => ("3.1.1.13 accept", {
            let mut v = w("noreason.asndj203insdf99223ndf", "35 INVITE", Some("z9hG4bK2398ndaoe"), 1, "39ansfi3");
            v.push(First("100"));
            v
        }),
        "badinv01" => ("3.1.2.1 reject (400)", vec![]),
        "clerr" => ("3.1.2.2 reject (400)", vec![]),
        "ncl" => ("3.1.2.3 reject", vec![]),
        "scalar02" => ("3.1.2.4 reject (400)", vec![]),
        "scalarlg" => ("3.1.2.5 discard", vec![]),
        "quotbal" => ("3.1.2.6 reject (400)", vec![]),
        "ltgtruri" => ("3.1.2.7 reject or tolerate", vec![]),
        "lwsruri" => ("3.1.2.8 reject or tolerate", vec![]),
        "lwsstart" => ("3.1.2.9 reject or tolerate", vec![]),
        "trws" => ("3.1.2.10 reject or tolerate", vec![]),
        "escruri" => ("3.1.2.11 reject (400)", vec![]),
        "baddate" => ("3.1.2.12 tolerate", vec![]),
        "regbadct" => ("3.1.2.13 reject (400)", vec![]),
        "badaspec" => ("3.1.2.14 stay up; 400 ok", vec![]),
        "baddn" => ("3.1.2.15 reject (400)", vec![]),
        "badvers" => ("3.1.2.16 505", vec![]),
        "mismatch01" => ("3.1.2.17 400", vec![]),
        "mismatch02" => ("3.1.2.18 501", vec![]),
        "bigcode" => ("3.1.2.19 drop", vec![]),
        "badbranch" => ("3.2.1 accept", vec![CallId("badbranch.sadonfo23i420jv0as0derf3j3n")]),
        "insuf" => ("3.3.1 parse, then 400", vec![CSeq("193942 INVITE")]),
        "unkscm" => ("3.3.2 parse, then 416", vec![CallId("unkscm.nasdfasser0q239nwsdfasdkl34")]),
        "novelsc" => ("3.3.3 parse", vec![CallId("novelsc.asdfasser0q239nwsdfasdkl34")]),
        "unksm2" => ("3.3.4 accept", vec![CallId("unksm2.daksdj@hyphenated-host.example.com")]),
        "bext01" => ("3.3.5 parse, then 420", vec![CallId("bext01.0ha0isndaksdj")]),
        "invut" => ("3.3.6 parse, then 415", vec![CallId("invut.0ha0isndaksdjadsfij34n23d")]),
        "regaut01" => ("3.3.7 parse, then 401", vec![CallId("regaut01.0ha0isndaksdj")]),
        "multi01" => ("3.3.8 400", vec![]),
        "mcl01" => ("3.3.9 400", vec![]),
        "bcast" => ("3.3.10 drop", vec![]),
        "zeromf" => ("3.3.11 accept (endpoint)", vec![CallId("zeromf.jfasdlfnm2o2l43r5u0asdfas")]),
        "cparam01" => ("3.3.12 accept", vec![CallId("cparam01.70710@saturn.example.com")]),
        "cparam02" => ("3.3.13 accept", vec![CallId("cparam02.70710@saturn.example.com")]),
        "regescrt" => ("3.3.14 accept", vec![CallId("regescrt.k345asrl3fdbv@192.0.2.1")]),
        "sdp01" => ("3.3.15 parse, then 406", vec![CallId("sdp01.ndaksdj9342dasdd")]),
        "inv2543" => ("3.4.1 accept", vec![CallId("inv2543.1717@ift.client.example.com")]),
        _ => ("?", vec![]),
    }
}

/// Focused cases, each about one thing a softphone stack meets every day.
fn focused_cases() -> Vec<Case> {
    use Want::*;
    let req = |extra: &str| {
        format!(
            "OPTIONS sip:bob@example.org SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-f1\r\n\
             From: <sip:alice@example.org>;tag=a1\r\nTo: <sip:bob@example.org>\r\nCall-ID: focus-1\r\n\
             CSeq: 1 OPTIONS\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    };
    vec![
        Case {
            name: "compact forms (v f t i m l)".into(),
            expect: "accept, read as long forms",
            data: b"OPTIONS sip:bob@example.org SIP/2.0\r\nv: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-c1\r\n\
                    f: <sip:alice@example.org>;tag=c2\r\nt: <sip:bob@example.org>\r\ni: compact-1\r\n\
                    CSeq: 2 OPTIONS\r\nm: <sip:alice@192.0.2.1:5060>\r\nl: 0\r\n\r\n"
                .to_vec(),
            wants: vec![
                CallId("compact-1"),
                CSeq("2 OPTIONS"),
                Branch(Some("z9hG4bK-c1")),
                FromTag("c2"),
                Contacts(&["192.0.2.1:5060"]),
            ],
        },
        Case {
            name: "folded Via, From and Subject".into(),
            expect: "accept, unfold",
            data: b"OPTIONS sip:bob@example.org SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060\r\n ;branch=z9hG4bK-fold\r\n\
                    From: <sip:alice@example.org>\r\n\t;tag=fold2\r\nTo: <sip:bob@example.org>\r\nCall-ID: fold-1\r\n\
                    CSeq: 3\r\n  OPTIONS\r\nSubject: one\r\n two\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
            wants: vec![CallId("fold-1"), CSeq("3 OPTIONS"), Branch(Some("z9hG4bK-fold")), FromTag("fold2")],
        },
        Case {
            name: "IPv6 Via sent-by and Contact".into(),
            expect: "accept, read [v6]:port",
            data: b"OPTIONS sip:bob@[2001:db8::1] SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bK-v6\r\n\
                    From: <sip:alice@[2001:db8::9]>;tag=v6\r\nTo: <sip:bob@[2001:db8::1]>\r\nCall-ID: v6-1\r\n\
                    CSeq: 4 OPTIONS\r\nContact: <sip:alice@[2001:db8::9]:5060;transport=udp>\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
            wants: vec![
                SentBy("[2001:db8::9]:5060"),
                Branch(Some("z9hG4bK-v6")),
                FromTag("v6"),
                Contacts(&["[2001:db8::9]:5060"]),
            ],
        },
        Case {
            name: "datagram longer than Content-Length".into(),
            expect: "body = Content-Length octets (RFC 3261 §18.3)",
            data: b"MESSAGE sip:bob@example.org SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-cl\r\n\
                    From: <sip:alice@example.org>;tag=cl\r\nTo: <sip:bob@example.org>\r\nCall-ID: cl-1\r\n\
                    CSeq: 5 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhelloTRAILING JUNK"
                .to_vec(),
            wants: vec![CallId("cl-1"), Body(b"hello")],
        },
        Case {
            name: "datagram shorter than Content-Length".into(),
            expect: "reject (RFC 4475 §3.1.2.2)",
            data: b"MESSAGE sip:bob@example.org SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-cs\r\n\
                    From: <sip:alice@example.org>;tag=cs\r\nTo: <sip:bob@example.org>\r\nCall-ID: cs-1\r\n\
                    CSeq: 6 MESSAGE\r\nContent-Length: 50\r\n\r\nhello"
                .to_vec(),
            wants: vec![],
        },
        Case {
            name: "two Vias on one line".into(),
            expect: "2 entries, top one first",
            data: b"OPTIONS sip:bob@example.org SIP/2.0\r\nVia: SIP/2.0/UDP p1.example.org;branch=z9hG4bK-m1, SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK-m2\r\n\
                    From: <sip:alice@example.org>;tag=m\r\nTo: <sip:bob@example.org>\r\nCall-ID: multi-1\r\n\
                    CSeq: 7 OPTIONS\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
            wants: vec![Vias(2), Branch(Some("z9hG4bK-m1")), SentBy("p1.example.org")],
        },
        Case {
            name: "two Contacts on one line, with a comma in a display name".into(),
            expect: "2 addresses",
            data: req("Contact: \"Smith, Al\" <sip:al@192.0.2.1:5060>, <sip:al@192.0.2.2>;q=0.5\r\n"),
            wants: vec![Contacts(&["192.0.2.1:5060", "192.0.2.2"])],
        },
        Case {
            name: "unknown header, odd spacing, folded".into(),
            expect: "printed back byte for byte",
            data: req("X-Odd-Header :   keep  me ;exactly\r\n\tfolded, too\r\n"),
            wants: vec![CallId("focus-1"), KeepsLine(b"X-Odd-Header :   keep  me ;exactly\r\n\tfolded, too\r\n")],
        },
        Case {
            name: "bare LF line ends".into(),
            expect: "tolerate (RFC 3261 §7.5 asks for CRLF)",
            data: b"OPTIONS sip:bob@example.org SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-lf\nFrom: <sip:alice@example.org>;tag=lf\n\
                    To: <sip:bob@example.org>\nCall-ID: lf-1\nCSeq: 8 OPTIONS\nContent-Length: 0\n\n"
                .to_vec(),
            wants: vec![CallId("lf-1"), Branch(Some("z9hG4bK-lf"))],
        },
    ]
}

fn cell(reader: Reader, case: &Case) -> String {
    match reader(&case.data) {
        // rsip and rsipstack errors quote the whole message: show only short ones.
        Err(e) if e.len() <= 60 && !e.contains('\n') => format!("rejected ({})", e.replace('|', "/")),
        Err(_) => "rejected".into(),
        Ok(r) => {
            let wrong: Vec<String> = case.wants.iter().filter_map(|w| w.mismatch(&r)).collect();
            if wrong.is_empty() {
                if case.wants.is_empty() {
                    "accepted".into()
                } else {
                    "ok".into()
                }
            } else {
                let mut s = wrong.join("; ").replace('|', "/");
                if s.chars().count() > 90 {
                    s = s.chars().take(90).collect::<String>() + "…";
                }
                format!("**wrong**: {s}")
            }
        }
    }
}

/// What p2psip's validation does with a request it parsed (RFC 4475's answers).
fn p2psip_verdict(data: &[u8]) -> String {
    match p2psip::sip::parse(Bytes::copy_from_slice(data)) {
        Err(e) if e.request_headers.is_some() => "400 (parse)".into(),
        Err(_) => "drop".into(),
        Ok(m) if m.is_request() => match p2psip::sip::validate::check_request(&m) {
            Ok(()) => "pass".into(),
            Err(r) => r.status.to_string(),
        },
        Ok(m) => match p2psip::sip::validate::check_response(&m) {
            Ok(()) => "pass".into(),
            Err(_) => "drop".into(),
        },
    }
}

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "tests/data/rfc4475".into());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "dat"))
        .collect();
    files.sort_by_key(|p| rfc4475_wants(&stem(p)).0.split(' ').next().map(section_key));
    let mut cases: Vec<Case> = files
        .iter()
        .map(|p| {
            let name = stem(p);
            let (expect, wants) = rfc4475_wants(&name);
            Case { name, expect, data: std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())), wants }
        })
        .collect();
    cases.extend(focused_cases());

    let readers: [(&str, Reader); 3] =
        [("p2psip", read_p2psip), ("rsip 0.4", read_rsip), ("rsipstack 0.7", read_rsipstack)];
    let mut out = String::new();
    let _ =
        writeln!(out, "| message | RFC / expectation | p2psip parse | p2psip validate | rsip 0.4 | rsipstack 0.7 |");
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let mut tally = [[0usize; 3]; 3]; // [parser][ok, wrong, rejected] over cases with expected values
    for case in &cases {
        let cells: Vec<String> = readers.iter().map(|(_, r)| cell(*r, case)).collect();
        if !case.wants.is_empty() {
            for (i, c) in cells.iter().enumerate() {
                let k = if c == "ok" {
                    0
                } else if c.starts_with("**wrong") {
                    1
                } else {
                    2
                };
                tally[i][k] += 1;
            }
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            case.name,
            case.expect,
            cells[0],
            p2psip_verdict(&case.data),
            cells[1],
            cells[2]
        );
    }
    let _ = writeln!(out);
    let _ =
        writeln!(out, "Of the {} messages with expected values:", cases.iter().filter(|c| !c.wants.is_empty()).count());
    for (i, (name, _)) in readers.iter().enumerate() {
        let _ =
            writeln!(out, "- {name}: {} read right, {} read wrong, {} rejected", tally[i][0], tally[i][1], tally[i][2]);
    }
    print!("{out}");
}

fn stem(p: &Path) -> String {
    p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Orders RFC sections numerically: 3.1.1.10 after 3.1.1.9.
fn section_key(s: &str) -> Vec<u32> {
    s.split('.').map(|p| p.parse().unwrap_or(u32::MAX)).collect()
}
