//! Herald's security primitives, kept free of HTTP framework and storage so
//! they can be tested (and fuzzed) in isolation.
//!
//! - [`endpoint`]: which rest-hook URLs and addresses Herald may call (SSRF
//!   defence), and a DNS resolver for the delivery client that re-applies the
//!   policy on every connection.
//! - [`auth`]: `Authorization: Bearer` parsing, JWT validation against
//!   configured keys, the resulting [`auth::Principal`], and SMART on FHIR
//!   scopes.
//!
//! This crate does not know about axum, subscriptions or storage: the API
//! crate turns [`auth::AuthError`] into 401/403 OperationOutcomes and decides
//! which [`auth::Permission`] an operation needs; the delivery crate installs
//! [`endpoint::PolicyResolver`] in its reqwest client.

pub mod auth;
pub mod endpoint;
