//! The matcher hands the subscriptions its batches claimed straight to delivery (on
//! PostgreSQL, where a batch claims in its own statement). A claim the delivery queue
//! refuses is given back at once, and delivery is woken to claim it as usual.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use herald_fhir::{ChangeEvent, SubscriptionSpec, SubscriptionStatus};
use herald_integration_tests::fhir::criteria_subscription;
use herald_integration_tests::fresh_database;
use herald_matcher::{
    compile_subscription, ActiveSubscription, DeliveryHandoff, Matcher, SubscriptionIndex,
    TopicCatalog,
};
use herald_store::{NewSubscription, PostgresStore, Store, SubscriptionKey};
use serde_json::json;
use tokio::sync::mpsc;

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
    criteria_subscription(
        CRITERIA,
        "http://127.0.0.1:9/hook",
        Some("application/fhir+json"),
        Some("id-only"),
    )
}

/// A PostgreSQL store holding one ready rest-hook subscription.
async fn ready_subscription() -> (Arc<dyn Store>, SubscriptionKey) {
    let store = PostgresStore::connect(&fresh_database().await, 4)
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let store: Arc<dyn Store> = Arc::new(store);
    let resource = subscription();
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
