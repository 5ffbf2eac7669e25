//! Ways in: malformed writes publish nothing; transactions rewrite references; deletes
//! notify; malformed events on the bus are dead-lettered and the consumer keeps going.

use std::time::Duration;

use herald_integration_tests::fhir::{lab_observation, topic_subscription, LAB_TOPIC, MED_TOPIC};
use herald_integration_tests::{Receiver, TestHub, TestMode};
use serde_json::{json, Value};

/// Sends only the head of a POST announcing `length` bytes; returns what the server says.
async fn oversized_post(addr: std::net::SocketAddr, path: &str, length: usize) -> String {
    oversized_request(addr, "POST", path, length).await
}

/// Sends only the head of a request announcing a `length`-byte body; returns what the
/// server says. (A client still writing megabytes races an early 413 and may see a reset.)
pub(crate) async fn oversized_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    length: usize,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!("{method} {path} HTTP/1.1\r\nHost: herald\r\nContent-Type: application/fhir+json\r\nContent-Length: {length}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("write head");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&answer).contains("OperationOutcome\"")
        || !answer.ends_with(b"}")
    {
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await;
        match read {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buffer[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn is_event(r: &herald_integration_tests::Received) -> bool {
    r.notification_type().as_deref() == Some("event-notification")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_writes_get_an_operation_outcome_and_publish_nothing() {
    let hub = TestHub::start(TestMode::Embedded).await;
    let receiver = Receiver::start().await;
    let (_, sub) = hub
        .post(
            "/Subscription",
            &topic_subscription(LAB_TOPIC, &[], &receiver.url("/w"), "id-only"),
        )
        .await;
    hub.wait_for_status(sub["id"].as_str().expect("id"), "active")
        .await;

    let mut deep = json!(1);
    for _ in 0..100 {
        deep = json!([deep]);
    }
    let mut nested = lab_observation("1", "final");
    nested["extension"] = deep;
    let mut wrong_type = lab_observation("1", "final");
    wrong_type["resourceType"] = json!("Patient");
    let cases: Vec<(&str, &str, String, &str, u16)> = vec![
        ("POST", "/Observation", "{not json".into(), "application/fhir+json", 400),
        ("POST", "/Observation", wrong_type.to_string(), "application/fhir+json", 400),
        ("POST", "/Observation", json!([1, 2]).to_string(), "application/fhir+json", 400),
        ("POST", "/Observation", nested.to_string(), "application/fhir+json", 400),
        ("POST", "/Observation", lab_observation("1", "final").to_string(), "text/plain", 415),
        ("POST", "/NotAType", lab_observation("1", "final").to_string(), "application/fhir+json", 404),
        ("PUT", "/Observation/abc", lab_observation("1", "final").to_string(), "application/fhir+json", 400),
        ("PUT", "/Observation/a%20b", { let mut o = lab_observation("1", "final"); o["id"] = json!("a b"); o.to_string() }, "application/fhir+json", 400),
        ("POST", "", json!({"resourceType": "Bundle", "type": "collection"}).to_string(), "application/fhir+json", 400),
        ("POST", "", json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": lab_observation("1", "final"), "request": {"method": "POST", "url": "Observation"}},
            {"resource": {"resourceType": "Observation"}, "request": {"method": "PUT", "url": "Observation"}}
        ]}).to_string(), "application/fhir+json", 400),
    ];
    for (method, path, body, content_type, expected) in cases {
        let request = match method {
            "PUT" => hub.http.put(hub.url(path)),
            _ => hub.http.post(hub.url(path)),
        };
        let response = request
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        let (status, outcome) = TestHub::read(response).await;
        assert_eq!(status.as_u16(), expected, "{method} {path}: {outcome}");
        assert_eq!(
            outcome["resourceType"], "OperationOutcome",
            "{method} {path}"
        );
    }
    // An oversized body is refused from its Content-Length, before it is read. (Sent over a
    // raw socket: a client still writing 5 MB races the early 413 and may see a reset.)
    let raw = oversized_post(hub.herald.local_addr, "/fhir/Observation", 5 * 1024 * 1024).await;
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(
        raw.contains("OperationOutcome") && raw.contains("too-long"),
        "{raw}"
    );

    // The first valid write is event number 1: nothing was published before it.
    let (status, _) = hub
        .post("/Observation", &lab_observation("1", "final"))
        .await;
    assert_eq!(status, 201);
    let events = receiver.wait_for("/w", 1, is_event).await;
    assert_eq!(events[0].event_numbers(), vec![1]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.at("/w").into_iter().filter(is_event).count(), 1);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_rewrites_references_and_a_delete_notifies() {
    let hub = TestHub::start(TestMode::Embedded).await;
    let receiver = Receiver::start().await;
    let (_, lab) = hub
        .post(
            "/Subscription",
            &topic_subscription(LAB_TOPIC, &[], &receiver.url("/lab"), "full-resource"),
        )
        .await;
    let (_, med) = hub
        .post(
            "/Subscription",
            &topic_subscription(
                MED_TOPIC,
                &["MedicationRequest?status=active"],
                &receiver.url("/med"),
                "id-only",
            ),
        )
        .await;
    hub.wait_for_status(lab["id"].as_str().expect("id"), "active")
        .await;
    hub.wait_for_status(med["id"].as_str().expect("id"), "active")
        .await;

    let mut observation = lab_observation("x", "final");
    observation["subject"] = json!({"reference": "urn:uuid:0c7a7e3c-6d9a-4c38-9a5c-0b3a3d9f1e11"});
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0c7a7e3c-6d9a-4c38-9a5c-0b3a3d9f1e11", "resource": {"resourceType": "Patient", "name": [{"family": "Chalmers"}]}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": observation, "request": {"method": "POST", "url": "Observation"}},
        {"resource": {"resourceType": "MedicationRequest", "id": "mr1", "status": "active", "intent": "order", "subject": {"reference": "Patient/p1"},
            "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197361"}]}},
         "request": {"method": "PUT", "url": "MedicationRequest/mr1"}}
    ]});
    let (status, response) = hub.post("", &bundle).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["type"], "transaction-response");
    let patient_location = response["entry"][0]["response"]["location"]
        .as_str()
        .expect("location")
        .to_owned();
    let patient_ref = patient_location
        .split("/_history")
        .next()
        .expect("ref")
        .to_owned();

    let lab_event = receiver.wait_for("/lab", 1, is_event).await.remove(0);
    assert_eq!(
        lab_event.json()["entry"][1]["resource"]["subject"]["reference"],
        patient_ref.as_str(),
        "urn:uuid rewritten"
    );
    receiver.wait_for("/med", 1, is_event).await;

    let response = hub
        .http
        .delete(hub.url("/MedicationRequest/mr1"))
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 204);
    let med_events = receiver.wait_for("/med", 2, is_event).await;
    assert_eq!(med_events[1].event_numbers(), vec![2]);
    assert_eq!(
        med_events[1].json()["entry"][1]["request"]["method"],
        "DELETE"
    );
    let (status, _) = hub.get("/MedicationRequest/mr1").await;
    assert_eq!(status, 410);
    hub.stop().await;
}

fn valid_event(id: &str) -> Value {
    let mut resource = lab_observation("123", "final");
    resource["id"] = json!(id);
    json!({"event_id": id, "tenant": "default", "action": "create", "resource_type": "Observation", "resource_id": id,
           "version": "1", "time": "2026-11-24T09:00:00Z", "source": "engine", "resource": resource})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_events_on_nats_are_dead_lettered_and_the_consumer_keeps_going() {
    let hub = TestHub::start(TestMode::Production).await;
    let receiver = Receiver::start().await;
    let (_, sub) = hub
        .post(
            "/Subscription",
            &topic_subscription(LAB_TOPIC, &[], &receiver.url("/dl"), "id-only"),
        )
        .await;
    hub.wait_for_status(sub["id"].as_str().expect("id"), "active")
        .await;

    let client = async_nats::connect(herald_integration_tests::nats_url())
        .await
        .expect("nats");
    let js = async_nats::jetstream::new(client);
    let subject = format!("{}.default.Observation", hub.settings.nats.subject_prefix);
    js.publish(subject.clone(), "{this is not json".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    let mut wrong = valid_event("wrong-subject");
    wrong["resource_type"] = json!("Patient");
    wrong["resource"]["resourceType"] = json!("Patient");
    js.publish(subject.clone(), wrong.to_string().into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    js.publish(subject, valid_event("good-after-poison").to_string().into())
        .await
        .expect("publish")
        .await
        .expect("ack");

    let events = receiver.wait_for("/dl", 1, is_event).await;
    assert_eq!(
        events[0].event_numbers(),
        vec![1],
        "the valid event after the poison ones was processed"
    );

    let dlq = js
        .get_stream(format!("{}_DEADLETTER", hub.settings.nats.stream))
        .await
        .expect("dead-letter stream");
    let first = dlq.get_raw_message(1).await.expect("first dead letter");
    let reason = first
        .headers
        .get("Herald-Dead-Letter-Reason")
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    assert!(reason.contains("not valid JSON"), "{reason}");
    let second = dlq.get_raw_message(2).await.expect("second dead letter");
    let reason = second
        .headers
        .get("Herald-Dead-Letter-Reason")
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    assert!(reason.contains("does not match the event"), "{reason}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_events_on_the_embedded_bus_are_dead_lettered() {
    let hub = TestHub::start(TestMode::Embedded).await;
    let receiver = Receiver::start().await;
    let (_, sub) = hub
        .post(
            "/Subscription",
            &topic_subscription(LAB_TOPIC, &[], &receiver.url("/edl"), "id-only"),
        )
        .await;
    hub.wait_for_status(sub["id"].as_str().expect("id"), "active")
        .await;
    // A second handle on the same durable log, as a co-located integration engine would use.
    let bus = herald_bus::EmbeddedBus::open(&hub.settings.data_dir.join("bus.sqlite"))
        .await
        .expect("bus");
    bus.publish_raw("fhir.changes.default.Observation", None, b"[1,2,3]")
        .await
        .expect("publish");
    bus.publish_raw(
        "fhir.changes.default.Observation",
        Some("good"),
        valid_event("good").to_string().as_bytes(),
    )
    .await
    .expect("publish");
    let events = receiver.wait_for("/edl", 1, is_event).await;
    assert_eq!(events[0].event_numbers(), vec![1]);
    let dead = bus.dead_letters().await.expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert!(dead[0].2.contains("schema"), "{}", dead[0].2);
    hub.stop().await;
}

/// A write that died between reserving its version and confirming its publish (simulated by
/// leaving the reservation pending in storage) is published when Herald starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_publish_is_completed_at_the_next_start() {
    use herald_store::Store;
    let hub = TestHub::start(TestMode::Embedded).await;
    let settings = hub.settings.clone();
    let receiver = Receiver::start().await;
    let (_, sub) = hub
        .post(
            "/Subscription",
            &topic_subscription(LAB_TOPIC, &[], &receiver.url("/crash"), "id-only"),
        )
        .await;
    hub.wait_for_status(sub["id"].as_str().expect("id"), "active")
        .await;
    hub.stop().await;

    // What a crash right after the reservation leaves behind.
    let store = herald_store::SqliteStore::open(&settings.data_dir.join("herald.sqlite"))
        .await
        .expect("store");
    let mut resource = lab_observation("1", "final");
    resource["id"] = json!("crashed");
    let event = herald_fhir::ChangeEvent::from_value(json!({
        "event_id": "reserved-then-crashed", "tenant": "default", "action": "create",
        "resource_type": "Observation", "resource_id": "crashed", "version": "1",
        "time": "2026-11-24T09:00:00Z", "source": "herald-facade", "resource": resource
    }))
    .expect("event");
    let reserved = herald_store::StoredResource {
        tenant: "default".into(),
        resource_type: "Observation".into(),
        id: "crashed".into(),
        seq: 1,
        version_id: "1".into(),
        deleted: false,
        resource: event.resource.clone(),
        updated_at: 0,
        pending_event: Some(serde_json::to_string(&event).expect("json")),
    };
    assert!(store.put_resource(&reserved, None).await.expect("reserve"));
    drop(store);

    let hub = TestHub::start_with(settings).await;
    let events = receiver.wait_for("/crash", 1, is_event).await;
    assert_eq!(events[0].event_numbers(), vec![1]);
    assert!(events[0].body.windows(7).any(|w| w == b"crashed"));
    // And a later write of the same resource is version 2 with the crashed one as previous.
    let mut next = lab_observation("1", "amended");
    next["id"] = json!("crashed");
    let (status, body) = hub.put("/Observation/crashed", &next).await;
    assert_eq!(
        (status.as_u16(), body["meta"]["versionId"].as_str()),
        (200, Some("2")),
        "{body}"
    );
    receiver.wait_for("/crash", 2, is_event).await;
    hub.stop().await;
}
