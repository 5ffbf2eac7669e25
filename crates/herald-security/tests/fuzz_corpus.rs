//! The cargo-fuzz inputs of this crate's parsers (`fuzz/corpus/<target>` seeds and any
//! `fuzz/artifacts/<target>` regression inputs), run as an ordinary test so CI catches
//! a regression without nightly. Each body mirrors its fuzz target.

use std::path::{Path, PathBuf};

use herald_security::auth::{
    bearer_from_header, Context, KeySet, Permission, Scopes, TokenValidator, TokenValidatorConfig,
};
use herald_security::endpoint::EndpointPolicy;

const RSA_PUBLIC: &[u8] = include_bytes!("fixtures/rsa_test_key.pub.pem");
const HMAC_SECRET: &[u8] = b"fuzzing-secret-fuzzing-secret-32b";

/// Every UTF-8 input of `target`: seeds (which must exist) and regression artifacts.
fn inputs(target: &str) -> Vec<(PathBuf, String)> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if let Some(text) = std::fs::read(&path)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
            {
                files.push((path, text));
            }
        }
    }
    assert!(
        files.len() >= 3,
        "expected seed inputs under fuzz/corpus/{target}, found {}",
        files.len()
    );
    files
}

#[test]
fn bearer_token_corpus() {
    let config = TokenValidatorConfig::new("https://issuer.example.org", "herald");
    let validators = match (
        KeySet::from_hmac_secret(HMAC_SECRET),
        KeySet::from_public_key_pem(RSA_PUBLIC),
    ) {
        (Ok(hs256), Ok(rs256)) => [
            TokenValidator::new(config.clone().allow_hs256(), hs256),
            TokenValidator::new(config, rs256),
        ],
        _ => panic!("fixed test keys must load"),
    };
    for (path, text) in inputs("bearer_token") {
        for validator in &validators {
            assert!(validator.validate(&text).is_err(), "{path:?} was accepted");
            if let Ok(token) = bearer_from_header(&text) {
                assert!(validator.validate(token).is_err(), "{path:?} was accepted");
            }
        }
        let scopes = Scopes::parse(&text);
        for context in [Context::Patient, Context::User, Context::System] {
            for permission in [Permission::Read, Permission::Search, Permission::Create] {
                let _ = scopes.allows(context, "Observation", permission);
                let _ = scopes.grant(context, "Subscription", permission);
            }
        }
        if let Ok(keys) = KeySet::from_jwks_json(&text) {
            let _ = keys.contains_kid("k1");
        }
    }
}

#[test]
fn endpoint_url_corpus() {
    for (_, text) in inputs("endpoint_url") {
        for policy in [EndpointPolicy::production(), EndpointPolicy::development()] {
            if let Ok(endpoint) = policy.check_url(&text) {
                let _ = (endpoint.as_str(), endpoint.host(), endpoint.is_https());
            }
            let _ = policy.check_host_name(&text);
        }
        if let Ok(policy) = EndpointPolicy::production().with_allow_list(text.split(',')) {
            let _ = policy.check_url("https://hooks.example.org/h");
            let _ = policy.check_host_name(&text);
        }
        if let Ok(ip) = text.parse::<std::net::IpAddr>() {
            let _ = EndpointPolicy::production().check_addr(ip);
        }
    }
}
