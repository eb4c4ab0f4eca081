//! Which upstream addresses keyswap may dial: the classifier behind `block_private_addresses`.
//!
//! It is applied to the *resolved* address that is then dialled, never to a host name, so DNS
//! rebinding and alternate spellings (`127.1`, `0x7f000001`) are judged by what they resolve to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Whether `ip` may be dialled under `block_private_addresses`, with the `allowed`
/// exceptions (`allow_private_cidrs`).
pub fn permits(block_private: bool, allowed: &[IpNet], ip: IpAddr) -> bool {
    if !block_private || !is_non_public(ip) {
        return true;
    }
    let canonical = ip.to_canonical();
    allowed
        .iter()
        .any(|net| net.contains(&ip) || net.contains(&canonical))
}

/// Loopback, private, link-local (cloud metadata included), CGNAT, unspecified, broadcast,
/// multicast, reserved and documentation ranges, and IPv6 forms that embed any of them.
pub fn is_non_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_non_public_v4(v4),
        IpAddr::V6(v6) => is_non_public_v6(v6),
    }
}

fn is_non_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0                                   // "this network", incl. 0.0.0.0
        || a == 10                           // RFC 1918
        || a == 127                          // loopback
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 169 && b == 254)            // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b)) // RFC 1918
        || (a == 192 && b == 168)            // RFC 1918
        || (a == 192 && b == 0 && c == 0)    // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)    // TEST-NET-1
        || (a == 192 && b == 88 && c == 99)  // 6to4 relay anycast
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113)  // TEST-NET-3
        || a >= 224 // multicast, reserved, broadcast
}

fn is_non_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = embedded_v4(ip) {
        return is_non_public_v4(v4);
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || (s[0] & 0xfe00) == 0xfc00             // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80             // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0             // site-local fec0::/10 (deprecated)
        || (s[0] & 0xff00) == 0xff00             // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8)    // documentation
        || (s[0] == 0x2001 && s[1] == 0)         // Teredo: tunnels to arbitrary IPv4
        || (s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 1) // NAT64 local use 64:ff9b:1::/48
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // discard-only 100::/64
}

/// The IPv4 address an IPv6 address stands for: mapped, compatible, NAT64 well-known, 6to4.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let last32 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if s[..5] == [0, 0, 0, 0, 0]
        && (s[5] == 0xffff || (s[5] == 0 && !ip.is_loopback() && !ip.is_unspecified()))
    {
        return Some(last32); // ::ffff:a.b.c.d and the deprecated ::a.b.c.d
    }
    if s[..6] == [0x0064, 0xff9b, 0, 0, 0, 0] {
        return Some(last32); // NAT64 64:ff9b::/96
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])); // 6to4 2002:aabb:ccdd::/48
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(s: &str) -> bool {
        is_non_public(s.parse().unwrap())
    }

    #[test]
    fn private_and_special_ipv4_are_blocked() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "127.255.0.9",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
        ] {
            assert!(blocked(ip), "{ip} must be blocked");
        }
    }

    #[test]
    fn public_ipv4_is_allowed() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "192.169.0.1",
            "140.82.112.3",
        ] {
            assert!(!blocked(ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn ipv6_forms_of_private_ipv4_are_blocked() {
        for ip in [
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:0001::1",
            "2001::1",
            "fe80::1",
            "fd00:ec2::254",
            "ff02::1",
            "2001:db8::1",
            "64:ff9b:1::1",
        ] {
            assert!(blocked(ip), "{ip} must be blocked");
        }
    }

    #[test]
    fn public_ipv6_is_allowed() {
        for ip in [
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
        ] {
            assert!(!blocked(ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn policy_exceptions_open_only_their_range() {
        let allowed: Vec<IpNet> = vec!["10.1.2.0/24".parse().unwrap()];
        let permits = |ip: &str| permits(true, &allowed, ip.parse().unwrap());
        assert!(permits("10.1.2.7"));
        assert!(permits("::ffff:10.1.2.7"));
        assert!(!permits("10.1.3.7"));
        assert!(!permits("127.0.0.1"));
        assert!(permits("1.1.1.1"));
        assert!(super::permits(false, &[], "127.0.0.1".parse().unwrap()));
    }
}
