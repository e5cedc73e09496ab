//! Classes of IP addresses that every layer needs the same answer for: which addresses learned
//! from the network may be a next hop (docs/security.md, M8), and which sources count as one client
//! for rate limits and back-offs (an IPv6 /64 is one subscriber, RFC 6177 in spirit).

use std::net::{IpAddr, Ipv6Addr};
/// Whether a node whose own (advertised) address is `own` may send to `target` as a next hop
/// learned from the network: a registration record's contact, a Route, a storage 302 or an
/// overlay link (docs/security.md, M8). Never the unspecified, multicast or broadcast addresses, never
/// link-local ones (a stranger's way into the LAN segment), and never loopback unless the node
/// itself lives on loopback (a test ring or the demo): otherwise any signed record or redirect
/// could point the node at services on its own machine. A registered phone's contact is not
/// subject to this: it is reached over the flow it registered from.
pub fn next_hop_allowed(target: IpAddr, own: IpAddr) -> bool {
    let target = target.to_canonical();
    if target.is_unspecified() || target.is_multicast() {
        return false;
    }
    let link_local = match target {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_broadcast(),
        // fe80::/10
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    if link_local {
        return false;
    }
    !target.is_loopback() || own.to_canonical().is_loopback()
}

/// The unit a rate limit or back-off applies to: an IPv4 address, or an IPv6 /64 (what one
/// subscriber gets; counting /128s would let one host take 2^64 buckets).
pub fn source_group(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only_from_loopback_and_never_link_local() {
        let ip = |s: &str| s.parse().unwrap();
        let public = ip("192.0.2.8");
        assert!(next_hop_allowed(ip("198.51.100.7"), public));
        assert!(next_hop_allowed(ip("10.1.2.3"), public), "a LAN overlay is fine");
        for refused in ["127.0.0.1", "::1", "::ffff:127.0.0.1", "169.254.1.1", "fe80::1", "0.0.0.0", "224.0.0.1"] {
            assert!(!next_hop_allowed(ip(refused), public), "{refused}");
        }
        assert!(next_hop_allowed(ip("127.0.0.3"), ip("127.0.0.1")), "a ring on loopback");
        assert!(!next_hop_allowed(ip("169.254.1.1"), ip("127.0.0.1")));
    }

    #[test]
    fn ipv6_sources_are_grouped_by_their_64() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert_eq!(source_group(ip("2001:db8:1:2:aaaa::1")), source_group(ip("2001:db8:1:2:bbbb::9")));
        assert_ne!(source_group(ip("2001:db8:1:2::1")), source_group(ip("2001:db8:1:3::1")));
        assert_eq!(source_group(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_ne!(source_group(ip("192.0.2.1")), source_group(ip("192.0.2.2")));
    }
}
