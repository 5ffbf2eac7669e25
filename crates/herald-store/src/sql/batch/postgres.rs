//! The matcher's batch on PostgreSQL in one statement, when none of its changes is stored
//! yet: the every-day case, a change event seen for the first time.
//!
//! Why: the general path ([`record_batch_general`](PostgresStore::record_batch_general)) is
//! a transaction of about seven statements (BEGIN, the canonical-id lookup, the change
//! events, the counters, the notifications, the latest versions, COMMIT), each a round trip
//! to a server that shares this machine's cores, and its multi-row statements change text
//! with every batch size, so each new size is parsed and planned again. Here the batch goes
//! as arrays (`unnest`) into one statement of fixed text, prepared once per connection, that
//! commits on its own: one round trip.
//!
//! The assumption "nothing of this batch is stored yet" is checked by the database, not
//! trusted: the change events are inserted without `ON CONFLICT`, so a change stored before
//! (a redelivered event, the same change re-sent under another id) raises a unique
//! violation, which rolls the whole statement back. The batch then takes the general path,
//! which finds the stored change and keeps its numbers. Nothing is recorded twice or half.
//!
//! Counters are locked in key order before they are updated, as the general path does, so
//! concurrent batches of several instances cannot deadlock on them.

use std::collections::HashMap;

use serde_json::Value;
use sqlx::Row;

use super::{
    add_new_changes, matched_changes, numbered_per_event, pairs_to_number, ChangeKey, Pair,
};
use crate::records::*;
use crate::sql::PostgresStore;
use crate::StoreResult;

/// Inserts the batch's change events, numbers its notifications and writes its latest
/// versions (compare-and-set) in one statement; returns each numbered subscription's new
/// counter and how many numbers the batch took from it, and, when asked to claim (`$37`,
/// the lease, not null), the subscription row of each one it claimed.
///
/// The claim takes what [`claim_due`](crate::Store::claim_due) would for undelivered
/// events: a ready rest-hook or NATS-channel subscription whose status counts events, not
/// claimed or backing off (`next_attempt_at` due at `$38`). Rows another transaction holds
/// are skipped, not waited for (`SKIP LOCKED`), so the matcher never waits on delivery's
/// bookkeeping; what it skips, `claim_due` takes. A row whose counter this statement
/// moved is returned with that counter: the statement's other parts do not see each
/// other's changes.
const RECORD_NEW_BATCH: &str = "\
WITH new_events AS ( \
    INSERT INTO change_events (tenant, event_id, action, resource_type, resource_id, version_id, occurred_at, resource, recorded_at) \
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::text[], $9::int8[]) \
    RETURNING 1 \
), wanted AS ( \
    SELECT * FROM unnest($10::text[], $11::text[], $12::int8[]) AS w(tenant, id, taken) \
), locked AS ( \
    SELECT s.tenant, s.id FROM subscription_counters s JOIN wanted w ON s.tenant = w.tenant AND s.id = w.id \
    ORDER BY s.tenant, s.id FOR UPDATE OF s \
), counters AS ( \
    UPDATE subscription_counters s SET events_since_start = s.events_since_start + w.taken \
    FROM wanted w JOIN locked l ON l.tenant = w.tenant AND l.id = w.id \
    WHERE s.tenant = w.tenant AND s.id = w.id \
    RETURNING s.tenant, s.id, s.events_since_start AS last, w.taken \
), numbered AS ( \
    INSERT INTO notifications (tenant, subscription_id, event_number, event_id, created_at) \
    SELECT n.tenant, n.subscription_id, c.last - c.taken + n.ordinal, n.event_id, n.created_at \
    FROM unnest($13::text[], $14::text[], $15::int8[], $16::text[], $17::int8[]) \
        AS n(tenant, subscription_id, ordinal, event_id, created_at) \
    JOIN counters c ON c.tenant = n.tenant AND c.id = n.subscription_id \
    RETURNING 1 \
), inserted_versions AS ( \
    INSERT INTO resources (tenant, resource_type, id, seq, version_id, deleted, resource, updated_at, pending_event) \
    SELECT * FROM unnest($18::text[], $19::text[], $20::text[], $21::int8[], $22::text[], $23::int8[], $24::text[], $25::int8[], $26::text[]) \
    ON CONFLICT DO NOTHING \
    RETURNING 1 \
), updated_versions AS ( \
    UPDATE resources r SET seq = u.seq, version_id = u.version_id, deleted = u.deleted, resource = u.resource, \
        updated_at = u.updated_at, pending_event = u.pending_event \
    FROM unnest($27::text[], $28::text[], $29::text[], $30::int8[], $31::text[], $32::int8[], $33::text[], $34::int8[], $35::text[], $36::int8[]) \
        AS u(tenant, resource_type, id, seq, version_id, deleted, resource, updated_at, pending_event, expected_seq) \
    WHERE r.tenant = u.tenant AND r.resource_type = u.resource_type AND r.id = u.id AND r.seq = u.expected_seq \
    RETURNING 1 \
), claimable AS ( \
    SELECT s.tenant, s.id FROM subscriptions s JOIN counters c ON c.tenant = s.tenant AND c.id = s.id \
    WHERE $37::int8 IS NOT NULL AND s.channel_type IN ('rest-hook', 'nats') \
    AND s.status IN ('requested', 'active', 'error') AND s.delivery_state = 'ready' \
    AND (s.next_attempt_at IS NULL OR s.next_attempt_at <= $38::int8) \
    ORDER BY s.tenant, s.id FOR UPDATE OF s SKIP LOCKED \
), claimed AS ( \
    UPDATE subscriptions s SET next_attempt_at = $37::int8 \
    FROM claimable k WHERE s.tenant = k.tenant AND s.id = k.id \
    RETURNING s.* \
) \
SELECT c.tenant, c.id, c.last, c.taken, k.id IS NOT NULL AS claimed, \
    k.version_id, k.resource, k.status, k.error, k.criteria, k.channel_type, k.heartbeat_period, \
    k.delivery_state, c.last AS events_since_start, k.delivered_through, k.attempts, k.next_attempt_at, \
    k.last_sent_at, k.created_at, k.updated_at, k.owner \
FROM counters c LEFT JOIN claimed k ON k.tenant = c.tenant AND k.id = c.id";

/// Column arrays of latest-version rows, as `unnest` takes them.
#[derive(Default)]
struct VersionColumns {
    tenant: Vec<String>,
    resource_type: Vec<String>,
    id: Vec<String>,
    seq: Vec<i64>,
    version_id: Vec<String>,
    deleted: Vec<i64>,
    resource: Vec<Option<String>>,
    updated_at: Vec<i64>,
    pending_event: Vec<Option<String>>,
    expected_seq: Vec<i64>,
}

impl VersionColumns {
    fn push(&mut self, write: &VersionWrite) {
        let new = &write.resource;
        self.tenant.push(new.tenant.clone());
        self.resource_type.push(new.resource_type.clone());
        self.id.push(new.id.clone());
        self.seq.push(new.seq);
        self.version_id.push(new.version_id.clone());
        self.deleted.push(i64::from(new.deleted));
        self.resource
            .push(new.resource.as_ref().map(Value::to_string));
        self.updated_at.push(new.updated_at);
        self.pending_event.push(new.pending_event.clone());
        if let Some(expected) = write.expected_seq {
            self.expected_seq.push(expected);
        }
    }
}

impl PostgresStore {
    /// Records a batch: in one statement when none of its changes is stored yet, else by
    /// the general path (see the module doc).
    pub(in crate::sql) async fn record_batch(
        &self,
        events: &[MatchedEvent],
        versions: &[VersionWrite],
        claim: Option<BatchClaim>,
    ) -> StoreResult<RecordedBatch> {
        match self.record_new_batch(events, versions, claim).await? {
            Some(recorded) => Ok(recorded),
            // The general path claims nothing; delivery claims as usual.
            None => Ok(RecordedBatch {
                numbered: self.record_batch_general(events, versions).await?,
                claimed: Vec::new(),
            }),
        }
    }

    /// The one-statement path; `None` if some change of the batch was stored before (the
    /// statement rolled back whole).
    async fn record_new_batch(
        &self,
        events: &[MatchedEvent],
        versions: &[VersionWrite],
        claim: Option<BatchClaim>,
    ) -> StoreResult<Option<RecordedBatch>> {
        let matched = matched_changes(events);
        let mut canonical: HashMap<ChangeKey, (String, bool)> = HashMap::new();
        let new_events = add_new_changes(&matched, &mut canonical);
        let mut numbers: HashMap<Pair, Option<i64>> = HashMap::new();
        let new_pairs = pairs_to_number(events, &canonical, &mut numbers);

        let mut q = sqlx::query(RECORD_NEW_BATCH);
        q = q
            .bind(column(&new_events, |e| e.tenant.clone()))
            .bind(column(&new_events, |e| e.event_id.clone()))
            .bind(column(&new_events, |e| e.action.clone()))
            .bind(column(&new_events, |e| e.resource_type.clone()))
            .bind(column(&new_events, |e| e.resource_id.clone()))
            .bind(column(&new_events, |e| e.version_id.clone()))
            .bind(column(&new_events, |e| e.occurred_at))
            .bind(column(&new_events, |e| {
                e.resource.as_ref().map(Value::to_string)
            }))
            .bind(column(&new_events, |e| e.recorded_at));

        let wanted: Vec<(&SubscriptionKey, i64)> = new_pairs
            .iter()
            .map(|(key, pairs)| (key, pairs.len() as i64))
            .collect();
        q = q
            .bind(column(&wanted, |(k, _)| k.tenant.clone()))
            .bind(column(&wanted, |(k, _)| k.id.clone()))
            .bind(column(&wanted, |(_, taken)| *taken));

        let mut pair_tenant = Vec::new();
        let mut pair_subscription = Vec::new();
        let mut pair_ordinal = Vec::new();
        let mut pair_event = Vec::new();
        let mut pair_created = Vec::new();
        for (key, pairs) in &new_pairs {
            for (ordinal, (event_id, created_at)) in (1_i64..).zip(pairs) {
                pair_tenant.push(key.tenant.clone());
                pair_subscription.push(key.id.clone());
                pair_ordinal.push(ordinal);
                pair_event.push(event_id.clone());
                pair_created.push(*created_at);
            }
        }
        q = q
            .bind(pair_tenant)
            .bind(pair_subscription)
            .bind(pair_ordinal)
            .bind(pair_event)
            .bind(pair_created);

        let (mut inserts, mut updates) = (VersionColumns::default(), VersionColumns::default());
        for write in versions {
            match write.expected_seq {
                None => inserts.push(write),
                Some(_) => updates.push(write),
            }
        }
        // Inserts bind $18..$26; updates $27..$36, the last their expected sequences.
        for (columns, compare_and_set) in [(inserts, false), (updates, true)] {
            q = q
                .bind(columns.tenant)
                .bind(columns.resource_type)
                .bind(columns.id)
                .bind(columns.seq)
                .bind(columns.version_id)
                .bind(columns.deleted)
                .bind(columns.resource)
                .bind(columns.updated_at)
                .bind(columns.pending_event);
            if compare_and_set {
                q = q.bind(columns.expected_seq);
            }
        }
        q = q
            .bind(claim.map(|c| c.lease_until_ms))
            .bind(claim.map(|c| c.now_ms));

        let rows = match q.fetch_all(&self.batches).await {
            Ok(rows) => rows,
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                tracing::debug!(reason = %db.message(), "a change of the batch was stored before; recording it on the general path");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let mut counters: HashMap<SubscriptionKey, (i64, i64)> = HashMap::new();
        let mut claimed_records = Vec::new();
        for row in rows {
            let key = SubscriptionKey {
                tenant: row.try_get("tenant")?,
                id: row.try_get("id")?,
            };
            counters.insert(key.clone(), (row.try_get("last")?, row.try_get("taken")?));
            if row.try_get::<bool, _>("claimed")? {
                match Self::subscription(&row) {
                    Ok(record) => claimed_records.push(record),
                    Err(e) => {
                        // The batch is recorded (committed); only this claim cannot be
                        // handed over. Given back, `claim_due` meets the row (and reports it).
                        tracing::warn!(id = %key.id, error = %e, "claimed subscription unreadable; releasing its claim");
                        if let Err(e) = crate::Store::release_claim(self, &key).await {
                            tracing::warn!(id = %key.id, error = %e, "could not release the claim; it runs out with its lease");
                        }
                    }
                }
            }
        }
        // A subscription deleted meanwhile has no counter row and its pairs no number.
        for (key, pairs) in &new_pairs {
            let Some((last, taken)) = counters.get(key) else {
                continue;
            };
            for (offset, (event_id, _)) in (0_i64..).zip(pairs) {
                numbers.insert(
                    (key.clone(), event_id.clone()),
                    Some(last - taken + 1 + offset),
                );
            }
        }
        // A claimed subscription's notifications, as the log holds them: its pairs in
        // number order, each with the change event this statement inserted (event ids are
        // unique per tenant only).
        let inserted: HashMap<(&str, &str), &EventRecord> = new_events
            .iter()
            .map(|e| ((e.tenant.as_str(), e.event_id.as_str()), *e))
            .collect();
        let claimed = claimed_records
            .into_iter()
            .map(|record| {
                let (last, taken) = counters[&record.key];
                let notifications = new_pairs[&record.key]
                    .iter()
                    .zip(last - taken + 1..)
                    .map(|((event_id, _), event_number)| NotificationRecord {
                        event_number,
                        event: (*inserted[&(record.key.tenant.as_str(), event_id.as_str())])
                            .clone(),
                    })
                    .collect();
                ClaimedDelivery {
                    record,
                    notifications,
                    claimed_at_ms: claim.map_or(0, |c| c.now_ms),
                }
            })
            .collect();
        Ok(Some(RecordedBatch {
            numbered: numbered_per_event(events, &canonical, &numbers),
            claimed,
        }))
    }
}

/// One column of `rows`, as an array parameter.
fn column<R, T>(rows: &[R], value: impl Fn(&R) -> T) -> Vec<T> {
    rows.iter().map(value).collect()
}
