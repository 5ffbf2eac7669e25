//! `POST [base]` with a `transaction` or `batch` Bundle.
//!
//! Every entry is checked before anything is written. A transaction whose entries are all
//! valid is then applied in order; `urn:uuid:` references between entries are rewritten
//! to the ids Herald assigns. If the bus or storage fails part-way, the error says how
//! many entries were applied (events already published cannot be recalled). A batch
//! applies each entry on its own and reports each outcome.

use std::collections::HashMap;

use herald_fhir::{Action, IssueType, OperationOutcome};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::write::{invalid, Capture, CaptureError, WriteOutcome};

/// Most entries a Bundle may carry.
pub const MAX_ENTRIES: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Entry `index` is invalid; nothing was written.
    #[error("Bundle.entry[{index}]: {source}")]
    Entry { index: usize, source: CaptureError },
    #[error("{0}")]
    Invalid(String),
    /// A transaction stopped after `applied` entries because of an internal failure.
    #[error("transaction stopped after {applied} of {total} entries: {source}")]
    Partial {
        applied: usize,
        total: usize,
        source: CaptureError,
    },
}

/// One checked entry.
struct Planned {
    method: &'static str,
    resource_type: String,
    id: Option<String>,
    resource: Option<Value>,
    full_url: Option<String>,
}

fn plan_entry(entry: &Value) -> Result<Planned, CaptureError> {
    let request = entry
        .get("request")
        .ok_or_else(|| invalid("request is required"))?;
    let method = match request.get("method").and_then(Value::as_str) {
        Some("POST") => "POST",
        Some("PUT") => "PUT",
        Some("DELETE") => "DELETE",
        Some(other) => {
            return Err(CaptureError::Invalid {
                code: IssueType::NotSupported,
                message: format!("request.method {other} is not supported (POST, PUT, DELETE)"),
            })
        }
        None => return Err(invalid("request.method is required")),
    };
    let url = request
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("request.url is required"))?;
    if url.contains('?') {
        return Err(CaptureError::Invalid {
            code: IssueType::NotSupported,
            message: "conditional operations are not supported".into(),
        });
    }
    let parts: Vec<&str> = url.trim_matches('/').split('/').collect();
    let full_url = entry
        .get("fullUrl")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let resource = entry.get("resource").cloned();
    match (method, parts.as_slice(), resource) {
        ("POST", [resource_type], Some(resource)) => {
            Capture::check_resource(resource_type, &resource, None)?;
            Ok(Planned { method, resource_type: resource_type.to_string(), id: None, resource: Some(resource), full_url })
        }
        ("PUT", [resource_type, id], Some(resource)) => {
            Capture::check_resource(resource_type, &resource, Some(id))?;
            Ok(Planned { method, resource_type: resource_type.to_string(), id: Some(id.to_string()), resource: Some(resource), full_url })
        }
        ("DELETE", [resource_type, id], None) => {
            Capture::check_delete_target(resource_type, id)?;
            Ok(Planned { method, resource_type: resource_type.to_string(), id: Some(id.to_string()), resource: None, full_url })
        }
        ("DELETE", _, Some(_)) => Err(invalid("a DELETE entry carries no resource")),
        (_, _, None) => Err(invalid(format!("a {method} entry needs a resource"))),
        _ => Err(invalid(format!("request.url '{url}' does not fit {method} ([Type] for POST, [Type]/[id] for PUT and DELETE)"))),
    }
}

/// Replaces every `reference` equal to a key of `ids` (a `urn:uuid:`) by its new value.
fn rewrite_references(value: &mut Value, ids: &HashMap<String, String>) {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get_mut("reference") {
                    if let Some(new) = ids.get(r.as_str()) {
                        *r = new.clone();
                    }
                }
                stack.extend(map.values_mut());
            }
            Value::Array(items) => stack.extend(items.iter_mut()),
            _ => {}
        }
    }
}

fn response_entry(outcome: Option<&WriteOutcome>) -> Value {
    match outcome {
        Some(o) => {
            let status = match o.action {
                Action::Create => "201 Created",
                Action::Update => "200 OK",
                Action::Delete => "204 No Content",
            };
            let mut response = json!({"status": status, "etag": format!("W/\"{}\"", o.version_id), "lastModified": o.last_updated});
            if o.action != Action::Delete {
                response["location"] = json!(format!(
                    "{}/{}/_history/{}",
                    o.resource_type, o.id, o.version_id
                ));
            }
            json!({"response": response})
        }
        None => json!({"response": {"status": "204 No Content"}}),
    }
}

impl Capture {
    /// Applies a transaction or batch Bundle and returns the response Bundle.
    pub async fn bundle(&self, tenant: &str, bundle: Value) -> Result<Value, BundleError> {
        if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
            return Err(BundleError::Invalid(
                "POST to the base accepts a Bundle (transaction or batch)".into(),
            ));
        }
        let kind = match bundle.get("type").and_then(Value::as_str) {
            Some("transaction") => "transaction",
            Some("batch") => "batch",
            other => {
                return Err(BundleError::Invalid(format!(
                    "Bundle.type must be transaction or batch, not {}",
                    other.unwrap_or("missing")
                )))
            }
        };
        let entries = bundle
            .get("entry")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if entries.len() > MAX_ENTRIES {
            return Err(BundleError::Invalid(format!(
                "at most {MAX_ENTRIES} entries per Bundle"
            )));
        }
        if kind == "batch" {
            return Ok(self.batch(tenant, entries).await);
        }
        let mut planned = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            planned.push(plan_entry(entry).map_err(|source| BundleError::Entry { index, source })?);
        }
        // Assign ids to created resources and point urn:uuid references at them.
        let mut ids = HashMap::new();
        for p in planned.iter_mut().filter(|p| p.method == "POST") {
            let id = Uuid::new_v4().to_string();
            if let Some(full_url) = p.full_url.as_deref().filter(|u| u.starts_with("urn:uuid:")) {
                ids.insert(full_url.to_owned(), format!("{}/{id}", p.resource_type));
            }
            p.id = Some(id);
        }
        let total = planned.len();
        let mut responses = Vec::with_capacity(total);
        for (applied, mut p) in planned.into_iter().enumerate() {
            if let Some(resource) = p.resource.as_mut() {
                rewrite_references(resource, &ids);
            }
            let id = p.id.clone().unwrap_or_default();
            let result = match p.method {
                "DELETE" => self.delete(tenant, &p.resource_type, &id).await,
                _ => self
                    .write(tenant, &p.resource_type, &id, p.resource)
                    .await
                    .map(Some),
            };
            match result {
                Ok(outcome) => responses.push(response_entry(outcome.as_ref())),
                Err(source) => {
                    return Err(BundleError::Partial {
                        applied,
                        total,
                        source,
                    })
                }
            }
        }
        Ok(json!({"resourceType": "Bundle", "type": "transaction-response", "entry": responses}))
    }

    async fn batch(&self, tenant: &str, entries: Vec<Value>) -> Value {
        let mut responses = Vec::with_capacity(entries.len());
        for entry in &entries {
            let result = match plan_entry(entry) {
                Err(e) => Err(e),
                Ok(p) => match p.method {
                    "POST" => self
                        .create(tenant, &p.resource_type, p.resource.unwrap_or_default())
                        .await
                        .map(Some),
                    "PUT" => self
                        .update(
                            tenant,
                            &p.resource_type,
                            p.id.as_deref().unwrap_or_default(),
                            p.resource.unwrap_or_default(),
                        )
                        .await
                        .map(Some),
                    _ => {
                        self.delete(
                            tenant,
                            &p.resource_type,
                            p.id.as_deref().unwrap_or_default(),
                        )
                        .await
                    }
                },
            };
            responses.push(match result {
                Ok(outcome) => response_entry(outcome.as_ref()),
                Err(e) => {
                    let (status, outcome) = match &e {
                        CaptureError::Invalid { code, message } => (
                            "400 Bad Request",
                            OperationOutcome::error(*code, message.clone()),
                        ),
                        CaptureError::NotFound(m) => (
                            "404 Not Found",
                            OperationOutcome::error(IssueType::NotFound, m.clone()),
                        ),
                        CaptureError::Conflict => (
                            "409 Conflict",
                            OperationOutcome::error(IssueType::Conflict, e.to_string()),
                        ),
                        CaptureError::Event(m) => (
                            "400 Bad Request",
                            OperationOutcome::error(IssueType::Invalid, m.to_string()),
                        ),
                        CaptureError::Store(_) | CaptureError::Bus(_) => {
                            tracing::error!(error = %e, "batch entry failed");
                            (
                                "503 Service Unavailable",
                                OperationOutcome::error(
                                    IssueType::Transient,
                                    "the write could not be made durable; retry",
                                ),
                            )
                        }
                    };
                    json!({"response": {"status": status, "outcome": outcome.to_json()}})
                }
            });
        }
        json!({"resourceType": "Bundle", "type": "batch-response", "entry": responses})
    }
}
