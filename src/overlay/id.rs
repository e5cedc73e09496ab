//! Node IDs and the circular arithmetic of the identifier space (Chord §4.1 / ToN §IV-A).
//!
//! A [`NodeId`] is a 160-bit point on the ring `0 .. 2^160`. Nodes derive theirs from their
//! overlay address with [`NodeId::from_addr`]: the hash of the IP address with the low 20 bits
//! replaced by the port, so every node behind one address sits in one contiguous arc (a NAT or
//! a multi-instance laptop costs the ring one arc, not scattered points). Resources (an AoR,
//! a key) hash with [`NodeId::for_key`]. Which hash is configurable ([`IdHash`]); SHA-1 is the
//! default because dSIP's `DHT-PeerID` header (draft-zangrilli-p2psip-dsip-dhtchord-00 §5.1)
//! names it, and the 160-bit width is kept either way.
//!
//! Intervals follow the Chord paper's notation: `(a, b)` and `(a, b]` run clockwise from `a` to
//! `b`, wrapping past zero; when `a == b` they cover the whole ring (minus `a` for the open one),
//! which is what a one-node ring needs: its own successor is responsible for every key.
//!
//! This module does not decide who owns a key; that is [`super::chord`]'s `find_successor`.

use std::fmt;
use std::net::IpAddr;

use rand::Rng;

/// Width of the identifier space in bits (`m` in the Chord paper).
pub const ID_BITS: u32 = 160;
/// Width of the identifier space in bytes.
pub const ID_BYTES: usize = 20;
/// How many low bits of an address-derived ID carry the port.
pub const PORT_BITS: u32 = 20;

/// Which hash turns addresses and keys into IDs. Every node of one overlay must use the same.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IdHash {
    /// SHA-1, 160 bits as they come (dSIP's `algorithm=sha1`).
    #[default]
    Sha1,
    /// SHA-256 truncated to its first 160 bits.
    Sha256Truncated,
}

impl IdHash {
    /// The `algorithm` parameter value for a `DHT-PeerID` header.
    pub fn name(self) -> &'static str {
        match self {
            IdHash::Sha1 => "sha1",
            IdHash::Sha256Truncated => "sha256-160",
        }
    }

    fn digest(self, data: &[u8]) -> [u8; ID_BYTES] {
        let algorithm = match self {
            IdHash::Sha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            IdHash::Sha256Truncated => &ring::digest::SHA256,
        };
        let digest = ring::digest::digest(algorithm, data);
        let mut out = [0u8; ID_BYTES];
        // Both digests are at least 20 bytes long; `zip` keeps this panic-free regardless.
        for (o, d) in out.iter_mut().zip(digest.as_ref()) {
            *o = *d;
        }
        out
    }
}

/// A hex string that is not a node ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdParseError {
    /// Not 40 hex digits long (the length found).
    #[error("a node ID is 40 hex digits, got {0} characters")]
    Length(usize),
    /// A character that is not a hex digit (its position).
    #[error("not a hex digit at offset {0}")]
    NotHex(usize),
}

/// A point on the 160-bit Chord ring. Ordered numerically; prints as 40 hex digits with
/// `Display` and as a short `0123abcd…12345` (first 8 and last 5 digits: hash prefix and port
/// field) with `Debug`, for logs.
///
/// Stored as the high 32 and low 128 bits so that ring arithmetic is two machine additions.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId {
    hi: u32,
    lo: u128,
}

impl NodeId {
    /// Zero, the ring's origin.
    pub const ZERO: NodeId = NodeId { hi: 0, lo: 0 };
    /// `2^160 - 1`, the last point before the ring wraps.
    pub const MAX: NodeId = NodeId { hi: u32::MAX, lo: u128::MAX };

    /// The ID whose big-endian bytes are `bytes`.
    pub fn from_bytes(bytes: [u8; ID_BYTES]) -> NodeId {
        let mut hi = [0u8; 4];
        let mut lo = [0u8; 16];
        hi.copy_from_slice(&bytes[..4]);
        lo.copy_from_slice(&bytes[4..]);
        NodeId { hi: u32::from_be_bytes(hi), lo: u128::from_be_bytes(lo) }
    }

    /// Big-endian bytes.
    pub fn to_bytes(self) -> [u8; ID_BYTES] {
        let mut out = [0u8; ID_BYTES];
        out[..4].copy_from_slice(&self.hi.to_be_bytes());
        out[4..].copy_from_slice(&self.lo.to_be_bytes());
        out
    }

    /// Parses 40 hex digits (either case), as printed by `Display` and carried in `DHT-PeerID`.
    pub fn from_hex(s: &str) -> Result<NodeId, IdParseError> {
        let s = s.as_bytes();
        if s.len() != 2 * ID_BYTES {
            return Err(IdParseError::Length(s.len()));
        }
        let mut bytes = [0u8; ID_BYTES];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            let high = hex_value(pair[0]).ok_or(IdParseError::NotHex(2 * i))?;
            let low = hex_value(pair[1]).ok_or(IdParseError::NotHex(2 * i + 1))?;
            bytes[i] = high << 4 | low;
        }
        Ok(NodeId::from_bytes(bytes))
    }

    /// A uniformly random ID, for tests and for keys nobody names.
    pub fn random<R: Rng + ?Sized>(rng: &mut R) -> NodeId {
        NodeId { hi: rng.random(), lo: rng.random() }
    }

    /// The ID of the node listening on `ip:port`: `hash(ip's bytes)` with the low
    /// [`PORT_BITS`] bits replaced by the port (whose 16 bits fill the bottom of that field),
    /// so nodes sharing one address sit next to each other on the ring, in port order.
    /// An IPv4-mapped IPv6 address hashes as the IPv4 address it carries, so a dual-stack
    /// socket reporting `::ffff:192.0.2.1` sees the same ID as an IPv4 one.
    ///
    /// An IPv6 address hashes its /64 prefix only (docs/security.md, H2): one subscriber's /64 is one
    /// address's worth of IDs, a contiguous arc, as an IPv4 address is, instead of 2^64
    /// positions to pick from in front of any key.
    pub fn from_addr(ip: IpAddr, port: u16, hash: IdHash) -> NodeId {
        let digest = match ip.to_canonical() {
            IpAddr::V4(v4) => hash.digest(&v4.octets()),
            IpAddr::V6(v6) => hash.digest(&v6.octets()[..8]),
        };
        let id = NodeId::from_bytes(digest);
        let port_mask: u128 = (1 << PORT_BITS) - 1;
        NodeId { hi: id.hi, lo: (id.lo & !port_mask) | u128::from(port) }
    }

    /// The ID of a resource: `hash(key)` truncated to 160 bits. An AoR hashes its URI's text
    /// (`sip:alice@p2p.test`), exactly as an address string would.
    pub fn for_key(key: &[u8], hash: IdHash) -> NodeId {
        NodeId::from_bytes(hash.digest(key))
    }

    /// The ID a user names on the command line or the status API (`p2psip lookup KEY`): 40 hex
    /// digits are taken as the ID itself; any other text is a key, and its ID is
    /// [`NodeId::for_key`] of the text's UTF-8 bytes exactly as given, with no trimming or
    /// normalisation (so `alice@p2p.test` and `sip:alice@p2p.test` are different keys).
    pub fn from_user_key(text: &str, hash: IdHash) -> NodeId {
        NodeId::from_hex(text).unwrap_or_else(|_| NodeId::for_key(text.as_bytes(), hash))
    }

    /// Whether `claimed` is the ID a node at `observed_ip:observed_port` must have. The caller
    /// passes the address a request actually came from (the transport source, after `rport`),
    /// never one the peer wrote into a header.
    pub fn verify_claim(claimed: NodeId, observed_ip: IpAddr, observed_port: u16, hash: IdHash) -> bool {
        claimed == NodeId::from_addr(observed_ip, observed_port, hash)
    }

    /// `self + other mod 2^160`.
    pub fn wrapping_add(self, other: NodeId) -> NodeId {
        let (lo, carry) = self.lo.overflowing_add(other.lo);
        NodeId { hi: self.hi.wrapping_add(other.hi).wrapping_add(u32::from(carry)), lo }
    }

    /// `self - other mod 2^160`.
    pub fn wrapping_sub(self, other: NodeId) -> NodeId {
        let (lo, borrow) = self.lo.overflowing_sub(other.lo);
        NodeId { hi: self.hi.wrapping_sub(other.hi).wrapping_sub(u32::from(borrow)), lo }
    }

    /// `2^i` as an ID; zero when `i >= 160` (that power is a multiple of the ring size).
    pub fn pow2(i: u32) -> NodeId {
        match i {
            0..=127 => NodeId { hi: 0, lo: 1u128 << i },
            128..=159 => NodeId { hi: 1u32 << (i - 128), lo: 0 },
            _ => NodeId::ZERO,
        }
    }

    /// `self + 2^i mod 2^160`: the start of finger `i` (Chord's `finger[i+1].start`, counting
    /// from zero here).
    pub fn add_pow2(self, i: u32) -> NodeId {
        self.wrapping_add(NodeId::pow2(i))
    }

    /// Clockwise distance from `self` to `to`: `to - self mod 2^160`.
    pub fn distance(self, to: NodeId) -> NodeId {
        to.wrapping_sub(self)
    }

    /// Whether `self ∈ (a, b)`, clockwise. `(a, a)` is every point except `a`.
    pub fn in_open(self, a: NodeId, b: NodeId) -> bool {
        if self == a {
            return false;
        }
        a == b || a.distance(self) < a.distance(b)
    }

    /// Whether `self ∈ (a, b]`, clockwise. `(a, a]` is the whole ring.
    pub fn in_left_open(self, a: NodeId, b: NodeId) -> bool {
        if a == b {
            return true;
        }
        self != a && a.distance(self) <= a.distance(b)
    }

    /// Position of the highest set bit plus one (0 for zero): `floor(log2 self) + 1`.
    pub fn bit_length(self) -> u32 {
        if self.hi != 0 {
            128 + (32 - self.hi.leading_zeros())
        } else {
            128 - self.lo.leading_zeros()
        }
    }

    /// The low [`PORT_BITS`] bits, where an address-derived ID keeps its port.
    pub fn port_field(self) -> u32 {
        // Truncation is the point: the mask leaves at most 20 bits.
        (self.lo & ((1 << PORT_BITS) - 1)) as u32
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}{:032x}", self.hi, self.lo)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}…{:05x}", self.hi, self.port_field())
    }
}

impl std::str::FromStr for NodeId {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<NodeId, IdParseError> {
        NodeId::from_hex(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn id(bytes: [u8; ID_BYTES]) -> NodeId {
        NodeId::from_bytes(bytes)
    }

    /// An ID whose top byte is `v` and the rest zero: the 8-bit ring embedded in the big one.
    fn small(v: u8) -> NodeId {
        let mut b = [0u8; ID_BYTES];
        b[0] = v;
        NodeId::from_bytes(b)
    }

    #[test]
    fn hex_round_trip_and_formats() {
        let x = NodeId::from_hex("0123456789abcdef0123456789ABCDEF01234567").unwrap();
        assert_eq!(x.to_string(), "0123456789abcdef0123456789abcdef01234567");
        assert_eq!(format!("{x:?}"), "01234567…34567");
        assert_eq!(NodeId::from_hex("12"), Err(IdParseError::Length(2)));
        assert_eq!(NodeId::from_hex(&"g".repeat(40)), Err(IdParseError::NotHex(0)));
        assert_eq!(NodeId::from_hex("é123456789abcdef0123456789abcdef0123456"), Err(IdParseError::NotHex(0)));
    }

    #[test]
    fn user_keys_are_hex_ids_or_hashed_text() {
        let hex = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(NodeId::from_user_key(hex, IdHash::Sha1).to_string(), hex);
        let aor = "sip:alice@p2p.test";
        assert_eq!(NodeId::from_user_key(aor, IdHash::Sha1), NodeId::for_key(aor.as_bytes(), IdHash::Sha1));
        assert_ne!(NodeId::from_user_key("alice@p2p.test", IdHash::Sha1), NodeId::from_user_key(aor, IdHash::Sha1));
    }

    #[test]
    fn address_id_is_the_hash_with_the_port_in_the_low_20_bits() {
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let a = NodeId::from_addr(ip, 5060, IdHash::Sha1).to_bytes();
        let full = NodeId::for_key(&[192, 0, 2, 1], IdHash::Sha1).to_bytes();
        assert_eq!(a[..17], full[..17]);
        assert_eq!(a[17], full[17] & 0xf0);
        assert_eq!(a[18..], 5060u16.to_be_bytes());
        assert_eq!(NodeId::from_bytes(a).port_field(), 5060);
    }

    #[test]
    fn known_sha1_vector() {
        // FIPS 180 test vector: SHA-1("abc").
        let x = NodeId::for_key(b"abc", IdHash::Sha1);
        assert_eq!(x.to_string(), "a9993e364706816aba3e25717850c26c9cd0d89d");
        // SHA-256("abc") truncated to 160 bits.
        let y = NodeId::for_key(b"abc", IdHash::Sha256Truncated);
        assert_eq!(y.to_string(), "ba7816bf8f01cfea414140de5dae2223b00361a3");
    }

    #[test]
    fn one_ipv6_64_is_one_arc() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let a = NodeId::from_addr(ip("2001:db8:1:2:aaaa::1"), 5070, IdHash::Sha1);
        let b = NodeId::from_addr(ip("2001:db8:1:2:bbbb:cccc:dddd:eeee"), 5071, IdHash::Sha1);
        let c = NodeId::from_addr(ip("2001:db8:1:3::1"), 5070, IdHash::Sha1);
        // Same /64: the same ID but for the port field, side by side on the ring.
        assert_eq!((a.hi, a.lo >> PORT_BITS), (b.hi, b.lo >> PORT_BITS));
        assert_eq!(b.port_field(), 5071);
        assert_eq!(NodeId::from_addr(ip("2001:db8:1:2::9"), 5070, IdHash::Sha1), a);
        assert_ne!(c.hi, a.hi, "another /64 is elsewhere");
    }

    #[test]
    fn mapped_ipv6_hashes_as_ipv4() {
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped());
        assert_eq!(NodeId::from_addr(v4, 1, IdHash::Sha1), NodeId::from_addr(mapped, 1, IdHash::Sha1));
        assert!(NodeId::verify_claim(NodeId::from_addr(v4, 7, IdHash::Sha1), mapped, 7, IdHash::Sha1));
        assert!(!NodeId::verify_claim(NodeId::from_addr(v4, 7, IdHash::Sha1), v4, 8, IdHash::Sha1));
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert!(!NodeId::verify_claim(NodeId::from_addr(v4, 7, IdHash::Sha1), v6, 7, IdHash::Sha1));
        assert!(!NodeId::verify_claim(NodeId::from_addr(v4, 7, IdHash::Sha1), v4, 7, IdHash::Sha256Truncated));
    }

    #[test]
    fn whole_ring_cases() {
        let a = small(7);
        assert!(a.in_left_open(a, a));
        assert!(small(8).in_left_open(a, a));
        assert!(!a.in_open(a, a));
        assert!(small(8).in_open(a, a));
        assert!(!a.in_open(a, small(9)));
        assert!(small(9).in_left_open(a, small(9)));
        assert!(!small(9).in_open(a, small(9)));
    }

    #[test]
    fn powers_of_two() {
        assert_eq!(NodeId::ZERO.add_pow2(0).to_string(), format!("{:040x}", 1));
        assert_eq!(NodeId::ZERO.add_pow2(159).to_string(), format!("8{}", "0".repeat(39)));
        assert_eq!(NodeId::ZERO.add_pow2(160), NodeId::ZERO);
        assert_eq!(NodeId::MAX.add_pow2(0), NodeId::ZERO);
        assert_eq!(NodeId::pow2(127).wrapping_add(NodeId::pow2(127)), NodeId::pow2(128));
        for i in 0..ID_BITS {
            assert_eq!(NodeId::pow2(i).bit_length(), i + 1);
        }
        assert_eq!(NodeId::ZERO.bit_length(), 0);
    }

    /// Reference membership on an 8-bit ring by walking it.
    fn walk_left_open(x: u8, a: u8, b: u8) -> bool {
        let mut p = a;
        loop {
            p = p.wrapping_add(1);
            if p == x {
                return true;
            }
            if p == b {
                return false;
            }
        }
    }

    proptest! {
        #[test]
        fn intervals_match_a_walk_on_the_embedded_8_bit_ring(x: u8, a: u8, b: u8) {
            let (xs, as_, bs) = (small(x), small(a), small(b));
            prop_assert_eq!(xs.in_left_open(as_, bs), walk_left_open(x, a, b));
            prop_assert_eq!(xs.in_open(as_, bs), walk_left_open(x, a, b) && x != b);
        }

        #[test]
        fn intervals_are_rotation_invariant(x: [u8; 20], a: [u8; 20], b: [u8; 20], c: [u8; 20]) {
            let (x, a, b, c) = (id(x), id(a), id(b), id(c));
            prop_assert_eq!(x.in_left_open(a, b), x.wrapping_add(c).in_left_open(a.wrapping_add(c), b.wrapping_add(c)));
            prop_assert_eq!(x.in_open(a, b), x.wrapping_add(c).in_open(a.wrapping_add(c), b.wrapping_add(c)));
        }

        #[test]
        fn two_half_open_arcs_partition_the_ring(x: [u8; 20], a: [u8; 20], b: [u8; 20]) {
            let (x, a, b) = (id(x), id(a), id(b));
            prop_assume!(a != b);
            prop_assert!(x.in_left_open(a, b) != x.in_left_open(b, a));
            prop_assert_eq!(x.in_open(a, b), x.in_left_open(a, b) && x != b);
            prop_assert!(b.in_left_open(a, b));
            prop_assert!(!a.in_left_open(a, b));
        }

        #[test]
        fn distance_and_addition_are_inverse(a: [u8; 20], b: [u8; 20]) {
            let (a, b) = (id(a), id(b));
            prop_assert_eq!(a.wrapping_add(a.distance(b)), b);
            prop_assert_eq!(a.distance(b).wrapping_add(b.distance(a)), NodeId::ZERO);
            prop_assert_eq!(NodeId::from_bytes(a.to_bytes()), a);
            prop_assert_eq!(NodeId::from_hex(&a.to_string()).unwrap(), a);
        }

        #[test]
        fn add_pow2_doubles(a: [u8; 20], i in 0u32..159) {
            let a = id(a);
            prop_assert_eq!(a.add_pow2(i).add_pow2(i), a.add_pow2(i + 1));
            prop_assert_eq!(a.distance(a.add_pow2(i)), NodeId::pow2(i));
        }

        #[test]
        fn nodes_sharing_an_address_are_contiguous(
            ip: [u8; 4], other: [u8; 4], p: u16, q: u16, use_sha256: bool,
        ) {
            prop_assume!(ip != other && p < q);
            let hash = if use_sha256 { IdHash::Sha256Truncated } else { IdHash::Sha1 };
            let ip = IpAddr::V4(Ipv4Addr::from(ip));
            let a = NodeId::from_addr(ip, p, hash);
            let b = NodeId::from_addr(ip, q, hash);
            // Same prefix, ordered by port, no wrap between them.
            prop_assert!(a < b);
            prop_assert_eq!(a.distance(b), NodeId::from_bytes({
                let mut d = [0u8; 20];
                d[18..].copy_from_slice(&(q - p).to_be_bytes());
                d
            }));
            // Any other address's node (whatever its port) lies outside the arc [a, b].
            for port in [0u16, p, q, u16::MAX] {
                let z = NodeId::from_addr(IpAddr::V4(Ipv4Addr::from(other)), port, hash);
                prop_assert!(!z.in_open(a, b));
            }
            prop_assert!(NodeId::verify_claim(a, ip, p, hash));
        }
    }
}
