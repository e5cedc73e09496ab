//! Replica-number placement (SOSIMPLE; the "replica number" scheme of the p2psip drafts): a
//! record with key K lives at the nodes responsible for H(K), H(K‖1), …, H(K‖R), so its R+1
//! copies land at unrelated points of the ring rather than on R consecutive successors, which
//! one attacker's contiguous IDs could cover.
//!
//! Exact bytes hashed, with H the overlay's [`IdHash`]:
//! - replica 0: the key's bytes as they are, H(K), so the primary is where a plain lookup of
//!   the key goes ([`NodeId::for_key`]);
//! - replica i ≥ 1: the key's bytes, one 0x00 byte, then i in ASCII decimal without leading
//!   zeros (`K ‖ 0x00 ‖ "1"`, …, `K ‖ 0x00 ‖ "12"`). The NUL separator keeps `("a1", 0)` and
//!   `("a", 1)` apart; resource names (AoRs) never contain NUL.
//!
//! Which node is responsible for each ID is the overlay's business (`find_successor`).

use crate::overlay::id::{IdHash, NodeId};

/// The ring positions of a key's R+1 replicas, primary first.
pub fn replica_keys(key: &[u8], r: u8, hash: IdHash) -> Vec<NodeId> {
    let mut ids = Vec::with_capacity(usize::from(r) + 1);
    ids.push(NodeId::for_key(key, hash));
    let mut buf = Vec::with_capacity(key.len() + 4);
    for i in 1..=r {
        buf.clear();
        buf.extend_from_slice(key);
        buf.push(0);
        buf.extend_from_slice(i.to_string().as_bytes());
        ids.push(NodeId::for_key(&buf, hash));
    }
    ids
}
