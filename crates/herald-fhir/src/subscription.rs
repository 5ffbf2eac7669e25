//! The R4 `Subscription` as Herald understands it.
//!
//! Two kinds share the R4 resource: classic criteria-based subscriptions (`criteria` is a
//! search URL) and R4 Backport topic-based ones (`criteria` is a SubscriptionTopic
//! canonical, with the Backport IG's extensions). [`SubscriptionSpec::from_resource`] reads
//! either, and refuses — naming the element — anything Herald would otherwise have to
//! ignore: unknown extensions on the criteria, channel or payload, unsupported channel
//! types, MIME types, FHIR versions or content levels. Whether a topic exists or a search
//! parameter is known is decided by the criteria engine, not here.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::outcome::{IssueType, OperationOutcome};
use crate::BACKPORT_SD;

/// Herald's extra filter on a Subscription: a CEL expression over `current`, `previous`
/// and `event`, carried in `Subscription._criteria.extension` beside the Backport filter
/// criteria and ANDed with them.
pub const EXT_CEL_FILTER: &str =
    "https://herald.health/fhir/StructureDefinition/subscription-cel-filter";
pub const EXT_FILTER_CRITERIA: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria";
pub const EXT_PAYLOAD_CONTENT: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content";
pub const EXT_HEARTBEAT_PERIOD: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period";
pub const EXT_TIMEOUT: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-timeout";
pub const EXT_MAX_COUNT: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-max-count";
pub const EXT_CHANNEL_TYPE: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-channel-type";
/// Herald's extension on `Subscription.channel` carrying a Standard Webhooks signing secret
/// (`whsec_` + base64 of 24–64 bytes). Several during key rotation: each signs.
pub const EXT_SIGNING_SECRET: &str =
    "https://herald.health/fhir/StructureDefinition/webhook-signing-secret";
/// What secrets and header values are replaced by when a Subscription is read back.
pub const REDACTED: &str = "***";
pub const PROFILE_BACKPORT_SUBSCRIPTION: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription";

/// Largest `backport-timeout` Herald honours, in seconds.
pub const MAX_TIMEOUT_SECONDS: u32 = 120;

/// `Subscription.status` (http://hl7.org/fhir/subscription-status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionStatus {
    Requested,
    Active,
    Error,
    Off,
    EnteredInError,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Active => "active",
            Self::Error => "error",
            Self::Off => "off",
            Self::EnteredInError => "entered-in-error",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        Some(match code {
            "requested" => Self::Requested,
            "active" => Self::Active,
            "error" => Self::Error,
            "off" => Self::Off,
            "entered-in-error" => Self::EnteredInError,
            _ => return None,
        })
    }

    /// Whether events are matched and counted for a subscription in this status. Per the
    /// Backport IG a subscription in `error` still counts events.
    pub fn counts_events(self) -> bool {
        matches!(self, Self::Requested | Self::Active | Self::Error)
    }
}

/// The notification channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelType {
    RestHook,
    Websocket,
    Email,
    Sms,
    Message,
    /// Herald's custom NATS channel ([`nats`]): `backport-channel-type` with
    /// [`nats::CHANNEL_TYPE_SYSTEM`]`|nats`. Never an R4 `channel.type` code by itself.
    Nats,
}

impl ChannelType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RestHook => "rest-hook",
            Self::Websocket => "websocket",
            Self::Email => "email",
            Self::Sms => "sms",
            Self::Message => "message",
            Self::Nats => nats::NATS_CODE,
        }
    }

    /// Reads an R4 `channel.type` code (custom channel types come from the extension).
    pub fn parse(code: &str) -> Option<Self> {
        Some(match code {
            "rest-hook" => Self::RestHook,
            "websocket" => Self::Websocket,
            "email" => Self::Email,
            "sms" => Self::Sms,
            "message" => Self::Message,
            _ => return None,
        })
    }
}

/// Backport `backport-payload-content`: how much of the resource a notification carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadContent {
    Empty,
    IdOnly,
    FullResource,
}

impl PayloadContent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::IdOnly => "id-only",
            Self::FullResource => "full-resource",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        Some(match code {
            "empty" => Self::Empty,
            "id-only" => Self::IdOnly,
            "full-resource" => Self::FullResource,
            _ => return None,
        })
    }
}

/// What the subscription is interested in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionKind {
    /// R4 Backport topic-based: the topic canonical and the `backport-filter-criteria`.
    Topic {
        topic_url: String,
        filters: Vec<String>,
    },
    /// Classic R4: a search URL evaluated against the new version of each resource.
    Criteria { criteria: String },
}

/// A Subscription, read and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionSpec {
    pub kind: SubscriptionKind,
    pub status: SubscriptionStatus,
    pub channel_type: ChannelType,
    pub endpoint: Option<String>,
    /// `channel.payload` as given (a MIME type, possibly with `fhirVersion`).
    pub payload: Option<String>,
    /// `backport-payload-content`; when present the subscription receives Backport
    /// notification bundles even if it is criteria-based.
    pub content: Option<PayloadContent>,
    /// `channel.header`, split into name and value.
    pub headers: Vec<(String, String)>,
    pub heartbeat_period: Option<u32>,
    pub timeout: Option<u32>,
    pub max_count: Option<u32>,
    pub end: Option<DateTime<Utc>>,
    /// Standard Webhooks signing secrets (`whsec_...`), newest first.
    pub signing_secrets: Vec<String>,
    /// [`EXT_CEL_FILTER`]: an extra CEL filter, ANDed with the criteria and filters.
    pub cel_filter: Option<String>,
}

/// Why a Subscription was refused; rendered as an `OperationOutcome`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{expression}: {message}")]
pub struct SubscriptionSpecError {
    pub code: IssueType,
    pub expression: String,
    pub message: String,
}

impl SubscriptionSpecError {
    pub fn new(code: IssueType, expression: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            expression: expression.to_owned(),
            message: message.into(),
        }
    }

    pub fn outcome(&self) -> OperationOutcome {
        OperationOutcome::error(self.code, format!("{}: {}", self.expression, self.message))
            .at(self.expression.clone())
    }
}

type SpecResult<T> = Result<T, SubscriptionSpecError>;

fn invalid(expression: &str, message: impl Into<String>) -> SubscriptionSpecError {
    SubscriptionSpecError::new(IssueType::Invalid, expression, message)
}

fn unsupported(expression: &str, message: impl Into<String>) -> SubscriptionSpecError {
    SubscriptionSpecError::new(IssueType::NotSupported, expression, message)
}

/// The `extension` array of `value`, checked to be an array of objects with a `url`.
fn extensions<'a>(value: Option<&'a Value>, at: &str) -> SpecResult<Vec<(&'a str, &'a Value)>> {
    let Some(list) = value.and_then(|v| v.get("extension")) else {
        return Ok(vec![]);
    };
    let list = list
        .as_array()
        .ok_or_else(|| invalid(at, "extension must be an array"))?;
    list.iter()
        .map(|ext| {
            let url = ext
                .get("url")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(at, "every extension needs a url"))?;
            Ok((url, ext))
        })
        .collect()
}

fn reject_modifier_extensions(value: Option<&Value>, at: &str) -> SpecResult<()> {
    if value.and_then(|v| v.get("modifierExtension")).is_some() {
        return Err(unsupported(
            at,
            "modifierExtension is not supported; Herald cannot honour it",
        ));
    }
    Ok(())
}

fn unsigned(ext: &Value, key: &str, at: &str) -> SpecResult<u32> {
    ext.get(key)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| invalid(at, format!("{key} must be a non-negative integer")))
}

impl SubscriptionSpec {
    /// Reads an R4 `Subscription` resource. Every refusal names the element at fault.
    pub fn from_resource(resource: &Value) -> SpecResult<Self> {
        if !resource.is_object() {
            return Err(SubscriptionSpecError::new(
                IssueType::Structure,
                "Subscription",
                "must be a JSON object",
            ));
        }
        match resource.get("resourceType").and_then(Value::as_str) {
            Some("Subscription") => {}
            other => {
                return Err(invalid(
                    "Subscription.resourceType",
                    format!(
                        "expected 'Subscription', got {}",
                        other.unwrap_or("nothing")
                    ),
                ))
            }
        }
        reject_modifier_extensions(Some(resource), "Subscription")?;

        let status = match resource.get("status").and_then(Value::as_str) {
            None => {
                return Err(SubscriptionSpecError::new(
                    IssueType::Required,
                    "Subscription.status",
                    "is required",
                ))
            }
            Some(code) => SubscriptionStatus::parse(code).ok_or_else(|| {
                invalid("Subscription.status", format!("unknown status '{code}'"))
            })?,
        };
        match resource.get("reason") {
            Some(Value::String(reason)) if !reason.trim().is_empty() => {}
            _ => {
                return Err(SubscriptionSpecError::new(
                    IssueType::Required,
                    "Subscription.reason",
                    "is required (R4 1..1)",
                ))
            }
        }
        let end = match resource.get("end") {
            None => None,
            Some(Value::String(text)) => Some(
                DateTime::parse_from_rfc3339(text)
                    .map_err(|_| {
                        invalid(
                            "Subscription.end",
                            format!("'{text}' is not a FHIR instant"),
                        )
                    })?
                    .with_timezone(&Utc),
            ),
            Some(_) => return Err(invalid("Subscription.end", "must be a FHIR instant string")),
        };

        let (kind, cel_filter) = Self::read_kind(resource)?;
        let channel = resource.get("channel").ok_or_else(|| {
            SubscriptionSpecError::new(IssueType::Required, "Subscription.channel", "is required")
        })?;
        if !channel.is_object() {
            return Err(invalid("Subscription.channel", "must be an object"));
        }
        reject_modifier_extensions(Some(channel), "Subscription.channel")?;

        let channel_type = Self::read_channel_type(channel)?;
        let mut heartbeat_period = None;
        let mut timeout = None;
        let mut max_count = None;
        let mut signing_secrets = Vec::new();
        for (url, ext) in extensions(Some(channel), "Subscription.channel.extension")? {
            let at = "Subscription.channel.extension";
            match url {
                EXT_HEARTBEAT_PERIOD => {
                    heartbeat_period = Some(unsigned(ext, "valueUnsignedInt", at)?)
                }
                EXT_TIMEOUT => timeout = Some(unsigned(ext, "valueUnsignedInt", at)?),
                EXT_MAX_COUNT => {
                    let n = unsigned(ext, "valuePositiveInt", at)?;
                    if n == 0 {
                        return Err(invalid(at, "backport-max-count must be at least 1"));
                    }
                    max_count = Some(n);
                }
                EXT_SIGNING_SECRET => {
                    let secret = ext
                        .get("valueString")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    if secret != REDACTED && signing_key(secret).is_none() {
                        return Err(invalid(at, "webhook-signing-secret must be whsec_ followed by base64 of 24 to 64 bytes"));
                    }
                    signing_secrets.push(secret.to_owned());
                }
                other => {
                    return Err(unsupported(
                        at,
                        format!("extension '{other}' is not supported"),
                    ))
                }
            }
        }
        if heartbeat_period == Some(0) {
            return Err(invalid(
                "Subscription.channel.extension",
                "backport-heartbeat-period must be at least 1 second",
            ));
        }
        if let Some(t) = timeout {
            if t == 0 || t > MAX_TIMEOUT_SECONDS {
                return Err(unsupported(
                    "Subscription.channel.extension",
                    format!("backport-timeout must be between 1 and {MAX_TIMEOUT_SECONDS} seconds"),
                ));
            }
        }

        let endpoint = match channel.get("endpoint") {
            None => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(_) => {
                return Err(invalid(
                    "Subscription.channel.endpoint",
                    "must be a url string",
                ))
            }
        };
        let payload = match channel.get("payload") {
            None => None,
            Some(Value::String(mime)) => {
                check_payload_mime(mime)?;
                Some(mime.clone())
            }
            Some(_) => {
                return Err(invalid(
                    "Subscription.channel.payload",
                    "must be a MIME type string",
                ))
            }
        };
        let mut content = None;
        let payload_meta = channel.get("_payload");
        reject_modifier_extensions(payload_meta, "Subscription.channel.payload")?;
        for (url, ext) in extensions(payload_meta, "Subscription.channel.payload.extension")? {
            let at = "Subscription.channel.payload.extension";
            match url {
                EXT_PAYLOAD_CONTENT => {
                    let code = ext
                        .get("valueCode")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid(at, "backport-payload-content needs a valueCode"))?;
                    content = Some(PayloadContent::parse(code).ok_or_else(|| {
                        unsupported(at, format!("payload content '{code}' is not supported (empty | id-only | full-resource)"))
                    })?);
                }
                other => {
                    return Err(unsupported(
                        at,
                        format!("extension '{other}' is not supported"),
                    ))
                }
            }
        }
        if content.is_some() && payload.is_none() {
            return Err(SubscriptionSpecError::new(
                IssueType::Required,
                "Subscription.channel.payload",
                "backport-payload-content needs channel.payload (the MIME type)",
            ));
        }
        if let SubscriptionKind::Topic { .. } = kind {
            if payload.is_none() {
                return Err(SubscriptionSpecError::new(
                    IssueType::Required,
                    "Subscription.channel.payload",
                    "is required for a topic-based subscription (backport-subscription profile)",
                ));
            }
            if content.is_none() {
                return Err(SubscriptionSpecError::new(
                    IssueType::Required,
                    "Subscription.channel.payload.extension",
                    "backport-payload-content is required for a topic-based subscription",
                ));
            }
        }

        let headers = Self::read_headers(channel)?;
        let spec = SubscriptionSpec {
            kind,
            status,
            channel_type,
            endpoint,
            payload,
            content,
            headers,
            heartbeat_period,
            timeout,
            max_count,
            end,
            signing_secrets,
            cel_filter,
        };
        spec.check_channel()?;
        Ok(spec)
    }

    fn read_kind(resource: &Value) -> SpecResult<(SubscriptionKind, Option<String>)> {
        let criteria = match resource.get("criteria") {
            Some(Value::String(c)) if !c.trim().is_empty() => c.trim().to_owned(),
            Some(Value::String(_)) | None => {
                return Err(SubscriptionSpecError::new(
                    IssueType::Required,
                    "Subscription.criteria",
                    "is required",
                ))
            }
            Some(_) => return Err(invalid("Subscription.criteria", "must be a string")),
        };
        let criteria_meta = resource.get("_criteria");
        reject_modifier_extensions(criteria_meta, "Subscription.criteria")?;
        let mut filters = Vec::new();
        let mut cel_filter = None;
        for (url, ext) in extensions(criteria_meta, "Subscription.criteria.extension")? {
            if url == EXT_CEL_FILTER {
                match ext.get("valueString").and_then(Value::as_str) {
                    Some(f) if !f.trim().is_empty() && cel_filter.is_none() => {
                        cel_filter = Some(f.trim().to_owned());
                    }
                    Some(f) if !f.trim().is_empty() => {
                        return Err(invalid(
                            "Subscription.criteria.extension",
                            format!("only one {EXT_CEL_FILTER} extension is allowed"),
                        ))
                    }
                    _ => {
                        return Err(invalid(
                            "Subscription.criteria.extension",
                            "subscription-cel-filter needs a non-empty valueString",
                        ))
                    }
                }
                continue;
            }
            if url != EXT_FILTER_CRITERIA {
                return Err(unsupported(
                    "Subscription.criteria.extension",
                    format!("extension '{url}' is not supported (expected {EXT_FILTER_CRITERIA} or {EXT_CEL_FILTER})"),
                ));
            }
            match ext.get("valueString").and_then(Value::as_str) {
                Some(f) if !f.trim().is_empty() => filters.push(f.trim().to_owned()),
                _ => {
                    return Err(invalid(
                        "Subscription.criteria.extension",
                        "backport-filter-criteria needs a non-empty valueString",
                    ))
                }
            }
        }
        let declares_backport = resource
            .pointer("/meta/profile")
            .and_then(Value::as_array)
            .is_some_and(|p| {
                p.iter()
                    .any(|p| p.as_str() == Some(PROFILE_BACKPORT_SUBSCRIPTION))
            });
        let is_canonical = criteria.starts_with("http://")
            || criteria.starts_with("https://")
            || criteria.starts_with("urn:");
        if is_canonical || declares_backport || !filters.is_empty() {
            if !is_canonical {
                return Err(invalid(
                    "Subscription.criteria",
                    "a topic-based subscription's criteria must be the SubscriptionTopic canonical URL",
                ));
            }
            if criteria.contains('?') {
                return Err(unsupported(
                    "Subscription.criteria",
                    "absolute search URLs are not supported; give a relative search URL like 'Observation?code=...' or a topic canonical",
                ));
            }
            return Ok((
                SubscriptionKind::Topic {
                    topic_url: criteria,
                    filters,
                },
                cel_filter,
            ));
        }
        Ok((SubscriptionKind::Criteria { criteria }, cel_filter))
    }

    fn read_channel_type(channel: &Value) -> SpecResult<ChannelType> {
        let at = "Subscription.channel.type";
        let code = match channel.get("type") {
            Some(Value::String(code)) => code.as_str(),
            None => {
                return Err(SubscriptionSpecError::new(
                    IssueType::Required,
                    at,
                    "is required",
                ))
            }
            Some(_) => return Err(invalid(at, "must be a code")),
        };
        let type_meta = channel.get("_type");
        reject_modifier_extensions(type_meta, at)?;
        // Any extension on channel.type changes its meaning: only Herald's own custom
        // channel type (the NATS channel) is understood.
        let mut custom = None;
        for (url, ext) in extensions(type_meta, "Subscription.channel.type.extension")? {
            if url != EXT_CHANNEL_TYPE {
                return Err(unsupported(
                    at,
                    format!("extension '{url}' is not supported"),
                ));
            }
            if custom.is_some() {
                return Err(invalid(at, "backport-channel-type may appear only once"));
            }
            let coding = ext
                .get("valueCoding")
                .ok_or_else(|| invalid(at, "backport-channel-type needs a valueCoding"))?;
            let field = |name: &str| coding.get(name).and_then(Value::as_str).unwrap_or("");
            if field("system") != nats::CHANNEL_TYPE_SYSTEM || field("code") != nats::NATS_CODE {
                return Err(unsupported(
                    at,
                    format!(
                        "custom channel type '{}|{}' is not supported (Herald offers {}|{})",
                        field("system"),
                        field("code"),
                        nats::CHANNEL_TYPE_SYSTEM,
                        nats::NATS_CODE
                    ),
                ));
            }
            custom = Some(ChannelType::Nats);
        }
        let base = ChannelType::parse(code)
            .ok_or_else(|| unsupported(at, format!("unknown channel type '{code}'")))?;
        match custom {
            None => Ok(base),
            // R4 requires a code; the extension says what is meant. `message` is the
            // closest R4 code, `rest-hook` is what the Backport IG's custom-channel example
            // uses; any other would mislead a reader that ignores the extension.
            Some(custom) if matches!(base, ChannelType::Message | ChannelType::RestHook) => {
                Ok(custom)
            }
            Some(_) => Err(invalid(
                at,
                format!("with the NATS custom channel type, channel.type must be 'message' (or 'rest-hook'), not '{code}'"),
            )),
        }
    }

    fn read_headers(channel: &Value) -> SpecResult<Vec<(String, String)>> {
        let at = "Subscription.channel.header";
        let Some(list) = channel.get("header") else {
            return Ok(vec![]);
        };
        let list = list
            .as_array()
            .ok_or_else(|| invalid(at, "must be an array of strings"))?;
        if list.len() > 32 {
            return Err(invalid(at, "at most 32 headers are allowed"));
        }
        list.iter()
            .enumerate()
            .map(|(index, h)| {
                let text = h
                    .as_str()
                    .ok_or_else(|| invalid(at, "each header must be a string 'Name: value'"))?;
                // The text is not echoed: header values are often secrets.
                let (name, value) = text.split_once(':').ok_or_else(|| {
                    invalid(
                        at,
                        format!("header #{index} is not of the form 'Name: value'"),
                    )
                })?;
                let name = name.trim();
                let value = value.trim();
                let name_ok = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                if !name_ok {
                    return Err(invalid(
                        at,
                        format!("'{name}' is not a valid HTTP header name"),
                    ));
                }
                if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) || value.len() > 4096 {
                    return Err(invalid(
                        at,
                        format!("the value of header '{name}' is not a valid HTTP header value"),
                    ));
                }
                let lower = name.to_ascii_lowercase();
                if matches!(
                    lower.as_str(),
                    "content-type" | "content-length" | "host" | "transfer-encoding" | "connection"
                ) {
                    return Err(invalid(
                        at,
                        format!("header '{name}' is set by Herald and cannot be overridden"),
                    ));
                }
                Ok((name.to_owned(), value.to_owned()))
            })
            .collect()
    }

    /// Channel-level rules: what Herald can deliver today, and an endpoint it can reach.
    ///
    /// A `websocket` subscription has no endpoint: the client connects to Herald (after
    /// `$get-ws-binding-token`), so an endpoint, headers or signing secrets would be
    /// silently meaningless and are refused instead. `heartbeatPeriod` is honoured by the
    /// WebSocket sender; `timeout` and `maxCount` are limits it meets trivially (one event
    /// per message, no request to wait for).
    fn check_channel(&self) -> SpecResult<()> {
        match self.channel_type {
            ChannelType::RestHook => {}
            ChannelType::Websocket => return self.check_websocket_channel(),
            ChannelType::Nats => return self.check_nats_channel(),
            other => {
                return Err(unsupported(
                    "Subscription.channel.type",
                    format!(
                        "channel type '{}' is not supported yet; use rest-hook or websocket",
                        other.as_str()
                    ),
                ))
            }
        }
        let endpoint = self.endpoint.as_deref().ok_or_else(|| {
            SubscriptionSpecError::new(
                IssueType::Required,
                "Subscription.channel.endpoint",
                "is required for rest-hook",
            )
        })?;
        check_endpoint_syntax(endpoint)?;
        Ok(())
    }

    fn check_websocket_channel(&self) -> SpecResult<()> {
        let refuse = |at: &str, what: &str| {
            Err(invalid(
                at,
                format!("{what} has no meaning for a websocket subscription (the client connects to Herald after $get-ws-binding-token); remove it"),
            ))
        };
        if self.endpoint.is_some() {
            return refuse("Subscription.channel.endpoint", "an endpoint");
        }
        if !self.headers.is_empty() {
            return refuse("Subscription.channel.header", "a header");
        }
        if !self.signing_secrets.is_empty() {
            return refuse("Subscription.channel.extension", "a webhook signing secret");
        }
        Ok(())
    }

    /// The NATS channel publishes Backport notification bundles inside the network: the
    /// content level must be explicit, the subject syntax valid (whose namespace it lies in
    /// is checked with the tenant, [`nats::resolve_subject`]), and HTTP headers and webhook
    /// signing secrets, which have no meaning on a NATS message, are refused.
    fn check_nats_channel(&self) -> SpecResult<()> {
        let refuse = |at: &str, what: &str| {
            Err(invalid(
                at,
                format!("{what} has no meaning for a NATS channel subscription; remove it"),
            ))
        };
        if !self.headers.is_empty() {
            return refuse("Subscription.channel.header", "a header");
        }
        if !self.signing_secrets.is_empty() {
            return refuse("Subscription.channel.extension", "a webhook signing secret");
        }
        if self.content.is_none() {
            return Err(SubscriptionSpecError::new(
                IssueType::Required,
                "Subscription.channel.payload",
                "a NATS channel subscription needs channel.payload and backport-payload-content (empty | id-only | full-resource)",
            ));
        }
        if let Some(endpoint) = &self.endpoint {
            nats::check_subject_syntax(endpoint)?;
        }
        Ok(())
    }

    /// Whether notifications are Backport notification bundles (topic-based, or criteria-
    /// based with `backport-payload-content`) rather than R4 classic rest-hook requests.
    pub fn delivers_bundles(&self) -> bool {
        matches!(self.kind, SubscriptionKind::Topic { .. }) || self.content.is_some()
    }

    pub fn topic_url(&self) -> Option<&str> {
        match &self.kind {
            SubscriptionKind::Topic { topic_url, .. } => Some(topic_url),
            SubscriptionKind::Criteria { .. } => None,
        }
    }
}

/// Only JSON is produced: `application/fhir+json` or `application/json`, optionally with
/// `fhirVersion=4.0` (or 4.0.1) and a UTF-8 charset. The Backport IG says a server SHALL NOT
/// accept a `fhirVersion` it cannot produce.
fn check_payload_mime(mime: &str) -> SpecResult<()> {
    let at = "Subscription.channel.payload";
    let mut parts = mime.split(';');
    let base = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    if base != "application/fhir+json" && base != "application/json" {
        return Err(unsupported(
            at,
            format!(
                "MIME type '{base}' is not supported (application/fhir+json or application/json)"
            ),
        ));
    }
    for param in parts {
        let (key, value) = param
            .split_once('=')
            .ok_or_else(|| invalid(at, format!("malformed MIME parameter '{}'", param.trim())))?;
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim().trim_matches('"');
        match key.as_str() {
            "fhirversion" if value == "4.0" || value == "4.0.1" => {}
            "fhirversion" => {
                return Err(unsupported(
                    at,
                    format!("fhirVersion '{value}' is not supported; Herald sends FHIR R4 (4.0)"),
                ))
            }
            "charset" if value.eq_ignore_ascii_case("utf-8") => {}
            _ => {
                return Err(unsupported(
                    at,
                    format!("MIME parameter '{key}={value}' is not supported"),
                ))
            }
        }
    }
    Ok(())
}

/// Syntax of a rest-hook endpoint: an absolute http(s) URL with a host and no credentials.
/// Whether the address may be reached (SSRF policy) is decided by the delivery side.
pub fn check_endpoint_syntax(endpoint: &str) -> SpecResult<()> {
    let at = "Subscription.channel.endpoint";
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .ok_or_else(|| invalid(at, format!("'{endpoint}' is not an absolute http(s) URL")))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        return Err(invalid(at, format!("'{endpoint}' has no host")));
    }
    if authority.contains('@') {
        return Err(invalid(
            at,
            "credentials in the endpoint URL are not allowed; use channel.header",
        ));
    }
    if endpoint
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(invalid(
            at,
            "the endpoint URL contains whitespace or control characters",
        ));
    }
    Ok(())
}

/// The key bytes of a `whsec_` secret, if it is well formed (24–64 bytes).
pub fn signing_key(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let encoded = secret.strip_prefix("whsec_")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    (24..=64).contains(&bytes.len()).then_some(bytes)
}

/// Whether `url` names a Backport IG structure definition.
pub fn is_backport_url(url: &str) -> bool {
    url.starts_with(BACKPORT_SD)
}

pub mod nats;

#[cfg(test)]
mod tests;
