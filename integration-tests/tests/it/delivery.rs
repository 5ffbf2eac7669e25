//! Delivery behaviour: handshake failure, retries in order, heartbeats, $events, 410.

use std::time::Duration;

use herald_integration_tests::fhir::{lab_observation, topic_subscription, LAB_TOPIC};
use herald_integration_tests::{test_settings, Receiver, TestHub, TestMode};
use serde_json::{json, Value};

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
    let bundles = receiver
        .wait_for_event_bundles("/r", |b| b.iter().flatten().any(|&n| n == 5))
        .await;
    // Attempts repeat from the head-of-line event until it succeeds (a retry may carry
    // more events than the failed attempt, as the backlog is bundled): every bundle is in
    // order, each starts at or after where the one before started, and together they hold
    // every number 1..5.
    assert!(
        bundles
            .iter()
            .all(|b| !b.is_empty() && b.windows(2).all(|w| w[0] < w[1])),
        "each bundle in order: {bundles:?}"
    );
    assert!(
        bundles.windows(2).all(|w| w[0][0] <= w[1][0]),
        "in order: {bundles:?}"
    );
    let unique: Vec<i64> = bundles
        .iter()
        .flatten()
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

/// Standard Webhooks signatures, checked with the reference `standardwebhooks` verifier:
/// a generated secret shown once, key rotation (two secrets, both sign), secrets and header
/// values redacted on read and kept across a PUT of the redacted form, and `webhook-id`
/// stable across retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_signed_per_standard_webhooks() {
    use herald_fhir::subscription::EXT_SIGNING_SECRET;
    let hub = fast_retry_hub().await;
    let receiver = Receiver::start().await;

    // No secret given: Herald generates one and shows it once.
    let (status, created) = hub
        .post(
            "/Subscription",
            &topic_subscription(LAB_TOPIC, &[], &receiver.url("/gen"), "id-only"),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let generated = created["channel"]["extension"]
        .as_array()
        .and_then(|e| e.iter().find(|x| x["url"] == EXT_SIGNING_SECRET))
        .and_then(|x| x["valueString"].as_str())
        .expect("generated secret in the create response")
        .to_owned();
    let id = created["id"].as_str().expect("id").to_owned();
    let (_, read) = hub.get(&format!("/Subscription/{id}")).await;
    let text = read.to_string();
    assert!(!text.contains(&generated), "the secret never appears again");
    assert!(
        !text.contains("test-token-123"),
        "header values are redacted: {text}"
    );
    assert!(text.contains("Authorization: ***"));
    let handshake = receiver
        .wait_for("/gen", 1, |r| {
            r.notification_type().as_deref() == Some("handshake")
        })
        .await
        .remove(0);
    standardwebhooks::Webhook::new(&generated)
        .expect("secret")
        .verify(&handshake.body, &handshake.headers)
        .expect("handshake signature verifies");

    // Two secrets during rotation: each verifies on its own.
    let old = herald_delivery::signing::generate_secret();
    let new = herald_delivery::signing::generate_secret();
    let mut rotating = topic_subscription(LAB_TOPIC, &[], &receiver.url("/rot"), "id-only");
    rotating["channel"]["extension"] = json!([{"url": EXT_SIGNING_SECRET, "valueString": new}, {"url": EXT_SIGNING_SECRET, "valueString": old}]);
    let (status, rotating) = hub.post("/Subscription", &rotating).await;
    assert_eq!(status, 201, "{rotating}");
    let rot_id = rotating["id"].as_str().expect("id").to_owned();
    hub.wait_for_status(&rot_id, "active").await;

    // The receiver fails the first event attempt: the retry carries the same webhook-id.
    receiver.respond_with(503);
    hub.post("/Observation", &lab_observation("sig", "final"))
        .await;
    let failed = receiver.wait_for("/rot", 1, is_event).await.remove(0);
    receiver.respond_with(200);
    let attempts = receiver.wait_for("/rot", 2, is_event).await;
    assert_eq!(
        attempts[0].headers["webhook-id"], attempts[1].headers["webhook-id"],
        "webhook-id stable across retries"
    );
    assert_eq!(
        failed.headers["webhook-id"],
        attempts[1].headers["webhook-id"]
    );
    for secret in [&old, &new] {
        standardwebhooks::Webhook::new(secret)
            .expect("secret")
            .verify(&attempts[1].body, &attempts[1].headers)
            .expect("each rotation key verifies");
    }
    let stranger = herald_delivery::signing::generate_secret();
    assert!(
        standardwebhooks::Webhook::new(&stranger)
            .expect("secret")
            .verify(&attempts[1].body, &attempts[1].headers)
            .is_err(),
        "another key does not verify"
    );
    let mut tampered = attempts[1].body.to_vec();
    tampered.push(b' ');
    assert!(
        standardwebhooks::Webhook::new(&new)
            .expect("secret")
            .verify(&tampered, &attempts[1].headers)
            .is_err(),
        "a changed body does not verify"
    );

    // PUT back what was read (redacted): the stored secrets are kept.
    let (_, mut current) = hub.get(&format!("/Subscription/{rot_id}")).await;
    current["status"] = json!("requested");
    let (status, _) = hub.put(&format!("/Subscription/{rot_id}"), &current).await;
    assert_eq!(status, 200);
    let handshakes = receiver
        .wait_for("/rot", 2, |r| {
            r.notification_type().as_deref() == Some("handshake")
        })
        .await;
    standardwebhooks::Webhook::new(&old)
        .expect("secret")
        .verify(&handshakes[1].body, &handshakes[1].headers)
        .expect("still signed with the stored key");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_delivers_a_range_again_in_order() {
    let hub = TestHub::start(TestMode::Embedded).await;
    let receiver = Receiver::start().await;
    let (_, created) = hub
        .post(
            "/Subscription",
            &topic_subscription(LAB_TOPIC, &[], &receiver.url("/again"), "id-only"),
        )
        .await;
    let id = created["id"].as_str().expect("id").to_owned();
    hub.wait_for_status(&id, "active").await;
    for patient in ["a", "b", "c"] {
        hub.post("/Observation", &lab_observation(patient, "final"))
            .await;
    }
    receiver.wait_for("/again", 3, is_event).await;
    let parameters = json!({"resourceType": "Parameters", "parameter": [{"name": "eventsSinceNumber", "valueString": "2"}]});
    let (status, outcome) = hub
        .post(&format!("/Subscription/{id}/$resend"), &parameters)
        .await;
    assert_eq!(status, 200, "{outcome}");
    // The range may come back as one bundle or several (a backlog is bundled); in order
    // either way, after the first delivery.
    let numbers: Vec<i64> = receiver
        .wait_for_event_bundles("/again", |b| b.iter().map(Vec::len).sum::<usize>() >= 5)
        .await
        .concat();
    assert_eq!(numbers, vec![1, 2, 3, 2, 3]);
    let bad = json!({"resourceType": "Parameters", "parameter": [{"name": "eventsSinceInstant", "valueInstant": "2026-01-01T00:00:00Z"}]});
    let (status, _) = hub.post(&format!("/Subscription/{id}/$resend"), &bad).await;
    assert_eq!(
        status, 422,
        "unsupported parameters are refused, not ignored"
    );
    hub.stop().await;
}

/// The WebSocket channel through the whole server: a websocket Subscription, a binding
/// token from `$get-ws-binding-token`, `bind-with-token` over a real client, then the
/// handshake and an event-notification for an Observation written through the facade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_subscription_end_to_end() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let hub = TestHub::start(TestMode::Embedded).await;
    let mut subscription = topic_subscription(
        LAB_TOPIC,
        &["Observation?patient=Patient/ws"],
        "http://unused",
        "id-only",
    );
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
    let param = |name: &str| {
        token["parameter"]
            .as_array()
            .and_then(|p| p.iter().find(|x| x["name"] == name))
            .cloned()
            .unwrap_or_default()
    };
    let value = param("token")
        .get("valueString")
        .and_then(|v| v.as_str())
        .expect("token")
        .to_owned();
    let url = param("websocket-url")
        .get("valueUrl")
        .and_then(|v| v.as_str())
        .expect("websocket-url")
        .to_owned();
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("connect");
    socket
        .send(Message::text(format!("bind-with-token {value}")))
        .await
        .expect("bind");
    let mut types = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut wrote = false;
    while !types.iter().any(|t: &String| t == "event-notification") {
        let next = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("frame");
        let Message::Text(text) = next else { continue };
        let Ok(bundle) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let Some(params) = bundle
            .pointer("/entry/0/resource/parameter")
            .and_then(|p| p.as_array())
        else {
            continue;
        };
        if let Some(t) = params
            .iter()
            .find(|p| p["name"] == "type")
            .and_then(|p| p["valueCode"].as_str())
        {
            types.push(t.to_owned());
            if t == "handshake" && !wrote {
                hub.post("/Observation", &lab_observation("ws", "final"))
                    .await;
                wrote = true;
            }
            if t == "event-notification" {
                let number = params
                    .iter()
                    .find(|p| p["name"] == "notification-event")
                    .and_then(|p| p["part"][0]["valueString"].as_str());
                assert_eq!(number, Some("1"));
            }
        }
    }
    assert_eq!(types.first().map(String::as_str), Some("handshake"));
    hub.stop().await;
}

/// Herald's default for a subscription without `maxCount`: a backlog goes out in bundles of
/// up to 20 events, in order; a lone event is sent at once, alone (no bundle waits to
/// fill). A subscription with `maxCount` 1 gets one request per event from the same
/// backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_bundled_and_a_lone_event_goes_alone() {
    let mut settings = test_settings(TestMode::Embedded).await;
    settings.delivery.default_max_count = herald::Settings::default().delivery.default_max_count;
    assert_eq!(settings.delivery.default_max_count, 20, "Herald's default");
    let hub = TestHub::start_with(settings).await;
    let receiver = Receiver::start().await;
    let mut ids = Vec::new();
    for (path, max_count) in [("/default", None), ("/one", Some(1))] {
        let mut subscription = topic_subscription(LAB_TOPIC, &[], &receiver.url(path), "id-only");
        if let Some(n) = max_count {
            subscription["channel"]["extension"] = json!([{"url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-max-count", "valuePositiveInt": n}]);
        }
        let (status, created) = hub.post("/Subscription", &subscription).await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().expect("id").to_owned();
        hub.wait_for_status(&id, "active").await;
        ids.push(id);
    }
    let ingest = |events: Vec<Value>| {
        let http = hub.http.clone();
        let url = format!("http://{}/ingest/change-events", hub.herald.local_addr);
        async move {
            let response = http.post(url).json(&events).send().await.expect("ingest");
            assert_eq!(response.status(), 202);
        }
    };
    let event = |i: usize| {
        let mut resource = lab_observation("backlog", "final");
        resource["id"] = json!(format!("b{i}"));
        json!({
            "event_id": format!("backlog-{i}"), "tenant": "default", "action": "create",
            "resource_type": "Observation", "resource_id": format!("b{i}"), "version": "1",
            "time": "2026-11-25T09:00:00Z", "source": "lab-engine", "resource": resource
        })
    };
    // 45 events in one request are matched and recorded together: a backlog at once.
    ingest((1..=45).map(event).collect()).await;
    let wait_for_events = |path: &'static str, count: usize| {
        receiver.wait_for_event_bundles(path, move |b| {
            b.iter().map(Vec::len).sum::<usize>() >= count
        })
    };
    let backlog = wait_for_events("/default", 45).await;
    assert_eq!(
        backlog.iter().flatten().copied().collect::<Vec<_>>(),
        (1..=45).collect::<Vec<i64>>(),
        "in order, each once: {backlog:?}"
    );
    assert!(backlog.iter().all(|b| b.len() <= 20), "{backlog:?}");
    assert!(
        backlog.len() < 45,
        "a backlog is bundled, not sent one by one: {backlog:?}"
    );
    let single = wait_for_events("/one", 45).await;
    assert_eq!(single.len(), 45, "maxCount 1: one request per event");
    assert!(single.iter().all(|b| b.len() == 1));

    // Once the backlog is gone, a lone event is sent at once and alone.
    ingest(vec![event(46)]).await;
    let after = wait_for_events("/default", 46).await;
    assert_eq!(after.last(), Some(&vec![46]), "{after:?}");
    hub.stop().await;
}
