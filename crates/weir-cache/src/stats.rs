//! Counters per tier, kept with relaxed atomics (they are read for metrics, never to decide
//! anything), and the snapshot the server turns into `/metrics` and `GET /v1/cache`.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The three tiers, fastest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// L1: in-process memory.
    Memory,
    /// L2: local disk.
    Disk,
    /// L3: Redis, shared by every instance.
    Redis,
}

impl Tier {
    /// All tiers, fastest first.
    pub const ALL: [Tier; 3] = [Tier::Memory, Tier::Disk, Tier::Redis];

    /// `memory`, `disk` or `redis`.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Disk => "disk",
            Tier::Redis => "redis",
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct TierCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
    pub invalidations: AtomicU64,
    pub writes: AtomicU64,
    pub errors: AtomicU64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub tiers: [TierCounters; 3],
    pub coalesced: AtomicU64,
    pub computations: AtomicU64,
    pub resyncs: AtomicU64,
}

impl Counters {
    pub fn tier(&self, t: Tier) -> &TierCounters {
        &self.tiers[t as usize]
    }
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

/// One tier's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TierStats {
    /// Whether the tier is configured.
    pub enabled: bool,
    /// Reads it answered.
    pub hits: u64,
    /// Reads it was asked and could not answer.
    pub misses: u64,
    /// Entries it dropped to stay within its byte budget.
    pub evictions: u64,
    /// Entries removed from it by delete, tag, dependency or flush.
    pub invalidations: u64,
    /// Entries written to it (sets and promotions).
    pub writes: u64,
    /// Operations on it that failed (I/O errors, Redis errors and timeouts).
    pub errors: u64,
    /// Bytes it holds (None where it cannot tell cheaply: Redis).
    pub bytes: Option<u64>,
    /// Entries it holds (None where it cannot tell cheaply: Redis).
    pub entries: Option<u64>,
}

impl TierStats {
    /// Hits over reads, 0 before the first read.
    pub fn hit_ratio(&self) -> f64 {
        let reads = self.hits + self.misses;
        if reads == 0 {
            0.0
        } else {
            self.hits as f64 / reads as f64
        }
    }
}

/// The whole cache's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CacheStats {
    /// L1.
    pub memory: TierStats,
    /// L2.
    pub disk: TierStats,
    /// L3.
    pub redis: TierStats,
    /// Whether Redis answers (false when not configured).
    pub redis_up: bool,
    /// Times Redis stopped answering (each one logged once as a warning).
    pub redis_outages: u64,
    /// Get-or-compute callers that waited on another caller's computation.
    pub coalesced: u64,
    /// Computations run by get-or-compute.
    pub computations: u64,
    /// Times the local tiers were retired because invalidations may have been missed.
    pub resyncs: u64,
}

impl TierStats {
    pub(crate) fn from_counters(c: &TierCounters, enabled: bool) -> Self {
        TierStats {
            enabled,
            hits: c.hits.load(Relaxed),
            misses: c.misses.load(Relaxed),
            evictions: c.evictions.load(Relaxed),
            invalidations: c.invalidations.load(Relaxed),
            writes: c.writes.load(Relaxed),
            errors: c.errors.load(Relaxed),
            bytes: None,
            entries: None,
        }
    }
}
