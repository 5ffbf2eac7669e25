//! Chained search parameters (`subject:Patient.identifier=…`) read the resource a reference
//! points to. This crate evaluates synchronously and holds no storage, so the caller (the
//! matcher) fetches the latest versions Herald holds of the referenced resources first and
//! makes them visible for the duration of one evaluation with [`with_resolved`].
//!
//! Reverse chains (`Patient?_has:Observation:patient:code=…`) read the resources that
//! point at the focus; the caller resolves those too, under [`referencing_key`].
//!
//! Without resolved references a chained clause fails closed: it never matches.

use std::cell::RefCell;
use std::collections::HashMap;

use serde_json::Value;

use crate::values::split_reference_view;

/// Resolved references, keyed by relative `Type/id`.
pub type ResolvedReferences = HashMap<String, Value>;

thread_local! {
    static RESOLVED: RefCell<Option<ResolvedReferences>> = const { RefCell::new(None) };
}

/// Runs `f` with `resolved` visible to chained clauses evaluated on this thread, and
/// returns the map for reuse. `f` must not await (it is synchronous by its type).
pub fn with_resolved<R>(
    resolved: ResolvedReferences,
    f: impl FnOnce() -> R,
) -> (R, ResolvedReferences) {
    let previous = RESOLVED.with(|r| r.replace(Some(resolved)));
    let result = f();
    let resolved = RESOLVED.with(|r| r.replace(previous)).unwrap_or_default();
    (result, resolved)
}

/// Whether the resource `Type/id` is resolved and passes `test`.
pub(crate) fn test_resolved(key: &str, test: impl FnOnce(&Value) -> bool) -> bool {
    RESOLVED.with(|r| {
        r.borrow()
            .as_ref()
            .and_then(|m| m.get(key))
            .is_some_and(test)
    })
}

/// The relative `Type/id` a reference string names, if it names a resource of `target`.
pub(crate) fn relative_key(reference: &str, target: &str) -> Option<String> {
    let view = split_reference_view(reference);
    match (view.typ, view.id) {
        (Some(t), Some(id)) if t == target => Some(format!("{t}/{id}")),
        _ => None,
    }
}

/// The relative references (`Type/id`) anywhere in `resource`, at most `limit`, for the
/// caller to fetch before evaluating chained criteria.
pub fn referenced_resources(resource: &Value, limit: usize) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut stack = vec![resource];
    while let Some(value) = stack.pop() {
        if found.len() >= limit {
            break;
        }
        match value {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get("reference") {
                    let view = split_reference_view(reference);
                    if let (Some(t), Some(id)) = (view.typ, view.id) {
                        let key = format!("{t}/{id}");
                        if !found.contains(&key) {
                            found.push(key);
                        }
                    }
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    found
}

/// The key under which the resources of `source` type whose reference parameter `param`
/// points at `target` (`Type/id`) are resolved, as a JSON array.
pub fn referencing_key(source: &str, param: &str, target: &str) -> String {
    format!("_has|{source}|{param}|{target}")
}

/// Whether any resolved resource of `source` referencing `target` through `param` passes
/// `test`.
pub(crate) fn test_referencing(
    source: &str,
    param: &str,
    target: &str,
    test: impl Fn(&Value) -> bool,
) -> bool {
    let key = referencing_key(source, param, target);
    test_resolved(&key, |found| {
        found
            .as_array()
            .is_some_and(|items| items.iter().any(&test))
    })
}
