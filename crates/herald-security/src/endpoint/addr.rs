//! Classification of IP addresses that a rest-hook must never reach.
//!
//! The rule is "global unicast only": every special-purpose range from the IANA
//! IPv4 and IPv6 special-purpose registries that could lead into the host, the
//! local network or a cloud control plane is named here. IPv6 forms that embed
//! an IPv4 address (mapped, compatible, SIIT, NAT64, 6to4) are judged by the
//! address they embed, so `[::ffff:127.0.0.1]` and `[64:ff9b::a9fe:a9fe]` are as
//! forbidden as the IPv4 addresses they carry.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not a public destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AddressKind {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16) and local-use NAT64 64:ff9b:1::/48.
    Private,
    /// 169.254/16 and fe80::/10.
    LinkLocal,
    /// Cloud instance metadata services (169.254.169.254, fd00:ec2::254, 100.100.100.200, …).
    CloudMetadata,
    /// Carrier-grade NAT, 100.64/10 (RFC 6598).
    SharedAddressSpace,
    /// 224/4 and ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 0.0.0.0 and :: (Linux connects these to the local host).
    Unspecified,
    /// 0.0.0.0/8, "this network".
    ThisNetwork,
    /// TEST-NET-1/2/3, 2001:db8::/32, 3fff::/20.
    Documentation,
    /// 198.18/15 and 2001:2::/48.
    Benchmarking,
    /// 192.0.0/24 and 2001::/23 (includes Teredo).
    ProtocolAssignments,
    /// IPv6 unique local fc00::/7.
    UniqueLocal,
    /// Deprecated IPv6 site-local fec0::/10.
    SiteLocal,
    /// 240/4, deprecated transition forms and IPv6 space outside 2000::/3.
    Reserved,
}

impl AddressKind {
    /// Ranges a developer may legitimately point a local receiver at; allowed by
    /// [`EndpointPolicy::development`](super::EndpointPolicy::development).
    /// Cloud metadata, multicast, broadcast and reserved space are never in
    /// this set: nothing useful lives there, only attack surface.
    pub fn is_local_network(self) -> bool {
        matches!(
            self,
            AddressKind::Loopback
                | AddressKind::Private
                | AddressKind::LinkLocal
                | AddressKind::SharedAddressSpace
                | AddressKind::Unspecified
                | AddressKind::UniqueLocal
                | AddressKind::SiteLocal
        )
    }

    /// A stable machine-readable name, for logs, metrics and diagnostics.
    pub fn code(self) -> &'static str {
        match self {
            AddressKind::Loopback => "loopback",
            AddressKind::Private => "private",
            AddressKind::LinkLocal => "link-local",
            AddressKind::CloudMetadata => "cloud-metadata",
            AddressKind::SharedAddressSpace => "shared-address-space",
            AddressKind::Multicast => "multicast",
            AddressKind::Broadcast => "broadcast",
            AddressKind::Unspecified => "unspecified",
            AddressKind::ThisNetwork => "this-network",
            AddressKind::Documentation => "documentation",
            AddressKind::Benchmarking => "benchmarking",
            AddressKind::ProtocolAssignments => "protocol-assignments",
            AddressKind::UniqueLocal => "unique-local",
            AddressKind::SiteLocal => "site-local",
            AddressKind::Reserved => "reserved",
        }
    }
}

impl fmt::Display for AddressKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The special-purpose kind of `ip`, or `None` for a public unicast address.
pub fn classify(ip: IpAddr) -> Option<AddressKind> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Metadata endpoints checked before the range they sit in, so the reason
/// names them precisely.
const METADATA_V4: [Ipv4Addr; 5] = [
    Ipv4Addr::new(169, 254, 169, 254), // AWS, GCP, Azure, OpenStack, DigitalOcean, …
    Ipv4Addr::new(169, 254, 170, 2),   // AWS ECS task metadata
    Ipv4Addr::new(100, 100, 100, 200), // Alibaba Cloud
    Ipv4Addr::new(168, 63, 129, 16),   // Azure WireServer (public-looking, host-internal)
    Ipv4Addr::new(192, 0, 0, 192),     // Oracle Cloud (legacy)
];

const METADATA_V6: [Ipv6Addr; 1] = [
    Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254), // AWS IMDS over IPv6
];

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    let net = Ipv6Addr::new(
        net[0], net[1], net[2], net[3], net[4], net[5], net[6], net[7],
    );
    (u128::from(ip) & mask) == (u128::from(net) & mask)
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressKind> {
    if METADATA_V4.contains(&ip) {
        return Some(AddressKind::CloudMetadata);
    }
    let table: [([u8; 4], u32, AddressKind); 19] = [
        ([0, 0, 0, 0], 32, AddressKind::Unspecified),
        ([0, 0, 0, 0], 8, AddressKind::ThisNetwork),
        ([10, 0, 0, 0], 8, AddressKind::Private),
        ([100, 64, 0, 0], 10, AddressKind::SharedAddressSpace),
        ([127, 0, 0, 0], 8, AddressKind::Loopback),
        ([169, 254, 0, 0], 16, AddressKind::LinkLocal),
        ([172, 16, 0, 0], 12, AddressKind::Private),
        ([192, 0, 0, 0], 24, AddressKind::ProtocolAssignments),
        ([192, 0, 2, 0], 24, AddressKind::Documentation),
        ([192, 31, 196, 0], 24, AddressKind::ProtocolAssignments), // AS112-v4
        ([192, 52, 193, 0], 24, AddressKind::ProtocolAssignments), // AMT
        ([192, 88, 99, 0], 24, AddressKind::Reserved),             // deprecated 6to4 relay anycast
        ([192, 168, 0, 0], 16, AddressKind::Private),
        ([192, 175, 48, 0], 24, AddressKind::ProtocolAssignments), // AS112 direct delegation
        ([198, 18, 0, 0], 15, AddressKind::Benchmarking),
        ([198, 51, 100, 0], 24, AddressKind::Documentation),
        ([203, 0, 113, 0], 24, AddressKind::Documentation),
        ([224, 0, 0, 0], 4, AddressKind::Multicast),
        ([255, 255, 255, 255], 32, AddressKind::Broadcast),
    ];
    for (net, prefix, kind) in table {
        if in_v4(ip, net, prefix) {
            return Some(kind);
        }
    }
    if in_v4(ip, [240, 0, 0, 0], 4) {
        return Some(AddressKind::Reserved);
    }
    None
}

fn v4_from_low_bits(bits: u128) -> Ipv4Addr {
    // Truncation is the point: the low 32 bits are the embedded address.
    Ipv4Addr::from((bits & 0xffff_ffff) as u32)
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressKind> {
    let bits = u128::from(ip);
    if ip.is_unspecified() {
        return Some(AddressKind::Unspecified);
    }
    if ip.is_loopback() {
        return Some(AddressKind::Loopback);
    }
    if METADATA_V6.contains(&ip) {
        return Some(AddressKind::CloudMetadata);
    }
    // ::ffff:a.b.c.d — IPv4-mapped: the socket talks IPv4 to a.b.c.d.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    // ::a.b.c.d — deprecated IPv4-compatible; ::ffff:0:a.b.c.d — SIIT translated.
    // Judged by the embedded address, and refused even when that is public:
    // no legitimate receiver is addressed this way.
    if in_v6(ip, [0; 8], 96) || in_v6(ip, [0, 0, 0, 0, 0xffff, 0, 0, 0], 96) {
        return Some(classify_v4(v4_from_low_bits(bits)).unwrap_or(AddressKind::Reserved));
    }
    // 64:ff9b::/96 well-known NAT64 prefix: the gateway connects to the IPv4 address.
    if in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96) {
        return classify_v4(v4_from_low_bits(bits));
    }
    if in_v6(ip, [0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48) {
        return Some(AddressKind::Private); // RFC 8215 local-use NAT64
    }
    // 2002:AABB:CCDD::/48 — 6to4 carries a.b.c.d in bits 16..48.
    if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        let embedded = Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32);
        return classify_v4(embedded);
    }
    let table: [([u16; 8], u32, AddressKind); 9] = [
        ([0x0100, 0, 0, 0, 0, 0, 0, 0], 64, AddressKind::Reserved), // discard-only
        (
            [0x2001, 0x0002, 0, 0, 0, 0, 0, 0],
            48,
            AddressKind::Benchmarking,
        ),
        (
            [0x2001, 0, 0, 0, 0, 0, 0, 0],
            23,
            AddressKind::ProtocolAssignments,
        ), // incl. Teredo
        (
            [0x2001, 0x0db8, 0, 0, 0, 0, 0, 0],
            32,
            AddressKind::Documentation,
        ),
        (
            [0x3fff, 0, 0, 0, 0, 0, 0, 0],
            20,
            AddressKind::Documentation,
        ),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, AddressKind::UniqueLocal),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, AddressKind::LinkLocal),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, AddressKind::SiteLocal),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, AddressKind::Multicast),
    ];
    for (net, prefix, kind) in table {
        if in_v6(ip, net, prefix) {
            return Some(kind);
        }
    }
    // Only 2000::/3 is allocated global unicast.
    if !in_v6(ip, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3) {
        return Some(AddressKind::Reserved);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> Option<AddressKind> {
        match s.parse::<IpAddr>() {
            Ok(ip) => classify(ip),
            Err(e) => panic!("test address {s}: {e}"),
        }
    }

    #[test]
    fn public_addresses_pass() {
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(kind(s), None, "{s}");
        }
    }

    #[test]
    fn boundaries() {
        assert_eq!(kind("172.15.255.255"), None);
        assert_eq!(kind("172.16.0.0"), Some(AddressKind::Private));
        assert_eq!(kind("172.31.255.255"), Some(AddressKind::Private));
        assert_eq!(kind("100.63.255.255"), None);
        assert_eq!(
            kind("100.127.255.255"),
            Some(AddressKind::SharedAddressSpace)
        );
        assert_eq!(kind("198.17.255.255"), None);
        assert_eq!(kind("198.19.255.255"), Some(AddressKind::Benchmarking));
        assert_eq!(kind("223.255.255.255"), None);
        assert_eq!(kind("239.255.255.255"), Some(AddressKind::Multicast));
        assert_eq!(kind("240.0.0.1"), Some(AddressKind::Reserved));
        assert_eq!(kind("255.255.255.255"), Some(AddressKind::Broadcast));
        assert_eq!(kind("0.1.2.3"), Some(AddressKind::ThisNetwork));
        assert_eq!(kind("1fff:ffff::1"), Some(AddressKind::Reserved));
        assert_eq!(kind("4000::1"), Some(AddressKind::Reserved));
    }

    #[test]
    fn embedded_forms_follow_the_embedded_address() {
        assert_eq!(kind("::ffff:127.0.0.1"), Some(AddressKind::Loopback));
        assert_eq!(kind("::ffff:7f00:1"), Some(AddressKind::Loopback));
        assert_eq!(kind("::127.0.0.1"), Some(AddressKind::Loopback));
        assert_eq!(kind("::8.8.8.8"), Some(AddressKind::Reserved));
        assert_eq!(kind("::ffff:0:a00:1"), Some(AddressKind::Private));
        assert_eq!(kind("64:ff9b::a9fe:a9fe"), Some(AddressKind::CloudMetadata));
        assert_eq!(kind("64:ff9b::10.0.0.1"), Some(AddressKind::Private));
        assert_eq!(kind("64:ff9b:1::1"), Some(AddressKind::Private));
        assert_eq!(kind("2002:7f00:1::"), Some(AddressKind::Loopback));
        assert_eq!(kind("2002:a9fe:a9fe::1"), Some(AddressKind::CloudMetadata));
        assert_eq!(
            kind("2001:0:4136:e378:8000:63bf:3fff:fdd2"),
            Some(AddressKind::ProtocolAssignments)
        );
    }
}
