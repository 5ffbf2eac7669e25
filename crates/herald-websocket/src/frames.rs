//! The text frames Herald sends: Backport notification bundles (handshake, heartbeat, one
//! event per event-notification) and the R4 classic `bound` / `ping` lines.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use herald_delivery::payload::{notification_events, ContextScope};
use herald_fhir::bundle::{
    notification_bundle, AdditionalContext, NotificationType, StatusContext,
};
use herald_fhir::{OperationOutcome, PayloadContent, SubscriptionSpec, SubscriptionSpecError};
use herald_store::{NotificationRecord, SubscriptionKey, SubscriptionOwner, SubscriptionRecord};

/// What a websocket subscription's frames are built from: the parts of its resource that
/// only change with its version (parsed once per version) and its live counters.
#[derive(Debug, Clone)]
pub struct SubscriptionView {
    pub key: SubscriptionKey,
    pub status: herald_fhir::SubscriptionStatus,
    pub events_since_start: i64,
    pub shape: Arc<SubscriptionShape>,
}

/// The version-dependent part of a [`SubscriptionView`].
#[derive(Debug)]
pub struct SubscriptionShape {
    pub version_id: i64,
    pub topic_url: Option<String>,
    pub content: PayloadContent,
    pub heartbeat_period: Option<Duration>,
}

impl SubscriptionShape {
    pub fn from_record(record: &SubscriptionRecord) -> Result<Self, SubscriptionSpecError> {
        let spec = SubscriptionSpec::from_resource(&record.resource)?;
        // A classic criteria subscription without backport-payload-content gets bundles
        // too when bound with a token: id-only when it asked for a payload, else empty.
        let content = spec.content.unwrap_or(if spec.payload.is_some() {
            PayloadContent::IdOnly
        } else {
            PayloadContent::Empty
        });
        Ok(Self {
            version_id: record.version_id,
            topic_url: spec.topic_url().map(str::to_owned),
            content,
            heartbeat_period: spec
                .heartbeat_period
                .map(|s| Duration::from_secs(u64::from(s))),
        })
    }
}

impl SubscriptionView {
    /// The view of `record`, reusing `shape` when the version has not changed.
    pub fn from_record(
        record: &SubscriptionRecord,
        shape: Option<&Arc<SubscriptionShape>>,
    ) -> Result<Self, SubscriptionSpecError> {
        let shape = match shape {
            Some(shape) if shape.version_id == record.version_id => Arc::clone(shape),
            _ => Arc::new(SubscriptionShape::from_record(record)?),
        };
        Ok(Self {
            key: record.key.clone(),
            status: record.status,
            events_since_start: record.events_since_start,
            shape,
        })
    }

    /// What the additional context of this subscription's event frames is resolved for
    /// (`owner`: the subscription's, whose grant the context must fall under).
    pub fn context_scope<'a>(&'a self, owner: Option<&'a SubscriptionOwner>) -> ContextScope<'a> {
        ContextScope {
            tenant: &self.key.tenant,
            topic_url: self.shape.topic_url.as_deref(),
            content: self.shape.content,
            owner,
        }
    }

    fn bundle(
        &self,
        base_url: &str,
        kind: NotificationType,
        events: &[NotificationRecord],
        context: Vec<Vec<AdditionalContext>>,
    ) -> Utf8Bytes {
        let ctx = StatusContext {
            base_url,
            subscription_id: &self.key.id,
            topic_url: self.shape.topic_url.as_deref(),
            status: self.status,
            notification_type: kind,
            events_since_subscription_start: self.events_since_start,
            error: None,
        };
        let events = notification_events(events, context, self.shape.content);
        let bundle = notification_bundle(&ctx, &events, self.shape.content);
        Utf8Bytes::from(bundle.to_string())
    }

    pub fn handshake(&self, base_url: &str) -> Utf8Bytes {
        self.bundle(base_url, NotificationType::Handshake, &[], Vec::new())
    }

    pub fn heartbeat(&self, base_url: &str) -> Utf8Bytes {
        self.bundle(base_url, NotificationType::Heartbeat, &[], Vec::new())
    }

    /// One event-notification bundle per event, so every frame has one event number;
    /// `context` is the event's additional context (see [`Self::context_scope`]).
    pub fn event(
        &self,
        base_url: &str,
        notification: &NotificationRecord,
        context: Vec<AdditionalContext>,
    ) -> Utf8Bytes {
        self.bundle(
            base_url,
            NotificationType::EventNotification,
            std::slice::from_ref(notification),
            vec![context],
        )
    }

    /// R4 classic: `ping <id>`, no payload; the client searches again.
    pub fn ping(&self) -> Utf8Bytes {
        Utf8Bytes::from(format!("ping {}", self.key.id))
    }
}

/// An `OperationOutcome` as a frame.
pub fn outcome(outcome: &OperationOutcome) -> Utf8Bytes {
    Utf8Bytes::from(outcome.to_json().to_string())
}
