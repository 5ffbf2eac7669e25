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
    /// The grant the subscription runs under (`None` in development mode).
    pub owner: Option<&'a SubscriptionOwner>,
    pub now_ms: i64,
}

/// The grant a subscription was created or last updated under. Delivery re-checks it before
/// every send: a revoked client or token stops receiving, and a patient-limited grant only
/// ever receives its patient's resources of the types its scopes allow.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubscriptionOwner {
    /// The OAuth client (`client_id`, else `azp`, else `sub`).
    pub client_id: String,
    /// The token's `sub`.
    pub subject: String,
    /// The token's `jti`, when it carried one, so revoking that token stops delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// The patient the grant is limited to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// The granted SMART scopes, as the token listed them.
    pub scopes: Vec<String>,
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
    pub owner: Option<SubscriptionOwner>,
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

/// (tenant, resource type, id): which resource a latest-version row is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    pub tenant: String,
    pub resource_type: String,
    pub id: String,
}

impl StoredResource {
    pub fn key(&self) -> ResourceKey {
        ResourceKey {
            tenant: self.tenant.clone(),
            resource_type: self.resource_type.clone(),
            id: self.id.clone(),
        }
    }
}

/// One change event of a batch and the subscriptions it matched (possibly none).
#[derive(Debug, Clone)]
pub struct MatchedEvent {
    pub event: EventRecord,
    pub subscriptions: Vec<SubscriptionKey>,
}

/// A latest-version write with compare-and-set, as [`Store::put_resource`](crate::Store::put_resource):
/// written only if the stored sequence is still `expected_seq` (`None` = no row yet).
#[derive(Debug, Clone)]
pub struct VersionWrite {
    pub resource: StoredResource,
    pub expected_seq: Option<i64>,
}

/// One entry of a subscription's notification log, with its change event.
#[derive(Debug, Clone)]
pub struct NotificationRecord {
    pub event_number: i64,
    pub event: EventRecord,
}

/// Asks the matcher's batch to claim, as [`Store::claim_due`](crate::Store::claim_due)
/// would at `now_ms` until `lease_until_ms`, the push-channel subscriptions it gives new
/// notifications, so this instance delivers them at once without claiming them again.
#[derive(Debug, Clone, Copy)]
pub struct BatchClaim {
    pub now_ms: i64,
    pub lease_until_ms: i64,
}

/// A subscription the matcher's batch claimed, with the notifications that batch gave it:
/// in order, numbered consecutively up to the record's `events_since_start`.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub record: SubscriptionRecord,
    pub notifications: Vec<NotificationRecord>,
    /// When it was claimed ([`BatchClaim::now_ms`]): a record that waited long before
    /// delivery starts is read again, as a client may have changed it meanwhile.
    pub claimed_at_ms: i64,
}

/// What recording a batch did: for each event, its numbered subscriptions; and the
/// subscriptions it claimed (see [`BatchClaim`]).
#[derive(Debug, Clone, Default)]
pub struct RecordedBatch {
    pub numbered: Vec<Vec<(SubscriptionKey, i64)>>,
    pub claimed: Vec<ClaimedDelivery>,
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

/// What an administrator revoked: every subscription owned by the client, or created under
/// the token, stops receiving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationKind {
    Client,
    Token,
}

impl RevocationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Token => "token",
        }
    }
}

/// One entry of the audit trail (served as a FHIR `AuditEvent`). Never holds secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub tenant: String,
    pub id: String,
    pub recorded_at: i64,
    /// What happened, e.g. `subscription-create`, `delivery`, `binding-token`.
    pub kind: String,
    /// FHIR `AuditEvent.action`: C R U D E.
    pub action: String,
    /// FHIR `AuditEvent.outcome`: 0 success, 4 minor failure, 8 serious failure, 12 major.
    pub outcome: String,
    /// The client that acted (`herald` for Herald's own actions such as deliveries).
    pub agent_client: Option<String>,
    pub agent_subject: Option<String>,
    /// What it acted on, as a relative reference (`Subscription/abc`).
    pub entity: Option<String>,
    /// Outcome description.
    pub detail: Option<String>,
}

/// Search over the audit trail; every given field must match.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub kinds: Vec<String>,
    pub entity: Option<String>,
    pub agent_client: Option<String>,
    pub outcome: Option<String>,
    pub limit: Option<i64>,
}
