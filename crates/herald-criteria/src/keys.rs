//! Equality keys: what an inverted subscription index needs from compiled criteria.
//!
//! A query (or a Subscription's filters) *requires* an equality key when one of its
//! ANDed parameters is a plain token test (no modifier), a reference test (no modifier
//! or `:[type]`) or `_id`: a resource can only match if it carries one of that
//! parameter's ORed values. [`EqualityKey::values`] are those values in a normalized
//! string form, and [`IndexParam::for_each_value`] yields, for a resource, every
//! normalized value it carries for the parameter. Both sides are derived from the same
//! element paths and value extraction the evaluator uses, and the contract is:
//!
//! > if the clause matches the resource, then at least one of the key's values is
//! > among the values the resource yields for that parameter.
//!
//! The converse need not hold (an index lookup may over-approximate; the candidate is
//! then evaluated in full). Normal forms:
//! - token: a query `code` → `code`; `system|code` → `system|code`; `|code` → `|code`
//!   (`system|` alone is not an equality key). A resource coding (system, code) yields
//!   `code` and `system|code`; a code without a system yields `code` and `|code`.
//! - reference: a query `Type/id` (also absolute, `:Type`-modified, `_history`
//!   stripped) → `Type/id`; a bare id → `id`; anything else (`urn:uuid:…`) → the raw
//!   reference. A resource reference yields its raw form (history stripped), and when
//!   it has a type and id, `Type/id` and `id`.

use std::fmt;
use std::hash::{Hash, Hasher};

use serde_json::Value;

use crate::plan::Plan;
use crate::registry::{self, ParamDef, ParamType};
use crate::values::{any_token_pair, element_reference, RefParts, TokenQuery};

/// A token or reference search parameter of one resource type, usable as an index
/// dimension. Two `IndexParam`s are equal when they extract the same values: the same
/// type and element paths (`subject` and `patient` of an Observation are one dimension;
/// reference target types only narrow matching, never the extracted values).
#[derive(Clone, Copy)]
pub struct IndexParam {
    def: &'static ParamDef,
}

impl fmt::Debug for IndexParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IndexParam").field(&self.def.name).finish()
    }
}

impl PartialEq for IndexParam {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.def, other.def)
            || (self.def.ty == other.def.ty
                && self.def.plan.identity() == other.def.plan.identity())
    }
}

impl Eq for IndexParam {}

impl Hash for IndexParam {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.def.ty.code().hash(state);
        self.def.plan.identity().hash(state);
    }
}

impl IndexParam {
    /// The parameter `name` of `resource_type`, if it is a token or reference parameter
    /// the registry knows.
    pub fn lookup(resource_type: &str, name: &str) -> Option<IndexParam> {
        let def = registry::lookup(resource_type, name)?;
        Self::from_def(def)
    }

    pub(crate) fn from_def(def: &'static ParamDef) -> Option<IndexParam> {
        let evaluable = !matches!(def.plan, Plan::Unsupported(_));
        (evaluable && matches!(def.ty, ParamType::Token | ParamType::Reference))
            .then_some(IndexParam { def })
    }

    /// The search parameter's name.
    pub fn name(&self) -> &'static str {
        &self.def.name
    }

    /// How selective an equality on this parameter usually is: lower is better.
    /// `_id` first, then references (subject, patient, encounter…), then code-like
    /// tokens, then other tokens (status, category…), which few values share out.
    pub fn selectivity_rank(&self) -> u8 {
        let name = &*self.def.name;
        match self.def.ty {
            _ if name == "_id" => 0,
            ParamType::Reference => 1,
            _ if name == "code" || name == "identifier" || name.ends_with("-code") => 2,
            _ => 3,
        }
    }

    /// Calls `f` with every normalized value `resource` carries for this parameter (see
    /// the module docs); a value may be reported more than once. Never panics.
    pub fn for_each_value(&self, resource: &Value, f: &mut dyn FnMut(&str)) {
        // Visited in place (called per event for every indexed parameter): no list of
        // elements is built. `any_value` stops early only when asked (`true`).
        let mut scratch = String::new();
        match self.def.ty {
            ParamType::Token => {
                self.def.plan.any_value(resource, &mut |node, _| {
                    any_token_pair(node, &mut |system, code| {
                        f(code);
                        scratch.clear();
                        scratch.push_str(system.unwrap_or(""));
                        scratch.push('|');
                        scratch.push_str(code);
                        f(&scratch);
                        false
                    });
                    false
                });
            }
            ParamType::Reference => {
                self.def.plan.any_value(resource, &mut |node, _| {
                    if let Some(reference) = element_reference(node) {
                        f(reference.raw);
                        if let (Some(typ), Some(id)) = (reference.typ, reference.id) {
                            scratch.clear();
                            scratch.push_str(typ);
                            scratch.push('/');
                            scratch.push_str(id);
                            // A relative reference is already in this form: each value
                            // reported costs the index a lookup.
                            if scratch != reference.raw {
                                f(&scratch);
                            }
                            f(id);
                        }
                    }
                    false
                });
            }
            _ => {}
        }
    }

    /// The normalized values `resource` carries for this parameter, sorted and
    /// deduplicated.
    pub fn values(&self, resource: &Value) -> Vec<String> {
        let mut out = Vec::new();
        self.for_each_value(resource, &mut |v| out.push(v.to_owned()));
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The normalized values a resource carries for the token or reference parameter
/// `param` of `resource_type` (empty for unknown or other parameters). The index side
/// of [`EqualityKey`].
pub fn resource_index_values(resource_type: &str, param: &str, resource: &Value) -> Vec<String> {
    IndexParam::lookup(resource_type, param)
        .map(|p| p.values(resource))
        .unwrap_or_default()
}

/// An ANDed parameter of a query that only matches resources carrying one of `values`
/// for `param` (normalized, sorted, deduplicated, never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EqualityKey {
    pub param: IndexParam,
    pub values: Vec<String>,
}

impl EqualityKey {
    pub(crate) fn new(def: &'static ParamDef, mut values: Vec<String>) -> Option<EqualityKey> {
        let param = IndexParam::from_def(def)?;
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        values.dedup();
        Some(EqualityKey { param, values })
    }

    /// Best first: the most selective parameter kind, then the fewest values.
    pub(crate) fn sort_best_first(keys: &mut [EqualityKey]) {
        keys.sort_by_key(|k| (k.param.selectivity_rank(), k.values.len()));
    }
}

/// The normalized key of one token query value; `None` for `system|` (any code in a
/// system), which no single value identifies.
pub(crate) fn token_key(query: &TokenQuery) -> Option<String> {
    match query {
        TokenQuery::Code(code) => Some(code.clone()),
        TokenQuery::SystemCode(system, code) => Some(format!("{system}|{code}")),
        TokenQuery::NoSystemCode(code) => Some(format!("|{code}")),
        TokenQuery::System(_) => None,
    }
}

/// The normalized key of one reference query value.
pub(crate) fn reference_key(query: &RefParts) -> String {
    match (&query.typ, &query.id) {
        (Some(typ), Some(id)) => format!("{typ}/{id}"),
        (None, Some(id)) => id.clone(),
        _ => query.raw.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_most_selective_key_comes_first() {
        let query = crate::SearchQuery::parse(
            "Observation?category=laboratory&status=final,amended&code=http://loinc.org|2345-7,9999-9&subject=Patient/1&code=http://loinc.org|&status:not=x",
        )
        .expect("compiles");
        let keys: Vec<(&str, Vec<String>)> = query
            .equality_keys()
            .into_iter()
            .map(|k| (k.param.name(), k.values))
            .collect();
        let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            keys,
            vec![
                ("subject", owned(&["Patient/1"])),
                ("code", owned(&["9999-9", "http://loinc.org|2345-7"])),
                ("category", owned(&["laboratory"])),
                ("status", owned(&["amended", "final"])),
            ]
        );
        let bare = crate::SearchQuery::parse("Observation?patient=123&subject=urn:uuid:x")
            .expect("compiles");
        let values: Vec<Vec<String>> = bare.equality_keys().into_iter().map(|k| k.values).collect();
        assert_eq!(values, vec![owned(&["123"]), owned(&["urn:uuid:x"])]);
    }

    #[test]
    fn resource_values_cover_every_query_form() {
        let observation = json!({
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
            "subject": {"reference": "http://example.org/fhir/Patient/123/_history/2"},
        });
        let code = resource_index_values("Observation", "code", &observation);
        assert_eq!(code, vec!["2345-7", "http://loinc.org|2345-7"]);
        let status = resource_index_values("Observation", "status", &observation);
        assert_eq!(status, vec!["final", "|final"]);
        let subject = resource_index_values("Observation", "subject", &observation);
        assert_eq!(
            subject,
            vec!["123", "Patient/123", "http://example.org/fhir/Patient/123"]
        );
        assert!(resource_index_values("Observation", "date", &observation).is_empty());
        assert!(resource_index_values("Nope", "code", &observation).is_empty());
    }
}
