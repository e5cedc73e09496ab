use bytes::Bytes;

use super::*;
use crate::proxy::accounts::Account;
use crate::proxy::digest::ha1;
use crate::sip::parse;

const REALM: &str = "p2p.test";

fn authenticator() -> Authenticator {
    Authenticator::new(&[7; 32], Duration::from_secs(300), REALM, Algorithm::DEFAULT_OFFER.to_vec())
}

fn accounts() -> Accounts {
    let mut a = Accounts::default();
    a.insert(Account::new("sip:alice@p2p.test", "secret").unwrap());
    a
}

fn phone() -> SocketAddr {
    "192.0.2.10:5060".parse().unwrap()
}

/// A REGISTER (or, with `realm = Proxy`, an INVITE) from alice with credentials computed for
/// `password`, `nonce`, `nc`, and the digest-uri `uri`.
fn signed(realm: Realm, nonce: &str, nc: u32, password: &str, uri: &str, cseq: u32) -> Message {
    let (method, ruri, header) = match realm {
        Realm::Registrar => ("REGISTER", "sip:p2p.test", "Authorization"),
        Realm::Proxy => ("INVITE", "sip:bob@p2p.test", "Proxy-Authorization"),
    };
    let h = Algorithm::Md5;
    let ha1 = ha1(h, "alice", REALM, password);
    let ha2 = h.hash(&format!("{method}:{uri}"));
    let nc = format!("{nc:08x}");
    let response = h.hash(&format!("{ha1}:{nonce}:{nc}:c0ffee:auth:{ha2}"));
    let text = format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK{cseq}\r\n\
         From: <sip:alice@p2p.test>;tag=a\r\nTo: <sip:alice@p2p.test>\r\nCall-ID: c1\r\n\
         CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n\
         {header}: Digest username=\"alice\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         algorithm=MD5, qop=auth, nc={nc}, cnonce=\"c0ffee\", response=\"{response}\"\r\n\
         Content-Length: 0\r\n\r\n"
    );
    parse(Bytes::from(text)).unwrap()
}

/// No URI but the Request-URI names the node in these tests.
fn no_alias(_: &crate::sip::Uri) -> bool {
    false
}

fn status(r: &Result<String, AuthFailure>) -> Option<u16> {
    match r {
        Ok(_) => None,
        Err(AuthFailure::Challenge(r) | AuthFailure::Refused(r)) => Some(r.status),
    }
}

#[test]
fn nonces_are_bound_to_the_source_and_expire() {
    let mut a = authenticator();
    let n = a.make_nonce(1000, phone());
    assert_ne!(a.make_nonce(1000, phone()), n, "every challenge has a nonce of its own");
    assert_eq!(a.check_nonce(&n, 1000, phone()).0, NonceCheck::Fresh);
    assert_eq!(a.check_nonce(&n, 1300, phone()).0, NonceCheck::Fresh);
    assert_eq!(a.check_nonce(&n, 1301, phone()).0, NonceCheck::Stale);
    let elsewhere: SocketAddr = "192.0.2.10:5062".parse().unwrap();
    assert_eq!(a.check_nonce(&n, 1000, elsewhere).0, NonceCheck::Forged, "another source port");
    let other_key = Authenticator::new(&[8; 32], Duration::from_secs(300), REALM, vec![Algorithm::Md5]);
    assert_eq!(other_key.check_nonce(&n, 1000, phone()).0, NonceCheck::Forged);
    for junk in ["", ".", "zz.00", "3e8.0", "3e8.é1", "3e8.1.é1", "3e8..00"] {
        assert_eq!(a.check_nonce(junk, 1000, phone()).0, NonceCheck::Forged, "{junk}");
    }
}

#[test]
fn a_captured_register_replayed_from_elsewhere_gets_a_fresh_challenge() {
    let (mut a, accounts) = (authenticator(), accounts());
    let nonce = a.make_nonce(10, phone());
    let msg = signed(Realm::Registrar, &nonce, 1, "secret", "sip:p2p.test", 1);
    assert_eq!(
        a.authenticate(&accounts, &msg, Realm::Registrar, 10, phone(), no_alias),
        Ok("sip:alice@p2p.test".into())
    );
    let attacker: SocketAddr = "192.0.2.66:5060".parse().unwrap();
    let r = a.authenticate(&accounts, &msg, Realm::Registrar, 11, attacker, no_alias);
    let Err(AuthFailure::Challenge(c)) = r else { panic!("{r:?}") };
    assert_eq!(c.status, 401);
    assert!(c.headers.iter().all(|h| !h.value_str().unwrap_or_default().contains("stale=true")));
}

#[test]
fn nonce_counts_must_grow_but_a_retransmission_passes() {
    let (mut a, accounts) = (authenticator(), accounts());
    let nonce = a.make_nonce(10, phone());
    let first = signed(Realm::Registrar, &nonce, 1, "secret", "sip:p2p.test", 1);
    assert!(a.authenticate(&accounts, &first, Realm::Registrar, 10, phone(), no_alias).is_ok());
    // The same request again (its 200 was lost): the registrar answers it again.
    assert!(a.authenticate(&accounts, &first, Realm::Registrar, 11, phone(), no_alias).is_ok());
    // The same nonce count on another request is a replay: challenged again, stale.
    let replay = signed(Realm::Registrar, &nonce, 1, "secret", "sip:p2p.test", 2);
    let r = a.authenticate(&accounts, &replay, Realm::Registrar, 12, phone(), no_alias);
    let Err(AuthFailure::Challenge(c)) = &r else { panic!("{r:?}") };
    assert!(c.headers.iter().any(|h| h.value_str().unwrap_or_default().contains("stale=true")));
    let next = signed(Realm::Registrar, &nonce, 2, "secret", "sip:p2p.test", 2);
    assert!(a.authenticate(&accounts, &next, Realm::Registrar, 12, phone(), no_alias).is_ok());
}

#[test]
fn the_digest_uri_must_be_the_request_uri() {
    let (mut a, accounts) = (authenticator(), accounts());
    let nonce = a.make_nonce(10, phone());
    let msg = signed(Realm::Registrar, &nonce, 1, "secret", "sip:elsewhere.test", 1);
    assert_eq!(status(&a.authenticate(&accounts, &msg, Realm::Registrar, 10, phone(), no_alias)), Some(403));
    // One that names this node another way (its address, as sipp writes it) is accepted.
    let nonce = a.make_nonce(10, phone());
    let msg = signed(Realm::Registrar, &nonce, 1, "secret", "sip:192.0.2.1:5060", 2);
    let ours = |u: &crate::sip::Uri| u.to_string() == "sip:192.0.2.1:5060";
    assert!(a.authenticate(&accounts, &msg, Realm::Registrar, 10, phone(), ours).is_ok());
}

#[test]
fn the_proxy_challenges_with_407_and_takes_proxy_authorization() {
    let (mut a, accounts) = (authenticator(), accounts());
    let bare = parse(Bytes::from_static(
        b"INVITE sip:bob@p2p.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\r\n\
          From: <sip:alice@p2p.test>;tag=a\r\nTo: <sip:bob@p2p.test>\r\nCall-ID: c1\r\n\
          CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
    ))
    .unwrap();
    let r = a.authenticate(&accounts, &bare, Realm::Proxy, 10, phone(), no_alias);
    let Err(AuthFailure::Challenge(c)) = r else { panic!("{r:?}") };
    assert_eq!(c.status, 407);
    assert!(c.headers.iter().all(|h| *h.name() == HeaderName::ProxyAuthenticate));
    let nonce = a.make_nonce(10, phone());
    let msg = signed(Realm::Proxy, &nonce, 1, "secret", "sip:bob@p2p.test", 1);
    assert_eq!(a.authenticate(&accounts, &msg, Realm::Proxy, 10, phone(), no_alias), Ok("sip:alice@p2p.test".into()));
}

#[test]
fn repeated_failures_back_the_source_off_and_success_does_not_come_through_it() {
    let (mut a, accounts) = (authenticator(), accounts());
    let nonce = a.make_nonce(10, phone());
    for i in 0..FAILURES_BEFORE_BACKOFF {
        let wrong = signed(Realm::Registrar, &nonce, i + 1, "guess", "sip:p2p.test", i + 1);
        assert_eq!(status(&a.authenticate(&accounts, &wrong, Realm::Registrar, 10, phone(), no_alias)), Some(403));
    }
    // Now even the right password is refused until the wait is over, without a hash.
    let right = signed(Realm::Registrar, &nonce, 10, "secret", "sip:p2p.test", 10);
    let r = a.authenticate(&accounts, &right, Realm::Registrar, 10, phone(), no_alias);
    let Err(AuthFailure::Refused(refusal)) = &r else { panic!("{r:?}") };
    assert!(refusal.reason.contains("too many"), "{}", refusal.reason);
    assert_eq!(a.backed_off, 1);
    // Another address of the same /64 waits too; another IPv4 address does not.
    let same_v4: SocketAddr = "192.0.2.10:6000".parse().unwrap();
    assert!(a.is_backed_off(same_v4.ip(), 10));
    assert!(!a.is_backed_off("192.0.2.11".parse().unwrap(), 10));
    // Once the first wait has passed, the right password works and clears the record.
    let wait = FIRST_BACKOFF.as_secs();
    assert!(a.authenticate(&accounts, &right, Realm::Registrar, 10 + wait, phone(), no_alias).is_ok());
    assert!(!a.is_backed_off(phone().ip(), 10 + wait));
}

#[test]
fn an_unknown_user_is_refused_like_a_wrong_password() {
    let (mut a, accounts) = (authenticator(), accounts());
    let nonce = a.make_nonce(10, phone());
    let msg = signed(Realm::Registrar, &nonce, 1, "secret", "sip:p2p.test", 1);
    let text = String::from_utf8(msg.encode().to_vec()).unwrap().replace("username=\"alice\"", "username=\"mallory\"");
    let mallory = parse(Bytes::from(text)).unwrap();
    assert_eq!(status(&a.authenticate(&accounts, &mallory, Realm::Registrar, 10, phone(), no_alias)), Some(403));
}
