//! The `websocket` notification channel of the Backport IG, plus the R4 classic
//! `bind <id>` / `ping <id>` protocol for legacy clients.
//!
//! What this crate owns:
//! - `routes`: `$get-ws-binding-token` (type and instance level) and the `/ws` upgrade.
//! - `tokens`: short-lived, single-use binding tokens bound to a tenant and subscriptions.
//!   They live in this instance's memory: with several Herald instances behind a load
//!   balancer a token must be redeemed on the instance that issued it, until tokens move
//!   to the database.
//! - `protocol`: the client messages (`bind-with-token`, `unbind-from-token`, `unbind`,
//!   `bind`, in text and in Medplum's JSON form).
//! - `connection`: one task per socket — commands, handshakes, replay from the
//!   notification log, its bounded send queue, ping/pong keepalive.
//! - `hub`: the registry of bound subscriptions and the dispatcher that reads new
//!   notifications from the store once per subscription and fans the frames out.
//! - `frames`: the text frames (Backport bundles, `ping <id>`).
//!
//! Events reach a client in event-number order, at least once: a client that reconnects
//! with `bind-with-token <token> <lastEventNumber>` receives every stored event after that
//! number before any live one. A client too slow to drain its send queue is closed with
//! code 1008 and a reason, never buffered without bound.
//!
//! What it must not know about: how events are matched (the matcher persists them and
//! wakes the hub with [`WebSocketHub::notify_new_events`]), rest-hook delivery, or the
//! rest of the FHIR API.

mod config;
mod connection;
mod frames;
mod hub;
mod protocol;
mod routes;
mod tokens;

pub use config::WebSocketConfig;
pub use hub::{CloseReason, WebSocketHub};
pub use routes::{router, BindingAgent, BindingFilter, BindingTenant};
