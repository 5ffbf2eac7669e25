//! The bus contract, run against the embedded bus and against real NATS JetStream.

use std::time::Duration;

use herald_bus::{ChangeEventBus, EmbeddedBus, JetStreamBus, JetStreamConfig};
use herald_fhir::ChangeEvent;
use serde_json::json;

fn event(id: &str) -> ChangeEvent {
    ChangeEvent::from_value(json!({
        "event_id": id, "tenant": "default", "action": "create",
        "resource_type": "Observation", "resource_id": "o1", "version": "1",
        "time": "2026-01-01T00:00:00Z", "source": "test",
        "resource": {"resourceType": "Observation", "id": "o1"}
    }))
    .expect("valid event")
}

async fn next_event_id(
    consumer: &mut Box<dyn herald_bus::ChangeEventConsumer>,
) -> Option<(String, herald_bus::BusMessage)> {
    let message = consumer.next(Duration::from_secs(5)).await.expect("next")?;
    let event = ChangeEvent::from_json(&message.payload).expect("event");
    Some((event.event_id, message))
}

/// Publish dedups by event id; unacked messages come back; nak'ed ones come back later;
/// dead-lettered ones do not.
async fn contract(bus: &dyn ChangeEventBus) {
    let first = bus.publish(&event("a")).await.expect("publish");
    assert!(!first.duplicate);
    assert!(
        bus.publish(&event("a")).await.expect("publish").duplicate,
        "same event id is dropped"
    );
    bus.publish(&event("b")).await.expect("publish");
    bus.publish(&event("c")).await.expect("publish");

    let mut consumer = bus.consumer().await.expect("consumer");
    let (id, message) = next_event_id(&mut consumer).await.expect("a");
    assert_eq!(id, "a");
    message.ack().await.expect("ack");
    let (id, message) = next_event_id(&mut consumer).await.expect("b");
    assert_eq!(id, "b");
    message.nak(Duration::from_millis(200)).await.expect("nak");
    let (id, message) = next_event_id(&mut consumer).await.expect("c");
    assert_eq!(id, "c");
    message
        .dead_letter("poison for the test")
        .await
        .expect("dead letter");
    let (id, message) = next_event_id(&mut consumer).await.expect("b again");
    assert_eq!(id, "b", "nak'ed message is redelivered");
    assert!(message.delivery_count >= 2);
    message.ack().await.expect("ack");
    assert!(
        consumer
            .next(Duration::from_millis(600))
            .await
            .expect("next")
            .is_none(),
        "nothing left"
    );
}

/// A batch publishes in order; an event already on the bus, or earlier in the same batch,
/// is a duplicate. Run on a fresh bus.
async fn batch_contract(bus: &dyn ChangeEventBus) {
    bus.publish(&event("x1")).await.expect("publish");
    let batch = [
        event("x2"),
        event("x1"),
        event("x3"),
        event("x2"),
        event("x4"),
    ];
    let published = bus.publish_batch(&batch).await.expect("publish batch");
    let duplicates: Vec<bool> = published.iter().map(|p| p.duplicate).collect();
    assert_eq!(duplicates, [false, true, false, true, false]);
    let mut consumer = bus.consumer().await.expect("consumer");
    let mut order = Vec::new();
    // `next_batch` waits for the first message, then takes what has arrived (a zero wait).
    while order.len() < 4 {
        let batch = consumer
            .next_batch(256, Duration::from_secs(5))
            .await
            .expect("next batch");
        assert!(!batch.is_empty(), "the rest arrives in time");
        for message in batch {
            let event = ChangeEvent::from_json(&message.payload).expect("event");
            message.ack().await.expect("ack");
            order.push(event.event_id);
        }
    }
    assert_eq!(order, ["x1", "x2", "x3", "x4"], "bus order is batch order");
    assert!(
        consumer.next(Duration::ZERO).await.expect("next").is_none(),
        "a zero wait with nothing there is empty, not an error"
    );
}

/// A configuration with its own stream and subjects, on the test NATS server.
fn jetstream_config() -> JetStreamConfig {
    let url =
        std::env::var("HERALD_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let mut config = JetStreamConfig::new(url);
    config.stream = format!("HERALD_TEST_{tag}");
    config.subject_prefix = format!("test.{tag}.changes");
    config.dead_letter_subject = format!("test.{tag}.deadletter");
    config.control_subject = format!("test.{tag}.control");
    config
}

#[tokio::test]
async fn embedded_bus_publishes_batches_in_order_without_duplicates() {
    let dir = std::env::temp_dir().join(format!("herald-bus-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let bus = EmbeddedBus::open(&dir.join("bus.sqlite"))
        .await
        .expect("open");
    batch_contract(&bus).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn jetstream_bus_publishes_batches_in_order_without_duplicates() {
    let config = jetstream_config();
    let bus = JetStreamBus::connect(config)
        .await
        .expect("NATS with JetStream must be running (see README)");
    batch_contract(&bus).await;
}

#[tokio::test]
async fn embedded_bus_keeps_the_contract_and_survives_reopen() {
    let dir = std::env::temp_dir().join(format!("herald-bus-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("bus.sqlite");
    {
        let bus = EmbeddedBus::open(&path).await.expect("open");
        contract(&bus).await;
        assert_eq!(bus.dead_letters().await.expect("dlq").len(), 1);
        bus.publish(&event("unacked")).await.expect("publish");
        let mut consumer = bus.consumer().await.expect("consumer");
        let (id, message) = next_event_id(&mut consumer).await.expect("unacked");
        assert_eq!(id, "unacked");
        drop(message); // the process "dies" before acking
    }
    let bus = EmbeddedBus::open(&path).await.expect("reopen");
    let mut consumer = bus.consumer().await.expect("consumer");
    let (id, message) = next_event_id(&mut consumer)
        .await
        .expect("redelivered after restart");
    assert_eq!(id, "unacked");
    message.ack().await.expect("ack");
    assert!(
        bus.publish(&event("a")).await.expect("publish").duplicate,
        "dedup survives a restart"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn jetstream_bus_keeps_the_contract() {
    let config = jetstream_config();
    let bus = JetStreamBus::connect(config.clone())
        .await
        .expect("NATS with JetStream must be running (see README)");
    contract(&bus).await;

    // The dead letter carries the reason.
    let client = async_nats::connect(&config.url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let dlq = js
        .get_stream(format!("{}_DEADLETTER", config.stream))
        .await
        .expect("dlq stream");
    let stored = dlq
        .get_last_raw_message_by_subject(&config.dead_letter_subject)
        .await
        .expect("dead letter stored");
    let headers = stored.headers;
    assert_eq!(
        headers.get("Herald-Dead-Letter-Reason").map(|v| v.as_str()),
        Some("poison for the test")
    );

    // Control notices reach every instance, this one included.
    let mut notices = bus.notices();
    let notice = herald_bus::ControlNotice::SubscriptionChanged {
        tenant: "t".into(),
        id: "s".into(),
    };
    bus.announce(notice.clone()).await.expect("announce");
    let got = tokio::time::timeout(Duration::from_secs(5), notices.recv())
        .await
        .expect("notice in time")
        .expect("notice");
    assert_eq!(got, notice);

    js.delete_stream(&config.stream).await.expect("cleanup");
    js.delete_stream(format!("{}_DEADLETTER", config.stream))
        .await
        .expect("cleanup");
}
