//! A Subscription's filters (R5 `filterBy`, backport `backport-filter-criteria`):
//! compilation against the topic's `canFilterBy` declarations, and matching of a
//! notification focus, grouped by resource type (typed filters fail closed for other
//! types).

use serde_json::Value;

use crate::error::{err, CriteriaError};
use crate::keys::EqualityKey;
use crate::registry;
use crate::search::SearchQuery;
use crate::topic::{FilterDecl, TopicDefinition};

/// A Subscription's compiled filters (see [`SubscriptionFilters::matches`]). Equal
/// filters (same parameters and values, in the same order) hash alike.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SubscriptionFilters {
    /// Filters that named a resource type, by type.
    typed: TypeMap<Vec<SearchQuery>>,
    /// Filters without a type, compiled once per trigger resource type.
    untyped: Vec<TypeMap<SearchQuery>>,
}

/// A map from resource type to `V` for the one to three types a topic has: a vector,
/// because a `BTreeMap` allocates a node of eleven slots for one entry and a million
/// subscriptions' filters are kept in memory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TypeMap<V>(Vec<(String, V)>);

impl<V> Default for TypeMap<V> {
    fn default() -> Self {
        TypeMap(Vec::new())
    }
}

impl<V> TypeMap<V> {
    fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }

    fn get(&self, resource_type: &str) -> Option<&V> {
        self.0
            .iter()
            .find(|(t, _)| t == resource_type)
            .map(|(_, v)| v)
    }

    fn contains_key(&self, resource_type: &str) -> bool {
        self.get(resource_type).is_some()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn get_or_insert_default(&mut self, resource_type: &str) -> &mut V
    where
        V: Default,
    {
        let position = match self.0.iter().position(|(t, _)| t == resource_type) {
            Some(i) => i,
            None => {
                self.0.push((resource_type.to_owned(), V::default()));
                self.0.len() - 1
            }
        };
        &mut self.0[position].1
    }

    fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }
}

impl TopicDefinition {
    /// Compiles a Subscription's filter strings (R5 `filterBy`, or backport
    /// `backport-filter-criteria`). Accepted forms: `Observation?patient=Patient/123`,
    /// `Observation.patient=Patient/123` and `patient=Patient/123`, each with optional
    /// `:modifier` or value prefix, several parameters joined by `&` (ANDed). Every
    /// parameter, modifier and comparator must be allowed by the topic's `canFilterBy`
    /// (plain equality and an explicit `eq` are always allowed).
    pub fn compile_filters(
        &self,
        filters: &[String],
    ) -> Result<SubscriptionFilters, CriteriaError> {
        let mut compiled = SubscriptionFilters::default();
        let trigger_types = self.resource_types();
        for filter in filters {
            for (typ, segment) in filter_segments(filter)? {
                match typ {
                    Some(typ) => {
                        if !trigger_types.iter().any(|t| t == typ) {
                            return err(format!(
                                "filter resource type '{typ}' is not a trigger resource of topic {}",
                                self.url
                            ));
                        }
                        let query = self.compile_segment(typ, segment)?;
                        compiled.typed.get_or_insert_default(typ).push(query);
                    }
                    None => {
                        let mut per_type = TypeMap(Vec::with_capacity(trigger_types.len()));
                        for t in &trigger_types {
                            per_type
                                .0
                                .push((t.clone(), self.compile_segment(t, segment)?));
                        }
                        compiled.untyped.push(per_type);
                    }
                }
            }
        }
        compiled.typed.shrink_to_fit();
        for (_, queries) in &mut compiled.typed.0 {
            queries.shrink_to_fit();
        }
        compiled.untyped.shrink_to_fit();
        Ok(compiled)
    }

    /// Compiles one `name[:modifier]=value` filter for `resource_type` and checks it
    /// against `canFilterBy`.
    pub(crate) fn compile_segment(
        &self,
        resource_type: &str,
        segment: &str,
    ) -> Result<SearchQuery, CriteriaError> {
        let query = SearchQuery::parse_for_type(resource_type, segment)?;
        for clause in query.clauses() {
            let decls: Vec<&FilterDecl> = self
                .can_filter_by
                .iter()
                .filter(|d| {
                    d.param == clause.name
                        && d.resource.as_deref().is_none_or(|r| r == resource_type)
                })
                .collect();
            if decls.is_empty() {
                return err(format!(
                    "filter parameter '{}' is not allowed by topic {}",
                    clause.name, self.url
                ));
            }
            if let Some(m) = &clause.modifier {
                let allowed = decls.iter().any(|d| {
                    d.modifiers.iter().any(|a| a == m)
                        || (registry::is_type_name(m) && d.modifiers.iter().any(|a| a == "type"))
                });
                if !allowed {
                    return err(format!(
                        "modifier ':{m}' on filter parameter '{}' is not allowed by topic {}",
                        clause.name, self.url
                    ));
                }
            }
            for prefix in &clause.prefixes {
                let code = prefix.code();
                if code != "eq"
                    && !decls
                        .iter()
                        .any(|d| d.comparators.iter().any(|c| c == code))
                {
                    return err(format!(
                        "comparator '{code}' on filter parameter '{}' is not allowed by topic {}",
                        clause.name, self.url
                    ));
                }
            }
        }
        Ok(query)
    }
}

/// Splits one filter string into its `name[:modifier]=value` segments, each with the
/// resource type it names, if any (see [`TopicDefinition::compile_filters`] for the forms).
pub(crate) fn filter_segments(filter: &str) -> Result<Vec<(Option<&str>, &str)>, CriteriaError> {
    let filter = filter.trim();
    if filter.is_empty() {
        return err("empty subscription filter");
    }
    let segments: Vec<(Option<&str>, &str)> = match filter.split_once('?') {
        Some((typ, query)) => {
            let typ = typ.strip_prefix('/').unwrap_or(typ);
            query
                .split('&')
                .filter(|s| !s.is_empty())
                .map(|s| (Some(typ), s))
                .collect()
        }
        None => filter
            .split('&')
            .filter(|s| !s.is_empty())
            .map(|s| {
                let name = s.split(['=', ':']).next().unwrap_or(s);
                match name.split_once('.') {
                    Some((typ, _)) if registry::is_type_name(typ) => {
                        (Some(typ), &s[typ.len() + 1..])
                    }
                    _ => (None, s),
                }
            })
            .collect(),
    };
    if segments.is_empty() {
        return err(format!("subscription filter '{filter}' has no parameters"));
    }
    Ok(segments)
}

impl SubscriptionFilters {
    /// The `_has` links of the filters: (focus type, source type, reference parameter).
    pub fn has_links(&self) -> Vec<(String, String, String)> {
        self.typed
            .values()
            .flatten()
            .chain(self.untyped.iter().flat_map(|m| m.values()))
            .flat_map(|q| {
                let focus = q.resource_type().to_owned();
                q.has_links()
                    .into_iter()
                    .map(move |(s, p)| (focus.clone(), s, p))
            })
            .collect()
    }

    /// Whether a filter has a chained parameter.
    pub fn uses_chains(&self) -> bool {
        self.typed
            .values()
            .flatten()
            .chain(self.untyped.iter().flat_map(|m| m.values()))
            .any(SearchQuery::uses_chains)
    }

    /// Whether a focus resource of `resource_type` passes every filter. Untyped filters
    /// and the filters typed for `resource_type` must all pass; if there are typed
    /// filters but none for `resource_type`, the focus does not match (fail closed).
    /// No filters at all matches everything.
    pub fn matches(&self, resource_type: &str, focus: &Value) -> bool {
        if !self.typed.is_empty() && !self.typed.contains_key(resource_type) {
            return false;
        }
        self.typed
            .get(resource_type)
            .is_none_or(|queries| queries.iter().all(|q| q.matches(focus)))
            && self.untyped.iter().all(|per_type| {
                per_type
                    .get(resource_type)
                    .is_some_and(|q| q.matches(focus))
            })
    }

    /// Whether a focus of `resource_type` can pass the filters at all: false when
    /// filters name other resource types only.
    pub fn can_match_type(&self, resource_type: &str) -> bool {
        (self.typed.is_empty() || self.typed.contains_key(resource_type))
            && self
                .untyped
                .iter()
                .all(|per_type| per_type.contains_key(resource_type))
    }

    /// The required equality keys for a focus of `resource_type` (see
    /// [`EqualityKey`]), most selective first: every filter that applies to the type
    /// must pass, so each of their keys is required.
    pub fn equality_keys(&self, resource_type: &str) -> Vec<EqualityKey> {
        let typed = self.typed.get(resource_type).into_iter().flatten();
        let untyped = self
            .untyped
            .iter()
            .filter_map(|per_type| per_type.get(resource_type));
        let mut keys: Vec<EqualityKey> = typed
            .chain(untyped)
            .flat_map(SearchQuery::equality_keys)
            .collect();
        EqualityKey::sort_best_first(&mut keys);
        keys
    }

    /// Whether there are no filters.
    pub fn is_empty(&self) -> bool {
        self.typed.is_empty() && self.untyped.is_empty()
    }
}
