//! Chained search parameters (`Observation?subject:Patient.identifier=…`) are resolved
//! against the latest versions Herald holds: before an event is evaluated, and only while
//! some subscription has a chain, the resources it references (and theirs, for a second
//! link) are read from storage and handed to the criteria evaluation
//! ([`herald_criteria::with_resolved`]). A reference Herald holds no resource for, or a
//! deleted one, resolves to nothing, and the chained clause does not match.

use herald_criteria::{
    reference_values, referenced_resources, referencing_key, ResolvedReferences,
};
use herald_store::{Store, StoreError};
use serde_json::Value;

/// Resources read per `_has` link and event at most.
const MAX_REFERENCING_PER_LINK: i64 = 50;

/// For `_has` (reverse chains): the resources of each `(source, param)` link that point at
/// the focus `Type/id`, found with a text prefilter and checked exactly with the
/// parameter's own paths, added to `resolved` under [`referencing_key`].
pub(crate) async fn resolve_referencing(
    store: &dyn Store,
    tenant: &str,
    focus: &str,
    links: &[(String, String)],
    resolved: &mut ResolvedReferences,
) -> Result<(), StoreError> {
    let needle = format!("{focus}\"");
    for (source, param) in links {
        let candidates = store
            .resources_containing(tenant, source, &needle, MAX_REFERENCING_PER_LINK)
            .await?;
        let found: Vec<Value> = candidates
            .into_iter()
            .filter_map(|c| c.resource)
            .filter(|r| {
                reference_values(source, param, r)
                    .iter()
                    .any(|v| v == focus)
            })
            .collect();
        resolved.insert(referencing_key(source, param, focus), Value::Array(found));
    }
    Ok(())
}

/// References read per event at most (over both links).
pub(crate) const MAX_REFERENCES_PER_EVENT: usize = 64;
/// Links followed: a chain `a.b.c=` needs two.
const LINKS: usize = 2;

/// The referenced resources of `roots` (an event's current and previous version), in
/// `tenant`, keyed `Type/id`.
pub(crate) async fn resolve_references(
    store: &dyn Store,
    tenant: &str,
    roots: &[&Value],
) -> Result<ResolvedReferences, StoreError> {
    let mut resolved = ResolvedReferences::new();
    let mut budget = MAX_REFERENCES_PER_EVENT;
    let mut frontier: Vec<String> = Vec::new();
    for root in roots {
        frontier.extend(referenced_resources(root, budget));
    }
    for _ in 0..LINKS {
        let mut next = Vec::new();
        for key in frontier {
            if budget == 0 || resolved.contains_key(&key) {
                continue;
            }
            budget -= 1;
            let Some((resource_type, id)) = key.split_once('/') else {
                continue;
            };
            let Some(stored) = store.get_resource(tenant, resource_type, id).await? else {
                continue;
            };
            if stored.deleted {
                continue;
            }
            if let Some(resource) = stored.resource {
                next.extend(referenced_resources(&resource, budget));
                resolved.insert(key, resource);
            }
        }
        frontier = next;
    }
    Ok(resolved)
}
