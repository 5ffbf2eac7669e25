//! The matcher's batch path: latest versions read for many resources at once, and a batch
//! of matched change events recorded in one transaction.
//!
//! Why a batch: every commit is a durable flush (SQLite `synchronous=FULL`, a PostgreSQL WAL
//! flush), and on this kind of machine a flush costs 1–5 ms. One transaction per change
//! event capped the matcher at a few hundred events per second; one per batch pays the flush
//! once for up to a few hundred events. Inside the transaction the statements are also
//! batched (multi-row inserts, one counter update per subscription), because on PostgreSQL
//! each statement is a network round trip.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;
use sqlx::{QueryBuilder, Row};

use super::{PostgresStore, SqliteStore, RESOURCE_COLUMNS};
use crate::records::*;
use crate::StoreResult;

mod postgres;

/// Values bound per statement stay far below SQLite's limit (32,766) and PostgreSQL's
/// (65,535): at most this many rows per multi-row statement.
const ROWS_PER_STATEMENT: usize = 200;

/// What identifies a change regardless of its event id: (tenant, type, id, version, action).
type ChangeKey = (String, String, String, String, String);

fn change_key(event: &EventRecord) -> ChangeKey {
    (
        event.tenant.clone(),
        event.resource_type.clone(),
        event.resource_id.clone(),
        event.version_id.clone(),
        event.action.clone(),
    )
}

/// A notification's identity: (subscription, canonical event id).
type Pair = (SubscriptionKey, String);

/// The change events of the batch that matched some subscription, in bus order.
fn matched_changes(events: &[MatchedEvent]) -> Vec<&EventRecord> {
    events
        .iter()
        .filter(|m| !m.subscriptions.is_empty())
        .map(|m| &m.event)
        .collect()
}

/// Each change of `matched` not in `canonical` yet becomes its own canonical event (not
/// stored before); returns those changes, each once, in bus order: the rows to insert.
fn add_new_changes<'e>(
    matched: &[&'e EventRecord],
    canonical: &mut HashMap<ChangeKey, (String, bool)>,
) -> Vec<&'e EventRecord> {
    let mut new_events = Vec::new();
    for event in matched {
        canonical.entry(change_key(event)).or_insert_with(|| {
            new_events.push(*event);
            (event.event_id.clone(), false)
        });
    }
    new_events
}

/// The (subscription, canonical event) pairs of a batch without a number yet, per
/// subscription in key order and, within one, in bus order: each subscription's counter
/// grows by its list's length and the list takes the numbers it frees, in order. Every
/// pair is entered in `numbers` (as `None` until numbered), so a pair repeated in the
/// batch is numbered once.
fn pairs_to_number(
    events: &[MatchedEvent],
    canonical: &HashMap<ChangeKey, (String, bool)>,
    numbers: &mut HashMap<Pair, Option<i64>>,
) -> BTreeMap<SubscriptionKey, Vec<(String, i64)>> {
    let mut new_pairs: BTreeMap<SubscriptionKey, Vec<(String, i64)>> = BTreeMap::new();
    for m in events.iter().filter(|m| !m.subscriptions.is_empty()) {
        let event_id = &canonical[&change_key(&m.event)].0;
        for key in &m.subscriptions {
            let pair = (key.clone(), event_id.clone());
            if numbers.contains_key(&pair) {
                continue;
            }
            numbers.insert(pair, None);
            new_pairs
                .entry(key.clone())
                .or_default()
                .push((event_id.clone(), m.event.recorded_at));
        }
    }
    new_pairs
}

/// For each event of the batch, its subscriptions with their numbers (a subscription
/// deleted meanwhile has none and is left out).
fn numbered_per_event(
    events: &[MatchedEvent],
    canonical: &HashMap<ChangeKey, (String, bool)>,
    numbers: &HashMap<Pair, Option<i64>>,
) -> Vec<Vec<(SubscriptionKey, i64)>> {
    events
        .iter()
        .map(|m| {
            if m.subscriptions.is_empty() {
                return Vec::new();
            }
            let event_id = &canonical[&change_key(&m.event)].0;
            m.subscriptions
                .iter()
                .filter_map(|key| {
                    numbers
                        .get(&(key.clone(), event_id.clone()))
                        .copied()
                        .flatten()
                        .map(|n| (key.clone(), n))
                })
                .collect()
        })
        .collect()
}

macro_rules! impl_batch {
    ($store:ty, $db:ty) => {
        impl $store {
            pub(super) async fn get_resources_batched(
                &self,
                keys: &[ResourceKey],
            ) -> StoreResult<Vec<StoredResource>> {
                let mut groups: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
                for key in keys {
                    groups
                        .entry((key.tenant.as_str(), key.resource_type.as_str()))
                        .or_default()
                        .push(key.id.as_str());
                }
                let mut found = Vec::with_capacity(keys.len());
                for ((tenant, resource_type), mut ids) in groups {
                    ids.sort_unstable();
                    ids.dedup();
                    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
                        let mut q = QueryBuilder::<$db>::new(format!(
                            "SELECT {RESOURCE_COLUMNS} FROM resources WHERE tenant = "
                        ));
                        q.push_bind(tenant)
                            .push(" AND resource_type = ")
                            .push_bind(resource_type)
                            .push(" AND id IN (");
                        let mut list = q.separated(", ");
                        for id in chunk {
                            list.push_bind(*id);
                        }
                        list.push_unseparated(")");
                        for row in q.build().fetch_all(&self.reader).await? {
                            found.push(Self::stored_resource(&row)?);
                        }
                    }
                }
                Ok(found)
            }

            pub(super) async fn record_batch_general(
                &self,
                events: &[MatchedEvent],
                versions: &[VersionWrite],
            ) -> StoreResult<Vec<Vec<(SubscriptionKey, i64)>>> {
                let mut tx = self.pool.begin().await?;
                let matched = matched_changes(events);

                // 1. Canonical event ids. The same change re-sent under another event id
                // (past the bus's dedup window) is the same event: it reuses the first id, so
                // it keeps its numbers. `true` = the change was stored before this batch, so
                // notifications for it may exist already.
                let mut canonical: HashMap<ChangeKey, (String, bool)> = HashMap::new();
                let mut lookups: BTreeMap<(&str, &str), (HashSet<&str>, HashSet<&str>)> =
                    BTreeMap::new();
                for event in &matched {
                    let (ids, version_ids) = lookups
                        .entry((event.tenant.as_str(), event.resource_type.as_str()))
                        .or_default();
                    ids.insert(event.resource_id.as_str());
                    version_ids.insert(event.version_id.as_str());
                }
                for ((tenant, resource_type), (ids, version_ids)) in &lookups {
                    let ids: Vec<&str> = ids.iter().copied().collect();
                    let version_ids: Vec<&str> = version_ids.iter().copied().collect();
                    for id_chunk in ids.chunks(ROWS_PER_STATEMENT) {
                        for version_chunk in version_ids.chunks(ROWS_PER_STATEMENT) {
                            let mut q = QueryBuilder::<$db>::new(
                                "SELECT event_id, resource_id, version_id, action FROM change_events WHERE tenant = ",
                            );
                            q.push_bind(*tenant)
                                .push(" AND resource_type = ")
                                .push_bind(*resource_type)
                                .push(" AND resource_id IN (");
                            let mut list = q.separated(", ");
                            for id in id_chunk {
                                list.push_bind(*id);
                            }
                            list.push_unseparated(") AND version_id IN (");
                            let mut list = q.separated(", ");
                            for version in version_chunk {
                                list.push_bind(*version);
                            }
                            list.push_unseparated(")");
                            for row in q.build().fetch_all(&mut *tx).await? {
                                let key = (
                                    (*tenant).to_owned(),
                                    (*resource_type).to_owned(),
                                    row.try_get("resource_id")?,
                                    row.try_get("version_id")?,
                                    row.try_get("action")?,
                                );
                                canonical.insert(key, (row.try_get("event_id")?, true));
                            }
                        }
                    }
                }
                let new_events = add_new_changes(&matched, &mut canonical);
                for chunk in new_events.chunks(ROWS_PER_STATEMENT) {
                    let mut q = QueryBuilder::<$db>::new(
                        "INSERT INTO change_events (tenant, event_id, action, resource_type, resource_id, version_id, occurred_at, resource, recorded_at) ",
                    );
                    q.push_values(chunk, |mut row, event| {
                        row.push_bind(&event.tenant)
                            .push_bind(&event.event_id)
                            .push_bind(&event.action)
                            .push_bind(&event.resource_type)
                            .push_bind(&event.resource_id)
                            .push_bind(&event.version_id)
                            .push_bind(event.occurred_at)
                            .push_bind(event.resource.as_ref().map(Value::to_string))
                            .push_bind(event.recorded_at);
                    });
                    q.push(" ON CONFLICT (tenant, event_id) DO NOTHING RETURNING tenant, event_id");
                    let inserted: HashSet<(String, String)> = q
                        .build()
                        .fetch_all(&mut *tx)
                        .await?
                        .iter()
                        .map(|row| Ok((row.try_get("tenant")?, row.try_get("event_id")?)))
                        .collect::<StoreResult<_>>()?;
                    for event in chunk {
                        if !inserted.contains(&(event.tenant.clone(), event.event_id.clone())) {
                            // The event id is taken (by an earlier event reusing it):
                            // notifications may refer to it already.
                            if let Some(entry) = canonical.get_mut(&change_key(event)) {
                                entry.1 = true;
                            }
                        }
                    }
                }

                // 2. Numbers that exist already (redelivered events only).
                let mut numbers: HashMap<Pair, Option<i64>> = HashMap::new();
                for m in events.iter().filter(|m| !m.subscriptions.is_empty()) {
                    let (event_id, stored_before) = &canonical[&change_key(&m.event)];
                    if !stored_before {
                        continue;
                    }
                    for key in &m.subscriptions {
                        let pair = (key.clone(), event_id.clone());
                        if numbers.contains_key(&pair) {
                            continue;
                        }
                        let existing = sqlx::query(
                            "SELECT event_number FROM notifications WHERE tenant = $1 AND subscription_id = $2 AND event_id = $3",
                        )
                        .bind(&key.tenant).bind(&key.id).bind(event_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if let Some(row) = existing {
                            numbers.insert(pair, Some(row.try_get("event_number")?));
                        }
                    }
                }

                // 3. New numbers: per subscription, one counter increment for the whole batch,
                // handed out in bus order. Counters are updated in key order so concurrent
                // batches cannot deadlock.
                let new_pairs = pairs_to_number(events, &canonical, &mut numbers);
                let mut rows: Vec<(&SubscriptionKey, i64, &str, i64)> = Vec::new();
                for (key, pairs) in &new_pairs {
                    let count = pairs.len() as i64;
                    let counter = sqlx::query(
                        "UPDATE subscription_counters SET events_since_start = events_since_start + $1 \
                         WHERE tenant = $2 AND id = $3 RETURNING events_since_start",
                    )
                    .bind(count).bind(&key.tenant).bind(&key.id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    // A subscription deleted meanwhile gets nothing.
                    let Some(counter) = counter else { continue };
                    let last: i64 = counter.try_get("events_since_start")?;
                    for (offset, (event_id, created_at)) in pairs.iter().enumerate() {
                        let number = last - count + 1 + offset as i64;
                        numbers.insert((key.clone(), event_id.clone()), Some(number));
                        rows.push((key, number, event_id, *created_at));
                    }
                }
                for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                    let mut q = QueryBuilder::<$db>::new(
                        "INSERT INTO notifications (tenant, subscription_id, event_number, event_id, created_at) ",
                    );
                    q.push_values(chunk, |mut row, (key, number, event_id, created_at)| {
                        row.push_bind(&key.tenant)
                            .push_bind(&key.id)
                            .push_bind(*number)
                            .push_bind(*event_id)
                            .push_bind(*created_at);
                    });
                    q.build().execute(&mut *tx).await.map_err(super::convert)?;
                }

                // 4. Latest versions, compare-and-set; losing means a newer version is stored.
                let (inserts, updates): (Vec<&VersionWrite>, Vec<&VersionWrite>) =
                    versions.iter().partition(|v| v.expected_seq.is_none());
                for chunk in inserts.chunks(ROWS_PER_STATEMENT) {
                    let mut q = QueryBuilder::<$db>::new(
                        "INSERT INTO resources (tenant, resource_type, id, seq, version_id, deleted, resource, updated_at, pending_event) ",
                    );
                    q.push_values(chunk, |mut row, write| {
                        let new = &write.resource;
                        row.push_bind(&new.tenant)
                            .push_bind(&new.resource_type)
                            .push_bind(&new.id)
                            .push_bind(new.seq)
                            .push_bind(&new.version_id)
                            .push_bind(i64::from(new.deleted))
                            .push_bind(new.resource.as_ref().map(Value::to_string))
                            .push_bind(new.updated_at)
                            .push_bind(&new.pending_event);
                    });
                    q.push(" ON CONFLICT DO NOTHING");
                    q.build().execute(&mut *tx).await?;
                }
                for write in updates {
                    let new = &write.resource;
                    sqlx::query(
                        "UPDATE resources SET seq = $1, version_id = $2, deleted = $3, resource = $4, updated_at = $5, pending_event = $6 \
                         WHERE tenant = $7 AND resource_type = $8 AND id = $9 AND seq = $10",
                    )
                    .bind(new.seq).bind(&new.version_id).bind(i64::from(new.deleted))
                    .bind(new.resource.as_ref().map(Value::to_string)).bind(new.updated_at).bind(&new.pending_event)
                    .bind(&new.tenant).bind(&new.resource_type).bind(&new.id).bind(write.expected_seq)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;

                Ok(numbered_per_event(events, &canonical, &numbers))
            }
        }
    };
}

impl_batch!(SqliteStore, sqlx::Sqlite);

impl_batch!(PostgresStore, sqlx::Postgres);

impl SqliteStore {
    /// SQLite records every batch on the general path: its statements are calls inside
    /// this process, not round trips, and its one writer makes the transaction cheap.
    /// The general path; SQLite claims nothing here (`claim` is for the one-statement
    /// path of PostgreSQL).
    pub(super) async fn record_batch(
        &self,
        events: &[MatchedEvent],
        versions: &[VersionWrite],
        _claim: Option<BatchClaim>,
    ) -> StoreResult<RecordedBatch> {
        Ok(RecordedBatch {
            numbered: self.record_batch_general(events, versions).await?,
            claimed: Vec::new(),
        })
    }
}
