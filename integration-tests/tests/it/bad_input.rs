//! The bad-input corpus (issue 5): every REST endpoint that takes a body or parameters gets
//! malformed JSON, the wrong resourceType, a non-object, a huge body, deep nesting, an
//! invalid date, an empty body and a wrong content type. Each answer is a 4xx
//! OperationOutcome, and nothing is stored or published.

use herald_integration_tests::fhir::{lab_observation, topic_subscription, LAB_TOPIC};
use herald_integration_tests::{test_settings, Receiver, TestHub, TestMode};
use serde_json::{json, Value};

/// One malformed request.
struct Case {
    name: &'static str,
    body: String,
    content_type: &'static str,
}

fn deep(levels: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..levels {
        v = json!({"a": v});
    }
    v
}

/// The generic corpus for an endpoint whose valid body is `valid`, with `date_field` (a
/// JSON pointer to a temporal element) set to an impossible date.
fn corpus(valid: &Value, date_field: Option<&str>) -> Vec<Case> {
    let fhir = "application/fhir+json";
    let mut wrong_type = valid.clone();
    wrong_type["resourceType"] = json!("Patient");
    let mut nested = valid.clone();
    nested["extension"] = json!([{"url": "http://x", "valueString": "x", "deep": deep(100)}]);
    let mut cases = vec![
        Case {
            name: "malformed JSON",
            body: "{\"resourceType\": ".into(),
            content_type: fhir,
        },
        Case {
            name: "wrong resourceType",
            body: wrong_type.to_string(),
            content_type: fhir,
        },
        Case {
            name: "not an object",
            body: json!([valid]).to_string(),
            content_type: fhir,
        },
        Case {
            name: "deep nesting",
            body: nested.to_string(),
            content_type: fhir,
        },
        Case {
            name: "empty body",
            body: String::new(),
            content_type: fhir,
        },
        Case {
            name: "wrong content type",
            body: valid.to_string(),
            content_type: "text/plain",
        },
        Case {
            name: "invalid UTF-8 JSON string",
            body: "{\"resourceType\": \"\\ud800\"}".into(),
            content_type: fhir,
        },
    ];
    if let Some(pointer) = date_field {
        let mut bad_date = valid.clone();
        if let Some(slot) = bad_date.pointer_mut(pointer) {
            *slot = json!("2026-02-30");
        } else {
            panic!("{pointer} not in {valid}");
        }
        cases.push(Case {
            name: "invalid date",
            body: bad_date.to_string(),
            content_type: fhir,
        });
    }
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rest_endpoint_answers_bad_input_with_4xx_and_stores_nothing() {
    let mut settings = test_settings(TestMode::Embedded).await;
    settings.limits.requests_per_second = 0;
    let hub = TestHub::start_with(settings).await;
    let receiver = Receiver::start().await;

    // What exists before: one subscription, one topic, one Observation.
    let mut subscription = topic_subscription(LAB_TOPIC, &[], &receiver.url("/s"), "id-only");
    subscription["end"] = json!("2030-01-01T00:00:00Z");
    let (status, created) = hub.post("/Subscription", &subscription).await;
    assert_eq!(status, 201, "{created}");
    let sub_id = created["id"].as_str().expect("id").to_owned();
    hub.wait_for_status(&sub_id, "active").await;
    let topic = json!({
        "resourceType": "SubscriptionTopic",
        "url": "http://example.org/topic/bad-input",
        "status": "active",
        "date": "2026-11-25",
        "resourceTrigger": [{"resource": "Observation", "supportedInteraction": ["create"]}]
    });
    let (status, created_topic) = hub.post("/SubscriptionTopic", &topic).await;
    assert_eq!(status, 201, "{created_topic}");
    let topic_id = created_topic["id"].as_str().expect("id").to_owned();
    let mut existing = lab_observation("1", "final");
    existing["id"] = json!("obs-1");
    let (status, body) = hub.put("/Observation/obs-1", &existing).await;
    assert_eq!(status, 201, "{body}");
    // The Observation's own event is delivered before the corpus runs.
    receiver
        .wait_for("/s", 1, |r| {
            r.notification_type().as_deref() == Some("event-notification")
        })
        .await;
    let before_events = hub.get(&format!("/Subscription/{sub_id}/$status")).await.1;

    let mut sub_update = subscription.clone();
    sub_update["id"] = json!(sub_id);
    let mut topic_update = topic.clone();
    topic_update["id"] = json!(topic_id);
    let mut obs_update = lab_observation("1", "final");
    obs_update["id"] = json!("obs-1");
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [{
        "fullUrl": "urn:uuid:2b0b6f7e-0000-4000-8000-000000000001",
        "resource": lab_observation("2", "final"),
        "request": {"method": "POST", "url": "Observation"}
    }]});
    let event = json!({
        "resourceType": "Parameters-is-not-an-event",
        "eventId": "e-1", "tenant": "default", "action": "create",
        "resourceType_": "Observation"
    });
    let parameters = json!({"resourceType": "Parameters", "parameter": [{"name": "eventsSinceNumber", "valueString": "1"}]});
    let revoke = json!({"resourceType": "Parameters", "parameter": [{"name": "client", "valueString": "x"}]});
    let endpoints: Vec<(&str, String, Value, Option<&str>)> = vec![
        (
            "POST",
            "/Subscription".into(),
            subscription.clone(),
            Some("/end"),
        ),
        (
            "PUT",
            format!("/Subscription/{sub_id}"),
            sub_update,
            Some("/end"),
        ),
        (
            "POST",
            "/SubscriptionTopic".into(),
            topic.clone(),
            Some("/date"),
        ),
        (
            "PUT",
            format!("/SubscriptionTopic/{topic_id}"),
            topic_update,
            Some("/date"),
        ),
        (
            "POST",
            "/Observation".into(),
            lab_observation("3", "final"),
            Some("/effectiveDateTime"),
        ),
        (
            "PUT",
            "/Observation/obs-1".into(),
            obs_update,
            Some("/effectiveDateTime"),
        ),
        (
            "POST",
            String::new(),
            bundle,
            Some("/entry/0/resource/effectiveDateTime"),
        ),
        (
            "POST",
            format!("/Subscription/{sub_id}/$resend"),
            parameters,
            None,
        ),
        ("POST", "/$revoke-access".into(), revoke, None),
        (
            "POST",
            "/Subscription/$get-ws-binding-token".into(),
            json!({"resourceType": "Parameters", "parameter": [{"name": "id", "valueString": sub_id}]}),
            None,
        ),
    ];
    let mut refused = 0;
    for (method, path, valid, date_field) in &endpoints {
        // A huge body: refused from its declared length, before it is read.
        let raw = crate::capture::oversized_request(
            hub.herald.local_addr,
            method,
            &format!("/fhir{path}"),
            5 * 1024 * 1024,
        )
        .await;
        assert!(
            raw.starts_with("HTTP/1.1 413"),
            "{method} {path} with a huge body: {raw}"
        );
        assert!(raw.contains("OperationOutcome"), "{method} {path}: {raw}");
        refused += 1;
        for case in corpus(valid, *date_field) {
            let url = hub.url(path);
            let request = match *method {
                "PUT" => hub.http.put(url),
                _ => hub.http.post(url),
            };
            let response = request
                .header("content-type", case.content_type)
                .body(case.body)
                .send()
                .await
                .expect("request");
            let (status, body) = TestHub::read(response).await;
            assert!(
                status.is_client_error(),
                "{method} {path} with {}: {status} {body}",
                case.name
            );
            assert_eq!(
                body["resourceType"], "OperationOutcome",
                "{method} {path} with {}: {body}",
                case.name
            );
            refused += 1;
        }
    }
    // The ingest endpoint takes change events, not resources.
    let ingest = format!("http://{}/ingest/change-events", hub.herald.local_addr);
    for (name, body) in [
        ("malformed JSON", "{\"eventId\": ".to_owned()),
        ("not an event", event.to_string()),
        ("deep nesting", json!([deep(100)]).to_string()),
        ("empty body", String::new()),
    ] {
        let response = hub
            .http
            .post(&ingest)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let (status, outcome) = TestHub::read(response).await;
        assert!(
            status.is_client_error(),
            "ingest with {name}: {status} {outcome}"
        );
        assert_eq!(
            outcome["resourceType"], "OperationOutcome",
            "ingest with {name}"
        );
        refused += 1;
    }
    let raw = crate::capture::oversized_request(
        hub.herald.local_addr,
        "POST",
        "/ingest/change-events",
        5 * 1024 * 1024,
    )
    .await;
    assert!(
        raw.starts_with("HTTP/1.1 413"),
        "ingest with a huge body: {raw}"
    );
    refused += 1;
    // Bad parameters on the reading endpoints.
    for path in [
        format!("/Subscription/{sub_id}/$events?eventsSinceNumber=abc"),
        "/Subscription/$status?status=nonsense-status&_count=x".to_owned(),
        "/Subscription?unknown-param=1".to_owned(),
        "/AuditEvent?date=2026-02-30".to_owned(),
        "/AuditEvent?_count=lots".to_owned(),
    ] {
        let (status, outcome) = hub.get(&path).await;
        assert!(status.is_client_error(), "GET {path}: {status} {outcome}");
        assert_eq!(outcome["resourceType"], "OperationOutcome", "GET {path}");
        refused += 1;
    }
    assert!(refused >= 95, "the corpus covers {refused} requests");

    // Nothing was stored or published.
    let (_, subscriptions) = hub.get("/Subscription").await;
    assert_eq!(subscriptions["total"], 1, "{subscriptions}");
    let (_, stored) = hub.get(&format!("/Subscription/{sub_id}")).await;
    assert_eq!(
        stored["meta"]["versionId"], "1",
        "the subscription is unchanged"
    );
    let (_, stored_topic) = hub.get(&format!("/SubscriptionTopic/{topic_id}")).await;
    assert_eq!(
        stored_topic["meta"]["versionId"], "1",
        "the topic is unchanged"
    );
    let (_, obs) = hub.get("/Observation/obs-1").await;
    assert_eq!(
        obs["meta"]["versionId"], "1",
        "the Observation is unchanged"
    );
    let (status, _) = hub.get("/Observation/3").await;
    assert_eq!(status, 404);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let after_events = hub.get(&format!("/Subscription/{sub_id}/$status")).await.1;
    assert_eq!(
        before_events["entry"][0]["resource"]["parameter"],
        after_events["entry"][0]["resource"]["parameter"],
        "no event was published"
    );
    hub.stop().await;
}
