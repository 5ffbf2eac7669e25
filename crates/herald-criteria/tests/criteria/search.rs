//! Search URL criteria: matching per type/prefix/modifier, and compile errors.

use herald_criteria::SearchQuery;
use serde_json::{json, Value};

use crate::fixtures;

fn check(resource: &Value, cases: &[(&str, bool)]) {
    let mut failures = Vec::new();
    for (criteria, expected) in cases {
        match SearchQuery::parse(criteria) {
            Ok(q) => {
                if q.matches(resource) != *expected {
                    failures.push(format!("{criteria}: expected {expected}"));
                }
            }
            Err(e) => failures.push(format!("{criteria}: compile error: {e}")),
        }
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

#[test]
fn observation_token_reference_uri() {
    check(
        &fixtures::observation(),
        &[
            ("Observation", true),
            ("/Observation", true),
            ("Observation?", true),
            ("  Observation?status=final  ", true),
            // token: code, system|code, |code, system|
            ("Observation?code=2345-7", true),
            ("Observation?code=http://loinc.org|2345-7", true),
            ("Observation?code=http%3A%2F%2Floinc.org%7C2345-7", true),
            ("Observation?code=http://loinc.org|9999-9", false),
            ("Observation?code=http://snomed.info/sct|2345-7", false),
            ("Observation?code=|2345-7", false),
            ("Observation?code=http://loinc.org|", true),
            ("Observation?code=http://snomed.info/sct|", false),
            ("Observation?code=1111,2345-7", true),
            ("Observation?code=1111&code=2345-7", false),
            ("Observation?code=2345-7&code=http://loinc.org|", true),
            ("Observation?code=2345\\,7", false),
            ("Observation?combo-code=2345-7", true),
            ("Observation?component-code=2345-7", false),
            ("Observation?category=laboratory", true),
            ("Observation?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory", true),
            ("Observation?category=vital-signs", false),
            // primitives are codes without a system
            ("Observation?status=final", true),
            ("Observation?status=|final", true),
            ("Observation?status=http://hl7.org/fhir/observation-status|final", false),
            ("Observation?status=FINAL", false),
            ("Observation?status=preliminary,final", true),
            // :not
            ("Observation?status:not=final", false),
            ("Observation?status:not=preliminary", true),
            ("Observation?status:not=preliminary,final", false),
            ("Observation?data-absent-reason:not=unknown", true),
            ("Observation?code:not=http://loinc.org|2345-7", false),
            // :text
            ("Observation?code:text=gluc", true),
            ("Observation?code:text=GLUCOSE%20%5BMASS", true),
            ("Observation?code:text=insulin", false),
            ("Observation?category:text=lab", true),
            // Identifier
            ("Observation?identifier=http://lab.example.org/ids|LAB-001", true),
            ("Observation?identifier=LAB-001", true),
            ("Observation?identifier=|LAB-001", false),
            ("Observation?identifier=http://other.org|LAB-001", false),
            ("Observation?identifier:text=lab acc", true),
            // common parameters
            ("Observation?_id=obs1", true),
            ("Observation?_id=obs2", false),
            ("Observation?_tag=http://example.org/tags|lab", true),
            ("Observation?_tag=http://example.org/tags|other", false),
            ("Observation?_tag:missing=false", true),
            ("Observation?_tag:missing=true", false),
            ("Observation?_security:missing=true", true),
            ("Observation?_lastUpdated=ge2024-03-05", true),
            ("Observation?_lastUpdated=lt2024-03-05", false),
            // uri (canonical version handling, :below, :above)
            ("Observation?_profile=http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-lab", true),
            ("Observation?_profile=http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-lab|5.0.1", true),
            ("Observation?_profile=http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-lab|4.0.0", false),
            ("Observation?_profile=http://hl7.org/fhir/us/core/StructureDefinition/us-core", false),
            ("Observation?_profile:below=http://hl7.org/fhir/us/core/", true),
            ("Observation?_source=http://lab.example.org/lis", true),
            ("Observation?_source=http://lab.example.org", false),
            ("Observation?_source:below=http://lab.example.org", true),
            ("Observation?_source:below=http://other.example.org", false),
            ("Observation?_source:above=http://lab.example.org/lis/sub", true),
            ("Observation?_source:above=http://lab.example.org", false),
            // references
            ("Observation?subject=Patient/123", true),
            ("Observation?subject=123", true),
            ("Observation?subject=Patient/999", false),
            ("Observation?subject=Group/123", false),
            ("Observation?subject:Patient=123", true),
            ("Observation?subject:Patient=Patient/123", true),
            ("Observation?subject:Group=123", false),
            ("Observation?subject=http://other.example.org/fhir/Patient/123", true),
            ("Observation?subject=Patient/123/_history/2", true),
            ("Observation?subject=urn:uuid:5c1d5e1c-0000-4000-8000-000000000000", false),
            ("Observation?patient=123", true),
            ("Observation?patient=Patient/123", true),
            ("Observation?patient=124", false),
            ("Observation?subject=Patient/999,Patient/123", true),
            ("Observation?performer=Practitioner/prac1", true),
            ("Observation?performer=prac1", true),
            ("Observation?performer:Organization=lab1", true),
            ("Observation?performer:Practitioner=lab1", false),
            ("Observation?encounter=Encounter/enc1", true),
            ("Observation?based-on=ServiceRequest/sr1", true),
            ("Observation?specimen:identifier=http://lab.example.org/specimens|SP-1", true),
            ("Observation?specimen:identifier=SP-1", true),
            ("Observation?specimen:identifier=SP-2", false),
            ("Observation?subject:identifier=SP-1", false),
            ("Observation?subject:missing=false", true),
            ("Observation?device:missing=true", true),
            ("Observation?device:missing=false", false),
            ("Observation?value-concept:missing=true", true),
            // AND across types
            ("Observation?code=http://loinc.org|2345-7&subject=Patient/123&status=final&date=2024-03", true),
            ("Observation?code=http://loinc.org|2345-7&subject=Patient/999", false),
        ],
    );
}

#[test]
fn observation_dates() {
    check(
        &fixtures::observation(),
        &[
            ("Observation?date=2024-03-05", true),
            ("Observation?date=2024-03", true),
            ("Observation?date=2024", true),
            ("Observation?date=2023", false),
            ("Observation?date=2024-03-05T10:15", true),
            ("Observation?date=2024-03-05T10:15:00Z", true),
            ("Observation?date=2024-03-05T10:15:00.000Z", false),
            ("Observation?date=2024-03-05T11:15:00%2B01:00", true),
            ("Observation?date=2024-03-05T11:15:00+01:00", true),
            ("Observation?date=2024-03-05T10:15:00-01:00", false),
            ("Observation?date=2024-03-06", false),
            ("Observation?date=eq2024-03-05", true),
            ("Observation?date=ne2024-03-05", false),
            ("Observation?date=ne2024-03-06", true),
            ("Observation?date=gt2024-03-04", true),
            ("Observation?date=gt2024-03-05", false),
            ("Observation?date=gt2024-03-05T10:00Z", true),
            ("Observation?date=lt2024-03-06", true),
            ("Observation?date=lt2024-03-05", false),
            ("Observation?date=lt2024-03-05T10:30Z", true),
            ("Observation?date=ge2024-03-05", true),
            ("Observation?date=ge2024-03-06", false),
            ("Observation?date=le2024-03-05", true),
            ("Observation?date=le2024-03-04", false),
            ("Observation?date=sa2024-03-04", true),
            ("Observation?date=sa2024-03-05", false),
            ("Observation?date=eb2024-03-06", true),
            ("Observation?date=eb2024-03-05", false),
            ("Observation?date=lt2024-03-01,gt2024-03-04", true),
            ("Observation?date=ge2024-03-01&date=lt2024-04-01", true),
            ("Observation?date=ge2024-03-06&date=lt2024-04-01", false),
            ("Observation?date:missing=false", true),
            ("Observation?value-date:missing=true", true),
            ("Observation?value-date=2024", false),
            ("Observation?value-date=ne2024", false),
        ],
    );
}

#[test]
fn medication_request() {
    check(
        &fixtures::medication_request(),
        &[
            (
                "MedicationRequest?code=http://www.nlm.nih.gov/research/umls/rxnorm|1049502",
                true,
            ),
            ("MedicationRequest?code=1049503", false),
            ("MedicationRequest?code:text=12 hr oxy", true),
            ("MedicationRequest?status=active", true),
            ("MedicationRequest?status:not=active", false),
            ("MedicationRequest?intent=order,plan", true),
            ("MedicationRequest?intent=plan", false),
            ("MedicationRequest?category=outpatient", true),
            ("MedicationRequest?priority=stat", false),
            ("MedicationRequest?authoredon=2024-03-01", true),
            ("MedicationRequest?authoredon=gt2024-02", true),
            ("MedicationRequest?authoredon=lt2024-03-01", false),
            ("MedicationRequest?requester=Practitioner/prac1", true),
            (
                "MedicationRequest?intended-dispenser=Organization/pharm1",
                true,
            ),
            ("MedicationRequest?medication:missing=true", true),
            ("MedicationRequest?patient=Patient/123", true),
            ("MedicationRequest?subject=Patient/124", false),
            ("MedicationRequest?encounter=enc1", true),
            ("Observation?status=active", false),
        ],
    );
}

#[test]
fn patient_strings_and_contact_points() {
    check(
        &fixtures::patient(),
        &[
            ("Patient?name=mull", true),
            ("Patient?name=MÜLLER", true),
            ("Patient?name=M%C3%BCller", true),
            ("Patient?name=amel", true),
            ("Patient?name=amy", true),
            ("Patient?name=shaw", false),
            ("Patient?name=dr", true),
            ("Patient?name=smith,jo", true),
            ("Patient?name=smith", false),
            ("Patient?name:contains=shaw", true),
            ("Patient?name:contains=ELI", true),
            ("Patient?name:exact=Müller", true),
            ("Patient?name:exact=muller", false),
            ("Patient?name:exact=Mül", false),
            ("Patient?name:missing=false", true),
            ("Patient?family=müller", true),
            ("Patient?family=jo", false),
            ("Patient?given=jo", true),
            ("Patient?given:exact=Jo", true),
            ("Patient?given:exact=jo", false),
            ("Patient?address=springf", true),
            ("Patient?address=123 main", true),
            ("Patient?address=usa", true),
            ("Patient?address=chicago", false),
            ("Patient?address-city=Springfield", true),
            ("Patient?address-city:exact=springfield", false),
            ("Patient?address-postalcode=627", true),
            ("Patient?birthdate=1987-02-20", true),
            ("Patient?birthdate=1987", true),
            ("Patient?birthdate=lt1990", true),
            ("Patient?birthdate=gt1987-02-20", false),
            ("Patient?birthdate=ge1987-02-20", true),
            ("Patient?gender=female", true),
            ("Patient?gender=male", false),
            ("Patient?active=true", true),
            ("Patient?active=false", false),
            ("Patient?telecom=555-0100", true),
            ("Patient?telecom=|555-0100", true),
            ("Patient?telecom=phone|555-0100", false),
            ("Patient?phone=555-0100", true),
            ("Patient?email=555-0100", false),
            ("Patient?email=amy@example.org", true),
            (
                "Patient?identifier=http://hospital.example.org/mrn|MRN-12345",
                true,
            ),
            ("Patient?identifier=|MRN-12345", false),
            ("Patient?identifier=http://hospital.example.org/mrn|", true),
            ("Patient?general-practitioner=Practitioner/prac1", true),
            ("Patient?organization=Organization/org1", true),
            ("Patient?organization=Organization/org2", false),
            ("Patient?link:missing=true", true),
            ("Patient?_id=123", true),
        ],
    );
}

#[test]
fn encounter_period() {
    check(
        &fixtures::encounter("in-progress"),
        &[
            ("Encounter?status=in-progress", true),
            ("Encounter?class=AMB", true),
            (
                "Encounter?class=http://terminology.hl7.org/CodeSystem/v3-ActCode|AMB",
                true,
            ),
            ("Encounter?class:text=ambu", true),
            ("Encounter?type=http://snomed.info/sct|185349003", true),
            ("Encounter?date=2024-03-05", true),
            ("Encounter?date=2024-03-05T10:00:00Z", false),
            ("Encounter?date=ge2024-03-05T10:00:00Z", true),
            ("Encounter?date=gt2024-03-05T11:00:00Z", false),
            ("Encounter?date=lt2024-03-05T10:00Z", true),
            ("Encounter?date=lt2024-03-05T09:00Z", false),
            ("Encounter?date=sa2024-03-04", true),
            ("Encounter?date=sa2024-03-05T08:00Z", true),
            ("Encounter?date=sa2024-03-05T09:00Z", false),
            // the end "11:00:00Z" covers that whole second
            ("Encounter?date=eb2024-03-05T11:01Z", true),
            ("Encounter?date=eb2024-03-05T11:00Z", false),
            ("Encounter?date=ne2024-03-05T10:00Z", true),
            ("Encounter?practitioner=prac1", true),
            ("Encounter?participant=Practitioner/prac1", true),
            ("Encounter?location=Location/loc1", true),
            ("Encounter?service-provider=Organization/org1", true),
            ("Encounter?patient:Patient=123", true),
            ("Encounter?subject:identifier=x", false),
        ],
    );
}

#[test]
fn diagnostic_report_open_period() {
    check(
        &fixtures::diagnostic_report(),
        &[
            ("DiagnosticReport?date=gt2024-03-05", true),
            ("DiagnosticReport?date=2024-03-05", false),
            ("DiagnosticReport?date=ge2024-03-05", true),
            ("DiagnosticReport?date=le2024-03-04", false),
            ("DiagnosticReport?date=lt2024-03-06", true),
            ("DiagnosticReport?date=lt2024-03-05", false),
            ("DiagnosticReport?date=sa2024-03-04", true),
            ("DiagnosticReport?date=ne2024-03-05", true),
            ("DiagnosticReport?issued=2024-03-05", true),
            ("DiagnosticReport?result=Observation/obs1", true),
            ("DiagnosticReport?result=obs1", true),
            ("DiagnosticReport?conclusion=281900007", true),
            ("DiagnosticReport?code=http://loinc.org|58410-2", true),
            ("DiagnosticReport?category=LAB", true),
            ("DiagnosticReport?patient=Patient/123", true),
        ],
    );
}

#[test]
fn wrong_resource_type_never_matches() {
    let q = SearchQuery::parse("Observation").unwrap();
    assert_eq!(q.resource_type(), "Observation");
    assert!(!q.matches(&fixtures::patient()));
    assert!(!q.matches(&json!({"id": "x"})));
}

#[test]
fn parse_for_type_and_parameter_names() {
    let q = SearchQuery::parse_for_type(
        "Encounter",
        "status:not=finished&subject=Patient/1&status=x",
    )
    .unwrap();
    assert_eq!(q.resource_type(), "Encounter");
    assert_eq!(
        q.parameter_names(),
        vec!["status".to_owned(), "subject".to_owned()]
    );
    assert!(SearchQuery::parse_for_type("Encounter", "?status=finished")
        .unwrap()
        .matches(&fixtures::encounter("finished")));
    let err = SearchQuery::parse_for_type("Nope", "status=x").unwrap_err();
    assert_eq!(err.message(), "unknown resource type 'Nope'");
}

#[test]
fn compile_errors_name_the_offending_part() {
    let cases: &[(&str, &str)] = &[
        (
            "Observation?foo=bar",
            "unknown search parameter 'foo' for Observation",
        ),
        ("Foo?x=1", "unknown resource type 'Foo'"),
        ("Foo", "unknown resource type 'Foo'"),
        (
            "Observation?code:below=x",
            "modifier ':below' on 'code' is not supported",
        ),
        (
            "Observation?code:above=x",
            "modifier ':above' on 'code' is not supported",
        ),
        (
            "Observation?code:in=http://vs",
            "modifier ':in' on 'code' is not supported",
        ),
        (
            "Observation?code:not-in=http://vs",
            "modifier ':not-in' on 'code' is not supported",
        ),
        (
            "Observation?identifier:of-type=a|b",
            "':of-type' value 'a|b' for 'identifier' must be 'type-system|type-code|value'",
        ),
        (
            "Observation?code:in=http://vs",
            "it needs a terminology service, which Herald does not have",
        ),
        (
            "Observation?code:not-in=http://vs",
            "modifier ':not-in' on 'code' is not supported: it needs a terminology service",
        ),
        (
            "Observation?code:exact=x",
            "modifier ':exact' on 'code' is not supported",
        ),
        (
            "Observation?value-string:text=x",
            "modifier ':text' on 'value-string' is not supported",
        ),
        (
            "Observation?date:exact=2024",
            "modifier ':exact' on 'date' is not supported",
        ),
        (
            "Observation?subject:below=x",
            "modifier ':below' on 'subject' is not supported",
        ),
        (
            "Observation?_source:contains=x",
            "modifier ':contains' on '_source' is not supported",
        ),
        (
            "Observation?subject.name=x",
            "'subject' may point at",
        ),
        (
            "Observation?code.name=x",
            "only reference parameters can be chained",
        ),
        (
            "Observation?subject:Medication.code=x",
            "'Medication' is not a target type of reference parameter 'subject'",
        ),
        (
            "Observation?subject:Nope.name=x",
            "':Nope' is not a resource type",
        ),
        (
            "Observation?subject:Patient.nope=x",
            "unknown search parameter 'nope' for Patient",
        ),
        (
            "Observation?subject:Patient.organization.partof.name=x",
            "has more than 3 links",
        ),
        (
            "Patient?_has:Observation:patient=1234",
            "'_has' needs the form",
        ),
        (
            "Patient?_has:Nope:patient:code=1234",
            "'_has': unknown resource type 'Nope'",
        ),
        (
            "Patient?_has:Observation:code:status=final",
            "'code' is not a reference parameter",
        ),
        (
            "Patient?_has:Observation:encounter:status=final",
            "'encounter' cannot point at Patient",
        ),
        (
            "Patient?_has:Observation:patient:_has:Encounter:patient:status=x",
            "nested '_has' is not supported",
        ),
        ("Observation?_type=Nope", "'_type': unknown resource type 'Nope'"),
        ("Observation?_query=x", "'_query' is not supported yet"),
        ("Observation?_text=x", "'_text' is not supported yet"),
        ("Observation?_content=x", "'_content' is not supported yet"),
        ("Observation?_list=x", "'_list' is not supported yet"),
        (
            "Observation?_include=Observation:subject",
            "result parameter '_include' has no meaning in subscription criteria",
        ),
        (
            "Observation?_revinclude=Provenance:target",
            "result parameter '_revinclude' has no meaning in subscription criteria",
        ),
        (
            "Observation?_sort=date",
            "result parameter '_sort' has no meaning",
        ),
        (
            "Observation?_count=10",
            "result parameter '_count' has no meaning",
        ),
        (
            "Observation?_elements=id",
            "result parameter '_elements' has no meaning",
        ),
        (
            "Observation?_summary=true",
            "result parameter '_summary' has no meaning",
        ),
        (
            "Observation?_total=none",
            "result parameter '_total' has no meaning",
        ),
        (
            "Observation?_contained=true",
            "result parameter '_contained' has no meaning",
        ),
        (
            "Observation?_containedType=container",
            "result parameter '_containedType' has no meaning",
        ),
        (
            "Observation?value-quantity=xx5",
            "unknown prefix 'xx' on quantity parameter 'value-quantity'",
        ),
        (
            "RiskAssessment?probability=zz0.5",
            "unknown prefix 'zz' on number parameter 'probability'",
        ),
        (
            "Observation?date=xx2024",
            "unknown prefix 'xx' on date parameter 'date'",
        ),
        (
            "Observation?date=2024-13",
            "invalid date '2024-13' for parameter 'date'",
        ),
        (
            "Encounter?date=2024-03-05T09",
            "invalid date '2024-03-05T09' for parameter 'date'",
        ),
        (
            "Observation?date:missing=maybe",
            "':missing' on 'date' needs 'true' or 'false'",
        ),
        (
            "Observation?value-quantity=5.4.1",
            "invalid number '5.4.1' for parameter 'value-quantity'",
        ),
        (
            "Observation?value-quantity=1e2",
            "exponents are not supported",
        ),
        (
            "Observation?value-quantity=5|a|b|c",
            "quantity value '5|a|b|c' for 'value-quantity' must be",
        ),
        (
            "Observation?value-quantity=5|http://unitsofmeasure.org|",
            "must be '[prefix]number', 'number||code' or 'number|system|code'",
        ),
        (
            "Observation?value-quantity:exact=5",
            "modifier ':exact' on 'value-quantity' is not supported",
        ),
        (
            "RiskAssessment?probability=gt1x",
            "invalid number '1x' for parameter 'probability'",
        ),
        (
            "RiskAssessment?probability:missing=maybe",
            "':missing' on 'probability' needs 'true' or 'false'",
        ),
        (
            "Observation?code-value-quantity=x",
            "composite value 'x' for 'code-value-quantity' needs 2 '$'-separated components, got 1",
        ),
        (
            "Observation?code-value-quantity=a$b$c",
            "needs 2 '$'-separated components, got 3",
        ),
        (
            "Observation?code-value-quantity=http://loinc.org|8480-6$",
            "has an empty component",
        ),
        (
            "Observation?code-value-quantity=http://loinc.org|8480-6$xx100",
            "unknown prefix 'xx' on quantity parameter 'value-quantity'",
        ),
        (
            "Observation?code-value-quantity:exact=a$1",
            "modifier ':exact' on 'code-value-quantity' is not supported",
        ),
        (
            "Observation?code-value-date=a$2024-13",
            "invalid date '2024-13' for parameter 'value-date'",
        ),
        (
            "Location?near=42.25|-83.69|10|km",
            "search parameter 'near' of Location is not supported: 'near' is a special search parameter",
        ),
        (
            "Encounter?length=1|a|b|c",
            "quantity value '1|a|b|c' for 'length' must be",
        ),
        ("Observation?code=", "parameter 'code' has an empty value"),
        (
            "Observation?code:not=",
            "parameter 'code:not' has an empty value",
        ),
        (
            "Observation?code=a,,b",
            "parameter 'code' has an empty value in 'a,,b'",
        ),
        ("Observation?code=a,", "parameter 'code' has an empty value"),
        ("Observation?code", "parameter 'code' has no value"),
        ("Observation?=x", "parameter without a name"),
        (
            "Observation?code=a|b|c",
            "token value 'a|b|c' for 'code' has more than one '|'",
        ),
        (
            "Observation?code=|",
            "token value '|' for 'code' has neither system nor code",
        ),
        (
            "Observation?subject=Patient/",
            "invalid reference value 'Patient/' for 'subject'",
        ),
        (
            "Observation?patient=Group/1",
            "'Group' is not a target type of reference parameter 'patient'",
        ),
        (
            "Observation?patient:Group=1",
            "'Group' is not a target type of reference parameter 'patient'",
        ),
        (
            "Observation?subject:Patient=Group/1",
            "reference value 'Group/1' contradicts modifier ':Patient' on 'subject'",
        ),
        (
            "Observation?subject:Patient=urn:uuid:1",
            "cannot be combined with modifier ':Patient'",
        ),
        ("Observation?%FF=1", "is not valid UTF-8"),
        (
            "http://x/fhir/Observation?code=1",
            "absolute criteria URLs are not supported",
        ),
        (
            "https://x/fhir/Observation",
            "absolute criteria URLs are not supported",
        ),
        (
            "Observation/123",
            "the path 'Observation/123' is not supported",
        ),
        (
            "Observation/_search?code=x",
            "the path 'Observation/_search' is not supported",
        ),
        ("", "criteria is empty"),
        ("   ", "criteria is empty"),
        ("?code=x", "criteria has no resource type"),
        (
            "Patient?name:missing=true&name:below=x",
            "modifier ':below' on 'name' is not supported",
        ),
    ];
    let mut failures = Vec::new();
    for (criteria, expected) in cases {
        match SearchQuery::parse(criteria) {
            Ok(_) => failures.push(format!(
                "{criteria}: compiled, expected error containing {expected:?}"
            )),
            Err(e) => {
                if !e.message().contains(expected) || e.to_string() != e.message() {
                    failures.push(format!(
                        "{criteria}: got {:?}, expected {expected:?}",
                        e.message()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

#[test]
fn hostile_json_never_matches_or_panics() {
    let hostile = json!({
        "resourceType": "Observation",
        "id": 5,
        "meta": [],
        "status": {"code": 1},
        "code": [1, null, {"coding": "x"}, {"coding": [null, 3, {"code": 7}]}],
        "subject": {"reference": 5, "type": ["Patient"]},
        "performer": [{"reference": "Practitioner/"}, {"reference": "/"}, {"reference": "a/b/c/d/_history"}],
        "effectiveDateTime": "garbage",
        "effectivePeriod": {"start": 1, "end": "2024-99"},
        "specimen": {"identifier": [1, 2]},
        "category": {"text": ["x"]}
    });
    for criteria in [
        "Observation?status=final",
        "Observation?code=7",
        "Observation?code:text=x",
        "Observation?subject=Patient/5",
        "Observation?performer=Practitioner/x",
        "Observation?date=2024",
        "Observation?date=ne2024",
        "Observation?specimen:identifier=1",
        "Observation?category:text=x",
        "Observation?_id=5",
        "Observation?_lastUpdated=2024",
    ] {
        let q = SearchQuery::parse(criteria).unwrap();
        assert!(!q.matches(&hostile), "{criteria}");
    }
    let q = SearchQuery::parse("Observation?status:not=final").unwrap();
    assert!(q.matches(&hostile));
    for v in [
        json!(null),
        json!([]),
        json!("Observation"),
        json!(1),
        json!({"resourceType": 1}),
    ] {
        assert!(!SearchQuery::parse("Observation").unwrap().matches(&v));
    }
}

#[test]
fn numbers_quantities_composites_and_prefixes() {
    let blood_pressure = json!({
        "resourceType": "Observation",
        "id": "bp",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "identifier": [{
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "FILL"}]},
            "system": "http://lab.example.org/orders",
            "value": "ORD-7"
        }],
        "effectiveDateTime": "2001-06-15",
        "component": [
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {"value": 107, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}
            },
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                "valueQuantity": {"value": 60.25, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}
            },
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "9999-9"}]},
                "valueQuantity": {"value": 5, "comparator": "<", "unit": "mmHg"}
            }
        ]
    });
    check(
        &blood_pressure,
        &[
            // quantity on components: precision, units, prefixes
            ("Observation?component-value-quantity=107", true),
            ("Observation?component-value-quantity=107.4", false),
            ("Observation?component-value-quantity=60.3", true),
            ("Observation?component-value-quantity=60.25", true),
            ("Observation?component-value-quantity=60.2", false),
            ("Observation?component-value-quantity=107|http://unitsofmeasure.org|mm[Hg]", true),
            ("Observation?component-value-quantity=107|http://unitsofmeasure.org|mmHg", false),
            ("Observation?component-value-quantity=107||mmHg", true),
            ("Observation?component-value-quantity=107||mm[Hg]", true),
            ("Observation?component-value-quantity=107||kPa", false),
            ("Observation?component-value-quantity=gt106.9", true),
            ("Observation?component-value-quantity=gt107", false),
            ("Observation?component-value-quantity=ap100", true),
            ("Observation?component-value-quantity=ap95", false),
            // the '<5' component has no exact value
            ("Observation?component-value-quantity=5", false),
            ("Observation?component-value-quantity=le5", false),
            ("Observation?value-quantity=107", false),
            ("Observation?combo-value-quantity=107", true),
            // composites: both components on the same component element
            ("Observation?component-code-value-quantity=http://loinc.org|8480-6$gt100", true),
            ("Observation?component-code-value-quantity=http://loinc.org|8480-6$lt100", false),
            ("Observation?component-code-value-quantity=http://loinc.org|8462-4$gt100", false),
            ("Observation?component-code-value-quantity=8462-4$lt61", true),
            ("Observation?component-code-value-quantity=x$1,8480-6$107", true),
            ("Observation?combo-code-value-quantity=8480-6$107", true),
            ("Observation?code-value-quantity=8480-6$107", false),
            // :of-type
            ("Observation?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|FILL|ORD-7", true),
            ("Observation?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|PLAC|ORD-7", false),
            ("Observation?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|FILL|ORD-8", false),
            // date ap: 10 % of the gap to now, well over a year for 2000
            ("Observation?date=ap2000-06-15", true),
            ("Observation?date=ap2001-06-15", true),
            ("Observation?date=ap1990", false),
        ],
    );
}

#[test]
fn chained_parameters_read_the_resolved_referenced_resource() {
    use herald_criteria::{with_resolved, ResolvedReferences};
    let observation = json!({"resourceType": "Observation", "status": "final",
        "subject": {"reference": "Patient/p1"}, "performer": [{"reference": "Practitioner/d1"}]});
    let mut resolved = ResolvedReferences::new();
    resolved.insert(
        "Patient/p1".into(),
        json!({"resourceType": "Patient", "id": "p1", "identifier": [{"system": "http://mrn", "value": "123"}],
            "name": [{"family": "Chalmers"}], "managingOrganization": {"reference": "Organization/o1"}}),
    );
    resolved.insert(
        "Organization/o1".into(),
        json!({"resourceType": "Organization", "id": "o1", "name": "Good Health Clinic"}),
    );
    let cases = [
        (
            "Observation?subject:Patient.identifier=http://mrn|123",
            true,
        ),
        (
            "Observation?subject:Patient.identifier=http://mrn|999",
            false,
        ),
        ("Observation?patient.identifier=http://mrn|123", true),
        ("Observation?subject:Patient.name=chal", true),
        ("Observation?subject:Patient.name:exact=chal", false),
        ("Observation?subject:Patient.organization.name=good", true),
        ("Observation?subject:Patient.organization.name=bad", false),
        ("Observation?subject:Group.identifier=x", false),
        ("Observation?performer:Practitioner.name=x", false),
        (
            "Observation?subject:Patient.identifier=http://mrn|123&status=final",
            true,
        ),
    ];
    for (criteria, expected) in cases {
        let query = SearchQuery::parse(criteria).unwrap_or_else(|e| panic!("{criteria}: {e}"));
        assert!(query.uses_chains(), "{criteria}");
        let (matched, _) = with_resolved(resolved.clone(), || query.matches(&observation));
        assert_eq!(matched, expected, "{criteria}");
        // Without the referenced resources a chain fails closed.
        assert!(!query.matches(&observation), "{criteria} unresolved");
    }
}

#[test]
fn has_reads_the_resolved_resources_that_point_at_the_focus_and_type_checks_the_type() {
    use herald_criteria::{referencing_key, with_resolved, ResolvedReferences};
    let patient = json!({"resourceType": "Patient", "id": "p1"});
    let mut resolved = ResolvedReferences::new();
    resolved.insert(
        referencing_key("Observation", "patient", "Patient/p1"),
        json!([
            {"resourceType": "Observation", "status": "final", "subject": {"reference": "Patient/p1"},
             "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}}
        ]),
    );
    for (criteria, expected) in [
        ("Patient?_has:Observation:patient:code=2345-7", true),
        (
            "Patient?_has:Observation:patient:code=http://loinc.org|2345-7",
            true,
        ),
        ("Patient?_has:Observation:patient:code=1234-5", false),
        ("Patient?_has:Observation:patient:status:not=final", false),
        ("Patient?_has:Observation:subject:code=2345-7", false),
        ("Patient?_type=Patient", true),
        ("Patient?_type=Group,Patient", true),
        ("Patient?_type=Group", false),
    ] {
        let query = SearchQuery::parse(criteria).unwrap_or_else(|e| panic!("{criteria}: {e}"));
        let (matched, _) = with_resolved(resolved.clone(), || query.matches(&patient));
        assert_eq!(matched, expected, "{criteria}");
        if criteria.contains("_has") {
            assert!(
                !query.matches(&patient),
                "{criteria} unresolved fails closed"
            );
        }
    }
}
