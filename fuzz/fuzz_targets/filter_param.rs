//! `_filter` expressions: `Observation?_filter=<input>` (and the same for Patient),
//! compiled and evaluated.
#![no_main]

use herald_criteria::SearchQuery;
use libfuzzer_sys::fuzz_target;

include!("resources.rs");

fuzz_target!(|data: &[u8]| {
    let Ok(expression) = std::str::from_utf8(data) else {
        return;
    };
    for resource_type in ["Observation", "Patient"] {
        if let Ok(query) = SearchQuery::parse(&format!("{resource_type}?_filter={expression}")) {
            let _ = query.equality_keys();
            for resource in resources() {
                let _ = query.matches(resource);
            }
        }
    }
});
