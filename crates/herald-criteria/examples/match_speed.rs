//! Evaluation speed of compiled search criteria on one Observation, single-threaded:
//! the per-event cost the matcher pays for a candidate subscription. Prints ns per
//! evaluation for typical criteria; compare runs before and after a change.
//!
//! `cargo run --release -p herald-criteria --example match_speed`

use std::hint::black_box;
use std::time::Instant;

use herald_criteria::SearchQuery;
use serde_json::json;

fn main() {
    let observation = json!({
        "resourceType": "Observation",
        "id": "obs1",
        "meta": {"lastUpdated": "2024-03-05T10:20:00Z", "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-lab"]},
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"}], "text": "Glucose"},
        "subject": {"reference": "Patient/123"},
        "encounter": {"reference": "Encounter/enc1"},
        "effectiveDateTime": "2024-03-05T10:15:00Z",
        "valueQuantity": {"value": 95, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"},
        "performer": [{"reference": "Practitioner/prac1"}]
    });
    let criteria = [
        "Observation?subject=Patient/123&category=laboratory",
        "Observation?code=http://loinc.org|2345-7",
        "Observation?patient=Patient/124",
        "Observation?status=final&date=ge2024-03-01",
        "Observation?_profile:below=http://hl7.org/fhir/us/core/",
    ];
    const ROUNDS: u32 = 2_000_000;
    for text in criteria {
        let query = SearchQuery::parse(text).expect("compiles");
        let start = Instant::now();
        let mut hits = 0_u32;
        for _ in 0..ROUNDS {
            hits += u32::from(black_box(&query).matches(black_box(&observation)));
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(ROUNDS);
        println!("{ns:8.1} ns  {text}  (matched {hits})");
    }
}
