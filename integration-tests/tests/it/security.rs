//! Tokens, scopes, patient compartments, tenants and the endpoint policy, end to end.

use herald_integration_tests::fhir::{lab_observation, topic_subscription, LAB_TOPIC};
use herald_integration_tests::{test_settings, Receiver, TestHub, TestMode};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub(crate) const ISSUER: &str = "https://auth.example.org";
pub(crate) const AUDIENCE: &str = "https://herald.example.org/fhir";

pub(crate) fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/herald-security/tests/fixtures")
        .join(name)
}

pub(crate) fn token(scope: &str, extra: Value) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "client-1", "client_id": "client-1", "iat": now, "exp": now + 300, "scope": scope});
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    let pem = std::fs::read(fixture("rsa_test_key.pem")).expect("test key");
    encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&pem).expect("key"),
    )
    .expect("sign")
}

pub(crate) async fn secured_hub() -> TestHub {
    TestHub::start_with(secured_settings().await).await
}

pub(crate) async fn secured_settings() -> herald::settings::Settings {
    let mut settings = test_settings(TestMode::Embedded).await;
    settings.auth.issuer = Some(ISSUER.into());
    settings.auth.audience = Some(AUDIENCE.into());
    settings.auth.key_file = Some(fixture("rsa_test_key.pub.pem"));
    // The test receivers live on loopback: allowed explicitly, as an operator would.
    settings.endpoints.allow_list = vec!["127.0.0.1".into()];
    settings.endpoints.allow_http = true;
    settings
}

pub(crate) async fn wait_active(hub: &TestHub, id: &str, bearer: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (_, body, _) = call(
            hub,
            "GET",
            &format!("/Subscription/{id}"),
            Some(bearer),
            None,
        )
        .await;
        if body["status"] == "active" {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Subscription/{id} never became active: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

pub(crate) async fn call(
    hub: &TestHub,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value, Option<String>) {
    let url = if path.starts_with("/ingest") {
        format!("http://{}{path}", hub.herald.local_addr)
    } else {
        hub.url(path)
    };
    let mut request = match method {
        "POST" => hub.http.post(url),
        "PUT" => hub.http.put(url),
        "DELETE" => hub.http.delete(url),
        _ => hub.http.get(url),
    };
    if let Some(t) = bearer {
        request = request.bearer_auth(t);
    }
    if let Some(b) = body {
        request = request
            .header("content-type", "application/fhir+json")
            .body(b.to_string());
    }
    let response = request.send().await.expect("request");
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, body) = TestHub::read(response).await;
    (status.as_u16(), body, challenge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_needs_a_valid_token_and_the_right_scope() {
    let hub = secured_hub().await;
    let sub = topic_subscription(LAB_TOPIC, &[], "http://127.0.0.1:9/hook", "id-only");
    let endpoints: Vec<(&str, &str, Option<Value>)> = vec![
        ("GET", "/Subscription", None),
        ("POST", "/Subscription", Some(sub.clone())),
        ("GET", "/Subscription/x", None),
        ("PUT", "/Subscription/x", Some(sub.clone())),
        ("DELETE", "/Subscription/x", None),
        ("GET", "/Subscription/$status", None),
        ("GET", "/Subscription/x/$status", None),
        ("GET", "/Subscription/x/$events", None),
        (
            "POST",
            "/Subscription/x/$resend",
            Some(json!({"resourceType": "Parameters"})),
        ),
        ("GET", "/SubscriptionTopic", None),
        (
            "POST",
            "/SubscriptionTopic",
            Some(json!({"resourceType": "SubscriptionTopic"})),
        ),
        ("GET", "/SubscriptionTopic/lab-result", None),
        ("DELETE", "/SubscriptionTopic/x", None),
        ("POST", "/Observation", Some(lab_observation("1", "final"))),
        (
            "PUT",
            "/Observation/o1",
            Some(lab_observation("1", "final")),
        ),
        ("GET", "/Observation/o1", None),
        ("DELETE", "/Observation/o1", None),
        (
            "POST",
            "",
            Some(
                json!({"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "POST", "url": "Observation"}, "resource": lab_observation("1", "final")}]}),
            ),
        ),
        (
            "POST",
            "/ingest/change-events",
            Some(json!({"event_id": "e"})),
        ),
        ("GET", "/AuditEvent", None),
        ("GET", "/AuditEvent/a1", None),
        (
            "POST",
            "/$revoke-access",
            Some(
                json!({"resourceType": "Parameters", "parameter": [{"name": "client", "valueString": "x"}]}),
            ),
        ),
        (
            "POST",
            "/Subscription/$explain",
            Some(json!({"resourceType": "Parameters", "parameter": [
                {"name": "criteria", "valueString": "Observation?status=final"},
                {"name": "resource", "resource": lab_observation("1", "final")}
            ]})),
        ),
        ("GET", "/Subscription/x/$get-ws-binding-token", None),
    ];
    let expired = {
        let now = chrono::Utc::now().timestamp();
        token(
            "system/*.cruds",
            json!({"iat": now - 600, "exp": now - 300}),
        )
    };
    let wrong_scope = token("system/Patient.r", json!({}));
    for (method, path, body) in &endpoints {
        for bearer in [None, Some("not-a-jwt"), Some(expired.as_str())] {
            let (status, outcome, challenge) =
                call(&hub, method, path, bearer, body.as_ref()).await;
            assert_eq!(status, 401, "{method} {path} with {bearer:?}: {outcome}");
            assert_eq!(outcome["resourceType"], "OperationOutcome");
            assert!(
                challenge.is_some_and(|c| c.starts_with("Bearer")),
                "{method} {path}: WWW-Authenticate"
            );
        }
        let (status, outcome, _) =
            call(&hub, method, path, Some(&wrong_scope), body.as_ref()).await;
        assert_eq!(
            status, 403,
            "{method} {path} with insufficient scope: {outcome}"
        );
        assert_eq!(outcome["resourceType"], "OperationOutcome");
    }
    // The CapabilityStatement stays public, as SMART clients discover with it.
    let (status, _, _) = call(&hub, "GET", "/metadata", None, None).await;
    assert_eq!(status, 200);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_token_subscribes_only_within_its_compartment() {
    let hub = secured_hub().await;
    let receiver = Receiver::start().await;
    let patient_token = token(
        "patient/Subscription.cruds patient/Observation.rs",
        json!({"patient": "123"}),
    );
    let writer = token("system/Observation.cruds", json!({}));

    for outside in [
        topic_subscription(LAB_TOPIC, &[], &receiver.url("/p"), "id-only"),
        topic_subscription(
            LAB_TOPIC,
            &["Observation?patient=Patient/999"],
            &receiver.url("/p"),
            "id-only",
        ),
        topic_subscription(
            LAB_TOPIC,
            &["Observation?patient=Patient/123,Patient/999"],
            &receiver.url("/p"),
            "id-only",
        ),
    ] {
        let (status, outcome, _) = call(
            &hub,
            "POST",
            "/Subscription",
            Some(&patient_token),
            Some(&outside),
        )
        .await;
        assert_eq!(status, 403, "{outcome}");
    }
    let inside = topic_subscription(
        LAB_TOPIC,
        &["Observation?patient=Patient/123"],
        &receiver.url("/p"),
        "full-resource",
    );
    let (status, created, _) = call(
        &hub,
        "POST",
        "/Subscription",
        Some(&patient_token),
        Some(&inside),
    )
    .await;
    assert_eq!(
        status, 422,
        "full-resource over plain http is refused: {created}"
    );
    let inside = topic_subscription(
        LAB_TOPIC,
        &["Observation?patient=Patient/123"],
        &receiver.url("/p"),
        "id-only",
    );
    let (status, created, _) = call(
        &hub,
        "POST",
        "/Subscription",
        Some(&patient_token),
        Some(&inside),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    wait_active(&hub, created["id"].as_str().expect("id"), &patient_token).await;

    for patient in ["999", "123", "555", "123", "999"] {
        let (status, _, _) = call(
            &hub,
            "POST",
            "/Observation",
            Some(&writer),
            Some(&lab_observation(patient, "final")),
        )
        .await;
        assert_eq!(status, 201);
    }
    let events = receiver
        .wait_for("/p", 2, |r| {
            r.notification_type().as_deref() == Some("event-notification")
        })
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let all: Vec<_> = receiver
        .at("/p")
        .into_iter()
        .filter(|r| r.notification_type().as_deref() == Some("event-notification"))
        .collect();
    assert_eq!(all.len(), 2, "only Patient/123's two results");
    assert_eq!(events[1].event_numbers(), vec![2]);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_with_identical_subscriptions_receive_only_their_own_events() {
    let hub = secured_hub().await;
    let receiver = Receiver::start().await;
    let a = token("system/*.cruds", json!({"tenant": "clinic-a"}));
    let b = token("system/*.cruds", json!({"tenant": "clinic-b"}));
    let mut ids = Vec::new();
    for (bearer, path) in [(&a, "/a"), (&b, "/b")] {
        let (status, created, _) = call(
            &hub,
            "POST",
            "/Subscription",
            Some(bearer),
            Some(&topic_subscription(
                LAB_TOPIC,
                &[],
                &receiver.url(path),
                "full-resource",
            )),
        )
        .await;
        assert_eq!(
            status, 422,
            "full-resource over http refused even for system tokens: {created}"
        );
        let (status, created, _) = call(
            &hub,
            "POST",
            "/Subscription",
            Some(bearer),
            Some(&topic_subscription(
                LAB_TOPIC,
                &[],
                &receiver.url(path),
                "id-only",
            )),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        ids.push(created["id"].as_str().expect("id").to_owned());
    }
    wait_active(&hub, &ids[0], &a).await;
    wait_active(&hub, &ids[1], &b).await;
    // Each tenant sees only its own subscription.
    let (_, search, _) = call(&hub, "GET", "/Subscription", Some(&a), None).await;
    assert_eq!(search["total"], 1);
    let (status, _, _) = call(
        &hub,
        "GET",
        &format!("/Subscription/{}", ids[1]),
        Some(&a),
        None,
    )
    .await;
    assert_eq!(
        status, 404,
        "another tenant's subscription does not exist for this caller"
    );

    for _ in 0..3 {
        call(
            &hub,
            "POST",
            "/Observation",
            Some(&a),
            Some(&lab_observation("1", "final")),
        )
        .await;
    }
    call(
        &hub,
        "POST",
        "/Observation",
        Some(&b),
        Some(&lab_observation("1", "final")),
    )
    .await;
    receiver
        .wait_for("/a", 3, |r| {
            r.notification_type().as_deref() == Some("event-notification")
        })
        .await;
    receiver
        .wait_for("/b", 1, |r| {
            r.notification_type().as_deref() == Some("event-notification")
        })
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let count = |p: &str| {
        receiver
            .at(p)
            .into_iter()
            .filter(|r| r.notification_type().as_deref() == Some("event-notification"))
            .count()
    };
    assert_eq!((count("/a"), count("/b")), (3, 1));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_endpoints_are_refused_at_creation() {
    let hub = secured_hub().await;
    let admin = token("system/*.cruds", json!({}));
    for endpoint in [
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.5/hook",
        "https://[::1]/hook",
        "https://localhost/hook",
        "https://2130706434/hook",
        "https://0x7f.0.0.2/hook",
        "https://[::ffff:127.0.0.2]/hook",
        "https://metadata.google.internal/computeMetadata/v1/",
    ] {
        let (status, outcome, _) = call(
            &hub,
            "POST",
            "/Subscription",
            Some(&admin),
            Some(&topic_subscription(LAB_TOPIC, &[], endpoint, "id-only")),
        )
        .await;
        assert_eq!(status, 422, "{endpoint}: {outcome}");
        assert!(outcome["issue"][0]["diagnostics"]
            .as_str()
            .unwrap_or("")
            .contains("Subscription.channel.endpoint"));
    }
    let (_, search, _) = call(&hub, "GET", "/Subscription", Some(&admin), None).await;
    assert_eq!(search["total"], 0, "nothing stored");
    hub.stop().await;
}
