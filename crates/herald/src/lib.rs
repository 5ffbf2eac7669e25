//! Herald: an event-driven FHIR Subscription hub. This crate is the composition root: it
//! reads [`Settings`], builds the parts from the other crates in a fixed order and runs
//! them until told to stop.
//!
//! Start-up: settings → storage (migrated) → bus → subscription index (loaded) → matcher →
//! delivery worker → HTTP API. Shutdown: stop accepting requests, cancel the loops, let
//! deliveries in flight finish (bounded by their timeouts), exit. Unacknowledged change
//! events stay on the bus and are redelivered on the next start.
//!
//! Map of the workspace:
//! - `herald-fhir`: change events, Subscription reading, notification bundles.
//! - `herald-criteria`: search-URL criteria, topic triggers and filters.
//! - `herald-store`: SQLite / PostgreSQL storage and the notification log.
//! - `herald-bus`: embedded and JetStream change-event buses.
//! - `herald-matcher`: subscription index and the consume loop.
//! - `herald-delivery`: rest-hook and NATS-channel delivery.
//! - `herald-capture`: write facade and ingest.
//! - `herald-api`: the FHIR REST API.

pub mod cli;
mod explain;
pub mod settings;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use herald_api::AppState;
use herald_bus::{ChangeEventBus, EmbeddedBus, JetStreamBus, JetStreamConfig};
use herald_capture::Capture;
use herald_delivery::{
    DeliveryConfig, NatsChannel, NatsChannelConfig, RestHookWorker, RetrySchedule,
};
use herald_matcher::{DeliveryHandoff, IndexMaintainer, Matcher, SubscriptionIndex, TopicCatalog};
use herald_store::{PostgresStore, SqliteStore, Store};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Claims the matcher hands to the delivery worker, queued at most: a burst beyond this is
/// released by the matcher and claimed by the worker as usual.
const HANDOFF_QUEUE: usize = 1024;

pub use settings::{Mode, Settings};

/// Storage of the configured mode, migrated.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = match settings.mode()? {
        Mode::Embedded => {
            std::fs::create_dir_all(&settings.data_dir).with_context(|| {
                format!("creating data directory {}", settings.data_dir.display())
            })?;
            Arc::new(
                SqliteStore::open(&settings.data_dir.join("herald.sqlite"))
                    .await
                    .context("opening SQLite storage")?,
            )
        }
        Mode::Production { database_url, .. } => Arc::new(
            PostgresStore::connect(&database_url, settings.database_max_connections)
                .await
                .context("connecting to PostgreSQL")?,
        ),
    };
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

async fn open_bus(settings: &Settings) -> anyhow::Result<(Arc<dyn ChangeEventBus>, String)> {
    match settings.mode()? {
        Mode::Embedded => {
            let bus = EmbeddedBus::open(&settings.data_dir.join("bus.sqlite"))
                .await
                .context("opening the embedded bus")?;
            Ok((Arc::new(bus), "fhir.changes".into()))
        }
        Mode::Production { nats_url, .. } => {
            let n = &settings.nats;
            let config = JetStreamConfig {
                url: nats_url,
                stream: n.stream.clone(),
                subject_prefix: n.subject_prefix.clone(),
                consumer: n.consumer.clone(),
                dead_letter_subject: n.dead_letter_subject.clone(),
                control_subject: n.control_subject.clone(),
                duplicate_window: Duration::from_secs(n.duplicate_window_secs),
                max_age: Duration::from_secs(n.max_age_secs),
            };
            let bus = JetStreamBus::connect(config)
                .await
                .context("connecting to NATS JetStream")?;
            Ok((Arc::new(bus), n.subject_prefix.clone()))
        }
    }
}

/// Authentication and the endpoint policy from settings. Without an issuer: development
/// mode, announced loudly.
async fn build_auth(
    settings: &Settings,
) -> anyhow::Result<(
    herald_api::auth::AuthMode,
    Arc<herald_security::endpoint::EndpointPolicy>,
)> {
    use herald_security::auth::{JwksFetcher, KeySet, TokenValidator, TokenValidatorConfig};
    use herald_security::endpoint::EndpointPolicy;
    let a = &settings.auth;
    let Some(issuer) = &a.issuer else {
        tracing::warn!("DEVELOPMENT MODE: no auth.issuer configured, every request is trusted; http and loopback webhook endpoints are allowed");
        return Ok((
            herald_api::auth::AuthMode::Development,
            Arc::new(EndpointPolicy::development()),
        ));
    };
    let mut config =
        TokenValidatorConfig::new(issuer.clone(), a.audience.clone().unwrap_or_default());
    if let Some(claim) = &a.tenant_claim {
        config.tenant_claim = claim.clone();
    }
    let (validator, jwks) = match (&a.key_file, &a.jwks_url) {
        (Some(file), _) => (
            TokenValidator::from_key_file(config, file).context("reading auth.key_file")?,
            None,
        ),
        (None, Some(url)) => {
            let validator = TokenValidator::new(config, KeySet::default());
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?;
            let fetcher = JwksFetcher::new(url, client).context("auth.jwks_url")?;
            fetcher
                .refresh(&validator)
                .await
                .context("fetching the issuer's JWKS")?;
            (validator, Some(Arc::new(fetcher)))
        }
        (None, None) => anyhow::bail!("auth.issuer needs auth.jwks_url or auth.key_file"),
    };
    let e = &settings.endpoints;
    let policy = EndpointPolicy::production()
        .with_http_allowed(e.allow_http)
        .with_allow_list(e.allow_list.iter().map(String::as_str))
        .context("endpoints.allow_list")?;
    Ok((
        herald_api::auth::AuthMode::Tokens {
            validator: Arc::new(validator),
            jwks,
        },
        Arc::new(policy),
    ))
}

/// A running Herald.
pub struct Herald {
    pub local_addr: SocketAddr,
    pub base_url: String,
    pub mode: Mode,
    shutdown: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Herald {
    /// Builds and starts everything; returns once the API is listening.
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        settings.validate()?;
        let mode = settings.mode()?;
        let store = open_store(&settings).await?;
        let (bus, subject_prefix) = open_bus(&settings).await?;

        // Recover from a crash: events of writes whose publish was never confirmed go out
        // now; in the embedded mode (one instance by construction) delivery claims of the
        // dead process are released instead of waiting for their lease.
        let capture = Capture::new(Arc::clone(&store), Arc::clone(&bus), "herald-facade");
        let republished = capture
            .republish_pending()
            .await
            .context("republishing unconfirmed change events")?;
        if republished > 0 {
            tracing::warn!(
                republished,
                "published change events left unconfirmed by the previous run"
            );
        }
        if mode == Mode::Embedded {
            store
                .release_all_claims()
                .await
                .context("releasing delivery claims")?;
        }

        let catalog = TopicCatalog::new(Arc::clone(&store));
        let index = Arc::new(RwLock::new(SubscriptionIndex::default()));
        let shutdown = CancellationToken::new();
        let (audit, audit_writer) =
            herald_audit::AuditLog::start(Arc::clone(&store), shutdown.clone());
        let maintainer = Arc::new(IndexMaintainer {
            store: Arc::clone(&store),
            bus: Arc::clone(&bus),
            catalog: catalog.clone(),
            index: Arc::clone(&index),
            full_reload_every: Duration::from_secs(60),
            audit: Some(audit.clone()),
        });
        let loaded = maintainer
            .load_all()
            .await
            .context("loading subscriptions")?;
        tracing::info!(subscriptions = loaded, "subscription index loaded");

        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let local_addr = listener.local_addr()?;
        let base_url = settings
            .public_base_url
            .clone()
            .unwrap_or_else(|| format!("http://{local_addr}/fhir"));

        let delivery_wake = Arc::new(Notify::new());
        let mut tasks = Vec::new();
        tasks.push((
            "index",
            tokio::spawn(Arc::clone(&maintainer).run(shutdown.clone())),
        ));

        let consumer = bus
            .consumer()
            .await
            .context("opening the change-event consumer")?;
        let ws_config = {
            let mut c =
                herald_websocket::WebSocketConfig::new(settings.tenant.clone(), base_url.clone());
            if settings.auth.issuer.is_some() {
                // Token endpoints then sit behind authentication (see below), and the R4
                // classic `bind <id>`, which carries no credential, is off.
                c.tenant_from_request = true;
                c.allow_classic_bind = false;
            }
            if let Some(url) = &settings.websocket_url {
                c.websocket_url = url.clone();
            }
            c
        };
        tasks.push(("audit", audit_writer));
        // With authentication on, every subscription must carry its owner's grant.
        let access_guard = herald_delivery::AccessGuard::new(
            Arc::clone(&store),
            audit.clone(),
            settings.auth.issuer.is_some(),
        );
        let ws_hub = herald_websocket::WebSocketHub::with_access_guard(
            Arc::clone(&store),
            ws_config,
            access_guard.clone(),
        )
        .map_err(|e| anyhow::anyhow!("websocket settings: {e}"))?;
        tasks.push((
            "websocket",
            tokio::spawn(Arc::clone(&ws_hub).run(shutdown.clone())),
        ));
        let on_recorded: Arc<dyn Fn(bool) + Send + Sync> = {
            let delivery_wake = Arc::clone(&delivery_wake);
            let ws_hub = Arc::clone(&ws_hub);
            Arc::new(move |claims_left| {
                if claims_left {
                    delivery_wake.notify_one();
                }
                ws_hub.notify_new_events();
            })
        };
        // Subscriptions the matcher's batches claim go straight to the delivery worker.
        let (handoff_sender, handed_over) = tokio::sync::mpsc::channel(HANDOFF_QUEUE);
        let matcher = Matcher {
            store: Arc::clone(&store),
            index,
            on_recorded,
            subject_prefix,
            handoff: Some(DeliveryHandoff {
                claimed: handoff_sender,
                lease: Duration::from_secs(settings.delivery.claim_lease_secs),
            }),
        };
        tasks.push((
            "matcher",
            tokio::spawn(matcher.run(consumer, shutdown.clone())),
        ));

        let (auth, endpoint_policy) = build_auth(&settings).await?;
        let d = &settings.delivery;
        let delivery_config = DeliveryConfig {
            base_url: base_url.clone(),
            retry_schedule: RetrySchedule {
                delays: d
                    .retry_schedule_secs
                    .iter()
                    .map(|s| Duration::from_secs(*s))
                    .collect(),
            },
            default_timeout: Duration::from_secs(d.default_timeout_secs),
            max_concurrency: d.max_concurrency,
            error_after_failures: d.error_after_failures,
            poll_interval: Duration::from_millis(d.poll_interval_ms),
            default_max_count: d.default_max_count,
            claim_lease: Duration::from_secs(d.claim_lease_secs),
            endpoint_policy: Arc::clone(&endpoint_policy),
        };
        let worker = RestHookWorker::new(
            Arc::clone(&store),
            delivery_config,
            Arc::clone(&delivery_wake),
            access_guard.clone(),
        )
        .context("building the HTTP client")?;
        // NATS mode: the NATS channel (notification stream created if missing). Embedded:
        // none, and the API refuses NATS-channel subscriptions.
        let nats_channel = match &mode {
            Mode::Embedded => None,
            Mode::Production { nats_url, .. } => {
                let n = &settings.nats;
                let channel = NatsChannel::connect(NatsChannelConfig {
                    url: nats_url.clone(),
                    stream: n.notify_stream.clone(),
                    subject_prefix: n.notify_subject_prefix.clone(),
                    duplicate_window: Duration::from_secs(n.duplicate_window_secs),
                    max_age: Duration::from_secs(n.notify_max_age_secs),
                })
                .await
                .context("setting up the NATS channel")?;
                Some(channel)
            }
        };
        let nats_subject_prefix = nats_channel.as_ref().map(|c| c.subject_prefix().to_owned());
        let worker = match nats_channel {
            Some(channel) => worker.with_nats_channel(channel),
            None => worker,
        };
        tasks.push((
            "delivery",
            tokio::spawn(worker.run_with_handoff(shutdown.clone(), Some(handed_over))),
        ));

        let retention = settings.retention.clone();
        let prune_store = Arc::clone(&store);
        let prune_shutdown = shutdown.clone();
        tasks.push((
            "retention",
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(
                    retention.prune_interval_secs.max(1),
                ));
                loop {
                    tokio::select! {
                        _ = prune_shutdown.cancelled() => return,
                        _ = every.tick() => {}
                    }
                    let before = chrono::Utc::now().timestamp_millis()
                        - i64::try_from(retention.max_age_secs.saturating_mul(1000))
                            .unwrap_or(i64::MAX);
                    let keep =
                        i64::try_from(retention.max_events_per_subscription).unwrap_or(i64::MAX);
                    match prune_store.prune_notifications(before, keep).await {
                        Ok(0) => {}
                        Ok(removed) => tracing::info!(removed, "notification log pruned"),
                        Err(e) => tracing::warn!(error = %e, "notification log pruning failed"),
                    }
                }
            }),
        ));

        let state = Arc::new(AppState {
            store: Arc::clone(&store),
            bus: Arc::clone(&bus),
            capture,
            index: maintainer,
            auth,
            endpoint_policy,
            catalog,
            base_url: base_url.clone(),
            tenant: settings.tenant.clone(),
            delivery_wake,
            audit,
            access_guard,
            limits: herald_api::limits::Limits {
                max_subscriptions_per_client: settings.limits.max_subscriptions_per_client,
                max_filters_per_subscription: settings.limits.max_filters_per_subscription,
                max_expression_bytes: settings.limits.max_expression_bytes,
            },
            rate_limit: herald_api::limits::RateLimit::new(
                settings.limits.requests_per_second,
                settings.limits.burst,
            ),
            nats_subject_prefix,
            mode: match mode {
                Mode::Embedded => "embedded",
                Mode::Production { .. } => "production",
            },
        });
        let ws_routes = herald_websocket::router(ws_hub)
            .route_layer(axum::middleware::from_fn_with_state(
                Arc::clone(&state),
                herald_api::auth::bind_tenant,
            ))
            .route_layer(axum::middleware::from_fn_with_state(
                Arc::clone(&state),
                herald_api::limits::rate_limit,
            ));
        let app = herald_api::router(state)
            .merge(ws_routes)
            .layer(tower_http::trace::TraceLayer::new_for_http());
        let server_shutdown = shutdown.clone();
        tasks.push((
            "http",
            tokio::spawn(async move {
                let serve = axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
                )
                .with_graceful_shutdown(async move { server_shutdown.cancelled().await });
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "HTTP server stopped");
                }
            }),
        ));
        Ok(Self {
            local_addr,
            base_url,
            mode,
            shutdown,
            tasks,
        })
    }

    /// A token that stops this Herald when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops taking work and waits (at most `deadline`) for the parts to finish.
    pub async fn shutdown(self, deadline: Duration) {
        self.shutdown.cancel();
        self.wait(deadline).await;
    }

    /// Waits for the parts to finish after the token was cancelled.
    pub async fn wait(self, deadline: Duration) {
        let all = async {
            for (name, task) in self.tasks {
                if let Err(e) = task.await {
                    tracing::error!(task = name, error = %e, "task ended abnormally");
                }
            }
        };
        if tokio::time::timeout(deadline, all).await.is_err() {
            tracing::warn!(
                "shutdown deadline passed; exiting with work in flight (it will be redone)"
            );
        }
    }
}
