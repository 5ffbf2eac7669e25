//! The change event: one EHR write, as it travels on the bus.
//!
//! Documented as JSON Schema in `schemas/change-event.schema.json`. The `event_id` is also
//! the JetStream `Nats-Msg-Id`, so a re-published event is dropped inside the duplicate
//! window; consumers must still be idempotent on it beyond the window.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::resource::{
    is_resource_type, is_valid_id, json_depth, resource_type_of, MAX_JSON_DEPTH,
};

/// What happened to the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "create" => Some(Action::Create),
            "update" => Some(Action::Update),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }
}

/// A change to one FHIR resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeEvent {
    /// Unique id of this event; also the JetStream `Nats-Msg-Id`.
    pub event_id: String,
    /// Tenant the resource belongs to.
    pub tenant: String,
    pub action: Action,
    pub resource_type: String,
    pub resource_id: String,
    /// `meta.versionId` of the resource after the change (of the deleted version for delete).
    pub version: String,
    /// When the change happened at the source.
    pub time: DateTime<Utc>,
    /// Which system produced the event (`herald-facade`, an integration engine's name, ...).
    pub source: String,
    /// The resource after the change; absent for delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Value>,
    /// The version before the change, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Value>,
}

/// Why a change event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid change event: {0}")]
pub struct ChangeEventError(pub String);

/// Largest accepted event, serialized.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

fn is_token(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

impl ChangeEvent {
    /// Parses and validates an event from its JSON bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ChangeEventError> {
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(ChangeEventError(format!(
                "event is {} bytes; the limit is {MAX_EVENT_BYTES}",
                bytes.len()
            )));
        }
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| ChangeEventError(format!("not valid JSON: {e}")))?;
        Self::from_value(value)
    }

    /// Validates an event given as a JSON value.
    pub fn from_value(value: Value) -> Result<Self, ChangeEventError> {
        if json_depth(&value) > MAX_JSON_DEPTH {
            return Err(ChangeEventError(format!(
                "JSON nesting deeper than {MAX_JSON_DEPTH} levels"
            )));
        }
        let event: ChangeEvent = serde_json::from_value(value).map_err(|e| {
            ChangeEventError(format!("does not follow the change-event schema: {e}"))
        })?;
        event.validate()?;
        Ok(event)
    }

    /// Checks the invariants the JSON Schema cannot express on its own.
    pub fn validate(&self) -> Result<(), ChangeEventError> {
        let fail = |m: String| Err(ChangeEventError(m));
        // Dots are not allowed in ids used as NATS message ids? They are allowed; but no
        // whitespace, and a bounded length so the dedup key stays small.
        if !is_token(&self.event_id, 128) {
            return fail("event_id must be 1-128 characters of [A-Za-z0-9-_.:]".into());
        }
        if !is_token(&self.tenant, 64) || self.tenant.contains(['.', ':']) {
            return fail("tenant must be 1-64 characters of [A-Za-z0-9-_]".into());
        }
        if !is_resource_type(&self.resource_type) {
            return fail(format!(
                "'{}' is not an R4 resource type",
                self.resource_type
            ));
        }
        if !is_valid_id(&self.resource_id) {
            return fail(format!(
                "resource_id '{}' is not a valid FHIR id",
                self.resource_id
            ));
        }
        if !is_valid_id(&self.version) {
            return fail(format!("version '{}' is not a valid FHIR id", self.version));
        }
        if !is_token(&self.source, 128) && !self.source.starts_with("http") {
            return fail("source must be a short name or a URL".into());
        }
        match (self.action, &self.resource) {
            (Action::Delete, Some(_)) => {
                return fail(
                    "a delete event carries no resource (put the deleted version in previous)"
                        .into(),
                )
            }
            (Action::Create | Action::Update, None) => {
                return fail(format!(
                    "a {} event must carry the resource",
                    self.action.as_str()
                ))
            }
            _ => {}
        }
        for (field, resource) in [("resource", &self.resource), ("previous", &self.previous)] {
            let Some(resource) = resource else { continue };
            if !resource.is_object() {
                return fail(format!("{field} must be a JSON object"));
            }
            if resource_type_of(resource) != Some(self.resource_type.as_str()) {
                return fail(format!(
                    "{field}.resourceType must be '{}'",
                    self.resource_type
                ));
            }
            match resource.get("id").and_then(Value::as_str) {
                Some(id) if id == self.resource_id => {}
                _ => return fail(format!("{field}.id must be '{}'", self.resource_id)),
            }
        }
        Ok(())
    }

    /// The NATS subject this event is published on, under `prefix` (e.g. `fhir.changes`).
    pub fn subject(&self, prefix: &str) -> String {
        format!("{prefix}.{}.{}", self.tenant, self.resource_type)
    }

    /// The resource a notification about this event focuses on: the current version, or for
    /// a delete the previous one.
    pub fn focus_resource(&self) -> Option<&Value> {
        self.resource.as_ref().or(self.previous.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Value {
        json!({
            "event_id": "e-1", "tenant": "default", "action": "update",
            "resource_type": "Observation", "resource_id": "o1", "version": "2",
            "time": "2026-01-01T00:00:00Z", "source": "lab-engine",
            "resource": {"resourceType": "Observation", "id": "o1", "status": "final"},
            "previous": {"resourceType": "Observation", "id": "o1", "status": "preliminary"}
        })
    }

    #[test]
    fn a_well_formed_event_parses() {
        let e = ChangeEvent::from_value(event()).expect("valid");
        assert_eq!(e.action, Action::Update);
        assert_eq!(
            e.subject("fhir.changes"),
            "fhir.changes.default.Observation"
        );
    }

    #[test]
    fn malformed_events_name_the_problem() {
        let cases: Vec<(Value, &str)> = vec![
            (json!({"event_id": "x"}), "schema"),
            (
                {
                    let mut e = event();
                    e["action"] = json!("upsert");
                    e
                },
                "schema",
            ),
            (
                {
                    let mut e = event();
                    e["resource_type"] = json!("Observations");
                    e
                },
                "not an R4 resource type",
            ),
            (
                {
                    let mut e = event();
                    e["resource"]["id"] = json!("other");
                    e
                },
                "resource.id",
            ),
            (
                {
                    let mut e = event();
                    e["action"] = json!("delete");
                    e
                },
                "delete event carries no resource",
            ),
            (
                {
                    let mut e = event();
                    e["event_id"] = json!("has space");
                    e
                },
                "event_id",
            ),
            (
                {
                    let mut e = event();
                    e["tenant"] = json!("a.b");
                    e
                },
                "tenant",
            ),
            (
                {
                    let mut e = event();
                    e["extra"] = json!(1);
                    e
                },
                "unknown field",
            ),
        ];
        for (value, expected) in cases {
            let err = ChangeEvent::from_value(value).expect_err("must be refused");
            assert!(err.0.contains(expected), "{err} should mention {expected}");
        }
        assert!(ChangeEvent::from_json(b"{not json").is_err());
    }
}

#[cfg(test)]
mod schema_tests {
    use super::*;

    /// The documented schema's examples are events Herald accepts, and the schema's
    /// required fields are the ones the parser requires.
    #[test]
    fn schema_examples_parse_and_required_fields_agree() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schemas/change-event.schema.json"
        );
        let schema: Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("schema file"))
                .expect("schema is JSON");
        for example in schema["examples"].as_array().expect("examples") {
            ChangeEvent::from_value(example.clone()).expect("example is a valid event");
        }
        let example = schema["examples"][0].clone();
        for field in schema["required"].as_array().expect("required") {
            let mut e = example.clone();
            e.as_object_mut()
                .map(|o| o.remove(field.as_str().unwrap_or_default()));
            assert!(
                ChangeEvent::from_value(e).is_err(),
                "{field} is required by the schema but not by the parser"
            );
        }
    }
}
