//! The FHIR write facade: `POST [base]/[Type]`, `PUT`/`DELETE`/`GET [base]/[Type]/[id]`, and
//! `POST [base]` with a transaction or batch Bundle. Each acknowledged write has been
//! published durably as a change event.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herald_capture::WriteOutcome;
use herald_fhir::{Action, IssueType};

use crate::body::{Fhir, FhirJson};
use crate::error::{ApiError, ApiResult};
use crate::SharedState;

fn written(state: &SharedState, outcome: WriteOutcome) -> Fhir {
    let status = if outcome.action == Action::Create {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!(
        "{}/{}/{}/_history/{}",
        state.base_url, outcome.resource_type, outcome.id, outcome.version_id
    );
    Fhir::ok(outcome.resource.unwrap_or_default())
        .with_status(status)
        .versioned(&outcome.version_id, Some(location))
}

pub async fn create(
    State(state): State<SharedState>,
    caller: crate::auth::Caller,
    Path(resource_type): Path<String>,
    FhirJson(body): FhirJson,
) -> ApiResult<Fhir> {
    crate::auth::require_unrestricted(
        &caller,
        &resource_type,
        herald_security::auth::Permission::Create,
    )?;
    let outcome = state
        .capture
        .create(&caller.tenant, &resource_type, body)
        .await?;
    Ok(written(&state, outcome))
}

pub async fn update(
    State(state): State<SharedState>,
    caller: crate::auth::Caller,
    Path((resource_type, id)): Path<(String, String)>,
    FhirJson(body): FhirJson,
) -> ApiResult<Fhir> {
    crate::auth::require_unrestricted(
        &caller,
        &resource_type,
        herald_security::auth::Permission::Update,
    )?;
    let outcome = state
        .capture
        .update(&caller.tenant, &resource_type, &id, body)
        .await?;
    Ok(written(&state, outcome))
}

pub async fn delete(
    State(state): State<SharedState>,
    caller: crate::auth::Caller,
    Path((resource_type, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    crate::auth::require_unrestricted(
        &caller,
        &resource_type,
        herald_security::auth::Permission::Delete,
    )?;
    state
        .capture
        .delete(&caller.tenant, &resource_type, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn read(
    State(state): State<SharedState>,
    caller: crate::auth::Caller,
    Path((resource_type, id)): Path<(String, String)>,
) -> ApiResult<Fhir> {
    crate::auth::require_unrestricted(
        &caller,
        &resource_type,
        herald_security::auth::Permission::Read,
    )?;
    match state
        .capture
        .read(&caller.tenant, &resource_type, &id)
        .await?
    {
        Some(stored) if stored.deleted => Err(ApiError::new(
            StatusCode::GONE,
            IssueType::NotFound,
            format!("{resource_type}/{id} was deleted"),
        )),
        Some(stored) => {
            Ok(Fhir::ok(stored.resource.unwrap_or_default()).versioned(&stored.version_id, None))
        }
        None => Err(ApiError::not_found(format!(
            "{resource_type}/{id} is not known to Herald"
        ))),
    }
}

pub async fn bundle(
    State(state): State<SharedState>,
    caller: crate::auth::Caller,
    FhirJson(body): FhirJson,
) -> ApiResult<Fhir> {
    crate::auth::require_bundle(&caller, &body)?;
    Ok(Fhir::ok(state.capture.bundle(&caller.tenant, body).await?))
}

/// Herald is a subscription hub, not a FHIR server: it keeps only the latest version of
/// written resources and offers no search over them.
pub async fn search_not_supported(Path(resource_type): Path<String>) -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        IssueType::NotSupported,
        format!("search on {resource_type} is not supported; Herald keeps the latest version of written resources for reads by id only"),
    )
}
