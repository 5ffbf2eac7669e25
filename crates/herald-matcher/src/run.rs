//! The consume loop: change events in, numbered notifications out.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use herald_bus::{BusMessage, ChangeEventConsumer};
use herald_fhir::{Action, ChangeEvent};
use herald_store::{
    BatchClaim, ClaimedDelivery, EventRecord, MatchedEvent, ResourceKey, Store, StoreError,
    StoredResource, SubscriptionKey, VersionWrite,
};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::index::SharedIndex;

pub struct Matcher {
    pub store: Arc<dyn Store>,
    pub index: SharedIndex,
    /// Called after notifications are committed, to wake every delivery channel. The
    /// argument says whether some numbered subscription was not handed over (see
    /// `handoff`) and so still waits for delivery to claim it.
    pub on_recorded: Arc<dyn Fn(bool) + Send + Sync>,
    /// NATS subject prefix events are published under, to check subject against content.
    pub subject_prefix: String,
    /// Where batches hand over the subscriptions they claimed; `None`: delivery claims all.
    pub handoff: Option<DeliveryHandoff>,
}

/// The delivery worker's queue for subscriptions a batch claimed as it recorded their
/// notifications ([`Store::record_notifications_batch_claiming`]), and the lease they are
/// claimed for. With it, a new notification goes out without delivery claiming it and
/// reading it back: two database round trips and a wake-up fewer on its way. A claim the
/// queue cannot take (full, or delivery stopped) is released at once for `claim_due`.
#[derive(Clone)]
pub struct DeliveryHandoff {
    pub claimed: mpsc::Sender<ClaimedDelivery>,
    pub lease: Duration,
}

/// Whether `event_version` is newer than what is stored.
fn is_newer(event: &ChangeEvent, stored: &StoredResource) -> bool {
    match (
        event.version.parse::<i64>(),
        stored.version_id.parse::<i64>(),
    ) {
        (Ok(event_version), Ok(stored_version)) => event_version > stored_version,
        _ => {
            event.version != stored.version_id && event.time.timestamp_millis() >= stored.updated_at
        }
    }
}

/// Most change events matched and recorded in one transaction. A batch commits once, so
/// the durable flush (1–5 ms on the project's VM) is paid per batch, not per event.
const MAX_BATCH: usize = 256;

/// A change event taken from the bus and checked against its subject.
struct Received {
    message: BusMessage,
    event: ChangeEvent,
}

impl Matcher {
    /// Consumes until cancelled. Every message is acked, nak'ed or dead-lettered.
    pub async fn run(
        self,
        mut consumer: Box<dyn ChangeEventConsumer>,
        shutdown: CancellationToken,
    ) {
        let mut failures: u32 = 0;
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = consumer.next_batch(MAX_BATCH, Duration::from_secs(1)) => next,
            };
            let messages = match next {
                Ok(messages) if messages.is_empty() => continue,
                Ok(messages) => messages,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, "bus receive failed");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(50))))
                        .await;
                    continue;
                }
            };
            match self.handle_batch(messages).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, "could not finish change events; they will be redelivered");
                }
            }
        }
    }

    /// Matches and records a batch in one transaction, then acks it. If the batch cannot be
    /// recorded, its events are retried one by one, so one event that keeps failing is
    /// nak'ed alone instead of holding back the others.
    async fn handle_batch(&self, messages: Vec<BusMessage>) -> Result<(), String> {
        let mut received = Vec::with_capacity(messages.len());
        for message in messages {
            if let Some(r) = self.accept(message).await {
                received.push(r);
            }
        }
        if received.is_empty() {
            return Ok(());
        }
        let events: Vec<&ChangeEvent> = received.iter().map(|r| &r.event).collect();
        let span = tracing::info_span!("change_events", count = events.len(), first_event_id = %events[0].event_id);
        let outcome = self.process_batch(&events).instrument(span).await;
        drop(events);
        match outcome {
            Ok(_) => {
                // Never before the commit above: an ack is the promise that the work is stored.
                herald_bus::ack_all(received.into_iter().map(|r| r.message).collect())
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) if received.len() == 1 => {
                let Some(r) = received.pop() else {
                    return Err(e.to_string());
                };
                let delay = Duration::from_millis(500 * r.message.delivery_count.clamp(1, 20));
                r.message
                    .nak(delay)
                    .await
                    .map_err(|n| format!("{e}; and nak failed: {n}"))?;
                Err(e.to_string())
            }
            Err(e) => {
                tracing::warn!(error = %e, events = received.len(), "could not record a batch; recording its events one by one");
                let mut last_error = Ok(());
                for r in received {
                    if let Err(e) = self.handle_one(r).await {
                        last_error = Err(e);
                    }
                }
                last_error
            }
        }
    }

    async fn handle_one(&self, received: Received) -> Result<(), String> {
        let span = tracing::info_span!("change_event", event_id = %received.event.event_id, tenant = %received.event.tenant, resource = %format!("{}/{}", received.event.resource_type, received.event.resource_id));
        match self.process(&received.event).instrument(span).await {
            Ok(_) => received.message.ack().await.map_err(|e| e.to_string()),
            Err(e) => {
                let delay =
                    Duration::from_millis(500 * received.message.delivery_count.clamp(1, 20));
                received
                    .message
                    .nak(delay)
                    .await
                    .map_err(|n| format!("{e}; and nak failed: {n}"))?;
                Err(e.to_string())
            }
        }
    }

    /// Parses a message and checks it against its subject. One that can never be processed
    /// is dead-lettered (`None`; if even that fails, it is left unacked for redelivery).
    async fn accept(&self, message: BusMessage) -> Option<Received> {
        let event = match ChangeEvent::from_json(&message.payload) {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(subject = %message.subject, reason = %e, "dead-lettering malformed change event");
                if let Err(e) = message.dead_letter(&e.to_string()).await {
                    tracing::warn!(error = %e, "could not dead-letter; it will be redelivered");
                }
                return None;
            }
        };
        let expected_subject = event.subject(&self.subject_prefix);
        if message.subject != expected_subject {
            let reason = format!(
                "subject '{}' does not match the event (expected '{expected_subject}')",
                message.subject
            );
            tracing::warn!(event_id = %event.event_id, %reason, "dead-lettering change event");
            if let Err(e) = message.dead_letter(&reason).await {
                tracing::warn!(error = %e, "could not dead-letter; it will be redelivered");
            }
            return None;
        }
        Some(Received { message, event })
    }

    /// Matches one event and records its notifications. Idempotent.
    pub async fn process(
        &self,
        event: &ChangeEvent,
    ) -> Result<Vec<(SubscriptionKey, i64)>, StoreError> {
        Ok(self
            .process_batch(&[event])
            .await?
            .pop()
            .unwrap_or_default())
    }

    /// Per event, the referenced (and, for `_has`, referencing) resources chained criteria
    /// read; all `None` while no subscription has a chain, which costs nothing.
    async fn resolve_for_chains(
        &self,
        events: &[&ChangeEvent],
        keys: &[ResourceKey],
        latest: &HashMap<ResourceKey, StoredResource>,
    ) -> Result<Vec<Option<herald_criteria::ResolvedReferences>>, StoreError> {
        let links: Option<Vec<Vec<(String, String)>>> = {
            let index = self
                .index
                .read()
                .map_err(|_| StoreError::Corrupt("subscription index lock poisoned".into()))?;
            index.uses_chains().then(|| {
                events
                    .iter()
                    .map(|e| index.has_links_for(&e.resource_type))
                    .collect()
            })
        };
        let Some(links) = links else {
            return Ok(vec![None; events.len()]);
        };
        let mut out = Vec::with_capacity(events.len());
        for ((event, key), links) in events.iter().zip(keys).zip(links) {
            let stored = latest.get(key).and_then(|s| s.resource.as_ref());
            let roots: Vec<&Value> = event
                .resource
                .iter()
                .chain(event.previous.as_ref().or(stored))
                .collect();
            let mut resolved =
                crate::chain::resolve_references(self.store.as_ref(), &event.tenant, &roots)
                    .await?;
            let focus = format!("{}/{}", event.resource_type, event.resource_id);
            crate::chain::resolve_referencing(
                self.store.as_ref(),
                &event.tenant,
                &focus,
                &links,
                &mut resolved,
            )
            .await?;
            out.push(Some(resolved));
        }
        Ok(out)
    }

    /// Matches events (in bus order) and records their notifications and latest versions
    /// in one transaction. Idempotent. Returns each event's numbered subscriptions.
    ///
    /// `previous` follows bus order inside the batch as it does across batches: an event
    /// sees the version remembered by the one before it on the same resource.
    pub async fn process_batch(
        &self,
        events: &[&ChangeEvent],
    ) -> Result<Vec<Vec<(SubscriptionKey, i64)>>, StoreError> {
        let started = std::time::Instant::now();
        let keys: Vec<ResourceKey> = events.iter().map(|e| resource_key(e)).collect();
        let mut latest: HashMap<ResourceKey, StoredResource> = self
            .store
            .get_resources(&keys)
            .await?
            .into_iter()
            .map(|s| (s.key(), s))
            .collect();
        // The sequence each changed row had when read: the compare-and-set of its write.
        let mut read_seq: HashMap<ResourceKey, Option<i64>> = HashMap::new();

        let now = chrono::Utc::now();
        let recorded_at = now.timestamp_millis();
        let mut matched_events = Vec::with_capacity(events.len());
        // Chained parameters and `_has` read the resources an event references (or that
        // reference it), as Herald holds them, while some subscription needs that.
        let mut resolved = self.resolve_for_chains(events, &keys, &latest).await?;
        {
            let index = self
                .index
                .read()
                .map_err(|_| StoreError::Corrupt("subscription index lock poisoned".into()))?;
            for ((event, key), resolved) in events.iter().zip(keys).zip(resolved.drain(..)) {
                let stored = latest.get(&key);
                let previous: Option<Value> = match (&event.previous, stored) {
                    (Some(p), _) => Some(p.clone()),
                    // Only a version older than this event can be its `previous`: a
                    // redelivered or late event must not see itself or a newer version.
                    (None, Some(s))
                        if event.action != Action::Create && !s.deleted && is_newer(event, s) =>
                    {
                        s.resource.clone()
                    }
                    _ => None,
                };
                // Candidates from the inverted index, then full evaluation of each.
                let subscriptions = match resolved {
                    None => index.matching_keys(event, previous.as_ref(), now),
                    Some(resolved) => {
                        herald_criteria::with_resolved(resolved, || {
                            index.matching_keys(event, previous.as_ref(), now)
                        })
                        .0
                    }
                };
                let record = EventRecord {
                    event_id: event.event_id.clone(),
                    tenant: event.tenant.clone(),
                    action: event.action.as_str().to_owned(),
                    resource_type: event.resource_type.clone(),
                    resource_id: event.resource_id.clone(),
                    version_id: event.version.clone(),
                    occurred_at: event.time.timestamp_millis(),
                    resource: if subscriptions.is_empty() {
                        None
                    } else {
                        event.resource.clone().or(previous)
                    },
                    recorded_at,
                };
                matched_events.push(MatchedEvent {
                    event: record,
                    subscriptions,
                });
                // Keep the latest-version table current for events that did not come
                // through the write facade (which records versions itself), so later
                // events can carry `previous`.
                if let Some(newer) = newer_version(event, stored) {
                    read_seq
                        .entry(key.clone())
                        .or_insert_with(|| stored.map(|s| s.seq));
                    latest.insert(key, newer);
                }
            }
        }
        let matched_at = started.elapsed();
        let versions: Vec<VersionWrite> = read_seq
            .into_iter()
            .filter_map(|(key, expected_seq)| {
                latest.remove(&key).map(|resource| VersionWrite {
                    resource,
                    expected_seq,
                })
            })
            .collect();
        if versions.is_empty() && matched_events.iter().all(|m| m.subscriptions.is_empty()) {
            return Ok(vec![Vec::new(); events.len()]);
        }
        // Notifications and versions commit together: a failure redelivers the events and
        // they are evaluated against the same `previous` again.
        // No claims while delivery's queue is full: each would only be released again.
        let claim = self
            .handoff
            .as_ref()
            .filter(|handoff| handoff.claimed.capacity() > 0)
            .map(|handoff| {
                let now_ms = chrono::Utc::now().timestamp_millis();
                BatchClaim {
                    now_ms,
                    lease_until_ms: now_ms.saturating_add(handoff.lease.as_millis() as i64),
                }
            });
        let recorded = self
            .store
            .record_notifications_batch_claiming(&matched_events, &versions, claim)
            .await?;
        let numbered = recorded.numbered;
        let matches: usize = numbered.iter().map(Vec::len).sum();
        tracing::debug!(
            events = events.len(),
            matches,
            read_and_match_ms = matched_at.as_secs_f64() * 1e3,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            "notifications recorded"
        );
        let handed_over = self.hand_over(recorded.claimed).await;
        if matches > 0 {
            let claims_left = numbered
                .iter()
                .flatten()
                .any(|(key, _)| !handed_over.contains(key));
            (self.on_recorded)(claims_left);
        }
        Ok(numbered)
    }

    /// Hands the batch's claims to delivery; a claim the queue refuses is released. Returns
    /// the subscriptions handed over.
    async fn hand_over(&self, claimed: Vec<ClaimedDelivery>) -> HashSet<SubscriptionKey> {
        let mut handed_over = HashSet::with_capacity(claimed.len());
        let Some(handoff) = &self.handoff else {
            return handed_over;
        };
        for delivery in claimed {
            let key = delivery.record.key.clone();
            match handoff.claimed.try_send(delivery) {
                Ok(()) => {
                    handed_over.insert(key);
                }
                Err(refused) => {
                    tracing::debug!(id = %key.id, reason = %refused, "delivery queue refused a claim; releasing it");
                    if let Err(e) = self.store.release_claim(&key).await {
                        tracing::warn!(id = %key.id, error = %e, "could not release a claim delivery refused; it runs out with its lease");
                    }
                }
            }
        }
        handed_over
    }
}

fn resource_key(event: &ChangeEvent) -> ResourceKey {
    ResourceKey {
        tenant: event.tenant.clone(),
        resource_type: event.resource_type.clone(),
        id: event.resource_id.clone(),
    }
}

/// The latest-version row after `event`, if the event is newer than what is stored.
fn newer_version(event: &ChangeEvent, stored: Option<&StoredResource>) -> Option<StoredResource> {
    if stored.is_some_and(|s| !is_newer(event, s)) {
        return None;
    }
    Some(StoredResource {
        tenant: event.tenant.clone(),
        resource_type: event.resource_type.clone(),
        id: event.resource_id.clone(),
        seq: stored.map_or(1, |s| s.seq + 1),
        version_id: event.version.clone(),
        deleted: event.action == Action::Delete,
        resource: event.resource.clone(),
        updated_at: event.time.timestamp_millis(),
        pending_event: None,
    })
}
