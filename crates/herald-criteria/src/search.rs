//! R4 search URLs as criteria: parsing (`Observation?code=…&subject=…`), compilation
//! against the [`registry`](crate::registry) into a [`SearchQuery`], and in-memory
//! evaluation of that query against one resource.
//!
//! Parsing rules: the query string is split on `&` (empty segments are skipped);
//! names and values are percent-decoded (`+` is *not* turned into a space, so raw
//! time-zone offsets like `+01:00` survive); a name may carry one `:modifier`;
//! comma-separated values are ORed (`\,` escapes a comma, `\|` a pipe, `\\` a
//! backslash); repeated parameters are ANDed. `_filter` expressions are compiled by
//! [`crate::filter_param`] into one clause. Everything that is not implemented is a
//! compile error naming the offending part.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use serde_json::Value;

use crate::date::{DateRange, Prefix};
use crate::error::{err, CriteriaError};
use crate::filter_param::{FilterExpr, FILTER_PARAM};
use crate::keys::{reference_key, token_key, EqualityKey};
use crate::number::{
    element_number, number_test, parse_search_number, quantity_value, QuantityQuery, QuantityUnit,
    SearchNumber,
};
use crate::plan::Plan;
use crate::registry::{self, ParamDef, ParamType};
use crate::values::{
    date_ranges, identifier_of_type, normalize, reference_identifier, reference_matches,
    split_reference, string_values, token_matches, token_texts, uri_matches, RefParts, TokenQuery,
    UriMode,
};

/// Result/control parameters: meaningful for a search response, not for a match test.
const RESULT_PARAMS: &[&str] = &[
    "_include",
    "_revinclude",
    "_sort",
    "_count",
    "_elements",
    "_summary",
    "_total",
    "_contained",
    "_containedType",
    "_format",
    "_pretty",
];

/// Search features recognised but not implemented yet.
const UNSUPPORTED_PARAMS: &[&str] = &["_query", "_text", "_content", "_list"];

/// A compiled search: a resource type and ANDed clauses. Two queries are equal (and
/// hash alike) when they test the same parameters with the same compiled values, so a
/// subscription index can evaluate identical criteria once per event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SearchQuery {
    /// The registry's name: shared by every query, so matching reads a hot string.
    resource_type: &'static str,
    clauses: Vec<Clause>,
}

/// One parameter occurrence of a query (values inside it are ORed).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Clause {
    /// The parameter name, without modifier.
    pub(crate) name: String,
    /// The modifier as written (without the colon), if any.
    pub(crate) modifier: Option<String>,
    /// Prefixes written explicitly in the values (`eq` included when written).
    pub(crate) prefixes: Vec<Prefix>,
    def: DefRef,
    test: Test,
}

/// A registry entry, compared and hashed by identity (the registry holds each once).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DefRef(pub(crate) &'static ParamDef);

impl PartialEq for DefRef {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for DefRef {}

impl std::hash::Hash for DefRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::ptr::hash(self.0, state);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum StringMode {
    StartsWith,
    Exact,
    Contains,
    /// `_filter` `eq`: case- and accent-insensitive equality (no URL modifier has it).
    Equal,
    /// `_filter` `ew`: case- and accent-insensitive ends-with.
    EndsWith,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Test {
    Missing(bool),
    Token {
        any_of: Vec<TokenQuery>,
        negate: bool,
    },
    /// Normalized texts for `:text` (starts-with).
    TokenText(Vec<String>),
    /// `:of-type`: (type system, type code, identifier value).
    TokenOfType(Vec<(String, String, String)>),
    Reference(Vec<RefParts>),
    ReferenceIdentifier(Vec<TokenQuery>),
    /// Normalized unless `Exact`.
    String {
        any_of: Vec<String>,
        mode: StringMode,
    },
    Date(Vec<(Prefix, DateRange)>),
    Number(Vec<(Prefix, SearchNumber)>),
    Quantity(Vec<QuantityQuery>),
    Uri {
        any_of: Vec<String>,
        mode: UriMode,
    },
    /// ORed values, each one test per component (in the definition's order), all
    /// holding on the same element.
    Composite(Vec<Vec<Test>>),
    /// A `_filter` expression (see [`crate::filter_param`]).
    Filter(Box<FilterExpr>),
    /// A chained parameter: the referenced resource of `target` type passes `inner`
    /// (see [`crate::references`]).
    Chain {
        target: &'static str,
        inner: Box<Clause>,
    },
    /// `_has:Source:param:…`: some resource of `source` whose reference parameter `param`
    /// points at the focus passes `inner` (see [`crate::references`]).
    Has {
        source: &'static str,
        param: Box<str>,
        inner: Box<Clause>,
    },
    /// `_type`: the resource is of one of these types.
    Type(Vec<&'static str>),
}

impl Test {
    /// Frees the spare capacity of the value lists.
    fn shrink_to_fit(&mut self) {
        match self {
            Test::Missing(_) => {}
            Test::Token { any_of, .. } => any_of.shrink_to_fit(),
            Test::TokenText(values) => values.shrink_to_fit(),
            Test::TokenOfType(values) => values.shrink_to_fit(),
            Test::Reference(values) => values.shrink_to_fit(),
            Test::ReferenceIdentifier(values) => values.shrink_to_fit(),
            Test::String { any_of, .. } => any_of.shrink_to_fit(),
            Test::Date(values) => values.shrink_to_fit(),
            Test::Number(values) => values.shrink_to_fit(),
            Test::Quantity(values) => values.shrink_to_fit(),
            Test::Uri { any_of, .. } => any_of.shrink_to_fit(),
            Test::Composite(values) => {
                values.iter_mut().flatten().for_each(Test::shrink_to_fit);
                values.shrink_to_fit();
            }
            Test::Filter(_) => {}
            Test::Chain { inner, .. } | Test::Has { inner, .. } => inner.test.shrink_to_fit(),
            Test::Type(types) => types.shrink_to_fit(),
        }
    }

    /// Whether the values `plan` finds under `root` pass the test; `None` when they
    /// could not be computed (the caller fails closed).
    fn eval(&self, def: &ParamDef, plan: &Plan, root: &Value) -> Option<bool> {
        match self {
            Test::Missing(want) => plan
                .any_value(root, &mut |_, _| true)
                .map(|found| found != *want),
            Test::Token { any_of, negate } => plan
                .any_value(root, &mut |n, _| any_of.iter().any(|q| token_matches(n, q)))
                .map(|hit| hit != *negate),
            Test::TokenText(texts) => plan.any_value(root, &mut |n, _| {
                token_texts(n).into_iter().any(|t| {
                    let t = normalize(t);
                    texts.iter().any(|v| t.starts_with(v.as_str()))
                })
            }),
            Test::TokenOfType(values) => plan.any_value(root, &mut |n, _| {
                values
                    .iter()
                    .any(|(system, code, value)| identifier_of_type(n, system, code, value))
            }),
            Test::Reference(refs) => plan.any_value(root, &mut |n, targets| {
                refs.iter().any(|q| reference_matches(n, q, targets))
            }),
            Test::ReferenceIdentifier(tokens) => plan.any_value(root, &mut |n, _| {
                reference_identifier(n)
                    .is_some_and(|id| tokens.iter().any(|q| token_matches(id, q)))
            }),
            Test::String { any_of, mode } => plan.any_value(root, &mut |n, _| {
                string_values(n).into_iter().any(|s| {
                    if *mode == StringMode::Exact {
                        return any_of.iter().any(|v| v == s);
                    }
                    let s = normalize(s);
                    any_of.iter().any(|v| match mode {
                        StringMode::Contains => s.contains(v.as_str()),
                        StringMode::Equal => s == *v,
                        StringMode::EndsWith => s.ends_with(v.as_str()),
                        _ => s.starts_with(v.as_str()),
                    })
                })
            }),
            Test::Date(values) => {
                // Gathered through the visitor: no intermediate list of elements.
                let mut ranges: Vec<DateRange> = Vec::new();
                plan.any_value(root, &mut |n, _| {
                    ranges.extend(date_ranges(n));
                    false
                })?;
                Some(values.iter().any(|(prefix, param)| match prefix {
                    // `ne`: there is a value and none of the values is `eq`.
                    Prefix::Ne => {
                        !ranges.is_empty() && ranges.iter().all(|t| prefix.test(*param, *t))
                    }
                    _ => ranges.iter().any(|t| prefix.test(*param, *t)),
                }))
            }
            Test::Number(values) => {
                let mut numbers: Vec<i128> = Vec::new();
                plan.any_value(root, &mut |n, _| {
                    numbers.extend(element_number(n));
                    false
                })?;
                Some(values.iter().any(|(prefix, param)| match prefix {
                    Prefix::Ne => {
                        !numbers.is_empty()
                            && numbers.iter().all(|x| number_test(*prefix, param, *x))
                    }
                    _ => numbers.iter().any(|x| number_test(*prefix, param, *x)),
                }))
            }
            Test::Quantity(values) => plan.values(root).map(|nodes| {
                values.iter().any(|q| {
                    let mut numbers = nodes
                        .iter()
                        .filter_map(|n| quantity_value(n, &q.unit))
                        .peekable();
                    match q.prefix {
                        Prefix::Ne => {
                            numbers.peek().is_some()
                                && numbers.all(|x| number_test(q.prefix, &q.number, x))
                        }
                        _ => numbers.any(|x| number_test(q.prefix, &q.number, x)),
                    }
                })
            }),
            Test::Uri { any_of, mode } => plan.any_value(root, &mut |n, _| {
                any_of.iter().any(|v| uri_matches(n, v, *mode))
            }),
            Test::Composite(values) => {
                let elements = plan.values(root)?;
                Some(elements.iter().any(|element| {
                    values.iter().any(|tests| {
                        tests
                            .iter()
                            .zip(def.components.iter())
                            .all(|(test, component)| {
                                test.eval(def, &component.plan, element) == Some(true)
                            })
                    })
                }))
            }
            Test::Filter(expr) => Some(expr.matches(root)),
            Test::Has {
                source,
                param,
                inner,
            } => {
                let focus = match (
                    root.get("resourceType").and_then(Value::as_str),
                    root.get("id").and_then(Value::as_str),
                ) {
                    (Some(t), Some(id)) => format!("{t}/{id}"),
                    _ => return Some(false),
                };
                Some(crate::references::test_referencing(
                    source,
                    param,
                    &focus,
                    |candidate| inner.matches(candidate),
                ))
            }
            Test::Type(types) => Some(
                root.get("resourceType")
                    .and_then(Value::as_str)
                    .is_some_and(|t| types.contains(&t)),
            ),
            Test::Chain { target, inner } => plan.any_value(root, &mut |n, _| {
                let reference = match n {
                    Value::Object(o) => o.get("reference").and_then(Value::as_str),
                    Value::String(s) => Some(s.as_str()),
                    _ => None,
                };
                reference
                    .and_then(|r| crate::references::relative_key(r, target))
                    .is_some_and(|key| {
                        crate::references::test_resolved(&key, |resolved| inner.matches(resolved))
                    })
            }),
        }
    }
}

impl SearchQuery {
    /// Parses an R4 search URL used as `Subscription.criteria`, e.g.
    /// `Observation?code=http://loinc.org|2345-7&subject=Patient/123` or just
    /// `Observation`. A leading `/` is accepted; an absolute URL is rejected.
    pub fn parse(criteria: &str) -> Result<SearchQuery, CriteriaError> {
        let (resource_type, query) = split_criteria(criteria)?;
        Self::parse_for_type(resource_type, query)
    }

    /// Parses only the query part (`status:not=finished&code=x`) for a resource type,
    /// as used by `SubscriptionTopic` query criteria. A leading `?` is accepted.
    pub fn parse_for_type(resource_type: &str, query: &str) -> Result<SearchQuery, CriteriaError> {
        let Some(resource_type) = registry::known_resource(resource_type) else {
            return err(format!("unknown resource type '{resource_type}'"));
        };
        let mut clauses = query_segments(query)
            .map(|segment| parse_param(resource_type, segment))
            .collect::<Result<Vec<_>, _>>()?;
        // Collecting through `Result` starts at capacity four; a million compiled
        // subscriptions are kept in memory.
        clauses.shrink_to_fit();
        Ok(SearchQuery {
            resource_type,
            clauses,
        })
    }

    /// Whether a clause is chained: evaluating it needs the referenced resources
    /// ([`crate::with_resolved`]).
    pub fn uses_chains(&self) -> bool {
        self.clauses
            .iter()
            .any(|c| matches!(c.test, Test::Chain { .. } | Test::Has { .. }))
    }

    /// The `_has` links (source type, reference parameter) whose referencing resources
    /// must be resolved for a focus of this query's type.
    pub fn has_links(&self) -> Vec<(String, String)> {
        self.clauses
            .iter()
            .filter_map(|c| match &c.test {
                Test::Has { source, param, .. } => Some(((*source).to_owned(), param.to_string())),
                _ => None,
            })
            .collect()
    }

    /// The resource type the query searches.
    pub fn resource_type(&self) -> &str {
        self.resource_type
    }

    /// Whether the resource matches every clause. A resource of another type (by its
    /// `resourceType`) never matches. Never panics.
    pub fn matches(&self, resource: &Value) -> bool {
        resource.get("resourceType").and_then(Value::as_str) == Some(self.resource_type)
            && self.clauses.iter().all(|c| c.matches(resource))
    }

    /// The distinct parameter names the query constrains (without modifiers), in order
    /// of first appearance; meant as keys for a later inverted index.
    pub fn parameter_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for clause in &self.clauses {
            if !names.contains(&clause.name) {
                names.push(clause.name.clone());
            }
        }
        names
    }

    pub(crate) fn clauses(&self) -> &[Clause] {
        &self.clauses
    }

    /// The query's required equality keys (see [`EqualityKey`]): one per ANDed plain
    /// token / reference / `_id` parameter, most selective first. A resource that
    /// matches the query carries, for every returned key, at least one of its values.
    pub fn equality_keys(&self) -> Vec<EqualityKey> {
        let mut keys: Vec<EqualityKey> = self
            .clauses
            .iter()
            .filter_map(Clause::equality_key)
            .collect();
        EqualityKey::sort_best_first(&mut keys);
        keys
    }
}

impl Clause {
    /// The clause as an equality key, when it is a plain token test (no modifier, no
    /// `system|` value) or a reference test (no modifier or `:[type]`).
    pub(crate) fn equality_key(&self) -> Option<EqualityKey> {
        let values = match &self.test {
            Test::Token {
                any_of,
                negate: false,
            } => any_of.iter().map(token_key).collect::<Option<Vec<_>>>()?,
            Test::Reference(refs) => refs.iter().map(reference_key).collect(),
            _ => return None,
        };
        EqualityKey::new(self.def.0, values)
    }

    /// For `_filter`: turns a plain string clause (`name=value`, values normalized)
    /// into another comparison. Returns false, changing nothing, for any other clause.
    pub(crate) fn set_string_mode(&mut self, new_mode: StringMode) -> bool {
        match &mut self.test {
            Test::String { mode, .. } if *mode == StringMode::StartsWith => {
                *mode = new_mode;
                true
            }
            _ => false,
        }
    }

    /// Whether the resource passes this clause. Never panics.
    pub(crate) fn matches(&self, resource: &Value) -> bool {
        self.test.eval(self.def.0, &self.def.0.plan, resource) == Some(true)
    }

    /// What this clause sees in `resource` and its verdict, for
    /// [`explain`](crate::explain). The verdict is [`Clause::matches`] itself; the values
    /// are extracted by the same plan a second time, so matching pays nothing for this.
    pub(crate) fn findings<'a>(&self, resource: &'a Value) -> ClauseFindings<'a> {
        let matched = self.matches(resource);
        let special = match &self.test {
            // A `_filter` reads no element of its own: its comparisons do.
            Test::Filter(_) => Some(format!(
                "the _filter expression as a whole {}; explain its comparisons one by one as search parameters to see each",
                if matched { "holds" } else { "does not hold" }
            )),
            Test::Has { source, .. } => Some(format!(
                "_has reads the {source} resources Herald holds that point at this resource; {}",
                if matched {
                    "one passed"
                } else {
                    "none was available here or none passed (the matcher reads them from storage)"
                }
            )),
            Test::Type(types) => Some(format!("the resource type must be one of {}", types.join(", "))),
            _ => None,
        };
        if let Some(note) = special {
            return ClauseFindings {
                values: Some(Vec::new()),
                matched,
                note: Some(note),
            };
        }
        let values = self.def.0.plan.values(resource);
        if let Test::Chain { target, .. } = &self.test {
            return ClauseFindings {
                values,
                matched,
                note: Some(format!(
                    "a chained parameter reads the referenced {target} as Herald holds it; {}",
                    if matched {
                        "the referenced resource passed"
                    } else {
                        "it was not available here or did not pass (the matcher reads it from storage)"
                    }
                )),
            };
        }
        let note = match &values {
            None => Some(
                "the parameter's values could not be computed for this resource; the clause fails closed"
                    .to_owned(),
            ),
            Some(found) if found.is_empty() && !matched => Some(format!(
                "the resource has no value at {}",
                self.def.0.plan.describe()
            )),
            Some(_) => self.test.note(matched),
        };
        ClauseFindings {
            values,
            matched,
            note,
        }
    }
}

/// See [`Clause::findings`].
pub(crate) struct ClauseFindings<'a> {
    /// The elements at the parameter's paths (for a composite, the elements its
    /// components are tested on); `None` when they could not be computed.
    pub(crate) values: Option<Vec<Cow<'a, Value>>>,
    pub(crate) matched: bool,
    /// What a reader needs to know to understand the verdict, if anything.
    pub(crate) note: Option<String>,
}

impl Test {
    /// A note on how the test decides, where its rule is easy to miss.
    fn note(&self, matched: bool) -> Option<String> {
        let text = match self {
            Test::Missing(true) => "':missing=true' passes only when there is no value",
            Test::Missing(false) => "':missing=false' passes when there is any value",
            Test::Token { negate: true, .. } => {
                "':not' passes when no value has the code, also when there is no value"
            }
            Test::Token { any_of, .. }
                if !matched && any_of.iter().any(|q| !matches!(q, TokenQuery::Code(_))) =>
            {
                "codes compare exactly (case-sensitive); 'system|code' needs both, '|code' needs no system, 'code' accepts any system"
            }
            Test::Token { .. } if !matched => "codes compare exactly (case-sensitive)",
            Test::TokenText(_) => {
                "':text' compares the start of display/text, ignoring case and accents"
            }
            Test::String {
                mode: StringMode::StartsWith,
                ..
            } if !matched => {
                "strings compare from the start, ignoring case and accents (':contains' matches anywhere, ':exact' exactly)"
            }
            Test::Reference(_) if !matched => {
                "references compare type and id ('Patient/1', or a bare id of an allowed type); other forms compare the whole reference"
            }
            Test::Date(values) if values.iter().any(|(p, _)| *p == Prefix::Ne) => {
                "'ne' passes when there is a value and none equals the date"
            }
            Test::Date(_) if !matched => {
                "dates compare as ranges at their precision (eq: the value's range lies inside the parameter's)"
            }
            Test::Number(values) if values.iter().any(|(p, _)| *p == Prefix::Ne) => {
                "'ne' passes when there is a value and none equals the number"
            }
            Test::Number(_) if !matched => {
                "numbers compare with the precision written (eq 5.4 accepts 5.35 up to 5.45)"
            }
            Test::Quantity(_) if !matched => {
                "quantities compare the value, and the unit when one is given ('number|system|code' or 'number||code')"
            }
            Test::Composite(_) => "every component must hold on the same element",
            _ => return None,
        };
        Some(text.to_owned())
    }
}

/// Splits a search URL into its resource type and query string (after the `?`), checking
/// the form [`SearchQuery::parse`] accepts.
pub(crate) fn split_criteria(criteria: &str) -> Result<(&str, &str), CriteriaError> {
    let trimmed = criteria.trim();
    if trimmed.is_empty() {
        return err("criteria is empty");
    }
    let (path, query) = trimmed.split_once('?').unwrap_or((trimmed, ""));
    if path.contains(':') {
        return err(format!(
            "absolute criteria URLs are not supported: '{trimmed}'; use a relative search URL such as 'Observation?code=...'"
        ));
    }
    let path = path.strip_prefix('/').unwrap_or(path);
    if path.is_empty() {
        return err(format!("criteria has no resource type: '{trimmed}'"));
    }
    if path.contains('/') {
        return err(format!(
            "criteria must have the form '<ResourceType>?<parameters>'; the path '{path}' is not supported"
        ));
    }
    Ok((path, query))
}

/// The `name[:modifier]=value` segments of a query string, each compiled by
/// [`parse_param`] into one clause. A leading `?` is accepted; empty segments are skipped.
pub(crate) fn query_segments(query: &str) -> impl Iterator<Item = &str> {
    let query = query.strip_prefix('?').unwrap_or(query);
    query.split('&').filter(|segment| !segment.is_empty())
}

fn decode(s: &str) -> Result<String, CriteriaError> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| CriteriaError::new(format!("'{s}' is not valid UTF-8 after percent-decoding")))
}

/// Compiles one `name[:modifier]=value` segment.
/// `_has` and `_type` read no element through a plan of their own.
static SPECIAL_PARAM: std::sync::LazyLock<ParamDef> = std::sync::LazyLock::new(|| ParamDef {
    name: "_has".into(),
    ty: ParamType::Special,
    targets: Box::default(),
    plan: Plan::Unsupported("evaluated by its own test".into()),
    components: Box::default(),
});

/// `_has:Source:param:rest=value` on `resource_type`: `param` is a reference parameter of
/// `Source` that can point at `resource_type`; `rest` is a parameter of `Source` (not
/// another `_has`).
fn parse_has(
    resource_type: &str,
    modifier: &str,
    value: &str,
    segment: &str,
) -> Result<Clause, CriteriaError> {
    let parts: Vec<&str> = modifier.splitn(3, ':').collect();
    let [source, param, rest] = parts.as_slice() else {
        return err(format!(
            "'_has' needs the form '_has:<Type>:<reference parameter>:<parameter>=<value>', got '_has:{modifier}'"
        ));
    };
    let Some(source) = registry::known_resource(source) else {
        return err(format!("'_has': unknown resource type '{source}'"));
    };
    let Some(def) = registry::lookup(source, param) else {
        return err(format!(
            "'_has': unknown search parameter '{param}' for {source}"
        ));
    };
    if def.ty != ParamType::Reference {
        return err(format!(
            "'_has:{source}:{param}': '{param}' is not a reference parameter"
        ));
    }
    if !def.allows_target(resource_type) {
        return err(format!(
            "'_has:{source}:{param}': '{param}' cannot point at {resource_type}"
        ));
    }
    if rest.starts_with("_has") {
        return err("nested '_has' is not supported");
    }
    let inner = parse_named(source, (*rest).to_owned(), value.to_owned(), segment)?;
    if matches!(inner.test, Test::Chain { .. }) {
        return err("a chained parameter inside '_has' is not supported");
    }
    Ok(Clause {
        name: "_has".to_owned(),
        modifier: Some(format!("{source}:{param}")),
        prefixes: inner.prefixes.clone(),
        def: DefRef(&SPECIAL_PARAM),
        test: Test::Has {
            source,
            param: (*param).into(),
            inner: Box::new(inner),
        },
    })
}

/// Links a chain may have (`a.b.c=` is three).
const MAX_CHAIN_LINKS: usize = 3;

/// `head.rest=value`: `head` is a reference parameter of `resource_type`, optionally with
/// its target type (`subject:Patient`); `rest` is a parameter of that target type (itself
/// possibly chained), tested on the referenced resource.
fn parse_chain(
    resource_type: &str,
    head: &str,
    rest: &str,
    value: &str,
) -> Result<Clause, CriteriaError> {
    let full = format!("{head}.{rest}");
    if rest.matches('.').count() + 2 > MAX_CHAIN_LINKS {
        return err(format!(
            "chain '{full}' has more than {MAX_CHAIN_LINKS} links"
        ));
    }
    let (name, typed) = match head.split_once(':') {
        Some((n, t)) => (n, Some(t)),
        None => (head, None),
    };
    let Some(def) = registry::lookup(resource_type, name) else {
        return err(format!(
            "unknown search parameter '{name}' for {resource_type} in chain '{full}'"
        ));
    };
    if def.ty != ParamType::Reference {
        return err(format!(
            "chain '{full}': '{name}' is a {} parameter; only reference parameters can be chained",
            def.ty.code()
        ));
    }
    let target = match typed {
        Some(t) => match registry::known_resource(t) {
            Some(t) if def.allows_target(t) => t,
            Some(t) => {
                return err(format!(
                    "chain '{full}': '{t}' is not a target type of reference parameter '{name}'"
                ))
            }
            None => {
                return err(format!(
                    "chain '{full}': ':{t}' is not a resource type (a chain's only modifier is its target type)"
                ))
            }
        },
        None => match def.targets.as_ref() {
            [only] => registry::known_resource(only).ok_or_else(|| {
                CriteriaError::new(format!("chain '{full}': unknown target type '{only}'"))
            })?,
            targets => {
                return err(format!(
                    "chain '{full}': '{name}' may point at {}; name the type, e.g. '{name}:{}.{rest}'",
                    if targets.is_empty() { "any type".to_owned() } else { targets.join(", ") },
                    targets.first().map_or("Patient", |t| t)
                ))
            }
        },
    };
    if let Plan::Unsupported(reason) = &def.plan {
        return err(format!(
            "search parameter '{name}' of {resource_type} is not supported: {reason}"
        ));
    }
    let inner = parse_named(target, rest.to_owned(), value.to_owned(), &full)?;
    Ok(Clause {
        name: name.to_owned(),
        modifier: Some(target.to_owned()),
        prefixes: inner.prefixes.clone(),
        def: DefRef(def),
        test: Test::Chain {
            target,
            inner: Box::new(inner),
        },
    })
}

pub(crate) fn parse_param(resource_type: &str, segment: &str) -> Result<Clause, CriteriaError> {
    let Some((raw_name, raw_value)) = segment.split_once('=') else {
        return err(format!("parameter '{}' has no value", decode(segment)?));
    };
    parse_named(
        resource_type,
        decode(raw_name)?,
        decode(raw_value)?,
        segment,
    )
}

/// [`parse_param`] after percent-decoding: `full_name` is `name[:modifier]` (or a chain),
/// `segment` is what the client wrote, for messages.
fn parse_named(
    resource_type: &str,
    full_name: String,
    value: String,
    segment: &str,
) -> Result<Clause, CriteriaError> {
    let (name, modifier) = match full_name.split_once(':') {
        Some((n, m)) => (n, Some(m)),
        None => (full_name.as_str(), None),
    };
    if name.is_empty() {
        return err(format!("parameter without a name in '{segment}'"));
    }
    if RESULT_PARAMS.contains(&name) {
        return err(format!(
            "result parameter '{name}' has no meaning in subscription criteria"
        ));
    }
    if UNSUPPORTED_PARAMS.contains(&name) {
        return err(format!("'{name}' is not supported yet"));
    }
    if name == &*FILTER_PARAM.name {
        if let Some(m) = modifier {
            return err(format!("modifier ':{m}' on '_filter' is not supported"));
        }
        return Ok(Clause {
            name: name.to_owned(),
            modifier: None,
            prefixes: Vec::new(),
            def: DefRef(&FILTER_PARAM),
            test: Test::Filter(Box::new(FilterExpr::compile(resource_type, &value)?)),
        });
    }
    if name == "_has" {
        return parse_has(resource_type, modifier.unwrap_or(""), &value, segment);
    }
    if name == "_type" {
        if let Some(m) = modifier {
            return err(format!("modifier ':{m}' on '_type' is not supported"));
        }
        let mut types = Vec::new();
        for piece in split_list(&value, "_type")? {
            match registry::known_resource(piece) {
                Some(t) => types.push(t),
                None => return err(format!("'_type': unknown resource type '{piece}'")),
            }
        }
        return Ok(Clause {
            name: name.to_owned(),
            modifier: None,
            prefixes: Vec::new(),
            def: DefRef(&SPECIAL_PARAM),
            test: Test::Type(types),
        });
    }
    if let Some((head, rest)) = full_name.split_once('.') {
        return parse_chain(resource_type, head, rest, &value);
    }
    let Some(def) = registry::lookup(resource_type, name) else {
        return err(format!(
            "unknown search parameter '{name}' for {resource_type}"
        ));
    };
    if let Plan::Unsupported(reason) = &def.plan {
        return err(format!(
            "search parameter '{name}' of {resource_type} is not supported: {reason}"
        ));
    }
    if value.is_empty() {
        return err(format!("parameter '{full_name}' has an empty value"));
    }
    let mut prefixes = Vec::new();
    let mut test = if modifier == Some("missing") {
        match value.as_str() {
            "true" => Test::Missing(true),
            "false" => Test::Missing(false),
            _ => {
                return err(format!(
                    "':missing' on '{name}' needs 'true' or 'false', got '{value}'"
                ))
            }
        }
    } else {
        let pieces = split_list(&value, &full_name)?;
        compile_test(def, def.ty, name, modifier, &pieces, &mut prefixes)?
    };
    test.shrink_to_fit();
    Ok(Clause {
        name: name.to_owned(),
        modifier: modifier.map(str::to_owned),
        prefixes,
        def: DefRef(def),
        test,
    })
}

/// Token modifiers that need a terminology service (value sets, subsumption).
const TERMINOLOGY_MODIFIERS: &[&str] = &["in", "not-in", "above", "below"];

/// Compiles the ORed `pieces` of a parameter (or of one composite component) of type
/// `ty`; explicit prefixes are appended to `prefixes`.
fn compile_test(
    def: &ParamDef,
    ty: ParamType,
    name: &str,
    modifier: Option<&str>,
    pieces: &[&str],
    prefixes: &mut Vec<Prefix>,
) -> Result<Test, CriteriaError> {
    let unsupported = |m: &str| err(format!("modifier ':{m}' on '{name}' is not supported"));
    Ok(match ty {
        ParamType::Token => match modifier {
            None | Some("not") => Test::Token {
                any_of: pieces
                    .iter()
                    .map(|p| token_query(p, name))
                    .collect::<Result<_, _>>()?,
                negate: modifier.is_some(),
            },
            Some("text") => {
                Test::TokenText(pieces.iter().map(|p| normalize(&unescape(p))).collect())
            }
            Some("of-type") => Test::TokenOfType(
                pieces
                    .iter()
                    .map(|p| of_type_query(p, name))
                    .collect::<Result<_, _>>()?,
            ),
            Some(m) if TERMINOLOGY_MODIFIERS.contains(&m) => {
                return err(format!(
                    "modifier ':{m}' on '{name}' is not supported: it needs a terminology service, which Herald does not have"
                ))
            }
            Some(m) => return unsupported(m),
        },
        ParamType::Reference => match modifier {
            Some("identifier") => Test::ReferenceIdentifier(
                pieces
                    .iter()
                    .map(|p| token_query(p, name))
                    .collect::<Result<_, _>>()?,
            ),
            None => Test::Reference(
                pieces
                    .iter()
                    .map(|p| reference_query(p, None, def, name))
                    .collect::<Result<_, _>>()?,
            ),
            Some(m) if registry::is_type_name(m) => {
                if !def.allows_target(m) {
                    return err(format!(
                        "'{m}' is not a target type of reference parameter '{name}'"
                    ));
                }
                Test::Reference(
                    pieces
                        .iter()
                        .map(|p| reference_query(p, Some(m), def, name))
                        .collect::<Result<_, _>>()?,
                )
            }
            Some(m) => return unsupported(m),
        },
        ParamType::String => {
            let mode = match modifier {
                None => StringMode::StartsWith,
                Some("exact") => StringMode::Exact,
                Some("contains") => StringMode::Contains,
                Some(m) => return unsupported(m),
            };
            let any_of = pieces
                .iter()
                .map(|p| {
                    if mode == StringMode::Exact {
                        unescape(p)
                    } else {
                        normalize(&unescape(p))
                    }
                })
                .collect();
            Test::String { any_of, mode }
        }
        ParamType::Date => {
            if let Some(m) = modifier {
                return unsupported(m);
            }
            let mut values = Vec::new();
            for piece in pieces {
                let (prefix, explicit, rest) = split_prefix(&unescape(piece), "date", name)?;
                let Some(range) = crate::date::parse_range(&rest) else {
                    return err(format!("invalid date '{rest}' for parameter '{name}'"));
                };
                if explicit {
                    prefixes.push(prefix);
                }
                values.push((prefix, range));
            }
            Test::Date(values)
        }
        ParamType::Number => {
            if let Some(m) = modifier {
                return unsupported(m);
            }
            let mut values = Vec::new();
            for piece in pieces {
                let (prefix, explicit, rest) = split_prefix(&unescape(piece), "number", name)?;
                let number = search_number(&rest, name)?;
                if explicit {
                    prefixes.push(prefix);
                }
                values.push((prefix, number));
            }
            Test::Number(values)
        }
        ParamType::Quantity => {
            if let Some(m) = modifier {
                return unsupported(m);
            }
            let mut values = Vec::new();
            for piece in pieces {
                let parts = split_escaped(piece, '|');
                let (number, unit) = match parts.as_slice() {
                    [number] => (*number, QuantityUnit::Any),
                    [number, "", ""] => (*number, QuantityUnit::Any),
                    [number, "", code] => (*number, QuantityUnit::CodeOrUnit(unescape(code))),
                    [number, system, code] if !code.is_empty() => (
                        *number,
                        QuantityUnit::SystemCode(unescape(system), unescape(code)),
                    ),
                    _ => {
                        return err(format!(
                            "quantity value '{piece}' for '{name}' must be '[prefix]number', 'number||code' or 'number|system|code'"
                        ))
                    }
                };
                let (prefix, explicit, rest) = split_prefix(&unescape(number), "quantity", name)?;
                let number = search_number(&rest, name)?;
                if explicit {
                    prefixes.push(prefix);
                }
                values.push(QuantityQuery {
                    prefix,
                    number,
                    unit,
                });
            }
            Test::Quantity(values)
        }
        ParamType::Uri => {
            let mode = match modifier {
                None => UriMode::Exact,
                Some("below") => UriMode::Below,
                Some("above") => UriMode::Above,
                Some(m) => return unsupported(m),
            };
            Test::Uri {
                any_of: pieces.iter().map(|p| unescape(p)).collect(),
                mode,
            }
        }
        ParamType::Composite => {
            if let Some(m) = modifier {
                return unsupported(m);
            }
            let mut values = Vec::new();
            for piece in pieces {
                let parts = split_escaped(piece, '$');
                if parts.len() != def.components.len() {
                    return err(format!(
                        "composite value '{piece}' for '{name}' needs {} '$'-separated components, got {}",
                        def.components.len(),
                        parts.len()
                    ));
                }
                let mut tests = Vec::new();
                for (part, component) in parts.iter().zip(def.components.iter()) {
                    if part.is_empty() {
                        return err(format!(
                            "composite value '{piece}' for '{name}' has an empty component"
                        ));
                    }
                    let mut test =
                        compile_test(def, component.ty, &component.name, None, &[part], prefixes)?;
                    test.shrink_to_fit();
                    tests.push(test);
                }
                values.push(tests);
            }
            Test::Composite(values)
        }
        ParamType::Special => {
            return err(format!(
                "search parameter type special ('{name}') is not supported"
            ))
        }
    })
}

/// Splits `s` on `sep` where it is not escaped by a backslash; escapes are kept.
fn split_escaped(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Removes the search escapes `\,` `\|` `\$` `\\`.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ (',' | '|' | '$' | '\\')) => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The comma-separated (ORed) values of a parameter, still escaped.
fn split_list<'a>(value: &'a str, name: &str) -> Result<Vec<&'a str>, CriteriaError> {
    let pieces = split_escaped(value, ',');
    if pieces.iter().any(|p| p.is_empty()) {
        return err(format!(
            "parameter '{name}' has an empty value in '{value}'"
        ));
    }
    Ok(pieces)
}

fn token_query(piece: &str, name: &str) -> Result<TokenQuery, CriteriaError> {
    let parts = split_escaped(piece, '|');
    Ok(match parts.as_slice() {
        [code] => TokenQuery::Code(unescape(code)),
        ["", ""] => {
            return err(format!(
                "token value '{piece}' for '{name}' has neither system nor code"
            ))
        }
        ["", code] => TokenQuery::NoSystemCode(unescape(code)),
        [system, ""] => TokenQuery::System(unescape(system)),
        [system, code] => TokenQuery::SystemCode(unescape(system), unescape(code)),
        _ => {
            return err(format!(
                "token value '{piece}' for '{name}' has more than one '|'"
            ))
        }
    })
}

fn reference_query(
    piece: &str,
    type_modifier: Option<&str>,
    def: &ParamDef,
    name: &str,
) -> Result<RefParts, CriteriaError> {
    let value = unescape(piece);
    let mut parts = split_reference(&value);
    if parts.id.is_none() && !parts.raw.contains(':') {
        return err(format!("invalid reference value '{value}' for '{name}'"));
    }
    if let Some(m) = type_modifier {
        match (&parts.typ, &parts.id) {
            (Some(t), _) if t != m => {
                return err(format!(
                    "reference value '{value}' contradicts modifier ':{m}' on '{name}'"
                ));
            }
            (_, None) => {
                return err(format!(
                    "reference value '{value}' cannot be combined with modifier ':{m}' on '{name}'"
                ))
            }
            _ => parts.typ = Some(m.to_owned()),
        }
    }
    if let Some(t) = &parts.typ {
        if !def.allows_target(t) {
            return err(format!(
                "'{t}' is not a target type of reference parameter '{name}'"
            ));
        }
    }
    Ok(parts)
}

/// Splits `[prefix]value` → (prefix, whether it was written, value). A prefix is two
/// lower-case letters at the start (values of these types never start so).
fn split_prefix(
    piece: &str,
    kind: &str,
    name: &str,
) -> Result<(Prefix, bool, String), CriteriaError> {
    let b = piece.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_lowercase() && b[1].is_ascii_lowercase() {
        let code = &piece[..2];
        return match Prefix::from_code(code) {
            Some(p) => Ok((p, true, piece[2..].to_owned())),
            None => err(format!(
                "unknown prefix '{code}' on {kind} parameter '{name}'"
            )),
        };
    }
    Ok((Prefix::Eq, false, piece.to_owned()))
}

fn search_number(text: &str, name: &str) -> Result<SearchNumber, CriteriaError> {
    parse_search_number(text).ok_or_else(|| {
        CriteriaError::new(format!(
            "invalid number '{text}' for parameter '{name}' (a decimal such as 5.4 or -2; exponents are not supported)"
        ))
    })
}

/// `type-system|type-code|value` for `:of-type`.
fn of_type_query(piece: &str, name: &str) -> Result<(String, String, String), CriteriaError> {
    match split_escaped(piece, '|').as_slice() {
        [system, code, value] if !system.is_empty() && !code.is_empty() && !value.is_empty() => {
            Ok((unescape(system), unescape(code), unescape(value)))
        }
        _ => err(format!(
            "':of-type' value '{piece}' for '{name}' must be 'type-system|type-code|value'"
        )),
    }
}
