//! Configuration: defaults → TOML file (`--config`) → `HERALD_*` environment → command-line
//! flags, validated once at start. Nested keys use `__` in the environment
//! (`HERALD_NATS__STREAM`). The environment is passed in as data so tests can inject it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Directory of the embedded default's SQLite files.
    pub data_dir: PathBuf,
    /// FHIR base URL as subscribers see it (default `http://<listen>/fhir`).
    pub public_base_url: Option<String>,
    /// Tenant of requests whose token names none (every request in development mode).
    pub tenant: String,
    /// WebSocket URL clients are given by `$get-ws-binding-token` (default derived from
    /// the base URL: `ws(s)://<host>/ws`).
    pub websocket_url: Option<String>,
    /// NATS server; with `database_url`, selects production mode.
    pub nats_url: Option<String>,
    /// PostgreSQL URL; with `nats_url`, selects production mode.
    pub database_url: Option<String>,
    pub database_max_connections: u32,
    pub nats: NatsSettings,
    pub delivery: DeliverySettings,
    pub retention: RetentionSettings,
    pub auth: AuthSettings,
    pub endpoints: EndpointSettings,
    pub limits: LimitSettings,
    /// `tracing` filter, e.g. `info` or `herald_delivery=debug,info`.
    pub log: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSettings {
    pub stream: String,
    pub subject_prefix: String,
    pub consumer: String,
    pub dead_letter_subject: String,
    pub control_subject: String,
    pub duplicate_window_secs: u64,
    pub max_age_secs: u64,
    /// The NATS channel: notifications are published to `<notify_subject_prefix>.<tenant>.…`.
    pub notify_subject_prefix: String,
    /// JetStream stream over `<notify_subject_prefix>.>`, created at start; empty when the
    /// operator provides a stream covering those subjects.
    pub notify_stream: String,
    /// How long the notification stream keeps messages (when Herald creates it).
    pub notify_max_age_secs: u64,
}

/// OAuth 2.0 bearer tokens (SMART on FHIR). Without an issuer Herald runs in development
/// mode: every request is trusted and http/loopback endpoints are allowed (it says so).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Expected `iss`; setting it turns authentication on.
    pub issuer: Option<String>,
    /// Expected `aud` (required with an issuer).
    pub audience: Option<String>,
    /// JWKS document URL of the issuer.
    pub jwks_url: Option<String>,
    /// Or a local JWKS / PEM public key file.
    pub key_file: Option<PathBuf>,
    /// Token claim naming the tenant (default `tenant`).
    pub tenant_claim: Option<String>,
    /// Production mode refuses to start without an issuer unless this is true.
    pub allow_unauthenticated: bool,
}

/// Which rest-hook endpoints may be registered and reached (outside development mode).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct EndpointSettings {
    /// CIDRs, IPs or exact host names let through although private.
    pub allow_list: Vec<String>,
    /// Allow plain http endpoints (never for full-resource content).
    pub allow_http: bool,
}

/// What one client may ask of Herald. Rate limits apply per OAuth client (per peer address
/// without credentials) to the subscriber-facing API, not to the write facade or ingest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Sustained requests per second per client; 0 turns rate limiting off.
    pub requests_per_second: u32,
    /// Requests a client may make at once before the rate applies.
    pub burst: u32,
    pub max_subscriptions_per_client: u32,
    pub max_filters_per_subscription: usize,
    /// Bytes in one criteria string, filter or topic expression.
    pub max_expression_bytes: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        let limits = herald_api::limits::Limits::default();
        Self {
            requests_per_second: 50,
            burst: 100,
            max_subscriptions_per_client: limits.max_subscriptions_per_client,
            max_filters_per_subscription: limits.max_filters_per_subscription,
            max_expression_bytes: limits.max_expression_bytes,
        }
    }
}

/// How long the notification log keeps *delivered* events (for `$events` and replay).
/// Undelivered events are never removed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    pub max_age_secs: u64,
    pub max_events_per_subscription: u64,
    pub prune_interval_secs: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            max_age_secs: 7 * 24 * 3600,
            max_events_per_subscription: 100_000,
            prune_interval_secs: 600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    pub max_concurrency: usize,
    pub default_timeout_secs: u64,
    pub error_after_failures: u32,
    /// Seconds to wait before each retry; the subscription goes `off` after the last.
    pub retry_schedule_secs: Vec<u64>,
    pub default_max_count: u32,
    pub poll_interval_ms: u64,
    /// How long a subscription claimed for delivery stays claimed if its instance dies;
    /// attempts are cut short before it runs out.
    pub claim_lease_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./herald-data"),
            public_base_url: None,
            tenant: "default".into(),
            websocket_url: None,
            nats_url: None,
            database_url: None,
            database_max_connections: 16,
            nats: NatsSettings::default(),
            delivery: DeliverySettings::default(),
            retention: RetentionSettings::default(),
            auth: AuthSettings::default(),
            endpoints: EndpointSettings::default(),
            limits: LimitSettings::default(),
            log: "info".into(),
        }
    }
}

impl Default for NatsSettings {
    fn default() -> Self {
        let js = herald_bus::JetStreamConfig::new("");
        let notify = herald_delivery::NatsChannelConfig::new("");
        Self {
            stream: js.stream,
            subject_prefix: js.subject_prefix,
            consumer: js.consumer,
            dead_letter_subject: js.dead_letter_subject,
            control_subject: js.control_subject,
            duplicate_window_secs: js.duplicate_window.as_secs(),
            max_age_secs: js.max_age.as_secs(),
            notify_subject_prefix: notify.subject_prefix,
            notify_stream: notify.stream,
            notify_max_age_secs: notify.max_age.as_secs(),
        }
    }
}

impl Default for DeliverySettings {
    fn default() -> Self {
        let d = herald_delivery::DeliveryConfig::default();
        Self {
            max_concurrency: d.max_concurrency,
            default_timeout_secs: d.default_timeout.as_secs(),
            error_after_failures: d.error_after_failures,
            retry_schedule_secs: d
                .retry_schedule
                .delays
                .iter()
                .map(|d| d.as_secs())
                .collect(),
            default_max_count: d.default_max_count,
            poll_interval_ms: u64::try_from(d.poll_interval.as_millis()).unwrap_or(500),
            claim_lease_secs: d.claim_lease.as_secs(),
        }
    }
}

impl NatsSettings {
    /// The notification subjects must be literal tokens and share nothing with Herald's own
    /// subjects: otherwise a subscriber naming a subject under its tenant namespace could make
    /// Herald publish change events or control notices (e.g. a tenant called `changes` under
    /// a prefix `fhir`).
    fn validate_notify_subjects(&self) -> Result<(), SettingsError> {
        use herald_fhir::subscription::nats::{is_subject_token, subjects_overlap};
        let prefix = &self.notify_subject_prefix;
        if !prefix.split('.').all(is_subject_token) {
            return Err(SettingsError::Invalid(format!(
                "nats.notify_subject_prefix '{prefix}' must be dot-separated tokens of [A-Za-z0-9_-]"
            )));
        }
        for (name, other) in [
            ("nats.subject_prefix", &self.subject_prefix),
            ("nats.dead_letter_subject", &self.dead_letter_subject),
            ("nats.control_subject", &self.control_subject),
        ] {
            if subjects_overlap(prefix, other) {
                return Err(SettingsError::Invalid(format!(
                    "nats.notify_subject_prefix '{prefix}' overlaps {name} '{other}'"
                )));
            }
        }
        Ok(())
    }
}

/// Which way Herald runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// SQLite files under `data_dir` and the in-process durable bus.
    Embedded,
    /// NATS JetStream and PostgreSQL.
    Production {
        nats_url: String,
        database_url: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration: {0}")]
    Figment(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads settings from defaults, an optional TOML file and `env` (name, value) pairs.
    pub fn load(file: Option<&Path>, env: &[(String, String)]) -> Result<Self, SettingsError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(SettingsError::Invalid(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        let vars: Vec<(String, String)> = env
            .iter()
            .filter(|(k, _)| k.starts_with("HERALD_"))
            .cloned()
            .collect();
        // figment's own Env provider reads the process environment; this one reads only the
        // pairs it was given, with the same rules (prefix HERALD_, `__` nests, lowercase).
        let figment = figment.merge(EnvPairs { vars });
        let settings: Settings = figment.extract().map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        self.mode()?;
        if self.delivery.max_concurrency == 0 {
            return Err(SettingsError::Invalid(
                "delivery.max_concurrency must be at least 1".into(),
            ));
        }
        if let Some(issuer) = &self.auth.issuer {
            if issuer.is_empty() || self.auth.audience.as_deref().unwrap_or("").is_empty() {
                return Err(SettingsError::Invalid(
                    "auth.issuer needs auth.audience".into(),
                ));
            }
            if self.auth.jwks_url.is_none() && self.auth.key_file.is_none() {
                return Err(SettingsError::Invalid(
                    "auth.issuer needs auth.jwks_url or auth.key_file".into(),
                ));
            }
        } else if matches!(self.mode()?, Mode::Production { .. })
            && !self.auth.allow_unauthenticated
        {
            return Err(SettingsError::Invalid(
                "production mode needs auth.issuer (HERALD_AUTH__ISSUER) or, knowingly, auth.allow_unauthenticated = true".into(),
            ));
        }
        if self.delivery.claim_lease_secs <= self.delivery.default_timeout_secs {
            return Err(SettingsError::Invalid(
                "delivery.claim_lease_secs must be longer than delivery.default_timeout_secs"
                    .into(),
            ));
        }
        if self.delivery.retry_schedule_secs.is_empty() {
            return Err(SettingsError::Invalid(
                "delivery.retry_schedule_secs needs at least one delay".into(),
            ));
        }
        if let Some(base) = &self.public_base_url {
            if !(base.starts_with("http://") || base.starts_with("https://")) || base.ends_with('/')
            {
                return Err(SettingsError::Invalid(
                    "public_base_url must be an http(s) URL without a trailing slash".into(),
                ));
            }
        }
        self.nats.validate_notify_subjects()?;
        if self.tenant.is_empty()
            || !self
                .tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(SettingsError::Invalid(
                "tenant must be [A-Za-z0-9_-]+".into(),
            ));
        }
        Ok(())
    }

    pub fn mode(&self) -> Result<Mode, SettingsError> {
        match (&self.nats_url, &self.database_url) {
            (None, None) => Ok(Mode::Embedded),
            (Some(n), Some(d)) => Ok(Mode::Production {
                nats_url: n.clone(),
                database_url: d.clone(),
            }),
            (Some(_), None) => Err(SettingsError::Invalid(
                "nats_url is set but database_url is not: production mode needs both".into(),
            )),
            (None, Some(_)) => Err(SettingsError::Invalid(
                "database_url is set but nats_url is not: production mode needs both".into(),
            )),
        }
    }
}

/// A figment provider over captured environment pairs (not the live process environment).
struct EnvPairs {
    vars: Vec<(String, String)>,
}

impl figment::Provider for EnvPairs {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("HERALD_* environment")
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let mut dict = figment::value::Dict::new();
        for (key, value) in &self.vars {
            let Some(rest) = key.strip_prefix("HERALD_") else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
            let parsed: figment::value::Value = value
                .parse()
                .unwrap_or_else(|_| figment::value::Value::from(value.clone()));
            insert_path(&mut dict, &path, parsed);
        }
        Ok(figment::Profile::Default.collect(dict))
    }
}

fn insert_path(dict: &mut figment::value::Dict, path: &[String], value: figment::value::Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| figment::value::Value::from(figment::value::Dict::new()));
            if let figment::value::Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_embedded_mode() {
        let s = Settings::load(None, &[]).expect("defaults");
        assert_eq!(s.mode().expect("mode"), Mode::Embedded);
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn environment_selects_production_and_sets_nested_keys() {
        let s = Settings::load(
            None,
            &env(&[
                ("HERALD_NATS_URL", "nats://127.0.0.1:4222"),
                ("HERALD_DATABASE_URL", "postgres://x@127.0.0.1/db"),
                ("HERALD_NATS__STREAM", "OTHER"),
                ("HERALD_DELIVERY__MAX_CONCURRENCY", "8"),
                ("HERALD_AUTH__ALLOW_UNAUTHENTICATED", "true"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .expect("settings");
        assert!(matches!(s.mode().expect("mode"), Mode::Production { .. }));
        assert_eq!(s.nats.stream, "OTHER");
        assert_eq!(s.delivery.max_concurrency, 8);
    }

    #[test]
    fn production_without_an_issuer_is_refused_unless_told_otherwise() {
        let production = [
            ("HERALD_NATS_URL", "nats://x"),
            ("HERALD_DATABASE_URL", "postgres://x/y"),
        ];
        let err = Settings::load(None, &env(&production)).expect_err("needs an issuer");
        assert!(err.to_string().contains("auth.issuer"), "{err}");
        let issuer_without_keys = [
            production[0],
            production[1],
            ("HERALD_AUTH__ISSUER", "https://idp"),
            ("HERALD_AUTH__AUDIENCE", "herald"),
        ];
        assert!(
            Settings::load(None, &env(&issuer_without_keys)).is_err(),
            "an issuer needs keys"
        );
    }

    #[test]
    fn the_shipped_production_example_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/herald.toml");
        let s = Settings::load(Some(&path), &[]).expect("deploy/herald.toml is valid");
        assert!(matches!(s.mode().expect("mode"), Mode::Production { .. }));
        assert!(s.auth.issuer.is_some());
    }

    #[test]
    fn notification_subjects_must_not_overlap_heralds_own() {
        for (key, value) in [
            ("HERALD_NATS__NOTIFY_SUBJECT_PREFIX", "fhir"),
            ("HERALD_NATS__NOTIFY_SUBJECT_PREFIX", "herald"),
            ("HERALD_NATS__NOTIFY_SUBJECT_PREFIX", "herald.notify.*"),
            ("HERALD_NATS__NOTIFY_SUBJECT_PREFIX", "herald..notify"),
        ] {
            let err = Settings::load(None, &env(&[(key, value)])).expect_err(value);
            assert!(
                err.to_string().contains("notify_subject_prefix"),
                "{value}: {err}"
            );
        }
        let s = Settings::load(
            None,
            &env(&[("HERALD_NATS__NOTIFY_SUBJECT_PREFIX", "pharmacy.notify")]),
        )
        .expect("a distinct prefix");
        assert_eq!(s.nats.notify_subject_prefix, "pharmacy.notify");
        assert_eq!(Settings::default().nats.notify_stream, "HERALD_NOTIFY");
    }

    #[test]
    fn half_a_production_configuration_is_refused() {
        let err =
            Settings::load(None, &env(&[("HERALD_NATS_URL", "nats://x")])).expect_err("needs both");
        assert!(err.to_string().contains("needs both"));
    }

    #[test]
    fn a_toml_file_is_read_and_unknown_keys_refused() {
        let dir = std::env::temp_dir().join(format!("herald-settings-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let good = dir.join("good.toml");
        std::fs::write(
            &good,
            "listen = \"127.0.0.1:9999\"\n[delivery]\nerror_after_failures = 5\n",
        )
        .expect("write");
        let s = Settings::load(Some(&good), &[]).expect("file");
        assert_eq!(s.listen.port(), 9999);
        assert_eq!(s.delivery.error_after_failures, 5);
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "lissten = \"x\"\n").expect("write");
        assert!(Settings::load(Some(&bad), &[]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
