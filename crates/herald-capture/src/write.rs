//! Single-resource writes and event ingest.

use std::sync::Arc;

use chrono::Utc;
use herald_bus::{BusError, ChangeEventBus, Published};
use herald_fhir::bundle::instant;
use herald_fhir::resource::{
    is_resource_type, is_valid_id, json_depth, stamp_meta, MAX_JSON_DEPTH,
};
use herald_fhir::{Action, ChangeEvent, ChangeEventError, IssueType};
use herald_store::{Store, StoreError, StoredResource};
use serde_json::Value;
use uuid::Uuid;

/// Why a write was refused or failed. `Invalid` and `NotFound` are the client's doing and
/// published nothing; `Store` and `Bus` are ours.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{message}")]
    Invalid { code: IssueType, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("the resource was changed concurrently; retry the write")]
    Conflict,
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    #[error(transparent)]
    Event(#[from] ChangeEventError),
}

pub(crate) fn invalid(message: impl Into<String>) -> CaptureError {
    CaptureError::Invalid {
        code: IssueType::Invalid,
        message: message.into(),
    }
}

/// What a successful write did.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    pub resource_type: String,
    pub id: String,
    pub version_id: String,
    pub last_updated: String,
    /// The stored resource with `meta` set (absent for delete).
    pub resource: Option<Value>,
    pub action: Action,
    pub event_id: String,
}

#[derive(Clone)]
pub struct Capture {
    store: Arc<dyn Store>,
    bus: Arc<dyn ChangeEventBus>,
    source: String,
}

/// Resource types the facade does not accept as data: they have their own endpoints or
/// are not data at all.
const NOT_DATA: &[&str] = &[
    "Subscription",
    "SubscriptionTopic",
    "Bundle",
    "Parameters",
    "OperationOutcome",
];

impl Capture {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn ChangeEventBus>,
        source: impl Into<String>,
    ) -> Self {
        Self {
            store,
            bus,
            source: source.into(),
        }
    }

    /// Checks a resource body against the URL it was sent to.
    pub fn check_resource(
        resource_type: &str,
        resource: &Value,
        id: Option<&str>,
    ) -> Result<(), CaptureError> {
        if !is_resource_type(resource_type) {
            return Err(CaptureError::NotFound(format!(
                "'{resource_type}' is not an R4 resource type"
            )));
        }
        if NOT_DATA.contains(&resource_type) {
            return Err(CaptureError::Invalid {
                code: IssueType::NotSupported,
                message: format!("{resource_type} cannot be written through the facade"),
            });
        }
        if !resource.is_object() {
            return Err(invalid("the body must be a JSON object (a FHIR resource)"));
        }
        if json_depth(resource) > MAX_JSON_DEPTH {
            return Err(CaptureError::Invalid {
                code: IssueType::TooLong,
                message: format!("JSON nesting deeper than {MAX_JSON_DEPTH} levels"),
            });
        }
        if let Some((path, value)) = herald_fhir::resource::first_invalid_date(resource) {
            return Err(invalid(format!(
                "{resource_type}.{path}: '{value}' is not a valid FHIR date, dateTime or instant"
            )));
        }
        match resource.get("resourceType").and_then(Value::as_str) {
            Some(t) if t == resource_type => {}
            Some(t) => {
                return Err(invalid(format!(
                    "resourceType '{t}' does not match the URL type '{resource_type}'"
                )))
            }
            None => return Err(invalid("resourceType is missing")),
        }
        match (id, resource.get("id")) {
            (_, Some(Value::String(body_id))) if !is_valid_id(body_id) => {
                Err(invalid(format!("id '{body_id}' is not a valid FHIR id")))
            }
            (_, Some(v)) if !v.is_string() => Err(invalid("id must be a string")),
            (Some(url_id), Some(Value::String(body_id))) if url_id != body_id => Err(invalid(
                format!("id '{body_id}' in the body does not match '{url_id}' in the URL"),
            )),
            (Some(url_id), None) => Err(invalid(format!(
                "the body of an update must carry id '{url_id}'"
            ))),
            (Some(url_id), _) if !is_valid_id(url_id) => {
                Err(invalid(format!("'{url_id}' is not a valid FHIR id")))
            }
            _ => Ok(()),
        }
    }

    /// `POST [base]/[Type]`: a new resource with a server-assigned id.
    pub async fn create(
        &self,
        tenant: &str,
        resource_type: &str,
        resource: Value,
    ) -> Result<WriteOutcome, CaptureError> {
        Self::check_resource(resource_type, &resource, None)?;
        let id = Uuid::new_v4().to_string();
        self.write(tenant, resource_type, &id, Some(resource)).await
    }

    /// `PUT [base]/[Type]/[id]`: update, or create with the client's id.
    pub async fn update(
        &self,
        tenant: &str,
        resource_type: &str,
        id: &str,
        resource: Value,
    ) -> Result<WriteOutcome, CaptureError> {
        Self::check_resource(resource_type, &resource, Some(id))?;
        self.write(tenant, resource_type, id, Some(resource)).await
    }

    /// Checks the target of a delete.
    pub fn check_delete_target(resource_type: &str, id: &str) -> Result<(), CaptureError> {
        if !is_resource_type(resource_type) || NOT_DATA.contains(&resource_type) {
            return Err(CaptureError::NotFound(format!(
                "'{resource_type}' is not a resource type the facade holds"
            )));
        }
        if !is_valid_id(id) {
            return Err(invalid(format!("'{id}' is not a valid FHIR id")));
        }
        Ok(())
    }

    /// `DELETE [base]/[Type]/[id]`. `None` when there was nothing to delete (no event).
    pub async fn delete(
        &self,
        tenant: &str,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<WriteOutcome>, CaptureError> {
        Self::check_delete_target(resource_type, id)?;
        match self.store.get_resource(tenant, resource_type, id).await? {
            Some(stored) if !stored.deleted => {
                self.write(tenant, resource_type, id, None).await.map(Some)
            }
            _ => Ok(None),
        }
    }

    /// `GET [base]/[Type]/[id]`: the latest version the facade holds.
    pub async fn read(
        &self,
        tenant: &str,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<StoredResource>, CaptureError> {
        Ok(self.store.get_resource(tenant, resource_type, id).await?)
    }

    /// Publishes a ready-made change event (the ingest endpoint). Dedup by event id.
    pub async fn ingest(&self, event: &ChangeEvent) -> Result<Published, CaptureError> {
        event.validate()?;
        Ok(self.bus.publish(event).await?)
    }

    /// Publishes ready-made change events together (one durable bus commit for the lot).
    /// All are validated before any is published. Dedup by event id.
    pub async fn ingest_batch(
        &self,
        events: &[ChangeEvent],
    ) -> Result<Vec<Published>, CaptureError> {
        for event in events {
            event.validate()?;
        }
        Ok(self.bus.publish_batch(events).await?)
    }

    /// Reserves the next version, publishes the event, and undoes the reservation if the
    /// publish fails. `resource = None` deletes.
    pub(crate) async fn write(
        &self,
        tenant: &str,
        resource_type: &str,
        id: &str,
        resource: Option<Value>,
    ) -> Result<WriteOutcome, CaptureError> {
        let mut stored = self.store.get_resource(tenant, resource_type, id).await?;
        if let Some(pending) = stored.as_ref().filter(|s| s.pending_event.is_some()) {
            // The previous write of this resource may have died between reserving its
            // version and confirming its publish: publish it (again; dedup by event id) first.
            self.confirm_pending(pending).await?;
            stored = self.store.get_resource(tenant, resource_type, id).await?;
        }
        let previous = stored
            .as_ref()
            .filter(|s| !s.deleted)
            .and_then(|s| s.resource.clone());
        let seq = stored.as_ref().map_or(1, |s| s.seq + 1);
        let version_id = seq.to_string();
        let now = Utc::now();
        let last_updated = instant(now);
        let action = match (&resource, &previous) {
            (None, _) => Action::Delete,
            (Some(_), None) => Action::Create,
            (Some(_), Some(_)) => Action::Update,
        };
        let resource = resource.map(|mut r| {
            stamp_meta(&mut r, id, &version_id, &last_updated);
            r
        });
        let event = ChangeEvent {
            event_id: Uuid::new_v4().to_string(),
            tenant: tenant.to_owned(),
            action,
            resource_type: resource_type.to_owned(),
            resource_id: id.to_owned(),
            version: version_id.clone(),
            time: now,
            source: self.source.clone(),
            resource: resource.clone(),
            previous,
        };
        // The event travels with the reservation: if the process dies before the publish is
        // confirmed, the next write of this resource (or the next start) publishes it.
        let reserved = StoredResource {
            tenant: tenant.to_owned(),
            resource_type: resource_type.to_owned(),
            id: id.to_owned(),
            seq,
            version_id: version_id.clone(),
            deleted: resource.is_none(),
            resource: resource.clone(),
            updated_at: now.timestamp_millis(),
            pending_event: Some(
                serde_json::to_string(&event)
                    .map_err(|e| invalid(format!("resource cannot be serialized: {e}")))?,
            ),
        };
        if !self
            .store
            .put_resource(&reserved, stored.as_ref().map(|s| s.seq))
            .await?
        {
            return Err(CaptureError::Conflict);
        }
        if let Err(e) = self.bus.publish(&event).await {
            // Undo: put the old content back under a new sequence so the failed version id is
            // never handed out again (the publish may have landed after all).
            let restored = StoredResource {
                seq: seq + 1,
                pending_event: None,
                ..stored.clone().unwrap_or_else(|| StoredResource {
                    deleted: true,
                    resource: None,
                    ..reserved.clone()
                })
            };
            if let Err(undo) = self.store.put_resource(&restored, Some(seq)).await {
                // The reservation stays pending and its event is published later: the write
                // may still take effect, as a timed-out request may.
                tracing::error!(error = %undo, "could not undo a version reservation after a failed publish");
            }
            return Err(e.into());
        }
        if let Err(e) = self
            .store
            .clear_pending_event(tenant, resource_type, id, seq)
            .await
        {
            // Harmless: the event is published again later and dropped as a duplicate.
            tracing::warn!(error = %e, "could not mark a publish as confirmed");
        }
        Ok(WriteOutcome {
            resource_type: resource_type.to_owned(),
            id: id.to_owned(),
            version_id,
            last_updated,
            resource,
            action,
            event_id: event.event_id,
        })
    }

    /// Publishes the unconfirmed event of `stored` and marks it confirmed.
    async fn confirm_pending(&self, stored: &StoredResource) -> Result<(), CaptureError> {
        let Some(text) = &stored.pending_event else {
            return Ok(());
        };
        let event = ChangeEvent::from_json(text.as_bytes())?;
        self.bus.publish(&event).await?;
        self.store
            .clear_pending_event(
                &stored.tenant,
                &stored.resource_type,
                &stored.id,
                stored.seq,
            )
            .await?;
        tracing::info!(event_id = %event.event_id, "published a change event left unconfirmed by an earlier run");
        Ok(())
    }

    /// Publishes every event left unconfirmed (after a crash). Run at start, before serving.
    pub async fn republish_pending(&self) -> Result<usize, CaptureError> {
        let mut total = 0;
        loop {
            let pending = self.store.pending_events(256).await?;
            if pending.is_empty() {
                return Ok(total);
            }
            for stored in &pending {
                self.confirm_pending(stored).await?;
            }
            total += pending.len();
        }
    }
}
