//! Audit records as FHIR R4 `AuditEvent` resources.
//!
//! `type` follows the FHIR code systems (a REST interaction is `rest` with a
//! `restful-interaction` subtype; a delivery is DICOM `110106` Export); Herald's own kind is
//! always a second `subtype` under [`AUDIT_EVENT_SUBTYPE_SYSTEM`], which is what
//! `AuditEvent?subtype=` searches. The client is `agent.who.identifier` under
//! [`CLIENT_ID_SYSTEM`], the user (`sub`) is `agent.altId`.

use chrono::{TimeZone, Utc};
use herald_store::AuditRecord;
use serde_json::{json, Value};

/// Herald's audit event kinds (see [`crate::AuditKind::code`]).
pub const AUDIT_EVENT_SUBTYPE_SYSTEM: &str = "https://herald.health/fhir/CodeSystem/audit-event";
/// OAuth client ids.
pub const CLIENT_ID_SYSTEM: &str = "https://herald.health/fhir/NamingSystem/oauth-client-id";

const AUDIT_EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const RESTFUL_INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";
const DICOM: &str = "http://dicom.nema.org/resources/ontology/DCM";

/// The record as an `AuditEvent`.
pub fn audit_event(record: &AuditRecord) -> Value {
    let (event_type, interaction) = match record.kind.as_str() {
        "subscription-create" => (rest(), Some("create")),
        "subscription-update" => (rest(), Some("update")),
        "subscription-delete" => (rest(), Some("delete")),
        "delivery" | "delivery-withheld" => (
            json!({"system": DICOM, "code": "110106", "display": "Export"}),
            None,
        ),
        _ => (
            json!({"system": AUDIT_EVENT_TYPE, "code": "rest", "display": "RESTful Operation"}),
            None,
        ),
    };
    let mut subtype = Vec::new();
    if let Some(code) = interaction {
        subtype.push(json!({"system": RESTFUL_INTERACTION, "code": code}));
    }
    subtype.push(json!({"system": AUDIT_EVENT_SUBTYPE_SYSTEM, "code": record.kind}));
    let recorded = Utc
        .timestamp_millis_opt(record.recorded_at)
        .single()
        .map(herald_fhir::bundle::instant)
        .unwrap_or_default();
    let mut agent = json!({
        "type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
            "code": "datacollector"
        }]},
        "requestor": record.agent_client.as_deref() != Some(crate::HERALD_AGENT),
    });
    if let Some(client) = &record.agent_client {
        agent["who"] = json!({"identifier": {"system": CLIENT_ID_SYSTEM, "value": client}});
    }
    if let Some(subject) = &record.agent_subject {
        agent["altId"] = json!(subject);
    }
    let mut event = json!({
        "resourceType": "AuditEvent",
        "id": record.id,
        "type": event_type,
        "subtype": subtype,
        "action": record.action,
        "recorded": recorded,
        "outcome": record.outcome,
        "agent": [agent],
        "source": {
            "observer": {"display": "Herald"},
            "type": [{
                "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                "code": "4",
                "display": "Application Server"
            }]
        }
    });
    if let Some(detail) = &record.detail {
        event["outcomeDesc"] = json!(detail);
    }
    if let Some(entity) = &record.entity {
        event["entity"] = json!([{"what": {"reference": entity}}]);
    }
    event
}

fn rest() -> Value {
    json!({"system": AUDIT_EVENT_TYPE, "code": "rest", "display": "RESTful Operation"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_is_a_rest_event_with_its_interaction_and_kind() {
        let record = AuditRecord {
            tenant: "t".into(),
            id: "a1".into(),
            recorded_at: 1_700_000_000_000,
            kind: "subscription-create".into(),
            action: "C".into(),
            outcome: "0".into(),
            agent_client: Some("dashboard".into()),
            agent_subject: Some("user-1".into()),
            entity: Some("Subscription/s1".into()),
            detail: None,
        };
        let event = audit_event(&record);
        assert_eq!(event["type"]["code"], "rest");
        assert_eq!(event["subtype"][0]["code"], "create");
        assert_eq!(event["subtype"][1]["code"], "subscription-create");
        assert_eq!(event["agent"][0]["who"]["identifier"]["value"], "dashboard");
        assert_eq!(event["agent"][0]["altId"], "user-1");
        assert_eq!(event["agent"][0]["requestor"], true);
        assert_eq!(event["entity"][0]["what"]["reference"], "Subscription/s1");
        assert_eq!(event["recorded"], "2023-11-14T22:13:20.000Z");
        assert!(event.get("outcomeDesc").is_none());
    }

    #[test]
    fn a_delivery_is_an_export_by_herald() {
        let record = AuditRecord {
            tenant: "t".into(),
            id: "a2".into(),
            recorded_at: 0,
            kind: "delivery".into(),
            action: "E".into(),
            outcome: "4".into(),
            agent_client: Some(crate::HERALD_AGENT.into()),
            agent_subject: None,
            entity: Some("Subscription/s1".into()),
            detail: Some("endpoint answered 503".into()),
        };
        let event = audit_event(&record);
        assert_eq!(event["type"]["code"], "110106");
        assert_eq!(event["agent"][0]["requestor"], false);
        assert_eq!(event["outcomeDesc"], "endpoint answered 503");
        assert_eq!(event["outcome"], "4");
    }
}
