//! The change-event bus: where capture puts change events and where the matcher takes them.
//!
//! One contract ([`ChangeEventBus`], [`ChangeEventConsumer`], [`BusMessage`]) and two
//! implementations:
//! - [`EmbeddedBus`]: the zero-setup default. A SQLite-backed log: `publish` returns only
//!   after the event is committed (WAL, `synchronous=FULL`), so an acknowledged write
//!   survives a crash; unacknowledged messages are redelivered after a restart.
//! - [`JetStreamBus`]: production. A JetStream stream (limits retention) with subjects
//!   `<prefix>.<tenant>.<ResourceType>`, the event id as `Nats-Msg-Id`, and one durable pull
//!   consumer shared by every Herald instance.
//!
//! Both redeliver a message until it is acked, `nak` asks for a later redelivery, and
//! `dead_letter` moves a poison message aside with its reason so the consumer keeps going.
//! The bus also carries small control notices (a subscription changed) between instances.
//! This crate knows nothing about criteria, storage of subscriptions or HTTP.

mod embedded;
mod jetstream;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use herald_fhir::ChangeEvent;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use embedded::EmbeddedBus;
pub use jetstream::{JetStreamBus, JetStreamConfig};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("embedded bus storage: {0}")]
    Embedded(#[from] sqlx::Error),
    #[error("embedded bus migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("NATS: {0}")]
    Nats(String),
    #[error("event could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

pub type BusResult<T> = Result<T, BusError>;

/// The dedup key of an event on the bus: `<tenant>:<event_id>`, so tenants that happen to
/// use the same event ids never drop each other's events.
pub fn msg_id(event: &ChangeEvent) -> String {
    format!("{}:{}", event.tenant, event.event_id)
}

/// What the bus said about a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The event id was seen before (inside the dedup window) and the event was dropped.
    pub duplicate: bool,
    /// Position in the stream / log.
    pub sequence: u64,
}

/// A small notice between Herald instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ControlNotice {
    SubscriptionChanged { tenant: String, id: String },
    TopicChanged { tenant: String, url: String },
}

#[async_trait]
pub trait ChangeEventBus: Send + Sync + 'static {
    /// Publishes durably: when this returns `Ok`, the event will be delivered even if the
    /// process dies now. Dedup by `event.event_id`.
    async fn publish(&self, event: &ChangeEvent) -> BusResult<Published>;
    /// Publishes several events durably, in order, as one unit of work where the bus allows
    /// (the embedded bus commits them in one transaction; JetStream pipelines the publishes
    /// and then awaits every ack). `Ok` means all are on the bus. On `Err` some may be:
    /// re-sending the batch is safe (dedup by event id).
    async fn publish_batch(&self, events: &[ChangeEvent]) -> BusResult<Vec<Published>> {
        let mut published = Vec::with_capacity(events.len());
        for event in events {
            published.push(self.publish(event).await?);
        }
        Ok(published)
    }
    /// Opens the (single, durable, shared) matcher consumer.
    async fn consumer(&self) -> BusResult<Box<dyn ChangeEventConsumer>>;
    /// Tells every instance (this one included) about a change.
    async fn announce(&self, notice: ControlNotice) -> BusResult<()>;
    /// Control notices from every instance.
    fn notices(&self) -> broadcast::Receiver<ControlNotice>;
    /// Liveness for `/readyz`.
    async fn ping(&self) -> BusResult<()>;
    /// A name for logs: `embedded` or `jetstream`.
    fn kind(&self) -> &'static str;
}

#[async_trait]
pub trait ChangeEventConsumer: Send {
    /// The next message, waiting up to `wait`; `Ok(None)` when none arrived in time.
    async fn next(&mut self, wait: Duration) -> BusResult<Option<BusMessage>>;

    /// Up to `max` messages in bus order: waits up to `wait` for the first, then takes only
    /// what is available at once. It does not linger for more: when the pipeline is idle a
    /// lone event goes through without delay, and under load batches fill up by themselves
    /// while the previous batch is being committed. Empty when nothing arrived in time.
    async fn next_batch(&mut self, max: usize, wait: Duration) -> BusResult<Vec<BusMessage>> {
        let Some(first) = self.next(wait).await? else {
            return Ok(Vec::new());
        };
        let mut batch = vec![first];
        while batch.len() < max {
            match self.next(Duration::ZERO).await {
                Ok(Some(message)) => batch.push(message),
                Ok(None) => break,
                Err(e) => {
                    // What was received is handed out; the error recurs on the next call.
                    tracing::debug!(error = %e, "bus receive failed while filling a batch");
                    break;
                }
            }
        }
        Ok(batch)
    }
}

/// Acks messages whose work is persisted, together: the embedded bus marks them acked in
/// one transaction; JetStream acks each (an ack is an asynchronous publish, no round trip).
/// On `Err` some may not be acked: they are redelivered, which recording tolerates.
pub async fn ack_all(messages: Vec<BusMessage>) -> BusResult<()> {
    let mut embedded = Vec::new();
    let mut first_error = None;
    for message in messages {
        match message.acker {
            Acker::Embedded(a) => embedded.push(a),
            Acker::JetStream(a) => {
                if let Err(e) = a.ack().await {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    if let Err(e) = embedded::EmbeddedAcker::ack_all(embedded).await {
        first_error.get_or_insert(e);
    }
    first_error.map_or(Ok(()), Err)
}

/// A delivered message. Exactly one of `ack`, `nak` or `dead_letter` should be called;
/// dropping it unacked leads to redelivery.
pub struct BusMessage {
    pub subject: String,
    pub payload: Bytes,
    /// How many times this message has been delivered (1 = first time), where known.
    pub delivery_count: u64,
    acker: Acker,
}

impl std::fmt::Debug for BusMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusMessage")
            .field("subject", &self.subject)
            .field("bytes", &self.payload.len())
            .field("delivery_count", &self.delivery_count)
            .finish()
    }
}

enum Acker {
    Embedded(embedded::EmbeddedAcker),
    JetStream(Box<jetstream::JetStreamAcker>),
}

impl BusMessage {
    /// The work this message caused is persisted; do not deliver it again.
    pub async fn ack(self) -> BusResult<()> {
        match self.acker {
            Acker::Embedded(a) => a.ack().await,
            Acker::JetStream(a) => a.ack().await,
        }
    }

    /// Could not be processed now (e.g. the database is down); redeliver after `delay`.
    pub async fn nak(self, delay: Duration) -> BusResult<()> {
        match self.acker {
            Acker::Embedded(a) => a.nak(delay).await,
            Acker::JetStream(a) => a.nak(delay).await,
        }
    }

    /// Can never be processed: move it to the dead-letter place with `reason`.
    pub async fn dead_letter(self, reason: &str) -> BusResult<()> {
        let subject = self.subject.clone();
        let payload = self.payload.clone();
        match self.acker {
            Acker::Embedded(a) => a.dead_letter(&subject, &payload, reason).await,
            Acker::JetStream(a) => a.dead_letter(&subject, &payload, reason).await,
        }
    }
}
