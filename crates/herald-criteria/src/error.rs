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

    /// Whether the criteria name a feature Herald does not implement (as opposed to
    /// criteria that are wrong): FHIR's `not-supported` rather than `invalid`.
    pub fn is_unsupported(&self) -> bool {
        self.message.contains("not supported")
    }

    /// The error as an `OperationOutcome` issue at `expression` (e.g.
    /// `Subscription.criteria`), `not-supported` or `invalid` per
    /// [`CriteriaError::is_unsupported`].
    pub fn outcome(&self, expression: &str) -> herald_fhir::OperationOutcome {
        let code = if self.is_unsupported() {
            herald_fhir::IssueType::NotSupported
        } else {
            herald_fhir::IssueType::Invalid
        };
        herald_fhir::OperationOutcome::error(code, format!("{expression}: {}", self.message))
            .at(expression)
    }
}

/// Shorthand used throughout the crate.
pub(crate) fn err<T>(message: impl Into<String>) -> Result<T, CriteriaError> {
    Err(CriteriaError::new(message))
}
