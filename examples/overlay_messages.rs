//! Prints one of each overlay request and answer as p2psip puts them on the wire, for
//! `docs/overlay-over-sip.md`: `cargo run --example overlay_messages`.
use std::net::SocketAddr;

use p2psip::overlay::{neighbours_digest, Contact, IdHash, NodeId, OutgoingRpc, Request, Response, RpcId, RpcTarget};
use p2psip::peer::overlay::wire::{compact, encode_request, encode_response, OverlayInfo, RequestIds};
use p2psip::sip::HeaderName;

fn node(ip: &str, port: u16) -> Contact {
    let addr: SocketAddr = format!("{ip}:{port}").parse().expect("address");
    Contact::new(NodeId::from_addr(addr.ip(), port, IdHash::Sha1), addr)
}

fn main() {
    let overlay = OverlayInfo { name: "p2p.test".into(), hash: IdHash::Sha1, client: false };
    let (a, b) = (node("192.0.2.10", 5070), node("192.0.2.20", 5070));
    let show = |title: &str, request: Request, answer: Response| {
        let rpc = OutgoingRpc { id: RpcId(1), to: RpcTarget::Node(b.clone()), request };
        let mut msg =
            encode_request(&rpc, &a, &overlay, RequestIds { call_id: "5f0e0b1c9d2a4e31", from_tag: "a1", cseq: 7 });
        let via = format!("SIP/2.0/UDP {};branch=z9hG4bK2d4790;rport", a.addr);
        msg.headers.push_front_of(compact(HeaderName::Via, "v", via));
        let resp = encode_response(&msg, &answer, &b, &overlay, "b2");
        println!("### {title}\n\n```\n{}```\n\n```\n{}```\n", msg, resp);
    };
    let key = NodeId::for_key(b"sip:alice@p2p.test", IdHash::Sha1);
    show(
        "find_successor (one iterative step), answered with a redirect",
        Request::FindSuccessor { key },
        Response::Closer { nodes: vec![node("192.0.2.30", 5070), node("192.0.2.31", 5070)] },
    );
    show(
        "find_successor, final step: the answerer names its successor, with backups",
        Request::FindSuccessor { key },
        Response::Successor {
            node: node("192.0.2.30", 5070),
            backups: vec![node("192.0.2.31", 5070), node("192.0.2.32", 5070)],
        },
    );
    show(
        "find_successor, confirmation: the node named answers for itself",
        Request::FindSuccessor { key },
        Response::Successor { node: b.clone(), backups: vec![] },
    );
    let successors = vec![node("192.0.2.30", 5070), node("192.0.2.31", 5070)];
    show(
        "stabilize (and notify), first round: the whole neighbour list",
        Request::GetNeighbours { digest: None, notify: true },
        Response::Neighbours { predecessor: Some(a.clone()), successors: successors.clone() },
    );
    show(
        "stabilize (and notify), later rounds: unchanged",
        Request::GetNeighbours { digest: Some(neighbours_digest(Some(&a), &successors)), notify: true },
        Response::NeighboursUnchanged,
    );
    show(
        "join",
        Request::Join { joiner: a.clone() },
        Response::Joined {
            predecessor: Some(node("192.0.2.5", 5070)),
            successors: vec![b.clone(), node("192.0.2.30", 5070)],
            fingers: vec![node("192.0.2.40", 5070)],
        },
    );
}
