//! The error type every layer of Weir shares for job and queue operations.
//!
//! One `#[non_exhaustive]` enum, small and cheap to build on the hot path (no boxing except
//! for storage failures, which are rare). Each variant maps to one stable problem `type` that
//! the HTTP layer renders, see [`Error::kind`].

use crate::job::JobId;
use std::sync::Arc;

/// Why a job or queue operation was refused or failed.
///
/// Every refusal (`Invalid`, `TooLarge`, `JobNotFound`, `LeaseMismatch`, `LeaseExpired`, `InvalidState`,
/// `QueueNotFound`) is reported *before* anything changes: the operation had no effect.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A field of the request is malformed or out of range.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending field, as the API names it (`queue`, `payload`, `timeout_ms`, ...).
        field: &'static str,
        /// A one-line, human reason.
        reason: String,
    },
    /// A document (payload, result, progress) is over the size limit.
    #[error("{field} of {size} bytes is over the limit of {limit}")]
    TooLarge {
        /// `payload`, `result` or `progress`.
        field: &'static str,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// No job has this id (never existed, or deleted by retention).
    #[error("job {0} not found")]
    JobNotFound(JobId),
    /// No queue has this name.
    #[error("queue {0:?} not found")]
    QueueNotFound(String),
    /// The lease id does not match the job's current lease (a foreign or older lease).
    #[error("job {0}: lease does not match the job's current lease")]
    LeaseMismatch(JobId),
    /// The lease passed its deadline; the job has been or will be handed out again.
    #[error("job {0}: lease expired")]
    LeaseExpired(JobId),
    /// The job is not in a state that allows the operation (e.g. retrying a completed job).
    #[error("job {id}: cannot {op} a job that is {state}")]
    InvalidState {
        /// The job.
        id: JobId,
        /// The refused operation.
        op: &'static str,
        /// The job's state, lower case.
        state: &'static str,
    },
    /// The queue still has active jobs, so it cannot be deleted: pause it and let them
    /// finish (or cancel them) first.
    #[error("queue {queue:?} has {active} active jobs: pause it and let them finish, or cancel them, then delete it")]
    QueueBusy {
        /// The queue.
        queue: String,
        /// Its active jobs.
        active: u64,
    },
    /// The queue is at its `max_depth` (or, with `max_depth` 0, the server at its memory
    /// budget, `depth` then counting every job held): the enqueue was refused (load
    /// shedding); try again after `retry_after_ms`.
    #[error("{}", overloaded_message(queue, *depth, *max_depth, *retry_after_ms))]
    Overloaded {
        /// The queue.
        queue: String,
        /// Its unfinished jobs now.
        depth: u64,
        /// Its limit.
        max_depth: u64,
        /// When trying again is likely to succeed.
        retry_after_ms: u64,
    },
    /// The backend does not implement this operation.
    #[error("unsupported by this backend: {0}")]
    Unsupported(&'static str),
    /// The storage engine failed (I/O, corruption). The operation may not have been applied.
    #[error("storage failure: {message}")]
    Storage {
        /// What failed, for a person.
        message: String,
        /// The underlying error, when there is one (kept for logs and `source()` chains).
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
}

impl Error {
    /// A stable, machine-readable name for the error, used as the problem `type` over HTTP.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Invalid { .. } => "invalid-input",
            Error::TooLarge { .. } => "payload-too-large",
            Error::JobNotFound(_) => "job-not-found",
            Error::QueueNotFound(_) => "queue-not-found",
            Error::LeaseMismatch(_) => "lease-mismatch",
            Error::LeaseExpired(_) => "lease-expired",
            Error::InvalidState { .. } => "invalid-state",
            Error::QueueBusy { .. } => "queue-busy",
            Error::Overloaded { .. } => "overloaded",
            Error::Unsupported(_) => "unsupported",
            Error::Storage { .. } => "storage",
        }
    }

    /// A storage failure described by `message` alone.
    pub fn storage(message: impl Into<String>) -> Self {
        Error::Storage {
            message: message.into(),
            source: None,
        }
    }

    /// A storage failure caused by `source`, which it keeps.
    pub fn storage_from(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Storage {
            message: source.to_string(),
            source: Some(Arc::new(source)),
        }
    }

    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

fn overloaded_message(queue: &str, depth: u64, max_depth: u64, retry_after_ms: u64) -> String {
    if max_depth == 0 {
        format!(
            "the server is at its memory budget ({depth} jobs held); retry in {retry_after_ms} ms"
        )
    } else {
        format!(
            "queue {queue:?} holds {depth} unfinished jobs, its max_depth is {max_depth}; \
             retry in {retry_after_ms} ms"
        )
    }
}

/// Result alias for Weir operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
