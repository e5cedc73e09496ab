//! RFC 4475 "SIP Torture Test Messages", section by section.
//!
//! Each message is fed, byte for byte as the RFC's archive gives it, to a real [`Peer`] as a
//! UDP datagram arriving at its softphone-facing proxy listener. For each we check what the
//! RFC expects of an element in the role the node plays for that request (proxy for a
//! user's URI, UAS for the node's own URI, registrar for REGISTER), and for the well-formed
//! ones that the parser read the values the RFC points out. The UAS-only expectations for
//! requests the node proxies (415, 406, 420 on Require) are checked on the UAS policy itself.
//!
//! `tests/it/live_rfc4475.rs` sends the same 49 datagrams to a running daemon.

// Instant::now() only seeds the virtual clock's origin; nothing waits on it.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::Instant;

use p2psip::peer::{policy, Endpoint, Input, Listener, Peer, PeerConfig, Transport};
use p2psip::sip::header::Via;
use p2psip::sip::{parse, validate, Contacts, HeaderName, Message, Method, StartLine, Uri};

use crate::rfc4475_table::{corpus_dir, load, Expect::Dropped, Expect::Status, TABLE};

fn parsed(name: &str) -> Message {
    parse(load(name)).unwrap_or_else(|e| panic!("{name} should parse: {e}"))
}

const SENDER: &str = "127.0.0.77:5060";

/// Feeds one torture message to a fresh peer; returns every datagram it sent back, with the
/// address it went to.
fn exchange(name: &str) -> Vec<(SocketAddr, Message)> {
    let now = Instant::now();
    let mut peer =
        Peer::new(PeerConfig::new("127.0.0.1:5070".parse().unwrap(), "127.0.0.1:5060".parse().unwrap()), now);
    let from =
        Endpoint { listener: Listener::Proxy, transport: Transport::Udp, remote: SENDER.parse().unwrap(), conn: None };
    peer.handle_input(now, Input::receive(from, load(name)));
    let mut sent = Vec::new();
    peer.drain(|t| sent.push(t), |_| {});
    sent.into_iter().map(|t| (t.to.remote, parse(t.data).expect("the node's own output parses"))).collect()
}

/// The one final response the peer sent (after an optional 100), or `None` if it sent nothing.
fn answer(name: &str) -> Option<Message> {
    let mut out = exchange(name);
    out.retain(|(_, m)| m.status() != Some(100));
    assert!(out.len() <= 1, "{name}: more than one final response: {out:?}");
    out.pop().map(|(_, m)| m)
}

fn status(name: &str) -> Option<u16> {
    answer(name).and_then(|m| m.status())
}

#[test]
fn table_covers_the_whole_corpus() {
    let mut files: Vec<String> = std::fs::read_dir(corpus_dir())
        .expect("corpus directory")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".dat").map(str::to_owned))
        .collect();
    files.sort();
    let mut names: Vec<String> = TABLE.iter().map(|(n, _, _)| n.to_string()).collect();
    names.sort();
    assert_eq!(files, names);
    assert_eq!(names.len(), 49);
}

#[test]
fn every_message_gets_what_the_rfc_expects() {
    let mut wrong = Vec::new();
    for (name, section, expect) in TABLE {
        let got = status(name);
        let ok = match expect {
            Status(codes) => got.is_some_and(|c| codes.contains(&c)),
            Dropped => got.is_none(),
        };
        if !ok {
            wrong.push(format!("{name} (§{section}): expected {expect:?}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn responses_go_where_the_via_says() {
    // RFC 3261 §18.2.2: the received address (the datagram's source IP), the sent-by port.
    for (name, _, expect) in TABLE {
        if matches!(expect, Dropped) {
            continue;
        }
        let request = parse(load(name)).ok();
        let via = request.as_ref().and_then(|m| m.top_via().ok());
        for (to, _) in exchange(name) {
            let port = match &via {
                Some(v) if v.rport().is_some() => 5060,
                Some(v) => v.port.unwrap_or(5060),
                None => 5060,
            };
            assert_eq!(to, SocketAddr::new("127.0.0.77".parse().unwrap(), port), "{name}");
        }
    }
}

#[test]
fn answers_copy_the_transaction_headers() {
    // RFC 3261 §8.2.6.2: Call-ID, CSeq, From and Via copied; To gets a tag.
    for name in ["badvers", "scalar02", "bext01", "zeromf", "esc02", "escnull"] {
        let req = parse(load(name)).ok();
        let resp = answer(name).expect("answered");
        let raw = |m: &Message, h: HeaderName| m.headers.get(&h).map(|x| x.value().to_vec());
        if let Some(req) = &req {
            assert_eq!(raw(&resp, HeaderName::CallId), raw(req, HeaderName::CallId), "{name}");
            assert_eq!(raw(&resp, HeaderName::CSeq), raw(req, HeaderName::CSeq), "{name}");
            assert_eq!(raw(&resp, HeaderName::From), raw(req, HeaderName::From), "{name}");
        }
        assert!(resp.to().expect("To parses").tag().is_some(), "{name}: To tag");
    }
}

/// §3.1.1: valid messages. The parser must read what the RFC says they contain.
mod valid {
    use super::*;

    #[test]
    fn wsinv_whitespace_folding_compact_forms() {
        let m = parsed("wsinv");
        assert_eq!(m.max_forwards(), Ok(Some(68)));
        assert_eq!(m.cseq().unwrap().seq, 9);
        assert_eq!(m.cseq().unwrap().method, Method::Invite);
        assert_eq!(m.to().unwrap().tag(), Some("1918181833n"));
        let from = m.from().unwrap();
        assert_eq!(from.display.as_deref(), Some(r#"J Rosenberg \""#));
        assert_eq!(from.tag(), Some("98asjd8"));
        let vias = m.vias().unwrap();
        let transports: Vec<&str> = vias.iter().map(|v| v.transport.as_str()).collect();
        assert_eq!(transports, ["UDP", "TCP", "UDP"]);
        assert_eq!(vias[0].branch(), Some("390skdjuw"));
        assert_eq!(vias[1].branch(), Some("z9hG4bK9ikj8"));
        assert_eq!(vias[2].host.to_string(), "192.168.255.111");
        let Contacts::List(contacts) = m.contacts().unwrap() else { panic!("list") };
        assert_eq!(contacts[0].display.as_deref(), Some(r#"Quoted string """#));
        assert_eq!(contacts[0].param("newparam").unwrap().value.as_deref(), Some("newvalue"));
        assert_eq!(contacts[0].param("q").unwrap().value.as_deref(), Some("0.33"));
        assert_eq!(m.headers.get(&HeaderName::Subject).unwrap().value(), b"");
        let nf = m.headers.get(&HeaderName::other("newfangledheader")).unwrap();
        assert_eq!(nf.value(), b"newfangled value\r\n continued newfangled value");
        assert_eq!(m.headers.get(&HeaderName::other("UnknownHeaderWithUnusualValue")).unwrap().value(), b";;,,;;,;");
        assert_eq!(m.routes().unwrap().len(), 1);
        assert_eq!(m.body.len(), 150);
    }

    #[test]
    fn intmeth_unusual_method_and_tokens() {
        let m = parsed("intmeth");
        let method = m.method().unwrap();
        assert_eq!(method.as_str(), "!interesting-Method0123456789_*+`.%indeed'~");
        assert!(!method.is_known());
        assert_eq!(&m.cseq().unwrap().method, method);
        let uri = m.request_uri().unwrap().as_sip().unwrap();
        assert_eq!(uri.user.as_deref(), Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"));
        assert_eq!(uri.password.as_deref(), Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"));
        assert_eq!(m.call_id().unwrap(), "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{");
        let from = m.from().unwrap();
        assert_eq!(from.display.as_deref(), Some("token1~` token2'+_ token3*%!.-"));
        assert!(m.headers.get(&HeaderName::other("extensionHeader-!.%*+_`'~")).is_some());
        // An element that is the UAS for an unknown method answers 501 (RFC 3261 §8.2.1).
        assert!(!m.method().unwrap().is_known());
    }

    #[test]
    fn esc01_escaped_user_parts() {
        let m = parsed("esc01");
        let ruri = m.request_uri().unwrap().as_sip().unwrap();
        assert_eq!(ruri.user_unescaped().unwrap(), b"sips:user@example.com");
        let to = m.to().unwrap();
        assert_eq!(to.uri.as_sip().unwrap().user_unescaped().unwrap(), b"user");
        let from = m.from().unwrap();
        assert_eq!(from.uri.as_sip().unwrap().user_unescaped().unwrap(), b"I have spaces");
        assert_eq!(m.content_type().unwrap().unwrap().subtype, "sdp");
        match m.contacts().unwrap() {
            Contacts::List(c) => assert_eq!(c[0].uri.as_sip().unwrap().user_unescaped().unwrap(), b"caller"),
            Contacts::Star => panic!("not a star"),
        }
    }

    #[test]
    fn escnull_nul_does_not_shorten() {
        let m = parsed("escnull");
        let to = m.to().unwrap();
        let user = to.uri.as_sip().unwrap().user_unescaped().unwrap();
        assert_eq!(user, b"null-\0-null");
        match m.contacts().unwrap() {
            Contacts::List(c) => {
                assert_eq!(c.len(), 2);
                assert_eq!(c[1].uri.as_sip().unwrap().user_unescaped().unwrap(), b"\0\0");
            }
            Contacts::Star => panic!("not a star"),
        }
    }

    #[test]
    fn esc02_escapes_in_method_and_header_names_are_literal() {
        let m = parsed("esc02");
        assert_eq!(m.method().unwrap().as_str(), "RE%47IST%45R");
        // "C%6Fntact" is an extension header, not Contact.
        match m.contacts().unwrap() {
            Contacts::List(c) => assert_eq!(c.len(), 2),
            Contacts::Star => panic!("not a star"),
        }
        assert!(m.headers.get(&HeaderName::other("C%6Fntact")).is_some());
        let resp = answer("esc02").unwrap();
        assert_eq!(resp.status(), Some(501));
        assert!(resp.headers.get(&HeaderName::Allow).is_some(), "501 carries Allow");
    }

    #[test]
    fn lwsdisp_display_name_without_space() {
        assert_eq!(parsed("lwsdisp").from().unwrap().display.as_deref(), Some("caller"));
    }

    #[test]
    fn longreq_long_values() {
        let m = parsed("longreq");
        assert!(m.call_id().unwrap().len() > 100);
        assert!(m.vias().unwrap().len() >= 34);
        assert!(m.to().unwrap().display.unwrap().len() > 100);
        assert_eq!(m.content_length().unwrap().map(|l| l as usize), Some(m.body.len()));
    }

    #[test]
    fn dblreq_only_the_first_message() {
        let m = parsed("dblreq");
        assert_eq!(m.method(), Some(&Method::Register));
        assert!(m.body.is_empty());
        assert_eq!(exchange("dblreq").len(), 1, "the trailing INVITE is ignored");
    }

    #[test]
    fn semiuri_semicolons_in_user() {
        let m = parsed("semiuri");
        let ruri = m.request_uri().unwrap().as_sip().unwrap();
        assert_eq!(ruri.user.as_deref(), Some("user;par=u%40example.net"));
        assert!(ruri.params.is_empty());
    }

    #[test]
    fn transports_unknown_transports() {
        let v: Vec<String> = parsed("transports").vias().unwrap().into_iter().map(|v| v.transport).collect();
        assert_eq!(v, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
    }

    #[test]
    fn mpart01_body_framed_by_content_length() {
        let m = parsed("mpart01");
        assert_eq!(m.body.len(), 553);
        let ct = m.content_type().unwrap().unwrap();
        assert!(ct.is("multipart", "mixed"));
        assert_eq!(ct.params[0].value.as_deref(), Some("7a9cbec02ceef655"));
    }

    #[test]
    fn unusual_reason_phrases() {
        match parsed("unreason").start {
            StartLine::Response(s) => {
                assert_eq!(s.code, 200);
                assert!(s.reason.starts_with("= 2**3 * 5**2 "));
            }
            StartLine::Request(_) => panic!("a response"),
        }
        match parsed("noreason").start {
            StartLine::Response(s) => assert_eq!((s.code, s.reason.as_str()), (100, "")),
            StartLine::Request(_) => panic!("a response"),
        }
    }
}

/// §3.1.2: invalid messages. The reason phrase says what was wrong.
mod invalid {
    use super::*;

    fn reason(name: &str) -> String {
        match answer(name).expect("answered").start {
            StartLine::Response(s) => s.reason,
            StartLine::Request(_) => unreachable!(),
        }
    }

    #[test]
    fn reasons_name_the_fault() {
        assert!(reason("badinv01").contains("Via"));
        assert!(reason("clerr").contains("Content-Length"));
        assert!(reason("ncl").contains("Content-Length"));
        assert!(reason("scalar02").contains("CSeq") || reason("scalar02").contains("Max-Forwards"));
        assert!(reason("quotbal").contains("To"));
        assert!(reason("ltgtruri").contains("Request-URI"));
        assert!(reason("lwsruri").contains("Request-URI"));
        assert!(reason("escruri").contains("Request-URI"));
        assert!(reason("regbadct").contains("Contact"));
        assert!(reason("baddn").contains("From"));
        assert!(reason("mismatch01").contains("CSeq"));
        assert!(reason("multi01").to_lowercase().contains("more than one"));
        assert!(reason("mcl01").contains("Content-Length"));
        assert!(reason("insuf").to_lowercase().contains("missing"));
    }

    #[test]
    fn overlarge_scalars_are_errors_not_wraparounds() {
        let m = parsed("scalar02");
        assert!(m.cseq().is_err());
        assert!(m.max_forwards().is_err(), "300 is over 255");
        assert!(m.expires().is_err());
        assert!(validate::check_response(&parsed("scalarlg")).is_err());
    }

    #[test]
    fn tolerated_forms_parse_to_the_intended_request() {
        let m = parsed("lwsstart");
        assert_eq!(m.request_uri().unwrap().to_string(), "sip:user@example.com");
        let m = parsed("trws");
        assert_eq!(m.request_uri().unwrap().to_string(), "sip:remote-target@example.com");
        let m = parsed("badaspec");
        assert_eq!(m.to().unwrap().uri.to_string(), "sip:t.watson@example.org");
        assert_eq!(m.to().unwrap().display.as_deref(), Some("Watson, Thomas"));
    }

    #[test]
    fn bigcode_is_not_a_message() {
        assert!(parse(load("bigcode")).is_err());
    }
}

/// §3.2: transaction layer semantics.
mod transaction {
    use super::*;

    #[test]
    fn badbranch_is_not_a_3261_branch() {
        let via: Via = parsed("badbranch").top_via().unwrap();
        assert_eq!(via.branch(), Some("z9hG4bK"));
        assert!(!via.has_rfc3261_branch(), "the bare cookie must use RFC 2543 matching");
    }
}

/// §3.3: application-layer semantics.
mod application {
    use super::*;

    #[test]
    fn bext01_lists_the_unsupported_proxy_options() {
        let resp = answer("bext01").unwrap();
        let tags = resp.option_tags(&HeaderName::Unsupported).unwrap();
        assert_eq!(tags, ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]);
        // As a UAS the node would refuse the Require options (RFC 3261 §8.2.2.3).
        let r = policy::uas_checks(&parsed("bext01")).unwrap_err();
        assert_eq!(r.status, 420);
        assert!(r.headers[0].value_str().unwrap().contains("nothingSupportsThis"));
    }

    #[test]
    fn invut_and_sdp01_as_a_uas() {
        let r = policy::uas_checks(&parsed("invut")).unwrap_err();
        assert_eq!(r.status, 415);
        assert_eq!(r.headers[0].name(), &HeaderName::Accept);
        assert_eq!(policy::uas_checks(&parsed("sdp01")).unwrap_err().status, 406);
    }

    #[test]
    fn regaut01_challenge_is_digest() {
        let resp = answer("regaut01").unwrap();
        let challenges = resp.auth(&HeaderName::WwwAuthenticate).unwrap();
        assert_eq!(challenges.len(), 1);
        assert!(challenges.iter().all(|c| c.is_digest() && c.get("nonce").is_some()));
        let algorithms: Vec<_> = challenges.iter().map(|c| c.get("algorithm")).collect();
        // MD5 alone by default: see proxy::digest::Algorithm::DEFAULT_OFFER.
        assert_eq!(algorithms, [Some("MD5")]);
    }

    #[test]
    fn unknown_schemes() {
        assert_eq!(parsed("unkscm").request_uri().unwrap().scheme(), "nobodyknowsthisscheme");
        assert!(matches!(parsed("novelsc").request_uri().unwrap(), Uri::Other { scheme, .. } if scheme == "soap.beep"));
        // Unknown schemes in header fields are fine (§3.3.4).
        let m = parsed("unksm2");
        assert_eq!(m.to().unwrap().uri.scheme(), "isbn");
    }

    #[test]
    fn register_contact_parameters_kept() {
        // Without brackets the parameter belongs to the header field (RFC 3261 §20.10)…
        let m = parsed("cparam01");
        let Contacts::List(c) = m.contacts().unwrap() else { panic!("list") };
        assert!(c[0].param("unknownparam").is_some());
        assert!(c[0].uri.as_sip().unwrap().params.is_empty());
        // …inside them, to the URI.
        let m = parsed("cparam02");
        let Contacts::List(c) = m.contacts().unwrap() else { panic!("list") };
        assert!(c[0].uri.as_sip().unwrap().param("unknownparam").is_some());
        assert!(c[0].params.is_empty());
        let m = parsed("regescrt");
        let Contacts::List(c) = m.contacts().unwrap() else { panic!("list") };
        assert_eq!(c[0].uri.as_sip().unwrap().headers.as_deref(), Some("Route=%3Csip:sip.example.com%3E"));
    }

    #[test]
    fn bcast_response_is_dropped() {
        assert!(validate::check_response(&parsed("bcast")).is_err());
    }
}

/// §3.4: backward compatibility.
mod backward {
    use super::*;

    #[test]
    fn inv2543_rfc2543_syntax_accepted() {
        let m = parsed("inv2543");
        assert!(validate::check_request(&m).is_ok());
        assert_eq!(m.max_forwards(), Ok(None));
        assert!(m.top_via().unwrap().branch().is_none());
        // Unbracketed, `;user=phone` is a header parameter of To (RFC 3261 §20.10).
        assert_eq!(m.to().unwrap().param("user").unwrap().value.as_deref(), Some("phone"));
        // Bracketed in From, it is the URI's.
        assert_eq!(m.from().unwrap().uri.as_sip().unwrap().param("user").unwrap().value.as_deref(), Some("phone"));
    }
}
