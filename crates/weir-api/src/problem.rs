//! Errors over HTTP: RFC 9457 `application/problem+json` bodies with a stable `type`.
//!
//! Scripts branch on `type`, never on `title` or `detail`, so each [`ProblemType`] keeps its
//! name and status forever.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The media type of error replies.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// Every kind of error the API returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemType {
    /// 400: the body is not JSON.
    MalformedJson,
    /// 422: a field is missing, has the wrong type, or is out of range.
    InvalidInput,
    /// 413: the request body, or one payload in it, is over its limit.
    PayloadTooLarge,
    /// 415: the body is not declared as JSON.
    UnsupportedMediaType,
    /// 401: no bearer token, or an unknown one.
    Unauthorized,
    /// 403: the token lacks the right for this queue.
    Forbidden,
    /// 404: no route at this path.
    NotFound,
    /// 405: the route exists without this method.
    MethodNotAllowed,
    /// 404: no job has this id.
    JobNotFound,
    /// 404: no queue has this name.
    QueueNotFound,
    /// 404: the cache holds no live entry under this key.
    CacheMiss,
    /// 404: the namespace is not among the declared cache namespaces.
    NamespaceNotFound,
    /// 409: the lease id is not the job's current lease.
    LeaseMismatch,
    /// 409: the lease passed its deadline.
    LeaseExpired,
    /// 409: the job's state does not allow the operation.
    InvalidState,
    /// 409: the queue has active jobs, so it cannot be deleted yet.
    QueueBusy,
    /// 429: load shedding: the queue is full; retry after `retry_after_ms`.
    Overloaded,
    /// 501: the backend lacks the operation.
    Unsupported,
    /// 503: the store failed; the operation may not have been applied.
    StorageUnavailable,
    /// 503: the request did not complete within the server's `request_timeout_ms` (a body
    /// sent too slowly, or a store that did not answer); it may have been applied.
    Timeout,
    /// 500: a bug in Weir (it is logged).
    Internal,
}

impl ProblemType {
    /// Every type, for documentation and tests.
    pub const ALL: [ProblemType; 21] = [
        ProblemType::MalformedJson,
        ProblemType::InvalidInput,
        ProblemType::PayloadTooLarge,
        ProblemType::UnsupportedMediaType,
        ProblemType::Unauthorized,
        ProblemType::Forbidden,
        ProblemType::NotFound,
        ProblemType::MethodNotAllowed,
        ProblemType::JobNotFound,
        ProblemType::QueueNotFound,
        ProblemType::CacheMiss,
        ProblemType::NamespaceNotFound,
        ProblemType::LeaseMismatch,
        ProblemType::LeaseExpired,
        ProblemType::InvalidState,
        ProblemType::QueueBusy,
        ProblemType::Overloaded,
        ProblemType::Unsupported,
        ProblemType::StorageUnavailable,
        ProblemType::Timeout,
        ProblemType::Internal,
    ];

    /// The short name, as it ends the `type` URI.
    pub fn slug(self) -> &'static str {
        match self {
            ProblemType::MalformedJson => "malformed-json",
            ProblemType::InvalidInput => "invalid-input",
            ProblemType::PayloadTooLarge => "payload-too-large",
            ProblemType::UnsupportedMediaType => "unsupported-media-type",
            ProblemType::Unauthorized => "unauthorized",
            ProblemType::Forbidden => "forbidden",
            ProblemType::NotFound => "not-found",
            ProblemType::MethodNotAllowed => "method-not-allowed",
            ProblemType::JobNotFound => "job-not-found",
            ProblemType::QueueNotFound => "queue-not-found",
            ProblemType::CacheMiss => "cache-miss",
            ProblemType::NamespaceNotFound => "namespace-not-found",
            ProblemType::LeaseMismatch => "lease-mismatch",
            ProblemType::LeaseExpired => "lease-expired",
            ProblemType::InvalidState => "invalid-state",
            ProblemType::QueueBusy => "queue-busy",
            ProblemType::Overloaded => "overloaded",
            ProblemType::Unsupported => "unsupported",
            ProblemType::StorageUnavailable => "storage-unavailable",
            ProblemType::Timeout => "timeout",
            ProblemType::Internal => "internal",
        }
    }

    /// The `type` member: `urn:weir:problem:<slug>`.
    pub fn uri(self) -> String {
        format!("urn:weir:problem:{}", self.slug())
    }

    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            ProblemType::MalformedJson => 400,
            ProblemType::InvalidInput => 422,
            ProblemType::PayloadTooLarge => 413,
            ProblemType::UnsupportedMediaType => 415,
            ProblemType::Unauthorized => 401,
            ProblemType::Forbidden => 403,
            ProblemType::NotFound
            | ProblemType::JobNotFound
            | ProblemType::QueueNotFound
            | ProblemType::CacheMiss
            | ProblemType::NamespaceNotFound => 404,
            ProblemType::MethodNotAllowed => 405,
            ProblemType::LeaseMismatch
            | ProblemType::LeaseExpired
            | ProblemType::InvalidState
            | ProblemType::QueueBusy => 409,
            ProblemType::Overloaded => 429,
            ProblemType::Unsupported => 501,
            ProblemType::StorageUnavailable | ProblemType::Timeout => 503,
            ProblemType::Internal => 500,
        }
    }

    /// A short, fixed summary.
    pub fn title(self) -> &'static str {
        match self {
            ProblemType::MalformedJson => "The body is not valid JSON",
            ProblemType::InvalidInput => "A field is missing, mistyped or out of range",
            ProblemType::PayloadTooLarge => "The body or a payload is too large",
            ProblemType::UnsupportedMediaType => "The body must be application/json",
            ProblemType::Unauthorized => "A valid bearer token is required",
            ProblemType::Forbidden => "The token lacks the right for this queue",
            ProblemType::NotFound => "No such route",
            ProblemType::MethodNotAllowed => "Method not allowed on this route",
            ProblemType::JobNotFound => "No such job",
            ProblemType::QueueNotFound => "No such queue",
            ProblemType::CacheMiss => "No live cache entry under this key",
            ProblemType::NamespaceNotFound => "No such cache namespace",
            ProblemType::LeaseMismatch => "The lease is not the job's current lease",
            ProblemType::LeaseExpired => "The lease has expired",
            ProblemType::InvalidState => "The job's state does not allow this",
            ProblemType::QueueBusy => "The queue has running jobs",
            ProblemType::Overloaded => "The queue is full; retry later",
            ProblemType::Unsupported => "Not supported by this backend",
            ProblemType::StorageUnavailable => "The store is unavailable",
            ProblemType::Timeout => "The request took too long",
            ProblemType::Internal => "Internal error",
        }
    }

    /// Parses a `type` URI back (clients use this).
    pub fn from_uri(uri: &str) -> Option<ProblemType> {
        let slug = uri.strip_prefix("urn:weir:problem:")?;
        ProblemType::ALL.into_iter().find(|t| t.slug() == slug)
    }
}

/// An error reply body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// Stable identifier, `urn:weir:problem:<slug>`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Fixed summary of the type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What exactly was wrong with this request.
    pub detail: String,
    /// For `invalid-input`: the offending field, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For `overloaded`: when trying again is likely to succeed, ms (also sent as the
    /// `Retry-After` header, in whole seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl Problem {
    /// A problem of type `t` with `detail`.
    pub fn new(t: ProblemType, detail: impl Into<String>) -> Self {
        Problem {
            type_: t.uri(),
            title: t.title().to_string(),
            status: t.status(),
            detail: detail.into(),
            field: None,
            retry_after_ms: None,
        }
    }

    /// The type, if it is one this version knows.
    pub fn kind(&self) -> Option<ProblemType> {
        ProblemType::from_uri(&self.type_)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.title, self.status, self.detail)
    }
}
