//! A `reqwest` DNS resolver that applies the endpoint policy to every answer.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::{host::normalize_host_name, EndpointError, EndpointPolicy};

/// DNS resolution for the delivery HTTP client that refuses what the policy
/// forbids, at connection time (so DNS rebinding after `check_url` does not
/// help an attacker).
///
/// Install with `reqwest::Client::builder().dns_resolver(Arc::new(resolver))`,
/// together with `.redirect(Policy::none())` and `.no_proxy()`: reqwest does not
/// consult the resolver for IP-literal hosts (those are covered by
/// [`EndpointPolicy::check_url`]), for redirect targets' literals, or for the
/// target when a proxy is in use.
///
/// Forbidden addresses in an answer are dropped; the connection goes to the
/// remaining ones. If none remain the lookup fails with
/// [`EndpointError::ForbiddenAddress`] (the first refusal) or
/// [`EndpointError::NoAllowedAddress`].
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    policy: Arc<EndpointPolicy>,
}

impl PolicyResolver {
    pub fn new(policy: Arc<EndpointPolicy>) -> Self {
        PolicyResolver { policy }
    }

    pub fn policy(&self) -> &Arc<EndpointPolicy> {
        &self.policy
    }

    /// Resolve `name` and keep only allowed addresses.
    pub async fn lookup(&self, name: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        self.policy
            .check_host_name(name)
            .map_err(ResolveError::Refused)?;
        let answers = tokio::net::lookup_host((name, 0))
            .await
            .map_err(ResolveError::Lookup)?;
        admit(&self.policy, name, answers).map_err(ResolveError::Refused)
    }
}

/// The addresses of `answers` that `policy` allows for `name`.
pub(crate) fn admit(
    policy: &EndpointPolicy,
    name: &str,
    answers: impl IntoIterator<Item = SocketAddr>,
) -> Result<Vec<SocketAddr>, EndpointError> {
    let host_allowed = policy.is_allowed_host(&normalize_host_name(name));
    let mut first_refusal = None;
    let mut admitted = Vec::new();
    for addr in answers {
        if host_allowed {
            admitted.push(addr);
            continue;
        }
        match policy.check_addr(addr.ip()) {
            Ok(()) => admitted.push(addr),
            Err(refusal) => {
                tracing::debug!(host = name, addr = %addr.ip(), reason = refusal.code(), "dropped resolved address");
                first_refusal.get_or_insert(refusal);
            }
        }
    }
    if admitted.is_empty() {
        return Err(first_refusal.unwrap_or(EndpointError::NoAllowedAddress));
    }
    Ok(admitted)
}

/// Failure of [`PolicyResolver::lookup`].
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{0}")]
    Refused(EndpointError),
    #[error("DNS lookup failed: {0}")]
    Lookup(std::io::Error),
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.clone();
        Box::pin(async move {
            let admitted = resolver.lookup(name.as_str()).await?;
            let addrs: Addrs = Box::new(admitted.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::AddressKind;

    fn sock(s: &str) -> SocketAddr {
        match s.parse() {
            Ok(a) => a,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn drops_forbidden_answers_and_keeps_public_ones() {
        let policy = EndpointPolicy::production();
        let kept = admit(
            &policy,
            "rebind.example.com",
            [
                sock("127.0.0.1:0"),
                sock("93.184.216.34:0"),
                sock("[::1]:0"),
            ],
        );
        assert_eq!(kept, Ok(vec![sock("93.184.216.34:0")]));
    }

    #[test]
    fn refuses_when_only_forbidden_answers() {
        let policy = EndpointPolicy::production();
        let refused = admit(
            &policy,
            "rebind.example.com",
            [sock("169.254.169.254:0"), sock("10.0.0.1:0")],
        );
        assert_eq!(
            refused,
            Err(EndpointError::ForbiddenAddress {
                kind: AddressKind::CloudMetadata
            })
        );
        assert_eq!(
            admit(&policy, "empty.example.com", []),
            Err(EndpointError::NoAllowedAddress)
        );
    }

    #[test]
    fn allowed_host_keeps_internal_answers() {
        let policy = EndpointPolicy::production().allow_host("hooks.corp.example.com");
        let kept = admit(&policy, "HOOKS.corp.example.com.", [sock("10.0.0.7:0")]);
        assert_eq!(kept, Ok(vec![sock("10.0.0.7:0")]));
    }

    #[tokio::test]
    async fn localhost_is_refused_in_production() {
        let resolver = EndpointPolicy::production().into_resolver();
        let result = resolver.lookup("localhost").await;
        assert!(
            matches!(
                result,
                Err(ResolveError::Refused(EndpointError::InternalHostName(_)))
            ),
            "{result:?}"
        );
        // Through the reqwest trait as well.
        let via_trait = match "localhost".parse::<Name>() {
            Ok(name) => resolver.resolve(name).await,
            Err(e) => panic!("{e}"),
        };
        assert!(via_trait.is_err());
    }

    #[tokio::test]
    async fn numeric_names_are_judged_as_addresses() {
        let resolver = EndpointPolicy::production().into_resolver();
        for name in [
            "127.0.0.1",
            "2130706433",
            "0x7f.1",
            "[::1]",
            "::ffff:169.254.169.254",
        ] {
            let result = resolver.lookup(name).await;
            assert!(
                matches!(
                    result,
                    Err(ResolveError::Refused(
                        EndpointError::ForbiddenAddress { .. }
                    ))
                ),
                "{name}: {result:?}"
            );
        }
    }

    #[tokio::test]
    async fn localhost_resolves_in_development() {
        let resolver = EndpointPolicy::development().into_resolver();
        let addrs = match resolver.lookup("localhost").await {
            Ok(addrs) => addrs,
            Err(e) => panic!("{e}"),
        };
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
        assert!(!addrs.is_empty());
    }
}
