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

fn redact_secrets_in(object: &mut serde_json::Map<String, Value>) {
    if let Some(channel) = object.remove("channel") {
        let mut wrapper = json!({"channel": channel});
        redact_secrets(&mut wrapper);
        if let Some(channel) = wrapper.get("channel") {
            object.insert("channel".into(), channel.clone());
        }
    }
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
        redact_secrets_in(object);
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

/// Replaces signing secrets and `channel.header` values by [`REDACTED`]: secrets are shown
/// once, in the response to the request that created them, never after.
pub fn redact_secrets(resource: &mut Value) {
    use herald_fhir::subscription::{EXT_SIGNING_SECRET, REDACTED};
    let Some(channel) = resource.get_mut("channel") else {
        return;
    };
    if let Some(headers) = channel.get_mut("header").and_then(Value::as_array_mut) {
        for header in headers.iter_mut() {
            if let Some((name, _)) = header.as_str().and_then(|h| h.split_once(':')) {
                *header = json!(format!("{}: {REDACTED}", name.trim()));
            }
        }
    }
    if let Some(extensions) = channel.get_mut("extension").and_then(Value::as_array_mut) {
        for ext in extensions
            .iter_mut()
            .filter(|e| e["url"] == EXT_SIGNING_SECRET)
        {
            ext["valueString"] = json!(REDACTED);
        }
    }
}

/// Puts stored secrets back where an update carries [`REDACTED`] (a client sending back what
/// it read). A redacted value with nothing stored to stand for is an error.
/// Whether the incoming channel carries a redacted (`***`) header value or secret.
pub fn carries_redacted(incoming: &Value) -> bool {
    use herald_fhir::subscription::REDACTED;
    let Some(channel) = incoming.get("channel") else {
        return false;
    };
    let header = channel
        .get("header")
        .and_then(Value::as_array)
        .is_some_and(|h| {
            h.iter().any(|x| {
                x.as_str()
                    .and_then(|x| x.split_once(':'))
                    .is_some_and(|(_, v)| v.trim() == REDACTED)
            })
        });
    let secret = channel
        .get("extension")
        .and_then(Value::as_array)
        .is_some_and(|e| e.iter().any(|x| x["valueString"] == REDACTED));
    header || secret
}

pub fn restore_secrets(incoming: &mut Value, stored: Option<&Value>) -> Result<(), String> {
    use herald_fhir::subscription::{EXT_SIGNING_SECRET, REDACTED};
    let stored_headers: Vec<(String, String)> = stored
        .and_then(|s| s.pointer("/channel/header"))
        .and_then(Value::as_array)
        .map(|h| {
            h.iter()
                .filter_map(|x| {
                    x.as_str()?
                        .split_once(':')
                        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                })
                .collect()
        })
        .unwrap_or_default();
    let stored_secrets: Vec<String> = stored
        .and_then(|s| s.pointer("/channel/extension"))
        .and_then(Value::as_array)
        .map(|e| {
            e.iter()
                .filter(|x| x["url"] == EXT_SIGNING_SECRET)
                .filter_map(|x| x["valueString"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let Some(channel) = incoming.get_mut("channel") else {
        return Ok(());
    };
    if let Some(headers) = channel.get_mut("header").and_then(Value::as_array_mut) {
        for header in headers.iter_mut() {
            let Some((name, value)) = header.as_str().and_then(|h| h.split_once(':')) else {
                continue;
            };
            if value.trim() != REDACTED {
                continue;
            }
            let name = name.trim().to_owned();
            let kept = stored_headers
                .iter()
                .find(|(n, _)| *n == name.to_ascii_lowercase())
                .map(|(_, v)| v.clone());
            match kept {
                Some(v) => *header = json!(format!("{name}: {v}")),
                None => {
                    return Err(format!(
                    "Subscription.channel.header: '{name}' is redacted but no stored value exists"
                ))
                }
            }
        }
    }
    if let Some(extensions) = channel.get_mut("extension").and_then(Value::as_array_mut) {
        let mut stored_iter = stored_secrets.into_iter();
        for ext in extensions
            .iter_mut()
            .filter(|e| e["url"] == EXT_SIGNING_SECRET)
        {
            if ext["valueString"] == REDACTED {
                match stored_iter.next() {
                    Some(secret) => ext["valueString"] = json!(secret),
                    None => return Err("Subscription.channel.extension: a redacted signing secret has no stored value".into()),
                }
            }
        }
    }
    Ok(())
}

/// A `searchset` Bundle of resources.
pub fn searchset(base_url: &str, resource_type: &str, resources: Vec<(String, Value)>) -> Value {
    let entries: Vec<Value> = resources
        .into_iter()
        .map(|(id, resource)| json!({"fullUrl": format!("{base_url}/{resource_type}/{id}"), "resource": resource, "search": {"mode": "match"}}))
        .collect();
    json!({"resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries})
}
