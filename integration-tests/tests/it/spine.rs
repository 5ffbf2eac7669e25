//! The spine in each mode: subscriptions registered over REST, an Observation written
//! through the facade, handshake and event-notification bundles received with the right
//! event numbers; duplicates yield one notification; bad subscriptions are not stored.

use herald_integration_tests::fhir::{
    criteria_subscription, lab_observation, topic_subscription, LAB_TOPIC,
};
use herald_integration_tests::{Receiver, TestHub, TestMode};
use serde_json::{json, Value};

async fn spine(mode: TestMode) {
    let hub = TestHub::start(mode).await;
    let receiver = Receiver::start().await;

    // Topic-based, full-resource, filtered to Patient/123.
    let (status, topic_sub) = hub
        .post(
            "/Subscription",
            &topic_subscription(
                LAB_TOPIC,
                &["Observation?patient=Patient/123"],
                &receiver.url("/topic"),
                "full-resource",
            ),
        )
        .await;
    assert_eq!(status, 201, "{topic_sub}");
    assert_eq!(topic_sub["status"], "requested");
    let topic_id = topic_sub["id"].as_str().expect("id").to_owned();

    // Criteria-based with the Backport payload extension: Backport bundles, id-only.
    let criteria = "Observation?code=http://loinc.org|2345-7&subject=Patient/123";
    let (status, criteria_sub) = hub
        .post(
            "/Subscription",
            &criteria_subscription(
                criteria,
                &receiver.url("/criteria"),
                Some("application/fhir+json"),
                Some("id-only"),
            ),
        )
        .await;
    assert_eq!(status, 201, "{criteria_sub}");
    let criteria_id = criteria_sub["id"].as_str().expect("id").to_owned();

    // R4 classic without payload: a POST with no body per match.
    let (status, classic) = hub
        .post(
            "/Subscription",
            &criteria_subscription(criteria, &receiver.url("/classic"), None, None),
        )
        .await;
    assert_eq!(status, 201, "{classic}");
    // R4 classic with payload: the resource PUT to [endpoint]/Observation/[id].
    let (status, classic_put) = hub
        .post(
            "/Subscription",
            &criteria_subscription(
                criteria,
                &receiver.url("/classic-put"),
                Some("application/fhir+json"),
                None,
            ),
        )
        .await;
    assert_eq!(status, 201, "{classic_put}");

    // Handshakes (Backport only), then active.
    for (path, id) in [("/topic", &topic_id), ("/criteria", &criteria_id)] {
        let handshakes = receiver
            .wait_for(path, 1, |r| {
                r.notification_type().as_deref() == Some("handshake")
            })
            .await;
        let h = &handshakes[0];
        assert_eq!(h.parameter("status").as_deref(), Some("requested"));
        assert_eq!(
            h.parameter("events-since-subscription-start").as_deref(),
            Some("0")
        );
        assert_eq!(
            h.json()["entry"][0]["request"]["url"],
            format!("{}/Subscription/{id}/$status", hub.herald.base_url)
        );
        hub.wait_for_status(id, "active").await;
    }
    hub.wait_for_status(classic["id"].as_str().expect("id"), "active")
        .await;
    hub.wait_for_status(classic_put["id"].as_str().expect("id"), "active")
        .await;

    // A write through the facade.
    let (status, written) = hub
        .post("/Observation", &lab_observation("123", "final"))
        .await;
    assert_eq!(status, 201, "{written}");
    let obs_id = written["id"].as_str().expect("id").to_owned();
    assert_eq!(written["meta"]["versionId"], "1");

    let is_event = |r: &herald_integration_tests::Received| {
        r.notification_type().as_deref() == Some("event-notification")
    };
    let topic_event = receiver.wait_for("/topic", 1, is_event).await.remove(0);
    assert_eq!(topic_event.event_numbers(), vec![1]);
    assert_eq!(topic_event.parameter("topic").as_deref(), Some(LAB_TOPIC));
    assert_eq!(topic_event.headers["content-type"], "application/fhir+json");
    assert_eq!(
        topic_event.headers["authorization"],
        "Bearer test-token-123"
    );
    assert_eq!(topic_event.headers["x-test"], "herald");
    let bundle = topic_event.json();
    assert_eq!(bundle["type"], "history");
    assert_eq!(
        bundle["entry"][1]["resource"]["id"],
        obs_id.as_str(),
        "full-resource carries the Observation"
    );
    assert_eq!(bundle["entry"][1]["request"]["method"], "POST");
    for entry in bundle["entry"].as_array().expect("entries") {
        assert!(
            entry.get("request").is_some() && entry.get("response").is_some(),
            "every history entry has request and response"
        );
    }

    let criteria_event = receiver.wait_for("/criteria", 1, is_event).await.remove(0);
    assert_eq!(criteria_event.event_numbers(), vec![1]);
    let bundle = criteria_event.json();
    assert!(
        bundle["entry"][1].get("resource").is_none(),
        "id-only has no resource"
    );
    assert_eq!(
        bundle["entry"][1]["fullUrl"],
        format!("{}/Observation/{obs_id}", hub.herald.base_url)
    );

    let classic_post = receiver.wait_for("/classic", 1, |_| true).await.remove(0);
    assert_eq!(classic_post.method, "POST");
    assert!(
        classic_post.body.is_empty(),
        "R4 rest-hook without payload sends no body"
    );
    let put_path = format!("/classic-put/Observation/{obs_id}");
    let classic_update = receiver.wait_for(&put_path, 1, |_| true).await.remove(0);
    assert_eq!(classic_update.method, "PUT");
    assert_eq!(classic_update.json()["id"], obs_id.as_str());

    // Another patient's result: no notification, and the numbers stay gap-free.
    let (status, _) = hub
        .post("/Observation", &lab_observation("999", "final"))
        .await;
    assert_eq!(status, 201);
    // An amendment of the first result: event 2 everywhere.
    let mut amended = written.clone();
    amended["status"] = json!("amended");
    let (status, updated) = hub.put(&format!("/Observation/{obs_id}"), &amended).await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["meta"]["versionId"], "2");
    let topic_events = receiver.wait_for("/topic", 2, is_event).await;
    assert_eq!(topic_events[1].event_numbers(), vec![2]);
    assert_eq!(
        topic_events[1].json()["entry"][1]["request"]["method"],
        "PUT"
    );
    let criteria_events = receiver.wait_for("/criteria", 2, is_event).await;
    assert_eq!(criteria_events[1].event_numbers(), vec![2]);
    receiver.wait_for("/classic", 2, |_| true).await;

    // $status reports the count.
    let (status, status_bundle) = hub.get(&format!("/Subscription/{topic_id}/$status")).await;
    assert_eq!(status, 200);
    assert_eq!(status_bundle["type"], "searchset");
    let params = &status_bundle["entry"][0]["resource"]["parameter"];
    let count = params
        .as_array()
        .expect("params")
        .iter()
        .find(|p| p["name"] == "events-since-subscription-start")
        .expect("count");
    assert_eq!(count["valueString"], "2");

    // No other patient's data reached the filtered subscription.
    for r in receiver.at("/topic") {
        assert!(
            !r.body.windows(11).any(|w| w == b"Patient/999"),
            "Patient/999 leaked into a Patient/123 subscription"
        );
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spine_embedded() {
    spine(TestMode::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spine_nats_jetstream_postgres() {
    spine(TestMode::Production).await;
}

fn change_event(id: &str, resource_id: &str, version: &str) -> Value {
    let mut resource = lab_observation("123", "final");
    resource["id"] = json!(resource_id);
    json!({
        "event_id": id, "tenant": "default", "action": "create",
        "resource_type": "Observation", "resource_id": resource_id, "version": version,
        "time": "2026-11-24T09:00:00Z", "source": "lab-engine", "resource": resource
    })
}

/// The same change event published twice yields one notification — through the ingest
/// endpoint (dedup on the bus) and straight onto JetStream without a message id (dedup in
/// the notification log).
async fn duplicate_event_yields_one_notification(mode: TestMode) {
    let hub = TestHub::start(mode).await;
    let receiver = Receiver::start().await;
    let (status, sub) = hub
        .post(
            "/Subscription",
            &topic_subscription(LAB_TOPIC, &[], &receiver.url("/dup"), "id-only"),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    let id = sub["id"].as_str().expect("id").to_owned();
    hub.wait_for_status(&id, "active").await;

    let event = change_event("evt-dup-1", "obs-dup", "1");
    let response = hub
        .http
        .post(format!(
            "http://{}/ingest/change-events",
            hub.herald.local_addr
        ))
        .json(&event)
        .send()
        .await
        .expect("ingest");
    assert_eq!(response.status(), 202);
    let response = hub
        .http
        .post(format!(
            "http://{}/ingest/change-events",
            hub.herald.local_addr
        ))
        .json(&event)
        .send()
        .await
        .expect("ingest");
    let (_, body) = TestHub::read(response).await;
    assert_eq!(body, json!({"accepted": 0, "duplicates": 1}));

    if mode == TestMode::Production {
        // Past the bus's dedup: the same event re-published without Nats-Msg-Id.
        let client = async_nats::connect(herald_integration_tests::nats_url())
            .await
            .expect("nats");
        let js = async_nats::jetstream::new(client);
        let subject = format!("{}.default.Observation", hub.settings.nats.subject_prefix);
        js.publish(subject, event.to_string().into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    // A later, different event proves the pipeline moved past the duplicates.
    let later = change_event("evt-dup-2", "obs-dup-2", "1");
    hub.http
        .post(format!(
            "http://{}/ingest/change-events",
            hub.herald.local_addr
        ))
        .json(&later)
        .send()
        .await
        .expect("ingest");
    let events = receiver
        .wait_for("/dup", 2, |r| {
            r.notification_type().as_deref() == Some("event-notification")
        })
        .await;
    assert_eq!(
        events.iter().map(|e| e.event_numbers()).collect::<Vec<_>>(),
        vec![vec![1], vec![2]]
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let all = receiver
        .at("/dup")
        .into_iter()
        .filter(|r| r.notification_type().as_deref() == Some("event-notification"))
        .count();
    assert_eq!(all, 2, "the duplicate produced no notification");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_event_yields_one_notification_embedded() {
    duplicate_event_yields_one_notification(TestMode::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_event_yields_one_notification_nats_jetstream_postgres() {
    duplicate_event_yields_one_notification(TestMode::Production).await;
}

/// Creation fails closed: each bad Subscription gets a 4xx OperationOutcome naming the
/// problem, and nothing is stored.
async fn bad_subscriptions_are_refused_and_not_stored(mode: TestMode) {
    let hub = TestHub::start(mode).await;
    let endpoint = "http://127.0.0.1:9/hook";
    let mut unknown_filter = topic_subscription(
        LAB_TOPIC,
        &["Observation?value-quantity=gt5"],
        endpoint,
        "id-only",
    );
    unknown_filter["reason"] = json!("filter the topic does not allow");
    let cases: Vec<(Value, &str)> = vec![
        (
            topic_subscription("http://example.org/no-such-topic", &[], endpoint, "id-only"),
            "unknown SubscriptionTopic",
        ),
        (
            criteria_subscription("Observation?foo=bar", endpoint, None, None),
            "unknown search parameter 'foo'",
        ),
        (
            criteria_subscription(
                "Observation?code:below=http://loinc.org|2345",
                endpoint,
                None,
                None,
            ),
            "below",
        ),
        (
            criteria_subscription("Observation?_filter=code co 1", endpoint, None, None),
            "_filter",
        ),
        (
            criteria_subscription("Observation?code.name=x", endpoint, None, None),
            "chain",
        ),
        (unknown_filter, "value-quantity"),
        (
            {
                let mut s = topic_subscription(LAB_TOPIC, &[], endpoint, "id-only");
                s["channel"]["type"] = json!("websocket");
                s
            },
            "websocket",
        ),
        (
            {
                let mut s = topic_subscription(LAB_TOPIC, &[], endpoint, "id-only");
                s["channel"]["payload"] = json!("application/fhir+xml");
                s
            },
            "application/fhir+xml",
        ),
        (
            topic_subscription(LAB_TOPIC, &[], endpoint, "everything"),
            "everything",
        ),
        (
            topic_subscription(LAB_TOPIC, &[], "adfdf", "id-only"),
            "absolute",
        ),
    ];
    for (subscription, expected) in cases {
        let (status, outcome) = hub.post("/Subscription", &subscription).await;
        assert!(
            status == 400 || status == 422,
            "{expected}: got {status} {outcome}"
        );
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        let diagnostics = outcome["issue"][0]["diagnostics"]
            .as_str()
            .unwrap_or_default();
        assert!(
            diagnostics.contains(expected),
            "diagnostics '{diagnostics}' should name '{expected}'"
        );
    }
    let (_, search) = hub.get("/Subscription").await;
    assert_eq!(search["total"], 0, "nothing stored: {search}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscriptions_are_refused_and_not_stored_embedded() {
    bad_subscriptions_are_refused_and_not_stored(TestMode::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscriptions_are_refused_and_not_stored_nats_jetstream_postgres() {
    bad_subscriptions_are_refused_and_not_stored(TestMode::Production).await;
}
