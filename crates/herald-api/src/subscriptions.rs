//! `Subscription` create, read, update, delete and search.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use herald_bus::ControlNotice;
use herald_fhir::resource::is_valid_id;
use herald_fhir::{IssueType, SubscriptionSpec, SubscriptionStatus};
use herald_matcher::compile_subscription;
use herald_store::{NewSubscription, SubscriptionQuery, SubscriptionRecord};
use serde_json::Value;

use crate::body::{Fhir, FhirJson};
use crate::error::{ApiError, ApiResult};
use crate::render;
use crate::SharedState;

/// Validates fully (structure, channel, topic, filters, criteria) before anything is stored.
async fn validate(state: &SharedState, body: &Value) -> ApiResult<SubscriptionSpec> {
    let spec = SubscriptionSpec::from_resource(body)?;
    compile_subscription(&state.tenant, &spec, &state.catalog).await?;
    if let Some(end) = spec.end {
        if end <= chrono::Utc::now() {
            return Err(ApiError::bad_request("Subscription.end: is in the past"));
        }
    }
    match spec.status {
        SubscriptionStatus::Requested | SubscriptionStatus::Active | SubscriptionStatus::Off => {
            Ok(spec)
        }
        other => Err(ApiError::bad_request(format!(
            "Subscription.status: a client may set requested, active or off, not '{}'",
            other.as_str()
        ))),
    }
}

/// The status Herald stores: a delivering subscription starts (again) with a handshake.
fn initial_status(spec: &SubscriptionSpec) -> SubscriptionStatus {
    match spec.status {
        SubscriptionStatus::Off => SubscriptionStatus::Off,
        _ => SubscriptionStatus::Requested,
    }
}

fn new_subscription<'a>(
    state: &'a SharedState,
    id: &'a str,
    body: &'a Value,
    spec: &'a SubscriptionSpec,
    status: SubscriptionStatus,
) -> NewSubscription<'a> {
    NewSubscription {
        tenant: &state.tenant,
        id,
        resource: body,
        status,
        criteria: match &spec.kind {
            herald_fhir::SubscriptionKind::Topic { topic_url, .. } => topic_url,
            herald_fhir::SubscriptionKind::Criteria { criteria } => criteria,
        },
        channel_type: spec.channel_type.as_str(),
        heartbeat_period: spec.heartbeat_period,
        now_ms: chrono::Utc::now().timestamp_millis(),
    }
}

/// Stores the resource without server-managed fields.
fn client_part(body: &Value) -> Value {
    let mut body = body.clone();
    if let Some(object) = body.as_object_mut() {
        object.remove("id");
        object.remove("error");
        if let Some(meta) = object.get_mut("meta").and_then(Value::as_object_mut) {
            meta.remove("versionId");
            meta.remove("lastUpdated");
        }
    }
    body
}

async fn announce(state: &SharedState, record: &SubscriptionRecord) {
    if let Err(e) = state.index.refresh(&record.key).await {
        tracing::warn!(error = %e, "could not refresh the local subscription index");
    }
    let notice = ControlNotice::SubscriptionChanged {
        tenant: record.key.tenant.clone(),
        id: record.key.id.clone(),
    };
    if let Err(e) = state.bus.announce(notice).await {
        // The periodic index reload picks the change up; log, do not fail the request.
        tracing::warn!(error = %e, "could not announce a subscription change");
    }
    state.delivery_wake.notify_one();
}

fn created(state: &SharedState, record: &SubscriptionRecord, status: StatusCode) -> Fhir {
    let location = format!(
        "{}/Subscription/{}/_history/{}",
        state.base_url, record.key.id, record.version_id
    );
    Fhir::ok(render::subscription(record))
        .with_status(status)
        .versioned(&record.version_id.to_string(), Some(location))
}

pub async fn create(State(state): State<SharedState>, FhirJson(body): FhirJson) -> ApiResult<Fhir> {
    let spec = validate(&state, &body).await?;
    let id = uuid::Uuid::new_v4().to_string();
    let stored = client_part(&body);
    let record = state
        .store
        .create_subscription(new_subscription(
            &state,
            &id,
            &stored,
            &spec,
            initial_status(&spec),
        ))
        .await?;
    tracing::info!(id = %id, criteria = %record.criteria, "subscription created");
    announce(&state, &record).await;
    Ok(created(&state, &record, StatusCode::CREATED))
}

pub async fn read(State(state): State<SharedState>, Path(id): Path<String>) -> ApiResult<Fhir> {
    let record = state
        .store
        .get_subscription(&state.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Subscription/{id} is not known")))?;
    Ok(Fhir::ok(render::subscription(&record)).versioned(&record.version_id.to_string(), None))
}

pub async fn update(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    FhirJson(body): FhirJson,
) -> ApiResult<Fhir> {
    if !is_valid_id(&id) {
        return Err(ApiError::bad_request(format!(
            "'{id}' is not a valid FHIR id"
        )));
    }
    match body.get("id").and_then(Value::as_str) {
        Some(body_id) if body_id == id => {}
        Some(body_id) => {
            return Err(ApiError::bad_request(format!(
                "Subscription.id '{body_id}' does not match '{id}' in the URL"
            )))
        }
        None => {
            return Err(ApiError::bad_request(
                "Subscription.id is required in an update",
            ))
        }
    }
    let spec = validate(&state, &body).await?;
    let stored = client_part(&body);
    let Some(current) = state.store.get_subscription(&state.tenant, &id).await? else {
        // Update as create, with the client's id.
        let record = state
            .store
            .create_subscription(new_subscription(
                &state,
                &id,
                &stored,
                &spec,
                initial_status(&spec),
            ))
            .await?;
        announce(&state, &record).await;
        return Ok(created(&state, &record, StatusCode::CREATED));
    };
    // A client sets requested or active to (re)start delivery. Herald keeps 'active' only if
    // the handshake already succeeded for the same endpoint; otherwise it handshakes again.
    let same_endpoint =
        current.resource.pointer("/channel/endpoint") == body.pointer("/channel/endpoint");
    let status = match spec.status {
        SubscriptionStatus::Off => SubscriptionStatus::Off,
        SubscriptionStatus::Active
            if same_endpoint && current.delivery_state == herald_store::DeliveryState::Ready =>
        {
            SubscriptionStatus::Active
        }
        _ => SubscriptionStatus::Requested,
    };
    let record = state
        .store
        .update_subscription(new_subscription(&state, &id, &stored, &spec, status))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Subscription/{id} was deleted meanwhile")))?;
    announce(&state, &record).await;
    Ok(created(&state, &record, StatusCode::OK))
}

pub async fn delete(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if !state.store.delete_subscription(&state.tenant, &id).await? {
        return Err(ApiError::not_found(format!(
            "Subscription/{id} is not known"
        )));
    }
    let notice = ControlNotice::SubscriptionChanged {
        tenant: state.tenant.clone(),
        id: id.clone(),
    };
    if let Err(e) = state.bus.announce(notice).await {
        tracing::warn!(error = %e, "could not announce a subscription deletion");
    }
    tracing::info!(id = %id, "subscription deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Splits repeated and comma-separated parameter values.
pub(crate) fn values(params: &[(String, String)], name: &str) -> Vec<String> {
    params
        .iter()
        .filter(|(k, _)| k == name)
        .flat_map(|(_, v)| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

pub async fn search(
    State(state): State<SharedState>,
    Query(params): Query<Vec<(String, String)>>,
) -> ApiResult<Fhir> {
    let known: HashMap<&str, ()> = [
        "_id", "status", "url", "criteria", "type", "_count", "_format",
    ]
    .into_iter()
    .map(|k| (k, ()))
    .collect();
    if let Some((unknown, _)) = params.iter().find(|(k, _)| !known.contains_key(k.as_str())) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            IssueType::NotSupported,
            format!("search parameter '{unknown}' is not supported on Subscription (_id, status, url, criteria, type, _count)"),
        ));
    }
    let mut criteria = values(&params, "url");
    criteria.extend(
        params
            .iter()
            .filter(|(k, _)| k == "criteria")
            .map(|(_, v)| v.clone()),
    );
    let limit = match values(&params, "_count").first() {
        Some(n) => Some(
            n.parse::<i64>()
                .map_err(|_| ApiError::bad_request("_count must be a number"))?
                .clamp(0, 1000),
        ),
        None => Some(100),
    };
    let query = SubscriptionQuery {
        ids: values(&params, "_id"),
        statuses: values(&params, "status"),
        criteria,
        limit,
    };
    let channel_types = values(&params, "type");
    let records = state
        .store
        .search_subscriptions(&state.tenant, &query)
        .await?;
    let resources = records
        .iter()
        .filter(|r| channel_types.is_empty() || channel_types.contains(&r.channel_type))
        .map(|r| (r.key.id.clone(), render::subscription(r)))
        .collect();
    Ok(Fhir::ok(render::searchset(
        &state.base_url,
        "Subscription",
        resources,
    ))
    .header(header::CACHE_CONTROL, "no-store"))
}
