//! Which rest-hook endpoints Herald may call (SSRF defence).
//!
//! Two checks, both needed:
//!
//! 1. [`EndpointPolicy::check_url`] when a subscription is created or updated:
//!    syntax, scheme, internal host names, and IP literals in every spelling.
//!    It returns an [`Endpoint`] whose canonical URL is what must be stored and
//!    called, so the policy and the HTTP client never disagree about the host.
//! 2. [`PolicyResolver`] inside the HTTP client: every connection's DNS answer
//!    is filtered through [`EndpointPolicy::check_addr`], so a name that
//!    resolved to a public address at creation and to `127.0.0.1` later
//!    (DNS rebinding) is still refused.
//!
//! The HTTP client must not follow redirects (a 302 to `http://169.254.169.254/`
//! would skip check 1; check 2 only sees names, not literal IPs) and must not
//! use a proxy (the resolver would then only see the proxy's name).

mod addr;
mod host;
mod resolver;

use std::net::IpAddr;
use std::sync::Arc;

pub use addr::{classify, AddressKind};
pub use ipnet::IpNet;
pub use resolver::{PolicyResolver, ResolveError};
use url::{Host, Url};

/// Longest endpoint URL accepted; longer ones are refused, not truncated.
pub const MAX_ENDPOINT_URL_LEN: usize = 4096;

/// Rules for outbound rest-hook endpoints. Cheap to clone; share it as
/// `Arc<EndpointPolicy>` between the API (creation-time checks) and the
/// delivery client ([`PolicyResolver`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPolicy {
    allow_http: bool,
    allow_private: bool,
    allow_list: Vec<IpNet>,
    allowed_hosts: Vec<String>,
}

/// Why an endpoint was refused. Messages describe the submitted URL only and
/// are safe to return to the client that submitted it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    #[error("endpoint is not a valid absolute URL: {0}")]
    Syntax(String),
    #[error("endpoint URL is longer than {MAX_ENDPOINT_URL_LEN} characters")]
    TooLong,
    #[error("endpoint scheme `{0}` is not supported; use https")]
    UnsupportedScheme(String),
    #[error("endpoint must use https")]
    HttpsRequired,
    #[error("endpoint must not contain user information")]
    UserInfo,
    #[error("endpoint must not contain a fragment")]
    Fragment,
    #[error("endpoint port 0 is not usable")]
    InvalidPort,
    #[error("endpoint host is not allowed: {0}")]
    InternalHostName(&'static str),
    #[error("endpoint address is not allowed ({kind})")]
    ForbiddenAddress { kind: AddressKind },
    #[error("endpoint host did not resolve to any allowed address")]
    NoAllowedAddress,
}

impl EndpointError {
    /// A stable machine-readable name for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            EndpointError::Syntax(_) => "syntax",
            EndpointError::TooLong => "too-long",
            EndpointError::UnsupportedScheme(_) => "unsupported-scheme",
            EndpointError::HttpsRequired => "https-required",
            EndpointError::UserInfo => "userinfo",
            EndpointError::Fragment => "fragment",
            EndpointError::InvalidPort => "invalid-port",
            EndpointError::InternalHostName(_) => "internal-host-name",
            EndpointError::ForbiddenAddress { kind } => kind.code(),
            EndpointError::NoAllowedAddress => "no-allowed-address",
        }
    }
}

/// The host of an accepted endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointHost {
    /// An IP literal (already canonical; `http://2130706433/` arrives here as 127.0.0.1).
    Ip(IpAddr),
    /// A DNS name, lower-case, as it will be resolved through [`PolicyResolver`].
    Domain(String),
}

/// A URL that passed [`EndpointPolicy::check_url`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    url: Url,
    host: EndpointHost,
}

impl Endpoint {
    /// The canonical URL: store and call this, not the submitted text.
    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    pub fn into_url(self) -> Url {
        self.url
    }

    pub fn host(&self) -> &EndpointHost {
        &self.host
    }

    pub fn is_https(&self) -> bool {
        self.url.scheme() == "https"
    }
}

impl EndpointPolicy {
    /// For `herald serve` without an issuer: http, loopback and private
    /// networks are allowed so a newcomer can point a subscription at a local
    /// receiver. Cloud metadata, multicast and reserved space stay refused.
    /// The caller logs a warning at start that this policy is in force.
    pub fn development() -> Self {
        EndpointPolicy {
            allow_http: true,
            allow_private: true,
            allow_list: Vec::new(),
            allowed_hosts: Vec::new(),
        }
    }

    /// https only, public unicast addresses only, unless allow-listed.
    pub fn production() -> Self {
        EndpointPolicy {
            allow_http: false,
            allow_private: false,
            allow_list: Vec::new(),
            allowed_hosts: Vec::new(),
        }
    }

    /// Permit plain http (production deployments should not).
    pub fn with_http_allowed(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Permit addresses in `net` whatever their kind (e.g. `10.1.2.0/24` for an
    /// internal receiver). https is still required unless http is allowed.
    pub fn allow_network(mut self, net: IpNet) -> Self {
        self.allow_list.push(net.trunc());
        self
    }

    /// Permit the exact host name `host` (no wildcards), and any address it
    /// resolves to.
    pub fn allow_host(mut self, host: &str) -> Self {
        self.allowed_hosts.push(host::normalize_host_name(host));
        self
    }

    /// Parse allow-list entries from configuration: each is a CIDR, a bare IP
    /// (treated as /32 or /128) or an exact host name.
    pub fn with_allow_list<'a>(
        mut self,
        entries: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, EndpointError> {
        for entry in entries {
            let entry = entry.trim();
            if let Ok(net) = entry.parse::<IpNet>() {
                self = self.allow_network(net);
            } else if let Ok(ip) = entry.parse::<IpAddr>() {
                self = self.allow_network(IpNet::from(ip));
            } else if Host::parse(entry).is_ok_and(|h| matches!(h, Host::Domain(_))) {
                self = self.allow_host(entry);
            } else {
                return Err(EndpointError::Syntax(format!(
                    "allow-list entry `{entry}` is neither a CIDR, an IP address nor a host name"
                )));
            }
        }
        Ok(self)
    }

    pub fn allows_http(&self) -> bool {
        self.allow_http
    }

    pub fn allows_private(&self) -> bool {
        self.allow_private
    }

    pub fn into_resolver(self) -> PolicyResolver {
        PolicyResolver::new(Arc::new(self))
    }

    /// Check an endpoint URL submitted in a Subscription.
    pub fn check_url(&self, url: &str) -> Result<Endpoint, EndpointError> {
        if url.len() > MAX_ENDPOINT_URL_LEN {
            return Err(EndpointError::TooLong);
        }
        if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            // WHATWG parsing strips tabs/newlines and trims spaces silently;
            // a stored endpoint should be exactly what was checked.
            return Err(EndpointError::Syntax(
                "whitespace or control characters".into(),
            ));
        }
        let parsed = Url::parse(url).map_err(|e| EndpointError::Syntax(e.to_string()))?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err(EndpointError::HttpsRequired),
            other => return Err(EndpointError::UnsupportedScheme(other.to_owned())),
        }
        if !parsed.username().is_empty()
            || parsed.password().is_some()
            || authority_of(url).contains('@')
        {
            return Err(EndpointError::UserInfo);
        }
        if parsed.fragment().is_some() {
            return Err(EndpointError::Fragment);
        }
        if parsed.port() == Some(0) {
            return Err(EndpointError::InvalidPort);
        }
        let host = match parsed.host() {
            Some(Host::Ipv4(v4)) => EndpointHost::Ip(IpAddr::V4(v4)),
            Some(Host::Ipv6(v6)) => EndpointHost::Ip(IpAddr::V6(v6)),
            Some(Host::Domain(name)) => EndpointHost::Domain(host::normalize_host_name(name)),
            None => return Err(EndpointError::Syntax("missing host".into())),
        };
        match &host {
            EndpointHost::Ip(ip) => self.check_addr(*ip)?,
            EndpointHost::Domain(name) => self.check_host_name(name)?,
        }
        Ok(Endpoint { url: parsed, host })
    }

    /// Check an address the client is about to connect to.
    pub fn check_addr(&self, ip: IpAddr) -> Result<(), EndpointError> {
        let ip = ip.to_canonical();
        if self.allow_list.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match classify(ip) {
            None => Ok(()),
            Some(kind) if self.allow_private && kind.is_local_network() => Ok(()),
            Some(kind) => Err(EndpointError::ForbiddenAddress { kind }),
        }
    }

    /// Check a DNS name before resolving it. Numeric names are judged as the
    /// address a permissive resolver would turn them into.
    pub fn check_host_name(&self, name: &str) -> Result<(), EndpointError> {
        let normalized = host::normalize_host_name(name);
        if self.is_allowed_host(&normalized) {
            return Ok(());
        }
        if let Some(v4) = host::parse_lenient_ipv4(&normalized) {
            return self.check_addr(IpAddr::V4(v4));
        }
        if let Ok(ip) = normalized
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return self.check_addr(ip);
        }
        match host::internal_name_reason(&normalized) {
            Some(_) if self.allow_private => Ok(()),
            Some(reason) => Err(EndpointError::InternalHostName(reason)),
            None => Ok(()),
        }
    }

    pub(crate) fn is_allowed_host(&self, normalized: &str) -> bool {
        self.allowed_hosts.iter().any(|h| h == normalized)
    }
}

/// The raw authority of an absolute URL: between `//` and the first `/`, `\`,
/// `?` or `#`. Used to refuse `@` that the WHATWG parser would quietly reinterpret.
fn authority_of(url: &str) -> &str {
    let Some(start) = url.find("//").map(|i| i + 2) else {
        return "";
    };
    let rest = &url[start..];
    let end = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
    &rest[..end]
}
