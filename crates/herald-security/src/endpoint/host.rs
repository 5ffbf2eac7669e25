//! Host names: internal-name rules and the lenient IPv4 forms that
//! `inet_aton`-style resolvers accept.

use std::net::Ipv4Addr;

/// Suffixes (and whole names) that only ever resolve inside a network or on
/// the host itself: RFC 6761/6762 special-use names, RFC 8375 `home.arpa`,
/// ICANN's reserved private-use `.internal`, and the TLDs RFC 6762 Appendix G
/// lists as customary in private networks, plus Kubernetes' `svc`.
const INTERNAL_SUFFIXES: &[&str] = &[
    "localhost",
    "localdomain",
    "local",
    "internal", // metadata.google.internal, *.ec2.internal, …
    "intranet",
    "private",
    "corp",
    "home",
    "lan",
    "home.arpa",
    "arpa",
    "svc",
    "test",
    "invalid",
];

/// Exact names of metadata services that live under public TLDs.
const INTERNAL_NAMES: &[&str] = &["metadata.goog"];

/// Lower-case `host` and drop one trailing root dot, so `LocalHost.` and
/// `localhost` compare equal.
pub(crate) fn normalize_host_name(host: &str) -> String {
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    trimmed.to_ascii_lowercase()
}

/// Why a host name is considered internal, or `None`.
pub(crate) fn internal_name_reason(normalized: &str) -> Option<&'static str> {
    if normalized.is_empty() {
        return Some("empty host name");
    }
    if !normalized.contains('.') {
        // A single label is completed by resolver search domains into an
        // internal name ("metadata", "kubernetes", "vm").
        return Some("single-label host name");
    }
    if INTERNAL_NAMES.contains(&normalized) {
        return Some("cloud metadata host name");
    }
    for suffix in INTERNAL_SUFFIXES {
        if normalized == *suffix
            || (normalized.len() > suffix.len()
                && normalized.ends_with(suffix)
                && normalized.as_bytes()[normalized.len() - suffix.len() - 1] == b'.')
        {
            return Some("internal host name");
        }
    }
    None
}

/// Parse `host` the way `inet_aton(3)` (and thus `getaddrinfo`) does: one to
/// four dot-separated parts in decimal, octal (leading `0`) or hex (`0x`), the
/// last part filling the remaining bytes. `None` when `host` is not such a
/// number. The `url` crate already folds these forms into IPv4 hosts; this is
/// a second, independent check so a parser difference cannot slip a numeric
/// host past the policy as a "domain".
pub(crate) fn parse_lenient_ipv4(host: &str) -> Option<Ipv4Addr> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    let mut parts = Vec::with_capacity(4);
    for part in host.split('.') {
        if parts.len() == 4 {
            return None;
        }
        parts.push(parse_number(part)?);
    }
    let (last, init) = parts.split_last()?;
    let mut value: u32 = 0;
    for (index, part) in init.iter().enumerate() {
        if *part > 255 {
            return None;
        }
        // init has at most three parts, so the shift is at most 24.
        value |= (*part as u32) << (24 - 8 * index as u32);
    }
    let remaining_bits = 8 * (4 - init.len() as u32);
    if remaining_bits < 64 && *last >= (1u64 << remaining_bits) {
        return None;
    }
    Some(Ipv4Addr::from(value | *last as u32))
}

fn parse_number(part: &str) -> Option<u64> {
    if part.is_empty() || part.len() > 34 {
        return None;
    }
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() {
        return Some(0); // "0x" alone is zero, as in WHATWG and glibc
    }
    if !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_ipv4_forms() {
        let loopback = Some(Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(parse_lenient_ipv4("127.0.0.1"), loopback);
        assert_eq!(parse_lenient_ipv4("2130706433"), loopback);
        assert_eq!(parse_lenient_ipv4("0x7f000001"), loopback);
        assert_eq!(parse_lenient_ipv4("0x7f.0.0.1"), loopback);
        assert_eq!(parse_lenient_ipv4("0177.0.0.1"), loopback);
        assert_eq!(parse_lenient_ipv4("017700000001"), loopback);
        assert_eq!(parse_lenient_ipv4("127.1"), loopback);
        assert_eq!(parse_lenient_ipv4("127.0.1"), loopback);
        assert_eq!(parse_lenient_ipv4("127.0.0.1."), loopback);
        assert_eq!(parse_lenient_ipv4("0"), Some(Ipv4Addr::UNSPECIFIED));
        assert_eq!(parse_lenient_ipv4("256.0.0.1"), None);
        assert_eq!(parse_lenient_ipv4("1.2.3.4.5"), None);
        assert_eq!(parse_lenient_ipv4("4294967296"), None);
        assert_eq!(parse_lenient_ipv4("example.com"), None);
        assert_eq!(parse_lenient_ipv4("08.0.0.1"), None);
        assert_eq!(parse_lenient_ipv4(""), None);
        assert_eq!(parse_lenient_ipv4("1..2"), None);
    }

    #[test]
    fn internal_names() {
        for name in [
            "localhost",
            "api.localhost",
            "metadata.google.internal",
            "printer.local",
            "kubernetes.default.svc",
            "metadata",
            "router.home.arpa",
            "metadata.goog",
        ] {
            assert!(internal_name_reason(name).is_some(), "{name}");
        }
        for name in [
            "example.com",
            "hooks.notlocal.com",
            "localhost.example.com",
            "internal.example.org",
        ] {
            assert_eq!(internal_name_reason(name), None, "{name}");
        }
    }
}
