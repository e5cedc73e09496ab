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
//!
//! The replica numbers need not be 1…R: an overlay whose configuration document keeps them
//! secret (`ReplicaPlacement::Secret`) gives enrolled members R numbers derived from a salt
//! ([`crate::enrollment::config_doc::ReplicaPlacement::numbers`]), and [`replica_keys_numbered`] hashes
//! those instead (same bytes: `K ‖ 0x00 ‖ ascii(n)`). The spare numbers used when a place must
//! move off an address already holding a copy then come from [`with_spares`]: public numbers
//! continue R+1, R+2, …; secret numbers continue with numbers only their holders can compute.

use crate::overlay::id::{IdHash, NodeId};

/// The ring positions of a key's R+1 replicas, primary first (public numbers 1…R).
pub fn replica_keys(key: &[u8], r: u8, hash: IdHash) -> Vec<NodeId> {
    let numbers: Vec<u64> = (1..=u64::from(r)).collect();
    replica_keys_numbered(key, &numbers, hash)
}

/// The ring positions H(K), then H(K ‖ 0x00 ‖ ascii(n)) for each replica number n in order.
pub fn replica_keys_numbered(key: &[u8], numbers: &[u64], hash: IdHash) -> Vec<NodeId> {
    let mut ids = Vec::with_capacity(numbers.len() + 1);
    ids.push(NodeId::for_key(key, hash));
    let mut buf = Vec::with_capacity(key.len() + 21);
    for n in numbers {
        buf.clear();
        buf.extend_from_slice(key);
        buf.push(0);
        buf.extend_from_slice(n.to_string().as_bytes());
        ids.push(NodeId::for_key(&buf, hash));
    }
    ids
}

/// `numbers` (the R replica numbers) followed by `spares` spare numbers. Public numbers
/// (exactly 1…R) continue R+1, R+2, … as they always have. Any other list is taken as secret
/// and spare j (1…) is the first 8 bytes, big-endian, of SHA-256("p2psip spare" ‖ n₁ ‖ … ‖ n_R
/// ‖ j), each nᵢ and j as 8 bytes big-endian: anyone holding the numbers (that is, the secret)
/// finds the same spares, and nobody else can.
pub fn with_spares(numbers: &[u64], spares: usize) -> Vec<u64> {
    let public = numbers.iter().copied().eq(1..=numbers.len() as u64);
    let mut all = numbers.to_vec();
    for j in 1..=spares as u64 {
        if public {
            all.push(numbers.len() as u64 + j);
            continue;
        }
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"p2psip spare");
        for n in numbers {
            ctx.update(&n.to_be_bytes());
        }
        ctx.update(&j.to_be_bytes());
        let digest = ctx.finish();
        let mut n = [0u8; 8];
        n.copy_from_slice(&digest.as_ref()[..8]);
        all.push(u64::from_be_bytes(n));
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrollment::config_doc::ReplicaPlacement;

    #[test]
    fn secret_numbers_move_the_places_and_the_same_secret_finds_them() {
        let key = b"sip:alice@example.com";
        let secret = [7u8; 32];
        let placement = ReplicaPlacement::secret(3, &secret);
        let numbers = placement.numbers(Some(&secret)).unwrap();
        let public = with_spares(&[1, 2, 3], 12);
        assert_eq!(public, (1..=15).collect::<Vec<u64>>(), "public spares continue R+1…");
        let secret_all = with_spares(&numbers, 12);
        assert_eq!(secret_all.len(), 15);
        assert!(secret_all.iter().all(|n| !public.contains(n)), "a secret or spare number is public");
        let public_keys = replica_keys_numbered(key, &public, IdHash::Sha1);
        let secret_keys = replica_keys_numbered(key, &secret_all, IdHash::Sha1);
        assert_eq!(public_keys, replica_keys(key, 15, IdHash::Sha1));
        // The primary is H(K) either way; every other place differs.
        assert_eq!(public_keys[0], secret_keys[0]);
        assert!(secret_keys[1..].iter().all(|k| !public_keys.contains(k)));
        // A reader given the same secret derives the same places; another secret does not.
        let reader = with_spares(&ReplicaPlacement::secret(3, &secret).numbers(Some(&secret)).unwrap(), 12);
        assert_eq!(replica_keys_numbered(key, &reader, IdHash::Sha1), secret_keys);
        let other = [8u8; 32];
        let stranger = with_spares(&ReplicaPlacement::secret(3, &other).numbers(Some(&other)).unwrap(), 12);
        let stranger_keys = replica_keys_numbered(key, &stranger, IdHash::Sha1);
        assert!(stranger_keys[1..].iter().all(|k| !secret_keys.contains(k)));
    }
}
