//! `POST [base]/Subscription/$explain`: whether a resource matches criteria, and why,
//! for developers registering subscriptions. Nothing is stored or published: the caller
//! sends the resource (and its previous version), Herald evaluates the criteria the way
//! the matcher would and answers with the verdict and one `clause` part per clause.
//!
//! In (`Parameters`): `criteria` (valueString; optional with a topic), `language`
//! (valueCode `search` | `filter` | `fhirpath` | `cel`, default `search`), `resource`
//! and `previous` (resources), `interaction` (valueCode `create` | `update` | `delete`),
//! and either `topic` (the canonical of a topic this server knows) or `topicResource` (a
//! SubscriptionTopic). Out (`Parameters`): `result` (valueBoolean), `interaction`
//! (valueCode) and `clause` parts of `name`, `values` (one per value seen), `matched`
//! and `note`. Criteria the matcher would refuse are a 400 (`invalid`) or 422
//! (`not-supported`) `OperationOutcome`, as when a Subscription is created.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use herald_criteria::TopicDefinition;
use herald_criteria::{explain, CriteriaError, ExplainRequest, Explanation, Interaction, Language};
use herald_fhir::IssueType;
use serde_json::{json, Value};

use crate::body::{Fhir, FhirJson};
use crate::error::{ApiError, ApiResult};
use crate::SharedState;

const PARAMETERS: &str =
    "criteria, language, resource, previous, interaction, topic, topicResource";

/// Where each input parameter was found in the request.
#[derive(Default)]
struct Inputs<'a> {
    criteria: Option<&'a str>,
    language: Option<&'a str>,
    resource: Option<&'a Value>,
    previous: Option<&'a Value>,
    interaction: Option<&'a str>,
    topic: Option<&'a str>,
    topic_resource: Option<&'a Value>,
}

fn read_inputs(body: &Value) -> ApiResult<Inputs<'_>> {
    if body.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(ApiError::bad_request(
            "$explain takes a Parameters resource",
        ));
    }
    let mut inputs = Inputs::default();
    let parameters = match body.get("parameter") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(items)) => items.as_slice(),
        Some(_) => return Err(ApiError::bad_request("Parameters.parameter must be a list")),
    };
    for p in parameters {
        let Some(name) = p.get("name").and_then(Value::as_str) else {
            return Err(ApiError::bad_request("every parameter needs a name"));
        };
        let text = |keys: &[&str]| -> ApiResult<&str> {
            keys.iter()
                .find_map(|k| p.get(*k).and_then(Value::as_str))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "parameter '{name}' needs a {}",
                        keys.join(" or ")
                    ))
                })
        };
        let resource = || -> ApiResult<&Value> {
            p.get("resource").filter(|r| r.is_object()).ok_or_else(|| {
                ApiError::bad_request(format!("parameter '{name}' needs a resource"))
            })
        };
        let slot_filled = match name {
            "criteria" => inputs.criteria.replace(text(&["valueString"])?).is_some(),
            "language" => inputs
                .language
                .replace(text(&["valueCode", "valueString"])?)
                .is_some(),
            "interaction" => inputs
                .interaction
                .replace(text(&["valueCode", "valueString"])?)
                .is_some(),
            "topic" => inputs
                .topic
                .replace(text(&["valueCanonical", "valueUri", "valueString"])?)
                .is_some(),
            "resource" => inputs.resource.replace(resource()?).is_some(),
            "previous" => inputs.previous.replace(resource()?).is_some(),
            "topicResource" => inputs.topic_resource.replace(resource()?).is_some(),
            other => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    IssueType::NotSupported,
                    format!("$explain parameter '{other}' is not supported ({PARAMETERS})"),
                ))
            }
        };
        if slot_filled {
            return Err(ApiError::bad_request(format!(
                "parameter '{name}' is given more than once"
            )));
        }
    }
    Ok(inputs)
}

/// A criteria refusal at `expression`, with the status a Subscription create would get.
fn refused(error: &CriteriaError, expression: &str) -> ApiError {
    let status = if error.is_unsupported() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::BAD_REQUEST
    };
    ApiError {
        status,
        outcome: error.outcome(expression),
    }
}

async fn topic_of(
    state: &SharedState,
    tenant: &str,
    inputs: &Inputs<'_>,
) -> ApiResult<Option<Arc<TopicDefinition>>> {
    match (inputs.topic, inputs.topic_resource) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "give either topic (a canonical) or topicResource, not both",
        )),
        (Some(url), None) => match state.catalog.resolve(tenant, url).await? {
            Some(topic) => Ok(Some(topic)),
            None => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                IssueType::NotSupported,
                format!("topic: unknown SubscriptionTopic '{url}'"),
            )),
        },
        (None, Some(resource)) => TopicDefinition::from_resource(resource)
            .map(|t| Some(Arc::new(t)))
            .map_err(|e| refused(&e, "topicResource")),
        (None, None) => Ok(None),
    }
}

/// `POST [base]/Subscription/$explain` (see the module docs).
pub async fn explain_match(
    State(state): State<SharedState>,
    caller: crate::auth::Caller,
    FhirJson(body): FhirJson,
) -> ApiResult<Fhir> {
    caller.require("Subscription", herald_security::auth::Permission::Read)?;
    let inputs = read_inputs(&body)?;
    let resource = inputs
        .resource
        .ok_or_else(|| ApiError::bad_request("$explain needs a resource"))?;
    let language = match inputs.language {
        None => Language::Search,
        Some(code) => Language::from_code(code).ok_or_else(|| {
            ApiError::bad_request(format!(
                "language '{code}' is not one of {}",
                Language::CODES.join(", ")
            ))
        })?,
    };
    let interaction = inputs
        .interaction
        .map(|code| {
            Interaction::from_code(code).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "interaction '{code}' is not create, update or delete"
                ))
            })
        })
        .transpose()?;
    let topic = topic_of(&state, &caller.tenant, &inputs).await?;
    if inputs.criteria.is_none() && topic.is_none() {
        return Err(ApiError::bad_request(
            "$explain needs criteria, a topic, or both",
        ));
    }
    let request = ExplainRequest {
        criteria: inputs.criteria,
        language,
        resource,
        previous: inputs.previous,
        topic: topic.as_deref(),
        interaction,
    };
    let explanation = explain(&request).map_err(|e| refused(&e, "criteria"))?;
    Ok(Fhir::ok(to_parameters(&explanation)))
}

fn to_parameters(explanation: &Explanation) -> Value {
    let mut parameters = vec![
        json!({"name": "result", "valueBoolean": explanation.matched}),
        json!({"name": "interaction", "valueCode": explanation.interaction.code()}),
    ];
    for clause in &explanation.clauses {
        let mut parts = vec![json!({"name": "name", "valueString": clause.clause})];
        parts.extend(
            clause
                .values_seen
                .iter()
                .map(|v| json!({"name": "values", "valueString": v})),
        );
        parts.push(json!({"name": "matched", "valueBoolean": clause.matched}));
        if let Some(note) = &clause.note {
            parts.push(json!({"name": "note", "valueString": note}));
        }
        parameters.push(json!({"name": "clause", "part": parts}));
    }
    json!({"resourceType": "Parameters", "parameter": parameters})
}
