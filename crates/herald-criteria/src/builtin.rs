//! The `SubscriptionTopic`s Herald ships, valid for every tenant, as JSON text. They live
//! here, beside the compiler that must accept them, so that both the matcher (which
//! compiles their triggers) and delivery (which resolves their `notificationShape`) can
//! read them without depending on each other.

/// The built-in topics' JSON (`topics/*.json`).
pub const BUILTIN_TOPIC_JSON: &[&str] = &[
    include_str!("../topics/lab-result.json"),
    include_str!("../topics/medication-order.json"),
];
