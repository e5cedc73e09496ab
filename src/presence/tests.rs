//! The presence service on its own, phones and nodes played by the test: publications and
//! their ETags, watchers allowed or pending and promoted when our phones watch them back, a
//! buddy watched across the overlay, forged NOTIFYs refused, and a buddy whose node is gone.
#![allow(clippy::disallowed_methods)] // one real reading as the virtual clock's epoch

use std::time::{Duration, Instant};

use super::*;
use crate::transport::Transport;

const PROXY: &str = "127.0.0.1:5060";
const OVERLAY: &str = "127.0.0.1:5070";

fn presence() -> Presence {
    let me = Aor::parse("sip:bob@p2p.test").unwrap();
    Presence::new(me, PresenceConfig::default(), PROXY.parse().unwrap(), OVERLAY.parse().unwrap(), 7)
}

fn phone() -> Endpoint {
    Endpoint {
        listener: Listener::Proxy,
        transport: Transport::Udp,
        remote: "127.0.0.1:6000".parse().unwrap(),
        conn: None,
    }
}

fn node() -> Endpoint {
    Endpoint {
        listener: Listener::Overlay,
        transport: Transport::Udp,
        remote: "127.0.0.2:5070".parse().unwrap(),
        conn: None,
    }
}

fn request(text: &str) -> Message {
    let text = text.replace('\n', "\r\n");
    crate::sip::parse(bytes::Bytes::from(text)).unwrap()
}

fn publish(extra: &str, body: &str) -> Message {
    request(&format!(
        "PUBLISH sip:bob@p2p.test SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKp{}\nFrom: <sip:bob@p2p.test>;tag=p\n\
         To: <sip:bob@p2p.test>\nCall-ID: pub\nCSeq: 1 PUBLISH\nEvent: presence\n{extra}Content-Length: {}\n\n{body}",
        body.len(),
        body.len()
    ))
}

fn subscribe(ruri: &str, from: &str, extra: &str) -> Message {
    request(&format!(
        "SUBSCRIBE {ruri} SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bKs\nFrom: <{from}>;tag=w1\n\
         To: <sip:bob@p2p.test>\nCall-ID: sub-{from}\nCSeq: 1 SUBSCRIBE\nContact: <sip:127.0.0.2:5070>\nEvent: presence\n\
         {extra}Content-Length: 0\n\n"
    ))
}

fn outputs(p: &mut Presence) -> Vec<Output> {
    std::iter::from_fn(|| p.poll_output()).collect()
}

fn statuses(out: &[Output]) -> Vec<u16> {
    out.iter()
        .filter_map(|o| match o {
            Output::Respond { response, .. } => response.status(),
            _ => None,
        })
        .collect()
}

fn notifies(out: &[Output]) -> Vec<(String, String)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { request, .. } if request.method() == Some(&Method::Notify) => {
                let state = request.headers.get(&HeaderName::SubscriptionState)?.value_str()?.to_owned();
                Some((state, String::from_utf8_lossy(&request.body).into_owned()))
            }
            _ => None,
        })
        .collect()
}

const OPEN: &str = "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:bob@p2p.test\"><tuple id=\"t\"><status><basic>open</basic></status></tuple></presence>";
const CLOSED: &str = "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:bob@p2p.test\"><tuple id=\"t\"><status><basic>closed</basic></status></tuple></presence>";

#[test]
fn publications_follow_rfc_3903() {
    let mut p = presence();
    let now = Instant::now();
    let pidf = "Content-Type: application/pidf+xml\nExpires: 120\n";
    p.handle_request(now, ServerTxId(1), phone(), &publish(pidf, OPEN), Some(Sender::OurPhone));
    let out = outputs(&mut p);
    let Some(Output::Respond { response, .. }) = out.first() else { panic!("{out:?}") };
    assert_eq!(response.status(), Some(200));
    let etag = response.headers.get(&HeaderName::other("SIP-ETag")).unwrap().value_str().unwrap().to_owned();
    assert_eq!(p.status().publications, 1);

    let cases = [
        (format!("SIP-If-Match: {etag}\nExpires: 120\n"), "", Some(Sender::OurPhone), 200),
        ("SIP-If-Match: nope\nExpires: 120\n".to_owned(), "", Some(Sender::OurPhone), 412),
        ("Content-Type: application/pidf+xml\nExpires: 10\n".to_owned(), OPEN, Some(Sender::OurPhone), 423),
        ("Content-Type: text/plain\nExpires: 120\n".to_owned(), "hi", Some(Sender::OurPhone), 415),
        ("Content-Type: application/pidf+xml\n".to_owned(), "<not pidf/>", Some(Sender::OurPhone), 400),
        ("Expires: 120\n".to_owned(), "", Some(Sender::OurPhone), 400),
        (
            "Content-Type: application/pidf+xml\n".to_owned(),
            OPEN,
            Some(Sender::Node(Aor::parse("sip:eve@p2p.test").unwrap())),
            403,
        ),
    ];
    for (n, (extra, body, sender, want)) in cases.into_iter().enumerate() {
        p.handle_request(now, ServerTxId(10 + n as u64), phone(), &publish(&extra, body), sender);
        assert_eq!(statuses(&outputs(&mut p)), vec![want], "{extra}");
    }
    let mut wrong_event = publish(pidf, OPEN);
    wrong_event.headers.set(Header::new(HeaderName::Event, "dialog"));
    p.handle_request(now, ServerTxId(30), phone(), &wrong_event, Some(Sender::OurPhone));
    assert_eq!(statuses(&outputs(&mut p)), vec![489]);
    // Expires: 0 removes it; the publication also lapses on its own.
    p.handle_request(
        now,
        ServerTxId(31),
        phone(),
        &publish(&format!("SIP-If-Match: {etag}\nExpires: 0\n"), ""),
        Some(Sender::OurPhone),
    );
    assert_eq!(statuses(&outputs(&mut p)), vec![200]);
    assert_eq!(p.status().publications, 0);
}

#[test]
fn watchers_wait_until_our_phones_watch_them_back_and_see_our_phones_come_and_go() {
    let mut p = presence();
    let now = Instant::now();
    p.set_phones_online(now, true);
    let alice = Aor::parse("sip:alice@p2p.test").unwrap();
    p.handle_request(
        now,
        ServerTxId(1),
        node(),
        &subscribe("sip:bob@127.0.0.1:5070", "sip:alice@p2p.test", "Expires: 600\n"),
        Some(Sender::Node(alice.clone())),
    );
    let out = outputs(&mut p);
    assert_eq!(statuses(&out), vec![200]);
    let n = notifies(&out);
    assert!(n.len() == 1 && n[0].0.starts_with("pending") && n[0].1.is_empty(), "{n:?}");
    assert_eq!((p.status().watchers, p.status().pending), (0, 1));
    // No proof of the watcher: refused.
    p.handle_request(now, ServerTxId(2), node(), &subscribe("sip:bob@127.0.0.1:5070", "sip:carol@p2p.test", ""), None);
    assert_eq!(statuses(&outputs(&mut p)), vec![403]);

    // Our phone watches alice: she may watch us; her subscription turns active with our state.
    let mine = request(
        "SUBSCRIBE sip:alice@p2p.test SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKm\nFrom: <sip:bob@p2p.test>;tag=b1\n\
         To: <sip:alice@p2p.test>\nCall-ID: mine\nCSeq: 1 SUBSCRIBE\nContact: <sip:bob@127.0.0.1:6000>\nEvent: presence\nExpires: 600\nContent-Length: 0\n\n",
    );
    p.handle_request(now, ServerTxId(3), phone(), &mine, Some(Sender::OurPhone));
    let out = outputs(&mut p);
    assert!(p.buddies().contains(&alice));
    let n = notifies(&out);
    assert!(n.iter().any(|(s, b)| s.starts_with("active") && b.contains("<basic>open</basic>")), "{n:?}");
    assert!(out.iter().any(|o| matches!(o, Output::Resolve { aor } if *aor == alice)), "alice's node is looked for");
    assert_eq!((p.status().watchers, p.status().pending), (1, 0));

    // Our last phone goes: closed for alice.
    p.set_phones_online(now, false);
    let n = notifies(&outputs(&mut p));
    assert!(n.len() == 1 && n[0].1.contains("<basic>closed</basic>"), "{n:?}");
    // The node leaves: alice's subscription ends, deactivated.
    p.leave(now);
    let n = notifies(&outputs(&mut p));
    assert!(n.iter().any(|(s, _)| s == "terminated;reason=deactivated"), "{n:?}");
}

#[test]
fn a_buddy_is_watched_across_the_overlay_and_forged_or_missing_nodes_are_handled() {
    let mut p = presence();
    let now = Instant::now();
    let alice = Aor::parse("sip:alice@p2p.test").unwrap();
    let mine = request(
        "SUBSCRIBE sip:alice@p2p.test SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKm\nFrom: <sip:bob@p2p.test>;tag=b1\n\
         To: <sip:alice@p2p.test>\nCall-ID: mine\nCSeq: 1 SUBSCRIBE\nContact: <sip:bob@127.0.0.1:6000>\nEvent: presence\nExpires: 600\nContent-Length: 0\n\n",
    );
    p.handle_request(now, ServerTxId(1), phone(), &mine, Some(Sender::OurPhone));
    let out = outputs(&mut p);
    let n = notifies(&out);
    assert!(n.len() == 1 && n[0].1.is_empty(), "unknown at first: {n:?}");
    p.resolved(now, &alice, Some(vec!["sip:alice@127.0.0.9:5070".into()]));
    let out = outputs(&mut p);
    let Some(Output::Send { key: SendKey::Subscribe(_), to, request: sub }) = out.first() else { panic!("{out:?}") };
    assert_eq!(to.remote, "127.0.0.9:5070".parse().unwrap());
    assert_eq!(sub.from().unwrap().uri.to_string(), "sip:bob@p2p.test");
    p.sent(SendKey::Subscribe(alice.clone()), ClientTxId(1));
    let tag = sub.from().unwrap().tag().unwrap().to_owned();
    let notify = |from_tag: &str, cseq: u32, state: &str, body: &str| {
        request(&format!(
            "NOTIFY sip:127.0.0.1:5070 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.9:5070;branch=z9hG4bKn{cseq}\nFrom: <sip:alice@p2p.test>;tag={from_tag}\n\
             To: <sip:bob@p2p.test>;tag={tag}\nCall-ID: {}\nCSeq: {cseq} NOTIFY\nContact: <sip:127.0.0.9:5070>\nEvent: presence\n\
             Subscription-State: {state}\nContent-Type: application/pidf+xml\nContent-Length: {}\n\n{body}",
            sub.call_id().unwrap(),
            body.len()
        ))
    };
    // A NOTIFY before the 200 (RFC 6665 §4.1.2.4), proven to come from alice's node.
    let first = notify("a1", 1, "active;expires=600", &OPEN.replace("bob", "alice"));
    assert!(p.wants(Listener::Overlay, &first));
    p.handle_request(now, ServerTxId(2), node(), &first, Some(Sender::Node(alice.clone())));
    let out = outputs(&mut p);
    assert_eq!(statuses(&out), vec![200]);
    assert!(notifies(&out).iter().any(|(_, b)| b.contains("<basic>open</basic>")), "our phone hears it");
    assert_eq!(p.status().buddies.get("sip:alice@p2p.test"), Some(&"open"));
    // One not proven to be alice's: refused, nothing changes.
    let forged = notify("a1", 2, "active;expires=600", &CLOSED.replace("bob", "alice"));
    p.handle_request(now, ServerTxId(3), node(), &forged, Some(Sender::Node(Aor::parse("sip:eve@p2p.test").unwrap())));
    let out = outputs(&mut p);
    assert_eq!(statuses(&out), vec![403]);
    assert!(notifies(&out).is_empty());
    assert_eq!(p.status().notifies_refused, 1);

    // The 200 comes; the refresh is due at 90%; it gets no answer: closed for our phone, whose
    // subscription stays; alice is looked for again after the back-off.
    let ok = request(&format!(
        "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\nFrom: <sip:bob@p2p.test>;tag={tag}\nTo: <sip:alice@p2p.test>;tag=a1\n\
         Call-ID: {}\nCSeq: 1 SUBSCRIBE\nContact: <sip:127.0.0.9:5070>\nExpires: 600\nContent-Length: 0\n\n",
        sub.call_id().unwrap()
    ));
    p.answered(now, ClientTxId(1), &ok);
    let refresh_at = p.poll_timeout().unwrap();
    assert!(refresh_at >= now + Duration::from_secs(500) && refresh_at <= now + Duration::from_secs(600));
    p.handle_timeout(refresh_at);
    let out = outputs(&mut p);
    let Some(Output::Send { key, request: refresh, .. }) =
        out.iter().find(|o| matches!(o, Output::Send { key: SendKey::Subscribe(_), .. }))
    else {
        panic!("{out:?}")
    };
    assert_eq!(refresh.to().unwrap().tag(), Some("a1"), "in the dialog");
    p.sent(key.clone(), ClientTxId(2));
    p.failed(refresh_at, ClientTxId(2));
    let out = outputs(&mut p);
    assert!(
        notifies(&out).iter().any(|(s, b)| s.starts_with("active") && b.contains("<basic>closed</basic>")),
        "{out:?}"
    );
    assert_eq!(p.status().phone_subscriptions, 1);
    p.handle_timeout(refresh_at + Duration::from_secs(31));
    assert!(outputs(&mut p).iter().any(|o| matches!(o, Output::Resolve { .. })), "tried again");
}
