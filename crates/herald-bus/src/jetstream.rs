//! The production bus on NATS JetStream (nats-server 2.9 features only).
//!
//! Stream `<stream>`: subjects `<prefix>.>` (`<prefix>.<tenant>.<ResourceType>`), limits
//! retention, file storage, duplicate window for `Nats-Msg-Id`. One durable pull consumer,
//! explicit acks, shared by all instances. Poison messages are published to
//! `<dead_letter_subject>` (captured by stream `<stream>_DEADLETTER`) with the reason in the
//! `Herald-Dead-Letter-Reason` header, then acked. No consumer or subject is created per
//! FHIR subscription (servers fail at tens of thousands of consumers).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream, AckKind};
use async_nats::HeaderMap;
use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use herald_fhir::ChangeEvent;
use tokio::sync::broadcast;

use crate::{
    msg_id, Acker, BusError, BusMessage, BusResult, ChangeEventBus, ChangeEventConsumer,
    ControlNotice, Published,
};

/// Where and how Herald uses JetStream.
#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    pub url: String,
    pub stream: String,
    pub subject_prefix: String,
    pub consumer: String,
    pub dead_letter_subject: String,
    pub control_subject: String,
    pub duplicate_window: Duration,
    pub max_age: Duration,
}

impl JetStreamConfig {
    /// Defaults for a NATS URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream: "HERALD_CHANGES".into(),
            subject_prefix: "fhir.changes".into(),
            consumer: "herald-matcher".into(),
            dead_letter_subject: "herald.deadletter.changes".into(),
            control_subject: "herald.control".into(),
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

fn nats<E: std::fmt::Display>(context: &str) -> impl FnOnce(E) -> BusError + '_ {
    move |e| BusError::Nats(format!("{context}: {e}"))
}

#[derive(Clone)]
pub struct JetStreamBus {
    config: JetStreamConfig,
    client: async_nats::Client,
    context: jetstream::Context,
    notices: broadcast::Sender<ControlNotice>,
}

impl std::fmt::Debug for JetStreamBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamBus")
            .field("stream", &self.config.stream)
            .finish()
    }
}

impl JetStreamBus {
    /// Creates (or finds) the durable consumer and opens a message stream on it.
    async fn open_messages(&self) -> BusResult<consumer::pull::Stream> {
        let stream = self
            .context
            .get_stream(&self.config.stream)
            .await
            .map_err(nats("get stream"))?;
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                &self.config.consumer,
                consumer::pull::Config {
                    durable_name: Some(self.config.consumer.clone()),
                    filter_subject: format!("{}.>", self.config.subject_prefix),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    max_deliver: -1,
                    max_ack_pending: 10_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(nats("create consumer"))?;
        consumer
            .stream()
            .max_messages_per_batch(256)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(10))
            .messages()
            .await
            .map_err(nats("consume"))
    }

    /// Connects, creates the streams if missing and starts relaying control notices.
    pub async fn connect(config: JetStreamConfig) -> BusResult<Self> {
        let client = async_nats::ConnectOptions::new()
            .name("herald")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(&config.url)
            .await
            .map_err(nats("connect"))?;
        // A publish waits at most this long for its ack: a write facing a NATS outage fails
        // fast (the client retries) instead of hanging.
        let context = jetstream::context::ContextBuilder::new()
            .timeout(Duration::from_secs(5))
            .build(client.clone());
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
            .map_err(nats("create change stream"))?;
        context
            .get_or_create_stream(stream::Config {
                name: format!("{}_DEADLETTER", config.stream),
                subjects: vec![config.dead_letter_subject.clone()],
                retention: stream::RetentionPolicy::Limits,
                storage: stream::StorageType::File,
                max_age: config.max_age,
                ..Default::default()
            })
            .await
            .map_err(nats("create dead-letter stream"))?;

        let (notices, _) = broadcast::channel(1024);
        let mut control = client
            .subscribe(config.control_subject.clone())
            .await
            .map_err(nats("subscribe control"))?;
        let relay = notices.clone();
        // Ends when the client is dropped (the subscription stream closes).
        tokio::spawn(async move {
            while let Some(message) = control.next().await {
                match serde_json::from_slice::<ControlNotice>(&message.payload) {
                    Ok(notice) => {
                        let _ = relay.send(notice);
                    }
                    Err(e) => tracing::warn!(error = %e, "ignoring malformed control notice"),
                }
            }
        });
        Ok(Self {
            config,
            client,
            context,
            notices,
        })
    }

    pub fn config(&self) -> &JetStreamConfig {
        &self.config
    }
}

#[async_trait]
impl ChangeEventBus for JetStreamBus {
    async fn publish(&self, event: &ChangeEvent) -> BusResult<Published> {
        let payload = serde_json::to_vec(event)?;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id(event).as_str());
        let ack = self
            .context
            .publish_with_headers(
                event.subject(&self.config.subject_prefix),
                headers,
                payload.into(),
            )
            .await
            .map_err(nats("publish"))?
            .await
            .map_err(nats("publish ack"))?;
        Ok(Published {
            duplicate: ack.duplicate,
            sequence: ack.sequence,
        })
    }

    /// Pipelined: every publish is sent before the first ack is awaited, so a batch costs
    /// about one round trip instead of one per event.
    async fn publish_batch(&self, events: &[ChangeEvent]) -> BusResult<Vec<Published>> {
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            let payload = serde_json::to_vec(event)?;
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", msg_id(event).as_str());
            pending.push(
                self.context
                    .publish_with_headers(
                        event.subject(&self.config.subject_prefix),
                        headers,
                        payload.into(),
                    )
                    .await
                    .map_err(nats("publish"))?,
            );
        }
        let mut published = Vec::with_capacity(pending.len());
        for ack in pending {
            let ack = ack.await.map_err(nats("publish ack"))?;
            published.push(Published {
                duplicate: ack.duplicate,
                sequence: ack.sequence,
            });
        }
        Ok(published)
    }

    async fn consumer(&self) -> BusResult<Box<dyn ChangeEventConsumer>> {
        let messages = self.open_messages().await?;
        Ok(Box::new(JetStreamConsumer {
            bus: self.clone(),
            messages: Some(messages),
        }))
    }

    async fn announce(&self, notice: ControlNotice) -> BusResult<()> {
        let payload = serde_json::to_vec(&notice)?;
        self.client
            .publish(self.config.control_subject.clone(), payload.into())
            .await
            .map_err(nats("announce"))?;
        self.client.flush().await.map_err(nats("flush"))?;
        Ok(())
    }

    fn notices(&self) -> broadcast::Receiver<ControlNotice> {
        self.notices.subscribe()
    }

    async fn ping(&self) -> BusResult<()> {
        self.client.flush().await.map_err(nats("ping"))?;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "jetstream"
    }
}

struct JetStreamConsumer {
    bus: JetStreamBus,
    /// `None` after an error: reopened on the next call (the durable consumer keeps its
    /// place, so nothing is skipped; unacked messages are redelivered).
    messages: Option<consumer::pull::Stream>,
}

#[async_trait]
impl ChangeEventConsumer for JetStreamConsumer {
    async fn next(&mut self, wait: Duration) -> BusResult<Option<BusMessage>> {
        if self.messages.is_none() {
            self.messages = Some(self.bus.open_messages().await?);
        }
        let Some(messages) = self.messages.as_mut() else {
            return Ok(None);
        };
        let next = if wait.is_zero() {
            // Only what has arrived. Not `timeout(ZERO, ..)`: tokio's timer fires on its
            // next millisecond tick, so a zero timeout still waits up to about 1 ms, and
            // `next_batch` ends every batch with one (measured: 1.1 ms per batch).
            messages.next().now_or_never()
        } else {
            tokio::time::timeout(wait, messages.next()).await.ok()
        };
        let next = match next {
            None => return Ok(None),
            Some(None) => {
                self.messages = None;
                return Err(BusError::Nats("consumer stream ended; reopening".into()));
            }
            Some(Some(Err(e))) => {
                // Errors such as a missed idle heartbeat are not terminal: the stream re-issues
                // its pull requests after a reconnect. Dropping it instead would leave its last
                // pull request on the server, handing messages to an inbox no one reads (they
                // would return only after ack_wait).
                return Err(BusError::Nats(format!("receive: {e}")));
            }
            Some(Some(Ok(message))) => message,
        };
        let delivery_count = next.info().map(|i| i.delivered as u64).unwrap_or(1);
        Ok(Some(BusMessage {
            subject: next.subject.to_string(),
            payload: next.payload.clone(),
            delivery_count,
            acker: Acker::JetStream(Box::new(JetStreamAcker {
                bus: self.bus.clone(),
                message: next,
            })),
        }))
    }
}

pub(crate) struct JetStreamAcker {
    bus: JetStreamBus,
    message: jetstream::Message,
}

impl JetStreamAcker {
    pub(crate) async fn ack(self) -> BusResult<()> {
        self.message
            .ack()
            .await
            .map_err(|e| BusError::Nats(format!("ack: {e}")))
    }

    pub(crate) async fn nak(self, delay: Duration) -> BusResult<()> {
        self.message
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(|e| BusError::Nats(format!("nak: {e}")))
    }

    pub(crate) async fn dead_letter(
        self,
        subject: &str,
        payload: &Bytes,
        reason: &str,
    ) -> BusResult<()> {
        let mut headers = HeaderMap::new();
        // Header values must be one line.
        let reason_line: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(1024)
            .collect();
        headers.insert("Herald-Dead-Letter-Reason", reason_line.as_str());
        headers.insert("Herald-Original-Subject", subject);
        if let Ok(info) = self.message.info() {
            headers.insert(
                "Herald-Original-Sequence",
                info.stream_sequence.to_string().as_str(),
            );
        }
        self.bus
            .context
            .publish_with_headers(
                self.bus.config.dead_letter_subject.clone(),
                headers,
                payload.clone(),
            )
            .await
            .map_err(|e| BusError::Nats(format!("dead-letter publish: {e}")))?
            .await
            .map_err(|e| BusError::Nats(format!("dead-letter ack: {e}")))?;
        self.message
            .ack()
            .await
            .map_err(|e| BusError::Nats(format!("ack: {e}")))
    }
}
