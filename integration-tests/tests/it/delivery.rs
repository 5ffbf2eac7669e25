//! Delivery behaviour: handshake failure, retries in order, heartbeats, $events, 410.

use std::time::Duration;

use herald_integration_tests::fhir::{lab_observation, topic_subscription, LAB_TOPIC};
use herald_integration_tests::{test_settings, Receiver, TestHub, TestMode};
use serde_json::json;

fn is_event(r: &herald_integration_tests::Received) -> bool {
    r.notification_type().as_deref() == Some("event-notification")
}

async fn fast_retry_hub() -> TestHub {
    let mut settings = test_settings(TestMode::Embedded).await;
    settings.delivery.retry_schedule_secs = vec![1; 20];
    settings.delivery.error_after_failures = 2;
    TestHub::start_with(settings).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_failure_means_error_until_the_client_asks_again() {
    let hub = fast_retry_hub().await;
    let receiver = Receiver::start().await;
    receiver.respond_with(500);
    let subscription = topic_subscription(LAB_TOPIC, &[], &receiver.url("/hs"), "id-only");
    let (_, created) = hub.post("/Subscription", &subscription).await;
    let id = created["id"].as_str().expect("id").to_owned();
    hub.wait_for_status(&id, "error").await;
    let (_, current) = hub.get(&format!("/Subscription/{id}")).await;
    assert!(
        current["error"]
            .as_str()
            .unwrap_or_default()
            .contains("handshake failed"),
        "{current}"
    );

    // Events are still counted in error.
    hub.post("/Observation", &lab_observation("1", "final"))
        .await;
    receiver.respond_with(200);
    let mut again = current.clone();
    again["status"] = json!("requested");
    let (status, _) = hub.put(&format!("/Subscription/{id}"), &again).await;
    assert_eq!(status, 200);
    hub.wait_for_status(&id, "active").await;
    let events = receiver.wait_for("/hs", 1, is_event).await;
    assert_eq!(
        events[0].event_numbers(),
        vec![1],
        "the event counted during error is delivered after recovery"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_returning_503_receives_everything_in_order_once_it_recovers() {
    let hub = fast_retry_hub().await;
    let receiver = Receiver::start().await;
    let (_, created) = hub
        .post(
            "/Subscription",
            &topic_subscription(LAB_TOPIC, &[], &receiver.url("/r"), "id-only"),
        )
        .await;
    let id = created["id"].as_str().expect("id").to_owned();
    hub.wait_for_status(&id, "active").await;
    receiver.respond_with(503);
    for _ in 0..5 {
        let (status, _) = hub
            .post("/Observation", &lab_observation("7", "final"))
            .await;
        assert_eq!(status, 201);
    }
    // Two failed attempts make the status `error`; events are still counted.
    hub.wait_for_status(&id, "error").await;
    receiver.respond_with(200);
    hub.wait_for_status(&id, "active").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let delivered: Vec<i64> = loop {
        let seen: Vec<i64> = receiver
            .at("/r")
            .into_iter()
            .filter(is_event)
            .flat_map(|r| r.event_numbers())
            .collect();
        if seen.contains(&5) {
            break seen;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not everything arrived: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Attempts repeat the head-of-line event until it succeeds, so the sequence of numbers
    // seen is non-decreasing and ends with every number 1..5.
    assert!(
        delivered.windows(2).all(|w| w[0] <= w[1]),
        "in order: {delivered:?}"
    );
    let unique: Vec<i64> = delivered
        .iter()
        .copied()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(unique, vec![1, 2, 3, 4, 5]);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_only_when_a_period_is_set_and_events_can_be_replayed() {
    let hub = TestHub::start(TestMode::Embedded).await;
    let receiver = Receiver::start().await;
    let mut beating = topic_subscription(LAB_TOPIC, &[], &receiver.url("/beat"), "full-resource");
    beating["channel"]["extension"] = json!([{"url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period", "valueUnsignedInt": 1}]);
    let (_, beating) = hub.post("/Subscription", &beating).await;
    let (_, quiet) = hub
        .post(
            "/Subscription",
            &topic_subscription(LAB_TOPIC, &[], &receiver.url("/quiet"), "id-only"),
        )
        .await;
    let beating_id = beating["id"].as_str().expect("id").to_owned();
    hub.wait_for_status(&beating_id, "active").await;
    hub.wait_for_status(quiet["id"].as_str().expect("id"), "active")
        .await;
    let beats = receiver
        .wait_for("/beat", 2, |r| {
            r.notification_type().as_deref() == Some("heartbeat")
        })
        .await;
    assert_eq!(beats[0].parameter("status").as_deref(), Some("active"));
    assert!(
        receiver
            .at("/quiet")
            .iter()
            .all(|r| r.notification_type().as_deref() != Some("heartbeat")),
        "no heartbeat without a period"
    );

    for patient in ["a", "b", "c"] {
        hub.post("/Observation", &lab_observation(patient, "final"))
            .await;
    }
    receiver.wait_for("/beat", 3, is_event).await;
    let (status, replay) = hub.get(&format!("/Subscription/{beating_id}/$events?eventsSinceNumber=2&eventsUntilNumber=3&content=id-only")).await;
    assert_eq!(status, 200, "{replay}");
    let params = replay["entry"][0]["resource"]["parameter"]
        .as_array()
        .expect("params")
        .clone();
    assert!(params
        .iter()
        .any(|p| p["name"] == "type" && p["valueCode"] == "query-event"));
    let numbers: Vec<&str> = params
        .iter()
        .filter(|p| p["name"] == "notification-event")
        .filter_map(|p| p["part"][0]["valueString"].as_str())
        .collect();
    assert_eq!(numbers, vec!["2", "3"]);
    assert!(
        replay["entry"][1].get("resource").is_none(),
        "content=id-only honoured"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_turns_a_subscription_off() {
    let hub = fast_retry_hub().await;
    let receiver = Receiver::start().await;
    let (_, created) = hub
        .post(
            "/Subscription",
            &topic_subscription(LAB_TOPIC, &[], &receiver.url("/gone"), "empty"),
        )
        .await;
    let id = created["id"].as_str().expect("id").to_owned();
    hub.wait_for_status(&id, "active").await;
    receiver.respond_with(410);
    hub.post("/Observation", &lab_observation("1", "final"))
        .await;
    hub.wait_for_status(&id, "off").await;
    let (_, current) = hub.get(&format!("/Subscription/{id}")).await;
    assert!(
        current["error"]
            .as_str()
            .unwrap_or_default()
            .contains("410"),
        "{current}"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_event_is_counted_after_subscription_end() {
    let hub = TestHub::start(TestMode::Embedded).await;
    let receiver = Receiver::start().await;
    let mut subscription = topic_subscription(LAB_TOPIC, &[], &receiver.url("/end"), "id-only");
    let end = chrono::Utc::now() + chrono::Duration::seconds(2);
    subscription["end"] = json!(end.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let (status, created) = hub.post("/Subscription", &subscription).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    hub.wait_for_status(&id, "active").await;
    hub.post("/Observation", &lab_observation("1", "final"))
        .await;
    receiver.wait_for("/end", 1, is_event).await;
    tokio::time::sleep_until(
        tokio::time::Instant::now()
            + (end - chrono::Utc::now()).to_std().unwrap_or_default()
            + Duration::from_millis(200),
    )
    .await;
    hub.post("/Observation", &lab_observation("1", "final"))
        .await;
    // A later write to a subscription still in force shows the pipeline moved past it.
    let (_, other) = hub
        .post(
            "/Subscription",
            &topic_subscription(LAB_TOPIC, &[], &receiver.url("/other"), "id-only"),
        )
        .await;
    hub.wait_for_status(other["id"].as_str().expect("id"), "active")
        .await;
    hub.post("/Observation", &lab_observation("2", "final"))
        .await;
    receiver.wait_for("/other", 1, is_event).await;
    let (_, status_bundle) = hub.get(&format!("/Subscription/{id}/$status")).await;
    let text = status_bundle.to_string();
    assert!(
        text.contains("\"events-since-subscription-start\",\"valueString\":\"1\""),
        "{text}"
    );
    hub.stop().await;
}
