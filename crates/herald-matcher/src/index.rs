//! The in-memory index of subscriptions that count events, keyed by (tenant, resource
//! type) so an event is evaluated only against subscriptions that could match it, and the
//! task that keeps it current when subscriptions change on any instance.
//!
//! The lock is a `std::sync::RwLock`, never held across an `.await`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use herald_bus::{ChangeEventBus, ControlNotice};
use herald_fhir::{SubscriptionSpec, SubscriptionStatus};
use herald_store::{Store, SubscriptionKey, SubscriptionRecord};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::catalog::TopicCatalog;
use crate::compile::{compile_subscription, ActiveSubscription};

#[derive(Debug, Default)]
pub struct SubscriptionIndex {
    by_type: HashMap<(String, String), Vec<Arc<ActiveSubscription>>>,
    by_key: HashMap<SubscriptionKey, Arc<ActiveSubscription>>,
}

pub type SharedIndex = Arc<RwLock<SubscriptionIndex>>;

impl SubscriptionIndex {
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub fn insert(&mut self, subscription: ActiveSubscription) {
        self.remove(&subscription.key);
        let subscription = Arc::new(subscription);
        for resource_type in subscription.criteria.resource_types() {
            self.by_type
                .entry((subscription.key.tenant.clone(), resource_type))
                .or_default()
                .push(Arc::clone(&subscription));
        }
        self.by_key.insert(subscription.key.clone(), subscription);
    }

    pub fn remove(&mut self, key: &SubscriptionKey) {
        let Some(old) = self.by_key.remove(key) else {
            return;
        };
        for resource_type in old.criteria.resource_types() {
            let slot = (key.tenant.clone(), resource_type);
            if let Some(list) = self.by_type.get_mut(&slot) {
                list.retain(|s| &s.key != key);
                if list.is_empty() {
                    self.by_type.remove(&slot);
                }
            }
        }
    }

    /// Subscriptions of `tenant` that could match an event on `resource_type`.
    pub fn candidates(&self, tenant: &str, resource_type: &str) -> &[Arc<ActiveSubscription>] {
        // Allocation-free lookup would need a borrowed key type; the two small strings are cheap.
        self.by_type
            .get(&(tenant.to_owned(), resource_type.to_owned()))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// Keeps a [`SharedIndex`] in step with storage.
pub struct IndexMaintainer {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn ChangeEventBus>,
    pub catalog: TopicCatalog,
    pub index: SharedIndex,
    /// Full reload period: a safety net for notices lost while disconnected.
    pub full_reload_every: Duration,
}

impl IndexMaintainer {
    /// Compiles a stored subscription; `None` (with an error log) if it no longer compiles,
    /// e.g. its topic was removed by an operator. Never fails open: such a subscription
    /// matches nothing.
    async fn compile(&self, record: &SubscriptionRecord) -> Option<ActiveSubscription> {
        let spec = match SubscriptionSpec::from_resource(&record.resource) {
            Ok(spec) => spec,
            Err(e) => {
                tracing::error!(tenant = %record.key.tenant, id = %record.key.id, error = %e, "stored subscription unreadable");
                return None;
            }
        };
        if spec.end.is_some_and(|end| end <= chrono::Utc::now()) {
            // Past its end: it ends here, visibly, rather than silently counting nothing.
            let ended = self.store.set_status(
                &record.key,
                SubscriptionStatus::Off,
                Some("Subscription.end reached"),
            );
            if let Err(e) = ended.await {
                tracing::warn!(id = %record.key.id, error = %e, "could not turn an ended subscription off");
            }
            return None;
        }
        match compile_subscription(&record.key.tenant, &spec, &self.catalog).await {
            Ok(criteria) => Some(ActiveSubscription {
                key: record.key.clone(),
                criteria,
                end: spec.end,
            }),
            Err(e) => {
                tracing::error!(tenant = %record.key.tenant, id = %record.key.id, error = %e, "stored subscription no longer compiles");
                None
            }
        }
    }

    /// Rebuilds the whole index from storage.
    pub async fn load_all(&self) -> Result<usize, herald_store::StoreError> {
        let records = self.store.counting_subscriptions().await?;
        let mut fresh = SubscriptionIndex::default();
        for record in &records {
            if let Some(active) = self.compile(record).await {
                fresh.insert(active);
            }
        }
        let count = fresh.len();
        if let Ok(mut index) = self.index.write() {
            *index = fresh;
        }
        Ok(count)
    }

    /// Re-reads one subscription.
    pub async fn refresh(&self, key: &SubscriptionKey) -> Result<(), herald_store::StoreError> {
        let record = self.store.get_subscription(&key.tenant, &key.id).await?;
        let active = match &record {
            Some(r) if r.status.counts_events() => self.compile(r).await,
            _ => None,
        };
        if let Ok(mut index) = self.index.write() {
            match active {
                Some(a) => index.insert(a),
                None => index.remove(key),
            }
        }
        Ok(())
    }

    /// Follows control notices until cancelled.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut notices = self.bus.notices();
        let mut reload = tokio::time::interval(self.full_reload_every);
        reload.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = reload.tick() => {
                    if let Err(e) = self.load_all().await {
                        tracing::warn!(error = %e, "periodic index reload failed");
                    }
                }
                notice = notices.recv() => match notice {
                    Ok(ControlNotice::SubscriptionChanged { tenant, id }) => {
                        if let Err(e) = self.refresh(&SubscriptionKey::new(tenant, id)).await {
                            tracing::warn!(error = %e, "index refresh failed; full reload scheduled");
                            reload.reset_immediately();
                        }
                    }
                    Ok(ControlNotice::TopicChanged { .. }) | Err(RecvError::Lagged(_)) => {
                        if let Err(e) = self.load_all().await {
                            tracing::warn!(error = %e, "index reload failed");
                        }
                    }
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }
}
