//! The evaluator's shortcuts for the common criteria shapes (`path = 'text'` and
//! logical operators evaluated without collections, property lookup by scanning
//! small objects) give the same answers as the general paths.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use herald_fhirpath::{Env, Expression};
use serde_json::{json, Value};

fn answer(expression: &str, resource: &Value) -> Result<Option<bool>, String> {
    Expression::parse(expression)
        .unwrap()
        .evaluate_boolean(resource, &Env::new())
        .map_err(|e| e.to_string())
}

#[test]
fn string_literal_equality_matches_the_general_comparison() {
    let observation = json!({
        "resourceType": "Observation",
        "status": "final",
        "issued": "2024-01-02T03:04:05Z",
        "birthDate": "2024-01-02",
        "category": [{"coding": [{"code": "laboratory"}, {"code": "vital-signs"}]}],
        "code": {"text": "Glucose"},
        "valueInteger": 4,
        "_status": {"id": "s1"}
    });
    let lefts = [
        "status",
        "issued",
        "birthDate",
        "category.coding.code",
        "category.coding.code.first()",
        "valueInteger",
        "missing",
        "code",
    ];
    let literals = [
        "'final'",
        "'amended'",
        "'2024-01-02T03:04:05Z'",
        "'2024-01-02'",
        "'laboratory'",
        "'4'",
        "''",
    ];
    for left in lefts {
        for literal in literals {
            for op in ["=", "!="] {
                let shortcut = answer(&format!("{left} {op} {literal}"), &observation);
                let general = answer(&format!("{literal} {op} {left}"), &observation);
                assert_eq!(shortcut, general, "{left} {op} {literal}");
            }
        }
    }
}

#[test]
fn logical_operators_keep_three_valued_logic() {
    let resource = json!({"resourceType": "Observation", "status": "final"});
    for (expression, expected) in [
        ("status = 'final' and status != 'amended'", Some(true)),
        ("missing = 'x' and status = 'final'", None),
        ("missing = 'x' and status = 'amended'", Some(false)),
        ("missing = 'x' or status = 'final'", Some(true)),
        ("missing = 'x' or status = 'amended'", None),
        ("status = 'final' xor status = 'amended'", Some(true)),
        ("missing = 'x' implies status = 'amended'", None),
        ("status = 'amended' implies missing = 'x'", Some(true)),
        (
            "(status = 'final' or status = 'amended') and status.exists()",
            Some(true),
        ),
    ] {
        assert_eq!(answer(expression, &resource), Ok(expected), "{expression}");
    }
    // A multi-item operand is still an error, inside logical operators too.
    let two = json!({"resourceType": "Patient", "name": [{"given": ["a", "b"]}]});
    assert!(answer("name.given and true", &two).is_err());
}

#[test]
fn properties_and_primitive_extensions_of_small_and_large_objects() {
    let mut small = serde_json::Map::new();
    small.insert("resourceType".into(), json!("Patient"));
    small.insert("gender".into(), json!("female"));
    small.insert("_gender".into(), json!({"id": "g1"}));
    small.insert("_birthDate".into(), json!({"id": "b1"}));
    let mut large = small.clone();
    for i in 0..40 {
        large.insert(format!("x{i}"), json!(i));
    }
    for map in [small, large] {
        let resource = Value::Object(map);
        for (expression, expected) in [
            ("gender = 'female'", Some(true)),
            ("gender.id = 'g1'", Some(true)),
            ("birthDate.id = 'b1'", Some(true)),
            ("birthDate.hasValue()", Some(false)),
            ("nothing.exists()", Some(false)),
        ] {
            assert_eq!(answer(expression, &resource), Ok(expected), "{expression}");
        }
    }
}

#[test]
fn variable_paths_where_and_exists() {
    let current = json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {"coding": [{"code": "vital-signs"}]},
            {"coding": [{"code": "laboratory"}, {"code": "laboratory"}]}
        ]
    });
    let mut env = Env::new();
    env.insert("current".into(), current.clone());
    env.insert("previous".into(), Value::Null);
    env.insert(
        "both".into(),
        json!([{"status": "final"}, {"status": "amended"}]),
    );
    // A variable named like a built-in constant does not shadow it.
    env.insert("resource".into(), json!({"status": "shadow"}));
    let root = json!({"resourceType": "Patient", "status": "root"});
    let answer = |expression: &str| {
        Expression::parse(expression)
            .unwrap()
            .evaluate(&root, &env)
            .map(|items| items.iter().map(|i| i.to_json()).collect::<Vec<_>>())
            .unwrap()
    };
    assert_eq!(answer("%current.status"), vec![json!("final")]);
    assert_eq!(answer("%previous.status"), Vec::<Value>::new());
    assert_eq!(
        answer("%both.status"),
        vec![json!("final"), json!("amended")]
    );
    assert_eq!(answer("%resource.status"), vec![json!("root")]);
    assert_eq!(
        answer("%current.category.coding.where(code = 'laboratory').code"),
        vec![json!("laboratory"), json!("laboratory")]
    );
    assert_eq!(
        answer("%current.category.coding.where(code = 'laboratory').exists()"),
        vec![json!(true)]
    );
    assert_eq!(
        answer("%current.category.coding.where(code = 'x').exists() or %previous.exists()"),
        vec![json!(false)]
    );
    // Two items as a logical operand are an error, as before.
    let two = Expression::parse("%current.category.coding.where(code = 'laboratory') and true")
        .unwrap()
        .evaluate(&root, &env);
    assert!(two.is_err());
}
