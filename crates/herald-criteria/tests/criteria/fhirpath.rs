//! `fhirPathCriteria` on topic resource triggers, with `%current` / `%previous`.

use herald_criteria::{Interaction, TopicDefinition};
use serde_json::{json, Value};

use crate::fixtures::encounter;

use Interaction::{Create, Delete, Update};

/// The FHIRPath of the R5 `encounter-complete` example topic.
const ENCOUNTER_COMPLETE: &str =
    "(%previous.id.empty() or (%previous.status != 'finished')) and (%current.status = 'finished')";

fn topic(trigger: Value) -> TopicDefinition {
    TopicDefinition::from_resource(&json!({
        "resourceType": "SubscriptionTopic",
        "url": "http://example.org/topic/encounter-complete-fhirpath",
        "status": "active",
        "resourceTrigger": [trigger]
    }))
    .unwrap()
}

fn fires(
    topic: &TopicDefinition,
    interaction: Interaction,
    cur: Option<&str>,
    prev: Option<&str>,
) -> bool {
    let cur = cur.map(encounter);
    let prev = prev.map(encounter);
    topic.triggers(interaction, "Encounter", cur.as_ref(), prev.as_ref())
}

#[test]
fn encounter_complete_fhirpath_criteria() {
    let topic = topic(json!({
        "resource": "Encounter",
        "supportedInteraction": ["create", "update", "delete"],
        "fhirPathCriteria": ENCOUNTER_COMPLETE
    }));
    let cases = [
        (Create, Some("finished"), None, true),
        (Create, Some("in-progress"), None, false),
        (Update, Some("finished"), Some("in-progress"), true),
        (Update, Some("finished"), Some("finished"), false),
        (Update, Some("in-progress"), Some("finished"), false),
        (Update, Some("cancelled"), Some("planned"), false),
        // Update without a known previous version: %previous is empty.
        (Update, Some("finished"), None, true),
        // Delete: %current is empty, so `%current.status = 'finished'` is empty.
        (Delete, None, Some("finished"), false),
        (Delete, None, None, false),
    ];
    for (interaction, cur, prev, expected) in cases {
        assert_eq!(
            fires(&topic, interaction, cur, prev),
            expected,
            "{interaction:?} cur={cur:?} prev={prev:?}"
        );
    }
}

#[test]
fn fhirpath_and_query_criteria_must_both_pass() {
    let topic = topic(json!({
        "resource": "Encounter",
        "supportedInteraction": ["create", "update"],
        "queryCriteria": {"current": "subject=Patient/123"},
        "fhirPathCriteria": "%current.status = 'finished'"
    }));
    assert!(fires(&topic, Create, Some("finished"), None));
    assert!(!fires(&topic, Create, Some("planned"), None));
    let other_patient = json!({"resourceType": "Encounter", "id": "e", "status": "finished", "subject": {"reference": "Patient/999"}});
    assert!(!topic.triggers(Create, "Encounter", Some(&other_patient), None));
}

#[test]
fn fhirpath_fails_closed() {
    // Evaluation errors, non-boolean and empty results never fire.
    for expression in [
        "%current.status + 1 = 2",
        "%current.status",
        "%current.participant.individual.reference = 'Practitioner/prac1' | true",
        "%current.nothing.here",
        "%undefined.status = 'finished'",
    ] {
        let topic = topic(json!({"resource": "Encounter", "fhirPathCriteria": expression}));
        assert!(
            !fires(&topic, Update, Some("finished"), Some("planned")),
            "{expression}"
        );
    }
    // A boolean element is a boolean.
    let topic = topic(
        json!({"resource": "Encounter", "fhirPathCriteria": "(%current.status = 'finished').not().not()"}),
    );
    assert!(fires(&topic, Update, Some("finished"), Some("planned")));
}

#[test]
fn fhirpath_criteria_sees_the_resource_as_focus() {
    let topic = topic(json!({
        "resource": "Encounter",
        "fhirPathCriteria": "Encounter.period.end > @2024-01-01 and %resource.subject.reference.startsWith('Patient/')"
    }));
    assert!(fires(&topic, Update, Some("finished"), Some("planned")));
}
