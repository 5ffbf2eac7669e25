//! The single error type of the crate.
//!
//! Every rejection carries a human-readable message that names the offending part of
//! the criteria precisely (the parameter, modifier, prefix or element), because these
//! messages are returned verbatim to API clients whose Subscription or
//! SubscriptionTopic was refused.

/// A criteria string or topic definition that cannot be compiled.
///
/// `Display` renders exactly [`CriteriaError::message`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CriteriaError {
    message: String,
}

impl CriteriaError {
    /// Creates an error with the given message.
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The precise message, naming the unsupported or invalid part.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Shorthand used throughout the crate.
pub(crate) fn err<T>(message: impl Into<String>) -> Result<T, CriteriaError> {
    Err(CriteriaError::new(message))
}
