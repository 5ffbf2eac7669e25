//! `$status` (type and instance level) and `$events`.

use axum::extract::{Path, Query, State};
use herald_delivery::access::permits;
use herald_delivery::payload::{additional_context, notification_events, ContextScope};
use herald_fhir::bundle::{notification_bundle, status_searchset, NotificationType, StatusContext};
use herald_fhir::{PayloadContent, SubscriptionSpec};
use herald_store::{SubscriptionQuery, SubscriptionRecord};

use crate::body::Fhir;
use crate::error::{ApiError, ApiResult};
use crate::subscriptions::values;
use crate::SharedState;

/// Most events one `$events` call returns.
const MAX_EVENTS_PER_CALL: i64 = 1000;

fn content_of(record: &SubscriptionRecord) -> (Option<String>, PayloadContent) {
    match SubscriptionSpec::from_resource(&record.resource) {
        Ok(spec) => (
            spec.topic_url().map(str::to_owned),
            spec.content.unwrap_or(PayloadContent::Empty),
        ),
        Err(_) => (None, PayloadContent::Empty),
    }
}

fn status_bundle(state: &SharedState, records: &[SubscriptionRecord]) -> Fhir {
    let owned: Vec<(SubscriptionRecord, Option<String>, PayloadContent)> = records
        .iter()
        .map(|r| {
            let (topic, content) = content_of(r);
            (r.clone(), topic, content)
        })
        .collect();
    let statuses = owned
        .iter()
        .map(|(r, topic, content)| {
            (
                StatusContext {
                    base_url: &state.base_url,
                    subscription_id: &r.key.id,
                    topic_url: topic.as_deref(),
                    status: r.status,
                    notification_type: NotificationType::QueryStatus,
                    events_since_subscription_start: r.events_since_start,
                    error: r.error.as_deref(),
                },
                *content,
            )
        })
        .collect();
    Fhir::ok(status_searchset(statuses))
}

/// `GET [base]/Subscription/$status?id=..&status=..` — `id` and `status` each OR-ed.
pub async fn status_type(
    State(state): State<SharedState>,
    caller: crate::auth::Caller,
    Query(params): Query<Vec<(String, String)>>,
) -> ApiResult<Fhir> {
    let access = caller.require("Subscription", herald_security::auth::Permission::Read)?;
    if let Some((unknown, _)) = params.iter().find(|(k, _)| k != "id" && k != "status") {
        return Err(ApiError::bad_request(format!(
            "$status has no parameter '{unknown}' (id, status)"
        )));
    }
    let query = SubscriptionQuery {
        ids: values(&params, "id"),
        statuses: values(&params, "status"),
        criteria: vec![],
        limit: Some(1000),
    };
    let records: Vec<SubscriptionRecord> = state
        .store
        .search_subscriptions(&caller.tenant, &query)
        .await?
        .into_iter()
        .filter(|r| crate::subscriptions::visible(&access, &caller, r))
        .collect();
    Ok(status_bundle(&state, &records))
}

async fn load_visible(
    state: &SharedState,
    access: &herald_security::auth::Access,
    caller: &crate::auth::Caller,
    id: &str,
) -> ApiResult<SubscriptionRecord> {
    let record = load(state, &caller.tenant, id).await?;
    if !crate::subscriptions::visible(access, caller, &record) {
        return Err(ApiError::not_found(format!(
            "Subscription/{id} is not known"
        )));
    }
    Ok(record)
}

async fn load(state: &SharedState, tenant: &str, id: &str) -> ApiResult<SubscriptionRecord> {
    state
        .store
        .get_subscription(tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Subscription/{id} is not known")))
}

/// `GET [base]/Subscription/[id]/$status`.
pub async fn status_instance(
    State(state): State<SharedState>,
    caller: crate::auth::Caller,
    Path(id): Path<String>,
) -> ApiResult<Fhir> {
    let access = caller.require("Subscription", herald_security::auth::Permission::Read)?;
    let record = load_visible(&state, &access, &caller, &id).await?;
    Ok(status_bundle(&state, std::slice::from_ref(&record)))
}

fn number(params: &[(String, String)], name: &str) -> ApiResult<Option<i64>> {
    match params.iter().find(|(k, _)| k == name) {
        None => Ok(None),
        Some((_, v)) => v.trim().parse::<i64>().map(Some).map_err(|_| {
            ApiError::bad_request(format!("{name} must be an event number, not '{v}'"))
        }),
    }
}

/// `GET [base]/Subscription/[id]/$events?eventsSinceNumber=&eventsUntilNumber=&content=`:
/// stored events, inclusive bounds, as a `query-event` history bundle. `content` may lower
/// the subscription's content level, never raise it.
pub async fn events(
    State(state): State<SharedState>,
    caller: crate::auth::Caller,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> ApiResult<Fhir> {
    let access = caller.require("Subscription", herald_security::auth::Permission::Read)?;
    if let Some((unknown, _)) = params.iter().find(|(k, _)| {
        !matches!(
            k.as_str(),
            "eventsSinceNumber" | "eventsUntilNumber" | "content"
        )
    }) {
        return Err(ApiError::bad_request(format!(
            "$events has no parameter '{unknown}'"
        )));
    }
    let record = load_visible(&state, &access, &caller, &id).await?;
    if let Some(reason) = state.access_guard.revocation(&record).await? {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            herald_fhir::IssueType::Forbidden,
            format!("Subscription/{id}: {reason}"),
        ));
    }
    let since = number(&params, "eventsSinceNumber")?.unwrap_or(1).max(1);
    let until = number(&params, "eventsUntilNumber")?.unwrap_or(record.events_since_start);
    if until < since {
        return Err(ApiError::bad_request(
            "eventsUntilNumber is lower than eventsSinceNumber",
        ));
    }
    let (topic, allowed) = content_of(&record);
    let content = match params.iter().find(|(k, _)| k == "content") {
        None => allowed,
        Some((_, v)) => {
            let asked = PayloadContent::parse(v).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "content '{v}' is not empty, id-only or full-resource"
                ))
            })?;
            let rank = |c: PayloadContent| match c {
                PayloadContent::Empty => 0,
                PayloadContent::IdOnly => 1,
                PayloadContent::FullResource => 2,
            };
            if rank(asked) > rank(allowed) {
                allowed
            } else {
                asked
            }
        }
    };
    let stored = state
        .store
        .notifications(&caller.tenant, &id, since, until, MAX_EVENTS_PER_CALL)
        .await?;
    // As at every send: nothing the subscription's owner, or this caller, may no longer
    // read; a withheld event leaves a gap in the numbers.
    let caller_grant = caller.owner();
    let stored: Vec<_> = stored
        .into_iter()
        .filter(|n| {
            permits(record.owner.as_ref(), &n.event).is_ok()
                && permits(caller_grant.as_ref(), &n.event).is_ok()
        })
        .collect();
    // The additional context as the subscription's owner would receive it now.
    let scope = ContextScope {
        tenant: &caller.tenant,
        topic_url: topic.as_deref(),
        content,
        owner: record.owner.as_ref(),
    };
    let context = additional_context(state.store.as_ref(), &scope, &stored).await?;
    let events = notification_events(&stored, context, content);
    let ctx = StatusContext {
        base_url: &state.base_url,
        subscription_id: &id,
        topic_url: topic.as_deref(),
        status: record.status,
        notification_type: NotificationType::QueryEvent,
        events_since_subscription_start: record.events_since_start,
        error: record.error.as_deref(),
    };
    Ok(Fhir::ok(notification_bundle(&ctx, &events, content)))
}

/// `POST [base]/Subscription/[id]/$resend` (Backport 1.2.0): re-delivers stored events from
/// `eventsSinceNumber` on, in order, through the subscription's channel. Delivery is a
/// per-subscription cursor, so everything after the first resent event follows again too
/// (subscribers already tolerate duplicates). Parameters come as a `Parameters` body.
pub async fn resend(
    State(state): State<SharedState>,
    caller: crate::auth::Caller,
    Path(id): Path<String>,
    crate::body::FhirJson(body): crate::body::FhirJson,
) -> ApiResult<Fhir> {
    let access = caller.require("Subscription", herald_security::auth::Permission::Update)?;
    if body.get("resourceType").and_then(serde_json::Value::as_str) != Some("Parameters") {
        return Err(ApiError::bad_request("$resend takes a Parameters resource"));
    }
    let params = body
        .get("parameter")
        .and_then(serde_json::Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut since = None;
    for p in &params {
        match p.get("name").and_then(serde_json::Value::as_str) {
            Some("eventsSinceNumber") => {
                let text = p
                    .get("valueString")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default();
                since = Some(text.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "eventsSinceNumber must be an event number, not '{text}'"
                    ))
                })?);
            }
            Some(other) => {
                return Err(ApiError::new(
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    herald_fhir::IssueType::NotSupported,
                    format!("$resend parameter '{other}' is not supported (eventsSinceNumber)"),
                ))
            }
            None => return Err(ApiError::bad_request("every parameter needs a name")),
        }
    }
    let since = since
        .ok_or_else(|| ApiError::bad_request("$resend needs eventsSinceNumber"))?
        .max(1);
    let record = load_visible(&state, &access, &caller, &id).await?;
    let key = record.key.clone();
    let rewound = state.store.rewind_delivery(&key, since).await?;
    state.delivery_wake.notify_one();
    let message = if rewound {
        format!(
            "events {since}..{} will be delivered again, in order",
            record.events_since_start
        )
    } else {
        format!("nothing to resend: events from {since} on have not been delivered yet")
    };
    Ok(Fhir::ok(
        herald_fhir::OperationOutcome::information(message).to_json(),
    ))
}
