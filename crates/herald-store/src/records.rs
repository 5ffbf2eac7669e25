//! Plain records that cross the storage seam.

use herald_fhir::SubscriptionStatus;
use serde_json::Value;

/// (tenant, subscription id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionKey {
    pub tenant: String,
    pub id: String,
}

impl SubscriptionKey {
    pub fn new(tenant: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            id: id.into(),
        }
    }
}

/// Input for creating or replacing a subscription.
#[derive(Debug, Clone)]
pub struct NewSubscription<'a> {
    pub tenant: &'a str,
    pub id: &'a str,
    /// The resource as the client sent it (server-managed fields are set on read).
    pub resource: &'a Value,
    pub status: SubscriptionStatus,
    pub criteria: &'a str,
    pub channel_type: &'a str,
    pub heartbeat_period: Option<u32>,
    pub now_ms: i64,
}

/// Whether delivery is waiting for a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Handshake,
    Ready,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Handshake => "handshake",
            Self::Ready => "ready",
        }
    }
}

/// A stored subscription with its server-managed state.
#[derive(Debug, Clone)]
pub struct SubscriptionRecord {
    pub key: SubscriptionKey,
    pub version_id: i64,
    pub resource: Value,
    pub status: SubscriptionStatus,
    pub error: Option<String>,
    pub criteria: String,
    pub channel_type: String,
    pub heartbeat_period: Option<i64>,
    pub delivery_state: DeliveryState,
    pub events_since_start: i64,
    pub delivered_through: i64,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub last_sent_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Search over subscriptions; each list is OR-ed, lists are AND-ed.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionQuery {
    pub ids: Vec<String>,
    pub statuses: Vec<String>,
    pub criteria: Vec<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct TopicRecord {
    pub tenant: String,
    pub id: String,
    pub url: String,
    pub version_id: i64,
    pub resource: Value,
    pub updated_at: i64,
}

/// The latest version of a resource Herald has seen.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResource {
    pub tenant: String,
    pub resource_type: String,
    pub id: String,
    /// Local, strictly increasing per resource.
    pub seq: i64,
    pub version_id: String,
    pub deleted: bool,
    pub resource: Option<Value>,
    pub updated_at: i64,
    /// The serialized change event of this version while its publish is unconfirmed.
    pub pending_event: Option<String>,
}

/// A change event as the notification log keeps it.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub event_id: String,
    pub tenant: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    pub version_id: String,
    pub occurred_at: i64,
    /// The focus resource (current version, or the deleted one).
    pub resource: Option<Value>,
    pub recorded_at: i64,
}

/// One entry of a subscription's notification log, with its change event.
#[derive(Debug, Clone)]
pub struct NotificationRecord {
    pub event_number: i64,
    pub event: EventRecord,
}

/// A failed delivery attempt and what follows from it.
#[derive(Debug, Clone)]
pub struct DeliveryFailure<'a> {
    /// The subscription version the attempt was for: a client update meanwhile wins.
    pub version_id: i64,
    pub attempts: i64,
    /// When to try again; `None` = give up.
    pub next_attempt_at: Option<i64>,
    pub status: SubscriptionStatus,
    pub error: &'a str,
    pub now_ms: i64,
}
