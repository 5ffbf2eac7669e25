//! The hub: which connection has bound which subscription, and the dispatcher that moves
//! new notifications from the store to the connections' send queues.
//!
//! Per bound subscription there is one [`Feed`] with a cursor: every event up to it has
//! been offered to every live binding. When woken (or every `poll_interval`), the
//! dispatcher refreshes the bound subscriptions in one query per 500, reads the
//! notifications after each feed's cursor once, serializes each frame once and offers the
//! same bytes to every binding. Each binding keeps its own cursor too, so a connection that
//! caught up on its own (replay) never receives an event twice or out of order.
//!
//! Offering never waits: a send queue that is full means the client is too slow, and the
//! connection is told to close (1008) — one slow client never holds back the others.
//! The registry is a `std::sync::Mutex` held only for map updates, never across an await.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use herald_delivery::access::{permits, AccessGuard};
use herald_delivery::payload::additional_context;
use herald_store::{Store, SubscriptionKey, SubscriptionQuery, SubscriptionRecord};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::WebSocketConfig;
use crate::frames::{SubscriptionShape, SubscriptionView};
use crate::tokens::BindingTokens;

/// Identifies one WebSocket connection within this hub.
pub type ConnectionId = u64;

/// Why the hub closes a connection: a WebSocket close code and a reason (≤ 123 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: &'static str,
}

impl CloseReason {
    pub const SLOW_CONSUMER: Self = Self {
        code: 1008,
        reason:
            "send queue overflow: client too slow; reconnect and rebind with your last event number",
    };
    pub const SHUTTING_DOWN: Self = Self {
        code: 1001,
        reason: "Herald is shutting down; reconnect and rebind with your last event number",
    };
    pub const KEEPALIVE_TIMEOUT: Self = Self {
        code: 1001,
        reason: "no pong or message within the keepalive timeout",
    };
}

/// How a binding is told about events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingStyle {
    /// Backport bundles: handshake, heartbeats, one event-notification per event.
    Bundles,
    /// R4 classic: `ping <id>` per event.
    Ping,
}

#[derive(Debug)]
struct Binding {
    style: BindingStyle,
    /// Last event number offered to this binding.
    cursor: i64,
    last_sent: Instant,
}

#[derive(Debug)]
struct Feed {
    /// Changes when the feed is recreated, so a dispatch read for an older one is dropped.
    generation: u64,
    /// Every event up to here has been offered to every binding.
    cursor: i64,
    view: SubscriptionView,
    bindings: HashMap<ConnectionId, Binding>,
}

#[derive(Debug)]
struct ConnectionEntry {
    outbound: mpsc::Sender<Utf8Bytes>,
    close: Option<oneshot::Sender<CloseReason>>,
}

impl ConnectionEntry {
    fn close(&mut self, reason: CloseReason) {
        if let Some(close) = self.close.take() {
            let _ = close.send(reason);
        }
    }
}

#[derive(Debug, Default)]
struct Registry {
    next_connection: ConnectionId,
    next_generation: u64,
    connections: HashMap<ConnectionId, ConnectionEntry>,
    feeds: HashMap<SubscriptionKey, Feed>,
}

/// Whether a connection that caught up may go live.
#[derive(Debug, PartialEq, Eq)]
pub enum GoLive {
    Live,
    /// Events up to this number were already dispatched live; read them from the store.
    Behind(i64),
}

/// The websocket channel of one Herald instance. Share it as an `Arc`; start
/// [`WebSocketHub::run`] once; serve [`crate::router`].
pub struct WebSocketHub {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: WebSocketConfig,
    pub(crate) tokens: BindingTokens,
    pub(crate) connection_slots: Arc<Semaphore>,
    registry: Mutex<Registry>,
    wake: Notify,
    shutting_down: AtomicBool,
    /// Re-checks each subscription owner's grant before sending (none in unit tests of
    /// the channel alone; the composition root always sets one).
    pub(crate) guard: Option<AccessGuard>,
}

impl std::fmt::Debug for WebSocketHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketHub")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl WebSocketHub {
    /// A hub over `store`; refuses an invalid `config` (the message names the field).
    pub fn new(store: Arc<dyn Store>, config: WebSocketConfig) -> Result<Arc<Self>, String> {
        Self::build(store, config, None)
    }

    /// A hub that re-checks every owner's grant at send time and audits token issues.
    pub fn with_access_guard(
        store: Arc<dyn Store>,
        config: WebSocketConfig,
        guard: AccessGuard,
    ) -> Result<Arc<Self>, String> {
        Self::build(store, config, Some(guard))
    }

    fn build(
        store: Arc<dyn Store>,
        config: WebSocketConfig,
        guard: Option<AccessGuard>,
    ) -> Result<Arc<Self>, String> {
        config.validate()?;
        Ok(Arc::new(Self {
            store,
            tokens: BindingTokens::new(config.token_ttl, config.max_outstanding_tokens),
            connection_slots: Arc::new(Semaphore::new(config.max_connections)),
            config,
            registry: Mutex::new(Registry::default()),
            wake: Notify::new(),
            shutting_down: AtomicBool::new(false),
            guard,
        }))
    }

    pub fn config(&self) -> &WebSocketConfig {
        &self.config
    }

    /// Tells the hub that notifications were recorded: it looks at the store now instead
    /// of at the next poll. Cheap; wake-ups while it is busy coalesce.
    pub fn notify_new_events(&self) {
        self.wake.notify_one();
    }

    /// Open WebSocket connections.
    pub fn connection_count(&self) -> usize {
        self.lock().connections.len()
    }

    /// Bindings that are live (caught up), over all connections.
    pub fn live_binding_count(&self) -> usize {
        self.lock().feeds.values().map(|f| f.bindings.len()).sum()
    }

    /// Dispatches until `shutdown`, then closes every connection with 1001.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.config.poll_interval) => {}
            }
            // A full page means more is waiting: go on without waiting for a wake-up.
            while self.dispatch().await && !shutdown.is_cancelled() {}
        }
        self.shutting_down.store(true, Ordering::SeqCst);
        let mut registry = self.lock();
        for connection in registry.connections.values_mut() {
            connection.close(CloseReason::SHUTTING_DOWN);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Every update below leaves the maps consistent at each step.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    // --- Connections --------------------------------------------------------------------

    /// Registers a connection's send queue and close signal; `None` when shutting down.
    pub(crate) fn register_connection(
        &self,
        outbound: mpsc::Sender<Utf8Bytes>,
        close: oneshot::Sender<CloseReason>,
    ) -> Option<ConnectionId> {
        let mut registry = self.lock();
        if self.shutting_down.load(Ordering::SeqCst) {
            return None;
        }
        registry.next_connection += 1;
        let id = registry.next_connection;
        registry.connections.insert(
            id,
            ConnectionEntry {
                outbound,
                close: Some(close),
            },
        );
        Some(id)
    }

    /// Forgets a connection and its bindings (`bound` lists the keys it had bound).
    pub(crate) fn unregister_connection<'a>(
        &self,
        id: ConnectionId,
        bound: impl IntoIterator<Item = &'a SubscriptionKey>,
    ) {
        let mut registry = self.lock();
        registry.connections.remove(&id);
        for key in bound {
            remove_binding(&mut registry, key, id);
        }
    }

    /// Ends a binding (no-op if there is none).
    pub(crate) fn unbind(&self, id: ConnectionId, key: &SubscriptionKey) {
        remove_binding(&mut self.lock(), key, id);
    }

    /// Makes a binding live at `cursor` (the last event number the connection sent) if no
    /// event after it was dispatched live yet; otherwise says how far to read first.
    pub(crate) fn go_live(
        &self,
        id: ConnectionId,
        view: &SubscriptionView,
        style: BindingStyle,
        cursor: i64,
    ) -> GoLive {
        let mut registry = self.lock();
        let registry = &mut *registry;
        let binding = Binding {
            style,
            cursor,
            last_sent: Instant::now(),
        };
        match registry.feeds.get_mut(&view.key) {
            Some(feed) if feed.cursor > cursor => GoLive::Behind(feed.cursor),
            Some(feed) => {
                feed.bindings.insert(id, binding);
                GoLive::Live
            }
            None => {
                registry.next_generation += 1;
                let feed = Feed {
                    generation: registry.next_generation,
                    cursor,
                    view: view.clone(),
                    bindings: HashMap::from([(id, binding)]),
                };
                registry.feeds.insert(view.key.clone(), feed);
                GoLive::Live
            }
        }
    }

    // --- Dispatch -----------------------------------------------------------------------

    /// One pass over every feed. Returns whether some feed had a full page (more to read).
    async fn dispatch(&self) -> bool {
        struct Pending {
            key: SubscriptionKey,
            generation: u64,
            cursor: i64,
            shape: Arc<SubscriptionShape>,
            styles: (bool, bool),
        }
        let pending: Vec<Pending> = {
            let registry = self.lock();
            registry
                .feeds
                .iter()
                .map(|(key, feed)| Pending {
                    key: key.clone(),
                    generation: feed.generation,
                    cursor: feed.cursor,
                    shape: Arc::clone(&feed.view.shape),
                    styles: (
                        feed.bindings
                            .values()
                            .any(|b| b.style == BindingStyle::Bundles),
                        feed.bindings
                            .values()
                            .any(|b| b.style == BindingStyle::Ping),
                    ),
                })
                .collect()
        };
        if pending.is_empty() {
            return false;
        }
        let Some(records) = self.refresh(pending.iter().map(|p| &p.key)).await else {
            return false;
        };
        let mut more = false;
        for p in pending {
            let record = records.get(&p.key);
            let view = match record.map(|r| SubscriptionView::from_record(r, Some(&p.shape))) {
                Some(Ok(view))
                    if view.status.counts_events()
                        && record.is_some_and(|r| r.channel_type == "websocket") =>
                {
                    view
                }
                other => {
                    if let Some(Err(e)) = other {
                        tracing::warn!(subscription = %p.key.id, error = %e, "stored websocket subscription no longer reads; ending its bindings");
                    }
                    // Deleted, turned off or changed channel: stop delivering it.
                    self.end_feed(&p.key, p.generation);
                    continue;
                }
            };
            if let (Some(guard), Some(record)) = (&self.guard, record) {
                match guard.revocation(record).await {
                    Ok(None) => {}
                    Ok(Some(reason)) => {
                        if let Err(e) = guard.stop(record, &reason).await {
                            tracing::warn!(subscription = %p.key.id, error = %e, "could not turn off a revoked subscription");
                        }
                        self.end_feed(&p.key, p.generation);
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(subscription = %p.key.id, error = %e, "could not check the owner's access; retrying at the next poll");
                        continue;
                    }
                }
            }
            let owner = record.and_then(|r| r.owner.as_ref());
            let mut frames = Vec::new();
            if view.events_since_start > p.cursor {
                let (tenant, id) = (&p.key.tenant, &p.key.id);
                let page_size = self.config.page_size;
                let notifications = match self
                    .store
                    .notifications(tenant, id, p.cursor + 1, i64::MAX, page_size)
                    .await
                {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(subscription = %id, error = %e, "reading notifications for websocket fan-out failed; retrying at the next poll");
                        continue;
                    }
                };
                more |= notifications.len() as i64 == page_size;
                let contexts = if p.styles.0 {
                    let scope = view.context_scope(owner);
                    match additional_context(self.store.as_ref(), &scope, &notifications).await {
                        Ok(contexts) => contexts,
                        Err(e) => {
                            tracing::warn!(subscription = %id, error = %e, "resolving additional context for websocket fan-out failed; retrying at the next poll");
                            continue;
                        }
                    }
                } else {
                    Vec::new()
                };
                let mut contexts = contexts.into_iter();
                let base_url = &self.config.base_url;
                let ping = view.ping();
                for n in &notifications {
                    let context = contexts.next().unwrap_or_default();
                    // A notification the owner's grant no longer covers is withheld: its
                    // number passes with no frame.
                    if let Err(reason) = permits(owner, &n.event) {
                        if let (Some(guard), Some(record)) = (&self.guard, record) {
                            guard.withheld(record, n.event_number, &reason).await;
                        }
                        frames.push((n.event_number, None, None));
                        continue;
                    }
                    let bundle = p.styles.0.then(|| view.event(base_url, n, context));
                    let ping = p.styles.1.then(|| ping.clone());
                    frames.push((n.event_number, bundle, ping));
                }
            }
            self.deliver(&p.key, p.generation, p.cursor, view, &frames);
        }
        more
    }

    /// The bound subscriptions as stored now, keyed; `None` if the store failed.
    async fn refresh<'a>(
        &self,
        keys: impl Iterator<Item = &'a SubscriptionKey>,
    ) -> Option<HashMap<SubscriptionKey, SubscriptionRecord>> {
        let mut by_tenant: HashMap<&str, Vec<String>> = HashMap::new();
        for key in keys {
            by_tenant
                .entry(&key.tenant)
                .or_default()
                .push(key.id.clone());
        }
        let mut records = HashMap::new();
        for (tenant, ids) in by_tenant {
            for chunk in ids.chunks(500) {
                let query = SubscriptionQuery {
                    ids: chunk.to_vec(),
                    limit: Some(chunk.len() as i64),
                    ..SubscriptionQuery::default()
                };
                match self.store.search_subscriptions(tenant, &query).await {
                    Ok(found) => records.extend(found.into_iter().map(|r| (r.key.clone(), r))),
                    Err(e) => {
                        tracing::warn!(error = %e, "refreshing websocket subscriptions failed; retrying at the next poll");
                        return None;
                    }
                }
            }
        }
        Some(records)
    }

    fn end_feed(&self, key: &SubscriptionKey, generation: u64) {
        let mut registry = self.lock();
        if registry
            .feeds
            .get(key)
            .is_some_and(|f| f.generation == generation)
        {
            tracing::info!(subscription = %key.id, "websocket subscription deleted or no longer active; its bindings end");
            registry.feeds.remove(key);
        }
    }

    /// Offers `frames` (event number, bundle, ping) and due heartbeats to the feed's
    /// bindings, without waiting: a full queue closes that connection.
    fn deliver(
        &self,
        key: &SubscriptionKey,
        generation: u64,
        cursor: i64,
        view: SubscriptionView,
        frames: &[(i64, Option<Utf8Bytes>, Option<Utf8Bytes>)],
    ) {
        let now = Instant::now();
        let mut registry = self.lock();
        let Registry {
            feeds, connections, ..
        } = &mut *registry;
        let Some(feed) = feeds.get_mut(key) else {
            return;
        };
        if feed.generation != generation || feed.cursor != cursor {
            return;
        }
        let heartbeat_period = view.shape.heartbeat_period;
        let mut heartbeat = None;
        for (connection_id, binding) in &mut feed.bindings {
            let Some(connection) = connections.get_mut(connection_id) else {
                continue;
            };
            let mut overflow = false;
            for (number, bundle, ping) in frames {
                if *number <= binding.cursor {
                    continue;
                }
                let frame = match binding.style {
                    BindingStyle::Bundles => bundle,
                    BindingStyle::Ping => ping,
                };
                let Some(frame) = frame else { continue };
                match connection.outbound.try_send(frame.clone()) {
                    Ok(()) => {
                        binding.cursor = *number;
                        binding.last_sent = now;
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        overflow = true;
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                }
            }
            let heartbeat_due = binding.style == BindingStyle::Bundles
                && heartbeat_period.is_some_and(|p| now.duration_since(binding.last_sent) >= p);
            if heartbeat_due && !overflow {
                let frame = heartbeat.get_or_insert_with(|| view.heartbeat(&self.config.base_url));
                match connection.outbound.try_send(frame.clone()) {
                    Ok(()) => binding.last_sent = now,
                    Err(mpsc::error::TrySendError::Full(_)) => overflow = true,
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
            if overflow {
                tracing::info!(subscription = %key.id, connection = connection_id, "websocket client too slow; closing it");
                connection.close(CloseReason::SLOW_CONSUMER);
            }
        }
        if let Some((last, _, _)) = frames.last() {
            feed.cursor = *last;
        }
        feed.view = view;
    }
}

fn remove_binding(registry: &mut Registry, key: &SubscriptionKey, id: ConnectionId) {
    if let Some(feed) = registry.feeds.get_mut(key) {
        feed.bindings.remove(&id);
        if feed.bindings.is_empty() {
            registry.feeds.remove(key);
        }
    }
}
