//! JWT bearer validation against configured keys.
//!
//! Keys come only from configuration (a JWKS document, fetched or on disk, a
//! PEM public key, or an explicitly configured HMAC secret); key hints in a
//! token's header (`jku`, `x5u`, `jwk`, `x5c`) are never followed. The
//! algorithm must be both configured and compatible with the chosen key, so
//! an HS256 token "signed" with an RSA public key, or `alg: none`, fails.

use std::path::Path;
use std::sync::{Arc, RwLock};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::{AuthError, Principal, Scopes, MAX_BEARER_LEN};

/// Most keys tried for a token without `kid`.
const MAX_CANDIDATE_KEYS: usize = 8;
/// Longest tenant / patient / subject / client id value accepted.
const MAX_IDENTIFIER_LEN: usize = 256;
/// Shortest HMAC secret accepted (RFC 7518 §3.2: at least the hash size).
const MIN_HMAC_SECRET_LEN: usize = 32;

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenValidatorConfig {
    /// Exact `iss` required.
    pub issuer: String,
    /// At least one of these must appear in `aud`.
    pub audiences: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
    /// Algorithms accepted at all. Defaults to RS256 and ES256; HS256 only
    /// via [`TokenValidatorConfig::allow_hs256`].
    pub algorithms: Vec<Algorithm>,
    /// Claim naming the tenant (default `tenant`).
    pub tenant_claim: String,
    /// Claim naming the patient (default `patient`).
    pub patient_claim: String,
}

impl TokenValidatorConfig {
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        TokenValidatorConfig {
            issuer: issuer.into(),
            audiences: vec![audience.into()],
            leeway_seconds: 30,
            algorithms: vec![Algorithm::RS256, Algorithm::ES256],
            tenant_claim: "tenant".to_owned(),
            patient_claim: "patient".to_owned(),
        }
    }

    /// Also accept HS256 (shared-secret) tokens. Only meaningful with a key
    /// set built by [`KeySet::from_hmac_secret`] or a JWKS `oct` key.
    pub fn allow_hs256(mut self) -> Self {
        if !self.algorithms.contains(&Algorithm::HS256) {
            self.algorithms.push(Algorithm::HS256);
        }
        self
    }
}

/// Why a key source could not be used. Raised at start-up or on refresh.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("JWKS document is not valid JSON with a `keys` array")]
    InvalidJwks,
    #[error("no usable signing key (skipped: {0})")]
    NoUsableKey(String),
    #[error("PEM key could not be read: {0}")]
    InvalidPem(String),
    #[error("refusing a private key where a public key is expected")]
    PrivateKey,
    #[error("HMAC secret must be at least {MIN_HMAC_SECRET_LEN} bytes")]
    WeakSecret,
    #[error("key file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("fetching JWKS: {0}")]
    Fetch(String),
}

#[derive(Clone)]
struct VerificationKey {
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

/// Verification keys, by `kid`.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<VerificationKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key material stays out of logs; kids and algorithms are enough.
        f.debug_list()
            .entries(self.keys.iter().map(|k| (&k.kid, &k.algorithms)))
            .finish()
    }
}

const RSA_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

impl KeySet {
    /// Keys from a JWKS document. Keys that are not for signatures, of
    /// unsupported types, or malformed are skipped; at least one must remain.
    pub fn from_jwks_json(json: &str) -> Result<KeySet, KeyError> {
        let document: Value = serde_json::from_str(json).map_err(|_| KeyError::InvalidJwks)?;
        let Some(entries) = document.get("keys").and_then(Value::as_array) else {
            return Err(KeyError::InvalidJwks);
        };
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            match key_from_jwk_value(entry) {
                Ok(key) => keys.push(key),
                Err(reason) => skipped.push(format!("#{index}: {reason}")),
            }
        }
        if keys.is_empty() {
            return Err(KeyError::NoUsableKey(if skipped.is_empty() {
                "empty key set".to_owned()
            } else {
                skipped.join("; ")
            }));
        }
        if !skipped.is_empty() {
            tracing::warn!(skipped = %skipped.join("; "), "ignored JWKS entries");
        }
        Ok(KeySet { keys })
    }

    /// One RSA, EC or Ed25519 public key in PEM (SPKI or PKCS#1).
    pub fn from_public_key_pem(pem: &[u8]) -> Result<KeySet, KeyError> {
        let text = String::from_utf8_lossy(pem);
        if text.contains("PRIVATE KEY") {
            return Err(KeyError::PrivateKey);
        }
        let (key, algorithms) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (key, RSA_ALGORITHMS.to_vec())
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            (key, vec![Algorithm::ES256, Algorithm::ES384])
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (key, vec![Algorithm::EdDSA])
        } else {
            return Err(KeyError::InvalidPem(
                "not an RSA, EC or Ed25519 public key".into(),
            ));
        };
        Ok(KeySet {
            keys: vec![VerificationKey {
                kid: None,
                algorithms,
                key,
            }],
        })
    }

    /// A shared HMAC secret (HS256/384/512; the validator must also allow HS256).
    pub fn from_hmac_secret(secret: &[u8]) -> Result<KeySet, KeyError> {
        if secret.len() < MIN_HMAC_SECRET_LEN {
            return Err(KeyError::WeakSecret);
        }
        Ok(KeySet {
            keys: vec![VerificationKey {
                kid: None,
                algorithms: vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
                key: DecodingKey::from_secret(secret),
            }],
        })
    }

    /// A key file: a JWKS document (starts with `{`) or a PEM public key.
    /// HMAC secrets are not read from here so that a PEM typo can never turn
    /// into a shared secret; use [`KeySet::from_hmac_secret`].
    pub fn from_key_file(path: &Path) -> Result<KeySet, KeyError> {
        let bytes = std::fs::read(path).map_err(|source| KeyError::File {
            path: path.display().to_string(),
            source,
        })?;
        let text = String::from_utf8_lossy(&bytes);
        if text.trim_start().starts_with('{') {
            KeySet::from_jwks_json(&text)
        } else {
            KeySet::from_public_key_pem(&bytes)
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn contains_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> Result<Vec<&'a VerificationKey>, AuthError> {
        // A token's kid selects the key with that kid; keys configured without
        // a kid (a PEM file, a secret) stand in for any kid the issuer uses.
        let mut by_kid: Vec<&VerificationKey> = match kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect(),
            None => self.keys.iter().collect(),
        };
        if by_kid.is_empty() {
            by_kid = self.keys.iter().filter(|k| k.kid.is_none()).collect();
        }
        if by_kid.is_empty() {
            return Err(AuthError::UnknownKey);
        }
        let usable: Vec<&VerificationKey> = by_kid
            .into_iter()
            .filter(|k| k.algorithms.contains(&alg))
            .take(MAX_CANDIDATE_KEYS)
            .collect();
        if usable.is_empty() {
            // A key exists, but not for this algorithm: algorithm confusion.
            return Err(AuthError::AlgorithmNotAllowed);
        }
        Ok(usable)
    }
}

fn key_from_jwk_value(entry: &Value) -> Result<VerificationKey, String> {
    let jwk: Jwk =
        serde_json::from_value(entry.clone()).map_err(|e| format!("unreadable ({e})"))?;
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return Err("not a signature key".to_owned());
    }
    let family_algorithms: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA_ALGORITHMS.to_vec(),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return Err("unsupported curve".to_owned()),
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        AlgorithmParameters::OctetKey(_) => {
            vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]
        }
    };
    let algorithms = match jwk.common.key_algorithm {
        None => family_algorithms,
        Some(declared) => {
            let declared = key_algorithm(declared).ok_or("unsupported alg")?;
            if !family_algorithms.contains(&declared) {
                return Err("alg does not match key type".to_owned());
            }
            vec![declared]
        }
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("invalid key ({e})"))?;
    Ok(VerificationKey {
        kid: jwk.common.key_id.clone(),
        algorithms,
        key,
    })
}

fn key_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Validates bearer JWTs. Share as `Arc<TokenValidator>`; keys can be replaced
/// while in use ([`TokenValidator::set_keys`], used by [`super::JwksFetcher`]).
#[derive(Debug)]
pub struct TokenValidator {
    config: TokenValidatorConfig,
    // std RwLock: held only to clone the Arc, never across an await.
    keys: RwLock<Arc<KeySet>>,
}

impl TokenValidator {
    pub fn new(config: TokenValidatorConfig, keys: KeySet) -> Self {
        TokenValidator {
            config,
            keys: RwLock::new(Arc::new(keys)),
        }
    }

    /// A validator whose keys come from a JWKS document.
    pub fn from_jwks_json(config: TokenValidatorConfig, jwks: &str) -> Result<Self, KeyError> {
        Ok(TokenValidator::new(config, KeySet::from_jwks_json(jwks)?))
    }

    /// A validator whose keys come from a JWKS or PEM file.
    pub fn from_key_file(config: TokenValidatorConfig, path: &Path) -> Result<Self, KeyError> {
        Ok(TokenValidator::new(config, KeySet::from_key_file(path)?))
    }

    pub fn config(&self) -> &TokenValidatorConfig {
        &self.config
    }

    pub fn keys(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(keys) => Arc::clone(&keys),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn set_keys(&self, keys: KeySet) {
        match self.keys.write() {
            Ok(mut current) => *current = Arc::new(keys),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(keys),
        }
    }

    /// Validate a bearer token (as returned by
    /// [`bearer_from_header`](super::bearer_from_header)).
    pub fn validate(&self, bearer: &str) -> Result<Principal, AuthError> {
        if bearer.len() > MAX_BEARER_LEN {
            return Err(AuthError::TokenTooLong);
        }
        if bearer.split('.').count() != 3
            || !bearer
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(AuthError::MalformedToken);
        }
        let header = jsonwebtoken::decode_header(bearer).map_err(|_| AuthError::MalformedToken)?;
        if header.crit.is_some() {
            return Err(AuthError::UnsupportedCritical);
        }
        if !self.config.algorithms.contains(&header.alg) {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        let keys = self.keys();
        let candidates = keys.candidates(header.kid.as_deref(), header.alg)?;

        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = self.config.leeway_seconds;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&self.config.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);

        let mut last_error = AuthError::InvalidSignature;
        for candidate in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(bearer, &candidate.key, &validation) {
                Ok(data) => return self.principal(data.claims),
                Err(error) => {
                    last_error = map_jwt_error(error.kind());
                    // Only a signature mismatch is worth trying the next key.
                    if last_error != AuthError::InvalidSignature {
                        return Err(last_error);
                    }
                }
            }
        }
        Err(last_error)
    }

    fn principal(&self, claims: Map<String, Value>) -> Result<Principal, AuthError> {
        let subject =
            identifier(&claims, "sub")?.ok_or_else(|| AuthError::MissingClaim("sub".into()))?;
        let client_id = match identifier(&claims, "client_id")? {
            Some(id) => id,
            None => identifier(&claims, "azp")?.unwrap_or_else(|| subject.clone()),
        };
        let tenant = identifier(&claims, &self.config.tenant_claim)?;
        let patient = identifier(&claims, &self.config.patient_claim)?;
        let scopes = match (claims.get("scope"), claims.get("scp")) {
            (Some(Value::String(scope)), _) => Scopes::parse(scope),
            (Some(_), _) => return Err(AuthError::InvalidClaim("scope".into())),
            (None, Some(Value::String(scp))) => Scopes::parse(scp),
            (None, Some(Value::Array(items))) => {
                let mut strings = Vec::with_capacity(items.len());
                for item in items {
                    strings.push(
                        item.as_str()
                            .ok_or_else(|| AuthError::InvalidClaim("scp".into()))?,
                    );
                }
                Scopes::from_scope_strings(strings)
            }
            (None, Some(_)) => return Err(AuthError::InvalidClaim("scp".into())),
            (None, None) => Scopes::default(),
        };
        // jsonwebtoken has checked `exp` is present and numeric.
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or_else(|| AuthError::InvalidClaim("exp".into()))?;
        let token_id = identifier(&claims, "jti")?;
        Ok(Principal {
            subject,
            client_id,
            tenant,
            patient,
            scopes,
            expires_at,
            token_id,
        })
    }
}

/// A string claim used as an identifier: absent is `None`; present but not a
/// non-empty string of sane length is an error (never silently dropped, which
/// could widen a tenant- or patient-limited token).
fn identifier(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, AuthError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s))
            if !s.is_empty()
                && s.len() <= MAX_IDENTIFIER_LEN
                && !s.chars().any(char::is_control) =>
        {
            Ok(Some(s.clone()))
        }
        Some(_) => Err(AuthError::InvalidClaim(name.to_owned())),
    }
}

fn map_jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::InvalidSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
        ErrorKind::InvalidClaimFormat(claim) => AuthError::InvalidClaim(claim.clone()),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => AuthError::AlgorithmNotAllowed,
        _ => AuthError::MalformedToken,
    }
}
