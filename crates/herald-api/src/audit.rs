//! The audit trail at the API: recording what clients asked for (with the outcome), serving
//! the trail as FHIR `AuditEvent` to administrators, and `$revoke-access`.
//!
//! An administrator is a caller with a `system/AuditEvent.rs` grant (reads) or a
//! `system/Subscription.u` grant (`$revoke-access`); patient- and user-level grants are
//! refused. Audit records never carry secrets: the detail of a refusal is the diagnostic the
//! client itself was shown.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use herald_audit::{audit_event, AuditEntry, AuditKind, AuditOutcome, CLIENT_ID_SYSTEM};
use herald_fhir::IssueType;
use herald_security::auth::{Access, Permission};
use herald_store::{AuditQuery, RevocationKind};
use serde_json::Value;

use crate::auth::Caller;
use crate::body::{Fhir, FhirJson};
use crate::error::{ApiError, ApiResult};
use crate::{render, SharedState};

/// Records the outcome of a client's request. A storage failure here is logged, not
/// returned: the action itself already happened (or was refused) and the client must learn
/// that outcome.
pub(crate) async fn outcome<T>(
    state: &SharedState,
    caller: &Caller,
    kind: AuditKind,
    entity: Option<String>,
    result: &ApiResult<T>,
) {
    let (outcome, detail) = match result {
        Ok(_) => (AuditOutcome::Success, None),
        Err(e) if e.status.is_server_error() => {
            (AuditOutcome::SeriousFailure, Some(diagnostics(e)))
        }
        Err(e) => (AuditOutcome::MinorFailure, Some(diagnostics(e))),
    };
    let mut entry = AuditEntry::new(&caller.tenant, kind, outcome);
    entry = match &caller.principal {
        Some(p) => entry.agent(&p.client_id, Some(&p.subject)),
        None => entry.agent("development", None),
    };
    if let Some(entity) = entity {
        entry = entry.entity(entity);
    }
    if let Some(detail) = detail {
        entry = entry.detail(detail);
    }
    if let Err(e) = state.audit.record_now(entry).await {
        tracing::error!(error = %e, kind = kind.code(), "could not record an audit event");
    }
}

fn diagnostics(e: &ApiError) -> String {
    let json = e.outcome.to_json();
    let text = json
        .pointer("/issue/0/diagnostics")
        .and_then(Value::as_str)
        .unwrap_or("refused");
    format!("{} {text}", e.status.as_u16())
}

fn require_admin(caller: &Caller, resource_type: &str, permission: Permission) -> ApiResult<()> {
    match caller.require(resource_type, permission)? {
        Access::System => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            IssueType::Forbidden,
            format!(
                "only a system-level grant (system/{resource_type}.{}) may do this",
                permission.letter()
            ),
        )),
    }
}

/// `GET /AuditEvent`: `date` (with ge/gt/le/lt/eq prefixes, repeatable), `entity`
/// (`Subscription/id`), `subtype` (Herald's kinds, comma = OR), `outcome`,
/// `agent:identifier` (the OAuth client id, optionally `system|id`), `_count`.
pub async fn search(
    State(state): State<SharedState>,
    caller: Caller,
    Query(params): Query<Vec<(String, String)>>,
) -> ApiResult<Fhir> {
    require_admin(&caller, "AuditEvent", Permission::Search)?;
    let mut query = AuditQuery {
        limit: Some(100),
        ..AuditQuery::default()
    };
    for (name, value) in &params {
        match name.as_str() {
            "date" => date_bound(&mut query, value)?,
            "entity" => query.entity = Some(value.clone()),
            "subtype" => {
                for code in value.split(',') {
                    let code = code.rsplit('|').next().unwrap_or(code);
                    if AuditKind::parse(code).is_none() {
                        return Err(ApiError::bad_request(format!(
                            "subtype '{code}' is not an audit event kind Herald records ({})",
                            AuditKind::ALL.map(AuditKind::code).join(", ")
                        )));
                    }
                    query.kinds.push(code.to_owned());
                }
            }
            "outcome" => {
                if !matches!(value.as_str(), "0" | "4" | "8" | "12") {
                    return Err(ApiError::bad_request(
                        "outcome must be one of 0, 4, 8, 12",
                    ));
                }
                query.outcome = Some(value.clone());
            }
            "agent:identifier" => {
                let client = match value.split_once('|') {
                    Some((system, id)) if system.is_empty() || system == CLIENT_ID_SYSTEM => id,
                    Some((system, _)) => {
                        return Err(ApiError::bad_request(format!(
                            "agent:identifier system must be {CLIENT_ID_SYSTEM}, not '{system}'"
                        )))
                    }
                    None => value.as_str(),
                };
                query.agent_client = Some(client.to_owned());
            }
            "_count" => {
                let n: i64 = value
                    .parse()
                    .map_err(|_| ApiError::bad_request("_count must be a number"))?;
                query.limit = Some(n.clamp(0, 1_000));
            }
            "_format" => {}
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    IssueType::NotSupported,
                    format!("search parameter '{other}' is not supported on AuditEvent (date, entity, subtype, outcome, agent:identifier, _count)"),
                ))
            }
        }
    }
    let records = state.store.search_audit(&caller.tenant, &query).await?;
    let resources = records
        .iter()
        .map(|r| (r.id.clone(), audit_event(r)))
        .collect();
    Ok(
        Fhir::ok(render::searchset(&state.base_url, "AuditEvent", resources))
            .header(header::CACHE_CONTROL, "no-store"),
    )
}

fn date_bound(query: &mut AuditQuery, value: &str) -> ApiResult<()> {
    let (prefix, text) = match value.get(..2) {
        Some(p @ ("ge" | "gt" | "le" | "lt" | "eq")) => (p, &value[2..]),
        _ => ("eq", value),
    };
    let parsed = chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map(|d| {
                d.and_hms_opt(0, 0, 0)
                    .map(|t| t.and_utc().timestamp_millis())
                    .unwrap_or_default()
            })
        })
        .map_err(|_| {
            ApiError::bad_request(format!(
                "date '{value}': expected [ge|gt|le|lt]YYYY-MM-DD or an instant with a time zone"
            ))
        })?;
    // A bare date covers its whole day.
    let day = !text.contains('T');
    let end = if day { parsed + 86_400_000 - 1 } else { parsed };
    match prefix {
        "ge" => query.since_ms = Some(parsed),
        "gt" => query.since_ms = Some(end + 1),
        "le" => query.until_ms = Some(end),
        "lt" => query.until_ms = Some(parsed - 1),
        _ => {
            query.since_ms = Some(parsed);
            query.until_ms = Some(end);
        }
    }
    Ok(())
}

/// `GET /AuditEvent/{id}`.
pub async fn read(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Fhir> {
    require_admin(&caller, "AuditEvent", Permission::Read)?;
    let record = state
        .store
        .get_audit(&caller.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("AuditEvent/{id} is not known")))?;
    Ok(Fhir::ok(audit_event(&record)))
}

/// `POST /$revoke-access` with a `Parameters` body naming a `client` (OAuth client id) or a
/// `token` (its `jti`), and optionally a `reason`. Every subscription the client owns, or
/// that was created with the token, stops receiving (and turns `off` at its next send).
pub async fn revoke_access(
    State(state): State<SharedState>,
    caller: Caller,
    FhirJson(body): FhirJson,
) -> ApiResult<StatusCode> {
    let result = revoke(&state, &caller, &body).await;
    if result.is_err() {
        outcome(&state, &caller, AuditKind::AccessRevoked, None, &result).await;
    }
    if let Ok(what) = &result {
        // What was revoked is not a FHIR resource: it goes into the detail.
        let entry = AuditEntry::new(
            &caller.tenant,
            AuditKind::AccessRevoked,
            AuditOutcome::Success,
        )
        .agent(
            caller.client_id(),
            caller.principal.as_ref().map(|p| p.subject.as_str()),
        )
        .detail(format!("revoked {what}"));
        if let Err(e) = state.audit.record_now(entry).await {
            tracing::error!(error = %e, "could not record an access revocation");
        }
    }
    result.map(|_| StatusCode::NO_CONTENT)
}

async fn revoke(state: &SharedState, caller: &Caller, body: &Value) -> ApiResult<String> {
    require_admin(caller, "Subscription", Permission::Update)?;
    if body.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(ApiError::bad_request(
            "$revoke-access takes a Parameters resource",
        ));
    }
    let mut target = None;
    let mut reason = None;
    for parameter in body
        .get("parameter")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let name = parameter.get("name").and_then(Value::as_str).unwrap_or("");
        let value = parameter
            .get("valueString")
            .and_then(Value::as_str)
            .filter(|v| !v.trim().is_empty() && v.len() <= 256);
        match (name, value) {
            ("client", Some(v)) if target.is_none() => target = Some((RevocationKind::Client, v)),
            ("token", Some(v)) if target.is_none() => target = Some((RevocationKind::Token, v)),
            ("reason", Some(v)) => reason = Some(v),
            ("client" | "token", Some(_)) => {
                return Err(ApiError::bad_request(
                    "name exactly one 'client' or 'token' per $revoke-access",
                ))
            }
            (other, _) => {
                return Err(ApiError::bad_request(format!(
                    "parameter '{other}': expected client, token or reason, each a non-empty valueString of at most 256 characters"
                )))
            }
        }
    }
    let Some((kind, value)) = target else {
        return Err(ApiError::bad_request(
            "$revoke-access needs a 'client' or a 'token' parameter",
        ));
    };
    state
        .store
        .revoke_access(
            &caller.tenant,
            kind,
            value,
            reason,
            chrono::Utc::now().timestamp_millis(),
        )
        .await?;
    state.access_guard.forget_cached();
    state.delivery_wake.notify_one();
    Ok(format!("{}:{value}", kind.as_str()))
}
