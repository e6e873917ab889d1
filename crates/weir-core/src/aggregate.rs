//! Hourly aggregates per queue: counts and durations that outlive the jobs they count.
//!
//! They are updated as events happen and persisted in the same atomic write as the job
//! changes that caused them, so after a crash they agree exactly with the jobs on disk.

use serde::{Deserialize, Serialize};

/// Milliseconds in one aggregate bucket.
pub const HOUR_MS: u64 = 3_600_000;

/// One queue's counts for one hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregate {
    /// Jobs enqueued.
    pub enqueued: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Attempts that failed (including expired leases).
    pub failed: u64,
    /// Leases that expired.
    pub expired: u64,
    /// Jobs that went dead.
    pub dead: u64,
    /// Jobs cancelled.
    pub cancelled: u64,
    /// Sum of run times (start of the attempt to ack) of completed jobs, ms.
    pub run_ms_sum: u64,
    /// Longest run time of a completed job, ms.
    pub run_ms_max: u64,
    /// Sum of waits (ready to start) of started attempts, ms.
    pub wait_ms_sum: u64,
    /// Attempts started.
    pub started: u64,
}

impl Aggregate {
    /// Adds another bucket's counts into this one.
    pub fn merge(&mut self, o: &Aggregate) {
        self.enqueued += o.enqueued;
        self.completed += o.completed;
        self.failed += o.failed;
        self.expired += o.expired;
        self.dead += o.dead;
        self.cancelled += o.cancelled;
        self.run_ms_sum += o.run_ms_sum;
        self.run_ms_max = self.run_ms_max.max(o.run_ms_max);
        self.wait_ms_sum += o.wait_ms_sum;
        self.started += o.started;
    }
}

/// An aggregate with the queue and hour it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateRecord {
    /// Queue name.
    pub queue: String,
    /// Start of the hour, ms since the epoch.
    pub hour_ms: u64,
    /// The counts.
    pub counts: Aggregate,
}
