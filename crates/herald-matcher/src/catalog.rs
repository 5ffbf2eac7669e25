//! Where topics come from: the built-in topics Herald ships (valid for every tenant) and the
//! SubscriptionTopic resources each tenant created.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use herald_criteria::{TopicDefinition, BUILTIN_TOPIC_JSON};
use herald_store::{Store, StoreResult};
use serde_json::Value;

struct Builtins {
    resources: Vec<Value>,
    compiled: HashMap<String, Arc<TopicDefinition>>,
}

fn builtins() -> &'static Builtins {
    static BUILTINS: OnceLock<Builtins> = OnceLock::new();
    BUILTINS.get_or_init(|| {
        let mut resources = Vec::new();
        let mut compiled = HashMap::new();
        for text in BUILTIN_TOPIC_JSON {
            // Shipped with the binary and covered by tests: a failure here is a build defect.
            let resource: Value = match serde_json::from_str(text) {
                Ok(v) => v,
                Err(e) => panic!("built-in topic is not JSON: {e}"),
            };
            let topic = match TopicDefinition::from_resource(&resource) {
                Ok(t) => t,
                Err(e) => panic!("built-in topic does not compile: {e}"),
            };
            compiled.insert(topic.url().to_owned(), Arc::new(topic));
            resources.push(resource);
        }
        Builtins {
            resources,
            compiled,
        }
    })
}

/// The SubscriptionTopic resources Herald ships.
pub fn builtin_topics() -> &'static [Value] {
    &builtins().resources
}

/// Resolves topic canonicals for a tenant.
#[derive(Clone)]
pub struct TopicCatalog {
    store: Arc<dyn Store>,
}

impl TopicCatalog {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    pub fn is_builtin(url: &str) -> bool {
        builtins().compiled.contains_key(url)
    }

    /// The compiled topic with canonical `url` for `tenant`, if any. A canonical may carry a
    /// `|version` suffix; Herald keeps one version per URL and ignores the suffix only when
    /// it equals the stored version.
    pub async fn resolve(
        &self,
        tenant: &str,
        url: &str,
    ) -> StoreResult<Option<Arc<TopicDefinition>>> {
        let (base, version) = match url.split_once('|') {
            Some((base, version)) => (base, Some(version)),
            None => (url, None),
        };
        if let Some(topic) = builtins().compiled.get(base) {
            let builtin_version = builtins()
                .resources
                .iter()
                .find(|r| r["url"] == base)
                .and_then(|r| r["version"].as_str());
            if version.is_none() || version == builtin_version {
                return Ok(Some(Arc::clone(topic)));
            }
            return Ok(None);
        }
        let Some(record) = self.store.get_topic_by_url(tenant, base).await? else {
            return Ok(None);
        };
        if let Some(version) = version {
            if record.resource["version"].as_str() != Some(version) {
                return Ok(None);
            }
        }
        // Stored topics were compiled when they were created; a failure now means the stored
        // resource is unusable, which we report as "no such topic" after logging it.
        match TopicDefinition::from_resource(&record.resource) {
            Ok(topic) => Ok(Some(Arc::new(topic))),
            Err(e) => {
                tracing::error!(tenant, url, error = %e, "stored SubscriptionTopic no longer compiles");
                Ok(None)
            }
        }
    }
}
