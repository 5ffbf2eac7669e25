//! Who is calling, and what they may do.
//!
//! - [`bearer_from_header`] takes the token out of `Authorization`.
//! - [`TokenValidator::validate`] checks a JWT (signature against configured
//!   keys, issuer, audience, expiry) and returns a [`Principal`].
//! - [`Scopes`] holds SMART on FHIR scopes; [`Principal::access`] answers
//!   "may this principal do *permission* on *resource type*, and limited to
//!   which patient?".
//!
//! Errors carry no token material and are safe to render; the API maps
//! [`AuthError`] to 401 with [`AuthError::www_authenticate`] and
//! [`InsufficientScope`] to 403.

mod header;
mod jwks;
mod scopes;
mod token;

pub use header::{bearer_from_header, MAX_BEARER_LEN};
pub use jsonwebtoken::Algorithm;
pub use jwks::JwksFetcher;
pub use scopes::{
    Context, Grant, Permission, Permissions, ResourceScope, ScopeError, ScopeRejection, Scopes,
    MAX_SCOPES, MAX_SCOPE_LEN,
};
pub use token::{KeyError, KeySet, TokenValidator, TokenValidatorConfig};

/// The authenticated caller, from a validated token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `sub`.
    pub subject: String,
    /// `client_id`, else `azp`, else `sub`.
    pub client_id: String,
    /// The configured tenant claim (default `tenant`), if present.
    pub tenant: Option<String>,
    /// The `patient` claim (SMART launch context), if present.
    pub patient: Option<String>,
    pub scopes: Scopes,
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: u64,
    /// `jti`, when the token has one: revoking it stops what was created with it.
    pub token_id: Option<String>,
}

/// The breadth of an access decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// A `system/` scope: every resource of the type within the tenant.
    System,
    /// A `user/` scope: what the token's user may see. Herald keeps no
    /// per-user access lists, so the API should treat this like `System`
    /// within the tenant, or narrow it to [`Principal::patient`] when set.
    User,
    /// A `patient/` scope: only this patient's compartment.
    Patient(String),
}

/// 403: the token is valid but does not grant what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token does not grant {permission:?} on {resource_type}")]
pub struct InsufficientScope {
    pub resource_type: String,
    pub permission: Permission,
}

impl InsufficientScope {
    /// `WWW-Authenticate` value per RFC 6750 §3.1, naming the scope needed.
    pub fn www_authenticate(&self) -> String {
        format!(
            "Bearer error=\"insufficient_scope\", scope=\"system/{}.{}\"",
            self.resource_type,
            self.permission.letter()
        )
    }
}

impl Principal {
    /// The broadest unrestricted grant of `permission` on `resource_type`:
    /// `system/` before `user/` before `patient/`. A `patient/` scope without a
    /// `patient` claim grants nothing (there is no compartment to limit it to),
    /// and scopes with query restrictions are not counted (see [`Scopes::grant`]).
    pub fn access(
        &self,
        resource_type: &str,
        permission: Permission,
    ) -> Result<Access, InsufficientScope> {
        if self
            .scopes
            .allows(Context::System, resource_type, permission)
        {
            return Ok(Access::System);
        }
        if self.scopes.allows(Context::User, resource_type, permission) {
            return Ok(Access::User);
        }
        if self
            .scopes
            .allows(Context::Patient, resource_type, permission)
        {
            if let Some(patient) = &self.patient {
                return Ok(Access::Patient(patient.clone()));
            }
        }
        Err(InsufficientScope {
            resource_type: resource_type.to_owned(),
            permission,
        })
    }

    /// Whether the token has expired at `now` (seconds since the Unix epoch).
    pub fn is_expired_at(&self, now: u64) -> bool {
        self.expires_at <= now
    }
}

/// 401: no usable credentials. Messages never include the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("missing bearer token")]
    MissingToken,
    #[error("malformed Authorization header: {0}")]
    MalformedHeader(&'static str),
    #[error("bearer token is longer than {MAX_BEARER_LEN} bytes")]
    TokenTooLong,
    #[error("token is not a well-formed JWT")]
    MalformedToken,
    #[error("token algorithm is not allowed")]
    AlgorithmNotAllowed,
    #[error("token header uses unsupported critical extensions")]
    UnsupportedCritical,
    #[error("token signing key is not known")]
    UnknownKey,
    #[error("token signature is invalid")]
    InvalidSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token issuer is not accepted")]
    WrongIssuer,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("token lacks required claim `{0}`")]
    MissingClaim(String),
    #[error("token claim `{0}` has an invalid value")]
    InvalidClaim(String),
    #[error("token signing keys are unavailable")]
    KeysUnavailable,
}

impl AuthError {
    /// A stable machine-readable name for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing-token",
            AuthError::MalformedHeader(_) => "malformed-header",
            AuthError::TokenTooLong => "token-too-long",
            AuthError::MalformedToken => "malformed-token",
            AuthError::AlgorithmNotAllowed => "algorithm-not-allowed",
            AuthError::UnsupportedCritical => "unsupported-critical",
            AuthError::UnknownKey => "unknown-key",
            AuthError::InvalidSignature => "invalid-signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not-yet-valid",
            AuthError::WrongIssuer => "wrong-issuer",
            AuthError::WrongAudience => "wrong-audience",
            AuthError::MissingClaim(_) => "missing-claim",
            AuthError::InvalidClaim(_) => "invalid-claim",
            AuthError::KeysUnavailable => "keys-unavailable",
        }
    }

    /// `WWW-Authenticate` value for the 401 response (RFC 6750 §3). A missing
    /// token gets no error code, as the RFC asks.
    pub fn www_authenticate(&self) -> String {
        match self {
            AuthError::MissingToken => "Bearer".to_owned(),
            AuthError::MalformedHeader(_) => "Bearer error=\"invalid_request\"".to_owned(),
            _ => format!("Bearer error=\"invalid_token\", error_description=\"{self}\""),
        }
    }
}
