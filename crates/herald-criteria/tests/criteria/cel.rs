//! CEL filters: bounds, fail-closed evaluation, and topic triggers carrying CEL.

use herald_criteria::{CelFilter, Interaction, TopicDefinition, CEL_CRITERIA_EXTENSION};
use serde_json::{json, Value};

use crate::fixtures::encounter;

fn event() -> Value {
    json!({"interaction": "update", "resourceType": "Encounter"})
}

#[test]
fn binds_current_previous_and_event() {
    let filter = CelFilter::compile(
        "current.status == 'finished' && (previous == null || previous.status != 'finished') && event.interaction == 'update'",
    )
    .unwrap();
    let finished = encounter("finished");
    let planned = encounter("planned");
    assert!(filter.matches(Some(&finished), Some(&planned), &event()));
    assert!(filter.matches(Some(&finished), None, &event()));
    assert!(!filter.matches(Some(&finished), Some(&finished), &event()));
    assert!(!filter.matches(Some(&planned), None, &event()));
    let lists = CelFilter::compile("current.participant.exists(p, p.individual.reference == 'Practitioner/prac1') && size(current.type) == 1").unwrap();
    assert!(lists.matches(Some(&finished), None, &event()));
}

#[test]
fn non_boolean_and_errors_do_not_match() {
    let finished = encounter("finished");
    for source in [
        "current.status",
        "current.nothing.deeper == 1",
        "1 / 0 == 1",
        "previous.status == 'x'",
        "current.id + 1 == 2",
    ] {
        let filter = CelFilter::compile(source).unwrap();
        assert!(!filter.matches(Some(&finished), None, &event()), "{source}");
    }
}

#[test]
fn rejects_oversized_and_deep_expressions_without_crashing() {
    // 10k levels (over the size limit) and 2k levels (under it: the nesting check
    // must stop it before the parser, which would overflow its stack).
    for depth in [10_000, 2_000] {
        let deep = format!("{}true{}", "(".repeat(depth), ")".repeat(depth));
        assert!(CelFilter::compile(&deep).is_err(), "{depth}");
    }
    let deep_lists = format!("{}1{}", "[".repeat(40), "]".repeat(40));
    assert!(CelFilter::compile(&deep_lists).is_err());
    let ternaries = format!("{}false", "true ? true : ".repeat(40));
    assert!(CelFilter::compile(&ternaries).is_err());
    let long = format!("current.id == '{}'", "x".repeat(5000));
    assert!(CelFilter::compile(&long)
        .unwrap_err()
        .message()
        .contains("limit is 4096"));
    let chain = vec!["1"; 500].join(" + ") + " == 500";
    assert!(CelFilter::compile(&chain).is_err());
    let members = format!("current{} == 1", ".a".repeat(300));
    assert!(CelFilter::compile(&members).is_err());
    let nested_macros = "current.type.all(a, current.type.all(b, current.type.all(c, true)))";
    assert!(CelFilter::compile(nested_macros)
        .unwrap_err()
        .message()
        .contains("list macros"));
    // Just inside the bounds compiles and runs.
    let ok = format!("{}true{}", "(".repeat(30), ")".repeat(30));
    assert!(CelFilter::compile(&ok)
        .unwrap()
        .matches(None, None, &event()));
    assert!(CelFilter::compile("").is_err());
    assert!(CelFilter::compile("current.status ==").is_err());
}

fn topic_with_cel(cel: &str) -> Result<TopicDefinition, herald_criteria::CriteriaError> {
    TopicDefinition::from_resource(&json!({
        "resourceType": "SubscriptionTopic",
        "url": "http://example.org/topic/cel",
        "status": "active",
        "resourceTrigger": [{
            "resource": "Encounter",
            "supportedInteraction": ["create", "update"],
            "queryCriteria": {"current": "status=finished"},
            "extension": [{"url": CEL_CRITERIA_EXTENSION, "valueString": cel}]
        }]
    }))
}

#[test]
fn topic_trigger_cel_extension_is_anded() {
    let topic = topic_with_cel(
        "current.subject.reference == 'Patient/123' && event.interaction == 'update'",
    )
    .unwrap();
    let finished = encounter("finished");
    let planned = encounter("planned");
    assert!(topic.triggers(
        Interaction::Update,
        "Encounter",
        Some(&finished),
        Some(&planned)
    ));
    // CEL false (interaction is create).
    assert!(!topic.triggers(Interaction::Create, "Encounter", Some(&finished), None));
    // Query criteria false.
    assert!(!topic.triggers(
        Interaction::Update,
        "Encounter",
        Some(&planned),
        Some(&finished)
    ));
    let err = topic_with_cel("current.status ==").unwrap_err();
    assert!(
        err.message()
            .contains("resourceTrigger[0] CEL criteria: CEL syntax error"),
        "{err}"
    );
    let duplicate = TopicDefinition::from_resource(&json!({
        "resourceType": "SubscriptionTopic",
        "url": "http://example.org/topic/cel",
        "resourceTrigger": [{
            "resource": "Encounter",
            "extension": [
                {"url": CEL_CRITERIA_EXTENSION, "valueString": "true"},
                {"url": CEL_CRITERIA_EXTENSION, "valueString": "false"}
            ]
        }]
    }));
    assert!(duplicate.unwrap_err().message().contains("only one"));
}
