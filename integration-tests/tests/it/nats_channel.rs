//! The NATS channel end to end: subscriptions registered over REST in NATS + PostgreSQL mode,
//! notifications read back from the real JetStream notification stream.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use herald_integration_tests::fhir::{lab_observation, topic_subscription, LAB_TOPIC};
use herald_integration_tests::{nats_url, test_settings, TestHub, TestMode};
use serde_json::{json, Value};

use crate::security::{call, fixture, token, wait_active, AUDIENCE, ISSUER};

const CHANNEL_TYPE_EXT: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-channel-type";

/// A Backport topic-based subscription on Herald's NATS channel.
fn nats_subscription(filters: &[&str], endpoint: Option<&str>, content: &str) -> Value {
    let mut subscription = topic_subscription(LAB_TOPIC, filters, "unused", content);
    let channel = &mut subscription["channel"];
    channel["type"] = json!("message");
    channel["_type"] = json!({"extension": [{"url": CHANNEL_TYPE_EXT, "valueCoding": {
        "system": "https://herald.health/fhir/CodeSystem/channel-type", "code": "nats"}}]});
    if let Some(object) = channel.as_object_mut() {
        object.remove("header");
        object.remove("endpoint");
    }
    if let Some(endpoint) = endpoint {
        channel["endpoint"] = json!(endpoint);
    }
    subscription
}

/// One message read from the notification stream.
#[derive(Debug)]
struct NatsNotification {
    subject: String,
    headers: Vec<(String, String)>,
    bundle: Value,
}

impl NatsNotification {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn parameter(&self, name: &str) -> Option<String> {
        self.bundle
            .pointer("/entry/0/resource/parameter")?
            .as_array()?
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p.get("valueCode").or(p.get("valueString")))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    fn notification_type(&self) -> Option<String> {
        self.parameter("type")
    }

    fn event_numbers(&self) -> Vec<i64> {
        herald_integration_tests::bundle_event_numbers(&self.bundle)
    }

    /// `subject.reference` of the full resources in the bundle.
    fn patients(&self) -> Vec<String> {
        self.bundle["entry"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .skip(1)
                    .filter_map(|e| e.pointer("/resource/subject/reference")?.as_str())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A reader of the hub's notification stream, from its start, limited to `filter`.
struct StreamReader {
    messages: consumer::pull::Stream,
}

impl StreamReader {
    async fn open(hub: &TestHub, filter: &str) -> Self {
        let client = async_nats::connect(nats_url()).await.expect("NATS");
        let stream = jetstream::new(client)
            .get_stream(&hub.settings.nats.notify_stream)
            .await
            .expect("Herald created the notification stream");
        let consumer: consumer::PullConsumer = stream
            .create_consumer(consumer::pull::Config {
                filter_subject: filter.to_owned(),
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .expect("consumer");
        Self {
            messages: consumer.messages().await.expect("messages"),
        }
    }

    /// Reads until `done` holds for what was read (at most 20 s).
    async fn read_until(
        &mut self,
        done: impl Fn(&[NatsNotification]) -> bool,
    ) -> Vec<NatsNotification> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut read = Vec::new();
        while !done(&read) {
            let remaining = deadline.saturating_duration_since(Instant::now());
            assert!(!remaining.is_zero(), "timed out; read so far: {read:#?}");
            let Ok(Some(message)) = tokio::time::timeout(remaining, self.messages.next()).await
            else {
                continue;
            };
            let message = message.expect("message");
            let headers = message
                .headers
                .iter()
                .flat_map(|h| h.iter())
                .flat_map(|(name, values)| {
                    values
                        .iter()
                        .map(move |v| (name.to_string(), v.as_str().to_owned()))
                })
                .collect();
            read.push(NatsNotification {
                subject: message.subject.to_string(),
                headers,
                bundle: serde_json::from_slice(&message.payload).expect("a JSON bundle"),
            });
        }
        read
    }
}

fn events_of(read: &[NatsNotification]) -> Vec<&NatsNotification> {
    read.iter()
        .filter(|n| n.notification_type().as_deref() == Some("event-notification"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_channel_publishes_the_handshake_then_matching_events_in_order() {
    let hub = TestHub::start(TestMode::Production).await;
    let prefix = hub.settings.nats.notify_subject_prefix.clone();
    let (status, created) = hub
        .post(
            "/Subscription",
            &nats_subscription(
                &["Observation?patient=Patient/nats-1"],
                None,
                "full-resource",
            ),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let subject = format!("{prefix}.default.{id}");
    assert_eq!(
        created["channel"]["endpoint"], subject,
        "the subject is written back into channel.endpoint"
    );
    hub.wait_for_status(&id, "active").await;

    for patient in ["nats-1", "other", "nats-1", "other", "nats-1"] {
        let (status, body) = hub
            .post("/Observation", &lab_observation(patient, "final"))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let mut reader = StreamReader::open(&hub, &subject).await;
    let read = reader.read_until(|r| events_of(r).len() >= 3).await;

    assert_eq!(read[0].notification_type().as_deref(), Some("handshake"));
    assert_eq!(
        read[0].header("Herald-Notification-Type"),
        Some("handshake")
    );
    assert_eq!(read[0].header("Herald-Event-Number"), None);
    let events = events_of(&read);
    let numbers: Vec<i64> = events.iter().flat_map(|n| n.event_numbers()).collect();
    assert_eq!(
        numbers,
        vec![1, 2, 3],
        "in event-number order, matching only"
    );
    for (event, number) in events.iter().zip(1..) {
        assert_eq!(event.subject, subject);
        assert_eq!(event.header("Content-Type"), Some("application/fhir+json"));
        assert_eq!(event.header("Herald-Subscription"), Some(id.as_str()));
        assert_eq!(
            event.header("Herald-Event-Number"),
            Some(number.to_string().as_str())
        );
        assert_eq!(
            event.header("Nats-Msg-Id"),
            Some(format!("default:{id}:{number}").as_str())
        );
        assert_eq!(
            event.patients(),
            vec!["Patient/nats-1"],
            "full resource, matching only"
        );
    }

    // The non-matching writes were not counted: the next match is number 4.
    hub.post("/Observation", &lab_observation("nats-1", "final"))
        .await;
    let read = reader.read_until(|r| !events_of(r).is_empty()).await;
    assert_eq!(events_of(&read)[0].event_numbers(), vec![4]);
    let (_, status) = hub.get(&format!("/Subscription/{id}/$status")).await;
    assert!(
        status
            .to_string()
            .contains("events-since-subscription-start"),
        "{status}"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_channel_keeps_tenants_in_their_own_namespaces() {
    let mut settings = test_settings(TestMode::Production).await;
    settings.auth.issuer = Some(ISSUER.into());
    settings.auth.audience = Some(AUDIENCE.into());
    settings.auth.key_file = Some(fixture("rsa_test_key.pub.pem"));
    let hub = TestHub::start_with(settings).await;
    let prefix = hub.settings.nats.notify_subject_prefix.clone();
    let tenants = [
        (
            "clinic-a",
            token("system/*.cruds", json!({"tenant": "clinic-a"})),
        ),
        (
            "clinic-b",
            token("system/*.cruds", json!({"tenant": "clinic-b"})),
        ),
    ];
    // Identical subscriptions, the same relative subject.
    let mut ids = Vec::new();
    for (tenant, bearer) in &tenants {
        let (status, created, _) = call(
            &hub,
            "POST",
            "/Subscription",
            Some(bearer),
            Some(&nats_subscription(
                &[],
                Some("pharmacy.orders"),
                "full-resource",
            )),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(
            created["channel"]["endpoint"],
            format!("{prefix}.{tenant}.pharmacy.orders")
        );
        let id = created["id"].as_str().expect("id").to_owned();
        wait_active(&hub, &id, bearer).await;
        ids.push(id);
    }
    // A writes two results, B one; then one marker each.
    let writes = [(0, "a-1"), (1, "b-1"), (0, "a-1"), (0, "a-1"), (1, "b-1")];
    for (tenant, patient) in writes {
        let (status, body, _) = call(
            &hub,
            "POST",
            "/Observation",
            Some(&tenants[tenant].1),
            Some(&lab_observation(patient, "final")),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }

    let mut reader = StreamReader::open(&hub, &format!("{prefix}.>")).await;
    let read = reader
        .read_until(|r| {
            let events = events_of(r);
            events.len() >= 5
        })
        .await;
    for (index, (tenant, _)) in tenants.iter().enumerate() {
        let subject = format!("{prefix}.{tenant}.pharmacy.orders");
        let mine: Vec<&NatsNotification> = read.iter().filter(|n| n.subject == subject).collect();
        assert_eq!(mine[0].notification_type().as_deref(), Some("handshake"));
        let events = events_of(&read)
            .into_iter()
            .filter(|n| n.subject == subject)
            .collect::<Vec<_>>();
        let expected: Vec<i64> = if index == 0 {
            vec![1, 2, 3]
        } else {
            vec![1, 2]
        };
        assert_eq!(
            events
                .iter()
                .flat_map(|n| n.event_numbers())
                .collect::<Vec<_>>(),
            expected,
            "{tenant}"
        );
        let patient = if index == 0 {
            "Patient/a-1"
        } else {
            "Patient/b-1"
        };
        for event in events {
            assert_eq!(
                event.header("Herald-Subscription"),
                Some(ids[index].as_str())
            );
            assert_eq!(
                event.patients(),
                vec![patient],
                "{tenant} sees only its own data"
            );
        }
    }
    assert!(
        read.iter().all(|n| tenants
            .iter()
            .any(|(t, _)| n.subject == format!("{prefix}.{t}.pharmacy.orders"))),
        "nothing published anywhere else"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_channel_refuses_subjects_outside_the_tenants_namespace() {
    let hub = TestHub::start(TestMode::Production).await;
    let prefix = hub.settings.nats.notify_subject_prefix.clone();
    let other_tenant = format!("{prefix}.other-tenant.orders");
    let bare_namespace = format!("{prefix}.default");
    let refused = [
        "pharmacy.*",
        "pharmacy.>",
        ">",
        "$JS.API.>",
        "$JS.API.STREAM.DELETE.HERALD_CHANGES",
        "$SYS.REQ.SERVER.PING",
        other_tenant.as_str(),
        bare_namespace.as_str(),
        "pharmacy..orders",
        ".pharmacy",
        "pharmacy.",
        "",
        "pharmacy orders",
        "pharmacy/orders",
    ];
    for endpoint in refused {
        let subscription = nats_subscription(&[], Some(endpoint), "id-only");
        let (status, outcome) = hub.post("/Subscription", &subscription).await;
        assert!(
            status == 400 || status == 422,
            "'{endpoint}' refused with 400/422, got {status}: {outcome}"
        );
        assert_eq!(outcome["resourceType"], "OperationOutcome", "{endpoint}");
        assert_eq!(
            outcome["issue"][0]["expression"][0], "Subscription.channel.endpoint",
            "'{endpoint}': {outcome}"
        );
        let mut with_id = subscription.clone();
        with_id["id"] = json!("chosen-id");
        let (status, outcome) = hub.put("/Subscription/chosen-id", &with_id).await;
        assert!(
            status == 400 || status == 422,
            "PUT '{endpoint}' refused, got {status}: {outcome}"
        );
    }
    // Headers and signing secrets mean nothing on a NATS message.
    let mut with_header = nats_subscription(&[], None, "id-only");
    with_header["channel"]["header"] = json!(["X-Route: pharmacy"]);
    let (status, outcome) = hub.post("/Subscription", &with_header).await;
    assert_eq!(status, 400, "{outcome}");
    assert_eq!(
        outcome["issue"][0]["expression"][0],
        "Subscription.channel.header"
    );

    let (_, search) = hub.get("/Subscription").await;
    assert_eq!(search["total"], 0, "nothing was stored: {search}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_channel_is_refused_in_the_embedded_mode() {
    let hub = TestHub::start(TestMode::Embedded).await;
    let (status, outcome) = hub
        .post("/Subscription", &nats_subscription(&[], None, "id-only"))
        .await;
    assert_eq!(status, 422, "{outcome}");
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert_eq!(outcome["issue"][0]["code"], "not-supported");
    assert!(
        outcome["issue"][0]["diagnostics"]
            .as_str()
            .unwrap_or_default()
            .contains("NATS channel requires NATS mode"),
        "{outcome}"
    );
    let (_, search) = hub.get("/Subscription").await;
    assert_eq!(search["total"], 0, "nothing was stored: {search}");
    hub.stop().await;
}
