//! Limits that keep one client from exhausting Herald for everyone: per-client request
//! rates (the `governor` crate, GCRA; 429 with `Retry-After`), and the size of what a
//! subscription may ask for (subscriptions per client, filters per subscription, length of
//! each criteria expression). Body size is limited at the router.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use herald_fhir::{IssueType, SubscriptionKind, SubscriptionSpec};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::SharedState;

/// What one subscription, and one client, may ask for.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Subscriptions (any status) one OAuth client may own in a tenant.
    pub max_subscriptions_per_client: u32,
    /// Filters (`filterBy` / criteria parameters) in one subscription.
    pub max_filters_per_subscription: usize,
    /// Bytes in one criteria string, filter, or topic expression.
    pub max_expression_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_subscriptions_per_client: 1_000,
            max_filters_per_subscription: 32,
            max_expression_bytes: 4_096,
        }
    }
}

fn too_much(diagnostics: String) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        IssueType::TooLong,
        diagnostics,
    )
}

/// Checks the size of what a subscription asks for, before its criteria are compiled.
pub(crate) fn check_shape(limits: &Limits, spec: &SubscriptionSpec) -> ApiResult<()> {
    let (expressions, filters): (Vec<&str>, usize) = match &spec.kind {
        SubscriptionKind::Criteria { criteria } => (
            vec![criteria.as_str()],
            criteria
                .split_once('?')
                .map_or(0, |(_, q)| q.split('&').filter(|p| !p.is_empty()).count()),
        ),
        SubscriptionKind::Topic { filters, .. } => {
            (filters.iter().map(String::as_str).collect(), filters.len())
        }
    };
    let mut expressions = expressions;
    expressions.extend(spec.cel_filter.as_deref());
    if let Some(long) = expressions
        .iter()
        .find(|e| e.len() > limits.max_expression_bytes)
    {
        return Err(too_much(format!(
            "a criteria or filter of {} bytes exceeds the limit of {} bytes",
            long.len(),
            limits.max_expression_bytes
        )));
    }
    if filters > limits.max_filters_per_subscription {
        return Err(too_much(format!(
            "{filters} filters exceed the limit of {} per subscription",
            limits.max_filters_per_subscription
        )));
    }
    Ok(())
}

/// Checks the client's subscription count before a new one is stored. `previous_owner` is
/// the client owning the subscription being replaced (it does not count twice).
pub(crate) async fn check_client_quota(
    state: &SharedState,
    caller: &Caller,
    previous_owner: Option<&str>,
) -> ApiResult<()> {
    let limits = &state.limits;
    let client = caller.client_id();
    if previous_owner != Some(client) {
        let owned = state
            .store
            .count_subscriptions_by_owner(&caller.tenant, client)
            .await?;
        if owned >= i64::from(limits.max_subscriptions_per_client) {
            return Err(too_much(format!(
                "client '{client}' already has {owned} subscriptions, the limit is {}",
                limits.max_subscriptions_per_client
            )));
        }
    }
    Ok(())
}

/// Checks every string inside a topic's `resourceTrigger`s (query criteria, FHIRPath, CEL)
/// against the expression limit.
pub(crate) fn check_topic(limits: &Limits, topic: &serde_json::Value) -> ApiResult<()> {
    fn longest(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::String(s) => s.len(),
            serde_json::Value::Array(a) => a.iter().map(longest).max().unwrap_or(0),
            serde_json::Value::Object(o) => o.values().map(longest).max().unwrap_or(0),
            _ => 0,
        }
    }
    let n = topic.get("resourceTrigger").map_or(0, longest);
    if n > limits.max_expression_bytes {
        return Err(too_much(format!(
            "SubscriptionTopic.resourceTrigger: an expression of {n} bytes exceeds the limit of {} bytes",
            limits.max_expression_bytes
        )));
    }
    Ok(())
}

/// Per-client request rate limiting.
pub struct RateLimit {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit").finish_non_exhaustive()
    }
}

/// Clients remembered before idle ones are forgotten.
const MAX_TRACKED_CLIENTS: usize = 100_000;

impl RateLimit {
    /// `None` when `per_second` is 0 (limiting off).
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        Some(Self {
            limiter: RateLimiter::dashmap(Quota::per_second(rate).allow_burst(burst)),
            clock: DefaultClock::default(),
        })
    }

    /// `Err(wait)` when `key` is over its quota.
    fn check(&self, key: &str) -> Result<(), Duration> {
        if self.limiter.len() > MAX_TRACKED_CLIENTS {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// Middleware: authenticates once (the handler reuses the [`Caller`]), then charges the
/// request to its client — or, without valid credentials, to its peer address — and answers
/// 429 with `Retry-After` when over quota.
pub async fn rate_limit(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(limit) = &state.rate_limit else {
        return next.run(request).await;
    };
    let (mut parts, body) = request.into_parts();
    let has_credentials = parts.headers.contains_key(header::AUTHORIZATION)
        || matches!(state.auth, crate::auth::AuthMode::Development);
    let caller = if has_credentials {
        Caller::from_request_parts(&mut parts, &state).await.ok()
    } else {
        None
    };
    let key = match &caller {
        Some(c) => format!("client:{}:{}", c.tenant, c.client_id()),
        None => match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(addr)) => format!("peer:{}", addr.ip()),
            None => "peer:unknown".to_owned(),
        },
    };
    if let Some(caller) = caller {
        parts.extensions.insert(caller);
    }
    if let Err(wait) = limit.check(&key) {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            IssueType::Throttled,
            format!("rate limit exceeded; retry in {} s", seconds.max(1)),
        )
        .into_response();
        if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    next.run(Request::from_parts(parts, body)).await
}
