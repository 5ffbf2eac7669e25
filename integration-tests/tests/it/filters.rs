//! A Subscription's own CEL filter (`subscription-cel-filter` in `_criteria.extension`),
//! ANDed with its topic filters or search criteria, with `current`, `previous` and `event`.

use herald_integration_tests::fhir::{
    criteria_subscription, lab_observation, topic_subscription, LAB_TOPIC,
};
use herald_integration_tests::{Receiver, TestHub, TestMode};
use serde_json::{json, Value};

const CEL_FILTER: &str = "https://herald.health/fhir/StructureDefinition/subscription-cel-filter";

fn with_cel(mut subscription: Value, source: &str) -> Value {
    let extensions = subscription
        .pointer_mut("/_criteria/extension")
        .and_then(Value::as_array_mut)
        .map(std::mem::take)
        .unwrap_or_default();
    let mut extensions = extensions;
    extensions.push(json!({"url": CEL_FILTER, "valueString": source}));
    subscription["_criteria"] = json!({"extension": extensions});
    subscription
}

fn is_event(r: &herald_integration_tests::Received) -> bool {
    r.notification_type().as_deref() == Some("event-notification")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_cel_filter_narrows_what_it_receives() {
    let hub = TestHub::start(TestMode::Embedded).await;
    let receiver = Receiver::start().await;
    // Topic-based: patient filter AND high values only.
    let high = with_cel(
        topic_subscription(
            LAB_TOPIC,
            &["Observation?patient=Patient/1"],
            &receiver.url("/high"),
            "full-resource",
        ),
        "current.valueQuantity.value > 100.0",
    );
    let (status, created) = hub.post("/Subscription", &high).await;
    assert_eq!(status, 201, "{created}");
    hub.wait_for_status(created["id"].as_str().expect("id"), "active")
        .await;
    // Criteria-based: only status changes of an existing Observation.
    let changed = with_cel(
        criteria_subscription(
            "Observation?subject=Patient/1",
            &receiver.url("/changed"),
            Some("application/fhir+json"),
            Some("id-only"),
        ),
        "event.interaction == 'update' && previous.status != current.status",
    );
    let (status, created) = hub.post("/Subscription", &changed).await;
    assert_eq!(status, 201, "{created}");
    hub.wait_for_status(created["id"].as_str().expect("id"), "active")
        .await;

    let observation = |value: f64, status: &str| {
        let mut o = lab_observation("1", status);
        o["id"] = json!("o1");
        o["valueQuantity"]["value"] = json!(value);
        o
    };
    for (value, status) in [
        (95.0, "preliminary"),
        (150.0, "preliminary"),
        (150.0, "final"),
        (80.0, "final"),
    ] {
        let (code, body) = hub
            .put("/Observation/o1", &observation(value, status))
            .await;
        assert!(code.is_success(), "{body}");
    }
    let mut other = lab_observation("2", "final");
    other["valueQuantity"]["value"] = json!(500);
    let (code, _) = hub.post("/Observation", &other).await;
    assert_eq!(code, 201);

    let high = receiver.wait_for("/high", 1, is_event).await;
    let changed = receiver.wait_for("/changed", 1, is_event).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let values: Vec<Value> = receiver
        .at("/high")
        .iter()
        .filter(|r| is_event(r))
        .map(|r| r.json()["entry"][1]["resource"]["valueQuantity"]["value"].clone())
        .collect();
    // The lab topic fires on final results; the CEL filter keeps those over 100; the
    // patient filter keeps Patient/1's.
    assert_eq!(
        values,
        vec![json!(150.0)],
        "only Patient/1's final values over 100"
    );
    assert_eq!(high.len(), 1);
    assert_eq!(
        receiver
            .at("/changed")
            .iter()
            .filter(|r| is_event(r))
            .count(),
        1,
        "only the preliminary→final update: {changed:?}"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_cel_filter_is_refused_and_not_stored() {
    let hub = TestHub::start(TestMode::Embedded).await;
    let receiver = Receiver::start().await;
    let base = || topic_subscription(LAB_TOPIC, &[], &receiver.url("/x"), "id-only");
    let deep = format!("{}true{}", "(".repeat(200), ")".repeat(200));
    let big = format!("current.id == '{}'", "x".repeat(5000));
    // Too big for the expression limit: 422 too-long; the rest does not compile: 400.
    for (source, expected) in [
        ("current.status ==", 400),
        ("current.status = 'final'", 400),
        (deep.as_str(), 400),
        (big.as_str(), 422),
        ("", 400),
    ] {
        let (status, outcome) = hub.post("/Subscription", &with_cel(base(), source)).await;
        assert_eq!(status, expected, "{source:.40}: {outcome}");
        assert_eq!(outcome["resourceType"], "OperationOutcome");
    }
    let mut twice = with_cel(base(), "true");
    twice = with_cel(twice, "false");
    let (status, outcome) = hub.post("/Subscription", &twice).await;
    assert_eq!(status, 400, "{outcome}");
    let (_, all) = hub.get("/Subscription").await;
    assert_eq!(all["total"], 0, "{all}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_criteria_read_the_latest_referenced_resource_herald_holds() {
    let hub = TestHub::start(TestMode::Embedded).await;
    let receiver = Receiver::start().await;
    let patient = |id: &str, mrn: &str| {
        json!({"resourceType": "Patient", "id": id,
            "identifier": [{"system": "http://hospital.example/mrn", "value": mrn}]})
    };
    for (id, mrn) in [("p1", "123"), ("p2", "999")] {
        let (status, body) = hub.put(&format!("/Patient/{id}"), &patient(id, mrn)).await;
        assert!(status.is_success(), "{body}");
    }
    let subscription = criteria_subscription(
        "Observation?subject:Patient.identifier=http://hospital.example/mrn|123",
        &receiver.url("/mrn"),
        Some("application/fhir+json"),
        Some("id-only"),
    );
    let (status, created) = hub.post("/Subscription", &subscription).await;
    assert_eq!(status, 201, "{created}");
    hub.wait_for_status(created["id"].as_str().expect("id"), "active")
        .await;

    let observe = |patient: &str, id: &str| {
        let mut o = lab_observation(patient, "final");
        o["id"] = json!(id);
        o
    };
    for (patient, id) in [("p1", "o1"), ("p2", "o2"), ("p3", "o3")] {
        let (status, body) = hub
            .put(&format!("/Observation/{id}"), &observe(patient, id))
            .await;
        assert!(status.is_success(), "{body}");
    }
    // Patient/p2 now carries the MRN: its next result matches.
    let (status, _) = hub.put("/Patient/p2", &patient("p2", "123")).await;
    assert!(status.is_success());
    let (status, _) = hub.put("/Observation/o4", &observe("p2", "o4")).await;
    assert!(status.is_success());

    let events = receiver.wait_for("/mrn", 2, is_event).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let focus: Vec<String> = receiver
        .at("/mrn")
        .iter()
        .filter(|r| is_event(r))
        .filter_map(|r| r.json()["entry"][1]["fullUrl"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(focus.len(), 2, "{focus:?}");
    assert!(
        focus[0].ends_with("/Observation/o1") && focus[1].ends_with("/Observation/o4"),
        "{focus:?}"
    );
    assert_eq!(events[1].event_numbers(), vec![2]);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn has_criteria_read_the_resources_that_point_at_the_focus() {
    let hub = TestHub::start(TestMode::Embedded).await;
    let receiver = Receiver::start().await;
    let subscription = criteria_subscription(
        "Patient?_has:Observation:patient:code=http://loinc.org|2345-7",
        &receiver.url("/has"),
        Some("application/fhir+json"),
        Some("id-only"),
    );
    let (status, created) = hub.post("/Subscription", &subscription).await;
    assert_eq!(status, 201, "{created}");
    hub.wait_for_status(created["id"].as_str().expect("id"), "active")
        .await;
    // Patient/p1 has a glucose result; Patient/p2 has none.
    let mut glucose = lab_observation("p1", "final");
    glucose["id"] = json!("g1");
    let (status, _) = hub.put("/Observation/g1", &glucose).await;
    assert!(status.is_success());
    for id in ["p1", "p2"] {
        let patient = json!({"resourceType": "Patient", "id": id, "active": true});
        let (status, body) = hub.put(&format!("/Patient/{id}"), &patient).await;
        assert!(status.is_success(), "{body}");
    }
    let events = receiver.wait_for("/has", 1, is_event).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let focus: Vec<String> = receiver
        .at("/has")
        .iter()
        .filter(|r| is_event(r))
        .filter_map(|r| r.json()["entry"][1]["fullUrl"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(focus.len(), 1, "{focus:?}");
    assert!(focus[0].ends_with("/Patient/p1"), "{focus:?}");
    assert_eq!(events[0].event_numbers(), vec![1]);
    hub.stop().await;
}
