//! Issue 5 beyond tokens and tenants: per-client rate limits, subscription limits, the
//! audit trail served as AuditEvent, revocation re-checked at send time, and secrets that
//! never leave Herald after creation.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_integration_tests::fhir::{lab_observation, topic_subscription, LAB_TOPIC};
use herald_integration_tests::{Receiver, TestHub};
use serde_json::{json, Value};

use crate::security::{call, secured_hub, secured_settings, token, wait_active};

fn admin() -> String {
    token(
        "system/AuditEvent.rs system/Subscription.cruds",
        json!({"sub": "admin", "client_id": "admin-console"}),
    )
}

fn patient_client(client: &str, jti: &str) -> String {
    token(
        "patient/Subscription.cruds patient/Observation.rs",
        json!({"patient": "123", "client_id": client, "sub": format!("user-of-{client}"), "jti": jti}),
    )
}

fn writer() -> String {
    token("system/Observation.cruds", json!({"client_id": "ehr"}))
}

/// AuditEvents matching `query`, polling until at least `n` exist.
async fn audit_events(hub: &TestHub, query: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, bundle, _) = call(
            hub,
            "GET",
            &format!("/AuditEvent?{query}"),
            Some(&admin()),
            None,
        )
        .await;
        assert_eq!(status, 200, "{bundle}");
        let events: Vec<Value> = bundle["entry"]
            .as_array()
            .map(|e| e.iter().map(|e| e["resource"].clone()).collect())
            .unwrap_or_default();
        if events.len() >= n {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} AuditEvents for {query}: {bundle}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn subscription_for_patient(receiver: &Receiver, path: &str) -> Value {
    topic_subscription(
        LAB_TOPIC,
        &["Observation?patient=Patient/123"],
        &receiver.url(path),
        "id-only",
    )
}

/// A websocket-channel subscription for Patient/123's labs; returns its id.
async fn create_websocket_subscription(hub: &TestHub, bearer: &str) -> String {
    let mut websocket = topic_subscription(
        LAB_TOPIC,
        &["Observation?patient=Patient/123"],
        "http://127.0.0.1:9/unused",
        "id-only",
    );
    websocket["channel"] = json!({"type": "websocket", "payload": "application/fhir+json",
        "_payload": websocket["channel"]["_payload"].clone()});
    let (status, ws, _) = call(hub, "POST", "/Subscription", Some(bearer), Some(&websocket)).await;
    assert_eq!(status, 201, "{ws}");
    ws["id"].as_str().expect("id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after_per_client() {
    let mut settings = secured_settings().await;
    settings.limits.requests_per_second = 1;
    settings.limits.burst = 3;
    let hub = TestHub::start_with(settings).await;
    let a = patient_client("client-a", "a1");
    let b = patient_client("client-b", "b1");
    for _ in 0..3 {
        let (status, body, _) = call(&hub, "GET", "/Subscription", Some(&a), None).await;
        assert_eq!(status, 200, "{body}");
    }
    let response = hub
        .http
        .get(hub.url("/Subscription"))
        .bearer_auth(&a)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 429);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    let (_, outcome) = TestHub::read(response).await;
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert_eq!(outcome["issue"][0]["code"], "throttled");

    // Another client has its own quota; the EHR's writes are never throttled.
    let (status, _, _) = call(&hub, "GET", "/Subscription", Some(&b), None).await;
    assert_eq!(status, 200, "client-b is not limited by client-a's use");
    for n in 0..10 {
        let (status, body, _) = call(
            &hub,
            "POST",
            "/Observation",
            Some(&writer()),
            Some(&lab_observation(&n.to_string(), "final")),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    // Unauthenticated callers are limited by address, and still get 401 within quota.
    let (status, _, _) = call(&hub, "GET", "/Subscription", None, None).await;
    assert_eq!(status, 401);
    // Once the quota refills, client-a is served again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let (status, _, _) = call(&hub, "GET", "/Subscription", Some(&a), None).await;
    assert_eq!(status, 200);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_limits_are_enforced_and_nothing_is_stored() {
    let mut settings = secured_settings().await;
    settings.limits.max_subscriptions_per_client = 2;
    settings.limits.max_filters_per_subscription = 2;
    settings.limits.max_expression_bytes = 200;
    let hub = TestHub::start_with(settings).await;
    let receiver = Receiver::start().await;
    let client = token(
        "system/Subscription.cruds system/SubscriptionTopic.cruds system/Observation.rs system/DiagnosticReport.rs",
        json!({"client_id": "pharmacy"}),
    );
    let create = |body: Value| {
        let (hub, client) = (&hub, client.clone());
        async move { call(hub, "POST", "/Subscription", Some(&client), Some(&body)).await }
    };

    let three_filters = topic_subscription(
        LAB_TOPIC,
        &[
            "Observation?patient=Patient/1",
            "Observation?category=laboratory",
            "Observation?code=http://loinc.org|1-8",
        ],
        &receiver.url("/x"),
        "id-only",
    );
    let (status, outcome, _) = create(three_filters).await;
    assert_eq!(status, 422, "{outcome}");
    assert!(outcome["issue"][0]["diagnostics"]
        .as_str()
        .is_some_and(|d| d.contains("3 filters exceed the limit of 2")));

    let long = format!("Observation?patient=Patient/{}", "1".repeat(300));
    let (status, outcome, _) = create(topic_subscription(
        LAB_TOPIC,
        &[&long],
        &receiver.url("/x"),
        "id-only",
    ))
    .await;
    assert_eq!(status, 422, "{outcome}");
    assert_eq!(outcome["issue"][0]["code"], "too-long");

    let topic = json!({
        "resourceType": "SubscriptionTopic",
        "url": "http://example.org/topic/long",
        "status": "active",
        "resourceTrigger": [{
            "resource": "Observation",
            "supportedInteraction": ["create"],
            "fhirPathCriteria": format!("%current.status = '{}'", "x".repeat(300))
        }]
    });
    let (status, outcome, _) = call(
        &hub,
        "POST",
        "/SubscriptionTopic",
        Some(&client),
        Some(&topic),
    )
    .await;
    assert_eq!(status, 422, "a long topic expression: {outcome}");

    for path in ["/a", "/b"] {
        let (status, body, _) = create(topic_subscription(
            LAB_TOPIC,
            &["Observation?patient=Patient/1"],
            &receiver.url(path),
            "id-only",
        ))
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, outcome, _) = create(topic_subscription(
        LAB_TOPIC,
        &["Observation?patient=Patient/1"],
        &receiver.url("/c"),
        "id-only",
    ))
    .await;
    assert_eq!(
        status, 422,
        "a third subscription for the client: {outcome}"
    );
    assert!(outcome["issue"][0]["diagnostics"]
        .as_str()
        .is_some_and(|d| d.contains("already has 2 subscriptions")));

    let (_, bundle, _) = call(&hub, "GET", "/Subscription", Some(&client), None).await;
    assert_eq!(bundle["total"], 2, "nothing refused was stored: {bundle}");
    let (_, topics, _) = call(&hub, "GET", "/SubscriptionTopic", Some(&client), None).await;
    assert!(
        !topics.to_string().contains("http://example.org/topic/long"),
        "the refused topic was not stored"
    );
    // Updating one of its own does not count as a new one.
    let (_, existing, _) = call(&hub, "GET", "/Subscription", Some(&client), None).await;
    let mut first = existing["entry"][0]["resource"].clone();
    first["status"] = json!("off");
    let id = first["id"].as_str().expect("id").to_owned();
    let (status, body, _) = call(
        &hub,
        "PUT",
        &format!("/Subscription/{id}"),
        Some(&client),
        Some(&first),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_records_who_did_what_and_only_administrators_read_it() {
    let hub = secured_hub().await;
    let receiver = Receiver::start().await;
    let dashboard = patient_client("dashboard", "d1");

    let (status, _, _) = call(
        &hub,
        "POST",
        "/Subscription",
        Some(&dashboard),
        Some(&topic_subscription(
            LAB_TOPIC,
            &["Observation?patient=Patient/999"],
            &receiver.url("/p"),
            "id-only",
        )),
    )
    .await;
    assert_eq!(status, 403, "outside the compartment");
    let (status, created, _) = call(
        &hub,
        "POST",
        "/Subscription",
        Some(&dashboard),
        Some(&subscription_for_patient(&receiver, "/p")),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    wait_active(&hub, &id, &dashboard).await;
    let (status, _, _) = call(
        &hub,
        "POST",
        "/Observation",
        Some(&writer()),
        Some(&lab_observation("123", "final")),
    )
    .await;
    assert_eq!(status, 201);
    receiver
        .wait_for("/p", 1, |r| {
            r.notification_type().as_deref() == Some("event-notification")
        })
        .await;
    let ws_id = create_websocket_subscription(&hub, &dashboard).await;
    let (status, body, _) = call(
        &hub,
        "GET",
        &format!("/Subscription/{ws_id}/$get-ws-binding-token"),
        Some(&dashboard),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = call(
        &hub,
        "DELETE",
        &format!("/Subscription/{id}"),
        Some(&dashboard),
        None,
    )
    .await;
    assert_eq!(status, 204);

    let entity = format!("Subscription/{id}");
    let creates = audit_events(
        &hub,
        "subtype=subscription-create&agent:identifier=dashboard",
        3,
    )
    .await;
    let outcomes: Vec<&str> = creates
        .iter()
        .filter_map(|e| e["outcome"].as_str())
        .collect();
    assert!(
        outcomes.contains(&"0") && outcomes.contains(&"4"),
        "{outcomes:?}"
    );
    let refused = creates
        .iter()
        .find(|e| e["outcome"] == "4")
        .expect("the refused create");
    assert!(refused["outcomeDesc"]
        .as_str()
        .is_some_and(|d| d.starts_with("403")));
    let ok = creates
        .iter()
        .find(|e| e["outcome"] == "0" && e["entity"][0]["what"]["reference"] == json!(entity))
        .expect("the create is recorded with its subscription");
    assert_eq!(ok["agent"][0]["altId"], "user-of-dashboard");
    assert_eq!(ok["action"], "C");
    assert_eq!(ok["type"]["code"], "rest");

    let about = format!("entity={entity}");
    let deliveries = audit_events(&hub, &format!("{about}&subtype=delivery"), 2).await;
    assert!(deliveries
        .iter()
        .all(|e| e["outcome"] == "0" && e["action"] == "E"));
    let details: Vec<&str> = deliveries
        .iter()
        .filter_map(|e| e["outcomeDesc"].as_str())
        .collect();
    assert!(
        details.iter().any(|d| d.contains("handshake")),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.contains("events 1..1")),
        "{details:?}"
    );
    audit_events(&hub, &format!("{about}&subtype=subscription-status"), 1).await;
    let tokens = audit_events(
        &hub,
        &format!("entity=Subscription/{ws_id}&subtype=binding-token"),
        1,
    )
    .await;
    assert_eq!(
        tokens[0]["agent"][0]["who"]["identifier"]["value"],
        "dashboard"
    );
    let deleted = audit_events(&hub, &format!("{about}&subtype=subscription-delete"), 1).await;
    assert_eq!(deleted[0]["action"], "D");
    let read_back = deleted[0]["id"].as_str().expect("id");
    let (status, event, _) = call(
        &hub,
        "GET",
        &format!("/AuditEvent/{read_back}"),
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(event["resourceType"], "AuditEvent");

    // Only a system-level AuditEvent grant reads the trail; bad searches are 400.
    let (status, outcome, _) = call(&hub, "GET", "/AuditEvent", Some(&dashboard), None).await;
    assert_eq!(status, 403, "{outcome}");
    let user = token("user/AuditEvent.rs", json!({}));
    let (status, _, _) = call(&hub, "GET", "/AuditEvent", Some(&user), None).await;
    assert_eq!(status, 403);
    for bad in ["subtype=nope", "date=yesterday", "outcome=3", "patient=1"] {
        let (status, outcome, _) = call(
            &hub,
            "GET",
            &format!("/AuditEvent?{bad}"),
            Some(&admin()),
            None,
        )
        .await;
        assert_eq!(status, 400, "{bad}: {outcome}");
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_clients_and_tokens_stop_receiving_at_send_time() {
    let hub = secured_hub().await;
    let receiver = Receiver::start().await;
    let by_token = patient_client("tablet", "token-7");
    let by_client = patient_client("dashboard", "token-8");
    let mut ids = Vec::new();
    for (bearer, path) in [(&by_token, "/tablet"), (&by_client, "/dashboard")] {
        let (status, created, _) = call(
            &hub,
            "POST",
            "/Subscription",
            Some(bearer),
            Some(&subscription_for_patient(&receiver, path)),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().expect("id").to_owned();
        wait_active(&hub, &id, bearer).await;
        ids.push(id);
    }
    let write = || async {
        let (status, _, _) = call(
            &hub,
            "POST",
            "/Observation",
            Some(&writer()),
            Some(&lab_observation("123", "final")),
        )
        .await;
        assert_eq!(status, 201);
    };
    let events_at = |path: &str| {
        receiver
            .at(path)
            .into_iter()
            .filter(|r| r.notification_type().as_deref() == Some("event-notification"))
            .count()
    };
    write().await;
    for path in ["/tablet", "/dashboard"] {
        receiver
            .wait_for(path, 1, |r| {
                r.notification_type().as_deref() == Some("event-notification")
            })
            .await;
    }

    // Only a system-level grant may revoke; a malformed request is refused.
    let revoke = |kind: &str, value: &str| {
        json!({"resourceType": "Parameters", "parameter": [
            {"name": kind, "valueString": value},
            {"name": "reason", "valueString": "device lost"}
        ]})
    };
    let (status, _, _) = call(
        &hub,
        "POST",
        "/$revoke-access",
        Some(&by_client),
        Some(&revoke("token", "token-7")),
    )
    .await;
    assert_eq!(status, 403);
    let (status, outcome, _) = call(
        &hub,
        "POST",
        "/$revoke-access",
        Some(&admin()),
        Some(&json!({"resourceType": "Parameters", "parameter": [{"name": "who", "valueString": "x"}]})),
    )
    .await;
    assert_eq!(status, 400, "{outcome}");

    // Revoking the token stops the subscription created with it, not the other one.
    let (status, outcome, _) = call(
        &hub,
        "POST",
        "/$revoke-access",
        Some(&admin()),
        Some(&revoke("token", "token-7")),
    )
    .await;
    assert_eq!(status, 204, "{outcome}");
    write().await;
    receiver
        .wait_for("/dashboard", 2, |r| {
            r.notification_type().as_deref() == Some("event-notification")
        })
        .await;
    hub.wait_for_status_with(&ids[0], "off", &admin()).await;
    let (_, tablet, _) = call(
        &hub,
        "GET",
        &format!("/Subscription/{}", ids[0]),
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!(tablet["status"], "off", "{tablet}");
    assert!(tablet["error"].to_string().contains("revoked"), "{tablet}");
    assert_eq!(events_at("/tablet"), 1, "nothing sent after the revocation");

    // Revoking the client stops its subscriptions too.
    let (status, _, _) = call(
        &hub,
        "POST",
        "/$revoke-access",
        Some(&admin()),
        Some(&revoke("client", "dashboard")),
    )
    .await;
    assert_eq!(status, 204);
    write().await;
    hub.wait_for_status_with(&ids[1], "off", &admin()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(events_at("/dashboard"), 2);
    assert_eq!(events_at("/tablet"), 1);
    audit_events(&hub, "subtype=access-revoked", 2).await;
    audit_events(
        &hub,
        &format!("subtype=subscription-status&entity=Subscription/{}", ids[1]),
        1,
    )
    .await;
    hub.stop().await;
}

/// Collects everything the hub logs, at every level.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_audit_or_responses_after_creation() {
    let logs = LogBuffer::default();
    // nextest runs each test in its own process, so this subscriber sees only this test.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(logs.clone())
        .with_ansi(false)
        .try_init();
    let hub = secured_hub().await;
    let receiver = Receiver::start().await;
    let client = token(
        "system/Subscription.cruds system/AuditEvent.rs system/Observation.cruds",
        json!({"client_id": "secret-keeper"}),
    );
    let signing_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let header_secret = "Bearer test-token-123";
    let mut subscription = subscription_for_patient(&receiver, "/s");
    subscription["channel"]["extension"] = json!([{
        "url": "https://herald.health/fhir/StructureDefinition/webhook-signing-secret",
        "valueString": signing_secret
    }]);
    let (status, created, _) = call(
        &hub,
        "POST",
        "/Subscription",
        Some(&client),
        Some(&subscription),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    wait_active(&hub, &id, &client).await;
    // A failing delivery too, so error paths log.
    receiver.respond_with(500);
    let (status, _, _) = call(
        &hub,
        "POST",
        "/Observation",
        Some(&client),
        Some(&lab_observation("123", "final")),
    )
    .await;
    assert_eq!(status, 201);
    audit_events(&hub, &format!("entity=Subscription/{id}&outcome=4"), 1).await;

    let mut seen = Vec::new();
    for path in [
        format!("/Subscription/{id}"),
        "/Subscription".to_owned(),
        format!("/Subscription/{id}/$status"),
        format!("/Subscription/{id}/$events"),
        "/AuditEvent?_count=1000".to_owned(),
    ] {
        let (status, body, _) = call(&hub, "GET", &path, Some(&client), None).await;
        assert_eq!(status, 200, "{path}: {body}");
        seen.push((path, body.to_string()));
    }
    hub.stop().await;
    let logged = String::from_utf8_lossy(&logs.0.lock().expect("logs")).into_owned();
    assert!(
        logged.contains(&id),
        "the log capture works (it mentions the subscription)"
    );
    seen.push(("logs".into(), logged));
    for (place, text) in &seen {
        for secret in [signing_secret, header_secret, client.as_str()] {
            assert!(
                !text.contains(secret),
                "a secret appears in {place}: {}",
                &secret[..12]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_token_cannot_reach_another_clients_or_patients_subscriptions() {
    let hub = secured_hub().await;
    let receiver = Receiver::start().await;
    let mine = patient_client("dash-a", "a-1");
    let theirs = token(
        "patient/Subscription.cruds patient/Observation.rs",
        json!({"patient": "999", "client_id": "dash-b", "sub": "b"}),
    );
    let (status, created, _) = call(
        &hub,
        "POST",
        "/Subscription",
        Some(&mine),
        Some(&subscription_for_patient(&receiver, "/a")),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let ws_id = create_websocket_subscription(&hub, &mine).await;

    // What a client reads back carries `***` for header values and secrets.
    let (_, mut replaced, _) = call(
        &hub,
        "GET",
        &format!("/Subscription/{id}"),
        Some(&mine),
        None,
    )
    .await;
    assert!(replaced.to_string().contains("***"), "{replaced}");
    replaced["channel"]["endpoint"] = json!(receiver.url("/stolen"));
    for (method, path, body) in [
        ("GET", format!("/Subscription/{id}"), None),
        ("PUT", format!("/Subscription/{id}"), Some(&replaced)),
        ("DELETE", format!("/Subscription/{id}"), None),
        ("GET", format!("/Subscription/{id}/$status"), None),
        ("GET", format!("/Subscription/{id}/$events"), None),
        (
            "GET",
            format!("/Subscription/{ws_id}/$get-ws-binding-token"),
            None,
        ),
    ] {
        let (status, outcome, _) = call(&hub, method, &path, Some(&theirs), body).await;
        assert_eq!(
            status, 404,
            "{method} {path} by another patient's client: {outcome}"
        );
    }
    let (_, list, _) = call(&hub, "GET", "/Subscription", Some(&theirs), None).await;
    assert_eq!(list["total"], 0, "{list}");

    // Its own client may move its endpoint, but then must send the secrets again.
    let (status, outcome, _) = call(
        &hub,
        "PUT",
        &format!("/Subscription/{id}"),
        Some(&mine),
        Some(&replaced),
    )
    .await;
    assert_eq!(
        status, 400,
        "a redacted header sent to a new endpoint: {outcome}"
    );
    assert!(
        outcome.to_string().contains("endpoint changed"),
        "{outcome}"
    );
    replaced["channel"]["header"] = json!(["Authorization: Bearer new-receiver-token"]);
    replaced["channel"]["extension"] = json!([]);
    let (status, outcome, _) = call(
        &hub,
        "PUT",
        &format!("/Subscription/{id}"),
        Some(&mine),
        Some(&replaced),
    )
    .await;
    assert_eq!(status, 200, "{outcome}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_a_topic_fires_on_must_be_pinned_to_the_patient() {
    let hub = secured_hub().await;
    let receiver = Receiver::start().await;
    let topic_admin = token(
        "system/SubscriptionTopic.cruds",
        json!({"client_id": "admin"}),
    );
    let topic = json!({
        "resourceType": "SubscriptionTopic",
        "url": "http://example.org/topic/visits-and-labs",
        "status": "active",
        "resourceTrigger": [
            {"resource": "Observation", "supportedInteraction": ["create"]},
            {"resource": "Encounter", "supportedInteraction": ["create"]}
        ],
        "canFilterBy": [
            {"resource": "Observation", "filterParameter": "patient"},
            {"resource": "Encounter", "filterParameter": "patient"},
            {"resource": "Encounter", "filterParameter": "status"}
        ]
    });
    let (status, body, _) = call(
        &hub,
        "POST",
        "/SubscriptionTopic",
        Some(&topic_admin),
        Some(&topic),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let patient = token(
        "patient/Subscription.cruds patient/Observation.rs patient/Encounter.rs",
        json!({"patient": "123", "client_id": "dash"}),
    );
    let subscribe = |filters: &[&str]| {
        topic_subscription(
            "http://example.org/topic/visits-and-labs",
            filters,
            &receiver.url("/v"),
            "id-only",
        )
    };
    let half = subscribe(&[
        "Observation?patient=Patient/123",
        "Encounter?status=finished",
    ]);
    let (status, outcome, _) =
        call(&hub, "POST", "/Subscription", Some(&patient), Some(&half)).await;
    assert_eq!(
        status, 403,
        "Encounters of every patient would match: {outcome}"
    );
    assert!(outcome.to_string().contains("Encounter"), "{outcome}");
    let only_labs = token(
        "patient/Subscription.cruds patient/Observation.rs",
        json!({"patient": "123", "client_id": "dash"}),
    );
    let both = subscribe(&[
        "Observation?patient=Patient/123",
        "Encounter?patient=Patient/123",
    ]);
    let (status, outcome, _) =
        call(&hub, "POST", "/Subscription", Some(&only_labs), Some(&both)).await;
    assert_eq!(status, 403, "no Encounter read scope: {outcome}");
    let (status, outcome, _) =
        call(&hub, "POST", "/Subscription", Some(&patient), Some(&both)).await;
    assert_eq!(status, 201, "{outcome}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_by_the_api_too() {
    let hub = secured_hub().await;
    let revoked = patient_client("kiosk", "kiosk-token-1");
    let fresh = patient_client("kiosk", "kiosk-token-2");
    let (status, _, _) = call(&hub, "GET", "/Subscription", Some(&revoked), None).await;
    assert_eq!(status, 200);
    let (status, _, _) = call(
        &hub,
        "POST",
        "/$revoke-access",
        Some(&admin()),
        Some(&json!({"resourceType": "Parameters", "parameter": [{"name": "token", "valueString": "kiosk-token-1"}]})),
    )
    .await;
    assert_eq!(status, 204);
    let (status, outcome, challenge) =
        call(&hub, "GET", "/Subscription", Some(&revoked), None).await;
    assert_eq!(status, 401, "{outcome}");
    assert!(challenge.is_some_and(|c| c.contains("invalid_token")));
    let (status, _, _) = call(&hub, "GET", "/Subscription", Some(&fresh), None).await;
    assert_eq!(status, 200, "another token of the client still works");
    hub.stop().await;
}
