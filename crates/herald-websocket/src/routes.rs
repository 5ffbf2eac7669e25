//! HTTP surface: `$get-ws-binding-token` (type and instance level, GET and POST) and the
//! `/ws` upgrade. Routes carry their full paths so the router merges at the root.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::Router;
use chrono::{SecondsFormat, Utc};
use herald_audit::{AuditEntry, AuditKind, AuditOutcome};
use herald_fhir::{IssueType, OperationOutcome};
use serde_json::{json, Value};

use crate::connection::{self, check_bindable};
use crate::hub::WebSocketHub;
use crate::protocol;
use crate::tokens::{BindingGrant, TokenError};

/// Largest `$get-ws-binding-token` POST body read.
const MAX_PARAMETERS_BYTES: usize = 64 * 1024;

/// The routes, to merge at the root of the application:
/// `GET|POST /fhir/Subscription/$get-ws-binding-token`,
/// `GET|POST /fhir/Subscription/{id}/$get-ws-binding-token` and `GET /ws`.
pub fn router(hub: Arc<WebSocketHub>) -> Router {
    Router::new()
        .route(
            "/fhir/Subscription/$get-ws-binding-token",
            get(type_level_get).post(type_level_post),
        )
        .route(
            "/fhir/Subscription/{id}/$get-ws-binding-token",
            get(instance_level).post(instance_level),
        )
        .route("/ws", get(upgrade))
        .with_state(hub)
}

/// The tenant an authenticated `$get-ws-binding-token` request acts for, inserted as a
/// request extension by the API's authentication layer. Tokens are bound to it.
#[derive(Debug, Clone)]
pub struct BindingTenant(pub String);

/// Which subscriptions the caller may get binding tokens for (the API's visibility rule),
/// set by the authenticating middleware; without it every subscription of the tenant is
/// allowed (development mode).
#[derive(Clone)]
#[allow(clippy::type_complexity)]
pub struct BindingFilter(pub Arc<dyn Fn(&herald_store::SubscriptionRecord) -> bool + Send + Sync>);

impl std::fmt::Debug for BindingFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BindingFilter")
    }
}

/// Who asked for a binding token (the authenticated client and user), for the audit
/// trail; set by the same middleware as [`BindingTenant`].
#[derive(Debug, Clone)]
pub struct BindingAgent {
    pub client: String,
    pub subject: Option<String>,
}

/// The tenant of a token request: the extension, else (unless required) the configured one.
fn request_tenant(
    hub: &WebSocketHub,
    tenant: Option<Extension<BindingTenant>>,
) -> Result<String, HttpError> {
    match tenant {
        Some(Extension(BindingTenant(tenant))) => Ok(tenant),
        None if hub.config.tenant_from_request => Err(HttpError::new(
            StatusCode::UNAUTHORIZED,
            IssueType::Login,
            "authentication is required",
        )),
        None => Ok(hub.config.tenant.clone()),
    }
}

/// A refusal, rendered as an `OperationOutcome`.
#[derive(Debug)]
struct HttpError {
    status: StatusCode,
    outcome: OperationOutcome,
}

impl HttpError {
    fn new(status: StatusCode, code: IssueType, diagnostics: impl Into<String>) -> Self {
        Self {
            status,
            outcome: OperationOutcome::error(code, diagnostics),
        }
    }

    fn invalid(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, IssueType::Invalid, diagnostics)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        fhir_json(self.status, &self.outcome.to_json())
    }
}

fn fhir_json(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/fhir+json")],
        body.to_string(),
    )
        .into_response()
}

async fn type_level_get(
    State(hub): State<Arc<WebSocketHub>>,
    tenant: Option<Extension<BindingTenant>>,
    agent: Option<Extension<BindingAgent>>,
    filter: Option<Extension<BindingFilter>>,
    RawQuery(query): RawQuery,
) -> Result<Response, HttpError> {
    let tenant = request_tenant(&hub, tenant)?;
    let mut ids = Vec::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "id" => ids.extend(value.split(',').map(str::to_owned)),
            "_format" | "_pretty" => {}
            other => {
                return Err(HttpError::new(
                    StatusCode::BAD_REQUEST,
                    IssueType::NotSupported,
                    format!("parameter '{other}' is not supported by $get-ws-binding-token (id)"),
                ))
            }
        }
    }
    issue(
        &hub,
        &tenant,
        agent.map(|Extension(a)| a),
        filter.map(|Extension(f)| f),
        ids,
    )
    .await
}

async fn type_level_post(
    State(hub): State<Arc<WebSocketHub>>,
    tenant: Option<Extension<BindingTenant>>,
    agent: Option<Extension<BindingAgent>>,
    filter: Option<Extension<BindingFilter>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Response, HttpError> {
    let tenant = request_tenant(&hub, tenant)?;
    if let Some(content_type) = headers.get(axum::http::header::CONTENT_TYPE) {
        let text = content_type.to_str().unwrap_or("").to_ascii_lowercase();
        let base = text.split(';').next().unwrap_or("").trim().to_owned();
        if base != "application/fhir+json" && base != "application/json" {
            return Err(HttpError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                IssueType::NotSupported,
                format!("content type '{base}' is not supported; send application/fhir+json"),
            ));
        }
    }
    let too_large = || {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            IssueType::TooLong,
            format!("the Parameters body is larger than {MAX_PARAMETERS_BYTES} bytes"),
        )
    };
    // Refused from the declared length before anything is read; otherwise read at most
    // the limit.
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_PARAMETERS_BYTES) {
        return Err(too_large());
    }
    let body = axum::body::to_bytes(body, MAX_PARAMETERS_BYTES)
        .await
        .map_err(|_| too_large())?;
    let ids = if body.iter().all(u8::is_ascii_whitespace) {
        Vec::new()
    } else {
        ids_from_parameters(&body)?
    };
    issue(
        &hub,
        &tenant,
        agent.map(|Extension(a)| a),
        filter.map(|Extension(f)| f),
        ids,
    )
    .await
}

/// The `id` parameters of an input `Parameters` resource.
fn ids_from_parameters(body: &[u8]) -> Result<Vec<String>, HttpError> {
    let parameters: Value = serde_json::from_slice(body).map_err(|_| {
        HttpError::new(
            StatusCode::BAD_REQUEST,
            IssueType::Structure,
            "the body is not valid JSON",
        )
    })?;
    if parameters.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(HttpError::invalid("the body must be a Parameters resource"));
    }
    let list = match parameters.get("parameter") {
        None => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(HttpError::invalid("Parameters.parameter must be an array")),
    };
    list.iter()
        .map(|p| {
            match p.get("name").and_then(Value::as_str) {
                Some("id") => {}
                Some(other) => {
                    return Err(HttpError::new(
                        StatusCode::BAD_REQUEST,
                        IssueType::NotSupported,
                        format!(
                            "parameter '{other}' is not supported by $get-ws-binding-token (id)"
                        ),
                    ))
                }
                None => return Err(HttpError::invalid("every parameter needs a name")),
            }
            p.get("valueId")
                .or_else(|| p.get("valueString"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| HttpError::invalid("parameter 'id' needs a valueId"))
        })
        .collect()
}

/// Instance level: the `id` parameters are ignored (per the OperationDefinition).
async fn instance_level(
    State(hub): State<Arc<WebSocketHub>>,
    tenant: Option<Extension<BindingTenant>>,
    agent: Option<Extension<BindingAgent>>,
    filter: Option<Extension<BindingFilter>>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let tenant = request_tenant(&hub, tenant)?;
    issue(
        &hub,
        &tenant,
        agent.map(|Extension(a)| a),
        filter.map(|Extension(f)| f),
        vec![id],
    )
    .await
}

/// Checks the subscriptions and issues a token for them.
async fn issue(
    hub: &WebSocketHub,
    tenant: &str,
    agent: Option<BindingAgent>,
    filter: Option<BindingFilter>,
    ids: Vec<String>,
) -> Result<Response, HttpError> {
    let config = &hub.config;
    if ids.is_empty() {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            IssueType::Required,
            "at least one 'id' parameter is required: Herald issues tokens for named subscriptions only",
        ));
    }
    let mut unique: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        let id = protocol::subscription_id(id.trim()).map_err(|e| HttpError::invalid(e.0))?;
        if !unique.contains(&id) {
            unique.push(id);
        }
    }
    if unique.len() > config.max_subscriptions_per_token {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            IssueType::TooLong,
            format!(
                "a token may name at most {} subscriptions",
                config.max_subscriptions_per_token
            ),
        ));
    }
    for id in &unique {
        match hub.store.get_subscription(tenant, id).await {
            Ok(Some(record)) if filter.as_ref().is_some_and(|f| !(f.0)(&record)) => {
                return Err(HttpError::new(
                    StatusCode::NOT_FOUND,
                    IssueType::NotFound,
                    format!("Subscription/{id} does not exist"),
                ))
            }
            Ok(Some(record)) => check_bindable(&record).map_err(|outcome| HttpError {
                status: StatusCode::BAD_REQUEST,
                outcome,
            })?,
            Ok(None) => {
                return Err(HttpError::new(
                    StatusCode::NOT_FOUND,
                    IssueType::NotFound,
                    format!("Subscription/{id} does not exist"),
                ))
            }
            Err(e) => {
                tracing::error!(error = %e, "reading a subscription for $get-ws-binding-token failed");
                return Err(HttpError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    IssueType::Transient,
                    "storage is unavailable; please retry",
                ));
            }
        }
    }
    let grant = BindingGrant {
        tenant: tenant.to_owned(),
        subscription_ids: unique.clone(),
    };
    let expiration = Utc::now() + config.token_ttl;
    let (token, _) = hub
        .tokens
        .issue(grant, Instant::now())
        .map_err(|e| match e {
            TokenError::TooManyOutstanding => HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                IssueType::Throttled,
                e.to_string(),
            ),
            TokenError::NotRedeemable => HttpError::invalid(e.to_string()),
        })?;
    let mut parameter = vec![
        json!({"name": "token", "valueString": token}),
        json!({"name": "expiration", "valueDateTime": expiration.to_rfc3339_opts(SecondsFormat::Secs, true)}),
    ];
    parameter.extend(
        unique
            .iter()
            .map(|id| json!({"name": "subscription", "valueString": id})),
    );
    parameter.push(json!({"name": "websocket-url", "valueUrl": config.websocket_url}));
    let body = json!({"resourceType": "Parameters", "parameter": parameter});
    if let Some(guard) = &hub.guard {
        // One record per subscription, so `AuditEvent?entity=Subscription/<id>` finds it.
        for id in &unique {
            let mut entry = AuditEntry::new(tenant, AuditKind::BindingToken, AuditOutcome::Success)
                .entity(format!("Subscription/{id}"))
                .detail(format!(
                    "websocket binding token issued for {} subscription(s), valid {} s",
                    unique.len(),
                    config.token_ttl.as_secs()
                ));
            entry = match &agent {
                Some(BindingAgent { client, subject }) => entry.agent(client, subject.as_deref()),
                None => entry.agent("development", None),
            };
            if let Err(e) = guard.audit().record_now(entry).await {
                tracing::error!(error = %e, "recording a binding-token issue failed");
                return Err(HttpError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    IssueType::Transient,
                    "storage is unavailable; please retry",
                ));
            }
        }
    }
    Ok(fhir_json(StatusCode::OK, &body))
}

async fn upgrade(
    State(hub): State<Arc<WebSocketHub>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return HttpError::new(
                rejection.status(),
                IssueType::Invalid,
                "GET /ws must be a WebSocket upgrade request",
            )
            .into_response()
        }
    };
    let Ok(slot) = Arc::clone(&hub.connection_slots).try_acquire_owned() else {
        return HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            IssueType::Throttled,
            "too many WebSocket connections; retry later",
        )
        .into_response();
    };
    let config = &hub.config;
    upgrade
        .read_buffer_size(config.read_buffer_size)
        .write_buffer_size(config.write_buffer_size)
        .max_message_size(config.max_message_size)
        .max_frame_size(config.max_message_size)
        .on_upgrade(move |socket| connection::serve(hub, socket, slot))
}
