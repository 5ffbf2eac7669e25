//! The consume loop: change events in, numbered notifications out.

use std::sync::Arc;
use std::time::Duration;

use herald_bus::{BusMessage, ChangeEventConsumer};
use herald_fhir::{Action, ChangeEvent};
use herald_store::{EventRecord, Store, StoreError, StoredResource, SubscriptionKey};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::index::SharedIndex;

pub struct Matcher {
    pub store: Arc<dyn Store>,
    pub index: SharedIndex,
    /// Called after notifications are committed (wakes every delivery channel).
    pub on_recorded: Arc<dyn Fn() + Send + Sync>,
    /// NATS subject prefix events are published under, to check subject against content.
    pub subject_prefix: String,
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
                next = consumer.next(Duration::from_secs(1)) => next,
            };
            let message = match next {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, "bus receive failed");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(50))))
                        .await;
                    continue;
                }
            };
            match self.handle(message).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, "could not finish a change event; it will be redelivered");
                }
            }
        }
    }

    async fn handle(&self, message: BusMessage) -> Result<(), String> {
        let event = match ChangeEvent::from_json(&message.payload) {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(subject = %message.subject, reason = %e, "dead-lettering malformed change event");
                return message
                    .dead_letter(&e.to_string())
                    .await
                    .map_err(|e| e.to_string());
            }
        };
        let expected_subject = event.subject(&self.subject_prefix);
        if message.subject != expected_subject {
            let reason = format!(
                "subject '{}' does not match the event (expected '{expected_subject}')",
                message.subject
            );
            tracing::warn!(event_id = %event.event_id, %reason, "dead-lettering change event");
            return message
                .dead_letter(&reason)
                .await
                .map_err(|e| e.to_string());
        }
        let span = tracing::info_span!("change_event", event_id = %event.event_id, tenant = %event.tenant, resource = %format!("{}/{}", event.resource_type, event.resource_id));
        match self.process(&event).instrument(span).await {
            Ok(_) => message.ack().await.map_err(|e| e.to_string()),
            Err(e) => {
                let delay = Duration::from_millis(500 * message.delivery_count.clamp(1, 20));
                message
                    .nak(delay)
                    .await
                    .map_err(|n| format!("{e}; and nak failed: {n}"))?;
                Err(e.to_string())
            }
        }
    }

    /// Matches one event and records its notifications. Idempotent.
    pub async fn process(
        &self,
        event: &ChangeEvent,
    ) -> Result<Vec<(SubscriptionKey, i64)>, StoreError> {
        let stored = self
            .store
            .get_resource(&event.tenant, &event.resource_type, &event.resource_id)
            .await?;
        let previous: Option<Value> = match (&event.previous, &stored) {
            (Some(p), _) => Some(p.clone()),
            // Only a version older than this event can be its `previous`: a redelivered or
            // late event must not see itself or a newer version.
            (None, Some(s))
                if event.action != Action::Create && !s.deleted && is_newer(event, s) =>
            {
                s.resource.clone()
            }
            _ => None,
        };

        let now = chrono::Utc::now();
        let (uses_chains, has_links) = {
            let index = self
                .index
                .read()
                .map_err(|_| StoreError::Corrupt("subscription index lock poisoned".into()))?;
            (
                index.uses_chains(),
                index.has_links_for(&event.resource_type),
            )
        };
        let resolved = if uses_chains {
            let roots: Vec<&Value> = event.resource.iter().chain(previous.as_ref()).collect();
            let mut resolved =
                crate::chain::resolve_references(self.store.as_ref(), &event.tenant, &roots)
                    .await?;
            let focus = format!("{}/{}", event.resource_type, event.resource_id);
            crate::chain::resolve_referencing(
                self.store.as_ref(),
                &event.tenant,
                &focus,
                &has_links,
                &mut resolved,
            )
            .await?;
            resolved
        } else {
            herald_criteria::ResolvedReferences::new()
        };
        let matched: Vec<SubscriptionKey> = {
            let index = self
                .index
                .read()
                .map_err(|_| StoreError::Corrupt("subscription index lock poisoned".into()))?;
            // Candidates from the inverted index, then full evaluation of each (chained
            // parameters see the referenced resources read above).
            herald_criteria::with_resolved(resolved, || {
                index.matching_keys(event, previous.as_ref(), now)
            })
            .0
        };
        if matched.is_empty() {
            self.remember_version(event, stored.as_ref()).await?;
            return Ok(vec![]);
        }
        let record = EventRecord {
            event_id: event.event_id.clone(),
            tenant: event.tenant.clone(),
            action: event.action.as_str().to_owned(),
            resource_type: event.resource_type.clone(),
            resource_id: event.resource_id.clone(),
            version_id: event.version.clone(),
            occurred_at: event.time.timestamp_millis(),
            resource: event.resource.clone().or(previous),
            recorded_at: chrono::Utc::now().timestamp_millis(),
        };
        let numbered = self.store.record_notifications(&record, &matched).await?;
        // After the notifications are committed: a failure before this point redelivers the
        // event and it is evaluated against the same `previous` again.
        self.remember_version(event, stored.as_ref()).await?;
        tracing::debug!(event_id = %event.event_id, matches = numbered.len(), "notifications recorded");
        (self.on_recorded)();
        Ok(numbered)
    }

    /// Keeps the latest-version table current for events that did not come through the
    /// write facade (which records versions itself), so later events can carry `previous`.
    async fn remember_version(
        &self,
        event: &ChangeEvent,
        stored: Option<&StoredResource>,
    ) -> Result<(), StoreError> {
        if let Some(s) = stored {
            if !is_newer(event, s) {
                return Ok(());
            }
        }
        let new = StoredResource {
            tenant: event.tenant.clone(),
            resource_type: event.resource_type.clone(),
            id: event.resource_id.clone(),
            seq: stored.map_or(1, |s| s.seq + 1),
            version_id: event.version.clone(),
            deleted: event.action == Action::Delete,
            resource: event.resource.clone(),
            updated_at: event.time.timestamp_millis(),
            pending_event: None,
        };
        // Losing this race to a concurrent writer is fine: that writer stored a newer version.
        self.store.put_resource(&new, stored.map(|s| s.seq)).await?;
        Ok(())
    }
}
