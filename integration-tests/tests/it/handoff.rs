//! The matcher hands the subscriptions its batches claimed straight to delivery (on
//! PostgreSQL, where a batch claims in its own statement). A claim the delivery queue
//! refuses is given back at once, and delivery is woken to claim it as usual.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use herald_audit::AuditLog;
use herald_delivery::{AccessGuard, DeliveryConfig, RestHookWorker};
use herald_fhir::{ChangeEvent, SubscriptionSpec, SubscriptionStatus};
use herald_integration_tests::fhir::criteria_subscription;
use herald_integration_tests::{fresh_database, Receiver};
use herald_matcher::{
    compile_subscription, ActiveSubscription, DeliveryHandoff, Matcher, SubscriptionIndex,
    TopicCatalog,
};
use herald_security::endpoint::EndpointPolicy;
use herald_store::{
    ClaimedDelivery, EventRecord, MatchedEvent, NewSubscription, PostgresStore, Store,
    SubscriptionKey,
};
use serde_json::json;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

const CRITERIA: &str = "Observation?code=2345-7";

fn glucose(id: &str) -> ChangeEvent {
    ChangeEvent::from_value(json!({
        "event_id": id, "tenant": "default", "action": "create",
        "resource_type": "Observation", "resource_id": id, "version": "1",
        "time": "2026-12-03T08:00:00Z", "source": "test",
        "resource": {"resourceType": "Observation", "id": id, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}}
    }))
    .expect("valid event")
}

fn subscription() -> serde_json::Value {
    subscription_to("http://127.0.0.1:9/hook")
}

fn subscription_to(endpoint: &str) -> serde_json::Value {
    criteria_subscription(
        CRITERIA,
        endpoint,
        Some("application/fhir+json"),
        Some("id-only"),
    )
}

/// A PostgreSQL store holding one ready rest-hook subscription.
async fn ready_subscription() -> (Arc<dyn Store>, SubscriptionKey) {
    ready_subscription_to(subscription()).await
}

/// A PostgreSQL store holding one ready rest-hook subscription, `resource`.
async fn ready_subscription_to(resource: serde_json::Value) -> (Arc<dyn Store>, SubscriptionKey) {
    let store = PostgresStore::connect(&fresh_database().await, 4)
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let store: Arc<dyn Store> = Arc::new(store);
    let key = SubscriptionKey::new("default", "glucose");
    store
        .create_subscription(NewSubscription {
            tenant: &key.tenant,
            id: &key.id,
            resource: &resource,
            status: SubscriptionStatus::Requested,
            criteria: CRITERIA,
            channel_type: "rest-hook",
            heartbeat_period: None,
            owner: None,
            now_ms: 1_000,
        })
        .await
        .expect("create");
    store
        .handshake_result(&key, 1, Ok(()), 2_000)
        .await
        .expect("ready");
    (store, key)
}

/// The matcher's index of that subscription.
async fn index(store: &Arc<dyn Store>, key: &SubscriptionKey) -> SubscriptionIndex {
    let spec = SubscriptionSpec::from_resource(&subscription()).expect("spec");
    let criteria = compile_subscription(&key.tenant, &spec, &TopicCatalog::new(Arc::clone(store)))
        .await
        .expect("compiles");
    let mut index = SubscriptionIndex::default();
    index.insert(ActiveSubscription {
        key: key.clone(),
        criteria,
        end: None,
        cel: None,
    });
    index
}

/// A matcher handing over to `queue`, and what it told delivery after each batch.
fn handing_over(
    store: &Arc<dyn Store>,
    index: SubscriptionIndex,
    queue: mpsc::Sender<herald_store::ClaimedDelivery>,
) -> (Matcher, Arc<Mutex<Vec<bool>>>) {
    let woken = Arc::new(Mutex::new(Vec::new()));
    let on_recorded = {
        let woken = Arc::clone(&woken);
        Arc::new(move |claims_left: bool| woken.lock().expect("lock").push(claims_left))
    };
    let matcher = Matcher {
        store: Arc::clone(store),
        index: Arc::new(RwLock::new(index)),
        on_recorded,
        subject_prefix: "herald.changes".into(),
        handoff: Some(DeliveryHandoff {
            claimed: queue,
            lease: Duration::from_secs(60),
        }),
    };
    (matcher, woken)
}

#[tokio::test]
async fn a_batch_hands_its_claims_to_delivery_and_a_refused_claim_is_released() {
    let (store, key) = ready_subscription().await;
    let (queue, mut handed_over) = mpsc::channel(4);
    let (matcher, woken) = handing_over(&store, index(&store, &key).await, queue);

    let first = glucose("e1");
    let numbered = matcher.process_batch(&[&first]).await.expect("record");
    assert_eq!(numbered, vec![vec![(key.clone(), 1)]]);
    let delivery = handed_over.try_recv().expect("handed over");
    assert_eq!(delivery.record.key, key);
    assert_eq!(delivery.record.events_since_start, 1);
    let numbers: Vec<(i64, &str)> = delivery
        .notifications
        .iter()
        .map(|n| (n.event_number, n.event.event_id.as_str()))
        .collect();
    assert_eq!(numbers, [(1, "e1")]);
    let stored = store
        .get_subscription(&key.tenant, &key.id)
        .await
        .expect("get")
        .expect("stored");
    assert!(
        stored.next_attempt_at.is_some(),
        "claimed for the hand-over"
    );
    assert_eq!(
        *woken.lock().expect("lock"),
        [false],
        "nothing left to claim"
    );
    // Delivery is done with it.
    store
        .finish_delivery(&key, 0, 1, 3_000)
        .await
        .expect("finish");

    // Delivery has stopped: its queue is closed.
    let (closed, receiver) = mpsc::channel(4);
    drop(receiver);
    let (matcher, woken) = handing_over(&store, index(&store, &key).await, closed);
    let second = glucose("e2");
    let numbered = matcher.process_batch(&[&second]).await.expect("record");
    assert_eq!(numbered, vec![vec![(key.clone(), 2)]]);
    let stored = store
        .get_subscription(&key.tenant, &key.id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(
        stored.next_attempt_at, None,
        "the refused claim is released"
    );
    assert_eq!(stored.events_since_start, 2);
    assert_eq!(
        *woken.lock().expect("lock"),
        [true],
        "delivery is woken to claim it"
    );
    let due = store
        .claim_due(chrono::Utc::now().timestamp_millis(), i64::MAX, 10)
        .await
        .expect("claim");
    assert_eq!(
        due.iter().map(|r| &r.key).collect::<Vec<_>>(),
        [&key],
        "claim_due takes it"
    );
}

/// A handed-over claim that waited in delivery's queue is read again before it is acted on,
/// and left alone if the claim is no longer the one handed over: here its lease ran out
/// and someone else holds the subscription, whose endpoint a client has changed meanwhile.
/// Nothing goes to the old endpoint; the current holder's lease runs out and delivery
/// claims the subscription and sends to the new one.
#[tokio::test]
async fn a_handed_over_claim_that_waited_is_read_again() {
    let receiver = Receiver::start().await;
    let (store, key) = ready_subscription_to(subscription_to(&receiver.url("/new"))).await;
    let event = EventRecord {
        event_id: "e1".into(),
        tenant: key.tenant.clone(),
        action: "create".into(),
        resource_type: "Observation".into(),
        resource_id: "o1".into(),
        version_id: "1".into(),
        occurred_at: 1_000,
        resource: Some(json!({"resourceType": "Observation", "id": "o1"})),
        recorded_at: 1_000,
    };
    store
        .record_notifications_batch(
            &[MatchedEvent {
                event,
                subscriptions: vec![key.clone()],
            }],
            &[],
        )
        .await
        .expect("record");
    let now = chrono::Utc::now().timestamp_millis();
    // Someone else holds it for another 1.5 s.
    let held = store.claim_due(now, now + 1_500, 10).await.expect("claim");
    assert_eq!(held.len(), 1);
    // What the matcher handed over 10 s ago, under its own (expired) lease: the old
    // endpoint.
    let mut old = held[0].clone();
    old.resource = subscription_to(&receiver.url("/old"));
    old.next_attempt_at = Some(now - 9_000);
    let notifications = store
        .notifications(&key.tenant, &key.id, 1, i64::MAX, 10)
        .await
        .expect("log");
    let (queue, handed_over) = mpsc::channel(1);
    queue
        .send(ClaimedDelivery {
            record: old,
            notifications,
            claimed_at_ms: now - 10_000,
        })
        .await
        .expect("queued");

    let shutdown = CancellationToken::new();
    let (audit, _writer) = AuditLog::start(Arc::clone(&store), shutdown.clone());
    let config = DeliveryConfig {
        endpoint_policy: Arc::new(EndpointPolicy::development()),
        poll_interval: Duration::from_millis(100),
        ..DeliveryConfig::default()
    };
    let worker = RestHookWorker::new(
        Arc::clone(&store),
        config,
        Arc::new(Notify::new()),
        AccessGuard::new(Arc::clone(&store), audit, false),
    )
    .expect("worker");
    let running = tokio::spawn(worker.run_with_handoff(shutdown.clone(), Some(handed_over)));

    let bundles = receiver
        .wait_for_event_bundles("/new", |b| b.concat() == [1])
        .await;
    assert_eq!(bundles, [vec![1]]);
    assert!(
        receiver.at("/old").is_empty(),
        "the stale record was not acted on: {:?}",
        receiver
            .at("/old")
            .iter()
            .map(|r| r.json())
            .collect::<Vec<_>>()
    );
    shutdown.cancel();
    running.await.expect("worker stops");
}
