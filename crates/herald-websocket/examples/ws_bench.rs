//! WebSocket channel benchmark: memory per idle bound connection and fan-out latency.
//!
//! ```text
//! cargo run --release -p herald-websocket --example ws_bench -- [CONNECTIONS] [ROUNDS]
//! ```
//!
//! The hub runs in a child process (this binary re-run with `--server`) over in-memory
//! SQLite with one topic-based websocket subscription (id-only), so its resident memory is
//! measured alone (`VmRSS` from `/proc/<pid>/status`) and the two sides do not share one
//! process's file-descriptor limit. The parent opens CONNECTIONS sockets (default 10,000),
//! each getting its own token from `$get-ws-binding-token` and sending `bind-with-token`,
//! waits for every handshake, then reads the server's RSS: (after − before) / N is the
//! memory per idle bound connection; the second half alone gives the marginal cost.
//!
//! Fan-out: ROUNDS times (default 20), the parent tells the server (one line on its
//! stdin) to record one event for the subscription and wake the hub; the latency of a
//! connection is from that instant to the moment its client task has the frame. It
//! includes the store write, the dispatch, one serialization, N queue pushes, N socket
//! writes and the client's reading — on one 2-core machine shared by both sides.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use herald_fhir::SubscriptionStatus;
use herald_store::{EventRecord, NewSubscription, SqliteStore, Store, SubscriptionKey};
use herald_websocket::{router, WebSocketConfig, WebSocketHub};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig as ClientConfig;
use tokio_tungstenite::tungstenite::Message;

const TENANT: &str = "bench";
const SUBSCRIPTION: &str = "dash";

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> BenchResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if args.get(1).map(String::as_str) == Some("--server") {
        let max_connections = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(20_000);
        return runtime.block_on(server(max_connections));
    }
    let connections: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let rounds: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(20);
    runtime.block_on(parent(connections, rounds))
}

/// The child: serves the hub, prints `READY <addr>`, records one event per `event` line.
async fn server(max_connections: usize) -> BenchResult<()> {
    let store = SqliteStore::in_memory().await?;
    store.migrate().await?;
    let store: Arc<dyn Store> = Arc::new(store);
    let resource = json!({
        "resourceType": "Subscription", "status": "requested", "reason": "bench",
        "criteria": "http://herald.health/SubscriptionTopic/lab-result",
        "channel": {"type": "websocket", "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content", "valueCode": "id-only"}]}}
    });
    store
        .create_subscription(NewSubscription {
            tenant: TENANT,
            id: SUBSCRIPTION,
            resource: &resource,
            status: SubscriptionStatus::Requested,
            criteria: "http://herald.health/SubscriptionTopic/lab-result",
            channel_type: "websocket",
            heartbeat_period: None,
            owner: None,
            now_ms: chrono::Utc::now().timestamp_millis(),
        })
        .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut config = WebSocketConfig::new(TENANT, format!("http://{addr}/fhir"));
    config.max_connections = max_connections;
    config.max_outstanding_tokens = max_connections;
    let hub = WebSocketHub::new(Arc::clone(&store), config)?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(Arc::clone(&hub).run(shutdown.clone()));
    let app = router(Arc::clone(&hub));
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!("READY {addr}");

    let key = SubscriptionKey::new(TENANT, SUBSCRIPTION);
    let mut lines = BufReader::new(std::io::stdin()).lines();
    let mut n = 0u64;
    while let Some(Ok(line)) = tokio::task::block_in_place(|| lines.next()) {
        if line.trim() != "event" {
            break;
        }
        n += 1;
        let now = chrono::Utc::now().timestamp_millis();
        let event = EventRecord {
            event_id: format!("e{n}"),
            tenant: TENANT.into(),
            action: "update".into(),
            resource_type: "Observation".into(),
            resource_id: format!("o{n}"),
            version_id: "1".into(),
            occurred_at: now,
            resource: Some(json!({"resourceType": "Observation", "id": format!("o{n}")})),
            recorded_at: now,
        };
        store
            .record_notifications(&event, std::slice::from_ref(&key))
            .await?;
        hub.notify_new_events();
    }
    shutdown.cancel();
    Ok(())
}

fn rss_kib(pid: u32) -> BenchResult<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS".into())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

async fn open_connections(
    addr: &str,
    http: &reqwest::Client,
    count: usize,
    arrivals: &mpsc::UnboundedSender<Instant>,
) -> BenchResult<()> {
    let client_config = ClientConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let results: Vec<BenchResult<()>> = futures::stream::iter(0..count)
        .map(|_| {
            let arrivals = arrivals.clone();
            async move {
                let url =
                    format!("http://{addr}/fhir/Subscription/{SUBSCRIPTION}/$get-ws-binding-token");
                let body: Value =
                    serde_json::from_slice(&http.get(url).send().await?.bytes().await?)?;
                let token = body["parameter"][0]["valueString"]
                    .as_str()
                    .ok_or("no token")?
                    .to_owned();
                let (mut socket, _) = tokio_tungstenite::connect_async_with_config(
                    format!("ws://{addr}/ws"),
                    Some(client_config),
                    false,
                )
                .await?;
                socket
                    .send(Message::Text(format!("bind-with-token {token}").into()))
                    .await?;
                match socket.next().await {
                    Some(Ok(Message::Text(_))) => {}
                    other => return Err(format!("no handshake: {other:?}").into()),
                }
                // From now on every text frame is one fan-out arrival.
                tokio::spawn(async move {
                    while let Some(Ok(message)) = socket.next().await {
                        if let Message::Text(_) = message {
                            let _ = arrivals.send(Instant::now());
                        }
                    }
                });
                Ok(())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn parent(connections: usize, rounds: usize) -> BenchResult<()> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["--server", &(connections + 100).to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut ready = String::new();
    stdout.read_line(&mut ready)?;
    let addr = ready
        .trim()
        .strip_prefix("READY ")
        .ok_or("server did not start")?
        .to_owned();
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let http = reqwest::Client::new();
    let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel();

    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid)?;
    let half = connections / 2;
    let started = Instant::now();
    open_connections(&addr, &http, half, &arrivals_tx).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at_half = rss_kib(pid)?;
    open_connections(&addr, &http, connections - half, &arrivals_tx).await?;
    let open_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid)?;

    let mut latencies = Vec::with_capacity(connections * rounds);
    let mut round_max = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let sent = Instant::now();
        writeln!(stdin, "event")?;
        stdin.flush()?;
        let mut slowest = Duration::ZERO;
        for _ in 0..connections {
            let arrived = tokio::time::timeout(Duration::from_secs(30), arrivals.recv())
                .await?
                .ok_or("readers gone")?;
            let latency = arrived.saturating_duration_since(sent);
            slowest = slowest.max(latency);
            latencies.push(latency);
        }
        round_max.push(slowest);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    latencies.sort();
    round_max.sort();
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();

    let per = |kib: u64, n: usize| kib as f64 * 1024.0 / n as f64 / 1024.0;
    println!(
        "connections: {connections} bound (opened in {:.1} s)",
        open_time.as_secs_f64()
    );
    println!(
        "server RSS: {before} KiB idle, {at_half} KiB at {half}, {after} KiB at {connections}"
    );
    println!(
        "memory per idle bound connection: {:.1} KiB average, {:.1} KiB marginal (second half)",
        per(after.saturating_sub(before), connections),
        per(after.saturating_sub(at_half), connections - half)
    );
    println!(
        "fan-out of one event to {connections} connections, {rounds} rounds: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; last connection reached: median {:.1} ms, worst {:.1} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        percentile(&latencies, 1.0).as_secs_f64() * 1e3,
        percentile(&round_max, 0.50).as_secs_f64() * 1e3,
        percentile(&round_max, 1.0).as_secs_f64() * 1e3,
    );
    Ok(())
}
