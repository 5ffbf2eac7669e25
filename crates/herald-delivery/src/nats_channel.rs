//! The NATS channel: Backport notification bundles published to a NATS subject per
//! subscription, for integration engines and pharmacy systems inside the network.
//!
//! The delivery bookkeeping (claims, event-number order, `advance_delivery`, retries,
//! handshake, heartbeats) is the rest-hook worker's; this module only publishes one message.
//! A publish counts as delivered only once JetStream acknowledged it (stored), so the
//! delivery cursor never moves past a notification that could still be lost: Herald creates
//! a stream (`HERALD_NOTIFY` by default) over every notification subject, `<prefix>.>`, at
//! start. Each message carries `Nats-Msg-Id = <tenant>:<subscription>:<event number>` (a
//! bundle of several events: `<first>-<last>`), so a retry after a lost ack inside the
//! stream's duplicate window is dropped by JetStream instead of stored twice; outside it,
//! consumers deduplicate on `Herald-Event-Number`, as the Backport IG expects anyway.
//!
//! Subjects lie in the subscriber's tenant namespace only ([`herald_fhir::subscription::nats`]),
//! and this connection publishes nothing else. It is a connection of its own so that a
//! burst of notifications never holds back the change-event consumer's acks.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use herald_fhir::bundle::NotificationType;
use herald_fhir::subscription::nats::{resolve_subject, DEFAULT_SUBJECT_PREFIX};
use herald_fhir::SubscriptionSpec;

use crate::payload::{BundleLabel, OutgoingRequest};

/// Where the NATS channel publishes.
#[derive(Debug, Clone)]
pub struct NatsChannelConfig {
    pub url: String,
    /// The stream over `<subject_prefix>.>`, created if missing. Empty: the operator
    /// provides a stream covering those subjects (publishes fail until one exists).
    pub stream: String,
    /// First tokens of every notification subject (`herald.notify`).
    pub subject_prefix: String,
    /// JetStream dedup window for `Nats-Msg-Id` (used when Herald creates the stream).
    pub duplicate_window: Duration,
    /// How long the stream keeps notifications (used when Herald creates the stream).
    pub max_age: Duration,
}

impl NatsChannelConfig {
    /// Defaults for a NATS URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream: "HERALD_NOTIFY".into(),
            subject_prefix: DEFAULT_SUBJECT_PREFIX.into(),
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NatsChannelError {
    #[error("NATS channel: connecting to {url}: {message}")]
    Connect { url: String, message: String },
    #[error("NATS channel: creating stream {stream}: {message}")]
    Stream { stream: String, message: String },
}

/// Publishes notification messages with JetStream acknowledgement.
#[derive(Clone)]
pub struct NatsChannel {
    subject_prefix: String,
    context: jetstream::Context,
}

impl std::fmt::Debug for NatsChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsChannel")
            .field("subject_prefix", &self.subject_prefix)
            .finish()
    }
}

/// What JetStream said about a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Published {
    /// The message id was seen inside the duplicate window: stored before, not again.
    pub duplicate: bool,
}

impl NatsChannel {
    /// Connects and creates the notification stream if it is missing. Idempotent.
    pub async fn connect(config: NatsChannelConfig) -> Result<Self, NatsChannelError> {
        let client = async_nats::ConnectOptions::new()
            .name("herald-delivery")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(&config.url)
            .await
            .map_err(|e| NatsChannelError::Connect {
                url: config.url.clone(),
                message: e.to_string(),
            })?;
        let context = jetstream::new(client);
        if config.stream.is_empty() {
            tracing::info!(
                subjects = %format!("{}.>", config.subject_prefix),
                "NATS channel: no stream configured; an operator-managed stream must cover the notification subjects"
            );
        } else {
            context
                .get_or_create_stream(stream::Config {
                    name: config.stream.clone(),
                    subjects: vec![format!("{}.>", config.subject_prefix)],
                    retention: stream::RetentionPolicy::Limits,
                    storage: stream::StorageType::File,
                    duplicate_window: config.duplicate_window,
                    max_age: config.max_age,
                    ..Default::default()
                })
                .await
                .map_err(|e| NatsChannelError::Stream {
                    stream: config.stream.clone(),
                    message: e.to_string(),
                })?;
        }
        Ok(Self {
            subject_prefix: config.subject_prefix,
            context,
        })
    }

    pub fn subject_prefix(&self) -> &str {
        &self.subject_prefix
    }

    /// Publishes one notification bundle and waits (at most `timeout`) for JetStream's ack.
    /// Idempotent inside the duplicate window (same `Nats-Msg-Id` for the same bundle).
    pub(crate) async fn publish(
        &self,
        spec: &SubscriptionSpec,
        request: OutgoingRequest,
        timeout: Duration,
    ) -> Result<Published, String> {
        let label = request
            .label
            .as_ref()
            .ok_or("the NATS channel only carries notification bundles")?;
        let subject = resolve_subject(
            &self.subject_prefix,
            &label.subscription.tenant,
            &label.subscription.id,
            spec.endpoint.as_deref(),
        )
        .map_err(|e| e.to_string())?;
        let headers = message_headers(label, request.content_type.as_deref());
        let publish = async {
            self.context
                .publish_with_headers(subject, headers, request.body.into())
                .await
                .map_err(|e| format!("could not publish: {e}"))?
                .await
                .map_err(|e| format!("no JetStream acknowledgement: {e}"))
        };
        match tokio::time::timeout(timeout, publish).await {
            Err(_) => Err(format!(
                "no JetStream acknowledgement within {}s",
                timeout.as_secs()
            )),
            Ok(Err(e)) => Err(e),
            Ok(Ok(ack)) => Ok(Published {
                duplicate: ack.duplicate,
            }),
        }
    }
}

/// `Nats-Msg-Id`: tenant-scoped, the same for every attempt at the same bundle.
pub fn nats_msg_id(label: &BundleLabel) -> String {
    let key = &label.subscription;
    let what = match (label.notification_type, label.events) {
        (NotificationType::EventNotification, Some((first, last))) if first == last => {
            first.to_string()
        }
        (NotificationType::EventNotification, Some((first, last))) => format!("{first}-{last}"),
        (NotificationType::Handshake, _) => format!("handshake-v{}", label.version_id),
        // Heartbeats are never retried: each one is new.
        (other, _) => format!(
            "{}-{}",
            other.as_str(),
            chrono::Utc::now().timestamp_millis()
        ),
    };
    format!("{}:{}:{what}", key.tenant, key.id)
}

/// `Herald-Event-Number` for an event-notification: `7`, or `7-9` for a bundle of several.
pub fn event_number_header(label: &BundleLabel) -> Option<String> {
    match label.events {
        Some((first, last)) if first == last => Some(first.to_string()),
        Some((first, last)) => Some(format!("{first}-{last}")),
        None => None,
    }
}

fn message_headers(label: &BundleLabel, content_type: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", nats_msg_id(label).as_str());
    headers.insert(
        "Content-Type",
        content_type.unwrap_or("application/fhir+json"),
    );
    headers.insert("Herald-Subscription", label.subscription.id.as_str());
    headers.insert("Herald-Notification-Type", label.notification_type.as_str());
    if let Some(numbers) = event_number_header(label) {
        headers.insert("Herald-Event-Number", numbers.as_str());
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_store::SubscriptionKey;

    fn label(kind: NotificationType, events: Option<(i64, i64)>) -> BundleLabel {
        BundleLabel {
            subscription: SubscriptionKey::new("t1", "s1"),
            version_id: 3,
            notification_type: kind,
            events,
        }
    }

    #[test]
    fn message_ids_are_tenant_scoped_and_stable_per_bundle() {
        let one = label(NotificationType::EventNotification, Some((7, 7)));
        assert_eq!(nats_msg_id(&one), "t1:s1:7");
        assert_eq!(nats_msg_id(&one), nats_msg_id(&one));
        let several = label(NotificationType::EventNotification, Some((7, 9)));
        assert_eq!(nats_msg_id(&several), "t1:s1:7-9");
        let handshake = label(NotificationType::Handshake, None);
        assert_eq!(nats_msg_id(&handshake), "t1:s1:handshake-v3");
        let heartbeat = label(NotificationType::Heartbeat, None);
        assert!(nats_msg_id(&heartbeat).starts_with("t1:s1:heartbeat-"));
    }

    #[test]
    fn headers_name_the_subscription_type_and_event_numbers() {
        let headers = message_headers(
            &label(NotificationType::EventNotification, Some((4, 5))),
            Some("application/fhir+json; fhirVersion=4.0"),
        );
        let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(get("Nats-Msg-Id").as_deref(), Some("t1:s1:4-5"));
        assert_eq!(
            get("Content-Type").as_deref(),
            Some("application/fhir+json; fhirVersion=4.0")
        );
        assert_eq!(get("Herald-Subscription").as_deref(), Some("s1"));
        assert_eq!(
            get("Herald-Notification-Type").as_deref(),
            Some("event-notification")
        );
        assert_eq!(get("Herald-Event-Number").as_deref(), Some("4-5"));
        let handshake = message_headers(&label(NotificationType::Handshake, None), None);
        assert!(handshake.get("Herald-Event-Number").is_none());
    }
}
