//! Backport notification bundles and the R4 status `Parameters`.
//!
//! Shapes follow the Backport IG's R4 examples (`Bundle-r4-notification-*.json`): a
//! `history` Bundle whose first entry is the `backport-subscription-status-r4` Parameters,
//! with `request` (a GET of `$status`) and `response` on every entry; `topic` omitted for
//! `empty` content; `focus` and resource entries only for `id-only` / `full-resource`.
//! An event's additional context (a topic's `notificationShape`) is listed as
//! `additional-context` references of its `notification-event` and as entries after the
//! event's focus entry, as in `Bundle-r4-notification-multi-resource.json`: a GET of the
//! resource answered 200, with the resource only for `full-resource`.

use std::collections::HashSet;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::change_event::Action;
use crate::subscription::{PayloadContent, SubscriptionStatus};

pub const PROFILE_NOTIFICATION_R4: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-notification-r4";
pub const PROFILE_STATUS_R4: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4";

/// `SubscriptionStatus.type` / the `type` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationType {
    Handshake,
    Heartbeat,
    EventNotification,
    QueryStatus,
    QueryEvent,
}

impl NotificationType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Handshake => "handshake",
            Self::Heartbeat => "heartbeat",
            Self::EventNotification => "event-notification",
            Self::QueryStatus => "query-status",
            Self::QueryEvent => "query-event",
        }
    }
}

/// Who and what a status resource speaks about.
#[derive(Debug, Clone)]
pub struct StatusContext<'a> {
    /// FHIR base URL Herald is reachable at, without a trailing slash.
    pub base_url: &'a str,
    pub subscription_id: &'a str,
    pub topic_url: Option<&'a str>,
    pub status: SubscriptionStatus,
    pub notification_type: NotificationType,
    pub events_since_subscription_start: i64,
    /// Recent delivery error, reported in the `error` parameter.
    pub error: Option<&'a str>,
}

/// One event in a notification.
#[derive(Debug, Clone)]
pub struct NotificationEvent {
    pub event_number: i64,
    pub timestamp: DateTime<Utc>,
    pub action: Action,
    pub resource_type: String,
    pub resource_id: String,
    /// The focus resource (current version, or the deleted one); used for full-resource.
    pub resource: Option<Value>,
    /// Resources the topic's `notificationShape` adds to this event (empty: none).
    pub additional_context: Vec<AdditionalContext>,
}

/// A resource sent along with an event's focus (`notification-event.additional-context`).
#[derive(Debug, Clone, PartialEq)]
pub struct AdditionalContext {
    pub resource_type: String,
    pub resource_id: String,
    /// The resource (its latest version); used for full-resource.
    pub resource: Option<Value>,
}

impl AdditionalContext {
    fn url(&self, base_url: &str) -> String {
        format!("{base_url}/{}/{}", self.resource_type, self.resource_id)
    }
}

/// FHIR instant with millisecond precision.
pub fn instant(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn resource_url(base_url: &str, event: &NotificationEvent) -> String {
    format!("{base_url}/{}/{}", event.resource_type, event.resource_id)
}

/// The R4 status resource (`backport-subscription-status-r4` Parameters).
pub fn status_parameters(
    ctx: &StatusContext<'_>,
    events: &[NotificationEvent],
    content: PayloadContent,
) -> Value {
    let mut parameters = vec![
        json!({"name": "subscription", "valueReference": {"reference": format!("{}/Subscription/{}", ctx.base_url, ctx.subscription_id)}}),
    ];
    if let Some(topic) = ctx.topic_url {
        // SHOULD NOT for empty, MAY for id-only, SHOULD for full-resource.
        if content != PayloadContent::Empty {
            parameters.push(json!({"name": "topic", "valueCanonical": topic}));
        }
    }
    parameters.push(json!({"name": "status", "valueCode": ctx.status.as_str()}));
    parameters.push(json!({"name": "type", "valueCode": ctx.notification_type.as_str()}));
    parameters.push(json!({"name": "events-since-subscription-start", "valueString": ctx.events_since_subscription_start.to_string()}));
    for event in events {
        let mut parts = vec![
            json!({"name": "event-number", "valueString": event.event_number.to_string()}),
            json!({"name": "timestamp", "valueInstant": instant(event.timestamp)}),
        ];
        if content != PayloadContent::Empty {
            parts.push(json!({"name": "focus", "valueReference": {"reference": resource_url(ctx.base_url, event)}}));
            for context in &event.additional_context {
                parts.push(json!({"name": "additional-context", "valueReference": {"reference": context.url(ctx.base_url)}}));
            }
        }
        let mut event = json!({"name": "notification-event"});
        event["part"] = Value::Array(parts);
        parameters.push(event);
    }
    if let Some(error) = ctx.error {
        parameters.push(json!({"name": "error", "valueCodeableConcept": {"text": error}}));
    }
    let id = Uuid::new_v4().to_string();
    // Built values are moved in: `json!` would copy an interpolated `Value` (it serializes
    // it again), and a notification is built for every request sent.
    let mut status = json!({
        "resourceType": "Parameters",
        "id": id,
        "meta": {"profile": [PROFILE_STATUS_R4]},
    });
    status["parameter"] = Value::Array(parameters);
    status
}

fn status_entry(ctx: &StatusContext<'_>, parameters: Value) -> Value {
    let id = parameters["id"].as_str().unwrap_or_default().to_owned();
    let mut entry = Map::new();
    entry.insert("fullUrl".into(), json!(format!("urn:uuid:{id}")));
    entry.insert("resource".into(), parameters);
    entry.insert(
        "request".into(),
        json!({"method": "GET", "url": format!("{}/Subscription/{}/$status", ctx.base_url, ctx.subscription_id)}),
    );
    entry.insert("response".into(), json!({"status": "200"}));
    Value::Object(entry)
}

fn event_entry(base_url: &str, event: &NotificationEvent, content: PayloadContent) -> Value {
    let (method, url, status) = match event.action {
        Action::Create => ("POST", event.resource_type.clone(), "201"),
        Action::Update => (
            "PUT",
            format!("{}/{}", event.resource_type, event.resource_id),
            "200",
        ),
        Action::Delete => (
            "DELETE",
            format!("{}/{}", event.resource_type, event.resource_id),
            "204",
        ),
    };
    let mut entry = Map::new();
    entry.insert("fullUrl".into(), json!(resource_url(base_url, event)));
    if content == PayloadContent::FullResource && event.action != Action::Delete {
        if let Some(resource) = &event.resource {
            entry.insert("resource".into(), resource.clone());
        }
    }
    entry.insert("request".into(), json!({"method": method, "url": url}));
    entry.insert("response".into(), json!({"status": status}));
    Value::Object(entry)
}

/// An entry for an additional-context resource: a read of its latest version.
fn context_entry(base_url: &str, context: &AdditionalContext, content: PayloadContent) -> Value {
    let mut entry = Map::new();
    entry.insert("fullUrl".into(), json!(context.url(base_url)));
    if content == PayloadContent::FullResource {
        if let Some(resource) = &context.resource {
            entry.insert("resource".into(), resource.clone());
        }
    }
    entry.insert(
        "request".into(),
        json!({"method": "GET", "url": format!("{}/{}", context.resource_type, context.resource_id)}),
    );
    entry.insert("response".into(), json!({"status": "200"}));
    Value::Object(entry)
}

/// A Backport R4 notification bundle (`history`). Each event's focus entry is followed by
/// entries for its additional context not already listed for an earlier event.
pub fn notification_bundle(
    ctx: &StatusContext<'_>,
    events: &[NotificationEvent],
    content: PayloadContent,
) -> Value {
    let mut entries = vec![status_entry(ctx, status_parameters(ctx, events, content))];
    if content != PayloadContent::Empty {
        let mut listed: HashSet<(&str, &str)> = HashSet::new();
        for event in events {
            entries.push(event_entry(ctx.base_url, event, content));
            for context in &event.additional_context {
                let key = (context.resource_type.as_str(), context.resource_id.as_str());
                if listed.insert(key) {
                    entries.push(context_entry(ctx.base_url, context, content));
                }
            }
        }
    }
    let mut bundle = json!({
        "resourceType": "Bundle",
        "id": Uuid::new_v4().to_string(),
        "meta": {"profile": [PROFILE_NOTIFICATION_R4]},
        "type": "history",
        "timestamp": instant(Utc::now()),
    });
    bundle["entry"] = Value::Array(entries);
    bundle
}

/// A `searchset` of status resources, as `$status` returns.
pub fn status_searchset(statuses: Vec<(StatusContext<'_>, PayloadContent)>) -> Value {
    let entries: Vec<Value> = statuses
        .into_iter()
        .map(|(ctx, content)| {
            let parameters = status_parameters(&ctx, &[], content);
            json!({
                "fullUrl": format!("urn:uuid:{}", parameters["id"].as_str().unwrap_or_default()),
                "resource": parameters,
                "search": {"mode": "match"},
            })
        })
        .collect();
    json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": entries.len(),
        "entry": entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(kind: NotificationType, status: SubscriptionStatus, n: i64) -> StatusContext<'static> {
        StatusContext {
            base_url: "https://example.org/fhir",
            subscription_id: "admission",
            topic_url: Some("http://hl7.org/SubscriptionTopic/admission"),
            status,
            notification_type: kind,
            events_since_subscription_start: n,
            error: None,
        }
    }

    fn event() -> NotificationEvent {
        NotificationEvent {
            event_number: 2,
            timestamp: Utc::now(),
            action: Action::Create,
            resource_type: "Encounter".into(),
            resource_id: "86009987".into(),
            resource: Some(json!({"resourceType": "Encounter", "id": "86009987"})),
            additional_context: Vec::new(),
        }
    }

    /// Drops the parts that differ on every call (ids, timestamps).
    fn shape(mut bundle: Value) -> Value {
        bundle.as_object_mut().map(|b| {
            b.remove("id");
            b.remove("timestamp")
        });
        if let Some(entries) = bundle["entry"].as_array_mut() {
            for entry in entries {
                if entry["fullUrl"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("urn:uuid:"))
                {
                    entry["fullUrl"] = json!("urn:uuid:*");
                    entry["resource"]["id"] = json!("*");
                }
                if let Some(params) = entry
                    .pointer_mut("/resource/parameter")
                    .and_then(Value::as_array_mut)
                {
                    for p in params {
                        if let Some(parts) = p["part"].as_array_mut() {
                            for part in parts.iter_mut().filter(|x| x["name"] == "timestamp") {
                                part["valueInstant"] = json!("*");
                            }
                        }
                    }
                }
            }
        }
        bundle
    }

    fn example(name: &str) -> Value {
        let path = format!(
            "{}/../../../shared/fhir/backport-ig/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut v: Value = serde_json::from_str(&text).expect("example json");
        v = shape(v);
        v
    }

    #[test]
    fn handshake_matches_the_official_example() {
        let mut ours = shape(notification_bundle(
            &ctx(
                NotificationType::Handshake,
                SubscriptionStatus::Requested,
                0,
            ),
            &[],
            PayloadContent::IdOnly,
        ));
        let mut theirs = example("Bundle-r4-notification-handshake.json");
        theirs.as_object_mut().map(|o| o.remove("id"));
        ours.as_object_mut().map(|o| o.remove("id"));
        assert_eq!(ours, theirs);
    }

    #[test]
    fn id_only_matches_the_official_example_status_entry() {
        let ev = NotificationEvent {
            resource_id: "86009987-eabe-42bf-8c02-b112b18cb616".into(),
            ..event()
        };
        let ours = shape(notification_bundle(
            &ctx(
                NotificationType::EventNotification,
                SubscriptionStatus::Active,
                2,
            ),
            &[ev],
            PayloadContent::IdOnly,
        ));
        let theirs = example("Bundle-r4-notification-id-only.json");
        assert_eq!(ours["entry"][0], theirs["entry"][0]);
        // Our id-only bundle also lists the focus entry without its resource.
        assert!(ours["entry"][1].get("resource").is_none());
        assert_eq!(
            ours["entry"][1]["fullUrl"],
            "https://example.org/fhir/Encounter/86009987-eabe-42bf-8c02-b112b18cb616"
        );
        assert_eq!(ours["entry"][1]["request"]["method"], "POST");
    }

    fn patient_context() -> AdditionalContext {
        AdditionalContext {
            resource_type: "Patient".into(),
            resource_id: "1599eb66-431a-447c-a3de-6897fe9ae9a1".into(),
            resource: Some(json!({
                "resourceType": "Patient",
                "id": "1599eb66-431a-447c-a3de-6897fe9ae9a1",
                "active": true,
                "name": [{"use": "usual", "text": "Example Patient", "family": "Patient", "given": ["Example"]}]
            })),
        }
    }

    #[test]
    fn additional_context_matches_the_official_multi_resource_example() {
        let theirs = example("Bundle-r4-notification-multi-resource.json");
        let ev = NotificationEvent {
            resource_id: "86009987-eabe-42bf-8c02-b112b18cb616".into(),
            resource: Some(theirs["entry"][1]["resource"].clone()),
            additional_context: vec![patient_context()],
            ..event()
        };
        let ours = shape(notification_bundle(
            &ctx(
                NotificationType::EventNotification,
                SubscriptionStatus::Active,
                2,
            ),
            std::slice::from_ref(&ev),
            PayloadContent::FullResource,
        ));
        assert_eq!(ours, theirs);

        // id-only: the same references and entries, without resources.
        let id_only = shape(notification_bundle(
            &ctx(
                NotificationType::EventNotification,
                SubscriptionStatus::Active,
                2,
            ),
            &[ev],
            PayloadContent::IdOnly,
        ));
        assert_eq!(
            id_only["entry"][0]["resource"]["parameter"][5],
            theirs["entry"][0]["resource"]["parameter"][5]
        );
        let entries = id_only["entry"].as_array().expect("entries");
        assert_eq!(entries.len(), 3);
        assert!(entries[1..].iter().all(|e| e.get("resource").is_none()));
        assert_eq!(entries[2]["fullUrl"], theirs["entry"][2]["fullUrl"]);
        assert_eq!(entries[2]["request"], theirs["entry"][2]["request"]);
        assert_eq!(entries[2]["response"], theirs["entry"][2]["response"]);
    }

    #[test]
    fn additional_context_is_listed_per_event_and_entered_once() {
        let first = NotificationEvent {
            additional_context: vec![patient_context()],
            ..event()
        };
        let second = NotificationEvent {
            event_number: 3,
            resource_id: "other".into(),
            additional_context: vec![patient_context()],
            ..event()
        };
        let ours = notification_bundle(
            &ctx(
                NotificationType::EventNotification,
                SubscriptionStatus::Active,
                3,
            ),
            &[first.clone(), second.clone()],
            PayloadContent::FullResource,
        );
        let urls: Vec<&str> = ours["entry"]
            .as_array()
            .expect("entries")
            .iter()
            .filter_map(|e| e["fullUrl"].as_str())
            .collect();
        assert_eq!(
            urls[1..],
            [
                "https://example.org/fhir/Encounter/86009987",
                "https://example.org/fhir/Patient/1599eb66-431a-447c-a3de-6897fe9ae9a1",
                "https://example.org/fhir/Encounter/other",
            ]
        );
        let parameters = &ours["entry"][0]["resource"]["parameter"];
        for event in [&parameters[5], &parameters[6]] {
            assert_eq!(event["part"][3]["name"], "additional-context");
        }
        // empty: neither references nor entries.
        let empty = notification_bundle(
            &ctx(
                NotificationType::EventNotification,
                SubscriptionStatus::Active,
                3,
            ),
            &[first, second],
            PayloadContent::Empty,
        );
        assert_eq!(empty["entry"].as_array().map(Vec::len), Some(1));
        assert!(!empty.to_string().contains("additional-context"));
    }

    #[test]
    fn empty_content_has_only_the_status_and_no_focus_or_topic() {
        let ours = notification_bundle(
            &ctx(
                NotificationType::EventNotification,
                SubscriptionStatus::Active,
                2,
            ),
            &[event()],
            PayloadContent::Empty,
        );
        let entries = ours["entry"].as_array().expect("entries");
        assert_eq!(entries.len(), 1);
        let text = entries[0].to_string();
        assert!(!text.contains("focus") && !text.contains("\"topic\""));
        assert!(text.contains("notification-event"));
    }

    #[test]
    fn full_resource_carries_the_resource_and_every_entry_has_request_and_response() {
        let ours = notification_bundle(
            &ctx(
                NotificationType::EventNotification,
                SubscriptionStatus::Active,
                2,
            ),
            &[event()],
            PayloadContent::FullResource,
        );
        assert_eq!(ours["entry"][1]["resource"]["resourceType"], "Encounter");
        for entry in ours["entry"].as_array().expect("entries") {
            assert!(entry.get("request").is_some() && entry.get("response").is_some());
        }
        assert_eq!(ours["type"], "history");
    }
}
