//! The matcher: decides which subscriptions each change event concerns and records the
//! resulting notifications.
//!
//! It owns the in-memory [`SubscriptionIndex`] (compiled criteria of every subscription that
//! counts events, by tenant and resource type), the [`TopicCatalog`] (built-in topics plus
//! each tenant's own), and the consume loop ([`Matcher::run`]): parse → fill `previous` →
//! evaluate candidates → persist numbered notifications → ack. A message is acked only
//! after its notifications are committed; a storage failure `nak`s it for redelivery, and
//! recording is idempotent, so redelivery never yields a second event number. It does not
//! deliver anything and does not speak HTTP.

pub mod bench;
mod catalog;
mod chain;
mod compile;
mod index;
mod run;

pub use catalog::{builtin_topics, TopicCatalog};
pub use compile::{
    compile_cel_filter, compile_subscription, ActiveSubscription, CompileError, CompiledCriteria,
};
pub use index::{evaluate_candidates, IndexMaintainer, IndexStats, SharedIndex, SubscriptionIndex};
pub use run::{DeliveryHandoff, Matcher};
