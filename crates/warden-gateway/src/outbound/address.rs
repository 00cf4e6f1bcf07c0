//! Classification of IP addresses into those an outbound call may reach and
//! those it may not: loopback, private, link-local, reserved ranges and the
//! cloud metadata services.
//!
//! IPv6 forms that carry an IPv4 address (IPv4-mapped, IPv4-compatible,
//! SIIT, NAT64 and 6to4) are classified by the IPv4 address inside them,
//! because the packet ends up there.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Reach;

/// Cloud metadata and instance-credential endpoints, denied under every
/// [`Reach`]. They hand the host's own credentials to any process on it that asks.
const METADATA_V4: &[Ipv4Addr] = &[
    // AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle Cloud and others.
    Ipv4Addr::new(169, 254, 169, 254),
    // AWS ECS task metadata and credentials.
    Ipv4Addr::new(169, 254, 170, 2),
    // AWS EKS Pod Identity agent.
    Ipv4Addr::new(169, 254, 170, 23),
    // Tencent Cloud.
    Ipv4Addr::new(169, 254, 0, 23),
    // Alibaba Cloud.
    Ipv4Addr::new(100, 100, 100, 200),
    // Azure WireServer.
    Ipv4Addr::new(168, 63, 129, 16),
    // Oracle Cloud Classic.
    Ipv4Addr::new(192, 0, 0, 192),
];

/// IPv6 metadata endpoints of AWS (IMDS and EKS Pod Identity).
const METADATA_V6: &[Ipv6Addr] = &[
    Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254),
    Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0023),
];

/// Reason given for a cloud metadata address.
const METADATA: &str = "a cloud metadata endpoint";

/// Classifies one address; returns the reason it is denied, or `None` when
/// it is allowed under `reach`.
///
/// Under [`Reach::Public`] only globally routable unicast addresses are
/// allowed. [`Reach::Private`] also allows loopback, private (RFC 1918 and
/// unique local), shared (CGNAT), link-local and deprecated site-local
/// addresses. Cloud metadata endpoints, unspecified, multicast, broadcast,
/// documentation, benchmarking and reserved addresses are denied under both.
pub fn denied_address(addr: IpAddr, reach: Reach) -> Option<&'static str> {
    match addr {
        IpAddr::V4(v4) => denied_v4(v4, reach),
        IpAddr::V6(v6) => denied_v6(v6, reach),
    }
}

/// A range of addresses as prefix and length, with the reason to deny it.
struct Range<A> {
    prefix: A,
    len: u8,
    reason: &'static str,
    /// Whether [`Reach::Private`] allows it.
    private: bool,
}

const fn v4(
    a: u8,
    b: u8,
    c: u8,
    d: u8,
    len: u8,
    reason: &'static str,
    private: bool,
) -> Range<u32> {
    Range {
        prefix: u32::from_be_bytes([a, b, c, d]),
        len,
        reason,
        private,
    }
}

const IPV4_RANGES: &[Range<u32>] = &[
    v4(0, 0, 0, 0, 8, "an unspecified address (0.0.0.0/8)", false),
    v4(10, 0, 0, 0, 8, "a private address (10.0.0.0/8)", true),
    v4(
        100,
        64,
        0,
        0,
        10,
        "a shared CGNAT address (100.64.0.0/10)",
        true,
    ),
    v4(127, 0, 0, 0, 8, "a loopback address (127.0.0.0/8)", true),
    v4(
        169,
        254,
        0,
        0,
        16,
        "a link-local address (169.254.0.0/16)",
        true,
    ),
    v4(172, 16, 0, 0, 12, "a private address (172.16.0.0/12)", true),
    v4(
        192,
        0,
        0,
        0,
        24,
        "an IETF protocol assignment (192.0.0.0/24)",
        false,
    ),
    v4(
        192,
        0,
        2,
        0,
        24,
        "a documentation address (192.0.2.0/24)",
        false,
    ),
    v4(
        192,
        88,
        99,
        0,
        24,
        "a 6to4 relay anycast address (192.88.99.0/24)",
        false,
    ),
    v4(
        192,
        168,
        0,
        0,
        16,
        "a private address (192.168.0.0/16)",
        true,
    ),
    v4(
        198,
        18,
        0,
        0,
        15,
        "a benchmarking address (198.18.0.0/15)",
        false,
    ),
    v4(
        198,
        51,
        100,
        0,
        24,
        "a documentation address (198.51.100.0/24)",
        false,
    ),
    v4(
        203,
        0,
        113,
        0,
        24,
        "a documentation address (203.0.113.0/24)",
        false,
    ),
    v4(224, 0, 0, 0, 4, "a multicast address (224.0.0.0/4)", false),
    v4(255, 255, 255, 255, 32, "the broadcast address", false),
    v4(240, 0, 0, 0, 4, "a reserved address (240.0.0.0/4)", false),
];

const fn v6(prefix: u128, len: u8, reason: &'static str, private: bool) -> Range<u128> {
    Range {
        prefix,
        len,
        reason,
        private,
    }
}

/// IPv6 ranges denied outright. Ranges that embed an IPv4 address are
/// handled before these, and everything outside 2000::/3 that is not listed
/// here is denied as reserved.
const IPV6_RANGES: &[Range<u128>] = &[
    v6(
        0x0064_ff9b_0001 << 80,
        48,
        "a local-use NAT64 address (64:ff9b:1::/48)",
        false,
    ),
    v6(
        0x0100 << 112,
        64,
        "a discard-only address (100::/64)",
        false,
    ),
    v6(0x2001 << 112, 32, "a Teredo address (2001::/32)", false),
    v6(
        0x2001_0002 << 96,
        48,
        "a benchmarking address (2001:2::/48)",
        false,
    ),
    v6(
        0x2001 << 112,
        23,
        "an IETF protocol assignment (2001::/23)",
        false,
    ),
    v6(
        0x2001_0db8 << 96,
        32,
        "a documentation address (2001:db8::/32)",
        false,
    ),
    v6(
        0x3fff << 112,
        20,
        "a documentation address (3fff::/20)",
        false,
    ),
    v6(
        0x5f00 << 112,
        16,
        "an SRv6 segment identifier (5f00::/16)",
        false,
    ),
    v6(0xfc00 << 112, 7, "a unique local address (fc00::/7)", true),
    v6(0xfe80 << 112, 10, "a link-local address (fe80::/10)", true),
    v6(0xfec0 << 112, 10, "a site-local address (fec0::/10)", true),
    v6(0xff00 << 112, 8, "a multicast address (ff00::/8)", false),
];

fn denied_v4(addr: Ipv4Addr, reach: Reach) -> Option<&'static str> {
    if METADATA_V4.contains(&addr) {
        return Some(METADATA);
    }
    let bits = u32::from(addr);
    IPV4_RANGES
        .iter()
        .find(|range| {
            bits >> (32 - u32::from(range.len)) == range.prefix >> (32 - u32::from(range.len))
        })
        .filter(|range| !(range.private && reach == Reach::Private))
        .map(|range| range.reason)
}

fn denied_v6(addr: Ipv6Addr, reach: Reach) -> Option<&'static str> {
    if METADATA_V6.contains(&addr) {
        return Some(METADATA);
    }
    if addr.is_unspecified() {
        return Some("the unspecified address");
    }
    if addr.is_loopback() {
        return match reach {
            Reach::Public => Some("the loopback address"),
            Reach::Private => None,
        };
    }
    if let Some(embedded) = embedded_v4(addr) {
        return denied_v4(embedded, reach);
    }
    let bits = u128::from(addr);
    let listed = IPV6_RANGES.iter().find(|range| {
        bits >> (128 - u32::from(range.len)) == range.prefix >> (128 - u32::from(range.len))
    });
    if let Some(range) = listed {
        return (!(range.private && reach == Reach::Private)).then_some(range.reason);
    }
    // Only 2000::/3 is allocated as global unicast.
    if bits >> 125 != 0b001 {
        return Some("a reserved address (outside 2000::/3)");
    }
    None
}

/// Returns the IPv4 address an IPv6 address carries, for the forms whose
/// traffic is delivered to that IPv4 address.
fn embedded_v4(addr: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(addr);
    let low32 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    // ::ffff:a.b.c.d (IPv4-mapped) and ::a.b.c.d (IPv4-compatible, which is
    // deprecated but may still be mapped to a.b.c.d by a host or a router).
    if bits >> 32 == 0xffff || bits >> 32 == 0 {
        return Some(low32);
    }
    // ::ffff:0:a.b.c.d (SIIT IPv4-translated, RFC 6052).
    if bits >> 32 == 0xffff_0000 {
        return Some(low32);
    }
    // 64:ff9b::a.b.c.d (NAT64 well-known prefix, RFC 6052).
    if bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000 {
        return Some(low32);
    }
    // 2002:AABB:CCDD::/48 (6to4, RFC 3056): the IPv4 address of the relay
    // router sits in bits 16 to 47.
    if bits >> 112 == 0x2002 {
        return Some(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(text: &str, reach: Reach) -> Option<&'static str> {
        let addr: IpAddr = text.parse().expect("test address parses");
        denied_address(addr, reach)
    }

    #[test]
    fn public_addresses_allowed() {
        for text in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.215.14",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "192.169.0.1",
            "169.253.255.255",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(denied(text, Reach::Public), None, "{text} under Public");
            assert_eq!(denied(text, Reach::Private), None, "{text} under Private");
        }
    }

    #[test]
    fn public_reach_denies_each_range() {
        for text in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "192.0.2.10",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "192.88.99.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "3fff::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
            "2001:10::1",
            "100::1",
            "5f00::1",
            "64:ff9b:1::1",
            "4000::1",
            "1::1",
        ] {
            assert!(denied(text, Reach::Public).is_some(), "{text} under Public");
        }
    }

    #[test]
    fn private_reach_allows_local_ranges() {
        for text in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.5",
            "192.168.0.10",
            "169.254.10.10",
            "100.64.1.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert_eq!(denied(text, Reach::Private), None, "{text} under Private");
        }
    }

    #[test]
    fn private_reach_still_denies_unroutable() {
        for text in [
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "::",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
        ] {
            assert!(
                denied(text, Reach::Private).is_some(),
                "{text} under Private"
            );
        }
    }

    #[test]
    fn metadata_denied_under_every_reach() {
        for text in [
            "169.254.169.254",
            "169.254.170.2",
            "169.254.170.23",
            "169.254.0.23",
            "100.100.100.200",
            "168.63.129.16",
            "192.0.0.192",
            "fd00:ec2::254",
            "fd00:ec2::23",
            "::ffff:169.254.169.254",
            "::169.254.169.254",
            "::ffff:0:a9fe:a9fe",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
        ] {
            for reach in [Reach::Public, Reach::Private] {
                assert_eq!(
                    denied(text, reach),
                    Some(METADATA),
                    "{text} under {reach:?}"
                );
            }
        }
    }

    #[test]
    fn embedded_ipv4_classified_by_inner_address() {
        for (text, reason) in [
            ("::ffff:127.0.0.1", "a loopback address (127.0.0.0/8)"),
            ("::127.0.0.1", "a loopback address (127.0.0.0/8)"),
            ("::ffff:0:7f00:1", "a loopback address (127.0.0.0/8)"),
            ("64:ff9b::7f00:1", "a loopback address (127.0.0.0/8)"),
            ("64:ff9b::a00:1", "a private address (10.0.0.0/8)"),
            ("2002:7f00:1::", "a loopback address (127.0.0.0/8)"),
            ("2002:c0a8:101::1", "a private address (192.168.0.0/16)"),
            ("::ffff:0.0.0.0", "an unspecified address (0.0.0.0/8)"),
            ("::0.0.0.2", "an unspecified address (0.0.0.0/8)"),
        ] {
            assert_eq!(denied(text, Reach::Public), Some(reason), "{text}");
        }
    }
}
