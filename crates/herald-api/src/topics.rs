//! `SubscriptionTopic` (R4B/R5 JSON shape): create, read, list, update, delete. Built-in
//! topics are listed and readable for every tenant but cannot be changed.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use herald_bus::ControlNotice;
use herald_criteria::TopicDefinition;
use herald_fhir::resource::is_valid_id;
use herald_fhir::IssueType;
use herald_matcher::{builtin_topics, TopicCatalog};
use herald_store::TopicRecord;
use serde_json::{json, Value};

use crate::body::{Fhir, FhirJson};
use crate::error::{ApiError, ApiResult};
use crate::render::{millis_to_instant, searchset};
use crate::SharedState;

fn builtin_by_id(id: &str) -> Option<&'static Value> {
    builtin_topics().iter().find(|t| t["id"] == id)
}

fn render(record: &TopicRecord) -> Value {
    let mut resource = record.resource.clone();
    resource["id"] = json!(record.id);
    resource["meta"] = json!({"versionId": record.version_id.to_string(), "lastUpdated": millis_to_instant(record.updated_at)});
    resource
}

fn validate(body: &Value) -> ApiResult<String> {
    if body.get("resourceType").and_then(Value::as_str) != Some("SubscriptionTopic") {
        return Err(ApiError::bad_request(
            "SubscriptionTopic.resourceType: expected 'SubscriptionTopic'",
        ));
    }
    crate::subscriptions::check_dates("SubscriptionTopic", body)?;
    let topic = TopicDefinition::from_resource(body).map_err(|e| {
        let code = if e.message().contains("not supported") {
            IssueType::NotSupported
        } else {
            IssueType::Invalid
        };
        let status = if code == IssueType::NotSupported {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, code, format!("SubscriptionTopic: {}", e.message()))
    })?;
    if TopicCatalog::is_builtin(topic.url()) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            IssueType::Conflict,
            format!("'{}' is a built-in topic", topic.url()),
        ));
    }
    Ok(topic.url().to_owned())
}

async fn store(state: &SharedState, tenant: &str, id: &str, body: Value) -> ApiResult<TopicRecord> {
    crate::limits::check_topic(&state.limits, &body)?;
    let url = validate(&body)?;
    if let Some(existing) = state.store.get_topic_by_url(tenant, &url).await? {
        if existing.id != id {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                IssueType::Conflict,
                format!("SubscriptionTopic/{} already has url '{url}'", existing.id),
            ));
        }
    }
    let mut body = body;
    if let Some(o) = body.as_object_mut() {
        o.remove("meta");
        o.remove("id");
    }
    let record = state.store.put_topic(tenant, id, &url, &body).await?;
    if let Err(e) = state
        .bus
        .announce(ControlNotice::TopicChanged {
            tenant: tenant.to_owned(),
            url,
        })
        .await
    {
        tracing::warn!(error = %e, "could not announce a topic change");
    }
    Ok(record)
}

pub async fn create(
    State(state): State<SharedState>,
    caller: crate::auth::Caller,
    FhirJson(body): FhirJson,
) -> ApiResult<Fhir> {
    caller.require(
        "SubscriptionTopic",
        herald_security::auth::Permission::Create,
    )?;
    let id = uuid::Uuid::new_v4().to_string();
    let record = store(&state, &caller.tenant, &id, body).await?;
    let location = format!(
        "{}/SubscriptionTopic/{}/_history/{}",
        state.base_url, record.id, record.version_id
    );
    Ok(Fhir::ok(render(&record))
        .with_status(StatusCode::CREATED)
        .versioned(&record.version_id.to_string(), Some(location)))
}

pub async fn update(
    State(state): State<SharedState>,
    caller: crate::auth::Caller,
    Path(id): Path<String>,
    FhirJson(body): FhirJson,
) -> ApiResult<Fhir> {
    caller.require(
        "SubscriptionTopic",
        herald_security::auth::Permission::Update,
    )?;
    if !is_valid_id(&id) || builtin_by_id(&id).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            IssueType::Conflict,
            format!("SubscriptionTopic/{id} cannot be written"),
        ));
    }
    if let Some(body_id) = body.get("id").and_then(Value::as_str) {
        if body_id != id {
            return Err(ApiError::bad_request(format!(
                "SubscriptionTopic.id '{body_id}' does not match '{id}'"
            )));
        }
    }
    let existed = state.store.get_topic(&caller.tenant, &id).await?;
    if let Some(existing) = &existed {
        // Changing the url would orphan subscriptions that name the old one.
        let in_use = state
            .store
            .count_subscriptions_with_criteria(&caller.tenant, &existing.url)
            .await?;
        if in_use > 0 && body.get("url") != Some(&json!(existing.url)) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                IssueType::Conflict,
                format!(
                    "{in_use} subscription(s) use '{}'; its url cannot change",
                    existing.url
                ),
            ));
        }
    }
    let record = store(&state, &caller.tenant, &id, body).await?;
    let status = if existed.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(Fhir::ok(render(&record))
        .with_status(status)
        .versioned(&record.version_id.to_string(), None))
}

pub async fn read(
    State(state): State<SharedState>,
    caller: crate::auth::Caller,
    Path(id): Path<String>,
) -> ApiResult<Fhir> {
    caller.require("SubscriptionTopic", herald_security::auth::Permission::Read)?;
    if let Some(builtin) = builtin_by_id(&id) {
        return Ok(Fhir::ok(builtin.clone()));
    }
    let record = state
        .store
        .get_topic(&caller.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("SubscriptionTopic/{id} is not known")))?;
    Ok(Fhir::ok(render(&record)).versioned(&record.version_id.to_string(), None))
}

pub async fn list(
    State(state): State<SharedState>,
    caller: crate::auth::Caller,
) -> ApiResult<Fhir> {
    caller.require(
        "SubscriptionTopic",
        herald_security::auth::Permission::Search,
    )?;
    let mut resources: Vec<(String, Value)> = builtin_topics()
        .iter()
        .map(|t| (t["id"].as_str().unwrap_or_default().to_owned(), t.clone()))
        .collect();
    for record in state.store.list_topics(&caller.tenant).await? {
        resources.push((record.id.clone(), render(&record)));
    }
    Ok(Fhir::ok(searchset(
        &state.base_url,
        "SubscriptionTopic",
        resources,
    )))
}

pub async fn delete(
    State(state): State<SharedState>,
    caller: crate::auth::Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(
        "SubscriptionTopic",
        herald_security::auth::Permission::Delete,
    )?;
    if builtin_by_id(&id).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            IssueType::Conflict,
            format!("SubscriptionTopic/{id} is built in and cannot be deleted"),
        ));
    }
    let record = state
        .store
        .get_topic(&caller.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("SubscriptionTopic/{id} is not known")))?;
    let in_use = state
        .store
        .count_subscriptions_with_criteria(&caller.tenant, &record.url)
        .await?;
    if in_use > 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            IssueType::Conflict,
            format!(
                "SubscriptionTopic/{id} is used by {in_use} subscription(s); delete them first"
            ),
        ));
    }
    state.store.delete_topic(&caller.tenant, &id).await?;
    if let Err(e) = state
        .bus
        .announce(ControlNotice::TopicChanged {
            tenant: caller.tenant.clone(),
            url: record.url,
        })
        .await
    {
        tracing::warn!(error = %e, "could not announce a topic deletion");
    }
    Ok(StatusCode::NO_CONTENT)
}
