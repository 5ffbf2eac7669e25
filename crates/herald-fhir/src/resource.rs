//! Small helpers for FHIR resources held as JSON: type and id syntax, the list of R4
//! resource types, and `meta` stamping.

use serde_json::Value;

/// FHIR `id` syntax: 1–64 of `[A-Za-z0-9\-\.]`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Whether `name` is an R4 (4.0.1) resource type.
pub fn is_resource_type(name: &str) -> bool {
    R4_RESOURCE_TYPES.binary_search(&name).is_ok()
}

/// Returns `resourceType` of a JSON resource.
pub fn resource_type_of(resource: &Value) -> Option<&str> {
    resource.get("resourceType").and_then(Value::as_str)
}

/// Sets `id`, `meta.versionId` and `meta.lastUpdated` on a resource object.
pub fn stamp_meta(resource: &mut Value, id: &str, version_id: &str, last_updated: &str) {
    if let Some(object) = resource.as_object_mut() {
        object.insert("id".into(), Value::String(id.to_owned()));
        let meta = object
            .entry("meta")
            .or_insert_with(|| Value::Object(Default::default()));
        if !meta.is_object() {
            *meta = Value::Object(Default::default());
        }
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("versionId".into(), Value::String(version_id.to_owned()));
            meta.insert("lastUpdated".into(), Value::String(last_updated.to_owned()));
        }
    }
}

/// Maximum nesting depth Herald accepts in a resource: deeper input is refused before any
/// recursive processing can run away.
pub const MAX_JSON_DEPTH: usize = 64;

/// Depth of a JSON value (a scalar is depth 1). Iterative, so it cannot overflow the stack.
pub fn json_depth(value: &Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((v, d)) = stack.pop() {
        max = max.max(d);
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            Value::Object(map) => stack.extend(map.values().map(|i| (i, d + 1))),
            _ => {}
        }
    }
    max
}

/// All R4 resource types, sorted for binary search.
pub const R4_RESOURCE_TYPES: &[&str] = &[
    "Account",
    "ActivityDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionOrder",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "Substance",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestReport",
    "TestScript",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_type_list_is_sorted_for_binary_search() {
        let mut sorted = R4_RESOURCE_TYPES.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, R4_RESOURCE_TYPES);
        assert!(is_resource_type("Observation"));
        assert!(!is_resource_type("Observations"));
    }

    #[test]
    fn ids_follow_fhir_syntax() {
        assert!(is_valid_id("abc-1.2"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id(&"x".repeat(65)));
    }

    #[test]
    fn depth_is_computed_without_recursion() {
        let mut v = Value::Null;
        for _ in 0..10_000 {
            v = Value::Array(vec![v]);
        }
        assert_eq!(json_depth(&v), 10_001);
        // Dropping a deeply nested serde_json::Value recurses; flatten it first.
        let mut cur = v;
        while let Value::Array(mut items) = cur {
            cur = items.pop().unwrap_or(Value::Null);
        }
    }
}

/// Whether `text` is a FHIR `date`, `dateTime` or `instant` value: `YYYY`, `YYYY-MM`,
/// `YYYY-MM-DD` (a real calendar day), or a full date with `Thh:mm:ss[.fff]` and a time
/// zone (`Z` or `±hh:mm`), as the R4 `dateTime` regex allows.
pub fn is_fhir_date_time(text: &str) -> bool {
    let (date, time) = match text.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let parts: Vec<&str> = date.split('-').collect();
    let number = |s: &str, len: usize| {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    let Some(year) = parts.first().and_then(|y| number(y, 4)).filter(|y| *y > 0) else {
        return false;
    };
    match parts.len() {
        1 => time.is_none(),
        2 => time.is_none() && number(parts[1], 2).is_some_and(|m| (1..=12).contains(&m)),
        3 => {
            let (Some(month), Some(day)) = (number(parts[1], 2), number(parts[2], 2)) else {
                return false;
            };
            let Ok(year) = i32::try_from(year) else {
                return false;
            };
            chrono::NaiveDate::from_ymd_opt(year, month, day).is_some()
                && time.is_none_or(is_fhir_time_with_zone)
        }
        _ => false,
    }
}

/// `hh:mm:ss[.fff]` followed by `Z` or `±hh:mm` (hours up to 14:00).
fn is_fhir_time_with_zone(text: &str) -> bool {
    let (clock, zone) = if let Some(clock) = text.strip_suffix('Z') {
        (clock, None)
    } else if text.len() > 6 && matches!(text.as_bytes()[text.len() - 6], b'+' | b'-') {
        let (clock, zone) = text.split_at(text.len() - 6);
        (clock, Some(&zone[1..]))
    } else {
        return false;
    };
    let two = |s: &str, max: u32| {
        s.len() == 2
            && s.bytes().all(|b| b.is_ascii_digit())
            && s.parse::<u32>().is_ok_and(|n| n <= max)
    };
    if let Some(zone) = zone {
        let Some((h, m)) = zone.split_once(':') else {
            return false;
        };
        if !(two(h, 14) && two(m, 59)) || (h == "14" && m != "00") {
            return false;
        }
    }
    let (clock, fraction) = match clock.split_once('.') {
        Some((c, f)) => (c, Some(f)),
        None => (clock, None),
    };
    if fraction.is_some_and(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    let fields: Vec<&str> = clock.split(':').collect();
    fields.len() == 3 && two(fields[0], 23) && two(fields[1], 59) && two(fields[2], 60)
}

/// Element names whose string values are FHIR dates, dateTimes or instants: every choice
/// alternative of those types (`effectiveDateTime`, `valueInstant`, `birthDate`, …) and
/// the common plain names.
fn is_temporal_element(name: &str) -> bool {
    name.ends_with("DateTime")
        || name.ends_with("Instant")
        || name.ends_with("Date")
        || matches!(
            name,
            "date" | "issued" | "authoredOn" | "recorded" | "lastUpdated" | "start" | "end"
        )
}

/// The first element (as a path) whose date, dateTime or instant value is malformed, so a
/// write carrying `"effectiveDateTime": "2026-02-30"` is refused instead of stored. Only
/// string values of temporal element names are checked. The walk keeps one iterator per
/// nesting level and builds the path only for the element it reports, so memory follows
/// the depth of the resource, not its size.
pub fn first_invalid_date(resource: &Value) -> Option<(String, String)> {
    enum Frame<'a> {
        Object(serde_json::map::Iter<'a>),
        Array(std::iter::Enumerate<std::slice::Iter<'a, Value>>),
    }
    enum Segment<'a> {
        Key(&'a str),
        Index(usize),
    }
    let render = |segments: &[Segment<'_>]| {
        let mut path = String::new();
        for segment in segments {
            match segment {
                Segment::Key(k) => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                }
                Segment::Index(i) => path.push_str(&format!("[{i}]")),
            }
        }
        path
    };
    let mut frames: Vec<Frame<'_>> = Vec::new();
    let mut path: Vec<Segment<'_>> = Vec::new();
    match resource {
        Value::Object(map) => frames.push(Frame::Object(map.iter())),
        Value::Array(items) => frames.push(Frame::Array(items.iter().enumerate())),
        _ => return None,
    }
    while let Some(frame) = frames.last_mut() {
        let (segment, child) = match frame {
            Frame::Object(entries) => match entries.next() {
                Some((name, child)) => (Segment::Key(name.as_str()), child),
                None => {
                    frames.pop();
                    path.pop();
                    continue;
                }
            },
            Frame::Array(items) => match items.next() {
                Some((i, child)) => (Segment::Index(i), child),
                None => {
                    frames.pop();
                    path.pop();
                    continue;
                }
            },
        };
        match child {
            Value::String(text) => {
                if let Segment::Key(name) = segment {
                    if is_temporal_element(name) && !is_fhir_date_time(text) {
                        path.push(segment);
                        return Some((render(&path), text.clone()));
                    }
                }
            }
            Value::Object(map) => {
                path.push(segment);
                frames.push(Frame::Object(map.iter()));
            }
            Value::Array(items) => {
                path.push(segment);
                frames.push(Frame::Array(items.iter().enumerate()));
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod date_tests {
    use super::*;

    #[test]
    fn fhir_dates_times_and_instants() {
        for ok in [
            "2026",
            "2026-02",
            "2026-02-28",
            "2024-02-29",
            "2026-11-25T10:00:00Z",
            "2026-11-25T10:00:00.123+05:30",
            "2026-11-25T23:59:60-14:00",
            "0001-01-01",
        ] {
            assert!(is_fhir_date_time(ok), "{ok}");
        }
        for bad in [
            "",
            "yesterday",
            "26-11-25",
            "0000",
            "2026-13",
            "2026-02-30",
            "2025-02-29",
            "2026-11-25T10:00:00",
            "2026-11-25T10:00Z",
            "2026-11-25T24:00:00Z",
            "2026-11-25T10:00:00+15:00",
            "2026-11-25T10:00:00.Z",
            "2026-11T10:00:00Z",
            "2026-11-25 10:00:00Z",
            "２０２６",
        ] {
            assert!(!is_fhir_date_time(bad), "{bad}");
        }
    }

    #[test]
    fn the_first_malformed_temporal_element_is_named() {
        let ok = serde_json::json!({"resourceType": "Observation", "effectiveDateTime": "2026-11-25",
            "component": [{"valuePeriod": {"start": "2026-01-01", "end": "2026-02"}}],
            "valueInteger": 3, "start": 5});
        assert_eq!(first_invalid_date(&ok), None);
        let bad = serde_json::json!({"resourceType": "Observation",
            "component": [{"valuePeriod": {"start": "2026-01-01"}}, {"valuePeriod": {"end": "2026-02-30"}}]});
        assert_eq!(
            first_invalid_date(&bad),
            Some(("component[1].valuePeriod.end".into(), "2026-02-30".into()))
        );
    }
}
