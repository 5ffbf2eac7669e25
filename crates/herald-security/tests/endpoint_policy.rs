//! SSRF table: endpoint forms production policy must refuse, the ones it must
//! accept, the allow-list, development mode, the resolver inside a real
//! reqwest client, and a no-panic loop over generated URLs.

use std::net::IpAddr;
use std::sync::Arc;

use herald_security::endpoint::{
    classify, EndpointError, EndpointHost, EndpointPolicy, IpNet, ResolveError,
};

/// (endpoint as submitted, expected `EndpointError::code()`).
const REFUSED_IN_PRODUCTION: &[(&str, &str)] = &[
    // Scheme and syntax
    ("http://example.com/hook", "https-required"),
    ("http://[::1]:8080/", "https-required"),
    ("ftp://example.com/", "unsupported-scheme"),
    ("file:///etc/passwd", "unsupported-scheme"),
    ("gopher://127.0.0.1:6379/_INFO", "unsupported-scheme"),
    ("ws://example.com/", "unsupported-scheme"),
    ("javascript:alert(1)", "unsupported-scheme"),
    ("/relative/hook", "syntax"),
    ("https://", "syntax"),
    ("https://exa mple.com/", "syntax"),
    (" https://example.com/", "syntax"),
    ("https://exa\tmple.com/", "syntax"),
    ("https://[fe80::1%25eth0]/", "syntax"),
    ("https://user:pass@example.com/", "userinfo"),
    ("https://example.com@127.0.0.1/", "userinfo"),
    ("https://@example.com/", "userinfo"),
    ("https://example.com/hook#frag", "fragment"),
    ("https://example.com:0/", "invalid-port"),
    // Loopback in every spelling
    ("https://127.0.0.1/", "loopback"),
    ("https://127.1/", "loopback"),
    ("https://127.0.1/", "loopback"),
    ("https://127.0.0.1./", "loopback"),
    ("https://2130706433/", "loopback"),
    ("https://0x7f000001/", "loopback"),
    ("https://0x7f.0.0.1/", "loopback"),
    ("https://0177.0.0.1/", "loopback"),
    ("https://017700000001/", "loopback"),
    ("https://0x7F.1/", "loopback"),
    ("https://%31%32%37.0.0.1/", "loopback"),
    (
        "https://\u{ff11}\u{ff12}\u{ff17}.\u{ff10}.\u{ff10}.\u{ff11}/",
        "loopback",
    ),
    ("https://127.255.255.254:8443/x", "loopback"),
    ("https://[::1]/", "loopback"),
    ("https://[0:0:0:0:0:0:0:1]/", "loopback"),
    ("https://[::ffff:127.0.0.1]/", "loopback"),
    ("https://[::ffff:7f00:1]/", "loopback"),
    ("https://[::127.0.0.1]/", "loopback"),
    ("https://[::ffff:0:7f00:1]/", "loopback"),
    ("https://[64:ff9b::127.0.0.1]/", "loopback"),
    ("https://[2002:7f00:1::]/", "loopback"),
    // Unspecified / this network
    ("https://0/", "unspecified"),
    ("https://0.0.0.0/", "unspecified"),
    ("https://[::]/", "unspecified"),
    ("https://0.1.2.3/", "this-network"),
    // Cloud metadata
    ("https://169.254.169.254/latest/meta-data", "cloud-metadata"),
    ("https://2852039166/", "cloud-metadata"),
    ("https://0xa9fea9fe/", "cloud-metadata"),
    ("https://0251.0376.0251.0376/", "cloud-metadata"),
    ("https://169.254.43518/", "cloud-metadata"),
    ("https://[::ffff:169.254.169.254]/", "cloud-metadata"),
    ("https://[::ffff:a9fe:a9fe]/", "cloud-metadata"),
    ("https://[64:ff9b::a9fe:a9fe]/", "cloud-metadata"),
    ("https://[2002:a9fe:a9fe::1]/", "cloud-metadata"),
    ("https://[fd00:ec2::254]/latest/meta-data", "cloud-metadata"),
    ("https://169.254.170.2/v2/credentials", "cloud-metadata"),
    ("https://100.100.100.200/latest/meta-data", "cloud-metadata"),
    ("https://168.63.129.16/machine", "cloud-metadata"),
    // Link-local, private, CGNAT
    ("https://169.254.1.1/", "link-local"),
    ("https://[fe80::1]/", "link-local"),
    ("https://10.0.0.1/", "private"),
    ("https://012.0.0.1/", "private"),
    ("https://172.16.5.4/", "private"),
    ("https://172.31.255.255/", "private"),
    ("https://192.168.1.1/", "private"),
    ("https://0xc0a80101/", "private"),
    ("https://3232235777/", "private"),
    ("https://[::ffff:10.0.0.1]/", "private"),
    ("https://[64:ff9b:1::a00:1]/", "private"),
    ("https://100.64.0.1/", "shared-address-space"),
    ("https://100.127.255.254/", "shared-address-space"),
    // Other special-purpose space
    ("https://224.0.0.1/", "multicast"),
    ("https://[ff02::1]/", "multicast"),
    ("https://255.255.255.255/", "broadcast"),
    ("https://192.0.2.1/", "documentation"),
    ("https://198.51.100.7/", "documentation"),
    ("https://203.0.113.9/", "documentation"),
    ("https://[2001:db8::1]/", "documentation"),
    ("https://198.18.0.1/", "benchmarking"),
    ("https://192.0.0.8/", "protocol-assignments"),
    ("https://[2001::1]/", "protocol-assignments"),
    ("https://240.0.0.1/", "reserved"),
    ("https://[::8.8.8.8]/", "reserved"),
    ("https://[fc00::1]/", "unique-local"),
    ("https://[fd12:3456:789a::1]/", "unique-local"),
    ("https://[fec0::1]/", "site-local"),
    // Internal names
    ("https://localhost/", "internal-host-name"),
    ("https://LOCALHOST./", "internal-host-name"),
    ("https://localhost:8443/hook", "internal-host-name"),
    ("https://api.localhost/", "internal-host-name"),
    (
        "https://metadata.google.internal/computeMetadata/v1/",
        "internal-host-name",
    ),
    ("https://instance-data.ec2.internal/", "internal-host-name"),
    ("https://printer.local/", "internal-host-name"),
    ("https://metadata/", "internal-host-name"),
    ("https://kubernetes.default.svc/", "internal-host-name"),
    ("https://router.home.arpa/", "internal-host-name"),
    (
        "https://\u{24db}\u{24de}\u{24d2}\u{24d0}\u{24db}\u{24d7}\u{24de}\u{24e2}\u{24e3}/",
        "internal-host-name",
    ),
    ("https://localhost%2e/", "internal-host-name"),
    ("https://LocalHost.LocalDomain/", "internal-host-name"),
];

#[test]
fn ssrf_table_is_refused_in_production() {
    assert!(REFUSED_IN_PRODUCTION.len() >= 40);
    let policy = EndpointPolicy::production();
    let mut failures = Vec::new();
    for (url, expected) in REFUSED_IN_PRODUCTION {
        match policy.check_url(url) {
            Err(err) if err.code() == *expected => {}
            Err(err) => failures.push(format!(
                "{url:?}: expected {expected}, refused as {} ({err})",
                err.code()
            )),
            Ok(endpoint) => failures.push(format!(
                "{url:?}: expected {expected}, ACCEPTED as {}",
                endpoint.as_str()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} wrong:\n{}",
        failures.len(),
        REFUSED_IN_PRODUCTION.len(),
        failures.join("\n")
    );
}

#[test]
fn public_endpoints_are_accepted_in_production() {
    let policy = EndpointPolicy::production();
    for url in [
        "https://example.com/hook",
        "https://hooks.example.com:8443/fhir/notify?tenant=a",
        "https://93.184.216.34/",
        "https://[2606:4700:4700::1111]/hook",
        "https://localhost.example.com/",
        "https://EXAMPLE.com./x",
    ] {
        match policy.check_url(url) {
            Ok(endpoint) => assert!(endpoint.is_https(), "{url}"),
            Err(err) => panic!("{url}: {err}"),
        }
    }
}

#[test]
fn canonical_url_is_what_gets_called() {
    let policy = EndpointPolicy::development();
    let endpoint = match policy.check_url("http://0x7f.1:9000/hook") {
        Ok(e) => e,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(endpoint.as_str(), "http://127.0.0.1:9000/hook");
    assert_eq!(
        endpoint.host(),
        &EndpointHost::Ip(IpAddr::from([127, 0, 0, 1]))
    );
}

#[test]
fn allow_list_lets_internal_endpoints_through() {
    let net: IpNet = match "10.1.2.0/24".parse() {
        Ok(n) => n,
        Err(e) => panic!("{e}"),
    };
    let policy = EndpointPolicy::production().allow_network(net);
    assert!(policy.check_url("https://10.1.2.3/hook").is_ok());
    assert!(policy.check_url("https://[::ffff:10.1.2.3]/hook").is_ok());
    assert_eq!(
        policy
            .check_url("https://10.1.3.1/hook")
            .map_err(|e| e.code()),
        Err("private")
    );
    // The allow-list widens addresses, not schemes.
    assert_eq!(
        policy
            .check_url("http://10.1.2.3/hook")
            .map_err(|e| e.code()),
        Err("https-required")
    );

    let from_config = EndpointPolicy::production()
        .with_allow_list(["10.1.2.0/24", "fd00::7", "hooks.internal"])
        .map_err(|e| e.to_string());
    let policy = match from_config {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    assert!(policy.check_url("https://10.1.2.200/").is_ok());
    assert!(policy.check_url("https://[fd00::7]/").is_ok());
    assert!(policy.check_url("https://hooks.internal/notify").is_ok());
    assert!(policy.check_url("https://other.internal/notify").is_err());
    assert!(EndpointPolicy::production()
        .with_allow_list(["not a host!"])
        .is_err());
}

#[test]
fn development_policy_accepts_local_receivers() {
    let policy = EndpointPolicy::development();
    for url in [
        "http://127.0.0.1:9000/hook",
        "http://localhost:9000/hook",
        "http://[::1]:9000/hook",
        "http://192.168.1.20/hook",
        "https://example.com/hook",
    ] {
        if let Err(err) = policy.check_url(url) {
            panic!("{url}: {err}");
        }
    }
    // Still never the metadata service, multicast or broadcast.
    for (url, code) in [
        ("http://169.254.169.254/latest/meta-data", "cloud-metadata"),
        ("http://[fd00:ec2::254]/", "cloud-metadata"),
        ("http://224.0.0.1/", "multicast"),
        ("http://255.255.255.255/", "broadcast"),
        ("file:///etc/passwd", "unsupported-scheme"),
    ] {
        assert_eq!(
            policy.check_url(url).map_err(|e| e.code()),
            Err(code),
            "{url}"
        );
    }
}

#[test]
fn check_addr_covers_every_required_range() {
    let policy = EndpointPolicy::production();
    for ip in [
        "127.0.0.1",
        "10.1.1.1",
        "172.20.0.1",
        "192.168.0.1",
        "169.254.169.254",
        "fe80::1",
        "100.64.0.1",
        "100.100.100.200",
        "224.0.0.251",
        "255.255.255.255",
        "0.0.0.0",
        "::",
        "192.0.2.1",
        "198.51.100.1",
        "203.0.113.1",
        "2001:db8::1",
        "198.18.0.1",
        "198.19.255.1",
        "0.0.0.1",
        "240.0.0.1",
        "192.0.0.1",
        "fc00::1",
        "fd00:ec2::254",
        "fec0::1",
        "::ffff:127.0.0.1",
        "::127.0.0.1",
        "64:ff9b::7f00:1",
        "2002:c0a8:101::1",
    ] {
        let addr: IpAddr = match ip.parse() {
            Ok(a) => a,
            Err(e) => panic!("{ip}: {e}"),
        };
        assert!(policy.check_addr(addr).is_err(), "{ip}");
    }
    assert!(policy.check_addr(IpAddr::from([8, 8, 8, 8])).is_ok());
}

/// A real reqwest client wired as the delivery crate should wire it: the
/// resolver refuses `localhost` in production and lets it through in
/// development.
#[tokio::test]
async fn resolver_guards_a_real_reqwest_client() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    let port = match listener.local_addr() {
        Ok(a) => a.port(),
        Err(e) => panic!("{e}"),
    };
    let server = tokio::spawn(async move {
        // Answer exactly one request; a second would mean the refusal failed.
        if let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                .await;
        }
    });

    let client_for = |policy: EndpointPolicy| {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(policy.into_resolver()))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
    };
    let url = format!("http://localhost:{port}/hook");

    let production = match client_for(EndpointPolicy::production().with_http_allowed(true)) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let refused = match production.post(&url).send().await {
        Err(error) => error,
        Ok(_) => panic!("production client reached localhost"),
    };
    // Delivery can tell a policy refusal (permanent) from a network error
    // (retryable) by walking the source chain.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&refused);
    let mut policy_refusal = None;
    while let Some(error) = source {
        if let Some(ResolveError::Refused(reason)) = error.downcast_ref::<ResolveError>() {
            policy_refusal = Some(reason.clone());
        }
        source = error.source();
    }
    assert!(
        matches!(policy_refusal, Some(EndpointError::InternalHostName(_))),
        "{refused:?}"
    );

    let development = match client_for(EndpointPolicy::development()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    match development.post(&url).send().await {
        Ok(response) => assert_eq!(response.status(), 204),
        Err(e) => panic!("development client could not reach localhost: {e}"),
    }
    let _ = server.await;
}

/// Small deterministic generator so the loop needs no extra crates.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

fn generated_url(rng: &mut XorShift) -> String {
    const SCHEMES: &[&str] = &[
        "https://",
        "http://",
        "HTTPS://",
        "ftp://",
        "https:",
        "https:/",
        "",
        "https:\\\\",
    ];
    const USERINFO: &[&str] = &["", "", "", "user@", "u:p@", "@", "a%40b@"];
    const PIECES: &[&str] = &[
        "127",
        "0",
        "1",
        "255",
        "256",
        "0x7f",
        "0X",
        "0177",
        "169",
        "254",
        "10",
        "192",
        "168",
        "example",
        "com",
        "localhost",
        "internal",
        "%31",
        "%2e",
        "\u{ff11}",
        "xn--",
        "-",
        "",
        "4294967295",
        "4294967296",
        "99999999999999999999",
        "ffff",
        "::",
        "[",
        "]",
        "%25",
        "\u{3002}",
    ];
    const SEPARATORS: &[&str] = &[".", ".", ".", ":", "", "..", "%2E"];
    const PORTS: &[&str] = &[
        "", "", ":443", ":0", ":65535", ":65536", ":-1", ":", ":0x50",
    ];
    const TAILS: &[&str] = &["", "/", "/hook", "?a=b", "#x", "/\\@evil", "/%2e%2e/"];

    let mut url = String::new();
    url.push_str(rng.pick(SCHEMES));
    url.push_str(rng.pick(USERINFO));
    if rng.next() % 4 == 0 {
        url.push('[');
        for _ in 0..(rng.next() % 9) {
            url.push_str(rng.pick(&[
                "0",
                "1",
                "ffff",
                "7f00",
                "64",
                "ff9b",
                "2002",
                "fe80",
                "fd00",
                "a9fe",
                "127.0.0.1",
            ]));
            url.push_str(rng.pick(&[":", "::", ":", "%25eth0:"]));
        }
        url.push(']');
    } else {
        for index in 0..(1 + rng.next() % 6) {
            if index > 0 {
                url.push_str(rng.pick(SEPARATORS));
            }
            url.push_str(rng.pick(PIECES));
        }
    }
    url.push_str(rng.pick(PORTS));
    url.push_str(rng.pick(TAILS));
    url
}

#[test]
fn generated_urls_never_panic_and_accepted_ones_are_safe() {
    let production = EndpointPolicy::production();
    let development = EndpointPolicy::development();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut accepted = 0;
    for _ in 0..5000 {
        let url = generated_url(&mut rng);
        let _ = development.check_url(&url);
        if let Ok(endpoint) = production.check_url(&url) {
            accepted += 1;
            assert!(endpoint.is_https(), "{url}");
            if let EndpointHost::Ip(ip) = endpoint.host() {
                assert_eq!(classify(*ip), None, "{url} accepted as {ip}");
            }
            // Checking the canonical form again gives the same answer.
            match production.check_url(endpoint.as_str()) {
                Ok(again) => assert_eq!(again.url(), endpoint.url(), "{url}"),
                Err(err) => panic!(
                    "{url} accepted as {} but that is refused: {err}",
                    endpoint.as_str()
                ),
            }
        }
    }
    // Random bytes, including invalid UTF-8 replaced lossily.
    for _ in 0..2000 {
        let len = (rng.next() % 64) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| (rng.next() & 0xff) as u8).collect();
        let text = String::from_utf8_lossy(&bytes);
        let _ = production.check_url(&format!("https://{text}"));
        let _ = production.check_url(&text);
        let _ = production.check_host_name(&text);
    }
    assert!(accepted > 0, "generator never produced an acceptable URL");
}

#[test]
fn errors_are_displayable_for_operation_outcomes() {
    let policy = EndpointPolicy::production();
    let err = match policy.check_url("https://169.254.169.254/") {
        Err(e) => e,
        Ok(_) => panic!("metadata accepted"),
    };
    assert_eq!(
        err.to_string(),
        "endpoint address is not allowed (cloud-metadata)"
    );
    assert!(matches!(err, EndpointError::ForbiddenAddress { .. }));
}
