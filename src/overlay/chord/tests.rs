//! One node driven by hand: refusals, deadlines, the exact messages of each maintenance step,
//! and a fuzz of arbitrary inputs that must never panic or break the node's own invariants.
#![allow(clippy::disallowed_methods)] // one real `Instant::now()` as the virtual clock's origin

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::overlay::id::IdHash;
use crate::overlay::rpc::{neighbours_digest, RefuseReason};

fn contact(last: u8) -> Contact {
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), 5060);
    Contact::new(NodeId::from_addr(addr.ip(), addr.port(), IdHash::Sha1), addr)
}

fn node(last: u8) -> (Chord, Instant) {
    let now = Instant::now();
    (Chord::new(contact(last), ChordConfig::default(), now), now)
}

fn drain_rpcs(c: &mut Chord) -> Vec<OutgoingRpc> {
    std::iter::from_fn(|| c.poll_rpc()).collect()
}

/// `from` sends `request`, and answers the ping that proves its address (docs/security.md, H5): what a
/// live node at that address does.
fn proven_request(c: &mut Chord, now: Instant, from: &Contact, request: Request) -> Response {
    let answer = c.handle_request(now, from.clone(), request);
    for rpc in drain_rpcs(c) {
        if rpc.request == Request::Ping && rpc.to == RpcTarget::Node(from.clone()) {
            c.handle_response(now, rpc.id, Ok(Response::Ok));
        }
    }
    answer
}

fn drain_events(c: &mut Chord) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

#[test]
fn refuses_impostors_malformed_contacts_and_requests_after_leaving() {
    let (mut a, now) = node(1);
    let b = contact(2);
    let c = contact(3);
    let refused = |r: Response| match r {
        Response::Refused { reason } => Some(reason),
        _ => None,
    };
    // A Join whose joiner is not the sender.
    assert_eq!(
        refused(a.handle_request(now, b.clone(), Request::Join { joiner: c.clone() })),
        Some(RefuseReason::IdMismatch)
    );
    // Our own ID from elsewhere.
    let twin = Contact::new(a.me().id, c.addr);
    assert_eq!(
        refused(a.handle_request(now, twin.clone(), Request::Join { joiner: twin })),
        Some(RefuseReason::IdInUse)
    );
    // Port 0, unspecified address.
    let bad = Contact::new(b.id, SocketAddr::from(([0, 0, 0, 0], 5060)));
    assert_eq!(refused(a.handle_request(now, bad, Request::Ping)), Some(RefuseReason::Malformed));
    let bad = Contact::new(b.id, SocketAddr::from(([10, 0, 0, 2], 0)));
    assert_eq!(refused(a.handle_request(now, bad, Request::Notify)), Some(RefuseReason::Malformed));
    assert_eq!(a.counters().joins_refused, 2);
    assert_eq!(a.counters().malformed_contacts, 2);
    assert_eq!(a.counters().requests_refused, 4);
    // None of that changed anything.
    assert!(a.predecessor().is_none());
    a.leave(now);
    assert_eq!(drain_events(&mut a), vec![Event::Left]);
    assert_eq!(refused(a.handle_request(now, b, Request::Ping)), Some(RefuseReason::Leaving));
}

#[test]
fn with_verify_claims_a_sender_must_own_its_id() {
    let now = Instant::now();
    let config = ChordConfig { verify_claims: true, ..ChordConfig::default() };
    let mut a = Chord::new(contact(1), config, now);
    let honest = contact(2);
    assert_eq!(a.handle_request(now, honest.clone(), Request::Ping), Response::Ok);
    let forged = Contact::new(contact(3).id, honest.addr);
    let r = a.handle_request(now, forged.clone(), Request::Join { joiner: forged });
    assert_eq!(r, Response::Refused { reason: RefuseReason::IdMismatch });
    assert_eq!(a.counters().joins_refused, 1);
}

#[test]
fn a_joining_node_does_not_route_or_admit() {
    let (mut a, now) = node(1);
    a.join(now, vec![contact(9).addr]);
    assert_eq!(a.state(), NodeState::Joining);
    let b = contact(2);
    let r = a.handle_request(now, b.clone(), Request::FindSuccessor { key: b.id });
    assert_eq!(r, Response::Refused { reason: RefuseReason::NotJoined });
    let r = a.handle_request(now, b.clone(), Request::Join { joiner: b.clone() });
    assert_eq!(r, Response::Refused { reason: RefuseReason::NotJoined });
    let id = a.lookup(now, b.id);
    assert!(matches!(
        drain_events(&mut a).as_slice(),
        [Event::LookupDone { id: i, result: Err(LookupError::NotJoined), .. }] if *i == id
    ));
}

#[test]
fn join_takes_the_whole_successor_list_at_once() {
    let (mut a, now) = node(1);
    a.join(now, vec![contact(9).addr, a.me().addr]);
    let rpcs = drain_rpcs(&mut a);
    // Our own address is never a bootstrap.
    assert_eq!(rpcs.len(), 1);
    assert_eq!(rpcs[0].to, RpcTarget::Address(contact(9).addr));
    assert_eq!(rpcs[0].request, Request::Join { joiner: a.me().clone() });
    let mut others: Vec<Contact> = (2..12).map(contact).collect();
    others.sort_by_key(|c| a.me().id.distance(c.id));
    let pred = others.pop().unwrap();
    let answer = Response::Joined { predecessor: Some(pred.clone()), successors: others.clone(), fingers: vec![] };
    a.handle_response(now, rpcs[0].id, Ok(answer));
    assert_eq!(a.state(), NodeState::Joined);
    assert_eq!(a.successors(), &others[..8]);
    assert_eq!(a.predecessor(), Some(&pred));
    let events = drain_events(&mut a);
    assert_eq!(events[0], Event::Joined { successor: others[0].clone() });
    // The first stabilize is due at once.
    assert_eq!(a.poll_timeout(), Some(now));
    a.handle_timeout(now);
    let rpcs = drain_rpcs(&mut a);
    assert_eq!(rpcs[0].to, RpcTarget::Node(others[0].clone()));
    assert_eq!(rpcs[0].request, Request::GetNeighbours { digest: None, notify: true });
}

#[test]
fn join_follows_redirects_and_retries_later_when_everyone_fails() {
    let (mut a, now) = node(1);
    a.join(now, vec![contact(9).addr]);
    let rpc = drain_rpcs(&mut a).remove(0);
    a.handle_response(now, rpc.id, Ok(Response::Closer { nodes: vec![contact(5), contact(6)] }));
    let rpc = drain_rpcs(&mut a).remove(0);
    assert_eq!(rpc.to, RpcTarget::Node(contact(5)));
    a.handle_response(now, rpc.id, Err(RpcFailure::Unreachable));
    let rpc = drain_rpcs(&mut a).remove(0);
    assert_eq!(rpc.to, RpcTarget::Node(contact(6)));
    // No answer: our own deadline fires.
    let deadline = a.poll_timeout().unwrap();
    assert_eq!(deadline, now + a.config().rpc_timeout);
    a.handle_timeout(deadline);
    assert_eq!(drain_events(&mut a), vec![Event::BootstrapFailed]);
    assert!(drain_rpcs(&mut a).is_empty());
    // It tries the bootstrap list again after join_retry_interval (± jitter).
    let retry = loop {
        let t = a.poll_timeout().unwrap();
        a.handle_timeout(t);
        let rpcs = drain_rpcs(&mut a);
        if let Some(r) = rpcs.first() {
            break (t, r.to.clone());
        }
        assert!(t < deadline + Duration::from_secs(20));
    };
    assert!(retry.0 >= deadline + Duration::from_secs(8) && retry.0 <= deadline + Duration::from_secs(12), "{retry:?}");
    assert_eq!(retry.1, RpcTarget::Address(contact(9).addr));
}

/// A two-node ring made by hand: `a` joined through `b`.
fn pair() -> (Chord, Chord, Instant) {
    let (mut a, now) = node(1);
    let mut b = Chord::new(contact(2), ChordConfig::default(), now);
    a.join(now, vec![b.me().addr]);
    let rpc = drain_rpcs(&mut a).remove(0);
    let answer = b.handle_request(now, a.me().clone(), rpc.request);
    a.handle_response(now, rpc.id, Ok(answer));
    assert_eq!(a.successor(), b.me());
    drain_events(&mut a);
    (a, b, now)
}

#[test]
fn a_late_answer_counts_as_a_failure_and_an_unknown_one_is_ignored() {
    let (mut a, b, now) = pair();
    a.handle_timeout(now);
    let rpc = drain_rpcs(&mut a).remove(0);
    assert_eq!(rpc.request, Request::GetNeighbours { digest: None, notify: true });
    let late = now + a.config().rpc_timeout;
    let answer = Response::Neighbours { predecessor: Some(a.me().clone()), successors: vec![a.me().clone()] };
    a.handle_response(late, rpc.id, Ok(answer.clone()));
    assert_eq!(a.counters().late_responses, 1);
    // The successor is gone; with nobody left the node is isolated and rejoins via b.
    assert!(a.successors().is_empty());
    let events = drain_events(&mut a);
    assert!(events.contains(&Event::Isolated), "{events:?}");
    assert_eq!(a.state(), NodeState::Joining);
    let rejoin = drain_rpcs(&mut a);
    assert_eq!(rejoin[0].to, RpcTarget::Address(b.me().addr));
    a.handle_response(late, RpcId(999), Ok(answer));
    assert_eq!(a.counters().late_responses, 2);
}

#[test]
fn stabilize_asks_a_closer_successor_before_adopting_it() {
    let (mut a, b, now) = pair();
    // b reports a predecessor x between a and b.
    let x = (3..60).map(contact).find(|x| x.id.in_open(a.me().id, b.me().id)).unwrap();
    a.handle_timeout(now);
    let rpc = drain_rpcs(&mut a).remove(0);
    let answer = Response::Neighbours { predecessor: Some(x.clone()), successors: vec![a.me().clone()] };
    a.handle_response(now, rpc.id, Ok(answer));
    let rpc = drain_rpcs(&mut a).remove(0);
    assert_eq!(
        (rpc.to.clone(), rpc.request.clone()),
        (RpcTarget::Node(x.clone()), Request::GetNeighbours { digest: None, notify: true })
    );
    // Not adopted yet; x dies: a keeps b and notifies it.
    assert_eq!(a.successor(), b.me());
    a.handle_response(now, rpc.id, Err(RpcFailure::Timeout));
    assert_eq!(a.successor(), b.me());
    let rpc = drain_rpcs(&mut a).remove(0);
    assert_eq!((rpc.to, rpc.request), (RpcTarget::Node(b.me().clone()), Request::Notify));
}

#[test]
fn a_walk_back_cut_at_the_hop_limit_goes_on_at_once() {
    // More than `max_hops` nodes joined between a and its successor b without a hearing of
    // them: each answer names a closer predecessor. The round stops at the limit, and the
    // next one starts right away rather than a stabilize period later.
    let (mut a, b, now) = pair();
    let mut chain: Vec<Contact> = (3..=250).map(contact).filter(|x| x.id.in_open(a.me().id, b.me().id)).collect();
    chain.sort_by_key(|x| std::cmp::Reverse(a.me().id.distance(x.id)));
    let limit = ChordConfig::default().max_hops as usize;
    assert!(chain.len() > limit + 1, "only {} nodes between a and b", chain.len());
    a.handle_timeout(now);
    for next in chain.iter().take(limit) {
        let rpc = drain_rpcs(&mut a).into_iter().find(|r| matches!(r.request, Request::GetNeighbours { .. }));
        let rpc = rpc.expect("the walk goes on");
        let answer = Response::Neighbours { predecessor: Some(next.clone()), successors: vec![] };
        a.handle_response(now, rpc.id, Ok(answer));
    }
    let soon = now + Duration::from_millis(25);
    a.handle_timeout(soon);
    let asks = drain_rpcs(&mut a).into_iter().filter(|r| matches!(r.request, Request::GetNeighbours { .. })).count();
    assert_eq!(asks, 1, "no new round within 25 ms of the cut");
}

#[test]
fn a_notify_from_behind_a_live_predecessor_is_answered_with_a_push() {
    // c takes b for its successor, but b's predecessor p, alive, lies between them: c is told
    // (Changed), so it stabilizes now and walks back to p.
    let (mut b, _, now) = pair();
    let me = b.me().id;
    let after = b.predecessor().map_or(me, |q| q.id);
    // Between b's present predecessor and b: p nearest b, c before it.
    let mut ids: Vec<Contact> = (3..60).map(contact).filter(|x| x.id.in_open(after, me)).collect();
    ids.sort_by_key(|x| x.id.distance(me));
    let (p, c) = (ids[0].clone(), ids[1].clone());
    assert_eq!(proven_request(&mut b, now, &p, Request::Notify), Response::Ok);
    drain_rpcs(&mut b);
    assert_eq!(b.handle_request(now, c.clone(), Request::Notify), Response::Ok);
    let ping =
        drain_rpcs(&mut b).into_iter().find(|r| r.request == Request::Ping && r.to == RpcTarget::Node(p.clone()));
    b.handle_response(now, ping.expect("p is checked").id, Ok(Response::Ok));
    assert_eq!(b.predecessor(), Some(&p));
    let told = drain_rpcs(&mut b)
        .into_iter()
        .any(|r| r.to == RpcTarget::Node(c.clone()) && matches!(r.request, Request::Changed { .. }));
    assert!(told, "c was not told of p");
}

#[test]
fn a_new_predecessor_is_pushed_the_list_its_predecessor_was_pushed() {
    // a's list changes and is pushed to its predecessor p1; then p2 joins between p1 and a,
    // holding the list it was given when it joined: it is pushed the new list as well.
    let (mut a, b, now) = pair();
    let me = a.me().id;
    let after = a.predecessor().map_or(me, |q| q.id);
    let mut ids: Vec<Contact> = (3..60).map(contact).filter(|x| x.id.in_open(after, me)).collect();
    ids.sort_by_key(|x| std::cmp::Reverse(x.id.distance(me)));
    let (p1, p2) = (ids[0].clone(), ids[1].clone());
    assert!(p2.id.in_open(p1.id, me));
    assert_eq!(proven_request(&mut a, now, &p1, Request::Notify), Response::Ok);
    assert_eq!(a.predecessor(), Some(&p1));
    let t = now + Duration::from_millis(60);
    a.handle_timeout(t);
    for r in drain_rpcs(&mut a) {
        let answer = match r.request {
            Request::GetNeighbours { .. } => {
                Response::Neighbours { predecessor: Some(a.me().clone()), successors: vec![] }
            }
            _ => Response::Ok,
        };
        a.handle_response(t, r.id, Ok(answer));
    }
    // a stabilizes and learns a second successor x.
    let x = (60..120).map(contact).find(|x| x.id.in_open(b.me().id, me)).unwrap();
    let t = now + Duration::from_secs(30);
    a.handle_timeout(t);
    let ask = drain_rpcs(&mut a).into_iter().find(|r| matches!(r.request, Request::GetNeighbours { .. }));
    let answer = Response::Neighbours { predecessor: Some(a.me().clone()), successors: vec![x.clone()] };
    a.handle_response(t, ask.expect("stabilize asks b").id, Ok(answer));
    let pushed_to = |rpcs: Vec<OutgoingRpc>, to: &Contact| {
        rpcs.into_iter().find(|r| r.to == RpcTarget::Node(to.clone()) && matches!(r.request, Request::Changed { .. }))
    };
    let t = t + Duration::from_millis(60);
    a.handle_timeout(t);
    let push = pushed_to(drain_rpcs(&mut a), &p1).expect("the change is pushed to p1");
    a.handle_response(t, push.id, Ok(Response::Ok));
    // p2 becomes a's predecessor.
    assert_eq!(proven_request(&mut a, t, &p2, Request::Notify), Response::Ok);
    assert_eq!(a.predecessor(), Some(&p2));
    let t = t + Duration::from_millis(60);
    a.handle_timeout(t);
    assert!(pushed_to(drain_rpcs(&mut a), &p2).is_some(), "p2 was not pushed a's list");
}

#[test]
fn notify_contradicting_a_dead_predecessor_replaces_it() {
    let (mut b, now) = node(2);
    let ids: Vec<Contact> = (3..40).map(contact).collect();
    // p precedes b; c precedes p: c's notify contradicts p.
    let p = ids.iter().find(|p| ids.iter().any(|c| c.id.in_open(b.me().id, p.id))).unwrap().clone();
    let c = ids.iter().find(|c| c.id.in_open(b.me().id, p.id)).unwrap().clone();
    assert_eq!(proven_request(&mut b, now, &p, Request::Notify), Response::Ok);
    assert_eq!(b.predecessor(), Some(&p));
    drain_rpcs(&mut b);
    assert_eq!(b.handle_request(now, c.clone(), Request::Notify), Response::Ok);
    assert_eq!(b.predecessor(), Some(&p));
    let ping =
        drain_rpcs(&mut b).into_iter().find(|r| r.request == Request::Ping && r.to == RpcTarget::Node(p.clone()));
    b.handle_response(now, ping.expect("p is checked").id, Err(RpcFailure::Timeout));
    // p is gone; c takes over once it has answered at its address.
    let proof =
        drain_rpcs(&mut b).into_iter().find(|r| r.request == Request::Ping && r.to == RpcTarget::Node(c.clone()));
    let proof = proof.expect("c is asked to prove its address");
    assert_eq!(b.predecessor(), None);
    b.handle_response(now, proof.id, Ok(Response::Ok));
    assert_eq!(b.predecessor(), Some(&c));
}

#[test]
fn check_predecessor_is_free_while_the_predecessor_talks_to_us() {
    let (mut b, now) = node(2);
    let p = contact(3);
    proven_request(&mut b, now, &p, Request::Notify);
    // p answers whatever b asks it (stabilize), but only some rounds does p ask b anything.
    let mut pings = Vec::new();
    let mut step = |b: &mut Chord, t: Instant, p_talks: bool| {
        if p_talks {
            b.handle_request(t, p.clone(), Request::GetNeighbours { digest: None, notify: true });
        }
        b.handle_timeout(t);
        for rpc in drain_rpcs(b) {
            let answer = match rpc.request {
                Request::GetNeighbours { .. } => {
                    Response::Neighbours { predecessor: Some(b.me().clone()), successors: vec![] }
                }
                Request::Ping => {
                    pings.push(t);
                    Response::Ok
                }
                _ => Response::Ok,
            };
            b.handle_response(t, rpc.id, Ok(answer));
        }
    };
    let mut t = now;
    for _ in 0..30 {
        t += Duration::from_secs(1);
        step(&mut b, t, true);
    }
    assert_eq!(b.successor(), &p);
    assert_eq!(b.predecessor(), Some(&p));
    // Silent for longer than the predecessor's longest stabilize period: pinged.
    for _ in 0..b.config().predecessor_silence().as_secs() + 8 {
        t += Duration::from_secs(1);
        step(&mut b, t, false);
    }
    // Only the quiet stretch cost a ping.
    assert!(!pings.is_empty() && pings.iter().all(|at| *at > now + Duration::from_secs(30)), "{pings:?}");
}

#[test]
fn leave_hands_the_neighbours_over() {
    let (mut a, now) = node(1);
    let mut others: Vec<Contact> = (2..12).map(contact).collect();
    others.sort_by_key(|c| a.me().id.distance(c.id));
    let pred = others.pop().unwrap();
    a.join(now, vec![others[0].addr]);
    let rpc = drain_rpcs(&mut a).remove(0);
    a.handle_response(
        now,
        rpc.id,
        Ok(Response::Joined { predecessor: Some(pred.clone()), successors: others.clone(), fingers: vec![] }),
    );
    drain_events(&mut a);
    drain_rpcs(&mut a);
    a.leave(now);
    let rpcs = drain_rpcs(&mut a);
    let expected = Request::Leave { predecessor: Some(pred.clone()), successors: others[..8].to_vec() };
    let targets: Vec<RpcTarget> = rpcs.iter().map(|r| r.to.clone()).collect();
    assert_eq!(targets, vec![RpcTarget::Node(others[0].clone()), RpcTarget::Node(pred.clone())]);
    assert!(rpcs.iter().all(|r| r.request == expected));
    assert_eq!(a.state(), NodeState::Leaving);
    a.handle_response(now, rpcs[0].id, Ok(Response::Ok));
    a.handle_response(now, rpcs[1].id, Err(RpcFailure::Timeout));
    assert_eq!(a.state(), NodeState::Left);
    assert_eq!(drain_events(&mut a), vec![Event::Left]);
    assert_eq!(a.poll_timeout(), None);
}

// ---- fuzz: arbitrary inputs ----

fn arb_contact() -> impl Strategy<Value = Contact> {
    // A few real nodes, plus malformed addresses and random IDs.
    prop_oneof![
        (1u8..12).prop_map(contact),
        (any::<[u8; 20]>(), any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(id, ip, port)| Contact::new(NodeId::from_bytes(id), SocketAddr::from((ip, port)))),
    ]
}

fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        any::<[u8; 20]>().prop_map(|k| Request::FindSuccessor { key: NodeId::from_bytes(k) }),
        (proptest::option::of(any::<u64>()), any::<bool>())
            .prop_map(|(digest, notify)| Request::GetNeighbours { digest, notify }),
        Just(Request::Notify),
        Just(Request::Ping),
        any::<u64>().prop_map(|digest| Request::Changed { digest }),
        arb_contact().prop_map(|joiner| Request::Join { joiner }),
        (proptest::option::of(arb_contact()), proptest::collection::vec(arb_contact(), 0..12))
            .prop_map(|(predecessor, successors)| Request::Leave { predecessor, successors }),
    ]
}

fn arb_response() -> impl Strategy<Value = Result<Response, RpcFailure>> {
    let list = || proptest::collection::vec(arb_contact(), 0..12);
    prop_oneof![
        (arb_contact(), list()).prop_map(|(node, backups)| Ok(Response::Successor { node, backups })),
        Just(Ok(Response::NeighboursUnchanged)),
        list().prop_map(|nodes| Ok(Response::Closer { nodes })),
        (proptest::option::of(arb_contact()), list())
            .prop_map(|(predecessor, successors)| Ok(Response::Neighbours { predecessor, successors })),
        (proptest::option::of(arb_contact()), list(), list())
            .prop_map(|(predecessor, successors, fingers)| Ok(Response::Joined { predecessor, successors, fingers })),
        Just(Ok(Response::Ok)),
        Just(Ok(Response::Refused { reason: RefuseReason::NotJoined })),
        Just(Err(RpcFailure::Timeout)),
        Just(Err(RpcFailure::Malformed)),
    ]
}

#[derive(Debug, Clone)]
enum Input {
    Request(Contact, Request),
    /// Answer the n-th outstanding request (modulo), or a made-up id.
    Response(usize, bool, Result<Response, RpcFailure>),
    Advance(u16),
    Join(Vec<u8>),
    Lookup([u8; 20]),
    Leave,
}

fn arb_input() -> impl Strategy<Value = Input> {
    prop_oneof![
        8 => (arb_contact(), arb_request()).prop_map(|(c, r)| Input::Request(c, r)),
        8 => (any::<usize>(), any::<bool>(), arb_response()).prop_map(|(n, real, r)| Input::Response(n, real, r)),
        4 => any::<u16>().prop_map(Input::Advance),
        1 => proptest::collection::vec(1u8..12, 0..3).prop_map(Input::Join),
        2 => any::<[u8; 20]>().prop_map(Input::Lookup),
        1 => Just(Input::Leave),
    ]
}

fn check_own_invariants(c: &Chord) -> Result<(), TestCaseError> {
    let me = c.me().id;
    let list = c.successors();
    prop_assert!(list.len() <= c.config().successor_list_len);
    prop_assert!(list.iter().all(|s| s.id != me), "successor list contains me");
    prop_assert!(list.windows(2).all(|w| me.distance(w[0].id) < me.distance(w[1].id)), "list out of order");
    prop_assert!(c.predecessor().is_none_or(|p| p.id != me), "I am my own predecessor");
    prop_assert!(c.fingers().count() == 160);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_inputs_never_panic_or_corrupt_the_tables(inputs in proptest::collection::vec(arb_input(), 1..80)) {
        let (mut c, mut now) = node(1);
        let mut outstanding: Vec<RpcId> = Vec::new();
        for input in inputs {
            match input {
                Input::Request(from, request) => {
                    c.handle_request(now, from, request);
                }
                Input::Response(n, real, result) => {
                    let rpc = if real && !outstanding.is_empty() {
                        outstanding.remove(n % outstanding.len())
                    } else {
                        RpcId(n as u64)
                    };
                    c.handle_response(now, rpc, result);
                }
                Input::Advance(ms) => {
                    now += Duration::from_millis(u64::from(ms));
                    c.handle_timeout(now);
                }
                Input::Join(b) => c.join(now, b.into_iter().map(|i| contact(i).addr).collect()),
                Input::Lookup(k) => {
                    c.lookup(now, NodeId::from_bytes(k));
                }
                Input::Leave => c.leave(now),
            }
            outstanding.extend(drain_rpcs(&mut c).into_iter().map(|r| r.id));
            drain_events(&mut c);
            check_own_invariants(&c)?;
            if let Some(t) = c.poll_timeout() {
                // Deadlines are never in the past by more than the last step.
                prop_assert!(t + Duration::from_secs(70) >= now);
            }
        }
    }
}

#[test]
fn a_spoofed_notify_or_leave_changes_nothing() {
    // docs/security.md, H1/H5. b's predecessor p is proven. A notify "from" c (spoofed: c never
    // answers) is not adopted; a leave "from" p (spoofed: p still answers as a live node) is
    // ignored, hand-off and all.
    let (mut b, now) = node(2);
    let ids: Vec<Contact> = (3..40).map(contact).collect();
    let p = ids.iter().find(|p| ids.iter().any(|c| c.id.in_open(p.id, b.me().id))).unwrap().clone();
    let c = ids.iter().find(|c| c.id.in_open(p.id, b.me().id)).unwrap().clone();
    proven_request(&mut b, now, &p, Request::Notify);
    assert_eq!(b.predecessor(), Some(&p));
    assert_eq!(b.handle_request(now, c.clone(), Request::Notify), Response::Ok);
    assert_eq!(b.predecessor(), Some(&p), "not before c answers");
    for rpc in drain_rpcs(&mut b) {
        b.handle_response(now, rpc.id, Err(RpcFailure::Timeout));
    }
    assert_eq!(b.predecessor(), Some(&p), "c never answered");
    assert!(b.counters().proofs_failed >= 1);
    let forged = contact(77);
    let leave = Request::Leave { predecessor: Some(forged.clone()), successors: vec![forged] };
    assert_eq!(b.handle_request(now, p.clone(), leave), Response::Ok);
    let ping =
        drain_rpcs(&mut b).into_iter().find(|r| r.request == Request::Ping && r.to == RpcTarget::Node(p.clone()));
    b.handle_response(now, ping.expect("p is asked").id, Ok(Response::Ok));
    assert_eq!(b.predecessor(), Some(&p), "p answered: it has not left");
    assert_eq!(b.counters().leaves_ignored, 1);
}

/// `a` joined with a predecessor and a full successor list, all answered at once (so its
/// round-trip estimate is near zero), and its first stabilize answered "as you have it".
fn joined_with_neighbours() -> (Chord, Contact, Vec<Contact>, Instant) {
    let (mut a, now) = node(1);
    a.join(now, vec![contact(9).addr]);
    let rpc = drain_rpcs(&mut a).remove(0);
    let mut others: Vec<Contact> = (2..40).map(contact).collect();
    others.sort_by_key(|c| a.me().id.distance(c.id));
    let pred = others.pop().unwrap();
    let answer = Response::Joined { predecessor: Some(pred.clone()), successors: others.clone(), fingers: vec![] };
    a.handle_response(now, rpc.id, Ok(answer));
    drain_events(&mut a);
    a.handle_timeout(now);
    for rpc in drain_rpcs(&mut a) {
        if let Request::GetNeighbours { .. } = rpc.request {
            let successors = others[1..9].to_vec();
            let answer = Response::Neighbours { predecessor: Some(a.me().clone()), successors };
            a.handle_response(now, rpc.id, Ok(answer));
        }
    }
    drain_rpcs(&mut a);
    (a, pred, others, now)
}

#[test]
fn a_changed_successor_list_is_pushed_to_the_predecessor() {
    let (mut a, pred, others, now) = joined_with_neighbours();
    // Quiet: nothing is pushed.
    a.handle_timeout(now + push::PUSH_DELAY);
    assert!(drain_rpcs(&mut a).iter().all(|r| !matches!(r.request, Request::Changed { .. })));
    // The successor's list loses its first entry: a's list changes where pred copies it.
    let t = now + Duration::from_secs(30);
    let rpc = loop {
        let at = a.poll_timeout().unwrap().min(t);
        a.handle_timeout(at);
        if let Some(r) = drain_rpcs(&mut a).into_iter().find(|r| matches!(r.request, Request::GetNeighbours { .. })) {
            break r;
        }
    };
    let asked_at = a.poll_timeout().unwrap().min(t);
    let successors = others[2..10].to_vec();
    let answer = Response::Neighbours { predecessor: Some(a.me().clone()), successors };
    a.handle_response(asked_at, rpc.id, Ok(answer));
    assert!(drain_rpcs(&mut a).is_empty(), "held for PUSH_DELAY, to gather the round's changes");
    let mut push = Vec::new();
    while let Some(due) = a.poll_timeout().filter(|t| *t <= asked_at + push::PUSH_DELAY) {
        a.handle_timeout(due);
        push.extend(drain_rpcs(&mut a).into_iter().filter(|r| matches!(r.request, Request::Changed { .. })));
    }
    assert_eq!(push.len(), 1);
    assert_eq!(push[0].to, RpcTarget::Node(pred));
}

#[test]
fn a_push_from_the_successor_brings_stabilize_forward_and_one_from_anyone_else_does_not() {
    let (mut a, pred, others, now) = joined_with_neighbours();
    let successor = others[0].clone();
    let t = now + Duration::from_secs(1);
    let next_round = a.poll_timeout().unwrap();
    assert!(next_round > t + Duration::from_secs(1));
    // Our own successor's digest, unchanged: nothing to do.
    let same = neighbours_digest(Some(a.me()), &others[1..9]);
    assert_eq!(a.handle_request(t, successor.clone(), Request::Changed { digest: same }), Response::Ok);
    // Anyone else, whatever it says: nothing.
    a.handle_request(t, pred.clone(), Request::Changed { digest: !same });
    a.handle_request(t, others[3].clone(), Request::Changed { digest: !same });
    assert_eq!(a.counters().pushes_heeded, 0);
    assert_eq!(a.poll_timeout(), Some(next_round));
    // The successor, with news: a stabilizes now.
    a.handle_request(t, successor.clone(), Request::Changed { digest: !same });
    assert_eq!(a.counters().pushes_heeded, 1);
    assert_eq!(a.poll_timeout(), Some(t));
    a.handle_timeout(t);
    let rpcs = drain_rpcs(&mut a);
    assert!(rpcs.iter().any(|r| r.to == RpcTarget::Node(successor.clone())
        && matches!(r.request, Request::GetNeighbours { notify: true, .. })));
}

#[test]
fn a_silent_hop_is_given_up_on_after_a_few_round_trips_not_the_rpc_deadline() {
    let (mut a, _, others, now) = joined_with_neighbours();
    // A key well past a's successor list: the lookup routes.
    let key = NodeId::from_bytes([0x5a; 20]);
    let far = others.iter().filter(|c| c.id.in_open(a.me().id, key)).count();
    assert!(far > 9, "the key lies past a's successors");
    let id = a.lookup(now, key);
    let first = drain_rpcs(&mut a).remove(0);
    let RpcTarget::Node(silent) = first.to.clone() else { panic!("a node") };
    // Nothing before the soft deadline; at it, the next candidate.
    let soft = a.poll_timeout().unwrap();
    assert_eq!(soft, now + hedge::SOFT_MIN);
    a.handle_timeout(soft);
    let second = drain_rpcs(&mut a).remove(0);
    assert_ne!(second.to, first.to);
    assert_eq!(a.counters().hops_hedged, 1);
    assert!(!a.is_failed(soft, silent.id), "skipped by the lookup, not declared dead");
    // The second answers for itself: done, long before the first's deadline.
    let RpcTarget::Node(answerer) = second.to.clone() else { panic!("a node") };
    let answer = Response::Successor { node: answerer.clone(), backups: vec![] };
    a.handle_response(soft, second.id, Ok(answer));
    let done = drain_events(&mut a);
    assert!(matches!(&done[..], [Event::LookupDone { id: i, result: Ok(n), .. }] if *i == id && *n == answerer));
    // The first's late redirect starts nothing.
    a.handle_response(soft, first.id, Ok(Response::Closer { nodes: vec![others[20].clone()] }));
    assert!(drain_rpcs(&mut a).is_empty());
}

#[test]
fn the_round_trip_estimate_follows_rfc_6298() {
    let mut e = hedge::RttEstimator::default();
    let max = Duration::from_secs(2);
    assert_eq!(e.soft_timeout(max), max, "no sample: the full deadline");
    e.sample(Duration::from_millis(100));
    // SRTT = R, RTTVAR = R/2: 100 + 4·50.
    assert_eq!(e.soft_timeout(max), Duration::from_millis(300));
    e.sample(Duration::from_millis(100));
    // RTTVAR = ¾·50 + ¼·0 = 37.5; SRTT = 100.
    assert_eq!(e.soft_timeout(max), Duration::from_micros(250_000));
    for _ in 0..50 {
        e.sample(Duration::from_millis(1));
    }
    assert_eq!(e.soft_timeout(max), hedge::SOFT_MIN);
    for _ in 0..50 {
        e.sample(Duration::from_secs(5));
    }
    assert_eq!(e.soft_timeout(max), max);
}

/// A lookup whose first step names `named` responsible with `backup` after it, and the
/// confirmation just sent to `named`.
fn lookup_confirming(a: &mut Chord, others: &[Contact], now: Instant) -> (LookupId, Contact, Contact, OutgoingRpc) {
    let key = NodeId::from_bytes([0x5a; 20]);
    let id = a.lookup(now, key);
    let first = drain_rpcs(a).remove(0);
    let beyond: Vec<_> = others.iter().filter(|c| !c.id.in_open(a.me().id, key) && c.id != a.me().id).collect();
    let (named, backup) = (beyond[0].clone(), beyond[1].clone());
    a.handle_response(now, first.id, Ok(Response::Successor { node: named.clone(), backups: vec![backup.clone()] }));
    let confirm = drain_rpcs(a).remove(0);
    assert_eq!(confirm.to, RpcTarget::Node(named.clone()));
    (id, named, backup, confirm)
}

/// Runs `a` to `soft`, the named node's soft deadline, and returns the request to `backup`.
fn backup_asked(a: &mut Chord, backup: &Contact, soft: Instant) -> OutgoingRpc {
    let mut asked = None;
    while let Some(at) = a.poll_timeout().filter(|at| *at <= soft) {
        a.handle_timeout(at);
        asked = asked.or(drain_rpcs(a).into_iter().find(|r| r.to == RpcTarget::Node(backup.clone())));
    }
    asked.expect("the backup is asked at the soft deadline")
}

#[test]
fn a_silent_confirmation_brings_its_backup_in_and_is_given_up_on_after_a_few_round_trips() {
    let (mut a, _, others, now) = joined_with_neighbours();
    let t = now + Duration::from_millis(1);
    let (id, named, backup, _) = lookup_confirming(&mut a, &others, t);
    // At the soft deadline the backup is asked too; the named node stays awaited.
    let soft = t + hedge::SOFT_MIN;
    let second = backup_asked(&mut a, &backup, soft);
    assert_eq!(a.counters().confirmations_hedged, 1);
    // The backup answers at once, still naming its silent predecessor: not before the named
    // node is given up on.
    a.handle_response(soft, second.id, Ok(Response::Successor { node: named.clone(), backups: vec![] }));
    assert!(drain_events(&mut a).is_empty(), "the named node is still awaited");
    let verdict = t + (hedge::SOFT_MIN * hedge::CONFIRM_RTOS).max(hedge::CONFIRM_MIN);
    while let Some(at) = a.poll_timeout().filter(|at| *at < verdict) {
        a.handle_timeout(at);
        assert!(drain_events(&mut a).iter().all(|e| !matches!(e, Event::LookupDone { .. })));
    }
    a.handle_timeout(verdict);
    let done = drain_events(&mut a);
    assert!(matches!(&done[..], [Event::LookupDone { id: i, result: Ok(n), .. }] if *i == id && *n == backup));
    assert!(!a.is_failed(verdict, named.id), "given up on by the lookup, not declared dead");
}

#[test]
fn a_slow_named_node_that_answers_for_itself_wins_over_its_backup() {
    let (mut a, _, others, now) = joined_with_neighbours();
    let t = now + Duration::from_millis(1);
    let (id, named, backup, confirm) = lookup_confirming(&mut a, &others, t);
    let soft = t + hedge::SOFT_MIN;
    let second = backup_asked(&mut a, &backup, soft);
    a.handle_response(soft, second.id, Ok(Response::Successor { node: named.clone(), backups: vec![] }));
    a.handle_response(soft, confirm.id, Ok(Response::Successor { node: named.clone(), backups: vec![] }));
    let done = drain_events(&mut a);
    assert!(matches!(&done[..], [Event::LookupDone { id: i, result: Ok(n), .. }] if *i == id && *n == named));
}

#[test]
fn a_late_answer_naming_itself_ends_the_lookup() {
    let (mut a, _, _, now) = joined_with_neighbours();
    let key = NodeId::from_bytes([0x5a; 20]);
    let id = a.lookup(now, key);
    let first = drain_rpcs(&mut a).remove(0);
    let RpcTarget::Node(slow) = first.to.clone() else { panic!("a node") };
    let soft = a.poll_timeout().unwrap();
    a.handle_timeout(soft);
    let second = drain_rpcs(&mut a).remove(0);
    assert!(drain_events(&mut a).is_empty());
    // The skipped node answers while the lookup waits on the second: it is responsible.
    a.handle_response(soft, first.id, Ok(Response::Successor { node: slow.clone(), backups: vec![] }));
    let done = drain_events(&mut a);
    assert!(matches!(&done[..], [Event::LookupDone { id: i, result: Ok(n), .. }] if *i == id && *n == slow));
    // The second's answer then starts nothing.
    a.handle_response(soft, second.id, Ok(Response::Closer { nodes: vec![] }));
    assert!(drain_rpcs(&mut a).is_empty());
}

#[test]
fn a_node_joining_before_us_is_announced_to_our_former_predecessor() {
    let (mut a, pred, _, now) = joined_with_neighbours();
    assert_eq!(a.predecessor(), Some(&pred));
    let joiner = (40..=255).map(contact).find(|x| x.id.in_open(pred.id, a.me().id)).expect("a node between them");
    proven_request(&mut a, now, &joiner, Request::Notify);
    assert_eq!(a.predecessor(), Some(&joiner));
    let told: Vec<_> =
        drain_rpcs(&mut a).into_iter().filter(|r| matches!(r.request, Request::Changed { .. })).collect();
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].to, RpcTarget::Node(pred.clone()));
    // What the former predecessor will hear when it asks: the joiner as our predecessor.
    let Request::Changed { digest } = told[0].request else { unreachable!() };
    let Response::Neighbours { predecessor, successors } =
        a.handle_request(now, pred.clone(), Request::GetNeighbours { digest: None, notify: false })
    else {
        panic!("neighbours")
    };
    assert_eq!(digest, neighbours_digest(predecessor.as_ref(), &successors));
    // A notify from the predecessor we already have tells nobody anything.
    proven_request(&mut a, now, &joiner, Request::Notify);
    assert!(drain_rpcs(&mut a).iter().all(|r| !matches!(r.request, Request::Changed { .. })));
}

#[test]
fn a_lookup_that_names_the_querier_is_answered_by_its_own_view() {
    let (mut a, pred, _, now) = joined_with_neighbours();
    assert_eq!(a.predecessor(), Some(&pred));
    // A key just before a's predecessor: not a's by its own view, so it routes.
    let mut bytes = pred.id.to_bytes();
    let last = bytes.len() - 1;
    bytes[last] = bytes[last].wrapping_sub(1);
    let key = NodeId::from_bytes(bytes);
    let id = a.lookup(now, key);
    let first = drain_rpcs(&mut a).remove(0);
    // The predecessor is named, a is its backup (a successor list that holds a).
    a.handle_response(now, first.id, Ok(Response::Successor { node: pred.clone(), backups: vec![a.me().clone()] }));
    let confirm = drain_rpcs(&mut a).remove(0);
    assert_eq!(confirm.to, RpcTarget::Node(pred.clone()));
    // The predecessor stays silent; a answers for itself without a request to itself, and
    // takes the key over once the predecessor is given up on.
    let mut done = Vec::new();
    while let Some(at) = a.poll_timeout().filter(|at| *at < now + Duration::from_secs(1)) {
        a.handle_timeout(at);
        assert!(drain_rpcs(&mut a).iter().all(|r| r.to != RpcTarget::Node(a.me().clone())), "no request to itself");
        done.extend(drain_events(&mut a).into_iter().filter(|e| matches!(e, Event::LookupDone { .. })));
        if !done.is_empty() {
            break;
        }
    }
    assert!(matches!(&done[..], [Event::LookupDone { id: i, result: Ok(n), .. }] if *i == id && n == a.me()));
}
