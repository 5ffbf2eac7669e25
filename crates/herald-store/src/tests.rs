//! One conformance suite, run against SQLite and against a throwaway PostgreSQL database.

use super::*;
use herald_fhir::SubscriptionStatus;
use serde_json::json;
use sqlx::Connection;

/// PostgreSQL for tests: `HERALD_TEST_DATABASE_URL` or the local default. Never skipped: a
/// missing server fails the test.
fn admin_url() -> String {
    std::env::var("HERALD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A new, empty database of its own.
async fn fresh_postgres_url() -> String {
    let admin = admin_url();
    let name = format!("herald_store_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL must be running (see README)");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("database url without a path: {admin}"),
    }
}

async fn fresh_postgres() -> PostgresStore {
    let store = PostgresStore::connect(&fresh_postgres_url().await, 4)
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    store
}

async fn sqlite() -> SqliteStore {
    let store = SqliteStore::in_memory().await.expect("sqlite");
    store.migrate().await.expect("migrate");
    store
}

fn new_sub<'a>(id: &'a str, resource: &'a serde_json::Value) -> NewSubscription<'a> {
    NewSubscription {
        tenant: "t1",
        id,
        resource,
        status: SubscriptionStatus::Requested,
        criteria: "Observation?code=1",
        channel_type: "rest-hook",
        heartbeat_period: None,
        owner: None,
        now_ms: 1_000,
    }
}

fn event(id: &str) -> EventRecord {
    EventRecord {
        event_id: id.into(),
        tenant: "t1".into(),
        action: "create".into(),
        resource_type: "Observation".into(),
        resource_id: "o1".into(),
        version_id: "1".into(),
        occurred_at: 5,
        resource: Some(json!({"resourceType": "Observation", "id": "o1"})),
        recorded_at: 6,
    }
}

async fn conformance(store: &dyn Store) {
    let resource = json!({"resourceType": "Subscription", "status": "requested"});
    let created = store
        .create_subscription(new_sub("s1", &resource))
        .await
        .expect("create");
    assert_eq!((created.version_id, created.events_since_start), (1, 0));
    assert_eq!(created.delivery_state, DeliveryState::Handshake);
    assert!(matches!(
        store.create_subscription(new_sub("s1", &resource)).await,
        Err(StoreError::Conflict(_))
    ));
    store
        .create_subscription(new_sub("s2", &resource))
        .await
        .expect("create s2");

    // Gap-free numbering, idempotent per (subscription, event).
    let s1 = SubscriptionKey::new("t1", "s1");
    let s2 = SubscriptionKey::new("t1", "s2");
    let gone = SubscriptionKey::new("t1", "deleted");
    let first = store
        .record_notifications(&event("e1"), &[s1.clone(), s2.clone(), gone])
        .await
        .expect("record");
    assert_eq!(first, vec![(s1.clone(), 1), (s2.clone(), 1)]);
    let again = store
        .record_notifications(&event("e1"), std::slice::from_ref(&s1))
        .await
        .expect("redelivery");
    assert_eq!(again, vec![(s1.clone(), 1)]);
    let second = store
        .record_notifications(
            &EventRecord {
                version_id: "2".into(),
                ..event("e2")
            },
            std::slice::from_ref(&s1),
        )
        .await
        .expect("record");
    assert_eq!(second, vec![(s1.clone(), 2)]);
    // The same change re-sent under another id keeps its number; another tenant's event
    // with the same id is a different event.
    let resent = EventRecord {
        event_id: "e1-resent".into(),
        ..event("e1")
    };
    assert_eq!(
        store
            .record_notifications(&resent, std::slice::from_ref(&s1))
            .await
            .expect("resent"),
        vec![(s1.clone(), 1)]
    );
    let other_tenant_sub = json!({"resourceType": "Subscription"});
    store
        .create_subscription(NewSubscription {
            tenant: "t2",
            ..new_sub("s1", &other_tenant_sub)
        })
        .await
        .expect("t2 sub");
    let t2 = SubscriptionKey::new("t2", "s1");
    let t2_event = EventRecord {
        tenant: "t2".into(),
        resource: Some(json!({"resourceType": "Observation", "id": "o1", "t2": true})),
        ..event("e1")
    };
    assert_eq!(
        store
            .record_notifications(&t2_event, std::slice::from_ref(&t2))
            .await
            .expect("t2"),
        vec![(t2.clone(), 1)]
    );
    assert_eq!(
        store
            .notifications("t2", "s1", 1, 1, 10)
            .await
            .expect("t2 log")[0]
            .event
            .resource,
        t2_event.resource,
        "tenants never share events"
    );
    store
        .delete_subscription("t2", "s1")
        .await
        .expect("cleanup");
    let log = store
        .notifications("t1", "s1", 1, 10, 100)
        .await
        .expect("log");
    assert_eq!(
        log.iter()
            .map(|n| (n.event_number, n.event.event_id.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "e1"), (2, "e2")]
    );
    assert_eq!(
        log[0].event.resource,
        Some(json!({"resourceType": "Observation", "id": "o1"}))
    );

    // Delivery state: handshake first, then pending events, then nothing.
    let due = store.claim_due(2_000, 3_000, 10).await.expect("due");
    assert_eq!(due.len(), 2, "both need a handshake");
    assert!(
        store
            .claim_due(2_500, 3_500, 10)
            .await
            .expect("due")
            .is_empty(),
        "claimed: no second taker"
    );
    store
        .handshake_result(&s1, 1, Ok(()), 2_000)
        .await
        .expect("hs");
    store
        .handshake_result(&s2, 1, Err("503 from endpoint"), 2_000)
        .await
        .expect("hs");
    let s2_record = store
        .get_subscription("t1", "s2")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(s2_record.status, SubscriptionStatus::Error);
    let due = store.claim_due(2_000, 3_000, 10).await.expect("due");
    assert_eq!(
        due.iter().map(|s| s.key.id.as_str()).collect::<Vec<_>>(),
        vec!["s1"],
        "s2 waits for the client"
    );
    store
        .record_delivery_failure(
            &s1,
            &DeliveryFailure {
                version_id: 1,
                attempts: 1,
                next_attempt_at: Some(5_000),
                status: SubscriptionStatus::Active,
                error: "timeout",
                now_ms: 2_000,
            },
        )
        .await
        .expect("failure");
    assert!(
        store
            .claim_due(4_999, 6_000, 10)
            .await
            .expect("due")
            .is_empty(),
        "backing off"
    );
    assert_eq!(
        store.claim_due(5_000, 6_000, 10).await.expect("due").len(),
        1
    );
    store
        .mark_delivered(&s1, 2, 5_000)
        .await
        .expect("delivered");
    assert!(store
        .claim_due(6_000, 7_000, 10)
        .await
        .expect("due")
        .is_empty());

    // A claim that ends without an outcome is released; a crashed claimer's lease runs out.
    store
        .record_notifications(
            &EventRecord {
                version_id: "3".into(),
                ..event("e3")
            },
            std::slice::from_ref(&s1),
        )
        .await
        .expect("e3");
    assert_eq!(
        store.claim_due(7_000, 8_000, 10).await.expect("due").len(),
        1
    );
    assert!(store
        .claim_due(7_500, 9_000, 10)
        .await
        .expect("due")
        .is_empty());
    assert_eq!(
        store.claim_due(8_000, 9_000, 10).await.expect("due").len(),
        1,
        "lease ran out"
    );
    store.release_claim(&s1).await.expect("release");
    assert_eq!(
        store.claim_due(8_100, 9_000, 10).await.expect("due").len(),
        1,
        "released"
    );
    // Finishing a delivery records progress and ends the claim in one write; a stale
    // finish (a rewind won) changes nothing and keeps the claim.
    assert!(!store
        .finish_delivery(&s1, 0, 3, 8_150)
        .await
        .expect("stale finish"));
    assert!(
        store
            .claim_due(8_150, 9_000, 10)
            .await
            .expect("due")
            .is_empty(),
        "still claimed after a stale finish"
    );
    let before = store
        .get_subscription("t1", "s1")
        .await
        .expect("get")
        .expect("s1")
        .delivered_through;
    assert!(store
        .finish_delivery(&s1, before, 3, 8_160)
        .await
        .expect("finish"));
    let finished = store
        .get_subscription("t1", "s1")
        .await
        .expect("get")
        .expect("s1");
    assert_eq!(finished.delivered_through, 3);
    assert_eq!(finished.next_attempt_at, None, "claim ended");
    assert!(
        store
            .claim_due(8_170, 9_000, 10)
            .await
            .expect("due")
            .is_empty(),
        "nothing left to deliver"
    );
    store.release_all_claims().await.expect("release all");
    store
        .mark_delivered(&s1, 3, 8_200)
        .await
        .expect("delivered");

    // $resend rewinds delivery; retention never removes what is undelivered.
    assert!(store.rewind_delivery(&s1, 2).await.expect("rewind"));
    assert!(
        !store
            .advance_delivery(&s1, 3, 4, 8_250)
            .await
            .expect("advance"),
        "a stale advance loses to the rewind"
    );
    assert_eq!(
        store
            .get_subscription("t1", "s1")
            .await
            .expect("get")
            .expect("s1")
            .delivered_through,
        1
    );
    assert!(
        !store.rewind_delivery(&s1, 5).await.expect("rewind"),
        "nothing delivered from 5 on"
    );
    let removed = store.prune_notifications(i64::MAX, 0).await.expect("prune");
    assert!(removed >= 1, "event 1 was delivered and can go");
    let left: Vec<i64> = store
        .notifications("t1", "s1", 1, 10, 100)
        .await
        .expect("log")
        .iter()
        .map(|n| n.event_number)
        .collect();
    assert_eq!(left, vec![2, 3]);
    store
        .mark_delivered(&s1, 3, 8_300)
        .await
        .expect("delivered");

    // A client resetting to requested restarts the handshake; the log and counters stay.
    let updated = store
        .update_subscription(NewSubscription {
            id: "s2",
            ..new_sub("s2", &resource)
        })
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(
        (
            updated.version_id,
            updated.status,
            updated.events_since_start
        ),
        (2, SubscriptionStatus::Requested, 1)
    );

    // Search: lists OR-ed inside, AND-ed across.
    let q = SubscriptionQuery {
        statuses: vec!["active".into(), "requested".into()],
        ..Default::default()
    };
    assert_eq!(
        store
            .search_subscriptions("t1", &q)
            .await
            .expect("search")
            .len(),
        2
    );
    let q = SubscriptionQuery {
        ids: vec!["s1".into()],
        statuses: vec!["requested".into()],
        ..Default::default()
    };
    assert!(store
        .search_subscriptions("t1", &q)
        .await
        .expect("search")
        .is_empty());
    assert!(
        store
            .search_subscriptions("t2", &SubscriptionQuery::default())
            .await
            .expect("search")
            .is_empty(),
        "tenants never mix"
    );

    // Latest resource versions: compare-and-set.
    let v1 = StoredResource {
        tenant: "t1".into(),
        resource_type: "Observation".into(),
        id: "o1".into(),
        seq: 1,
        version_id: "1".into(),
        deleted: false,
        resource: Some(json!({"id": "o1"})),
        updated_at: 1,
        pending_event: Some("{}".into()),
    };
    assert!(store.put_resource(&v1, None).await.expect("put"));
    assert!(
        !store.put_resource(&v1, None).await.expect("put"),
        "already exists"
    );
    let v2 = StoredResource {
        seq: 2,
        version_id: "2".into(),
        ..v1.clone()
    };
    assert!(
        !store.put_resource(&v2, Some(7)).await.expect("put"),
        "stale expectation"
    );
    assert!(store.put_resource(&v2, Some(1)).await.expect("put"));
    assert_eq!(
        store
            .get_resource("t1", "Observation", "o1")
            .await
            .expect("get"),
        Some(v2)
    );
    // Unconfirmed publishes are listed until cleared for their exact version.
    assert_eq!(store.pending_events(10).await.expect("pending").len(), 1);
    store
        .clear_pending_event("t1", "Observation", "o1", 1)
        .await
        .expect("clear stale");
    assert_eq!(
        store.pending_events(10).await.expect("pending").len(),
        1,
        "seq 1 is not the current version"
    );
    store
        .clear_pending_event("t1", "Observation", "o1", 2)
        .await
        .expect("clear");
    assert!(store.pending_events(10).await.expect("pending").is_empty());

    // Topics.
    let topic = json!({"resourceType": "SubscriptionTopic", "url": "http://x/t"});
    store
        .put_topic("t1", "tp", "http://x/t", &topic)
        .await
        .expect("topic");
    assert!(
        matches!(
            store.put_topic("t1", "other", "http://x/t", &topic).await,
            Err(StoreError::Conflict(_))
        ),
        "url unique per tenant"
    );
    assert_eq!(
        store
            .get_topic_by_url("t1", "http://x/t")
            .await
            .expect("get")
            .map(|t| t.id),
        Some("tp".into())
    );
    assert_eq!(store.list_topics("t1").await.expect("list").len(), 1);
    assert!(store.delete_topic("t1", "tp").await.expect("delete"));

    assert!(store.delete_subscription("t1", "s1").await.expect("delete"));
    assert!(store
        .notifications("t1", "s1", 1, 10, 100)
        .await
        .expect("log")
        .is_empty());
    assert_eq!(store.counting_subscriptions().await.expect("list").len(), 1);
    access_and_audit(store).await;
}

async fn access_and_audit(store: &dyn Store) {
    let owner = SubscriptionOwner {
        client_id: "dashboard".into(),
        subject: "user-1".into(),
        token_id: Some("jti-1".into()),
        patient: Some("123".into()),
        scopes: vec!["patient/Observation.rs".into()],
    };
    let resource = json!({"resourceType": "Subscription"});
    for id in ["o1", "o2"] {
        let mut new = new_sub(id, &resource);
        new.tenant = "t9";
        new.owner = Some(&owner);
        store.create_subscription(new).await.expect("create owned");
    }
    let read = store
        .get_subscription("t9", "o1")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(read.owner.as_ref(), Some(&owner), "owner round-trips");
    assert_eq!(
        store
            .count_subscriptions_by_owner("t9", "dashboard")
            .await
            .expect("count"),
        2
    );
    assert_eq!(
        store
            .count_subscriptions_by_owner("t1", "dashboard")
            .await
            .expect("count"),
        0,
        "counted per tenant"
    );
    // An update by another grant takes the subscription over.
    let other = SubscriptionOwner {
        client_id: "admin".into(),
        ..owner.clone()
    };
    let mut update = new_sub("o2", &resource);
    update.tenant = "t9";
    update.owner = Some(&other);
    store.update_subscription(update).await.expect("update");
    assert_eq!(
        store
            .count_subscriptions_by_owner("t9", "dashboard")
            .await
            .expect("count"),
        1
    );

    assert!(!store
        .is_revoked("t9", "dashboard", Some("jti-1"))
        .await
        .expect("check"));
    store
        .revoke_access("t9", RevocationKind::Token, "jti-1", Some("lost"), 5)
        .await
        .expect("revoke");
    store
        .revoke_access("t9", RevocationKind::Token, "jti-1", None, 6)
        .await
        .expect("revoking twice is fine");
    assert!(store
        .is_revoked("t9", "dashboard", Some("jti-1"))
        .await
        .expect("check"));
    assert!(!store
        .is_revoked("t9", "dashboard", Some("jti-2"))
        .await
        .expect("another token of the client"));
    assert!(!store
        .is_revoked("t1", "dashboard", Some("jti-1"))
        .await
        .expect("another tenant"));
    store
        .revoke_access("t9", RevocationKind::Client, "dashboard", None, 7)
        .await
        .expect("revoke client");
    assert!(store
        .is_revoked("t9", "dashboard", None)
        .await
        .expect("check"));

    let audit = |id: &str, at: i64, kind: &str, outcome: &str| AuditRecord {
        tenant: "t9".into(),
        id: id.into(),
        recorded_at: at,
        kind: kind.into(),
        action: "C".into(),
        outcome: outcome.into(),
        agent_client: Some("dashboard".into()),
        agent_subject: None,
        entity: Some("Subscription/o1".into()),
        detail: None,
    };
    store
        .append_audit(&[
            audit("a1", 10, "subscription-create", "0"),
            audit("a2", 20, "delivery", "0"),
            audit("a3", 30, "delivery", "4"),
        ])
        .await
        .expect("append");
    store
        .append_audit(&[audit("a1", 10, "subscription-create", "0")])
        .await
        .expect("appending the same record twice is idempotent");
    // More than one statement's worth (100) goes in one transaction (another tenant).
    let bulk: Vec<AuditRecord> = (0..250)
        .map(|i| AuditRecord {
            tenant: "t8".into(),
            ..audit(&format!("b{i}"), 40 + i, "bulk", "0")
        })
        .collect();
    store.append_audit(&bulk).await.expect("append in bulk");
    let query = AuditQuery {
        kinds: vec!["bulk".into()],
        limit: Some(1000),
        ..AuditQuery::default()
    };
    assert_eq!(
        store
            .search_audit("t8", &query)
            .await
            .expect("search")
            .len(),
        250
    );
    let ids = |records: Vec<AuditRecord>| records.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let all = store
        .search_audit("t9", &AuditQuery::default())
        .await
        .expect("search");
    assert_eq!(ids(all), ["a3", "a2", "a1"], "newest first");
    let query = AuditQuery {
        since_ms: Some(15),
        kinds: vec!["delivery".into()],
        outcome: Some("4".into()),
        ..AuditQuery::default()
    };
    assert_eq!(
        ids(store.search_audit("t9", &query).await.expect("search")),
        ["a3"]
    );
    let query = AuditQuery {
        until_ms: Some(20),
        entity: Some("Subscription/o1".into()),
        agent_client: Some("dashboard".into()),
        limit: Some(1),
        ..AuditQuery::default()
    };
    assert_eq!(
        ids(store.search_audit("t9", &query).await.expect("search")),
        ["a2"]
    );
    assert!(
        store
            .search_audit("t1", &AuditQuery::default())
            .await
            .expect("search")
            .is_empty(),
        "audit is per tenant"
    );
    assert_eq!(
        store
            .get_audit("t9", "a2")
            .await
            .expect("get")
            .map(|r| r.kind),
        Some("delivery".into())
    );
    assert!(store.get_audit("t1", "a2").await.expect("get").is_none());
}

#[tokio::test]
async fn sqlite_store_conforms() {
    conformance(&sqlite().await).await;
}

#[tokio::test]
async fn postgres_store_conforms() {
    conformance(&fresh_postgres().await).await;
}

/// Herald pushes to rest-hook and NATS-channel subscriptions; WebSocket clients connect.
async fn claims_only_push_channels(store: &dyn Store) {
    let resource = json!({"resourceType": "Subscription", "status": "requested"});
    for (id, channel_type) in [("rh", "rest-hook"), ("nats", "nats"), ("ws", "websocket")] {
        store
            .create_subscription(NewSubscription {
                channel_type,
                ..new_sub(id, &resource)
            })
            .await
            .expect("create");
    }
    let mut claimed: Vec<String> = store
        .claim_due(2_000, 3_000, 10)
        .await
        .expect("due")
        .into_iter()
        .map(|s| s.key.id)
        .collect();
    claimed.sort();
    assert_eq!(claimed, vec!["nats", "rh"]);
}

#[tokio::test]
async fn sqlite_claims_only_push_channels() {
    claims_only_push_channels(&sqlite().await).await;
}

#[tokio::test]
async fn postgres_claims_only_push_channels() {
    claims_only_push_channels(&fresh_postgres().await).await;
}

/// `resources_containing`: the revInclude prefilter over the latest versions.
async fn resources_containing(store: &dyn Store) {
    let put = |tenant: &str, ty: &str, id: &str, deleted: bool, resource: serde_json::Value| {
        StoredResource {
            tenant: tenant.into(),
            resource_type: ty.into(),
            id: id.into(),
            seq: 1,
            version_id: "1".into(),
            deleted,
            resource: Some(resource),
            updated_at: 1,
            pending_event: None,
        }
    };
    let rows = [
        put(
            "t1",
            "Observation",
            "o2",
            false,
            json!({"id": "o2", "encounter": {"reference": "Encounter/e1"}}),
        ),
        put(
            "t1",
            "Observation",
            "o1",
            false,
            json!({"id": "o1", "encounter": {"reference": "https://ehr.example/fhir/Encounter/e1"}}),
        ),
        put(
            "t1",
            "Observation",
            "o3",
            false,
            json!({"id": "o3", "encounter": {"reference": "Encounter/e12"}}),
        ),
        put(
            "t1",
            "Observation",
            "o4",
            true,
            json!({"id": "o4", "encounter": {"reference": "Encounter/e1"}}),
        ),
        put(
            "t1",
            "Observation",
            "o5",
            false,
            json!({"id": "o5", "note": [{"text": "100% of Encounter/a_b\\c\""}]}),
        ),
        put(
            "t1",
            "Observation",
            "o6",
            false,
            json!({"id": "o6", "note": [{"text": "Encounter/aXb\\c\""}]}),
        ),
        put(
            "t1",
            "Condition",
            "c1",
            false,
            json!({"id": "c1", "encounter": {"reference": "Encounter/e1"}}),
        ),
        put(
            "t2",
            "Observation",
            "o1",
            false,
            json!({"id": "o1", "encounter": {"reference": "Encounter/e1"}}),
        ),
    ];
    for row in &rows {
        assert!(store.put_resource(row, None).await.expect("put"));
    }
    let ids = |found: Vec<StoredResource>| found.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let found = store
        .resources_containing("t1", "Observation", "Encounter/e1\"", 10)
        .await
        .expect("search");
    assert_eq!(
        ids(found),
        ["o1", "o2"],
        "live rows of that type and tenant, by id; not e12, not deleted, not other types or tenants"
    );
    let found = store
        .resources_containing("t1", "Observation", "Encounter/e1", 1)
        .await
        .expect("search");
    assert_eq!(ids(found), ["o1"], "limited");
    // LIKE wildcards and the escape character in the text are literal.
    let found = store
        .resources_containing("t1", "Observation", "Encounter/a_b\\\\c", 10)
        .await
        .expect("search");
    assert_eq!(ids(found), ["o5"]);
    let found = store
        .resources_containing("t1", "Observation", "100%", 10)
        .await
        .expect("search");
    assert_eq!(ids(found), ["o5"]);
    assert!(store
        .resources_containing("t1", "Observation", "%", 10)
        .await
        .expect("search")
        .iter()
        .all(|r| r.id == "o5"));
    assert!(store
        .resources_containing("t3", "Observation", "Encounter/e1", 10)
        .await
        .expect("search")
        .is_empty());
}

#[tokio::test]
async fn sqlite_resources_containing() {
    resources_containing(&sqlite().await).await;
}

#[tokio::test]
async fn postgres_resources_containing() {
    resources_containing(&fresh_postgres().await).await;
}

/// The matcher's batch: one transaction, numbers in bus order, the same idempotency as
/// one event at a time (also inside the batch), version writes with compare-and-set.
async fn records_batches(store: &dyn Store) {
    let resource = json!({"resourceType": "Subscription", "status": "requested"});
    for id in ["a", "b"] {
        store
            .create_subscription(new_sub(id, &resource))
            .await
            .expect("create");
    }
    let (a, b) = (
        SubscriptionKey::new("t1", "a"),
        SubscriptionKey::new("t1", "b"),
    );
    let gone = SubscriptionKey::new("t1", "deleted");
    let on = |id: &str, resource_id: &str, version: &str, subs: &[&SubscriptionKey]| MatchedEvent {
        event: EventRecord {
            resource_id: resource_id.into(),
            version_id: version.into(),
            ..event(id)
        },
        subscriptions: subs.iter().map(|k| (*k).clone()).collect(),
    };
    let batch = vec![
        on("e1", "o1", "1", &[&a, &b]),
        on("e2", "o2", "1", &[&a]),
        // The same change under another event id, inside the same batch.
        on("e1-again", "o1", "1", &[&a, &b]),
        on("e3", "o1", "2", &[&b, &gone]),
        on("e4", "o3", "1", &[]),
    ];
    let version = |id: &str, seq: i64| StoredResource {
        tenant: "t1".into(),
        resource_type: "Observation".into(),
        id: id.into(),
        seq,
        version_id: seq.to_string(),
        deleted: false,
        resource: Some(json!({"resourceType": "Observation", "id": id})),
        updated_at: 7,
        pending_event: None,
    };
    let versions = vec![
        VersionWrite {
            resource: version("o1", 2),
            expected_seq: None,
        },
        VersionWrite {
            resource: version("o2", 1),
            expected_seq: None,
        },
    ];
    let expected = vec![
        vec![(a.clone(), 1), (b.clone(), 1)],
        vec![(a.clone(), 2)],
        vec![(a.clone(), 1), (b.clone(), 1)],
        vec![(b.clone(), 2)],
        vec![],
    ];
    let first = store
        .record_notifications_batch(&batch, &versions)
        .await
        .expect("batch");
    assert_eq!(first, expected);
    // Redelivered as a whole: same numbers, counters unchanged; the version writes lose
    // their compare-and-set and change nothing.
    let stale = vec![VersionWrite {
        resource: version("o1", 1),
        expected_seq: None,
    }];
    let again = store
        .record_notifications_batch(&batch, &stale)
        .await
        .expect("redelivered batch");
    assert_eq!(again, expected);
    for (id, count) in [("a", 2), ("b", 2)] {
        let sub = store
            .get_subscription("t1", id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(sub.events_since_start, count, "subscription {id}");
    }
    let log: Vec<String> = store
        .notifications("t1", "a", 1, 10, 10)
        .await
        .expect("log")
        .into_iter()
        .map(|n| n.event.event_id)
        .collect();
    assert_eq!(log, vec!["e1", "e2"]);
    // A later batch continues the numbers; a compare-and-set on the right sequence wins.
    let next = store
        .record_notifications_batch(
            &[on("e5", "o1", "3", &[&a])],
            &[VersionWrite {
                resource: version("o1", 3),
                expected_seq: Some(2),
            }],
        )
        .await
        .expect("next batch");
    assert_eq!(next, vec![vec![(a.clone(), 3)]]);
    // A batch mixing a stored change with a new one (on PostgreSQL the one-statement path
    // rolls back on the stored change and the general path records both): the stored one
    // keeps its numbers, the new one continues them, nothing is counted twice.
    let mixed = store
        .record_notifications_batch(
            &[on("e6", "o4", "1", &[&a]), on("e2", "o2", "1", &[&a])],
            &[],
        )
        .await
        .expect("mixed batch");
    assert_eq!(mixed, vec![vec![(a.clone(), 4)], vec![(a.clone(), 2)]]);
    let counted = store
        .get_subscription("t1", "a")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(counted.events_since_start, 4);

    let key = |id: &str| ResourceKey {
        tenant: "t1".into(),
        resource_type: "Observation".into(),
        id: id.into(),
    };
    let mut found: Vec<(String, i64)> = store
        .get_resources(&[key("o1"), key("o2"), key("o3"), key("o1")])
        .await
        .expect("get resources")
        .into_iter()
        .map(|r| (r.id, r.seq))
        .collect();
    found.sort();
    assert_eq!(found, vec![("o1".into(), 3), ("o2".into(), 1)]);
}

#[tokio::test]
async fn sqlite_records_batches() {
    records_batches(&sqlite().await).await;
}

#[tokio::test]
async fn postgres_records_batches() {
    records_batches(&fresh_postgres().await).await;
}

/// A copy of the migrations numbered below `version`, to build a database as an earlier
/// release left it.
fn migrations_before(dialect: &str, version: u32) -> std::path::PathBuf {
    let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dialect);
    let to = std::env::temp_dir().join(format!(
        "herald_migrations_{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&to).expect("temp dir");
    for entry in std::fs::read_dir(&from).expect("migrations dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).expect("name");
        let number: u32 = name[..4].parse().expect("numbered migration");
        if number < version {
            std::fs::copy(&path, to.join(name)).expect("copy migration");
        }
    }
    to
}

/// A subscription as the schema before migration 0003 held it: seven events numbered,
/// all delivered.
const SUBSCRIPTION_BEFORE_0003: &str = "INSERT INTO subscriptions (tenant, id, version_id, resource, status, \
     criteria, channel_type, delivery_state, events_since_start, delivered_through, created_at, updated_at) \
     VALUES ('t1', 's1', 1, '{\"resourceType\": \"Subscription\", \"status\": \"active\"}', 'active', \
     'Observation?code=1', 'rest-hook', 'ready', 7, 7, 1000, 1000)";

/// Builds the schema as migrations before 0003 left it, holding one subscription.
async fn schema_before_0003<C>(conn: &mut C, dialect: &str)
where
    C: sqlx::Connection + sqlx::migrate::Migrate,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
{
    let old = sqlx::migrate::Migrator::new(migrations_before(dialect, 3).as_path())
        .await
        .expect("old migrations");
    old.run_direct(&mut *conn).await.expect("old schema");
    sqlx::raw_sql(SUBSCRIPTION_BEFORE_0003)
        .execute(&mut *conn)
        .await
        .expect("old row");
}

/// After the upgrade the counter reads as before and the next event gets the next number:
/// no number is reused, none skipped.
async fn upgraded_counters_continue(store: &dyn Store) {
    let key = SubscriptionKey::new("t1", "s1");
    let before = store
        .get_subscription("t1", "s1")
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(
        (before.events_since_start, before.delivered_through),
        (7, 7)
    );
    let numbered = store
        .record_notifications_batch(
            &[MatchedEvent {
                event: event("e8"),
                subscriptions: vec![key.clone()],
            }],
            &[],
        )
        .await
        .expect("record");
    assert_eq!(numbered, vec![vec![(key, 8)]]);
    let after = store
        .get_subscription("t1", "s1")
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(after.events_since_start, 8);
    assert!(store.delete_subscription("t1", "s1").await.expect("delete"));
    let resource = json!({"resourceType": "Subscription", "status": "requested"});
    let again = store
        .create_subscription(new_sub("s1", &resource))
        .await
        .expect("create again");
    assert_eq!(
        again.events_since_start, 0,
        "a new subscription counts from zero"
    );
}

#[tokio::test]
async fn sqlite_upgrade_keeps_counters() {
    let path = std::env::temp_dir().join(format!(
        "herald_upgrade_{}.db",
        uuid::Uuid::new_v4().simple()
    ));
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .expect("open");
        schema_before_0003(&mut conn, "sqlite").await;
        conn.close().await.expect("close");
    }
    let store = SqliteStore::open(&path).await.expect("open");
    store.migrate().await.expect("upgrade");
    upgraded_counters_continue(&store).await;
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::test]
async fn postgres_upgrade_keeps_counters() {
    let url = fresh_postgres_url().await;
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    schema_before_0003(&mut conn, "postgres").await;
    conn.close().await.expect("close");
    let store = PostgresStore::connect(&url, 4).await.expect("connect");
    store.migrate().await.expect("upgrade");
    upgraded_counters_continue(&store).await;
}

/// The matcher's batch claims the ready push-channel subscriptions it numbers that nobody
/// holds, with their new counters and their notifications as the log holds them; it leaves
/// WebSocket, handshaking, backing-off and already claimed subscriptions alone. Returns
/// what the first batch claimed (the caller knows which store claims at all).
async fn batch_claims(store: &dyn Store) -> Vec<ClaimedDelivery> {
    let resource = json!({"resourceType": "Subscription", "status": "requested"});
    for (id, channel_type) in [
        ("ready", "rest-hook"),
        ("nats", "nats"),
        ("ws", "websocket"),
        ("held", "rest-hook"),
        ("backoff", "rest-hook"),
    ] {
        store
            .create_subscription(NewSubscription {
                channel_type,
                ..new_sub(id, &resource)
            })
            .await
            .expect("create");
        store
            .handshake_result(&SubscriptionKey::new("t1", id), 1, Ok(()), 2_000)
            .await
            .expect("ready");
    }
    let key = |id: &str| SubscriptionKey::new("t1", id);
    store
        .record_delivery_failure(
            &key("backoff"),
            &DeliveryFailure {
                version_id: 1,
                attempts: 1,
                next_attempt_at: Some(i64::MAX),
                status: SubscriptionStatus::Error,
                error: "503",
                now_ms: 3_000,
            },
        )
        .await
        .expect("back off");
    let on = |id: &str, resource_id: &str, subs: &[&str]| MatchedEvent {
        event: EventRecord {
            resource_id: resource_id.into(),
            ..event(id)
        },
        subscriptions: subs.iter().map(|s| key(s)).collect(),
    };
    // "held" gets an event and is claimed by delivery before the claiming batch.
    store
        .record_notifications_batch(&[on("e0", "o0", &["held"])], &[])
        .await
        .expect("record");
    let held = store.claim_due(4_000, 900_000, 10).await.expect("claim");
    assert_eq!(
        held.iter().map(|r| r.key.id.as_str()).collect::<Vec<_>>(),
        ["held"]
    );
    // Created after that claim, so only its handshake keeps it out of the batch's claim.
    store
        .create_subscription(new_sub("handshaking", &resource))
        .await
        .expect("create");

    let claim = BatchClaim {
        now_ms: 5_000,
        lease_until_ms: 800_000,
    };
    // Another tenant's subscription, and an event of that tenant under the same id as one
    // of t1's (event ids are unique per tenant only).
    store
        .create_subscription(NewSubscription {
            tenant: "t2",
            ..new_sub("other", &resource)
        })
        .await
        .expect("create");
    let other = SubscriptionKey::new("t2", "other");
    store
        .handshake_result(&other, 1, Ok(()), 2_000)
        .await
        .expect("ready");
    let t2_event = MatchedEvent {
        event: EventRecord {
            tenant: "t2".into(),
            resource_id: "p1".into(),
            resource: Some(json!({"resourceType": "Observation", "id": "p1"})),
            ..event("e1")
        },
        subscriptions: vec![other],
    };
    let all = ["ready", "nats", "ws", "held", "backoff", "handshaking"];
    let recorded = store
        .record_notifications_batch_claiming(
            &[on("e1", "o1", &all), on("e2", "o2", &["ready"]), t2_event],
            &[],
            Some(claim),
        )
        .await
        .expect("record and claim");
    let mut numbered = recorded.numbered[0].clone();
    numbered.sort();
    assert_eq!(
        numbered.len(),
        6,
        "every subscription is numbered: {numbered:?}"
    );
    assert_eq!(recorded.numbered[1], vec![(key("ready"), 2)]);
    for claimed in &recorded.claimed {
        let logged = store
            .notifications(
                &claimed.record.key.tenant,
                &claimed.record.key.id,
                1,
                i64::MAX,
                100,
            )
            .await
            .expect("log");
        let as_logged =
            |n: &[NotificationRecord]| -> Vec<(i64, String, String, String, Option<serde_json::Value>)> {
                n.iter()
                    .map(|n| {
                        (
                            n.event_number,
                            n.event.tenant.clone(),
                            n.event.event_id.clone(),
                            n.event.resource_id.clone(),
                            n.event.resource.clone(),
                        )
                    })
                    .collect()
            };
        assert_eq!(as_logged(&claimed.notifications), as_logged(&logged));
        assert_eq!(
            claimed.record.events_since_start,
            logged.last().expect("numbered").event_number
        );
        assert_eq!(claimed.record.next_attempt_at, Some(claim.lease_until_ms));
        assert_eq!(claimed.record.delivered_through, 0);
    }
    // Claimed ones are held: the next batch numbers them but claims nothing.
    let again = store
        .record_notifications_batch_claiming(
            &[on("e3", "o3", &["ready", "nats"])],
            &[],
            Some(claim),
        )
        .await
        .expect("record again");
    assert_eq!(again.numbered[0].len(), 2);
    assert!(again.claimed.is_empty() || recorded.claimed.is_empty());
    recorded.claimed
}

#[tokio::test]
async fn sqlite_batch_claims_nothing() {
    let claimed = batch_claims(&sqlite().await).await;
    assert!(claimed.is_empty(), "SQLite leaves claims to claim_due");
}

#[tokio::test]
async fn postgres_batch_claims_ready_push_subscriptions() {
    let claimed = batch_claims(&fresh_postgres().await).await;
    let mut ids: Vec<&str> = claimed.iter().map(|c| c.record.key.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["nats", "other", "ready"]);
    let other = claimed
        .iter()
        .find(|c| c.record.key.id == "other")
        .expect("other");
    let event = &other.notifications[0].event;
    assert_eq!(
        (event.tenant.as_str(), event.resource_id.as_str()),
        ("t2", "p1"),
        "its own tenant's event, not t1's of the same id"
    );
    let ready = claimed
        .iter()
        .find(|c| c.record.key.id == "ready")
        .expect("ready");
    assert_eq!(ready.record.events_since_start, 2);
    assert_eq!(
        ready
            .notifications
            .iter()
            .map(|n| n.event.event_id.as_str())
            .collect::<Vec<_>>(),
        ["e1", "e2"]
    );
}
