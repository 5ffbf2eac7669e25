//! Who is calling: the [`Caller`] extractor validates the bearer token (when an issuer is
//! configured) and decides the tenant; [`Caller::require`] checks SMART scopes per
//! operation. In development mode (no issuer) every request is trusted, in the configured
//! tenant — Herald says so at start.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_fhir::IssueType;
use herald_security::auth::{
    bearer_from_header, Access, AuthError, JwksFetcher, Permission, Principal, TokenValidator,
};

use crate::error::ApiError;
use crate::SharedState;

/// How requests are authenticated.
pub enum AuthMode {
    /// No issuer configured: every request is trusted (and says so at start).
    Development,
    /// OAuth 2.0 bearer JWTs from the configured issuer.
    Tokens {
        validator: Arc<TokenValidator>,
        jwks: Option<Arc<JwksFetcher>>,
    },
}

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: String,
    /// `None` in development mode.
    pub principal: Option<Principal>,
}

/// 401 or 403 as an OperationOutcome, with `WWW-Authenticate`.
pub struct AuthRejection {
    error: ApiError,
    challenge: String,
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        let mut response = self.error.into_response();
        if let Ok(value) = HeaderValue::from_str(&self.challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

impl From<AuthRejection> for ApiError {
    fn from(r: AuthRejection) -> Self {
        r.error
    }
}

fn unauthorized(e: &AuthError) -> AuthRejection {
    AuthRejection {
        error: ApiError::new(StatusCode::UNAUTHORIZED, IssueType::Login, e.to_string()),
        challenge: e.www_authenticate(),
    }
}

impl FromRequestParts<SharedState> for Caller {
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        // The rate-limit middleware may have authenticated this request already.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let (validator, jwks) = match &state.auth {
            AuthMode::Development => {
                return Ok(Caller {
                    tenant: state.tenant.clone(),
                    principal: None,
                })
            }
            AuthMode::Tokens { validator, jwks } => (validator, jwks),
        };
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized(&AuthError::MissingToken))?;
        let text = value.to_str().map_err(|_| {
            unauthorized(&AuthError::MalformedHeader(
                "the Authorization header is not valid text",
            ))
        })?;
        let token = bearer_from_header(text).map_err(|e| unauthorized(&e))?;
        let principal = match jwks {
            Some(fetcher) => fetcher.validate(validator, token).await,
            None => validator.validate(token),
        }
        .map_err(|e| unauthorized(&e))?;
        let tenant = principal
            .tenant
            .clone()
            .unwrap_or_else(|| state.tenant.clone());
        // A revoked client or token is refused at the API too, not only at delivery.
        match state
            .access_guard
            .is_revoked(&tenant, &principal.client_id, principal.token_id.as_deref())
            .await
        {
            Ok(false) => {}
            Ok(true) => {
                return Err(AuthRejection {
                    error: ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        IssueType::Login,
                        "this token, or its client, has been revoked",
                    ),
                    challenge: "Bearer error=\"invalid_token\", error_description=\"revoked\""
                        .to_owned(),
                })
            }
            Err(e) => {
                return Err(AuthRejection {
                    error: ApiError::internal("checking access revocations failed", &e),
                    challenge: "Bearer".to_owned(),
                })
            }
        }
        Ok(Caller {
            tenant,
            principal: Some(principal),
        })
    }
}

impl Caller {
    /// The OAuth client, or `development` when requests are not authenticated.
    pub fn client_id(&self) -> &str {
        self.principal
            .as_ref()
            .map_or("development", |p| p.client_id.as_str())
    }

    /// The grant a subscription created by this caller runs under (`None` in development
    /// mode, where every subscription is the operator's).
    pub fn owner(&self) -> Option<herald_store::SubscriptionOwner> {
        self.principal
            .as_ref()
            .map(|p| herald_store::SubscriptionOwner {
                client_id: p.client_id.clone(),
                subject: p.subject.clone(),
                token_id: p.token_id.clone(),
                patient: p.patient.clone(),
                scopes: p.scopes.granted().to_vec(),
            })
    }

    /// Whether the token grants `permission` on `resource_type`; how broadly.
    pub fn require(&self, resource_type: &str, permission: Permission) -> Result<Access, ApiError> {
        let Some(principal) = &self.principal else {
            return Ok(Access::System);
        };
        principal.access(resource_type, permission).map_err(|e| {
            AuthRejection {
                error: ApiError::new(StatusCode::FORBIDDEN, IssueType::Forbidden, e.to_string()),
                challenge: e.www_authenticate(),
            }
            .into()
        })
    }
}

/// The write facade and resource reads need a `system/` or `user/` grant without a patient
/// context: Herald does not evaluate patient compartments for arbitrary resources yet, so a
/// patient-limited token is refused rather than trusted.
pub fn require_unrestricted(
    caller: &Caller,
    resource_type: &str,
    permission: Permission,
) -> Result<(), ApiError> {
    match caller.require(resource_type, permission)? {
        Access::System => Ok(()),
        Access::User
            if caller
                .principal
                .as_ref()
                .is_none_or(|p| p.patient.is_none()) =>
        {
            Ok(())
        }
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            IssueType::Forbidden,
            format!("a patient-limited token cannot use the write facade on {resource_type}"),
        )),
    }
}

/// Every entry of a transaction or batch needs its own grant.
pub fn require_bundle(caller: &Caller, bundle: &serde_json::Value) -> Result<(), ApiError> {
    let entries = bundle
        .get("entry")
        .and_then(serde_json::Value::as_array)
        .cloned()
        .unwrap_or_default();
    for entry in &entries {
        let method = entry
            .pointer("/request/method")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        let url = entry
            .pointer("/request/url")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        let resource_type = url.trim_matches('/').split(['/', '?']).next().unwrap_or("");
        let permission = match method {
            "POST" => Permission::Create,
            "PUT" => Permission::Update,
            "DELETE" => Permission::Delete,
            _ => Permission::Read,
        };
        if !resource_type.is_empty() {
            require_unrestricted(caller, resource_type, permission)?;
        }
    }
    Ok(())
}

/// Middleware for the WebSocket token endpoints: the caller must authenticate like any
/// FHIR request; its tenant is handed on as a [`herald_websocket::BindingTenant`]. The
/// `/ws` upgrade itself authenticates with the binding token.
pub async fn bind_tenant(
    axum::extract::State(state): axum::extract::State<SharedState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.uri().path() == "/ws" || matches!(state.auth, AuthMode::Development) {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let caller = match Caller::from_request_parts(&mut parts, &state).await {
        Ok(c) => c,
        Err(rejection) => return rejection.into_response(),
    };
    let access = match caller.require("Subscription", Permission::Read) {
        Ok(access) => access,
        Err(e) => return e.into_response(),
    };
    let agent = herald_websocket::BindingAgent {
        client: caller.client_id().to_owned(),
        subject: caller.principal.as_ref().map(|p| p.subject.clone()),
    };
    let mut request = axum::extract::Request::from_parts(parts, body);
    request.extensions_mut().insert(agent);
    // Tokens are issued only for subscriptions this caller may see.
    let visibility_caller = caller.clone();
    request
        .extensions_mut()
        .insert(herald_websocket::BindingFilter(Arc::new(move |record| {
            crate::subscriptions::visible(&access, &visibility_caller, record)
        })));
    request
        .extensions_mut()
        .insert(herald_websocket::BindingTenant(caller.tenant));
    next.run(request).await
}
