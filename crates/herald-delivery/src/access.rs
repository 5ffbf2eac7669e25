//! The send-time re-check of a subscription's grant (issue 5): access decided at creation
//! is decided again before every send, on every channel.
//!
//! - A subscription whose owning client, or the token it was created with (by `jti`), has
//!   been revoked stops receiving: [`AccessGuard::revocation`] says so, and the channel
//!   turns the subscription `off` with the reason ([`AccessGuard::stop`]).
//! - Each notification's focus resource must still be readable under the owner's scopes,
//!   and, for a patient-limited grant, be in that patient's compartment
//!   ([`permits`]). One that is not is withheld — never sent, audited — and delivery moves
//!   on. The criteria checks at creation make this rare; this is the second lock.
//!
//! Revocations are looked up through a short-lived cache so a WebSocket fan-out to
//! thousands of bindings does not cost a query per send; a revocation takes effect within
//! [`REVOCATION_CACHE_TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_audit::{AuditEntry, AuditKind, AuditLog, AuditOutcome};
use herald_fhir::SubscriptionStatus;
use herald_security::auth::{Access, Permission, Principal, Scopes};
use herald_store::{EventRecord, Store, StoreResult, SubscriptionOwner, SubscriptionRecord};

/// How long a revocation lookup is reused.
pub const REVOCATION_CACHE_TTL: Duration = Duration::from_secs(2);
const CACHE_LIMIT: usize = 10_000;

type CacheKey = (String, String, Option<String>);

/// Re-checks owners' grants at send time; cheap to clone.
#[derive(Clone)]
pub struct AccessGuard {
    store: Arc<dyn Store>,
    audit: AuditLog,
    /// With authentication on, a subscription without an owner grant (created in
    /// development mode, or before grants were recorded) is never delivered: fail closed.
    require_owner: bool,
    cache: Arc<Mutex<HashMap<CacheKey, (bool, Instant)>>>,
    forgotten_at: Arc<Mutex<Instant>>,
}

impl std::fmt::Debug for AccessGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessGuard").finish_non_exhaustive()
    }
}

impl AccessGuard {
    pub fn new(store: Arc<dyn Store>, audit: AuditLog, require_owner: bool) -> Self {
        Self {
            store,
            audit,
            require_owner,
            cache: Arc::new(Mutex::new(HashMap::new())),
            forgotten_at: Arc::new(Mutex::new(Instant::now())),
        }
    }

    /// The audit log deliveries are recorded in.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// `Some(reason)` when the subscription's owner has lost access. Without an owner
    /// (development mode) that happens only when authentication is on.
    pub async fn revocation(&self, record: &SubscriptionRecord) -> StoreResult<Option<String>> {
        let Some(owner) = &record.owner else {
            return Ok(self.require_owner.then(|| {
                "the subscription has no recorded owner grant (created without authentication); update it with a token".to_owned()
            }));
        };
        let revoked = self
            .is_revoked(
                &record.key.tenant,
                &owner.client_id,
                owner.token_id.as_deref(),
            )
            .await?;
        Ok(revoked.then(|| {
            format!(
                "access of client '{}' (or the token the subscription was created with) was revoked",
                owner.client_id
            )
        }))
    }

    /// Whether the client, or the token (by `jti`), was revoked; cached for
    /// [`REVOCATION_CACHE_TTL`].
    pub async fn is_revoked(
        &self,
        tenant: &str,
        client_id: &str,
        token_id: Option<&str>,
    ) -> StoreResult<bool> {
        let key = (
            tenant.to_owned(),
            client_id.to_owned(),
            token_id.map(str::to_owned),
        );
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.get(&key).copied())
            .filter(|(_, at)| at.elapsed() < REVOCATION_CACHE_TTL);
        if let Some((revoked, _)) = cached {
            return Ok(revoked);
        }
        let looked_up_at = Instant::now();
        let revoked = self.store.is_revoked(tenant, client_id, token_id).await?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            // A lookup that started before a local revocation must not re-insert a stale
            // answer after `forget_cached`.
            if self
                .forgotten_at
                .lock()
                .map_or(true, |t| *t <= looked_up_at)
            {
                cache.insert(key, (revoked, looked_up_at));
            }
        }
        Ok(revoked)
    }

    /// Forgets cached lookups, so a revocation made by this instance applies at once.
    pub fn forget_cached(&self) {
        if let Ok(mut at) = self.forgotten_at.lock() {
            *at = Instant::now();
        }
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }

    /// Turns a subscription whose owner lost access `off`, and audits it.
    pub async fn stop(&self, record: &SubscriptionRecord, reason: &str) -> StoreResult<()> {
        tracing::warn!(subscription = %record.key.id, %reason, "owner lost access; subscription off");
        self.store
            .set_status(&record.key, SubscriptionStatus::Off, Some(reason))
            .await?;
        self.audit
            .record(AuditEntry::status_change(
                &record.key.tenant,
                &record.key.id,
                format!("off: {reason}"),
            ))
            .await;
        Ok(())
    }

    /// Audits a notification that [`permits`] refused.
    pub async fn withheld(&self, record: &SubscriptionRecord, event_number: i64, reason: &str) {
        tracing::warn!(subscription = %record.key.id, event_number, %reason, "notification withheld");
        self.audit
            .record(
                AuditEntry::new(
                    &record.key.tenant,
                    AuditKind::DeliveryWithheld,
                    AuditOutcome::MinorFailure,
                )
                .entity(format!("Subscription/{}", record.key.id))
                .detail(format!("event {event_number} withheld: {reason}")),
            )
            .await;
    }
}

/// Whether the owner's grant covers the event's focus resource: read access to its type,
/// and for a patient-limited grant, the resource in that patient's compartment. `Ok` for
/// subscriptions without an owner (development mode).
pub fn permits(owner: Option<&SubscriptionOwner>, event: &EventRecord) -> Result<(), String> {
    permits_resource(
        owner,
        &event.resource_type,
        &event.resource_id,
        event.resource.as_ref(),
    )
}

/// [`permits`] for any resource sent to the owner, such as a notification's additional
/// context (`resource`: its content, `None` when no copy is at hand).
pub fn permits_resource(
    owner: Option<&SubscriptionOwner>,
    resource_type: &str,
    resource_id: &str,
    resource: Option<&serde_json::Value>,
) -> Result<(), String> {
    let Some(owner) = owner else {
        return Ok(());
    };
    let principal = Principal {
        subject: owner.subject.clone(),
        client_id: owner.client_id.clone(),
        tenant: None,
        patient: owner.patient.clone(),
        scopes: Scopes::from_scope_strings(owner.scopes.iter().map(String::as_str)),
        expires_at: u64::MAX,
        token_id: owner.token_id.clone(),
    };
    let patient = match principal.access(resource_type, Permission::Read) {
        Err(e) => return Err(format!("the owner's grant no longer covers it: {e}")),
        Ok(Access::System) => None,
        Ok(Access::User) => owner.patient.clone(),
        Ok(Access::Patient(p)) => Some(p),
    };
    let Some(patient) = patient else {
        return Ok(());
    };
    if in_patient_compartment(resource_type, resource_id, resource, &patient) {
        Ok(())
    } else {
        Err(format!(
            "{resource_type}/{resource_id} is not in the compartment of Patient/{patient}"
        ))
    }
}

/// Conservative compartment test: the Patient itself, or a resource whose `subject` or
/// `patient` reference names the patient. A resource linked to its patient some other way
/// (or a deletion that kept no copy) is treated as outside: withheld, never leaked.
fn in_patient_compartment(
    resource_type: &str,
    resource_id: &str,
    resource: Option<&serde_json::Value>,
    patient: &str,
) -> bool {
    if resource_type == "Patient" {
        return resource_id == patient;
    }
    let Some(resource) = resource else {
        return false;
    };
    let wanted = format!("Patient/{patient}");
    ["subject", "patient"].iter().any(|field| {
        resource
            .get(*field)
            .and_then(|r| r.get("reference"))
            .and_then(serde_json::Value::as_str)
            .is_some_and(|r| r == wanted || r.ends_with(&format!("/{wanted}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(resource_type: &str, id: &str, resource: Option<serde_json::Value>) -> EventRecord {
        EventRecord {
            event_id: "e".into(),
            tenant: "t".into(),
            action: "create".into(),
            resource_type: resource_type.into(),
            resource_id: id.into(),
            version_id: "1".into(),
            occurred_at: 0,
            resource,
            recorded_at: 0,
        }
    }

    fn owner(scopes: &[&str], patient: Option<&str>) -> SubscriptionOwner {
        SubscriptionOwner {
            client_id: "c".into(),
            subject: "s".into(),
            token_id: None,
            patient: patient.map(str::to_owned),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn patient_grants_receive_only_their_patient() {
        let own = owner(&["patient/Observation.rs"], Some("123"));
        let mine = event(
            "Observation",
            "o1",
            Some(json!({"subject": {"reference": "Patient/123"}})),
        );
        let theirs = event(
            "Observation",
            "o2",
            Some(json!({"subject": {"reference": "Patient/999"}})),
        );
        let absolute = event(
            "Observation",
            "o3",
            Some(json!({"subject": {"reference": "https://ehr.example/fhir/Patient/123"}})),
        );
        let prefix = event(
            "Observation",
            "o4",
            Some(json!({"subject": {"reference": "Patient/1234"}})),
        );
        assert!(permits(Some(&own), &mine).is_ok());
        assert!(permits(Some(&own), &absolute).is_ok());
        assert!(permits(Some(&own), &theirs).is_err());
        assert!(permits(Some(&own), &prefix).is_err());
        assert!(
            permits(Some(&own), &event("Observation", "o5", None)).is_err(),
            "no copy of the resource: withheld"
        );
        assert!(
            permits(
                Some(&own),
                &event(
                    "MedicationRequest",
                    "m",
                    Some(json!({"subject": {"reference": "Patient/123"}}))
                )
            )
            .is_err(),
            "type outside the scopes"
        );
        assert!(
            permits(Some(&own), &event("Patient", "123", Some(json!({})))).is_err(),
            "Patient is not in the scopes"
        );
        let with_patient = owner(&["patient/*.rs"], Some("123"));
        assert!(permits(
            Some(&with_patient),
            &event("Patient", "123", Some(json!({})))
        )
        .is_ok());
        assert!(permits(Some(&with_patient), &event("Patient", "9", Some(json!({})))).is_err());
    }

    #[tokio::test]
    async fn with_authentication_on_a_subscription_without_an_owner_is_stopped() {
        use herald_store::{NewSubscription, SqliteStore};
        let store = SqliteStore::in_memory().await.expect("store");
        store.migrate().await.expect("migrate");
        let store: Arc<dyn Store> = Arc::new(store);
        let resource = json!({"resourceType": "Subscription"});
        let record = store
            .create_subscription(NewSubscription {
                tenant: "t",
                id: "legacy",
                resource: &resource,
                status: SubscriptionStatus::Active,
                criteria: "Observation",
                channel_type: "rest-hook",
                heartbeat_period: None,
                owner: None,
                now_ms: 1,
            })
            .await
            .expect("create");
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (audit, _writer) = AuditLog::start(Arc::clone(&store), shutdown.clone());
        let development = AccessGuard::new(Arc::clone(&store), audit.clone(), false);
        assert_eq!(development.revocation(&record).await.expect("check"), None);
        let production = AccessGuard::new(Arc::clone(&store), audit, true);
        assert!(production
            .revocation(&record)
            .await
            .expect("check")
            .is_some_and(|r| r.contains("no recorded owner")));
        shutdown.cancel();
    }

    #[test]
    fn system_grants_receive_every_patient_and_no_owner_means_development() {
        let system = owner(&["system/Observation.rs"], None);
        let theirs = event(
            "Observation",
            "o2",
            Some(json!({"subject": {"reference": "Patient/999"}})),
        );
        assert!(permits(Some(&system), &theirs).is_ok());
        assert!(permits(None, &theirs).is_ok());
        let user_with_patient = owner(&["user/Observation.rs"], Some("123"));
        assert!(permits(Some(&user_with_patient), &theirs).is_err());
        let nothing = owner(&["openid"], None);
        assert!(permits(Some(&nothing), &theirs).is_err());
    }
}
