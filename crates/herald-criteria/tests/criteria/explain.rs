//! Explanations: the verdict always equals the matcher's, and each clause shows what
//! the resource held.

use herald_criteria::{
    explain, ExplainRequest, Explanation, Interaction, Language, SearchQuery, TopicDefinition,
};
use serde_json::{json, Value};

use crate::fixtures::{self, encounter, encounter_for, observation};

fn request<'a>(criteria: &'a str, language: Language, resource: &'a Value) -> ExplainRequest<'a> {
    ExplainRequest {
        criteria: Some(criteria),
        language,
        resource,
        previous: None,
        topic: None,
        interaction: None,
    }
}

fn search(criteria: &str, resource: &Value) -> Explanation {
    explain(&request(criteria, Language::Search, resource)).unwrap()
}

fn clause<'e>(explanation: &'e Explanation, label: &str) -> &'e herald_criteria::ClauseExplanation {
    explanation
        .clauses
        .iter()
        .find(|c| c.clause == label)
        .unwrap_or_else(|| panic!("no clause '{label}' in {explanation:#?}"))
}

#[test]
fn a_matching_search_shows_every_clause_with_the_values_seen() {
    let e = search(
        "Observation?code=http://loinc.org|2345-7&subject=Patient/123",
        &observation(),
    );
    assert!(e.matched);
    assert_eq!(e.interaction, Interaction::Create);
    assert_eq!(e.clauses.len(), 3, "{e:#?}");
    assert!(clause(&e, "resourceType=Observation").matched);
    let code = clause(&e, "code=http://loinc.org|2345-7");
    assert!(code.matched);
    assert_eq!(
        code.values_seen,
        vec!["http://loinc.org|2345-7", "text: Glucose"]
    );
    assert_eq!(
        clause(&e, "subject=Patient/123").values_seen,
        vec!["Patient/123"]
    );
    let text = e.to_string();
    assert!(text.starts_with("match\n"), "{text}");
    assert!(text.contains("pass  subject=Patient/123"), "{text}");
}

#[test]
fn a_failing_clause_says_what_was_there_instead() {
    let e = search(
        "Observation?code=http://loinc.org|2345-7&subject=Patient/999",
        &observation(),
    );
    assert!(!e.matched);
    assert!(clause(&e, "code=http://loinc.org|2345-7").matched);
    let subject = clause(&e, "subject=Patient/999");
    assert!(!subject.matched);
    assert_eq!(subject.values_seen, vec!["Patient/123"]);
    assert!(subject.note.as_deref().unwrap_or("").contains("references"));
    assert!(e.to_string().starts_with("no match\n"));
    assert!(e.to_string().contains("FAIL  subject=Patient/999"));

    let absent = search("Observation?device=Device/1", &observation());
    let device = clause(&absent, "device=Device/1");
    assert!(device.values_seen.is_empty());
    assert_eq!(
        device.note.as_deref(),
        Some("the resource has no value at device")
    );

    let other_type = search("Patient?gender=male", &observation());
    assert!(!other_type.matched);
    let rt = clause(&other_type, "resourceType=Patient");
    assert!(!rt.matched);
    assert_eq!(rt.values_seen, vec!["Observation"]);
}

#[test]
fn modifiers_and_prefixes_are_explained() {
    let obs = observation();
    let e = search("Observation?status:not=final", &obs);
    assert!(!e.matched);
    assert!(clause(&e, "status:not=final").note.is_some());
    let e = search("Observation?value-quantity=gt90", &obs);
    assert!(e.matched);
    assert_eq!(
        clause(&e, "value-quantity=gt90").values_seen,
        vec!["95 http://unitsofmeasure.org|mg/dL"]
    );
    let e = search("Observation?date=ne2024-03-05T10:15:00Z", &obs);
    assert!(!e.matched);
    assert!(clause(&e, "date=ne2024-03-05T10:15:00Z")
        .note
        .as_deref()
        .unwrap_or("")
        .contains("'ne'"));
}

#[test]
fn the_verdict_is_the_matchers_and_the_and_of_the_clauses() {
    let criteria = [
        "Observation?status=final",
        "Observation?status=final,amended&code=2345-7",
        "Observation?code:text=gluc",
        "Observation?subject:Patient=123",
        "Observation?performer=Practitioner/prac1",
        "Observation?value-quantity=95||mg/dL",
        "Observation?date=ge2024-03",
        "Observation?identifier=http://lab.example.org/ids|LAB-001",
        "Observation?category:missing=false&encounter:missing=true",
        "Encounter?status=finished&subject=Patient/123",
        "Encounter?date=2024-03-05",
        "MedicationRequest?intent=order&medication.code=1049502",
        "DiagnosticReport?result=Observation/obs1",
        "Patient?name=shaw",
    ];
    for resource in fixtures::all() {
        for criteria in criteria {
            let Ok(query) = SearchQuery::parse(criteria) else {
                continue;
            };
            let e = search(criteria, &resource);
            assert_eq!(e.matched, query.matches(&resource), "{criteria}: {e:#?}");
            assert_eq!(
                e.matched,
                e.clauses.iter().all(|c| c.matched),
                "{criteria}: {e:#?}"
            );
        }
    }
}

#[test]
fn invalid_and_unsupported_criteria_are_errors_with_an_outcome() {
    let obs = observation();
    let error = explain(&request("Observation?nonsense=1", Language::Search, &obs)).unwrap_err();
    assert!(!error.is_unsupported());
    let outcome = error.outcome("criteria").to_json();
    assert_eq!(outcome["issue"][0]["code"], "invalid");
    assert!(outcome["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("unknown search parameter 'nonsense'"));

    let error = explain(&request(
        "Observation?code:in=http://example.org/vs",
        Language::Search,
        &obs,
    ))
    .unwrap_err();
    assert!(error.is_unsupported(), "{error}");
    assert_eq!(
        error.outcome("criteria").to_json()["issue"][0]["code"],
        "not-supported"
    );

    for (criteria, language) in [
        ("%current.status = ", Language::FhirPath),
        ("current.status ==", Language::Cel),
        ("", Language::Filter),
    ] {
        assert!(
            explain(&request(criteria, language, &obs)).is_err(),
            "{criteria}"
        );
    }
    let no_type = json!({"status": "final"});
    assert!(explain(&request(
        "Observation?status=final",
        Language::Search,
        &no_type
    ))
    .is_err());
}

#[test]
fn filters_accept_every_form_without_a_topic() {
    let obs = observation();
    for filter in [
        "Observation?patient=Patient/123",
        "Observation.patient=Patient/123",
        "patient=Patient/123",
    ] {
        let e = explain(&request(filter, Language::Filter, &obs)).unwrap();
        assert!(e.matched, "{filter}: {e:#?}");
        assert_eq!(
            clause(&e, "patient=Patient/123").values_seen,
            vec!["Patient/123"]
        );
    }
    let e = explain(&request(
        "Encounter.patient=Patient/123",
        Language::Filter,
        &obs,
    ))
    .unwrap();
    assert!(!e.matched);
    assert!(e.clauses[0]
        .note
        .as_deref()
        .unwrap()
        .contains("for Encounter"));
}

#[test]
fn fhirpath_sees_current_and_previous() {
    let current = encounter("finished");
    let previous = encounter("in-progress");
    let criteria = "%current.status = 'finished' and %previous.status != 'finished'";
    let mut r = request(criteria, Language::FhirPath, &current);
    r.previous = Some(&previous);
    let e = explain(&r).unwrap();
    assert!(e.matched, "{e:#?}");
    assert_eq!(e.interaction, Interaction::Update);
    assert_eq!(e.clauses[0].values_seen, vec!["true"]);

    r.previous = Some(&current);
    let e = explain(&r).unwrap();
    assert!(!e.matched);
    assert_eq!(e.clauses[0].values_seen, vec!["false"]);

    let e = explain(&request("%resource.status", Language::FhirPath, &current)).unwrap();
    assert!(!e.matched);
    assert_eq!(e.clauses[0].values_seen, vec!["finished"]);
    assert!(e.clauses[0].note.is_some());
}

#[test]
fn cel_sees_current_previous_and_the_event() {
    let current = encounter("finished");
    let previous = encounter("in-progress");
    let criteria = "current.status == 'finished' && previous.status != 'finished' && event.interaction == 'update'";
    let mut r = request(criteria, Language::Cel, &current);
    r.previous = Some(&previous);
    let e = explain(&r).unwrap();
    assert!(e.matched, "{e:#?}");
    assert_eq!(e.clauses[0].values_seen, vec!["true"]);

    // On create `previous` is null: selecting a field of it is an evaluation error,
    // which CEL's `&&` absorbs when another operand is false.
    let e = explain(&request(criteria, Language::Cel, &current)).unwrap();
    assert!(!e.matched);
    assert_eq!(e.clauses[0].values_seen, vec!["false"], "{e:#?}");
    let e = explain(&request(
        "previous.status != 'finished'",
        Language::Cel,
        &current,
    ))
    .unwrap();
    assert!(!e.matched);
    assert!(
        e.clauses[0]
            .note
            .as_deref()
            .unwrap()
            .contains("evaluation failed"),
        "{e:#?}"
    );

    let e = explain(&request("current.status", Language::Cel, &current)).unwrap();
    assert!(!e.matched);
    assert_eq!(e.clauses[0].values_seen, vec!["'finished'"]);
}

fn encounter_topic() -> TopicDefinition {
    TopicDefinition::from_resource(&json!({
        "resourceType": "SubscriptionTopic",
        "url": "http://example.org/topic/encounter-complete",
        "status": "active",
        "resourceTrigger": [{
            "resource": "Encounter",
            "supportedInteraction": ["create", "update"],
            "queryCriteria": {
                "previous": "status:not=finished",
                "resultForCreate": "test-passes",
                "current": "status=finished",
                "resultForDelete": "test-fails",
                "requireBoth": true
            }
        }],
        "canFilterBy": [{"resource": "Encounter", "filterParameter": "patient"}]
    }))
    .unwrap()
}

#[test]
fn a_topic_explains_its_trigger_and_the_filters() {
    let topic = encounter_topic();
    let current = encounter("finished");
    let previous = encounter("in-progress");
    let mut r = request("Encounter?patient=Patient/123", Language::Filter, &current);
    r.topic = Some(&topic);
    r.previous = Some(&previous);
    let e = explain(&r).unwrap();
    assert!(e.matched, "{e:#?}");
    assert!(clause(&e, "trigger[0] Encounter (create|update)").matched);
    assert_eq!(
        clause(&e, "trigger[0] previous: status:not=finished").values_seen,
        vec!["in-progress"]
    );
    assert!(clause(&e, "trigger[0] current: status=finished").matched);
    assert!(clause(&e, "trigger[0] queryCriteria: previous AND current").matched);
    assert!(clause(&e, "patient=Patient/123").matched);

    // Already finished before: the trigger does not fire, the filter still passes.
    r.previous = Some(&current);
    let e = explain(&r).unwrap();
    assert!(!e.matched);
    assert!(!clause(&e, "trigger[0] previous: status:not=finished").matched);
    assert!(clause(&e, "patient=Patient/123").matched);

    // Another patient: the trigger fires, the filter fails.
    let other = encounter_for("finished", "Patient/9");
    r.resource = &other;
    r.previous = Some(&previous);
    let e = explain(&r).unwrap();
    assert!(!e.matched);
    assert!(clause(&e, "trigger[0] Encounter (create|update)").matched);
    assert_eq!(
        clause(&e, "patient=Patient/123").values_seen,
        vec!["Patient/9"]
    );

    // Create: resultForCreate stands in for the previous test.
    r.resource = &current;
    r.previous = None;
    let e = explain(&r).unwrap();
    assert!(e.matched);
    assert!(
        clause(&e, "trigger[0] queryCriteria.previous: status:not=finished")
            .note
            .as_deref()
            .unwrap()
            .contains("resultForCreate is test-passes")
    );

    // Delete is not a supported interaction.
    r.interaction = Some(Interaction::Delete);
    let e = explain(&r).unwrap();
    assert!(!e.matched);
    assert!(clause(&e, "trigger[0] Encounter (create|update)")
        .note
        .as_deref()
        .unwrap()
        .contains("does not support delete"));

    // Criteria are optional with a topic; the trigger alone is explained.
    r.interaction = None;
    r.criteria = None;
    assert!(explain(&r).unwrap().matched);
}

#[test]
fn topic_verdicts_equal_the_matchers_for_every_state() {
    let topic = encounter_topic();
    let filters = topic
        .compile_filters(&["patient=Patient/123".to_owned()])
        .unwrap();
    let statuses = ["planned", "in-progress", "finished"];
    for interaction in [
        Interaction::Create,
        Interaction::Update,
        Interaction::Delete,
    ] {
        for current in statuses {
            for previous in statuses.iter().map(Some).chain([None]) {
                let current = encounter(current);
                let previous = previous.map(|p| encounter(p));
                if interaction == Interaction::Delete && previous.is_some() {
                    continue;
                }
                let mut r = request("patient=Patient/123", Language::Filter, &current);
                r.topic = Some(&topic);
                r.previous = previous.as_ref();
                r.interaction = Some(interaction);
                let e = explain(&r).unwrap();
                let (cur, prev) = match interaction {
                    Interaction::Delete => (None, Some(&current)),
                    _ => (Some(&current), previous.as_ref()),
                };
                let expected = topic.triggers(interaction, "Encounter", cur, prev)
                    && filters.matches("Encounter", &current);
                assert_eq!(e.matched, expected, "{interaction:?} {e:#?}");
            }
        }
    }
}

#[test]
fn topic_filters_are_held_to_can_filter_by() {
    let topic = encounter_topic();
    let current = encounter("finished");
    let mut r = request("subject=Patient/123", Language::Filter, &current);
    r.topic = Some(&topic);
    let error = explain(&r).unwrap_err();
    assert!(error.message().contains("not allowed by topic"), "{error}");

    // A resource the topic does not trigger on.
    let obs = observation();
    let mut r = request("patient=Patient/123", Language::Search, &obs);
    r.topic = Some(&topic);
    let e = explain(&r).unwrap();
    assert!(!e.matched);
    assert!(e.clauses[0]
        .note
        .as_deref()
        .unwrap()
        .contains("no resourceTrigger for Observation"));
}

#[test]
fn the_json_form_has_every_field() {
    let e = search("Observation?subject=Patient/9", &observation());
    let j = e.to_json();
    assert_eq!(j["matched"], false);
    assert_eq!(j["interaction"], "create");
    assert_eq!(j["clauses"][1]["clause"], "subject=Patient/9");
    assert_eq!(j["clauses"][1]["values_seen"], json!(["Patient/123"]));
    assert_eq!(j["clauses"][1]["matched"], false);
    assert!(j["clauses"][1]["note"].is_string());
}
