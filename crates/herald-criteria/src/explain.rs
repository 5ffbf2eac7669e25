//! Why a resource does or does not match a criteria string: an [`Explanation`] with the
//! verdict and, per clause, what the resource held and whether the clause passed. This
//! is what `herald criteria` and `POST [base]/Subscription/$explain` show a subscriber
//! whose subscription does not fire.
//!
//! Verdicts are never recomputed here: the overall verdict comes from the functions the
//! matcher calls ([`SearchQuery::matches`], [`TopicDefinition::triggers`],
//! [`SubscriptionFilters::matches`](crate::SubscriptionFilters::matches), the CEL and
//! FHIRPath evaluations of a trigger), and each clause's verdict from the clause's own
//! `matches`. Only the values a clause saw are extracted a second time, by the clause's
//! own plan, so matching itself pays nothing for explanations.

use std::borrow::Cow;

use herald_fhirpath::Expression;
use serde_json::{json, Value};

use crate::cel::CelFilter;
use crate::error::{err, CriteriaError};
use crate::filter::filter_segments;
use crate::search::{parse_param, query_segments, split_criteria, SearchQuery};
use crate::topic::{
    cel_event, fhir_path_result_fires, with_fhir_path_result, Interaction, TopicDefinition, Trigger,
};

/// Most values listed per clause.
const MAX_VALUES: usize = 20;
/// Longest rendering of one value, in characters.
const MAX_VALUE_CHARS: usize = 120;

/// The criteria languages an explanation accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// An R4 search URL (`Observation?code=…&subject=Patient/1`), as in
    /// `Subscription.criteria`.
    Search,
    /// A subscription filter (`Observation?patient=…`, `Observation.patient=…` or
    /// `patient=…`), as in `filterBy` / `backport-filter-criteria`.
    Filter,
    /// A FHIRPath boolean expression over `%current` / `%previous` (the focus and
    /// `%resource` being the current resource), as in `fhirPathCriteria`.
    FhirPath,
    /// A CEL expression over `current`, `previous` and `event` (see [`CelFilter`]).
    Cel,
}

impl Language {
    /// The codes, as accepted by [`Language::from_code`].
    pub const CODES: &'static [&'static str] = &["search", "filter", "fhirpath", "cel"];

    /// `search`, `filter`, `fhirpath` or `cel`.
    pub fn from_code(code: &str) -> Option<Language> {
        match code {
            "search" => Some(Language::Search),
            "filter" => Some(Language::Filter),
            "fhirpath" => Some(Language::FhirPath),
            "cel" => Some(Language::Cel),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Language::Search => "search",
            Language::Filter => "filter",
            Language::FhirPath => "fhirpath",
            Language::Cel => "cel",
        }
    }
}

/// What to explain.
#[derive(Debug, Clone, Copy)]
pub struct ExplainRequest<'a> {
    /// The criteria; may be `None` only with a topic (its triggers alone are explained).
    pub criteria: Option<&'a str>,
    pub language: Language,
    /// The resource after the change; on a delete, the deleted resource.
    pub resource: &'a Value,
    /// The resource before the change (not allowed on a delete).
    pub previous: Option<&'a Value>,
    /// Explain the criteria as filters of this topic, and the topic's triggers too.
    pub topic: Option<&'a TopicDefinition>,
    /// The interaction; by default `update` with a previous resource, else `create`.
    pub interaction: Option<Interaction>,
}

/// A verdict and how it was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub matched: bool,
    /// The interaction evaluated (given or derived).
    pub interaction: Interaction,
    pub clauses: Vec<ClauseExplanation>,
}

/// One clause of the criteria (or one part of a topic trigger) and its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClauseExplanation {
    /// The clause as written, e.g. `subject=Patient/1`, with a prefix saying where it
    /// comes from for topic triggers (`trigger[0] current: status=final`).
    pub clause: String,
    /// What the resource had at the parameter's paths (or the expression's result),
    /// rendered briefly and truncated.
    pub values_seen: Vec<String>,
    pub matched: bool,
    /// Why the clause decided as it did, where that is not obvious.
    pub note: Option<String>,
}

impl ClauseExplanation {
    fn new(clause: impl Into<String>, matched: bool) -> Self {
        Self {
            clause: clause.into(),
            values_seen: Vec::new(),
            matched,
            note: None,
        }
    }

    fn values(mut self, values: Vec<String>) -> Self {
        self.values_seen = values;
        self
    }

    fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

/// Explains whether `request.resource` matches `request.criteria`. An error is a
/// criteria string (or topic use) that the matcher would refuse too, or input that
/// cannot be evaluated (a resource without `resourceType`).
pub fn explain(request: &ExplainRequest<'_>) -> Result<Explanation, CriteriaError> {
    let interaction = request
        .interaction
        .unwrap_or(if request.previous.is_some() {
            Interaction::Update
        } else {
            Interaction::Create
        });
    let (current, previous) = match interaction {
        Interaction::Delete => {
            if request.previous.is_some() {
                return err(
                    "on delete, give only the deleted resource (as the resource), no previous one",
                );
            }
            (None, Some(request.resource))
        }
        _ => (Some(request.resource), request.previous),
    };
    let focus = request.resource;
    let Some(focus_type) = focus.get("resourceType").and_then(Value::as_str) else {
        return err("the resource has no resourceType");
    };
    let states = States {
        interaction,
        current,
        previous,
        focus,
        focus_type,
    };
    let mut clauses = Vec::new();
    let matched = match request.topic {
        None => {
            let Some(criteria) = request.criteria else {
                return err("criteria are required unless a topic is given");
            };
            states.criteria(criteria, request.language, &mut clauses)?
        }
        Some(topic) => {
            let triggered = states.triggers(topic, &mut clauses);
            let filtered = match request.criteria {
                None => true,
                Some(criteria) => {
                    states.topic_criteria(topic, criteria, request.language, &mut clauses)?
                }
            };
            triggered && filtered
        }
    };
    Ok(Explanation {
        matched,
        interaction,
        clauses,
    })
}

/// The resources of one explanation.
struct States<'a> {
    interaction: Interaction,
    current: Option<&'a Value>,
    previous: Option<&'a Value>,
    /// What filters and search criteria are evaluated on: the current resource, or the
    /// deleted one.
    focus: &'a Value,
    focus_type: &'a str,
}

impl States<'_> {
    /// Criteria without a topic; returns the verdict.
    fn criteria(
        &self,
        criteria: &str,
        language: Language,
        out: &mut Vec<ClauseExplanation>,
    ) -> Result<bool, CriteriaError> {
        match language {
            Language::Search => self.search(criteria, out),
            Language::Filter => self.filter(criteria, None, out),
            Language::FhirPath => self.fhir_path(criteria, out),
            Language::Cel => self.cel(criteria, out),
        }
    }

    /// Criteria as filters of `topic` (search URLs are filters there).
    fn topic_criteria(
        &self,
        topic: &TopicDefinition,
        criteria: &str,
        language: Language,
        out: &mut Vec<ClauseExplanation>,
    ) -> Result<bool, CriteriaError> {
        match language {
            Language::Search | Language::Filter => self.filter(criteria, Some(topic), out),
            Language::FhirPath => self.fhir_path(criteria, out),
            Language::Cel => self.cel(criteria, out),
        }
    }

    /// R4 `Subscription.criteria`: evaluated on the new version; deletes never match.
    fn search(
        &self,
        criteria: &str,
        out: &mut Vec<ClauseExplanation>,
    ) -> Result<bool, CriteriaError> {
        let query = SearchQuery::parse(criteria)?;
        let Some(current) = self.current else {
            out.push(
                ClauseExplanation::new("interaction", false)
                    .values(vec!["delete".into()])
                    .note(
                        "search criteria are evaluated on the new version; a delete never matches",
                    ),
            );
            return Ok(false);
        };
        out.push(type_clause(query.resource_type(), self.focus_type));
        let (_, query_string) = split_criteria(criteria)?;
        out.extend(query_clauses(
            "",
            query.resource_type(),
            query_string,
            current,
        )?);
        Ok(query.matches(current))
    }

    /// A subscription filter, checked against the topic's `canFilterBy` when there is one.
    fn filter(
        &self,
        criteria: &str,
        topic: Option<&TopicDefinition>,
        out: &mut Vec<ClauseExplanation>,
    ) -> Result<bool, CriteriaError> {
        let segments = filter_segments(criteria)?;
        // Validate the whole filter as a Subscription would be validated, and take the
        // verdict from the matcher's own function.
        let verdict = match topic {
            Some(topic) => Some(
                topic
                    .compile_filters(&[criteria.to_owned()])?
                    .matches(self.focus_type, self.focus),
            ),
            None => None,
        };
        let mut all_pass = true;
        for (typ, segment) in segments {
            let typ = typ.unwrap_or(self.focus_type);
            if let Some(topic) = topic {
                if !topic.resource_types().iter().any(|t| t == self.focus_type) {
                    all_pass = false;
                    out.push(
                        ClauseExplanation::new(segment, false)
                            .values(vec![self.focus_type.to_owned()])
                            .note(format!(
                                "topic {} does not trigger on {}",
                                topic.url(),
                                self.focus_type
                            )),
                    );
                    continue;
                }
            }
            let query = match topic {
                Some(topic) => topic.compile_segment(typ, segment)?,
                None => SearchQuery::parse_for_type(typ, segment)?,
            };
            if typ != self.focus_type {
                all_pass = false;
                out.push(
                    ClauseExplanation::new(format!("{typ}?{segment}"), false)
                        .values(vec![self.focus_type.to_owned()])
                        .note(format!(
                            "the filter is for {typ} resources; a {} fails it",
                            self.focus_type
                        )),
                );
                continue;
            }
            all_pass &= query.matches(self.focus);
            out.extend(query_clauses("", typ, segment, self.focus)?);
        }
        Ok(verdict.unwrap_or(all_pass))
    }

    fn fhir_path(
        &self,
        criteria: &str,
        out: &mut Vec<ClauseExplanation>,
    ) -> Result<bool, CriteriaError> {
        let expression = Expression::parse(criteria)
            .map_err(|e| CriteriaError::new(format!("FHIRPath criteria: {e}")))?;
        let clause = fhir_path_clause(
            expression.source().to_owned(),
            &expression,
            self.current,
            self.previous,
        );
        let matched = clause.matched;
        out.push(clause);
        Ok(matched)
    }

    fn cel(&self, criteria: &str, out: &mut Vec<ClauseExplanation>) -> Result<bool, CriteriaError> {
        let filter = CelFilter::compile(criteria)?;
        let clause = cel_clause(
            filter.source().to_owned(),
            &filter,
            self.current,
            self.previous,
            &cel_event(self.interaction, self.focus_type),
        );
        let matched = clause.matched;
        out.push(clause);
        Ok(matched)
    }

    /// The topic's triggers for the focus type; returns whether the topic fires.
    fn triggers(&self, topic: &TopicDefinition, out: &mut Vec<ClauseExplanation>) -> bool {
        let fires = topic.triggers(
            self.interaction,
            self.focus_type,
            self.current,
            self.previous,
        );
        let mut any = false;
        for (index, trigger) in topic.resource_triggers().iter().enumerate() {
            if trigger.resource_type == self.focus_type {
                any = true;
                self.trigger(index, trigger, out);
            }
        }
        if !any {
            out.push(
                ClauseExplanation::new(format!("topic {}", topic.url()), false)
                    .values(vec![self.focus_type.to_owned()])
                    .note(format!(
                        "the topic has no resourceTrigger for {} (it triggers on {})",
                        self.focus_type,
                        topic.resource_types().join(", ")
                    )),
            );
        }
        fires
    }

    fn trigger(&self, index: usize, trigger: &Trigger, out: &mut Vec<ClauseExplanation>) {
        let codes: Vec<&str> = trigger.interactions.iter().map(|i| i.code()).collect();
        let label = format!(
            "trigger[{index}] {} ({})",
            trigger.resource_type,
            codes.join("|")
        );
        let interaction = self.interaction;
        if !trigger.interactions.contains(&interaction) {
            out.push(
                ClauseExplanation::new(label, false)
                    .values(vec![interaction.code().to_owned()])
                    .note(format!(
                        "the trigger does not support {}",
                        interaction.code()
                    )),
            );
            return;
        }
        let fires = trigger.fires(interaction, self.current, self.previous);
        out.push(
            ClauseExplanation::new(label, fires)
                .values(vec![interaction.code().to_owned()])
                .note("the query criteria, fhirPathCriteria and CEL criteria given must all pass"),
        );
        let prefix = format!("trigger[{index}]");
        let (prev, cur) = trigger.query_tests(interaction, self.current, self.previous);
        if let (Some(q), Some(verdict)) = (&trigger.previous, prev) {
            let label = format!("{prefix} queryCriteria.previous: {}", q.source);
            match (interaction, self.previous) {
                (Interaction::Create, _) => {
                    out.push(ClauseExplanation::new(label, verdict).note(format!(
                        "on create there is no previous version: resultForCreate is {}",
                        pass_word(trigger.create_passes)
                    )))
                }
                (_, Some(previous)) => out.extend(
                    query_clauses(
                        &format!("{prefix} previous: "),
                        &trigger.resource_type,
                        &q.source,
                        previous,
                    )
                    .unwrap_or_else(|e| vec![unexplained(label, verdict, &e)]),
                ),
                (Interaction::Update, None) => {
                    out.push(ClauseExplanation::new(label, verdict).note(format!(
                        "the previous version is not known: resultForCreate ({}) stands in",
                        pass_word(trigger.create_passes)
                    )))
                }
                (Interaction::Delete, None) => out.push(
                    ClauseExplanation::new(label, verdict)
                        .note("the deleted version is not known: the test fails"),
                ),
            }
        }
        if let (Some(q), Some(verdict)) = (&trigger.current, cur) {
            let label = format!("{prefix} queryCriteria.current: {}", q.source);
            match (interaction, self.current) {
                (Interaction::Delete, _) => {
                    out.push(ClauseExplanation::new(label, verdict).note(format!(
                        "on delete there is no current version: resultForDelete is {}",
                        pass_word(trigger.delete_passes)
                    )))
                }
                (_, Some(current)) => out.extend(
                    query_clauses(
                        &format!("{prefix} current: "),
                        &trigger.resource_type,
                        &q.source,
                        current,
                    )
                    .unwrap_or_else(|e| vec![unexplained(label, verdict, &e)]),
                ),
                (_, None) => out.push(
                    ClauseExplanation::new(label, verdict).note("there is no current version"),
                ),
            }
        }
        if let (Some(p), Some(c)) = (prev, cur) {
            let (rule, word) = if trigger.require_both {
                ("requireBoth: previous and current must both pass", "AND")
            } else {
                ("either previous or current passing suffices", "OR")
            };
            out.push(
                ClauseExplanation::new(
                    format!("{prefix} queryCriteria: previous {word} current"),
                    trigger.combine(prev, cur),
                )
                .values(vec![format!("previous {}", p), format!("current {}", c)])
                .note(rule),
            );
        }
        if let Some(expression) = &trigger.fhir_path {
            out.push(fhir_path_clause(
                format!("{prefix} fhirPathCriteria: {}", expression.source()),
                expression,
                self.current,
                self.previous,
            ));
        }
        if let Some(cel) = &trigger.cel {
            out.push(cel_clause(
                format!("{prefix} CEL criteria: {}", cel.source()),
                cel,
                self.current,
                self.previous,
                &cel_event(interaction, &trigger.resource_type),
            ));
        }
    }
}

fn pass_word(passes: bool) -> &'static str {
    if passes {
        "test-passes"
    } else {
        "test-fails"
    }
}

/// A clause whose details could not be produced: the verdict, and why.
fn unexplained(label: String, verdict: bool, error: &CriteriaError) -> ClauseExplanation {
    ClauseExplanation::new(label, verdict).note(format!("no detail available: {}", error.message()))
}

fn type_clause(wanted: &str, actual: &str) -> ClauseExplanation {
    let clause = ClauseExplanation::new(format!("resourceType={wanted}"), wanted == actual)
        .values(vec![actual.to_owned()]);
    if wanted == actual {
        clause
    } else {
        clause.note(format!("the criteria search {wanted} resources"))
    }
}

/// One explanation per `name=value` segment of `query_string`, on `resource`; each
/// clause label is `label_prefix` followed by the segment as written.
fn query_clauses(
    label_prefix: &str,
    resource_type: &str,
    query_string: &str,
    resource: &Value,
) -> Result<Vec<ClauseExplanation>, CriteriaError> {
    query_segments(query_string)
        .map(|segment| {
            let clause = parse_param(resource_type, segment)?;
            let findings = clause.findings(resource);
            Ok(ClauseExplanation {
                clause: format!("{label_prefix}{segment}"),
                values_seen: findings
                    .values
                    .as_deref()
                    .map(render_values)
                    .unwrap_or_default(),
                matched: findings.matched,
                note: findings.note,
            })
        })
        .collect()
}

fn fhir_path_clause(
    label: String,
    expression: &Expression,
    current: Option<&Value>,
    previous: Option<&Value>,
) -> ClauseExplanation {
    let outcome = with_fhir_path_result(expression, current, previous, |result| {
        let matched = fhir_path_result_fires(result);
        match result {
            Ok(items) => {
                let values: Vec<Cow<'_, Value>> = items
                    .iter()
                    .map(|item| Cow::Owned(item.to_json()))
                    .collect();
                let note = match items {
                    [] => Some("the result is empty: only a single true matches".to_owned()),
                    [_] if !matched => Some("only a single true matches".to_owned()),
                    [_] => None,
                    _ => Some(format!(
                        "the result has {} items: only a single true matches",
                        items.len()
                    )),
                };
                (matched, render_values(&values), note)
            }
            Err(e) => (
                matched,
                Vec::new(),
                Some(format!("evaluation failed, so no match: {e}")),
            ),
        }
    });
    let (matched, values, note) = outcome.unwrap_or((
        false,
        Vec::new(),
        Some("there is no resource to evaluate on".to_owned()),
    ));
    ClauseExplanation {
        clause: label,
        values_seen: values,
        matched,
        note,
    }
}

fn cel_clause(
    label: String,
    filter: &CelFilter,
    current: Option<&Value>,
    previous: Option<&Value>,
    event: &Value,
) -> ClauseExplanation {
    let matched = filter.matches(current, previous, event);
    let clause = ClauseExplanation::new(label, matched);
    match filter.describe_result(current, previous, event) {
        Ok(result) if matched => clause.values(vec![result]),
        Ok(result) => clause
            .values(vec![result])
            .note("only the boolean true matches"),
        Err(e) => clause.note(format!("evaluation failed, so no match: {e}")),
    }
}

/// The values a clause saw, rendered briefly: at most [`MAX_VALUES`], each at most
/// [`MAX_VALUE_CHARS`] characters.
fn render_values(values: &[Cow<'_, Value>]) -> Vec<String> {
    let mut rendered: Vec<String> = values.iter().flat_map(|v| render_value(v)).collect();
    if rendered.len() > MAX_VALUES {
        let more = rendered.len() - MAX_VALUES;
        rendered.truncate(MAX_VALUES);
        rendered.push(format!("… and {more} more"));
    }
    rendered.into_iter().map(|v| truncate(&v)).collect()
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_VALUE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// One element in search terms, recognised by its JSON shape like the matcher does:
/// codings as `system|code`, references by their reference, quantities as
/// `value system|code`, periods as `start..end`; anything else as compact JSON.
fn render_value(node: &Value) -> Vec<String> {
    let text = |key: &str| node.get(key).and_then(Value::as_str);
    match node {
        Value::String(s) => vec![s.clone()],
        Value::Number(_) | Value::Bool(_) | Value::Null => vec![node.to_string()],
        Value::Array(items) => items.iter().flat_map(render_value).collect(),
        Value::Object(object) => {
            if let Some(codings) = object.get("coding").and_then(Value::as_array) {
                let mut out: Vec<String> = codings.iter().flat_map(render_value).collect();
                if let Some(t) = text("text") {
                    out.push(format!("text: {t}"));
                }
                return out;
            }
            if let Some(reference) = text("reference") {
                return vec![reference.to_owned()];
            }
            if let Some(value) = object.get("value").filter(|v| v.is_number()) {
                let unit = match (text("system"), text("code"), text("unit")) {
                    (Some(system), Some(code), _) => format!(" {system}|{code}"),
                    (_, Some(code), _) | (_, _, Some(code)) => format!(" {code}"),
                    _ => String::new(),
                };
                let comparator = text("comparator").unwrap_or_default();
                return vec![format!("{comparator}{value}{unit}")];
            }
            if let Some(code) = text("code") {
                return vec![match text("system") {
                    Some(system) => format!("{system}|{code}"),
                    None => code.to_owned(),
                }];
            }
            if let Some(value) = text("value") {
                return vec![match text("system") {
                    Some(system) => format!("{system}|{value}"),
                    None => value.to_owned(),
                }];
            }
            if let Some(identifier) = object.get("identifier") {
                return render_value(identifier)
                    .into_iter()
                    .map(|i| format!("identifier {i}"))
                    .collect();
            }
            if object.contains_key("start") || object.contains_key("end") {
                return vec![format!(
                    "{}..{}",
                    text("start").unwrap_or_default(),
                    text("end").unwrap_or_default()
                )];
            }
            if object.contains_key("family") || object.contains_key("given") {
                let strings = crate::values::string_values(node);
                return vec![strings.join(" ")];
            }
            vec![node.to_string()]
        }
    }
}

impl Explanation {
    /// The explanation as JSON (`matched`, `interaction`, `clauses` with `clause`,
    /// `values_seen`, `matched` and `note`).
    pub fn to_json(&self) -> Value {
        json!({
            "matched": self.matched,
            "interaction": self.interaction.code(),
            "clauses": self.clauses.iter().map(|c| {
                let mut clause = json!({
                    "clause": c.clause,
                    "values_seen": c.values_seen,
                    "matched": c.matched,
                });
                if let Some(note) = &c.note {
                    clause["note"] = json!(note);
                }
                clause
            }).collect::<Vec<_>>(),
        })
    }
}

impl std::fmt::Display for Explanation {
    /// `match` or `no match` on the first line, the interaction, then one block per
    /// clause.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", if self.matched { "match" } else { "no match" })?;
        writeln!(f, "interaction: {}", self.interaction.code())?;
        for clause in &self.clauses {
            let verdict = if clause.matched { "pass" } else { "FAIL" };
            writeln!(f, "  {verdict}  {}", clause.clause)?;
            if clause.values_seen.is_empty() {
                writeln!(f, "        seen: (nothing)")?;
            } else {
                writeln!(f, "        seen: {}", clause.values_seen.join(", "))?;
            }
            if let Some(note) = &clause.note {
                writeln!(f, "        note: {note}")?;
            }
        }
        Ok(())
    }
}
