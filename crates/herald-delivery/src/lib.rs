//! Notification delivery: takes numbered notifications from the log and gets them to the
//! subscriber, in event-number order per subscription.
//!
//! Today this is the rest-hook channel ([`RestHookWorker`]): the Backport handshake
//! (`requested` → `active`, failure → `error`), event-notification bundles at the
//! subscription's content level with up to `maxCount` events each, heartbeats while idle,
//! and R4 classic criteria-based semantics (POST with no body, or PUT of the resource) for
//! subscriptions without `backport-payload-content`. Failures are retried on a schedule
//! with jitter; a subscription that keeps failing goes to `error` (events still counted),
//! one whose retries are exhausted or whose endpoint answers 410 goes `off`. One slow
//! endpoint holds back only its own subscription: each delivery runs in its own task,
//! bounded by a semaphore. This crate does not match events or speak the FHIR REST API.
//!
//! The NATS channel ([`nats_channel`]) shares that bookkeeping: a NATS-channel
//! subscription's bundles are published to its subject in the tenant's namespace, and
//! count as delivered once JetStream acknowledged them.
//!
//! Every channel's event bundles carry the additional context of the subscription's topic
//! (`notificationShape` includes / revIncludes), resolved in one place
//! ([`payload::additional_context`]).

pub mod access;
mod context;
pub mod nats_channel;
pub mod payload;
mod retry;
pub mod signing;
mod worker;

pub use access::AccessGuard;
pub use nats_channel::{NatsChannel, NatsChannelConfig, NatsChannelError};
pub use retry::RetrySchedule;
pub use worker::{DeliveryConfig, RestHookWorker};
