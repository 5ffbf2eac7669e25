//! Realistic R4 resources shared by the tests.

use serde_json::{json, Value};

pub fn observation() -> Value {
    json!({
        "resourceType": "Observation",
        "id": "obs1",
        "meta": {
            "lastUpdated": "2024-03-05T10:20:00Z",
            "tag": [{"system": "http://example.org/tags", "code": "lab"}],
            "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-lab|5.0.1"],
            "source": "http://lab.example.org/lis"
        },
        "identifier": [{
            "type": {"text": "Lab accession"},
            "system": "http://lab.example.org/ids",
            "value": "LAB-001"
        }],
        "basedOn": [{"reference": "ServiceRequest/sr1"}],
        "status": "final",
        "category": [{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "laboratory",
                "display": "Laboratory"
            }],
            "text": "Laboratory"
        }],
        "code": {
            "coding": [{
                "system": "http://loinc.org",
                "code": "2345-7",
                "display": "Glucose [Mass/volume] in Serum or Plasma"
            }],
            "text": "Glucose"
        },
        "subject": {"reference": "Patient/123", "display": "Amy Shaw"},
        "encounter": {"reference": "Encounter/enc1"},
        "effectiveDateTime": "2024-03-05T10:15:00Z",
        "issued": "2024-03-05T11:00:00.000Z",
        "performer": [
            {"reference": "https://ehr.example.org/fhir/Practitioner/prac1/_history/3"},
            {"reference": "Organization/lab1"}
        ],
        "valueQuantity": {"value": 95, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"},
        "specimen": {
            "reference": "Specimen/sp1",
            "identifier": {"system": "http://lab.example.org/specimens", "value": "SP-1"}
        }
    })
}

pub fn medication_request() -> Value {
    json!({
        "resourceType": "MedicationRequest",
        "id": "mr1",
        "status": "active",
        "intent": "order",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
            "code": "outpatient"
        }]}],
        "priority": "routine",
        "medicationCodeableConcept": {"coding": [{
            "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
            "code": "1049502",
            "display": "12 HR Oxycodone Hydrochloride 10 MG Extended Release Oral Tablet"
        }]},
        "subject": {"reference": "Patient/123"},
        "encounter": {"reference": "Encounter/enc1"},
        "authoredOn": "2024-03-01",
        "requester": {"reference": "Practitioner/prac1"},
        "dispenseRequest": {"performer": {"reference": "Organization/pharm1"}}
    })
}

pub fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "123",
        "identifier": [{"system": "http://hospital.example.org/mrn", "value": "MRN-12345"}],
        "active": true,
        "name": [
            {"use": "official", "family": "Müller", "given": ["Amélie", "Jo"], "prefix": ["Dr."]},
            {"use": "nickname", "text": "Amy Shaw"}
        ],
        "telecom": [
            {"system": "phone", "value": "555-0100", "use": "home"},
            {"system": "email", "value": "amy@example.org"}
        ],
        "gender": "female",
        "birthDate": "1987-02-20",
        "address": [{
            "line": ["123 Main St"],
            "city": "Springfield",
            "state": "IL",
            "postalCode": "62701",
            "country": "USA"
        }],
        "generalPractitioner": [{"reference": "Practitioner/prac1"}],
        "managingOrganization": {"reference": "Organization/org1"}
    })
}

pub fn encounter(status: &str) -> Value {
    encounter_for(status, "Patient/123")
}

pub fn encounter_for(status: &str, subject: &str) -> Value {
    json!({
        "resourceType": "Encounter",
        "id": "enc1",
        "status": status,
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"},
        "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "185349003", "display": "Encounter for check up"}]}],
        "subject": {"reference": subject},
        "participant": [{"individual": {"reference": "Practitioner/prac1"}}],
        "period": {"start": "2024-03-05T09:00:00Z", "end": "2024-03-05T11:00:00Z"},
        "location": [{"location": {"reference": "Location/loc1"}}],
        "serviceProvider": {"reference": "Organization/org1"}
    })
}

pub fn diagnostic_report() -> Value {
    json!({
        "resourceType": "DiagnosticReport",
        "id": "dr1",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2", "display": "CBC panel"}]},
        "subject": {"reference": "Patient/123"},
        "effectivePeriod": {"start": "2024-03-05T08:00:00Z"},
        "issued": "2024-03-05T12:00:00Z",
        "result": [{"reference": "Observation/obs1"}],
        "conclusionCode": [{"coding": [{"system": "http://snomed.info/sct", "code": "281900007", "display": "No abnormality detected"}]}]
    })
}

pub fn all() -> Vec<Value> {
    vec![
        observation(),
        medication_request(),
        patient(),
        encounter("finished"),
        diagnostic_report(),
    ]
}
