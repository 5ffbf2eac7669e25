//! `SubscriptionTopic.notificationShape`: which resources a notification carries besides
//! its focus, as `_include` / `_revinclude` directives, and the reference evaluation that
//! resolving them needs ([`reference_values`]).
//!
//! Each directive is `SourceType:parameter[:TargetType]`, where `parameter` must be a
//! reference search parameter of `SourceType` that can be evaluated, and `TargetType`
//! (optional) one of its allowed targets. An `include` starts at the focus
//! (`SourceType` is the shape's resource); a `revInclude` names resources that point at
//! the focus (the parameter must be able to reference the shape's resource). Anything
//! else is rejected when the topic is compiled, naming the directive: `:iterate` /
//! `&iterate=` (chained includes), wildcards (`*`), unknown types or parameters,
//! non-reference parameters and impossible targets. This crate only parses and
//! evaluates; finding the resources is the caller's (it holds the storage).

use serde_json::Value;

use crate::error::{err, CriteriaError};
use crate::plan::Plan;
use crate::registry::{self, ParamDef, ParamType};
use crate::values::element_reference;

/// One `include` or `revInclude` directive of a notification shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeDirective {
    /// The resource type the search parameter belongs to.
    pub source_type: String,
    /// The reference search parameter.
    pub param: String,
    /// Restricts the referenced type (`Observation:performer:Practitioner`).
    pub target_type: Option<String>,
}

impl ShapeDirective {
    /// The directive as written in the topic (`Observation:performer:Practitioner`).
    pub fn text(&self) -> String {
        match &self.target_type {
            Some(target) => format!("{}:{}:{target}", self.source_type, self.param),
            None => format!("{}:{}", self.source_type, self.param),
        }
    }

    /// The references the directive follows from `resource` (of `source_type`): those
    /// [`reference_values`] yields, narrowed to `target_type` when one is given.
    pub fn references(&self, resource: &Value) -> Vec<String> {
        let mut found = reference_values(&self.source_type, &self.param, resource);
        if let Some(target) = &self.target_type {
            found.retain(|r| r.split_once('/').is_some_and(|(ty, _)| ty == target));
        }
        found
    }
}

/// The `notificationShape` for one focus resource type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationShape {
    /// The focus resource type the shape applies to.
    pub resource_type: String,
    /// Resources the focus references.
    pub includes: Vec<ShapeDirective>,
    /// Resources referencing the focus.
    pub rev_includes: Vec<ShapeDirective>,
}

impl NotificationShape {
    /// Whether resolving the shape can add anything.
    pub fn is_empty(&self) -> bool {
        self.includes.is_empty() && self.rev_includes.is_empty()
    }
}

/// A topic's notification shapes, one per focus resource type (shapes naming the same
/// type are merged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationShapes {
    shapes: Vec<NotificationShape>,
}

impl NotificationShapes {
    /// Parses and validates `SubscriptionTopic.notificationShape` of `topic`. Each
    /// shape's resource must be one of `trigger_types` (the types the topic's triggers
    /// fire on: only those are ever a notification's focus).
    pub fn parse(topic: &Value, trigger_types: &[String]) -> Result<Self, CriteriaError> {
        let items = match topic.get("notificationShape") {
            None | Some(Value::Null) => return Ok(Self::default()),
            Some(Value::Array(items)) => items,
            Some(_) => return err("SubscriptionTopic.notificationShape must be a list"),
        };
        let mut shapes: Vec<NotificationShape> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let parsed = parse_shape(index, item, trigger_types)?;
            match shapes
                .iter_mut()
                .find(|s| s.resource_type == parsed.resource_type)
            {
                Some(existing) => {
                    for d in parsed.includes {
                        if !existing.includes.contains(&d) {
                            existing.includes.push(d);
                        }
                    }
                    for d in parsed.rev_includes {
                        if !existing.rev_includes.contains(&d) {
                            existing.rev_includes.push(d);
                        }
                    }
                }
                None => shapes.push(parsed),
            }
        }
        Ok(Self { shapes })
    }

    /// Reads just the shapes of a `SubscriptionTopic` resource, without compiling its
    /// triggers (cheap; for delivery, where the topic was validated when it was stored).
    pub fn from_topic(topic: &Value) -> Result<Self, CriteriaError> {
        let trigger_types: Vec<String> = match topic.get("resourceTrigger") {
            Some(Value::Array(triggers)) => triggers
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let resource = t.get("resource").and_then(Value::as_str).unwrap_or("");
                    resource_name(resource, &format!("resourceTrigger[{i}].resource"))
                })
                .collect::<Result<_, _>>()?,
            _ => Vec::new(),
        };
        Self::parse(topic, &trigger_types)
    }

    /// The shape for focus resources of `resource_type`, if the topic declares one.
    pub fn for_resource(&self, resource_type: &str) -> Option<&NotificationShape> {
        self.shapes
            .iter()
            .find(|s| s.resource_type == resource_type)
    }

    /// Every shape, in declaration order.
    pub fn all(&self) -> &[NotificationShape] {
        &self.shapes
    }

    /// Whether no shape has any include or revInclude.
    pub fn is_empty(&self) -> bool {
        self.shapes.iter().all(NotificationShape::is_empty)
    }
}

const CORE_SD_PREFIX: &str = "http://hl7.org/fhir/StructureDefinition/";

fn resource_name(value: &str, context: &str) -> Result<String, CriteriaError> {
    let name = value.strip_prefix(CORE_SD_PREFIX).unwrap_or(value);
    if registry::is_known_resource(name) {
        Ok(name.to_owned())
    } else {
        err(format!(
            "{context} '{value}' is not a core resource type (profiles and logical models are not supported yet)"
        ))
    }
}

fn parse_shape(
    index: usize,
    shape: &Value,
    trigger_types: &[String],
) -> Result<NotificationShape, CriteriaError> {
    let ctx = format!("notificationShape[{index}]");
    if !shape.is_object() {
        return err(format!("{ctx} must be an object"));
    }
    let Some(resource) = shape
        .get("resource")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
    else {
        return err(format!("{ctx}.resource is required"));
    };
    let resource_type = resource_name(resource, &format!("{ctx}.resource"))?;
    if !trigger_types.contains(&resource_type) {
        return err(format!(
            "{ctx}.resource '{resource_type}' is not a resource type of the topic's resourceTrigger (it is never a notification's focus)"
        ));
    }
    let mut includes = Vec::new();
    for text in directive_list(shape.get("include"), &format!("{ctx}.include"))? {
        let ictx = format!("{ctx}.include '{text}'");
        let directive = parse_directive(text, &ictx)?;
        if directive.source_type != resource_type {
            return err(format!(
                "{ctx}.include '{text}' must start at the shape's resource {resource_type} (chained includes are not supported)"
            ));
        }
        if !includes.contains(&directive) {
            includes.push(directive);
        }
    }
    let mut rev_includes = Vec::new();
    for text in directive_list(shape.get("revInclude"), &format!("{ctx}.revInclude"))? {
        let rctx = format!("{ctx}.revInclude '{text}'");
        let directive = parse_directive(text, &rctx)?;
        let def = reference_param(&directive.source_type, &directive.param, &rctx)?;
        let points_at_focus = match &directive.target_type {
            Some(target) => *target == resource_type,
            None => def.allows_target(&resource_type),
        };
        if !points_at_focus {
            return err(format!(
                "{rctx}: {}.{} cannot reference the shape's resource {resource_type}",
                directive.source_type, directive.param
            ));
        }
        if !rev_includes.contains(&directive) {
            rev_includes.push(directive);
        }
    }
    Ok(NotificationShape {
        resource_type,
        includes,
        rev_includes,
    })
}

/// A directive list: strictly a JSON array of strings (unlike the topic's code lists, a
/// lone string is refused).
fn directive_list<'a>(value: Option<&'a Value>, ctx: &str) -> Result<Vec<&'a str>, CriteriaError> {
    match value {
        None | Some(Value::Null) | Some(Value::Array(_)) => crate::topic::string_list(value, ctx),
        Some(_) => err(format!("{ctx} must be a list of strings")),
    }
}

/// Parses `SourceType:param[:TargetType]` (see the module docs).
fn parse_directive(text: &str, ctx: &str) -> Result<ShapeDirective, CriteriaError> {
    let trimmed = text.trim();
    if trimmed.contains("iterate") || trimmed.contains("recurse") {
        return err(format!(
            "{ctx}: iterated includes (:iterate, &iterate=) are not supported"
        ));
    }
    if trimmed.contains('*') {
        return err(format!("{ctx}: wildcard includes (*) are not supported"));
    }
    if trimmed.contains(['&', '=', '?', ' ', '.']) {
        return err(format!(
            "{ctx}: expected SourceType:parameter[:TargetType], with no further options"
        ));
    }
    let parts: Vec<&str> = trimmed.split(':').collect();
    let (source, param, target) = match parts.as_slice() {
        [source, param] => (*source, *param, None),
        [source, param, target] => (*source, *param, Some(*target)),
        _ => return err(format!("{ctx}: expected SourceType:parameter[:TargetType]")),
    };
    if !registry::is_known_resource(source) {
        return err(format!("{ctx}: unknown resource type '{source}'"));
    }
    let def = reference_param(source, param, ctx)?;
    if let Some(target) = target {
        if !registry::is_known_resource(target) {
            return err(format!("{ctx}: unknown target resource type '{target}'"));
        }
        if !def.allows_target(target) {
            return err(format!(
                "{ctx}: {source}.{param} cannot reference a {target}"
            ));
        }
    }
    Ok(ShapeDirective {
        source_type: source.to_owned(),
        param: param.to_owned(),
        target_type: target.map(str::to_owned),
    })
}

/// The evaluable reference parameter `param` of `resource_type`.
fn reference_param(
    resource_type: &str,
    param: &str,
    ctx: &str,
) -> Result<&'static ParamDef, CriteriaError> {
    let Some(def) = registry::lookup(resource_type, param) else {
        return err(format!(
            "{ctx}: '{param}' is not a known search parameter for {resource_type}"
        ));
    };
    if def.ty != ParamType::Reference {
        return err(format!(
            "{ctx}: '{param}' of {resource_type} is a {} parameter, not a reference",
            def.ty.code()
        ));
    }
    if let Plan::Unsupported(reason) = &def.plan {
        return err(format!(
            "{ctx}: '{param}' of {resource_type} is not supported: {reason}"
        ));
    }
    Ok(def)
}

/// The references `resource` (a `resource_type`) carries through the reference search
/// parameter `param`, as `Type/id`, each once, in the order found. Evaluation is the
/// search evaluation's (the parameter's element paths or FHIRPath): an absolute URL is
/// reduced to its `Type/id` and a `/_history/n` suffix dropped, as when searching;
/// references of a type the parameter does not allow on that path, and those with no
/// type and id (`#contained`, `urn:uuid:`, identifier only) are skipped. An unknown or
/// non-reference parameter yields nothing.
pub fn reference_values(resource_type: &str, param: &str, resource: &Value) -> Vec<String> {
    let Some(def) = registry::lookup(resource_type, param) else {
        return Vec::new();
    };
    if def.ty != ParamType::Reference {
        return Vec::new();
    }
    let mut found: Vec<String> = Vec::new();
    def.plan.any_value(resource, &mut |node, targets| {
        if let Some(reference) = element_reference(node) {
            if let (Some(ty), Some(id)) = (reference.typ, reference.id) {
                let allowed = targets.is_empty() || targets.iter().any(|t| &**t == ty);
                let text = format!("{ty}/{id}");
                if allowed && !found.contains(&text) {
                    found.push(text);
                }
            }
        }
        false
    });
    found
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn shapes(shape: Value) -> Result<NotificationShapes, String> {
        let topic = json!({
            "resourceType": "SubscriptionTopic",
            "resourceTrigger": [{"resource": "Encounter"}, {"resource": "Observation"}],
            "notificationShape": shape,
        });
        NotificationShapes::from_topic(&topic).map_err(|e| e.message().to_owned())
    }

    #[test]
    fn parses_includes_and_rev_includes_per_focus_type() {
        let parsed = shapes(json!([
            {"resource": "Observation", "include": ["Observation:subject:Patient", "Observation:encounter", "Observation:performer:Practitioner"]},
            {"resource": "http://hl7.org/fhir/StructureDefinition/Encounter", "include": ["Encounter:subject"], "revInclude": ["Observation:encounter"]},
            {"resource": "Encounter", "include": ["Encounter:subject", "Encounter:participant"]},
        ]))
        .unwrap();
        let observation = parsed.for_resource("Observation").unwrap();
        assert_eq!(
            observation
                .includes
                .iter()
                .map(ShapeDirective::text)
                .collect::<Vec<_>>(),
            [
                "Observation:subject:Patient",
                "Observation:encounter",
                "Observation:performer:Practitioner"
            ]
        );
        let encounter = parsed.for_resource("Encounter").unwrap();
        assert_eq!(encounter.includes.len(), 2, "merged, without duplicates");
        assert_eq!(encounter.rev_includes[0].text(), "Observation:encounter");
        assert!(parsed.for_resource("Patient").is_none());
        assert!(shapes(json!([{"resource": "Observation"}]))
            .unwrap()
            .is_empty());
        assert!(shapes(Value::Null).unwrap().is_empty());
    }

    #[test]
    fn rejects_what_it_cannot_resolve_naming_it() {
        let cases = [
            (json!([{"resource": "Encounter", "include": ["Encounter:patient&iterate=Patient.link"]}]), "notificationShape[0].include 'Encounter:patient&iterate=Patient.link': iterated includes"),
            (json!([{"resource": "Encounter", "include": ["Encounter:subject:iterate"]}]), "iterated includes"),
            (json!([{"resource": "Encounter", "include": ["*"]}]), "include '*': wildcard includes (*) are not supported"),
            (json!([{"resource": "Encounter", "include": ["Encounter:*"]}]), "wildcard"),
            (json!([{"resource": "Encounter", "include": ["Encounter:status"]}]), "'status' of Encounter is a token parameter, not a reference"),
            (json!([{"resource": "Encounter", "include": ["Encounter:nope"]}]), "include 'Encounter:nope': 'nope' is not a known search parameter for Encounter"),
            (json!([{"resource": "Encounter", "include": ["Widget:subject"]}]), "unknown resource type 'Widget'"),
            (json!([{"resource": "Encounter", "include": ["Encounter:subject:Device"]}]), "Encounter.subject cannot reference a Device"),
            (json!([{"resource": "Encounter", "include": ["Encounter:subject:Widget"]}]), "unknown target resource type 'Widget'"),
            (json!([{"resource": "Encounter", "include": ["Observation:subject"]}]), "must start at the shape's resource Encounter"),
            (json!([{"resource": "Encounter", "include": ["Encounter"]}]), "expected SourceType:parameter[:TargetType]"),
            (json!([{"resource": "Encounter", "include": ["Encounter:subject:Patient:x"]}]), "expected SourceType:parameter[:TargetType]"),
            (json!([{"resource": "Encounter", "revInclude": ["Observation:performer"]}]), "revInclude 'Observation:performer': Observation.performer cannot reference the shape's resource Encounter"),
            (json!([{"resource": "Encounter", "revInclude": ["Observation:subject:Patient"]}]), "cannot reference the shape's resource Encounter"),
            (json!([{"resource": "Patient", "include": ["Patient:organization"]}]), "notificationShape[0].resource 'Patient' is not a resource type of the topic's resourceTrigger"),
            (json!([{"resource": "Widget"}]), "is not a core resource type"),
            (json!([{"include": ["Encounter:subject"]}]), "notificationShape[0].resource is required"),
            (json!([{"resource": "Encounter", "include": "Encounter:subject"}]), "include must be a list of strings"),
            (json!([{"resource": "Encounter", "include": [3]}]), "include must contain strings"),
            (json!({"resource": "Encounter"}), "notificationShape must be a list"),
        ];
        for (shape, expected) in cases {
            let got = shapes(shape.clone()).err().unwrap_or_default();
            assert!(
                got.contains(expected),
                "{shape}: got {got:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn reference_values_follow_the_parameter_paths() {
        let observation = json!({
            "resourceType": "Observation",
            "subject": {"reference": "Patient/p1"},
            "encounter": {"reference": "https://ehr.example/fhir/Encounter/e1/_history/3"},
            "performer": [
                {"reference": "Practitioner/d1"},
                {"reference": "Organization/o1"},
                {"reference": "#contained"},
                {"reference": "urn:uuid:0b1c"},
                {"identifier": {"value": "x"}},
                {"reference": "Practitioner/d1"}
            ]
        });
        assert_eq!(
            reference_values("Observation", "subject", &observation),
            ["Patient/p1"]
        );
        assert_eq!(
            reference_values("Observation", "patient", &observation),
            ["Patient/p1"]
        );
        assert_eq!(
            reference_values("Observation", "encounter", &observation),
            ["Encounter/e1"]
        );
        assert_eq!(
            reference_values("Observation", "performer", &observation),
            ["Practitioner/d1", "Organization/o1"]
        );
        assert!(reference_values("Observation", "code", &observation).is_empty());
        assert!(reference_values("Observation", "nope", &observation).is_empty());
        // `patient` only allows Patient targets.
        let group = json!({"resourceType": "Observation", "subject": {"reference": "Group/g1"}});
        assert!(reference_values("Observation", "patient", &group).is_empty());
        assert_eq!(
            reference_values("Observation", "subject", &group),
            ["Group/g1"]
        );
        let directive = ShapeDirective {
            source_type: "Observation".into(),
            param: "performer".into(),
            target_type: Some("Organization".into()),
        };
        assert_eq!(directive.references(&observation), ["Organization/o1"]);
    }
}
