//! Capture: turns EHR writes into change events on the bus.
//!
//! Ways in: the FHIR write facade ([`Capture::create`], [`Capture::update`],
//! [`Capture::delete`], [`Capture::bundle`] for `transaction` / `batch`) and the ingest of
//! ready-made change events ([`Capture::ingest`]) for systems that cannot speak NATS.
//! (Integration engines that can publish straight to JetStream.)
//!
//! The facade keeps the latest version of each resource so every event carries
//! `previous`. A write reserves its version by compare-and-set in storage, then publishes
//! durably; only then is it acknowledged. If the publish fails the reservation is undone
//! (the sequence moves on, so a version id is never reused) and the client gets an error:
//! nothing acknowledged is lost, and nothing is published for a refused write.
//! This crate knows nothing about HTTP or subscriptions.

mod bundle;
mod write;

pub use bundle::BundleError;
pub use write::{Capture, CaptureError, WriteOutcome};
