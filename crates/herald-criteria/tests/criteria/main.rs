//! Table-driven tests of the public API over realistic R4 resources.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cel;
mod explain;
mod fhirpath;
mod filter_param;
mod fixtures;
mod fuzz;
mod fuzz_corpus;
mod search;
mod topic;

#[test]
fn public_types_are_send_sync_clone() {
    fn check<T: Send + Sync + Clone + std::fmt::Debug>() {}
    check::<herald_criteria::SearchQuery>();
    check::<herald_criteria::TopicDefinition>();
    check::<herald_criteria::SubscriptionFilters>();
    check::<herald_criteria::CriteriaError>();
    check::<herald_criteria::Interaction>();
    check::<herald_criteria::CelFilter>();
    let _ = herald_criteria::SubscriptionFilters::default();
}
