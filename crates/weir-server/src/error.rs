//! The one HTTP error type: every refusal renders as `application/problem+json` with a stable
//! `type`. Storage failures are logged in full and reported without their internals.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use weir_api::{Problem, ProblemType, PROBLEM_CONTENT_TYPE};
use weir_core::Error;

/// An error reply.
#[derive(Debug)]
pub struct ApiError(pub Problem);

impl ApiError {
    /// A problem of type `t`.
    pub fn new(t: ProblemType, detail: impl Into<String>) -> Self {
        ApiError(Problem::new(t, detail))
    }

    /// `invalid-input` blaming `field`.
    pub fn invalid(field: &str, detail: impl Into<String>) -> Self {
        let mut p = Problem::new(ProblemType::InvalidInput, detail);
        p.field = Some(field.to_string());
        ApiError(p)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let t = match &e {
            Error::Invalid { field, .. } => return ApiError::invalid(field, e.to_string()),
            Error::TooLarge { field, .. } => {
                let mut p = Problem::new(ProblemType::PayloadTooLarge, e.to_string());
                p.field = Some(field.to_string());
                return ApiError(p);
            }
            Error::Overloaded { retry_after_ms, .. } => {
                let mut p = Problem::new(ProblemType::Overloaded, e.to_string());
                p.retry_after_ms = Some(*retry_after_ms);
                return ApiError(p);
            }
            Error::JobNotFound(_) => ProblemType::JobNotFound,
            Error::QueueNotFound(_) => ProblemType::QueueNotFound,
            Error::LeaseMismatch(_) => ProblemType::LeaseMismatch,
            Error::LeaseExpired(_) => ProblemType::LeaseExpired,
            Error::InvalidState { .. } => ProblemType::InvalidState,
            Error::QueueBusy { .. } => ProblemType::QueueBusy,
            Error::Unsupported(_) => ProblemType::Unsupported,
            Error::Storage { message, source } => {
                match source {
                    Some(source) => {
                        tracing::error!(error = %message, source = ?source, "store failure")
                    }
                    None => tracing::error!(error = %message, "store failure"),
                }
                return ApiError::new(
                    ProblemType::StorageUnavailable,
                    "the store failed; the operation may not have been applied (see server log)",
                );
            }
            _ => {
                tracing::error!(error = %e, "unexpected engine error");
                return ApiError::new(ProblemType::Internal, "internal error (see server log)");
            }
        };
        ApiError::new(t, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.0).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        if let Some(ms) = self.0.retry_after_ms {
            let secs = ms.div_ceil(1000).max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<weir_cache::CacheError> for ApiError {
    fn from(e: weir_cache::CacheError) -> Self {
        use weir_cache::CacheError as C;
        match &e {
            C::Invalid { what, .. } => ApiError::invalid(what, e.to_string()),
            C::UnknownNamespace(_) => ApiError::new(ProblemType::NamespaceNotFound, e.to_string()),
            C::TooLarge { .. } => {
                let mut p = Problem::new(ProblemType::PayloadTooLarge, e.to_string());
                p.field = Some("value".into());
                ApiError(p)
            }
            _ => {
                tracing::error!(error = %e, "unexpected cache error");
                ApiError::new(ProblemType::Internal, "internal error (see server log)")
            }
        }
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;
