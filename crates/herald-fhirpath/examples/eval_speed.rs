//! Prints FHIRPath evaluation speed on JSON for a topic-style criteria and a
//! search-parameter-style path. Run: `cargo run --release -p herald-fhirpath --example eval_speed`.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use herald_fhirpath::Expression;
use serde_json::json;

fn main() {
    let current = json!({"resourceType": "Encounter", "id": "e1", "status": "finished",
        "subject": {"reference": "Patient/123"}, "period": {"start": "2024-03-05T09:00:00Z"}});
    let previous = json!({"resourceType": "Encounter", "id": "e1", "status": "in-progress"});
    let cases = [
        ("encounter-complete", "(%previous.id.empty() or (%previous.status != 'finished')) and (%current.status = 'finished')"),
        ("search-param path", "Encounter.subject.where(resolve() is Patient or reference.startsWith('Patient/')).reference"),
    ];
    for (name, source) in cases {
        let expression = Expression::parse(source).unwrap();
        let variables = [("current", &current), ("previous", &previous)];
        let iterations = 200_000;
        let start = Instant::now();
        let mut fired = 0usize;
        for _ in 0..iterations {
            fired += expression
                .evaluate_with_variables(&current, &variables)
                .unwrap()
                .len();
        }
        let elapsed = start.elapsed();
        println!(
            "{name}: {:.0} evaluations/s on one core ({:.2} µs each, {fired} results)",
            iterations as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64() * 1e6 / iterations as f64
        );
    }
}
