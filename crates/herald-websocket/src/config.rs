//! Settings of the websocket channel, with defaults sized for many idle dashboards.

use std::time::Duration;

/// How the websocket channel behaves. Build with [`WebSocketConfig::new`] and override
/// fields; [`WebSocketConfig::validate`] is called by `WebSocketHub::new`.
#[derive(Debug, Clone)]
pub struct WebSocketConfig {
    /// Tenant of token requests that carry no [`crate::BindingTenant`] extension, and of
    /// R4 classic `bind <id>`.
    pub tenant: String,
    /// When true, `$get-ws-binding-token` requires a [`crate::BindingTenant`] request
    /// extension (set by the API's authentication layer) and answers 401 without one:
    /// with authentication on, a forgotten layer must not fall back to `tenant`.
    pub tenant_from_request: bool,
    /// Whether the R4 classic `bind <id>` is accepted. It carries no credential (the
    /// legacy protocol has none), so turn it off where subscription ids are not secret.
    pub allow_classic_bind: bool,
    /// Public FHIR base URL, no trailing slash (e.g. `http://127.0.0.1:8080/fhir`); used in
    /// bundles.
    pub base_url: String,
    /// The `websocket-url` handed out with tokens (e.g. `wss://herald.example/ws`).
    pub websocket_url: String,
    /// How long a binding token may be redeemed after it was issued.
    pub token_ttl: Duration,
    /// Tokens issued and not yet redeemed or expired, at most (the memory they may take).
    pub max_outstanding_tokens: usize,
    /// Subscriptions one token may name, and one connection may bind, at most.
    pub max_subscriptions_per_token: usize,
    pub max_bindings_per_connection: usize,
    /// Open WebSocket connections, at most; beyond it the upgrade is refused with 503.
    pub max_connections: usize,
    /// Messages waiting for one connection, at most; a client that lets it overflow is
    /// disconnected (close code 1008) instead of growing memory.
    pub send_queue_capacity: usize,
    /// Server pings this often...
    pub ping_interval: Duration,
    /// ...and closes a connection from which nothing (not even a pong) arrived this long.
    pub pong_timeout: Duration,
    /// Fallback for wake-ups from other instances: the store is looked at this often even
    /// when [`crate::WebSocketHub::notify_new_events`] is not called. Heartbeats are sent
    /// at this granularity too.
    pub poll_interval: Duration,
    /// How long the closing handshake may take before the socket is simply dropped.
    pub close_timeout: Duration,
    /// Notifications read from the store per query during replay and fan-out.
    pub page_size: i64,
    /// WebSocket buffers per connection: the read buffer is allocated up front, so it is
    /// what idle connections cost; `write_buffer_size` 0 writes every frame through.
    pub read_buffer_size: usize,
    pub write_buffer_size: usize,
    /// Largest message a client may send (commands are tiny).
    pub max_message_size: usize,
}

impl WebSocketConfig {
    /// Defaults for `tenant` behind `base_url`; the websocket URL is derived from the base
    /// URL (`http://host/fhir` → `ws://host/ws`).
    pub fn new(tenant: impl Into<String>, base_url: impl Into<String>) -> Self {
        let base_url: String = base_url.into();
        let base_url = base_url.trim_end_matches('/').to_owned();
        Self {
            tenant: tenant.into(),
            tenant_from_request: false,
            allow_classic_bind: true,
            websocket_url: websocket_url_for(&base_url),
            base_url,
            token_ttl: Duration::from_secs(60),
            max_outstanding_tokens: 100_000,
            max_subscriptions_per_token: 100,
            max_bindings_per_connection: 100,
            max_connections: 16_384,
            send_queue_capacity: 256,
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            close_timeout: Duration::from_secs(5),
            page_size: 100,
            read_buffer_size: 4 * 1024,
            write_buffer_size: 0,
            max_message_size: 64 * 1024,
        }
    }

    /// Refuses settings that cannot work, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("max_outstanding_tokens", self.max_outstanding_tokens),
            (
                "max_subscriptions_per_token",
                self.max_subscriptions_per_token,
            ),
            (
                "max_bindings_per_connection",
                self.max_bindings_per_connection,
            ),
            ("max_connections", self.max_connections),
            ("send_queue_capacity", self.send_queue_capacity),
            ("read_buffer_size", self.read_buffer_size),
            ("max_message_size", self.max_message_size),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("websocket.{name} must be at least 1"));
        }
        if self.page_size < 1 {
            return Err("websocket.page_size must be at least 1".into());
        }
        if self.ping_interval.is_zero() || self.poll_interval.is_zero() {
            return Err("websocket.ping_interval and poll_interval must be positive".into());
        }
        if self.pong_timeout < self.ping_interval {
            return Err("websocket.pong_timeout must be at least ping_interval".into());
        }
        if !(self.websocket_url.starts_with("ws://") || self.websocket_url.starts_with("wss://")) {
            return Err(format!(
                "websocket.websocket_url '{}' must be a ws:// or wss:// URL",
                self.websocket_url
            ));
        }
        Ok(())
    }
}

/// `http://host/fhir` → `ws://host/ws`; `https://…` → `wss://…`.
fn websocket_url_for(base_url: &str) -> String {
    let (scheme, rest) = match base_url.split_once("://") {
        Some(("https", rest)) => ("wss", rest),
        Some((_, rest)) => ("ws", rest),
        None => ("ws", base_url),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{authority}/ws")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_the_websocket_url_from_the_base_url() {
        assert_eq!(
            WebSocketConfig::new("t", "http://127.0.0.1:8080/fhir/").websocket_url,
            "ws://127.0.0.1:8080/ws"
        );
        assert_eq!(
            WebSocketConfig::new("t", "https://herald.example/fhir").websocket_url,
            "wss://herald.example/ws"
        );
    }

    #[test]
    fn defaults_are_valid_and_zero_queues_are_not() {
        let mut config = WebSocketConfig::new("t", "http://h/fhir");
        assert_eq!(config.validate(), Ok(()));
        config.send_queue_capacity = 0;
        assert!(config
            .validate()
            .expect_err("zero queue")
            .contains("send_queue_capacity"));
    }
}
