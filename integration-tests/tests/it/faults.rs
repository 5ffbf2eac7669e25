//! Fault tests against the real binary: SIGKILL during a stream of 2,000 matching writes,
//! then a restart. Every acknowledged write is delivered at least once; event numbers are
//! exactly 1..=N with no gap and no number reused for two events.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use herald_integration_tests::fhir::{lab_observation, topic_subscription, LAB_TOPIC};
use herald_integration_tests::process::{free_addr, settings_env, HeraldProcess};
use herald_integration_tests::{test_settings, Receiver, TestMode};
use serde_json::Value;
use tokio::sync::Mutex;

const WRITES: usize = 2_000;
const KILL_AFTER: usize = 700;
const BINARY: &str = env!("CARGO_BIN_EXE_herald-fault-target");

/// (event number, focus id) of every event-notification the receiver got.
fn received_events(receiver: &Receiver) -> Vec<(i64, String)> {
    receiver
        .at("/fault")
        .iter()
        .filter(|r| r.notification_type().as_deref() == Some("event-notification"))
        .flat_map(|r| {
            let bundle = r.json();
            let numbers = r.event_numbers();
            let ids: Vec<String> = bundle["entry"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .skip(1)
                        .filter_map(|x| x["fullUrl"].as_str())
                        .map(|u| u.rsplit('/').next().unwrap_or("").to_owned())
                        .collect()
                })
                .unwrap_or_default();
            numbers.into_iter().zip(ids).collect::<Vec<_>>()
        })
        .collect()
}

async fn post_until_acknowledged(http: &reqwest::Client, base: &str) -> String {
    loop {
        let attempt = http
            .post(format!("{base}/Observation"))
            .header("content-type", "application/fhir+json")
            .body(lab_observation("fault", "final").to_string())
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        if let Ok(response) = attempt {
            if response.status() == 201 {
                let body: Value = response.json().await.unwrap_or(Value::Null);
                if let Some(id) = body["id"].as_str() {
                    return id.to_owned();
                }
            }
        }
        // Not acknowledged (the hub is down or restarting): the client retries.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sigkill_during_a_stream(mode: TestMode) {
    let mut settings = test_settings(mode).await;
    settings.listen = free_addr();
    settings.delivery.claim_lease_secs = 12;
    let env = settings_env(&settings);
    let receiver = Receiver::start().await;
    let http = reqwest::Client::new();

    let herald = HeraldProcess::start(BINARY, &env, settings.listen).await;
    let base = herald.base_url.clone();
    let subscription = topic_subscription(
        LAB_TOPIC,
        &["Observation?patient=Patient/fault"],
        &receiver.url("/fault"),
        "id-only",
    );
    let created: Value = http
        .post(format!("{base}/Subscription"))
        .header("content-type", "application/fhir+json")
        .body(subscription.to_string())
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id").to_owned();
    receiver
        .wait_for("/fault", 1, |r| {
            r.notification_type().as_deref() == Some("handshake")
        })
        .await;

    // Writers: 4 in flight; a killer SIGKILLs the hub after KILL_AFTER acknowledged writes
    // and starts it again.
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let herald = Arc::new(Mutex::new(Some(herald)));
    let killer = {
        let acknowledged = Arc::clone(&acknowledged);
        let herald = Arc::clone(&herald);
        let env = env.clone();
        let listen = settings.listen;
        tokio::spawn(async move {
            while acknowledged.load(Ordering::SeqCst) < KILL_AFTER {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let running = herald.lock().await.take().expect("running");
            running.kill().await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let restarted = HeraldProcess::start(BINARY, &env, listen).await;
            *herald.lock().await = Some(restarted);
        })
    };
    let ids: Vec<String> = futures::stream::iter(0..WRITES)
        .map(|_| {
            let http = http.clone();
            let base = base.clone();
            let acknowledged = Arc::clone(&acknowledged);
            async move {
                let id = post_until_acknowledged(&http, &base).await;
                acknowledged.fetch_add(1, Ordering::SeqCst);
                id
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    killer.await.expect("killer");
    assert_eq!(ids.len(), WRITES);

    // Wait until every acknowledged write was delivered.
    let wanted: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let delivered: BTreeSet<String> = received_events(&receiver)
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        let missing = wanted.iter().filter(|id| !delivered.contains(**id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} acknowledged writes were never delivered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Numbers: exactly 1..=N, each number one event.
    let status: Value = http
        .get(format!("{base}/Subscription/{id}/$status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    let total: i64 = status["entry"][0]["resource"]["parameter"]
        .as_array()
        .and_then(|p| {
            p.iter()
                .find(|x| x["name"] == "events-since-subscription-start")
        })
        .and_then(|x| x["valueString"].as_str())
        .and_then(|v| v.parse().ok())
        .expect("events-since-subscription-start");
    let mut by_number: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for (number, focus) in received_events(&receiver) {
        by_number.entry(number).or_default().insert(focus);
    }
    let numbers: Vec<i64> = by_number.keys().copied().collect();
    assert_eq!(
        numbers,
        (1..=total).collect::<Vec<_>>(),
        "event numbers must be exactly 1..={total}"
    );
    let reused: Vec<_> = by_number.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        reused.is_empty(),
        "numbers reused for different events: {reused:?}"
    );
    assert!(
        total >= WRITES as i64,
        "{total} events for {WRITES} acknowledged writes"
    );
    let duplicates = received_events(&receiver).len() as i64 - total;
    println!("{mode:?}: {WRITES} acknowledged writes, {total} events numbered 1..={total}, {duplicates} re-deliveries after SIGKILL");

    let last = herald.lock().await.take();
    if let Some(running) = last {
        running.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_stream_embedded() {
    sigkill_during_a_stream(TestMode::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_stream_nats_jetstream_postgres() {
    sigkill_during_a_stream(TestMode::Production).await;
}

/// A throwaway nats-server with JetStream on a free port, restartable on the same store.
struct ThrowawayNats {
    child: Option<tokio::process::Child>,
    port: u16,
    store: std::path::PathBuf,
}

impl ThrowawayNats {
    async fn start() -> Self {
        let port = free_addr().port();
        let store = herald_integration_tests::temp_dir("nats");
        let mut nats = Self {
            child: None,
            port,
            store,
        };
        nats.spawn().await;
        nats
    }

    async fn spawn(&mut self) {
        let binary = [
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "/usr/local/bin/nats-server",
        ]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nats-server");
        let child = tokio::process::Command::new(binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server must be installed (see README)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "nats-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill nats-server");
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// NATS is killed and restarted mid-stream: writes during the outage are refused (never
/// acknowledged), the consumer reconnects, and every acknowledged write is delivered with
/// gap-free numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_mid_stream() {
    let mut nats = ThrowawayNats::start().await;
    let mut settings = test_settings(TestMode::Production).await;
    settings.nats_url = Some(nats.url());
    let hub = herald_integration_tests::TestHub::start_with(settings).await;
    let receiver = Receiver::start().await;
    let (_, created) = hub
        .post(
            "/Subscription",
            &topic_subscription(
                LAB_TOPIC,
                &["Observation?patient=Patient/fault"],
                &receiver.url("/fault"),
                "id-only",
            ),
        )
        .await;
    hub.wait_for_status(created["id"].as_str().expect("id"), "active")
        .await;

    let base = hub.herald.base_url.clone();
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    let mut refused_during_outage = 0;
    for i in 0..300 {
        if i == 100 {
            nats.kill().await;
            // Writes while NATS is down are refused, not acknowledged.
            for _ in 0..3 {
                let response = http
                    .post(format!("{base}/Observation"))
                    .header("content-type", "application/fhir+json")
                    .body(lab_observation("fault", "final").to_string())
                    .send()
                    .await
                    .expect("request");
                assert_eq!(
                    response.status(),
                    503,
                    "a write that cannot be made durable is refused"
                );
                refused_during_outage += 1;
            }
            nats.spawn().await;
        }
        ids.push(post_until_acknowledged(&http, &base).await);
    }
    let wanted: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let delivered: BTreeSet<String> = received_events(&receiver)
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        let missing = wanted.iter().filter(|id| !delivered.contains(**id)).count();
        if missing == 0 {
            break;
        }
        if Instant::now() >= deadline {
            let lost: Vec<usize> = ids
                .iter()
                .enumerate()
                .filter(|(_, id)| !delivered.contains(id.as_str()))
                .map(|(i, _)| i)
                .collect();
            let numbers: BTreeSet<i64> = received_events(&receiver)
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            let (_, status) = hub.get("/Subscription/$status").await;
            panic!("{missing} acknowledged writes were never delivered after the NATS restart; write indices {lost:?}; numbers seen {numbers:?}; status {status}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let numbers: BTreeSet<i64> = received_events(&receiver)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let max = numbers.iter().max().copied().unwrap_or(0);
    assert_eq!(
        numbers.into_iter().collect::<Vec<_>>(),
        (1..=max).collect::<Vec<_>>(),
        "gap-free numbers"
    );
    println!("NATS restart: {} acknowledged writes delivered, {refused_during_outage} refused during the outage, numbers 1..={max}", ids.len());
    hub.stop().await;
    nats.kill().await;
}
