//! Support for Herald's end-to-end tests: a recording webhook receiver, throwaway
//! PostgreSQL databases and JetStream names, and a way to start Herald in either mode.
//!
//! Real parts only: the PostgreSQL and NATS servers named by `HERALD_TEST_DATABASE_URL` and
//! `HERALD_TEST_NATS_URL` (defaults: the local servers). A missing server fails the test;
//! nothing is skipped.

pub mod process;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use herald::{Herald, Settings};
use serde_json::Value;
use sqlx::Connection;
use tokio::sync::Notify;

pub fn nats_url() -> String {
    std::env::var("HERALD_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

pub fn admin_database_url() -> String {
    std::env::var("HERALD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Creates an empty database and returns its URL.
pub async fn fresh_database() -> String {
    let admin = admin_database_url();
    let name = format!("herald_it_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must be running at {admin} (see README): {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    let (base, _) = admin.rsplit_once('/').expect("database URL with a path");
    format!("{base}/{name}")
}

/// A fresh temporary directory.
pub fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herald-{label}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Which way to run Herald in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestMode {
    Embedded,
    Production,
}

/// Settings for a test Herald: port 0, its own data directory, or its own database and
/// JetStream stream / subjects / consumer.
pub async fn test_settings(mode: TestMode) -> Settings {
    let mut settings = Settings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: temp_dir("data"),
        log: "warn".into(),
        ..Settings::default()
    };
    settings.delivery.poll_interval_ms = 100;
    // One event per request, so tests can count requests whatever the timing; bundling of
    // a backlog (Herald's default, 20 per bundle) has its own test
    // (`delivery::a_backlog_is_bundled_and_a_lone_event_goes_alone`).
    settings.delivery.default_max_count = 1;
    if mode == TestMode::Production {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        settings.nats_url = Some(nats_url());
        settings.database_url = Some(fresh_database().await);
        settings.nats.stream = format!("HERALD_IT_{tag}");
        settings.nats.subject_prefix = format!("it.{tag}.changes");
        settings.nats.dead_letter_subject = format!("it.{tag}.deadletter");
        settings.nats.control_subject = format!("it.{tag}.control");
        settings.nats.consumer = format!("it-{tag}");
        settings.nats.notify_stream = format!("HERALD_IT_{tag}_NOTIFY");
        settings.nats.notify_subject_prefix = format!("it.{tag}.notify");
        // These tests exercise storage and the bus; authentication has its own tests.
        settings.auth.allow_unauthenticated = true;
    }
    settings
}

/// A running Herald plus an HTTP client for its API.
pub struct TestHub {
    pub herald: Herald,
    pub settings: Settings,
    pub http: reqwest::Client,
}

impl TestHub {
    pub async fn start(mode: TestMode) -> Self {
        Self::start_with(test_settings(mode).await).await
    }

    pub async fn start_with(settings: Settings) -> Self {
        // HERALD_TEST_LOG=<filter> shows the hub's logs while debugging a test.
        if let Ok(filter) = std::env::var("HERALD_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let herald = Herald::start(settings.clone())
            .await
            .expect("Herald starts");
        Self {
            herald,
            settings,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.herald.base_url)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url(path))
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        Self::read(response).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .put(self.url(path))
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        Self::read(response).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        Self::read(self.http.get(self.url(path)).send().await.expect("request")).await
    }

    pub async fn read(response: reqwest::Response) -> (StatusCode, Value) {
        let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }

    /// Waits until the subscription has `status`.
    pub async fn wait_for_status(&self, id: &str, status: &str) {
        self.wait_for_status_as(id, status, None).await;
    }

    /// [`Self::wait_for_status`] with a bearer token.
    pub async fn wait_for_status_with(&self, id: &str, status: &str, bearer: &str) {
        self.wait_for_status_as(id, status, Some(bearer)).await;
    }

    async fn wait_for_status_as(&self, id: &str, status: &str, bearer: Option<&str>) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mut request = self.http.get(self.url(&format!("/Subscription/{id}")));
            if let Some(token) = bearer {
                request = request.bearer_auth(token);
            }
            let (_, body) = Self::read(request.send().await.expect("request")).await;
            if body["status"] == status {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Subscription/{id} never became {status}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) {
        self.herald.shutdown(Duration::from_secs(10)).await;
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// For a notification bundle: the value of status parameter `name`.
    pub fn parameter(&self, name: &str) -> Option<String> {
        let bundle = self.json();
        let params = bundle
            .pointer("/entry/0/resource/parameter")?
            .as_array()?
            .clone();
        params.iter().find(|p| p["name"] == name).and_then(|p| {
            p.get("valueCode")
                .or(p.get("valueString"))
                .or(p.get("valueCanonical"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
    }

    pub fn notification_type(&self) -> Option<String> {
        self.parameter("type")
    }

    /// Event numbers in a notification bundle.
    pub fn event_numbers(&self) -> Vec<i64> {
        bundle_event_numbers(&self.json())
    }
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Received>>,
    arrived: Notify,
    status: AtomicU16,
}

/// A real HTTP server that records every request and answers with a settable status.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
}

async fn record(
    State(state): State<Arc<ReceiverState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    // The answer is decided before the request becomes visible: a test that changes the
    // answer once it sees a request must not change the answer to that request.
    let answer =
        StatusCode::from_u16(state.status.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK);
    let received = Received {
        method,
        path: uri.path().to_owned(),
        headers,
        body,
        at: Instant::now(),
    };
    if let Ok(mut list) = state.received.lock() {
        list.push(received);
    }
    state.arrived.notify_waiters();
    answer
}

impl Receiver {
    pub async fn start() -> Self {
        let state = Arc::new(ReceiverState {
            status: AtomicU16::new(200),
            ..Default::default()
        });
        let app = axum::Router::new()
            .fallback(record)
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn respond_with(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    pub fn all(&self) -> Vec<Received> {
        self.state
            .received
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Requests to `path` so far.
    pub fn at(&self, path: &str) -> Vec<Received> {
        self.all().into_iter().filter(|r| r.path == path).collect()
    }

    /// The event numbers of each event-notification request to `path` so far, one list per
    /// request, in arrival order.
    pub fn event_bundles(&self, path: &str) -> Vec<Vec<i64>> {
        self.at(path)
            .iter()
            .filter(|r| r.notification_type().as_deref() == Some("event-notification"))
            .map(Received::event_numbers)
            .collect()
    }

    /// Waits until the event notifications at `path` satisfy `done` (given
    /// [`event_bundles`](Self::event_bundles)); returns them. Counting events rather than
    /// requests holds whether or not a backlog was bundled.
    pub async fn wait_for_event_bundles(
        &self,
        path: &str,
        done: impl Fn(&[Vec<i64>]) -> bool,
    ) -> Vec<Vec<i64>> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let notified = self.state.arrived.notified();
            let bundles = self.event_bundles(path);
            if done(&bundles) {
                return bundles;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            assert!(
                !remaining.is_zero(),
                "the event notifications at {path} never got there: {bundles:?}"
            );
            let _ = tokio::time::timeout(remaining.min(Duration::from_millis(200)), notified).await;
        }
    }

    /// Waits until `count` requests to `path` matching `filter` have arrived; returns them.
    pub async fn wait_for(
        &self,
        path: &str,
        count: usize,
        filter: impl Fn(&Received) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let notified = self.state.arrived.notified();
            let matching: Vec<Received> = self.at(path).into_iter().filter(|r| filter(r)).collect();
            if matching.len() >= count {
                return matching;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            assert!(
                !remaining.is_zero(),
                "only {} of {count} expected requests arrived at {path}: {:?}",
                matching.len(),
                self.at(path).iter().map(|r| r.json()).collect::<Vec<_>>()
            );
            let _ = tokio::time::timeout(remaining.min(Duration::from_millis(200)), notified).await;
        }
    }
}

/// The `event-number`s of a Backport notification bundle's status, in order.
pub fn bundle_event_numbers(bundle: &Value) -> Vec<i64> {
    let Some(params) = bundle
        .pointer("/entry/0/resource/parameter")
        .and_then(Value::as_array)
    else {
        return vec![];
    };
    params
        .iter()
        .filter(|p| p["name"] == "notification-event")
        .filter_map(|p| {
            p["part"]
                .as_array()?
                .iter()
                .find(|x| x["name"] == "event-number")?["valueString"]
                .as_str()?
                .parse()
                .ok()
        })
        .collect()
}

/// Helpers that build FHIR test resources.
pub mod fhir {
    use serde_json::{json, Value};

    pub const LAB_TOPIC: &str = "http://herald.health/fhir/SubscriptionTopic/lab-result";
    pub const MED_TOPIC: &str = "http://herald.health/fhir/SubscriptionTopic/medication-order";
    const BACKPORT: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";

    /// A Backport topic-based rest-hook subscription.
    pub fn topic_subscription(
        topic: &str,
        filters: &[&str],
        endpoint: &str,
        content: &str,
    ) -> Value {
        let filters: Vec<Value> = filters
            .iter()
            .map(
                |f| json!({"url": format!("{BACKPORT}backport-filter-criteria"), "valueString": f}),
            )
            .collect();
        json!({
            "resourceType": "Subscription",
            "meta": {"profile": [format!("{BACKPORT}backport-subscription")]},
            "status": "requested",
            "reason": "integration test",
            "criteria": topic,
            "_criteria": {"extension": filters},
            "channel": {
                "type": "rest-hook",
                "endpoint": endpoint,
                "payload": "application/fhir+json",
                "_payload": {"extension": [{"url": format!("{BACKPORT}backport-payload-content"), "valueCode": content}]},
                "header": ["Authorization: Bearer test-token-123", "X-Test: herald"]
            }
        })
    }

    /// An R4 classic criteria-based subscription; `content` adds the Backport payload
    /// extension (so it receives bundles), `payload` alone gives R4 PUT semantics.
    pub fn criteria_subscription(
        criteria: &str,
        endpoint: &str,
        payload: Option<&str>,
        content: Option<&str>,
    ) -> Value {
        let mut channel = json!({"type": "rest-hook", "endpoint": endpoint});
        if let Some(p) = payload {
            channel["payload"] = json!(p);
        }
        if let Some(c) = content {
            channel["_payload"] = json!({"extension": [{"url": format!("{BACKPORT}backport-payload-content"), "valueCode": c}]});
        }
        json!({"resourceType": "Subscription", "status": "requested", "reason": "integration test", "criteria": criteria, "channel": channel})
    }

    /// A final laboratory Observation (LOINC 2345-7, glucose) for `patient`.
    pub fn lab_observation(patient: &str, status: &str) -> Value {
        json!({
            "resourceType": "Observation",
            "status": status,
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"}]},
            "subject": {"reference": format!("Patient/{patient}")},
            "effectiveDateTime": "2026-11-24T08:30:00Z",
            "valueQuantity": {"value": 95, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"}
        })
    }
}
