//! Storage for Herald: subscriptions, topics, latest resource versions, the change events
//! that matched, and the per-subscription notification log with its gap-free event numbers.
//!
//! [`Store`] is the seam; [`SqliteStore`] (the embedded default) and [`PostgresStore`]
//! (production) implement it from one body of SQL (see [`sql`]), each with its own
//! migrations. Times are epoch milliseconds so the SQL is portable. This crate knows nothing
//! about HTTP, buses or criteria.
//!
//! Event numbers are assigned by `UPDATE subscription_counters SET events_since_start =
//! events_since_start + n ... RETURNING` in the same transaction as the notification rows: a
//! rollback undoes both, so numbers have no gaps, and the unique index on
//! (subscription, event id) makes recording idempotent under redelivery. The counter has a
//! table of its own so the matcher never waits for the row lock of delivery's bookkeeping on
//! `subscriptions` (claims, progress), nor delivery for the matcher's.

mod records;
mod sql;

use async_trait::async_trait;
use serde_json::Value;

pub use records::*;
pub use sql::{PostgresStore, SqliteStore};

/// Errors from storage, converted where storage meets the driver.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything Herald persists. Implementations must be safe to call from many tasks.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies pending migrations.
    async fn migrate(&self) -> StoreResult<()>;
    /// Cheap liveness check for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;

    // --- Subscriptions -------------------------------------------------------------
    async fn create_subscription(
        &self,
        new: NewSubscription<'_>,
    ) -> StoreResult<SubscriptionRecord>;
    async fn get_subscription(
        &self,
        tenant: &str,
        id: &str,
    ) -> StoreResult<Option<SubscriptionRecord>>;
    /// Replaces the resource. Resetting to `requested` restarts the handshake; delivery
    /// then continues from the first undelivered event.
    async fn update_subscription(
        &self,
        new: NewSubscription<'_>,
    ) -> StoreResult<Option<SubscriptionRecord>>;
    /// Deletes the subscription and its notification log.
    async fn delete_subscription(&self, tenant: &str, id: &str) -> StoreResult<bool>;
    async fn search_subscriptions(
        &self,
        tenant: &str,
        query: &SubscriptionQuery,
    ) -> StoreResult<Vec<SubscriptionRecord>>;
    /// Subscriptions whose status counts events (requested, active, error), all tenants.
    async fn counting_subscriptions(&self) -> StoreResult<Vec<SubscriptionRecord>>;
    /// Number of subscriptions (any status) whose criteria is `criteria`, for topic deletion.
    async fn count_subscriptions_with_criteria(
        &self,
        tenant: &str,
        criteria: &str,
    ) -> StoreResult<i64>;

    // --- SubscriptionTopics ----------------------------------------------------------
    async fn put_topic(
        &self,
        tenant: &str,
        id: &str,
        url: &str,
        resource: &Value,
    ) -> StoreResult<TopicRecord>;
    async fn get_topic(&self, tenant: &str, id: &str) -> StoreResult<Option<TopicRecord>>;
    async fn get_topic_by_url(&self, tenant: &str, url: &str) -> StoreResult<Option<TopicRecord>>;
    async fn list_topics(&self, tenant: &str) -> StoreResult<Vec<TopicRecord>>;
    async fn delete_topic(&self, tenant: &str, id: &str) -> StoreResult<bool>;

    // --- Latest resource versions ------------------------------------------------------
    async fn get_resource(
        &self,
        tenant: &str,
        resource_type: &str,
        id: &str,
    ) -> StoreResult<Option<StoredResource>>;
    /// Live (not deleted) resources of `resource_type` in `tenant` whose stored JSON
    /// contains `text` verbatim, in id order, at most `limit`. A cheap prefilter for
    /// reverse-reference lookups (a topic's `notificationShape` revInclude): it may
    /// over-match (SQLite compares ASCII case-insensitively; the text may occur anywhere
    /// in the resource), so callers verify each row exactly. `%`, `_` and `\` in `text`
    /// are matched literally. Scans the tenant's rows of that type: no index helps.
    async fn resources_containing(
        &self,
        tenant: &str,
        resource_type: &str,
        text: &str,
        limit: i64,
    ) -> StoreResult<Vec<StoredResource>>;
    /// Compare-and-set: writes `new` only if the stored sequence is still `expected_seq`
    /// (`None` = no row yet). Returns whether it was written.
    async fn put_resource(
        &self,
        new: &StoredResource,
        expected_seq: Option<i64>,
    ) -> StoreResult<bool>;

    /// Marks the publish of version `seq` as confirmed.
    async fn clear_pending_event(
        &self,
        tenant: &str,
        resource_type: &str,
        id: &str,
        seq: i64,
    ) -> StoreResult<()>;
    /// Resources whose last write's publish is unconfirmed.
    async fn pending_events(&self, limit: i64) -> StoreResult<Vec<StoredResource>>;
    /// The latest versions of `keys` that exist, in no particular order (one round trip
    /// per few hundred keys of a tenant and type, for the matcher's batches).
    async fn get_resources(&self, keys: &[ResourceKey]) -> StoreResult<Vec<StoredResource>>;

    // --- Notification log ------------------------------------------------------------------
    /// Records that `event` matched `subscriptions`, giving each its next event number.
    /// Idempotent: a (subscription, event) pair already recorded keeps its number.
    /// Subscriptions that no longer exist are skipped.
    async fn record_notifications(
        &self,
        event: &EventRecord,
        subscriptions: &[SubscriptionKey],
    ) -> StoreResult<Vec<(SubscriptionKey, i64)>>;
    /// [`record_notifications`](Store::record_notifications) for a batch of events in bus
    /// order, plus their latest-version writes, in ONE transaction (one durable commit for
    /// the batch). Per subscription, the batch's new notifications get consecutive numbers
    /// in the order of `events`; the same guarantees hold as for one event: gap-free,
    /// idempotent on (subscription, event) and on (tenant, type, id, version, action),
    /// deleted subscriptions skipped. A version write that loses its compare-and-set is
    /// skipped (a concurrent writer stored a newer version). Returns, for each event, its
    /// numbered subscriptions. All or nothing: an error leaves nothing recorded.
    async fn record_notifications_batch(
        &self,
        events: &[MatchedEvent],
        versions: &[VersionWrite],
    ) -> StoreResult<Vec<Vec<(SubscriptionKey, i64)>>>;
    /// [`record_notifications_batch`](Store::record_notifications_batch) that, given a
    /// `claim` (see [`BatchClaim`]), also claims the ready rest-hook and NATS-channel
    /// subscriptions it numbered and nobody holds, in the same atomic step, where the store
    /// can: PostgreSQL does when none of the batch's changes was stored before. A
    /// subscription claimed here is delivered by the caller's instance or its claim
    /// released; one not claimed here is left to [`claim_due`](Store::claim_due).
    async fn record_notifications_batch_claiming(
        &self,
        events: &[MatchedEvent],
        versions: &[VersionWrite],
        claim: Option<BatchClaim>,
    ) -> StoreResult<RecordedBatch>;
    /// Notifications with `from <= event_number <= to`, in order, at most `limit`.
    async fn notifications(
        &self,
        tenant: &str,
        subscription_id: &str,
        from: i64,
        to: i64,
        limit: i64,
    ) -> StoreResult<Vec<NotificationRecord>>;

    // --- Delivery state ----------------------------------------------------------------
    /// Claims rest-hook and NATS-channel subscriptions (the channels Herald pushes to; a
    /// WebSocket client pulls) with work due at `now_ms` (a handshake, undelivered
    /// events or a heartbeat) until `lease_until_ms`, so no other instance delivers them
    /// meanwhile. Every delivery outcome below ends the claim; a crashed claimer's claim
    /// runs out at `lease_until_ms`.
    async fn claim_due(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<SubscriptionRecord>>;
    /// `$resend`: delivery continues from event `from` (inclusive) again. Returns false if
    /// nothing changed (unknown subscription or `from` not yet delivered).
    async fn rewind_delivery(&self, key: &SubscriptionKey, from: i64) -> StoreResult<bool>;
    /// Retention: removes notifications that were delivered and are older than `before_ms`
    /// or further than `keep_per_subscription` behind the newest; never an undelivered one.
    /// Then removes change events no notification refers to. Returns rows removed.
    async fn prune_notifications(
        &self,
        before_ms: i64,
        keep_per_subscription: i64,
    ) -> StoreResult<u64>;
    /// Records progress of a claimed delivery without ending the claim: `delivered_through`
    /// moves from `from` to `through` only if it is still `from` (a client's `$resend` or
    /// reset meanwhile wins). Returns whether it moved.
    async fn advance_delivery(
        &self,
        key: &SubscriptionKey,
        from: i64,
        through: i64,
        now_ms: i64,
    ) -> StoreResult<bool>;
    /// [`advance_delivery`](Store::advance_delivery) and the end of the claim in one write,
    /// for a delivery that sent everything it found. Returns whether progress moved; if it
    /// did not (a client's rewind won), the claim is still held.
    async fn finish_delivery(
        &self,
        key: &SubscriptionKey,
        from: i64,
        through: i64,
        now_ms: i64,
    ) -> StoreResult<bool>;
    /// Ends a claim without an outcome (nothing turned out to be due).
    async fn release_claim(&self, key: &SubscriptionKey) -> StoreResult<()>;
    /// Ends every claim. Only for a single instance at start (the embedded mode).
    async fn release_all_claims(&self) -> StoreResult<()>;
    async fn handshake_result(
        &self,
        key: &SubscriptionKey,
        version_id: i64,
        outcome: Result<(), &str>,
        now_ms: i64,
    ) -> StoreResult<()>;
    async fn mark_delivered(
        &self,
        key: &SubscriptionKey,
        through: i64,
        now_ms: i64,
    ) -> StoreResult<()>;
    async fn mark_heartbeat(&self, key: &SubscriptionKey, now_ms: i64) -> StoreResult<()>;
    async fn record_delivery_failure(
        &self,
        key: &SubscriptionKey,
        failure: &DeliveryFailure<'_>,
    ) -> StoreResult<()>;
    async fn set_status(
        &self,
        key: &SubscriptionKey,
        status: herald_fhir::SubscriptionStatus,
        error: Option<&str>,
    ) -> StoreResult<()>;

    // --- Access and audit ----------------------------------------------------------------
    /// Subscriptions (any status) owned by `client_id`, for the per-client limit.
    async fn count_subscriptions_by_owner(&self, tenant: &str, client_id: &str)
        -> StoreResult<i64>;
    /// Revokes a client's or a token's access; revoking twice keeps the first record.
    async fn revoke_access(
        &self,
        tenant: &str,
        kind: RevocationKind,
        value: &str,
        reason: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<()>;
    /// Whether the client, or the token (by `jti`), has been revoked.
    async fn is_revoked(
        &self,
        tenant: &str,
        client_id: &str,
        token_id: Option<&str>,
    ) -> StoreResult<bool>;
    /// Appends audit records in one transaction.
    async fn append_audit(&self, records: &[AuditRecord]) -> StoreResult<()>;
    /// Audit records of a tenant, newest first.
    async fn search_audit(&self, tenant: &str, query: &AuditQuery)
        -> StoreResult<Vec<AuditRecord>>;
    async fn get_audit(&self, tenant: &str, id: &str) -> StoreResult<Option<AuditRecord>>;
}

#[cfg(test)]
mod tests;
