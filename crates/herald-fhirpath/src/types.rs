//! The FHIR R4 type names FHIRPath type tests (`is`, `as`, `ofType`) can name, their
//! inheritance, and the best-effort typing of JSON elements without a structure
//! definition model (see the crate docs for what that covers).

use serde_json::Value;

pub(crate) const SYSTEM_TYPES: &[&str] = &[
    "Boolean", "String", "Integer", "Decimal", "Date", "DateTime", "Time", "Quantity",
];

pub(crate) const FHIR_PRIMITIVES: &[&str] = &[
    "boolean",
    "integer",
    "string",
    "decimal",
    "uri",
    "url",
    "canonical",
    "base64Binary",
    "instant",
    "date",
    "dateTime",
    "time",
    "code",
    "oid",
    "id",
    "markdown",
    "unsignedInt",
    "positiveInt",
    "uuid",
    "xhtml",
];

pub(crate) const FHIR_COMPLEX: &[&str] = &[
    "Element",
    "BackboneElement",
    "Address",
    "Age",
    "Annotation",
    "Attachment",
    "CodeableConcept",
    "Coding",
    "ContactDetail",
    "ContactPoint",
    "Contributor",
    "Count",
    "DataRequirement",
    "Distance",
    "Dosage",
    "Duration",
    "ElementDefinition",
    "Expression",
    "Extension",
    "HumanName",
    "Identifier",
    "MarketingStatus",
    "Meta",
    "Money",
    "MoneyQuantity",
    "Narrative",
    "ParameterDefinition",
    "Period",
    "Population",
    "ProdCharacteristic",
    "ProductShelfLife",
    "Quantity",
    "Range",
    "Ratio",
    "Reference",
    "RelatedArtifact",
    "SampledData",
    "Signature",
    "SimpleQuantity",
    "SubstanceAmount",
    "Timing",
    "TriggerDefinition",
    "UsageContext",
];

/// Type names FHIRPath knows as resources beyond the R4 list in `herald-fhir`: the
/// abstract bases and the R4B/R5 types Herald handles as JSON.
const EXTRA_RESOURCES: &[&str] = &[
    "Resource",
    "DomainResource",
    "SubscriptionStatus",
    "SubscriptionTopic",
];

/// The canonical `&'static str` of a resource type name, if it is one.
pub(crate) fn resource_name(name: &str) -> Option<&'static str> {
    herald_fhir::resource::R4_RESOURCE_TYPES
        .iter()
        .chain(EXTRA_RESOURCES)
        .find(|r| **r == name)
        .copied()
}

/// The namespace a type name belongs to, if it is a known type.
pub(crate) fn is_known(namespace: Option<&str>, name: &str) -> bool {
    let system = SYSTEM_TYPES.contains(&name);
    let fhir = FHIR_PRIMITIVES.contains(&name)
        || FHIR_COMPLEX.contains(&name)
        || resource_name(name).is_some();
    match namespace {
        Some("System") => system,
        Some("FHIR") => fhir,
        Some(_) => false,
        None => system || fhir,
    }
}

/// The parent of a FHIR type in the R4 type hierarchy (as far as type tests need it).
fn fhir_parent(name: &str) -> Option<&'static str> {
    Some(match name {
        "code" | "id" | "markdown" => "string",
        "url" | "canonical" | "oid" | "uuid" => "uri",
        "positiveInt" | "unsignedInt" => "integer",
        "Age" | "Count" | "Distance" | "Duration" | "MoneyQuantity" | "SimpleQuantity" => {
            "Quantity"
        }
        "Bundle" | "Parameters" | "Binary" | "DomainResource" => "Resource",
        "Resource" => return None,
        n if resource_name(n).is_some() => "DomainResource",
        n if FHIR_PRIMITIVES.contains(&n) => return None,
        "BackboneElement" | "Element" => return None,
        n if FHIR_COMPLEX.contains(&n) => "Element",
        _ => return None,
    })
}

/// Whether FHIR type `actual` is `wanted` or derives from it.
pub(crate) fn fhir_derives_from(actual: &str, wanted: &str) -> bool {
    let mut current = Some(actual);
    let mut guard = 0;
    while let Some(name) = current {
        if name == wanted {
            return true;
        }
        guard += 1;
        if guard > 8 {
            return false;
        }
        current = fhir_parent(name);
    }
    false
}

/// Choice-type suffixes: `valueQuantity` is element `value` of type `Quantity`.
pub(crate) fn choice_type_of(suffix: &str) -> Option<&'static str> {
    let mut chars = suffix.chars();
    let first = chars.next()?;
    if !first.is_ascii_uppercase() {
        return None;
    }
    if let Some(t) = FHIR_COMPLEX.iter().find(|t| **t == suffix) {
        return Some(t);
    }
    FHIR_PRIMITIVES
        .iter()
        .find(|t| {
            t.len() == suffix.len()
                && t[..1].eq_ignore_ascii_case(&suffix[..1])
                && t[1..] == suffix[1..]
        })
        .copied()
}

/// Best-effort FHIR type of an element from its name and JSON value.
pub(crate) fn infer_element_type(name: &str, value: &Value) -> Option<&'static str> {
    match value {
        Value::Bool(_) => Some("boolean"),
        Value::Number(n) => Some(if n.is_i64() || n.is_u64() {
            "integer"
        } else {
            "decimal"
        }),
        Value::String(_) => Some(match name {
            "id" => "id",
            "status" | "gender" | "use" | "language" | "mode" | "intent" | "priority" | "kind"
            | "comparator" | "code" | "resourceType" | "contentType" | "severity" => "code",
            "url" | "system" | "profile" | "source" => "uri",
            "div" => "xhtml",
            "birthDate" => "date",
            "issued" | "lastUpdated" | "recorded" => "instant",
            "start" | "end" | "authoredOn" | "effective" | "occurrence" => "dateTime",
            _ => "string",
        }),
        Value::Object(map) => {
            if let Some(rt) = map.get("resourceType").and_then(Value::as_str) {
                return resource_name(rt);
            }
            Some(match name {
                "name" => "HumanName",
                "telecom" => "ContactPoint",
                "address" => "Address",
                "identifier" => "Identifier",
                "period" => "Period",
                "coding" => "Coding",
                "meta" => "Meta",
                "text" => "Narrative",
                "extension" | "modifierExtension" => "Extension",
                "maritalStatus" | "category" | "code" | "type" => "CodeableConcept",
                "subject"
                | "patient"
                | "encounter"
                | "managingOrganization"
                | "requester"
                | "organization"
                | "generalPractitioner"
                | "basedOn"
                | "partOf"
                | "author"
                | "recorder"
                | "asserter" => "Reference",
                "photo" => "Attachment",
                _ => return None,
            })
        }
        _ => None,
    }
}
