//! Table tests for reading Subscriptions: every refusal names its element.

use super::*;
use serde_json::json;

fn topic_based() -> Value {
    json!({
        "resourceType": "Subscription",
        "meta": {"profile": [PROFILE_BACKPORT_SUBSCRIPTION]},
        "status": "requested",
        "reason": "lab dashboard",
        "criteria": "http://herald.health/SubscriptionTopic/lab-result",
        "_criteria": {"extension": [{"url": EXT_FILTER_CRITERIA, "valueString": "Observation?patient=Patient/123"}]},
        "channel": {
            "type": "rest-hook",
            "endpoint": "https://example.org/hook",
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": EXT_PAYLOAD_CONTENT, "valueCode": "id-only"}]},
            "header": ["Authorization: Bearer secret-token"],
            "extension": [
                {"url": EXT_HEARTBEAT_PERIOD, "valueUnsignedInt": 60},
                {"url": EXT_TIMEOUT, "valueUnsignedInt": 30},
                {"url": EXT_MAX_COUNT, "valuePositiveInt": 10}
            ]
        }
    })
}

#[test]
fn reads_a_backport_topic_subscription() {
    let spec = SubscriptionSpec::from_resource(&topic_based()).expect("valid");
    assert_eq!(
        spec.kind,
        SubscriptionKind::Topic {
            topic_url: "http://herald.health/SubscriptionTopic/lab-result".into(),
            filters: vec!["Observation?patient=Patient/123".into()],
        }
    );
    assert_eq!(spec.content, Some(PayloadContent::IdOnly));
    assert_eq!(
        spec.headers,
        vec![("Authorization".to_owned(), "Bearer secret-token".to_owned())]
    );
    assert_eq!(
        (spec.heartbeat_period, spec.timeout, spec.max_count),
        (Some(60), Some(30), Some(10))
    );
    assert!(spec.delivers_bundles());
}

#[test]
fn reads_a_classic_criteria_subscription() {
    let resource = json!({
        "resourceType": "Subscription", "status": "requested", "reason": "r",
        "criteria": "Observation?code=http://loinc.org|2345-7&subject=Patient/123",
        "channel": {"type": "rest-hook", "endpoint": "http://localhost:9000/hook"}
    });
    let spec = SubscriptionSpec::from_resource(&resource).expect("valid");
    assert!(matches!(spec.kind, SubscriptionKind::Criteria { .. }));
    assert!(!spec.delivers_bundles());
    assert_eq!(spec.payload, None);
}

#[test]
fn refusals_name_the_element() {
    type Mutation = fn(&mut Value);
    let cases: Vec<(&str, Mutation, &str, IssueType)> = vec![
        (
            "wrong type",
            |s| s["resourceType"] = json!("Patient"),
            "Subscription.resourceType",
            IssueType::Invalid,
        ),
        (
            "no status",
            |s| {
                s.as_object_mut().map(|o| o.remove("status"));
            },
            "Subscription.status",
            IssueType::Required,
        ),
        (
            "no reason",
            |s| {
                s.as_object_mut().map(|o| o.remove("reason"));
            },
            "Subscription.reason",
            IssueType::Required,
        ),
        (
            "bad status",
            |s| s["status"] = json!("on"),
            "Subscription.status",
            IssueType::Invalid,
        ),
        (
            "no criteria",
            |s| {
                s.as_object_mut().map(|o| o.remove("criteria"));
            },
            "Subscription.criteria",
            IssueType::Required,
        ),
        (
            "cross-version filter ext",
            |s| {
                s["_criteria"]["extension"][0]["url"] = json!("http://hl7.org/fhir/5.0/subscriptions-backport/StructureDefinition/backport-filter-criteria")
            },
            "Subscription.criteria.extension",
            IssueType::NotSupported,
        ),
        (
            "email",
            |s| s["channel"]["type"] = json!("email"),
            "Subscription.channel.type",
            IssueType::NotSupported,
        ),
        (
            "websocket with endpoint",
            |s| s["channel"]["type"] = json!("websocket"),
            "Subscription.channel.endpoint",
            IssueType::Invalid,
        ),
        (
            "unknown channel",
            |s| s["channel"]["type"] = json!("carrier-pigeon"),
            "Subscription.channel.type",
            IssueType::NotSupported,
        ),
        (
            "custom channel",
            |s| s["channel"]["_type"] = json!({"extension": [{"url": EXT_CHANNEL_TYPE, "valueCoding": {"system": "x", "code": "y"}}]}),
            "Subscription.channel.type",
            IssueType::NotSupported,
        ),
        (
            "xml",
            |s| s["channel"]["payload"] = json!("application/fhir+xml"),
            "Subscription.channel.payload",
            IssueType::NotSupported,
        ),
        (
            "fhir r5",
            |s| s["channel"]["payload"] = json!("application/fhir+json; fhirVersion=5.0"),
            "Subscription.channel.payload",
            IssueType::NotSupported,
        ),
        (
            "no payload on topic",
            |s| {
                s["channel"].as_object_mut().map(|o| {
                    o.remove("payload");
                    o.remove("_payload")
                });
            },
            "Subscription.channel.payload",
            IssueType::Required,
        ),
        (
            "bad content",
            |s| s["channel"]["_payload"]["extension"][0]["valueCode"] = json!("everything"),
            "Subscription.channel.payload.extension",
            IssueType::NotSupported,
        ),
        (
            "unknown channel ext",
            |s| {
                s["channel"]["extension"][0]["url"] = json!(
                    "http://hapifhir.io/fhir/StructureDefinition/subscription-delivery-retry-count"
                )
            },
            "Subscription.channel.extension",
            IssueType::NotSupported,
        ),
        (
            "endpoint not a url",
            |s| s["channel"]["endpoint"] = json!("adfdf"),
            "Subscription.channel.endpoint",
            IssueType::Invalid,
        ),
        (
            "endpoint creds",
            |s| s["channel"]["endpoint"] = json!("https://u:p@example.org/"),
            "Subscription.channel.endpoint",
            IssueType::Invalid,
        ),
        (
            "no endpoint",
            |s| {
                s["channel"].as_object_mut().map(|o| o.remove("endpoint"));
            },
            "Subscription.channel.endpoint",
            IssueType::Required,
        ),
        (
            "bad header",
            |s| s["channel"]["header"] = json!(["no-colon-here"]),
            "Subscription.channel.header",
            IssueType::Invalid,
        ),
        (
            "header injection",
            |s| s["channel"]["header"] = json!(["X-A: b\r\nX-B: c"]),
            "Subscription.channel.header",
            IssueType::Invalid,
        ),
        (
            "content-type header",
            |s| s["channel"]["header"] = json!(["Content-Type: text/plain"]),
            "Subscription.channel.header",
            IssueType::Invalid,
        ),
        (
            "timeout too long",
            |s| s["channel"]["extension"][1]["valueUnsignedInt"] = json!(100000),
            "Subscription.channel.extension",
            IssueType::NotSupported,
        ),
        (
            "max count zero",
            |s| s["channel"]["extension"][2]["valuePositiveInt"] = json!(0),
            "Subscription.channel.extension",
            IssueType::Invalid,
        ),
        (
            "modifier extension",
            |s| s["modifierExtension"] = json!([{"url": "http://x", "valueBoolean": true}]),
            "Subscription",
            IssueType::NotSupported,
        ),
        (
            "bad end",
            |s| s["end"] = json!("tomorrow"),
            "Subscription.end",
            IssueType::Invalid,
        ),
        (
            "search url as topic",
            |s| s["criteria"] = json!("Observation?code=1"),
            "Subscription.criteria",
            IssueType::Invalid,
        ),
    ];
    for (name, mutate, expression, code) in cases {
        let mut resource = topic_based();
        mutate(&mut resource);
        let err = SubscriptionSpec::from_resource(&resource).expect_err(name);
        assert_eq!(err.expression, expression, "{name}: {err}");
        assert_eq!(err.code, code, "{name}: {err}");
        let outcome = err.outcome().to_json();
        assert_eq!(outcome["resourceType"], "OperationOutcome");
    }
}

#[test]
fn header_values_never_appear_in_diagnostics() {
    let mut resource = topic_based();
    resource["channel"]["header"] = json!(["Authorization Bearer-supersecret"]);
    let err = SubscriptionSpec::from_resource(&resource).expect_err("malformed header");
    assert!(!err.message.contains("supersecret"), "{}", err.message);
}

#[test]
fn accepts_fhir_version_4_and_charset() {
    let mut resource = topic_based();
    resource["channel"]["payload"] = json!("application/fhir+json; fhirVersion=4.0; charset=utf-8");
    assert!(SubscriptionSpec::from_resource(&resource).is_ok());
}

fn websocket_topic_based() -> Value {
    let mut resource = topic_based();
    let channel = &mut resource["channel"];
    channel["type"] = json!("websocket");
    channel.as_object_mut().map(|o| {
        o.remove("endpoint");
        o.remove("header")
    });
    resource
}

#[test]
fn reads_a_websocket_topic_subscription_without_endpoint() {
    let spec = SubscriptionSpec::from_resource(&websocket_topic_based()).expect("valid");
    assert_eq!(spec.channel_type, ChannelType::Websocket);
    assert_eq!(spec.endpoint, None);
    assert_eq!(spec.heartbeat_period, Some(60));
    assert_eq!(spec.content, Some(PayloadContent::IdOnly));
}

#[test]
fn reads_a_classic_websocket_subscription() {
    let resource = json!({
        "resourceType": "Subscription", "status": "requested", "reason": "r",
        "criteria": "Observation?code=1",
        "channel": {"type": "websocket"}
    });
    let spec = SubscriptionSpec::from_resource(&resource).expect("valid");
    assert_eq!(spec.channel_type, ChannelType::Websocket);
    assert!(!spec.delivers_bundles());
}

#[test]
fn websocket_refusals_name_the_element() {
    type Mutation = fn(&mut Value);
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "endpoint",
            |s| s["channel"]["endpoint"] = json!("wss://example.org/ws"),
            "Subscription.channel.endpoint",
        ),
        (
            "header",
            |s| s["channel"]["header"] = json!(["Authorization: Bearer x"]),
            "Subscription.channel.header",
        ),
        (
            "no payload",
            |s| {
                s["channel"].as_object_mut().map(|o| {
                    o.remove("payload");
                    o.remove("_payload")
                });
            },
            "Subscription.channel.payload",
        ),
        (
            "no content",
            |s| {
                s["channel"].as_object_mut().map(|o| o.remove("_payload"));
            },
            "Subscription.channel.payload.extension",
        ),
    ];
    for (name, mutate, expression) in cases {
        let mut resource = websocket_topic_based();
        mutate(&mut resource);
        let err = SubscriptionSpec::from_resource(&resource).expect_err(name);
        assert_eq!(err.expression, expression, "{name}: {err}");
    }
}

fn nats_type_extension() -> Value {
    json!({"extension": [{"url": EXT_CHANNEL_TYPE, "valueCoding": {"system": nats::CHANNEL_TYPE_SYSTEM, "code": nats::NATS_CODE}}]})
}

fn nats_topic_based() -> Value {
    let mut resource = topic_based();
    let channel = &mut resource["channel"];
    channel["type"] = json!("message");
    channel["_type"] = nats_type_extension();
    channel["endpoint"] = json!("pharmacy.orders");
    channel.as_object_mut().map(|o| o.remove("header"));
    resource
}

#[test]
fn reads_a_nats_channel_subscription() {
    let spec = SubscriptionSpec::from_resource(&nats_topic_based()).expect("valid");
    assert_eq!(spec.channel_type, ChannelType::Nats);
    assert_eq!(spec.channel_type.as_str(), "nats");
    assert_eq!(spec.endpoint.as_deref(), Some("pharmacy.orders"));
    assert!(spec.delivers_bundles());

    // As in the Backport IG's custom-channel example, `rest-hook` may carry the extension.
    let mut rest_hook_coded = nats_topic_based();
    rest_hook_coded["channel"]["type"] = json!("rest-hook");
    let spec = SubscriptionSpec::from_resource(&rest_hook_coded).expect("valid");
    assert_eq!(spec.channel_type, ChannelType::Nats);

    // A criteria-based subscription may use the channel too, with an explicit content level.
    let classic = json!({
        "resourceType": "Subscription", "status": "requested", "reason": "r",
        "criteria": "MedicationRequest?status=active",
        "channel": {
            "type": "message", "_type": nats_type_extension(),
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": EXT_PAYLOAD_CONTENT, "valueCode": "full-resource"}]}
        }
    });
    let spec = SubscriptionSpec::from_resource(&classic).expect("valid");
    assert_eq!(spec.channel_type, ChannelType::Nats);
    assert_eq!(spec.endpoint, None);
    assert_eq!(spec.content, Some(PayloadContent::FullResource));
}

#[test]
fn nats_refusals_name_the_element() {
    type Mutation = fn(&mut Value);
    let cases: Vec<(&str, Mutation, &str, IssueType)> = vec![
        (
            "wildcard subject",
            |s| s["channel"]["endpoint"] = json!("pharmacy.>"),
            "Subscription.channel.endpoint",
            IssueType::Invalid,
        ),
        (
            "system subject",
            |s| s["channel"]["endpoint"] = json!("$JS.API.STREAM.LIST"),
            "Subscription.channel.endpoint",
            IssueType::Invalid,
        ),
        (
            "empty token",
            |s| s["channel"]["endpoint"] = json!("pharmacy..orders"),
            "Subscription.channel.endpoint",
            IssueType::Invalid,
        ),
        (
            "header",
            |s| s["channel"]["header"] = json!(["X-Test: 1"]),
            "Subscription.channel.header",
            IssueType::Invalid,
        ),
        (
            "signing secret",
            |s| s["channel"]["extension"] = json!([{"url": EXT_SIGNING_SECRET, "valueString": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}]),
            "Subscription.channel.extension",
            IssueType::Invalid,
        ),
        (
            "websocket base code",
            |s| s["channel"]["type"] = json!("websocket"),
            "Subscription.channel.type",
            IssueType::Invalid,
        ),
        (
            "two channel type extensions",
            |s| {
                let ext = s["channel"]["_type"]["extension"][0].clone();
                s["channel"]["_type"]["extension"] = json!([ext.clone(), ext]);
            },
            "Subscription.channel.type",
            IssueType::Invalid,
        ),
        (
            "code without Herald's system",
            |s| s["channel"]["_type"]["extension"][0]["valueCoding"] = json!({"code": "nats"}),
            "Subscription.channel.type",
            IssueType::NotSupported,
        ),
        (
            "no valueCoding",
            |s| {
                s["channel"]["_type"]["extension"][0] =
                    json!({"url": EXT_CHANNEL_TYPE, "valueCode": "nats"})
            },
            "Subscription.channel.type",
            IssueType::Invalid,
        ),
    ];
    for (name, mutate, expression, code) in cases {
        let mut resource = nats_topic_based();
        mutate(&mut resource);
        let err = SubscriptionSpec::from_resource(&resource).expect_err(name);
        assert_eq!(err.expression, expression, "{name}: {err}");
        assert_eq!(err.code, code, "{name}: {err}");
    }

    let no_content = json!({
        "resourceType": "Subscription", "status": "requested", "reason": "r",
        "criteria": "MedicationRequest?status=active",
        "channel": {"type": "message", "_type": nats_type_extension()}
    });
    let err = SubscriptionSpec::from_resource(&no_content).expect_err("content required");
    assert_eq!(err.expression, "Subscription.channel.payload", "{err}");
    assert_eq!(err.code, IssueType::Required);
}

#[test]
fn nats_alone_is_not_an_r4_channel_code() {
    let mut resource = nats_topic_based();
    resource["channel"]["type"] = json!("nats");
    resource["channel"]
        .as_object_mut()
        .map(|o| o.remove("_type"));
    let err = SubscriptionSpec::from_resource(&resource).expect_err("R4 code");
    assert_eq!(err.expression, "Subscription.channel.type");
    assert_eq!(err.code, IssueType::NotSupported);
}
