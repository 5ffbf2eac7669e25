//! Delivery benchmarks on this machine, both modes, printing figures (not a test):
//! 1. throughput: change events ingested in batches, each matching every one of S
//!    subscriptions; rest-hook notifications received per second by a local receiver;
//! 2. latency at a steady offered rate (default 2,000 events/s): from the ingest request
//!    that published an event to its notification arriving at the receiver, p50 / p99.
//!
//! `cargo run --release -p herald-integration-tests --bin deliver-bench -- [events] [subscriptions] [rate] [max-count]`
//! (`HERALD_BENCH_MODE=embedded` or `nats+postgres` runs one mode)
//!
//! `max-count` is the hub's `delivery.default_max_count` (events per bundle when the
//! subscription sets none; Herald's default, 20, when not given): with more than 1, a
//! backlog goes out as fewer, larger bundles; 1 sends one request per event, as a
//! subscription with `maxCount` 1 gets. Notifications are counted per event, not per bundle.

/// The allocator the `herald` binary uses, so the hub in this process runs as it does there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use herald_integration_tests::fhir::{topic_subscription, LAB_TOPIC};
use herald_integration_tests::{test_settings, TestHub, TestMode};
use serde_json::{json, Value};

fn event(i: usize, run: &str) -> Value {
    json!({
        "event_id": format!("{run}-{i}"), "tenant": "default", "action": "create",
        "resource_type": "Observation", "resource_id": format!("{run}-{i}"), "version": "1",
        "time": chrono::Utc::now().to_rfc3339(), "source": "bench",
        "resource": {"resourceType": "Observation", "id": format!("{run}-{i}"), "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}, "subject": {"reference": "Patient/bench"}}
    })
}

/// The bench's own receiver: a real HTTP server that reads each notification once, when
/// it arrives (type and focus ids), and keeps only what the figures need. The test
/// harness's `Receiver` keeps whole bodies and parses them on every look, which at tens
/// of thousands of requests would spend more CPU than the hub under test.
#[derive(Clone)]
struct BenchReceiver {
    state: Arc<BenchState>,
}

struct BenchState {
    /// Only focus resources `Observation/<run>-<i>` are counted; others (the warm-up) are
    /// tallied in `other`.
    run: String,
    other: AtomicUsize,
    /// Per event-notification request: when it arrived and the bench indices of its focus
    /// resources (`Observation/<run>-<i>`).
    arrivals: Mutex<Vec<(Instant, Vec<usize>)>>,
    events: AtomicUsize,
    arrived: Notify,
}

impl BenchReceiver {
    async fn start(run: &str) -> (Self, String) {
        let receiver = Self {
            state: Arc::new(BenchState {
                run: format!("{run}-"),
                other: AtomicUsize::new(0),
                arrivals: Mutex::default(),
                events: AtomicUsize::new(0),
                arrived: Notify::new(),
            }),
        };
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&receiver.state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (receiver, url)
    }

    fn events(&self) -> usize {
        self.state.events.load(Ordering::Acquire)
    }

    /// Waits until `count` events have arrived or `timeout` has passed.
    async fn wait_for(&self, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.events() < count && Instant::now() < deadline {
            let notified = self.state.arrived.notified();
            if self.events() >= count {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }

    fn arrivals(&self) -> Vec<(Instant, Vec<usize>)> {
        self.state
            .arrivals
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }
}

/// What the receiver reads of a notification bundle; serde skips the rest unparsed.
#[derive(serde::Deserialize)]
struct NotificationBundle {
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(serde::Deserialize)]
struct Entry {
    #[serde(rename = "fullUrl")]
    full_url: Option<String>,
    #[serde(default)]
    resource: StatusResource,
}

#[derive(serde::Deserialize, Default)]
struct StatusResource {
    #[serde(default)]
    parameter: Vec<Parameter>,
}

#[derive(serde::Deserialize)]
struct Parameter {
    name: String,
    #[serde(rename = "valueCode")]
    value_code: Option<String>,
}

async fn receive(
    axum::extract::State(state): axum::extract::State<Arc<BenchState>>,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let at = Instant::now();
    let bundle: NotificationBundle = match serde_json::from_slice(&body) {
        Ok(bundle) => bundle,
        Err(_) => return axum::http::StatusCode::BAD_REQUEST,
    };
    let is_event = bundle.entry.first().is_some_and(|status| {
        status
            .resource
            .parameter
            .iter()
            .any(|p| p.name == "type" && p.value_code.as_deref() == Some("event-notification"))
    });
    if is_event {
        let focus: Vec<usize> = bundle
            .entry
            .iter()
            .skip(1)
            .filter_map(|e| {
                let (_, id) = e.full_url.as_deref()?.rsplit_once('/')?;
                match id.strip_prefix(state.run.as_str()) {
                    Some(i) => i.parse().ok(),
                    None => {
                        state.other.fetch_add(1, Ordering::AcqRel);
                        None
                    }
                }
            })
            .collect();
        let n = focus.len();
        if let Ok(mut arrivals) = state.arrivals.lock() {
            arrivals.push((at, focus));
        }
        state.events.fetch_add(n, Ordering::AcqRel);
        state.arrived.notify_waiters();
    }
    axum::http::StatusCode::OK
}

async fn hub(mode: TestMode, max_count: Option<u32>) -> TestHub {
    let mut settings = test_settings(mode).await;
    settings.delivery.poll_interval_ms = 50;
    settings.delivery.max_concurrency = 64;
    // The test harness sends one event per request; the bench runs Herald's default
    // unless told otherwise.
    settings.delivery.default_max_count =
        max_count.unwrap_or(herald::Settings::default().delivery.default_max_count);
    TestHub::start_with(settings).await
}

async fn subscribe(hub: &TestHub, url: &str, count: usize) {
    for _ in 0..count {
        let (status, sub) = hub
            .post(
                "/Subscription",
                &topic_subscription(LAB_TOPIC, &[], url, "id-only"),
            )
            .await;
        assert_eq!(status, 201, "{sub}");
        hub.wait_for_status(sub["id"].as_str().unwrap_or_default(), "active")
            .await;
    }
}

async fn ingest(hub: &TestHub, batch: Vec<Value>) {
    let response = hub
        .http
        .post(format!(
            "http://{}/ingest/change-events",
            hub.herald.local_addr
        ))
        .json(&batch)
        .send()
        .await
        .expect("ingest");
    assert_eq!(response.status(), 202);
}

/// A hub that has been running a while, as the figures are meant for: 2,000 events are
/// delivered first (not counted), and on PostgreSQL the tables are then analyzed, as
/// autovacuum does within its first minute (`autovacuum_naptime`). On a database that was
/// never analyzed, PostgreSQL plans the `id IN (…)` lookups as scans of the
/// (tenant, type) prefix, which grow with the table (6.7 ms instead of 0.05 ms per
/// lookup at 10,000 resources). `HERALD_BENCH_FRESH=1` skips this, to measure that too.
async fn warm_up(hub: &TestHub, receiver: &BenchReceiver, subscriptions: usize) {
    if std::env::var("HERALD_BENCH_FRESH").is_ok_and(|v| v == "1") {
        return;
    }
    const WARM_UP: usize = 2_000;
    let run = format!("warm{}", uuid::Uuid::new_v4().simple());
    for chunk in (0..WARM_UP).collect::<Vec<_>>().chunks(500) {
        ingest(hub, chunk.iter().map(|i| event(*i, &run)).collect()).await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while receiver.state.other.load(Ordering::Acquire) < WARM_UP * subscriptions
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(url) = &hub.settings.database_url {
        let pool = sqlx::PgPool::connect(url)
            .await
            .expect("connect to analyze");
        sqlx::query("ANALYZE")
            .execute(&pool)
            .await
            .expect("analyze");
        pool.close().await;
    }
}

async fn throughput(
    mode: TestMode,
    events: usize,
    subscriptions: usize,
    max_count: Option<u32>,
) -> (usize, Duration) {
    let hub = hub(mode, max_count).await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (receiver, url) = BenchReceiver::start(&run).await;
    subscribe(&hub, &url, subscriptions).await;
    warm_up(&hub, &receiver, subscriptions).await;
    let start = Instant::now();
    for chunk in (0..events).collect::<Vec<_>>().chunks(500) {
        ingest(&hub, chunk.iter().map(|i| event(*i, &run)).collect()).await;
    }
    let expected = events * subscriptions;
    receiver.wait_for(expected, Duration::from_secs(600)).await;
    let elapsed = start.elapsed();
    let got = receiver.events();
    hub.stop().await;
    (got, elapsed)
}

async fn latency(
    mode: TestMode,
    events: usize,
    rate: usize,
    max_count: Option<u32>,
) -> Vec<Duration> {
    let hub = hub(mode, max_count).await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (receiver, url) = BenchReceiver::start(&run).await;
    subscribe(&hub, &url, 1).await;
    warm_up(&hub, &receiver, 1).await;
    // Batches every 10 ms at the offered rate; each event's send time is its batch's start.
    let per_batch = (rate / 100).max(1);
    let mut sent_at = Vec::with_capacity(events);
    let mut ingest_took = Vec::new();
    let start = Instant::now();
    let mut i = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while i < events {
        tick.tick().await;
        let n = per_batch.min(events - i);
        let now = Instant::now();
        ingest(&hub, (i..i + n).map(|k| event(k, &run)).collect()).await;
        ingest_took.push(now.elapsed());
        sent_at.extend(std::iter::repeat_n(now, n));
        i += n;
    }
    let offered = events as f64 / start.elapsed().as_secs_f64();
    receiver.wait_for(events, Duration::from_secs(120)).await;
    let mut samples: Vec<Duration> = receiver
        .arrivals()
        .iter()
        .flat_map(|(at, focus)| {
            focus
                .iter()
                .filter_map(|i| Some(at.saturating_duration_since(*sent_at.get(*i)?)))
                .collect::<Vec<_>>()
        })
        .collect();
    samples.sort();
    ingest_took.sort();
    println!(
        "    offered rate achieved: {offered:.0} events/s; ingest requests answered in p50 {} p99 {}",
        pct(&ingest_took, 0.5),
        pct(&ingest_took, 0.99)
    );
    hub.stop().await;
    samples
}

fn pct(samples: &[Duration], p: f64) -> String {
    if samples.is_empty() {
        return "n/a".into();
    }
    let d = samples[((samples.len() - 1) as f64 * p).round() as usize];
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // RUST_LOG=herald_matcher=debug (for example) shows the hub's own timings.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let events = args.first().copied().unwrap_or(2_000);
    let subscriptions = args.get(1).copied().unwrap_or(10);
    let rate = args.get(2).copied().unwrap_or(2_000);
    let max_count = args
        .get(3)
        .and_then(|n| u32::try_from(*n).ok())
        .map(|n| n.max(1));
    println!(
        "events per bundle at most (delivery.default_max_count): {}",
        max_count.unwrap_or(herald::Settings::default().delivery.default_max_count)
    );
    // HERALD_BENCH_MODE=embedded or =nats+postgres runs one mode only.
    let only = std::env::var("HERALD_BENCH_MODE").ok();
    for (name, mode) in [
        ("embedded", TestMode::Embedded),
        ("nats+postgres", TestMode::Production),
    ] {
        if only.as_deref().is_some_and(|only| only != name) {
            continue;
        }
        let (got, elapsed) = throughput(mode, events, subscriptions, max_count).await;
        println!(
            "{name:14} throughput: {got} notifications ({events} events x {subscriptions} subscriptions) in {:.2} s = {:.0} notifications/s",
            elapsed.as_secs_f64(),
            got as f64 / elapsed.as_secs_f64()
        );
        let samples = latency(mode, events, rate, max_count).await;
        println!(
            "{name:14} latency at {rate} events/s offered: {} received, p50 {}  p90 {}  p99 {}  max {}",
            samples.len(),
            pct(&samples, 0.5),
            pct(&samples, 0.9),
            pct(&samples, 0.99),
            pct(&samples, 1.0)
        );
    }
}
