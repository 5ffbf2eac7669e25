//! Turning a Subscription into something that can be evaluated per event.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use herald_criteria::{
    CelFilter, CriteriaError, Interaction, SearchQuery, SubscriptionFilters, TopicDefinition,
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
    /// The subscription's own CEL filter does not compile (or is too big or deep).
    #[error("subscription-cel-filter: {0}")]
    CelFilter(CriteriaError),
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

    /// The `_has` links evaluation needs resolved: (focus type, source type, parameter).
    pub fn has_links(&self) -> Vec<(String, String, String)> {
        match self {
            Self::Topic { topic, filters } => {
                let mut links = topic.has_links();
                links.extend(filters.has_links());
                links
            }
            Self::Search(query) => query
                .has_links()
                .into_iter()
                .map(|(s, p)| (query.resource_type().to_owned(), s, p))
                .collect(),
        }
    }

    /// Whether evaluating needs referenced resources (chained parameters).
    pub fn uses_chains(&self) -> bool {
        match self {
            Self::Topic { topic, filters } => topic.uses_chains() || filters.uses_chains(),
            Self::Search(query) => query.uses_chains(),
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
    /// The subscription's own CEL filter ([`herald_fhir::subscription::EXT_CEL_FILTER`]),
    /// ANDed after everything else matched.
    pub cel: Option<Arc<CelFilter>>,
}

impl ActiveSubscription {
    /// Whether this subscription is still in force at `now`.
    pub fn in_force(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.end.is_none_or(|end| now < end)
    }

    /// The subscription's CEL filter on an event its criteria matched: `current` and
    /// `previous` versions and the `event` (`interaction`, `resourceType`, `id`) bound, as
    /// for a topic's CEL trigger.
    pub fn cel_passes(&self, event: &ChangeEvent, previous: Option<&Value>) -> bool {
        let Some(cel) = &self.cel else {
            return true;
        };
        let bound = serde_json::json!({
            "interaction": event.action.as_str(),
            "resourceType": event.resource_type,
            "id": event.resource_id,
        });
        cel.matches(event.resource.as_ref(), previous, &bound)
    }
}

/// Compiles a subscription's own CEL filter, if it has one.
pub fn compile_cel_filter(spec: &SubscriptionSpec) -> Result<Option<Arc<CelFilter>>, CompileError> {
    spec.cel_filter
        .as_deref()
        .map(|source| {
            CelFilter::compile(source)
                .map(Arc::new)
                .map_err(CompileError::CelFilter)
        })
        .transpose()
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
