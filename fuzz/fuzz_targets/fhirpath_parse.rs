//! herald-fhirpath: parse arbitrary expressions and evaluate the ones that compile on a
//! fixed resource, with `%current` / `%previous` bound, under a small step budget.
#![no_main]

use herald_fhirpath::{Env, Expression};
use libfuzzer_sys::fuzz_target;

include!("resources.rs");

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(expression) = Expression::parse(source) else {
        return;
    };
    let [observation, patient] = resources() else {
        return;
    };
    let mut env = Env::new();
    env.insert("current".to_owned(), observation.clone());
    env.insert("previous".to_owned(), patient.clone());
    let _ = expression.evaluate_with_budget(observation, &env, 20_000);
    let _ = expression.evaluate_boolean_with_variables(
        observation,
        &[("current", observation), ("previous", patient)],
    );
});
