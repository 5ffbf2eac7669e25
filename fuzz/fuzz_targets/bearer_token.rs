//! herald-security's token handling: the `Authorization` header, JWT validation
//! against fixed HS256 and RS256 key sets (an arbitrary token must be refused, never
//! accepted and never a panic), SMART scope parsing and JWKS parsing.
#![no_main]

use std::sync::OnceLock;

use herald_security::auth::{
    bearer_from_header, Context, KeySet, Permission, Scopes, TokenValidator, TokenValidatorConfig,
};
use libfuzzer_sys::fuzz_target;

const RSA_PUBLIC_KEY: &[u8] =
    include_bytes!("../../crates/herald-security/tests/fixtures/rsa_test_key.pub.pem");
const HMAC_SECRET: &[u8] = b"fuzzing-secret-fuzzing-secret-32b";

fn validators() -> &'static [TokenValidator; 2] {
    static VALIDATORS: OnceLock<[TokenValidator; 2]> = OnceLock::new();
    VALIDATORS.get_or_init(|| {
        let config = TokenValidatorConfig::new("https://issuer.example.org", "herald");
        let hs256 = KeySet::from_hmac_secret(HMAC_SECRET).expect("fixed HMAC secret");
        let rs256 = KeySet::from_public_key_pem(RSA_PUBLIC_KEY).expect("fixed RSA key");
        [
            TokenValidator::new(config.clone().allow_hs256(), hs256),
            TokenValidator::new(config, rs256),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for validator in validators() {
        assert!(validator.validate(text).is_err(), "accepted {text:?}");
        if let Ok(token) = bearer_from_header(text) {
            assert!(validator.validate(token).is_err(), "accepted {token:?}");
        }
    }
    let scopes = Scopes::parse(text);
    for context in [Context::Patient, Context::User, Context::System] {
        for permission in [Permission::Read, Permission::Search, Permission::Create] {
            let _ = scopes.allows(context, "Observation", permission);
            let _ = scopes.grant(context, "Subscription", permission);
        }
    }
    let _ = scopes.rejected();
    if let Ok(keys) = KeySet::from_jwks_json(text) {
        let _ = keys.contains_kid("k1");
    }
});
