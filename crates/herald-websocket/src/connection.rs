//! One task per WebSocket: reads commands, sends handshakes and replays, drains the
//! connection's bounded send queue, keeps the socket alive with pings.
//!
//! Replay is done here, not by the hub: the connection reads the notification log after
//! the client's last event number and writes it straight to the socket, so a long replay
//! is paced by the client (TCP back-pressure) instead of filling a queue. Only when it has
//! caught up with what the hub already dispatched does the binding go live
//! ([`WebSocketHub::go_live`]); from then on the hub offers new frames to its queue.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use herald_delivery::access::permits;
use herald_delivery::payload::additional_context;
use herald_fhir::{IssueType, OperationOutcome, SubscriptionStatus};
use herald_store::{SubscriptionKey, SubscriptionRecord};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::time::{Instant, MissedTickBehavior};

use crate::frames::{self, SubscriptionView};
use crate::hub::{BindingStyle, CloseReason, ConnectionId, GoLive, WebSocketHub};
use crate::protocol::{self, ClientCommand, Dialect, LastEventNumbers};

/// Why the loop ended.
enum Stop {
    /// The socket failed or the client closed it.
    Gone,
    /// Herald closes it, saying why.
    Close(CloseReason),
}

/// The socket and the two ways the hub reaches this connection.
struct Io<'a> {
    socket: &'a mut WebSocket,
    outbound: &'a mut mpsc::Receiver<Utf8Bytes>,
    close: &'a mut oneshot::Receiver<CloseReason>,
}

impl Io<'_> {
    /// Sends one message; a close request from the hub interrupts a send the client is
    /// not reading.
    async fn send(&mut self, message: Message) -> Result<(), Stop> {
        tokio::select! {
            biased;
            reason = &mut *self.close => Err(Stop::Close(reason.unwrap_or(CloseReason::SHUTTING_DOWN))),
            sent = self.socket.send(message) => sent.map_err(|_| Stop::Gone),
        }
    }

    async fn send_text(&mut self, text: impl Into<Utf8Bytes>) -> Result<(), Stop> {
        self.send(Message::Text(text.into())).await
    }

    /// Sends what the hub queued meanwhile (other subscriptions' live events).
    async fn drain(&mut self) -> Result<(), Stop> {
        while let Ok(frame) = self.outbound.try_recv() {
            self.send_text(frame).await?;
        }
        Ok(())
    }

    async fn reply(&mut self, dialect: Dialect, outcome: &OperationOutcome) -> Result<(), Stop> {
        match dialect {
            Dialect::Backport => self.send_text(frames::outcome(outcome)).await,
            Dialect::Classic => {
                let word = if outcome.severity == "error" {
                    "error"
                } else {
                    "ok"
                };
                self.send_text(format!("{word} {}", outcome.diagnostics))
                    .await
            }
        }
    }
}

/// How a subscription came to be bound on this connection.
#[derive(Debug)]
struct Bound {
    key: SubscriptionKey,
    /// The token it was bound with (for `unbind-from-token`); `None` for classic `bind`.
    token: Option<String>,
}

struct Connection<'h> {
    hub: &'h WebSocketHub,
    id: ConnectionId,
    bound: HashMap<String, Bound>,
}

/// Serves one upgraded socket until it closes. `_slot` is its place under
/// `max_connections`, given back when this returns.
pub async fn serve(hub: Arc<WebSocketHub>, mut socket: WebSocket, _slot: OwnedSemaphorePermit) {
    let (outbound_tx, mut outbound) = mpsc::channel(hub.config.send_queue_capacity);
    let (close_tx, mut close) = oneshot::channel();
    let Some(id) = hub.register_connection(outbound_tx, close_tx) else {
        close_socket(&hub, &mut socket, CloseReason::SHUTTING_DOWN).await;
        return;
    };
    let mut connection = Connection {
        hub: &hub,
        id,
        bound: HashMap::new(),
    };
    let mut io = Io {
        socket: &mut socket,
        outbound: &mut outbound,
        close: &mut close,
    };
    let stop = connection.run(&mut io).await;
    hub.unregister_connection(id, connection.bound.values().map(|b| &b.key));
    if let Stop::Close(reason) = stop {
        close_socket(&hub, &mut socket, reason).await;
    }
}

/// The closing handshake, bounded by `close_timeout`: send Close, then read until the
/// client's Close so the reason is not lost to a reset.
async fn close_socket(hub: &WebSocketHub, socket: &mut WebSocket, reason: CloseReason) {
    let frame = CloseFrame {
        code: reason.code,
        reason: Utf8Bytes::from_static(reason.reason),
    };
    let handshake = async {
        if socket.send(Message::Close(Some(frame))).await.is_ok() {
            while let Some(Ok(_)) = socket.recv().await {}
        }
    };
    let _ = tokio::time::timeout(hub.config.close_timeout, handshake).await;
}

impl Connection<'_> {
    async fn run(&mut self, io: &mut Io<'_>) -> Stop {
        let config = &self.hub.config;
        let mut keepalive =
            tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        loop {
            let step = tokio::select! {
                biased;
                reason = &mut *io.close => Err(Stop::Close(reason.unwrap_or(CloseReason::SHUTTING_DOWN))),
                frame = io.outbound.recv() => match frame {
                    Some(frame) => io.send_text(frame).await,
                    None => Err(Stop::Close(CloseReason::SHUTTING_DOWN)),
                },
                incoming = io.socket.recv() => match incoming {
                    None | Some(Err(_)) => Err(Stop::Gone),
                    Some(Ok(message)) => {
                        let handled = self.receive(io, message).await;
                        // Anything counts as a sign of life; a long replay is not silence.
                        last_heard = Instant::now();
                        handled
                    }
                },
                _ = keepalive.tick() => {
                    if last_heard.elapsed() >= config.pong_timeout {
                        Err(Stop::Close(CloseReason::KEEPALIVE_TIMEOUT))
                    } else {
                        io.send(Message::Ping(Default::default())).await
                    }
                }
            };
            if let Err(stop) = step {
                return stop;
            }
        }
    }

    async fn receive(&mut self, io: &mut Io<'_>, message: Message) -> Result<(), Stop> {
        match message {
            Message::Text(text) => self.command(io, text.as_str()).await,
            Message::Binary(_) => {
                let refusal = OperationOutcome::error(
                    IssueType::NotSupported,
                    "binary messages are not understood; send text commands",
                );
                io.reply(Dialect::Backport, &refusal).await
            }
            // tungstenite answers pings and the client's Close; after a Close the next
            // read ends the stream.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => Ok(()),
        }
    }

    async fn command(&mut self, io: &mut Io<'_>, text: &str) -> Result<(), Stop> {
        let command = match protocol::parse(text) {
            Ok(command) => command,
            Err(e) => {
                let refusal = OperationOutcome::error(IssueType::Invalid, e.0);
                let dialect = if text.trim_start().starts_with("bind ") {
                    Dialect::Classic
                } else {
                    Dialect::Backport
                };
                return io.reply(dialect, &refusal).await;
            }
        };
        let dialect = command.dialect();
        match command {
            ClientCommand::BindWithToken {
                token,
                last_event_numbers,
            } => self.bind_with_token(io, token, &last_event_numbers).await,
            ClientCommand::UnbindFromToken { token } => {
                let ids: Vec<String> = self
                    .bound
                    .iter()
                    .filter(|(_, b)| b.token.as_deref() == Some(token.as_str()))
                    .map(|(id, _)| id.clone())
                    .collect();
                if ids.is_empty() {
                    let refusal = OperationOutcome::error(
                        IssueType::NotFound,
                        "no subscription on this connection was bound with that token",
                    );
                    return io.reply(dialect, &refusal).await;
                }
                for id in &ids {
                    self.unbind(id);
                }
                let done = OperationOutcome::information(format!("unbound {}", ids.join(", ")));
                io.reply(dialect, &done).await
            }
            ClientCommand::Unbind { subscription_id } => {
                if self.unbind(&subscription_id) {
                    io.send_text(format!("unbound {subscription_id}")).await
                } else {
                    let refusal = OperationOutcome::error(
                        IssueType::NotFound,
                        format!("{subscription_id} is not bound on this connection"),
                    );
                    io.reply(dialect, &refusal).await
                }
            }
            ClientCommand::Bind { .. } if !self.hub.config.allow_classic_bind => {
                let refusal = OperationOutcome::error(
                    IssueType::Forbidden,
                    "bind <id> is turned off here; use $get-ws-binding-token and bind-with-token",
                );
                io.reply(dialect, &refusal).await
            }
            ClientCommand::Bind { subscription_id } => {
                let key = SubscriptionKey::new(self.hub.config.tenant.clone(), subscription_id);
                match self.bind(io, key, BindingStyle::Ping, None, None).await? {
                    Ok(()) => Ok(()),
                    Err(refusal) => io.reply(dialect, &refusal).await,
                }
            }
            ClientCommand::Ping => io.send_text(r#"{"type":"pong"}"#).await,
        }
    }

    async fn bind_with_token(
        &mut self,
        io: &mut Io<'_>,
        token: String,
        last_event_numbers: &LastEventNumbers,
    ) -> Result<(), Stop> {
        let grant = match self.hub.tokens.redeem(&token, std::time::Instant::now()) {
            Ok(grant) => grant,
            Err(e) => {
                let refusal = OperationOutcome::error(IssueType::Security, e.to_string());
                return io.reply(Dialect::Backport, &refusal).await;
            }
        };
        for id in grant.subscription_ids {
            let key = SubscriptionKey::new(grant.tenant.clone(), id);
            let replay_from = last_event_numbers.for_subscription(&key.id);
            let bound = self
                .bind(io, key, BindingStyle::Bundles, replay_from, Some(&token))
                .await?;
            if let Err(refusal) = bound {
                io.reply(Dialect::Backport, &refusal).await?;
            }
        }
        Ok(())
    }

    fn unbind(&mut self, subscription_id: &str) -> bool {
        match self.bound.remove(subscription_id) {
            Some(bound) => {
                self.hub.unbind(self.id, &bound.key);
                true
            }
            None => false,
        }
    }

    /// Binds one subscription: checks it, activates it, sends the handshake (or
    /// `bound <id>`), replays from `replay_from` and catches up with the live feed.
    /// The inner error is a refusal to send back; the outer one ends the connection.
    async fn bind(
        &mut self,
        io: &mut Io<'_>,
        key: SubscriptionKey,
        style: BindingStyle,
        replay_from: Option<i64>,
        token: Option<&str>,
    ) -> Result<Result<(), OperationOutcome>, Stop> {
        let hub = self.hub;
        let record = match self.bindable(&key).await {
            Ok(record) => record,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let view = match SubscriptionView::from_record(&record, None) {
            Ok(view) => view,
            Err(e) => {
                tracing::error!(subscription = %key.id, error = %e, "a stored websocket subscription does not read");
                return Ok(Err(OperationOutcome::error(
                    IssueType::Processing,
                    format!("Subscription/{} cannot be delivered; update it", key.id),
                )));
            }
        };
        // Binding a subscription again replaces the earlier binding.
        self.unbind(&key.id);
        match style {
            BindingStyle::Bundles => io.send_text(view.handshake(&hub.config.base_url)).await?,
            BindingStyle::Ping => io.send_text(format!("bound {}", key.id)).await?,
        }
        let mut cursor = match replay_from {
            Some(last) => last.clamp(0, record.events_since_start),
            None => record.events_since_start,
        };
        loop {
            let page = match hub
                .store
                .notifications(
                    &key.tenant,
                    &key.id,
                    cursor + 1,
                    i64::MAX,
                    hub.config.page_size,
                )
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(subscription = %key.id, error = %e, "reading notifications for a websocket replay failed");
                    return Ok(Err(unavailable()));
                }
            };
            let contexts = match style {
                BindingStyle::Bundles => {
                    let scope = view.context_scope(record.owner.as_ref());
                    match additional_context(hub.store.as_ref(), &scope, &page).await {
                        Ok(contexts) => contexts,
                        Err(e) => {
                            tracing::error!(subscription = %key.id, error = %e, "resolving additional context for a websocket replay failed");
                            return Ok(Err(unavailable()));
                        }
                    }
                }
                BindingStyle::Ping => Vec::new(),
            };
            let mut contexts = contexts.into_iter();
            for notification in &page {
                let context = contexts.next().unwrap_or_default();
                if let Err(reason) = permits(record.owner.as_ref(), &notification.event) {
                    if let Some(guard) = &hub.guard {
                        guard
                            .withheld(&record, notification.event_number, &reason)
                            .await;
                    }
                    cursor = notification.event_number;
                    continue;
                }
                let frame = match style {
                    BindingStyle::Bundles => {
                        view.event(&hub.config.base_url, notification, context)
                    }
                    BindingStyle::Ping => view.ping(),
                };
                io.send_text(frame).await?;
                cursor = notification.event_number;
            }
            io.drain().await?;
            if (page.len() as i64) < hub.config.page_size
                && hub.go_live(self.id, &view, style, cursor) == GoLive::Live
            {
                break;
            }
        }
        let token = token.map(str::to_owned);
        self.bound.insert(key.id.clone(), Bound { key, token });
        Ok(Ok(()))
    }

    /// The subscription, if this connection may bind it; activates a `requested` one.
    async fn bindable(
        &self,
        key: &SubscriptionKey,
    ) -> Result<SubscriptionRecord, OperationOutcome> {
        let hub = self.hub;
        if !self.bound.contains_key(&key.id)
            && self.bound.len() >= hub.config.max_bindings_per_connection
        {
            return Err(OperationOutcome::error(
                IssueType::TooLong,
                format!(
                    "a connection may bind at most {} subscriptions",
                    hub.config.max_bindings_per_connection
                ),
            ));
        }
        let mut record = match hub.store.get_subscription(&key.tenant, &key.id).await {
            Ok(Some(record)) => record,
            Ok(None) => {
                return Err(OperationOutcome::error(
                    IssueType::NotFound,
                    format!("Subscription/{} does not exist", key.id),
                ))
            }
            Err(e) => {
                tracing::error!(subscription = %key.id, error = %e, "reading a subscription for a websocket bind failed");
                return Err(unavailable());
            }
        };
        check_bindable(&record)?;
        if let Some(guard) = &hub.guard {
            match guard.revocation(&record).await {
                Ok(None) => {}
                Ok(Some(reason)) => {
                    if let Err(e) = guard.stop(&record, &reason).await {
                        tracing::warn!(subscription = %key.id, error = %e, "could not turn off a revoked subscription");
                    }
                    return Err(OperationOutcome::error(
                        IssueType::Forbidden,
                        format!("Subscription/{}: {reason}", key.id),
                    ));
                }
                Err(e) => {
                    tracing::error!(subscription = %key.id, error = %e, "checking the owner's access for a websocket bind failed");
                    return Err(unavailable());
                }
            }
        }
        if record.status == SubscriptionStatus::Requested {
            // The handshake about to be sent is what activates a websocket subscription.
            if let Err(e) = hub
                .store
                .set_status(key, SubscriptionStatus::Active, None)
                .await
            {
                tracing::error!(subscription = %key.id, error = %e, "activating a websocket subscription failed");
                return Err(unavailable());
            }
            record.status = SubscriptionStatus::Active;
            if let Some(guard) = &hub.guard {
                guard
                    .audit()
                    .record(herald_audit::AuditEntry::status_change(
                        &key.tenant,
                        &key.id,
                        "active: bound over websocket",
                    ))
                    .await;
            }
        }
        Ok(record)
    }
}

fn unavailable() -> OperationOutcome {
    OperationOutcome::error(IssueType::Transient, "storage is unavailable; bind again")
}

/// Whether `record` is a websocket subscription that still counts events.
pub fn check_bindable(record: &SubscriptionRecord) -> Result<(), OperationOutcome> {
    if record.channel_type != "websocket" {
        return Err(OperationOutcome::error(
            IssueType::Invalid,
            format!(
                "Subscription/{} has channel type {}, not websocket",
                record.key.id, record.channel_type
            ),
        ));
    }
    if !record.status.counts_events() {
        return Err(OperationOutcome::error(
            IssueType::Invalid,
            format!(
                "Subscription/{} is {}; set it to active to bind it",
                record.key.id,
                record.status.as_str()
            ),
        ));
    }
    Ok(())
}
