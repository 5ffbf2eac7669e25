//! Herald's NATS channel: a custom channel type (the Backport IG's `backport-channel-type`
//! extension carrying the Coding `https://herald.health/fhir/CodeSystem/channel-type|nats`)
//! whose notifications are published to a NATS subject.
//!
//! The subject always lies in the subscriber's tenant namespace, `<prefix>.<tenant>.…`
//! (`prefix` is `herald.notify` unless configured otherwise), because a subscriber must not
//! be able to make Herald publish into another tenant's subjects or into system subjects
//! such as `$JS.API.>`. `channel.endpoint` may be:
//! - absent: the subject is `<prefix>.<tenant>.<subscription id>`;
//! - the full subject `<prefix>.<tenant>.<suffix>`: that subject;
//! - any other subject: a suffix under the namespace, `<prefix>.<tenant>.<endpoint>`.
//!
//! Every token is `[A-Za-z0-9_-]+`: no wildcards (`*`, `>`), no `$`, no whitespace, no
//! empty tokens. Tenants that are not such a token cannot use the channel at all (mapping
//! them to one could make two tenants share a subject).

use super::{invalid, unsupported, SpecResult, SubscriptionSpecError};
use crate::outcome::IssueType;

/// Code system of Herald's custom channel types.
pub const CHANNEL_TYPE_SYSTEM: &str = "https://herald.health/fhir/CodeSystem/channel-type";
/// Code of the NATS channel in [`CHANNEL_TYPE_SYSTEM`].
pub const NATS_CODE: &str = "nats";
/// Default first tokens of every notification subject.
pub const DEFAULT_SUBJECT_PREFIX: &str = "herald.notify";
/// Longest subject Herald publishes to.
pub const MAX_SUBJECT_LEN: usize = 255;

const AT: &str = "Subscription.channel.endpoint";

/// Whether `token` is one subject token Herald accepts: `[A-Za-z0-9_-]+`.
pub fn is_subject_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks that `subject` is a literal subject of valid tokens, with a diagnostic that
/// names what is wrong. Says nothing about whose namespace it is in.
pub fn check_subject_syntax(subject: &str) -> SpecResult<()> {
    if subject.is_empty() {
        return Err(invalid(AT, "a NATS subject cannot be empty"));
    }
    if subject.len() > MAX_SUBJECT_LEN {
        return Err(invalid(
            AT,
            format!("a NATS subject may be at most {MAX_SUBJECT_LEN} characters"),
        ));
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            AT,
            "the NATS subject contains whitespace or control characters",
        ));
    }
    if subject.contains(['*', '>']) {
        return Err(invalid(
            AT,
            format!("'{subject}' contains a wildcard ('*' or '>'); Herald publishes to one literal subject"),
        ));
    }
    for token in subject.split('.') {
        if token.is_empty() {
            return Err(invalid(
                AT,
                format!("'{subject}' has an empty token (a leading, trailing or double '.')"),
            ));
        }
        if token.starts_with('$') {
            return Err(invalid(
                AT,
                format!("'{subject}': subjects with '$' tokens are NATS system subjects"),
            ));
        }
        if !is_subject_token(token) {
            return Err(invalid(
                AT,
                format!("'{subject}': token '{token}' may only contain A-Z, a-z, 0-9, '_' and '-'"),
            ));
        }
    }
    Ok(())
}

/// `<prefix>.<tenant>`: the only subjects this tenant's NATS subscriptions publish to lie
/// under it.
pub fn tenant_namespace(prefix: &str, tenant: &str) -> SpecResult<String> {
    if !is_subject_token(tenant) {
        return Err(unsupported(
            "Subscription.channel.type",
            "the NATS channel is not available to this tenant: its name is not a NATS subject token ([A-Za-z0-9_-]+)",
        ));
    }
    Ok(format!("{prefix}.{tenant}"))
}

/// The subject a NATS-channel subscription publishes to (see the module documentation).
/// Idempotent: resolving the result again gives the result.
pub fn resolve_subject(
    prefix: &str,
    tenant: &str,
    subscription_id: &str,
    endpoint: Option<&str>,
) -> SpecResult<String> {
    let namespace = tenant_namespace(prefix, tenant)?;
    let subject = match endpoint {
        None => format!("{namespace}.{subscription_id}"),
        Some(endpoint) => {
            check_subject_syntax(endpoint)?;
            if endpoint.starts_with(&format!("{prefix}.")) {
                if !endpoint.starts_with(&format!("{namespace}.")) {
                    return Err(SubscriptionSpecError::new(
                        IssueType::Security,
                        AT,
                        format!("'{endpoint}' is outside this tenant's namespace '{namespace}.>'"),
                    ));
                }
                endpoint.to_owned()
            } else {
                format!("{namespace}.{endpoint}")
            }
        }
    };
    check_subject_syntax(&subject)?;
    Ok(subject)
}

/// Whether a subject under `a` could also be under `b` or the other way round (one is a
/// token-wise prefix of the other). Literal subjects only, as in Herald's settings.
pub fn subjects_overlap(a: &str, b: &str) -> bool {
    let a: Vec<&str> = a.split('.').collect();
    let b: Vec<&str> = b.split('.').collect();
    a.iter().zip(&b).all(|(x, y)| x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_endpoint_is_the_subscription_subject() {
        assert_eq!(
            resolve_subject("herald.notify", "t1", "abc-1", None).expect("ok"),
            "herald.notify.t1.abc-1"
        );
    }

    #[test]
    fn full_subject_in_namespace_is_kept_and_resolving_is_idempotent() {
        let full = "herald.notify.t1.pharmacy.orders";
        let once = resolve_subject("herald.notify", "t1", "x", Some(full)).expect("ok");
        assert_eq!(once, full);
        let twice = resolve_subject("herald.notify", "t1", "x", Some(&once)).expect("ok");
        assert_eq!(twice, once);
    }

    #[test]
    fn relative_endpoint_is_a_suffix_under_the_namespace() {
        assert_eq!(
            resolve_subject("herald.notify", "t1", "x", Some("pharmacy.orders")).expect("ok"),
            "herald.notify.t1.pharmacy.orders"
        );
    }

    #[test]
    fn refusals() {
        let cases = [
            ("herald.notify.t2.x", IssueType::Security, "outside"),
            ("herald.notify.t1", IssueType::Security, "outside"),
            ("herald.notify.*.x", IssueType::Invalid, "wildcard"),
            ("herald.notify.t1.>", IssueType::Invalid, "wildcard"),
            ("$JS.API.>", IssueType::Invalid, "wildcard"),
            ("$JS.API.STREAM.LIST", IssueType::Invalid, "system"),
            ("$SYS.x", IssueType::Invalid, "system"),
            ("a..b", IssueType::Invalid, "empty token"),
            (".a", IssueType::Invalid, "empty token"),
            ("a.", IssueType::Invalid, "empty token"),
            ("", IssueType::Invalid, "empty"),
            ("a b", IssueType::Invalid, "whitespace"),
            ("a\tb", IssueType::Invalid, "whitespace"),
            ("a/b", IssueType::Invalid, "may only contain"),
        ];
        for (endpoint, code, words) in cases {
            let err =
                resolve_subject("herald.notify", "t1", "x", Some(endpoint)).expect_err(endpoint);
            assert_eq!(err.code, code, "{endpoint}: {err}");
            assert_eq!(err.expression, AT, "{endpoint}");
            assert!(err.message.contains(words), "{endpoint}: {err}");
        }
        let long = "a".repeat(MAX_SUBJECT_LEN);
        assert!(resolve_subject("herald.notify", "t1", "x", Some(&long)).is_err());
    }

    #[test]
    fn a_tenant_that_is_not_a_token_cannot_use_the_channel() {
        for tenant in ["a.b", "a*", ">", "", "a b", "$SYS"] {
            let err = resolve_subject("herald.notify", tenant, "x", None).expect_err(tenant);
            assert_eq!(err.code, IssueType::NotSupported, "{tenant}");
        }
    }

    #[test]
    fn overlap_is_token_wise() {
        assert!(subjects_overlap("herald.notify", "herald.notify.t1"));
        assert!(subjects_overlap("fhir.changes", "fhir"));
        assert!(!subjects_overlap("herald.notify", "herald.notifyx"));
        assert!(!subjects_overlap("herald.notify", "herald.control"));
    }
}
