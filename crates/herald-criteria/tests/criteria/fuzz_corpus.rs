//! The cargo-fuzz inputs of the parsers this crate owns or calls (`fuzz/corpus/<target>`
//! seeds and any `fuzz/artifacts/<target>` regression inputs), run as an ordinary
//! test so CI catches a regression without nightly. Each body mirrors its fuzz target.

use std::path::{Path, PathBuf};

use herald_criteria::SearchQuery;
use herald_fhirpath::{Env, Expression};
use serde_json::Value;

use crate::fixtures;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Every input of `target`: seeds (which must exist) and regression artifacts.
fn inputs(target: &str) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for dir in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(dir).join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if let Ok(bytes) = std::fs::read(&path) {
                // The targets skip non-UTF-8 input too.
                if let Ok(text) = String::from_utf8(bytes) {
                    files.push((path, text));
                }
            }
        }
    }
    assert!(
        files.len() >= 3,
        "expected seed inputs under fuzz/corpus/{target}, found {}",
        files.len()
    );
    files
}

fn resources() -> [Value; 2] {
    [fixtures::observation(), fixtures::patient()]
}

#[test]
fn search_url_corpus() {
    let resources = resources();
    for (_, criteria) in inputs("search_url") {
        if let Ok(query) = SearchQuery::parse(&criteria) {
            let _ = query.equality_keys();
            let _ = query.parameter_names();
            for resource in &resources {
                let _ = query.matches(resource);
            }
        }
    }
}

#[test]
fn filter_param_corpus() {
    let resources = resources();
    let mut compiled = 0;
    for (_, expression) in inputs("filter_param") {
        for resource_type in ["Observation", "Patient"] {
            if let Ok(query) = SearchQuery::parse(&format!("{resource_type}?_filter={expression}"))
            {
                compiled += 1;
                let _ = query.equality_keys();
                for resource in &resources {
                    let _ = query.matches(resource);
                }
            }
        }
    }
    assert!(
        compiled > 0,
        "no seed compiled: the corpus no longer exercises evaluation"
    );
}

#[test]
fn fhirpath_parse_corpus() {
    let [observation, patient] = resources();
    let mut env = Env::new();
    env.insert("current".to_owned(), observation.clone());
    env.insert("previous".to_owned(), patient.clone());
    for (_, source) in inputs("fhirpath_parse") {
        let Ok(expression) = Expression::parse(&source) else {
            continue;
        };
        let _ = expression.evaluate_with_budget(&observation, &env, 20_000);
        let _ = expression.evaluate_boolean_with_variables(
            &observation,
            &[("current", &observation), ("previous", &patient)],
        );
    }
}
