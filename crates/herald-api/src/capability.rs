//! `GET [base]/metadata`: the CapabilityStatement, per the Backport IG's R4 server
//! statement: Subscription with the backport profile, `$status` / `$events`, topic discovery
//! through `capabilitystatement-subscriptiontopic-canonical`, the write facade.

use axum::extract::State;
use herald_fhir::resource::R4_RESOURCE_TYPES;
use herald_fhir::subscription::PROFILE_BACKPORT_SUBSCRIPTION;
use herald_matcher::builtin_topics;
use serde_json::{json, Value};

use crate::body::Fhir;
use crate::error::ApiResult;
use crate::SharedState;

const TOPIC_CANONICAL_EXT: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/capabilitystatement-subscriptiontopic-canonical";

/// Herald's own operation: no published OperationDefinition exists for it.
const EXPLAIN_OPERATION: &str =
    "https://herald.health/fhir/OperationDefinition/Subscription-explain";

pub async fn metadata(State(state): State<SharedState>) -> ApiResult<Fhir> {
    let mut topics: Vec<String> = builtin_topics()
        .iter()
        .filter_map(|t| t["url"].as_str().map(str::to_owned))
        .collect();
    topics.extend(
        state
            .store
            .list_topics(&state.tenant)
            .await?
            .into_iter()
            .map(|t| t.url),
    );
    let topic_extensions: Vec<Value> = topics
        .iter()
        .map(|url| json!({"url": TOPIC_CANONICAL_EXT, "valueCanonical": url}))
        .collect();

    let subscription = json!({
        "type": "Subscription",
        "extension": topic_extensions,
        "supportedProfile": [PROFILE_BACKPORT_SUBSCRIPTION],
        "interaction": [{"code": "read"}, {"code": "create"}, {"code": "update"}, {"code": "delete"}, {"code": "search-type"}],
        "searchParam": [
            {"name": "url", "definition": "http://hl7.org/fhir/SearchParameter/Subscription-url", "type": "uri"},
            {"name": "status", "definition": "http://hl7.org/fhir/SearchParameter/Subscription-status", "type": "token"},
            {"name": "criteria", "definition": "http://hl7.org/fhir/SearchParameter/Subscription-criteria", "type": "string"},
            {"name": "type", "definition": "http://hl7.org/fhir/SearchParameter/Subscription-type", "type": "token"},
            {"name": "_id", "definition": "http://hl7.org/fhir/SearchParameter/Resource-id", "type": "token"}
        ],
        "operation": [
            {"name": "status", "definition": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status"},
            {"name": "events", "definition": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-events"},
            {"name": "resend", "definition": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-resend"},
            {"name": "get-ws-binding-token", "definition": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-get-ws-binding-token"},
            {"name": "explain", "definition": EXPLAIN_OPERATION, "documentation": "Whether a resource matches Subscription criteria (search, filter, FHIRPath or CEL, optionally under a SubscriptionTopic), and why, clause by clause"}
        ]
    });
    // SubscriptionTopic is not an R4 resource type, so it cannot be listed here; topics are
    // discovered through the extension above (and served at [base]/SubscriptionTopic).
    let mut resources = vec![subscription];
    for resource_type in R4_RESOURCE_TYPES {
        if matches!(
            *resource_type,
            "Subscription" | "Bundle" | "Parameters" | "OperationOutcome"
        ) {
            continue;
        }
        resources.push(json!({
            "type": resource_type,
            "interaction": [{"code": "read"}, {"code": "create"}, {"code": "update"}, {"code": "delete"}]
        }));
    }
    Ok(Fhir::ok(json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-24",
        "kind": "instance",
        "instantiates": ["http://hl7.org/fhir/uv/subscriptions-backport/CapabilityStatement/backport-subscription-server-r4"],
        "software": {"name": "Herald", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Herald FHIR Subscription hub", "url": state.base_url},
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json"],
        "implementationGuide": ["http://hl7.org/fhir/uv/subscriptions-backport/ImplementationGuide/hl7.fhir.uv.subscriptions-backport"],
        "rest": [{
            "mode": "server",
            "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket", "valueUri": websocket_url(&state.base_url)}],
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}]
        }]
    })))
}

/// `ws(s)://<host>/ws` for a base URL `http(s)://<host>/fhir`.
fn websocket_url(base_url: &str) -> String {
    let root = base_url.strip_suffix("/fhir").unwrap_or(base_url);
    let root = root
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    format!("{root}/ws")
}
