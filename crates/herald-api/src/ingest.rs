//! `POST /ingest/change-events` for systems that cannot publish to NATS, and `/readyz`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use herald_fhir::ChangeEvent;
use serde_json::{json, Value};

use crate::body::{Fhir, FhirJson};
use crate::error::{ApiError, ApiResult};
use crate::SharedState;

/// Most events per ingest call.
const MAX_EVENTS: usize = 1000;

/// Accepts one change event or a JSON array of them. All are validated before any is
/// published; 202 means each is durably on the bus (duplicates by event id are reported).
pub async fn change_events(
    State(state): State<SharedState>,
    caller: crate::auth::Caller,
    FhirJson(body): FhirJson,
) -> ApiResult<Fhir> {
    // Ingest is for integration engines: a system-level create grant is needed before the
    // body is even read; the grant for each event's resource type is checked below.
    if let Some(principal) = &caller.principal {
        let ingests = principal.scopes.resource_scopes().iter().any(|s| {
            s.context == herald_security::auth::Context::System
                && s.restrictions.is_empty()
                && s.permissions
                    .contains(herald_security::auth::Permission::Create)
        });
        if !ingests {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                herald_fhir::IssueType::Forbidden,
                "ingesting change events needs a system/<Type>.c scope",
            ));
        }
    }
    let items = match body {
        Value::Array(items) => items,
        single => vec![single],
    };
    if items.is_empty() || items.len() > MAX_EVENTS {
        return Err(ApiError::bad_request(format!(
            "send 1 to {MAX_EVENTS} change events"
        )));
    }
    let mut events = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let event = ChangeEvent::from_value(item)
            .map_err(|e| ApiError::bad_request(format!("event[{index}]: {e}")))?;
        crate::auth::require_unrestricted(
            &caller,
            &event.resource_type,
            herald_security::auth::Permission::Create,
        )?;
        if event.tenant != caller.tenant {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                herald_fhir::IssueType::Forbidden,
                format!(
                    "event[{index}]: tenant '{}' is not this client's tenant",
                    event.tenant
                ),
            ));
        }
        events.push(event);
    }
    // One bus commit for the whole request: per-event commits capped ingest at the disk's
    // flush rate.
    let published = state.capture.ingest_batch(&events).await?;
    let duplicates = published.iter().filter(|p| p.duplicate).count();
    let accepted = published.len() - duplicates;
    Ok(
        Fhir::ok(json!({"accepted": accepted, "duplicates": duplicates}))
            .with_status(StatusCode::ACCEPTED),
    )
}

pub async fn ready(State(state): State<SharedState>) -> impl IntoResponse {
    let store = state.store.ping().await;
    let bus = state.bus.ping().await;
    let body = json!({
        "mode": state.mode,
        "bus": state.bus.kind(),
        "storage": if store.is_ok() { "ok" } else { "unavailable" },
        "bus_status": if bus.is_ok() { "ok" } else { "unavailable" },
    });
    let status = if store.is_ok() && bus.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}
