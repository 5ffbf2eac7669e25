//! Bounds and API behaviour: hostile input is rejected or cut off, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use herald_fhirpath::{Env, Expression, FhirPathError, Item};
use serde_json::json;

fn env(pairs: &[(&str, serde_json::Value)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for depth in [65, 1_000, 10_000] {
        let parens = format!("{}1{}", "(".repeat(depth), ")".repeat(depth));
        assert!(Expression::parse(&parens).is_err(), "parens {depth}");
        let minus = format!("{}1", "-".repeat(depth));
        assert!(Expression::parse(&minus).is_err(), "unary {depth}");
        let calls = format!("{}1{}", "iif(true,".repeat(depth), ",0)".repeat(depth));
        assert!(Expression::parse(&calls).is_err(), "calls {depth}");
    }
    let chain = vec!["1"; 100].join(" + ");
    assert!(matches!(
        Expression::parse(&chain),
        Err(FhirPathError::TooComplex(_))
    ));
    assert!(Expression::parse(&format!("{}1{}", "(".repeat(30), ")".repeat(30))).is_ok());
}

#[test]
fn long_expressions_are_rejected() {
    let long = format!("'{}'", "a".repeat(9000));
    assert!(matches!(
        Expression::parse(&long),
        Err(FhirPathError::TooComplex(_))
    ));
}

#[test]
fn garbage_never_panics() {
    let samples = [
        "",
        "(",
        ")",
        "@",
        "@T",
        "%",
        "$",
        "$foo",
        "'",
        "`",
        "1..2",
        "a.",
        ".a",
        "a[",
        "a[]",
        "/*",
        "*/",
        "1 +",
        "@2020-13-01",
        "@T25:00",
        "\\u",
        "'\\u12'",
        "x.where(",
        "{",
        "{}}",
        "1 is",
        "1 as 2",
        "é",
        "a.b.c(1,,2)",
        "9999999999999999999999999999999999999999",
        "@2015-02-04T14:34:28+99:99",
        "true.not(1)",
        "'a'.matches('(')",
    ];
    let root = json!({"resourceType": "Patient"});
    for sample in samples {
        if let Ok(e) = Expression::parse(sample) {
            let _ = e.evaluate(&root, &Env::new());
        }
    }
    // Every prefix of a realistic expression, and byte soup.
    let text = "Patient.name.where(given.startsWith('P') and period.start <= @2020-01-01T00:00:00Z).select(family & ', ' & given.first()).count() > 1";
    for end in 0..=text.len() {
        if let Ok(e) = Expression::parse(&text[..end]) {
            let _ = e.evaluate(&root, &Env::new());
        }
    }
    let mut seed = 7u64;
    let alphabet = b"()[]{}.,'`@%$+-*/&|=!~<>0123456789aTZ: wherexistsnot";
    for _ in 0..2000 {
        let len = (seed % 40) as usize;
        let mut s = String::new();
        for _ in 0..len {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s.push(char::from(alphabet[(seed >> 33) as usize % alphabet.len()]));
        }
        if let Ok(e) = Expression::parse(&s) {
            let _ = e.evaluate(&root, &Env::new());
        }
    }
}

#[test]
fn runaway_evaluation_hits_the_budget() {
    let root = json!({"resourceType": "Patient", "a": [{"b": [1, 2, 3]}, {"b": [4, 5, 6]}]});
    let doubling = Expression::parse("'ab'.repeat($this + $this)").unwrap();
    assert!(doubling.evaluate(&root, &Env::new()).is_err());
    let nine = "(1|2|3|4|5|6|7|8|9)";
    let mut nested = "$this".to_owned();
    for _ in 0..7 {
        nested = format!("{nine}.select({nested})");
    }
    let exploding = Expression::parse(&nested).unwrap();
    assert_eq!(
        exploding.evaluate(&root, &Env::new()).err(),
        Some(FhirPathError::BudgetExceeded)
    );
    let replace = Expression::parse(&format!(
        "'abcdefghij'{}",
        ".replace('', 'abcdefghij')".repeat(6)
    ))
    .unwrap();
    assert!(replace.evaluate(&root, &Env::new()).is_err());
}

#[test]
fn terminology_functions_are_rejected_at_parse_time() {
    for expr in [
        "code.memberOf('http://x')",
        "%terminologies.expand('x')",
        "conformsTo('x')",
        "frobnicate()",
    ] {
        assert!(
            matches!(Expression::parse(expr), Err(FhirPathError::Unsupported(_))),
            "{expr}"
        );
    }
}

#[test]
fn environment_variables_and_boolean_evaluation() {
    let current = json!({"resourceType": "Encounter", "id": "e1", "status": "finished"});
    let previous = json!({"resourceType": "Encounter", "id": "e1", "status": "in-progress"});
    let expr = Expression::parse(
        "(%previous.id.empty() or (%previous.status != 'finished')) and (%current.status = 'finished')",
    )
    .unwrap();
    let both = env(&[("current", current.clone()), ("previous", previous)]);
    assert_eq!(expr.evaluate_boolean(&current, &both).unwrap(), Some(true));
    let created = env(&[
        ("current", current.clone()),
        ("previous", serde_json::Value::Null),
    ]);
    assert_eq!(
        expr.evaluate_boolean(&current, &created).unwrap(),
        Some(true)
    );
    let unchanged = env(&[("current", current.clone()), ("previous", current.clone())]);
    assert_eq!(
        expr.evaluate_boolean(&current, &unchanged).unwrap(),
        Some(false)
    );
    // An unbound variable is an error, not an empty collection.
    assert!(expr.evaluate_boolean(&current, &Env::new()).is_err());
    // Several items are not a boolean.
    let many = Expression::parse("(1 | 2)").unwrap();
    assert!(many.evaluate_boolean(&current, &Env::new()).is_err());
}

#[test]
fn fhir_json_specifics() {
    let obs = json!({
        "resourceType": "Observation",
        "status": "final",
        "valueQuantity": {"value": 185, "unit": "lbs", "system": "http://unitsofmeasure.org", "code": "[lb_av]"},
        "effectiveDateTime": "2024-03-01T10:00:00Z",
        "_status": {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}
    });
    let eval = |e: &str| -> Vec<serde_json::Value> {
        Expression::parse(e)
            .unwrap()
            .evaluate(&obs, &Env::new())
            .unwrap()
            .iter()
            .map(Item::to_json)
            .collect()
    };
    assert_eq!(
        eval("Observation.value.ofType(Quantity).value"),
        vec![json!(185)]
    );
    assert_eq!(eval("value is Quantity"), vec![json!(true)]);
    assert_eq!(eval("value > 180 '[lb_av]'"), vec![json!(true)]);
    assert_eq!(eval("effective > @2024-01-01"), vec![json!(true)]);
    assert_eq!(
        eval("status.extension('http://example.org/x').value"),
        vec![json!("y")]
    );
    assert_eq!(eval("Observation.is(DomainResource)"), vec![json!(true)]);
    assert_eq!(eval("Patient.name"), Vec::<serde_json::Value>::new());
    assert_eq!(
        eval("%resource.status | %context.status"),
        vec![json!("final")]
    );
}

#[test]
fn expressions_are_send_sync_clone() {
    fn check<T: Send + Sync + Clone + std::fmt::Debug>() {}
    check::<Expression>();
    check::<FhirPathError>();
}
