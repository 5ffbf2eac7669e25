//! The `_filter` parameter: one match/no-match row per operator and type, the logical
//! operators, precedence, quoting and escapes, and an error row for every construct
//! that is rejected.

use herald_criteria::SearchQuery;
use serde_json::{json, Value};

use crate::fixtures;

/// `(filter expression, expected match)`; each expression is put into
/// `<type>?_filter=` unless it already is a full criteria string.
fn check(resource: &Value, cases: &[(&str, bool)]) {
    let resource_type = resource["resourceType"].as_str().unwrap_or_default();
    let mut failures = Vec::new();
    for (filter, expected) in cases {
        let criteria = if filter.starts_with(resource_type) {
            (*filter).to_owned()
        } else {
            format!("{resource_type}?_filter={filter}")
        };
        match SearchQuery::parse(&criteria) {
            Ok(q) => {
                if q.matches(resource) != *expected {
                    failures.push(format!("{criteria}: expected {expected}"));
                }
            }
            Err(e) => failures.push(format!("{criteria}: compile error: {e}")),
        }
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

#[test]
fn token_reference_uri_and_presence() {
    check(
        &fixtures::observation(),
        &[
            // token eq: code, system|code; case-sensitive like any token
            ("code eq 2345-7", true),
            ("code eq http://loinc.org|2345-7", true),
            ("code eq http://loinc.org|1234-5", false),
            ("code eq http://snomed.info/sct|2345-7", false),
            ("code eq http://loinc.org|", true),
            ("status eq final", true),
            ("status eq FINAL", false),
            // a comma is part of the value, not a list
            ("code eq 1111,2345-7", false),
            // ne: there is a value and none is equal
            ("status ne final", false),
            ("status ne preliminary", true),
            ("data-absent-reason ne unknown", false),
            // reference: re and eq
            ("subject re Patient/123", true),
            ("subject re Patient/1", false),
            ("subject eq Patient/123", true),
            ("patient re 123", true),
            ("subject ne Patient/1", true),
            ("subject ne Patient/123", false),
            // pr
            ("subject pr true", true),
            ("subject pr false", false),
            ("data-absent-reason pr false", true),
            ("data-absent-reason pr true", false),
            // uri: eq (a '|' in the value is literal), ss = :below, sb = :above
            ("_source eq http://lab.example.org/lis", true),
            ("_source eq http://lab.example.org", false),
            ("_source ss http://lab.example.org", true),
            ("_source ss http://other.example.org", false),
            ("_source sb http://lab.example.org/lis/v2", true),
            ("_source sb http://lab.example.org", false),
            (
                "_profile eq http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-lab|5.0.1",
                true,
            ),
            (
                "_profile eq http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-lab|6.1.0",
                false,
            ),
            ("_source ne http://lab.example.org/lis", false),
            ("_source ne http://other.example.org", true),
        ],
    );
}

#[test]
fn dates_use_the_search_prefixes_and_po_overlaps() {
    // effectiveDateTime 2024-03-05T10:15:00Z
    check(
        &fixtures::observation(),
        &[
            ("date eq 2024-03-05", true),
            ("date eq 2024-03-06", false),
            ("date ne 2024-03-06", true),
            ("date ne 2024", false),
            ("date gt 2024-01-01", true),
            ("date gt 2024-12-31", false),
            ("date lt 2024-01-01", false),
            ("date lt 2025", true),
            ("date ge 2024-03-05", true),
            ("date le 2024-03-04", false),
            ("date sa 2023", true),
            ("date sa 2024", false),
            ("date eb 2025", true),
            ("date eb 2024", false),
            ("date ge 2024-03-05T10:15:00Z", true),
            ("date po 2024", true),
            ("date po 2024-03", true),
            ("date po 2024-03-05T10:00:00Z", false),
            ("date po 2023", false),
            ("date pr true", true),
        ],
    );
    let period = json!({
        "resourceType": "Observation",
        "status": "final",
        "effectivePeriod": {"start": "2024-01-10", "end": "2024-02-20"}
    });
    check(
        &period,
        &[
            ("date po 2024-02", true),
            ("date po 2024-01-01", false),
            ("date po 2023-12", false),
            ("date po 2024", true),
            ("date eq 2024", true),
            ("date eq 2024-02", false),
        ],
    );
    let unparseable = json!({"resourceType": "Observation", "effectiveDateTime": "soon"});
    check(
        &unparseable,
        &[("date pr true", true), ("date po 2024", false)],
    );
}

#[test]
fn strings_compare_case_and_accent_insensitively() {
    // family "Müller", given ["Amélie", "Jo"], a nickname text "Amy Shaw"
    check(
        &fixtures::patient(),
        &[
            ("family eq Müller", true),
            ("family eq müller", true),
            ("family eq MULLER", true),
            // eq is equality, not the default starts-with
            ("family eq Mül", false),
            ("family eq Müllerson", false),
            ("family sw Mül", true),
            ("family sw ller", false),
            ("family co LL", true),
            ("family co xyz", false),
            ("family ew LER", true),
            ("family ew Mül", false),
            ("given eq amelie", true),
            ("given eq jo", true),
            ("given eq j", false),
            ("given ew LIE", true),
            ("name eq \"amy shaw\"", true),
            ("name co \"y sh\"", true),
            ("family ne muller", false),
            ("family ne Smith", true),
            ("family pr true", true),
            ("gender eq female", true),
            ("birthdate eq 1987-02-20", true),
            ("birthdate lt 1990", true),
            ("birthdate gt 1990", false),
        ],
    );
}

#[test]
fn quoted_values_and_escapes() {
    let patient = json!({
        "resourceType": "Patient",
        "name": [{"family": "D'Arcy \"The Bold\"", "given": ["Back\\slash", "Zoë", "a,b", "50%", "x|y", "(paren)"]}]
    });
    check(
        &patient,
        &[
            (r#"family eq "D'Arcy \"The Bold\"""#, true),
            (r#"family eq "d'arcy \"the bold\"""#, true),
            (r#"family eq "D'Arcy \"The""#, false),
            (r#"given eq "Back\\slash""#, true),
            (r#"given eq Back\slash"#, true),
            (r#"given eq "\u0042ack\\slash""#, true),
            (r#"given eq "Zo\u00eb""#, true),
            (r#"given eq "zoe""#, true),
            (r#"given eq "\/""#, false),
            ("given eq a,b", true),
            ("given eq a", false),
            ("Patient?_filter=given eq 50%25", true),
            ("given eq x|y", true),
            ("given eq \"(paren)\"", true),
            // an unquoted token ends at ')'
            ("(given eq x|y)", true),
        ],
    );
}

#[test]
fn and_or_not_parentheses_and_precedence() {
    check(
        &fixtures::observation(),
        &[
            // the issue's example, URL-encoded and not
            (
                "code eq http://loinc.org|1234-5 or (status eq final and subject re Patient/1)",
                false,
            ),
            (
                "code eq http://loinc.org|1234-5 or (status eq final and subject re Patient/123)",
                true,
            ),
            (
                "Observation?_filter=code%20eq%20http%3A%2F%2Floinc.org%7C1234-5%20or%20(status%20eq%20final%20and%20subject%20re%20Patient%2F123)",
                true,
            ),
            (
                "Observation?_filter=code%20eq%20http%3A%2F%2Floinc.org%7C1234-5%20or%20%28status%20eq%20final%20and%20subject%20re%20Patient%2F1%29",
                false,
            ),
            ("status eq final and code eq 2345-7", true),
            ("status eq final and code eq 1111", false),
            ("status eq preliminary or code eq 2345-7", true),
            ("status eq preliminary or code eq 1111", false),
            ("status eq final and code eq 2345-7 and subject re Patient/123", true),
            ("status eq final and code eq 2345-7 and subject re Patient/1", false),
            ("status eq x or code eq y or subject re Patient/123", true),
            // `and` binds tighter than `or`
            ("status eq preliminary and code eq 2345-7 or subject re Patient/123", true),
            ("subject re Patient/123 or status eq preliminary and code eq 1111", true),
            ("status eq preliminary and (code eq 2345-7 or subject re Patient/123)", false),
            ("(subject re Patient/123 or status eq preliminary) and code eq 1111", false),
            // not
            ("not(status eq final)", false),
            ("not (status eq preliminary)", true),
            ("not(not(status eq final))", true),
            ("not(status eq final) or code eq 2345-7", true),
            ("not(status eq final or code eq 1111)", false),
            ("not(status eq preliminary and code eq 2345-7)", true),
            ("not(data-absent-reason pr true)", true),
            // parentheses and spacing
            ("(status eq final)", true),
            ("((status eq final))", true),
            ("  status   eq   final  ", true),
            ("status\teq\tfinal", true),
            ("status eq final and(code eq 2345-7)", true),
            ("(status eq final)and(code eq 2345-7)", true),
            // combined with other parameters: ANDed
            ("Observation?status=final&_filter=code eq 2345-7", true),
            ("Observation?status=final&_filter=code eq 1111", false),
            ("Observation?status=preliminary&_filter=code eq 2345-7", false),
            ("Observation?_filter=status eq final&_filter=code eq 2345-7", true),
            ("Observation?_filter=status eq final&_filter=code eq 1111", false),
        ],
    );
}

#[test]
fn another_type_never_matches() {
    let q = SearchQuery::parse("Observation?_filter=not(status eq nothing)").unwrap();
    assert!(q.matches(&fixtures::observation()));
    assert!(!q.matches(&fixtures::patient()));
    // no equality keys: the subscription is found through the type's residual list
    assert!(q.equality_keys().is_empty());
    let q = SearchQuery::parse("Observation?code=2345-7&_filter=status eq final").unwrap();
    assert_eq!(
        q.equality_keys().len(),
        1,
        "the plain clause still gives its key"
    );
    assert_eq!(q.parameter_names(), vec!["code", "_filter"]);
}

fn expect_errors(cases: &[(&str, &str)]) {
    let mut failures = Vec::new();
    for (criteria, expected) in cases {
        let criteria = if criteria.contains('?') {
            (*criteria).to_owned()
        } else {
            format!("Observation?_filter={criteria}")
        };
        match SearchQuery::parse(&criteria) {
            Ok(_) => failures.push(format!("{criteria}: compiled")),
            Err(e) if e.message().contains(expected) => {}
            Err(e) => failures.push(format!(
                "{criteria}: got {:?}, expected {expected:?}",
                e.message()
            )),
        }
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

#[test]
fn malformed_expressions_are_rejected_with_a_position() {
    expect_errors(&[
        ("Observation?_filter=", "_filter: the expression is empty"),
        ("   ", "_filter: the expression is empty"),
        (
            "code",
            "expected an operator after 'code', found the end at character 5",
        ),
        ("code eq", "expected a value after 'code eq', found the end"),
        (
            "Observation?_filter=code eq &status=final",
            "expected a value, found 'the end' at character 9",
        ),
        (
            "code xx 1",
            "unknown operator 'xx' after 'code' (expected one of eq, ne, co",
        ),
        ("code EQ 1", "unknown operator 'EQ'"),
        (
            "code eq 1 AND status eq final",
            "expected 'and', 'or' or the end of the expression, found 'AND' at character 11",
        ),
        ("code eq 1 xor status eq final", "found 'xor'"),
        (
            "status eq final and",
            "expected a comparison, '(' or 'not', found the end at character 20",
        ),
        (
            "status eq final or ",
            "expected a comparison, '(' or 'not', found the end",
        ),
        ("and status eq final", "unknown operator 'status'"),
        ("(status eq final", "'(' is never closed at character 1"),
        ("status eq final)", "unmatched ')' at character 16"),
        (
            "()",
            "expected a comparison, '(' or 'not', found ')' at character 2",
        ),
        ("(status eq final))", "unmatched ')' at character 18"),
        (
            "not status eq final",
            "'not' must be followed by a parenthesised filter: 'not (...)' at character 1",
        ),
        ("not()", "found ')'"),
        (
            "status eq \"final",
            "the string starting here is never closed at character 11",
        ),
        (
            "status eq \"fi\\xnal\"",
            "unknown escape '\\x' in a string at character 14",
        ),
        (
            "status eq \"\\u12\"",
            "a '\\u' escape needs four hex digits",
        ),
        (
            "status eq \"\\ud800\"",
            "high surrogate must be followed by a low one",
        ),
        ("status eq \"\\udc00\"", "not a Unicode scalar value"),
        ("status eq \"final\" \"x\"", "found '\"x\"'"),
        (
            "1code eq 1",
            "expected a parameter name, '(' or 'not', found '1code' at character 1",
        ),
        (
            "status+eq+final",
            "found '+' ('+' is not decoded as a space in criteria; write %20) at character 7",
        ),
        (
            "status eq final and foo eq 1",
            "unknown search parameter 'foo' for Observation (in 'foo eq …' at character 21)",
        ),
        (
            "Observation?_filter=status%20eq%20final%20and%20foo%20eq%201",
            "at character 21",
        ),
        (
            "Observation?_filter:exact=status eq final",
            "modifier ':exact' on '_filter' is not supported",
        ),
        ("Observation?_filter=%FF", "not valid UTF-8"),
        ("status eq \"\"", "'status' has an empty value"),
    ]);
}

#[test]
fn unsupported_constructs_are_rejected_by_name() {
    expect_errors(&[
        // paths
        (
            "subject.name co pet",
            "chained parameter paths ('subject.…') are not supported at character 8",
        ),
        (
            "related[type eq has-component].target pr true",
            "filters inside parameter paths ('related[…]') are not supported at character 8",
        ),
        (
            "status:not eq final",
            "modifiers ('status:…') are not part of the _filter syntax",
        ),
        (
            "_filter eq x",
            "unknown search parameter '_filter' for Observation",
        ),
        // value sets and subsumption
        (
            "code in http://hl7.org/fhir/ValueSet/x",
            "operator 'in' (value-set membership) needs a terminology service",
        ),
        (
            "code ni http://hl7.org/fhir/ValueSet/x",
            "operator 'ni' (value-set membership)",
        ),
        (
            "code ss http://loinc.org|LP1",
            "operator 'ss' (subsumption) on token parameter 'code'",
        ),
        (
            "code sb http://loinc.org|LP1",
            "operator 'sb' (subsumption) on token parameter 'code'",
        ),
        // operators that do not apply to the type
        (
            "code co 2345",
            "operator 'co' is not supported on token parameter 'code'",
        ),
        (
            "status sw fin",
            "operator 'sw' is not supported on token parameter 'status'",
        ),
        (
            "status gt final",
            "operator 'gt' is not supported on token parameter 'status'",
        ),
        (
            "status re final",
            "operator 're' is not supported on token parameter 'status'",
        ),
        (
            "subject co Patient",
            "operator 'co' is not supported on reference parameter 'subject'",
        ),
        (
            "date co 2024",
            "operator 'co' is not supported on date parameter 'date'",
        ),
        (
            "date ss 2024",
            "operator 'ss' is not supported on date parameter 'date'",
        ),
        (
            "_source co lab",
            "operator 'co' is not supported on uri parameter '_source'",
        ),
        (
            "_source po 2024",
            "operator 'po' is not supported on uri parameter '_source'",
        ),
        (
            "Patient?_filter=family gt M",
            "operator 'gt' is not supported on string parameter 'family'",
        ),
        (
            "Patient?_filter=family re Patient/1",
            "operator 're' is not supported on string parameter 'family'",
        ),
        (
            "Patient?_filter=family ss M",
            "operator 'ss' is not supported on string parameter 'family'",
        ),
        // values the compiled clause refuses
        (
            "subject pr maybe",
            "operator 'pr' on 'subject' needs 'true' or 'false', got 'maybe'",
        ),
        ("date eq soon", "invalid date 'soon' for parameter 'date'"),
        ("date gt eq2024", "invalid date 'eq2024'"),
        (
            "subject re Encounter/1",
            "'Encounter' is not a target type of reference parameter 'subject'",
        ),
        ("code eq a|b|c", "has more than one '|'"),
    ]);
}

#[test]
fn size_and_depth_are_bounded() {
    let nested = |depth: usize| {
        format!(
            "Observation?_filter={}status eq final{}",
            "(".repeat(depth),
            ")".repeat(depth)
        )
    };
    assert!(SearchQuery::parse(&nested(32))
        .unwrap()
        .matches(&fixtures::observation()));
    let e = SearchQuery::parse(&nested(33)).unwrap_err();
    assert_eq!(
        e.message(),
        "_filter: the expression nests deeper than 32 levels of parentheses at character 33"
    );
    let nots = format!(
        "Observation?_filter={}status eq final{}",
        "not(".repeat(40),
        ")".repeat(40)
    );
    assert!(SearchQuery::parse(&nots)
        .unwrap_err()
        .message()
        .contains("nests deeper than 32 levels"));
    // Deep input that never closes is refused without recursing through all of it.
    let open = format!("Observation?_filter={}", "(".repeat(100_000));
    assert!(SearchQuery::parse(&open).is_err());

    // A long flat chain is fine up to the size bound (and does not nest).
    let term = "status eq x or ";
    let mut chain = term.repeat(4000 / term.len());
    chain.push_str("status eq final");
    assert!(chain.len() <= 4096);
    let q = SearchQuery::parse(&format!("Observation?_filter={chain}")).unwrap();
    assert!(q.matches(&fixtures::observation()));
    let too_long = format!("Observation?_filter={}status eq final", term.repeat(300));
    let e = SearchQuery::parse(&too_long).unwrap_err();
    assert!(
        e.message()
            .starts_with("_filter: the expression is 4515 bytes long; at most 4096"),
        "{}",
        e.message()
    );
}

#[test]
fn number_and_quantity_comparisons_use_the_search_prefixes() {
    let mut observation = fixtures::observation();
    observation["valueQuantity"] = json!({"value": 150, "system": "http://unitsofmeasure.org", "code": "mg/dL", "unit": "mg/dL"});
    check(
        &observation,
        &[
            ("value-quantity gt 100", true),
            ("value-quantity lt 100", false),
            ("value-quantity ge 150||mg/dL", true),
            (
                "value-quantity eq 150|http://unitsofmeasure.org|mmol/L",
                false,
            ),
            ("value-quantity ap 140", true),
            ("value-quantity ap 100", false),
            ("not(value-quantity gt 100) or code eq 2345-7", true),
        ],
    );
}
