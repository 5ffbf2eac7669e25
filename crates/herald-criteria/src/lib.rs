//! Herald's criteria language: compilation and evaluation of FHIR R4 search-URL
//! criteria (`Subscription.criteria`), R4B/R5 `SubscriptionTopic` resource triggers
//! (query criteria with previous/current semantics) and subscription filters
//! (`filterBy` / backport filter criteria), FHIRPath trigger criteria (through
//! `herald-fhirpath`) and CEL filters ([`CelFilter`]), all over resources held as
//! `serde_json::Value`. A topic's `notificationShape` is validated here too and the
//! references it follows are evaluated with the same search-parameter paths
//! ([`NotificationShapes`], [`reference_values`]); the built-in topics' JSON is kept
//! here ([`BUILTIN_TOPIC_JSON`]); [`explain`] says why a resource does or does not match.
//! Search parameters come from the official R4 definitions
//! (`registry`, over `schemas/search-parameters/r4.json`), their FHIRPath
//! expressions translated into element paths (`translate`) or compiled once for the
//! FHIRPath evaluator (`plan`); number and quantity values live in `number`. The
//! crate fails closed: any part of a criteria string that is
//! not implemented is rejected at compile time with a [`CriteriaError`] naming it,
//! and evaluation never panics. It must not know about storage, message buses or
//! HTTP: callers hand it resources and get booleans back.

mod builtin;
mod cel;
mod date;
mod error;
mod explain;
mod filter;
mod filter_param;
mod keys;
mod number;
mod plan;
mod references;
mod registry;
mod search;
mod shape;
mod topic;
mod translate;
mod values;

pub use builtin::BUILTIN_TOPIC_JSON;
pub use cel::CelFilter;
pub use error::CriteriaError;
pub use explain::{explain, ClauseExplanation, ExplainRequest, Explanation, Language};
pub use filter::SubscriptionFilters;
pub use keys::{resource_index_values, EqualityKey, IndexParam};
pub use references::{referenced_resources, referencing_key, with_resolved, ResolvedReferences};
pub use search::SearchQuery;
pub use shape::{reference_values, NotificationShape, NotificationShapes, ShapeDirective};
pub use topic::{Interaction, TopicDefinition, CEL_CRITERIA_EXTENSION};
