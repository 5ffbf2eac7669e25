//! Request bodies as FHIR JSON, and FHIR JSON responses.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_fhir::resource::{json_depth, MAX_JSON_DEPTH};
use herald_fhir::IssueType;
use serde_json::Value;

use crate::error::ApiError;

/// A JSON body, refused with an `OperationOutcome` when it is too big, not JSON, too deep,
/// or sent with a non-JSON content type.
pub struct FhirJson(pub Value);

impl<S: Send + Sync> FromRequest<S> for FhirJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(content_type) = req.headers().get(header::CONTENT_TYPE) {
            let text = content_type.to_str().unwrap_or("").to_ascii_lowercase();
            let base = text.split(';').next().unwrap_or("").trim();
            if base != "application/fhir+json" && base != "application/json" {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    IssueType::NotSupported,
                    format!("content type '{base}' is not supported; send application/fhir+json"),
                ));
            }
        }
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                IssueType::TooLong,
                format!("the body is larger than {} bytes", crate::MAX_BODY_BYTES),
            )
        };
        // Refuse on the declared length before reading anything.
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > crate::MAX_BODY_BYTES) {
            return Err(too_large());
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                IssueType::TooLong,
                format!("the body is larger than {} bytes", crate::MAX_BODY_BYTES),
            )
        })?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request(
                "the request body is empty; a FHIR JSON resource is expected",
            ));
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            // serde_json refuses nesting past 128 levels with an error, not a stack overflow.
            ApiError::new(
                StatusCode::BAD_REQUEST,
                IssueType::Structure,
                format!("the body is not valid JSON: {e}"),
            )
        })?;
        if json_depth(&value) > MAX_JSON_DEPTH {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                IssueType::TooLong,
                format!("JSON nesting deeper than {MAX_JSON_DEPTH} levels"),
            ));
        }
        Ok(FhirJson(value))
    }
}

/// A FHIR JSON response with extra headers.
pub struct Fhir {
    pub status: StatusCode,
    pub body: Value,
    pub headers: HeaderMap,
}

impl Fhir {
    pub fn ok(body: Value) -> Self {
        Self {
            status: StatusCode::OK,
            body,
            headers: HeaderMap::new(),
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn header(mut self, name: header::HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(name, v);
        }
        self
    }

    /// `ETag`, `Last-Modified`-style `meta` headers for a versioned resource.
    pub fn versioned(self, version_id: &str, location: Option<String>) -> Self {
        let this = self.header(header::ETAG, &format!("W/\"{version_id}\""));
        match location {
            Some(l) => this.header(header::LOCATION, &l),
            None => this,
        }
    }
}

impl IntoResponse for Fhir {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body.to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/fhir+json"),
        );
        response.headers_mut().extend(self.headers);
        response
    }
}
