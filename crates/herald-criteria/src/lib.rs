//! Herald's criteria language: compilation and evaluation of FHIR R4 search-URL
//! criteria (`Subscription.criteria`), R4B/R5 `SubscriptionTopic` resource triggers
//! (query criteria with previous/current semantics) and subscription filters
//! (`filterBy` / backport filter criteria), FHIRPath trigger criteria (through
//! `herald-fhirpath`) and CEL filters ([`CelFilter`]), all over resources held as
//! `serde_json::Value`; [`explain`] says why a resource does or does not match. Search parameters come from the official R4 definitions
//! (`registry`, over `schemas/search-parameters/r4.json`), their FHIRPath
//! expressions translated into element paths (`translate`) or compiled once for the
//! FHIRPath evaluator (`plan`); number and quantity values live in `number`. The
//! crate fails closed: any part of a criteria string that is
//! not implemented is rejected at compile time with a [`CriteriaError`] naming it,
//! and evaluation never panics. It must not know about storage, message buses or
//! HTTP: callers hand it resources and get booleans back.

mod cel;
mod date;
mod error;
mod explain;
mod filter;
mod filter_param;
mod keys;
mod number;
mod plan;
mod registry;
mod search;
mod topic;
mod translate;
mod values;

pub use cel::CelFilter;
pub use error::CriteriaError;
pub use explain::{explain, ClauseExplanation, ExplainRequest, Explanation, Language};
pub use filter::SubscriptionFilters;
pub use keys::{resource_index_values, EqualityKey, IndexParam};
pub use search::SearchQuery;
pub use topic::{Interaction, TopicDefinition, CEL_CRITERIA_EXTENSION};
