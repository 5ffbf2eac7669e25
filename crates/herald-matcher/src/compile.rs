//! Turning a Subscription into something that can be evaluated per event.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use herald_criteria::{
    CriteriaError, Interaction, SearchQuery, SubscriptionFilters, TopicDefinition,
};
use herald_fhir::{Action, ChangeEvent, SubscriptionKind, SubscriptionSpec};
use herald_store::{StoreError, SubscriptionKey};
use serde_json::Value;

use crate::catalog::TopicCatalog;

/// Why a subscription's criteria cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("unknown SubscriptionTopic '{0}'")]
    UnknownTopic(String),
    #[error("{0}")]
    Criteria(#[from] CriteriaError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Compiled criteria of one subscription.
///
/// Equal criteria match the same events: queries and filters are compared by value,
/// topics by identity (the same compiled `TopicDefinition`, as the catalog hands out for
/// one topic). The index uses this to evaluate identical criteria once per event.
#[derive(Debug, Clone)]
pub enum CompiledCriteria {
    Topic {
        topic: Arc<TopicDefinition>,
        filters: SubscriptionFilters,
    },
    /// R4 classic: the search is applied to the new version; no notification on delete.
    Search(SearchQuery),
}

impl PartialEq for CompiledCriteria {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Search(a), Self::Search(b)) => a == b,
            (
                Self::Topic { topic, filters },
                Self::Topic {
                    topic: other_topic,
                    filters: other_filters,
                },
            ) => Arc::ptr_eq(topic, other_topic) && filters == other_filters,
            _ => false,
        }
    }
}

impl Eq for CompiledCriteria {}

impl Hash for CompiledCriteria {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Self::Search(query) => {
                state.write_u8(0);
                query.hash(state);
            }
            Self::Topic { topic, filters } => {
                state.write_u8(1);
                std::ptr::hash(Arc::as_ptr(topic), state);
                filters.hash(state);
            }
        }
    }
}

impl CompiledCriteria {
    /// Resource types whose events can match.
    pub fn resource_types(&self) -> Vec<String> {
        match self {
            Self::Topic { topic, .. } => topic.resource_types(),
            Self::Search(query) => vec![query.resource_type().to_owned()],
        }
    }

    /// Evaluates one event; `previous` is the prior version where known.
    pub fn matches(&self, event: &ChangeEvent, previous: Option<&Value>) -> bool {
        match self {
            Self::Search(query) => match (event.action, &event.resource) {
                (Action::Create | Action::Update, Some(resource)) => query.matches(resource),
                _ => false,
            },
            Self::Topic { topic, filters } => {
                let interaction = match event.action {
                    Action::Create => Interaction::Create,
                    Action::Update => Interaction::Update,
                    Action::Delete => Interaction::Delete,
                };
                if !topic.triggers(
                    interaction,
                    &event.resource_type,
                    event.resource.as_ref(),
                    previous,
                ) {
                    return false;
                }
                match event.resource.as_ref().or(previous) {
                    Some(focus) => filters.matches(&event.resource_type, focus),
                    // A delete of a resource Herald never saw: filters cannot be checked, so
                    // only a subscription without filters may hear of it.
                    None => filters.is_empty(),
                }
            }
        }
    }
}

/// One subscription in the index.
#[derive(Debug, Clone)]
pub struct ActiveSubscription {
    pub key: SubscriptionKey,
    pub criteria: CompiledCriteria,
    /// `Subscription.end`: no event is counted for it after this instant.
    pub end: Option<chrono::DateTime<chrono::Utc>>,
}

impl ActiveSubscription {
    /// Whether this subscription is still in force at `now`.
    pub fn in_force(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.end.is_none_or(|end| now < end)
    }
}

/// Compiles a subscription for `tenant`, resolving its topic. Used both to validate a
/// Subscription before it is stored and to load the index.
pub async fn compile_subscription(
    tenant: &str,
    spec: &SubscriptionSpec,
    catalog: &TopicCatalog,
) -> Result<CompiledCriteria, CompileError> {
    match &spec.kind {
        SubscriptionKind::Criteria { criteria } => {
            Ok(CompiledCriteria::Search(SearchQuery::parse(criteria)?))
        }
        SubscriptionKind::Topic { topic_url, filters } => {
            let topic = catalog
                .resolve(tenant, topic_url)
                .await?
                .ok_or_else(|| CompileError::UnknownTopic(topic_url.clone()))?;
            let filters = topic.compile_filters(filters)?;
            Ok(CompiledCriteria::Topic { topic, filters })
        }
    }
}
