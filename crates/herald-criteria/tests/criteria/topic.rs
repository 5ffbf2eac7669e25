//! SubscriptionTopic compilation, trigger semantics and subscription filters.

use herald_criteria::{Interaction, SubscriptionFilters, TopicDefinition};
use serde_json::{json, Value};

use crate::fixtures::{self, encounter, encounter_for};

const URL: &str = "http://example.org/topic/encounter-complete";

fn encounter_complete(query_criteria: Value, interactions: Value) -> Value {
    json!({
        "resourceType": "SubscriptionTopic",
        "url": URL,
        "status": "active",
        "resourceTrigger": [{
            "resource": "Encounter",
            "supportedInteraction": interactions,
            "queryCriteria": query_criteria
        }],
        "canFilterBy": [
            {"resource": "Encounter", "filterParameter": "subject"},
            {"resource": "Encounter", "filterParameter": "patient"}
        ]
    })
}

fn the_example() -> TopicDefinition {
    TopicDefinition::from_resource(&encounter_complete(
        json!({
            "previous": "status:not=finished",
            "resultForCreate": "test-passes",
            "current": "status=finished",
            "resultForDelete": "test-fails",
            "requireBoth": true
        }),
        json!(["create", "update"]),
    ))
    .unwrap()
}

use Interaction::{Create, Delete, Update};

/// (interaction, current status, previous status, expected)
type Case = (
    Interaction,
    Option<&'static str>,
    Option<&'static str>,
    bool,
);

fn check(topic: &TopicDefinition, cases: &[Case]) {
    let mut failures = Vec::new();
    for (interaction, cur, prev, expected) in cases {
        let cur_r = cur.map(encounter);
        let prev_r = prev.map(encounter);
        let got = topic.triggers(*interaction, "Encounter", cur_r.as_ref(), prev_r.as_ref());
        if got != *expected {
            failures.push(format!(
                "{interaction:?} cur={cur:?} prev={prev:?}: expected {expected}"
            ));
        }
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

#[test]
fn encounter_complete_require_both() {
    let topic = the_example();
    assert_eq!(topic.url(), URL);
    assert_eq!(topic.resource_types(), vec!["Encounter".to_owned()]);
    check(
        &topic,
        &[
            (Create, Some("finished"), None, true),
            (Create, Some("in-progress"), None, false),
            (Update, Some("finished"), Some("in-progress"), true),
            (Update, Some("finished"), Some("finished"), false),
            (Update, Some("in-progress"), Some("planned"), false),
            (Update, Some("finished"), None, true), // unknown previous → resultForCreate
            (Update, None, Some("in-progress"), false),
            (Delete, None, Some("in-progress"), false), // delete not supported
        ],
    );
    assert!(!topic.triggers(Update, "Observation", Some(&fixtures::observation()), None));
}

#[test]
fn encounter_complete_either() {
    let topic = TopicDefinition::from_resource(&encounter_complete(
        json!({
            "previous": "status:not=finished",
            "resultForCreate": "test-fails",
            "current": "status=finished",
            "resultForDelete": "test-passes",
            "requireBoth": false
        }),
        json!(["create", "update", "delete"]),
    ))
    .unwrap();
    check(
        &topic,
        &[
            (Create, Some("finished"), None, true),
            (Create, Some("in-progress"), None, false),
            (Update, Some("in-progress"), Some("planned"), true),
            (Update, Some("finished"), Some("finished"), true),
            (Update, Some("finished"), None, true),
            (Update, Some("in-progress"), None, false), // resultForCreate fails, current fails
            (Update, Some("in-progress"), Some("finished"), false),
            (Delete, None, Some("finished"), true), // resultForDelete passes
            (Delete, None, None, true),
        ],
    );
}

#[test]
fn require_both_with_delete() {
    let topic = TopicDefinition::from_resource(&encounter_complete(
        json!({
            "previous": "status=in-progress",
            "current": "status=finished",
            "resultForDelete": "test-passes",
            "requireBoth": true
        }),
        json!(["delete", "create"]),
    ))
    .unwrap();
    check(
        &topic,
        &[
            (Delete, None, Some("in-progress"), true),
            (Delete, None, Some("finished"), false),
            (Delete, None, None, false), // previous unknown on delete fails
            (Create, Some("finished"), None, false), // resultForCreate absent = test-fails
            (Update, Some("finished"), Some("in-progress"), false), // update not supported
        ],
    );
}

#[test]
fn single_sided_and_criteria_free_triggers() {
    let only_current = TopicDefinition::from_resource(&encounter_complete(
        json!({"current": "status=finished", "resultForCreate": "test-fails", "resultForDelete": "test-passes"}),
        json!(null),
    ))
    .unwrap();
    check(
        &only_current,
        &[
            (Create, Some("finished"), None, true), // previous not specified: resultForCreate irrelevant
            (Create, Some("in-progress"), None, false),
            (Update, Some("finished"), Some("finished"), true),
            (Update, Some("planned"), Some("finished"), false),
            (Delete, None, Some("planned"), true),
        ],
    );
    let only_previous = TopicDefinition::from_resource(&encounter_complete(
        json!({"previous": "status=in-progress", "current": "", "resultForCreate": "test-passes"}),
        json!(null),
    ))
    .unwrap();
    check(
        &only_previous,
        &[
            (Create, Some("planned"), None, true),
            (Update, Some("finished"), Some("in-progress"), true),
            (Update, Some("finished"), Some("planned"), false),
            (Delete, None, Some("in-progress"), true),
            (Delete, None, Some("finished"), false),
        ],
    );
    let any = TopicDefinition::from_resource(&json!({
        "resourceType": "SubscriptionTopic",
        "url": "http://example.org/topic/any-encounter",
        "resourceTrigger": [{"resource": "http://hl7.org/fhir/StructureDefinition/Encounter"}],
        "notificationShape": [{"resource": "Encounter", "include": ["Encounter:subject"]}]
    }))
    .unwrap();
    check(
        &any,
        &[
            (Create, Some("planned"), None, true),
            (Update, Some("finished"), Some("planned"), true),
            (Delete, None, Some("planned"), true),
        ],
    );
    let empty_criteria = TopicDefinition::from_resource(&encounter_complete(
        json!({"previous": "", "current": "", "requireBoth": true}),
        json!(["update"]),
    ))
    .unwrap();
    check(
        &empty_criteria,
        &[
            (Update, Some("planned"), Some("planned"), true),
            (Create, Some("planned"), None, false),
        ],
    );
}

fn filters(topic: &TopicDefinition, filters: &[&str]) -> Result<SubscriptionFilters, String> {
    let owned: Vec<String> = filters.iter().map(|s| (*s).to_owned()).collect();
    topic
        .compile_filters(&owned)
        .map_err(|e| e.message().to_owned())
}

#[test]
fn filters_in_every_form() {
    let topic = the_example();
    let mine = encounter_for("finished", "Patient/123");
    let theirs = encounter_for("finished", "Patient/456");
    for form in [
        vec!["patient=Patient/123"],
        vec!["Encounter?patient=Patient/123"],
        vec!["Encounter.patient=Patient/123"],
        vec!["Encounter?subject=Patient/123&patient=123"],
        vec!["subject=Patient/123", "Encounter.patient=123"],
        vec!["patient=Patient/999,Patient/123"],
        vec!["patient=http://server/fhir/Patient/123"],
        vec!["patient=Patient%2F123"],
    ] {
        let f = filters(&topic, &form).unwrap();
        assert!(!f.is_empty());
        assert!(f.matches("Encounter", &mine), "{form:?}");
        assert!(!f.matches("Encounter", &theirs), "{form:?}");
        assert!(
            !f.matches("Observation", &fixtures::observation()),
            "{form:?}"
        );
    }
    let none = filters(&topic, &[]).unwrap();
    assert!(none.is_empty());
    assert!(none.matches("Encounter", &theirs));
    assert!(SubscriptionFilters::default().matches("Observation", &fixtures::observation()));
}

#[test]
fn filters_rejected_by_encounter_topic() {
    let topic = the_example();
    let cases: &[(&str, &str)] = &[
        ("status=finished", "filter parameter 'status' is not allowed by topic http://example.org/topic/encounter-complete"),
        ("Encounter?status=finished", "filter parameter 'status' is not allowed by topic"),
        ("Encounter.date=2024", "filter parameter 'date' is not allowed by topic"),
        ("Observation?patient=123", "filter resource type 'Observation' is not a trigger resource of topic"),
        ("Observation.patient=123", "filter resource type 'Observation' is not a trigger resource of topic"),
        ("patient:missing=true", "modifier ':missing' on filter parameter 'patient' is not allowed by topic"),
        ("patient:Patient=123", "modifier ':Patient' on filter parameter 'patient' is not allowed by topic"),
        ("patient=Patient/123&status=finished", "filter parameter 'status' is not allowed"),
        ("subject.name=x", "'subject' may point at"),
        ("foo=bar", "unknown search parameter 'foo' for Encounter"),
        ("patient=", "parameter 'patient' has an empty value"),
        ("patient", "parameter 'patient' has no value"),
        ("", "empty subscription filter"),
        ("Encounter?", "has no parameters"),
        ("_filter=x", "_filter: expected an operator after 'x', found the end"),
        ("_filter=status eq finished", "filter parameter '_filter' is not allowed by topic"),
    ];
    let mut failures = Vec::new();
    for (filter, expected) in cases {
        match filters(&topic, &[filter]) {
            Ok(_) => failures.push(format!("{filter}: compiled")),
            Err(m) if m.contains(expected) => {}
            Err(m) => failures.push(format!("{filter}: got {m:?}, expected {expected:?}")),
        }
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

fn lab_topic() -> TopicDefinition {
    TopicDefinition::from_resource(&json!({
        "resourceType": "SubscriptionTopic",
        "url": "http://example.org/topic/lab-results",
        "status": "active",
        "resourceTrigger": [
            {"resource": "Observation", "supportedInteraction": ["create"],
             "queryCriteria": {"current": "category=laboratory&status=final,amended"}},
            {"resource": "DiagnosticReport", "queryCriteria": {"current": "DiagnosticReport?status=final"}}
        ],
        "canFilterBy": [
            {"filterParameter": "patient", "filterDefinition": "http://hl7.org/fhir/SearchParameter/clinical-patient"},
            {"resource": "Observation", "filterParameter": "code", "modifier": ["not", "text"]},
            {"resource": "http://hl7.org/fhir/StructureDefinition/DiagnosticReport", "filterParameter": "date", "comparator": ["gt", "lt"]},
            {"resource": "Observation", "filterParameter": "date", "modifier": ["=", "gt"]},
            {"resource": "Observation", "filterParameter": "subject", "modifier": ["type", "identifier"]}
        ]
    }))
    .unwrap()
}

#[test]
fn multi_type_topic_triggers() {
    let topic = lab_topic();
    assert_eq!(
        topic.resource_types(),
        vec!["Observation".to_owned(), "DiagnosticReport".to_owned()]
    );
    let obs = fixtures::observation();
    let dr = fixtures::diagnostic_report();
    assert!(topic.triggers(Create, "Observation", Some(&obs), None));
    assert!(!topic.triggers(Update, "Observation", Some(&obs), Some(&obs)));
    assert!(topic.triggers(Update, "DiagnosticReport", Some(&dr), Some(&dr)));
    let mut prelim = obs.clone();
    prelim["status"] = json!("preliminary");
    assert!(!topic.triggers(Create, "Observation", Some(&prelim), None));
    assert!(!topic.triggers(Create, "Patient", Some(&fixtures::patient()), None));
}

#[test]
fn typed_filters_fail_closed_for_other_types() {
    let topic = lab_topic();
    let obs = fixtures::observation();
    let dr = fixtures::diagnostic_report();
    let mut other_obs = obs.clone();
    other_obs["subject"] = json!({"reference": "Patient/999"});

    let f = filters(&topic, &["Observation?patient=Patient/123"]).unwrap();
    assert!(f.matches("Observation", &obs));
    assert!(!f.matches("Observation", &other_obs));
    assert!(
        !f.matches("DiagnosticReport", &dr),
        "typed filter must not let other types through"
    );

    let f = filters(&topic, &["patient=Patient/123"]).unwrap();
    assert!(f.matches("Observation", &obs));
    assert!(f.matches("DiagnosticReport", &dr));
    assert!(!f.matches("Observation", &other_obs));
    assert!(!f.matches("Patient", &fixtures::patient()));

    let f = filters(
        &topic,
        &["patient=Patient/123", "DiagnosticReport?date=gt2024-03-01"],
    )
    .unwrap();
    assert!(f.matches("DiagnosticReport", &dr));
    assert!(!f.matches("Observation", &obs));

    let f = filters(
        &topic,
        &[
            "Observation?code:not=1234",
            "DiagnosticReport?date=lt2024-03-01",
        ],
    )
    .unwrap();
    assert!(f.matches("Observation", &obs));
    assert!(!f.matches("DiagnosticReport", &dr));
}

#[test]
fn can_filter_by_enforcement() {
    let topic = lab_topic();
    let ok: &[&str] = &[
        "Observation?code:not=1234",
        "Observation?code:text=gluc",
        "Observation?code=http://loinc.org|2345-7",
        "DiagnosticReport?date=gt2024-03-01",
        "DiagnosticReport?date=eq2024-03-05",
        "DiagnosticReport?date=2024-03-05",
        "Observation?date=gt2024",
        "Observation.date=2024-03-05",
        "Observation?subject:Patient=123",
        "Observation?subject:identifier=http://mrn|1",
        "DiagnosticReport.patient=123&Observation.patient=123",
    ];
    for f in ok {
        assert!(
            filters(&topic, &[f]).is_ok(),
            "{f}: {:?}",
            filters(&topic, &[f]).err()
        );
    }
    let rejected: &[(&str, &str)] = &[
        ("Observation?code:missing=true", "modifier ':missing' on filter parameter 'code' is not allowed by topic http://example.org/topic/lab-results"),
        ("DiagnosticReport?code=x", "filter parameter 'code' is not allowed by topic"),
        ("code=x", "filter parameter 'code' is not allowed by topic"),
        ("DiagnosticReport?date=ge2024-03-01", "comparator 'ge' on filter parameter 'date' is not allowed by topic"),
        ("Observation?date=lt2024", "comparator 'lt' on filter parameter 'date' is not allowed by topic"),
        ("DiagnosticReport?date=sa2024,gt2023", "comparator 'sa' on filter parameter 'date' is not allowed by topic"),
        ("Observation?code:below=x", "modifier ':below' on 'code' is not supported"),
        ("Patient?name=x", "filter resource type 'Patient' is not a trigger resource"),
    ];
    for (f, expected) in rejected {
        let m = filters(&topic, &[f]).err().unwrap_or_default();
        assert!(
            m.contains(expected),
            "{f}: got {m:?}, expected {expected:?}"
        );
    }
}

#[test]
fn topic_compile_errors() {
    let base = |patch: &dyn Fn(&mut Value)| {
        let mut t = json!({
            "resourceType": "SubscriptionTopic",
            "url": "http://example.org/t",
            "resourceTrigger": [{"resource": "Encounter", "queryCriteria": {"current": "status=finished"}}],
            "canFilterBy": [{"resource": "Encounter", "filterParameter": "patient"}]
        });
        patch(&mut t);
        TopicDefinition::from_resource(&t)
            .err()
            .map(|e| e.message().to_owned())
            .unwrap_or_default()
    };
    let cases: Vec<(String, &str)> = vec![
        (base(&|t| t["resourceType"] = json!("Basic")), "expected a SubscriptionTopic resource, got 'Basic'"),
        (base(&|t| t["url"] = json!("")), "SubscriptionTopic.url is required"),
        (base(&|t| t["resourceTrigger"] = json!([])), "at least one resourceTrigger"),
        (base(&|t| t["eventTrigger"] = json!([{"event": {"text": "x"}, "resource": "Encounter"}])), "eventTrigger is not supported yet"),
        (base(&|t| t["resourceTrigger"][0]["fhirPathCriteria"] = json!("%current.code.memberOf('http://vs')")), "resourceTrigger[0].fhirPathCriteria: FHIRPath feature not supported: memberOf()"),
        (base(&|t| t["resourceTrigger"][0]["fhirPathCriteria"] = json!("%current.status = ")), "resourceTrigger[0].fhirPathCriteria: FHIRPath syntax error"),
        (base(&|t| t["resourceTrigger"][0]["fhirPathCriteria"] = json!(true)), "fhirPathCriteria must be a string"),
        (base(&|t| t["resourceTrigger"][0]["supportedInteraction"] = json!(["read"])), "supportedInteraction 'read' is not create, update or delete"),
        (base(&|t| t["resourceTrigger"][0]["resource"] = json!("http://example.org/StructureDefinition/MyEncounter")), "is not a core resource type"),
        (base(&|t| t["resourceTrigger"][0].as_object_mut().unwrap().remove("resource").map(|_| ()).unwrap_or(())), "resourceTrigger[0].resource is required"),
        (base(&|t| t["resourceTrigger"][0]["queryCriteria"]["previous"] = json!("foo=bar")), "resourceTrigger[0].queryCriteria.previous: unknown search parameter 'foo' for Encounter"),
        (base(&|t| t["resourceTrigger"][0]["queryCriteria"]["current"] = json!("status:in=http://vs")), "queryCriteria.current: modifier ':in' on 'status' is not supported"),
        (base(&|t| t["resourceTrigger"][0]["queryCriteria"]["resultForCreate"] = json!("maybe")), "resultForCreate must be 'test-passes' or 'test-fails'"),
        (base(&|t| t["resourceTrigger"][0]["queryCriteria"]["requireBoth"] = json!("yes")), "requireBoth must be a boolean"),
        (base(&|t| t["resourceTrigger"][0]["resource"] = json!("Widget")), "unknown resource type 'Widget'"),
        (base(&|t| t["canFilterBy"][0]["filterParameter"] = json!("foo")), "canFilterBy[0].filterParameter 'foo' is not a known search parameter for Encounter"),
        (base(&|t| t["canFilterBy"][0]["filterParameter"] = json!(null)), "canFilterBy[0].filterParameter is required"),
        (base(&|t| t["canFilterBy"][0]["filterDefinition"] = json!("http://example.org/SearchParameter/x")), "filterDefinition 'http://example.org/SearchParameter/x' is not supported yet"),
        (base(&|t| t["canFilterBy"][0]["resource"] = json!("Foo")), "canFilterBy[0]: unknown resource type 'Foo'"),
        (
            base(&|t| {
                t["resourceTrigger"] = json!([{"resource": "Encounter"}, {"resource": "Observation"}]);
                t["canFilterBy"] = json!([{"filterParameter": "class"}]);
            }),
            "canFilterBy[0].filterParameter 'class' is not a known search parameter for Observation",
        ),
    ];
    for (got, expected) in cases {
        assert!(got.contains(expected), "got {got:?}, expected {expected:?}");
    }
    // The base itself compiles; notificationShape and R4B "=" are accepted.
    assert_eq!(
        base(&|t| t["notificationShape"] = json!([{"resource": "Encounter"}])),
        ""
    );
    assert_eq!(
        base(&|t| t["canFilterBy"][0]["modifier"] = json!(["="])),
        ""
    );
}

#[test]
fn notification_shapes_are_exposed_per_focus_type_and_validated_at_compile_time() {
    let mut topic = encounter_complete(json!({"current": "status=finished"}), json!(["update"]));
    topic["notificationShape"] = json!([{
        "resource": "Encounter",
        "include": ["Encounter:subject:Patient", "Encounter:participant"],
        "revInclude": ["Observation:encounter"]
    }]);
    let compiled = TopicDefinition::from_resource(&topic).unwrap();
    let shape = compiled.notification_shape("Encounter").unwrap();
    assert_eq!(shape.includes[0].text(), "Encounter:subject:Patient");
    assert_eq!(shape.rev_includes[0].text(), "Observation:encounter");
    assert!(compiled.notification_shape("Observation").is_none());

    // The IG's own example uses `&iterate=`: refused, naming the directive (fail closed).
    topic["notificationShape"][0]["include"] = json!(["Encounter:patient&iterate=Patient.link"]);
    let message = TopicDefinition::from_resource(&topic)
        .unwrap_err()
        .message()
        .to_owned();
    assert!(
        message.contains("include 'Encounter:patient&iterate=Patient.link'")
            && message.contains("not supported"),
        "{message}"
    );
    topic["notificationShape"][0]["include"] = json!(["Encounter:class"]);
    let message = TopicDefinition::from_resource(&topic)
        .unwrap_err()
        .message()
        .to_owned();
    assert!(
        message.contains("'class' of Encounter is a token parameter"),
        "{message}"
    );
}

#[test]
fn built_in_topics_compile_with_their_shapes() {
    for text in herald_criteria::BUILTIN_TOPIC_JSON {
        let resource: Value = serde_json::from_str(text).unwrap();
        let topic = TopicDefinition::from_resource(&resource).unwrap();
        for ty in topic.resource_types() {
            assert!(
                topic.notification_shape(&ty).is_some(),
                "{} has a shape for {ty}",
                topic.url()
            );
        }
    }
    let lab: Value = serde_json::from_str(herald_criteria::BUILTIN_TOPIC_JSON[0]).unwrap();
    let lab = TopicDefinition::from_resource(&lab).unwrap();
    let includes: Vec<String> = lab
        .notification_shape("Observation")
        .unwrap()
        .includes
        .iter()
        .map(|d| d.text())
        .collect();
    assert_eq!(
        includes,
        ["Observation:subject:Patient", "Observation:encounter"]
    );
}
