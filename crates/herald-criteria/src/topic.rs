//! `SubscriptionTopic` (R4B/R5 JSON) compilation and resource-trigger semantics. The
//! topic's `canFilterBy` declarations are compiled here and enforced by
//! [`filter`](crate::filter) when a Subscription's filters are compiled.
//!
//! Trigger semantics follow the FHIR reference implementation (fhir-candle) as specified
//! on [`TopicDefinition::triggers`]. `fhirPathCriteria` is compiled with
//! `herald-fhirpath`; a CEL expression may be added to a trigger with the extension
//! [`CEL_CRITERIA_EXTENSION`]. Event triggers are rejected (fail closed).
//! `notificationShape` is parsed and validated by [`shape`](crate::shape) and exposed
//! per focus type ([`TopicDefinition::notification_shape`]).

use serde_json::Value;

use herald_fhirpath::Expression;

use crate::cel::CelFilter;
use crate::error::{err, CriteriaError};
use crate::registry;
use crate::search::SearchQuery;
use crate::shape::{NotificationShape, NotificationShapes};

/// A resource interaction a topic can trigger on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interaction {
    Create,
    Update,
    Delete,
}

impl Interaction {
    /// `create`, `update` or `delete`.
    pub fn from_code(code: &str) -> Option<Interaction> {
        match code {
            "create" => Some(Interaction::Create),
            "update" => Some(Interaction::Update),
            "delete" => Some(Interaction::Delete),
            _ => None,
        }
    }

    /// The interaction's code, as in `supportedInteraction`.
    pub fn code(self) -> &'static str {
        match self {
            Interaction::Create => "create",
            Interaction::Update => "update",
            Interaction::Delete => "delete",
        }
    }
}

/// Extension on `SubscriptionTopic.resourceTrigger` carrying a CEL expression
/// (`valueString`) that must also be true for the trigger to fire. The expression sees
/// `current`, `previous` (the resource after / before the change, `null` when absent)
/// and `event` (`{"interaction": "create"|"update"|"delete", "resourceType": ...}`).
pub const CEL_CRITERIA_EXTENSION: &str =
    "https://herald.health/fhir/StructureDefinition/cel-criteria";

const CORE_SD_PREFIX: &str = "http://hl7.org/fhir/StructureDefinition/";
const COMPARATORS: &[&str] = &["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"];

/// A compiled `SubscriptionTopic`.
#[derive(Debug, Clone)]
pub struct TopicDefinition {
    pub(crate) url: String,
    triggers: Vec<Trigger>,
    pub(crate) can_filter_by: Vec<FilterDecl>,
    shapes: NotificationShapes,
}

#[derive(Debug, Clone)]
pub(crate) struct Trigger {
    pub(crate) resource_type: String,
    pub(crate) interactions: Vec<Interaction>,
    pub(crate) previous: Option<TriggerQuery>,
    pub(crate) current: Option<TriggerQuery>,
    /// `resultForCreate == test-passes`.
    pub(crate) create_passes: bool,
    /// `resultForDelete == test-passes`.
    pub(crate) delete_passes: bool,
    pub(crate) require_both: bool,
    /// `fhirPathCriteria`, evaluated with `%current` and `%previous`.
    pub(crate) fhir_path: Option<Expression>,
    /// The [`CEL_CRITERIA_EXTENSION`] expression.
    pub(crate) cel: Option<CelFilter>,
}

/// A trigger's `queryCriteria.previous` or `.current`: compiled, and as written (without
/// a leading `Type?`) so an explanation can show each of its clauses.
#[derive(Debug, Clone)]
pub(crate) struct TriggerQuery {
    pub(crate) query: SearchQuery,
    pub(crate) source: String,
}

#[derive(Debug, Clone)]
pub(crate) struct FilterDecl {
    pub(crate) resource: Option<String>,
    pub(crate) param: String,
    pub(crate) comparators: Vec<String>,
    pub(crate) modifiers: Vec<String>,
}

/// Normalizes a trigger/canFilterBy resource: `Observation` or the core
/// StructureDefinition URL for it.
fn resource_name(value: &str, context: &str) -> Result<String, CriteriaError> {
    let name = value.strip_prefix(CORE_SD_PREFIX).unwrap_or(value);
    if registry::is_type_name(name) {
        Ok(name.to_owned())
    } else {
        err(format!(
            "{context} '{value}' is not a core resource type (profiles and logical models are not supported yet)"
        ))
    }
}

pub(crate) fn string_list<'a>(
    value: Option<&'a Value>,
    context: &str,
) -> Result<Vec<&'a str>, CriteriaError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| CriteriaError::new(format!("{context} must contain strings")))
            })
            .collect(),
        Some(Value::String(s)) => Ok(vec![s.as_str()]),
        Some(_) => err(format!("{context} must be a list of codes")),
    }
}

fn non_empty_str<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

fn has_content(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

fn result_flag(criteria: &Value, key: &str, context: &str) -> Result<bool, CriteriaError> {
    match criteria.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::String(s)) if s == "test-passes" => Ok(true),
        Some(Value::String(s)) if s == "test-fails" => Ok(false),
        Some(other) => err(format!(
            "{context}.{key} must be 'test-passes' or 'test-fails', got {other}"
        )),
    }
}

/// The CEL expression of a trigger's [`CEL_CRITERIA_EXTENSION`], if any.
fn parse_cel_extension(trigger: &Value, ctx: &str) -> Result<Option<CelFilter>, CriteriaError> {
    let extensions = match trigger.get("extension") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(_) => return err(format!("{ctx}.extension must be a list")),
    };
    let mut found = None;
    for extension in extensions {
        if extension.get("url").and_then(Value::as_str) != Some(CEL_CRITERIA_EXTENSION) {
            continue;
        }
        if found.is_some() {
            return err(format!(
                "{ctx}: only one {CEL_CRITERIA_EXTENSION} extension is allowed"
            ));
        }
        let Some(source) = extension.get("valueString").and_then(Value::as_str) else {
            return err(format!(
                "{ctx}: the {CEL_CRITERIA_EXTENSION} extension needs a valueString"
            ));
        };
        found = Some(
            CelFilter::compile(source)
                .map_err(|e| CriteriaError::new(format!("{ctx} CEL criteria: {}", e.message())))?,
        );
    }
    Ok(found)
}

fn parse_trigger(index: usize, trigger: &Value) -> Result<Trigger, CriteriaError> {
    let ctx = format!("resourceTrigger[{index}]");
    let Some(resource) = non_empty_str(trigger, "resource") else {
        return err(format!("{ctx}.resource is required"));
    };
    let resource_type = resource_name(resource, &format!("{ctx}.resource"))?;
    let fhir_path = match trigger.get("fhirPathCriteria") {
        None | Some(Value::Null) => None,
        Some(Value::String(source)) if source.trim().is_empty() => None,
        Some(Value::String(source)) => Some(
            Expression::parse(source)
                .map_err(|e| CriteriaError::new(format!("{ctx}.fhirPathCriteria: {e}")))?,
        ),
        Some(_) => return err(format!("{ctx}.fhirPathCriteria must be a string")),
    };
    let cel = parse_cel_extension(trigger, &ctx)?;
    let codes = string_list(
        trigger.get("supportedInteraction"),
        &format!("{ctx}.supportedInteraction"),
    )?;
    let mut interactions = Vec::new();
    for code in codes {
        match Interaction::from_code(code) {
            Some(i) if !interactions.contains(&i) => interactions.push(i),
            Some(_) => {}
            None => {
                return err(format!(
                    "{ctx}.supportedInteraction '{code}' is not create, update or delete"
                ))
            }
        }
    }
    if interactions.is_empty() {
        interactions = vec![
            Interaction::Create,
            Interaction::Update,
            Interaction::Delete,
        ];
    }
    let mut compiled = Trigger {
        resource_type,
        interactions,
        previous: None,
        current: None,
        create_passes: false,
        delete_passes: false,
        require_both: false,
        fhir_path,
        cel,
    };
    if let Some(criteria) = trigger.get("queryCriteria").filter(|c| !c.is_null()) {
        let cctx = format!("{ctx}.queryCriteria");
        if !criteria.is_object() {
            return err(format!("{cctx} must be an object"));
        }
        let rt = compiled.resource_type.clone();
        let compile = |key: &str| -> Result<Option<TriggerQuery>, CriteriaError> {
            let Some(query) = non_empty_str(criteria, key) else {
                if criteria
                    .get(key)
                    .is_some_and(|v| !v.is_null() && !v.is_string())
                {
                    return err(format!("{cctx}.{key} must be a string"));
                }
                return Ok(None);
            };
            let query = query.trim();
            let query = query.strip_prefix(&format!("{rt}?")).unwrap_or(query);
            SearchQuery::parse_for_type(&rt, query)
                .map(|compiled| {
                    Some(TriggerQuery {
                        query: compiled,
                        source: query.to_owned(),
                    })
                })
                .map_err(|e| CriteriaError::new(format!("{cctx}.{key}: {}", e.message())))
        };
        compiled.previous = compile("previous")?;
        compiled.current = compile("current")?;
        compiled.create_passes = result_flag(criteria, "resultForCreate", &cctx)?;
        compiled.delete_passes = result_flag(criteria, "resultForDelete", &cctx)?;
        compiled.require_both = match criteria.get("requireBoth") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return err(format!("{cctx}.requireBoth must be a boolean")),
        };
    }
    Ok(compiled)
}

impl TopicDefinition {
    /// The `_has` links of the triggers' query criteria: (focus type, source type,
    /// reference parameter).
    pub fn has_links(&self) -> Vec<(String, String, String)> {
        self.triggers
            .iter()
            .flat_map(|t| [&t.previous, &t.current].into_iter().flatten())
            .flat_map(|q| {
                let focus = q.query.resource_type().to_owned();
                q.query
                    .has_links()
                    .into_iter()
                    .map(move |(s, p)| (focus.clone(), s, p))
            })
            .collect()
    }

    /// Whether a trigger's query criteria use a chained parameter.
    pub fn uses_chains(&self) -> bool {
        self.triggers.iter().any(|t| {
            [&t.previous, &t.current]
                .into_iter()
                .flatten()
                .any(|q| q.query.uses_chains())
        })
    }
}

impl TopicDefinition {
    /// Compiles an R4B/R5 `SubscriptionTopic` resource. See the crate docs for what is
    /// accepted; anything unsupported (event triggers, FHIRPath criteria using
    /// terminology functions or failing to parse, invalid CEL criteria, unknown search
    /// parameters in query criteria or canFilterBy, notificationShape directives that
    /// cannot be resolved) is an error.
    pub fn from_resource(topic: &Value) -> Result<TopicDefinition, CriteriaError> {
        match topic.get("resourceType").and_then(Value::as_str) {
            Some("SubscriptionTopic") => {}
            Some(other) => {
                return err(format!(
                    "expected a SubscriptionTopic resource, got '{other}'"
                ))
            }
            None => return err("expected a SubscriptionTopic resource, got no resourceType"),
        }
        let Some(url) = non_empty_str(topic, "url") else {
            return err("SubscriptionTopic.url is required");
        };
        if has_content(topic.get("eventTrigger")) {
            return err("SubscriptionTopic.eventTrigger is not supported yet");
        }
        let triggers = match topic.get("resourceTrigger") {
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .enumerate()
                .map(|(i, t)| parse_trigger(i, t))
                .collect::<Result<Vec<_>, _>>()?,
            _ => return err("SubscriptionTopic needs at least one resourceTrigger"),
        };
        let mut definition = TopicDefinition {
            url: url.to_owned(),
            triggers,
            can_filter_by: Vec::new(),
            shapes: NotificationShapes::default(),
        };
        definition.shapes = NotificationShapes::parse(topic, &definition.resource_types())?;
        let decls = match topic.get("canFilterBy") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.iter().collect(),
            Some(_) => return err("SubscriptionTopic.canFilterBy must be a list"),
        };
        for (i, decl) in decls.into_iter().enumerate() {
            let parsed = definition.parse_decl(i, decl)?;
            definition.can_filter_by.push(parsed);
        }
        Ok(definition)
    }

    fn parse_decl(&self, index: usize, decl: &Value) -> Result<FilterDecl, CriteriaError> {
        let ctx = format!("canFilterBy[{index}]");
        let resource = match non_empty_str(decl, "resource") {
            Some(r) => Some(resource_name(r, &format!("{ctx}.resource"))?),
            None => None,
        };
        let Some(param) = non_empty_str(decl, "filterParameter") else {
            return err(format!("{ctx}.filterParameter is required"));
        };
        if let Some(definition) = non_empty_str(decl, "filterDefinition") {
            if !definition.starts_with("http://hl7.org/fhir/SearchParameter/") {
                return err(format!(
                    "{ctx}.filterDefinition '{definition}' is not supported yet (only core SearchParameters)"
                ));
            }
        }
        let types = match &resource {
            Some(r) => vec![r.clone()],
            None => self.resource_types(),
        };
        for rt in &types {
            if !registry::is_known_resource(rt) {
                return err(format!("{ctx}: unknown resource type '{rt}'"));
            }
            if registry::lookup(rt, param).is_none() {
                return err(format!(
                    "{ctx}.filterParameter '{param}' is not a known search parameter for {rt}"
                ));
            }
        }
        let mut comparators = Vec::new();
        let mut modifiers = Vec::new();
        let listed = string_list(decl.get("comparator"), &format!("{ctx}.comparator"))?
            .into_iter()
            .chain(string_list(
                decl.get("modifier"),
                &format!("{ctx}.modifier"),
            )?);
        for code in listed {
            // R4B lists comparators (and "=") in `modifier`.
            let code = if code == "=" { "eq" } else { code };
            if COMPARATORS.contains(&code) {
                comparators.push(code.to_owned());
            } else {
                modifiers.push(code.to_owned());
            }
        }
        Ok(FilterDecl {
            resource,
            param: param.to_owned(),
            comparators,
            modifiers,
        })
    }

    /// The topic's canonical URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `notificationShape` for focus resources of `resource_type`, if declared.
    pub fn notification_shape(&self, resource_type: &str) -> Option<&NotificationShape> {
        self.shapes.for_resource(resource_type)
    }

    /// All of the topic's notification shapes.
    pub fn notification_shapes(&self) -> &NotificationShapes {
        &self.shapes
    }

    /// The distinct resource types of the topic's resource triggers, in order.
    pub fn resource_types(&self) -> Vec<String> {
        let mut types: Vec<String> = Vec::new();
        for t in &self.triggers {
            if !types.contains(&t.resource_type) {
                types.push(t.resource_type.clone());
            }
        }
        types
    }

    /// Whether an interaction on a resource of `resource_type` fires the topic. For each
    /// trigger of that type supporting the interaction (any one firing suffices):
    /// - no query criteria (neither `previous` nor `current`): fires;
    /// - previous test (only if `previous` is given): on create it is
    ///   `resultForCreate == test-passes`; otherwise `previous` evaluated on the previous
    ///   resource (on update without a known previous resource, `resultForCreate`;
    ///   on delete without one, fails);
    /// - current test (only if `current` is given): on delete it is
    ///   `resultForDelete == test-passes`; otherwise `current` evaluated on the current
    ///   resource (fails if there is none);
    /// - both given: `requireBoth ? prev && cur : prev || cur`; one given: its result;
    /// - `fhirPathCriteria` (if given) must also evaluate to `true`, with `%current` and
    ///   `%previous` bound to the resources (the empty collection when absent) and the
    ///   focus / `%resource` being the current resource (the previous one on delete).
    ///   With `queryCriteria` as well, both must pass (fhir-candle evaluates each
    ///   criteria form it finds and requires all of them). An evaluation error, an
    ///   empty, `false` or non-boolean result is "no match";
    /// - the [`CEL_CRITERIA_EXTENSION`] expression (if given) must also be `true`.
    pub fn triggers(
        &self,
        interaction: Interaction,
        resource_type: &str,
        current: Option<&Value>,
        previous: Option<&Value>,
    ) -> bool {
        self.triggers
            .iter()
            .filter(|t| t.resource_type == resource_type && t.interactions.contains(&interaction))
            .any(|t| t.fires(interaction, current, previous))
    }

    /// The resource triggers, in order, for [`explain`](crate::explain).
    pub(crate) fn resource_triggers(&self) -> &[Trigger] {
        &self.triggers
    }
}

/// The `event` a trigger's CEL criteria see (see [`CEL_CRITERIA_EXTENSION`]).
pub(crate) fn cel_event(interaction: Interaction, resource_type: &str) -> Value {
    serde_json::json!({
        "interaction": interaction.code(),
        "resourceType": resource_type,
    })
}

/// Evaluates trigger FHIRPath criteria the way a trigger does: the focus and
/// `%resource` are `current` (or `previous` when there is none), `%current` and
/// `%previous` are bound (the empty collection when absent). `None` when there is no
/// resource at all; otherwise `inspect` sees the result.
pub(crate) fn with_fhir_path_result<R>(
    expression: &Expression,
    current: Option<&Value>,
    previous: Option<&Value>,
    inspect: impl FnOnce(Result<&[herald_fhirpath::Item<'_>], &herald_fhirpath::FhirPathError>) -> R,
) -> Option<R> {
    let root = current.or(previous)?;
    let empty = Value::Null;
    let variables = [
        ("current", current.unwrap_or(&empty)),
        ("previous", previous.unwrap_or(&empty)),
    ];
    let result = expression.evaluate_with_variables(root, &variables);
    Some(inspect(result.as_deref()))
}

/// Whether a FHIRPath result fires: only a single `true` does; an error, empty,
/// `false` or a non-boolean result is no match (fail closed).
pub(crate) fn fhir_path_result_fires(
    result: Result<&[herald_fhirpath::Item<'_>], &herald_fhirpath::FhirPathError>,
) -> bool {
    matches!(result, Ok([item]) if item.to_json() == Value::Bool(true))
}

impl Trigger {
    pub(crate) fn fires(
        &self,
        interaction: Interaction,
        current: Option<&Value>,
        previous: Option<&Value>,
    ) -> bool {
        self.query_fires(interaction, current, previous)
            && self.fhir_path_fires(current, previous)
            && self.cel.as_ref().is_none_or(|cel| {
                cel.matches(
                    current,
                    previous,
                    &cel_event(interaction, &self.resource_type),
                )
            })
    }

    pub(crate) fn fhir_path_fires(
        &self,
        current: Option<&Value>,
        previous: Option<&Value>,
    ) -> bool {
        let Some(expression) = &self.fhir_path else {
            return true;
        };
        with_fhir_path_result(expression, current, previous, fhir_path_result_fires)
            .unwrap_or(false)
    }

    pub(crate) fn query_fires(
        &self,
        interaction: Interaction,
        current: Option<&Value>,
        previous: Option<&Value>,
    ) -> bool {
        if self.previous.is_none() && self.current.is_none() {
            return true;
        }
        let (prev, cur) = self.query_tests(interaction, current, previous);
        self.combine(prev, cur)
    }

    /// The previous and current tests (`None`: that criterion is not given).
    pub(crate) fn query_tests(
        &self,
        interaction: Interaction,
        current: Option<&Value>,
        previous: Option<&Value>,
    ) -> (Option<bool>, Option<bool>) {
        let prev = self
            .previous
            .as_ref()
            .map(|q| match (interaction, previous) {
                (Interaction::Create, _) => self.create_passes,
                (_, Some(p)) => q.query.matches(p),
                (Interaction::Update, None) => self.create_passes,
                (Interaction::Delete, None) => false,
            });
        let cur = self.current.as_ref().map(|q| match (interaction, current) {
            (Interaction::Delete, _) => self.delete_passes,
            (_, Some(c)) => q.query.matches(c),
            (_, None) => false,
        });
        (prev, cur)
    }

    /// The query criteria's result from the two tests.
    pub(crate) fn combine(&self, prev: Option<bool>, cur: Option<bool>) -> bool {
        match (prev, cur) {
            (Some(p), Some(c)) if self.require_both => p && c,
            (Some(p), Some(c)) => p || c,
            (Some(p), None) => p,
            (None, Some(c)) => c,
            (None, None) => true,
        }
    }
}
