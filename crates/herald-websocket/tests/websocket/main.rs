//! The websocket channel end to end: real sockets against a hub on port 0, storage in
//! in-memory SQLite, events recorded through the Store API as the matcher would.

mod support;

use std::time::Duration;

use herald_fhir::SubscriptionStatus;
use serde_json::{json, Value};
use support::{parameter, TestHub, TENANT};

#[tokio::test]
async fn bind_with_token_sends_a_handshake_and_activates_the_subscription() {
    let hub = TestHub::start(|_| {}).await;
    hub.websocket_subscription("dash", "id-only", None).await;
    let token = hub.token("dash").await;

    let mut client = hub.connect().await;
    client.send(&format!("bind-with-token {token}")).await;
    let handshake = client.notification().await;
    assert_eq!(
        (
            handshake.kind.as_str(),
            handshake.subscription.as_str(),
            handshake.status.as_str()
        ),
        ("handshake", "dash", "active")
    );
    let stored = hub
        .store
        .get_subscription(TENANT, "dash")
        .await
        .expect("read");
    assert_eq!(stored.map(|s| s.status), Some(SubscriptionStatus::Active));

    let numbers = hub.record(&["dash"], 2, 0).await;
    assert_eq!(client.events(2).await, numbers);
}

#[tokio::test]
async fn bind_with_a_last_event_number_replays_the_stored_events_then_live_ones() {
    let hub = TestHub::start(|c| c.page_size = 2).await;
    hub.websocket_subscription("dash", "full-resource", None)
        .await;
    hub.record(&["dash"], 5, 0).await;
    let token = hub.token("dash").await;

    let mut client = hub.connect().await;
    client.send(&format!("bind-with-token {token} 2")).await;
    assert_eq!(client.notification().await.kind, "handshake");
    assert_eq!(client.events(3).await, vec![3, 4, 5]);
    hub.record(&["dash"], 2, 0).await;
    assert_eq!(client.events(2).await, vec![6, 7]);
}

/// The issue's proof: a client that disconnects and reconnects with its last event number
/// receives exactly the missed events — none lost, none twice — and then live ones.
#[tokio::test]
async fn a_client_that_reconnects_with_its_last_event_number_receives_exactly_the_missed_ones() {
    let hub = TestHub::start(|c| c.page_size = 4).await;
    hub.websocket_subscription("dash", "id-only", None).await;

    let mut client = hub.connect().await;
    client
        .send(&format!("bind-with-token {}", hub.token("dash").await))
        .await;
    assert_eq!(client.notification().await.kind, "handshake");
    hub.record(&["dash"], 3, 0).await;
    assert_eq!(client.events(3).await, vec![1, 2, 3]);
    drop(client);
    hub.until_connections(0).await;

    hub.record(&["dash"], 10, 0).await;
    let mut client = hub.connect().await;
    let token = hub.token("dash").await;
    client
        .send(&json!({"type": "bind-with-token", "payload": {"token": token, "lastEventNumber": {"dash": 3}}}).to_string())
        .await;
    assert_eq!(client.notification().await.kind, "handshake");
    assert_eq!(client.events(10).await, (4..=13).collect::<Vec<_>>());
    hub.record(&["dash"], 1, 0).await;
    assert_eq!(client.events(1).await, vec![14]);
}

#[tokio::test]
async fn one_connection_binds_many_subscriptions_and_unbinds_them() {
    let hub = TestHub::start(|_| {}).await;
    hub.websocket_subscription("a", "empty", None).await;
    hub.websocket_subscription("b", "id-only", None).await;
    let response = hub
        .http
        .get(hub.url("/fhir/Subscription/$get-ws-binding-token?id=a&id=b"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let token = parameter(&body, "token").expect("token").to_owned();

    let mut client = hub.connect().await;
    client.send(&format!("bind-with-token {token}")).await;
    let handshakes = [client.notification().await, client.notification().await];
    assert_eq!(
        handshakes
            .iter()
            .map(|h| (h.kind.as_str(), h.subscription.as_str()))
            .collect::<Vec<_>>(),
        vec![("handshake", "a"), ("handshake", "b")]
    );

    client.send("unbind a").await;
    assert_eq!(client.text().await, "unbound a");
    hub.record(&["a", "b"], 1, 0).await;
    let only_b = client.notification().await;
    assert_eq!(
        (only_b.subscription.as_str(), only_b.events.as_slice()),
        ("b", &[1][..])
    );

    client.send(&format!("unbind-from-token {token}")).await;
    let outcome: Value = serde_json::from_str(&client.text().await).expect("json");
    assert_eq!(outcome["issue"][0]["severity"], "information");
    hub.record(&["a", "b"], 1, 0).await;
    client.quiet_for(Duration::from_millis(300)).await;
    assert_eq!(hub.hub.live_binding_count(), 0);
}

#[tokio::test]
async fn tokens_are_single_use_short_lived_and_only_for_websocket_subscriptions() {
    let hub = TestHub::start(|_| {}).await;
    hub.websocket_subscription("dash", "id-only", None).await;
    let hook = json!({"resourceType": "Subscription", "status": "requested", "reason": "r",
        "criteria": support::TOPIC, "channel": {"type": "rest-hook", "endpoint": "https://example.org/h"}});
    hub.subscription("hook", &hook, "rest-hook", None).await;

    let token = hub.token("dash").await;
    let mut first = hub.connect().await;
    first.send(&format!("bind-with-token {token}")).await;
    assert_eq!(first.notification().await.kind, "handshake");
    let mut second = hub.connect().await;
    second.send(&format!("bind-with-token {token}")).await;
    let refused: Value = serde_json::from_str(&second.text().await).expect("json");
    assert_eq!(refused["issue"][0]["code"], "security");

    for (path, status) in [
        ("/fhir/Subscription/hook/$get-ws-binding-token", 400),
        ("/fhir/Subscription/nope/$get-ws-binding-token", 404),
        ("/fhir/Subscription/$get-ws-binding-token", 400),
        (
            "/fhir/Subscription/$get-ws-binding-token?id=dash&since=1",
            400,
        ),
    ] {
        let response = hub.http.get(hub.url(path)).send().await.expect("request");
        assert_eq!(response.status(), status, "{path}");
        let outcome: Value = response.json().await.expect("json");
        assert_eq!(outcome["resourceType"], "OperationOutcome", "{path}");
    }

    // POST with an input Parameters resource.
    let response = hub
        .http
        .post(hub.url("/fhir/Subscription/$get-ws-binding-token"))
        .header("content-type", "application/fhir+json")
        .body(
            json!({"resourceType": "Parameters", "parameter": [{"name": "id", "valueId": "dash"}]})
                .to_string(),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(parameter(&body, "subscription"), Some("dash"));
    let url = parameter(&body, "websocket-url").expect("url");
    assert_eq!(url, format!("ws://{}/ws", hub.addr));
    assert!(parameter(&body, "expiration").is_some_and(|e| e.ends_with('Z')));

    // The stand-in API routes next to ours still answer.
    let read = hub
        .http
        .get(hub.url("/fhir/Subscription/dash"))
        .send()
        .await
        .expect("read");
    assert_eq!(read.text().await.expect("body"), "read");
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let hub = TestHub::start(|c| c.token_ttl = Duration::ZERO).await;
    hub.websocket_subscription("dash", "id-only", None).await;
    let token = hub.token("dash").await;
    let mut client = hub.connect().await;
    client.send(&format!("bind-with-token {token}")).await;
    let refused: Value = serde_json::from_str(&client.text().await).expect("json");
    assert_eq!(refused["issue"][0]["code"], "security");
    assert_eq!(hub.hub.live_binding_count(), 0);
}

#[tokio::test]
async fn r4_classic_bind_answers_bound_and_pings_on_each_event() {
    let hub = TestHub::start(|_| {}).await;
    let classic = json!({"resourceType": "Subscription", "status": "requested", "reason": "r",
        "criteria": "Observation?status=final", "channel": {"type": "websocket"}});
    hub.subscription("legacy", &classic, "websocket", None)
        .await;
    let mut client = hub.connect().await;
    client.send("bind legacy").await;
    assert_eq!(client.text().await, "bound legacy");
    hub.record(&["legacy"], 2, 0).await;
    assert_eq!(client.text().await, "ping legacy");
    assert_eq!(client.text().await, "ping legacy");
    client.send("bind missing").await;
    assert!(client.text().await.starts_with("error "));
}

#[tokio::test]
async fn heartbeats_follow_the_heartbeat_period() {
    let hub = TestHub::start(|c| c.poll_interval = Duration::from_millis(50)).await;
    hub.websocket_subscription("dash", "empty", Some(1)).await;
    let mut client = hub.connect().await;
    client
        .send(&format!("bind-with-token {}", hub.token("dash").await))
        .await;
    assert_eq!(client.notification().await.kind, "handshake");
    assert_eq!(client.notification().await.kind, "heartbeat");
}

/// A client that stops reading fills its socket and then its bounded queue: it is closed
/// with 1008 and a reason, while a client bound to the same subscription gets everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_too_slow_is_disconnected_with_a_reason_and_others_are_not_held_back() {
    let hub = TestHub::start(|c| {
        c.send_queue_capacity = 64;
        c.page_size = 4;
        c.close_timeout = Duration::from_secs(30);
    })
    .await;
    hub.websocket_subscription("dash", "full-resource", None)
        .await;

    // The slow client: a small receive buffer, and it reads nothing after the handshake.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let stream = socket.connect(hub.addr).await.expect("connect");
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (slow, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", hub.addr), stream)
        .await
        .expect("handshake");
    let mut slow = support::Client { socket: slow };
    slow.send(&format!("bind-with-token {}", hub.token("dash").await))
        .await;
    assert_eq!(slow.notification().await.kind, "handshake");

    let mut fast = hub.connect().await;
    fast.send(&format!("bind-with-token {}", hub.token("dash").await))
        .await;
    assert_eq!(fast.notification().await.kind, "handshake");

    let total = 400;
    let reader = tokio::spawn(async move { fast.events(total).await });
    for _ in 0..total / 4 {
        hub.record(&["dash"], 4, 32 * 1024).await;
    }
    assert_eq!(
        reader.await.expect("fast reader"),
        (1..=total as i64).collect::<Vec<_>>()
    );

    hub.until_connections(0).await;
    let close = slow
        .close_frame()
        .await
        .expect("a close frame with a reason");
    assert_eq!(u16::from(close.code), 1008);
    assert!(close.reason.contains("too slow"), "{}", close.reason);
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_closed() {
    let hub = TestHub::start(|c| {
        c.ping_interval = Duration::from_millis(50);
        c.pong_timeout = Duration::from_millis(150);
    })
    .await;
    let mut client = hub.connect().await;
    hub.until_connections(1).await;
    // Not reading means tungstenite never answers the pings.
    hub.until_connections(0).await;
    let close = client.close_frame().await.expect("close frame");
    assert_eq!(u16::from(close.code), 1001);
}

/// Behind authentication the API's layer sets the tenant: tokens are bound to it, and
/// with `tenant_from_request` a request without it is refused rather than defaulted.
#[tokio::test]
async fn token_requests_act_for_the_tenant_the_auth_layer_sets() {
    use axum::http::Request;
    use herald_websocket::{router, BindingTenant};
    use tower::ServiceExt;

    let hub = TestHub::start(|c| c.allow_classic_bind = false).await;
    hub.websocket_subscription("dash", "id-only", None).await;
    let request = || {
        Request::get("/fhir/Subscription/dash/$get-ws-binding-token")
            .body(axum::body::Body::empty())
            .expect("request")
    };
    let other_tenant = router(std::sync::Arc::clone(&hub.hub))
        .layer(axum::Extension(BindingTenant("another-tenant".into())));
    let response = other_tenant.oneshot(request()).await.expect("response");
    assert_eq!(response.status(), 404);
    let same_tenant = router(std::sync::Arc::clone(&hub.hub))
        .layer(axum::Extension(BindingTenant(TENANT.into())));
    let response = same_tenant.oneshot(request()).await.expect("response");
    assert_eq!(response.status(), 200);

    let strict = TestHub::start(|c| c.tenant_from_request = true).await;
    strict.websocket_subscription("dash", "id-only", None).await;
    let response = router(std::sync::Arc::clone(&strict.hub))
        .oneshot(request())
        .await
        .expect("response");
    assert_eq!(response.status(), 401);

    // The classic protocol carries no credential; here it is turned off.
    let mut client = hub.connect().await;
    client.send("bind dash").await;
    assert!(client.text().await.starts_with("error "));
}
