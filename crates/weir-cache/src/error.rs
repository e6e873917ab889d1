//! Why a cache call was refused.
//!
//! Only the caller's own mistakes and its own computation's failures are errors. A tier
//! that fails (a full disk, Redis down) is logged and counted, and the call goes on with the
//! tiers that work: a cache is an optimisation and must never take its caller down.

use std::sync::Arc;

/// A refused cache call.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// A key, tag or namespace breaks the naming rules; nothing changed.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// `key`, `namespace`, `tag`, `dep` or `ttl_ms`.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The namespace is not among the declared ones; nothing changed.
    #[error("unknown namespace {0:?} (declared namespaces only)")]
    UnknownNamespace(String),
    /// The value is over `max_value_bytes`; nothing changed.
    #[error("value of {size} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// The value's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A get-or-compute's computation failed; every caller waiting on it gets this.
    #[error("computation failed: {0}")]
    Compute(Arc<dyn std::error::Error + Send + Sync>),
}

impl CacheError {
    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        CacheError::Invalid {
            what,
            reason: reason.into(),
        }
    }
}
