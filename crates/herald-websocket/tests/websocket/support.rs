//! A hub over in-memory SQLite, served on port 0 behind a stand-in of herald-api's router,
//! and a WebSocket client that speaks the protocol.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use futures::{SinkExt, StreamExt};
use herald_fhir::SubscriptionStatus;
use herald_store::{EventRecord, NewSubscription, SqliteStore, Store, SubscriptionKey};
use herald_websocket::{router, WebSocketConfig, WebSocketHub};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub const TENANT: &str = "default";
pub const TOPIC: &str = "http://herald.health/SubscriptionTopic/lab-result";
/// How long a test waits for any one frame.
const FRAME_WAIT: Duration = Duration::from_secs(10);

pub struct TestHub {
    pub hub: Arc<WebSocketHub>,
    pub store: Arc<dyn Store>,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    /// Distinct resource ids, so every recorded event is a new change.
    next_resource: std::sync::atomic::AtomicU64,
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestHub {
    pub async fn start(configure: impl FnOnce(&mut WebSocketConfig)) -> Self {
        let store = SqliteStore::in_memory().await.expect("sqlite");
        store.migrate().await.expect("migrate");
        let store: Arc<dyn Store> = Arc::new(store);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = WebSocketConfig::new(TENANT, format!("http://{addr}/fhir"));
        configure(&mut config);
        let hub = WebSocketHub::new(Arc::clone(&store), config).expect("valid config");
        let shutdown = CancellationToken::new();
        tokio::spawn(Arc::clone(&hub).run(shutdown.clone()));
        // The shape of herald-api's router (a nested /fhir with {id} routes and fallbacks)
        // merged with ours at the root, as the composition root does.
        let api = Router::new()
            .nest(
                "/fhir",
                Router::new()
                    .route("/Subscription/{id}", get(|| async { "read" }))
                    .route("/Subscription/{id}/$status", get(|| async { "status" }))
                    .route("/{resource_type}/{id}", get(|| async { "facade" }))
                    .fallback(|| async { "fhir fallback" }),
            )
            .fallback(|| async { "root fallback" });
        let app = api.merge(router(Arc::clone(&hub)));
        let server_shutdown = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { server_shutdown.cancelled().await })
                .await
                .expect("serve");
        });
        Self {
            hub,
            store,
            addr,
            http: reqwest::Client::new(),
            shutdown,
            next_resource: Default::default(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A topic-based websocket subscription with `content`, optional heartbeat.
    pub async fn websocket_subscription(&self, id: &str, content: &str, heartbeat: Option<u32>) {
        let mut channel = json!({
            "type": "websocket",
            "payload": "application/fhir+json",
            "_payload": {"extension": [{
                "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content",
                "valueCode": content
            }]}
        });
        if let Some(period) = heartbeat {
            channel["extension"] = json!([{
                "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period",
                "valueUnsignedInt": period
            }]);
        }
        let resource = json!({
            "resourceType": "Subscription", "id": id, "status": "requested", "reason": "dashboard",
            "criteria": TOPIC, "channel": channel
        });
        self.subscription(id, &resource, "websocket", heartbeat)
            .await;
    }

    pub async fn subscription(
        &self,
        id: &str,
        resource: &Value,
        channel_type: &str,
        heartbeat: Option<u32>,
    ) {
        self.store
            .create_subscription(NewSubscription {
                tenant: TENANT,
                id,
                resource,
                status: SubscriptionStatus::Requested,
                criteria: TOPIC,
                channel_type,
                heartbeat_period: heartbeat,
                owner: None,
                now_ms: chrono::Utc::now().timestamp_millis(),
            })
            .await
            .expect("create subscription");
    }

    /// Records `count` events for `subscriptions` (each a new resource, `padding` bytes of
    /// note text) and wakes the hub. Returns the event numbers of the first subscription.
    pub async fn record(&self, subscriptions: &[&str], count: usize, padding: usize) -> Vec<i64> {
        let keys: Vec<SubscriptionKey> = subscriptions
            .iter()
            .map(|id| SubscriptionKey::new(TENANT, *id))
            .collect();
        let mut numbers = Vec::new();
        for _ in 0..count {
            let n = self
                .next_resource
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let resource_id = format!("o{n}");
            let now = chrono::Utc::now().timestamp_millis();
            let event = EventRecord {
                event_id: format!("event-{n}"),
                tenant: TENANT.into(),
                action: "create".into(),
                resource_type: "Observation".into(),
                resource_id: resource_id.clone(),
                version_id: "1".into(),
                occurred_at: now,
                resource: Some(json!({
                    "resourceType": "Observation", "id": resource_id, "status": "final",
                    "note": [{"text": "x".repeat(padding)}]
                })),
                recorded_at: now,
            };
            let recorded = self
                .store
                .record_notifications(&event, &keys)
                .await
                .expect("record");
            numbers.extend(recorded.first().map(|(_, n)| *n));
        }
        self.hub.notify_new_events();
        numbers
    }

    /// `$get-ws-binding-token` at instance level; the token.
    pub async fn token(&self, id: &str) -> String {
        let response = self
            .http
            .get(self.url(&format!("/fhir/Subscription/{id}/$get-ws-binding-token")))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("json");
        parameter(&body, "token").expect("token").to_owned()
    }

    pub async fn connect(&self) -> Client {
        let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", self.addr))
            .await
            .expect("connect");
        Client { socket }
    }

    /// Waits until the hub has `n` connections.
    pub async fn until_connections(&self, n: usize) {
        let waited = tokio::time::timeout(FRAME_WAIT, async {
            while self.hub.connection_count() != n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "hub never had {n} connections");
    }
}

/// The first `value*` of the named parameter of a `Parameters` resource.
pub fn parameter<'a>(parameters: &'a Value, name: &str) -> Option<&'a str> {
    parameters["parameter"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| {
            p.as_object()?
                .iter()
                .find(|(k, _)| k.starts_with("value"))
                .and_then(|(_, v)| v.as_str())
        })
}

/// A notification bundle read back: its type, subscription and event numbers.
#[derive(Debug, PartialEq)]
pub struct Notification {
    pub kind: String,
    pub subscription: String,
    pub status: String,
    pub events: Vec<i64>,
}

pub fn notification(text: &str) -> Notification {
    let bundle: Value = serde_json::from_str(text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    let status = &bundle["entry"][0]["resource"];
    assert_eq!(
        status["resourceType"], "Parameters",
        "not a notification: {text}"
    );
    let events = status["parameter"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter(|p| p["name"] == "notification-event")
                .filter_map(|p| {
                    p["part"]
                        .as_array()?
                        .iter()
                        .find(|q| q["name"] == "event-number")?["valueString"]
                        .as_str()?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    let reference = status["parameter"][0]["valueReference"]["reference"]
        .as_str()
        .unwrap_or_default();
    Notification {
        kind: parameter(status, "type").unwrap_or_default().to_owned(),
        subscription: reference.rsplit('/').next().unwrap_or_default().to_owned(),
        status: parameter(status, "status").unwrap_or_default().to_owned(),
        events,
    }
}

pub struct Client {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn send(&mut self, text: &str) {
        self.socket
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// The next text frame (pings are answered by tungstenite and skipped).
    pub async fn text(&mut self) -> String {
        loop {
            match self.frame().await {
                Message::Text(text) => return text.to_string(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    pub async fn frame(&mut self) -> Message {
        match tokio::time::timeout(FRAME_WAIT, self.socket.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(other) => panic!("the socket ended: {other:?}"),
            Err(_) => panic!("no frame within {FRAME_WAIT:?}"),
        }
    }

    pub async fn notification(&mut self) -> Notification {
        notification(&self.text().await)
    }

    /// The event numbers of the next `n` event-notifications.
    pub async fn events(&mut self, n: usize) -> Vec<i64> {
        let mut numbers = Vec::new();
        while numbers.len() < n {
            let got = self.notification().await;
            assert_eq!(got.kind, "event-notification", "{got:?}");
            numbers.extend(got.events);
        }
        numbers
    }

    /// Reads until the server's Close frame; returns it.
    pub async fn close_frame(&mut self) -> Option<CloseFrame> {
        loop {
            match self.frame().await {
                Message::Close(frame) => return frame,
                _ => continue,
            }
        }
    }

    /// Asserts nothing but pings arrives for `wait`.
    pub async fn quiet_for(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected quiet, got {other:?}"),
            }
        }
    }
}
