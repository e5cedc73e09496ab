//! Client transactions, state by state (RFC 3261 §17.1.1, §17.1.2; RFC 6026 §7.2).

use super::*;
use crate::sip::transaction::{ClientState, TransactionError};
use crate::sip::Method;

fn times(sends: &[(Duration, Message)]) -> Vec<Duration> {
    sends.iter().map(|(t, _)| *t).collect()
}

#[test]
fn non_invite_udp_retransmits_500ms_doubling_to_t2_and_times_out_at_64_t1() {
    let t0 = epoch();
    let mut l = layer();
    let id = l.send_request(t0, request("OPTIONS", "z9hG4bKo1"), "server", false);
    assert_eq!(l.client_state(id), Some(ClientState::Trying));
    assert_eq!(sent(&mut l).len(), 1);
    let sends = run_until(&mut l, t0, ms(40_000));
    let mut all = vec![Duration::ZERO];
    all.extend(times(&sends));
    // §17.1.2.2: E = T1, 2·T1, 4·T1, then T2; F = 64·T1.
    assert_eq!(gaps(&all), [500, 1000, 2000, 4000, 4000, 4000, 4000, 4000, 4000, 4000].map(ms));
    assert!(sends.iter().all(|(_, m)| m.method() == Some(&Method::Options)));
    assert_eq!(events(&mut l), [Event::ClientTimeout { id }, Event::ClientTerminated { id }]);
    assert_eq!((l.client_count(), l.timer_count()), (0, 0));
}

#[test]
fn non_invite_timeout_fires_at_exactly_64_t1() {
    let t0 = epoch();
    let mut l = layer();
    let id = l.send_request(t0, request("OPTIONS", "z9hG4bKo2"), "server", false);
    run_until(&mut l, t0, ms(31_999));
    assert!(events(&mut l).is_empty());
    assert_eq!(l.poll_timeout(), Some(t0 + ms(32_000)));
    l.handle_timeout(t0 + ms(32_000));
    assert_eq!(events(&mut l)[0], Event::ClientTimeout { id });
}

#[test]
fn non_invite_tcp_never_retransmits() {
    let t0 = epoch();
    let mut l = layer();
    let id = l.send_request(t0, request("OPTIONS", "z9hG4bKo3"), "server", true);
    sent(&mut l);
    assert_eq!(l.poll_timeout(), Some(t0 + ms(32_000)));
    assert!(run_until(&mut l, t0, ms(40_000)).is_empty());
    assert_eq!(events(&mut l), [Event::ClientTimeout { id }, Event::ClientTerminated { id }]);
}

#[test]
fn non_invite_proceeding_retransmits_every_t2() {
    let t0 = epoch();
    let mut l = layer();
    let req = request("OPTIONS", "z9hG4bKo4");
    let id = l.send_request(t0, req.clone(), "server", false);
    sent(&mut l);
    let r = l.handle_message(t0 + ms(100), response(&req, 100), "server", false);
    assert!(matches!(r, Received::Response { id: i, .. } if i == id));
    assert_eq!(l.client_state(id), Some(ClientState::Proceeding));
    let sends = run_until(&mut l, t0, ms(13_000));
    // The first E (armed in Trying) still fires at T1; after that every T2 (§17.1.2.2).
    assert_eq!(times(&sends), [500, 4500, 8500, 12_500].map(ms));
}

#[test]
fn non_invite_final_completes_and_absorbs_retransmissions_for_t4() {
    let t0 = epoch();
    let mut l = layer();
    let req = request("REGISTER", "z9hG4bKo5");
    let id = l.send_request(t0, req.clone(), "server", false);
    sent(&mut l);
    let ok = response(&req, 200);
    let r = l.handle_message(t0 + ms(700), ok.clone(), "server", false);
    assert_eq!(r, Received::Response { id, response: ok.clone() });
    assert_eq!(l.client_state(id), Some(ClientState::Completed));
    // Retransmitted finals are absorbed and nothing is resent.
    assert_eq!(l.handle_message(t0 + ms(800), ok.clone(), "server", false), Received::Absorbed);
    assert!(sent(&mut l).is_empty());
    // §17.1.2.2: timer K = T4 over UDP; E and F are gone.
    assert_eq!(l.poll_timeout(), Some(t0 + ms(5700)));
    assert_eq!(l.timer_count(), 1);
    l.handle_timeout(t0 + ms(5700));
    assert_eq!(events(&mut l), [Event::ClientTerminated { id }]);
    // Once gone, the response is stray.
    assert!(matches!(l.handle_message(t0 + ms(5800), ok, "server", false), Received::Stray { .. }));
}

#[test]
fn non_invite_final_over_tcp_terminates_at_once() {
    let t0 = epoch();
    let mut l = layer();
    let req = request("BYE", "z9hG4bKo6");
    let id = l.send_request(t0, req.clone(), "server", true);
    let r = l.handle_message(t0 + ms(10), response(&req, 481), "server", true);
    assert!(matches!(r, Received::Response { .. }));
    assert_eq!(events(&mut l), [Event::ClientTerminated { id }]);
    assert_eq!((l.client_count(), l.timer_count()), (0, 0));
}

#[test]
fn invite_udp_doubles_timer_a_without_cap_and_times_out_at_64_t1() {
    let t0 = epoch();
    let mut l = layer();
    let id = l.send_request(t0, request("INVITE", "z9hG4bKi1"), "server", false);
    assert_eq!(l.client_state(id), Some(ClientState::Calling));
    sent(&mut l);
    let sends = run_until(&mut l, t0, ms(40_000));
    let mut all = vec![Duration::ZERO];
    all.extend(times(&sends));
    // §17.1.1.2: A = T1 doubling; B = 64·T1.
    assert_eq!(gaps(&all), [500, 1000, 2000, 4000, 8000, 16_000].map(ms));
    assert_eq!(events(&mut l), [Event::ClientTimeout { id }, Event::ClientTerminated { id }]);
}

#[test]
fn invite_tcp_sends_once_and_times_out() {
    let t0 = epoch();
    let mut l = layer();
    let id = l.send_request(t0, request("INVITE", "z9hG4bKi2"), "server", true);
    sent(&mut l);
    assert!(run_until(&mut l, t0, ms(40_000)).is_empty());
    assert_eq!(events(&mut l)[0], Event::ClientTimeout { id });
}

#[test]
fn invite_provisional_stops_retransmission_and_timer_b() {
    let t0 = epoch();
    let mut l = layer();
    let req = request("INVITE", "z9hG4bKi3");
    let id = l.send_request(t0, req.clone(), "server", false);
    sent(&mut l);
    for code in [100, 180, 183] {
        let r = l.handle_message(t0 + ms(200), response(&req, code), "server", false);
        assert!(matches!(r, Received::Response { .. }), "{code}");
    }
    assert_eq!(l.client_state(id), Some(ClientState::Proceeding));
    // Figure 5: no timer runs in Proceeding; the TU decides (CANCEL, timer C).
    assert_eq!(l.poll_timeout(), None);
    let cancel = l.make_cancel(id).unwrap();
    assert_eq!(cancel.method(), Some(&Method::Cancel));
    l.terminate_client(id).unwrap();
    assert_eq!(events(&mut l), [Event::ClientTerminated { id }]);
    assert_eq!(l.terminate_client(id), Err(TransactionError::UnknownTransaction));
}

#[test]
fn invite_non_2xx_is_acked_by_the_transaction() {
    let t0 = epoch();
    let mut l = layer();
    let req = request("INVITE", "z9hG4bKi4");
    let id = l.send_request(t0, req.clone(), "server", false);
    sent(&mut l);
    let busy = response(&req, 486);
    let r = l.handle_message(t0 + ms(300), busy.clone(), "server", false);
    assert_eq!(r, Received::Response { id, response: busy.clone() });
    assert_eq!(l.client_state(id), Some(ClientState::Completed));
    let out = sent(&mut l);
    assert_eq!(out.len(), 1);
    let (to, ack) = &out[0];
    assert_eq!(*to, "server");
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.top_via().unwrap().branch(), Some("z9hG4bKi4"));
    assert_eq!(ack.to().unwrap().tag(), Some("b1"));
    // §17.1.1.2: each retransmitted final is absorbed and ACKed again.
    for k in 1..=3 {
        assert_eq!(l.handle_message(t0 + ms(300 + 500 * k), busy.clone(), "server", false), Received::Absorbed);
        let again = sent(&mut l);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].1, *ack);
    }
    // Timer D = 32 s over UDP; A and B are gone.
    assert_eq!(l.timer_count(), 1);
    assert_eq!(l.poll_timeout(), Some(t0 + ms(32_300)));
    l.handle_timeout(t0 + ms(32_300));
    assert_eq!(events(&mut l), [Event::ClientTerminated { id }]);
}

#[test]
fn invite_non_2xx_over_tcp_acks_and_terminates_at_once() {
    let t0 = epoch();
    let mut l = layer();
    let req = request("INVITE", "z9hG4bKi5");
    let id = l.send_request(t0, req.clone(), "server", true);
    sent(&mut l);
    let r = l.handle_message(t0 + ms(50), response(&req, 603), "server", true);
    assert!(matches!(r, Received::Response { .. }));
    assert_eq!(sent_codes(&mut l), [0]);
    assert_eq!(events(&mut l), [Event::ClientTerminated { id }]);
    assert_eq!(l.timer_count(), 0);
}

#[test]
fn invite_2xx_enters_accepted_and_passes_every_2xx_up() {
    let t0 = epoch();
    let mut l = layer();
    let req = request("INVITE", "z9hG4bKi6");
    let id = l.send_request(t0, req.clone(), "server", false);
    sent(&mut l);
    let ok = response(&req, 200);
    for k in 0..3 {
        let r = l.handle_message(t0 + ms(1000 + 500 * k), ok.clone(), "server", false);
        assert_eq!(r, Received::Response { id, response: ok.clone() });
        assert_eq!(l.client_state(id), Some(ClientState::Accepted));
    }
    // The ACK for a 2xx is the TU's (§13.2.2.4): the layer sent nothing.
    assert!(sent(&mut l).is_empty());
    // Non-2xx now are absorbed.
    assert_eq!(l.handle_message(t0 + ms(2600), response(&req, 486), "server", false), Received::Absorbed);
    // RFC 6026 §7.2: timer M = 64·T1 from the first 2xx.
    assert_eq!(l.poll_timeout(), Some(t0 + ms(33_000)));
    l.handle_timeout(t0 + ms(33_000));
    assert_eq!(events(&mut l), [Event::ClientTerminated { id }]);
}

#[test]
fn invite_2xx_over_tcp_still_waits_for_timer_m() {
    let t0 = epoch();
    let mut l = layer();
    let req = request("INVITE", "z9hG4bKi7");
    let id = l.send_request(t0, req.clone(), "server", true);
    l.handle_message(t0, response(&req, 200), "server", true);
    assert_eq!(l.client_state(id), Some(ClientState::Accepted));
    assert_eq!(l.poll_timeout(), Some(t0 + ms(32_000)));
}

#[test]
fn responses_match_by_branch_and_cseq_method() {
    let t0 = epoch();
    let mut l = layer();
    let invite = request("INVITE", "z9hG4bKi8");
    let iid = l.send_request(t0, invite.clone(), "server", false);
    l.handle_message(t0, response(&invite, 180), "server", false);
    // §9.1: the CANCEL has the INVITE's branch but is a transaction of its own.
    let cancel = l.make_cancel(iid).unwrap();
    let cid = l.send_request(t0, cancel.clone(), "server", false);
    assert_ne!(iid, cid);
    let r = l.handle_message(t0, response(&cancel, 200), "server", false);
    assert!(matches!(r, Received::Response { id, .. } if id == cid));
    assert_eq!(l.client_state(iid), Some(ClientState::Proceeding));
    let r = l.handle_message(t0, response(&invite, 487), "server", false);
    assert!(matches!(r, Received::Response { id, .. } if id == iid));
    // An unknown branch is stray.
    let other = request("INVITE", "z9hG4bKzz");
    assert!(matches!(l.handle_message(t0, response(&other, 200), "server", false), Received::Stray { .. }));
}

#[test]
fn non_invite_cannot_be_cancelled() {
    let t0 = epoch();
    let mut l = layer();
    let id = l.send_request(t0, request("OPTIONS", "z9hG4bKo9"), "server", false);
    assert_eq!(l.make_cancel(id), Err(TransactionError::NotInvite));
}

#[test]
fn ack_through_send_request_is_sent_once_statelessly() {
    let t0 = epoch();
    let mut l = layer();
    l.send_request(t0, request("ACK", "z9hG4bKa1"), "server", false);
    assert_eq!(sent(&mut l).len(), 1);
    assert_eq!((l.client_count(), l.poll_timeout()), (0, None));
}

#[test]
fn request_without_branch_still_times_out() {
    let t0 = epoch();
    let mut l = layer();
    let mut req = request("OPTIONS", "x");
    req.headers.set(crate::sip::Header::new(crate::sip::HeaderName::Via, "SIP/2.0/UDP h.example.com"));
    let id = l.send_request(t0, req.clone(), "server", false);
    assert!(matches!(l.handle_message(t0, response(&req, 200), "server", false), Received::Stray { .. }));
    run_until(&mut l, t0, ms(32_000));
    assert_eq!(events(&mut l)[0], Event::ClientTimeout { id });
}
