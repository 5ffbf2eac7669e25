//! The audit trail (issue 5): every subscription create, update and delete, every status
//! change, binding-token issue, access revocation and delivery attempt is recorded — who,
//! what, when, outcome — in storage and served to administrators as FHIR R4 `AuditEvent`.
//!
//! [`AuditLog`] is the one way in. Actions a client asked for ([`AuditLog::record_now`]) are
//! written before the client gets its answer. Herald's own high-volume actions (deliveries)
//! go through [`AuditLog::record`]: a bounded queue drained in batches by one writer task, so
//! auditing never costs a delivery a database round trip, and a full queue slows the
//! deliverer down rather than dropping records.
//!
//! Audit records never carry secrets: callers pass diagnostics that were already safe to
//! show the client (no header values, tokens or signing secrets).

mod fhir;

use std::sync::Arc;
use std::time::Duration;

use herald_store::{AuditRecord, Store, StoreResult};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use fhir::{audit_event, AUDIT_EVENT_SUBTYPE_SYSTEM, CLIENT_ID_SYSTEM};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    SubscriptionCreate,
    SubscriptionUpdate,
    SubscriptionDelete,
    /// Herald changed a subscription's status (handshake, errors, 410, revoked access).
    SubscriptionStatus,
    /// A WebSocket binding token was issued.
    BindingToken,
    /// An administrator revoked a client's or token's access.
    AccessRevoked,
    /// A notification (handshake, heartbeat, event) was sent, or its sending failed.
    Delivery,
    /// A notification was withheld because the owner's grant no longer covers it.
    DeliveryWithheld,
}

impl AuditKind {
    pub const ALL: [AuditKind; 8] = [
        Self::SubscriptionCreate,
        Self::SubscriptionUpdate,
        Self::SubscriptionDelete,
        Self::SubscriptionStatus,
        Self::BindingToken,
        Self::AccessRevoked,
        Self::Delivery,
        Self::DeliveryWithheld,
    ];

    /// The code stored and shown as `AuditEvent.subtype`.
    pub fn code(self) -> &'static str {
        match self {
            Self::SubscriptionCreate => "subscription-create",
            Self::SubscriptionUpdate => "subscription-update",
            Self::SubscriptionDelete => "subscription-delete",
            Self::SubscriptionStatus => "subscription-status",
            Self::BindingToken => "binding-token",
            Self::AccessRevoked => "access-revoked",
            Self::Delivery => "delivery",
            Self::DeliveryWithheld => "delivery-withheld",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    /// FHIR `AuditEvent.action`: C(reate) R(ead) U(pdate) D(elete) E(xecute).
    fn action(self) -> &'static str {
        match self {
            Self::SubscriptionCreate | Self::BindingToken => "C",
            Self::SubscriptionUpdate | Self::SubscriptionStatus | Self::AccessRevoked => "U",
            Self::SubscriptionDelete => "D",
            Self::Delivery | Self::DeliveryWithheld => "E",
        }
    }
}

/// FHIR `AuditEvent.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    Success,
    /// The request was refused or the attempt failed and will be retried.
    MinorFailure,
    /// The action failed for good (e.g. retries exhausted).
    SeriousFailure,
}

impl AuditOutcome {
    pub fn code(self) -> &'static str {
        match self {
            Self::Success => "0",
            Self::MinorFailure => "4",
            Self::SeriousFailure => "8",
        }
    }
}

/// Herald itself, as the agent of deliveries and status changes.
pub const HERALD_AGENT: &str = "herald";

/// One thing to record; build with [`AuditEntry::new`] and the setters.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    record: AuditRecord,
}

impl AuditEntry {
    pub fn new(tenant: &str, kind: AuditKind, outcome: AuditOutcome) -> Self {
        Self {
            record: AuditRecord {
                tenant: tenant.to_owned(),
                id: uuid::Uuid::new_v4().to_string(),
                recorded_at: chrono::Utc::now().timestamp_millis(),
                kind: kind.code().to_owned(),
                action: kind.action().to_owned(),
                outcome: outcome.code().to_owned(),
                agent_client: Some(HERALD_AGENT.to_owned()),
                agent_subject: None,
                entity: None,
                detail: None,
            },
        }
    }

    /// A status change Herald made to a subscription (`detail` starts with the new status).
    pub fn status_change(tenant: &str, subscription_id: &str, detail: impl Into<String>) -> Self {
        Self::new(tenant, AuditKind::SubscriptionStatus, AuditOutcome::Success)
            .entity(format!("Subscription/{subscription_id}"))
            .detail(format!("status {}", detail.into()))
    }

    /// The client that acted and its user (`sub`); Herald when not set.
    pub fn agent(mut self, client: &str, subject: Option<&str>) -> Self {
        self.record.agent_client = Some(client.to_owned());
        self.record.agent_subject = subject.map(str::to_owned);
        self
    }

    /// What was acted on, as a relative reference (`Subscription/abc`).
    pub fn entity(mut self, reference: impl Into<String>) -> Self {
        self.record.entity = Some(reference.into());
        self
    }

    /// The outcome in words; must be safe to show (no secrets).
    pub fn detail(mut self, text: impl Into<String>) -> Self {
        self.record.detail = Some(text.into());
        self
    }

    pub fn into_record(self) -> AuditRecord {
        self.record
    }
}

/// Records audit entries; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    store: Arc<dyn Store>,
    queue: mpsc::Sender<AuditRecord>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

/// Records queued before the writer makes the deliverers wait.
const QUEUE_CAPACITY: usize = 8_192;
/// Records written per transaction at most.
const BATCH: usize = 512;

impl AuditLog {
    /// Starts the writer task; it drains the queue and stops once `shutdown` is cancelled
    /// and every queued record is written.
    pub fn start(
        store: Arc<dyn Store>,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let writer = tokio::spawn(write_batches(Arc::clone(&store), receiver, shutdown));
        (Self { store, queue }, writer)
    }

    /// Records now: returns once stored. For actions a client is waiting on.
    pub async fn record_now(&self, entry: AuditEntry) -> StoreResult<()> {
        self.store.append_audit(&[entry.into_record()]).await
    }

    /// Queues for the writer; waits while the queue is full, never drops.
    pub async fn record(&self, entry: AuditEntry) {
        let record = entry.into_record();
        if let Err(mpsc::error::SendError(record)) = self.queue.send(record).await {
            // The writer has stopped (shutdown): write directly.
            if let Err(e) = self.store.append_audit(&[record]).await {
                tracing::error!(error = %e, "could not write an audit record during shutdown");
            }
        }
    }
}

async fn write_batches(
    store: Arc<dyn Store>,
    mut receiver: mpsc::Receiver<AuditRecord>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let received = tokio::select! {
            n = receiver.recv_many(&mut batch, BATCH) => n,
            () = shutdown.cancelled() => {
                receiver.close();
                while receiver.recv_many(&mut batch, BATCH).await > 0 {
                    write(&store, &mut batch).await;
                }
                return;
            }
        };
        if received == 0 {
            return;
        }
        write(&store, &mut batch).await;
    }
}

/// Writes a batch, retrying storage errors with backoff until it is stored: an audit record
/// is never dropped because the database is away. Meanwhile the queue fills and the
/// deliverers wait ([`AuditLog::record`]), which is the intended backpressure.
async fn write(store: &Arc<dyn Store>, batch: &mut Vec<AuditRecord>) {
    let mut delay = Duration::from_millis(50);
    let mut attempt: u64 = 0;
    while let Err(e) = store.append_audit(batch).await {
        attempt += 1;
        if attempt == 1 || attempt % 20 == 0 {
            tracing::error!(error = %e, attempt, pending = batch.len(), "could not write audit records; retrying");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    batch.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_store::{AuditQuery, SqliteStore};

    #[tokio::test]
    async fn queued_and_immediate_records_are_stored_and_flushed_at_shutdown() {
        let store = SqliteStore::in_memory().await.expect("store");
        store.migrate().await.expect("migrate");
        let store: Arc<dyn Store> = Arc::new(store);
        let shutdown = CancellationToken::new();
        let (log, writer) = AuditLog::start(Arc::clone(&store), shutdown.clone());
        log.record_now(
            AuditEntry::new("t", AuditKind::SubscriptionCreate, AuditOutcome::Success)
                .agent("client-a", Some("user"))
                .entity("Subscription/s1"),
        )
        .await
        .expect("immediate");
        for n in 0..1_000 {
            log.record(
                AuditEntry::new("t", AuditKind::Delivery, AuditOutcome::Success)
                    .entity("Subscription/s1")
                    .detail(format!("event {n}")),
            )
            .await;
        }
        shutdown.cancel();
        writer.await.expect("writer");
        let query = AuditQuery {
            kinds: vec!["delivery".into()],
            limit: Some(1_000),
            ..AuditQuery::default()
        };
        assert_eq!(
            store.search_audit("t", &query).await.expect("search").len(),
            1_000,
            "every queued record is written before the writer stops"
        );
        let created = store
            .search_audit(
                "t",
                &AuditQuery {
                    kinds: vec!["subscription-create".into()],
                    ..AuditQuery::default()
                },
            )
            .await
            .expect("search");
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].action, "C");
        assert_eq!(created[0].agent_client.as_deref(), Some("client-a"));
    }

    #[test]
    fn kinds_round_trip() {
        for kind in AuditKind::ALL {
            assert_eq!(AuditKind::parse(kind.code()), Some(kind));
        }
        assert_eq!(AuditKind::parse("nope"), None);
    }
}
