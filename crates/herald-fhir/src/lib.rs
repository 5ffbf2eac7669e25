//! FHIR R4 model pieces Herald needs, worked on as JSON.
//!
//! This crate owns the shapes Herald reads and writes: the change event that travels on the
//! bus ([`ChangeEvent`]), the R4 `Subscription` as Herald understands it — classic
//! criteria-based or Backport topic-based ([`subscription::SubscriptionSpec`]) —, the
//! Backport notification bundles and status `Parameters` ([`bundle`]), and
//! `OperationOutcome` ([`outcome`]). It knows nothing about storage, buses, HTTP servers or
//! how criteria are evaluated.

pub mod bundle;
pub mod change_event;
pub mod outcome;
pub mod resource;
pub mod subscription;

pub use change_event::{Action, ChangeEvent, ChangeEventError};
pub use outcome::{IssueType, OperationOutcome};
pub use subscription::{
    ChannelType, PayloadContent, SubscriptionKind, SubscriptionSpec, SubscriptionSpecError,
    SubscriptionStatus,
};

/// Canonical base of the Backport IG's StructureDefinitions.
pub const BACKPORT_SD: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";
