//! herald-security's endpoint (SSRF) policy on arbitrary endpoint strings: URL checks
//! under the production and development policies, host-name checks, and allow-list
//! parsing.
#![no_main]

use herald_security::endpoint::EndpointPolicy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for policy in [EndpointPolicy::production(), EndpointPolicy::development()] {
        if let Ok(endpoint) = policy.check_url(text) {
            let _ = (endpoint.as_str(), endpoint.host(), endpoint.is_https());
        }
        let _ = policy.check_host_name(text);
    }
    if let Ok(policy) = EndpointPolicy::production().with_allow_list(text.split(',')) {
        let _ = policy.check_url("https://hooks.example.org/h");
        let _ = policy.check_host_name(text);
    }
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        let _ = EndpointPolicy::production().check_addr(ip);
    }
});
