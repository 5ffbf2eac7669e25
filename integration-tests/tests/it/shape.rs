//! A topic's `notificationShape` end to end: resources written through the facade, a
//! custom topic with includes and a revInclude, and the additional context in the
//! notification bundles of full-resource and id-only subscribers (and in `$events`):
//! `additional-context` references on each `notification-event` and the matching entries;
//! a deleted included resource is left out; a revInclude finds the Observations of an
//! Encounter focus.

use std::collections::{BTreeMap, BTreeSet};

use herald_integration_tests::fhir::topic_subscription;
use herald_integration_tests::{Received, Receiver, TestHub, TestMode};
use serde_json::{json, Value};

const SHAPE_TOPIC: &str = "http://example.org/fhir/SubscriptionTopic/encounter-and-results";

fn shaped_topic() -> Value {
    json!({
        "resourceType": "SubscriptionTopic",
        "url": SHAPE_TOPIC,
        "status": "active",
        "resourceTrigger": [
            {"resource": "Observation", "supportedInteraction": ["create", "update"]},
            {"resource": "Encounter", "supportedInteraction": ["create", "update"]}
        ],
        "notificationShape": [
            {"resource": "Observation", "include": ["Observation:subject:Patient", "Observation:encounter"]},
            {"resource": "Encounter", "include": ["Encounter:subject"], "revInclude": ["Observation:encounter"]}
        ]
    })
}

/// What the received bundles say about one focus: its `additional-context` references and,
/// per entry fullUrl, whether the entry carried the resource.
#[derive(Debug, Default)]
struct Seen {
    /// focus reference → additional-context references (latest notification wins).
    context: BTreeMap<String, BTreeSet<String>>,
    /// entry fullUrl → (resource present, request method) for non-status entries.
    entries: BTreeMap<String, (bool, String)>,
}

fn seen(bundles: &[Value]) -> Seen {
    let mut out = Seen::default();
    for bundle in bundles {
        let parameters = bundle
            .pointer("/entry/0/resource/parameter")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for event in parameters
            .iter()
            .filter(|p| p["name"] == "notification-event")
        {
            let parts = event["part"].as_array().cloned().unwrap_or_default();
            let reference =
                |p: &Value| p["valueReference"]["reference"].as_str().map(str::to_owned);
            let Some(focus) = parts
                .iter()
                .find(|p| p["name"] == "focus")
                .and_then(reference)
            else {
                continue;
            };
            let context = parts
                .iter()
                .filter(|p| p["name"] == "additional-context")
                .filter_map(reference)
                .collect();
            out.context.insert(focus, context);
        }
        for entry in bundle["entry"].as_array().into_iter().flatten().skip(1) {
            if let Some(url) = entry["fullUrl"].as_str() {
                out.entries.insert(
                    url.to_owned(),
                    (
                        entry.get("resource").is_some(),
                        entry["request"]["method"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    ),
                );
            }
        }
    }
    out
}

fn events(received: &[Received]) -> Vec<Value> {
    received
        .iter()
        .filter(|r| r.notification_type().as_deref() == Some("event-notification"))
        .map(Received::json)
        .collect()
}

async fn put(hub: &TestHub, path: &str, body: Value) {
    let (status, written) = hub.put(path, &body).await;
    assert!(status.is_success(), "PUT {path}: {status} {written}");
}

async fn shape(mode: TestMode) {
    let hub = TestHub::start(mode).await;
    let receiver = Receiver::start().await;
    let base = hub.herald.base_url.clone();
    let url = |reference: &str| format!("{base}/{reference}");

    let (status, topic) = hub.post("/SubscriptionTopic", &shaped_topic()).await;
    assert_eq!(status, 201, "{topic}");
    let mut ids = Vec::new();
    for (path, content) in [("/full", "full-resource"), ("/id", "id-only")] {
        let (status, created) = hub
            .post(
                "/Subscription",
                &topic_subscription(SHAPE_TOPIC, &[], &receiver.url(path), content),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().expect("id").to_owned();
        hub.wait_for_status(&id, "active").await;
        ids.push(id);
    }

    // The Patient is not a trigger type: no event, but it is there to be included.
    put(
        &hub,
        "/Patient/p1",
        json!({"resourceType": "Patient", "id": "p1", "active": true}),
    )
    .await;
    put(
        &hub,
        "/Encounter/e1",
        json!({"resourceType": "Encounter", "id": "e1", "status": "in-progress",
               "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
               "subject": {"reference": "Patient/p1"}}),
    )
    .await;
    let observation = |id: &str, patient: &str| {
        json!({"resourceType": "Observation", "id": id, "status": "final",
               "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
               "subject": {"reference": format!("Patient/{patient}")},
               "encounter": {"reference": "Encounter/e1"}})
    };
    put(&hub, "/Observation/o1", observation("o1", "p1")).await;
    // p2 is deleted before the Observation naming it is written: not included.
    put(
        &hub,
        "/Patient/p2",
        json!({"resourceType": "Patient", "id": "p2"}),
    )
    .await;
    let (status, _) = hub
        .http
        .delete(hub.url("/Patient/p2"))
        .send()
        .await
        .map(|r| (r.status(), ()))
        .expect("delete");
    assert!(status.is_success(), "DELETE Patient/p2: {status}");
    put(&hub, "/Observation/o2", observation("o2", "p2")).await;
    // An update of the Encounter: its revInclude finds both Observations.
    put(
        &hub,
        "/Encounter/e1",
        json!({"resourceType": "Encounter", "id": "e1", "status": "finished",
               "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
               "subject": {"reference": "Patient/p1"}}),
    )
    .await;

    for (path, full) in [("/full", true), ("/id", false)] {
        // Events of different resources may be numbered in any order (production mode
        // matches concurrently): wait until every focus arrived, the Encounter with its
        // Observations.
        let wanted = [url("Observation/o1"), url("Observation/o2")];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let (last_encounter, all) = loop {
            let bundles = events(&receiver.at(path));
            let all = seen(&bundles);
            let complete = bundles.iter().rev().find(|b| {
                seen(std::slice::from_ref(b))
                    .context
                    .get(&url("Encounter/e1"))
                    .is_some_and(|c| c.len() == 3)
            });
            if let Some(bundle) = complete {
                if wanted.iter().all(|w| all.context.contains_key(w)) {
                    break (bundle.clone(), all);
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{path}: not every notification arrived: {bundles:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        let bundle = last_encounter;
        let last_encounter = seen(std::slice::from_ref(&bundle));

        let set = |refs: &[&str]| refs.iter().map(|r| url(r)).collect::<BTreeSet<_>>();
        assert_eq!(
            all.context[&url("Observation/o1")],
            set(&["Patient/p1", "Encounter/e1"]),
            "{path}: includes of o1"
        );
        assert_eq!(
            all.context[&url("Observation/o2")],
            set(&["Encounter/e1"]),
            "{path}: deleted Patient/p2 is not included"
        );
        assert_eq!(
            last_encounter.context[&url("Encounter/e1")],
            set(&["Patient/p1", "Observation/o1", "Observation/o2"]),
            "{path}: include and revInclude of the updated Encounter"
        );
        assert!(!all.entries.contains_key(&url("Patient/p2")), "{path}");
        for reference in ["Patient/p1", "Observation/o1", "Observation/o2"] {
            let (has_resource, method) = &last_encounter.entries[&url(reference)];
            assert_eq!(*has_resource, full, "{path}: {reference} entry resource");
            assert_eq!(method, "GET", "{path}: {reference} entry request");
        }
        if full {
            let patient = bundle["entry"]
                .as_array()
                .and_then(|e| e.iter().find(|x| x["fullUrl"] == url("Patient/p1")))
                .expect("Patient entry");
            assert_eq!(patient["resource"]["id"], "p1");
            assert_eq!(patient["response"]["status"], "200");
        }
    }

    // $events renders the same context (as of now) for the stored events.
    let (status, replay) = hub.get(&format!("/Subscription/{}/$events", ids[0])).await;
    assert_eq!(status, 200, "{replay}");
    let replayed = seen(&[replay]);
    assert_eq!(
        replayed.context[&url("Observation/o1")],
        [url("Encounter/e1"), url("Patient/p1")]
            .into_iter()
            .collect::<BTreeSet<_>>()
    );
    assert!(
        replayed.entries[&url("Patient/p1")].0,
        "full-resource replay"
    );

    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shape_additional_context_embedded() {
    shape(TestMode::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shape_additional_context_production() {
    shape(TestMode::Production).await;
}

/// A topic whose shape cannot be resolved is refused at creation, naming the directive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shape_unsupported_directives_are_refused() {
    let hub = TestHub::start(TestMode::Embedded).await;
    let mut topic = shaped_topic();
    topic["notificationShape"][1]["include"] = json!(["Encounter:patient&iterate=Patient.link"]);
    let (status, outcome) = hub.post("/SubscriptionTopic", &topic).await;
    assert_eq!(status, 422, "{outcome}");
    assert!(
        outcome
            .to_string()
            .contains("Encounter:patient&iterate=Patient.link"),
        "{outcome}"
    );
    topic["notificationShape"][1]["include"] = json!(["Encounter:status"]);
    let (status, outcome) = hub.post("/SubscriptionTopic", &topic).await;
    assert_eq!(status, 400, "{outcome}");
    assert!(outcome.to_string().contains("not a reference"), "{outcome}");
    let (_, list) = hub.get("/SubscriptionTopic").await;
    assert!(!list.to_string().contains(SHAPE_TOPIC), "nothing stored");
    hub.stop().await;
}

/// The WebSocket channel carries the same context: an id-only websocket subscription to the
/// shaped topic, bound with a token, receives the Observation's event frame with its
/// Patient and Encounter as additional context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shape_additional_context_over_websocket() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let hub = TestHub::start(TestMode::Embedded).await;
    let base = hub.herald.base_url.clone();
    let (status, topic) = hub.post("/SubscriptionTopic", &shaped_topic()).await;
    assert_eq!(status, 201, "{topic}");
    put(
        &hub,
        "/Patient/p1",
        json!({"resourceType": "Patient", "id": "p1"}),
    )
    .await;
    put(
        &hub,
        "/Encounter/e1",
        json!({"resourceType": "Encounter", "id": "e1", "status": "in-progress",
               "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
               "subject": {"reference": "Patient/p1"}}),
    )
    .await;
    let mut subscription = topic_subscription(SHAPE_TOPIC, &[], "http://unused", "id-only");
    subscription["channel"] = json!({
        "type": "websocket",
        "payload": "application/fhir+json",
        "_payload": {"extension": [{"url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content", "valueCode": "id-only"}]}
    });
    let (status, created) = hub.post("/Subscription", &subscription).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let (status, token) = hub
        .get(&format!("/Subscription/{id}/$get-ws-binding-token"))
        .await;
    assert_eq!(status, 200, "{token}");
    let param = |name: &str, key: &str| {
        token["parameter"]
            .as_array()
            .and_then(|p| p.iter().find(|x| x["name"] == name))
            .and_then(|p| p[key].as_str())
            .expect("binding token parameter")
            .to_owned()
    };
    let (mut socket, _) =
        tokio_tungstenite::connect_async(param("websocket-url", "valueUrl").as_str())
            .await
            .expect("connect");
    socket
        .send(Message::text(format!(
            "bind-with-token {}",
            param("token", "valueString")
        )))
        .await
        .expect("bind");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut wrote = false;
    let event = loop {
        let next = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        let Message::Text(text) = next else { continue };
        let Ok(bundle) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let kind = bundle
            .pointer("/entry/0/resource/parameter")
            .and_then(Value::as_array)
            .and_then(|p| p.iter().find(|x| x["name"] == "type"))
            .and_then(|p| p["valueCode"].as_str())
            .map(str::to_owned);
        match kind.as_deref() {
            Some("handshake") if !wrote => {
                put(
                    &hub,
                    "/Observation/o1",
                    json!({"resourceType": "Observation", "id": "o1", "status": "final",
                           "code": {"text": "glucose"},
                           "subject": {"reference": "Patient/p1"},
                           "encounter": {"reference": "Encounter/e1"}}),
                )
                .await;
                wrote = true;
            }
            Some("event-notification") if text.contains("Observation/o1") => break bundle,
            _ => {}
        }
    };
    let seen = seen(&[event]);
    assert_eq!(
        seen.context[&format!("{base}/Observation/o1")],
        [format!("{base}/Encounter/e1"), format!("{base}/Patient/p1")]
            .into_iter()
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(
        seen.entries[&format!("{base}/Patient/p1")],
        (false, "GET".to_owned())
    );
    hub.stop().await;
}
