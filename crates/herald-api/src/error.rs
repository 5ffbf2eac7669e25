//! The one error type at the HTTP edge: rendered as an `OperationOutcome`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_capture::{BundleError, CaptureError};
use herald_fhir::{IssueType, OperationOutcome, SubscriptionSpecError};
use herald_matcher::CompileError;
use herald_store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub outcome: OperationOutcome,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: IssueType, diagnostics: impl Into<String>) -> Self {
        Self {
            status,
            outcome: OperationOutcome::error(code, diagnostics),
        }
    }

    pub fn bad_request(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, IssueType::Invalid, diagnostics)
    }

    pub fn not_found(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, IssueType::NotFound, diagnostics)
    }

    /// An internal failure: logged here, once, with detail; the client gets a generic text.
    pub fn internal(context: &str, detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "{context}");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            IssueType::Transient,
            format!("{context}; please retry"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "application/fhir+json")],
            self.outcome.to_json().to_string(),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(_) => Self::new(
                StatusCode::CONFLICT,
                IssueType::Conflict,
                "a resource with this identity already exists",
            ),
            other => Self::internal("storage is unavailable", &other),
        }
    }
}

impl From<SubscriptionSpecError> for ApiError {
    fn from(e: SubscriptionSpecError) -> Self {
        let status = if e.code == IssueType::NotSupported {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        Self {
            status,
            outcome: e.outcome(),
        }
    }
}

impl From<CompileError> for ApiError {
    fn from(e: CompileError) -> Self {
        match e {
            CompileError::UnknownTopic(url) => Self {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                outcome: OperationOutcome::error(
                    IssueType::NotSupported,
                    format!("Subscription.criteria: unknown SubscriptionTopic '{url}'"),
                )
                .at("Subscription.criteria"),
            },
            CompileError::Criteria(c) => {
                let code = if c.is_unsupported() {
                    IssueType::NotSupported
                } else {
                    IssueType::Invalid
                };
                let status = if code == IssueType::NotSupported {
                    StatusCode::UNPROCESSABLE_ENTITY
                } else {
                    StatusCode::BAD_REQUEST
                };
                Self {
                    status,
                    outcome: OperationOutcome::error(
                        code,
                        format!("Subscription.criteria: {}", c.message()),
                    )
                    .at("Subscription.criteria"),
                }
            }
            CompileError::CelFilter(c) => Self {
                status: StatusCode::BAD_REQUEST,
                outcome: OperationOutcome::error(
                    IssueType::Invalid,
                    format!(
                        "Subscription.criteria.extension: subscription-cel-filter: {}",
                        c.message()
                    ),
                )
                .at("Subscription.criteria.extension"),
            },
            CompileError::Store(s) => s.into(),
        }
    }
}

impl From<CaptureError> for ApiError {
    fn from(e: CaptureError) -> Self {
        match e {
            CaptureError::Invalid { code, message } => {
                Self::new(StatusCode::BAD_REQUEST, code, message)
            }
            CaptureError::NotFound(m) => Self::not_found(m),
            CaptureError::Conflict => {
                Self::new(StatusCode::CONFLICT, IssueType::Conflict, e.to_string())
            }
            CaptureError::Event(m) => {
                Self::new(StatusCode::BAD_REQUEST, IssueType::Invalid, m.to_string())
            }
            CaptureError::Store(_) | CaptureError::Bus(_) => {
                Self::internal("the write could not be made durable", &e)
            }
        }
    }
}

impl From<BundleError> for ApiError {
    fn from(e: BundleError) -> Self {
        match e {
            BundleError::Invalid(m) => Self::bad_request(m),
            BundleError::Entry { index, source } => {
                let mut err = ApiError::from(source);
                err.outcome.diagnostics =
                    format!("Bundle.entry[{index}]: {}", err.outcome.diagnostics);
                err.outcome.expression = Some(format!("Bundle.entry[{index}]"));
                err
            }
            BundleError::Partial {
                applied,
                total,
                source,
            } => {
                tracing::error!(error = %source, applied, total, "transaction stopped part-way");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    IssueType::Transient,
                    format!("the transaction stopped after {applied} of {total} entries were applied and published; the rest were not"),
                )
            }
        }
    }
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no endpoint at {}", uri.path()))
}
