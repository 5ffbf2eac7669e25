//! A notification's additional context: the resources a topic's `notificationShape` adds
//! to each event, resolved against the latest versions Herald holds, for every channel
//! (rest-hook and NATS bundles, WebSocket frames, `$events`) through one function,
//! [`additional_context`].
//!
//! - `include` (`Observation:encounter`): the resources the focus references through the
//!   search parameter, evaluated with the parameter's own paths
//!   ([`herald_criteria::reference_values`]), each read with `Store::get_resource`.
//! - `revInclude` (`Observation:encounter` on an Encounter focus): resources of the source
//!   type whose parameter references the focus, found with `Store::resources_containing`
//!   (a text prefilter on `Type/id"`) and then checked exactly with the same evaluation.
//!   A reference that pins a version (`Encounter/1/_history/2`) is not found by the
//!   prefilter, so it is not rev-included.
//!
//! Deleted and missing resources are left out, as are those the subscription owner's
//! grant does not cover ([`permits_resource`]: the same send-time check the focus gets;
//! the spec says "if they exist and the user is authorized to receive them"). The focus
//! itself is never its own context. At most [`MAX_ADDITIONAL_CONTEXT_PER_EVENT`]
//! resources are added per event. `empty` content and criteria-based (non-topic)
//! subscriptions get none, at no cost.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use herald_criteria::{NotificationShape, NotificationShapes, BUILTIN_TOPIC_JSON};
use herald_fhir::bundle::AdditionalContext;
use herald_fhir::{PayloadContent, SubscriptionSpec};
use herald_store::{
    NotificationRecord, ResourceKey, Store, StoreResult, StoredResource, SubscriptionOwner,
    SubscriptionRecord,
};
use serde_json::Value;

use crate::access::permits_resource;

/// Most additional-context resources one event carries. A shape such as
/// `Patient` ← `Observation:subject` can name thousands of resources; a notification is
/// a pointer to what changed, not an export, so the rest is left to a query by the
/// subscriber. Also bounds the reads one event costs (see [`MAX_LOOKUPS_PER_EVENT`]).
pub const MAX_ADDITIONAL_CONTEXT_PER_EVENT: usize = 50;

/// Most include reads / revInclude candidate rows examined per event: twice the cap,
/// so a few missing, deleted, unauthorized or prefilter-only rows do not starve the
/// event of context, while a resource with thousands of references costs bounded work.
const MAX_LOOKUPS_PER_EVENT: usize = 2 * MAX_ADDITIONAL_CONTEXT_PER_EVENT;

/// Whose notification the context is for.
#[derive(Debug, Clone, Copy)]
pub struct ContextScope<'a> {
    pub tenant: &'a str,
    /// The subscription's topic canonical; `None` for criteria-based subscriptions.
    pub topic_url: Option<&'a str>,
    /// The content level of the notification being built.
    pub content: PayloadContent,
    /// Whose grant the resources must fall under (`None`: development mode).
    pub owner: Option<&'a SubscriptionOwner>,
}

impl<'a> ContextScope<'a> {
    /// The scope of a bundle for `record` at its content level (as
    /// [`bundle_request`](crate::payload::bundle_request) sends it).
    pub fn of(record: &'a SubscriptionRecord, spec: &'a SubscriptionSpec) -> Self {
        Self {
            tenant: &record.key.tenant,
            topic_url: spec.topic_url(),
            content: spec.content.unwrap_or(PayloadContent::IdOnly),
            owner: record.owner.as_ref(),
        }
    }
}

/// The built-in topics' shapes, by canonical URL.
static BUILTIN_SHAPES: LazyLock<HashMap<String, NotificationShapes>> = LazyLock::new(|| {
    BUILTIN_TOPIC_JSON
        .iter()
        .filter_map(|text| {
            // Compiled (and tested) by the matcher's catalog; nothing to add here.
            let topic: Value = serde_json::from_str(text).ok()?;
            let url = topic.get("url")?.as_str()?.to_owned();
            Some((url, NotificationShapes::from_topic(&topic).ok()?))
        })
        .collect()
});

/// The shapes of the topic `url` (a `|version` suffix ignored) for `tenant`; `None` when
/// the topic is unknown or declares none.
async fn topic_shapes(
    store: &dyn Store,
    tenant: &str,
    url: &str,
) -> StoreResult<Option<NotificationShapes>> {
    let base = url.split_once('|').map_or(url, |(base, _)| base);
    if let Some(shapes) = BUILTIN_SHAPES.get(base) {
        return Ok((!shapes.is_empty()).then(|| shapes.clone()));
    }
    let Some(topic) = store.get_topic_by_url(tenant, base).await? else {
        return Ok(None);
    };
    match NotificationShapes::from_topic(&topic.resource) {
        Ok(shapes) => Ok((!shapes.is_empty()).then_some(shapes)),
        Err(e) => {
            // Validated when stored; a failure now means the stored resource is unusable.
            tracing::error!(tenant, url, error = %e, "stored SubscriptionTopic's notificationShape no longer reads");
            Ok(None)
        }
    }
}

/// The additional context of each of `events` (same order): see the module docs.
/// Reads only; safe to repeat. A caller that builds many notifications for one
/// subscription loads a [`ContextPlan`] once instead.
pub async fn additional_context(
    store: &dyn Store,
    scope: &ContextScope<'_>,
    events: &[NotificationRecord],
) -> StoreResult<Vec<Vec<AdditionalContext>>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    ContextPlan::load(store, scope)
        .await?
        .resolve(store, scope, events)
        .await
}

/// What one subscription's notifications need to resolve their additional context: its
/// topic's shapes, read once for a whole delivery run rather than once per request (a
/// topic read per notification was the largest cost of sending one).
#[derive(Debug, Clone, Default)]
pub struct ContextPlan {
    /// `None`: no context at this content level, or the topic declares none.
    shapes: Option<NotificationShapes>,
}

impl ContextPlan {
    pub async fn load(store: &dyn Store, scope: &ContextScope<'_>) -> StoreResult<Self> {
        if scope.content == PayloadContent::Empty {
            return Ok(Self::default());
        }
        let Some(topic_url) = scope.topic_url else {
            return Ok(Self::default());
        };
        Ok(Self {
            shapes: topic_shapes(store, scope.tenant, topic_url).await?,
        })
    }

    /// The additional context of each of `events` (same order), for the subscription
    /// this plan was loaded for. The focus resources the events do not carry, and then
    /// every resource their `include`s name, are read in one query each for all of
    /// `events` (a page of a subscription's log typically names the same patient and
    /// encounter again and again); `revInclude`s are searched per event. Reads only; safe
    /// to repeat.
    pub async fn resolve(
        &self,
        store: &dyn Store,
        scope: &ContextScope<'_>,
        events: &[NotificationRecord],
    ) -> StoreResult<Vec<Vec<AdditionalContext>>> {
        let Some(shapes) = &self.shapes else {
            return Ok(vec![Vec::new(); events.len()]);
        };
        let shape_of = |n: &NotificationRecord| {
            shapes
                .for_resource(&n.event.resource_type)
                .filter(|shape| !shape.is_empty())
        };
        let key = |ty: &str, id: &str| ResourceKey {
            tenant: scope.tenant.to_owned(),
            resource_type: ty.to_owned(),
            id: id.to_owned(),
        };
        let latest_focus = read_all(
            store,
            events
                .iter()
                .filter(|n| {
                    n.event.resource.is_none()
                        && shape_of(n).is_some_and(|shape| !shape.includes.is_empty())
                })
                .map(|n| key(&n.event.resource_type, &n.event.resource_id)),
        )
        .await?;
        let focus_of = |n| focus_of(n, scope.tenant, &latest_focus);
        let mut named = Vec::new();
        for n in events {
            if let (Some(shape), Some(focus)) = (shape_of(n), focus_of(n)) {
                for reference in include_references(shape, focus, n) {
                    if let Some((ty, id)) = reference.split_once('/') {
                        named.push(key(ty, id));
                    }
                }
            }
        }
        let included = read_all(store, named.into_iter()).await?;
        let mut all = Vec::with_capacity(events.len());
        for n in events {
            let context = match shape_of(n) {
                Some(shape) => resolve(store, scope, shape, n, focus_of(n), &included).await?,
                None => Vec::new(),
            };
            all.push(context);
        }
        Ok(all)
    }
}

/// The focus of `n` as the event saw it (for a delete, the deleted copy); else the latest
/// version, from `latest`.
fn focus_of<'a>(
    n: &'a NotificationRecord,
    tenant: &str,
    latest: &'a HashMap<ResourceKey, StoredResource>,
) -> Option<&'a Value> {
    match &n.event.resource {
        Some(resource) => Some(resource),
        None => latest
            .get(&ResourceKey {
                tenant: tenant.to_owned(),
                resource_type: n.event.resource_type.clone(),
                id: n.event.resource_id.clone(),
            })
            .filter(|r| !r.deleted)
            .and_then(|r| r.resource.as_ref()),
    }
}

/// The latest stored versions of `keys` (repeats read once), by key.
async fn read_all(
    store: &dyn Store,
    keys: impl Iterator<Item = ResourceKey>,
) -> StoreResult<HashMap<ResourceKey, StoredResource>> {
    let keys: Vec<ResourceKey> = keys.collect::<HashSet<_>>().into_iter().collect();
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(store
        .get_resources(&keys)
        .await?
        .into_iter()
        .map(|r| (r.key(), r))
        .collect())
}

/// The `Type/id` references `shape`'s includes name from `focus`, in order, without
/// repeats or the focus itself, at most [`MAX_LOOKUPS_PER_EVENT`].
fn include_references(
    shape: &NotificationShape,
    focus: &Value,
    n: &NotificationRecord,
) -> Vec<String> {
    let focus_ref = format!("{}/{}", n.event.resource_type, n.event.resource_id);
    let mut seen: HashSet<String> = HashSet::from([focus_ref]);
    let mut references = Vec::new();
    for directive in &shape.includes {
        // Only `Type/id` references are looked up (and counted); `#contained` and the
        // like are not resources Herald holds.
        for reference in directive.references(focus) {
            if references.len() >= MAX_LOOKUPS_PER_EVENT {
                return references;
            }
            if reference.contains('/') && seen.insert(reference.clone()) {
                references.push(reference);
            }
        }
    }
    references
}

/// The context of one event whose focus has `shape`: its includes looked up in
/// `included` (read for the whole page by [`ContextPlan::resolve`]), its revIncludes
/// searched.
async fn resolve(
    store: &dyn Store,
    scope: &ContextScope<'_>,
    shape: &NotificationShape,
    n: &NotificationRecord,
    focus: Option<&Value>,
    included: &HashMap<ResourceKey, StoredResource>,
) -> StoreResult<Vec<AdditionalContext>> {
    let tenant = scope.tenant;
    let (focus_type, focus_id) = (&n.event.resource_type, &n.event.resource_id);
    let focus_ref = format!("{focus_type}/{focus_id}");
    let mut found = Vec::new();
    let mut seen: HashSet<String> = HashSet::from([focus_ref.clone()]);
    let mut lookups = 0;
    let full = |found: &Vec<AdditionalContext>, lookups: usize| {
        found.len() >= MAX_ADDITIONAL_CONTEXT_PER_EVENT || lookups >= MAX_LOOKUPS_PER_EVENT
    };
    let permitted = |ty: &str, id: &str, resource: &Value| {
        permits_resource(scope.owner, ty, id, Some(resource)).is_ok()
    };

    if let Some(focus) = focus {
        for reference in include_references(shape, focus, n) {
            if full(&found, lookups) {
                break;
            }
            let Some((ty, id)) = reference.split_once('/') else {
                continue;
            };
            seen.insert(reference.clone());
            lookups += 1;
            let key = ResourceKey {
                tenant: tenant.to_owned(),
                resource_type: ty.to_owned(),
                id: id.to_owned(),
            };
            let Some(stored) = included.get(&key) else {
                continue;
            };
            match &stored.resource {
                Some(resource) if !stored.deleted && permitted(ty, id, resource) => {
                    found.push(AdditionalContext {
                        resource_type: stored.resource_type.clone(),
                        resource_id: stored.id.clone(),
                        resource: Some(resource.clone()),
                    });
                }
                _ => {}
            }
        }
    }

    // The closing quote keeps `Encounter/1` from matching `Encounter/12`.
    let needle = format!("{focus_ref}\"");
    for directive in &shape.rev_includes {
        if full(&found, lookups) {
            break;
        }
        let limit = i64::try_from(MAX_LOOKUPS_PER_EVENT - lookups).unwrap_or(i64::MAX);
        let candidates = store
            .resources_containing(tenant, &directive.source_type, &needle, limit)
            .await?;
        lookups += candidates.len().max(1);
        for candidate in candidates {
            if found.len() >= MAX_ADDITIONAL_CONTEXT_PER_EVENT {
                break;
            }
            let Some(resource) = candidate.resource else {
                continue;
            };
            let key = format!("{}/{}", candidate.resource_type, candidate.id);
            if seen.contains(&key)
                || !directive.references(&resource).contains(&focus_ref)
                || !permitted(&candidate.resource_type, &candidate.id, &resource)
            {
                continue;
            }
            seen.insert(key);
            found.push(AdditionalContext {
                resource_type: candidate.resource_type,
                resource_id: candidate.id,
                resource: Some(resource),
            });
        }
    }
    Ok(found)
}
