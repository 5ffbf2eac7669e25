//! Token validation against keys generated for the tests (fixtures made with
//! `openssl genrsa 2048` and `openssl ecparam -name prime256v1`; test-only,
//! never used anywhere else).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use herald_security::auth::{
    bearer_from_header, Access, AuthError, JwksFetcher, KeySet, Permission, TokenValidator,
    TokenValidatorConfig,
};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const ISSUER: &str = "https://auth.example.org/realms/herald";
const AUDIENCE: &str = "https://herald.example.org/fhir";
const RSA_PRIVATE: &[u8] = include_bytes!("fixtures/rsa_test_key.pem");
const RSA_OTHER_PRIVATE: &[u8] = include_bytes!("fixtures/rsa_other_test_key.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("fixtures/rsa_test_key.pub.pem");
const EC_PRIVATE: &[u8] = include_bytes!("fixtures/ec_test_key.pem");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn ok<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{error}"),
    }
}

fn rsa_key() -> EncodingKey {
    ok(EncodingKey::from_rsa_pem(RSA_PRIVATE))
}

fn ec_key() -> EncodingKey {
    ok(EncodingKey::from_ec_pem(EC_PRIVATE))
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
    let mut jwk = ok(Jwk::from_encoding_key(key, alg));
    jwk.common.key_id = Some(kid.to_owned());
    jwk
}

/// JWKS with the RSA key as `rsa-1` and the EC key as `ec-1`.
fn jwks_json() -> String {
    let set = JwkSet {
        keys: vec![
            jwk(&rsa_key(), Algorithm::RS256, "rsa-1"),
            jwk(&ec_key(), Algorithm::ES256, "ec-1"),
        ],
    };
    ok(serde_json::to_string(&set))
}

fn validator() -> TokenValidator {
    ok(TokenValidator::from_jwks_json(
        TokenValidatorConfig::new(ISSUER, AUDIENCE),
        &jwks_json(),
    ))
}

fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-42",
        "client_id": "telehealth-dashboard",
        "exp": now() + 300,
        "iat": now(),
        "tenant": "clinic-a",
        "patient": "Patient/123",
        "scope": "openid patient/Observation.rs patient/Subscription.cruds",
    })
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    ok(jsonwebtoken::encode(&header, claims, key))
}

fn rs256(claims: &Value) -> String {
    sign(Algorithm::RS256, Some("rsa-1"), claims, &rsa_key())
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    if let Some(map) = claims.as_object_mut() {
        map.insert(name.to_owned(), value);
    }
    claims
}

fn without(mut claims: Value, name: &str) -> Value {
    if let Some(map) = claims.as_object_mut() {
        map.remove(name);
    }
    claims
}

fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A token assembled by hand, for headers jsonwebtoken would not produce.
fn raw_token(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        signature
    )
}

#[test]
fn valid_rs256_token_yields_principal() {
    let principal = ok(validator().validate(&rs256(&claims())));
    assert_eq!(principal.subject, "user-42");
    assert_eq!(principal.client_id, "telehealth-dashboard");
    assert_eq!(principal.tenant.as_deref(), Some("clinic-a"));
    assert_eq!(principal.patient.as_deref(), Some("Patient/123"));
    assert!(principal.expires_at > now());
    assert_eq!(
        principal.access("Observation", Permission::Read),
        Ok(Access::Patient("Patient/123".into()))
    );
    assert_eq!(
        principal.access("Subscription", Permission::Create),
        Ok(Access::Patient("Patient/123".into()))
    );
    let denied = principal.access("Encounter", Permission::Read);
    let Err(denied) = denied else {
        panic!("Encounter granted")
    };
    assert!(denied.www_authenticate().contains("insufficient_scope"));
}

#[test]
fn valid_es256_token() {
    let token = sign(Algorithm::ES256, Some("ec-1"), &claims(), &ec_key());
    assert!(validator().validate(&token).is_ok());
}

#[test]
fn principal_defaults_and_alternatives() {
    let plain = without(without(without(claims(), "client_id"), "tenant"), "patient");
    let plain = with(plain, "azp", json!("smart-app"));
    let plain = with(
        without(plain, "scope"),
        "scp",
        json!(["system/Subscription.cruds"]),
    );
    let principal = ok(validator().validate(&rs256(&plain)));
    assert_eq!(principal.client_id, "smart-app");
    assert_eq!(principal.tenant, None);
    assert_eq!(principal.patient, None);
    assert_eq!(
        principal.access("Subscription", Permission::Delete),
        Ok(Access::System)
    );

    // A patient scope without a patient claim grants nothing.
    let no_patient = without(claims(), "patient");
    let principal = ok(validator().validate(&rs256(&no_patient)));
    assert!(principal.access("Observation", Permission::Read).is_err());

    // No client_id and no azp: the subject is the client.
    let bare = without(claims(), "client_id");
    assert_eq!(ok(validator().validate(&rs256(&bare))).client_id, "user-42");
}

#[test]
fn configurable_tenant_claim() {
    let mut config = TokenValidatorConfig::new(ISSUER, AUDIENCE);
    config.tenant_claim = "https://herald.example.org/tenant".into();
    let validator = ok(TokenValidator::from_jwks_json(config, &jwks_json()));
    let token = rs256(&with(
        claims(),
        "https://herald.example.org/tenant",
        json!("clinic-b"),
    ));
    assert_eq!(
        ok(validator.validate(&token)).tenant.as_deref(),
        Some("clinic-b")
    );
}

#[test]
fn audience_array_is_accepted() {
    let token = rs256(&with(claims(), "aud", json!(["other", AUDIENCE])));
    assert!(validator().validate(&token).is_ok());
}

#[test]
fn time_claims() {
    let v = validator();
    let expired = rs256(&with(claims(), "exp", json!(now() - 3600)));
    assert_eq!(v.validate(&expired), Err(AuthError::Expired));
    let within_leeway = rs256(&with(claims(), "exp", json!(now() - 5)));
    assert!(v.validate(&within_leeway).is_ok());
    let future = rs256(&with(claims(), "nbf", json!(now() + 3600)));
    assert_eq!(v.validate(&future), Err(AuthError::NotYetValid));
    let started = rs256(&with(claims(), "nbf", json!(now() - 10)));
    assert!(v.validate(&started).is_ok());
    // Type confusion: a string exp/nbf must not skip the check.
    let string_exp = rs256(&with(claims(), "exp", json!("9999999999")));
    assert!(
        matches!(v.validate(&string_exp), Err(AuthError::MissingClaim(c) | AuthError::InvalidClaim(c)) if c == "exp")
    );
    let string_nbf = rs256(&with(claims(), "nbf", json!("9999999999")));
    assert_eq!(
        v.validate(&string_nbf),
        Err(AuthError::InvalidClaim("nbf".into()))
    );
    let negative_exp = rs256(&with(claims(), "exp", json!(-1)));
    assert!(v.validate(&negative_exp).is_err());
}

#[test]
fn issuer_audience_and_required_claims() {
    let v = validator();
    let wrong_issuer = rs256(&with(claims(), "iss", json!("https://evil.example.org")));
    assert_eq!(v.validate(&wrong_issuer), Err(AuthError::WrongIssuer));
    let wrong_audience = rs256(&with(claims(), "aud", json!("https://other.example.org")));
    assert_eq!(v.validate(&wrong_audience), Err(AuthError::WrongAudience));
    for claim in ["exp", "iss", "aud", "sub"] {
        let token = rs256(&without(claims(), claim));
        assert_eq!(
            v.validate(&token),
            Err(AuthError::MissingClaim(claim.into())),
            "{claim}"
        );
    }
    for (claim, value) in [
        ("tenant", json!(7)),
        ("tenant", json!("")),
        ("tenant", json!(["a", "b"])),
        ("patient", json!({"id": "123"})),
        ("sub", json!("")),
        ("scope", json!(["patient/*.r"])),
        ("client_id", json!(false)),
    ] {
        let token = rs256(&with(claims(), claim, value));
        assert_eq!(
            v.validate(&token),
            Err(AuthError::InvalidClaim(claim.into())),
            "{claim}"
        );
    }
}

#[test]
fn wrong_key_and_unknown_kid() {
    let v = validator();
    let other = ok(EncodingKey::from_rsa_pem(RSA_OTHER_PRIVATE));
    let forged = sign(Algorithm::RS256, Some("rsa-1"), &claims(), &other);
    assert_eq!(v.validate(&forged), Err(AuthError::InvalidSignature));
    let unknown = sign(Algorithm::RS256, Some("rsa-9"), &claims(), &rsa_key());
    assert_eq!(v.validate(&unknown), Err(AuthError::UnknownKey));
    // No kid: every compatible key is tried, none matches.
    let no_kid = sign(Algorithm::RS256, None, &claims(), &other);
    assert_eq!(v.validate(&no_kid), Err(AuthError::InvalidSignature));
    // No kid, right key: found by trying.
    assert!(v
        .validate(&sign(Algorithm::RS256, None, &claims(), &rsa_key()))
        .is_ok());
    // ES256 header pointed at the RSA key.
    let mismatched = sign(Algorithm::ES256, Some("rsa-1"), &claims(), &ec_key());
    assert_eq!(v.validate(&mismatched), Err(AuthError::AlgorithmNotAllowed));
}

#[test]
fn algorithm_confusion_is_refused() {
    // HS256 "signed" with the RSA public key as the HMAC secret.
    let secret = EncodingKey::from_secret(RSA_PUBLIC);
    let confused = sign(Algorithm::HS256, Some("rsa-1"), &claims(), &secret);
    assert_eq!(
        validator().validate(&confused),
        Err(AuthError::AlgorithmNotAllowed)
    );
    // Even with HS256 enabled, an RSA key never verifies HMAC.
    let permissive = ok(TokenValidator::from_jwks_json(
        TokenValidatorConfig::new(ISSUER, AUDIENCE).allow_hs256(),
        &jwks_json(),
    ));
    assert_eq!(
        permissive.validate(&confused),
        Err(AuthError::AlgorithmNotAllowed)
    );
    let pem_validator = TokenValidator::new(
        TokenValidatorConfig::new(ISSUER, AUDIENCE).allow_hs256(),
        ok(KeySet::from_public_key_pem(RSA_PUBLIC)),
    );
    let confused_no_kid = sign(Algorithm::HS256, None, &claims(), &secret);
    assert_eq!(
        pem_validator.validate(&confused_no_kid),
        Err(AuthError::AlgorithmNotAllowed)
    );

    // alg "none", with and without a signature part; lower/upper case variants.
    for alg in ["none", "None", "NONE"] {
        for signature in ["", "c2ln"] {
            let token = raw_token(
                &json!({"alg": alg, "typ": "JWT", "kid": "rsa-1"}),
                &claims(),
                signature,
            );
            assert!(validator().validate(&token).is_err(), "{alg} {signature:?}");
        }
    }
    // Unknown critical header extension.
    let signed = rs256(&claims());
    let parts: Vec<&str> = signed.split('.').collect();
    let crit_header = b64url(
        json!({"alg": "RS256", "kid": "rsa-1", "crit": ["exp"], "exp": 1})
            .to_string()
            .as_bytes(),
    );
    let token = format!("{crit_header}.{}.{}", parts[1], parts[2]);
    assert!(validator().validate(&token).is_err());
}

#[test]
fn hs256_only_when_configured() {
    let secret = b"0123456789abcdef0123456789abcdef-herald-test";
    let token = sign(
        Algorithm::HS256,
        None,
        &claims(),
        &EncodingKey::from_secret(secret),
    );
    let keys = ok(KeySet::from_hmac_secret(secret));
    let default = TokenValidator::new(TokenValidatorConfig::new(ISSUER, AUDIENCE), keys.clone());
    assert_eq!(
        default.validate(&token),
        Err(AuthError::AlgorithmNotAllowed)
    );
    let explicit = TokenValidator::new(
        TokenValidatorConfig::new(ISSUER, AUDIENCE).allow_hs256(),
        keys,
    );
    assert!(explicit.validate(&token).is_ok());
    assert!(KeySet::from_hmac_secret(b"short").is_err());
}

#[test]
fn key_sources() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let from_pem = ok(TokenValidator::from_key_file(
        TokenValidatorConfig::new(ISSUER, AUDIENCE),
        &fixtures.join("rsa_test_key.pub.pem"),
    ));
    assert_eq!(
        from_pem.validate(&rs256(&claims())).map(|p| p.subject),
        Ok("user-42".to_owned())
    );
    let from_ec_pem = ok(TokenValidator::from_key_file(
        TokenValidatorConfig::new(ISSUER, AUDIENCE),
        &fixtures.join("ec_test_key.pub.pem"),
    ));
    assert!(from_ec_pem
        .validate(&sign(Algorithm::ES256, None, &claims(), &ec_key()))
        .is_ok());
    assert!(
        KeySet::from_key_file(&fixtures.join("rsa_test_key.pem")).is_err(),
        "private key accepted"
    );
    assert!(KeySet::from_key_file(&fixtures.join("missing.pem")).is_err());
    assert!(KeySet::from_public_key_pem(
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    )
    .is_err());

    // Unusable JWKS entries are skipped; a set with none usable is refused.
    let mut mixed: Value = ok(serde_json::from_str(&jwks_json()));
    if let Some(keys) = mixed.get_mut("keys").and_then(Value::as_array_mut) {
        keys.push(json!({"kty": "RSA", "use": "enc", "kid": "enc-1", "n": "AQAB", "e": "AQAB"}));
        keys.push(json!({"kty": "XYZ", "kid": "odd"}));
        keys.push(json!({"kty": "EC", "crv": "P-256", "alg": "RS256", "kid": "liar", "x": "AA", "y": "AA"}));
    }
    let keys = ok(KeySet::from_jwks_json(&mixed.to_string()));
    assert_eq!(keys.len(), 2);
    assert!(keys.contains_kid("rsa-1") && !keys.contains_kid("enc-1"));
    for bad in [
        "",
        "{}",
        "[]",
        "{\"keys\": {}}",
        "{\"keys\": []}",
        "{\"keys\": [1, \"x\", null]}",
    ] {
        assert!(KeySet::from_jwks_json(bad).is_err(), "{bad}");
    }
}

#[test]
fn header_then_token() {
    let token = rs256(&claims());
    let header = format!("Bearer {token}");
    let bearer = ok(bearer_from_header(&header));
    assert!(validator().validate(bearer).is_ok());
    assert_eq!(AuthError::MissingToken.www_authenticate(), "Bearer");
    assert!(AuthError::Expired
        .www_authenticate()
        .starts_with("Bearer error=\"invalid_token\""));
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
}

#[test]
fn garbage_tokens_never_panic_and_never_pass() {
    let v = validator();
    let good = rs256(&claims());
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    const CHARSET: &[u8] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ~\"{}";
    let mut checked = 0;
    for round in 0..3000 {
        let candidate = match round % 4 {
            // Random text.
            0 => {
                let len = (rng.next() % 200) as usize;
                (0..len)
                    .map(|_| CHARSET[(rng.next() % CHARSET.len() as u64) as usize] as char)
                    .collect::<String>()
            }
            // Truncated valid token.
            1 => good[..(rng.next() % good.len() as u64) as usize].to_owned(),
            // One byte of a valid token replaced.
            2 => {
                let mut bytes = good.clone().into_bytes();
                let at = (rng.next() % bytes.len() as u64) as usize;
                let replacement = CHARSET[(rng.next() % 64) as usize];
                if bytes[at] == replacement || bytes[at] == b'.' {
                    continue;
                }
                bytes[at] = replacement;
                String::from_utf8_lossy(&bytes).into_owned()
            }
            // Hand-built tokens with random JSON-ish headers and claims.
            _ => {
                let alg =
                    ["RS256", "ES256", "HS256", "none", "", "PS256"][(rng.next() % 6) as usize];
                let header = json!({"alg": alg, "kid": "rsa-1"});
                let claim = json!({"iss": ISSUER, "exp": rng.next(), "sub": rng.next() % 3, "aud": AUDIENCE});
                raw_token(&header, &claim, &b64url(&rng.next().to_le_bytes()))
            }
        };
        let _ = bearer_from_header(&candidate);
        let _ = bearer_from_header(&format!("Bearer {candidate}"));
        if candidate == good {
            continue;
        }
        // Flipping base64 padding bits can leave the decoded bytes unchanged;
        // such a token is the same token, so only "different bytes" must fail.
        if let Ok(principal) = v.validate(&candidate) {
            let same = principal == ok(v.validate(&good));
            assert!(same, "forged token accepted: {candidate}");
        }
        checked += 1;
    }
    assert!(checked > 2000);
}

#[tokio::test]
async fn jwks_fetched_over_http_and_refreshed_on_unknown_kid() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = ok(tokio::net::TcpListener::bind("127.0.0.1:0").await);
    let port = ok(listener.local_addr()).port();
    let body = jwks_json();
    let served = Arc::new(AtomicUsize::new(0));
    let served_by_server = Arc::clone(&served);
    let server = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            served_by_server.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 2048];
            let _ = socket.read(&mut buf).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });

    let http = ok(reqwest::Client::builder().no_proxy().build());
    let fetcher = ok(JwksFetcher::new(
        &format!("http://127.0.0.1:{port}/jwks"),
        http,
    ));
    let validator = TokenValidator::new(
        TokenValidatorConfig::new(ISSUER, AUDIENCE),
        KeySet::default(),
    );

    // No keys yet: the first token triggers the fetch.
    let principal = ok(fetcher.validate(&validator, &rs256(&claims())).await);
    assert_eq!(principal.subject, "user-42");
    assert_eq!(served.load(Ordering::SeqCst), 1);

    // A token with an unknown kid within the refresh interval: no second fetch.
    let unknown = sign(Algorithm::RS256, Some("rotated"), &claims(), &rsa_key());
    assert_eq!(
        fetcher.validate(&validator, &unknown).await,
        Err(AuthError::UnknownKey)
    );
    assert_eq!(served.load(Ordering::SeqCst), 1);

    // Garbage never triggers a fetch.
    assert_eq!(
        fetcher.validate(&validator, "x.y").await,
        Err(AuthError::MalformedToken)
    );
    assert_eq!(served.load(Ordering::SeqCst), 1);

    // Explicit refresh works and keeps keys.
    ok(fetcher.refresh(&validator).await);
    assert_eq!(served.load(Ordering::SeqCst), 2);
    assert_eq!(validator.keys().len(), 2);
    server.abort();
    let _ = server.await; // the listener is closed once the task is gone

    // Unreachable JWKS with no keys loaded: keys unavailable, not a panic.
    let dead_http = ok(reqwest::Client::builder().no_proxy().build());
    let dead = ok(JwksFetcher::new(
        &format!("http://127.0.0.1:{port}/jwks"),
        dead_http,
    ));
    let empty = TokenValidator::new(
        TokenValidatorConfig::new(ISSUER, AUDIENCE),
        KeySet::default(),
    );
    assert_eq!(
        dead.validate(&empty, &rs256(&claims())).await,
        Err(AuthError::KeysUnavailable)
    );
}
