//! The cache routes' bodies (`/v1/cache/...`). Values themselves travel as raw bytes.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/cache/{ns}/invalidate`: what to remove. Dependents of every removed key go
/// too, transitively.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheInvalidateBody {
    /// Remove every entry carrying one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Remove these keys.
    #[serde(default)]
    pub keys: Vec<String>,
}

/// How many entries an invalidation or delete removed (each key once, over all tiers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CacheRemovedReply {
    /// Entries removed.
    pub removed: u64,
}

/// `POST /v1/cache/{ns}/bump`: the namespace's new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CacheBumpReply {
    /// The namespace.
    pub namespace: String,
    /// Its version now; every entry written under an earlier one is retired.
    pub version: u64,
}

/// `POST /v1/cache/prune`: what to remove from the disk tier (expired files always go).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CachePruneBody {
    /// Shrink to at most this many bytes, least recently used first.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Remove files unused for this long, ms.
    #[serde(default)]
    pub older_than_ms: Option<u64>,
}

/// What a prune removed and kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CachePruneReply {
    /// Files removed.
    pub files: u64,
    /// Bytes freed.
    pub bytes: u64,
    /// Files kept.
    pub files_left: u64,
    /// Bytes kept.
    pub bytes_left: u64,
}

/// One tier's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CacheTierView {
    /// Whether the tier is configured.
    pub enabled: bool,
    /// Reads it answered.
    pub hits: u64,
    /// Reads it could not answer.
    pub misses: u64,
    /// hits / (hits + misses).
    pub hit_ratio: f64,
    /// Entries dropped for space.
    pub evictions: u64,
    /// Entries removed by delete, tag, dependency or flush.
    pub invalidations: u64,
    /// Entries written (sets and promotions).
    pub writes: u64,
    /// Failed operations (I/O errors, Redis errors and timeouts).
    pub errors: u64,
    /// Bytes held, where the tier can tell.
    pub bytes: Option<u64>,
    /// Entries held, where the tier can tell.
    pub entries: Option<u64>,
}

/// `GET /v1/cache`: every tier's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CacheStatsView {
    /// L1, in-process memory.
    pub memory: CacheTierView,
    /// L2, local disk.
    pub disk: CacheTierView,
    /// L3, Redis.
    pub redis: CacheTierView,
    /// Whether Redis answers.
    pub redis_up: bool,
    /// Times Redis stopped answering.
    pub redis_outages: u64,
    /// Get-or-compute callers that shared another's computation.
    pub coalesced: u64,
    /// Computations run by get-or-compute.
    pub computations: u64,
    /// Times the local tiers were retired because invalidations may have been missed.
    pub resyncs: u64,
}
