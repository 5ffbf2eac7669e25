//! Table-driven tests of the public API over realistic R4 resources.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fixtures;
mod fuzz;
mod search;
mod topic;
