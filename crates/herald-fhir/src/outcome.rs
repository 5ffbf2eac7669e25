//! `OperationOutcome`: how every error on the FHIR API is reported.

use serde_json::{json, Value};

/// The `OperationOutcome.issue.code` values Herald uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueType {
    Invalid,
    Structure,
    Required,
    Value,
    NotSupported,
    NotFound,
    Conflict,
    Exception,
    Transient,
    TooLong,
    Processing,
    Security,
    Login,
    Forbidden,
    Throttled,
}

impl IssueType {
    pub fn code(self) -> &'static str {
        match self {
            IssueType::Invalid => "invalid",
            IssueType::Structure => "structure",
            IssueType::Required => "required",
            IssueType::Value => "value",
            IssueType::NotSupported => "not-supported",
            IssueType::NotFound => "not-found",
            IssueType::Conflict => "conflict",
            IssueType::Exception => "exception",
            IssueType::Transient => "transient",
            IssueType::TooLong => "too-long",
            IssueType::Processing => "processing",
            IssueType::Security => "security",
            IssueType::Login => "login",
            IssueType::Forbidden => "forbidden",
            IssueType::Throttled => "throttled",
        }
    }
}

/// A single-issue `OperationOutcome`.
#[derive(Debug, Clone)]
pub struct OperationOutcome {
    pub severity: &'static str,
    pub code: IssueType,
    pub diagnostics: String,
    /// FHIRPath-ish location of the problem, e.g. `Subscription.criteria`.
    pub expression: Option<String>,
}

impl OperationOutcome {
    pub fn error(code: IssueType, diagnostics: impl Into<String>) -> Self {
        Self {
            severity: "error",
            code,
            diagnostics: diagnostics.into(),
            expression: None,
        }
    }

    pub fn information(diagnostics: impl Into<String>) -> Self {
        Self {
            severity: "information",
            code: IssueType::Processing,
            diagnostics: diagnostics.into(),
            expression: None,
        }
    }

    pub fn at(mut self, expression: impl Into<String>) -> Self {
        self.expression = Some(expression.into());
        self
    }

    pub fn to_json(&self) -> Value {
        let mut issue = json!({
            "severity": self.severity,
            "code": self.code.code(),
            "diagnostics": self.diagnostics,
        });
        if let Some(expression) = &self.expression {
            issue["expression"] = json!([expression]);
        }
        json!({ "resourceType": "OperationOutcome", "issue": [issue] })
    }
}
