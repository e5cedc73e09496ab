//! Prints one of each overlay request and answer as p2psip puts them on the wire, for
//! `docs/overlay-over-sip.md`: `cargo run --example overlay_messages`.
use std::net::SocketAddr;

use p2psip::overlay::{Contact, IdHash, NodeId, OutgoingRpc, Request, Response, RpcId, RpcTarget};
use p2psip::peer::overlay_sip::{encode_request, encode_response, OverlayInfo, RequestIds};
use p2psip::sip::{Header, HeaderName};

fn node(ip: &str, port: u16) -> Contact {
    let addr: SocketAddr = format!("{ip}:{port}").parse().expect("address");
    Contact::new(NodeId::from_addr(addr.ip(), port, IdHash::Sha1), addr)
}

fn main() {
    let overlay = OverlayInfo { name: "p2p.test".into(), hash: IdHash::Sha1 };
    let (a, b) = (node("192.0.2.10", 5070), node("192.0.2.20", 5070));
    let show = |title: &str, request: Request, answer: Response| {
        let rpc = OutgoingRpc { id: RpcId(1), to: RpcTarget::Node(b.clone()), request };
        let mut msg =
            encode_request(&rpc, &a, &overlay, RequestIds { call_id: "5f0e0b1c@192.0.2.10", from_tag: "a1", cseq: 7 });
        let via = format!("SIP/2.0/UDP {};branch=z9hG4bK2d4790;rport", a.addr);
        msg.headers.push_front_of(Header::new(HeaderName::Via, via));
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
        "stabilize",
        Request::GetNeighbours,
        Response::Neighbours {
            predecessor: Some(a.clone()),
            successors: vec![node("192.0.2.30", 5070), node("192.0.2.31", 5070)],
        },
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
