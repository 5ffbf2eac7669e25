//! `POST [base]/Subscription/$explain`: verdicts and clauses for criteria-based and
//! topic-based cases, refusals as OperationOutcomes, the scope it needs.

use herald_integration_tests::fhir::{lab_observation, LAB_TOPIC};
use herald_integration_tests::{TestHub, TestMode};
use serde_json::{json, Value};

use crate::security::{call, secured_hub, token};

fn parameters(parts: Vec<Value>) -> Value {
    json!({"resourceType": "Parameters", "parameter": parts})
}

fn result(out: &Value) -> bool {
    out["parameter"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "result"))
        .and_then(|p| p["valueBoolean"].as_bool())
        .unwrap_or_else(|| panic!("no result in {out}"))
}

/// The `clause` part named `name`: (values, matched, note).
fn clause(out: &Value, name: &str) -> (Vec<String>, bool, Option<String>) {
    let clause = out["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == "clause")
        .find(|p| p["part"][0]["valueString"] == name)
        .unwrap_or_else(|| panic!("no clause '{name}' in {out}"));
    let parts = clause["part"].as_array().expect("parts");
    let values = parts
        .iter()
        .filter(|p| p["name"] == "values")
        .map(|p| p["valueString"].as_str().expect("value").to_owned())
        .collect();
    let matched = parts
        .iter()
        .find(|p| p["name"] == "matched")
        .and_then(|p| p["valueBoolean"].as_bool())
        .expect("matched");
    let note = parts
        .iter()
        .find(|p| p["name"] == "note")
        .and_then(|p| p["valueString"].as_str())
        .map(str::to_owned);
    (values, matched, note)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_search_criteria_and_refusals() {
    let hub = TestHub::start(TestMode::Embedded).await;
    let observation = lab_observation("123", "final");

    let (status, out) = hub
        .post(
            "/Subscription/$explain",
            &parameters(vec![
                json!({"name": "criteria", "valueString": "Observation?code=http://loinc.org|2345-7&subject=Patient/123"}),
                json!({"name": "resource", "resource": observation}),
            ]),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["resourceType"], "Parameters");
    assert!(result(&out));
    assert_eq!(
        clause(&out, "subject=Patient/123"),
        (vec!["Patient/123".to_owned()], true, None)
    );

    let (status, out) = hub
        .post(
            "/Subscription/$explain",
            &parameters(vec![
                json!({"name": "criteria", "valueString": "Observation?subject=Patient/9&value-quantity=gt100"}),
                json!({"name": "language", "valueCode": "search"}),
                json!({"name": "resource", "resource": observation}),
            ]),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert!(!result(&out));
    let (values, matched, note) = clause(&out, "subject=Patient/9");
    assert_eq!((values, matched), (vec!["Patient/123".to_owned()], false));
    assert!(note.is_some());
    let (values, matched, _) = clause(&out, "value-quantity=gt100");
    assert_eq!(
        (values, matched),
        (vec!["95 http://unitsofmeasure.org|mg/dL".to_owned()], false)
    );

    // FHIRPath over previous and current.
    let (status, out) = hub
        .post(
            "/Subscription/$explain",
            &parameters(vec![
                json!({"name": "criteria", "valueString": "%previous.status = 'preliminary' and %current.status = 'final'"}),
                json!({"name": "language", "valueCode": "fhirpath"}),
                json!({"name": "resource", "resource": observation}),
                json!({"name": "previous", "resource": lab_observation("123", "preliminary")}),
            ]),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert!(result(&out));

    // Refusals, with the status a Subscription create would get.
    for (criteria, expected, code) in [
        ("Observation?colour=blue", 400, "invalid"),
        (
            "Observation?code:in=http://example.org/vs",
            422,
            "not-supported",
        ),
    ] {
        let (status, outcome) = hub
            .post(
                "/Subscription/$explain",
                &parameters(vec![
                    json!({"name": "criteria", "valueString": criteria}),
                    json!({"name": "resource", "resource": observation}),
                ]),
            )
            .await;
        assert_eq!(status, expected, "{criteria}: {outcome}");
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert_eq!(outcome["issue"][0]["code"], code);
        assert_eq!(outcome["issue"][0]["expression"][0], "criteria");
    }
    for (body, expected) in [
        (
            parameters(vec![
                json!({"name": "criteria", "valueString": "Observation?status=final"}),
            ]),
            400,
        ),
        (
            parameters(vec![
                json!({"name": "criteria", "valueString": "Observation?status=final"}),
                json!({"name": "language", "valueCode": "sql"}),
                json!({"name": "resource", "resource": observation}),
            ]),
            400,
        ),
        (
            parameters(vec![
                json!({"name": "topic", "valueCanonical": "http://example.org/no-such-topic"}),
                json!({"name": "resource", "resource": observation}),
            ]),
            422,
        ),
        (
            parameters(vec![
                json!({"name": "verbose", "valueBoolean": true}),
                json!({"name": "resource", "resource": observation}),
            ]),
            422,
        ),
        (observation.clone(), 400),
    ] {
        let (status, outcome) = hub.post("/Subscription/$explain", &body).await;
        assert_eq!(status, expected, "{body}: {outcome}");
        assert_eq!(outcome["resourceType"], "OperationOutcome");
    }

    let (_, capability) = hub.get("/metadata").await;
    assert!(
        capability["rest"][0]["resource"][0]["operation"]
            .as_array()
            .expect("operations")
            .iter()
            .any(|o| o["name"] == "explain"),
        "{capability}"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_under_a_topic_known_to_the_server_or_sent_along() {
    let hub = TestHub::start(TestMode::Production).await;
    let finalized = lab_observation("123", "final");
    let preliminary = lab_observation("123", "preliminary");

    // The built-in lab topic: fires on a final lab result, filtered by patient.
    let explain = |resource: &Value, filter: &str| {
        parameters(vec![
            json!({"name": "topic", "valueCanonical": LAB_TOPIC}),
            json!({"name": "criteria", "valueString": filter}),
            json!({"name": "language", "valueCode": "filter"}),
            json!({"name": "resource", "resource": resource}),
            json!({"name": "previous", "resource": preliminary}),
        ])
    };
    let (status, out) = hub
        .post(
            "/Subscription/$explain",
            &explain(&finalized, "Observation?patient=Patient/123"),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert!(result(&out), "{out}");
    assert_eq!(out["parameter"][1]["valueCode"], "update");
    assert!(clause(&out, "trigger[0] current: status=final,amended,corrected").1);
    assert!(clause(&out, "patient=Patient/123").1);

    let (_, out) = hub
        .post(
            "/Subscription/$explain",
            &explain(&preliminary, "Observation?patient=Patient/123"),
        )
        .await;
    assert!(!result(&out), "{out}");
    let (values, matched, _) = clause(&out, "trigger[0] current: status=final,amended,corrected");
    assert_eq!((values, matched), (vec!["preliminary".to_owned()], false));

    // Filters the topic does not offer are refused as at Subscription creation.
    let (status, outcome) = hub
        .post(
            "/Subscription/$explain",
            &explain(&finalized, "Observation?status=final"),
        )
        .await;
    assert_eq!(status, 400, "{outcome}");
    assert!(outcome["issue"][0]["diagnostics"]
        .as_str()
        .expect("diagnostics")
        .contains("not allowed by topic"));

    // A topic stored on this server, with previous/current criteria, by its canonical;
    // and the same topic sent along as topicResource.
    let topic = json!({
        "resourceType": "SubscriptionTopic",
        "url": "http://example.org/topic/observation-finalized",
        "status": "active",
        "resourceTrigger": [{
            "resource": "Observation",
            "supportedInteraction": ["create", "update"],
            "queryCriteria": {
                "previous": "status:not=final",
                "resultForCreate": "test-passes",
                "current": "status=final",
                "resultForDelete": "test-fails",
                "requireBoth": true
            }
        }],
        "canFilterBy": [{"resource": "Observation", "filterParameter": "patient"}]
    });
    let (status, stored) = hub.post("/SubscriptionTopic", &topic).await;
    assert_eq!(status, 201, "{stored}");
    for topic_parameter in [
        json!({"name": "topic", "valueCanonical": "http://example.org/topic/observation-finalized"}),
        json!({"name": "topicResource", "resource": topic}),
    ] {
        for (previous, expected) in [(&preliminary, true), (&finalized, false)] {
            let (status, out) = hub
                .post(
                    "/Subscription/$explain",
                    &parameters(vec![
                        topic_parameter.clone(),
                        json!({"name": "resource", "resource": finalized}),
                        json!({"name": "previous", "resource": previous}),
                    ]),
                )
                .await;
            assert_eq!(status, 200, "{out}");
            assert_eq!(result(&out), expected, "{out}");
            let (values, matched, _) = clause(&out, "trigger[0] previous: status:not=final");
            assert_eq!(matched, expected);
            assert_eq!(values, vec![previous["status"].as_str().expect("status")]);
            assert!(clause(&out, "trigger[0] current: status=final").1);
        }
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_needs_a_subscription_read_scope() {
    let hub = secured_hub().await;
    let body = parameters(vec![
        json!({"name": "criteria", "valueString": "Observation?status=final"}),
        json!({"name": "resource", "resource": lab_observation("1", "final")}),
    ]);
    let (status, _, challenge) =
        call(&hub, "POST", "/Subscription/$explain", None, Some(&body)).await;
    assert_eq!(status, 401);
    assert!(challenge.is_some());
    let wrong = token("system/Patient.r", json!({}));
    let (status, outcome, _) = call(
        &hub,
        "POST",
        "/Subscription/$explain",
        Some(&wrong),
        Some(&body),
    )
    .await;
    assert_eq!(status, 403, "{outcome}");
    let right = token("system/Subscription.r", json!({}));
    let (status, out, _) = call(
        &hub,
        "POST",
        "/Subscription/$explain",
        Some(&right),
        Some(&body),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert!(result(&out));
    hub.stop().await;
}
