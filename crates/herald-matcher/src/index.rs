//! The in-memory index of subscriptions that count events, and the task that keeps it
//! current when subscriptions change on any instance.
//!
//! The index is inverted: a subscription whose criteria require an equality (a
//! reference such as `subject=Patient/1`, a token such as `code=…` or `status=…`, an
//! `_id`) is filed under the normalized values of its most selective such parameter,
//! per (tenant, resource type, parameter). For an event, each indexed parameter's
//! values are extracted once from the current and previous resource and looked up, so
//! the work per event follows the number of candidates, not of subscriptions.
//! Subscriptions without such a key sit on a per-(tenant, type) "always check" list.
//! The index over-approximates (candidates are evaluated in full) but never misses:
//! equality keys and resource values come from the same extraction the evaluator uses
//! (see [`herald_criteria::EqualityKey`]), which a property test checks against a
//! linear scan.
//!
//! Posting lists are keyed by a 64-bit keyed hash (foldhash) of the value rather than
//! the value itself (compact: no string per key). A hash collision can only add a
//! candidate, which full evaluation then rejects; the hash key is random per index, so
//! collisions cannot be aimed at.
//!
//! The lock is a `std::sync::RwLock`, never held across an `.await`.

use std::borrow::Borrow;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_bus::{ChangeEventBus, ControlNotice};
use herald_criteria::{EqualityKey, IndexParam, Interaction, TopicDefinition};
use herald_fhir::{Action, ChangeEvent, SubscriptionSpec, SubscriptionStatus};
use herald_store::{Store, SubscriptionKey, SubscriptionRecord};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::catalog::TopicCatalog;
use crate::compile::{
    compile_cel_filter, compile_subscription, ActiveSubscription, CompiledCriteria,
};

/// Where a subscription goes in the partition of one resource type.
enum Placement {
    /// It can never match an event on this type (typed filters for other types only).
    Nowhere,
    /// No usable equality key: evaluated on every event of the type.
    AlwaysCheck,
    /// Filed under each of the key's values.
    Keyed(EqualityKey),
}

impl Placement {
    fn of(criteria: &CompiledCriteria, resource_type: &str) -> Placement {
        let keys = match criteria {
            CompiledCriteria::Search(query) => {
                if query.resource_type() != resource_type {
                    return Placement::Nowhere;
                }
                query.equality_keys()
            }
            CompiledCriteria::Topic { filters, .. } => {
                // The topic's trigger needs no key: it is still evaluated in full on
                // every candidate; only the filters narrow the candidates down.
                if !filters.can_match_type(resource_type) {
                    return Placement::Nowhere;
                }
                filters.equality_keys(resource_type)
            }
        };
        match keys.into_iter().next() {
            Some(key) => Placement::Keyed(key),
            None => Placement::AlwaysCheck,
        }
    }
}

/// The subscriptions filed under one value: one (most values, e.g. a patient's
/// dashboard) or several.
#[derive(Debug)]
enum Posting {
    One(Arc<ActiveSubscription>),
    Many(Vec<Arc<ActiveSubscription>>),
}

impl Posting {
    fn push(&mut self, subscription: Arc<ActiveSubscription>) {
        match self {
            Posting::One(first) => {
                *self = Posting::Many(vec![Arc::clone(first), subscription]);
            }
            Posting::Many(list) => list.push(subscription),
        }
    }

    /// Removes `subscription`; returns whether the posting is now empty.
    fn remove(&mut self, subscription: &Arc<ActiveSubscription>) -> bool {
        let list = match self {
            Posting::One(only) => return Arc::ptr_eq(only, subscription),
            Posting::Many(list) => list,
        };
        list.retain(|s| !Arc::ptr_eq(s, subscription));
        if list.len() == 1 {
            if let Some(only) = list.pop() {
                *self = Posting::One(only);
            }
            return false;
        }
        list.is_empty()
    }

    fn as_slice(&self) -> &[Arc<ActiveSubscription>] {
        match self {
            Posting::One(only) => std::slice::from_ref(only),
            Posting::Many(list) => list,
        }
    }
}

/// A `Hasher` for keys that are already uniformly distributed 64-bit hashes.
#[derive(Debug, Default, Clone, Copy)]
struct PrehashedKey(u64);

impl Hasher for PrehashedKey {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; kept total for completeness.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type PostingMap = HashMap<u64, Posting, BuildHasherDefault<PrehashedKey>>;

/// foldhash, seeded at random per index: several times faster than SipHash on the
/// short strings hashed per event, and still unpredictable to a subscriber.
type FastHash = foldhash::fast::RandomState;

/// One indexed parameter of one (tenant, resource type).
#[derive(Debug)]
struct Dimension {
    param: IndexParam,
    postings: PostingMap,
}

/// The subscriptions of one (tenant, resource type).
#[derive(Debug, Default)]
struct Partition {
    /// Every subscription registered for the type, for [`SubscriptionIndex::candidates`].
    all: Vec<Arc<ActiveSubscription>>,
    always_check: Vec<Arc<ActiveSubscription>>,
    dimensions: Vec<Dimension>,
}

impl Partition {
    fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

/// A subscription in the by-key set, hashed and compared by its key (not a map from a
/// copy of the key: that would hold the tenant and id twice).
#[derive(Debug)]
struct ByKey(Arc<ActiveSubscription>);

impl PartialEq for ByKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
    }
}

impl Eq for ByKey {}

impl std::hash::Hash for ByKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.key.hash(state);
    }
}

impl Borrow<SubscriptionKey> for ByKey {
    fn borrow(&self) -> &SubscriptionKey {
        &self.0.key
    }
}

/// The active subscriptions, inverted by their equality keys (see the module docs).
#[derive(Debug, Default)]
pub struct SubscriptionIndex {
    by_key: HashSet<ByKey>,
    /// tenant → resource type → partition; nested so lookups borrow the event's strings.
    partitions: HashMap<String, HashMap<String, Partition, FastHash>, FastHash>,
    /// Keys the value hashes of this index (random per index).
    value_hasher: FastHash,
    /// Subscriptions with chained parameters: while there are any, the matcher fetches
    /// the resources events reference before evaluating.
    chained: usize,
    /// `_has` links in use, by focus type: (source type, parameter) → subscriptions.
    has_links: HashMap<String, HashMap<(String, String), usize>>,
}

pub type SharedIndex = Arc<RwLock<SubscriptionIndex>>;

impl SubscriptionIndex {
    /// The `_has` links (source type, reference parameter) some subscription evaluates on a
    /// focus of `resource_type`.
    pub fn has_links_for(&self, resource_type: &str) -> Vec<(String, String)> {
        self.has_links
            .get(resource_type)
            .map(|links| links.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether any subscription has chained parameters.
    pub fn uses_chains(&self) -> bool {
        self.chained > 0
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    fn value_hash(&self, value: &str) -> u64 {
        self.value_hasher.hash_one(value)
    }

    /// Adds a subscription, replacing any with the same key.
    pub fn insert(&mut self, subscription: ActiveSubscription) {
        self.remove(&subscription.key);
        if subscription.criteria.uses_chains() {
            self.chained += 1;
            for (focus, source, param) in subscription.criteria.has_links() {
                *self
                    .has_links
                    .entry(focus)
                    .or_default()
                    .entry((source, param))
                    .or_default() += 1;
            }
        }
        let subscription = Arc::new(subscription);
        for resource_type in subscription.criteria.resource_types() {
            let placement = Placement::of(&subscription.criteria, &resource_type);
            let hashes: Vec<u64> = match &placement {
                Placement::Keyed(key) => key.values.iter().map(|v| self.value_hash(v)).collect(),
                _ => Vec::new(),
            };
            let partition = self
                .partitions
                .entry(subscription.key.tenant.clone())
                .or_default()
                .entry(resource_type)
                .or_default();
            partition.all.push(Arc::clone(&subscription));
            match placement {
                Placement::Nowhere => {}
                Placement::AlwaysCheck => partition.always_check.push(Arc::clone(&subscription)),
                Placement::Keyed(key) => {
                    let position = partition
                        .dimensions
                        .iter()
                        .position(|d| d.param == key.param);
                    let dimension = match position {
                        Some(i) => &mut partition.dimensions[i],
                        None => {
                            partition.dimensions.push(Dimension {
                                param: key.param,
                                postings: PostingMap::default(),
                            });
                            let last = partition.dimensions.len() - 1;
                            &mut partition.dimensions[last]
                        }
                    };
                    for hash in hashes {
                        match dimension.postings.entry(hash) {
                            Entry::Occupied(mut posting) => {
                                let posting = posting.get_mut();
                                // Two values of one key may hash alike; file once.
                                if !posting
                                    .as_slice()
                                    .iter()
                                    .any(|s| Arc::ptr_eq(s, &subscription))
                                {
                                    posting.push(Arc::clone(&subscription));
                                }
                            }
                            Entry::Vacant(slot) => {
                                slot.insert(Posting::One(Arc::clone(&subscription)));
                            }
                        }
                    }
                }
            }
        }
        self.by_key.insert(ByKey(subscription));
    }

    /// Removes a subscription; the cost follows its posting lists, plus a scan of its
    /// partition's list of all subscriptions.
    pub fn remove(&mut self, key: &SubscriptionKey) {
        let Some(ByKey(old)) = self.by_key.take(key) else {
            return;
        };
        if old.criteria.uses_chains() {
            self.chained = self.chained.saturating_sub(1);
            for (focus, source, param) in old.criteria.has_links() {
                if let Some(links) = self.has_links.get_mut(&focus) {
                    if let Some(n) = links.get_mut(&(source.clone(), param.clone())) {
                        *n -= 1;
                        if *n == 0 {
                            links.remove(&(source, param));
                        }
                    }
                    if links.is_empty() {
                        self.has_links.remove(&focus);
                    }
                }
            }
        }
        for resource_type in old.criteria.resource_types() {
            let placement = Placement::of(&old.criteria, &resource_type);
            let hashes: Vec<u64> = match &placement {
                Placement::Keyed(key) => key.values.iter().map(|v| self.value_hash(v)).collect(),
                _ => Vec::new(),
            };
            let Some(by_type) = self.partitions.get_mut(&key.tenant) else {
                continue;
            };
            let Some(partition) = by_type.get_mut(&resource_type) else {
                continue;
            };
            if let Some(i) = partition.all.iter().position(|s| Arc::ptr_eq(s, &old)) {
                partition.all.swap_remove(i);
            }
            match placement {
                Placement::Nowhere => {}
                Placement::AlwaysCheck => partition.always_check.retain(|s| !Arc::ptr_eq(s, &old)),
                Placement::Keyed(equality) => {
                    if let Some(dimension) = partition
                        .dimensions
                        .iter_mut()
                        .find(|d| d.param == equality.param)
                    {
                        for hash in hashes {
                            if let Entry::Occupied(mut posting) = dimension.postings.entry(hash) {
                                if posting.get_mut().remove(&old) {
                                    posting.remove();
                                }
                            }
                        }
                    }
                    // A parameter nobody is filed under any more is not extracted again.
                    partition.dimensions.retain(|d| !d.postings.is_empty());
                }
            }
            if partition.is_empty() {
                by_type.remove(&resource_type);
                if by_type.is_empty() {
                    self.partitions.remove(&key.tenant);
                }
            }
        }
    }

    fn partition(&self, tenant: &str, resource_type: &str) -> Option<&Partition> {
        self.partitions.get(tenant)?.get(resource_type)
    }

    /// Every subscription of `tenant` registered for `resource_type`: a linear scan's
    /// candidates (for baselines and diagnostics; the matcher uses
    /// [`candidates_for`](Self::candidates_for)). In no particular order.
    pub fn candidates(&self, tenant: &str, resource_type: &str) -> &[Arc<ActiveSubscription>] {
        self.partition(tenant, resource_type)
            .map(|p| p.all.as_slice())
            .unwrap_or(&[])
    }

    /// The subscriptions that could match `event` (with `previous`, the prior version,
    /// where known): those filed under a value the current or previous resource
    /// carries, plus those without an equality key. A superset of the matches, each
    /// subscription once, in no particular order; evaluate each with
    /// [`CompiledCriteria::matches`]. Each indexed parameter is extracted once per
    /// resource, whatever the number of subscriptions.
    pub fn candidates_for<'a>(
        &'a self,
        event: &ChangeEvent,
        previous: Option<&Value>,
    ) -> Vec<&'a Arc<ActiveSubscription>> {
        let Some(partition) = self.partition(&event.tenant, &event.resource_type) else {
            return Vec::new();
        };
        let mut found: Vec<&'a Arc<ActiveSubscription>> = Vec::new();
        let resources = [event.resource.as_ref(), previous];
        for dimension in &partition.dimensions {
            for resource in resources.into_iter().flatten() {
                dimension.param.for_each_value(resource, &mut |value| {
                    if let Some(posting) = dimension.postings.get(&self.value_hash(value)) {
                        found.extend(posting.as_slice());
                    }
                });
            }
        }
        // A subscription can be reached through several values (OR lists, current and
        // previous, a value reported in two forms).
        if found.len() > 1 {
            found.sort_unstable_by_key(|s| Arc::as_ptr(s));
            found.dedup_by(|a, b| Arc::ptr_eq(a, b));
        }
        found.extend(partition.always_check.iter());
        found
    }

    /// The subscriptions in force at `now` that `event` matches: the candidates of
    /// [`candidates_for`](Self::candidates_for), evaluated in full with
    /// [`evaluate_candidates`].
    pub fn matching<'a>(
        &'a self,
        event: &ChangeEvent,
        previous: Option<&Value>,
        now: DateTime<Utc>,
    ) -> Vec<&'a Arc<ActiveSubscription>> {
        evaluate_candidates(self.candidates_for(event, previous), event, previous, now)
    }

    /// The keys of [`matching`](Self::matching).
    pub fn matching_keys(
        &self,
        event: &ChangeEvent,
        previous: Option<&Value>,
        now: DateTime<Utc>,
    ) -> Vec<SubscriptionKey> {
        self.matching(event, previous, now)
            .into_iter()
            .map(|s| s.key.clone())
            .collect()
    }

    /// How the subscriptions are filed, for diagnostics and benchmarks.
    pub fn stats(&self) -> IndexStats {
        let mut stats = IndexStats {
            subscriptions: self.by_key.len(),
            ..IndexStats::default()
        };
        for partition in self.partitions.values().flat_map(HashMap::values) {
            stats.partitions += 1;
            stats.always_check += partition.always_check.len();
            for dimension in &partition.dimensions {
                stats.dimensions += 1;
                stats.posting_keys += dimension.postings.len();
                stats.largest_posting = dimension
                    .postings
                    .values()
                    .map(|p| p.as_slice().len())
                    .fold(stats.largest_posting, usize::max);
            }
        }
        stats
    }
}

/// The candidates in force at `now` that `event` matches. The result is that of
/// [`CompiledCriteria::matches`] on each, but a topic's trigger (query criteria,
/// FHIRPath, CEL) is evaluated at most once per event for all candidates sharing that
/// compiled topic, and only for candidates whose (cheaper) filters pass.
pub fn evaluate_candidates<'a>(
    candidates: impl IntoIterator<Item = &'a Arc<ActiveSubscription>>,
    event: &ChangeEvent,
    previous: Option<&Value>,
    now: DateTime<Utc>,
) -> Vec<&'a Arc<ActiveSubscription>> {
    let interaction = match event.action {
        Action::Create => Interaction::Create,
        Action::Update => Interaction::Update,
        Action::Delete => Interaction::Delete,
    };
    let focus = event.resource.as_ref().or(previous);
    let mut fired: Vec<(*const TopicDefinition, bool)> = Vec::new();
    candidates
        .into_iter()
        .filter(|subscription| {
            if !subscription.in_force(now) {
                return false;
            }
            let CompiledCriteria::Topic { topic, filters } = &subscription.criteria else {
                return subscription.criteria.matches(event, previous)
                    && subscription.cel_passes(event, previous);
            };
            // As in `CompiledCriteria::matches`: filters on the focus (a delete of a
            // resource never seen passes only without filters), and the trigger.
            let filters_pass = match focus {
                Some(focus) => filters.matches(&event.resource_type, focus),
                None => filters.is_empty(),
            };
            if !filters_pass {
                return false;
            }
            let topic_id = Arc::as_ptr(topic);
            if let Some((_, result)) = fired.iter().find(|(t, _)| *t == topic_id) {
                return *result && subscription.cel_passes(event, previous);
            }
            let result = topic.triggers(
                interaction,
                &event.resource_type,
                event.resource.as_ref(),
                previous,
            );
            fired.push((topic_id, result));
            result && subscription.cel_passes(event, previous)
        })
        .collect()
}

/// Shape of a [`SubscriptionIndex`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IndexStats {
    pub subscriptions: usize,
    /// (tenant, resource type) pairs.
    pub partitions: usize,
    /// Indexed (tenant, type, parameter) triples.
    pub dimensions: usize,
    /// Distinct value hashes across all dimensions.
    pub posting_keys: usize,
    pub largest_posting: usize,
    /// Subscriptions without an equality key (counted per resource type).
    pub always_check: usize,
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
        let compiled = match compile_subscription(&record.key.tenant, &spec, &self.catalog).await {
            Ok(criteria) => compile_cel_filter(&spec).map(|cel| (criteria, cel)),
            Err(e) => Err(e),
        };
        match compiled {
            Ok((criteria, cel)) => Some(ActiveSubscription {
                key: record.key.clone(),
                criteria,
                end: spec.end,
                cel,
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

#[cfg(test)]
#[path = "index_proptest.rs"]
mod proptests;
