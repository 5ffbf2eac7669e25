//! Stored records rendered as FHIR resources and bundles.

use chrono::{TimeZone, Utc};
use herald_fhir::bundle::instant;
use herald_store::SubscriptionRecord;
use serde_json::{json, Value};

pub fn millis_to_instant(ms: i64) -> String {
    instant(
        Utc.timestamp_millis_opt(ms)
            .single()
            .unwrap_or_else(Utc::now),
    )
}

/// The Subscription as clients see it: their resource plus server-managed `id`, `meta`,
/// `status` and `error`.
pub fn subscription(record: &SubscriptionRecord) -> Value {
    let mut resource = record.resource.clone();
    if let Some(object) = resource.as_object_mut() {
        object.insert("id".into(), json!(record.key.id));
        let meta = object.entry("meta").or_insert_with(|| json!({}));
        if !meta.is_object() {
            *meta = json!({});
        }
        meta["versionId"] = json!(record.version_id.to_string());
        meta["lastUpdated"] = json!(millis_to_instant(record.updated_at));
        object.insert("status".into(), json!(record.status.as_str()));
        match &record.error {
            Some(error) => {
                object.insert("error".into(), json!(error));
            }
            None => {
                object.remove("error");
            }
        }
    }
    resource
}

/// A `searchset` Bundle of resources.
pub fn searchset(base_url: &str, resource_type: &str, resources: Vec<(String, Value)>) -> Value {
    let entries: Vec<Value> = resources
        .into_iter()
        .map(|(id, resource)| json!({"fullUrl": format!("{base_url}/{resource_type}/{id}"), "resource": resource, "search": {"mode": "match"}}))
        .collect();
    json!({"resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries})
}
