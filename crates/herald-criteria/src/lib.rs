//! Criteria compilation and evaluation.
