//! Server transactions, state by state (RFC 3261 §17.2.1, §17.2.2; RFC 6026 §7.1).

use super::*;
use crate::sip::transaction::{ServerState, ServerTxId, TransactionError};

fn new_request(l: &mut TransactionLayer<Addr>, now: Instant, req: &Message, reliable: bool) -> ServerTxId {
    let r = l.handle_message(now, req.clone(), "client", reliable);
    match is_request_id(&r) {
        Some(id) => id,
        None => panic!("expected a new transaction, got {r:?}"),
    }
}

#[test]
fn non_invite_absorbs_and_resends_last_response() {
    let t0 = epoch();
    let mut l = layer();
    let req = request("OPTIONS", "z9hG4bKs1");
    let id = new_request(&mut l, t0, &req, false);
    assert_eq!(l.server_state(id), Some(ServerState::Trying));
    // §17.2.2: nothing is sent for a non-INVITE, and retransmissions in Trying are discarded.
    assert!(sent(&mut l).is_empty());
    assert_eq!(l.handle_message(t0 + ms(500), req.clone(), "client", false), Received::Absorbed);
    assert!(sent(&mut l).is_empty());
    l.respond(t0 + ms(600), id, response(&req, 100)).unwrap();
    assert_eq!(l.server_state(id), Some(ServerState::Proceeding));
    assert_eq!(sent_codes(&mut l), [100]);
    assert_eq!(l.handle_message(t0 + ms(1500), req.clone(), "client", false), Received::Absorbed);
    assert_eq!(sent_codes(&mut l), [100]);
    l.respond(t0 + ms(2000), id, response(&req, 200)).unwrap();
    assert_eq!(l.server_state(id), Some(ServerState::Completed));
    assert_eq!(sent_codes(&mut l), [200]);
    assert_eq!(l.handle_message(t0 + ms(3500), req.clone(), "client", false), Received::Absorbed);
    assert_eq!(sent_codes(&mut l), [200]);
    assert_eq!(l.respond(t0 + ms(3600), id, response(&req, 500)), Err(TransactionError::AlreadyFinal));
    // Timer J = 64·T1 over UDP.
    assert_eq!(l.poll_timeout(), Some(t0 + ms(34_000)));
    l.handle_timeout(t0 + ms(34_000));
    assert_eq!(events(&mut l), [Event::ServerTerminated { id }]);
    assert_eq!(l.respond(t0 + ms(34_000), id, response(&req, 200)), Err(TransactionError::UnknownTransaction));
    // After J the same request is new again.
    assert!(is_request_id(&l.handle_message(t0 + ms(34_001), req, "client", false)).is_some());
}

#[test]
fn non_invite_over_tcp_terminates_on_final() {
    let t0 = epoch();
    let mut l = layer();
    let req = request("BYE", "z9hG4bKs2");
    let id = new_request(&mut l, t0, &req, true);
    l.respond(t0, id, response(&req, 200)).unwrap();
    assert_eq!(sent_codes(&mut l), [200]);
    assert_eq!(events(&mut l), [Event::ServerTerminated { id }]);
    assert_eq!((l.server_count(), l.timer_count()), (0, 0));
}

#[test]
fn invite_sends_100_trying_at_once_and_resends_latest_provisional() {
    let t0 = epoch();
    let mut l = layer();
    let req = request("INVITE", "z9hG4bKs3");
    let id = new_request(&mut l, t0, &req, false);
    assert_eq!(l.server_state(id), Some(ServerState::Proceeding));
    let out = sent(&mut l);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "client");
    assert_eq!(out[0].1.status(), Some(100));
    assert_eq!(out[0].1.to().unwrap().tag(), None);
    assert_eq!(l.handle_message(t0 + ms(500), req.clone(), "client", false), Received::Absorbed);
    assert_eq!(sent_codes(&mut l), [100]);
    l.respond(t0 + ms(600), id, response(&req, 180)).unwrap();
    assert_eq!(sent_codes(&mut l), [180]);
    assert_eq!(l.handle_message(t0 + ms(1500), req.clone(), "client", false), Received::Absorbed);
    assert_eq!(sent_codes(&mut l), [180]);
    // No timer runs while the TU decides.
    assert_eq!(l.poll_timeout(), None);
}

#[test]
fn invite_without_automatic_trying() {
    let t0 = epoch();
    let mut l = layer();
    l.set_send_trying(false);
    let req = request("INVITE", "z9hG4bKs4");
    new_request(&mut l, t0, &req, false);
    assert!(sent(&mut l).is_empty());
    assert_eq!(l.handle_message(t0 + ms(500), req, "client", false), Received::Absorbed);
    assert!(sent(&mut l).is_empty());
}

#[test]
fn invite_non_2xx_retransmits_on_timer_g_until_timer_h() {
    let t0 = epoch();
    let mut l = layer();
    let req = request("INVITE", "z9hG4bKs5");
    let id = new_request(&mut l, t0, &req, false);
    sent(&mut l);
    l.respond(t0, id, response(&req, 486)).unwrap();
    assert_eq!(l.server_state(id), Some(ServerState::Completed));
    assert_eq!(sent_codes(&mut l), [486]);
    let sends = run_until(&mut l, t0, ms(40_000));
    let mut times = vec![Duration::ZERO];
    times.extend(sends.iter().map(|(t, _)| *t));
    assert!(sends.iter().all(|(_, m)| m.status() == Some(486)));
    // §17.2.1: G = T1 doubling to T2; H = 64·T1.
    assert_eq!(gaps(&times), [500, 1000, 2000, 4000, 4000, 4000, 4000, 4000, 4000, 4000].map(ms));
    assert_eq!(events(&mut l), [Event::ServerAckTimeout { id }, Event::ServerTerminated { id }]);
    assert_eq!(l.timer_count(), 0);
}

#[test]
fn invite_non_2xx_ack_confirms_then_timer_i() {
    let t0 = epoch();
    let mut l = layer();
    let req = request("INVITE", "z9hG4bKs6");
    let id = new_request(&mut l, t0, &req, false);
    l.respond(t0, id, response(&req, 404)).unwrap();
    sent(&mut l);
    // The ACK of §17.1.1.3 carries the To tag of our response.
    let ack = ack_for(&req, "b1");
    assert_eq!(l.handle_message(t0 + ms(700), ack.clone(), "client", false), Received::Absorbed);
    assert_eq!(l.server_state(id), Some(ServerState::Confirmed));
    // G and H stopped; I = T4.
    assert_eq!(l.timer_count(), 1);
    assert_eq!(l.poll_timeout(), Some(t0 + ms(5700)));
    assert_eq!(l.handle_message(t0 + ms(900), ack.clone(), "client", false), Received::Absorbed);
    assert_eq!(l.handle_message(t0 + ms(900), req.clone(), "client", false), Received::Absorbed);
    assert!(sent(&mut l).is_empty());
    l.handle_timeout(t0 + ms(5700));
    assert_eq!(events(&mut l), [Event::ServerTerminated { id }]);
}

#[test]
fn invite_non_2xx_over_tcp_has_no_timer_g_and_ends_on_ack() {
    let t0 = epoch();
    let mut l = layer();
    let req = request("INVITE", "z9hG4bKs7");
    let id = new_request(&mut l, t0, &req, true);
    l.respond(t0, id, response(&req, 480)).unwrap();
    sent(&mut l);
    // Only H remains.
    assert_eq!(l.timer_count(), 1);
    assert_eq!(l.poll_timeout(), Some(t0 + ms(32_000)));
    assert_eq!(l.handle_message(t0 + ms(10), with_method(&req, "ACK"), "client", true), Received::Absorbed);
    assert_eq!(events(&mut l), [Event::ServerTerminated { id }]);
    assert_eq!(l.timer_count(), 0);
}

#[test]
fn invite_2xx_accepted_absorbs_invites_and_passes_acks_up() {
    let t0 = epoch();
    let mut l = layer();
    let req = request("INVITE", "z9hG4bKs8");
    let id = new_request(&mut l, t0, &req, false);
    sent(&mut l);
    let ok = response(&req, 200);
    l.respond(t0 + ms(100), id, ok.clone()).unwrap();
    assert_eq!(l.server_state(id), Some(ServerState::Accepted));
    assert_eq!(sent_codes(&mut l), [200]);
    // RFC 6026 §7.1: INVITE retransmissions absorbed without a resend.
    assert_eq!(l.handle_message(t0 + ms(600), req.clone(), "client", false), Received::Absorbed);
    assert!(sent(&mut l).is_empty());
    // The TU retransmits its 2xx through the transaction (§13.3.1.4); a non-2xx is refused.
    l.respond(t0 + ms(600), id, ok.clone()).unwrap();
    assert_eq!(sent_codes(&mut l), [200]);
    assert_eq!(l.respond(t0 + ms(600), id, response(&req, 500)), Err(TransactionError::AlreadyFinal));
    // The ACK for a 2xx has its own branch: no transaction matches, it goes to the TU.
    let ack = request("ACK", "z9hG4bKs8ack");
    assert_eq!(l.handle_message(t0 + ms(700), ack.clone(), "client", false), Received::Ack { request: ack });
    // An ACK that does reuse the branch still goes up, in Accepted.
    let same = with_method(&req, "ACK");
    assert_eq!(l.handle_message(t0 + ms(700), same.clone(), "client", false), Received::Ack { request: same });
    // Timer L = 64·T1.
    assert_eq!(l.poll_timeout(), Some(t0 + ms(32_100)));
    l.handle_timeout(t0 + ms(32_100));
    assert_eq!(events(&mut l), [Event::ServerTerminated { id }]);
}

#[test]
fn respond_rejects_misuse() {
    let t0 = epoch();
    let mut l = layer();
    let req = request("INVITE", "z9hG4bKs9");
    let id = new_request(&mut l, t0, &req, false);
    assert_eq!(l.respond(t0, id, req.clone()), Err(TransactionError::NotAResponse));
    assert_eq!(l.respond(t0, id, req.make_response(99, "x", None)), Err(TransactionError::InvalidStatus(99)));
    assert_eq!(l.respond(t0, ServerTxId(999), response(&req, 200)), Err(TransactionError::UnknownTransaction));
    assert_eq!(l.server_state(id), Some(ServerState::Proceeding));
    l.terminate_server(id).unwrap();
    assert_eq!(events(&mut l), [Event::ServerTerminated { id }]);
    assert_eq!(l.server_count(), 0);
}

#[test]
fn cancel_names_the_invite_it_cancels() {
    let t0 = epoch();
    let mut l = layer();
    let invite = request("INVITE", "z9hG4bKc1");
    let iid = new_request(&mut l, t0, &invite, false);
    let cancel = with_method(&invite, "CANCEL");
    let r = l.handle_message(t0 + ms(100), cancel.clone(), "client", false);
    let Received::Request { id: cid, cancels, .. } = r else { panic!("{r:?}") };
    assert_ne!(cid, iid);
    assert_eq!(cancels, Some(iid));
    // A retransmitted CANCEL hits the CANCEL transaction.
    assert_eq!(l.handle_message(t0 + ms(600), cancel, "client", false), Received::Absorbed);
    // A CANCEL for nothing we know.
    let stray = with_method(&request("INVITE", "z9hG4bKc2"), "CANCEL");
    let r = l.handle_message(t0, stray, "client", false);
    assert!(matches!(r, Received::Request { cancels: None, .. }));
}

#[test]
fn answered_transactions_live_in_a_bounded_cache_and_hold_no_budget() {
    // docs/security.md, H4: an answered request costs a cached response, never a budget slot.
    let t0 = epoch();
    let mut l = layer();
    l.set_max_completed(3);
    let reqs: Vec<Message> = (0..5).map(|i| request("MESSAGE", &format!("z9hG4bKc{i}"))).collect();
    let ids: Vec<ServerTxId> = reqs
        .iter()
        .map(|r| match is_request_id(&l.handle_message_in(t0, r.clone(), "client", false, 2)) {
            Some(id) => id,
            None => panic!("a new transaction"),
        })
        .collect();
    assert_eq!((l.server_unanswered(2), l.server_unanswered(0)), (5, 0));
    for (id, r) in ids.iter().zip(&reqs) {
        l.respond(t0, *id, response(r, 200)).unwrap();
    }
    sent(&mut l);
    assert_eq!(l.server_unanswered(2), 0);
    // The two oldest were forgotten; the three newest still absorb their retransmissions.
    assert_eq!(l.server_count(), 3);
    assert_eq!(events(&mut l), [Event::ServerTerminated { id: ids[0] }, Event::ServerTerminated { id: ids[1] }]);
    assert_eq!(l.handle_message(t0 + ms(500), reqs[4].clone(), "client", false), Received::Absorbed);
    assert_eq!(sent_codes(&mut l), [200]);
    assert!(is_request_id(&l.handle_message(t0 + ms(500), reqs[0].clone(), "client", false)).is_some());
}
