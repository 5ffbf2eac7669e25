//! Chained search parameters (`Observation?subject:Patient.identifier=…`) are resolved
//! against the latest versions Herald holds: before an event is evaluated, and only while
//! some subscription has a chain, the resources it references (and theirs, for a second
//! link) are read from storage and handed to the criteria evaluation
//! ([`herald_criteria::with_resolved`]). A reference Herald holds no resource for, or a
//! deleted one, resolves to nothing, and the chained clause does not match.

use herald_criteria::{referenced_resources, ResolvedReferences};
use herald_store::{Store, StoreError};
use serde_json::Value;

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
