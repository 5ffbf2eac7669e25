//! `Subscription` create, read, update, delete and search.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use herald_audit::AuditKind;
use herald_bus::ControlNotice;
use herald_fhir::resource::is_valid_id;
use herald_fhir::{IssueType, SubscriptionSpec, SubscriptionStatus};
use herald_matcher::compile_subscription;
use herald_store::{NewSubscription, SubscriptionOwner, SubscriptionQuery, SubscriptionRecord};
use serde_json::Value;

use crate::auth::Caller;
use crate::body::{Fhir, FhirJson};
use crate::error::{ApiError, ApiResult};
use crate::render;
use crate::SharedState;
use crate::{audit, limits};
use herald_security::auth::{Access, Permission};

/// Validates fully (structure, channel, topic, filters, criteria) before anything is stored.
/// Returns the spec and the resource types its criteria can fire on.
async fn validate(
    state: &SharedState,
    tenant: &str,
    body: &Value,
) -> ApiResult<(SubscriptionSpec, Vec<String>)> {
    check_dates("Subscription", body)?;
    let spec = SubscriptionSpec::from_resource(body)?;
    limits::check_shape(&state.limits, &spec)?;
    // The resource types whose events can reach the subscriber: a topic's types that its
    // filters let through (typed filters exclude the types they do not name).
    let types = match compile_subscription(tenant, &spec, &state.catalog).await? {
        herald_matcher::CompiledCriteria::Topic { topic, filters } => topic
            .resource_types()
            .into_iter()
            .filter(|t| filters.can_match_type(t))
            .collect(),
        compiled => compiled.resource_types(),
    };
    herald_matcher::compile_cel_filter(&spec)?;
    if let Some(end) = spec.end {
        if end <= chrono::Utc::now() {
            return Err(ApiError::bad_request("Subscription.end: is in the past"));
        }
    }
    match spec.status {
        SubscriptionStatus::Requested | SubscriptionStatus::Active | SubscriptionStatus::Off => {
            Ok((spec, types))
        }
        other => Err(ApiError::bad_request(format!(
            "Subscription.status: a client may set requested, active or off, not '{}'",
            other.as_str()
        ))),
    }
}

/// Every date, dateTime and instant in the body is well-formed.
pub(crate) fn check_dates(resource_type: &str, body: &Value) -> ApiResult<()> {
    match herald_fhir::resource::first_invalid_date(body) {
        Some((path, value)) => Err(ApiError::bad_request(format!(
            "{resource_type}.{path}: '{value}' is not a valid FHIR date, dateTime or instant"
        ))),
        None => Ok(()),
    }
}

/// The patient a caller is limited to, if any.
fn caller_patient(access: &Access, caller: &Caller) -> Option<String> {
    match access {
        Access::Patient(p) => Some(p.clone()),
        Access::User => caller.principal.as_ref().and_then(|p| p.patient.clone()),
        Access::System => None,
    }
}

/// What a caller may subscribe to: it must be allowed to read every resource type the
/// criteria can fire on, and a caller limited to one patient must pin `patient` /
/// `subject` to exactly that patient for each of those types (a topic's filters apply per
/// type, so one pinned filter does not cover another type's events).
fn check_compartment(
    access: &Access,
    caller: &Caller,
    spec: &SubscriptionSpec,
    types: &[String],
) -> ApiResult<()> {
    for resource_type in types {
        caller.require(resource_type, Permission::Read)?;
    }
    let Some(patient) = caller_patient(access, caller) else {
        return Ok(());
    };
    let unpinned: Vec<&str> = types
        .iter()
        .map(String::as_str)
        .filter(|t| !pinned_to_patient(spec, t, &patient))
        .collect();
    if unpinned.is_empty() && !types.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        IssueType::Forbidden,
        format!(
            "this token is limited to Patient/{patient}: the criteria or a filter for each of {} must include patient=Patient/{patient}",
            unpinned.join(", ")
        ),
    ))
}

/// Whether events of `resource_type` can only match when they concern `patient`.
fn pinned_to_patient(spec: &SubscriptionSpec, resource_type: &str, patient: &str) -> bool {
    // (the filter's type if it names one, its query)
    let queries: Vec<(Option<&str>, &str)> = match &spec.kind {
        herald_fhir::SubscriptionKind::Criteria { criteria } => {
            vec![(None, criteria.split_once('?').map_or("", |(_, q)| q))]
        }
        herald_fhir::SubscriptionKind::Topic { filters, .. } => filters
            .iter()
            .map(|f| match f.split_once('?') {
                Some((t, q)) => (Some(t), q),
                // `Observation.patient=...` form: typed by the part before the dot.
                None => match f.split_once('.') {
                    Some((t, _)) if f.find('.') < f.find('=') => (Some(t), f.as_str()),
                    _ => (None, f.as_str()),
                },
            })
            .collect(),
    };
    let reference = format!("Patient/{patient}");
    queries
        .iter()
        .filter(|(t, _)| t.is_none_or(|t| t == resource_type))
        .flat_map(|(_, q)| q.split('&'))
        .any(|pair| {
            let Some((name, value)) = pair.split_once('=') else {
                return false;
            };
            // `Observation.patient` form: the part after the type.
            let name = name.rsplit_once('.').map_or(name, |(_, n)| n);
            let (base, modifier) = name
                .split_once(':')
                .map_or((name, None), |(b, m)| (b, Some(m)));
            let pinned =
                matches!(base, "patient" | "subject") && matches!(modifier, None | Some("Patient"));
            pinned
                && !value.contains(',')
                && (value == reference
                    || (value == patient && (base == "patient" || modifier == Some("Patient"))))
        })
}

/// Whether the caller may see and change this subscription: a `system/` grant sees every
/// subscription of its tenant; anyone else only those its own client created, and a caller
/// limited to a patient only those created for that patient. A subscription without an
/// owner (created in development mode) is visible to `system/` grants only.
pub(crate) fn visible(access: &Access, caller: &Caller, record: &SubscriptionRecord) -> bool {
    if matches!(access, Access::System) {
        return true;
    }
    let Some(owner) = &record.owner else {
        return false;
    };
    if owner.client_id != caller.client_id() {
        return false;
    }
    match caller_patient(access, caller) {
        Some(patient) => owner.patient.as_deref() == Some(patient.as_str()),
        None => true,
    }
}

/// The endpoint must pass the endpoint policy (no private, loopback, link-local or metadata
/// addresses; https outside development mode), and full resources never travel over http.
fn check_endpoint(state: &SharedState, spec: &SubscriptionSpec) -> ApiResult<()> {
    if spec.channel_type == herald_fhir::ChannelType::Nats {
        // A NATS subject, not a URL: see `resolve_nats_subject`.
        return Ok(());
    }
    let Some(endpoint) = &spec.endpoint else {
        return Ok(());
    };
    let checked = state.endpoint_policy.check_url(endpoint).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            IssueType::Security,
            format!("Subscription.channel.endpoint: {e}"),
        )
    })?;
    let full = spec.content == Some(herald_fhir::PayloadContent::FullResource)
        || (!spec.delivers_bundles() && spec.payload.is_some());
    // Development mode may send full resources over http to this machine only (no data
    // leaves it); everywhere else they travel over https.
    let local = match checked.host() {
        herald_security::endpoint::EndpointHost::Ip(ip) => ip.is_loopback(),
        herald_security::endpoint::EndpointHost::Domain(name) => name == "localhost",
    };
    let development = matches!(state.auth, crate::auth::AuthMode::Development);
    if full && !checked.is_https() && !(development && local) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            IssueType::Security,
            "Subscription.channel.endpoint: full resources are only sent over https",
        ));
    }
    Ok(())
}

/// A NATS-channel subscription publishes inside the caller's tenant namespace only
/// (`herald_fhir::subscription::nats`). The subject is resolved here, with the tenant and id,
/// and written into `channel.endpoint`, so the client reads back where it is published.
fn resolve_nats_subject(
    state: &SharedState,
    tenant: &str,
    id: &str,
    body: &mut Value,
    spec: &SubscriptionSpec,
) -> ApiResult<()> {
    if spec.channel_type != herald_fhir::ChannelType::Nats {
        return Ok(());
    }
    let Some(prefix) = &state.nats_subject_prefix else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            IssueType::NotSupported,
            "Subscription.channel.type: the NATS channel requires NATS mode; this Herald runs embedded (no nats_url configured)",
        ));
    };
    let subject = herald_fhir::subscription::nats::resolve_subject(
        prefix,
        tenant,
        id,
        spec.endpoint.as_deref(),
    )
    .map_err(|e| {
        let status = match e.code {
            IssueType::Security | IssueType::NotSupported => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError {
            status,
            outcome: e.outcome(),
        }
    })?;
    if let Some(channel) = body.get_mut("channel").and_then(Value::as_object_mut) {
        channel.insert("endpoint".into(), Value::String(subject));
    }
    Ok(())
}

/// The status Herald stores: a delivering subscription starts (again) with a handshake.
fn initial_status(spec: &SubscriptionSpec) -> SubscriptionStatus {
    match spec.status {
        SubscriptionStatus::Off => SubscriptionStatus::Off,
        _ => SubscriptionStatus::Requested,
    }
}

fn new_subscription<'a>(
    tenant: &'a str,
    id: &'a str,
    body: &'a Value,
    spec: &'a SubscriptionSpec,
    status: SubscriptionStatus,
    owner: Option<&'a SubscriptionOwner>,
) -> NewSubscription<'a> {
    NewSubscription {
        tenant,
        id,
        resource: body,
        status,
        criteria: match &spec.kind {
            herald_fhir::SubscriptionKind::Topic { topic_url, .. } => topic_url,
            herald_fhir::SubscriptionKind::Criteria { criteria } => criteria,
        },
        channel_type: spec.channel_type.as_str(),
        heartbeat_period: spec.heartbeat_period,
        owner,
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

/// Adds a generated signing secret to a rest-hook subscription that brought none.
/// Returns it, to be shown once in the response.
fn ensure_signing_secret(body: &mut Value, spec: &SubscriptionSpec) -> Option<String> {
    if spec.channel_type != herald_fhir::ChannelType::RestHook || !spec.signing_secrets.is_empty() {
        return None;
    }
    let secret = herald_delivery::signing::generate_secret();
    let channel = body.get_mut("channel")?.as_object_mut()?;
    let extensions = channel
        .entry("extension")
        .or_insert_with(|| serde_json::json!([]));
    extensions.as_array_mut()?.push(serde_json::json!({"url": herald_fhir::subscription::EXT_SIGNING_SECRET, "valueString": secret}));
    Some(secret)
}

/// The create response: like a read, but the secrets just created are shown this once.
fn created_with_secrets(state: &SharedState, record: &SubscriptionRecord, body: &Value) -> Fhir {
    let mut response = created(state, record, StatusCode::CREATED);
    if let Some(channel) = body.get("channel") {
        response.body["channel"] = channel.clone();
    }
    response
}

pub async fn create(
    State(state): State<SharedState>,
    caller: crate::auth::Caller,
    FhirJson(body): FhirJson,
) -> ApiResult<Fhir> {
    let result = create_subscription(&state, &caller, body).await;
    let entity = result
        .as_ref()
        .ok()
        .map(|(_, id)| format!("Subscription/{id}"));
    audit::outcome(
        &state,
        &caller,
        AuditKind::SubscriptionCreate,
        entity,
        &result,
    )
    .await;
    result.map(|(response, _)| response)
}

async fn create_subscription(
    state: &SharedState,
    caller: &crate::auth::Caller,
    mut body: Value,
) -> ApiResult<(Fhir, String)> {
    let state = state.clone();
    let access = caller.require("Subscription", Permission::Create)?;
    let (spec, types) = validate(&state, &caller.tenant, &body).await?;
    check_compartment(&access, caller, &spec, &types)?;
    check_endpoint(&state, &spec)?;
    limits::check_client_quota(&state, caller, None).await?;
    if spec
        .signing_secrets
        .iter()
        .any(|s| s == herald_fhir::subscription::REDACTED)
    {
        return Err(ApiError::bad_request(
            "Subscription.channel.extension: a new subscription cannot carry a redacted secret",
        ));
    }
    let id = uuid::Uuid::new_v4().to_string();
    resolve_nats_subject(&state, &caller.tenant, &id, &mut body, &spec)?;
    ensure_signing_secret(&mut body, &spec);
    let stored = client_part(&body);
    let owner = caller.owner();
    let record = state
        .store
        .create_subscription(new_subscription(
            &caller.tenant,
            &id,
            &stored,
            &spec,
            initial_status(&spec),
            owner.as_ref(),
        ))
        .await?;
    tracing::info!(id = %id, criteria = %record.criteria, "subscription created");
    announce(&state, &record).await;
    Ok((created_with_secrets(&state, &record, &body), id))
}

pub async fn read(
    State(state): State<SharedState>,
    caller: crate::auth::Caller,
    Path(id): Path<String>,
) -> ApiResult<Fhir> {
    let access = caller.require("Subscription", herald_security::auth::Permission::Read)?;
    let record = state
        .store
        .get_subscription(&caller.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Subscription/{id} is not known")))?;
    if !visible(&access, &caller, &record) {
        return Err(ApiError::not_found(format!(
            "Subscription/{id} is not known"
        )));
    }
    Ok(Fhir::ok(render::subscription(&record)).versioned(&record.version_id.to_string(), None))
}

pub async fn update(
    State(state): State<SharedState>,
    caller: crate::auth::Caller,
    Path(id): Path<String>,
    FhirJson(body): FhirJson,
) -> ApiResult<Fhir> {
    let result = update_subscription(&state, &caller, &id, body).await;
    let kind = match &result {
        Ok(response) if response.status == StatusCode::CREATED => AuditKind::SubscriptionCreate,
        _ => AuditKind::SubscriptionUpdate,
    };
    let entity = is_valid_id(&id).then(|| format!("Subscription/{id}"));
    audit::outcome(&state, &caller, kind, entity, &result).await;
    result
}

async fn update_subscription(
    state: &SharedState,
    caller: &crate::auth::Caller,
    id: &str,
    mut body: Value,
) -> ApiResult<Fhir> {
    let (state, id) = (state.clone(), id.to_owned());
    let access = caller.require("Subscription", Permission::Update)?;
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
    let existing = state.store.get_subscription(&caller.tenant, &id).await?;
    if let Some(current) = &existing {
        // A patient-limited caller may not take over a subscription it cannot see.
        if !visible(&access, caller, current) {
            return Err(ApiError::not_found(format!(
                "Subscription/{id} is not known"
            )));
        }
    }
    if let Some(current) = &existing {
        // Stored secrets go back only to the endpoint they were given for.
        let moved =
            current.resource.pointer("/channel/endpoint") != body.pointer("/channel/endpoint");
        if moved && render::carries_redacted(&body) {
            return Err(ApiError::bad_request(
                "Subscription.channel: the endpoint changed, so header values and signing secrets must be sent again instead of '***'",
            ));
        }
    }
    render::restore_secrets(&mut body, existing.as_ref().map(|r| &r.resource))
        .map_err(ApiError::bad_request)?;
    let (spec, types) = validate(&state, &caller.tenant, &body).await?;
    check_compartment(&access, caller, &spec, &types)?;
    check_endpoint(&state, &spec)?;
    let previous_owner = existing
        .as_ref()
        .and_then(|r| r.owner.as_ref())
        .map(|o| o.client_id.as_str());
    limits::check_client_quota(&state, caller, previous_owner).await?;
    // The creating client keeps its subscription: an administrator's edit does not hand it
    // the administrator's grant; the same client's update refreshes the grant (new token).
    let owner = match existing.as_ref().and_then(|r| r.owner.as_ref()) {
        Some(o) if o.client_id != caller.client_id() => Some(o.clone()),
        _ => caller.owner(),
    };
    resolve_nats_subject(&state, &caller.tenant, &id, &mut body, &spec)?;
    if existing.is_none() {
        ensure_signing_secret(&mut body, &spec);
    }
    let stored = client_part(&body);
    let Some(current) = existing else {
        // Update as create, with the client's id.
        let record = state
            .store
            .create_subscription(new_subscription(
                &caller.tenant,
                &id,
                &stored,
                &spec,
                initial_status(&spec),
                owner.as_ref(),
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
        .update_subscription(new_subscription(
            &caller.tenant,
            &id,
            &stored,
            &spec,
            status,
            owner.as_ref(),
        ))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Subscription/{id} was deleted meanwhile")))?;
    announce(&state, &record).await;
    Ok(created(&state, &record, StatusCode::OK))
}

pub async fn delete(
    State(state): State<SharedState>,
    caller: crate::auth::Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let result = delete_subscription(&state, &caller, &id).await;
    let entity = is_valid_id(&id).then(|| format!("Subscription/{id}"));
    audit::outcome(
        &state,
        &caller,
        AuditKind::SubscriptionDelete,
        entity,
        &result,
    )
    .await;
    result
}

async fn delete_subscription(
    state: &SharedState,
    caller: &crate::auth::Caller,
    id: &str,
) -> ApiResult<StatusCode> {
    let (state, id) = (state.clone(), id.to_owned());
    let access = caller.require("Subscription", herald_security::auth::Permission::Delete)?;
    let visible_to_caller = state
        .store
        .get_subscription(&caller.tenant, &id)
        .await?
        .is_some_and(|record| visible(&access, caller, &record));
    if !visible_to_caller || !state.store.delete_subscription(&caller.tenant, &id).await? {
        return Err(ApiError::not_found(format!(
            "Subscription/{id} is not known"
        )));
    }
    let notice = ControlNotice::SubscriptionChanged {
        tenant: caller.tenant.clone(),
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
    caller: crate::auth::Caller,
    Query(params): Query<Vec<(String, String)>>,
) -> ApiResult<Fhir> {
    let access = caller.require("Subscription", herald_security::auth::Permission::Search)?;
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
        .search_subscriptions(&caller.tenant, &query)
        .await?;
    let resources = records
        .iter()
        .filter(|r| channel_types.is_empty() || channel_types.contains(&r.channel_type))
        .filter(|r| visible(&access, &caller, r))
        .map(|r| (r.key.id.clone(), render::subscription(r)))
        .collect();
    Ok(Fhir::ok(render::searchset(
        &state.base_url,
        "Subscription",
        resources,
    ))
    .header(header::CACHE_CONTROL, "no-store"))
}
