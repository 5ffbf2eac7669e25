//! The rest-hook worker: finds subscriptions with work due and delivers, one task per
//! subscription at a time, bounded by a semaphore. NATS-channel subscriptions go through
//! the same bookkeeping; only the last step, `send`, publishes to NATS
//! instead of making an HTTP request.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use herald_fhir::bundle::NotificationType;
use herald_fhir::{SubscriptionSpec, SubscriptionStatus};
use herald_store::{
    ClaimedDelivery, DeliveryFailure, DeliveryState, NotificationRecord, Store, StoreError,
    SubscriptionKey, SubscriptionRecord,
};
use tokio::sync::{mpsc, Notify, Semaphore, TryAcquireError};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use herald_audit::{AuditEntry, AuditKind, AuditOutcome};

use crate::access::{permits, AccessGuard};
use crate::nats_channel::NatsChannel;
use crate::payload::{
    bundle_request, bundle_request_with_context, classic_request, ContextPlan, ContextScope,
    OutgoingRequest,
};
use crate::retry::RetrySchedule;

/// Settings for rest-hook delivery.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// FHIR base URL used in notification bundles.
    pub base_url: String,
    pub retry_schedule: RetrySchedule,
    /// Per-attempt timeout when the subscription sets none.
    pub default_timeout: Duration,
    /// Deliveries in flight at once, across all subscriptions.
    pub max_concurrency: usize,
    /// Consecutive failures after which the status becomes `error`.
    pub error_after_failures: u32,
    /// How often to look for due work when nothing wakes the worker.
    pub poll_interval: Duration,
    /// Events per bundle when the subscription sets no `maxCount` (the Backport IG leaves
    /// the number to the server then). A bundle never waits to fill: a lone event goes out
    /// alone, and only a backlog (a burst, a recovering endpoint) is bundled. A subscriber
    /// that wants one event per request sets `maxCount` 1.
    pub default_max_count: u32,
    /// Which endpoints may be reached; checked again on every connection (DNS rebinding).
    pub endpoint_policy: std::sync::Arc<herald_security::endpoint::EndpointPolicy>,
    /// How long a claimed subscription stays claimed if its deliverer dies; longer than the
    /// longest attempt (timeouts are capped at 120 s).
    pub claim_lease: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8080/fhir".into(),
            retry_schedule: RetrySchedule::default(),
            default_timeout: Duration::from_secs(10),
            max_concurrency: 64,
            error_after_failures: 3,
            poll_interval: Duration::from_millis(500),
            default_max_count: 20,
            claim_lease: Duration::from_secs(150),
            endpoint_policy: std::sync::Arc::new(
                herald_security::endpoint::EndpointPolicy::production(),
            ),
        }
    }
}

#[derive(Clone)]
pub struct RestHookWorker {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    http: reqwest::Client,
    config: DeliveryConfig,
    wake: Arc<Notify>,
    in_flight: Mutex<HashSet<SubscriptionKey>>,
    guard: AccessGuard,
    /// Set in NATS mode; without it NATS-channel deliveries fail (none should exist: the
    /// API refuses them in the embedded mode).
    nats_channel: OnceLock<NatsChannel>,
}

/// How far a page got: the last event delivered or withheld, and the failed attempt that
/// stopped it, if one did.
struct PageSent {
    through: i64,
    failure: Option<Attempt>,
}

/// How an attempt went.
enum Attempt {
    Delivered,
    Failed {
        error: String,
        retry_after: Option<Duration>,
        gone: bool,
    },
}

/// How long a handed-over claim's record is used as it came; older, it is read again.
const HANDED_OVER_FRESH_MS: i64 = 100;

/// What woke the worker's loop.
enum Next {
    Claim,
    /// A handed-over claim; `None` once the queue is closed.
    HandedOver(Option<Box<ClaimedDelivery>>),
}

/// The next handed-over claim; never resolves without a queue.
async fn next_handed_over(
    queue: &mut Option<mpsc::Receiver<ClaimedDelivery>>,
) -> Option<ClaimedDelivery> {
    match queue {
        Some(queue) => queue.recv().await,
        None => std::future::pending().await,
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl RestHookWorker {
    pub fn new(
        store: Arc<dyn Store>,
        config: DeliveryConfig,
        wake: Arc<Notify>,
        guard: AccessGuard,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            // 3xx is a failure: never follow a redirect to somewhere the subscriber did not name.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(32)
            .connect_timeout(Duration::from_secs(5))
            // Every connection resolves through the endpoint policy; no proxy may hide the target.
            .dns_resolver(Arc::new(herald_security::endpoint::PolicyResolver::new(
                Arc::clone(&config.endpoint_policy),
            )))
            .no_proxy()
            .build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                http,
                config,
                wake,
                in_flight: Mutex::new(HashSet::new()),
                guard,
                nats_channel: OnceLock::new(),
            }),
        })
    }

    /// Delivers NATS-channel subscriptions through `channel` too.
    pub fn with_nats_channel(self, channel: NatsChannel) -> Self {
        if self.inner.nats_channel.set(channel).is_err() {
            tracing::warn!("NATS channel already set; keeping the first");
        }
        self
    }

    /// Delivers until cancelled, then waits for attempts in flight to finish.
    pub async fn run(self, shutdown: CancellationToken) {
        self.run_with_handoff(shutdown, None).await;
    }

    /// [`run`](Self::run), also delivering what the matcher claimed and handed over
    /// (`herald_matcher::DeliveryHandoff`): such a subscription starts at once with the
    /// notifications that came with it, without a claim or a read of its log. Claims
    /// still queued at shutdown are released.
    pub async fn run_with_handoff(
        self,
        shutdown: CancellationToken,
        mut handed_over: Option<mpsc::Receiver<ClaimedDelivery>>,
    ) {
        let permits = Arc::new(Semaphore::new(self.inner.config.max_concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let mut claim = true;
        loop {
            while let Some(done) = tasks.try_join_next() {
                if let Err(e) = done {
                    tracing::error!(error = %e, "delivery task failed");
                }
            }
            if claim && !self.claim_and_dispatch(&permits, &mut tasks).await {
                break;
            }
            let next = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.inner.wake.notified() => Next::Claim,
                _ = tokio::time::sleep(self.inner.config.poll_interval) => Next::Claim,
                delivery = next_handed_over(&mut handed_over) => Next::HandedOver(delivery.map(Box::new)),
            };
            claim = match next {
                Next::Claim => true,
                Next::HandedOver(Some(delivery)) => {
                    let ClaimedDelivery {
                        record,
                        notifications,
                        claimed_at_ms,
                    } = *delivery;
                    // Normally taken up within a millisecond or two; one that queued behind
                    // a busy loop is read again before it is acted on.
                    let stale = now_ms().saturating_sub(claimed_at_ms) > HANDED_OVER_FRESH_MS;
                    if self
                        .dispatch(record, notifications, stale, &permits, &mut tasks)
                        .await
                        .is_none()
                    {
                        break;
                    }
                    false
                }
                Next::HandedOver(None) => {
                    handed_over = None;
                    false
                }
            };
        }
        if let Some(mut queue) = handed_over {
            queue.close();
            while let Ok(delivery) = queue.try_recv() {
                if let Err(e) = self.inner.store.release_claim(&delivery.record.key).await {
                    tracing::warn!(id = %delivery.record.key.id, error = %e, "could not release a handed-over claim; it runs out with its lease");
                }
            }
        }
        // Drain: attempts in flight finish (each is bounded by its timeout).
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, "delivery task failed");
            }
        }
    }

    /// Claims what is due and starts delivering it. `false` when the worker is stopping.
    async fn claim_and_dispatch(&self, permits: &Arc<Semaphore>, tasks: &mut JoinSet<()>) -> bool {
        let now = now_ms();
        let lease_until = now + self.inner.config.claim_lease.as_millis() as i64;
        match self.inner.store.claim_due(now, lease_until, 512).await {
            Ok(due) => {
                if !due.is_empty() {
                    tracing::debug!(claimed = due.len(), "claimed subscriptions with due work");
                }
                // A record is as fresh as its claim until dispatching waits for a permit;
                // from then on every record of this claim is re-read.
                let mut waited = false;
                for record in due {
                    match self
                        .dispatch(record, Vec::new(), waited, permits, tasks)
                        .await
                    {
                        Some(w) => waited = w,
                        None => return false,
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not claim due deliveries"),
        }
        true
    }

    /// Starts a task delivering one claimed subscription (`prefetched`: notifications that
    /// came with a handed-over claim), one task per subscription at a time, within the
    /// concurrency limit. Returns whether its record had to wait for a permit (and will be
    /// re-read; `stale` carries that over from earlier records of the same claim), or
    /// `None` when the worker is stopping.
    async fn dispatch(
        &self,
        record: SubscriptionRecord,
        prefetched: Vec<NotificationRecord>,
        stale: bool,
        permits: &Arc<Semaphore>,
        tasks: &mut JoinSet<()>,
    ) -> Option<bool> {
        let key = record.key.clone();
        let claimed = self
            .inner
            .in_flight
            .lock()
            .map(|mut s| s.insert(key.clone()))
            .unwrap_or(false);
        if !claimed {
            // Claimed in storage just as this instance's previous task for it wrote its
            // outcome and before it left the in-flight set: that task is done with storage,
            // so hand the claim back rather than leave the subscription leased with no one
            // delivering it.
            if let Err(e) = self.inner.store.release_claim(&key).await {
                tracing::warn!(id = %key.id, error = %e, "could not release a duplicate claim");
            }
            // That task's wake claims it again.
            return Some(stale);
        }
        let mut waited = stale;
        let permit = match Arc::clone(permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => {
                let Ok(permit) = Arc::clone(permits).acquire_owned().await else {
                    return None;
                };
                waited = true;
                permit
            }
            Err(TryAcquireError::Closed) => return None,
        };
        let worker = self.clone();
        tasks.spawn(async move {
            worker.deliver(record, waited, prefetched).await;
            if let Ok(mut set) = worker.inner.in_flight.lock() {
                set.remove(&key);
            }
            drop(permit);
            // More may be due for this subscription right away.
            worker.inner.wake.notify_one();
        });
        Some(waited)
    }

    /// Delivers whatever is due for one subscription. `listed` is the row as the claim
    /// returned it, current at that instant: the claim itself is the compare-and-set that
    /// only succeeds once an earlier claimer has written its last outcome. If the worker
    /// then had to wait (`stale`: for a permit, or a handed-over claim in the queue), the
    /// row is read again: meanwhile a client may have changed it, and acting on the old
    /// row could resend. If the claim is no longer this one (a client's update released
    /// it, or its lease ran out and another instance claimed), nothing is done: the
    /// subscription is due again and `claim_due` takes it.
    async fn deliver(
        &self,
        listed: SubscriptionRecord,
        stale: bool,
        prefetched: Vec<NotificationRecord>,
    ) {
        let record = if stale {
            match self
                .inner
                .store
                .get_subscription(&listed.key.tenant, &listed.key.id)
                .await
            {
                Ok(Some(record)) if record.next_attempt_at == listed.next_attempt_at => record,
                Ok(Some(_)) => {
                    tracing::debug!(id = %listed.key.id, "claim gone while waiting; leaving it to the next claim");
                    return;
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(id = %listed.key.id, error = %e, "could not re-read subscription");
                    return;
                }
            }
        } else {
            listed
        };
        let spec = match SubscriptionSpec::from_resource(&record.resource) {
            Ok(spec) => spec,
            Err(e) => {
                tracing::error!(id = %record.key.id, error = %e, "stored subscription unreadable; turning it off");
                self.audit_status(&record, "off: stored subscription unreadable")
                    .await;
                let _ = self
                    .inner
                    .store
                    .set_status(
                        &record.key,
                        SubscriptionStatus::Off,
                        Some("stored subscription unreadable"),
                    )
                    .await;
                return;
            }
        };
        if record.status.counts_events() {
            match self.inner.guard.revocation(&record).await {
                Ok(None) => {}
                Ok(Some(reason)) => {
                    let stopped = self.inner.guard.stop(&record, &reason).await;
                    let released = self.inner.store.release_claim(&record.key).await;
                    if let Err(e) = stopped.and(released) {
                        tracing::warn!(id = %record.key.id, error = %e, "could not turn off a revoked subscription; will retry");
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(id = %record.key.id, error = %e, "could not check the owner's access; will retry");
                    let _ = self.inner.store.release_claim(&record.key).await;
                    return;
                }
            }
        }
        let now = now_ms();
        let heartbeat_due = record.heartbeat_period.is_some_and(|period| {
            record.last_sent_at.unwrap_or(record.created_at) + period * 1000 <= now
        });
        let result = match (record.status, record.delivery_state) {
            (SubscriptionStatus::Requested, DeliveryState::Handshake) => {
                self.handshake(&record, &spec).await
            }
            (SubscriptionStatus::Off | SubscriptionStatus::EnteredInError, _)
            | (_, DeliveryState::Handshake) => self.inner.store.release_claim(&record.key).await,
            _ if record.events_since_start > record.delivered_through => {
                self.deliver_events(&record, &spec, prefetched).await
            }
            _ if heartbeat_due => self.heartbeat(&record, &spec).await,
            _ => self.inner.store.release_claim(&record.key).await,
        };
        if let Err(e) = result {
            tracing::warn!(id = %record.key.id, error = %e, "delivery bookkeeping failed; will retry");
        }
    }

    async fn handshake(
        &self,
        record: &SubscriptionRecord,
        spec: &SubscriptionSpec,
    ) -> Result<(), StoreError> {
        let store = &self.inner.store;
        if !spec.delivers_bundles() {
            // R4 classic rest-hook has no handshake: the subscription is active at once.
            self.audit_status(record, "active: R4 classic rest-hook (no handshake)")
                .await;
            return store
                .handshake_result(&record.key, record.version_id, Ok(()), now_ms())
                .await;
        }
        let request = bundle_request(
            &self.inner.config.base_url,
            record,
            spec,
            NotificationType::Handshake,
            &[],
        );
        let attempt = self.send(spec, request).await;
        self.audit_attempt(record, "handshake", &attempt).await;
        match attempt {
            Attempt::Delivered => {
                tracing::info!(id = %record.key.id, "handshake succeeded; subscription active");
                self.audit_status(record, "active: handshake succeeded")
                    .await;
                store
                    .handshake_result(&record.key, record.version_id, Ok(()), now_ms())
                    .await
            }
            Attempt::Failed { error, .. } => {
                tracing::warn!(id = %record.key.id, %error, "handshake failed; subscription in error");
                let message = format!("handshake failed: {error}");
                self.audit_status(record, &format!("error: {message}"))
                    .await;
                store
                    .handshake_result(&record.key, record.version_id, Err(&message), now_ms())
                    .await
            }
        }
    }

    /// Delivers the subscription's backlog in order while it holds the claim, then hands
    /// the claim back (other subscriptions get their turn; the rest follows in the next
    /// claim). It reads a page of notifications at a time, sends it as requests of at most
    /// `maxCount` events, one after another, and records progress once per page with the
    /// `advance_delivery` compare-and-set before reading the next page (`finish_delivery`,
    /// which also ends the claim, after the last).
    ///
    /// Recording progress per page instead of per request saves a durable commit per
    /// request; the price is that after a crash up to a page of notifications is sent
    /// again, which at-least-once delivery allows (receivers see the repeated event
    /// numbers). A failure records the progress made before it first.
    async fn deliver_events(
        &self,
        record: &SubscriptionRecord,
        spec: &SubscriptionSpec,
        prefetched: Vec<NotificationRecord>,
    ) -> Result<(), StoreError> {
        const MAX_PAGES: usize = 1_000;
        const MAX_HOLD: Duration = Duration::from_secs(5);
        /// Notifications read (and progress recorded) at a time, at least one request's worth.
        const PAGE_EVENTS: u32 = 64;
        let store = &self.inner.store;
        let batch = self.events_per_request(spec);
        let page_size = i64::from(PAGE_EVENTS.max(batch));
        let started = tokio::time::Instant::now();
        // The topic's notificationShape is read once per claim; a changed topic applies
        // from the next claim (at most MAX_HOLD later).
        let context_plan = if spec.delivers_bundles() {
            ContextPlan::load(store.as_ref(), &ContextScope::of(record, spec)).await?
        } else {
            ContextPlan::default()
        };
        let mut through = record.delivered_through;
        // Notifications handed over with the claim serve as the first page if they follow
        // on from what was delivered; they are numbered up to the record's event count.
        let mut prefetched =
            Some(prefetched).filter(|p| p.first().is_some_and(|n| n.event_number == through + 1));
        for page in 0..MAX_PAGES {
            let (pending, whole_backlog) = match prefetched.take() {
                Some(mut pending) => {
                    pending.truncate(page_size as usize);
                    let whole = pending
                        .last()
                        .is_some_and(|n| n.event_number >= record.events_since_start);
                    (pending, whole)
                }
                None => {
                    let pending = store
                        .notifications(
                            &record.key.tenant,
                            &record.key.id,
                            through + 1,
                            i64::MAX,
                            page_size,
                        )
                        .await?;
                    // A page shorter than asked for held everything there was: once it is
                    // sent, progress and the end of the claim are one write, with no read
                    // to find nothing. Events recorded meanwhile wake the worker, which
                    // claims the subscription again.
                    let whole = (pending.len() as i64) < page_size;
                    (pending, whole)
                }
            };
            let Some(page_last) = pending.last().map(|n| n.event_number) else {
                if page == 0 && record.events_since_start > through {
                    // Numbers are gap-free, so an empty first read means the log was pruned.
                    store
                        .advance_delivery(&record.key, through, record.events_since_start, now_ms())
                        .await?;
                }
                break;
            };
            let sent = self
                .send_page(
                    record,
                    spec,
                    &context_plan,
                    through,
                    pending,
                    started + MAX_HOLD,
                )
                .await?;
            let sent_through = sent.through;
            // What this page delivered (or withheld) is recorded before anything else: a
            // client's rewind ($resend, reset) meanwhile makes the compare-and-set fail, and
            // delivery starts over from there with the next claim.
            let finishing = whole_backlog && sent.failure.is_none() && sent_through == page_last;
            let moved = sent_through > through
                && if finishing {
                    store
                        .finish_delivery(&record.key, through, sent_through, now_ms())
                        .await?
                } else {
                    store
                        .advance_delivery(&record.key, through, sent_through, now_ms())
                        .await?
                };
            if let Some(Attempt::Failed {
                error,
                retry_after,
                gone,
            }) = sent.failure
            {
                // The failure counts from a clean slate if anything was delivered in this claim.
                let failed = if moved || through > record.delivered_through {
                    SubscriptionRecord {
                        attempts: 0,
                        ..record.clone()
                    }
                } else {
                    record.clone()
                };
                return self.failed(&failed, &error, retry_after, gone).await;
            }
            if !moved {
                break;
            }
            if record.status == SubscriptionStatus::Error && through == record.delivered_through {
                // The store turned `error` back to `active` with this progress.
                self.audit_status(record, "active: delivery succeeded again")
                    .await;
            }
            if finishing {
                return Ok(());
            }
            through = sent_through;
            if through < page_last || tokio::time::Instant::now() >= started + MAX_HOLD {
                break;
            }
        }
        store.release_claim(&record.key).await
    }

    /// Events per request: the subscription's `maxCount` (or the configured default) for
    /// bundles; one for R4 classic rest-hook.
    fn events_per_request(&self, spec: &SubscriptionSpec) -> u32 {
        if spec.delivers_bundles() {
            spec.max_count
                .unwrap_or(self.inner.config.default_max_count)
                .max(1)
        } else {
            1
        }
    }

    /// Sends one page in order as requests of at most `events_per_request` events, starting after
    /// `through`, until the page is done, a request fails, or `hold_until` has passed (an
    /// attempt never outlives the claim, so sending stops between requests).
    async fn send_page(
        &self,
        record: &SubscriptionRecord,
        spec: &SubscriptionSpec,
        context_plan: &ContextPlan,
        mut through: i64,
        page: Vec<NotificationRecord>,
        hold_until: tokio::time::Instant,
    ) -> Result<PageSent, StoreError> {
        let batch = self.events_per_request(spec);
        // The page's additional context is resolved at once: one read for all the
        // resources its events include, rather than reads per request.
        let mut contexts = if spec.delivers_bundles() {
            let scope = ContextScope::of(record, spec);
            context_plan
                .resolve(self.inner.store.as_ref(), &scope, &page)
                .await?
        } else {
            Vec::new()
        }
        .into_iter();
        // The record as each bundle's status reports it (its event count at least the
        // bundle's last event); copied once per page, not per request.
        let mut current = record.clone();
        let mut page = page.into_iter().peekable();
        while page.peek().is_some() {
            if tokio::time::Instant::now() >= hold_until {
                break;
            }
            let chunk: Vec<NotificationRecord> = page.by_ref().take(batch as usize).collect();
            let Some(last) = chunk.last().map(|n| n.event_number) else {
                break;
            };
            // The owner's grant is checked again for every event: what it no longer
            // covers is withheld (audited) and delivery moves past it.
            let mut sendable = Vec::with_capacity(chunk.len());
            let mut context = Vec::with_capacity(chunk.len());
            for n in chunk {
                let n_context = contexts.next().unwrap_or_default();
                match permits(record.owner.as_ref(), &n.event) {
                    Ok(()) => {
                        sendable.push(n);
                        context.push(n_context);
                    }
                    Err(reason) => {
                        self.inner
                            .guard
                            .withheld(record, n.event_number, &reason)
                            .await
                    }
                }
            }
            if sendable.is_empty() {
                through = last;
                continue;
            }
            current.events_since_start = current.events_since_start.max(last);
            let request = if spec.delivers_bundles() {
                bundle_request_with_context(
                    &self.inner.config.base_url,
                    &current,
                    spec,
                    NotificationType::EventNotification,
                    &sendable,
                    context,
                )
            } else {
                classic_request(spec, &sendable[0])
            };
            let first = sendable[0].event_number;
            let attempt = self.send(spec, request).await;
            self.audit_attempt(record, &format!("events {first}..{last}"), &attempt)
                .await;
            if let Attempt::Failed { .. } = attempt {
                return Ok(PageSent {
                    through,
                    failure: Some(attempt),
                });
            }
            tracing::debug!(id = %record.key.id, through = last, "delivered");
            through = last;
        }
        Ok(PageSent {
            through,
            failure: None,
        })
    }

    async fn heartbeat(
        &self,
        record: &SubscriptionRecord,
        spec: &SubscriptionSpec,
    ) -> Result<(), StoreError> {
        if spec.delivers_bundles() {
            let request = bundle_request(
                &self.inner.config.base_url,
                record,
                spec,
                NotificationType::Heartbeat,
                &[],
            );
            let attempt = self.send(spec, request).await;
            self.audit_attempt(record, "heartbeat", &attempt).await;
            if let Attempt::Failed { error, .. } = attempt {
                // A missed heartbeat is not retried: the next one is due a period later.
                tracing::info!(id = %record.key.id, %error, "heartbeat not delivered");
            }
        }
        self.inner.store.mark_heartbeat(&record.key, now_ms()).await
    }

    async fn failed(
        &self,
        record: &SubscriptionRecord,
        error: &str,
        retry_after: Option<Duration>,
        gone: bool,
    ) -> Result<(), StoreError> {
        let attempts = record.attempts + 1;
        let config = &self.inner.config;
        let next = if gone {
            None
        } else {
            config
                .retry_schedule
                .delay(u32::try_from(attempts).unwrap_or(u32::MAX), retry_after)
        };
        let (status, error) = match next {
            None if gone => (
                SubscriptionStatus::Off,
                format!("endpoint answered 410 Gone: {error}"),
            ),
            None => (
                SubscriptionStatus::Off,
                format!("delivery retries exhausted after {attempts} attempts: {error}"),
            ),
            Some(_) if attempts >= i64::from(config.error_after_failures) => {
                (SubscriptionStatus::Error, error.to_owned())
            }
            Some(_) => (record.status, error.to_owned()),
        };
        tracing::warn!(id = %record.key.id, attempts, status = status.as_str(), %error, "delivery failed");
        if status != record.status {
            self.audit_status(record, &format!("{}: {error}", status.as_str()))
                .await;
        }
        let now = now_ms();
        let failure = DeliveryFailure {
            version_id: record.version_id,
            attempts,
            next_attempt_at: next
                .map(|d| now + i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)),
            status,
            error: &error,
            now_ms: now,
        };
        self.inner
            .store
            .record_delivery_failure(&record.key, &failure)
            .await
    }

    /// Records one delivery attempt (`what`: handshake, heartbeat, events a..b).
    async fn audit_attempt(&self, record: &SubscriptionRecord, what: &str, attempt: &Attempt) {
        let (outcome, detail) = match attempt {
            Attempt::Delivered => (
                AuditOutcome::Success,
                format!("{} {what} delivered", record.channel_type),
            ),
            Attempt::Failed { error, .. } => (
                AuditOutcome::MinorFailure,
                format!("{} {what} failed: {error}", record.channel_type),
            ),
        };
        self.inner
            .guard
            .audit()
            .record(
                AuditEntry::new(&record.key.tenant, AuditKind::Delivery, outcome)
                    .entity(format!("Subscription/{}", record.key.id))
                    .detail(detail),
            )
            .await;
    }

    /// Records a status change Herald made.
    async fn audit_status(&self, record: &SubscriptionRecord, detail: &str) {
        self.inner
            .guard
            .audit()
            .record(AuditEntry::status_change(
                &record.key.tenant,
                &record.key.id,
                detail,
            ))
            .await;
    }

    async fn send(&self, spec: &SubscriptionSpec, request: OutgoingRequest) -> Attempt {
        let lease_margin = self
            .inner
            .config
            .claim_lease
            .saturating_sub(Duration::from_secs(5))
            .max(Duration::from_secs(1));
        // An attempt never outlives the claim on its subscription.
        let timeout = spec
            .timeout
            .map(|s| Duration::from_secs(u64::from(s)))
            .unwrap_or(self.inner.config.default_timeout)
            .min(lease_margin);
        if spec.channel_type == herald_fhir::ChannelType::Nats {
            return self.publish_nats(spec, request, timeout).await;
        }
        let mut builder = self
            .inner
            .http
            .request(request.method, &request.url)
            .timeout(timeout);
        for (name, value) in &spec.headers {
            builder = builder.header(name, value);
        }
        if let Some(content_type) = &request.content_type {
            builder = builder.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        let keys: Vec<Vec<u8>> = spec
            .signing_secrets
            .iter()
            .filter_map(|s| herald_fhir::subscription::signing_key(s))
            .collect();
        if !keys.is_empty() {
            let timestamp = chrono::Utc::now().timestamp();
            builder = builder
                .header("webhook-id", &request.msg_id)
                .header("webhook-timestamp", timestamp.to_string())
                .header(
                    "webhook-signature",
                    crate::signing::signature(&keys, &request.msg_id, timestamp, &request.body),
                );
        }
        match builder.body(request.body).send().await {
            Ok(response) if response.status().is_success() => Attempt::Delivered,
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                Attempt::Failed {
                    error: format!("endpoint answered {status}"),
                    retry_after,
                    gone: status == reqwest::StatusCode::GONE,
                }
            }
            Err(e) if e.is_timeout() => Attempt::Failed {
                error: format!("no answer within {}s", timeout.as_secs()),
                retry_after: None,
                gone: false,
            },
            Err(e) => Attempt::Failed {
                error: format!("could not reach endpoint: {}", without_url(&e)),
                retry_after: None,
                gone: false,
            },
        }
    }
}

impl RestHookWorker {
    /// The NATS channel's attempt: delivered once JetStream acknowledged the message (a
    /// duplicate ack means it was stored by an earlier attempt whose ack was lost).
    async fn publish_nats(
        &self,
        spec: &SubscriptionSpec,
        request: OutgoingRequest,
        timeout: Duration,
    ) -> Attempt {
        let Some(channel) = self.inner.nats_channel.get() else {
            return Attempt::Failed {
                error: "the NATS channel requires NATS mode".into(),
                retry_after: None,
                gone: false,
            };
        };
        match channel.publish(spec, request, timeout).await {
            Ok(published) => {
                if published.duplicate {
                    tracing::debug!("NATS notification was already stored (duplicate id)");
                }
                Attempt::Delivered
            }
            Err(error) => Attempt::Failed {
                error,
                retry_after: None,
                gone: false,
            },
        }
    }
}

/// A reqwest error without the URL (which may carry secrets in its query).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<endpoint>");
    }
    if e.is_connect() {
        return "connection refused or unreachable".into();
    }
    text
}
