//! `SearchQuery::parse` on arbitrary UTF-8, then everything a compiled query offers.
#![no_main]

use herald_criteria::SearchQuery;
use libfuzzer_sys::fuzz_target;

include!("resources.rs");

fuzz_target!(|data: &[u8]| {
    let Ok(criteria) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(query) = SearchQuery::parse(criteria) {
        let _ = query.equality_keys();
        let _ = query.parameter_names();
        for resource in resources() {
            let _ = query.matches(resource);
        }
    }
});
