//! Herald's HTTP surface: the FHIR R4 REST API at `/fhir` (Subscription, SubscriptionTopic,
//! `$status`, `$events`, `$explain`, `metadata`, and the write facade), the change-event ingest endpoint,
//! and `/healthz` / `/readyz`.
//!
//! Every error is an `OperationOutcome` with a precise, safe diagnostic ([`error::ApiError`]);
//! internal detail is logged once and never sent. Bad input is refused before anything is
//! stored or published. Handlers hold no locks across awaits and do no matching or delivery
//! themselves: they validate, store, announce and wake.

mod audit;
pub mod auth;
mod body;
mod capability;
pub mod error;
mod explain;
mod facade;
mod ingest;
pub mod limits;
mod operations;
mod render;
mod subscriptions;
mod topics;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use herald_bus::ChangeEventBus;
use herald_capture::Capture;
use herald_matcher::TopicCatalog;
use herald_store::Store;
use tokio::sync::Notify;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Shared state of every handler.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn ChangeEventBus>,
    pub capture: Capture,
    pub catalog: TopicCatalog,
    /// Public FHIR base URL, no trailing slash (e.g. `http://127.0.0.1:8080/fhir`).
    pub base_url: String,
    /// Tenant of requests whose token names none (and of every request in development mode).
    pub tenant: String,
    /// How requests are authenticated.
    pub auth: auth::AuthMode,
    /// Which rest-hook endpoints may be registered (and reached).
    pub endpoint_policy: Arc<herald_security::endpoint::EndpointPolicy>,
    /// Wakes the delivery worker (e.g. a new subscription needs its handshake).
    pub delivery_wake: Arc<Notify>,
    /// `embedded` or `production`, shown in `/readyz`.
    pub mode: &'static str,
    /// The NATS channel's subject prefix (`herald.notify`) in NATS mode; `None` in the
    /// embedded mode, where NATS-channel subscriptions are refused.
    pub nats_subject_prefix: Option<String>,
    /// This instance's subscription index, refreshed before a subscription change is
    /// acknowledged so the next write is matched against it.
    pub index: Arc<herald_matcher::IndexMaintainer>,
    /// The audit trail.
    pub audit: herald_audit::AuditLog,
    /// Send-time access checks; `$revoke-access` clears its cache.
    pub access_guard: herald_delivery::AccessGuard,
    pub limits: limits::Limits,
    /// Per-client request rate limit; `None` = off.
    pub rate_limit: Option<limits::RateLimit>,
}

pub type SharedState = Arc<AppState>;

/// The whole HTTP application.
pub fn router(state: SharedState) -> Router {
    // The subscriber-facing API is rate limited per client. The write facade and ingest are
    // the EHR's feed, not a subscriber's: they are never throttled here (a dropped write
    // would be lost data); the bus applies backpressure there instead.
    let managed = Router::new()
        .route("/metadata", get(capability::metadata))
        .route(
            "/Subscription",
            get(subscriptions::search).post(subscriptions::create),
        )
        .route("/Subscription/$status", get(operations::status_type))
        .route("/Subscription/$explain", post(explain::explain_match))
        .route(
            "/Subscription/{id}",
            get(subscriptions::read)
                .put(subscriptions::update)
                .delete(subscriptions::delete),
        )
        .route(
            "/Subscription/{id}/$status",
            get(operations::status_instance),
        )
        .route("/Subscription/{id}/$events", get(operations::events))
        .route("/Subscription/{id}/$resend", post(operations::resend))
        .route("/AuditEvent", get(audit::search))
        .route("/AuditEvent/{id}", get(audit::read))
        .route("/$revoke-access", post(audit::revoke_access))
        .route("/SubscriptionTopic", get(topics::list).post(topics::create))
        .route(
            "/SubscriptionTopic/{id}",
            get(topics::read).put(topics::update).delete(topics::delete),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            limits::rate_limit,
        ));
    let fhir = Router::new()
        .merge(managed)
        .route("/", post(facade::bundle))
        .route(
            "/{resource_type}",
            post(facade::create).get(facade::search_not_supported),
        )
        .route(
            "/{resource_type}/{id}",
            get(facade::read).put(facade::update).delete(facade::delete),
        )
        .fallback(error::not_found);
    Router::new()
        .nest("/fhir", fhir)
        .route("/ingest/change-events", post(ingest::change_events))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ingest::ready))
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
