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
//!
//! What is filed is not the subscription but its criteria group: all subscriptions of
//! a tenant with identical compiled criteria share one group, whose criteria are
//! evaluated once per event and then expand to the members in force. With many
//! subscribers per criteria (a patient's several dashboards, the watchers of one code,
//! a broad `status=active`), the evaluations per event follow the distinct criteria.
//!
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

/// Identifies a [`CriteriaGroup`] in [`SubscriptionIndex::groups`].
type GroupId = u32;

/// The criteria groups filed under one value: one (most values, e.g. a patient) or
/// several.
#[derive(Debug)]
enum Posting {
    One(GroupId),
    Many(Vec<GroupId>),
}

impl Posting {
    /// Adds `group` unless it is already there (two values of one key may hash alike).
    fn add(&mut self, group: GroupId) {
        match self {
            Posting::One(first) if *first == group => {}
            Posting::One(first) => *self = Posting::Many(vec![*first, group]),
            Posting::Many(list) if list.contains(&group) => {}
            Posting::Many(list) => list.push(group),
        }
    }

    /// Removes `group`; returns whether the posting is now empty.
    fn remove(&mut self, group: GroupId) -> bool {
        let list = match self {
            Posting::One(only) => return *only == group,
            Posting::Many(list) => list,
        };
        list.retain(|g| *g != group);
        if let [only] = list.as_slice() {
            *self = Posting::One(*only);
            return false;
        }
        list.is_empty()
    }

    fn as_slice(&self) -> &[GroupId] {
        match self {
            Posting::One(only) => std::slice::from_ref(only),
            Posting::Many(list) => list,
        }
    }
}

/// Subscriptions of one tenant with identical compiled criteria (see
/// [`CompiledCriteria`]'s equality): the index files the group once, and the criteria
/// are evaluated once per event for all members. Large subscription populations repeat
/// criteria a lot (several dashboards per patient, many watchers per code, broad
/// criteria shared by whole departments).
#[derive(Debug)]
struct CriteriaGroup {
    /// Never empty; every member's criteria equal `members[0].criteria`.
    members: Vec<Arc<ActiveSubscription>>,
    /// Members with a `Subscription.end`. Without any, every member is in force and
    /// a match expands to the member list without reading each member (at a million
    /// subscriptions, each read is likely a cache miss).
    members_with_end: usize,
    /// Members with their own CEL filter: they are checked one by one on expansion.
    members_with_cel: usize,
}

impl CriteriaGroup {
    fn criteria(&self) -> &CompiledCriteria {
        &self.members[0].criteria
    }

    fn tenant(&self) -> &str {
        &self.members[0].key.tenant
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
    /// Groups without a usable equality key.
    always_check: Vec<GroupId>,
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

/// The active subscriptions, grouped by identical criteria and inverted by their
/// equality keys (see the module docs).
#[derive(Debug, Default)]
pub struct SubscriptionIndex {
    by_key: HashSet<ByKey>,
    /// tenant → resource type → partition; nested so lookups borrow the event's strings.
    partitions: HashMap<String, HashMap<String, Partition, FastHash>, FastHash>,
    /// Criteria groups by [`GroupId`]; `None` slots are free (listed in `free_groups`).
    groups: Vec<Option<CriteriaGroup>>,
    free_groups: Vec<GroupId>,
    /// Hash of (tenant, criteria) → the groups with that hash.
    groups_by_criteria: PostingMap,
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

    fn criteria_hash(&self, tenant: &str, criteria: &CompiledCriteria) -> u64 {
        self.value_hasher.hash_one((tenant, criteria))
    }

    fn group(&self, id: GroupId) -> &CriteriaGroup {
        match &self.groups[id as usize] {
            Some(group) => group,
            // Postings and lists only name live groups (see `remove`).
            None => unreachable!("criteria group {id} is filed but free"),
        }
    }

    fn group_mut(&mut self, id: GroupId) -> &mut CriteriaGroup {
        match &mut self.groups[id as usize] {
            Some(group) => group,
            None => unreachable!("criteria group {id} is filed but free"),
        }
    }

    /// The group of `tenant` whose criteria equal `criteria` (of hash `hash`).
    fn find_group(&self, hash: u64, tenant: &str, criteria: &CompiledCriteria) -> Option<GroupId> {
        let posting = self.groups_by_criteria.get(&hash)?;
        posting.as_slice().iter().copied().find(|&id| {
            let group = self.group(id);
            group.tenant() == tenant && group.criteria() == criteria
        })
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
        let tenant = subscription.key.tenant.as_str();
        let resource_types = subscription.criteria.resource_types();
        let by_type = self.partitions.entry(tenant.to_owned()).or_default();
        for resource_type in &resource_types {
            by_type
                .entry(resource_type.clone())
                .or_default()
                .all
                .push(Arc::clone(&subscription));
        }
        let hash = self.criteria_hash(tenant, &subscription.criteria);
        let has_end = usize::from(subscription.end.is_some());
        if let Some(id) = self.find_group(hash, tenant, &subscription.criteria) {
            let group = self.group_mut(id);
            group.members.push(Arc::clone(&subscription));
            group.members_with_end += has_end;
            group.members_with_cel += usize::from(subscription.cel.is_some());
        } else {
            let group = CriteriaGroup {
                members: vec![Arc::clone(&subscription)],
                members_with_end: has_end,
                members_with_cel: usize::from(subscription.cel.is_some()),
            };
            let id = match self.free_groups.pop() {
                Some(id) => {
                    self.groups[id as usize] = Some(group);
                    id
                }
                None => {
                    let id = GroupId::try_from(self.groups.len())
                        .unwrap_or_else(|_| panic!("more than {} criteria groups", GroupId::MAX));
                    self.groups.push(Some(group));
                    id
                }
            };
            match self.groups_by_criteria.entry(hash) {
                Entry::Occupied(mut posting) => posting.get_mut().add(id),
                Entry::Vacant(slot) => {
                    slot.insert(Posting::One(id));
                }
            }
            for resource_type in &resource_types {
                self.file_group(id, &subscription, resource_type);
            }
        }
        self.by_key.insert(ByKey(subscription));
    }

    /// Where a group's criteria go in the partition of `resource_type`, with the hashes of
    /// its keyed values (empty unless keyed).
    fn placement(
        &self,
        subscription: &ActiveSubscription,
        resource_type: &str,
    ) -> (Placement, Vec<u64>) {
        let placement = Placement::of(&subscription.criteria, resource_type);
        let hashes = match &placement {
            Placement::Keyed(key) => key.values.iter().map(|v| self.value_hash(v)).collect(),
            _ => Vec::new(),
        };
        (placement, hashes)
    }

    /// Files a new group (represented by `subscription`) in the partition of
    /// `resource_type`.
    fn file_group(&mut self, id: GroupId, subscription: &ActiveSubscription, resource_type: &str) {
        let (placement, hashes) = self.placement(subscription, resource_type);
        let Some(partition) = self
            .partitions
            .get_mut(&subscription.key.tenant)
            .and_then(|by_type| by_type.get_mut(resource_type))
        else {
            return;
        };
        match placement {
            Placement::Nowhere => {}
            Placement::AlwaysCheck => partition.always_check.push(id),
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
                        Entry::Occupied(mut posting) => posting.get_mut().add(id),
                        Entry::Vacant(slot) => {
                            slot.insert(Posting::One(id));
                        }
                    }
                }
            }
        }
    }

    /// Takes a group that lost its last member out of the partition of
    /// `resource_type`.
    fn unfile_group(
        &mut self,
        id: GroupId,
        subscription: &ActiveSubscription,
        resource_type: &str,
    ) {
        let (placement, hashes) = self.placement(subscription, resource_type);
        let Some(partition) = self
            .partitions
            .get_mut(&subscription.key.tenant)
            .and_then(|by_type| by_type.get_mut(resource_type))
        else {
            return;
        };
        match placement {
            Placement::Nowhere => {}
            Placement::AlwaysCheck => partition.always_check.retain(|g| *g != id),
            Placement::Keyed(equality) => {
                if let Some(dimension) = partition
                    .dimensions
                    .iter_mut()
                    .find(|d| d.param == equality.param)
                {
                    for hash in hashes {
                        if let Entry::Occupied(mut posting) = dimension.postings.entry(hash) {
                            if posting.get_mut().remove(id) {
                                posting.remove();
                            }
                        }
                    }
                }
                // A parameter nobody is filed under any more is not extracted again.
                partition.dimensions.retain(|d| !d.postings.is_empty());
            }
        }
    }

    /// Removes a subscription; the cost follows its posting lists and its group, plus a
    /// scan of its partition's list of all subscriptions.
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
        let resource_types = old.criteria.resource_types();
        let hash = self.criteria_hash(&key.tenant, &old.criteria);
        if let Some(id) = self.find_group(hash, &key.tenant, &old.criteria) {
            let group = self.group_mut(id);
            group.members.retain(|s| !Arc::ptr_eq(s, &old));
            group.members_with_end -= usize::from(old.end.is_some());
            group.members_with_cel -= usize::from(old.cel.is_some());
            if group.members.is_empty() {
                // Unfiled while the slot still holds the (empty) group, then freed.
                for resource_type in &resource_types {
                    self.unfile_group(id, &old, resource_type);
                }
                if let Entry::Occupied(mut posting) = self.groups_by_criteria.entry(hash) {
                    if posting.get_mut().remove(id) {
                        posting.remove();
                    }
                }
                self.groups[id as usize] = None;
                self.free_groups.push(id);
            }
        }
        let Some(by_type) = self.partitions.get_mut(&key.tenant) else {
            return;
        };
        for resource_type in &resource_types {
            let Some(partition) = by_type.get_mut(resource_type) else {
                continue;
            };
            if let Some(i) = partition.all.iter().position(|s| Arc::ptr_eq(s, &old)) {
                partition.all.swap_remove(i);
            }
            if partition.is_empty() {
                by_type.remove(resource_type);
            }
        }
        if by_type.is_empty() {
            self.partitions.remove(&key.tenant);
        }
    }

    fn partition(&self, tenant: &str, resource_type: &str) -> Option<&Partition> {
        self.partitions.get(tenant)?.get(resource_type)
    }

    /// Every subscription of `tenant` registered for `resource_type`: a linear scan's
    /// candidates (for baselines and diagnostics; the matcher uses
    /// [`matching`](Self::matching)). In no particular order.
    pub fn candidates(&self, tenant: &str, resource_type: &str) -> &[Arc<ActiveSubscription>] {
        self.partition(tenant, resource_type)
            .map(|p| p.all.as_slice())
            .unwrap_or(&[])
    }

    /// The criteria groups that could match an event on `partition`: those filed under
    /// a value the current or previous resource carries, plus those without an equality
    /// key. Each group once, appended to `out`. Each indexed parameter is extracted once
    /// per resource, whatever the number of subscriptions.
    fn candidate_groups(
        &self,
        partition: &Partition,
        event: &ChangeEvent,
        previous: Option<&Value>,
        out: &mut Vec<GroupId>,
    ) {
        let resources = [event.resource.as_ref(), previous];
        // Values already looked up in this dimension: an update usually carries the
        // same subject or code in both versions, and each lookup in a large posting
        // map is likely a cache miss.
        let mut looked_up: Vec<u64> = Vec::new();
        for dimension in &partition.dimensions {
            looked_up.clear();
            for resource in resources.into_iter().flatten() {
                dimension.param.for_each_value(resource, &mut |value| {
                    let hash = self.value_hash(value);
                    if looked_up.contains(&hash) {
                        return;
                    }
                    looked_up.push(hash);
                    if let Some(posting) = dimension.postings.get(&hash) {
                        out.extend_from_slice(posting.as_slice());
                    }
                });
            }
        }
        // A group can be reached through several values (OR lists, current and
        // previous, a value reported in two forms).
        if out.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
        out.extend_from_slice(&partition.always_check);
    }

    /// The subscriptions that could match `event` (with `previous`, the prior version,
    /// where known): the members of every candidate criteria group. A superset of the
    /// matches, each subscription once, in no particular order; evaluate each with
    /// [`CompiledCriteria::matches`]. For diagnostics and tests:
    /// [`matching`](Self::matching) evaluates each group's criteria once instead.
    pub fn candidates_for<'a>(
        &'a self,
        event: &ChangeEvent,
        previous: Option<&Value>,
    ) -> Vec<&'a Arc<ActiveSubscription>> {
        let Some(partition) = self.partition(&event.tenant, &event.resource_type) else {
            return Vec::new();
        };
        let mut groups = Vec::new();
        self.candidate_groups(partition, event, previous, &mut groups);
        groups
            .into_iter()
            .flat_map(|id| self.group(id).members.iter())
            .collect()
    }

    /// The subscriptions in force at `now` that `event` matches: each candidate group's
    /// criteria evaluated once (as [`CompiledCriteria::matches`], sharing topic trigger
    /// results as [`evaluate_candidates`] does), then its members in force.
    pub fn matching<'a>(
        &'a self,
        event: &ChangeEvent,
        previous: Option<&Value>,
        now: DateTime<Utc>,
    ) -> Vec<&'a Arc<ActiveSubscription>> {
        let mut matched = Vec::new();
        self.match_into(event, previous, now, &mut matched);
        matched
    }

    /// [`matching`](Self::matching) into `matched`; returns the number of criteria
    /// groups evaluated.
    pub(crate) fn match_into<'a>(
        &'a self,
        event: &ChangeEvent,
        previous: Option<&Value>,
        now: DateTime<Utc>,
        matched: &mut Vec<&'a Arc<ActiveSubscription>>,
    ) -> usize {
        let Some(partition) = self.partition(&event.tenant, &event.resource_type) else {
            return 0;
        };
        let mut groups = Vec::new();
        self.candidate_groups(partition, event, previous, &mut groups);
        let mut evaluator = CriteriaEvaluator::new(event, previous);
        let mut evaluated = 0;
        for id in groups {
            let group = self.group(id);
            let all_in_force = group.members_with_end == 0;
            if !all_in_force && !group.members.iter().any(|s| s.in_force(now)) {
                continue;
            }
            evaluated += 1;
            if !evaluator.matches(group.criteria()) {
                continue;
            }
            if all_in_force && group.members_with_cel == 0 {
                matched.extend(group.members.iter());
            } else {
                // Ended members drop out; a member's own CEL filter is its own.
                matched.extend(
                    group
                        .members
                        .iter()
                        .filter(|s| s.in_force(now) && s.cel_passes(event, previous)),
                );
            }
        }
        evaluated
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
            criteria_groups: self.groups.len() - self.free_groups.len(),
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

/// Evaluates compiled criteria on one event, as [`CompiledCriteria::matches`] does, but
/// a topic's trigger (query criteria, FHIRPath, CEL) at most once per event for all
/// criteria sharing that compiled topic, and only when the (cheaper) filters pass.
struct CriteriaEvaluator<'e> {
    event: &'e ChangeEvent,
    previous: Option<&'e Value>,
    interaction: Interaction,
    /// The resource filters are checked on: the current version, else the previous.
    focus: Option<&'e Value>,
    /// Trigger results so far, by topic.
    fired: Vec<(*const TopicDefinition, bool)>,
}

impl<'e> CriteriaEvaluator<'e> {
    fn new(event: &'e ChangeEvent, previous: Option<&'e Value>) -> Self {
        CriteriaEvaluator {
            event,
            previous,
            interaction: match event.action {
                Action::Create => Interaction::Create,
                Action::Update => Interaction::Update,
                Action::Delete => Interaction::Delete,
            },
            focus: event.resource.as_ref().or(previous),
            fired: Vec::new(),
        }
    }

    fn matches(&mut self, criteria: &CompiledCriteria) -> bool {
        let CompiledCriteria::Topic { topic, filters } = criteria else {
            return criteria.matches(self.event, self.previous);
        };
        // As in `CompiledCriteria::matches`: filters on the focus (a delete of a
        // resource never seen passes only without filters), and the trigger.
        let filters_pass = match self.focus {
            Some(focus) => filters.matches(&self.event.resource_type, focus),
            None => filters.is_empty(),
        };
        if !filters_pass {
            return false;
        }
        let topic_id = Arc::as_ptr(topic);
        if let Some((_, result)) = self.fired.iter().find(|(t, _)| *t == topic_id) {
            return *result;
        }
        let result = topic.triggers(
            self.interaction,
            &self.event.resource_type,
            self.event.resource.as_ref(),
            self.previous,
        );
        self.fired.push((topic_id, result));
        result
    }
}

/// The candidates in force at `now` that `event` matches, each evaluated on its own
/// (without criteria groups; see [`SubscriptionIndex::matching`]). The result is that of
/// [`CompiledCriteria::matches`] on each, but a topic's trigger is evaluated at most
/// once per event for all candidates sharing that compiled topic.
pub fn evaluate_candidates<'a>(
    candidates: impl IntoIterator<Item = &'a Arc<ActiveSubscription>>,
    event: &ChangeEvent,
    previous: Option<&Value>,
    now: DateTime<Utc>,
) -> Vec<&'a Arc<ActiveSubscription>> {
    let mut evaluator = CriteriaEvaluator::new(event, previous);
    candidates
        .into_iter()
        .filter(|subscription| {
            subscription.in_force(now)
                && evaluator.matches(&subscription.criteria)
                && subscription.cel_passes(event, previous)
        })
        .collect()
}

/// Shape of a [`SubscriptionIndex`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IndexStats {
    pub subscriptions: usize,
    /// Distinct (tenant, criteria): what is filed and evaluated.
    pub criteria_groups: usize,
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
    /// Where status changes made here (a subscription reaching its `end`) are recorded.
    pub audit: Option<herald_audit::AuditLog>,
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
            } else if let Some(audit) = &self.audit {
                if record.status != SubscriptionStatus::Off {
                    audit
                        .record(herald_audit::AuditEntry::status_change(
                            &record.key.tenant,
                            &record.key.id,
                            "off: Subscription.end reached",
                        ))
                        .await;
                }
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
