//! What goes on the wire for one delivery attempt.

use chrono::{TimeZone, Utc};
use herald_fhir::bundle::{
    notification_bundle, AdditionalContext, NotificationEvent, NotificationType, StatusContext,
};
use herald_fhir::{Action, PayloadContent, SubscriptionSpec};
use herald_store::{NotificationRecord, SubscriptionKey, SubscriptionRecord};

pub use crate::context::{
    additional_context, ContextPlan, ContextScope, MAX_ADDITIONAL_CONTEXT_PER_EVENT,
};

/// What a notification bundle is about, for channels that label their messages (the NATS
/// channel's headers and dedup id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleLabel {
    pub subscription: SubscriptionKey,
    /// The subscription's version (a handshake is per version).
    pub version_id: i64,
    pub notification_type: NotificationType,
    /// First and last event number in an event-notification bundle.
    pub events: Option<(i64, i64)>,
}

/// An HTTP request to make (or, for the NATS channel, a message to publish).
#[derive(Debug, Clone)]
pub struct OutgoingRequest {
    /// `webhook-id`: the same for every attempt at the same message.
    pub msg_id: String,
    pub method: reqwest::Method,
    pub url: String,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// Set for Backport notification bundles.
    pub label: Option<BundleLabel>,
}

pub fn to_notification_event(n: &NotificationRecord) -> NotificationEvent {
    NotificationEvent {
        resource: n.event.resource.clone(),
        ..to_notification_event_without_resource(n)
    }
}

fn to_notification_event_without_resource(n: &NotificationRecord) -> NotificationEvent {
    NotificationEvent {
        event_number: n.event_number,
        timestamp: Utc
            .timestamp_millis_opt(n.event.occurred_at)
            .single()
            .unwrap_or_else(Utc::now),
        action: Action::parse(&n.event.action).unwrap_or(Action::Update),
        resource_type: n.event.resource_type.clone(),
        resource_id: n.event.resource_id.clone(),
        resource: None,
        additional_context: Vec::new(),
    }
}

/// The events of `records`, each with its additional context (as [`additional_context`]
/// returns it: one list per record, in order; missing lists mean none). The focus
/// resource is carried only at `full-resource` content, the one level that sends it.
pub fn notification_events(
    records: &[NotificationRecord],
    context: Vec<Vec<AdditionalContext>>,
    content: PayloadContent,
) -> Vec<NotificationEvent> {
    let mut context = context.into_iter();
    records
        .iter()
        .map(|n| {
            let mut event = NotificationEvent {
                additional_context: context.next().unwrap_or_default(),
                ..to_notification_event_without_resource(n)
            };
            if content == PayloadContent::FullResource {
                event.resource = n.event.resource.clone();
            }
            event
        })
        .collect()
}

fn endpoint(spec: &SubscriptionSpec) -> String {
    spec.endpoint.clone().unwrap_or_default()
}

/// A Backport notification bundle POSTed to the endpoint, without additional context
/// (handshakes, heartbeats; see [`bundle_request_with_context`]).
pub fn bundle_request(
    base_url: &str,
    record: &SubscriptionRecord,
    spec: &SubscriptionSpec,
    kind: NotificationType,
    events: &[NotificationRecord],
) -> OutgoingRequest {
    bundle_request_with_context(base_url, record, spec, kind, events, Vec::new())
}

/// A Backport notification bundle POSTed to the endpoint, each event with its
/// additional context (from [`additional_context`]).
pub fn bundle_request_with_context(
    base_url: &str,
    record: &SubscriptionRecord,
    spec: &SubscriptionSpec,
    kind: NotificationType,
    events: &[NotificationRecord],
    context: Vec<Vec<AdditionalContext>>,
) -> OutgoingRequest {
    let content = spec.content.unwrap_or(PayloadContent::IdOnly);
    let ctx = StatusContext {
        base_url,
        subscription_id: &record.key.id,
        topic_url: spec.topic_url(),
        status: record.status,
        notification_type: kind,
        events_since_subscription_start: record.events_since_start,
        error: None,
    };
    let events = notification_events(events, context, content);
    let label = BundleLabel {
        subscription: record.key.clone(),
        version_id: record.version_id,
        notification_type: kind,
        events: events
            .first()
            .zip(events.last())
            .map(|(first, last)| (first.event_number, last.event_number)),
    };
    let bundle = notification_bundle(&ctx, &events, content);
    let msg_id = match (kind, events.first(), events.last()) {
        (NotificationType::EventNotification, Some(first), Some(last)) => {
            format!(
                "ev_{}_{}_{}",
                record.key.id, first.event_number, last.event_number
            )
        }
        (NotificationType::Handshake, _, _) => {
            format!("hs_{}_{}", record.key.id, record.version_id)
        }
        _ => format!(
            "hb_{}_{}",
            record.key.id,
            chrono::Utc::now().timestamp_millis()
        ),
    };
    OutgoingRequest {
        msg_id,
        method: reqwest::Method::POST,
        url: endpoint(spec),
        content_type: Some(
            spec.payload
                .clone()
                .unwrap_or_else(|| "application/fhir+json".into()),
        ),
        body: serde_json::to_vec(&bundle).unwrap_or_default(),
        label: Some(label),
    }
}

fn msg_id(notification: &NotificationRecord) -> String {
    format!(
        "ev_{}_{}",
        notification.event.event_id, notification.event_number
    )
}

/// R4 classic rest-hook: no payload → a POST with no body to the endpoint; with a payload →
/// the resource sent as an update, `PUT [endpoint]/[Type]/[id]` (as HAPI and Firely do).
pub fn classic_request(
    spec: &SubscriptionSpec,
    notification: &NotificationRecord,
) -> OutgoingRequest {
    match (&spec.payload, &notification.event.resource) {
        (Some(mime), Some(resource)) => OutgoingRequest {
            msg_id: msg_id(notification),
            method: reqwest::Method::PUT,
            url: format!(
                "{}/{}/{}",
                endpoint(spec).trim_end_matches('/'),
                notification.event.resource_type,
                notification.event.resource_id
            ),
            content_type: Some(mime.clone()),
            body: serde_json::to_vec(resource).unwrap_or_default(),
            label: None,
        },
        _ => OutgoingRequest {
            msg_id: msg_id(notification),
            method: reqwest::Method::POST,
            url: endpoint(spec),
            content_type: None,
            body: Vec::new(),
            label: None,
        },
    }
}
