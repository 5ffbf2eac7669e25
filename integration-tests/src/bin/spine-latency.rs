//! Measures the spine's end-to-end latency: from the start of an Observation write through
//! the facade to the event-notification arriving at a local webhook receiver, one write at
//! a time, in the embedded mode and in production mode (NATS JetStream + PostgreSQL).
//!
//! `cargo run --release -p herald-integration-tests --bin spine-latency -- [writes]`
//! Prints min / median / p90 / p99 / max per mode. Not a test: it asserts nothing on time.

/// The allocator the `herald` binary uses, so the hub in this process runs as it does there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use herald_integration_tests::fhir::{lab_observation, topic_subscription, LAB_TOPIC};
use herald_integration_tests::{Receiver, TestHub, TestMode};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn measure(mode: TestMode, writes: usize) -> anyhow::Result<Vec<Duration>> {
    let hub = TestHub::start(mode).await;
    let receiver = Receiver::start().await;
    let (status, sub) = hub
        .post(
            "/Subscription",
            &topic_subscription(
                LAB_TOPIC,
                &["Observation?patient=Patient/bench"],
                &receiver.url("/bench"),
                "id-only",
            ),
        )
        .await;
    anyhow::ensure!(status == 201, "subscription not created: {sub}");
    hub.wait_for_status(sub["id"].as_str().unwrap_or_default(), "active")
        .await;
    let is_event = |r: &herald_integration_tests::Received| {
        r.notification_type().as_deref() == Some("event-notification")
    };

    // Warm up connections and caches.
    for i in 0..10 {
        hub.post("/Observation", &lab_observation("bench", "final"))
            .await;
        receiver.wait_for("/bench", i + 1, is_event).await;
    }
    let mut samples = Vec::with_capacity(writes);
    for i in 0..writes {
        let start = Instant::now();
        let (status, _) = hub
            .post("/Observation", &lab_observation("bench", "final"))
            .await;
        anyhow::ensure!(status == 201, "write failed");
        let arrived = receiver.wait_for("/bench", 10 + i + 1, is_event).await;
        let last = arrived.last().map(|r| r.at).unwrap_or_else(Instant::now);
        samples.push(last.saturating_duration_since(start));
    }
    hub.stop().await;
    samples.sort();
    Ok(samples)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let writes: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    println!(
        "spine latency: Observation write -> webhook received, {writes} sequential writes per mode"
    );
    for (name, mode) in [
        ("embedded (SQLite + in-process bus)", TestMode::Embedded),
        (
            "production (NATS JetStream + PostgreSQL)",
            TestMode::Production,
        ),
    ] {
        let samples = measure(mode, writes).await?;
        println!(
            "{name:45} min {}  median {}  p90 {}  p99 {}  max {}",
            ms(samples[0]),
            ms(percentile(&samples, 0.5)),
            ms(percentile(&samples, 0.9)),
            ms(percentile(&samples, 0.99)),
            ms(samples[samples.len() - 1])
        );
    }
    Ok(())
}
