//! The search parameter table: which search parameters exist for which resource type,
//! their type, the element paths they index and (for references) their target types.
//!
//! This is a hand-written subset of the R4 search parameters. A later issue replaces it
//! with a table generated from the official `SearchParameter` definitions; until then a
//! parameter that is absent here is rejected at compile time (fail closed).
//!
//! Paths are simple dotted element paths over the JSON representation; arrays are
//! flattened at every step. Choice types (`effective[x]`) are listed explicitly, one path
//! per supported choice. A segment may carry one equality filter on a child element,
//! e.g. `telecom[system=phone]` (the FHIRPath `where(system='phone')`).

/// The R4 search parameter types.
#[allow(dead_code)] // `Number`/`Special` appear once the generated table lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParamType {
    Number,
    Date,
    String,
    Token,
    Reference,
    Composite,
    Quantity,
    Uri,
    Special,
}

impl ParamType {
    /// The FHIR code of the type, used in error messages.
    pub(crate) fn code(self) -> &'static str {
        match self {
            ParamType::Number => "number",
            ParamType::Date => "date",
            ParamType::String => "string",
            ParamType::Token => "token",
            ParamType::Reference => "reference",
            ParamType::Composite => "composite",
            ParamType::Quantity => "quantity",
            ParamType::Uri => "uri",
            ParamType::Special => "special",
        }
    }
}

/// One search parameter of one resource type.
#[derive(Debug)]
pub(crate) struct ParamDef {
    pub(crate) name: &'static str,
    pub(crate) ty: ParamType,
    pub(crate) paths: &'static [&'static str],
    /// Allowed reference target types; empty means any type.
    pub(crate) targets: &'static [&'static str],
}

macro_rules! sp {
    ($name:literal, $ty:ident, [$($p:literal),*]) => {
        ParamDef { name: $name, ty: ParamType::$ty, paths: &[$($p),*], targets: &[] }
    };
    ($name:literal, $ty:ident, [$($p:literal),*], [$($t:literal),*]) => {
        ParamDef { name: $name, ty: ParamType::$ty, paths: &[$($p),*], targets: &[$($t),*] }
    };
}

/// Parameters every resource type has.
static COMMON: &[ParamDef] = &[
    sp!("_id", Token, ["id"]),
    sp!("_lastUpdated", Date, ["meta.lastUpdated"]),
    sp!("_tag", Token, ["meta.tag"]),
    sp!("_profile", Uri, ["meta.profile"]),
    sp!("_security", Token, ["meta.security"]),
    sp!("_source", Uri, ["meta.source"]),
];

const SUBJECT_TARGETS: &[&str] = &["Patient", "Group", "Device", "Location"];
const PERFORMER_TARGETS: &[&str] = &[
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "CareTeam",
    "Patient",
    "RelatedPerson",
];

static OBSERVATION: &[ParamDef] = &[
    sp!("code", Token, ["code"]),
    sp!("category", Token, ["category"]),
    sp!("status", Token, ["status"]),
    ParamDef {
        name: "subject",
        ty: ParamType::Reference,
        paths: &["subject"],
        targets: SUBJECT_TARGETS,
    },
    sp!("patient", Reference, ["subject"], ["Patient"]),
    sp!("encounter", Reference, ["encounter"], ["Encounter"]),
    sp!(
        "date",
        Date,
        ["effectiveDateTime", "effectivePeriod", "effectiveInstant"]
    ),
    ParamDef {
        name: "performer",
        ty: ParamType::Reference,
        paths: &["performer"],
        targets: PERFORMER_TARGETS,
    },
    sp!("identifier", Token, ["identifier"]),
    sp!("based-on", Reference, ["basedOn"]),
    sp!("part-of", Reference, ["partOf"]),
    sp!("value-concept", Token, ["valueCodeableConcept"]),
    sp!("value-string", String, ["valueString"]),
    sp!("value-date", Date, ["valueDateTime", "valuePeriod"]),
    sp!("value-quantity", Quantity, ["valueQuantity"]),
    sp!("specimen", Reference, ["specimen"], ["Specimen"]),
    sp!("device", Reference, ["device"], ["Device", "DeviceMetric"]),
    sp!("focus", Reference, ["focus"]),
    sp!(
        "has-member",
        Reference,
        ["hasMember"],
        ["Observation", "QuestionnaireResponse", "MolecularSequence"]
    ),
    sp!("derived-from", Reference, ["derivedFrom"]),
    sp!("data-absent-reason", Token, ["dataAbsentReason"]),
    sp!("method", Token, ["method"]),
    sp!("combo-code", Token, ["code", "component.code"]),
    sp!(
        "combo-data-absent-reason",
        Token,
        ["dataAbsentReason", "component.dataAbsentReason"]
    ),
    sp!(
        "combo-value-concept",
        Token,
        ["valueCodeableConcept", "component.valueCodeableConcept"]
    ),
    sp!(
        "combo-value-quantity",
        Quantity,
        ["valueQuantity", "component.valueQuantity"]
    ),
    sp!("component-code", Token, ["component.code"]),
    sp!(
        "component-data-absent-reason",
        Token,
        ["component.dataAbsentReason"]
    ),
    sp!(
        "component-value-concept",
        Token,
        ["component.valueCodeableConcept"]
    ),
    sp!(
        "component-value-quantity",
        Quantity,
        ["component.valueQuantity"]
    ),
    sp!("code-value-concept", Composite, []),
    sp!("code-value-quantity", Composite, []),
    sp!("code-value-date", Composite, []),
    sp!("code-value-string", Composite, []),
];

static DIAGNOSTIC_REPORT: &[ParamDef] = &[
    sp!("code", Token, ["code"]),
    sp!("category", Token, ["category"]),
    sp!("status", Token, ["status"]),
    ParamDef {
        name: "subject",
        ty: ParamType::Reference,
        paths: &["subject"],
        targets: SUBJECT_TARGETS,
    },
    sp!("patient", Reference, ["subject"], ["Patient"]),
    sp!("encounter", Reference, ["encounter"], ["Encounter"]),
    sp!("date", Date, ["effectiveDateTime", "effectivePeriod"]),
    sp!("issued", Date, ["issued"]),
    sp!(
        "performer",
        Reference,
        ["performer"],
        [
            "Practitioner",
            "PractitionerRole",
            "Organization",
            "CareTeam"
        ]
    ),
    sp!(
        "results-interpreter",
        Reference,
        ["resultsInterpreter"],
        [
            "Practitioner",
            "PractitionerRole",
            "Organization",
            "CareTeam"
        ]
    ),
    sp!("result", Reference, ["result"], ["Observation"]),
    sp!("identifier", Token, ["identifier"]),
    sp!("based-on", Reference, ["basedOn"]),
    sp!("conclusion", Token, ["conclusionCode"]),
    sp!("specimen", Reference, ["specimen"], ["Specimen"]),
    sp!("media", Reference, ["media.link"], ["Media"]),
];

static MEDICATION_REQUEST: &[ParamDef] = &[
    sp!("status", Token, ["status"]),
    sp!("intent", Token, ["intent"]),
    sp!("category", Token, ["category"]),
    sp!("code", Token, ["medicationCodeableConcept"]),
    sp!(
        "medication",
        Reference,
        ["medicationReference"],
        ["Medication"]
    ),
    sp!("subject", Reference, ["subject"], ["Patient", "Group"]),
    sp!("patient", Reference, ["subject"], ["Patient"]),
    sp!("encounter", Reference, ["encounter"], ["Encounter"]),
    sp!("authoredon", Date, ["authoredOn"]),
    sp!("requester", Reference, ["requester"]),
    sp!("identifier", Token, ["identifier"]),
    sp!("priority", Token, ["priority"]),
    sp!(
        "intended-dispenser",
        Reference,
        ["dispenseRequest.performer"],
        ["Organization"]
    ),
    sp!("intended-performer", Reference, ["performer"]),
    sp!("intended-performertype", Token, ["performerType"]),
];

static MEDICATION_DISPENSE: &[ParamDef] = &[
    sp!("status", Token, ["status"]),
    sp!("code", Token, ["medicationCodeableConcept"]),
    sp!(
        "medication",
        Reference,
        ["medicationReference"],
        ["Medication"]
    ),
    sp!("subject", Reference, ["subject"], ["Patient", "Group"]),
    sp!("patient", Reference, ["subject"], ["Patient"]),
    sp!("identifier", Token, ["identifier"]),
    sp!(
        "context",
        Reference,
        ["context"],
        ["Encounter", "EpisodeOfCare"]
    ),
    sp!("performer", Reference, ["performer.actor"]),
    sp!(
        "prescription",
        Reference,
        ["authorizingPrescription"],
        ["MedicationRequest"]
    ),
    sp!("type", Token, ["type"]),
    sp!("whenhandedover", Date, ["whenHandedOver"]),
    sp!("whenprepared", Date, ["whenPrepared"]),
    sp!(
        "receiver",
        Reference,
        ["receiver"],
        ["Patient", "Practitioner"]
    ),
    sp!("destination", Reference, ["destination"], ["Location"]),
];

static MEDICATION_ADMINISTRATION: &[ParamDef] = &[
    sp!("status", Token, ["status"]),
    sp!("code", Token, ["medicationCodeableConcept"]),
    sp!(
        "medication",
        Reference,
        ["medicationReference"],
        ["Medication"]
    ),
    sp!("subject", Reference, ["subject"], ["Patient", "Group"]),
    sp!("patient", Reference, ["subject"], ["Patient"]),
    sp!("identifier", Token, ["identifier"]),
    sp!(
        "context",
        Reference,
        ["context"],
        ["Encounter", "EpisodeOfCare"]
    ),
    sp!(
        "effective-time",
        Date,
        ["effectiveDateTime", "effectivePeriod"]
    ),
    sp!("performer", Reference, ["performer.actor"]),
    sp!("request", Reference, ["request"], ["MedicationRequest"]),
    sp!("reason-given", Token, ["reasonCode"]),
    sp!("reason-not-given", Token, ["statusReason"]),
];

static MEDICATION_STATEMENT: &[ParamDef] = &[
    sp!("status", Token, ["status"]),
    sp!("code", Token, ["medicationCodeableConcept"]),
    sp!(
        "medication",
        Reference,
        ["medicationReference"],
        ["Medication"]
    ),
    sp!("subject", Reference, ["subject"], ["Patient", "Group"]),
    sp!("patient", Reference, ["subject"], ["Patient"]),
    sp!("identifier", Token, ["identifier"]),
    sp!(
        "context",
        Reference,
        ["context"],
        ["Encounter", "EpisodeOfCare"]
    ),
    sp!("effective", Date, ["effectiveDateTime", "effectivePeriod"]),
    sp!("category", Token, ["category"]),
    sp!("part-of", Reference, ["partOf"]),
    sp!("source", Reference, ["informationSource"]),
];

static PATIENT: &[ParamDef] = &[
    sp!("identifier", Token, ["identifier"]),
    sp!("name", String, ["name"]),
    sp!("family", String, ["name.family"]),
    sp!("given", String, ["name.given"]),
    sp!("birthdate", Date, ["birthDate"]),
    sp!("death-date", Date, ["deceasedDateTime"]),
    sp!("gender", Token, ["gender"]),
    sp!("active", Token, ["active"]),
    sp!("address", String, ["address"]),
    sp!("address-city", String, ["address.city"]),
    sp!("address-state", String, ["address.state"]),
    sp!("address-country", String, ["address.country"]),
    sp!("address-postalcode", String, ["address.postalCode"]),
    sp!("address-use", Token, ["address.use"]),
    sp!("telecom", Token, ["telecom"]),
    sp!("phone", Token, ["telecom[system=phone]"]),
    sp!("email", Token, ["telecom[system=email]"]),
    sp!(
        "general-practitioner",
        Reference,
        ["generalPractitioner"],
        ["Practitioner", "PractitionerRole", "Organization"]
    ),
    sp!(
        "organization",
        Reference,
        ["managingOrganization"],
        ["Organization"]
    ),
    sp!(
        "link",
        Reference,
        ["link.other"],
        ["Patient", "RelatedPerson"]
    ),
    sp!("language", Token, ["communication.language"]),
];

static ENCOUNTER: &[ParamDef] = &[
    sp!("status", Token, ["status"]),
    sp!("class", Token, ["class"]),
    sp!("type", Token, ["type"]),
    sp!("subject", Reference, ["subject"], ["Patient", "Group"]),
    sp!("patient", Reference, ["subject"], ["Patient"]),
    sp!("date", Date, ["period"]),
    sp!("participant", Reference, ["participant.individual"]),
    sp!("participant-type", Token, ["participant.type"]),
    sp!(
        "practitioner",
        Reference,
        ["participant.individual"],
        ["Practitioner"]
    ),
    sp!("location", Reference, ["location.location"], ["Location"]),
    sp!(
        "service-provider",
        Reference,
        ["serviceProvider"],
        ["Organization"]
    ),
    sp!("identifier", Token, ["identifier"]),
    sp!("reason-code", Token, ["reasonCode"]),
    sp!("reason-reference", Reference, ["reasonReference"]),
    sp!("account", Reference, ["account"], ["Account"]),
    sp!(
        "diagnosis",
        Reference,
        ["diagnosis.condition"],
        ["Condition", "Procedure"]
    ),
    sp!(
        "episode-of-care",
        Reference,
        ["episodeOfCare"],
        ["EpisodeOfCare"]
    ),
    sp!("based-on", Reference, ["basedOn"], ["ServiceRequest"]),
    sp!("part-of", Reference, ["partOf"], ["Encounter"]),
    sp!(
        "special-arrangement",
        Token,
        ["hospitalization.specialArrangement"]
    ),
    sp!("length", Quantity, ["length"]),
];

static CONDITION: &[ParamDef] = &[
    sp!("code", Token, ["code"]),
    sp!("category", Token, ["category"]),
    sp!("clinical-status", Token, ["clinicalStatus"]),
    sp!("verification-status", Token, ["verificationStatus"]),
    sp!("subject", Reference, ["subject"], ["Patient", "Group"]),
    sp!("patient", Reference, ["subject"], ["Patient"]),
    sp!("encounter", Reference, ["encounter"], ["Encounter"]),
    sp!("onset-date", Date, ["onsetDateTime", "onsetPeriod"]),
    sp!(
        "abatement-date",
        Date,
        ["abatementDateTime", "abatementPeriod"]
    ),
    sp!("recorded-date", Date, ["recordedDate"]),
    sp!("identifier", Token, ["identifier"]),
    sp!("severity", Token, ["severity"]),
    sp!("body-site", Token, ["bodySite"]),
    sp!("asserter", Reference, ["asserter"]),
    sp!("evidence", Token, ["evidence.code"]),
    sp!("stage", Token, ["stage.summary"]),
];

static PROCEDURE: &[ParamDef] = &[
    sp!("code", Token, ["code"]),
    sp!("status", Token, ["status"]),
    sp!("subject", Reference, ["subject"], ["Patient", "Group"]),
    sp!("patient", Reference, ["subject"], ["Patient"]),
    sp!("encounter", Reference, ["encounter"], ["Encounter"]),
    sp!("date", Date, ["performedDateTime", "performedPeriod"]),
    sp!("identifier", Token, ["identifier"]),
    sp!("performer", Reference, ["performer.actor"]),
    sp!("category", Token, ["category"]),
    sp!("reason-code", Token, ["reasonCode"]),
    sp!("based-on", Reference, ["basedOn"]),
    sp!("part-of", Reference, ["partOf"]),
    sp!("location", Reference, ["location"], ["Location"]),
];

static ALLERGY_INTOLERANCE: &[ParamDef] = &[
    sp!("code", Token, ["code", "reaction.substance"]),
    sp!("clinical-status", Token, ["clinicalStatus"]),
    sp!("verification-status", Token, ["verificationStatus"]),
    sp!("patient", Reference, ["patient"], ["Patient"]),
    sp!("category", Token, ["category"]),
    sp!("criticality", Token, ["criticality"]),
    sp!("type", Token, ["type"]),
    sp!("date", Date, ["recordedDate"]),
    sp!("identifier", Token, ["identifier"]),
    sp!("recorder", Reference, ["recorder"]),
    sp!("asserter", Reference, ["asserter"]),
    sp!("onset", Date, ["reaction.onset"]),
    sp!("severity", Token, ["reaction.severity"]),
    sp!("manifestation", Token, ["reaction.manifestation"]),
    sp!("route", Token, ["reaction.exposureRoute"]),
];

static IMMUNIZATION: &[ParamDef] = &[
    sp!("vaccine-code", Token, ["vaccineCode"]),
    sp!("status", Token, ["status"]),
    sp!("status-reason", Token, ["statusReason"]),
    sp!("patient", Reference, ["patient"], ["Patient"]),
    sp!("date", Date, ["occurrenceDateTime"]),
    sp!("identifier", Token, ["identifier"]),
    sp!("lot-number", String, ["lotNumber"]),
    sp!(
        "manufacturer",
        Reference,
        ["manufacturer"],
        ["Organization"]
    ),
    sp!("performer", Reference, ["performer.actor"]),
    sp!("location", Reference, ["location"], ["Location"]),
    sp!("reason-code", Token, ["reasonCode"]),
    sp!("target-disease", Token, ["protocolApplied.targetDisease"]),
    sp!("reaction-date", Date, ["reaction.date"]),
    sp!("series", String, ["protocolApplied.series"]),
];

static SERVICE_REQUEST: &[ParamDef] = &[
    sp!("code", Token, ["code"]),
    sp!("status", Token, ["status"]),
    sp!("intent", Token, ["intent"]),
    sp!("category", Token, ["category"]),
    sp!("priority", Token, ["priority"]),
    ParamDef {
        name: "subject",
        ty: ParamType::Reference,
        paths: &["subject"],
        targets: SUBJECT_TARGETS,
    },
    sp!("patient", Reference, ["subject"], ["Patient"]),
    sp!("encounter", Reference, ["encounter"], ["Encounter"]),
    sp!("authored", Date, ["authoredOn"]),
    sp!(
        "occurrence",
        Date,
        ["occurrenceDateTime", "occurrencePeriod"]
    ),
    sp!("requester", Reference, ["requester"]),
    sp!("identifier", Token, ["identifier"]),
    sp!("requisition", Token, ["requisition"]),
    sp!("based-on", Reference, ["basedOn"]),
    sp!("replaces", Reference, ["replaces"], ["ServiceRequest"]),
    sp!("performer", Reference, ["performer"]),
    sp!("performer-type", Token, ["performerType"]),
    sp!("specimen", Reference, ["specimen"], ["Specimen"]),
    sp!("body-site", Token, ["bodySite"]),
    sp!(
        "instantiates-canonical",
        Reference,
        ["instantiatesCanonical"]
    ),
    sp!("instantiates-uri", Uri, ["instantiatesUri"]),
];

static PRACTITIONER: &[ParamDef] = &[
    sp!("identifier", Token, ["identifier"]),
    sp!("name", String, ["name"]),
    sp!("family", String, ["name.family"]),
    sp!("given", String, ["name.given"]),
    sp!("active", Token, ["active"]),
    sp!("gender", Token, ["gender"]),
    sp!("address", String, ["address"]),
    sp!("address-city", String, ["address.city"]),
    sp!("telecom", Token, ["telecom"]),
    sp!("phone", Token, ["telecom[system=phone]"]),
    sp!("email", Token, ["telecom[system=email]"]),
    sp!("communication", Token, ["communication"]),
];

static ORGANIZATION: &[ParamDef] = &[
    sp!("identifier", Token, ["identifier"]),
    sp!("name", String, ["name", "alias"]),
    sp!("active", Token, ["active"]),
    sp!("type", Token, ["type"]),
    sp!("partof", Reference, ["partOf"], ["Organization"]),
    sp!("address", String, ["address"]),
    sp!("address-city", String, ["address.city"]),
    sp!("endpoint", Reference, ["endpoint"], ["Endpoint"]),
];

static APPOINTMENT: &[ParamDef] = &[
    sp!("status", Token, ["status"]),
    sp!("actor", Reference, ["participant.actor"]),
    sp!("patient", Reference, ["participant.actor"], ["Patient"]),
    sp!(
        "practitioner",
        Reference,
        ["participant.actor"],
        ["Practitioner"]
    ),
    sp!("location", Reference, ["participant.actor"], ["Location"]),
    sp!("part-status", Token, ["participant.status"]),
    sp!("date", Date, ["start"]),
    sp!("service-type", Token, ["serviceType"]),
    sp!("service-category", Token, ["serviceCategory"]),
    sp!("specialty", Token, ["specialty"]),
    sp!("appointment-type", Token, ["appointmentType"]),
    sp!("reason-code", Token, ["reasonCode"]),
    sp!("based-on", Reference, ["basedOn"], ["ServiceRequest"]),
    sp!("identifier", Token, ["identifier"]),
];

static TASK: &[ParamDef] = &[
    sp!("status", Token, ["status"]),
    sp!("intent", Token, ["intent"]),
    sp!("priority", Token, ["priority"]),
    sp!("owner", Reference, ["owner"]),
    sp!("requester", Reference, ["requester"]),
    sp!("focus", Reference, ["focus"]),
    sp!("for", Reference, ["for"]),
    sp!("patient", Reference, ["for"], ["Patient"]),
    sp!("encounter", Reference, ["encounter"], ["Encounter"]),
    sp!("code", Token, ["code"]),
    sp!("identifier", Token, ["identifier"]),
    sp!("group-identifier", Token, ["groupIdentifier"]),
    sp!("authored-on", Date, ["authoredOn"]),
    sp!("modified", Date, ["lastModified"]),
    sp!("period", Date, ["executionPeriod"]),
    sp!("business-status", Token, ["businessStatus"]),
    sp!("based-on", Reference, ["basedOn"]),
    sp!("part-of", Reference, ["partOf"], ["Task"]),
    sp!("performer", Token, ["performerType"]),
];

static SPECIMEN: &[ParamDef] = &[
    sp!("type", Token, ["type"]),
    sp!("status", Token, ["status"]),
    sp!(
        "subject",
        Reference,
        ["subject"],
        ["Patient", "Group", "Device", "Substance", "Location"]
    ),
    sp!("patient", Reference, ["subject"], ["Patient"]),
    sp!("identifier", Token, ["identifier"]),
    sp!("accession", Token, ["accessionIdentifier"]),
    sp!(
        "collected",
        Date,
        ["collection.collectedDateTime", "collection.collectedPeriod"]
    ),
    sp!("collector", Reference, ["collection.collector"]),
    sp!("bodysite", Token, ["collection.bodySite"]),
    sp!("container-id", Token, ["container.identifier"]),
    sp!("parent", Reference, ["parent"], ["Specimen"]),
];

/// Resource type name → its specific parameters (the common ones are added by lookup).
static RESOURCES: &[(&str, &[ParamDef])] = &[
    ("Observation", OBSERVATION),
    ("DiagnosticReport", DIAGNOSTIC_REPORT),
    ("MedicationRequest", MEDICATION_REQUEST),
    ("MedicationDispense", MEDICATION_DISPENSE),
    ("MedicationAdministration", MEDICATION_ADMINISTRATION),
    ("MedicationStatement", MEDICATION_STATEMENT),
    ("Patient", PATIENT),
    ("Encounter", ENCOUNTER),
    ("Condition", CONDITION),
    ("Procedure", PROCEDURE),
    ("AllergyIntolerance", ALLERGY_INTOLERANCE),
    ("Immunization", IMMUNIZATION),
    ("ServiceRequest", SERVICE_REQUEST),
    ("Practitioner", PRACTITIONER),
    ("Organization", ORGANIZATION),
    ("Appointment", APPOINTMENT),
    ("Task", TASK),
    ("Specimen", SPECIMEN),
];

/// Whether the table knows this resource type.
pub(crate) fn is_known_resource(resource_type: &str) -> bool {
    known_resource(resource_type).is_some()
}

/// The table's own copy of a known resource type name (shared, never allocated per use).
pub(crate) fn known_resource(resource_type: &str) -> Option<&'static str> {
    RESOURCES
        .iter()
        .map(|(name, _)| *name)
        .find(|name| *name == resource_type)
}

/// The definition of `name` for `resource_type`, if both are known.
pub(crate) fn lookup(resource_type: &str, name: &str) -> Option<&'static ParamDef> {
    let (_, params) = RESOURCES.iter().find(|(rt, _)| *rt == resource_type)?;
    params.iter().chain(COMMON.iter()).find(|p| p.name == name)
}

/// Whether `s` is shaped like a FHIR resource type name (`[A-Z][A-Za-z0-9]*`).
pub(crate) fn is_type_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_alphanumeric())
        && s.len() <= 64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_well_formed() {
        for (rt, params) in RESOURCES {
            assert!(is_type_name(rt));
            for (i, p) in params.iter().enumerate() {
                assert!(
                    !params[..i].iter().any(|q| q.name == p.name),
                    "duplicate {rt}.{}",
                    p.name
                );
                assert!(!COMMON.iter().any(|q| q.name == p.name));
                let searchable = matches!(
                    p.ty,
                    ParamType::Token
                        | ParamType::Reference
                        | ParamType::String
                        | ParamType::Date
                        | ParamType::Uri
                );
                assert!(!searchable || !p.paths.is_empty(), "{rt}.{}", p.name);
                assert!(p.targets.iter().all(|t| is_type_name(t)));
            }
        }
        assert!(lookup("Observation", "_id").is_some());
        assert!(lookup("Observation", "nope").is_none());
        assert!(lookup("Nope", "_id").is_none());
    }
}
