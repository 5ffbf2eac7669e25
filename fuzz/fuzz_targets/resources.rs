// Fixed resources the criteria targets evaluate against (shared by `include!`).

fn resources() -> &'static [serde_json::Value] {
    static RESOURCES: std::sync::OnceLock<Vec<serde_json::Value>> = std::sync::OnceLock::new();
    RESOURCES.get_or_init(|| {
        vec![
            serde_json::json!({
                "resourceType": "Observation",
                "id": "obs1",
                "meta": {"profile": ["http://example.org/p|1.0"], "source": "http://lab.example.org/lis"},
                "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}], "text": "Glucose"},
                "subject": {"reference": "Patient/123"},
                "effectivePeriod": {"start": "2024-03-05T10:15:00Z", "end": "2024-03-06"},
                "issued": "2024-03-05T11:00:00.000+01:00",
                "valueQuantity": {"value": 95, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"},
                "performer": [{"reference": "https://ehr.example.org/fhir/Practitioner/p1/_history/3"}],
                "identifier": [{"system": "http://lab.example.org/ids", "value": "LAB-001"}]
            }),
            serde_json::json!({
                "resourceType": "Patient",
                "id": "123",
                "name": [{"family": "Müller", "given": ["Amélie", "Jo"]}, {"text": "Amy Shaw"}],
                "birthDate": "1987-02-20",
                "gender": "female",
                "telecom": [{"system": "email", "value": "amy@example.org"}],
                "address": [{"city": "Springfield", "postalCode": "62701"}]
            }),
        ]
    })
}
